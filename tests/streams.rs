//! Beyond one request, one response: answers streamed as the guest writes
//! them (server-sent events, a gibibyte through a 16 MiB guest), request
//! bodies and multipart uploads read as they arrive, and work that goes on
//! after the answer, across a deploy and a shutdown, within its budget.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{component, edgehost, write_manifest, Host, Reply};

const TOKEN: &str = "test-admin-token-0123456789";

fn manifest(extra: &str) -> String {
    let streams = component("fixture_streams");
    let uploads = component("fixture_uploads");
    format!(
        r#"[[route]]
path = "/stream"
component = {streams:?}
kv = ["after"]
memory = "16MiB"
max_response = "2GiB"
max_concurrency = 1
timeout = "60s"

[[route]]
path = "/after"
component = {streams:?}
kv = ["after"]
wait_until = "2s"

[[route]]
path = "/small"
component = {streams:?}
max_response = "1MiB"

[[route]]
path = "/upload"
component = {uploads:?}
memory = "16MiB"
max_body = "300MiB"
max_part = "150MiB"

[[route]]
path = "/upload-strict"
component = {uploads:?}
max_body = "300MiB"
max_part = "1MiB"
{extra}"#
    )
}

fn start(dir: &Path) -> Host {
    Host::start_with_admin(
        &write_manifest(dir, &manifest("")),
        &dir.join("data"),
        TOKEN,
    )
}

/// A response read as it arrives: its head, then each chunk of its chunked
/// body with the time it came.
struct Streaming {
    stream: TcpStream,
    buffer: Vec<u8>,
    head: Reply,
    started: Instant,
}

impl Streaming {
    fn get(host: &Host, path: &str, headers: &[(&str, &str)]) -> Streaming {
        let mut stream = TcpStream::connect(host.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let started = Instant::now();
        stream.write_all(request.as_bytes()).unwrap();
        let mut buffer = Vec::new();
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed before the head");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = support::parse_response(&buffer[..end + 4], true);
        buffer.drain(..end + 4);
        Streaming {
            stream,
            buffer,
            head,
            started,
        }
    }

    /// Reads until `want` more bytes are buffered; false if the connection ended first.
    fn fill(&mut self, want: usize) -> bool {
        while self.buffer.len() < want {
            let mut chunk = vec![0u8; 256 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    /// The next chunk of the body: `Some(data)`, `Some(empty)` for the last
    /// chunk, `None` if the connection ended without one (a cut body).
    fn chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(line) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&self.buffer[..line]).trim(), 16)
                        .expect("a chunk size");
                if !self.fill(line + 2 + size + 2) {
                    return None;
                }
                let data = self.buffer[line + 2..line + 2 + size].to_vec();
                self.buffer.drain(..line + 2 + size + 2);
                return Some(data);
            }
            if !self.fill(self.buffer.len() + 1) {
                return None;
            }
        }
    }
}

#[test]
fn server_sent_events_arrive_one_at_a_time_as_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    for encoding in [None, Some("gzip")] {
        let headers: Vec<(&str, &str)> = encoding
            .map(|e| vec![("accept-encoding", e)])
            .unwrap_or_default();
        let mut sse = Streaming::get(&host, "/stream?mode=sse&n=10&every=100", &headers);
        assert_eq!(sse.head.status, 200);
        assert_eq!(sse.head.header("content-type"), Some("text/event-stream"));
        assert_eq!(sse.head.header("cache-control"), Some("no-cache"));
        assert_eq!(sse.head.header("content-encoding"), None);
        let mut events = Vec::new();
        let mut arrivals = Vec::new();
        while let Some(chunk) = sse.chunk() {
            if chunk.is_empty() {
                break;
            }
            arrivals.push(sse.started.elapsed());
            events.push(String::from_utf8(chunk).unwrap());
        }
        println!("{encoding:?}: events arrived at {arrivals:?}");
        assert_eq!(events.len(), 10, "one chunk per event: {events:?}");
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event, &format!("id: {i}\ndata: {{\"tick\":{i}}}\n\n"));
        }
        assert!(
            arrivals[0] < Duration::from_millis(150),
            "first event after {:?}",
            arrivals[0]
        );
        // Ten events 100 ms apart: spread over about 0.9 s, not sent together.
        let spread = arrivals[9] - arrivals[0];
        assert!(
            spread >= Duration::from_millis(800),
            "events came within {spread:?}"
        );
        for pair in arrivals.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(50),
                "two events came together: {arrivals:?}"
            );
        }
    }
}

#[test]
fn a_gibibyte_streams_through_a_guest_with_16_mib_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let before = host.rss_kib();
    let total: usize = 1 << 30;
    let mut stream = Streaming::get(&host, &format!("/stream?mode=bytes&total={total}"), &[]);
    assert_eq!(stream.head.status, 200);
    let started = Instant::now();
    let mut received = 0usize;
    let mut peak = before;
    let mut chunks = 0usize;
    loop {
        let chunk = stream.chunk().expect("the body ends with its last chunk");
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.iter().all(|b| *b == b'x'));
        received += chunk.len();
        chunks += 1;
        if chunks.is_multiple_of(1024) {
            peak = peak.max(host.rss_kib());
        }
    }
    println!(
        "1 GiB in {:?}; host RSS {before} KiB before, at most {peak} KiB while streaming",
        started.elapsed()
    );
    assert_eq!(received, total);
    assert!(
        peak < before + 128 * 1024,
        "the host's memory grew from {before} to {peak} KiB"
    );
}

/// Polls until `/stream` (one slot) answers, which it can only once the
/// guest before has stopped.
fn wait_for_free_slot(host: &Host) -> Duration {
    let started = Instant::now();
    loop {
        let reply = host.get("/stream?mode=bytes&total=3");
        if reply.status == 200 {
            assert_eq!(reply.body, b"xxx");
            return started.elapsed();
        }
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the route's one slot stayed taken after its client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_goes_away_stops_the_guest_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    // A guest writing forever finds its client gone at its next write; one
    // spinning without writing is stopped by the host.
    for mode in ["forever", "stall"] {
        let mut stream = Streaming::get(&host, &format!("/stream?mode={mode}"), &[]);
        assert_eq!(stream.head.status, 200);
        assert!(!stream.chunk().expect("a first chunk").is_empty());
        // The one slot is taken while the guest runs.
        assert_eq!(host.get("/stream?mode=bytes&total=3").status, 503);
        drop(stream);
        let freed = wait_for_free_slot(&host);
        println!("{mode}: slot free {freed:?} after the client left");
    }
}

#[test]
fn a_stream_past_max_response_or_a_failing_guest_is_cut_not_ended() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let mut over = Streaming::get(&host, "/small?mode=bytes&total=2097152", &[]);
    assert_eq!(over.head.status, 200);
    let mut received = 0;
    let cut = loop {
        match over.chunk() {
            None => break true,
            Some(chunk) if chunk.is_empty() => break false,
            Some(chunk) => received += chunk.len(),
        }
    };
    assert!(cut, "a body past max_response must not end as if whole");
    assert!(
        received <= 1 << 20,
        "{received} bytes passed a 1 MiB max_response"
    );
    host.wait_for_log("max_response");
    let hits = "edgehost_limit_hits_total{route=\"/small\",kind=\"max_response\"}";
    assert_eq!(host.metric(TOKEN, hits), 1);

    let mut failing = Streaming::get(&host, "/small?mode=fail", &[]);
    assert_eq!(failing.chunk().unwrap(), b"one\n");
    assert_eq!(failing.chunk().unwrap(), b"two\n");
    assert_eq!(
        failing.chunk(),
        None,
        "a failed stream ends without its last chunk"
    );

    // HEAD gets the head of a streamed answer, without its body.
    let head = host.request("HEAD", "/small?mode=bytes&total=100", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

/// The value the route wrote under `key` once it is there (with a deadline).
fn written(host: &Host, key: &str, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    loop {
        let reply = host.get(&format!("/stream?mode=read&key={key}"));
        if reply.status == 200 {
            return Some(reply.text());
        }
        assert_eq!(reply.status, 404, "{}", reply.text());
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn work_after_the_answer_finishes_even_when_a_deploy_comes_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let sent = Instant::now();
    let reply = host.post("/after?key=k1&delay=300", "");
    let answered = sent.elapsed();
    println!("answered in {answered:?}; the work takes 300 ms more");
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert!(
        answered < Duration::from_millis(250),
        "the answer waited for the work: {answered:?}"
    );
    assert_eq!(
        written(&host, "k1", Duration::ZERO),
        None,
        "not written yet"
    );
    // A deploy of a changed manifest while the work goes on.
    std::thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
    let extra = format!(
        "\n[[route]]\npath = \"/extra\"\ncomponent = {:?}\n",
        component("fixture_streams")
    );
    std::fs::create_dir_all(dir.path().join("next")).unwrap();
    let changed = write_manifest(&dir.path().join("next"), &manifest(&extra));
    let to = format!("http://{}", host.admin());
    let out = edgehost(&["deploy", changed.to_str().unwrap(), "--to", &to], TOKEN);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value = written(&host, "k1", Duration::from_secs(3)).expect("the work wrote its key");
    let after_ms: u64 = value.parse().unwrap();
    assert!(after_ms >= 300, "written {after_ms} ms after the request");
    println!("written {after_ms} ms after the request, deploy at about 100 ms");
}

#[test]
fn work_past_its_wait_until_budget_is_stopped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let reply = host.post("/after?spin=1", "");
    assert_eq!(reply.status, 202, "{}", reply.text());
    host.wait_for_log("work after the answer stopped at its wait_until of 2s");
    let hits = "edgehost_limit_hits_total{route=\"/after\",kind=\"wait_until\"}";
    assert_eq!(host.metric(TOKEN, hits), 1);
    assert_eq!(host.post("/after?key=k&delay=0", "").status, 202);
}

#[test]
fn a_graceful_shutdown_lets_work_after_the_answer_finish() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    assert_eq!(host.post("/after?key=k2&delay=500", "").status, 202);
    let status = host.terminate();
    assert!(status.success(), "{status:?}");
    let host = start(dir.path());
    assert!(
        written(&host, "k2", Duration::ZERO).is_some(),
        "the work was cut off by the shutdown"
    );
}

/// A `multipart/form-data` body with one small field and files of these
/// sizes, written to `stream` as it is made.
struct Multipart {
    boundary: &'static str,
    files: Vec<(&'static str, usize)>,
}

impl Multipart {
    fn heads(&self) -> (String, Vec<String>, String) {
        let field = format!(
            "--{}\r\ncontent-disposition: form-data; name=\"title\"\r\n\r\nholiday\r\n",
            self.boundary
        );
        let heads = self
            .files
            .iter()
            .map(|(name, _)| {
                format!(
                    "--{}\r\ncontent-disposition: form-data; name=\"{name}\"; filename=\"{name}.bin\"\r\ncontent-type: application/octet-stream\r\n\r\n",
                    self.boundary
                )
            })
            .collect();
        (field, heads, format!("--{}--\r\n", self.boundary))
    }

    fn length(&self) -> usize {
        let (field, heads, end) = self.heads();
        field.len()
            + heads.iter().map(String::len).sum::<usize>()
            + self.files.iter().map(|(_, size)| size + 2).sum::<usize>()
            + end.len()
    }

    /// Sends the request head and then the body, `limit` bytes of it at
    /// most; the connection, to read the answer from.
    fn send(&self, host: &Host, path: &str, limit: usize) -> TcpStream {
        let mut stream = TcpStream::connect(host.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: multipart/form-data; boundary={}\r\ncontent-length: {}\r\n\r\n",
            self.boundary,
            self.length()
        );
        stream.write_all(head.as_bytes()).unwrap();
        let (field, heads, end) = self.heads();
        let mut sent = 0usize;
        let mut send = |bytes: &[u8]| -> bool {
            let take = bytes.len().min(limit - sent);
            if stream.write_all(&bytes[..take]).is_err() {
                return false;
            }
            sent += take;
            sent < limit
        };
        let block = vec![b'u'; 1 << 20];
        let mut more = send(field.as_bytes());
        for (head, (_, size)) in heads.iter().zip(&self.files) {
            more = more && send(head.as_bytes());
            let mut left = *size;
            while more && left > 0 {
                let n = left.min(block.len());
                more = send(&block[..n]);
                left -= n;
            }
            more = more && send(b"\r\n");
        }
        if more {
            send(end.as_bytes());
        }
        stream
    }
}

fn answer(mut stream: TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    support::parse_response(&raw, false)
}

#[test]
fn a_200_mib_upload_passes_part_by_part_through_a_16_mib_guest() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let upload = Multipart {
        boundary: "XyZzy-boundary-42",
        files: vec![("a", 100 << 20), ("b", 100 << 20)],
    };
    let before = host.rss_kib();
    let started = Instant::now();
    let sending = {
        let stream = upload.send(&host, "/upload", usize::MAX);
        // The host's memory once the whole body went through it.
        (stream, host.rss_kib())
    };
    let (stream, after) = sending;
    let reply = answer(stream);
    println!(
        "200 MiB upload answered in {:?}; host RSS {before} KiB before, {after} KiB after it was sent",
        started.elapsed()
    );
    assert!(
        after < before + 128 * 1024,
        "the host's memory grew from {before} to {after} KiB: the upload was held"
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({ "parts": [
            { "name": "title", "filename": null, "bytes": 7 },
            { "name": "a", "filename": "a.bin", "bytes": 100 << 20 },
            { "name": "b", "filename": "b.bin", "bytes": 100 << 20 },
        ] })
    );
    // The same route reads a raw body as a stream too.
    let raw = host.request("POST", "/upload?raw=1", &[], &vec![b'r'; 5 << 20]);
    assert_eq!(raw.json(), serde_json::json!({ "bytes": 5 << 20 }));
}

#[test]
fn a_part_over_max_part_is_413_naming_it_before_the_rest_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let upload = Multipart {
        boundary: "b0undary",
        files: vec![("big", 200 << 20)],
    };
    // Only 3 MiB of the 200 MiB are sent: the answer comes without the rest.
    let reply = answer(upload.send(&host, "/upload-strict", 3 << 20));
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["limit"], "max_part");
    let hits = "edgehost_limit_hits_total{route=\"/upload-strict\",kind=\"max_part\"}";
    assert_eq!(host.metric(TOKEN, hits), 1);

    // A streamed body past max_body without a declared length is 413 too.
    let mut chunked = b"POST /upload-strict?raw=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let block = vec![b'c'; 1 << 20];
    let mut stream = TcpStream::connect(host.addr).unwrap();
    stream.write_all(&chunked).unwrap();
    chunked.clear();
    for _ in 0..301 {
        let mut piece = format!("{:x}\r\n", block.len()).into_bytes();
        piece.extend_from_slice(&block);
        piece.extend_from_slice(b"\r\n");
        if stream.write_all(&piece).is_err() {
            break;
        }
    }
    let reply = answer(stream);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert_eq!(reply.json()["limit"], "max_body");
}
