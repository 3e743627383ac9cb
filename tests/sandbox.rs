//! Failing and probing guests (test fixtures, not example routes) against the
//! real host: a trap is a 500 and the host keeps serving; a route sees only
//! what its manifest grants; bad components are refused at load.

mod support;

use serde_json::json;
use support::{component, write_manifest, Host, Start};

fn manifest_text() -> String {
    format!(
        r#"
[[route]]
path = "/trap"
component = {trap:?}

[[route]]
path = "/probe/$id"
component = {probe:?}
kv = ["granted"]
env = {{ PLAIN = "visible" }}
secrets = ["PROBE_SECRET"]

[[route]]
path = "/api/health"
component = {health:?}
"#,
        trap = component("fixture_trap"),
        probe = component("fixture_probe"),
        health = component("api_health"),
    )
}

fn start(dir: &std::path::Path) -> Host {
    let manifest = write_manifest(dir, &manifest_text());
    Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.join("data"),
        env: vec![
            ("PROBE_SECRET", "granted-secret"),
            ("HOST_ONLY_SECRET", "must-not-leak"),
        ],
    })
}

#[test]
fn a_trapping_route_is_a_500_and_the_host_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    for method in ["GET", "POST", "GET"] {
        let reply = host.request(method, "/trap", &[], b"");
        assert_eq!(reply.status, 500, "{method}");
        // The client learns nothing of the guest's internals...
        assert_eq!(reply.json(), json!({ "error": "Internal server error" }));
        // ...and the next request to a good route is answered.
        assert_eq!(host.get("/api/health").status, 200);
    }
    // The log has the details, with the route.
    let log = host.wait_for_log("fixture panic on /trap");
    assert!(
        log.lines()
            .any(|l| l.contains("guest trapped") && l.contains("/trap")),
        "{log}"
    );
}

#[test]
fn a_route_sees_only_what_the_manifest_grants() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let seen = host.get("/probe/1?store=granted").json();
    assert_eq!(
        seen["env"],
        json!({ "PLAIN": "visible", "PROBE_SECRET": "granted-secret" }),
        "exactly the granted env, no host variables"
    );
    assert_eq!(seen["kv_open"], "ok");
    let denied = host.get("/probe/1?store=posts").json();
    assert!(
        denied["kv_open"]
            .as_str()
            .unwrap()
            .contains("access denied"),
        "{denied}"
    );
    let file = seen["file"].as_str().unwrap();
    assert!(
        file.starts_with("error:"),
        "host files are invisible: {file}"
    );
}

#[test]
fn the_guest_gets_the_request_as_sent() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path());
    let reply = host.request(
        "GET",
        "/probe/a%2Fb%20c?x=1&y=two",
        &[("X-Custom", "Value")],
        b"",
    );
    let seen = reply.json();
    assert_eq!(
        seen["params"],
        json!({ "id": "a/b c" }),
        "decoded, never split"
    );
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/probe/a%2Fb%20c");
    assert_eq!(seen["query"], "x=1&y=two");
    assert_eq!(
        seen["url"],
        format!("http://{}/probe/a%2Fb%20c?x=1&y=two", host.addr)
    );
    assert!(seen["headers"]
        .as_array()
        .unwrap()
        .contains(&json!(["x-custom", "Value"])));
    assert!(seen["client_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));

    let body: Vec<u8> = (0..=255u8).collect();
    let echoed = host.request("POST", "/probe/1", &[], &body);
    assert_eq!(
        (echoed.status, echoed.body),
        (200, body),
        "bytes pass through untouched"
    );

    // An explicit `head` export is called instead of GET, and the body is still dropped.
    let head = host.request("HEAD", "/probe/1", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn bad_components_are_refused_at_load_with_the_route_named() {
    let cases: [(&[u8], &str); 3] = [
        (b"not wasm at all", "is not a WebAssembly component"),
        (
            b"\0asm\x01\0\0\0",
            "is a core WebAssembly module, not a component",
        ),
        // An empty component: valid, but it exports no handler.
        (b"\0asm\x0d\0\x01\0", "exports no method handler"),
    ];
    for (bytes, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.wasm"), bytes).unwrap();
        let manifest = write_manifest(
            dir.path(),
            "[[route]]\npath = \"/api/health\"\ncomponent = \"bad.wasm\"\n",
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgehost"))
            .args(["check", "--manifest"])
            .arg(&manifest)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
        assert!(
            stderr.contains("manifest.toml:2: route \"/api/health\""),
            "{stderr}"
        );
    }
}

#[test]
fn a_bad_manifest_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let health = component("api_health");
    let manifest = write_manifest(
        dir.path(),
        &format!(
            "[[route]]\npath = \"/a/$x\"\ncomponent = {health:?}\n\n[[route]]\npath = \"/a/$y\"\ncomponent = {health:?}\n\n[[route]]\npath = \"/b\"\ncomponent = \"missing.wasm\"\n"
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--manifest"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "manifest.toml:6: route \"/a/$y\" claims the same paths as route \"/a/$x\" on line 2"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("manifest.toml:10: route \"/b\": component file missing.wasm not found"),
        "{stderr}"
    );
}
