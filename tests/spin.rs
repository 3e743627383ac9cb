//! Components Spin 4 builds (WASI 0.3: they export `wasi:http/handler@0.3.0`)
//! as routes, with fixtures written with `spin-sdk` 7 from crates.io: Spin's
//! request headers, its variables and key-value interfaces, bodies streaming
//! both ways, every limit, and `edgehost import` of a Spin manifest.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::{component, edgehost, write_manifest, Host, Start};

const TOKEN: &str = "spin-test-token";

/// A request for the Spin fixture's answer with a trailer.
const TRAILERS_REQUEST: &[u8] =
    b"GET /spin/trailers HTTP/1.1\r\nhost: x\r\nte: trailers\r\nconnection: close\r\n\r\n";

fn start(dir: &Path, routes: &str, env: Vec<(&'static str, &'static str)>) -> Host {
    let manifest = write_manifest(dir, routes);
    Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.join("data"),
        env,
    })
}

/// A route of the Spin HTTP fixture at `path`, with `extra` settings.
fn http_route(path: &str, extra: &str) -> String {
    format!(
        "[[route]]\npath = {path:?}\ncomponent = {:?}\n{extra}\n",
        component("fixture_spin_http")
    )
}

#[test]
fn a_spin_service_reads_its_path_param_and_the_rest_through_spin_headers() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &http_route("/spin/items/$id", ""), vec![]);
    let reply = host.request(
        "GET",
        "/spin/items/42?view=full",
        // A client cannot say what matched.
        &[
            ("spin-path-match-id", "forged"),
            ("spin-path-match-admin", "true"),
            ("spin-client-addr", "10.0.0.1:1"),
        ],
        b"",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["id"], "42", "{body}");
    let headers = &body["headers"];
    assert_eq!(headers["spin-path-match-id"], "42");
    assert_eq!(headers["spin-path-info"], "");
    assert_eq!(headers["spin-matched-route"], "/spin/items/:id");
    assert_eq!(headers["spin-component-route"], "/spin/items/:id");
    assert_eq!(headers["spin-raw-component-route"], "/spin/items/:id");
    assert_eq!(headers["spin-base-path"], "/");
    assert_eq!(
        headers["spin-full-url"],
        format!("http://{}/spin/items/42?view=full", host.addr)
    );
    let client = headers["spin-client-addr"].as_str().unwrap_or_default();
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    assert_eq!(body["method"], "GET");
    // The component answers every method itself.
    let reply = host.request("DELETE", "/spin/items/7", &[], b"");
    assert_eq!(reply.json()["method"], "DELETE");
    // Its log lines carry the request's id.
    let id = reply.header("x-request-id").unwrap_or_default().to_string();
    host.wait_for_log(&format!(
        "request_id={id} method=DELETE path=/spin/items/7 route=/spin/items/$id status=200"
    ));
}

#[test]
fn spin_headers_can_be_turned_off_and_a_clients_never_pass() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        &http_route("/spin/items/$id", "spin_headers = false"),
        vec![],
    );
    let reply = host.request(
        "GET",
        "/spin/items/3",
        &[("spin-path-match-id", "forged")],
        b"",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["headers"],
        serde_json::json!({}),
        "{}",
        reply.text()
    );
}

#[test]
fn a_wildcard_route_gives_the_rest_of_the_path_as_spin_path_info() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &http_route("/spin/$", ""), vec![]);
    let reply = host.request(
        "POST",
        "/spin/echo",
        &[("content-type", "text/plain")],
        b"hello spin",
    );
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello spin"));
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("x-echo-length"), Some("10"));
    // A short answer finished in one go goes out whole, with its length.
    assert_eq!(reply.header("content-length"), Some("10"));
    let reply = host.get("/spin/a/b");
    let headers = &reply.json()["headers"];
    assert_eq!(headers["spin-path-info"], "/a/b");
    assert_eq!(headers["spin-matched-route"], "/spin/...");
    assert_eq!(headers["spin-component-route"], "/spin");
}

#[test]
fn bodies_stream_both_ways_through_a_service_smaller_than_them() {
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}[[route]]\npath = \"/stream\"\ncomponent = {:?}\nmemory = \"16MiB\"\nmax_response = \"48MiB\"\n\
         [[route]]\npath = \"/cut\"\ncomponent = {:?}\nmax_response = \"1MiB\"\n",
        http_route("/spin/$", "memory = \"16MiB\"\nmax_body = \"48MiB\""),
        component("fixture_spin_stream"),
        component("fixture_spin_stream"),
    );
    let host = start(dir.path(), &routes, vec![]);
    // 32 MiB in and 40 MiB out of guests with 16 MiB of memory: only
    // possible if neither body is held whole.
    let big = vec![b'z'; 32 << 20];
    let reply = host.request("POST", "/spin/count", &[], &big);
    assert_eq!(
        (reply.status, reply.text()),
        (200, (32 << 20).to_string()),
        "{}",
        host.log()
    );
    let reply = host.request("GET", "/stream", &[("x-chunks", "640")], b"");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reply.body.len(), 40 << 20);
    // In order: chunk i is 64 KiB of byte i.
    for (i, chunk) in reply.body.chunks(64 << 10).enumerate() {
        assert!(
            chunk.iter().all(|b| *b == i as u8),
            "chunk {i} out of order"
        );
    }
    // Over max_body by its declared length: 413 before the guest runs.
    let head = format!(
        "POST /spin/count HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        49 << 20
    );
    assert_eq!(
        support::send_raw(host.addr, head.as_bytes(), false).status,
        413
    );
    // A streamed answer past max_response is cut off, not ended as whole.
    let reply = host.request("GET", "/cut", &[("x-chunks", "64")], b"");
    assert!(reply.body.len() < 4 << 20, "{} bytes", reply.body.len());
    host.wait_for_log("went past max_response");
}

#[test]
fn response_trailers_reach_a_client_that_accepts_them() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &http_route("/spin/$", ""), vec![]);
    let raw = support::exchange_raw(host.addr, TRAILERS_REQUEST);
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(
        raw.ends_with("with trailers\r\n0\r\nx-checksum: abc123\r\n\r\n"),
        "{raw}"
    );
}

#[test]
fn limits_stop_a_spinning_or_memory_hungry_service_as_they_stop_others() {
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}{}{}",
        http_route("/timeout/$", "timeout = \"1s\""),
        http_route("/cpu/$", "timeout = \"30s\"\ncpu_time = \"100ms\""),
        http_route("/mem/$", "memory = \"32MiB\"\nmax_concurrency = 1"),
    );
    let host = start(dir.path(), &routes, vec![]);
    let started = std::time::Instant::now();
    let reply = host.get("/timeout/loop");
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.json()["limit"], "timeout");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let reply = host.get("/cpu/loop");
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.json()["limit"], "cpu_time");
    host.wait_for_log("guest stopped after using its 100ms of CPU time");
    // A request that does little stays well within the same limit.
    let reply = host.request("POST", "/cpu/echo", &[], b"still here");
    assert_eq!((reply.status, reply.text().as_str()), (200, "still here"));

    let before = host.rss_kib();
    for _ in 0..3 {
        let reply = host.get("/mem/memory");
        assert_eq!(reply.status, 500, "{}", reply.text());
        assert_eq!(reply.json()["limit"], "memory");
    }
    host.wait_for_log("refused memory past its 33554432 byte limit");
    let grown = host.rss_kib().saturating_sub(before);
    assert!(grown < 100 << 10, "the host grew by {grown} KiB");
    // The instance is gone with its memory: the next request runs.
    let reply = host.get("/mem/items");
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[test]
fn max_concurrency_holds_for_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        &http_route("/spin/$", "timeout = \"3s\"\nmax_concurrency = 1"),
        vec![],
    );
    let addr = host.addr;
    // Until it gets the slot (a request below may hold it a moment).
    let busy = std::thread::spawn(move || loop {
        let reply = support::request(addr, "GET", "/spin/loop", &[], b"");
        if reply.status != 503 {
            return reply;
        }
    });
    // Once the spinning one holds the one slot, the next is refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let reply = host.get("/spin/x");
        if reply.status == 503 {
            break reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused: {}",
            reply.text()
        );
    };
    assert_eq!(
        refused.json()["limit"],
        "max_concurrency",
        "{}",
        refused.text()
    );
    assert_eq!(busy.join().unwrap().status, 504);
}

#[test]
fn a_services_outbound_requests_are_policed() {
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
        for stream in listed.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream",
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        &http_route(
            "/spin/$",
            &format!("allowed_outbound_hosts = [\"http://{listed_addr}\"]"),
        ),
        vec![],
    );
    let url = format!("http://{listed_addr}/x");
    let reply = host.request("GET", "/spin/fetch", &[("x-fetch", &url)], b"");
    assert_eq!(reply.text(), "200 upstream");
    let url = format!("http://{other_addr}/x");
    let reply = host.request("GET", "/spin/fetch", &[("x-fetch", &url)], b"");
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );
    assert_eq!(other_connections.load(Ordering::SeqCst), 0);
    host.wait_for_log("refused");
}

/// The Spin key-value and variables fixture at `/kv`, granted `extra`.
fn kv_route(extra: &str) -> String {
    format!(
        "[[route]]\npath = \"/kv\"\ncomponent = {:?}\n{extra}\n",
        component("fixture_spin_kv")
    )
}

#[test]
fn spin_key_value_and_variables_reach_only_what_the_route_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}[[route]]\npath = \"/other\"\ncomponent = {:?}\n",
        kv_route("kv = [\"default\"]\nenv = { GREETING = \"hello\" }\nsecrets = [\"API_KEY\"]"),
        component("fixture_spin_kv")
    );
    let host = start(
        dir.path(),
        &routes,
        vec![("API_KEY", "s3cret"), ("OTHER_SECRET", "no")],
    );
    assert_eq!(
        host.request("PUT", "/kv?post-1", &[], b"first post").status,
        204
    );
    let reply = host.get("/kv?post-1");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["value"], "first post");
    assert_eq!(reply.json()["exists"], true);
    host.request("PUT", "/kv?post-2", &[], b"second");
    assert_eq!(reply_keys(&host), ["post-1", "post-2"]);
    assert_eq!(host.request("DELETE", "/kv?post-1", &[], b"").status, 204);
    let reply = host.get("/kv?post-1");
    assert_eq!(
        (reply.status, &reply.json()["exists"]),
        (404, &serde_json::json!(false))
    );
    assert_eq!(reply_keys(&host), ["post-2"]);

    // A store it is not granted is denied, as is every store to a route
    // granted none.
    let reply = host.request("GET", "/kv?post-2", &[("x-store", "sessions")], b"");
    assert_eq!(reply.status, 403);
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{}",
        reply.text()
    );
    let reply = host.get("/other?post-2");
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("AccessDenied"),
        "{}",
        reply.text()
    );

    // Variables are the route's env and granted secrets, by Spin's
    // lower-case names; nothing else of the host's environment.
    let variable = |path: &str, name: &str| {
        host.request("GET", path, &[("x-variable", name)], b"")
            .json()
    };
    assert_eq!(variable("/kv", "greeting")["value"], "hello");
    assert_eq!(variable("/kv", "api_key")["value"], "s3cret");
    for (path, name) in [
        ("/kv", "other_secret"),
        ("/kv", "path"),
        ("/other", "api_key"),
        ("/other", "greeting"),
    ] {
        let answer = variable(path, name);
        assert!(
            answer["error"].as_str().unwrap().contains("Undefined"),
            "{path} {name}: {answer}"
        );
    }
    assert!(variable("/kv", "API_KEY")["error"]
        .as_str()
        .unwrap()
        .contains("InvalidName"));
}

#[test]
fn spin_sqlite_runs_on_the_routes_granted_databases() {
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "[sql.default]\n[sql.other]\n{}[[route]]\npath = \"/ungranted\"\ncomponent = {:?}\n",
        kv_route("sql = [\"default\"]"),
        component("fixture_spin_kv")
    );
    let host = start(dir.path(), &routes, vec![]);
    let sql = |path: &str, statement: &str, param: &str| {
        host.request("POST", path, &[("x-sql", statement)], param.as_bytes())
    };
    let reply = sql(
        "/kv",
        "CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT NOT NULL)",
        "",
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    for (title, rowid) in [("first", 1), ("second", 2)] {
        let reply = sql("/kv", "INSERT INTO posts (title) VALUES (?)", title);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(
            (
                reply.json()["rowid"].as_i64(),
                reply.json()["changes"].as_u64()
            ),
            (Some(rowid), Some(1))
        );
    }
    let reply = sql("/kv", "SELECT id, title FROM posts ORDER BY id", "");
    assert_eq!(reply.json()["columns"], serde_json::json!(["id", "title"]));
    assert_eq!(
        reply.json()["rows"],
        serde_json::json!([[1, "first"], [2, "second"]])
    );
    let reply = sql("/kv", "UPDATE posts SET title = 'x'", "");
    assert_eq!(reply.json()["changes"], 2, "{}", reply.text());
    // A constraint and a typo come back as errors, not a failed instance.
    let reply = sql("/kv", "INSERT INTO posts (id, title) VALUES (1, ?)", "dup");
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("constraint"), "{}", reply.text());
    // The sandbox holds: no ATTACH, no database it is not granted.
    let reply = sql("/kv", "ATTACH DATABASE 'x.db' AS x", "");
    assert!(reply.text().contains("not allowed"), "{}", reply.text());
    let reply = host.request(
        "POST",
        "/kv",
        &[("x-sql", "SELECT 1"), ("x-database", "other")],
        b"",
    );
    assert!(reply.text().contains("AccessDenied"), "{}", reply.text());
    let reply = sql("/ungranted", "SELECT 1", "");
    assert!(reply.text().contains("AccessDenied"), "{}", reply.text());
}

fn reply_keys(host: &Host) -> Vec<String> {
    let reply = host.get("/kv");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let mut keys: Vec<String> = reply.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_store_over_its_limits_is_refused_to_a_spin_component_too() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        &kv_route("kv = [\"default\"]\nmax_kv_value = \"1KiB\""),
        vec![],
    );
    let reply = host.request("PUT", "/kv?big", &[], &vec![b'x'; 4096]);
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(host.get("/kv?big").status, 404);
}

#[test]
fn a_wasi_02_route_and_a_wasi_03_route_serve_side_by_side_and_deploy_together() {
    let dir = tempfile::tempdir().unwrap();
    let both = |version: &str| {
        format!(
            "[[route]]\npath = \"/px/$id/$\"\ncomponent = {:?}\nenv = {{ VERSION = {version:?} }}\n{}",
            component("fixture_wasi_proxy"),
            http_route("/spin/items/$id", &format!("env = {{ VERSION = {version:?} }}")),
        )
    };
    let manifest = write_manifest(dir.path(), &both("1"));
    let host = Host::start_with_args(
        Start {
            manifest: &manifest,
            data_dir: &dir.path().join("data"),
            env: vec![("EDGEHOST_ADMIN_TOKEN", TOKEN)],
        },
        &["serve", "--admin", "127.0.0.1:0"],
    );
    let check = |host: &Host| {
        let reply = host.get("/px/7/info");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert!(reply.text().starts_with("method=GET"), "{}", reply.text());
        let reply = host.get("/spin/items/9");
        assert_eq!(reply.json()["id"], "9", "{}", reply.text());
    };
    check(&host);
    // One deploy carries both.
    let next = dir.path().join("next");
    std::fs::create_dir_all(&next).unwrap();
    let manifest = write_manifest(&next, &(both("2") + &http_route("/spin/more/$", "")));
    let to = format!("http://{}", host.admin());
    let out = edgehost(&["deploy", manifest.to_str().unwrap(), "--to", &to], TOKEN);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&host);
    let reply = host.get("/spin/more/a");
    assert_eq!(
        reply.json()["headers"]["spin-path-info"],
        "/a",
        "{}",
        reply.text()
    );
    // The WASI 0.3 engine is made once, for the routes that need it.
    let log = host.log();
    assert_eq!(log.matches("WASI 0.3 engine made").count(), 1, "{log}");
}

#[test]
fn a_component_importing_a_spin_interface_the_host_lacks_fails_to_load_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A component whose only import is Spin's Redis interface.
    let wasm = wat::parse_str(
        r#"(component (import "spin:redis/redis@3.0.0" (instance (export "publish" (func)))))"#,
    )
    .unwrap();
    let file = dir.path().join("redis.wasm");
    std::fs::write(&file, wasm).unwrap();
    let manifest = write_manifest(
        dir.path(),
        &format!("[[route]]\npath = \"/r\"\ncomponent = {file:?}\n"),
    );
    let out = edgehost(&["check", "--manifest", manifest.to_str().unwrap()], TOKEN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("spin:redis/redis@3.0.0"), "{stderr}");
    assert!(stderr.contains("spin:key-value@3.0.0"), "{stderr}");
}

/// `wasmtime serve` (49, with WASI 0.3 on) serving `component`, killed
/// when dropped; `EDGEHOST_TEST_WASMTIME` names the CLI (`scripts/test.sh`
/// fetches it with `scripts/wasmtime-cli.sh`).
struct WasmtimeServe {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl WasmtimeServe {
    fn start(component: &Path) -> WasmtimeServe {
        let cli = std::env::var("EDGEHOST_TEST_WASMTIME").unwrap_or_else(|_| {
            panic!(
                "EDGEHOST_TEST_WASMTIME is not set: it names the wasmtime 49 CLI this test compares against; \
                 run ./scripts/test.sh, or EDGEHOST_TEST_WASMTIME=$(./scripts/wasmtime-cli.sh) cargo test"
            )
        });
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = std::process::Command::new(&cli)
            .args([
                "serve",
                "--addr",
                &addr.to_string(),
                "-Scli",
                "-Sp3",
                "-Wcomponent-model-async",
            ])
            .arg(component)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {cli}: {err}"));
        let served = WasmtimeServe { child, addr };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "wasmtime serve never listened on {addr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        served
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request sent to both hosts: method, path, headers, body, and the
/// peer's address.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [u8],
    std::net::SocketAddr,
);

#[test]
fn a_spin_component_answers_here_as_it_does_under_wasmtime_serve() {
    let dir = tempfile::tempdir().unwrap();
    let routes = format!(
        "{}[[route]]\npath = \"/stream\"\ncomponent = {:?}\nmax_response = \"64MiB\"\n",
        http_route("/spin/$", "max_body = \"8MiB\""),
        component("fixture_spin_stream"),
    );
    let host = start(dir.path(), &routes, vec![]);
    let peer_http = WasmtimeServe::start(&component("fixture_spin_http"));
    let peer_stream = WasmtimeServe::start(&component("fixture_spin_stream"));
    let body: Vec<u8> = (0..(3 << 20)).map(|i| (i % 251) as u8).collect();
    let cases: [Case; 5] = [
        (
            "POST",
            "/spin/echo",
            &[("content-type", "application/x-test")],
            &body,
            peer_http.addr,
        ),
        ("POST", "/spin/count", &[], &body, peer_http.addr),
        ("PUT", "/spin/items", &[], b"", peer_http.addr),
        (
            "GET",
            "/stream",
            &[("x-chunks", "100")],
            b"",
            peer_stream.addr,
        ),
        ("GET", "/stream", &[], b"", peer_stream.addr),
    ];
    for (method, path, headers, sent, peer) in cases {
        let ours = host.request(method, path, headers, sent);
        let theirs = support::request(peer, method, path, headers, sent);
        let what = format!("{method} {path}");
        assert_eq!(ours.status, theirs.status, "{what}");
        for name in ["content-type", "x-echo-length"] {
            assert_eq!(ours.header(name), theirs.header(name), "{what}: {name}");
        }
        if path == "/spin/items" {
            // What differs is only what Spin's headers add here.
            let (ours, theirs) = (ours.json(), theirs.json());
            assert_eq!(
                (&ours["method"], &ours["path"]),
                (&theirs["method"], &theirs["path"]),
                "{what}"
            );
            assert_eq!(theirs["headers"], serde_json::json!({}), "{what}");
        } else {
            assert_eq!(ours.body.len(), theirs.body.len(), "{what}");
            assert!(ours.body == theirs.body, "{what}: the bodies differ");
        }
    }
    // Trailers too, as each writes them.
    let raw = |addr| {
        let raw = support::exchange_raw(addr, TRAILERS_REQUEST);
        let raw = String::from_utf8_lossy(&raw).into_owned();
        raw[raw.find("\r\n\r\n").unwrap()..].to_string()
    };
    assert_eq!(raw(host.addr), raw(peer_http.addr));
}

/// A Spin application as `spin new` lays one out: two HTTP triggers (one
/// a wildcard), a key-value store, a plain and a secret variable.
const SPIN_TOML: &str = r#"
spin_manifest_version = 2

[application]
name = "shop"
version = "0.1.0"

[variables]
greeting = { default = "hello" }
api_key = { required = true, secret = true }

[[trigger.http]]
route = "/items/:id"
component = "items"

[[trigger.http]]
route = "/store/..."
component = "store"

[component.items]
source = "ITEMS"
[component.items.build]
command = "cargo build --target wasm32-wasip2 --release"

[component.store]
source = "STORE"
key_value_stores = ["default"]
files = ["static/**"]
[component.store.variables]
greeting = "{{ greeting }}"
api_key = "{{ api_key }}"
"#;

#[test]
fn an_imported_spin_manifest_checks_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let spin_toml = SPIN_TOML
        .replace("ITEMS", component("fixture_spin_http").to_str().unwrap())
        .replace("STORE", component("fixture_spin_kv").to_str().unwrap());
    let spin_file = dir.path().join("spin.toml");
    std::fs::write(&spin_file, spin_toml).unwrap();
    let out = edgehost(&["import", spin_file.to_str().unwrap()], TOKEN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // What it could not map, and why.
    assert!(
        stdout.contains("`files`: routes have no filesystem here"),
        "{stdout}"
    );
    let manifest = dir.path().join("manifest.toml");
    let written = std::fs::read_to_string(&manifest).unwrap();
    assert!(written.contains("path = \"/items/$id\""), "{written}");
    assert!(written.contains("path = \"/store/$\""), "{written}");
    assert!(written.contains("secrets = [\"API_KEY\"]"), "{written}");
    // A second import does not overwrite it.
    let again = edgehost(&["import", spin_file.to_str().unwrap()], TOKEN);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(["check", manifest.to_str().unwrap()])
        .env("API_KEY", "s3cret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let host = Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.path().join("data"),
        env: vec![("API_KEY", "s3cret")],
    });
    let reply = host.get("/items/5");
    assert_eq!(reply.json()["id"], "5", "{}", reply.text());
    assert_eq!(host.request("PUT", "/store/x?k", &[], b"v").status, 204);
    assert_eq!(host.get("/store/x?k").json()["value"], "v");
    let variable = |name: &str| {
        host.request("GET", "/store", &[("x-variable", name)], b"")
            .json()
    };
    assert_eq!(variable("greeting")["value"], "hello");
    assert_eq!(variable("api_key")["value"], "s3cret");
}
