//! The example API of the README, end to end: the real host binary serving the
//! real `manifest.toml` with components built from `routes/`, and every check
//! again against its TypeScript copy in `examples/tanstack/` (one component
//! built from TanStack Start route files), which must answer exactly alike.

mod support;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use support::{component, repo_root, typescript_app, unix_now, Host, Start};

const SECRET: &str = "whsec_test_secret";

/// The two copies of the example app.
#[derive(Clone, Copy, Debug)]
enum App {
    /// Route crates under `routes/`, one component each.
    Rust,
    /// TanStack Start route files under `examples/tanstack/routes/`, one
    /// component for all of them.
    TypeScript,
}

impl App {
    fn manifest(self) -> PathBuf {
        match self {
            App::Rust => repo_root().join("manifest.toml"),
            App::TypeScript => repo_root().join("examples/tanstack/manifest.toml"),
        }
    }

    /// How many components the app's routes are built into.
    fn components(self) -> usize {
        match self {
            App::Rust => example_routes(),
            App::TypeScript => 1,
        }
    }

    /// Fails, saying how to build it, when the app is not built.
    fn ensure_built(self) {
        match self {
            App::Rust => {
                for name in [
                    "api_health",
                    "api_posts",
                    "api_posts_postid",
                    "api_views_postid",
                    "api_webhooks_stripe",
                    "api_data",
                ] {
                    component(name);
                }
            }
            App::TypeScript => typescript_app("tanstack-routes", "examples/tanstack/routes"),
        }
    }
}

fn start(app: App, data_dir: &Path) -> Host {
    app.ensure_built();
    Host::start(Start {
        manifest: &app.manifest(),
        data_dir,
        env: vec![("STRIPE_WEBHOOK_SECRET", SECRET)],
    })
}

/// Each check once per app: `rust::name` and `typescript::name`.
macro_rules! for_both_apps {
    ($($name:ident),* $(,)?) => {
        mod rust {
            $(#[test] fn $name() { super::$name(super::App::Rust) })*
        }
        mod typescript {
            $(#[test] fn $name() { super::$name(super::App::TypeScript) })*
        }
    };
}

for_both_apps!(
    health_reports_ok_and_the_time,
    views_count_atomically_in_the_key_value_store,
    posts_crud,
    invalid_post_bodies_are_400,
    unimplemented_methods_are_405_with_allow,
    unknown_paths_and_bad_escapes,
    data_sets_cache_and_cors_headers,
    stripe_webhook_checks_signatures,
    posts_survive_a_restart,
    a_restart_with_an_unchanged_manifest_compiles_nothing,
    a_missing_secret_stops_the_host_from_starting,
);

fn sign(body: &str, t: u64, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn health_reports_ok_and_the_time(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());
    let reply = host.get("/api/health");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["status"], "ok");
    let timestamp = body["timestamp"].as_u64().expect("timestamp in ms");
    let now_ms = unix_now() * 1000;
    assert!(
        timestamp.abs_diff(now_ms) < 60_000,
        "{timestamp} vs {now_ms}"
    );

    // Trailing slash and case of static segments do not matter.
    assert_eq!(host.get("/api/health/").status, 200);
    assert_eq!(host.get("/API/Health").status, 200);
}

fn views_count_atomically_in_the_key_value_store(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());
    assert_eq!(
        host.get("/api/views/p1").json(),
        json!({ "postId": "p1", "views": 0 })
    );
    // Counted from many connections at once: none is lost.
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..5 {
                    assert_eq!(host.post("/api/views/p1", "").status, 200);
                }
            });
        }
    });
    assert_eq!(host.get("/api/views/p1").json()["views"], 40);
    assert_eq!(host.get("/api/views/p2").json()["views"], 0);
}

fn posts_crud(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());

    let empty = host.get("/api/posts");
    assert_eq!((empty.status, empty.json()), (200, json!([])));

    let created = host.post("/api/posts", r#"{"title":"Hello","body":"First post"}"#);
    assert_eq!(created.status, 201, "{}", created.text());
    let post = created.json();
    let id = post["id"].as_str().expect("generated id").to_string();
    assert!(!id.is_empty());
    assert_eq!(post["title"], "Hello");
    assert_eq!(post["body"], "First post");
    assert_eq!(
        created.header("location"),
        Some(format!("/api/posts/{id}").as_str())
    );

    let second = host.post("/api/posts", r#"{"title":"Second"}"#).json();
    assert_ne!(second["id"], post["id"]);

    let list = host.get("/api/posts").json();
    let titles: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Hello", "Second"]);

    let one = host.get(&format!("/api/posts/{id}"));
    assert_eq!((one.status, one.json()), (200, post.clone()));

    let head = host.request("HEAD", &format!("/api/posts/{id}"), &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(
        head.header("content-length"),
        Some(one.body.len().to_string().as_str())
    );

    let deleted = host.request("DELETE", &format!("/api/posts/{id}"), &[], b"");
    assert_eq!(deleted.status, 204);
    assert!(deleted.body.is_empty());

    let gone = host.get(&format!("/api/posts/{id}"));
    assert_eq!(
        (gone.status, gone.json()),
        (404, json!({ "error": "Not found" }))
    );
    assert_eq!(
        host.request("DELETE", &format!("/api/posts/{id}"), &[], b"")
            .status,
        404
    );
    assert_eq!(host.get("/api/posts").json().as_array().unwrap().len(), 1);
}

fn invalid_post_bodies_are_400(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());
    for body in ["{not json", "", r#"["an array"]"#, "42"] {
        let reply = host.post("/api/posts", body);
        assert_eq!(reply.status, 400, "body {body:?}: {}", reply.text());
        assert!(reply.json()["error"].is_string());
    }
    let reply = host.post("/api/posts", "{not json");
    assert!(reply.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON body"));
    assert_eq!(
        host.get("/api/posts").json(),
        json!([]),
        "nothing was stored"
    );
}

fn unimplemented_methods_are_405_with_allow(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());
    for method in ["PUT", "PATCH", "POST"] {
        let reply = host.request(method, "/api/posts/1", &[], b"{}");
        assert_eq!(reply.status, 405, "{method}");
        let mut allow: Vec<&str> = reply.header("allow").unwrap().split(", ").collect();
        allow.sort();
        assert_eq!(allow, ["DELETE", "GET", "HEAD", "OPTIONS"]);
        assert_eq!(reply.json()["error"], "Method not allowed");
    }
    let reply = host.request("GET", "/api/webhooks/stripe", &[], b"");
    assert_eq!(
        (reply.status, reply.header("allow")),
        (405, Some("OPTIONS, POST"))
    );

    let options = host.request("OPTIONS", "/api/posts", &[], b"");
    assert_eq!(options.status, 204);
    assert_eq!(options.header("allow"), Some("GET, HEAD, OPTIONS, POST"));
}

fn unknown_paths_and_bad_escapes(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());
    let missing = host.get("/api/nothing");
    assert_eq!(
        (missing.status, missing.json()),
        (404, json!({ "error": "Not found" }))
    );
    assert_eq!(host.get("/api/posts/1/extra").status, 404);
    let bad = host.get("/api/posts/%zz");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("percent"));
    // The host is still fine afterwards.
    assert_eq!(host.get("/api/health").status, 200);
}

fn data_sets_cache_and_cors_headers(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());
    let reply = host.get("/api/data");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("cache-control"), Some("public, s-maxage=60"));
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.json()["items"].is_array());
}

fn stripe_webhook_checks_signatures(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());
    let body = r#"{"id":"evt_1","object":"event","type":"checkout.session.completed"}"#;
    let post = |signature: Option<&str>| {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(signature.map(|s| ("stripe-signature", s)));
        host.request("POST", "/api/webhooks/stripe", &headers, body.as_bytes())
    };

    let missing = post(None);
    assert_eq!(
        (missing.status, missing.json()),
        (400, json!({ "error": "Missing signature" }))
    );

    let t = unix_now();
    let valid = post(Some(&format!("t={t},v1={}", sign(body, t, SECRET))));
    assert_eq!(
        (valid.status, valid.json()),
        (200, json!({ "received": true }))
    );

    let invalid = json!({ "error": "Invalid signature" });
    let wrong_secret = post(Some(&format!("t={t},v1={}", sign(body, t, "whsec_wrong"))));
    assert_eq!(
        (wrong_secret.status, wrong_secret.json()),
        (400, invalid.clone())
    );
    let stale_t = t - 301;
    let stale = post(Some(&format!(
        "t={stale_t},v1={}",
        sign(body, stale_t, SECRET)
    )));
    assert_eq!((stale.status, stale.json()), (400, invalid.clone()));
    let garbage = post(Some("nonsense"));
    assert_eq!((garbage.status, garbage.json()), (400, invalid));

    // The guest's stdout reached the host log, tagged with its route.
    let log = host.wait_for_log("verified stripe event");
    let line = log
        .lines()
        .find(|l| l.contains("verified stripe event"))
        .unwrap();
    assert!(line.contains("/api/webhooks/stripe"), "{line}");
}

fn posts_survive_a_restart(app: App) {
    let data = tempfile::tempdir().unwrap();
    let host = start(app, data.path());
    let post = host.post("/api/posts", r#"{"title":"Durable"}"#).json();
    let status = host.terminate();
    assert!(status.success(), "graceful exit: {status}");

    let host = start(app, data.path());
    let id = post["id"].as_str().unwrap();
    let again = host.get(&format!("/api/posts/{id}"));
    assert_eq!((again.status, again.json()), (200, post));
}

/// The route crates under `routes/`, which the example manifest mounts.
fn example_routes() -> usize {
    fn count(dir: &std::path::Path) -> usize {
        if dir.join("Cargo.toml").is_file() {
            return 1;
        }
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .map(|e| count(&e.path()))
            .sum()
    }
    count(&repo_root().join("routes"))
}

fn a_restart_with_an_unchanged_manifest_compiles_nothing(app: App) {
    let components = app.components();
    let data = tempfile::tempdir().unwrap();
    let first = start(app, data.path());
    let log = first.log();
    match app {
        App::Rust => {
            assert!(components >= 6, "the example has {components} routes");
            assert_eq!(log.matches("compiled in").count(), components, "{log}");
        }
        // `edgehost build` compiled the app's component ahead, with the
        // engine settings of a host like this one: no route compiles.
        App::TypeScript => {
            assert!(!log.contains("compiled in"), "{log}");
            assert_eq!(
                log.matches("loaded from the compile cache").count(),
                1,
                "the app's seven routes load one component: {log}"
            );
        }
    }
    drop(first);
    let entries = std::fs::read_dir(data.path().join("compiled"))
        .unwrap()
        .count();
    assert_eq!(entries, components, "one cache entry per component");

    let second = start(app, data.path());
    let log = second.log();
    assert_eq!(
        log.matches("loaded from the compile cache").count(),
        components,
        "{log}"
    );
    assert!(!log.contains("compiled in"), "{log}");
    assert_eq!(second.get("/api/health").status, 200);
    if let App::TypeScript = app {
        // Recompiling the JavaScript engine takes Cranelift long seconds;
        // the Rust app checks a corrupt entry below.
        return;
    }

    // A corrupt entry is ignored and recompiled, never trusted.
    drop(second);
    for entry in std::fs::read_dir(data.path().join("compiled")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = start(app, data.path());
    assert_eq!(
        third.log().matches("compiled in").count(),
        components,
        "{}",
        third.log()
    );
    assert_eq!(third.get("/api/health").status, 200);
}

fn a_missing_secret_stops_the_host_from_starting(app: App) {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .arg("serve")
        .arg("--manifest")
        .arg(app.manifest())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("route \"/api/webhooks/stripe\": secret STRIPE_WEBHOOK_SECRET is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("manifest.toml:"),
        "names the file and line: {stderr}"
    );
}
