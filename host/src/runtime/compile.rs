//! Loading a component file: checking it is a component, and compiling it
//! once per content and engine, with the compiled code cached on disk so a
//! restart compiles nothing.

use super::incremental::FunctionCache;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::Engine;

/// A compiled component and where it came from.
#[derive(Clone)]
pub(crate) struct Compiled {
    pub(crate) component: Component,
    /// Whether it came from the compile cache.
    pub(crate) cached: bool,
    /// Its entry in the compile cache, if it has one.
    pub(crate) entry: Option<PathBuf>,
}

/// Reads the component at `file`, and says what it is when it is not one.
pub(crate) fn read_component(file: &Path) -> Result<Vec<u8>, String> {
    let name = file.display();
    let bytes =
        std::fs::read(file).map_err(|err| format!("cannot read component {name}: {err}"))?;
    // `\0asm`, then the version and the layer: 1 for a component, 0 for a
    // core module.
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(bytes),
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => Err(format!(
            "{name} is a core WebAssembly module, not a component; build the route for wasm32-wasip2"
        )),
        _ => Err(format!("{name} is not a WebAssembly component")),
    }
}

/// Compiles a component, or loads it from the cache in `cache_dir` when
/// these bytes were compiled before with the same engine settings.
pub(crate) fn compile_cached(
    engine: &Engine,
    cache_dir: Option<&Path>,
    bytes: &[u8],
    deadline: Duration,
) -> Result<Compiled, String> {
    let compile = || compile_within(engine, bytes, deadline);
    let Some(dir) = cache_dir else {
        return Ok(Compiled {
            component: compile()?,
            cached: false,
            entry: None,
        });
    };
    let name = format!("{}.cwasm", cache_key(engine, bytes));
    let entry = dir.join(&name);
    // Compiled ahead by `edgehost build` (a JavaScript route's engine takes
    // seconds of Cranelift): taken into this host's own cache.
    if !entry.is_file() {
        if let Some(ahead) = shared_dir().map(|shared| shared.join(&name)) {
            if ahead.is_file() {
                if let Err(err) = copy_entry(dir, &ahead, &entry) {
                    tracing::warn!(
                        "cannot take {} into the compile cache: {err}",
                        ahead.display()
                    );
                }
            }
        }
    }
    if entry.is_file() {
        // SAFETY: the file was written by `Component::serialize` below with
        // this engine's settings (they are part of its name), into the
        // host's own data folder. Whoever can write there can run native
        // code in the host, as they could by replacing its binary.
        match unsafe { Component::deserialize_file(engine, &entry) } {
            Ok(component) => {
                return Ok(Compiled {
                    component,
                    cached: true,
                    entry: Some(entry),
                })
            }
            Err(err) => tracing::warn!(
                "ignoring unusable compile cache entry {}: {err:#}",
                entry.display()
            ),
        }
    }
    let component = compile()?;
    if let Err(err) = write_cache_entry(dir, &entry, &component) {
        tracing::warn!(
            "could not cache the compiled component in {}: {err}",
            dir.display()
        );
        return Ok(Compiled {
            component,
            cached: false,
            entry: None,
        });
    }
    Ok(Compiled {
        component,
        cached: false,
        entry: Some(entry),
    })
}

/// Held by the thread compiling a component: one compile at a time, so a
/// compile that outlived its deadline (Cranelift cannot be stopped) delays
/// the next ones rather than running beside them.
static COMPILING: Mutex<()> = Mutex::new(());

/// Compiles `bytes` on a thread of its own, giving up after `deadline`
/// (waiting for an earlier compile to finish counts). A compile given up
/// on while it waits its turn never starts; one given up on midway
/// (Cranelift cannot be stopped) runs to its end and is dropped.
fn compile_within(engine: &Engine, bytes: &[u8], deadline: Duration) -> Result<Component, String> {
    let (done, result) = mpsc::sync_channel(1);
    let (engine, bytes) = (engine.clone(), bytes.to_vec());
    let give_up = std::time::Instant::now() + deadline;
    std::thread::Builder::new()
        .name("compile".into())
        .spawn(move || {
            let _turn = COMPILING.lock().unwrap_or_else(|p| p.into_inner());
            // Given up on while it waited its turn: nobody wants the result,
            // and the compiles queued behind it should not wait for it.
            if std::time::Instant::now() >= give_up {
                return;
            }
            let compiled = Component::new(&engine, &bytes)
                .map_err(|err| with_feature_hint(format!("{err:#}")));
            let _ = done.send(compiled);
        })
        .map_err(|err| format!("cannot start a compile thread: {err}"))?;
    let timed_out =
        || format!("compiling took longer than the server's compile_timeout of {deadline:?}");
    match result.recv_timeout(deadline) {
        Ok(compiled) => compiled,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(timed_out()),
        // The thread gives up by itself once the deadline has passed, and
        // can do so a moment before this wait does.
        Err(mpsc::RecvTimeoutError::Disconnected) if std::time::Instant::now() >= give_up => {
            Err(timed_out())
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err("the compile thread stopped without a result".into())
        }
    }
}

/// What the validator says when a component uses a feature the engine
/// has off (see `WASM_FEATURES` in `engine.rs`), and the feature's name.
const REFUSED_FEATURES: [(&str, &str); 11] = [
    ("memory64", "memory64"),
    ("shared memor", "threads"),
    ("threads", "threads"),
    ("multiple memories", "multi-memory"),
    ("relaxed simd", "relaxed SIMD"),
    ("wide arithmetic", "wide arithmetic"),
    ("gc feature", "GC"),
    ("exception", "exceptions"),
    ("custom page", "custom page sizes"),
    ("stack switching", "stack switching"),
    ("async", "component-model async (WASI 0.3)"),
];

/// A compile error, with the refused feature named when that is its cause.
fn with_feature_hint(error: String) -> String {
    let lower = error.to_ascii_lowercase();
    let refused = [
        "not enabled",
        "must be enabled",
        "without the",
        "requires the",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
        || lower.contains("multiple memories");
    if !refused {
        return error;
    }
    let feature = REFUSED_FEATURES
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map_or("a WebAssembly feature", |(_, name)| name);
    format!("{error}: this host refuses {feature} (the README's \"Engine features\" lists what routes may use)")
}

/// Content hash of the component plus everything about the engine that
/// makes compiled code compatible.
fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    struct Sha(Sha256);
    impl std::hash::Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hasher.0.update(bytes);
    hasher
        .0
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache of the user running the host and its builds: `EDGEHOST_CACHE_DIR`,
/// else `$XDG_CACHE_HOME/edgehost`, else `~/.cache/edgehost`.
pub(crate) fn user_cache() -> Option<PathBuf> {
    let from = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    from("EDGEHOST_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| from("XDG_CACHE_HOME").map(|dir| PathBuf::from(dir).join("edgehost")))
        .or_else(|| from("HOME").map(|home| PathBuf::from(home).join(".cache/edgehost")))
}

/// Where `edgehost build` leaves code it compiled ahead for the hosts of
/// the same user. Loading it is as safe as loading the host's own cache:
/// only that user can write there.
pub(crate) fn shared_dir() -> Option<PathBuf> {
    user_cache().map(|dir| dir.join("compiled"))
}

/// Compiles the component in `file` into the shared cache ahead of any
/// host, with the engine a host with default settings has; whether it
/// was there already.
pub(crate) fn precompile(file: &Path) -> Result<bool, String> {
    let dir = shared_dir().ok_or("no cache folder: set EDGEHOST_CACHE_DIR or HOME")?;
    let bytes = read_component(file)?;
    let settings = super::EngineSettings {
        max_memory: crate::manifest::Limits::default().memory,
        cache_dir: None,
        max_instances: 1,
        clock_resolution: Duration::from_millis(1),
        compile_timeout: Duration::from_secs(600),
    };
    // The functions of the JavaScript engine in every TypeScript app are
    // the same from build to build: Cranelift takes them from this cache.
    let functions = user_cache()
        .map(|cache| cache.join("functions.redb"))
        .and_then(
            |file| match FunctionCache::open_bounded(&file, MAX_FUNCTION_CACHE) {
                Ok(functions) => Some(Arc::new(functions)),
                Err(err) => {
                    tracing::warn!("compiling without the function cache: {err}");
                    None
                }
            },
        );
    let engine = super::engine::engine_with(
        &settings,
        functions
            .clone()
            .map(|functions| functions as Arc<dyn wasmtime::CacheStore>),
    )
    .map_err(|err| format!("{err:#}"))?;
    let compiled = compile_cached(&engine, Some(&dir), &bytes, settings.compile_timeout)?;
    // Each build of an app adds an entry a host copies into its own cache:
    // keep the few used last (an entry built again counts as used now).
    if let (true, Some(entry)) = (compiled.cached, &compiled.entry) {
        let touched = std::fs::File::options()
            .write(true)
            .open(entry)
            .and_then(|file| file.set_modified(std::time::SystemTime::now()));
        if let Err(err) = touched {
            tracing::warn!("cannot mark {} as used: {err}", entry.display());
        }
    }
    prune_oldest(&dir, KEEP_AHEAD);
    if let Some(functions) = functions {
        if let Err(err) = functions.flush() {
            tracing::warn!("{err}");
        }
    }
    Ok(compiled.cached)
}

/// How many components compiled ahead the shared folder keeps.
const KEEP_AHEAD: usize = 16;

/// The size past which the function cache starts over.
const MAX_FUNCTION_CACHE: u64 = 1 << 30;

/// Removes all but the `keep` entries of `dir` modified last.
fn prune_oldest(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "cwasm"))
        .filter_map(|entry| Some((entry.metadata().ok()?.modified().ok()?, entry.path())))
        .collect();
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    for (_, path) in entries.into_iter().skip(keep) {
        let _ = std::fs::remove_file(path);
    }
}

/// Copies the entry `from` to `to` in `dir` atomically.
fn copy_entry(dir: &Path, from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let temporary = to.with_extension(format!("tmp{}", std::process::id()));
    std::fs::copy(from, &temporary)?;
    std::fs::rename(&temporary, to)
}

/// Writes a compiled component atomically (temporary file, then rename), so
/// a crash never leaves a truncated entry behind.
fn write_cache_entry(dir: &Path, path: &Path, component: &Component) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|err| err.to_string())?;
    let bytes = component.serialize().map_err(|err| format!("{err:#}"))?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes).map_err(|err| err.to_string())?;
    std::fs::rename(&temporary, path).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_entries_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::SystemTime::now() - Duration::from_secs(100);
        for i in 0..5u64 {
            let path = dir.path().join(format!("{i}.cwasm"));
            std::fs::write(&path, b"x").unwrap();
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(start + Duration::from_secs(i)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), b"kept").unwrap();
        prune_oldest(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["3.cwasm", "4.cwasm", "notes.txt"]);
    }
}
