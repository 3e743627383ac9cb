//! A fleet of hosts on one private NATS JetStream server: a deploy reaches
//! every host or none, two racing deploys cannot both win, a killed host
//! drops out of `fleet status` and comes back serving the current
//! deployment, and hosts keep serving while NATS is down and catch up once
//! it is back.
//!
//! Each deployment is the probe fixture with `VERSION` (and `SAME`, which
//! must match it) in its environment, so every answer says which
//! deployment served it.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::backends::NatsServer;
use support::{component, request, Host, Start};

const FLEET: &str = "test";
/// Host 0's admin token (the others run without the admin API).
const TOKEN: &str = "fleet-admin-token-0123456789";

/// A manifest of fleet `test` serving the probe as `version`; `extra`
/// goes into the route's entry.
fn manifest(dir: &Path, name: &str, version: &str, component: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"[fleet]
name = "{FLEET}"
nats_url_env = "FLEET_NATS"
deploy_secrets = ["ONLY_SOME"]

[[route]]
path = "/probe"
component = {component:?}
env = {{ VERSION = "{version}", SAME = "{version}" }}
{extra}
"#
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A fleet of hosts on a private NATS, all first serving `v0`.
struct Fleet {
    nats: NatsServer,
    dir: tempfile::TempDir,
    start_manifest: PathBuf,
    hosts: Vec<Option<Host>>,
}

impl Fleet {
    fn start(hosts: usize, without_secret: &[usize]) -> Fleet {
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let start_manifest = manifest(
            dir.path(),
            "start.toml",
            "v0",
            &component("fixture_probe"),
            "",
        );
        let mut fleet = Fleet {
            nats,
            dir,
            start_manifest,
            hosts: Vec::new(),
        };
        for n in 0..hosts {
            let host = fleet.start_host(n, !without_secret.contains(&n));
            fleet.hosts.push(Some(host));
        }
        fleet.wait_for_live(hosts);
        fleet
    }

    fn start_host(&self, n: usize, with_secret: bool) -> Host {
        let url = self.nats.url();
        let mut env = vec![
            ("FLEET_NATS", url.as_str()),
            ("EDGEHOST_ADMIN_TOKEN", TOKEN),
        ];
        if with_secret {
            env.push(("ONLY_SOME", "shh"));
        }
        let admin: &[&str] = if n == 0 {
            &["serve", "--admin", "127.0.0.1:0"]
        } else {
            &[]
        };
        Host::start_with_args(
            Start {
                manifest: &self.start_manifest,
                data_dir: &self.dir.path().join(format!("host{n}")),
                env,
            },
            admin,
        )
    }

    fn host(&self, n: usize) -> &Host {
        self.hosts[n].as_ref().expect("host running")
    }

    fn running(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().flatten()
    }

    /// `edgehost ARGS --fleet test --nats URL`.
    fn edgehost(&self, args: &[&str]) -> Output {
        let url = self.nats.url();
        let output = Command::new(env!("CARGO_BIN_EXE_edgehost"))
            .args(args)
            .args(["--fleet", FLEET, "--nats", &url])
            .env_remove("NATS_URL")
            .output()
            .expect("run edgehost");
        eprintln!(
            "edgehost {args:?}: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Deploys the probe as `version` (with `extra` in its entry); the
    /// command's output.
    fn deploy(&self, version: &str, component: &Path, extra: &str, args: &[&str]) -> Output {
        let file = manifest(
            self.dir.path(),
            &format!("{version}.toml"),
            version,
            component,
            extra,
        );
        let file = file.display().to_string();
        let mut all = vec!["deploy", file.as_str()];
        all.extend_from_slice(args);
        self.edgehost(&all)
    }

    /// `fleet status` output.
    fn status(&self) -> String {
        let output = self.edgehost(&["fleet", "status"]);
        assert!(output.status.success(), "fleet status failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Waits until `fleet status` lists exactly `count` hosts.
    fn wait_for_live(&self, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status();
            let listed = status.lines().filter(|l| l.contains("127.0.0.1:")).count();
            if listed == count {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "fleet status never listed {count} hosts:\n{status}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The version a probe answer came from, checked to be one deployment's.
fn version_of(status: u16, body: &[u8]) -> Result<String, String> {
    if status != 200 {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| format!("not JSON: {err}"))?;
    let version = json["env"]["VERSION"].as_str().unwrap_or("?").to_string();
    let same = json["env"]["SAME"].as_str().unwrap_or("?");
    if version != same {
        return Err(format!("mixed answer: VERSION {version}, SAME {same}"));
    }
    Ok(version)
}

fn version(host: &Host) -> String {
    let reply = host.get("/probe");
    version_of(reply.status, &reply.body).unwrap()
}

/// "... N ms after the pointer moved" from a deploy's output.
fn convergence_ms(output: &Output) -> u64 {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .split(" ms after the pointer moved")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no convergence time in {stdout:?}"))
}

/// Clients hitting every given address round-robin until stopped: each
/// answer's version, and every error.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: Vec<std::net::SocketAddr>, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|client| {
                let (stop, seen, errors, addrs) =
                    (stop.clone(), seen.clone(), errors.clone(), addrs.clone());
                std::thread::spawn(move || {
                    let mut n = client;
                    while !stop.load(Ordering::Relaxed) {
                        let addr = addrs[n % addrs.len()];
                        n += 1;
                        let reply =
                            std::panic::catch_unwind(|| request(addr, "GET", "/probe", &[], b""));
                        let answer = match reply {
                            Ok(reply) => version_of(reply.status, &reply.body),
                            Err(_) => Err(format!("no answer from {addr}")),
                        };
                        match answer {
                            Ok(version) => seen.lock().unwrap().push(version),
                            Err(error) => errors.lock().unwrap().push(error),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            seen,
            errors,
            threads,
        }
    }

    /// Stops the clients: the versions seen, and the errors.
    fn finish(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        let errors = self.errors.lock().unwrap().clone();
        (seen, errors)
    }
}

#[test]
fn three_deploys_under_load_reach_every_host_and_the_invalid_one_none() {
    let fleet = Fleet::start(3, &[]);
    let addrs = fleet.running().map(|h| h.addr).collect();
    let load = Load::start(addrs, 3);
    let probe = component("fixture_probe");
    let broken = fleet.dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm not a component at all").unwrap();

    let mut times = Vec::new();
    let first = fleet.deploy("v1", &probe, "", &[]);
    assert!(first.status.success(), "the first deploy failed");
    times.push(convergence_ms(&first));
    for host in fleet.running() {
        assert_eq!(
            version(host),
            "v1",
            "every host serves v1 once the deploy returns"
        );
    }

    let invalid = fleet.deploy("v2", &broken, "", &[]);
    assert!(!invalid.status.success(), "a broken component deployed");
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        stderr.contains("refused: 3 of 3 hosts cannot serve deployment"),
        "{stderr}"
    );
    assert!(stderr.contains("no host switched"), "{stderr}");

    let third = fleet.deploy("v3", &probe, "", &[]);
    assert!(third.status.success(), "the third deploy failed");
    times.push(convergence_ms(&third));
    for host in fleet.running() {
        assert_eq!(version(host), "v3");
    }

    let (seen, errors) = load.finish();
    assert!(errors.is_empty(), "errors under load: {errors:?}");
    assert!(
        seen.len() > 100,
        "the load made only {} requests",
        seen.len()
    );
    assert!(
        !seen.iter().any(|v| v == "v2"),
        "a host served the invalid deployment"
    );
    for version in ["v0", "v1", "v3"] {
        assert!(
            seen.iter().any(|v| v == version),
            "no answer from {version}"
        );
    }
    times.sort_unstable();
    eprintln!(
        "convergence over {} deploys: p50 {} ms, max {} ms ({} requests, 0 errors)",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        seen.len()
    );
    let status = fleet.status();
    assert!(
        status.contains("deployment 3 is current"),
        "ids are fleet-wide (the refused deploy took 2):\n{status}"
    );
}

#[test]
fn a_deploy_one_host_cannot_prepare_is_refused_naming_that_host() {
    let fleet = Fleet::start(3, &[2]);
    let lacking = fleet.host(2).addr.port();
    let output = fleet.deploy(
        "v1",
        &component("fixture_probe"),
        "secrets = [\"ONLY_SOME\"]",
        &[],
    );
    assert!(!output.status.success(), "deployed without a host's secret");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused: 1 of 3 hosts cannot serve deployment 1"),
        "{stderr}"
    );
    let named: Vec<&str> = stderr.lines().filter(|l| l.starts_with("host ")).collect();
    assert_eq!(named.len(), 1, "{stderr}");
    assert!(
        named[0].contains(&format!("-{lacking}: ")) && named[0].contains("ONLY_SOME"),
        "{stderr}"
    );
    for host in fleet.running() {
        assert_eq!(version(host), "v0", "a host switched to a refused deploy");
    }
    assert!(fleet.status().contains("no deployment yet"));
    // The two that have the secret would have served it: nothing stuck.
    let plain = fleet.deploy("v2", &component("fixture_probe"), "", &[]);
    assert!(plain.status.success());
    for host in fleet.running() {
        assert_eq!(version(host), "v2");
    }
}

#[test]
fn of_two_racing_deploys_exactly_one_wins() {
    let fleet = Fleet::start(2, &[]);
    assert!(fleet
        .deploy("v1", &component("fixture_probe"), "", &[])
        .status
        .success());
    let racers: Vec<_> = ["v2", "v3"]
        .into_iter()
        .map(|version| {
            let file = manifest(
                fleet.dir.path(),
                &format!("{version}.toml"),
                version,
                &component("fixture_probe"),
                "",
            );
            let url = fleet.nats.url();
            std::thread::spawn(move || {
                let output = Command::new(env!("CARGO_BIN_EXE_edgehost"))
                    .arg("deploy")
                    .arg(&file)
                    .args(["--fleet", FLEET, "--nats", &url, "--expect-current", "1"])
                    .output()
                    .expect("run edgehost");
                (version, output)
            })
        })
        .collect();
    let results: Vec<(&str, Output)> = racers.into_iter().map(|t| t.join().unwrap()).collect();
    let winners: Vec<&str> = results
        .iter()
        .filter(|(_, output)| output.status.success())
        .map(|(version, _)| *version)
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let loser = results
        .iter()
        .find(|(_, output)| !output.status.success())
        .map(|(_, output)| String::from_utf8_lossy(&output.stderr).into_owned())
        .unwrap();
    assert!(loser.contains("conflict"), "{loser}");
    assert!(loser.contains("nothing changed"), "{loser}");
    for host in fleet.running() {
        assert_eq!(version(host), winners[0]);
    }
}

#[test]
fn a_killed_host_drops_out_and_restarts_serving_the_current_deployment() {
    let mut fleet = Fleet::start(3, &[]);
    assert!(fleet
        .deploy("v1", &component("fixture_probe"), "", &[])
        .status
        .success());
    let survivors = vec![fleet.host(0).addr, fleet.host(1).addr];
    let load = Load::start(survivors, 2);
    let killed_port = fleet.host(2).addr.port();
    // Dropping a host kills it with SIGKILL: no goodbye to NATS.
    fleet.hosts[2] = None;
    let status = fleet.wait_for_live(2);
    assert!(
        !status.contains(&format!("-{killed_port} ")),
        "the killed host is still listed:\n{status}"
    );
    let (seen, errors) = load.finish();
    assert!(errors.is_empty(), "the others failed: {errors:?}");
    assert!(!seen.is_empty());

    // Restarted: it serves the fleet's deployment, not its command line's,
    // from its first answer on.
    let back = fleet.start_host(2, true);
    assert_eq!(version(&back), "v1");
    fleet.hosts[2] = Some(back);
    let status = fleet.wait_for_live(3);
    assert_eq!(
        status
            .lines()
            .filter(|l| l.contains("127.0.0.1:"))
            .filter(|l| l.contains(" 1 "))
            .count(),
        3,
        "{status}"
    );

    // A rollback reaches every host too.
    assert!(fleet
        .deploy("v2", &component("fixture_probe"), "", &[])
        .status
        .success());
    let rolled = fleet.edgehost(&["rollback"]);
    assert!(rolled.status.success());
    assert!(String::from_utf8_lossy(&rolled.stdout).contains("deployment 1 on all 3 hosts"));
    for host in fleet.running() {
        assert_eq!(version(host), "v1");
    }
    // Ids are the fleet's, in the metrics and /readyz too.
    let host = fleet.host(0);
    let metrics = host.admin_request("GET", "/metrics", TOKEN, b"").text();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"edgehost_deployment_info{id="1"} 1"#),
        "{metrics}"
    );
    assert_eq!(
        host.admin_request("GET", "/readyz", "", b"").json()["deployment"],
        "1"
    );
    // A host in a fleet takes no deploys of its own.
    let own = host.admin_request("POST", "/v1/rollback", TOKEN, b"");
    assert_eq!(own.status, 409);
    assert!(
        own.text().contains("edgehost rollback --fleet test"),
        "{}",
        own.text()
    );
    let again = fleet.edgehost(&["rollback"]);
    assert!(
        !again.status.success(),
        "rolled back past the first deployment"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("no deployment before 1"));
}

#[test]
fn with_nats_down_hosts_keep_serving_and_deploys_are_refused_then_catch_up() {
    let mut fleet = Fleet::start(2, &[]);
    assert!(fleet
        .deploy("v1", &component("fixture_probe"), "", &[])
        .status
        .success());
    fleet.nats.stop();
    // Once a heartbeat fails, each host says so (once) and keeps serving.
    for host in fleet.running() {
        host.wait_for_log("until NATS is back");
        assert_eq!(version(host), "v1", "a host stopped serving without NATS");
    }
    let refused = fleet.deploy("v2", &component("fixture_probe"), "", &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("cannot reach NATS"), "{stderr}");
    assert!(
        stderr.contains("nothing") || stderr.contains("cannot be changed"),
        "{stderr}"
    );

    // A host restarted meanwhile serves what it last had.
    fleet.hosts[1] = None;
    let restarted = fleet.start_host(1, true);
    assert_eq!(version(&restarted), "v1");
    fleet.hosts[1] = Some(restarted);

    fleet.nats.restart();
    // Each host says once that NATS is back (its client reconnects itself).
    for host in fleet.running() {
        host.wait_for_log("NATS answers again");
    }
    let deployed = fleet.deploy("v2", &component("fixture_probe"), "", &[]);
    assert!(deployed.status.success());
    for host in fleet.running() {
        assert_eq!(version(host), "v2");
    }
    let log = fleet.host(0).log();
    assert_eq!(
        log.matches("until NATS is back").count(),
        1,
        "NATS going away is logged once:\n{log}"
    );
    assert!(log.contains("NATS answers again"), "{log}");
}
