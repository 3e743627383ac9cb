//! `wasi:keyvalue/store`: named key-value stores, granted per route.
//!
//! A route opens only the stores its manifest entry lists (`kv = ["posts"]`);
//! any other name is `access-denied`. The data lives behind [`KvBackend`];
//! the embedded default, [`DiskKv`], keeps every store in one `redb` file so
//! data survives a restart. Another backend (a shared store for replicas)
//! plugs in behind the same trait without any route changing.

use crate::wit::bindings::wasi::keyvalue::store::{self, KeyResponse};
use crate::wit::Bucket;
use redb::{ReadableTable, TableDefinition, TableError};
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{HasData, Resource, ResourceTable};

/// Keys returned by one `list-keys` page.
const KEYS_PER_PAGE: usize = 1000;

/// A store operation that failed inside the backend.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KvError(String);

/// Where key-value data lives. Implementations must be safe to call from
/// many requests at once.
pub trait KvBackend: Send + Sync {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    fn delete(&self, store: &str, key: &str) -> Result<(), KvError>;
    fn exists(&self, store: &str, key: &str) -> Result<bool, KvError>;
    /// Up to `limit` keys in order, starting after the first `skip`; and
    /// whether more follow.
    fn list_keys(
        &self,
        store: &str,
        skip: u64,
        limit: usize,
    ) -> Result<(Vec<String>, bool), KvError>;
}

/// The embedded default backend: one `redb` database file, one table per store.
pub struct DiskKv {
    db: redb::Database,
}

impl DiskKv {
    /// Opens (or creates) the database in `dir`. Fails if another host
    /// process already has it open.
    pub fn open(dir: &Path) -> Result<DiskKv, KvError> {
        std::fs::create_dir_all(dir)
            .map_err(|err| KvError(format!("cannot create {}: {err}", dir.display())))?;
        let file = dir.join("kv.redb");
        let db = redb::Database::create(&file)
            .map_err(|err| KvError(format!("cannot open {}: {err}", file.display())))?;
        Ok(DiskKv { db })
    }
}

fn table(store: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(store)
}

fn backend_error(err: impl std::fmt::Display) -> KvError {
    KvError(err.to_string())
}

impl KvBackend for DiskKv {
    fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let txn = self.db.begin_read().map_err(backend_error)?;
        match txn.open_table(table(store)) {
            Ok(t) => Ok(t
                .get(key)
                .map_err(backend_error)?
                .map(|value| value.value().to_vec())),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(err) => Err(backend_error(err)),
        }
    }

    fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let txn = self.db.begin_write().map_err(backend_error)?;
        {
            let mut t = txn.open_table(table(store)).map_err(backend_error)?;
            t.insert(key, value).map_err(backend_error)?;
        }
        txn.commit().map_err(backend_error)
    }

    fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        let txn = self.db.begin_write().map_err(backend_error)?;
        {
            let mut t = txn.open_table(table(store)).map_err(backend_error)?;
            t.remove(key).map_err(backend_error)?;
        }
        txn.commit().map_err(backend_error)
    }

    fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.get(store, key)?.is_some())
    }

    fn list_keys(
        &self,
        store: &str,
        skip: u64,
        limit: usize,
    ) -> Result<(Vec<String>, bool), KvError> {
        let txn = self.db.begin_read().map_err(backend_error)?;
        let t = match txn.open_table(table(store)) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), false)),
            Err(err) => return Err(backend_error(err)),
        };
        let mut keys = Vec::new();
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let mut entries = t.iter().map_err(backend_error)?.skip(skip);
        for entry in entries.by_ref().take(limit) {
            let (key, _) = entry.map_err(backend_error)?;
            keys.push(key.value().to_string());
        }
        let more = entries.next().is_some();
        Ok((keys, more))
    }
}

/// A backend for commands that load routes without serving them (`check`,
/// `routes`): it never touches the data, so it can run beside a live host.
pub(crate) struct NoKv;

impl NoKv {
    fn unavailable<T>() -> Result<T, KvError> {
        Err(KvError(
            "key-value stores are not open in this command".into(),
        ))
    }
}

impl KvBackend for NoKv {
    fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, KvError> {
        NoKv::unavailable()
    }
    fn set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), KvError> {
        NoKv::unavailable()
    }
    fn delete(&self, _: &str, _: &str) -> Result<(), KvError> {
        NoKv::unavailable()
    }
    fn exists(&self, _: &str, _: &str) -> Result<bool, KvError> {
        NoKv::unavailable()
    }
    fn list_keys(&self, _: &str, _: u64, _: usize) -> Result<(Vec<String>, bool), KvError> {
        NoKv::unavailable()
    }
}

/// What one request may do with key-value stores.
#[derive(Clone)]
pub(crate) struct KvAccess {
    pub(crate) backend: Arc<dyn KvBackend>,
    /// The stores the route's manifest entry grants.
    pub(crate) granted: Arc<[String]>,
}

fn other(err: impl std::fmt::Display) -> store::Error {
    store::Error::Other(err.to_string())
}

/// What the key-value import works on in one request: its grants and the
/// request's resource table, where the buckets it opened live.
pub(crate) struct KvView<'a> {
    table: &'a mut ResourceTable,
    access: &'a KvAccess,
}

impl<'a> KvView<'a> {
    pub(crate) fn new(table: &'a mut ResourceTable, access: &'a KvAccess) -> Self {
        KvView { table, access }
    }

    fn bucket(&self, bucket: &Resource<Bucket>) -> Result<&str, store::Error> {
        self.table
            .get(bucket)
            .map(|b| b.name.as_str())
            .map_err(other)
    }
}

/// Links the key-value import to a [`KvView`] of the store's state.
pub(crate) struct KvData;

impl HasData for KvData {
    type Data<'a> = KvView<'a>;
}

impl store::Host for KvView<'_> {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        if !self.access.granted.contains(&identifier) {
            return Err(store::Error::AccessDenied);
        }
        self.table.push(Bucket { name: identifier }).map_err(other)
    }
}

/// Runs a backend call that writes on the blocking pool: a commit waits for
/// the disk, and an async worker waiting with it would stall every other
/// request on that worker (and, with writers queued on the store's one write
/// lock, all of them).
async fn write(
    backend: Arc<dyn KvBackend>,
    call: impl FnOnce(&dyn KvBackend) -> Result<(), KvError> + Send + 'static,
) -> Result<(), store::Error> {
    tokio::task::spawn_blocking(move || call(&*backend))
        .await
        .map_err(other)?
        .map_err(other)
}

impl store::HostBucket for KvView<'_> {
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        // Reads see a snapshot and never wait for a writer: no need to leave
        // the worker.
        let name = self.bucket(&bucket)?;
        self.access.backend.get(name, &key).map_err(other)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let name = self.bucket(&bucket)?.to_owned();
        let backend = Arc::clone(&self.access.backend);
        write(backend, move |backend| backend.set(&name, &key, &value)).await
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        let name = self.bucket(&bucket)?.to_owned();
        let backend = Arc::clone(&self.access.backend);
        write(backend, move |backend| backend.delete(&name, &key)).await
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        let name = self.bucket(&bucket)?;
        self.access.backend.exists(name, &key).map_err(other)
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<KeyResponse, store::Error> {
        let name = self.bucket(&bucket)?;
        let skip = cursor.unwrap_or(0);
        let (keys, more) = self
            .access
            .backend
            .list_keys(name, skip, KEYS_PER_PAGE)
            .map_err(other)?;
        let cursor = more.then(|| skip + keys.len() as u64);
        Ok(KeyResponse { keys, cursor })
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_store_persists_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = DiskKv::open(dir.path()).unwrap();
            assert_eq!(kv.get("posts", "a").unwrap(), None);
            for i in 0..5 {
                kv.set("posts", &format!("k{i}"), b"v").unwrap();
            }
            kv.set("other", "k0", b"x").unwrap();
            kv.delete("posts", "k4").unwrap();
            kv.delete("posts", "missing").unwrap();
        }
        let kv = DiskKv::open(dir.path()).unwrap();
        assert_eq!(kv.get("posts", "k0").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(!kv.exists("posts", "k4").unwrap());
        assert_eq!(kv.get("other", "k0").unwrap().as_deref(), Some(&b"x"[..]));
        let (first, more) = kv.list_keys("posts", 0, 3).unwrap();
        assert_eq!(
            (first, more),
            (vec!["k0".into(), "k1".into(), "k2".into()], true)
        );
        let (rest, more) = kv.list_keys("posts", 3, 3).unwrap();
        assert_eq!((rest, more), (vec!["k3".into()], false));
        assert_eq!(kv.list_keys("empty", 0, 3).unwrap(), (vec![], false));
    }

    #[test]
    fn a_second_process_cannot_open_the_same_data() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DiskKv::open(dir.path()).unwrap();
        let second = DiskKv::open(dir.path());
        assert!(second.is_err());
    }
}
