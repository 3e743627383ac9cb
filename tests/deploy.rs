//! Deploys, rollbacks and reloads of a running host, and what it lets an
//! operator see: the admin API, metrics, request ids and logs.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{component, edgehost, write_manifest, Host, Start};

const TOKEN: &str = "test-admin-token-0123456789";

/// A manifest whose probe route reports `VERSION` and `TWIN`, both `version`:
/// a response mixing two deployments would show two values.
fn versioned(version: &str) -> String {
    let probe = component("fixture_probe");
    let health = component("api_health");
    format!(
        r#"[[route]]
path = "/probe/$id"
component = {probe:?}
env = {{ VERSION = "{version}", TWIN = "{version}" }}

[[route]]
path = "/api/health"
component = {health:?}
"#
    )
}

/// Writes `text` as `<dir>/<name>/manifest.toml`.
fn manifest_in(dir: &Path, name: &str, text: &str) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    write_manifest(&sub, text)
}

/// Starts a host with its admin API on; `global` goes before `serve`.
fn start_with_admin(dir: &Path, manifest: &Path, global: &[&str]) -> Host {
    let mut args = global.to_vec();
    args.extend(["serve", "--admin", "127.0.0.1:0"]);
    Host::start_with_args(
        Start {
            manifest,
            data_dir: &dir.join("data"),
            env: vec![("EDGEHOST_ADMIN_TOKEN", TOKEN)],
        },
        &args,
    )
}

/// Runs `edgehost <args>` with the admin token in its environment.
fn deploy(host: &Host, manifest: &Path) -> Output {
    let to = format!("http://{}", host.admin());
    edgehost(&["deploy", manifest.to_str().unwrap(), "--to", &to], TOKEN)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `VERSION` the probe route reports, checking `TWIN` agrees.
fn served_version(host: &Host) -> Result<String, String> {
    let reply = host.get("/probe/x");
    if reply.status != 200 {
        return Err(format!("{} {}", reply.status, reply.text()));
    }
    let body = reply.json();
    let version = body["env"]["VERSION"].as_str().unwrap_or("?").to_string();
    let twin = body["env"]["TWIN"].as_str().unwrap_or("?");
    if version != twin {
        return Err(format!("mixed versions: VERSION={version} TWIN={twin}"));
    }
    Ok(version)
}

fn wait_for_version(host: &Host, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match served_version(host) {
            Ok(served) if served == version => return,
            other => assert!(
                Instant::now() < deadline,
                "never served version {version}; last: {other:?}\n{}",
                host.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics(host: &Host) -> String {
    let reply = host.admin_request("GET", "/metrics", TOKEN, b"");
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

#[test]
fn deploys_under_load_drop_nothing_and_each_answer_is_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = manifest_in(dir.path(), "v1", &versioned("1"));
    let host = Arc::new(start_with_admin(dir.path(), &v1, &[]));
    assert_eq!(served_version(&host), Ok("1".to_string()));

    // Clients hammer the probe route for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let host = Arc::clone(&host);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match served_version(&host) {
                        Ok(version) => seen.push(version),
                        Err(err) => errors.push(err),
                    }
                }
                (seen, errors)
            })
        })
        .collect();

    let v2 = manifest_in(dir.path(), "v2", &versioned("2"));
    let out = deploy(&host, &v2);
    assert!(out.status.success(), "deploy v2 failed: {}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment 2 serving 2 routes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr(&out).contains("uploaded"), "{}", stderr(&out));

    // Version 99 names a limit that does not exist on line 9: refused whole.
    let broken = format!("{}memory = \"a lot\"\n", versioned("99"));
    let v99 = manifest_in(dir.path(), "v99", &broken);
    let out = deploy(&host, &v99);
    assert!(!out.status.success(), "the invalid deploy succeeded");
    let reasons = stderr(&out);
    assert!(
        reasons.contains("v99/manifest.toml:9: route \"/api/health\""),
        "{reasons}"
    );
    assert!(reasons.contains("still serves deployment 2"), "{reasons}");

    let v3 = manifest_in(dir.path(), "v3", &versioned("3"));
    let out = deploy(&host, &v3);
    assert!(out.status.success(), "deploy v3 failed: {}", stderr(&out));
    // The host has the components from deploy 2: nothing is sent twice.
    assert!(!stderr(&out).contains("uploaded"), "{}", stderr(&out));
    assert!(stderr(&out).contains("the host has it"), "{}", stderr(&out));
    wait_for_version(&host, "3");
    // Let the clients see version 3 for a little while too.
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        served_version(&host).unwrap();
    }
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut all_seen = std::collections::BTreeSet::new();
    for client in clients {
        let (seen, errors) = client.join().unwrap();
        assert!(errors.is_empty(), "errors during deploys: {errors:?}");
        // Deploys happen one after another, so each client sees versions
        // only go forward.
        assert!(
            seen.windows(2).all(|w| w[0] <= w[1]),
            "versions went backwards: {seen:?}"
        );
        total += seen.len();
        all_seen.extend(seen);
    }
    assert!(total > 20, "only {total} requests were made");
    assert!(!all_seen.contains("99"), "the refused deploy was served");
    assert!(
        all_seen.contains("1") && all_seen.contains("3"),
        "{all_seen:?}"
    );
    eprintln!("{total} requests during three deploys, versions {all_seen:?}, 0 errors");

    let text = metrics(&host);
    for line in [
        "edgehost_deploys_total{result=\"ok\"} 2",
        "edgehost_deploys_total{result=\"rejected\"} 1",
        "edgehost_deployment_info{id=\"3\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }

    // Rollback: back to version 2, then nothing further back than 1.
    let to = format!("http://{}", host.admin());
    let out = edgehost(&["rollback", "--to", &to], TOKEN);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_version(&host, "2");
    let list = host.admin_request("GET", "/v1/deployments", TOKEN, b"");
    assert_eq!(list.status, 200);
    let ids: Vec<String> = list.json()["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deployment"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.last().map(String::as_str), Some("2"), "{ids:?}");
    let out = edgehost(&["rollback", "--to", &to], TOKEN);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for_version(&host, "1");
    let out = edgehost(&["rollback", "--to", &to], TOKEN);
    assert!(
        !out.status.success(),
        "rolled back past the first deployment"
    );
    assert!(stderr(&out).contains("409"), "{}", stderr(&out));
    assert!(metrics(&host).contains("edgehost_rollbacks_total 2"));
}

#[test]
fn the_admin_api_wants_its_token_and_refuses_large_or_mislabelled_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{}\n[admin]\nmax_upload = \"4KiB\"\n", versioned("1"));
    let manifest = manifest_in(dir.path(), "v1", &text);
    let host = start_with_admin(dir.path(), &manifest, &[]);
    assert_ne!(host.admin(), host.addr);
    // People read where it listens in the log; scripts read --ready-file.
    let log = host.log();
    assert!(
        log.contains(&format!("admin API listening on http://{}", host.admin())),
        "{log}"
    );
    assert!(
        log.contains(&format!("listening on http://{}", host.addr)),
        "{log}"
    );

    // Health and readiness are open; everything else wants the token.
    assert_eq!(host.admin_request("GET", "/healthz", "", b"").status, 200);
    let ready = host.admin_request("GET", "/readyz", "", b"");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["deployment"], "1");
    for token in ["", "wrong-token", &TOKEN[..TOKEN.len() - 1]] {
        let reply = host.admin_request("GET", "/metrics", token, b"");
        assert_eq!(reply.status, 401, "token {token:?}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        let reply = host.admin_request("POST", "/v1/rollback", token, b"");
        assert_eq!(reply.status, 401, "token {token:?}");
    }
    assert_eq!(
        host.admin_request("GET", "/metrics", TOKEN, b"").status,
        200
    );
    // The public listener knows nothing of the admin API.
    assert_eq!(host.get("/metrics").status, 404);
    assert_eq!(host.get("/v1/deployments").status, 404);

    // The client says why when the token is wrong.
    let to = format!("http://{}", host.admin());
    let out = edgehost(
        &["deploy", manifest.to_str().unwrap(), "--to", &to],
        "wrong-token",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));

    // Components are addressed by content hash: over the limit is 413, a
    // body that does not hash to its name is 400, and neither is kept.
    let hash = "ab".repeat(32);
    let path = format!("/v1/components/{hash}");
    let big = vec![0u8; 5 * 1024];
    assert_eq!(host.admin_request("PUT", &path, TOKEN, &big).status, 413);
    let small = b"\0asm not really";
    assert_eq!(host.admin_request("PUT", &path, TOKEN, small).status, 400);
    assert_eq!(host.admin_request("HEAD", &path, TOKEN, b"").status, 404);
    let bad_name = host.admin_request("PUT", "/v1/components/../../x", TOKEN, small);
    assert_eq!(bad_name.status, 400);

    // A real deploy is refused because the probe component is over 4 KiB.
    let out = deploy(&host, &manifest);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("413"), "{}", stderr(&out));
    assert_eq!(served_version(&host), Ok("1".to_string()));
}

#[test]
fn the_admin_api_is_off_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path(), "v1", &versioned("1"));
    let host = Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.path().join("data"),
        env: vec![("EDGEHOST_ADMIN_TOKEN", TOKEN)],
    });
    assert!(host.admin.is_none(), "{}", host.log());
    assert!(!host.log().contains("admin API"), "{}", host.log());
    assert_eq!(host.get("/metrics").status, 404);

    // And it refuses to start without a token.
    let out = Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--manifest")
        .arg(&manifest)
        .arg("--data-dir")
        .arg(dir.path().join("other-data"))
        .env_remove("EDGEHOST_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("set EDGEHOST_ADMIN_TOKEN"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn metrics_count_requests_by_route_method_and_status_and_guest_failures() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[route]]\npath = \"/trap\"\ncomponent = {:?}\n",
        versioned("1"),
        component("fixture_trap")
    );
    let manifest = manifest_in(dir.path(), "v1", &text);
    let host = start_with_admin(dir.path(), &manifest, &[]);
    for _ in 0..3 {
        assert_eq!(host.get("/probe/x").status, 200);
    }
    assert_eq!(host.post("/probe/x", "{}").status, 200);
    assert_eq!(host.request("DELETE", "/probe/x", &[], b"").status, 405);
    assert_eq!(host.get("/nowhere").status, 404);
    assert_eq!(host.get("/trap").status, 500);

    let text = metrics(&host);
    for line in [
        "# TYPE edgehost_requests_total counter",
        "edgehost_requests_total{route=\"/probe/$id\",method=\"GET\",status=\"2xx\"} 3",
        "edgehost_requests_total{route=\"/probe/$id\",method=\"POST\",status=\"2xx\"} 1",
        "edgehost_requests_total{route=\"/probe/$id\",method=\"DELETE\",status=\"4xx\"} 1",
        "edgehost_requests_total{route=\"/trap\",method=\"GET\",status=\"5xx\"} 1",
        "edgehost_request_duration_seconds_count{route=\"/probe/$id\"} 5",
        "edgehost_request_duration_seconds_bucket{route=\"/probe/$id\",le=\"+Inf\"} 5",
        "edgehost_instances_running{route=\"/probe/$id\"} 0",
        "edgehost_guest_errors_total{route=\"/trap\",kind=\"trap\"} 1",
        "edgehost_limit_hits_total{route=\"/probe/$id\",kind=\"timeout\"} 0",
        "edgehost_deployment_info{id=\"1\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        text.lines().any(
            |l| l.starts_with("edgehost_requests_total{route=\"(none)\"") && l.ends_with(" 1")
        ),
        "unmatched requests are not counted:\n{text}"
    );
}

#[test]
fn every_request_has_an_id_in_its_answer_and_in_every_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path(), "v1", &versioned("1"));
    let host = start_with_admin(dir.path(), &manifest, &[]);

    // An incoming id is honoured...
    let reply = host.request("GET", "/probe/x", &[("x-request-id", "trace-42.a")], b"");
    assert_eq!(reply.header("x-request-id"), Some("trace-42.a"));
    // ...and tags the guest's output and the access line.
    let log = host.wait_for_log("request_id=trace-42.a method=GET path=/probe/x");
    let guest = log
        .lines()
        .find(|l| l.contains("probe saw"))
        .unwrap_or_else(|| panic!("no guest line:\n{log}"));
    assert!(guest.contains("trace-42.a"), "{guest}");
    let access = log
        .lines()
        .find(|l| l.contains("access") && l.contains("request_id=trace-42.a"))
        .unwrap();
    for field in ["route=/probe/$id", "status=200", "duration_us=", "bytes="] {
        assert!(access.contains(field), "{field} missing: {access}");
    }

    // Without one, or with one that could forge log lines, the host makes its own.
    let mut ids = Vec::new();
    for header in [None, Some("bad id\twith spaces"), Some(&*"x".repeat(200))] {
        let headers: Vec<(&str, &str)> = header.map(|h| ("x-request-id", h)).into_iter().collect();
        let reply = host.request("GET", "/api/health", &headers, b"");
        assert_eq!(reply.status, 200);
        let id = reply.header("x-request-id").expect("an id").to_string();
        assert!(Some(id.as_str()) != header && !id.is_empty(), "{id}");
        host.wait_for_log(&format!("request_id={id} "));
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids repeat: {ids:?}");
    // Host answers (404) carry one too.
    assert!(host.get("/nowhere").header("x-request-id").is_some());
}

#[test]
fn json_logs_are_one_object_per_line_with_the_access_fields() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path(), "v1", &versioned("1"));
    let host = start_with_admin(dir.path(), &manifest, &["--log-format", "json"]);
    let reply = host.request("GET", "/probe/x", &[("x-request-id", "json-1")], b"");
    assert_eq!(reply.status, 200);
    let log = host.wait_for_log("\"request_id\":\"json-1\",\"method\":\"GET\"");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    let access = lines
        .iter()
        .find(|l| l["target"] == "access" && l["request_id"] == "json-1")
        .unwrap();
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/probe/x");
    assert_eq!(access["route"], "/probe/$id");
    assert_eq!(access["status"], 200);
    assert!(access["duration_us"].is_u64());
    assert_eq!(access["bytes"].as_u64(), Some(reply.body.len() as u64));
    assert!(lines
        .iter()
        .any(|l| l["request_id"] == "json-1" && l.to_string().contains("probe saw")));
}

#[test]
fn watch_reloads_on_change_and_a_bad_change_keeps_the_old_routes() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_in(dir.path(), "site", &versioned("1"));
    let host = Host::start_with_args(
        Start {
            manifest: &manifest,
            data_dir: &dir.path().join("data"),
            env: vec![],
        },
        &["serve", "--watch"],
    );
    assert_eq!(served_version(&host), Ok("1".to_string()));

    std::fs::write(&manifest, versioned("2")).unwrap();
    wait_for_version(&host, "2");

    std::fs::write(&manifest, format!("{}oops = 1\n", versioned("3"))).unwrap();
    host.wait_for_log("refused; still serving deployment 2");
    assert_eq!(served_version(&host), Ok("2".to_string()));

    std::fs::write(&manifest, versioned("4")).unwrap();
    wait_for_version(&host, "4");

    // A component changing on disk is a reload too: swap probe for health.
    let swapped = manifest.parent().unwrap().join("probe.wasm");
    std::fs::copy(component("fixture_probe"), &swapped).unwrap();
    std::fs::write(
        &manifest,
        versioned("5").replace(
            &format!("{:?}", component("fixture_probe")),
            "\"probe.wasm\"",
        ),
    )
    .unwrap();
    wait_for_version(&host, "5");
    std::fs::copy(component("api_health"), &swapped).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.get("/probe/x").json().get("env").is_some() {
        assert!(Instant::now() < deadline, "the new component never served");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn check_takes_the_manifest_as_an_argument_and_names_every_fault() {
    let dir = tempfile::tempdir().unwrap();
    let good = manifest_in(dir.path(), "good", &versioned("1"));
    let out = edgehost(&["check", good.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));

    let broken = format!(
        "{}timeout = \"soon\"\n\n[[route]]\npath = \"/gone\"\ncomponent = \"gone.wasm\"\n",
        versioned("1")
    );
    let bad = manifest_in(dir.path(), "bad", &broken);
    let out = edgehost(&["check", bad.to_str().unwrap()], "");
    assert!(!out.status.success());
    let reasons = stderr(&out);
    assert!(
        reasons.contains("bad/manifest.toml:9: route \"/api/health\": `timeout`"),
        "{reasons}"
    );
    assert!(
        reasons
            .contains("bad/manifest.toml:12: route \"/gone\": component file gone.wasm not found"),
        "{reasons}"
    );
}

#[test]
fn routes_prints_an_aligned_table() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}\n[[route]]\npath = \"/api/posts\"\ncomponent = {:?}\nkv = [\"posts\"]\ntimeout = \"2s\"\nallowed_outbound_hosts = [\"https://*.example.com\"]\nallow_private_networks = true\n",
        versioned("1"),
        component("fixture_posts_kv")
    );
    let manifest = manifest_in(dir.path(), "v1", &text);
    let out = edgehost(&["routes", manifest.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    let columns = ["PATH", "METHODS", "GRANTS", "LIMITS"];
    let starts: Vec<usize> = columns
        .iter()
        .map(|c| lines[0].find(c).unwrap_or_else(|| panic!("{c}: {table}")))
        .collect();
    // Every column starts at the same place on every line.
    for line in &lines {
        for &start in &starts[1..] {
            let before = line.as_bytes()[start - 1];
            let at = line.as_bytes()[start];
            assert!(before == b' ' && at != b' ', "misaligned: {table}");
        }
    }
    let row = |path: &str| *lines.iter().find(|l| l.starts_with(path)).unwrap();
    let probe = row("/probe/$id");
    let methods = &probe[starts[1]..starts[2]];
    assert!(
        methods.contains("GET") && methods.contains("POST"),
        "{table}"
    );
    assert!(!methods.contains("DELETE"), "{table}");
    let grants = &probe[starts[2]..starts[3]];
    assert!(
        grants.contains("env:TWIN") && grants.contains("env:VERSION"),
        "{table}"
    );
    let posts = row("/api/posts ");
    assert!(
        posts[starts[2]..]
            .starts_with("kv:posts net:https://*.example.com:443 net:private-networks"),
        "{table}"
    );
    assert!(posts[starts[3]..].contains("timeout=2s"), "{table}");
}

#[test]
fn limits_lists_every_limit_with_its_default() {
    let out = edgehost(&["limits"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    for row in [
        "| `timeout` | `\"10s\"` |",
        "| `max_body` | `\"1MiB\"` | 413",
        "| `max_concurrency` | `64` |",
        "| `drain_timeout` (`[server]` only) | `\"30s\"` |",
        "| `sql_timeout` | `\"5s\"` |",
        "| `max_sql_rows` | `10000` |",
        "| `wait_until` | `\"10s\"` |",
        "| `max_part` | none |",
    ] {
        assert!(table.contains(row), "no {row} in\n{table}");
    }
    assert_eq!(
        table.lines().count(),
        2 + 31,
        "a header and 31 limits:\n{table}"
    );
}

#[test]
fn a_request_in_flight_finishes_on_the_deployment_it_started_on() {
    let dir = tempfile::tempdir().unwrap();
    let with_slow = format!(
        "{}\n[[route]]\npath = \"/slow/$mode\"\ncomponent = {:?}\n",
        versioned("1"),
        component("fixture_hostile")
    );
    let v1 = manifest_in(dir.path(), "v1", &with_slow);
    let host = Arc::new(start_with_admin(dir.path(), &v1, &[]));

    let slow = {
        let host = Arc::clone(&host);
        std::thread::spawn(move || host.get("/slow/sleep?ms=1500"))
    };
    host.wait_for_log("sleeping for 1500 ms");
    // Version 2 drops the slow route while the request is inside it.
    let v2 = manifest_in(dir.path(), "v2", &versioned("2"));
    let out = deploy(&host, &v2);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(served_version(&host), Ok("2".to_string()));
    assert_eq!(host.get("/slow/sleep?ms=1").status, 404);

    let reply = slow.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["slept_ms"], 1500);

    // Instance slots are sized at start: more memory than they hold is refused.
    let greedy = format!("{}memory = \"1GiB\"\n", versioned("3"));
    let v3 = manifest_in(dir.path(), "v3", &greedy);
    let out = deploy(&host, &v3);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("over the 134217728 bytes per instance this host reserved"),
        "{}",
        stderr(&out)
    );
    assert_eq!(served_version(&host), Ok("2".to_string()));
}

#[test]
fn max_concurrency_counts_requests_still_running_on_an_older_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let with_slow = |version: &str| {
        format!(
            "{}\n[[route]]\npath = \"/slow/$mode\"\ncomponent = {:?}\nmax_concurrency = 1\n",
            versioned(version),
            component("fixture_hostile")
        )
    };
    let v1 = manifest_in(dir.path(), "v1", &with_slow("1"));
    let host = Arc::new(start_with_admin(dir.path(), &v1, &[]));
    let slow = {
        let host = Arc::clone(&host);
        std::thread::spawn(move || host.get("/slow/sleep?ms=1500"))
    };
    host.wait_for_log("sleeping for 1500 ms");
    let v2 = manifest_in(dir.path(), "v2", &with_slow("2"));
    let out = deploy(&host, &v2);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(served_version(&host), Ok("2".to_string()));
    // The route's one slot is still held by the request on deployment 1.
    let reply = host.get("/slow/sleep?ms=1");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(slow.join().unwrap().status, 200);
    assert_eq!(host.get("/slow/sleep?ms=1").status, 200);
}

#[test]
fn a_deploy_carries_the_route_crates_of_a_routes_folder() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = manifest_in(dir.path(), "v1", &versioned("1"));
    let host = start_with_admin(dir.path(), &v1, &[]);

    // A file-based project whose crates are the built test components.
    let site = dir.path().join("site");
    for (folder, package) in [("things/$id", "fixture_probe"), ("index", "api_health")] {
        let crate_dir = site.join("routes").join(folder);
        std::fs::create_dir_all(&crate_dir).unwrap();
        std::fs::write(
            crate_dir.join("Cargo.toml"),
            format!("[package]\nname = \"{package}\"\n"),
        )
        .unwrap();
    }
    let target = support::repo_root().join("target");
    let text = format!(
        "[routes]\ndir = \"routes\"\ntarget_dir = {:?}\n\n[[route]]\npath = \"/things/$x\"\nenv = {{ VERSION = \"7\", TWIN = \"7\" }}\n",
        target.display().to_string()
    );
    let manifest = write_manifest(&site, &text);
    let out = deploy(&host, &manifest);
    assert!(out.status.success(), "{}", stderr(&out));

    let reply = host.get("/things/a");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["env"]["VERSION"], "7");
    assert_eq!(reply.json()["params"]["x"], "a");
    assert_eq!(host.get("/").json()["status"], "ok");
    assert_eq!(host.get("/probe/x").status, 404);
}

#[test]
fn a_deploy_gets_only_the_secrets_the_host_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let start_text = format!(
        "{}\n[admin]\ndeploy_secrets = [\"DEPLOYABLE\"]\n",
        versioned("1")
    );
    let v1 = manifest_in(dir.path(), "v1", &start_text);
    let host = Host::start_with_args(
        Start {
            manifest: &v1,
            data_dir: &dir.path().join("data"),
            env: vec![
                ("EDGEHOST_ADMIN_TOKEN", TOKEN),
                ("DEPLOYABLE", "for-routes"),
                ("HOST_ONLY", "must-not-leak"),
            ],
        },
        &["serve", "--admin", "127.0.0.1:0"],
    );
    let with_secret = |name: &str| {
        versioned("2").replace(
            "env = { VERSION",
            &format!("secrets = [\"{name}\"]\nenv = {{ VERSION"),
        )
    };
    let leaky = manifest_in(dir.path(), "leaky", &with_secret("HOST_ONLY"));
    let out = deploy(&host, &leaky);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("secret HOST_ONLY is not one deploys may use"),
        "{}",
        stderr(&out)
    );
    assert_eq!(served_version(&host), Ok("1".to_string()));

    let allowed = manifest_in(dir.path(), "allowed", &with_secret("DEPLOYABLE"));
    let out = deploy(&host, &allowed);
    assert!(out.status.success(), "{}", stderr(&out));
    let reply = host.get("/probe/x");
    assert_eq!(reply.json()["env"]["DEPLOYABLE"], "for-routes");
    assert!(reply.json()["env"].get("HOST_ONLY").is_none());
}

#[test]
fn uploaded_components_and_compiled_code_no_kept_deployment_uses_are_removed() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let v1 = manifest_in(dir.path(), "v1", &versioned("1"));
    let host = start_with_admin(dir.path(), &v1, &[]);
    let store = dir.path().join("data/components");
    let compiled = dir.path().join("data/compiled");
    let stored = |name: &str| {
        let hash = hex::encode(sha2::Sha256::digest(
            std::fs::read(component(name)).unwrap(),
        ));
        store.join(format!("{hash}.wasm"))
    };
    let cache_entries = || std::fs::read_dir(&compiled).unwrap().count();
    // The host started with the probe and health routes (two cache entries);
    // deployment 2 uploads those and the hostile fixture (a third).
    let with_hostile = format!(
        "{}\n[[route]]\npath = \"/hostile/$mode\"\ncomponent = {:?}\n",
        versioned("2"),
        component("fixture_hostile")
    );
    let v2 = manifest_in(dir.path(), "v2", &with_hostile);
    assert!(deploy(&host, &v2).status.success());
    assert!(stored("fixture_hostile").is_file() && stored("fixture_probe").is_file());
    assert_eq!(cache_entries(), 3);
    // Ten deploys of the health route alone push deployments 1 and 2 out of
    // the kept ten.
    let health = component("api_health");
    let only_health = manifest_in(
        dir.path(),
        "v3",
        &format!("[[route]]\npath = \"/api/health\"\ncomponent = {health:?}\n"),
    );
    for _ in 0..10 {
        let out = deploy(&host, &only_health);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Still there: written within the last hour, a deploy may want them.
    assert!(stored("fixture_hostile").is_file());
    assert_eq!(cache_entries(), 3);
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    for folder in [&store, &compiled] {
        for entry in std::fs::read_dir(folder).unwrap() {
            let file = std::fs::File::options()
                .write(true)
                .open(entry.unwrap().path())
                .unwrap();
            file.set_modified(two_hours_ago).unwrap();
        }
    }
    let out = deploy(&host, &only_health);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stored("fixture_hostile").exists(),
        "unused and old: removed"
    );
    assert!(!stored("fixture_probe").exists(), "unused and old: removed");
    assert!(stored("api_health").is_file(), "in use: kept");
    // Left: health's (in use) and the probe's, which the manifest the host
    // started with needs for a fast restart.
    assert_eq!(cache_entries(), 2);
    host.wait_for_log("no kept deployment uses it");
    assert_eq!(host.get("/api/health").status, 200);
}

#[test]
fn serve_resume_brings_back_the_last_deployment_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = manifest_in(dir.path(), "v1", &versioned("1"));
    let start = |resume: bool| {
        let mut args = vec!["serve", "--admin", "127.0.0.1:0"];
        if resume {
            args.push("--resume");
        }
        Host::start_with_args(
            Start {
                manifest: &v1,
                data_dir: &dir.path().join("data"),
                env: vec![("EDGEHOST_ADMIN_TOKEN", TOKEN)],
            },
            &args,
        )
    };
    let host = start(true);
    host.wait_for_log("--resume: no deployment recorded");
    assert_eq!(served_version(&host), Ok("1".to_string()));
    let v2 = manifest_in(dir.path(), "v2", &versioned("2"));
    assert!(deploy(&host, &v2).status.success());
    drop(host);

    // Restarted with the same command line: version 2, as last deployed.
    let host = start(true);
    assert_eq!(served_version(&host), Ok("2".to_string()));
    host.wait_for_log("--resume: serving");
    drop(host);
    // Without --resume the command line's manifest wins.
    let plain = start(false);
    assert_eq!(served_version(&plain), Ok("1".to_string()));
    drop(plain);

    // A rollback is recorded too: to version 2 (resumed), then to the
    // manifest the host started with, after which --resume serves that.
    let host = start(true);
    let v3 = manifest_in(dir.path(), "v3", &versioned("3"));
    assert!(deploy(&host, &v3).status.success());
    assert_eq!(served_version(&host), Ok("3".to_string()));
    let to = format!("http://{}", host.admin());
    assert!(edgehost(&["rollback", "--to", &to], TOKEN).status.success());
    assert_eq!(served_version(&host), Ok("2".to_string()));
    drop(host);
    let host = start(true);
    assert_eq!(served_version(&host), Ok("2".to_string()));
    assert!(edgehost(
        &["rollback", "--to", &format!("http://{}", host.admin())],
        TOKEN
    )
    .status
    .success());
    assert_eq!(served_version(&host), Ok("1".to_string()));
    drop(host);
    let host = start(true);
    assert_eq!(served_version(&host), Ok("1".to_string()));
}

#[test]
fn while_requests_drain_on_shutdown_the_admin_api_says_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[route]]\npath = \"/slow/$mode\"\ncomponent = {:?}\n",
        component("fixture_hostile")
    );
    let manifest = manifest_in(dir.path(), "v1", &text);
    let host = start_with_admin(dir.path(), &manifest, &[]);
    let ready = host.admin_request("GET", "/readyz", "", b"");
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, "ready".into())
    );
    let addr = host.addr;
    let slow =
        std::thread::spawn(move || support::request(addr, "GET", "/slow/sleep?ms=1500", &[], b""));
    host.wait_for_log("sleeping for 1500 ms");
    host.send_sigterm();
    // A load balancer polling /readyz sees the host going while it drains.
    let deadline = Instant::now() + Duration::from_secs(10);
    let draining = loop {
        let ready = host.admin_request("GET", "/readyz", "", b"");
        if ready.status == 503 {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never said 503: {}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(draining.json()["status"], "shutting down");
    let reply = slow.join().unwrap();
    assert_eq!(
        reply.status,
        200,
        "the in-flight request finished: {}",
        reply.text()
    );
    let admin = host.admin();
    let status = host.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(
        std::net::TcpStream::connect(admin).is_err(),
        "the admin API stopped with the host"
    );
}

#[test]
fn a_deploy_whose_compile_passes_compile_timeout_is_refused_and_the_old_routes_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    // The first start compiles the routes under the default timeout; the
    // data folder keeps the compiled code.
    let first = manifest_in(dir.path(), "first", &versioned("1"));
    drop(start_with_admin(dir.path(), &first, &[]));
    // Restarted with a 1 ms deadline, the cached code loads without a compile.
    let strict = format!("[server]\ncompile_timeout = \"1ms\"\n\n{}", versioned("2"));
    let strict = manifest_in(dir.path(), "strict", &strict);
    let host = start_with_admin(dir.path(), &strict, &[]);
    wait_for_version(&host, "2");
    // A component never compiled here cannot compile in 1 ms.
    let hostile = component("fixture_hostile");
    let next = format!(
        "{}\n[[route]]\npath = \"/hostile/$mode\"\ncomponent = {hostile:?}\n",
        versioned("3")
    );
    let out = deploy(&host, &manifest_in(dir.path(), "next", &next));
    assert!(!out.status.success(), "the deploy was refused");
    assert!(
        stderr(&out).contains("compile_timeout of 1ms"),
        "the refusal names the limit: {}",
        stderr(&out)
    );
    assert_eq!(served_version(&host), Ok("2".to_string()));
    assert_eq!(host.get("/hostile/calls").status, 404);
}
