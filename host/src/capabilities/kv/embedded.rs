//! The embedded backend: every store in one `redb` file in the data dir, one
//! table per store, so data survives a restart and needs nothing installed.
//! Reads see a snapshot and never wait for a writer, so they run in place
//! (a read of the file, usually from the page cache: a page of keys or a
//! batch of at most 100 values); writes (a commit waits on the disk) run on
//! the blocking pool.

use super::{add_to_counter, parse_counter, KvBackend, KvError, Swap};
use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, TableError};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

/// The embedded default backend.
pub struct DiskKv {
    db: Arc<redb::Database>,
}

fn table(store: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(store)
}

fn failed(err: impl std::fmt::Display) -> KvError {
    KvError::Failed(err.to_string())
}

impl DiskKv {
    /// Opens (or creates) the database in `dir`. Fails if another host
    /// process already has it open.
    pub fn open(dir: &Path) -> Result<DiskKv, KvError> {
        std::fs::create_dir_all(dir)
            .map_err(|err| KvError::Failed(format!("cannot create {}: {err}", dir.display())))?;
        let file = dir.join("kv.redb");
        let db = redb::Database::create(&file)
            .map_err(|err| KvError::Failed(format!("cannot open {}: {err}", file.display())))?;
        Ok(DiskKv { db: Arc::new(db) })
    }

    /// Runs a write transaction on the blocking pool: a commit waits for
    /// the disk, and an async worker waiting with it would stall every other
    /// request on that worker (and, with writers queued on the one write
    /// lock, all of them).
    async fn write<T: Send + 'static>(
        &self,
        store: &str,
        work: impl FnOnce(&mut redb::Table<&'static str, &'static [u8]>) -> Result<T, KvError>
            + Send
            + 'static,
    ) -> Result<T, KvError> {
        let db = Arc::clone(&self.db);
        let store = store.to_string();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(failed)?;
            let result = {
                let mut t = txn.open_table(table(&store)).map_err(failed)?;
                work(&mut t)?
            };
            txn.commit().map_err(failed)?;
            Ok(result)
        })
        .await
        .map_err(failed)?
    }

    /// Runs `read` on a snapshot of `store`; `empty` when the store has no
    /// table yet.
    fn read<T>(
        &self,
        store: &str,
        empty: T,
        read: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let txn = self.db.begin_read().map_err(failed)?;
        match txn.open_table(table(store)) {
            Ok(t) => read(&t),
            Err(TableError::TableDoesNotExist(_)) => Ok(empty),
            Err(err) => Err(failed(err)),
        }
    }
}

fn value_of(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<Vec<u8>>, KvError> {
    Ok(t.get(key).map_err(failed)?.map(|v| v.value().to_vec()))
}

#[async_trait]
impl KvBackend for DiskKv {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.read(store, None, |t| value_of(t, key))
    }

    async fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let (key, value) = (key.to_string(), value.to_vec());
        self.write(store, move |t| {
            t.insert(key.as_str(), value.as_slice()).map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        let key = key.to_string();
        self.write(store, move |t| {
            t.remove(key.as_str()).map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        self.read(store, false, |t| Ok(t.get(key).map_err(failed)?.is_some()))
    }

    async fn list_keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), KvError> {
        self.read(store, (Vec::new(), false), |t| {
            let start = after.map_or(Bound::Unbounded, Bound::Excluded);
            let mut entries = t.range::<&str>((start, Bound::Unbounded)).map_err(failed)?;
            let mut keys = Vec::new();
            for entry in entries.by_ref().take(limit) {
                let (key, _) = entry.map_err(failed)?;
                keys.push(key.value().to_string());
            }
            Ok((keys, entries.next().is_some()))
        })
    }

    async fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let key = key.to_string();
        self.write(store, move |t| {
            let current = match value_of(t, &key)? {
                Some(value) => parse_counter(&key, &value)?,
                None => 0,
            };
            let new = add_to_counter(&key, current, delta)?;
            t.insert(key.as_str(), new.to_string().as_bytes())
                .map_err(failed)?;
            Ok(new)
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Swap, KvError> {
        let (key, expected, value) = (
            key.to_string(),
            expected.map(<[u8]>::to_vec),
            value.to_vec(),
        );
        self.write(store, move |t| {
            let current = value_of(t, &key)?;
            if current != expected {
                return Ok(Swap::Changed(current));
            }
            t.insert(key.as_str(), value.as_slice()).map_err(failed)?;
            Ok(Swap::Done)
        })
        .await
    }

    async fn get_many(
        &self,
        store: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        self.read(store, vec![None; keys.len()], |t| {
            keys.iter().map(|key| value_of(t, key)).collect()
        })
    }

    async fn set_many(&self, store: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let entries = entries.to_vec();
        self.write(store, move |t| {
            for (key, value) in &entries {
                t.insert(key.as_str(), value.as_slice()).map_err(failed)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_many(&self, store: &str, keys: &[String]) -> Result<(), KvError> {
        let keys = keys.to_vec();
        self.write(store, move |t| {
            for key in &keys {
                t.remove(key.as_str()).map_err(failed)?;
            }
            Ok(())
        })
        .await
    }
}

/// A backend for commands that load routes without serving them (`check`,
/// `routes`): it never touches the data, so it can run beside a live host.
pub(crate) struct NoKv;

fn not_open<T>() -> Result<T, KvError> {
    Err(KvError::Failed(
        "key-value stores are not open in this command".into(),
    ))
}

#[async_trait]
impl KvBackend for NoKv {
    fn kind(&self) -> &'static str {
        "none"
    }
    async fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, KvError> {
        not_open()
    }
    async fn set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), KvError> {
        not_open()
    }
    async fn delete(&self, _: &str, _: &str) -> Result<(), KvError> {
        not_open()
    }
    async fn exists(&self, _: &str, _: &str) -> Result<bool, KvError> {
        not_open()
    }
    async fn list_keys(
        &self,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<(Vec<String>, bool), KvError> {
        not_open()
    }
    async fn increment(&self, _: &str, _: &str, _: i64) -> Result<i64, KvError> {
        not_open()
    }
    async fn compare_and_swap(
        &self,
        _: &str,
        _: &str,
        _: Option<&[u8]>,
        _: &[u8],
    ) -> Result<Swap, KvError> {
        not_open()
    }
    async fn get_many(&self, _: &str, _: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        not_open()
    }
    async fn set_many(&self, _: &str, _: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        not_open()
    }
    async fn delete_many(&self, _: &str, _: &[String]) -> Result<(), KvError> {
        not_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_store_persists_and_pages() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        runtime.block_on(async {
            {
                let kv = DiskKv::open(dir.path()).unwrap();
                assert_eq!(kv.get("posts", "a").await.unwrap(), None);
                for i in 0..5 {
                    kv.set("posts", &format!("k{i}"), b"v").await.unwrap();
                }
                kv.set("other", "k0", b"x").await.unwrap();
                kv.delete("posts", "k4").await.unwrap();
                kv.delete("posts", "missing").await.unwrap();
            }
            let kv = DiskKv::open(dir.path()).unwrap();
            assert_eq!(
                kv.get("posts", "k0").await.unwrap().as_deref(),
                Some(&b"v"[..])
            );
            assert!(!kv.exists("posts", "k4").await.unwrap());
            assert_eq!(
                kv.get("other", "k0").await.unwrap().as_deref(),
                Some(&b"x"[..])
            );
            let (first, more) = kv.list_keys("posts", None, 3).await.unwrap();
            assert_eq!(
                (first, more),
                (vec!["k0".into(), "k1".into(), "k2".into()], true)
            );
            let (rest, more) = kv.list_keys("posts", Some("k2"), 3).await.unwrap();
            assert_eq!((rest, more), (vec!["k3".into()], false));
            assert_eq!(
                kv.list_keys("empty", None, 3).await.unwrap(),
                (vec![], false)
            );
        });
    }

    #[test]
    fn a_second_process_cannot_open_the_same_data() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DiskKv::open(dir.path()).unwrap();
        let second = DiskKv::open(dir.path());
        assert!(second.is_err());
    }

    /// A write waiting for the database's write lock (a slow commit) waits
    /// on the blocking pool: the one async worker keeps running other work.
    #[test]
    fn a_waiting_write_does_not_hold_the_async_worker() {
        let dir = tempfile::tempdir().unwrap();
        let kv = Arc::new(DiskKv::open(dir.path()).unwrap());
        let held = kv.db.begin_write().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let writer = Arc::clone(&kv);
            let write = tokio::spawn(async move { writer.set("posts", "k", b"v").await });
            // The worker is free: a timer fires while the write waits.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert!(!write.is_finished(), "the write waits for the lock");
            drop(held);
            write.await.unwrap().unwrap();
        });
        assert_eq!(
            runtime.block_on(kv.get("posts", "k")).unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
}
