//! `edgehost build` for TypeScript routes: every route file of one routes
//! folder becomes one component (esbuild, then componentize-js), compiled
//! ahead into the user's compile cache so a host loads it in milliseconds.
//!
//! The npm tools are pinned by the lock file in `host/ts/`, which the binary
//! carries with the build script, the runtime, the route types and the WIT
//! world. The first build installs them with `npm ci` into
//! `~/.cache/edgehost/ts/`; nothing is downloaded after that, nor ever at
//! run time. Each long step says what it does and, every few seconds, how
//! long it has taken.

use crate::manifest::folders::FolderRoute;
use crate::runtime::compile;
use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// The toolchain's files, written into its folder before each build.
const FILES: [(&str, &str); 20] = [
    ("package.json", include_str!("../../ts/package.json")),
    (
        "package-lock.json",
        include_str!("../../ts/package-lock.json"),
    ),
    ("build.mjs", include_str!("../../ts/build.mjs")),
    ("runtime.js", include_str!("../../ts/runtime.js")),
    ("hooks.mjs", include_str!("../../ts/hooks.mjs")),
    (
        "splice-cache.mjs",
        include_str!("../../ts/splice-cache.mjs"),
    ),
    (
        "types/edgehost.d.ts",
        include_str!("../../ts/types/edgehost.d.ts"),
    ),
    ("wit/world.wit", include_str!("../../ts/wit/world.wit")),
    (
        "wit/deps/edge-sql/sql.wit",
        include_str!("../../../guest-sdk/wit/deps/edge-sql/sql.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/store.wit",
        include_str!("../../../guest-sdk/wit/deps/keyvalue-draft2/store.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/atomic.wit",
        include_str!("../../../guest-sdk/wit/deps/keyvalue-draft2/atomic.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/batch.wit",
        include_str!("../../../guest-sdk/wit/deps/keyvalue-draft2/batch.wit"),
    ),
    (
        "wit/deps/keyvalue-draft2/world.wit",
        include_str!("../../../guest-sdk/wit/deps/keyvalue-draft2/world.wit"),
    ),
    (
        "wit/deps/wasi-cli/cli.wit",
        include_str!("../../ts/wit/deps/wasi-cli/cli.wit"),
    ),
    (
        "wit/deps/wasi-http/http.wit",
        include_str!("../../ts/wit/deps/wasi-http/http.wit"),
    ),
    (
        "wit/deps/wasi-io/io.wit",
        include_str!("../../ts/wit/deps/wasi-io/io.wit"),
    ),
    (
        "wit/deps/wasi-clocks/clocks.wit",
        include_str!("../../ts/wit/deps/wasi-clocks/clocks.wit"),
    ),
    (
        "wit/deps/wasi-random/random.wit",
        include_str!("../../ts/wit/deps/wasi-random/random.wit"),
    ),
    (
        "wit/deps/wasi-filesystem/filesystem.wit",
        include_str!("../../ts/wit/deps/wasi-filesystem/filesystem.wit"),
    ),
    (
        "wit/deps/wasi-sockets/sockets.wit",
        include_str!("../../ts/wit/deps/wasi-sockets/sockets.wit"),
    ),
];

/// The build script, kept running between builds (by `edgehost dev`, and
/// across the apps of one `edgehost build`): its type checker, esbuild and
/// the splicer's compiled code stay warm.
static WARM: Mutex<Option<Script>> = Mutex::new(None);

/// A running `node build.mjs`, reading config paths on its stdin.
struct Script {
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<String>,
}

impl Script {
    fn start(toolchain: &Path) -> anyhow::Result<Script> {
        let mut child = Command::new("node")
            .arg(toolchain.join("build.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context(NEEDS_NODE)?;
        let stdin = child.stdin.take().context("the build script's input")?;
        let stdout = child.stdout.take().context("the build script's output")?;
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Script {
            child,
            stdin,
            events,
        })
    }
}

/// How often a long step reports that it is still going.
const TICK: Duration = Duration::from_secs(5);

/// The TypeScript routes of one routes folder and the component they build.
pub(crate) struct App {
    pub(crate) component: String,
    pub(crate) routes: Vec<FolderRoute>,
}

/// `routes`' TypeScript files, grouped by the component they build into.
pub(crate) fn apps(routes: &[FolderRoute]) -> Vec<App> {
    let mut by_component: BTreeMap<String, Vec<FolderRoute>> = BTreeMap::new();
    for route in routes.iter().filter(|route| route.script) {
        by_component
            .entry(route.component.clone())
            .or_default()
            .push(route.clone());
    }
    by_component
        .into_iter()
        .map(|(component, routes)| App { component, routes })
        .collect()
}

/// Builds `app` (its paths relative to `base`); the errors, printed under
/// the route file they belong to, when it does not build.
pub(crate) fn build_app(base: &Path, app: &App) -> anyhow::Result<Option<String>> {
    let started = Instant::now();
    let toolchain = toolchain()?;
    let cache = compile::user_cache().context("no cache folder: set EDGEHOST_CACHE_DIR or HOME")?;
    let out = absolute(&base.join(&app.component));
    let work = out.with_extension("build");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let routes: Vec<serde_json::Value> = app
        .routes
        .iter()
        .map(|route| {
            serde_json::json!({
                "pattern": route.path,
                "file": absolute(&base.join(&route.crate_dir)),
                "shown": route.crate_dir,
            })
        })
        .collect();
    let config = serde_json::json!({
        "cwd": absolute(if base.as_os_str().is_empty() { Path::new(".") } else { base }),
        "routes": routes,
        "work": work,
        "out": out,
        "runtime": toolchain.join("runtime.js"),
        "types": toolchain.join("types/edgehost.d.ts"),
        "wit": toolchain.join("wit"),
        "world": "route",
        "cache": cache.join("ts/components"),
    });
    let config_file = work.join("config.json");
    std::fs::write(&config_file, config.to_string())
        .with_context(|| format!("cannot write {}", config_file.display()))?;
    eprintln!(
        "building {} TypeScript route{} into {}",
        app.routes.len(),
        if app.routes.len() == 1 { "" } else { "s" },
        app.component
    );
    let mut warm = WARM.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let running = warm
        .as_mut()
        .is_some_and(|script| script.child.try_wait().ok().flatten().is_none());
    if !running {
        *warm = Some(Script::start(&toolchain)?);
    }
    let Some(script) = warm.as_mut() else {
        bail!("the TypeScript build script did not start");
    };
    let asked =
        writeln!(script.stdin, "{}", config_file.display()).and_then(|()| script.stdin.flush());
    let mut errors: BTreeMap<Option<String>, String> = BTreeMap::new();
    let mut phase: Option<(String, Instant)> = None;
    let mut cached = false;
    let mut ended = None;
    while asked.is_ok() {
        match script.events.recv_timeout(TICK) {
            Ok(line) => {
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("{line}");
                    continue;
                };
                let text = event["text"].as_str().unwrap_or("").to_string();
                match event["event"].as_str() {
                    Some("phase") => {
                        let name = event["name"].as_str().unwrap_or("working").to_string();
                        eprintln!("  {name}");
                        phase = Some((name, Instant::now()));
                    }
                    Some("error") => {
                        let file = event["file"].as_str().map(|file| shown(app, file));
                        let entry = errors.entry(file).or_default();
                        entry.push_str(&text);
                        entry.push('\n');
                    }
                    Some("warning") => eprintln!("warning: {text}"),
                    Some("done") => cached = event["cached"].as_bool().unwrap_or(false),
                    Some("end") => {
                        ended = Some(event["ok"].as_bool().unwrap_or(false));
                        break;
                    }
                    _ => eprintln!("{line}"),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some((name, since)) = &phase {
                    eprintln!("  still {name} ({} s)", since.elapsed().as_secs());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if ended.is_none() {
        // The script died (or never read the request): the next build starts another.
        if let Some(mut script) = warm.take() {
            let _ = script.child.kill();
            let status = script
                .child
                .wait()
                .context("cannot wait for the build script")?;
            errors
                .entry(None)
                .or_default()
                .push_str(&format!("the TypeScript build script stopped ({status})\n"));
        }
    }
    drop(warm);
    if !errors.is_empty() || ended != Some(true) {
        let mut text = String::new();
        for (file, found) in &errors {
            match file {
                Some(file) => text.push_str(&format!("route {file}:\n{found}\n")),
                None => text.push_str(&format!("{found}\n")),
            }
        }
        if text.is_empty() {
            text = "the TypeScript build script failed without saying why\n".to_string();
        }
        eprint!("{text}");
        eprintln!("build failed in {}", app.component);
        return Ok(Some(text));
    }
    if cached {
        eprintln!("  componentized before: taken from the cache");
    }
    precompile(&out)?;
    eprintln!(
        "built {} in {:.1}s",
        app.component,
        started.elapsed().as_secs_f64()
    );
    Ok(None)
}

/// The route (`/api/x (routes/api/x.ts)`) a file the build script names
/// belongs to, or the file itself.
fn shown(app: &App, file: &str) -> String {
    app.routes
        .iter()
        .find(|route| file.ends_with(&route.crate_dir))
        .map(|route| format!("{} ({})", route.path, route.crate_dir))
        .unwrap_or_else(|| file.to_string())
}

/// Compiles the built component into the user's compile cache, reporting
/// how long Cranelift takes, so the first `serve` does not.
fn precompile(component: &Path) -> anyhow::Result<()> {
    let size = std::fs::metadata(component).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let file = component.to_path_buf();
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(compile::precompile(&file));
    });
    let mut announced = false;
    loop {
        match result.recv_timeout(if announced {
            TICK
        } else {
            Duration::from_millis(500)
        }) {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => {
                eprintln!(
                    "  compiled {:.1} MB of WebAssembly in {:.1}s",
                    size as f64 / 1e6,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Ok(Err(err)) => bail!("{} does not compile: {err}", component.display()),
            Err(mpsc::RecvTimeoutError::Timeout) if !announced => {
                eprintln!(
                    "  compiling {:.1} MB of WebAssembly (Cranelift)",
                    size as f64 / 1e6
                );
                announced = true;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("  still compiling ({} s)", started.elapsed().as_secs());
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the compile thread stopped"),
        }
    }
}

const NEEDS_NODE: &str = "TypeScript routes need Node.js 20 or later and npm: install them (https://nodejs.org, or your system's packages)";

/// The toolchain folder, its npm packages installed from the lock file.
fn toolchain() -> anyhow::Result<PathBuf> {
    // The npm packages are what takes time to install: the folder is
    // named by their lock; the other files are brought up to date below.
    let mut hash = Sha256::new();
    for (name, text) in &FILES[..2] {
        hash.update(name.as_bytes());
        hash.update(text.as_bytes());
    }
    let short: String = hash
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    let cache = compile::user_cache().context("no cache folder: set EDGEHOST_CACHE_DIR or HOME")?;
    let dir = cache.join("ts").join(format!("toolchain-{short}"));
    if !dir.join("node_modules/.package-lock.json").is_file() {
        install(&dir)?;
    }
    write_files(&dir)?;
    Ok(dir)
}

/// Writes each toolchain file that differs from what this binary carries
/// (atomically: builds may run side by side).
fn write_files(dir: &Path) -> anyhow::Result<()> {
    for (name, text) in FILES.iter() {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|known| known == *text) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let partial = path.with_extension(format!("partial{}", std::process::id()));
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Writes the toolchain's files into a new folder and runs `npm ci` there,
/// then moves it into place, so a failed install leaves nothing half done.
fn install(dir: &Path) -> anyhow::Result<()> {
    let partial = dir.with_extension(format!("partial{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    for (name, text) in &FILES[..2] {
        let path = partial.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "installing the TypeScript tools (esbuild, typescript, componentize-js) with npm ci into {}; once",
        dir.display()
    );
    let started = Instant::now();
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&partial)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .context(NEEDS_NODE)?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        bail!("`npm ci` of the TypeScript tools failed ({status})");
    }
    match std::fs::rename(&partial, dir) {
        Ok(()) => {}
        // Another build installed them meanwhile.
        Err(_) if dir.join("node_modules/.package-lock.json").is_file() => {
            let _ = std::fs::remove_dir_all(&partial);
        }
        Err(err) => bail!(
            "cannot move the TypeScript tools to {}: {err}",
            dir.display()
        ),
    }
    eprintln!("  installed in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
