//! What each subcommand of `edgehost` does.

use crate::capabilities::kv::{DiskKv, KvBackend, NoKv};
use crate::manifest::{self, Manifest};
use crate::runtime::{EngineSettings, RouteTable, Runtime};
use crate::server::{self, Host};
use anyhow::{bail, Context};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// Logs go to stderr; `RUST_LOG` picks what (default: `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Whether a command serves requests (and so opens the key-value data).
#[derive(PartialEq)]
enum Purpose {
    Serve,
    Inspect,
}

/// Loads, validates and compiles a manifest: everything short of serving.
fn load(
    manifest_path: &Path,
    data_dir: Option<PathBuf>,
    purpose: Purpose,
) -> anyhow::Result<(Manifest, Runtime, RouteTable)> {
    let manifest = manifest::load(manifest_path)?;
    let data_dir = data_dir.unwrap_or_else(|| manifest.data_dir.clone());
    let kv: Arc<dyn KvBackend> = match purpose {
        Purpose::Serve => {
            Arc::new(DiskKv::open(&data_dir).context("cannot open the key-value data")?)
        }
        Purpose::Inspect => Arc::new(NoKv),
    };
    let settings = EngineSettings::for_manifest(&manifest, &data_dir);
    let runtime = Runtime::new(kv, settings)
        .map_err(|err| anyhow::anyhow!("cannot start the WebAssembly engine: {err:#}"))?;
    let table = runtime.load(&manifest)?;
    Ok((manifest, runtime, table))
}

/// `edgehost serve`.
pub fn serve(
    manifest_path: &Path,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (manifest, runtime, table) = load(manifest_path, data_dir, Purpose::Serve)?;
    let listen = listen.unwrap_or(manifest.listen);
    let routes = table.routes().len();
    let host = Arc::new(Host::new(runtime, table, manifest.clients.clone()));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        tracing::info!(
            "serving {routes} routes from {} on http://{local}",
            manifest.file.display()
        );
        tracing::info!("listening on http://{local}");
        server::serve(listener, host, shutdown_signal()).await;
        Ok(())
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// `edgehost check`.
pub fn check(manifest_path: &Path) -> anyhow::Result<()> {
    let (manifest, _, table) = load(manifest_path, None, Purpose::Inspect)?;
    eprintln!(
        "{}: {} routes, all compiled and linked",
        manifest.file.display(),
        table.routes().len()
    );
    Ok(())
}

/// `edgehost routes`.
pub fn routes(manifest_path: &Path) -> anyhow::Result<()> {
    let (manifest, _, table) = load(manifest_path, None, Purpose::Inspect)?;
    println!("{:<32} {:<40} {:<12} ENV", "PATH", "METHODS", "KV");
    for (spec, route) in manifest.routes.iter().zip(table.routes()) {
        let env: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
        println!(
            "{:<32} {:<40} {:<12} {}",
            route.name,
            route.allow,
            spec.kv.join(","),
            env.join(",")
        );
    }
    Ok(())
}

/// The target route components are built for.
const TARGET: &str = "wasm32-wasip2";

/// `edgehost build`: every crate below `dirs`, for [`TARGET`], release.
pub fn build(dirs: &[PathBuf]) -> anyhow::Result<()> {
    ensure_target()?;
    let mut packages = Vec::new();
    for dir in dirs {
        find_packages(dir, &mut packages)
            .with_context(|| format!("cannot search {} for route crates", dir.display()))?;
    }
    if packages.is_empty() {
        bail!("no route crates (Cargo.toml) found under {dirs:?}");
    }
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.args(["build", "--release", "--target", TARGET]);
    for package in &packages {
        cargo.args(["-p", package]);
    }
    eprintln!(
        "building {} route crates for {TARGET}: {}",
        packages.len(),
        packages.join(" ")
    );
    let status = cargo.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    Ok(())
}

/// Installs the wasm target with rustup when it is missing.
fn ensure_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("installing the {TARGET} target with rustup");
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()
                .context("cannot run rustup")?;
            if !status.success() {
                bail!("`rustup target add {TARGET}` failed ({status})");
            }
            Ok(())
        }
        // No rustup: the toolchain may still have the target; cargo will say if not.
        Err(_) => Ok(()),
    }
}

/// Package names of every Cargo.toml under `dir` (not descending into `target`).
fn find_packages(dir: &Path, packages: &mut Vec<String>) -> anyhow::Result<()> {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest)?;
        let doc: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
        if let Some(name) = doc
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        {
            packages.push(name.to_string());
        }
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() && entry.file_name() != "target" && entry.file_name() != "src" {
            find_packages(&path, packages)?;
        }
    }
    Ok(())
}
