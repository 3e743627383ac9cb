//! Uploaded components, one file per SHA-256 in `<data_dir>/components`: a
//! component uploaded once is never sent again, and a deploy names its
//! components by hash.

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The folder of uploaded components.
#[derive(Debug, Clone)]
pub(crate) struct ComponentStore {
    dir: PathBuf,
}

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("the body's SHA-256 is {actual}, not {named}")]
    WrongHash { actual: String, named: String },
    #[error("cannot store the component: {0}")]
    Io(#[from] std::io::Error),
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `text` names a component: 64 lower-case hex digits.
pub(crate) fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The SHA-256 of `bytes`, as components are named.
pub(crate) fn hash_of(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl ComponentStore {
    pub(crate) fn new(dir: PathBuf) -> ComponentStore {
        ComponentStore { dir }
    }

    pub(crate) fn dir(&self) -> &PathBuf {
        &self.dir
    }

    /// Where the component named `hash` is (or would be) stored.
    pub(crate) fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.wasm"))
    }

    /// The stored file for `hash`, if `hash` is a hash and the file is there.
    pub(crate) fn find(&self, hash: &str) -> Option<PathBuf> {
        let path = self.path(hash);
        (is_hash(hash) && path.is_file()).then_some(path)
    }

    /// Whether the store has `hash`. A client that finds it will deploy with
    /// it: it counts as freshly uploaded, so garbage collection leaves it
    /// alone for its grace period.
    pub(crate) fn has(&self, hash: &str) -> bool {
        let Some(file) = self.find(hash) else {
            return false;
        };
        let touched = std::fs::File::options()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(err) = touched {
            tracing::warn!("could not touch {}: {err}", file.display());
        }
        true
    }

    /// Stores `body` as the component named `hash` after checking that it is
    /// its hash. Blocking: call it off the async workers.
    pub(crate) fn store(&self, hash: &str, body: &[u8]) -> Result<(), UploadError> {
        let actual = hash_of(body);
        if actual != hash {
            return Err(UploadError::WrongHash {
                actual,
                named: hash.to_string(),
            });
        }
        let path = self.path(hash);
        if path.is_file() {
            // Same name, same bytes: already stored.
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        // A name of its own per upload: two uploads of one component at
        // once never write the same temporary file.
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let n = UPLOADS.fetch_add(1, Ordering::Relaxed);
        let temporary = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&temporary, body)?;
        std::fs::rename(&temporary, &path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_is_stored_under_its_hash_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = ComponentStore::new(dir.path().join("components"));
        let body = b"\0asm component";
        let hash = hash_of(body);
        assert!(!store.has(&hash));
        let wrong = store.store(&"0".repeat(64), body).unwrap_err();
        assert!(wrong.to_string().contains(&hash), "{wrong}");
        store.store(&hash, body).unwrap();
        assert!(store.has(&hash));
        assert_eq!(std::fs::read(store.path(&hash)).unwrap(), body);
        assert_eq!(store.find("../x"), None, "only hashes name components");
    }
}
