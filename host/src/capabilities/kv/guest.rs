//! The `wasi:keyvalue` interfaces a guest imports: `store`, `atomics` and
//! `batch` of 0.2.0-draft2 (what the SDK and Spin's components use), and
//! the first draft's `store` (components built with an earlier SDK).
//!
//! A route opens only the stores its manifest entry lists; any other name
//! is `access-denied`. A failure reaches the guest as `other(...)`:
//! `unavailable: ...` when the store cannot be reached (the SDK answers
//! 503), `refused: ...` for a key or value over its limit.

use super::stores::{KvAccess, StoreHandle};
use super::Swap;
use crate::metrics::KvOp;
use crate::wit::bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use crate::wit::earlier::wasi::keyvalue0_2_0_draft::store as earlier;
use crate::wit::{Bucket, Cas};
use wasmtime::component::{HasData, Resource, ResourceTable};

/// Keys returned by one `list-keys` page.
pub(crate) const KEYS_PER_PAGE: usize = 1000;

/// What the key-value imports work on in one request: its grants and the
/// request's resource table, where the buckets it opened live.
pub(crate) struct KvView<'a> {
    table: &'a mut ResourceTable,
    access: &'a KvAccess,
}

/// Links the key-value imports to a [`KvView`] of the store's state.
pub(crate) struct KvData;

impl HasData for KvData {
    type Data<'a> = KvView<'a>;
}

/// An error as the guest sees it: `other("unavailable: ...")` and the like.
fn other(err: impl std::fmt::Display) -> store::Error {
    store::Error::Other(err.to_string())
}

impl<'a> KvView<'a> {
    pub(crate) fn new(table: &'a mut ResourceTable, access: &'a KvAccess) -> Self {
        KvView { table, access }
    }

    /// Opens the store `name` if the route is granted it.
    fn open(&mut self, name: String) -> Result<Resource<Bucket>, store::Error> {
        if self.access.store(&name).is_none() {
            return Err(store::Error::AccessDenied);
        }
        self.table.push(Bucket { name }).map_err(other)
    }

    /// The store a bucket the guest holds is, with the route's access.
    fn store(
        &self,
        bucket: &Resource<Bucket>,
    ) -> Result<(&'a KvAccess, &'a StoreHandle), store::Error> {
        let access: &'a KvAccess = self.access;
        let name = &self.table.get(bucket).map_err(other)?.name;
        let store = access.store(name).ok_or(store::Error::AccessDenied)?;
        Ok((access, store))
    }

    fn drop_bucket(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

pub(crate) async fn get(
    access: &KvAccess,
    store: &StoreHandle,
    key: String,
) -> Result<Option<Vec<u8>>, store::Error> {
    access.check_key(&key).map_err(other)?;
    let call = store.backend.get(&store.name, &key);
    access.run(store, KvOp::Get, call).await.map_err(other)
}

pub(crate) async fn set(
    access: &KvAccess,
    store: &StoreHandle,
    key: String,
    value: Vec<u8>,
) -> Result<(), store::Error> {
    access.check_value(&key, &value).map_err(other)?;
    let call = store.backend.set(&store.name, &key, &value);
    access.run(store, KvOp::Set, call).await.map_err(other)
}

pub(crate) async fn delete(
    access: &KvAccess,
    store: &StoreHandle,
    key: String,
) -> Result<(), store::Error> {
    access.check_key(&key).map_err(other)?;
    let call = store.backend.delete(&store.name, &key);
    access.run(store, KvOp::Delete, call).await.map_err(other)
}

pub(crate) async fn exists(
    access: &KvAccess,
    store: &StoreHandle,
    key: String,
) -> Result<bool, store::Error> {
    access.check_key(&key).map_err(other)?;
    let call = store.backend.exists(&store.name, &key);
    access.run(store, KvOp::Exists, call).await.map_err(other)
}

/// One page of keys after `after`, and whether more follow.
pub(crate) async fn page(
    access: &KvAccess,
    store: &StoreHandle,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<String>, bool), store::Error> {
    let call = store.backend.list_keys(&store.name, after, limit);
    access.run(store, KvOp::ListKeys, call).await.map_err(other)
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        KvView::open(self, identifier)
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        let (access, store) = self.store(&bucket)?;
        get(access, store, key).await
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        let (access, store) = self.store(&bucket)?;
        set(access, store, key, value).await
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        let (access, store) = self.store(&bucket)?;
        delete(access, store, key).await
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<bool, store::Error> {
        let (access, store) = self.store(&bucket)?;
        exists(access, store, key).await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse, store::Error> {
        // The cursor is the last key of the page before: keys written or
        // deleted meanwhile never shift a page.
        let (access, store) = self.store(&bucket)?;
        let (keys, more) = page(access, store, cursor.as_deref(), KEYS_PER_PAGE).await?;
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.drop_bucket(bucket)
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<i64, store::Error> {
        let (access, store) = self.store(&bucket)?;
        access.check_key(&key).map_err(other)?;
        let call = store.backend.increment(&store.name, &key, delta);
        access
            .run(store, KvOp::Increment, call)
            .await
            .map_err(other)
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        let read = self
            .table
            .delete(cas)
            .map_err(|err| atomics::CasError::StoreError(other(err)))?;
        let access: &KvAccess = self.access;
        let store = access
            .store(&read.store)
            .ok_or(atomics::CasError::StoreError(store::Error::AccessDenied))?;
        access
            .check_value(&read.key, &value)
            .map_err(|err| atomics::CasError::StoreError(other(err)))?;
        let call =
            store
                .backend
                .compare_and_swap(&store.name, &read.key, read.current.as_deref(), &value);
        match access.run(store, KvOp::CompareAndSwap, call).await {
            Ok(Swap::Done) => Ok(()),
            Ok(Swap::Changed(current)) => {
                let again = Cas {
                    store: read.store,
                    key: read.key,
                    current,
                };
                let handle = self
                    .table
                    .push(again)
                    .map_err(|err| atomics::CasError::StoreError(other(err)))?;
                Err(atomics::CasError::CasFailed(handle))
            }
            Err(err) => Err(atomics::CasError::StoreError(other(err))),
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Resource<Cas>, store::Error> {
        let (access, store) = self.store(&bucket)?;
        let current = get(access, store, key.clone()).await?;
        let store = store.name.to_string();
        self.table
            .push(Cas {
                store,
                key,
                current,
            })
            .map_err(other)
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, store::Error> {
        Ok(self.table.get(&cas).map_err(other)?.current.clone())
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        let (access, store) = self.store(&bucket)?;
        access.check_batch(keys.len()).map_err(other)?;
        for key in &keys {
            access.check_key(key).map_err(other)?;
        }
        let call = store.backend.get_many(&store.name, &keys);
        let values = access
            .run(store, KvOp::GetMany, call)
            .await
            .map_err(other)?;
        Ok(keys
            .into_iter()
            .zip(values)
            .map(|(key, value)| value.map(|value| (key, value)))
            .collect())
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        let (access, store) = self.store(&bucket)?;
        access.check_batch(key_values.len()).map_err(other)?;
        for (key, value) in &key_values {
            access.check_value(key, value).map_err(other)?;
        }
        let call = store.backend.set_many(&store.name, &key_values);
        access.run(store, KvOp::SetMany, call).await.map_err(other)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        let (access, store) = self.store(&bucket)?;
        access.check_batch(keys.len()).map_err(other)?;
        for key in &keys {
            access.check_key(key).map_err(other)?;
        }
        let call = store.backend.delete_many(&store.name, &keys);
        access
            .run(store, KvOp::DeleteMany, call)
            .await
            .map_err(other)
    }
}

/// The first draft's errors are the same variants.
fn earlier_error(err: store::Error) -> earlier::Error {
    match err {
        store::Error::NoSuchStore => earlier::Error::NoSuchStore,
        store::Error::AccessDenied => earlier::Error::AccessDenied,
        store::Error::Other(reason) => earlier::Error::Other(reason),
    }
}

impl earlier::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, earlier::Error> {
        KvView::open(self, identifier).map_err(earlier_error)
    }
}

impl earlier::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, earlier::Error> {
        let (access, store) = self.store(&bucket).map_err(earlier_error)?;
        get(access, store, key).await.map_err(earlier_error)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), earlier::Error> {
        let (access, store) = self.store(&bucket).map_err(earlier_error)?;
        set(access, store, key, value).await.map_err(earlier_error)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<(), earlier::Error> {
        let (access, store) = self.store(&bucket).map_err(earlier_error)?;
        delete(access, store, key).await.map_err(earlier_error)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<bool, earlier::Error> {
        let (access, store) = self.store(&bucket).map_err(earlier_error)?;
        exists(access, store, key).await.map_err(earlier_error)
    }

    /// The first draft's cursor counts keys: its pages are found by paging
    /// from the start.
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<earlier::KeyResponse, earlier::Error> {
        let (access, store) = self.store(&bucket).map_err(earlier_error)?;
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let mut after: Option<String> = None;
        let mut left = skip;
        while left > 0 {
            let (keys, more) = page(access, store, after.as_deref(), left.min(KEYS_PER_PAGE))
                .await
                .map_err(earlier_error)?;
            left = left.saturating_sub(keys.len());
            after = keys.last().cloned().or(after);
            if !more {
                return Ok(earlier::KeyResponse {
                    keys: Vec::new(),
                    cursor: None,
                });
            }
        }
        let (keys, more) = page(access, store, after.as_deref(), KEYS_PER_PAGE)
            .await
            .map_err(earlier_error)?;
        let cursor = more.then(|| (skip + keys.len()) as u64);
        Ok(earlier::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.drop_bucket(bucket)
    }
}
