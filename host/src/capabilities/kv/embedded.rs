//! The embedded backend: every store in one `redb` file in the data dir, one
//! table per store, so data survives a restart and needs nothing installed.
//! Reads see a snapshot and never wait for a writer, so they run in place
//! (a read of the file, usually from the page cache: a page of keys or a
//! batch of at most 100 values); writes (a commit waits on the disk) run on
//! the blocking pool.
//!
//! Each store holds at most its `max_size` bytes of keys and values: a
//! write that would grow it past that is refused and changes nothing, while
//! one that shrinks it always passes. Every write transaction keeps the
//! store's total in a table of its own, so checking costs one lookup.

use super::{add_to_counter, parse_counter, KvBackend, KvError, Swap};
use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition, TableError};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

/// The most bytes of keys and values one embedded store holds unless its
/// `[kv.NAME] max_size` says otherwise.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// The embedded default backend.
pub struct DiskKv {
    db: Arc<redb::Database>,
    /// The `max_size` of each store that has one; others have the default.
    max_sizes: Arc<BTreeMap<String, u64>>,
}

fn table(store: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(store)
}

/// Bytes of keys and values per store. Store names are letters, digits,
/// `_` and `-`, so no store's table can have this name.
const USAGE: TableDefinition<'static, &'static str, u64> = TableDefinition::new("edgehost:usage");

/// What one entry counts against its store's `max_size`.
fn entry_size(key: &str, value_len: usize) -> i64 {
    i64::try_from(key.len() + value_len).unwrap_or(i64::MAX)
}

/// A store's table within one write, counting how much the write grows it.
struct Writing<'txn> {
    table: redb::Table<'txn, &'static str, &'static [u8]>,
    grown: i64,
}

impl Writing<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        value_of(&self.table, key)
    }

    fn insert(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let old = self.table.insert(key, value).map_err(failed)?;
        let old = old.map_or(0, |old| entry_size(key, old.value().len()));
        self.grown = self
            .grown
            .saturating_add(entry_size(key, value.len()) - old);
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), KvError> {
        if let Some(old) = self.table.remove(key).map_err(failed)? {
            self.grown = self
                .grown
                .saturating_sub(entry_size(key, old.value().len()));
        }
        Ok(())
    }
}

/// The bytes `table` holds, counted entry by entry (once per store: then
/// the usage table keeps the total).
fn measure(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<i64, KvError> {
    let mut total = 0i64;
    for entry in table.iter().map_err(failed)? {
        let (key, value) = entry.map_err(failed)?;
        total = total.saturating_add(entry_size(key.value(), value.value().len()));
    }
    Ok(total)
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
        Ok(DiskKv {
            db: Arc::new(db),
            max_sizes: Arc::default(),
        })
    }

    /// Bounds the stores `max_sizes` names at their sizes; the others stay
    /// at [`DEFAULT_MAX_SIZE`].
    pub fn with_max_sizes(mut self, max_sizes: BTreeMap<String, u64>) -> DiskKv {
        self.max_sizes = Arc::new(max_sizes);
        self
    }

    fn max_size(&self, store: &str) -> u64 {
        self.max_sizes
            .get(store)
            .copied()
            .unwrap_or(DEFAULT_MAX_SIZE)
    }

    /// Runs a write transaction on the blocking pool: a commit waits for
    /// the disk, and an async worker waiting with it would stall every other
    /// request on that worker (and, with writers queued on the one write
    /// lock, all of them).
    async fn write<T: Send + 'static>(
        &self,
        store: &str,
        work: impl FnOnce(&mut Writing<'_>) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let db = Arc::clone(&self.db);
        let store = store.to_string();
        let max = i64::try_from(self.max_size(&store)).unwrap_or(i64::MAX);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(failed)?;
            let (result, grown, size) = {
                let mut writing = Writing {
                    table: txn.open_table(table(&store)).map_err(failed)?,
                    grown: 0,
                };
                let result = work(&mut writing)?;
                let mut usage = txn.open_table(USAGE).map_err(failed)?;
                let known = usage.get(store.as_str()).map_err(failed)?.map(|v| v.value());
                let size = match known {
                    Some(before) => i64::try_from(before)
                        .unwrap_or(i64::MAX)
                        .saturating_add(writing.grown),
                    // Data from before sizes were kept: counted once.
                    None => measure(&writing.table)?,
                };
                // A write that changed no size (an overwrite of the same
                // length, a delete of nothing) leaves the total as it is.
                if known.is_none() || writing.grown != 0 {
                    usage
                        .insert(store.as_str(), u64::try_from(size.max(0)).unwrap_or(0))
                        .map_err(failed)?;
                }
                (result, writing.grown, size)
            };
            if grown > 0 && size > max {
                txn.abort().map_err(failed)?;
                return Err(KvError::Refused(format!(
                    "the store `{store}` is full: this write would make it {size} bytes of keys and values, over its max_size of {max}; delete keys to make room"
                )));
            }
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
        self.write(store, move |t| t.insert(&key, &value)).await
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        let key = key.to_string();
        self.write(store, move |t| t.remove(&key)).await
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
            let current = match t.get(&key)? {
                Some(value) => parse_counter(&key, &value)?,
                None => 0,
            };
            let new = add_to_counter(&key, current, delta)?;
            t.insert(&key, new.to_string().as_bytes())?;
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
            let current = t.get(&key)?;
            if current != expected {
                return Ok(Swap::Changed(current));
            }
            t.insert(&key, &value)?;
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
                t.insert(key, value)?;
            }
            Ok(())
        })
        .await
    }

    async fn delete_many(&self, store: &str, keys: &[String]) -> Result<(), KvError> {
        let keys = keys.to_vec();
        self.write(store, move |t| {
            for key in &keys {
                t.remove(key)?;
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

    /// A store at its max_size refuses writes that grow it, whole (a batch
    /// changes nothing), and takes those that shrink it; its size survives
    /// a restart and is counted for data written before sizes were kept.
    #[test]
    fn a_full_store_refuses_growth_and_takes_shrinking() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bounded = |max: u64| {
            DiskKv::open(dir.path())
                .unwrap()
                .with_max_sizes(BTreeMap::from([("small".to_string(), max)]))
        };
        runtime.block_on(async {
            {
                let kv = bounded(100);
                // 2 + 40 bytes, twice: 84 of 100.
                kv.set("small", "k1", &[b'a'; 40]).await.unwrap();
                kv.set("small", "k2", &[b'a'; 40]).await.unwrap();
                let full = kv.set("small", "k3", &[b'a'; 40]).await.unwrap_err();
                assert!(
                    matches!(&full, KvError::Refused(m) if m.contains("`small` is full") && m.contains("max_size of 100")),
                    "{full:?}"
                );
                assert!(!kv.exists("small", "k3").await.unwrap());
                let batch = vec![
                    ("k4".to_string(), vec![b'b'; 5]),
                    ("k5".to_string(), vec![b'b'; 20]),
                ];
                assert!(kv.set_many("small", &batch).await.is_err());
                assert!(
                    !kv.exists("small", "k4").await.unwrap(),
                    "a refused batch wrote nothing"
                );
                // Overwriting with a smaller value fits; so does one freed.
                kv.set("small", "k1", &[b'c'; 10]).await.unwrap();
                kv.set("small", "k3", &[b'a'; 10]).await.unwrap();
                // Other stores have the default.
                kv.set("other", "k", &[b'x'; 1000]).await.unwrap();
            }
            // Reopened with a smaller bound: over it, shrinking still works.
            let kv = bounded(50);
            assert!(kv.set("small", "k9", b"v").await.is_err());
            kv.delete("small", "k2").await.unwrap();
            kv.set("small", "k9", b"v").await.unwrap();
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
