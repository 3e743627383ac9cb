//! Hostile guests and hostile clients against the real host: every limit is
//! hit on purpose, and each test asserts what the client got, what the guest
//! saw, and that the host kept serving.

mod support;

use edgehost::capabilities::kv::{DiskKv, KvBackend, KvError, KvStores, Swap};
use edgehost::capabilities::sql::SqlDatabases;

use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;
use support::{component, connect_from, request, send_raw, write_manifest, Host, Reply, Start};

fn manifest_text() -> String {
    format!(
        r#"
[server]
header_timeout = "1s"
body_timeout = "1s"
drain_timeout = "20s"
max_header_bytes = "16KiB"
max_headers = 50

[[route]]
path = "/hostile/$mode"
component = {hostile:?}
timeout = "2s"
memory = "64MiB"
max_concurrency = 2

[[route]]
path = "/busy/$mode"
component = {hostile:?}
timeout = "5s"
max_concurrency = 2

[[route]]
path = "/slow/$mode"
component = {hostile:?}
timeout = "30s"

[[route]]
path = "/cpu/$mode"
component = {hostile:?}
timeout = "30s"
cpu_time = "200ms"

[[route]]
path = "/echo/$id"
component = {probe:?}
max_body = "64KiB"

[[route]]
path = "/api/health"
component = {health:?}
"#,
        hostile = component("fixture_hostile"),
        probe = component("fixture_probe"),
        health = component("api_health"),
    )
}

fn start(dir: &std::path::Path) -> Host {
    start_with(dir, &manifest_text())
}

/// Starts the host on `manifest` (written into `dir`), with a host-only
/// secret in its environment that no route is granted.
fn start_with(dir: &std::path::Path, manifest: &str) -> Host {
    let manifest = write_manifest(dir, manifest);
    Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.join("data"),
        env: vec![("HOST_ONLY_SECRET", "must-not-leak")],
    })
}

/// Sends `count` requests to a looping `path`, each one known to be spinning
/// (it says so in the log) before the next goes out. The handles give each
/// loop's reply once its time limit stops it.
fn start_loops(host: &Host, path: &'static str, count: usize) -> Vec<JoinHandle<Reply>> {
    let addr = host.addr;
    (1..=count)
        .map(|n| {
            let handle = std::thread::spawn(move || request(addr, "GET", path, &[], b""));
            host.wait_for_log_count("spinning", n);
            handle
        })
        .collect()
}

fn assert_healthy(host: &Host) {
    assert_eq!(host.get("/api/health").status, 200, "host still serves");
}

#[test]
fn a_light_route_stays_quick_while_two_guests_spin_on_two_cores() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    // Two guests burning their CPU until their 5 s timeout: as many as the
    // machine this suite runs on has cores.
    let loops = start_loops(&host, "/busy/loop", 2);
    let mut took: Vec<Duration> = (0..100)
        .map(|_| {
            let started = std::time::Instant::now();
            assert_eq!(host.get("/api/health").status, 200);
            started.elapsed()
        })
        .collect();
    took.sort();
    let (p50, p99) = (took[49], took[98]);
    println!("/api/health beside two spinning guests: p50 {p50:?}, p99 {p99:?} over 100 requests");
    assert!(
        p99 < Duration::from_millis(50),
        "p99 {p99:?} (p50 {p50:?}): a light route waited on its neighbours"
    );
    for handle in loops {
        assert_eq!(handle.join().unwrap().status, 504);
    }
}

#[test]
fn an_infinite_loop_is_stopped_with_504() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let reply = host.get("/hostile/loop");
    assert_eq!(reply.status, 504);
    assert_eq!(
        reply.json(),
        json!({ "error": "The route took too long to answer", "limit": "timeout" })
    );
    host.wait_for_log("guest timed out after 2s");
    assert_healthy(&host);
}

#[test]
fn guest_failures_are_500_without_internals() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let rss_before = host.rss_kib();
    for mode in [
        "memory",
        "recursion",
        "panic",
        "huge-response",
        "bad-header",
        "bad-status",
        "big-header",
        "many-headers",
        "memory",
        "memory",
        "memory",
    ] {
        let reply = host.get(&format!("/hostile/{mode}"));
        assert_eq!(reply.status, 500, "{mode}: {}", reply.text());
        // A failure the host decided because a limit was hit names it.
        let limit = match mode {
            "memory" => Some("memory"),
            "huge-response" => Some("max_response"),
            "big-header" => Some("max_header_bytes"),
            "many-headers" => Some("max_headers"),
            _ => None,
        };
        let mut expected = json!({ "error": "Internal server error" });
        if let Some(limit) = limit {
            expected["limit"] = limit.into();
        }
        assert_eq!(reply.json(), expected, "{mode}");
        assert_healthy(&host);
    }
    // Four 64 MiB memory bombs later, the host has not kept their memory.
    let growth_mib = host.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 100, "host grew by {growth_mib} MiB");
    // The log is read from the host's stderr as it comes: wait for the last
    // failure's line (the fourth memory bomb) before reading it.
    let log = host.wait_for_log_count("path=/hostile/memory", 4);
    for (mode, needle) in [
        ("memory", "guest trapped"),
        ("recursion", "guest trapped"),
        ("panic", "guest trapped: wasm trap: wasm `unreachable`"),
        ("huge-response", "max_response"),
        ("bad-header", "header name"),
        ("bad-status", "not a final HTTP status"),
        // The manifest's [server] allows 16 KiB and 50 headers.
        ("big-header", "over max_header_bytes (16384)"),
        ("many-headers", "headers are over max_headers (50)"),
    ] {
        let path = format!("path=/hostile/{mode}");
        assert!(
            log.lines().any(|l| l.contains(&path) && l.contains(needle)),
            "log should say {needle:?} for {mode}:\n{log}"
        );
    }
    assert!(
        log.contains("hostile panic"),
        "the guest's panic message is logged"
    );
}

#[test]
fn a_guest_cannot_write_terminal_controls_into_the_host_log() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    assert_eq!(host.get("/hostile/log-escape").status, 200);
    let log = host.wait_for_log("forged line");
    let line = log.lines().find(|l| l.contains("forged line")).unwrap();
    assert!(
        line.contains(r"\u{1b}[2J\rforged line\u{7}\u{202e}reversed"),
        "the controls are shown escaped: {line:?}"
    );
    assert!(
        !log.contains(['\u{1b}', '\r', '\u{7}', '\u{202e}']),
        "no raw control reaches the log: {log:?}"
    );
}

#[test]
fn guests_read_clocks_no_finer_than_clock_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let reply = host.get("/slow/clock");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let read = |key: &str| -> u128 { body[key].as_str().unwrap().parse().unwrap() };
    // The default clock_resolution is 1 ms: no two readings differ by less.
    assert!(read("monotonic_step_ns") >= 1_000_000, "{body}");
    assert!(read("wall_step_ns") >= 1_000_000, "{body}");
    assert_eq!(read("wall_ns") % 1_000_000, 0, "{body}");
    // The wall clock is still the real time, only coarser.
    let wall = read("wall_ns");
    assert!(
        wall + 1_000_000 >= before && wall < before + 60_000_000_000,
        "{body}"
    );
}

#[test]
fn megabytes_of_stdout_are_bounded_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let reply = host.get("/hostile/stdout");
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "printed 10 MiB")
    );
    let log = host.wait_for_log("the rest is dropped");
    let guest_lines = log.lines().filter(|l| l.contains("xxxxxxxx")).count();
    // 64 KiB budget, 1 KiB lines.
    assert!(
        (60..=70).contains(&guest_lines),
        "{guest_lines} guest lines logged"
    );
    assert!(log.len() < 1024 * 1024, "log is {} bytes", log.len());
}

#[test]
fn the_sandbox_denies_files_env_and_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());

    let files = host.get("/hostile/files").json();
    for line in files.as_array().unwrap() {
        assert!(line.as_str().unwrap().contains("error"), "{files}");
    }

    let env = host.get("/hostile/env").json();
    assert_eq!(env["vars"], json!([]), "no host environment: {env}");
    assert_eq!(env["PATH"], json!(null));
    assert_eq!(env["HOME"], json!(null));

    // A listener the guest could reach if sockets were allowed.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = listener.local_addr().unwrap();
    let socket = host.get(&format!("/hostile/socket?addr={target}"));
    assert!(socket.text().starts_with("error:"), "{}", socket.text());
    assert!(listener.accept().is_err(), "nothing connected");
}

#[test]
fn every_request_gets_a_fresh_instance() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    for _ in 0..3 {
        assert_eq!(host.get("/hostile/calls").json(), json!({ "calls": 1 }));
    }
}

#[test]
fn a_route_at_its_concurrency_limit_gets_503_and_others_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    // Two loops fill the route's two slots.
    let loops = start_loops(&host, "/busy/loop", 2);
    let busy = host.get("/busy/calls");
    assert_eq!(
        busy.status, 503,
        "a third request is refused while both spin"
    );
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert_eq!(busy.json()["error"], "The route is busy; try again shortly");
    assert_eq!(busy.json()["limit"], "max_concurrency");
    // Meanwhile another route answers, while the loops still spin.
    for _ in 0..5 {
        assert_healthy(&host);
    }
    assert!(
        loops.iter().all(|l| !l.is_finished()),
        "loops were still running"
    );
    for handle in loops {
        assert_eq!(handle.join().unwrap().status, 504);
    }
    // The slots are free again.
    assert_eq!(host.get("/busy/calls").status, 200);
}

#[test]
fn a_full_instance_pool_is_503_for_every_route_until_a_slot_frees() {
    let dir = tempfile::tempdir().unwrap();
    let host = start_with(
        dir.path(),
        &format!(
            r#"
[server]
max_instances = 2

[[route]]
path = "/busy/$mode"
component = {hostile:?}
timeout = "5s"

[[route]]
path = "/api/health"
component = {health:?}
"#,
            hostile = component("fixture_hostile"),
            health = component("api_health"),
        ),
    );
    assert_healthy(&host);
    let loops = start_loops(&host, "/busy/loop", 2);
    // Both slots of the pool hold a spinning guest: another route cannot get
    // an instance either, and is told to retry rather than that it failed.
    let refused = host.get("/api/health");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(
        refused.json()["limit"],
        "max_instances",
        "{}",
        refused.text()
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    host.wait_for_log("instance slots are in use");
    for handle in loops {
        assert_eq!(handle.join().unwrap().status, 504);
    }
    assert_healthy(&host);
}

#[test]
fn request_bodies_over_the_limit_are_413_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let small = host.request("POST", "/echo/1", &[], &[7u8; 1000]);
    assert_eq!((small.status, small.body.len()), (200, 1000));

    let big = host.request("POST", "/echo/1", &[], &vec![7u8; 100 * 1024]);
    assert_eq!(big.status, 413);
    assert_eq!(big.json()["error"], "Request body too large");
    assert_eq!(big.json()["limit"], "max_body");

    // A declared 10 GB body is refused from its head alone: none of it is sent.
    let declared = send_raw(
        host.addr,
        b"POST /echo/1 HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000000\r\n\r\n",
        false,
    );
    assert_eq!(declared.status, 413);

    // Chunked, without a length: counted as it arrives.
    let mut chunked = b"POST /echo/1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..20 {
        chunked.extend_from_slice(b"1000\r\n");
        chunked.extend_from_slice(&[b'a'; 0x1000]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(send_raw(host.addr, &chunked, false).status, 413);
    assert_healthy(&host);
}

#[test]
fn malformed_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    // Content-Length and Transfer-Encoding together: the chunked framing
    // wins (RFC 9112, 6.3), so the guest sees the empty chunked body, not
    // five bytes of the next request.
    let conflicting = send_raw(
        host.addr,
        b"POST /echo/1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /",
        false,
    );
    assert_eq!((conflicting.status, conflicting.body.len()), (200, 0));
    // A transfer-coding other than chunked cannot be framed at all.
    let unframed = send_raw(
        host.addr,
        b"POST /echo/1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nabc",
        false,
    );
    assert_eq!(unframed.status, 400);

    let big_header = format!(
        "GET /api/health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    assert_eq!(
        send_raw(host.addr, big_header.as_bytes(), false).status,
        431
    );

    let mut many = String::from("GET /api/health HTTP/1.1\r\nhost: x\r\n");
    for i in 0..80 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(send_raw(host.addr, many.as_bytes(), false).status, 431);

    assert_eq!(
        send_raw(host.addr, b"NOT HTTP AT ALL\r\n\r\n", false).status,
        400
    );
    for path in ["/hostile/%", "/hostile/%G0", "/echo/%C3"] {
        assert_eq!(host.get(path).status, 400, "{path}");
    }
    assert_healthy(&host);
}

#[test]
fn slow_and_stalled_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());

    // A head that never finishes: the connection is closed after header_timeout.
    let mut slow = TcpStream::connect(host.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    slow.write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest)
        .expect("the host closes the connection");
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.contains("200 OK"), "{text}");

    // A body that stalls halfway: 408 after body_timeout.
    let mut stalled = TcpStream::connect(host.addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stalled
        .write_all(b"POST /echo/1 HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .unwrap();
    let mut answer = Vec::new();
    stalled.read_to_end(&mut answer).unwrap();
    let reply = support::parse_response(&answer, false);
    assert_eq!(reply.status, 408);

    // Hundreds of idle connections, from five clients (each under
    // max_connections_per_client), do not stop the host from serving.
    let addr = host.addr;
    let idle: Vec<TcpStream> = (2..7)
        .flat_map(|client| (0..60).map(move |_| connect_from([127, 0, 0, client], addr)))
        .collect();
    assert_healthy(&host);
    drop(idle);
}

#[test]
fn shutdown_lets_in_flight_requests_finish_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let addr = host.addr;
    let slow = std::thread::spawn(move || request(addr, "GET", "/slow/sleep?ms=1500", &[], b""));
    host.wait_for_log("sleeping for 1500 ms");
    let status = host.terminate();
    let reply = slow.join().unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completed");
    assert_eq!(reply.json(), json!({ "slept_ms": 1500 }));
    assert!(status.success(), "exit status {status}");
    assert!(TcpStream::connect(addr).is_err(), "no longer accepting");
}

/// A key-value backend whose writes wait until the test lets them go, like
/// a commit waiting on a slow disk (waiting as a well-behaved backend does:
/// off the async workers).
struct GatedKv {
    inner: DiskKv,
    entered: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
    gate: std::sync::Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
}

#[async_trait::async_trait]
impl KvBackend for GatedKv {
    fn kind(&self) -> &'static str {
        "gated"
    }
    async fn get(&self, s: &str, k: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.inner.get(s, k).await
    }
    async fn set(&self, s: &str, k: &str, v: &[u8]) -> Result<(), KvError> {
        let _ = self.entered.lock().unwrap().send(());
        let gate = std::sync::Arc::clone(&self.gate);
        let _ = tokio::task::spawn_blocking(move || gate.lock().unwrap().recv()).await;
        self.inner.set(s, k, v).await
    }
    async fn delete(&self, s: &str, k: &str) -> Result<(), KvError> {
        self.inner.delete(s, k).await
    }
    async fn exists(&self, s: &str, k: &str) -> Result<bool, KvError> {
        self.inner.exists(s, k).await
    }
    async fn list_keys(
        &self,
        s: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), KvError> {
        self.inner.list_keys(s, after, limit).await
    }
    async fn increment(&self, s: &str, k: &str, delta: i64) -> Result<i64, KvError> {
        self.inner.increment(s, k, delta).await
    }
    async fn compare_and_swap(
        &self,
        s: &str,
        k: &str,
        expected: Option<&[u8]>,
        v: &[u8],
    ) -> Result<Swap, KvError> {
        self.inner.compare_and_swap(s, k, expected, v).await
    }
    async fn get_many(&self, s: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        self.inner.get_many(s, keys).await
    }
    async fn set_many(&self, s: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        self.inner.set_many(s, entries).await
    }
    async fn delete_many(&self, s: &str, keys: &[String]) -> Result<(), KvError> {
        self.inner.delete_many(s, keys).await
    }
}

#[test]
fn a_route_waiting_on_a_key_value_write_does_not_stall_other_requests() {
    use edgehost::runtime::{EngineSettings, GuestRequest, Method, Runtime};
    use std::sync::{mpsc, Arc, Mutex};

    // One async worker: a write holding it would stall every other request.
    // (Made first, so that it is dropped last: after `release`, which frees
    // a write still waiting should the test fail.)
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = write_manifest(
        dir.path(),
        &format!(
            "[[route]]\npath = \"/api/posts\"\ncomponent = {:?}\nkv = [\"posts\"]\n\n\
             [[route]]\npath = \"/api/health\"\ncomponent = {:?}\n",
            component("fixture_posts_kv"),
            component("api_health")
        ),
    );
    let manifest = edgehost::manifest::load(&manifest_path).unwrap();
    let (entered, write_started) = mpsc::channel();
    let (release, gate) = mpsc::channel();
    let kv = GatedKv {
        inner: DiskKv::open(&dir.path().join("kv")).unwrap(),
        entered: Mutex::new(entered),
        gate: Arc::new(Mutex::new(gate)),
    };
    let settings = EngineSettings::for_manifest(&manifest, dir.path());
    let runtime = Arc::new(
        Runtime::new(KvStores::new(Arc::new(kv)), SqlDatabases::none(), settings).unwrap(),
    );
    let table = Arc::new(runtime.load(&manifest).unwrap());
    let request = |method: &str, path: &str, body: &[u8]| GuestRequest {
        method: method.into(),
        url: format!("http://localhost{path}"),
        path: path.into(),
        query: String::new(),
        params: Vec::new(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: body.to_vec(),
        client_addr: "127.0.0.1:1".into(),
    };
    let call = |method: Method, guest: GuestRequest| {
        let (runtime, table) = (Arc::clone(&runtime), Arc::clone(&table));
        let (done, answer) = mpsc::channel();
        tokio.spawn(async move {
            let (route, _) = table.lookup(&guest.path).unwrap().unwrap();
            let id: Arc<str> = Arc::from("kv-test");
            let _ = done.send(
                runtime
                    .call(route, method, guest, &id)
                    .await
                    .map(|r| r.status),
            );
        });
        answer
    };

    let created = call(
        Method::Post,
        request("POST", "/api/posts", br#"{"title":"t"}"#),
    );
    write_started
        .recv_timeout(Duration::from_secs(10))
        .expect("the POST reached the store");
    // The write waits on its "disk"; the other route still answers.
    let health = call(Method::Get, request("GET", "/api/health", b""));
    let status = health
        .recv_timeout(Duration::from_secs(10))
        .expect("another route answered while a write was waiting");
    assert_eq!(status.unwrap(), 200);
    release.send(()).unwrap();
    let status = created.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(status.unwrap(), 201);
}

#[test]
fn cpu_time_stops_a_spinning_guest_but_not_a_waiting_one() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    // Spinning: stopped at its 200 ms of CPU, long before its 30 s timeout
    // (which would answer 504).
    let reply = host.get("/cpu/loop");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.json()["limit"], "cpu_time", "{}", reply.text());
    host.wait_for_log("guest stopped after using its 200ms of CPU time");
    // Sleeping 600 ms is waiting in the host, not running: it finishes.
    let reply = host.get("/cpu/sleep?ms=600");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["slept_ms"], 600);
    assert_eq!(host.get("/api/health").status, 200);
}
