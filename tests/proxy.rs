//! Standard `wasi:http/proxy` components as routes, with a fixture built from
//! the third-party `wstd` guest library: every method goes to them, params
//! arrive in a header, bodies stream both ways, limits and outbound rules hold.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::{component, write_manifest, Host, Start};

fn start(dir: &Path, extra: &str) -> Host {
    let manifest = write_manifest(
        dir,
        &format!(
            "[[route]]\npath = \"/px/$id/$\"\ncomponent = {:?}\n{extra}\n",
            component("fixture_wasi_proxy")
        ),
    );
    Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.join("data"),
        env: vec![],
    })
}

#[test]
fn every_method_goes_to_the_component_with_params_in_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "");
    let reply = host.request(
        "GET",
        "/px/7/a%2Fb/c/info?q=1",
        &[("x-edge-params", "forged=1")],
        b"",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.text(),
        "method=GET path=/px/7/a%2Fb/c/info query=q=1 params=id=7&_splat=a%252Fb%2Fc%2Finfo route=/px/$id/$"
    );
    host.wait_for_log("wasi-proxy saw /px/7/a%2Fb/c/info");

    let reply = host.request("POST", "/px/1/echo", &[], b"hello stream");
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello stream"));
    let reply = host.request("PUT", "/px/1/info", &[], b"");
    assert!(reply.text().starts_with("method=PUT"), "{}", reply.text());
    // Even OPTIONS is the component's to answer (its 404 here).
    let reply = host.request("OPTIONS", "/px/1/nothing", &[], b"");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), "no such fixture path");
}

#[test]
fn bodies_stream_through_a_guest_smaller_than_them() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        "memory = \"16MiB\"\nmax_body = \"48MiB\"\nmax_response = \"48MiB\"",
    );
    // 32 MiB in and 40 MiB out of a guest with 16 MiB of memory: only
    // possible if neither body is held whole.
    let big = vec![b'z'; 32 << 20];
    let reply = host.request("POST", "/px/1/count", &[], &big);
    assert_eq!((reply.status, reply.text()), (200, (32 << 20).to_string()));
    let reply = host.get("/px/1/stream?mib=40");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 40 << 20);
    assert!(reply.body.iter().all(|b| *b == b'x'));
    // Its length was not known up front: the access line, written when the
    // body ended, counts what was sent.
    host.wait_for_log("path=/px/1/stream route=/px/$id/$ status=200 duration_us=");
    let log = host.log();
    let access = log
        .lines()
        .find(|l| l.contains("path=/px/1/stream route="))
        .unwrap();
    assert!(access.ends_with(&format!("bytes={}", 40 << 20)), "{access}");

    // Over max_body by its declared length: 413 before the guest runs.
    let head = format!(
        "POST /px/1/count HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        49 << 20
    );
    let reply = support::send_raw(host.addr, head.as_bytes(), false);
    assert_eq!(reply.status, 413);
    // A streamed answer past max_response is cut off.
    let reply = host.get("/px/1/stream?mib=64");
    assert!(reply.body.len() < 64 << 20, "{} bytes", reply.body.len());
    host.wait_for_log("went past max_response");
    // The guest, writing into a closed stream, fails after its head was sent:
    // the host reports that too.
    host.wait_for_log("after the response head was sent; its body was cut short");
}

#[test]
fn a_proxy_components_outbound_requests_are_policed() {
    let listed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let (listed_addr, other_addr) = (listed.local_addr().unwrap(), other.local_addr().unwrap());
    let other_connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&other_connections);
    std::thread::spawn(move || {
        for _ in other.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listed.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        &format!("allowed_outbound_hosts = [\"http://{listed_addr}\"]"),
    );
    let reply = host.get(&format!("/px/1/fetch?url=http://{listed_addr}/x"));
    assert_eq!(reply.text(), "status 204");
    let reply = host.get(&format!("/px/1/fetch?url=http://{other_addr}/x"));
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );
    assert_eq!(other_connections.load(Ordering::SeqCst), 0);
    host.wait_for_log("refused");
}

#[test]
fn response_trailers_reach_a_client_that_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "");
    let raw = support::exchange_raw(
        host.addr,
        b"GET /px/1/trailers HTTP/1.1\r\nhost: x\r\nte: trailers\r\nconnection: close\r\n\r\n",
    );
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("transfer-encoding: chunked"), "{raw}");
    assert!(
        raw.ends_with("with trailers\r\n0\r\nx-checksum: 42\r\n\r\n"),
        "{raw}"
    );
}

#[test]
fn a_guest_that_crashes_mid_body_cuts_the_connection() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "");
    let mut stream = std::net::TcpStream::connect(host.addr).unwrap();
    stream
        .write_all(b"GET /px/1/stream-then-trap HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    // The connection may end in a reset: what arrived before it is enough.
    let _ = stream.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:.200}");
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "a truncated body was ended as if complete"
    );
    host.wait_for_log("after the response head was sent; its body was cut short");
}

#[test]
fn a_guest_streaming_to_a_client_that_does_not_read_is_stopped_at_its_time_limit() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        "timeout = \"1s\"\nmax_concurrency = 1\nmax_response = \"1GiB\"",
    );
    let mut stream = std::net::TcpStream::connect(host.addr).unwrap();
    stream
        .write_all(b"GET /px/1/stream?mib=1000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    // The client reads nothing: the guest fills what lies between them and
    // then waits, still holding its instance, until its time limit.
    host.wait_for_log("1s time limit after the response head was sent");
    // Its slot is free again: with max_concurrency = 1 the next request runs.
    let reply = host.get("/px/2/info");
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(stream);
}

#[test]
fn cpu_time_stops_a_spinning_proxy_component() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "timeout = \"30s\"\ncpu_time = \"100ms\"");
    let reply = host.get("/px/1/spin");
    assert_eq!(reply.status, 500, "{}", reply.text());
    host.wait_for_log("guest stopped after using its 100ms of CPU time");
    // A request that does little stays well within the same limit.
    let reply = host.request("POST", "/px/1/echo", &[], b"still here");
    assert_eq!((reply.status, reply.text().as_str()), (200, "still here"));
}

#[test]
fn a_request_without_a_host_is_a_400_not_a_guest_failure() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "");
    let reply = support::send_raw(host.addr, b"GET /px/1/info HTTP/1.0\r\n\r\n", false);
    assert_eq!(reply.status, 400, "{}", reply.text());
}

#[test]
fn a_guest_asking_for_more_random_bytes_than_one_call_allows_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), "memory = \"64MiB\"");
    let reply = host.get("/px/1/random?bytes=1048576");
    assert_eq!((reply.status, reply.text().as_str()), (200, "1048576"));
    // 32 MiB in one call would be a 32 MiB allocation in the host.
    let reply = host.get("/px/1/random?bytes=33554432");
    assert_eq!(reply.status, 500, "{}", reply.text());
    host.wait_for_log("requested len 33554432 exceeds limit 1048576");
    assert_eq!(host.get("/px/1/random?bytes=16").text(), "16");
}
