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

    /// Writes what the compiler added since the last flush; how many.
    pub(crate) fn flush(&self) -> Result<usize, String> {
        let added = std::mem::take(&mut *self.added.lock().map_err(|_| "poisoned")?);
        if added.is_empty() {
            return Ok(0);
        }
        let write = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            {
                let mut table = txn.open_table(FUNCTIONS)?;
                for (key, value) in &added {
                    table.insert(key.as_slice(), value.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(|err| format!("cannot write the function cache: {err}"))?;
        Ok(added.len())
    }

    fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(FUNCTIONS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        Ok(table.get(key)?.map(|value| value.value().to_vec()))
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        // An entry that does not decode is compiled again by Cranelift.
        self.lookup(key).ok().flatten().map(Cow::Owned)
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
