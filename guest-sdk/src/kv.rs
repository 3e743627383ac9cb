//! Key-value stores the manifest grants the route (`kv = ["posts"]`).
//!
//! Values are bytes; [`Store::get_json`] and [`Store::set_json`] store JSON.
//! A store the route was not granted cannot be opened. Counters
//! ([`Store::increment`]) and [`Store::compare_and_swap`] are atomic, also
//! across hosts sharing a store; the `_many` calls take one round trip to a
//! network store.
//!
//! A store that cannot be reached (its Redis or PostgreSQL server is down)
//! fails with [`Error::unavailable`]: `?` answers 503 with `Retry-After`.
//!
//! ```no_run
//! use guest_sdk::kv::Store;
//!
//! # fn run() -> Result<(), guest_sdk::Error> {
//! let posts = Store::open("posts")?;
//! posts.set_json("1", &serde_json::json!({ "title": "Hello" }))?;
//! let post: Option<serde_json::Value> = posts.get_json("1")?;
//! # Ok(()) }
//! ```

use crate::bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use crate::Error;
use serde::de::DeserializeOwned;

/// Keys the host takes in one batch call; larger batches go in several.
const BATCH: usize = 100;
use serde::Serialize;

/// An open key-value store.
pub struct Store {
    bucket: store::Bucket,
    name: String,
}

impl Store {
    /// Opens the store `name`. It fails (as a 500 error) when the manifest does
    /// not grant this route that store.
    ///
    /// ```no_run
    /// let posts = guest_sdk::kv::Store::open("posts")?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Store, Error> {
        let bucket = store::open(name).map_err(|err| kv_error(name, err))?;
        Ok(Store {
            bucket,
            name: name.to_string(),
        })
    }

    /// The value under `key`, or `None`.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// let raw: Option<Vec<u8>> = store.get("1")?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.bucket
            .get(key)
            .map_err(|err| kv_error(&self.name, err))
    }

    /// Sets `key` to `value`, replacing any value it had.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// store.set("greeting", b"hello")?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.bucket
            .set(key, value)
            .map_err(|err| kv_error(&self.name, err))
    }

    /// Removes `key`; removing a missing key is not an error.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// store.delete("greeting")?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn delete(&self, key: &str) -> Result<(), Error> {
        self.bucket
            .delete(key)
            .map_err(|err| kv_error(&self.name, err))
    }

    /// Whether `key` has a value.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// let known = store.exists("1")?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.bucket
            .exists(key)
            .map_err(|err| kv_error(&self.name, err))
    }

    /// Every key in the store, in order (byte order, on every backend).
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// for key in store.keys()? { println!("{key}"); }
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .bucket
                .list_keys(cursor.as_deref())
                .map_err(|err| kv_error(&self.name, err))?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Adds `delta` to the counter under `key` (a missing key counts as 0)
    /// and returns the new value; atomic, however many requests and hosts
    /// increment at once. Counters are stored as decimal text: a value that
    /// is not one is an error.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("counters")?;
    /// let views = store.increment("views:/api/posts", 1)?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        atomics::increment(&self.bucket, key, delta).map_err(|err| kv_error(&self.name, err))
    }

    /// Sets `key` to `value` if it still holds `expected` (`None`: no
    /// value), atomically; returns whether it did. Read, decide, then swap,
    /// trying again when another writer came first:
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// loop {
    ///     let current = store.get("title")?;
    ///     let longer = [current.as_deref().unwrap_or_default(), b"!"].concat();
    ///     if store.compare_and_swap("title", current.as_deref(), &longer)? {
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, Error> {
        let cas = atomics::Cas::new(&self.bucket, key).map_err(|err| kv_error(&self.name, err))?;
        let current = cas.current().map_err(|err| kv_error(&self.name, err))?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        match atomics::swap(cas, value) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(err)) => Err(kv_error(&self.name, err)),
        }
    }

    /// The values of `keys`, in their order (`None` for a key without one),
    /// a call per 100 keys.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// let values = store.get_many(&["1", "2"])?;
    /// assert_eq!(values.len(), 2);
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let mut values = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let owned: Vec<String> = chunk.iter().map(|key| key.to_string()).collect();
            let found =
                batch::get_many(&self.bucket, &owned).map_err(|err| kv_error(&self.name, err))?;
            // The host answers in the order asked, one entry per key.
            let mut page = vec![None; chunk.len()];
            for (slot, pair) in page.iter_mut().zip(found) {
                *slot = pair.map(|(_, value)| value);
            }
            values.extend(page);
        }
        Ok(values)
    }

    /// [`Store::get_many`], each value deserialized from JSON into `T`.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// let keys = store.keys()?;
    /// let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    /// let posts: Vec<Option<serde_json::Value>> = store.get_many_json(&keys)?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn get_many_json<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<T>>, Error> {
        self.get_many(keys)?
            .into_iter()
            .zip(keys)
            .map(|(value, key)| value.map(|bytes| self.decode(key, &bytes)).transpose())
            .collect()
    }

    /// Sets every `(key, value)` pair, a call per 100 pairs (each call
    /// whole or not at all).
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// store.set_many(&[("a", b"1".as_slice()), ("b", b"2".as_slice())])?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn set_many(&self, entries: &[(&str, &[u8])]) -> Result<(), Error> {
        for chunk in entries.chunks(BATCH) {
            let owned: Vec<(String, Vec<u8>)> = chunk
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_vec()))
                .collect();
            batch::set_many(&self.bucket, &owned).map_err(|err| kv_error(&self.name, err))?;
        }
        Ok(())
    }

    /// Removes every key in `keys`, a call per 100 keys.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// store.delete_many(&["a", "b"])?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn delete_many(&self, keys: &[&str]) -> Result<(), Error> {
        for chunk in keys.chunks(BATCH) {
            let owned: Vec<String> = chunk.iter().map(|key| key.to_string()).collect();
            batch::delete_many(&self.bucket, &owned).map_err(|err| kv_error(&self.name, err))?;
        }
        Ok(())
    }

    /// The JSON value under `key` deserialized into `T`, or `None`.
    /// A stored value that does not deserialize is a 500 error.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// let post: Option<serde_json::Value> = store.get_json("1")?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get(key)?
            .map(|bytes| self.decode(key, &bytes))
            .transpose()
    }

    /// A stored JSON value as `T`; one that does not deserialize is a 500.
    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|err| {
            Error::internal(format!(
                "value of `{key}` in store `{}` is not the expected JSON: {err}",
                self.name
            ))
        })
    }

    /// Stores `value` as JSON under `key`.
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// store.set_json("1", &serde_json::json!({ "title": "Hello" }))?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|err| Error::internal(format!("could not serialize `{key}`: {err}")))?;
        self.set(key, &bytes)
    }
}

/// The host's `unavailable: ...` (the store cannot be reached) is a 503
/// to retry; anything else is a 500.
fn kv_error(name: &str, err: store::Error) -> Error {
    let reason = match err {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied (is it in the route's `kv` list?)".to_string(),
        store::Error::Other(other) => other,
    };
    if reason.starts_with("unavailable:") {
        Error::unavailable(format!(
            "key-value store `{name}` is unavailable; try again shortly"
        ))
    } else {
        Error::internal(format!("key-value store `{name}`: {reason}"))
    }
}
