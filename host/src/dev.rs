//! `edgehost dev`: build the route crates, serve, and on every saved change
//! rebuild only the crates that changed and reload without a restart.
//!
//! A failed build keeps the host running on the last good components; the
//! routes of the crate that failed answer 500 with the compiler's errors (in
//! dev mode only) until it builds again, so a curl shows why a change is not
//! live. The errors are printed in the terminal too.

use crate::admin;
use crate::build;
use crate::folders::{self, FolderRoute};
use crate::manifest;
use crate::server::Host;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often `dev` looks at the sources.
const INTERVAL: Duration = Duration::from_millis(150);

/// Build errors by component file stem (the crate's name with underscores).
#[derive(Default)]
pub struct DevErrors {
    errors: Mutex<HashMap<String, Arc<str>>>,
}

impl DevErrors {
    /// The build error for the route served from `component`, if its crate
    /// failed its last build.
    pub fn for_component(&self, component: &Path) -> Option<Arc<str>> {
        let stem = component.file_stem()?.to_str()?;
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.get(stem).cloned()
    }

    /// Records the outcome of building `built`.
    fn update(&self, built: &[FolderRoute], outcome: &build::Outcome) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        for route in built {
            let stem = route.package.replace('-', "_");
            match outcome.failed.get(&route.package) {
                Some(text) => {
                    let body = format!(
                        "build of route {} ({}) failed; fix it and save to reload:\n\n{text}",
                        route.path, route.crate_dir
                    );
                    errors.insert(stem, Arc::from(body));
                }
                None if outcome.success => {
                    errors.remove(&stem);
                }
                None => {
                    // Cargo failed without blaming this crate (a dependency,
                    // a lock): keep what we knew.
                }
            }
        }
    }
}

/// The route crates `dev` watches: those `[routes]` mounts and those under
/// `routes/` next to the manifest, each once.
pub fn source_crates(manifest_path: &Path) -> Vec<FolderRoute> {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let mut crates = std::fs::read_to_string(manifest_path)
        .ok()
        .and_then(|text| manifest::Sources::read(&text, base).ok())
        .map(|sources| sources.folder_routes)
        .unwrap_or_default();
    if base.join("routes").is_dir() {
        if let Ok(found) = folders::discover(base, "routes", manifest::DEFAULT_TARGET_DIR) {
            for route in found {
                if !crates.iter().any(|known| known.package == route.package) {
                    crates.push(route);
                }
            }
        }
    }
    crates
}

/// One number per crate that changes when any file in it does.
fn fingerprints(base: &Path, crates: &[FolderRoute]) -> BTreeMap<String, u64> {
    crates
        .iter()
        .map(|route| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            hash_tree(&base.join(&route.crate_dir), &mut hasher);
            (route.package.clone(), hasher.finish())
        })
        .collect()
}

fn hash_tree(dir: &Path, hasher: &mut impl Hasher) {
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
        } else if let Ok(meta) = entry.metadata() {
            path.hash(hasher);
            meta.len().hash(hasher);
            meta.modified().ok().hash(hasher);
        }
    }
}

fn modified(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Builds every route crate before the host starts. Returns whether all built.
pub fn first_build(manifest_path: &Path, errors: &DevErrors) -> anyhow::Result<bool> {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let crates = source_crates(manifest_path);
    let outcome = build::build(base, &crates)?;
    errors.update(&crates, &outcome);
    Ok(outcome.success)
}

/// Waits until a source file or the manifest changes (for a first build or
/// load that failed).
pub fn wait_for_change(manifest_path: &Path) {
    let base = manifest_path.parent().unwrap_or(Path::new("."));
    let before = (
        fingerprints(base, &source_crates(manifest_path)),
        modified(manifest_path),
    );
    eprintln!("waiting for a change to the routes or the manifest");
    loop {
        std::thread::sleep(INTERVAL);
        let now = (
            fingerprints(base, &source_crates(manifest_path)),
            modified(manifest_path),
        );
        if now != before {
            return;
        }
    }
}

/// Watches the sources and the manifest for as long as the host serves.
pub async fn watch(host: Arc<Host>, manifest_path: PathBuf) {
    let base = manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    // A few stat calls on a dev machine's source tree: done in place.
    let look = || {
        let crates = source_crates(&manifest_path);
        let prints = fingerprints(&base, &crates);
        (crates, prints, modified(&manifest_path))
    };
    let (_, mut prints, mut manifest_seen) = look();
    let mut unbuilt: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    loop {
        tokio::time::sleep(INTERVAL).await;
        let (now_crates, now_prints, now_manifest) = look();
        if now_prints == prints && now_manifest == manifest_seen {
            continue;
        }
        let saved = Instant::now();
        // An editor may write in steps: wait until two looks agree.
        let (mut settled_crates, mut settled_prints, mut settled_manifest) =
            (now_crates, now_prints, now_manifest);
        loop {
            tokio::time::sleep(INTERVAL).await;
            let again = look();
            if again.1 == settled_prints && again.2 == settled_manifest {
                break;
            }
            (settled_crates, settled_prints, settled_manifest) = again;
        }
        // What changed now, and what a failed build left unbuilt before.
        let changed: Vec<FolderRoute> = settled_crates
            .iter()
            .filter(|route| {
                prints.get(&route.package) != settled_prints.get(&route.package)
                    || unbuilt.contains(&route.package)
            })
            .cloned()
            .collect();
        let manifest_changed = settled_manifest != manifest_seen;
        prints = settled_prints;
        manifest_seen = settled_manifest;

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
                    if let Some(dev) = &host.dev {
                        dev.update(&changed, &outcome);
                    }
                    if outcome.success {
                        built_any = true;
                        unbuilt.clear();
                    } else {
                        // Cargo may stop before building every crate: build
                        // them all again with the next change.
                        unbuilt.extend(changed.iter().map(|r| r.package.clone()));
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
            if admin::load_and_swap(&host, source, move || manifest::load(&path))
                .await
                .is_ok()
            {
                tracing::info!(
                    "reloaded {:.2}s after the change was saved",
                    saved.elapsed().as_secs_f64()
                );
            }
        }
    }
}
