//! Scheduled routes: a once-a-second schedule runs each tick once on one
//! host and once in all in a fleet of two, `edgehost trigger` runs it now,
//! `edgehost schedules` lists it, a client cannot forge the scheduled
//! mark, and a schedule naming no route (or a method its route does not
//! answer) is refused with its line.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::backends::NatsServer;
use support::{component, edgehost, write_manifest, Host, Start};

const TOKEN: &str = "schedule-admin-token-0123456789";

fn manifest_text(fleet: &str) -> String {
    let ticker = component("fixture_ticker");
    format!(
        r#"{fleet}
[[route]]
path = "/api/tasks/tick"
component = {ticker:?}
kv = ["ticks"]

[[schedule]]
cron = "* * * * * *"
path = "/api/tasks/tick"
"#
    )
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Each recorded scheduled tick's second, with how many times it ran, over
/// every host.
fn ticks(hosts: &[&Host]) -> BTreeMap<i64, usize> {
    let mut seen = BTreeMap::new();
    for host in hosts {
        let reply = host.get("/api/tasks/tick");
        assert_eq!(reply.status, 200, "{}", reply.text());
        for tick in reply.json()["ticks"].as_array().unwrap() {
            if tick["label"] == "* * * * * *" {
                *seen.entry(tick["at"].as_i64().unwrap()).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// Watches `hosts` for 3.5 s: every whole second in that window runs
/// exactly once over all of them, and no other tick runs in it.
fn each_tick_runs_once(hosts: &[&Host]) {
    let from = now();
    std::thread::sleep(Duration::from_millis(3500));
    let to = from + 3.5;
    let expected: Vec<i64> = ((from.floor() as i64 + 1)..=(to.floor() as i64)).collect();
    // The last tick's call may still be finishing: wait for it, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let seen = ticks(hosts);
        if expected.iter().all(|at| seen.contains_key(at)) || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let in_window: BTreeMap<i64, usize> = seen
        .into_iter()
        .filter(|(at, _)| (*at as f64) > from && (*at as f64) <= to)
        .collect();
    println!(
        "{} hosts, window {from:.3}..{to:.3}: ticks {in_window:?}",
        hosts.len()
    );
    assert_eq!(
        in_window.keys().copied().collect::<Vec<_>>(),
        expected,
        "every second of the window ticks"
    );
    assert!(
        in_window.values().all(|runs| *runs == 1),
        "a tick ran more than once: {in_window:?}"
    );
    assert!((3..=4).contains(&expected.len()));
}

#[test]
fn a_once_a_second_schedule_runs_each_tick_once_and_can_be_triggered() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path(), &manifest_text(""));
    let host = Host::start_with_admin(&manifest, &dir.path().join("data"), TOKEN);
    host.wait_for_log("running 1 schedules");
    each_tick_runs_once(&[&host]);

    // A client's copy of the scheduled marks never reaches the route.
    let forged = host.request(
        "POST",
        "/api/tasks/tick",
        &[
            ("x-edge-scheduled", "* * * * * *"),
            ("x-edge-scheduled-at", "1"),
        ],
        b"",
    );
    assert_eq!(
        forged.json(),
        serde_json::json!({ "scheduled": null, "at": null })
    );
    assert!(!ticks(&[&host]).contains_key(&1));

    // `edgehost trigger` runs it once, now, marked as a trigger.
    let to = format!("http://{}", host.admin());
    let out = edgehost(&["trigger", "/api/tasks/tick", "--to", &to], TOKEN);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("/api/tasks/tick: 200"), "{stdout}");
    assert!(stdout.contains(r#""scheduled":"trigger""#), "{stdout}");
    let log = host.wait_for_log("(trigger): 200");
    assert!(log.contains("scheduled POST /api/tasks/tick (* * * * * *): 200"));
    let reply = host.get("/api/tasks/tick");
    let triggers = reply.json()["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["label"] == "trigger")
        .count();
    assert_eq!(triggers, 1);

    // A path no schedule calls is refused by name.
    let out = edgehost(&["trigger", "/api/nothing", "--to", &to], TOKEN);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no [[schedule]]"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `edgehost schedules` lists it with its next run.
    let out = edgehost(
        &["schedules", "--manifest", manifest.to_str().unwrap()],
        TOKEN,
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listing.contains("CRON"), "{listing}");
    assert!(
        listing.contains("* * * * * *  POST    /api/tasks/tick"),
        "{listing}"
    );
}

fn fleet_host(manifest: &Path, data: PathBuf, nats: &str, admin: bool) -> Host {
    Host::start_with_args(
        Start {
            manifest,
            data_dir: &data,
            env: vec![("FLEET_NATS", nats), ("EDGEHOST_ADMIN_TOKEN", TOKEN)],
        },
        if admin {
            &["serve", "--admin", "127.0.0.1:0"]
        } else {
            &[]
        },
    )
}

#[test]
fn in_a_fleet_of_two_each_tick_runs_on_one_host() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(
        dir.path(),
        &manifest_text("[fleet]\nname = \"ticks\"\nnats_url_env = \"FLEET_NATS\"\n"),
    );
    let url = nats.url();
    let first = fleet_host(&manifest, dir.path().join("host0"), &url, true);
    let second = fleet_host(&manifest, dir.path().join("host1"), &url, false);
    for host in [&first, &second] {
        host.wait_for_log("running 1 schedules");
    }
    each_tick_runs_once(&[&first, &second]);
    // Both hosts took part: neither is idle while the other runs every tick.
    let per_host: Vec<usize> = [&first, &second]
        .iter()
        .map(|host| ticks(&[host]).len())
        .collect();
    println!("ticks per host so far: {per_host:?}");
}

#[test]
fn a_schedule_without_its_route_or_method_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let ticker = component("fixture_ticker");
    let text = format!(
        r#"[[route]]
path = "/api/tasks/tick"
component = {ticker:?}
kv = ["ticks"]

[[schedule]]
cron = "*/5 * * * *"
path = "/api/elsewhere"

[[schedule]]
cron = "every minute"
path = "/api/tasks/tick"

[[schedule]]
cron = "0 * * * *"
path = "/api/tasks/tick"
method = "DELETE"
"#
    );
    let manifest = write_manifest(dir.path(), &text);
    let out = edgehost(&["check", "--manifest", manifest.to_str().unwrap()], TOKEN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(":6: [[schedule]]: no route of this manifest answers /api/elsewhere"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":10: [[schedule]]: cron \"every minute\" is not a cron pattern"),
        "{stderr}"
    );
    // The method is checked against the component's exports.
    let text = text
        .replace("path = \"/api/elsewhere\"", "path = \"/api/tasks/tick\"")
        .replace("cron = \"every minute\"", "cron = \"@daily\"");
    let manifest = write_manifest(dir.path(), &text);
    let out = edgehost(&["check", "--manifest", manifest.to_str().unwrap()], TOKEN);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(":14: [[schedule]]: DELETE /api/tasks/tick: route \"/api/tasks/tick\" does not answer DELETE"),
        "{stderr}"
    );
}
