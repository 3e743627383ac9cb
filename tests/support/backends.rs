//! Private Redis and PostgreSQL servers for the tests: each on a free port,
//! in a folder of its own, so a test can stop and restart its server without
//! touching anyone else's. A missing server binary fails the test with what
//! to install.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Waits until something accepts connections on `port`, with a deadline.
fn wait_for_port(port: u16, what: &str, log: &dyn Fn() -> String) {
    let deadline = Instant::now() + START_DEADLINE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the server on `port` answers Redis's `PING`.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// The path of program `name` on PATH or in `also` (folders tried after).
fn find(name: &str, also: &[PathBuf], install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(also.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: {install}"))
}

/// A private `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a folder for redis"),
        };
        server.run();
        server
    }

    /// `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn run(&mut self) {
        let binary = find(
            "redis-server",
            &[],
            "install Redis (Debian: apt-get install redis-server; ./scripts/test.sh does)",
        );
        let log = self.dir.path().join("redis.log");
        let child = Command::new(binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_for_port(self.port, "redis-server", &log_text);
        // Ours, not something else that had the port: it runs, and it is Redis.
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        assert!(
            exited.is_none(),
            "redis-server exited ({exited:?}):\n{}",
            log_text()
        );
        assert!(
            answers_ping(self.port),
            "port {} is not our Redis:\n{}",
            self.port,
            log_text()
        );
    }

    /// Stops the server (as a crash would: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private PostgreSQL cluster (`initdb` and `pg_ctl` in a temporary
/// folder), reached as user `postgres` without a password.
pub struct PostgresServer {
    pub port: u16,
    dir: tempfile::TempDir,
    pg_ctl: PathBuf,
    running: bool,
}

/// Whether the tests run as root.
fn root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// PostgreSQL refuses to run as root: then its commands run as the
/// `postgres` user, which Debian's package creates.
fn as_postgres_user(program: &Path) -> Command {
    if root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    pub fn start() -> PostgresServer {
        let install =
            "install PostgreSQL (Debian: apt-get install postgresql; ./scripts/test.sh does)";
        let versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path().join("bin"))
                    .collect()
            })
            .unwrap_or_default();
        let initdb = find("initdb", &versions, install);
        let pg_ctl = find("pg_ctl", &versions, install);
        let dir = tempfile::tempdir().expect("a folder for postgres");
        if root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "chown of the postgres folder failed");
        }
        let data = dir.path().join("data");
        let out = as_postgres_user(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            // A default collation that is not byte order (ICU's English), so
            // that a key column missing `COLLATE "C"` would sort differently.
            .args([
                "--locale=C.UTF-8",
                "--locale-provider=icu",
                "--icu-locale=en-US",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PostgresServer {
            port: free_port(),
            dir,
            pg_ctl,
            running: false,
        };
        server.run();
        server
    }

    /// `postgres://` URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let out = as_postgres_user(&self.pg_ctl)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-o", &options, "-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.running = true;
        wait_for_port(self.port, "postgres", &|| {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
    }

    /// Stops the server at once (as a crash would).
    pub fn stop(&mut self) {
        if self.running {
            let _ = as_postgres_user(&self.pg_ctl)
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
            self.running = false;
        }
    }

    /// Starts it again on the same port, with its data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private `nats-server -js`, its JetStream data in a folder of its own
/// (kept across a restart, as a real server's disk is).
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a folder for nats"),
        };
        server.run();
        server
    }

    /// `nats://` URL of the server.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn run(&mut self) {
        let binary = find(
            "nats-server",
            &[PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")],
            "install NATS (Debian: apt-get install nats-server; ./scripts/test.sh does)",
        );
        let log = self.dir.path().join("nats.log");
        let store = self.dir.path().join("jetstream");
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&store)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_for_port(self.port, "nats-server", &log_text);
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        assert!(
            exited.is_none(),
            "nats-server exited ({exited:?}):\n{}",
            log_text()
        );
        // JetStream is up once the server says so (it answers INFO before).
        let deadline = Instant::now() + START_DEADLINE;
        while !log_text().contains("Server is ready") {
            assert!(
                Instant::now() < deadline,
                "nats-server did not get ready:\n{}",
                log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, with the same JetStream data.
    pub fn restart(&mut self) {
        self.stop();
        // A fresh log, so that readiness is read from this run.
        let _ = std::fs::remove_file(self.dir.path().join("nats.log"));
        self.run();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
