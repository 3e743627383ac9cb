//! TypeScript routes, end to end: TanStack Start route files under
//! `tests/ts-app/routes/`, built by `edgehost build` into one component and
//! served by the real host; the build's refusals, run on files written here.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use support::{repo_root, typescript_app, write_manifest, Host, Start};

fn app_dir() -> PathBuf {
    repo_root().join("tests/ts-app")
}

/// Fails, saying how to build it, when the fixture app is not built.
fn ensure_built() {
    typescript_app("ts_app-routes", "tests/ts-app/routes");
}

fn start(data: &Path) -> Host {
    ensure_built();
    Host::start(Start {
        manifest: &app_dir().join("manifest.toml"),
        data_dir: data,
        env: vec![
            ("GRANTED_SECRET", "granted-value"),
            ("OTHER_SECRET", "not-for-this-route"),
        ],
    })
}

#[test]
fn each_tanstack_form_answers_with_its_handlers() {
    let data = tempfile::tempdir().unwrap();
    let host = start(data.path());

    let api = host.get("/api/forms/api");
    assert_eq!(api.status, 200, "{}", api.text());
    assert_eq!(
        api.json(),
        json!({ "form": "api", "url": "/api/forms/api" })
    );

    let server = host.get("/api/forms/server");
    assert_eq!(
        (server.status, server.json()),
        (200, json!({ "form": "server" }))
    );
    // A handler given through the builder's `handler(...)`.
    let created = host.post("/api/forms/server", r#"{"a":1}"#);
    assert_eq!(
        (created.status, created.json()),
        (201, json!({ "form": "server", "got": { "a": 1 } }))
    );

    let file = host.get("/api/forms/file");
    assert_eq!((file.status, file.json()), (200, json!({ "form": "file" })));
    let echoed = host.request("PUT", "/api/forms/file", &[], b"plain text");
    assert_eq!((echoed.status, echoed.text()), (200, "plain text".into()));

    // A flat file name (items.$id.ts) and a (group) folder's index.
    let item = host.get("/api/items/a%20b");
    assert_eq!((item.status, item.json()), (200, json!({ "id": "a b" })));
    let grouped = host.get("/api/grouped");
    assert_eq!(
        (grouped.status, grouped.json()),
        (200, json!({ "grouped": true }))
    );
    assert_eq!(host.get("/admin/api/grouped").status, 404);
}

#[test]
fn methods_a_file_does_not_export_are_405_and_head_and_options_are_answered() {
    let data = tempfile::tempdir().unwrap();
    let host = start(data.path());
    for method in ["POST", "DELETE", "PATCH"] {
        let reply = host.request(method, "/api/forms/api", &[], b"");
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(
            reply.json(),
            json!({ "error": "Method not allowed", "allow": "GET, HEAD, OPTIONS" })
        );
    }
    let get = host.get("/api/forms/file");
    let head = host.request("HEAD", "/api/forms/file", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    let options = host.request("OPTIONS", "/api/forms/file", &[], b"");
    assert_eq!(options.status, 204);
    assert_eq!(options.header("allow"), Some("GET, HEAD, OPTIONS, PUT"));
}

#[test]
fn a_throw_is_a_500_that_keeps_its_message_in_the_log() {
    let data = tempfile::tempdir().unwrap();
    let host = start(data.path());
    let reply = host.get("/api/fail");
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json(), json!({ "error": "Internal server error" }));
    assert!(!reply.text().contains("hunter2"));
    let request_id = reply.header("x-request-id").unwrap().to_string();
    let log = host.wait_for_log("the database password is hunter2");
    let line = log.lines().find(|l| l.contains("hunter2")).unwrap();
    assert!(line.contains("/api/fail"), "{line}");
    assert!(line.contains(&request_id), "{line}");

    // A thrown Response is the answer.
    let thrown = host.post("/api/fail", "");
    assert_eq!(thrown.status, 418);
    assert_eq!(thrown.text(), "I am a teapot");
    assert_eq!(thrown.header("x-thrown"), Some("yes"));

    // request.json() on a body that is not JSON: a 400, in one line.
    let bad = host.request("PUT", "/api/fail", &[], b"{oops");
    assert_eq!(bad.status, 400);
    let error = bad.json()["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("Invalid JSON body: "), "{error}");
    assert!(!error.contains('\n'), "{error}");
    let good = host.request("PUT", "/api/fail", &[], br#"{"ok":true}"#);
    assert_eq!((good.status, good.json()), (200, json!({ "ok": true })));
}

#[test]
fn process_env_holds_the_routes_env_and_granted_secrets_only() {
    let data = tempfile::tempdir().unwrap();
    let host = start(data.path());
    let reply = host.get("/api/env");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "greeting": "hello",
            "granted": "granted-value",
            "ungranted": "undefined",
            "names": ["GRANTED_SECRET", "GREETING"],
        })
    );
    // Another route of the same component is granted nothing, and a
    // client cannot make it run another route's code with its own grants
    // (the host replaces the header that names the route).
    let bare = host.request(
        "GET",
        "/api/bare",
        &[("x-edge-route", "/api/env"), ("x-edge-params", "a=b")],
        b"",
    );
    assert_eq!(
        (bare.status, bare.json()),
        (200, json!({ "names": [], "granted": null }))
    );
}

#[test]
fn console_output_reaches_the_host_log_with_the_route_and_request_id() {
    let data = tempfile::tempdir().unwrap();
    let host = start(data.path());
    let reply = host.get("/api/log?n=42");
    assert_eq!((reply.status, reply.text()), (200, "logged".into()));
    let request_id = reply.header("x-request-id").unwrap().to_string();
    let log = host.wait_for_log("ts-log-marker 42");
    let line = log
        .lines()
        .find(|l| l.contains("ts-log-marker 42"))
        .unwrap();
    assert!(line.contains("/api/log"), "{line}");
    assert!(line.contains(&request_id), "{line}");
    let log = host.wait_for_log("ts-error-marker");
    let line = log.lines().find(|l| l.contains("ts-error-marker")).unwrap();
    assert!(line.contains(&request_id), "{line}");
}

#[test]
fn a_loop_is_stopped_at_its_timeout() {
    let data = tempfile::tempdir().unwrap();
    let host = start(data.path());
    let reply = host.get("/api/spin");
    assert_eq!(reply.status, 504);
    assert_eq!(
        reply.json(),
        json!({ "error": "The route took too long to answer", "limit": "timeout" })
    );
    host.wait_for_log("guest timed out after 2s");
    assert_eq!(host.get("/api/forms/api").status, 200, "host still serves");
}

#[test]
fn a_memory_bomb_is_stopped_at_its_memory_limit() {
    let data = tempfile::tempdir().unwrap();
    let host = start(data.path());
    let rss_before = host.rss_kib();
    for _ in 0..3 {
        let reply = host.get("/api/bomb");
        assert_eq!(reply.status, 500, "{}", reply.text());
        assert_eq!(
            reply.json(),
            json!({ "error": "Internal server error", "limit": "memory" })
        );
        assert_eq!(host.get("/api/forms/api").status, 200, "host still serves");
    }
    let growth_mib = host.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 100, "host grew by {growth_mib} MiB");
}

/// A loopback listener that counts the connections it accepts and answers
/// each with a small 200.
fn upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\nupstream",
            );
        }
    });
    (url, count)
}

#[test]
fn fetch_reaches_the_listed_origin_and_is_refused_elsewhere() {
    let (listed, listed_count) = upstream();
    let (other, other_count) = upstream();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &format!(
            "[routes]\ndir = {:?}\ntarget_dir = {:?}\n\n[[route]]\npath = \"/api/fetch\"\nallowed_outbound_hosts = [{listed:?}]\nallow_private_networks = true\n",
            app_dir().join("routes"),
            repo_root().join("target"),
        ),
    );
    ensure_built();
    let host = Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.path().join("data"),
        env: vec![],
    });
    let reply = host.get(&format!("/api/fetch?url={listed}/x"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "status": 200, "body": "upstream" }));
    assert_eq!(listed_count.load(Ordering::SeqCst), 1);

    for url in [format!("{other}/x"), "http://example.com/".to_string()] {
        let reply = host.get(&format!("/api/fetch?url={url}"));
        assert_eq!(reply.status, 502, "{url}: {}", reply.text());
        assert!(reply.json()["refused"].is_string(), "{}", reply.text());
    }
    assert_eq!(
        other_count.load(Ordering::SeqCst),
        0,
        "a refused fetch connected"
    );
    host.wait_for_log("is not in the route's allowed_outbound_hosts");
}

/// Runs `edgehost build` in a new app folder holding `files`; its output.
fn build(files: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join("routes").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    write_manifest(dir.path(), "[routes]\ndir = \"routes\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .arg("build")
        .current_dir(dir.path())
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_typo_in_a_param_fails_the_build_under_its_route() {
    let (ok, out) = build(&[(
        "api/posts/$postId.ts",
        "import { createAPIFileRoute } from '@tanstack/react-start/api'\n\
         export const APIRoute = createAPIFileRoute('/api/posts/$postId')({\n\
         \x20 GET: ({ params }) => Response.json({ id: params.postID }),\n\
         })\n",
    )]);
    assert!(!ok, "{out}");
    assert!(out.contains("route /api/posts/$postId"), "{out}");
    assert!(
        out.contains("Property 'postID' does not exist"),
        "the type checker names the typo: {out}"
    );
    assert!(out.contains("routes/api/posts/$postId.ts:3:"), "{out}");
}

#[test]
fn a_declared_path_that_is_not_the_files_location_fails_the_build() {
    let (ok, out) = build(&[(
        "api/users.ts",
        "import { createAPIFileRoute } from '@tanstack/react-start/api'\n\
         export const APIRoute = createAPIFileRoute('/api/people')({\n\
         \x20 GET: () => Response.json([]),\n\
         })\n",
    )]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("declares the path '/api/people', but its location spells '/api/users'"),
        "{out}"
    );
    assert!(out.contains("routes/api/users.ts"), "{out}");
}

#[test]
fn randomness_at_the_top_level_fails_the_build_saying_what_to_do() {
    let (ok, out) = build(&[(
        "api/token.ts",
        "import { createAPIFileRoute } from '@tanstack/react-start/api'\n\
         const token = Math.random().toString(36)\n\
         export const APIRoute = createAPIFileRoute('/api/token')({\n\
         \x20 GET: () => Response.json({ token }),\n\
         })\n",
    )]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("Math.random() was called at the top level of a route file"),
        "{out}"
    );
    assert!(out.contains("call it inside the handler"), "{out}");
}
