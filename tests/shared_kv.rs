//! Key-value stores a fleet of hosts shares: two hosts on one Redis or one
//! PostgreSQL see the same data, count atomically together, answer 503 while
//! the store is down and use it again, without a restart, once it is back.
//! Also the per-route key and value limits.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::backends::{PostgresServer, RedisServer};
use support::{component, request, write_manifest, Host, Reply, Start};

/// Which shared backend a test runs on.
#[derive(Clone, Copy, Debug)]
enum Shared {
    Redis,
    Postgres,
}

/// A running shared server of either kind.
enum Server {
    Redis(RedisServer),
    Postgres(PostgresServer),
}

impl Server {
    fn start(kind: Shared) -> Server {
        match kind {
            Shared::Redis => Server::Redis(RedisServer::start()),
            Shared::Postgres => Server::Postgres(PostgresServer::start()),
        }
    }

    fn url(&self) -> String {
        match self {
            Server::Redis(server) => server.url(),
            Server::Postgres(server) => server.url(),
        }
    }

    fn backend(&self) -> &'static str {
        match self {
            Server::Redis(_) => "redis",
            Server::Postgres(_) => "postgres",
        }
    }

    fn stop(&mut self) {
        match self {
            Server::Redis(server) => server.stop(),
            Server::Postgres(server) => server.stop(),
        }
    }

    /// Starts it again on the same port (Redis comes back empty).
    fn restart(&mut self) {
        match self {
            Server::Redis(server) => server.restart(),
            Server::Postgres(server) => server.restart(),
        }
    }
}

/// The example posts routes, the health route and the kv fixture, with the
/// `posts` and `counters` stores on `server`.
fn manifest(dir: &Path, server: &Server) -> std::path::PathBuf {
    let text = format!(
        r#"[kv.posts]
backend = "{backend}"
url_env = "SHARED_KV_URL"

[kv.counters]
backend = "{backend}"
url_env = "SHARED_KV_URL"

[[route]]
path = "/api/posts"
component = {posts:?}
kv = ["posts"]

[[route]]
path = "/api/posts/$postId"
component = {post:?}
kv = ["posts"]

[[route]]
path = "/api/health"
component = {health:?}

[[route]]
path = "/kv/$store/$op"
component = {kv:?}
kv = ["counters", "local"]
timeout = "5s"
"#,
        backend = server.backend(),
        posts = component("fixture_posts_kv"),
        post = component("fixture_posts_kv_postid"),
        health = component("api_health"),
        kv = component("fixture_kv"),
    );
    write_manifest(dir, &text)
}

/// Two hosts on one shared server, each with its own data dir.
fn two_hosts(kind: Shared) -> (Server, [Host; 2], tempfile::TempDir) {
    let server = Server::start(kind);
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &server);
    let url = server.url();
    let start = |name: &str| {
        Host::start(Start {
            manifest: &manifest,
            data_dir: &dir.path().join(name),
            env: vec![("SHARED_KV_URL", url.as_str())],
        })
    };
    let hosts = [start("a"), start("b")];
    (server, hosts, dir)
}

fn a_post_made_on_one_host_is_read_listed_and_deleted_on_the_other(kind: Shared) {
    let (_server, [a, b], _dir) = two_hosts(kind);
    let created = a.post("/api/posts", r#"{"title":"Shared"}"#);
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_string();
    let read = b.get(&format!("/api/posts/{id}"));
    assert_eq!((read.status, read.json()), (200, created.json()));
    let listed = b.get("/api/posts");
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json(), serde_json::json!([created.json()]));
    assert_eq!(
        b.request("DELETE", &format!("/api/posts/{id}"), &[], b"")
            .status,
        204
    );
    assert_eq!(
        a.get(&format!("/api/posts/{id}")).status,
        404,
        "gone on A too"
    );
    assert_eq!(a.get("/api/posts").json(), serde_json::json!([]));
}

#[test]
fn redis_a_post_made_on_one_host_is_read_listed_and_deleted_on_the_other() {
    a_post_made_on_one_host_is_read_listed_and_deleted_on_the_other(Shared::Redis);
}

#[test]
fn postgres_a_post_made_on_one_host_is_read_listed_and_deleted_on_the_other() {
    a_post_made_on_one_host_is_read_listed_and_deleted_on_the_other(Shared::Postgres);
}

/// One increment over HTTP; its new value.
fn increment(addr: std::net::SocketAddr) -> i64 {
    let reply = request(addr, "POST", "/kv/counters/incr?key=hits", &[], b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["value"].as_i64().unwrap()
}

fn two_hosts_count_together_exactly(kind: Shared) {
    let (_server, [a, b], _dir) = two_hosts(kind);
    let addrs = [a.addr, b.addr];
    // 8 clients on each host, 500 increments each.
    let clients: Vec<_> = (0..16)
        .map(|client| {
            let addr = addrs[client % 2];
            std::thread::spawn(move || {
                let mut seen = Vec::with_capacity(500);
                for _ in 0..500 {
                    seen.push(increment(addr));
                }
                seen
            })
        })
        .collect();
    let mut values: Vec<i64> = clients
        .into_iter()
        .flat_map(|client| client.join().unwrap())
        .collect();
    values.sort_unstable();
    // Every increment saw its own value: 1 to 8000, each once.
    let expected: Vec<i64> = (1..=8000).collect();
    if values != expected {
        let first = values.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "{} increments seen, from {:?} to {:?}; first difference at {first:?}: {:?}",
            values.len(),
            values.first(),
            values.last(),
            first.map(|i| &values[i.saturating_sub(2)..(i + 3).min(values.len())])
        );
    }
    let total = request(a.addr, "POST", "/kv/counters/get?key=hits", &[], b"");
    assert_eq!(total.json()["value"], "8000");
}

#[test]
fn redis_two_hosts_count_together_exactly() {
    two_hosts_count_together_exactly(Shared::Redis);
}

#[test]
fn postgres_two_hosts_count_together_exactly() {
    two_hosts_count_together_exactly(Shared::Postgres);
}

/// Polls `path` on `host` until `done` holds, with a deadline; the answer
/// and how long it took.
fn wait_for(
    host: &Host,
    path: &str,
    deadline: Duration,
    done: impl Fn(&Reply) -> bool,
) -> (Reply, Duration) {
    let started = Instant::now();
    loop {
        let reply = host.get(path);
        if done(&reply) {
            return (reply, started.elapsed());
        }
        assert!(
            started.elapsed() < deadline,
            "{path} never answered as expected; last {}: {}\n{}",
            reply.status,
            reply.text(),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn a_store_that_goes_down_answers_503_and_comes_back_by_itself(kind: Shared) {
    let (mut server, [a, b], _dir) = two_hosts(kind);
    assert_eq!(a.post("/api/posts", r#"{"title":"before"}"#).status, 201);
    // Load on both hosts while the store goes away and comes back.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = [a.addr, b.addr]
        .into_iter()
        .map(|addr| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let reply = request(addr, "GET", "/api/posts", &[], b"");
                    slowest = slowest.max(started.elapsed());
                    *statuses.entry(reply.status).or_default() += 1;
                }
                (slowest, statuses)
            })
        })
        .collect();
    server.stop();
    let (down, _) = wait_for(&a, "/api/posts", Duration::from_secs(10), |r| {
        r.status == 503
    });
    assert_eq!(down.header("retry-after"), Some("1"), "{:?}", down.headers);
    assert!(down.text().contains("unavailable"), "{}", down.text());
    // Routes that do not use the store are untouched.
    assert_eq!(a.get("/api/health").status, 200);
    assert_eq!(b.get("/api/health").status, 200);
    let (_, _) = wait_for(&b, "/api/posts", Duration::from_secs(10), |r| {
        r.status == 503
    });
    server.restart();
    let (_, took) = wait_for(&a, "/api/posts", Duration::from_secs(10), |r| {
        r.status == 200
    });
    assert!(
        took < Duration::from_secs(2),
        "back {took:?} after the server restarted"
    );
    let (_, took) = wait_for(&b, "/api/posts", Duration::from_secs(10), |r| {
        r.status == 200
    });
    assert!(
        took < Duration::from_secs(2),
        "back {took:?} after the server restarted"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in load {
        let (slowest, statuses) = handle.join().unwrap();
        assert!(
            statuses.keys().all(|status| [200, 503].contains(status)),
            "only answers or 503s: {statuses:?}"
        );
        assert!(
            slowest < Duration::from_secs(5),
            "no request hung near its timeout: slowest {slowest:?}"
        );
    }
    // Said when it went and when it came back, not per request. (A server
    // in crash recovery may refuse once more just after taking a first
    // connection: that is one more change, said once.)
    for host in [&a, &b] {
        let log = host.log();
        for needle in [
            "key-value store posts is unavailable",
            "key-value store posts is reachable again",
        ] {
            let said = log.matches(needle).count();
            assert!(
                (1..=2).contains(&said),
                "{needle:?} said {said} times:\n{log}"
            );
        }
    }
}

#[test]
fn redis_a_store_that_goes_down_answers_503_and_comes_back_by_itself() {
    a_store_that_goes_down_answers_503_and_comes_back_by_itself(Shared::Redis);
}

#[test]
fn postgres_a_store_that_goes_down_answers_503_and_comes_back_by_itself() {
    a_store_that_goes_down_answers_503_and_comes_back_by_itself(Shared::Postgres);
}

#[test]
fn keys_and_values_over_the_route_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nmax_kv_value = \"4KiB\"\n\n[[route]]\npath = \"/kv/$store/$op\"\ncomponent = {:?}\nkv = [\"local\"]\nmax_kv_key = 16\n",
        component("fixture_kv")
    );
    let manifest = write_manifest(dir.path(), &text);
    let host = Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.path().join("data"),
        env: vec![],
    });
    let post = |path: &str| request(host.addr, "POST", path, &[], b"");
    assert_eq!(
        post("/kv/local/set?key=k&size=4096").status,
        204,
        "at the limit"
    );
    let over = post("/kv/local/set?key=k&size=4097");
    assert_eq!(over.status, 500, "{}", over.text());
    assert!(over.text().contains("max_kv_value"), "{}", over.text());
    let long_key = post(&format!("/kv/local/set?key={}&size=1", "k".repeat(17)));
    assert_eq!(long_key.status, 500, "{}", long_key.text());
    assert!(
        long_key.text().contains("max_kv_key"),
        "{}",
        long_key.text()
    );
    let long_incr = post(&format!("/kv/local/incr?key={}", "k".repeat(17)));
    assert!(
        long_incr.text().contains("max_kv_key"),
        "{}",
        long_incr.text()
    );
    let nul = post("/kv/local/set?key=a%00b&size=1");
    assert_eq!(nul.status, 500, "{}", nul.text());
    assert!(nul.text().contains("NUL"), "{}", nul.text());
    // What was refused was not stored.
    let stored = post("/kv/local/get?key=k");
    assert_eq!(stored.json()["value"].as_str().map(str::len), Some(4096));
    // A store the route is not granted cannot be opened.
    assert_eq!(post("/kv/other/get?key=k").status, 500);
}

#[test]
fn a_guest_filling_an_embedded_store_is_refused_at_its_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[kv.small]\nmax_size = \"64KiB\"\n\n[[route]]\npath = \"/kv/$store/$op\"\ncomponent = {:?}\nkv = [\"small\", \"big\"]\n",
        component("fixture_kv")
    );
    let manifest = write_manifest(dir.path(), &text);
    let start = || {
        Host::start(Start {
            manifest: &manifest,
            data_dir: &dir.path().join("data"),
            env: vec![],
        })
    };
    let host = start();
    let post = |host: &Host, path: &str| request(host.addr, "POST", path, &[], b"");
    // Fifteen values of 4 KiB (and a two-byte key) fit in 64 KiB...
    for i in 10..25 {
        let reply = post(&host, &format!("/kv/small/set?key=k{i}&size=4096"));
        assert_eq!(reply.status, 204, "value {i}: {}", reply.text());
    }
    // ...the sixteenth does not: the guest's write fails and names the bound.
    let full = post(&host, "/kv/small/set?key=k25&size=4096");
    assert_eq!(full.status, 500, "{}", full.text());
    assert!(full.text().contains("`small` is full"), "{}", full.text());
    assert!(full.text().contains("max_size of 65536"), "{}", full.text());
    assert_eq!(post(&host, "/kv/small/get?key=k25").status, 404);
    // Another store has its own bound (1 GiB by default).
    assert_eq!(post(&host, "/kv/big/set?key=k&size=65536").status, 204);
    drop(host);
    // After a restart the store is still full, until a key goes.
    let host = start();
    assert_eq!(post(&host, "/kv/small/set?key=k25&size=4096").status, 500);
    assert_eq!(post(&host, "/kv/small/set?key=k10&size=1").status, 204);
    assert_eq!(post(&host, "/kv/small/set?key=k25&size=4096").status, 204);
}

#[test]
fn routes_shows_each_stores_backend_and_check_wants_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::Redis(RedisServer::start());
    let manifest = manifest(dir.path(), &server);
    let edgehost = |args: &[&str], url: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_edgehost"));
        command
            .args(args)
            .arg(&manifest)
            .env_remove("SHARED_KV_URL");
        if let Some(url) = url {
            command.env("SHARED_KV_URL", url);
        }
        command.output().unwrap()
    };
    // Listing needs no URL: only the backend is shown.
    let out = edgehost(&["routes"], None);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |path: &str| table.lines().find(|l| l.starts_with(path)).unwrap_or("");
    assert!(row("/api/posts ").contains("kv:posts(redis)"), "{table}");
    assert!(
        row("/kv/").contains("kv:counters(redis) kv:local "),
        "{table}"
    );
    // Checking does: a host could not start without it.
    let out = edgehost(&["check"], None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "manifest.toml:1: [kv.posts]: SHARED_KV_URL is not set in the host's environment"
        ),
        "{stderr}"
    );
    let out = edgehost(&["check"], Some(&server.url()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_component_built_for_the_first_draft_still_links_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[route]]\npath = \"/draft1\"\ncomponent = {:?}\nkv = [\"local\"]\n",
        component("fixture_kv_draft1")
    );
    let manifest = write_manifest(dir.path(), &text);
    let host = Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.path().join("data"),
        env: vec![],
    });
    // More keys than one page holds: the numeric cursor pages on.
    let reply = host.get("/draft1?count=1500");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let keys: Vec<String> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..1500).map(|i| format!("k{i:05}")).collect();
    assert_eq!(keys, expected);
    assert_eq!(body["pages"], 2);
    assert_eq!(body["first"], "v");
}

#[test]
fn store_operations_are_counted_by_store_operation_and_result() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[route]]\npath = \"/kv/$store/$op\"\ncomponent = {:?}\nkv = [\"local\"]\nmax_kv_key = 8\n",
        component("fixture_kv")
    );
    let manifest = write_manifest(dir.path(), &text);
    let token = "kv-metrics-token-0123456789";
    let host = Host::start_with_args(
        Start {
            manifest: &manifest,
            data_dir: &dir.path().join("data"),
            env: vec![("EDGEHOST_ADMIN_TOKEN", token)],
        },
        &["serve", "--admin", "127.0.0.1:0"],
    );
    let post = |path: &str| request(host.addr, "POST", path, &[], b"");
    assert_eq!(post("/kv/local/set?key=a&size=3").status, 204);
    assert_eq!(post("/kv/local/incr?key=n").status, 200);
    assert_eq!(post("/kv/local/incr?key=n").status, 200);
    // A refused key never reaches the store: not an operation.
    assert_eq!(post("/kv/local/set?key=much-too-long&size=3").status, 500);
    // Incrementing text is one the store refuses.
    assert_eq!(post("/kv/local/incr?key=a").status, 500);
    let metrics = host.admin_request("GET", "/metrics", token, b"").text();
    for line in [
        r#"edgehost_kv_operations_total{store="local",backend="embedded",op="set",result="ok"} 1"#,
        r#"edgehost_kv_operations_total{store="local",backend="embedded",op="increment",result="ok"} 2"#,
        r#"edgehost_kv_operations_total{store="local",backend="embedded",op="increment",result="error"} 1"#,
        r#"edgehost_kv_operation_duration_seconds_count{store="local",backend="embedded"} 4"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
}

fn a_host_starts_while_its_store_is_down(kind: Shared) {
    let mut server = Server::start(kind);
    let url = server.url();
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest(dir.path(), &server);
    let host = Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.path().join("data"),
        env: vec![("SHARED_KV_URL", url.as_str())],
    });
    assert_eq!(host.get("/api/health").status, 200);
    let down = host.get("/api/posts");
    assert_eq!(down.status, 503, "{}", down.text());
    server.restart();
    let (_, took) = wait_for(&host, "/api/posts", Duration::from_secs(10), |r| {
        r.status == 200
    });
    assert!(
        took < Duration::from_secs(2),
        "usable {took:?} after the server started"
    );
}

#[test]
fn redis_a_host_starts_while_its_store_is_down() {
    a_host_starts_while_its_store_is_down(Shared::Redis);
}

#[test]
fn postgres_a_host_starts_while_its_store_is_down() {
    a_host_starts_while_its_store_is_down(Shared::Postgres);
}

fn compare_and_swap_from_a_guest(kind: Shared) {
    let (_server, [a, b], _dir) = two_hosts(kind);
    let cas = |host: &Host, query: &str, body: &[u8]| {
        let reply = request(
            host.addr,
            "POST",
            &format!("/kv/counters/cas?key=title{query}"),
            &[],
            body,
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["swapped"].as_bool().unwrap()
    };
    assert!(cas(&a, "", b"first"), "no value expected, none there");
    assert!(!cas(&b, "", b"again"), "no value expected, but A set one");
    assert!(!cas(&b, "&expect=stale", b"x"));
    assert!(cas(&b, "&expect=first", b"second"));
    let read = request(a.addr, "POST", "/kv/counters/get?key=title", &[], b"");
    assert_eq!(read.json()["value"], "second");
}

#[test]
fn redis_compare_and_swap_from_a_guest() {
    compare_and_swap_from_a_guest(Shared::Redis);
}

#[test]
fn postgres_compare_and_swap_from_a_guest() {
    compare_and_swap_from_a_guest(Shared::Postgres);
}
