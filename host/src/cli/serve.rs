//! `edgehost serve`: load the manifest, bind the public listener (and the
//! admin API when it is on), say where they are, serve until Ctrl-C or
//! SIGTERM, then drain.
//!
//! Shutdown: the public listener stops accepting and its in-flight requests
//! get up to `drain_timeout`; meanwhile the admin API keeps answering, with
//! `/readyz` at 503, so a load balancer sees the host going. Once the public
//! side has drained, the admin API stops as well.

use super::{load, Loaded, Purpose};
use crate::control::watcher::{stamp, Stamp, Watcher};
use crate::control::TickClaims;
use crate::control::{BuildErrors, Deployer, Host};
use crate::fleet::{host_name, FleetTicks, Member};
use crate::http;
use crate::http::admin::Admin;
use crate::http::schedule::Scheduler;
use crate::manifest::{self, AdminSettings, Sources};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
    /// Once listening, write where to this file (see [`ReadyFile`]).
    pub ready_file: Option<PathBuf>,
}

/// `edgehost serve`.
pub fn serve(options: ServeOptions) -> anyhow::Result<()> {
    serve_with(options, None)
}

/// [`serve`], for `edgehost dev` with its build errors: the route crates
/// are rebuilt and reloaded when they change.
pub(super) fn serve_with(
    options: ServeOptions,
    build_errors: Option<BuildErrors>,
) -> anyhow::Result<()> {
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
    let drain = manifest.server.drain_timeout;
    let dev = build_errors.is_some();
    let fleet = match &manifest.fleet {
        None => None,
        Some(spec) => {
            if options.watch || options.resume || dev {
                anyhow::bail!(
                    "{}: a host in fleet {} takes its deployments from the fleet: --watch, --resume and dev do not apply",
                    file.display(),
                    spec.name()
                );
            }
            let var = spec.nats_url_env();
            let url = std::env::var(var).unwrap_or_default();
            if url.is_empty() {
                anyhow::bail!(
                    "{}: [fleet] {}: {var} is not set in the host's environment (it holds the NATS URL)",
                    file.display(),
                    spec.name()
                );
            }
            manifest::fleet::check_nats_url(&url).map_err(|reason| {
                anyhow::anyhow!("{}: [fleet]: {var}: {reason}", file.display())
            })?;
            Some((spec.clone(), url))
        }
    };
    let deploy_secrets = match &manifest.fleet {
        Some(spec) => spec.deploy_secrets.clone(),
        None => admin_settings
            .as_ref()
            .and_then(|s| s.deploy_secrets.clone()),
    };
    let host = Arc::new(Host::new(runtime, table, manifest, build_errors));
    let deployer = (admin_settings.is_some() || fleet.is_some()).then(|| {
        Arc::new(Deployer::new(
            Arc::clone(&host),
            deploy_secrets.as_ref(),
            &data_dir,
        ))
    });
    // In a fleet, each tick runs on the one host that claims it.
    let claims = fleet.as_ref().map(|(spec, url)| {
        let ticks = FleetTicks::new(
            spec.name().to_string(),
            (url.clone(), spec.nats_url_env().to_string()),
            host_name(listen),
        );
        Arc::new(ticks) as Arc<dyn TickClaims>
    });
    let scheduler = Arc::new(Scheduler::new(Arc::clone(&host), claims));
    let admin = admin_settings
        .zip(deployer.clone())
        .map(|(settings, deployer)| {
            Admin::new(Arc::clone(&deployer), Arc::clone(&scheduler), &settings)
                .map(|api| (Arc::new(api), deployer, settings.listen))
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
        // The databases' migrations, before anything is served.
        host.runtime
            .migrate(&host.started_with)
            .await
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = listener.local_addr()?;
        if let (Some((spec, url)), Some(deployer)) = (fleet, &deployer) {
            // Before the admin API and the ready file: a host reports ready
            // only once it serves the fleet's current deployment.
            let admin_at = admin.as_ref().map(|(_, _, at)| *at);
            let member = Arc::new(Member::new(
                spec.name().to_string(),
                (url, spec.nats_url_env().to_string()),
                local,
                admin_at,
                Arc::clone(deployer),
            ));
            member.join().await;
        }
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let (public_drained, drained) = watch::channel(false);
        let mut admin_addr = None;
        let mut admin_task = None;
        if let Some((api, deployer, admin_listen)) = admin {
            if options.resume {
                deployer.resume().await;
            }
            let admin_listener = TcpListener::bind(admin_listen)
                .await
                .with_context(|| format!("cannot listen on {admin_listen} for the admin API"))?;
            let addr = admin_listener.local_addr()?;
            tracing::info!("admin API listening on http://{addr}");
            admin_addr = Some(addr);
            admin_task = Some(tokio::spawn(http::admin::serve(
                admin_listener,
                api,
                until(drained),
                drain,
            )));
        }
        if dev {
            tracing::info!(
                "dev: watching the route crates and {} for changes",
                file.display()
            );
            tokio::spawn(super::rebuild::watch(
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
        if let Some(path) = &options.ready_file {
            ReadyFile {
                listen: local,
                admin: admin_addr,
            }
            .write(path)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
        }
        let schedules = host.deployments.current().table.schedules().len();
        if schedules > 0 {
            tracing::info!("running {schedules} schedules");
        }
        tokio::spawn(Arc::clone(&scheduler).run(until(stopped.clone())));
        http::server::serve(listener, host, until(stopped)).await;
        let _ = public_drained.send(true);
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        Ok(())
    })
}

/// Resolves once `flag` turns true (or its sender is gone).
async fn until(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

/// `serve --ready-file FILE`: once the host listens, one JSON object with
/// the addresses it listens on, for scripts and tests that start it on port
/// 0. Written whole and renamed into place, so a reader never sees half.
///
/// ```json
/// {"listen": "127.0.0.1:41873", "admin": "127.0.0.1:40121", "pid": 4242}
/// ```
struct ReadyFile {
    listen: SocketAddr,
    admin: Option<SocketAddr>,
}

impl ReadyFile {
    fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::json!({
            "listen": self.listen.to_string(),
            "admin": self.admin.map(|addr| addr.to_string()),
            "pid": std::process::id(),
        });
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        std::fs::write(&temporary, format!("{text}\n"))?;
        std::fs::rename(&temporary, path)
    }
}

/// How often `serve --watch` looks at the files.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// The manifest file and the component files it names (as far as it can
/// be read), resolved like the manifest resolves them; each with its stamp.
/// The list is taken afresh each time, so a route crate added under
/// `[routes]` is picked up.
fn watched(manifest_path: &Path) -> Vec<(PathBuf, Option<Stamp>)> {
    let base = manifest::base_of(manifest_path);
    let mut files = vec![manifest_path.to_path_buf()];
    if let Some(sources) = Sources::of_file(manifest_path) {
        files.extend(sources.components.iter().map(|c| base.join(c)));
    }
    files
        .into_iter()
        .map(|file| {
            let stamp = stamp(&file);
            (file, stamp)
        })
        .collect()
}

/// `serve --watch`: when the manifest or a component changes (and has
/// stopped changing), reload it with the same validation and atomic swap as
/// a deploy. A bad change is logged and changes nothing.
async fn watch(host: Arc<Host>, manifest_path: PathBuf) {
    let look_at = manifest_path.clone();
    let mut watcher = Watcher::new(WATCH_INTERVAL, move || watched(&look_at));
    loop {
        watcher.changed().await;
        let path = manifest_path.clone();
        let source = format!("reload of {}", manifest_path.display());
        // Errors are logged by load_and_swap; the host keeps what it serves.
        let _ = host
            .load_and_swap(source, move || manifest::load(&path))
            .await;
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
