//! The host at the edge: its response cache (RFC 9111 for a shared cache,
//! `Vary`, `Age`, `304`s, stale-while-revalidate, purges, deploys, the size
//! bound), CORS policies answered by the host, and rate limits. The cached
//! route counts its own runs in a key-value store and says which run an
//! answer came from, so a hit that ran the guest would show.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{component, connect_from, write_manifest, Host, Reply};

const TOKEN: &str = "test-admin-token-0123456789";

/// The cacheable fixture at `/cached/$`, with more manifest text after it.
fn manifest(extra: &str) -> String {
    let cacheable = component("fixture_cacheable");
    format!("[[route]]\npath = \"/cached/$\"\ncomponent = {cacheable:?}\nkv = [\"runs\"]\n{extra}")
}

fn start(dir: &Path, text: &str) -> Host {
    Host::start_with_admin(&write_manifest(dir, text), &dir.join("data"), TOKEN)
}

/// The run of the guest an answer came from.
fn run(reply: &Reply) -> i64 {
    assert_eq!(reply.status, 200, "{} {}", reply.status, reply.text());
    reply.json()["run"].as_i64().expect("a run number")
}

fn x_cache(reply: &Reply) -> &str {
    reply.header("x-cache").unwrap_or("(none)")
}

fn metric(host: &Host, name: &str) -> u64 {
    host.metric(TOKEN, name)
}

#[test]
fn a_hit_runs_no_guest_and_the_entry_expires_after_s_maxage() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &manifest(""));
    let url = "/cached/a?cc=public,%20s-maxage=1";
    let first = host.get(url);
    assert_eq!((run(&first), x_cache(&first)), (1, "MISS"));
    let stored_at = Instant::now();
    let second = host.get(url);
    assert_eq!((run(&second), x_cache(&second)), (1, "HIT"));
    assert_eq!(second.header("age"), Some("0"));
    assert_eq!(second.header("cache-control"), Some("public, s-maxage=1"));
    // HEAD is answered from the same entry: its length, no body.
    let head = host.request("HEAD", url, &[], b"");
    assert_eq!((head.status, x_cache(&head)), (200, "HIT"));
    assert_eq!(
        head.header("content-length"),
        Some(first.body.len().to_string().as_str())
    );
    assert!(head.body.is_empty());
    assert_eq!(
        metric(&host, "edgehost_cache_requests_total{result=\"hit\"}"),
        2
    );
    // Once s-maxage has passed the route runs again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let renewed = loop {
        let reply = host.get(url);
        if run(&reply) != 1 {
            break reply;
        }
        assert_eq!(x_cache(&reply), "HIT");
        assert!(Instant::now() < deadline, "the entry never expired");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(stored_at.elapsed() >= Duration::from_millis(900));
    assert_eq!((run(&renewed), x_cache(&renewed)), (2, "MISS"));
    // The rest of the query string is part of the key.
    assert_eq!(run(&host.get("/cached/a?cc=public,%20s-maxage=1&x=1")), 1);
}

#[test]
fn what_a_shared_cache_must_not_keep_is_never_served_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &manifest(""));
    for (url, headers) in [
        ("/cached/private?cc=private,max-age=60", vec![]),
        ("/cached/nostore?cc=no-store,max-age=60", vec![]),
        ("/cached/cookie?cc=max-age=60&cookie=session=1", vec![]),
        ("/cached/star?cc=max-age=60&vary=*", vec![]),
        ("/cached/none", vec![]),
        (
            "/cached/auth?cc=max-age=60",
            vec![("authorization", "Bearer x")],
        ),
    ] {
        for expected in [1, 2] {
            let reply = host.request("GET", url, &headers, b"");
            assert_eq!((run(&reply), x_cache(&reply)), (expected, "MISS"), "{url}");
        }
    }
    // Marked public, the answer is shared, but never with its cookie.
    let url = "/cached/public-cookie?cc=public,max-age=60&cookie=session=1";
    let first = host.get(url);
    assert_eq!(first.header("set-cookie"), Some("session=1"));
    let hit = host.get(url);
    assert_eq!((run(&hit), x_cache(&hit)), (1, "HIT"));
    assert_eq!(hit.header("set-cookie"), None);
    // A route with `cache = false` is never cached, whatever it says.
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &manifest("cache = false\n"));
    for expected in [1, 2] {
        let reply = host.get("/cached/off?cc=public,s-maxage=60");
        assert_eq!(run(&reply), expected);
        assert_eq!(reply.header("x-cache"), None);
    }
}

#[test]
fn vary_keeps_one_entry_per_value_and_conditionals_get_304() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &manifest(""));
    let url = "/cached/lang?cc=s-maxage=60&vary=Accept-Language";
    let ask = |lang: &str| host.request("GET", url, &[("accept-language", lang)], b"");
    assert_eq!(run(&ask("en")), 1);
    assert_eq!(run(&ask("fr")), 2);
    for (lang, expected) in [("en", 1), ("fr", 2)] {
        let reply = ask(lang);
        assert_eq!((run(&reply), x_cache(&reply)), (expected, "HIT"));
        assert_eq!(reply.json()["lang"], lang);
    }

    let url = "/cached/etag?cc=s-maxage=60&etag=v1";
    assert_eq!(run(&host.get(url)), 1);
    let unchanged = host.request("GET", url, &[("if-none-match", "\"v1\"")], b"");
    assert_eq!((unchanged.status, x_cache(&unchanged)), (304, "HIT"));
    assert_eq!(unchanged.header("etag"), Some("\"v1\""));
    assert!(unchanged.body.is_empty());
    let changed = host.request("GET", url, &[("if-none-match", "\"v0\"")], b"");
    assert_eq!((run(&changed), x_cache(&changed)), (1, "HIT"));

    // `no-cache`: stored, but each use asks the route, which confirms it
    // with a 304; the client gets the stored answer.
    let url = "/cached/revalidate?cc=no-cache&etag=v1";
    assert_eq!(run(&host.get(url)), 1);
    let confirmed = host.get(url);
    assert_eq!((run(&confirmed), x_cache(&confirmed)), (1, "HIT"));
    assert_eq!(
        metric(
            &host,
            "edgehost_cache_requests_total{result=\"revalidated\"}"
        ),
        1
    );
}

/// The value of the counter `key` in the `runs` store, read through the
/// key-value fixture route the manifest mounts at `/kv/$store/$op`.
fn runs_of(host: &Host, key: &str) -> i64 {
    let escaped: String = key
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let reply = host.post(&format!("/kv/runs/get?key={escaped}"), "");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("a counter")
}

#[test]
fn a_stale_entry_is_served_while_exactly_one_request_refreshes_it() {
    let dir = tempfile::tempdir().unwrap();
    let kv = component("fixture_kv");
    let host = start(
        dir.path(),
        &manifest(&format!(
            "\n[[route]]\npath = \"/kv/$store/$op\"\ncomponent = {kv:?}\nkv = [\"runs\"]\n"
        )),
    );
    // Stale at once, usable stale for 30 s; each run takes a second, so
    // all 50 requests come while the one refresh runs.
    let query = "cc=s-maxage=0,%20stale-while-revalidate=30&spin=1000";
    let url = format!("/cached/swr?{query}");
    assert_eq!(run(&host.get(&url)), 1);
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..50).map(|_| scope.spawn(|| host.get(&url))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for reply in &replies {
        assert_eq!((run(reply), x_cache(reply)), (1, "STALE"));
    }
    // One refresh ran: the counter reaches 2, and a refresh per request
    // would have counted every one of them at its start.
    let key = format!("/cached/swr?{query}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut runs = runs_of(&host, &key);
    while runs < 2 {
        assert!(Instant::now() < deadline, "the refresh never ran");
        std::thread::sleep(Duration::from_millis(20));
        runs = runs_of(&host, &key);
    }
    assert_eq!(runs, 2, "more than one refresh ran");
    // Its answer replaces the entry.
    let deadline = Instant::now() + Duration::from_secs(10);
    while run(&host.get(&url)) != 2 {
        assert!(
            Instant::now() < deadline,
            "the refreshed answer was never served"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(metric(&host, "edgehost_cache_requests_total{result=\"stale\"}") >= 50);
}

#[test]
fn purges_by_prefix_and_tag_and_tags_stay_private() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), &manifest(""));
    let urls = [
        "/cached/p/1?cc=s-maxage=60&tag=posts%20post-1",
        "/cached/p/2?cc=s-maxage=60&tag=posts",
        "/cached/q?cc=s-maxage=60&tag=post-1",
    ];
    for url in urls {
        let reply = host.get(url);
        assert_eq!(run(&reply), 1);
        assert_eq!(reply.header("cache-tag"), None);
        assert_eq!(x_cache(&host.get(url)), "HIT");
    }
    let purge = |body: &str| {
        let reply = host.admin_request("POST", "/v1/cache/purge", TOKEN, body.as_bytes());
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["purged"].as_u64().unwrap()
    };
    assert_eq!(purge(r#"{"tag": "post-1"}"#), 2);
    let states: Vec<String> = urls
        .iter()
        .map(|u| x_cache(&host.get(u)).to_string())
        .collect();
    assert_eq!(states, ["MISS", "HIT", "MISS"]);
    assert_eq!(purge(r#"{"prefix": "/cached/p"}"#), 2);
    let states: Vec<String> = urls
        .iter()
        .map(|u| x_cache(&host.get(u)).to_string())
        .collect();
    assert_eq!(states, ["MISS", "MISS", "HIT"]);
    let bad = host.admin_request("POST", "/v1/cache/purge", TOKEN, br#"{"prefix": "x"}"#);
    assert_eq!(bad.status, 400);
    let unauthorized = host.admin_request("POST", "/v1/cache/purge", "", br#"{"tag": "posts"}"#);
    assert_eq!(unauthorized.status, 401);
}

#[test]
fn a_deploy_drops_only_the_changed_routes_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cacheable = component("fixture_cacheable");
    let two = |other_env: &str| {
        manifest(&format!(
            "\n[[route]]\npath = \"/other/$\"\ncomponent = {cacheable:?}\nkv = [\"runs\"]\nenv = {{ V = \"{other_env}\" }}\n"
        ))
    };
    let host = start(dir.path(), &two("1"));
    for url in ["/cached/d?cc=s-maxage=60", "/other/d?cc=s-maxage=60"] {
        assert_eq!(run(&host.get(url)), 1);
        assert_eq!(x_cache(&host.get(url)), "HIT");
    }
    let next = dir.path().join("next");
    std::fs::create_dir_all(&next).unwrap();
    let manifest = write_manifest(&next, &two("2"));
    let out = Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(["deploy", manifest.to_str().unwrap(), "--to"])
        .arg(format!("http://{}", host.admin()))
        .env("EDGEHOST_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = host.get("/cached/d?cc=s-maxage=60");
    assert_eq!((run(&kept), x_cache(&kept)), (1, "HIT"));
    let dropped = host.get("/other/d?cc=s-maxage=60");
    assert_eq!((run(&dropped), x_cache(&dropped)), (2, "MISS"));
    host.wait_for_log("dropped 1 cached answers of routes this deployment changed");
}

#[test]
fn the_size_bound_holds_under_a_flood_of_distinct_urls() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        &manifest("\n[cache]\nmax_size = \"64KiB\"\nmax_entry_size = \"8KiB\"\n"),
    );
    for i in 0..400 {
        let reply = host.get(&format!("/cached/flood/{i}?cc=s-maxage=60&size=2000"));
        assert_eq!(run(&reply), 1);
        // The gauge now and then: a flood of metric requests only slows the test.
        if i % 50 == 49 {
            assert!(metric(&host, "edgehost_cache_bytes") <= 64 * 1024);
        }
    }
    assert!(metric(&host, "edgehost_cache_evictions_total") >= 350);
    assert!(metric(&host, "edgehost_cache_entries") <= 32);
    // An answer over max_entry_size is never stored.
    let url = "/cached/big?cc=s-maxage=60&size=10000";
    assert_eq!(run(&host.get(url)), 1);
    assert_eq!(run(&host.get(url)), 2);
    assert!(metric(&host, "edgehost_cache_too_large_total") >= 1);
}

#[test]
fn cors_preflights_are_answered_by_the_host_for_listed_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let kv = component("fixture_kv");
    let data = component("api_data");
    let host = start(
        dir.path(),
        &manifest(&format!(
            "\n[[route]]\npath = \"/api/data\"\ncomponent = {data:?}\ncors = {{ origins = [\"https://app.example.com\"] }}\n\n[[route]]\npath = \"/kv/$store/$op\"\ncomponent = {kv:?}\nkv = [\"runs\"]\ncors = {{ origins = [\"https://app.example.com\"], methods = [\"POST\"], headers = [\"content-type\"], credentials = true, max_age = \"10m\" }}\n"
        )),
    );
    let preflight = |origin: &str, headers: &str| {
        host.request(
            "OPTIONS",
            "/kv/runs/incr?key=c",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", headers),
            ],
            b"",
        )
    };
    let granted = preflight("https://app.example.com", "content-type");
    assert_eq!(granted.status, 204);
    assert_eq!(
        granted.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(granted.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        granted.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(
        granted.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(granted.header("access-control-max-age"), Some("600"));
    for refused in [
        preflight("https://evil.example", "content-type"),
        preflight("https://app.example.com", "x-other"),
    ] {
        assert_eq!(refused.status, 204);
        assert_eq!(refused.header("access-control-allow-origin"), None);
    }
    let origin = |o: &str| {
        host.request(
            "POST",
            "/kv/runs/incr?key=c",
            &[("origin", o), ("content-type", "application/json")],
            b"{}",
        )
    };
    let listed = origin("https://app.example.com");
    assert_eq!(listed.status, 200);
    assert_eq!(
        listed.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(listed.header("vary"), Some("Origin"));
    let unlisted = origin("https://evil.example");
    assert_eq!(unlisted.header("access-control-allow-origin"), None);
    // The guest's own `Access-Control-Allow-Origin: *` gives way to the
    // policy, on answers from the route and from the cache alike.
    for expected in ["MISS", "HIT"] {
        let evil = host.request(
            "GET",
            "/api/data",
            &[("origin", "https://evil.example")],
            b"",
        );
        assert_eq!(x_cache(&evil), expected);
        assert_eq!(evil.header("access-control-allow-origin"), None);
    }
    let app = host.request(
        "GET",
        "/api/data",
        &[("origin", "https://app.example.com")],
        b"",
    );
    assert_eq!(
        app.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[test]
fn a_client_over_its_rate_limit_gets_429_and_others_are_not_affected() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        &manifest(
            "rate_limit = { requests = 3, per = \"1m\", burst = 3, header = \"x-api-key\" }\n",
        ),
    );
    let url = "/cached/limited";
    for remaining in [2, 1, 0] {
        let reply = host.get(url);
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("ratelimit"),
            Some(
                format!(
                    "limit=3, remaining={remaining}, reset={}",
                    (3 - remaining) * 20
                )
                .as_str()
            )
        );
        assert_eq!(reply.header("ratelimit-policy"), Some("3;w=60"));
    }
    let limited = host.get(url);
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert_eq!(limited.header("retry-after"), Some("20"));
    assert_eq!(limited.json()["error"], "Too many requests");
    assert_eq!(limited.json()["limit"], "rate_limit");
    assert_eq!(
        metric(
            &host,
            "edgehost_limit_hits_total{route=\"/cached/$\",kind=\"rate_limit\"}"
        ),
        1
    );
    // Another address, and another API key, have buckets of their own.
    let mut other = connect_from([127, 0, 0, 2], host.addr);
    use std::io::{Read, Write};
    write!(
        other,
        "GET {url} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    other.read_to_end(&mut raw).unwrap();
    assert_eq!(support::parse_response(&raw, false).status, 200);
    let keyed = host.request("GET", url, &[("x-api-key", "k1")], b"");
    assert_eq!(keyed.status, 200);
    assert_eq!(host.get(url).status, 429);
}
