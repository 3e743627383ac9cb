//! Cranelift's incremental cache on disk, for compiling a TypeScript app's
//! component ahead: its JavaScript engine's thousands of functions are the
//! same in every build (only the snapshot of the app's script differs), so
//! after the first build they are read back instead of compiled again.
//!
//! One redb file in the user's cache folder. Lookups read it; what the
//! compiler adds is kept in memory and written in one transaction when the
//! compile ends ([`FunctionCache::flush`]), not one per function.

use redb::{Database, TableDefinition};
use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

const FUNCTIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("functions");

/// Compiled functions by Cranelift's key.
pub(crate) struct FunctionCache {
    db: Database,
    added: Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl FunctionCache {
    /// Opens (or creates) the cache in `file`. Fails when another process
    /// holds it: that compile then goes without.
    pub(crate) fn open(file: &Path) -> Result<FunctionCache, String> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
        }
        let db = Database::create(file)
            .map_err(|err| format!("cannot open {}: {err}", file.display()))?;
        Ok(FunctionCache {
            db,
            added: Mutex::new(Vec::new()),
        })
    }

    /// [`FunctionCache::open`], starting over when the file has grown past
    /// `max_bytes` (each new engine build adds its functions).
    pub(crate) fn open_bounded(file: &Path, max_bytes: u64) -> Result<FunctionCache, String> {
        if std::fs::metadata(file).is_ok_and(|meta| meta.len() > max_bytes) {
            std::fs::remove_file(file)
                .map_err(|err| format!("cannot remove {}: {err}", file.display()))?;
        }
        FunctionCache::open(file)
    }

    /// Writes what the compiler added since the last flush; how many.
    pub(crate) fn flush(&self) -> Result<usize, String> {
        let added = std::mem::take(&mut *self.added.lock().map_err(|_| "poisoned")?);
        if added.is_empty() {
            return Ok(0);
        }
        let write = || -> Result<(), Box<redb::Error>> {
            let txn = self.db.begin_write().map_err(redb::Error::from)?;
            {
                let mut table = txn.open_table(FUNCTIONS).map_err(redb::Error::from)?;
                for (key, value) in &added {
                    table
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(redb::Error::from)?;
                }
            }
            txn.commit().map_err(redb::Error::from)?;
            Ok(())
        };
        write().map_err(|err| format!("cannot write the function cache: {err}"))?;
        Ok(added.len())
    }

    /// The entry for `key`; none when it cannot be read.
    fn lookup(&self, key: &[u8]) -> Option<Vec<u8>> {
        let txn = self.db.begin_read().ok()?;
        let table = txn.open_table(FUNCTIONS).ok()?;
        let value = table.get(key).ok()??;
        Some(value.value().to_vec())
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        // An entry that does not decode is compiled again by Cranelift.
        self.lookup(key).map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        match self.added.lock() {
            Ok(mut added) => {
                added.push((key.to_vec(), value));
                true
            }
            Err(_) => false,
        }
    }
}

impl std::fmt::Debug for FunctionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FunctionCache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    #[test]
    fn what_the_compiler_adds_is_read_back_after_a_flush_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("functions.redb");
        let cache = FunctionCache::open(&file).unwrap();
        assert_eq!(cache.get(b"key"), None);
        assert!(cache.insert(b"key", b"compiled".to_vec()));
        assert_eq!(cache.flush().unwrap(), 1);
        assert_eq!(cache.flush().unwrap(), 0, "nothing new");
        assert_eq!(cache.get(b"key").as_deref(), Some(&b"compiled"[..]));
        // Held by one process at a time: a second open is refused.
        assert!(FunctionCache::open(&file).is_err());
        drop(cache);
        let again = FunctionCache::open(&file).unwrap();
        assert_eq!(again.get(b"key").as_deref(), Some(&b"compiled"[..]));
        assert_eq!(again.get(b"other"), None);
    }
}
