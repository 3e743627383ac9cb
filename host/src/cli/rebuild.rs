//! `edgehost dev`'s watch on the route crates: what it looks at, and on a
//! saved change, rebuilding the crates that changed and reloading.

use super::build::{self, Outcome};
use super::typescript;
use crate::control::watcher::{stamp, Stamp, Watcher};
use crate::control::{BuildErrors, Host};
use crate::manifest::folders::{self, FolderRoute};
use crate::manifest::{self, Sources};
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often `dev` looks at the sources.
pub(super) const INTERVAL: Duration = Duration::from_millis(150);

/// Records the outcome of building `built`: the errors of each crate that
/// failed, and which built.
pub(super) fn record(errors: &BuildErrors, built: &[FolderRoute], outcome: &Outcome) {
    // Every TypeScript route of an app shares its component: one record each.
    for app in typescript::apps(built) {
        let Some(stem) = Path::new(&app.component).file_stem() else {
            continue;
        };
        let stem = stem.to_string_lossy().into_owned();
        match outcome.failed_apps.get(&app.component) {
            Some(text) => errors.failed(
                stem,
                format!(
                    "build of the TypeScript routes failed; fix them and save to reload:\n\n{text}"
                ),
            ),
            None => errors.built(&stem),
        }
    }
    for route in built.iter().filter(|route| !route.script) {
        let stem = route.package.replace('-', "_");
        match outcome.failed.get(&route.package) {
            Some(text) => errors.failed(
                stem,
                format!(
                    "build of route {} ({}) failed; fix it and save to reload:\n\n{text}",
                    route.path, route.crate_dir
                ),
            ),
            None if outcome.success => errors.built(&stem),
            // Cargo failed without blaming this crate (a dependency, a
            // lock): keep what we knew.
            None => {}
        }
    }
}

/// The route crates `dev` watches: those `[routes]` mounts and those under
/// `routes/` next to the manifest, each once.
pub(super) fn source_crates(manifest_path: &Path) -> Vec<FolderRoute> {
    let base = manifest::base_of(manifest_path);
    let mut crates = Sources::of_file(manifest_path)
        .map(|sources| sources.folder_routes)
        .unwrap_or_default();
    if base.join("routes").is_dir() {
        let target_dir = folders::default_target_dir(base);
        if let Ok(found) = folders::discover(base, "routes", &target_dir) {
            for route in found {
                if !crates
                    .iter()
                    .any(|known| known.crate_dir == route.crate_dir)
                {
                    crates.push(route);
                }
            }
        }
    }
    crates
}

/// What one look of `dev` sees: the crates, a number per crate that
/// changes when any file in it does, and the manifest's stamp.
#[derive(Clone, PartialEq)]
pub(super) struct Look {
    crates: Vec<FolderRoute>,
    prints: BTreeMap<String, u64>,
    manifest: Option<Stamp>,
}

/// A few stat calls on a dev machine's source tree: done in place.
pub(super) fn look(manifest_path: &Path) -> Look {
    let base = manifest::base_of(manifest_path);
    let crates = source_crates(manifest_path);
    let prints = crates
        .iter()
        .map(|route| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            hash_tree(&base.join(&route.crate_dir), &mut hasher);
            (route.crate_dir.clone(), hasher.finish())
        })
        .collect();
    Look {
        crates,
        prints,
        manifest: stamp(manifest_path),
    }
}

/// `changed`, and every TypeScript route sharing a component with one of them.
fn with_whole_apps(mut changed: Vec<FolderRoute>, all: &[FolderRoute]) -> Vec<FolderRoute> {
    let apps: BTreeSet<String> = changed
        .iter()
        .filter(|route| route.script)
        .map(|route| route.component.clone())
        .collect();
    for route in all {
        if route.script
            && apps.contains(&route.component)
            && !changed
                .iter()
                .any(|known| known.crate_dir == route.crate_dir)
        {
            changed.push(route.clone());
        }
    }
    changed
}

fn hash_tree(dir: &Path, hasher: &mut impl Hasher) {
    if dir.is_file() {
        dir.hash(hasher);
        stamp(dir).hash(hasher);
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            hash_tree(&path, hasher);
        } else {
            path.hash(hasher);
            stamp(&path).hash(hasher);
        }
    }
}

/// Watches the sources and the manifest for as long as the host serves:
/// rebuilds the crates that changed (and those a failed build left
/// unbuilt), then reloads.
pub(super) async fn watch(host: Arc<Host>, manifest_path: PathBuf) {
    let base = manifest::base_of(&manifest_path).to_path_buf();
    let look_at = manifest_path.clone();
    let mut watcher = Watcher::new(INTERVAL, move || look(&look_at));
    let mut unbuilt: BTreeSet<String> = BTreeSet::new();
    loop {
        let change = watcher.changed().await;
        let (before, after) = (change.before, change.after);
        let changed: Vec<FolderRoute> = after
            .crates
            .iter()
            .filter(|route| {
                before.prints.get(&route.crate_dir) != after.prints.get(&route.crate_dir)
                    || unbuilt.contains(&route.crate_dir)
            })
            .cloned()
            .collect();
        // A TypeScript file is built with every other file of its app.
        let changed = with_whole_apps(changed, &after.crates);
        let manifest_changed = before.manifest != after.manifest;

        let mut built_any = false;
        if !changed.is_empty() {
            let names: Vec<&str> = changed.iter().map(|r| r.path.as_str()).collect();
            tracing::info!("changed: {}; rebuilding", names.join(", "));
            let to_build = changed.clone();
            let workspace = base.clone();
            let outcome =
                tokio::task::spawn_blocking(move || build::build(&workspace, &to_build)).await;
            match outcome {
                Ok(Ok(outcome)) => {
                    if let Some(errors) = &host.build_errors {
                        record(errors, &changed, &outcome);
                    }
                    if outcome.success {
                        built_any = true;
                        unbuilt.clear();
                    } else {
                        // Cargo may stop before building every crate: build
                        // them all again with the next change.
                        unbuilt.extend(changed.iter().map(|r| r.crate_dir.clone()));
                        tracing::error!(
                            "build failed; the last good version keeps serving, and the failed routes answer 500 with the errors until they build"
                        );
                    }
                }
                Ok(Err(err)) => tracing::error!("cannot build: {err:#}"),
                Err(err) => tracing::error!("the build stopped unexpectedly: {err}"),
            }
        }
        if built_any || manifest_changed {
            let path = manifest_path.clone();
            let source = format!("dev reload of {}", manifest_path.display());
            if host
                .load_and_swap(source, move || manifest::load(&path))
                .await
                .is_ok()
            {
                tracing::info!(
                    "reloaded {:.2}s after the change was saved",
                    change.first_seen.elapsed().as_secs_f64()
                );
            }
        }
    }
}
