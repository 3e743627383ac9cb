//! Outbound HTTP from routes: the example proxy route against an upstream on
//! loopback, and every refusal and limit with a guest that tries to pass it.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{component, write_manifest, Host, Start};

/// A small HTTP/1.1 server on loopback that records what reaches it.
///
/// | path | answer |
/// | --- | --- |
/// | `/redirect?to=URL` | 302 to URL |
/// | `/big?kib=N` | 200 with N KiB |
/// | `/hang` | reads the request, never answers |
/// | anything else | 200 JSON naming the path and the `accept` and `host` headers |
struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&connections), Arc::clone(&paths));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || answer(stream, &seen));
            }
        });
        Upstream {
            addr,
            connections,
            paths,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Answers the requests of one connection: one, unless they are for
/// `/keep`, which answers and waits for the next request on the same
/// connection.
fn answer(mut stream: TcpStream, seen: &Mutex<Vec<String>>) {
    while answer_one(&mut stream, seen) {}
}

/// Answers one request; whether the connection stays open for another.
fn answer_one(stream: &mut TcpStream, seen: &Mutex<Vec<String>>) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split(' ').nth(1).unwrap_or("/").to_string();
    let accept = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("accept: ")
                .or_else(|| l.strip_prefix("Accept: "))
        })
        .unwrap_or("")
        .to_string();
    let host = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("host: ")
                .or_else(|| l.strip_prefix("Host: "))
        })
        .unwrap_or("")
        .to_string();
    seen.lock().unwrap().push(target.clone());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .to_string()
    };
    let response = match path {
        "/keep" => {
            let body = b"kept";
            let mut r =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
            r.extend_from_slice(body);
            return stream.write_all(&r).is_ok();
        }
        "/redirect" => format!(
            "HTTP/1.1 302 Found\r\nlocation: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            param("to")
        )
        .into_bytes(),
        "/big" => {
            let kib: usize = param("kib").parse().unwrap_or(1);
            let mut r = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                kib * 1024
            )
            .into_bytes();
            r.extend(std::iter::repeat_n(b'x', kib * 1024));
            r
        }
        "/hang" => {
            // Hold the connection without answering until the client leaves.
            let _ = stream.read(&mut byte);
            return false;
        }
        _ => {
            let body =
                serde_json::json!({ "path": target, "accept": accept, "host": host }).to_string();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    };
    let _ = stream.write_all(&response);
    false
}

fn route(path: &str, component_name: &str, extra: &str) -> String {
    format!(
        "[[route]]\npath = {path:?}\ncomponent = {:?}\n{extra}\n",
        component(component_name)
    )
}

/// `path` is answered 502 by the proxy route because the host denied its
/// outbound request.
fn assert_denied(host: &Host, path: &str) {
    let reply = host.get(path);
    assert_eq!(reply.status, 502, "{path}: {}", reply.text());
    assert!(
        reply.text().contains("denied by the host"),
        "{path}: {}",
        reply.text()
    );
}

fn start(dir: &Path, routes: &[String]) -> Host {
    let manifest = write_manifest(dir, &routes.concat());
    Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.join("data"),
        env: vec![],
    })
}

#[test]
fn the_proxy_route_forwards_to_its_listed_upstream() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        &[route(
            "/api/proxy/$",
            "api_proxy",
            &format!(
                "env = {{ UPSTREAM_URL = {:?} }}\nallowed_outbound_hosts = [{:?}]",
                upstream.url(),
                upstream.url()
            ),
        )],
    );
    let reply = host.request(
        "GET",
        "/api/proxy/things/1?full=yes",
        &[("accept", "application/json")],
        b"",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/things/1?full=yes");
    assert_eq!(reply.json()["accept"], "application/json");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        upstream.paths.lock().unwrap().as_slice(),
        ["/things/1?full=yes"]
    );

    // A redirect within the listed origin is followed.
    let to = format!("{}/landed", upstream.url());
    let reply = host.get(&format!("/api/proxy/redirect?to={to}"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["path"], "/landed");
    assert_eq!(reply.header("x-upstream-url"), Some(to.as_str()));
}

#[test]
fn unlisted_origins_are_refused_before_any_connection() {
    let listed = Upstream::start();
    let other = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let allowed = format!("allowed_outbound_hosts = [{:?}]", listed.url());
    let host = start(
        dir.path(),
        &[
            // Same server, but named by a host that is not listed.
            route(
                "/by-name/$",
                "api_proxy",
                &format!(
                    "env = {{ UPSTREAM_URL = \"http://localhost:{}\" }}\n{allowed}",
                    listed.addr.port()
                ),
            ),
            // Same host, another port.
            route(
                "/other-port/$",
                "api_proxy",
                &format!("env = {{ UPSTREAM_URL = {:?} }}\n{allowed}", other.url()),
            ),
            // The listed origin, redirecting to one that is not.
            route(
                "/listed/$",
                "api_proxy",
                &format!("env = {{ UPSTREAM_URL = {:?} }}\n{allowed}", listed.url()),
            ),
            // Nothing listed: no outbound network at all.
            route(
                "/nothing/$",
                "api_proxy",
                &format!("env = {{ UPSTREAM_URL = {:?} }}", listed.url()),
            ),
        ],
    );
    for path in ["/by-name/x", "/other-port/x", "/nothing/x"] {
        assert_denied(&host, path);
    }
    assert_denied(
        &host,
        &format!("/listed/redirect?to={}/stolen", other.url()),
    );

    // Only the redirect itself reached a server: the listed one.
    assert_eq!(other.connections(), 0, "a refused request connected");
    assert_eq!(listed.paths.lock().unwrap().len(), 1);
    let log = host.wait_for_log_count("refused", 4);
    assert!(
        log.contains("is not in the route's allowed_outbound_hosts"),
        "{log}"
    );
    assert!(
        log.contains("the route has no allowed_outbound_hosts"),
        "{log}"
    );
}

#[test]
fn a_listed_name_resolving_to_an_internal_address_is_refused_unless_the_route_allows_it() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let by_name = format!("http://localhost:{}", upstream.addr.port());
    let listed =
        format!("env = {{ UPSTREAM_URL = {by_name:?} }}\nallowed_outbound_hosts = [{by_name:?}]");
    let host = start(
        dir.path(),
        &[
            // Listed by name, but the name is loopback.
            route("/inward/$", "api_proxy", &listed),
            // The same, with the route's explicit permission.
            route(
                "/permitted/$",
                "api_proxy",
                &format!("{listed}\nallow_private_networks = true"),
            ),
            // An entry that names the address itself means it.
            route(
                "/literal/$",
                "api_proxy",
                &format!(
                    "env = {{ UPSTREAM_URL = {url:?} }}\nallowed_outbound_hosts = [{url:?}]",
                    url = upstream.url()
                ),
            ),
            // The cloud metadata address, reached through a wildcard entry.
            route(
                "/metadata/$",
                "api_proxy",
                "env = { UPSTREAM_URL = \"http://169.254.169.254\" }\nallowed_outbound_hosts = [\"http://*.254.169.254\"]",
            ),
        ],
    );
    for path in ["/inward/x", "/metadata/latest/meta-data"] {
        assert_denied(&host, path);
    }
    assert_eq!(upstream.connections(), 0, "a refused request connected");
    let log = host.wait_for_log("resolves to");
    assert!(
        log.contains("a loopback address; set allow_private_networks = true"),
        "{log}"
    );
    host.wait_for_log("169.254.169.254 is a link-local address");

    for path in ["/permitted/x", "/literal/x"] {
        let reply = host.get(path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.json()["path"], "/x");
    }
    // Connected to the checked address, the request still names its host.
    let reply = host.get("/permitted/named");
    assert_eq!(reply.json()["host"], by_name.trim_start_matches("http://"));
    assert_eq!(upstream.connections(), 3);
}

#[test]
fn outbound_limits_hold_against_a_guest_that_pushes_them() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let allowed = format!("allowed_outbound_hosts = [{:?}]", upstream.url());
    let host = start(
        dir.path(),
        &[
            route(
                "/counted/$mode",
                "fixture_hostile",
                &format!("{allowed}\nmax_outbound_requests = 2"),
            ),
            route(
                "/small/$mode",
                "fixture_hostile",
                &format!("{allowed}\nmax_outbound_response = \"4KiB\""),
            ),
            route(
                "/patient/$mode",
                "fixture_hostile",
                &format!("{allowed}\noutbound_timeout = \"300ms\""),
            ),
            // Outbound time counts against the route's own timeout.
            route(
                "/bounded/$mode",
                "fixture_hostile",
                &format!("{allowed}\ntimeout = \"1s\"\noutbound_timeout = \"60s\""),
            ),
        ],
    );
    let url = upstream.url();

    let reply = host.get(&format!("/counted/fetch?url={url}/a&times=3"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results = reply.json();
    assert!(results[0].as_str().unwrap().starts_with("200"), "{results}");
    assert!(results[1].as_str().unwrap().starts_with("200"), "{results}");
    assert!(results[2].as_str().unwrap().contains("denied"), "{results}");
    assert_eq!(upstream.paths.lock().unwrap().len(), 2);
    host.wait_for_log("max_outbound_requests");

    // Refused attempts count too: a guest looping on a refused URL gets two
    // refusal lines and one saying the rest go unlogged, not ten.
    let reply = host.request(
        "GET",
        "/counted/fetch?url=http://unlisted.test/&times=10",
        &[("x-request-id", "loop-1")],
        b"",
    );
    let results = reply.json();
    assert_eq!(results.as_array().unwrap().len(), 10);
    assert!(results
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.as_str().unwrap().contains("denied")));
    // A refused POST says "denied" too, though its body could not be sent.
    let reply = host.get("/small/fetch?url=http://unlisted.test/&method=POST");
    assert!(
        reply.json()[0].as_str().unwrap().contains("denied"),
        "{}",
        reply.text()
    );
    let log = host.wait_for_log("request_id=loop-1 method=GET");
    let refusals = log
        .lines()
        .filter(|l| l.contains("refused") && l.contains("loop-1"))
        .count();
    assert_eq!(refusals, 3, "{log}");

    let reply = host.get(&format!("/small/fetch?url={url}/big%3Fkib=2"));
    assert!(
        reply.json()[0]
            .as_str()
            .unwrap()
            .starts_with("200 (2048 bytes)"),
        "{}",
        reply.text()
    );
    let reply = host.get(&format!("/small/fetch?url={url}/big%3Fkib=64"));
    let result = reply.json()[0].as_str().unwrap().to_string();
    assert!(
        result.starts_with("error") && result.contains("body size exceeds limit"),
        "{result}"
    );

    let reply = host.get(&format!("/patient/fetch?url={url}/hang"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let result = reply.json()[0].as_str().unwrap().to_string();
    assert!(
        result.starts_with("error") && result.contains("Timeout"),
        "{result}"
    );

    let reply = host.get(&format!("/bounded/fetch?url={url}/hang"));
    assert_eq!(reply.status, 504, "{}", reply.text());
}

#[test]
fn a_bad_allowed_outbound_host_is_a_manifest_error() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &route(
            "/p/$",
            "api_proxy",
            "allowed_outbound_hosts = [\"https://ok.example.com\", \"ftp://files.example.com\"]",
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(["check"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("manifest.toml:4: route \"/p/$\": allowed_outbound_hosts: \"ftp://files.example.com\" is not an origin"),
        "{stderr}"
    );
}

#[test]
fn outbound_connections_are_kept_and_reused_across_requests() {
    let upstream = Upstream::start();
    let unlisted = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &route(
            "/hostile/$mode",
            "fixture_hostile",
            &format!("allowed_outbound_hosts = [{:?}]", upstream.url()),
        ),
    );
    let token = "outbound-admin-token-0123456789";
    let host = Host::start_with_admin(&manifest, &dir.path().join("data"), token);
    let url = format!("{}/keep", upstream.url());
    let started = std::time::Instant::now();
    // 200 requests of 50 fetches each, four clients at a time.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (addr, url) = (host.addr, url.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let reply = support::request(
                        addr,
                        "GET",
                        &format!("/hostile/fetch?times=50&url={url}"),
                        &[],
                        b"",
                    );
                    assert_eq!(reply.status, 200, "{}", reply.text());
                    let results: Vec<String> = serde_json::from_slice(&reply.body).unwrap();
                    assert_eq!(results.len(), 50);
                    assert!(results.iter().all(|r| r == "200 (4 bytes)"), "{results:?}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let opened = upstream.connections();
    println!(
        "10,000 fetches in {:?} over {opened} connections",
        started.elapsed()
    );
    assert!(opened <= 20, "{opened} connections for 10,000 fetches");
    // The host counts the same: what it opened, and what it reused.
    let metric = |result: &str| {
        host.metric(
            token,
            &format!("edgehost_outbound_connections_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(metric("opened"), opened as u64);
    assert_eq!(metric("reused"), 10_000 - opened as u64);
    // The pool never takes a request past the allow-list.
    let refused = host.get(&format!(
        "/hostile/fetch?times=3&url={}/keep",
        unlisted.url()
    ));
    let results: Vec<String> = serde_json::from_slice(&refused.body).unwrap();
    assert!(
        results.iter().all(|r| r.starts_with("error")),
        "{results:?}"
    );
    assert_eq!(unlisted.connections(), 0);
}
