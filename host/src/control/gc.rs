//! Garbage collection after each deploy and rollback: uploaded components
//! and compile cache entries that no kept deployment uses are deleted,
//! unless written (or asked for) within the grace period.

use super::deployments::Deployments;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

/// How long an uploaded component no kept deployment uses stays: a deploy
/// uploads its components first and sends its manifest after.
const UNUSED_COMPONENT_GRACE: Duration = Duration::from_secs(3600);

/// The folders collected and what they must keep.
pub(crate) struct Collector {
    /// Uploaded components (`.wasm`).
    pub(crate) components: PathBuf,
    /// The compile cache (`.cwasm`).
    pub(crate) compiled: PathBuf,
    /// Compile cache entries of the manifest the host started with: a
    /// restart with it finds them even after its deployment is no longer kept.
    pub(crate) pinned: HashSet<PathBuf>,
}

impl Collector {
    /// Deletes what no deployment in `deployments` uses, past its grace.
    pub(crate) async fn collect(&self, deployments: &Deployments) {
        let mut in_use = self.pinned.clone();
        for deployment in deployments.kept() {
            for route in deployment.table.routes() {
                in_use.insert(route.component.clone());
                in_use.extend(route.compiled.clone());
            }
        }
        let dirs = [
            (self.components.clone(), "wasm"),
            (self.compiled.clone(), "cwasm"),
        ];
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            for (dir, extension) in dirs {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|modified| modified.elapsed().ok())
                        .is_some_and(|age| age > UNUSED_COMPONENT_GRACE);
                    let ours = path.extension().is_some_and(|e| e == extension);
                    if ours && stale && !in_use.contains(&path) {
                        match std::fs::remove_file(&path) {
                            Ok(()) => removed.push(path),
                            Err(err) => {
                                tracing::warn!("could not remove {}: {err}", path.display())
                            }
                        }
                    }
                }
            }
            removed
        })
        .await
        .unwrap_or_default();
        for path in removed {
            tracing::info!("removed {}: no kept deployment uses it", path.display());
        }
    }
}
