//! What each subcommand of `edgehost` does.

use crate::admin::{self, Admin};
use crate::capabilities::kv::{DiskKv, KvBackend, NoKv};
use crate::manifest::{self, AdminSettings, Manifest};
use crate::runtime::{EngineSettings, RouteTable, Runtime};
use crate::server::{self, Host};
use anyhow::Context;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// Logs go to stderr; `RUST_LOG` picks what (default: `info`). Every request
/// logs one `access` line; `RUST_LOG=info,access=off` turns them off.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Whether a command serves requests (and so opens the key-value data).
#[derive(PartialEq)]
enum Purpose {
    Serve,
    /// `routes`: like `Inspect`, but secrets need not be set (only their
    /// names are shown).
    List,
    Inspect,
}

/// A loaded manifest, ready to serve.
struct Loaded {
    manifest: Manifest,
    data_dir: PathBuf,
    runtime: Runtime,
    table: RouteTable,
}

/// Loads, validates and compiles a manifest: everything short of serving.
fn load(
    manifest_path: &Path,
    data_dir: Option<PathBuf>,
    purpose: Purpose,
) -> anyhow::Result<Loaded> {
    let manifest = if purpose == Purpose::List {
        manifest::load_with_secrets(manifest_path, &|_| Some(String::new()))?
    } else {
        manifest::load(manifest_path)?
    };
    let data_dir = data_dir.unwrap_or_else(|| manifest.data_dir.clone());
    let kv: Arc<dyn KvBackend> = match purpose {
        Purpose::Serve => {
            Arc::new(DiskKv::open(&data_dir).context("cannot open the key-value data")?)
        }
        Purpose::Inspect | Purpose::List => Arc::new(NoKv),
    };
    let settings = EngineSettings::for_manifest(&manifest, &data_dir);
    let runtime = Runtime::new(kv, settings)
        .map_err(|err| anyhow::anyhow!("cannot start the WebAssembly engine: {err:#}"))?;
    let table = runtime.load(&manifest)?;
    Ok(Loaded {
        manifest,
        data_dir,
        runtime,
        table,
    })
}

/// What `edgehost serve` was asked.
pub struct ServeOptions {
    pub manifest: PathBuf,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// Turns the admin API on at this address (overrides `[admin] listen`).
    pub admin: Option<SocketAddr>,
    /// Reload when the manifest or a component file changes.
    pub watch: bool,
    /// Serve the last deployment recorded in the data dir.
    pub resume: bool,
    /// `edgehost dev`: rebuild changed route crates and reload; the build
    /// errors so far.
    pub dev: Option<crate::dev::DevErrors>,
}

/// `edgehost serve`.
pub fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let Loaded {
        manifest,
        data_dir,
        runtime,
        table,
    } = load(&options.manifest, options.data_dir, Purpose::Serve)?;
    let listen = options.listen.unwrap_or(manifest.listen);
    let routes = table.routes().len();
    let admin_settings = match (options.admin, &manifest.admin) {
        (Some(listen), settings) => Some(AdminSettings {
            listen,
            ..settings.clone().unwrap_or_default()
        }),
        (None, settings) => settings.clone(),
    };
    let file = manifest.file.clone();
    let mut host = Host::new(runtime, table, manifest);
    let dev = options.dev.is_some();
    host.dev = options.dev;
    let host = Arc::new(host);
    let admin = admin_settings
        .map(|settings| {
            Admin::new(Arc::clone(&host), &settings, &data_dir)
                .map(|api| (Arc::new(api), settings.listen))
        })
        .transpose()?;
    if options.resume && admin.is_none() {
        anyhow::bail!("--resume serves what was deployed through the admin API: turn it on with --admin or an [admin] table");
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Some((api, admin_listen)) = admin {
            if options.resume {
                api.resume().await;
            }
            let admin_listener = tokio::net::TcpListener::bind(admin_listen)
                .await
                .with_context(|| format!("cannot listen on {admin_listen} for the admin API"))?;
            tracing::info!(
                "admin API listening on http://{}",
                admin_listener.local_addr()?
            );
            tokio::spawn(admin::serve(
                admin_listener,
                api,
                until_stopped(stopped.clone()),
            ));
        }
        if dev {
            tracing::info!(
                "dev: watching the route crates and {} for changes",
                file.display()
            );
            tokio::spawn(crate::dev::watch(
                Arc::clone(&host),
                options.manifest.clone(),
            ));
        } else if options.watch {
            tracing::info!("watching {} and its components for changes", file.display());
            tokio::spawn(watch(Arc::clone(&host), options.manifest.clone()));
        }
        tracing::info!(
            "serving {routes} routes from {} on http://{local}",
            file.display()
        );
        tracing::info!("listening on http://{local}");
        server::serve(listener, host, until_stopped(stopped)).await;
        Ok(())
    })
}

/// How often `serve --watch` looks at the files.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The manifest file and the component files it names (as far as it can
/// be read), resolved like the manifest resolves them.
fn watched_files(manifest_path: &Path) -> Vec<PathBuf> {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let mut files = vec![manifest_path.to_path_buf()];
    if let Ok(text) = std::fs::read_to_string(manifest_path) {
        if let Ok(sources) = manifest::Sources::read(&text, base) {
            files.extend(sources.components.iter().map(|c| base.join(c)));
        }
    }
    files
}

/// Each watched file with its modification time and length (`None` while
/// it does not exist). The list is taken afresh each time, so a route crate
/// added under `[routes]` is picked up.
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn fingerprint(manifest_path: &Path) -> Fingerprint {
    watched_files(manifest_path)
        .into_iter()
        .map(|file| {
            let stamp = std::fs::metadata(&file)
                .ok()
                .and_then(|meta| Some((meta.modified().ok()?, meta.len())));
            (file, stamp)
        })
        .collect()
}

/// `serve --watch`: when the manifest or a component changes (and has stopped
/// changing for one interval), reload it with the same validation and
/// atomic swap as a deploy. A bad change is logged and changes nothing.
async fn watch(host: Arc<Host>, manifest_path: PathBuf) {
    let mut seen = fingerprint(&manifest_path);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let now = fingerprint(&manifest_path);
        if now == seen {
            continue;
        }
        // A build or an editor may still be writing: wait until two looks agree.
        let mut settled = now;
        loop {
            tokio::time::sleep(WATCH_INTERVAL).await;
            let again = fingerprint(&manifest_path);
            if again == settled {
                break;
            }
            settled = again;
        }
        let path = manifest_path.clone();
        let source = format!("reload of {}", manifest_path.display());
        // Errors are logged by load_and_swap; the host keeps what it serves.
        let _ = admin::load_and_swap(&host, source, move || manifest::load(&path)).await;
        // A change made while loading differs from `settled`: the next look sees it.
        seen = settled;
    }
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

/// `edgehost dev`: build every route crate, serve, rebuild and reload on change.
pub fn dev(
    manifest_path: &Path,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let errors = crate::dev::DevErrors::default();
    loop {
        crate::dev::first_build(manifest_path, &errors)?;
        match manifest::load(manifest_path) {
            Ok(_) => break,
            Err(reasons) => {
                eprintln!("{reasons}");
                crate::dev::wait_for_change(manifest_path);
            }
        }
    }
    serve(ServeOptions {
        manifest: manifest_path.to_path_buf(),
        listen,
        data_dir,
        admin: None,
        watch: false,
        resume: false,
        dev: Some(errors),
    })
}

/// `edgehost new`.
pub fn new_route(manifest_path: &Path, url: &str, sdk: Option<&Path>) -> anyhow::Result<()> {
    let created = crate::scaffold::new_route(manifest_path, url, sdk)?;
    println!(
        "created {} (package {})",
        created.crate_dir.display(),
        created.package
    );
    if created.added_to_manifest {
        println!("added route {url} to {}", manifest_path.display());
    } else {
        println!("the manifest's [routes] folder mounts it at {url}");
    }
    println!(
        "next: edit its src/lib.rs, then `edgehost dev` (or `edgehost build && edgehost serve`)"
    );
    Ok(())
}

/// `edgehost check`.
pub fn check(manifest_path: &Path) -> anyhow::Result<()> {
    let loaded = load(manifest_path, None, Purpose::Inspect)?;
    eprintln!(
        "{}: {} routes, all compiled and linked",
        loaded.manifest.file.display(),
        loaded.table.routes().len()
    );
    Ok(())
}

/// `edgehost routes`: the route table, one aligned row per route.
pub fn routes(manifest_path: &Path) -> anyhow::Result<()> {
    let loaded = load(manifest_path, None, Purpose::List)?;
    let mut rows = vec![[
        "PATH".to_string(),
        "METHODS".to_string(),
        "GRANTS".to_string(),
        "LIMITS".to_string(),
    ]];
    for (spec, route) in loaded.manifest.routes.iter().zip(loaded.table.routes()) {
        let mut grants: Vec<String> = spec.kv.iter().map(|kv| format!("kv:{kv}")).collect();
        for (name, _) in &spec.env {
            if spec.secrets.contains(name) {
                grants.push(format!("secret:{name}"));
            } else {
                grants.push(format!("env:{name}"));
            }
        }
        for allowed in &spec.allowed_outbound_hosts {
            grants.push(format!("net:{allowed}"));
        }
        if grants.is_empty() {
            grants.push("-".into());
        }
        let limits = &spec.limits;
        rows.push([
            route.name.to_string(),
            route.allow.clone(),
            grants.join(" "),
            format!(
                "timeout={:?}{} memory={} max_body={} max_concurrency={}",
                limits.timeout,
                limits
                    .cpu_time
                    .map_or_else(String::new, |cpu| format!(" cpu_time={cpu:?}")),
                size(limits.memory),
                size(limits.max_body),
                limits.max_concurrency
            ),
        ]);
    }
    let mut widths = [0; 4];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

/// A byte count in the largest binary unit that divides it.
fn size(bytes: usize) -> String {
    for (unit, factor) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// `edgehost deploy`.
pub fn deploy(manifest_path: &Path, to: &str, token_env: &str) -> anyhow::Result<()> {
    let client = admin::Client::new(to, token_env)?;
    client_runtime()?.block_on(client.deploy(manifest_path))
}

/// `edgehost rollback`.
pub fn rollback(to: &str, token_env: &str) -> anyhow::Result<()> {
    let client = admin::Client::new(to, token_env)?;
    client_runtime()?.block_on(client.rollback())
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
