//! Helpers for the end-to-end tests: start the real `edgehost` binary on a
//! free port and talk plain HTTP/1.1 to it.

#![allow(dead_code)]

pub mod backends;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the host may take to compile its routes and start listening.
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host crate sits in the repository root")
        .to_path_buf()
}

/// A built component, by crate name; fails with the command to build it.
pub fn component(name: &str) -> PathBuf {
    let path = repo_root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: build the components first with `cargo run -p edgehost -- build routes tests/fixtures` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Fails, saying how to build it, when the TypeScript app of the routes
/// folder `routes` (relative to the repository) is not built: its component
/// is `target/edgehost-ts/<name>-<hash>.wasm`.
pub fn typescript_app(name: &str, routes: &str) {
    let dir = repo_root().join("target/edgehost-ts");
    let built = std::fs::read_dir(&dir).into_iter().flatten().any(|entry| {
        entry.is_ok_and(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.starts_with(&format!("{name}-")) && file.ends_with(".wasm")
        })
    });
    assert!(
        built,
        "the TypeScript app in {routes} is not built in {}: run `cargo run -p edgehost -- build {routes}` (scripts/test.sh does)",
        dir.display()
    );
}

/// A running host process, killed when dropped.
pub struct Host {
    child: Child,
    pub addr: SocketAddr,
    /// The admin API's address, when it was turned on.
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    /// Holds the ready file the host wrote.
    _ready: tempfile::TempDir,
}

/// Options for starting a host.
pub struct Start<'a> {
    pub manifest: &'a Path,
    pub data_dir: &'a Path,
    pub env: Vec<(&'a str, &'a str)>,
}

impl Host {
    /// Starts `edgehost serve` on an OS-chosen port and waits until it
    /// listens (its `--ready-file` says where), with a deadline.
    pub fn start(options: Start<'_>) -> Host {
        Host::start_with_args(options, &[])
    }

    /// Like [`Host::start`], with more arguments for `edgehost`; the admin
    /// API's address is known when `--admin` is among them.
    /// Arguments before `serve` or `dev` (such as `--log-format json`) go first.
    pub fn start_with_args(options: Start<'_>, args: &[&str]) -> Host {
        Host::start_in(None, options, args)
    }

    /// Like [`Host::start_with_args`], run from folder `dir` (so a manifest
    /// given as a bare file name is found there).
    pub fn start_in(dir: Option<&Path>, options: Start<'_>, args: &[&str]) -> Host {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgehost"));
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        // `serve` unless the arguments name `dev`; what comes before it is global.
        let at = args.iter().position(|a| *a == "serve" || *a == "dev");
        let (global, subcommand, rest): (Vec<&str>, &str, Vec<&str>) = match at {
            Some(at) => (args[..at].to_vec(), args[at], args[at + 1..].to_vec()),
            None => (Vec::new(), "serve", args.to_vec()),
        };
        let ready_dir = tempfile::tempdir().expect("a folder for the ready file");
        let ready_file = ready_dir.path().join("ready.json");
        command
            .args(&global)
            .arg(subcommand)
            .args(&rest)
            .arg("--ready-file")
            .arg(&ready_file)
            .arg("--manifest")
            .arg(options.manifest)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(options.data_dir)
            .env("RUST_LOG", "info")
            .env_remove("STRIPE_WEBHOOK_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start edgehost");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        // The host writes its ready file (whole, by a rename) once it listens.
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let ready_text = loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file) {
                break text;
            }
            let exited = child.try_wait().expect("wait for host");
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                // Its stderr is closed now: the reader has every line.
                let _ = reader.join();
                panic!(
                    "host did not start listening ({}):\n{}",
                    exited.map_or("no ready file by the deadline".to_string(), |s| s
                        .to_string()),
                    log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let ready: serde_json::Value = serde_json::from_str(&ready_text)
            .unwrap_or_else(|err| panic!("ready file is not JSON ({err}): {ready_text}"));
        assert_eq!(
            ready["pid"],
            child.id(),
            "the ready file names the host's process"
        );
        let addr: SocketAddr = ready["listen"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listen address in the ready file: {ready_text}"));
        // The host logs "listening on" before it writes the ready file; once
        // the reader has that line, every line of the startup is in the log.
        loop {
            if log
                .lock()
                .unwrap()
                .contains(&format!("listening on http://{addr}"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the host wrote its ready file but its log never said it listens:\n{}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let admin = ready["admin"]
            .as_str()
            .map(|a| a.parse().expect("admin address"));
        Host {
            child,
            addr,
            admin,
            log,
            _ready: ready_dir,
        }
    }

    /// Starts `edgehost serve` on `manifest` with its admin API on, the
    /// bearer token `token` in the host's environment.
    pub fn start_with_admin(manifest: &Path, data_dir: &Path, token: &str) -> Host {
        Host::start_with_args(
            Start {
                manifest,
                data_dir,
                env: vec![("EDGEHOST_ADMIN_TOKEN", token)],
            },
            &["serve", "--admin", "127.0.0.1:0"],
        )
    }

    /// The value of one `/metrics` line, by its full name with labels,
    /// read with the admin token `token`.
    pub fn metric(&self, token: &str, name: &str) -> u64 {
        let text = self.admin_request("GET", "/metrics", token, b"").text();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// The admin API's address (the host must have been started with it).
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("host started with --admin")
    }

    /// A request to the admin API with the given bearer token (none if empty).
    pub fn admin_request(&self, method: &str, path: &str, token: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {token}");
        let headers: Vec<(&str, &str)> = if token.is_empty() {
            Vec::new()
        } else {
            vec![("authorization", auth.as_str())]
        };
        request(self.admin(), method, path, &headers, body)
    }

    /// The host's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the host process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Everything the host has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (with a deadline) until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits (with a deadline) until the log contains `needle` `count` times.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never contained {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.request(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request(self.addr, method, path, headers, body)
    }

    /// Sends SIGTERM, as an orchestrator stopping the host would.
    pub fn send_sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for host") {
                return status;
            }
            assert!(Instant::now() < deadline, "host did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response as received.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs `edgehost ARGS` with the admin token `token` in its environment.
pub fn edgehost(args: &[&str], token: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(args)
        .env("EDGEHOST_ADMIN_TOKEN", token)
        .output()
        .expect("run edgehost")
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    send_raw(addr, &raw, method == "HEAD")
}

/// Writes raw bytes and parses the one response that comes back.
pub fn send_raw(addr: SocketAddr, raw: &[u8], head_only: bool) -> Reply {
    parse_response(&exchange_raw(addr, raw), head_only)
}

/// Writes raw bytes and returns every byte that comes back, unparsed (to
/// check framing: chunks, trailers).
pub fn exchange_raw(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect to host");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(raw).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    response
}

/// Parses one HTTP/1.1 response (content-length or chunked framing).
pub fn parse_response(raw: &[u8], head_only: bool) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if head_only {
        rest.to_vec()
    } else if chunked {
        decode_chunked(rest)
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn decode_chunked(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return body;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            return body;
        }
        let start = line_end + 2;
        body.extend_from_slice(&raw[start..start + size]);
        raw = &raw[start + size + 2..];
    }
}

/// A connection to `to` from the loopback address `from` (all of 127/8 is
/// this machine), so one test can be several clients.
pub fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    // std cannot bind before connecting; tokio can. One runtime for every
    // such connection of the test binary.
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_io()
            .build()
            .unwrap()
    });
    let stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
            socket.connect(to).await?.into_std()
        })
        .unwrap_or_else(|err| panic!("connect from {from:?}: {err}"));
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Writes a manifest into `dir` and returns its path.
pub fn write_manifest(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The current unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
