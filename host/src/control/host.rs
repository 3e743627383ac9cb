//! A running host: its runtime, what it serves, the manifest it started
//! with, whether it is shutting down; and [`Host::load_and_swap`], the one
//! way a deploy, a reload or a resume changes what it serves.

use super::build_errors::BuildErrors;
use super::deployments::{Deployment, Deployments, Turn};
use crate::edge::ResponseCache;
use crate::manifest::limits::{Scope, LIMITS};
use crate::manifest::{Manifest, ManifestErrors};
use crate::metrics::Metrics;
use crate::runtime::{RouteTable, Runtime};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What the public server, the admin API and the watchers share.
pub(crate) struct Host {
    pub(crate) runtime: Runtime,
    pub(crate) deployments: Deployments,
    /// The manifest the host started with: its server-wide settings stay.
    pub(crate) started_with: Manifest,
    shutting_down: AtomicBool,
    /// Build errors to answer with, under `edgehost dev` only.
    pub(crate) build_errors: Option<BuildErrors>,
    /// The response cache, unless `[cache] enabled = false`.
    pub(crate) cache: Option<Arc<ResponseCache>>,
}

impl Host {
    /// A host serving `table`, loaded by `runtime` from `manifest`.
    pub(crate) fn new(
        runtime: Runtime,
        table: RouteTable,
        manifest: Manifest,
        build_errors: Option<BuildErrors>,
    ) -> Host {
        let source = manifest.file.display().to_string();
        // In a fleet, ids are the fleet's; the command line's table is not one.
        let id = if manifest.fleet.is_some() {
            "local"
        } else {
            "1"
        };
        let cache = manifest.cache.enabled.then(|| {
            Arc::new(ResponseCache::new(
                manifest.cache.clone(),
                Arc::clone(&runtime.metrics().cache),
            ))
        });
        let deployments = Deployments::new(
            table,
            id,
            source,
            Arc::clone(runtime.metrics()),
            cache.clone(),
        );
        Host {
            runtime,
            deployments,
            started_with: manifest,
            shutting_down: AtomicBool::new(false),
            build_errors,
            cache,
        }
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        self.runtime.metrics()
    }

    /// False once the host has begun shutting down.
    pub(crate) fn ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed)
    }

    /// From now on the host is shutting down (`/readyz` says so).
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Validates and compiles what `parse` returns, off the async workers,
    /// then swaps it in; one deploy or reload at a time. On any error nothing
    /// changes and the reasons come back, one per line of the manifest at
    /// fault. With the new deployment come warnings about settings that take
    /// effect only on a restart.
    pub(crate) async fn load_and_swap(
        self: &Arc<Self>,
        source: String,
        parse: impl FnOnce() -> Result<Manifest, ManifestErrors> + Send + 'static,
    ) -> Result<(Arc<Deployment>, Vec<String>), Vec<String>> {
        let turn = self.deployments.turn().await;
        self.load_and_swap_in(&turn, source, parse).await
    }

    /// [`Host::load_and_swap`] in a turn the caller holds (to do more in
    /// the same turn, such as recording the deployment).
    pub(crate) async fn load_and_swap_in(
        self: &Arc<Self>,
        turn: &Turn<'_>,
        source: String,
        parse: impl FnOnce() -> Result<Manifest, ManifestErrors> + Send + 'static,
    ) -> Result<(Arc<Deployment>, Vec<String>), Vec<String>> {
        let (table, warnings) = self.prepare(&source, parse).await?;
        Ok((turn.activate(table, source), warnings))
    }

    /// Validates and compiles what `parse` returns, off the async workers,
    /// without swapping it in: the route table, with warnings about
    /// restart-only settings; or the reasons it is refused (logged).
    pub(crate) async fn prepare(
        self: &Arc<Self>,
        source: &str,
        parse: impl FnOnce() -> Result<Manifest, ManifestErrors> + Send + 'static,
    ) -> Result<(RouteTable, Vec<String>), Vec<String>> {
        let host = Arc::clone(self);
        let loaded = tokio::task::spawn_blocking(move || {
            let manifest = parse()?;
            let warnings = restart_only_changes(&host.started_with, &manifest);
            let table = host.runtime.load(&manifest)?;
            Ok::<_, ManifestErrors>((manifest, table, warnings))
        })
        .await;
        // Migrations last: only a deployment that loads changes a database.
        let migrated = match loaded {
            Ok(Ok((manifest, table, warnings))) => match self.runtime.migrate(&manifest).await {
                Ok(()) => Ok(Ok((table, warnings))),
                Err(errors) => Ok(Err(errors)),
            },
            Ok(Err(errors)) => Ok(Err(errors)),
            Err(err) => Err(err),
        };
        let reasons = match migrated {
            Ok(Ok((table, warnings))) => {
                for warning in &warnings {
                    tracing::warn!("{source}: {warning}");
                }
                return Ok((table, warnings));
            }
            Ok(Err(errors)) => errors.0.iter().map(ToString::to_string).collect(),
            Err(err) => vec![format!("loading stopped unexpectedly: {err}")],
        };
        self.metrics().deploy_rejected();
        tracing::error!(
            "{source} refused; still serving deployment {}:\n{}",
            self.deployments.current().id,
            reasons.join("\n")
        );
        Err(reasons)
    }
}

/// `[server]` and `[admin]` settings of `new` that differ from the running
/// host's: they belong to the process and take effect only on a restart.
fn restart_only_changes(running: &Manifest, new: &Manifest) -> Vec<String> {
    let mut changed = Vec::new();
    if running.listen != new.listen {
        changed.push("listen".to_string());
    }
    let unset = crate::manifest::Limits::default();
    for spec in LIMITS.iter().filter(|spec| spec.scope() == Scope::Server) {
        if spec.get(&unset, &running.server) != spec.get(&unset, &new.server) {
            changed.push(spec.key.to_string());
        }
    }
    if running.admin != new.admin {
        changed.push("[admin]".to_string());
    }
    if running.fleet != new.fleet {
        changed.push("[fleet]".to_string());
    }
    if running.cache != new.cache {
        changed.push("[cache]".to_string());
    }
    let stores: std::collections::BTreeSet<&String> =
        running.kv.keys().chain(new.kv.keys()).collect();
    for store in stores {
        let same = match (running.kv.get(store), new.kv.get(store)) {
            (Some(running), Some(new)) => running.same_as(new),
            (None, None) => true,
            _ => false,
        };
        if !same {
            changed.push(format!("[kv.{store}]"));
        }
    }
    // A database on another backend is refused when it loads; a new URL
    // variable or size for the same backend waits for a restart.
    for (database, spec) in &new.sql {
        if let Some(running) = running.sql.get(database) {
            if running.backend == spec.backend && !running.same_backend(spec) {
                changed.push(format!("[sql.{database}]"));
            }
        }
    }
    changed
        .into_iter()
        .map(|what| {
            format!("{what} differs from the running host's and takes effect only when it restarts")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        crate::manifest::parse(std::path::Path::new("m.toml"), text, &|_| None).unwrap()
    }

    /// A deploy warns about each server-wide setting it would change, and
    /// about nothing else (route limits apply at once).
    #[test]
    fn each_restart_only_change_is_named() {
        let running = manifest("[server]\nlisten = \"127.0.0.1:1\"\ndrain_timeout = \"5s\"\n");
        let same = manifest(
            "[server]\nlisten = \"127.0.0.1:1\"\ndrain_timeout = \"5000ms\"\ntimeout = \"1s\"\n",
        );
        assert_eq!(restart_only_changes(&running, &same), Vec::<String>::new());
        let new = manifest(
            "[server]\nlisten = \"127.0.0.1:2\"\nmax_instances = 7\nheader_timeout = \"1s\"\n\n[admin]\n\n[kv.posts]\nbackend = \"redis\"\nurl_env = \"R\"\n",
        );
        let warnings = restart_only_changes(&running, &new);
        let named: Vec<&str> = warnings
            .iter()
            .map(|w| w.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(
            named,
            [
                "listen",
                "max_instances",
                "header_timeout",
                "drain_timeout",
                "[admin]",
                "[kv.posts]"
            ]
        );
        assert!(
            warnings[0].ends_with("takes effect only when it restarts"),
            "{warnings:?}"
        );
    }
}
