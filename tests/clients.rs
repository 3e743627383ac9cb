//! Hostile and careless clients against the real host: requests HTTP/1.1
//! says must be refused, too many connections, connections left idle, and a
//! client that never reads its answer.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{component, connect_from, send_raw, write_manifest, Host, Reply};

const TOKEN: &str = "clients-admin-token-0123456789";

/// Starts a host with `server` as its `[server]` table, the health route, the
/// echo probe and the `wasi:http` fixture under `/px/$mode`.
fn start(dir: &std::path::Path, server: &str, proxy_route: &str) -> Host {
    let manifest = format!(
        r#"
[server]
{server}

[[route]]
path = "/api/health"
component = {health:?}

[[route]]
path = "/echo/$id"
component = {probe:?}

[[route]]
path = "/px/$mode"
component = {proxy:?}
{proxy_route}
"#,
        health = component("api_health"),
        probe = component("fixture_probe"),
        proxy = component("fixture_wasi_proxy"),
    );
    Host::start_with_admin(&write_manifest(dir, &manifest), &dir.join("data"), TOKEN)
}

/// The value of one metric line, by its full name with labels.
fn metric(host: &Host, name: &str) -> u64 {
    host.metric(TOKEN, name)
}

/// Polls `check` every 20 ms until it holds, failing after `seconds`.
fn eventually(seconds: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {seconds} s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything the host sends on `stream` until it closes it.
fn read_until_closed(mut stream: TcpStream) -> String {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        // A refused connection may be reset once the 503 is out.
        Err(err) if err.kind() == ErrorKind::ConnectionReset => {}
        Err(err) => panic!("the host did not close the connection: {err}"),
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A response head read byte by byte, so nothing after it is taken.
fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed before the head ended"
        );
        head.push(byte[0]);
    }
    head
}

/// One GET for `/api/health` on `stream`, kept alive; the status line.
fn health_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    // The head, then the body its content-length names.
    let seen = read_head(stream);
    let reply = support::parse_response(&seen, true);
    let length: usize = reply.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    String::from_utf8_lossy(&seen)
        .lines()
        .next()
        .unwrap()
        .to_string()
}

/// `count` kept-alive connections from `client`, each answered once.
fn answered_from(client: [u8; 4], host: &Host, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = connect_from(client, host.addr);
            let status = health_on(&mut stream);
            assert!(status.contains("200"), "{client:?}: {status}");
            stream
        })
        .collect()
}

fn raw(host: &Host, request: &str) -> Reply {
    send_raw(host.addr, request.as_bytes(), false)
}

#[test]
fn requests_http_1_1_refuses_are_400_and_connect_and_trace_never_reach_a_guest() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "", "");
    let refused = [
        (
            "GET /api/health HTTP/1.1\r\nconnection: close\r\n\r\n",
            "no Host",
        ),
        (
            "GET /api/health HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
            "two Host headers",
        ),
        (
            "GET /api/health HTTP/1.1\r\nhost: user@example.com\r\nconnection: close\r\n\r\n",
            "user info in Host",
        ),
        (
            "GET /api/health HTTP/1.1\r\nhost: example.com/x\r\nconnection: close\r\n\r\n",
            "a path in Host",
        ),
        (
            "GET /api/health HTTP/1.1\r\nhost:\r\nconnection: close\r\n\r\n",
            "an empty Host",
        ),
        (
            "POST /echo/1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\nconnection: close\r\n\r\nabcdef",
            "two different Content-Lengths",
        ),
        (
            "POST /echo/1 HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "Transfer-Encoding on HTTP/1.0",
        ),
        (
            "GET /api/health HTTP/1.1\r\nhost: x\r\nx-folded: a\r\n  b\r\nconnection: close\r\n\r\n",
            "an obs-fold line",
        ),
    ];
    for (request, what) in refused {
        let reply = raw(&host, request);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
    }
    // HTTP/1.0 has no Host rule; a valid host with a port is fine.
    assert_eq!(raw(&host, "GET /api/health HTTP/1.0\r\n\r\n").status, 200);
    let with_port = "GET /api/health HTTP/1.1\r\nhost: [::1]:8080\r\nconnection: close\r\n\r\n";
    assert_eq!(raw(&host, with_port).status, 200);

    // A `wasi:http` route answers every method it is sent, so a 501 here is
    // the host's own answer.
    assert_eq!(
        raw(
            &host,
            "DELETE /px/info HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .status,
        200
    );
    for request in [
        "TRACE /px/info HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\nconnection: close\r\n\r\n",
    ] {
        let reply = raw(&host, request);
        assert_eq!(reply.status, 501, "{request}: {}", reply.text());
        assert!(
            reply.text().contains("is not served here"),
            "{}",
            reply.text()
        );
    }
    assert_eq!(host.get("/api/health").status, 200);
}

#[test]
fn connections_past_the_limits_get_503_unread_and_other_clients_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        "max_connections = 6\nmax_connections_per_client = 3",
        "",
    );
    // Three kept-alive connections from one client, each answered.
    let first = answered_from([127, 0, 0, 2], &host, 3);
    // Its fourth is refused before it sends a byte.
    let fourth = read_until_closed(connect_from([127, 0, 0, 2], host.addr));
    assert!(fourth.starts_with("HTTP/1.1 503"), "{fourth:?}");
    assert!(fourth.contains("retry-after"), "{fourth:?}");

    // Another client still gets in, up to the host's total of six.
    let second = answered_from([127, 0, 0, 3], &host, 3);
    let seventh = read_until_closed(connect_from([127, 0, 0, 4], host.addr));
    assert!(seventh.starts_with("HTTP/1.1 503"), "{seventh:?}");

    // Closing connections frees their places.
    drop(first);
    eventually(10, "a freed place", || {
        let mut stream = connect_from([127, 0, 0, 4], host.addr);
        stream
            .write_all(b"GET /api/health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        read_until_closed(stream).starts_with("HTTP/1.1 200")
    });
    assert!(
        metric(
            &host,
            "edgehost_connections_refused_total{limit=\"max_connections_per_client\"}"
        ) >= 1
    );
    assert!(
        metric(
            &host,
            "edgehost_connections_refused_total{limit=\"max_connections\"}"
        ) >= 1
    );
    // The second client's three are what stays open.
    eventually(10, "the gauge at three", || {
        metric(&host, "edgehost_connections_open") == 3
    });
    drop(second);
    eventually(10, "the gauge back to zero", || {
        metric(&host, "edgehost_connections_open") == 0
    });
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_keep_alive_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "keep_alive_timeout = \"1s\"", "");
    let mut stream = connect_from([127, 0, 0, 1], host.addr);
    assert!(health_on(&mut stream).contains("200"));
    // A second request on the same connection within the timeout works.
    assert!(health_on(&mut stream).contains("200"));
    let started = Instant::now();
    let rest = read_until_closed(stream);
    assert_eq!(rest, "", "nothing more is sent on an idle connection");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the timeout",
        started.elapsed()
    );
    eventually(10, "the close counted", || {
        metric(
            &host,
            "edgehost_connections_closed_total{limit=\"keep_alive_timeout\"}",
        ) == 1
    });
}

#[test]
fn a_client_that_never_reads_is_dropped_and_its_slot_released() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        "write_timeout = \"1s\"",
        "timeout = \"120s\"\nmax_concurrency = 1\nmax_response = \"256MiB\"",
    );
    // 128 MiB is far more than the socket buffers hold; this client reads
    // none of it.
    let mut stalled = connect_from([127, 0, 0, 1], host.addr);
    stalled
        .write_all(b"GET /px/stream?mib=128 HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    // Its answer has begun (the head is all it reads)...
    let head = read_head(&mut stalled);
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    // ...and while it holds the route's one slot, others are turned away...
    let other = raw(
        &host,
        "GET /px/info HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(other.status, 503, "{}", other.text());
    // ...until the write deadline drops it and the guest is stopped.
    eventually(30, "the slot released", || {
        raw(
            &host,
            "GET /px/info HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .status
            == 200
    });
    assert_eq!(
        metric(
            &host,
            "edgehost_connections_closed_total{limit=\"write_timeout\"}"
        ),
        1
    );
    drop(stalled);
}
