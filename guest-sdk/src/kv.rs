//! Key-value stores the manifest grants the route (`kv = ["posts"]`).
//!
//! Values are bytes; [`Store::get_json`] and [`Store::set_json`] store JSON.
//! A store the route was not granted cannot be opened.
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

use crate::bindings::wasi::keyvalue::store;
use crate::Error;
use serde::de::DeserializeOwned;
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

    /// Every key in the store, in the store's order (sorted for the host's
    /// built-in store).
    ///
    /// ```no_run
    /// # let store = guest_sdk::kv::Store::open("posts")?;
    /// for key in store.keys()? { println!("{key}"); }
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .bucket
                .list_keys(cursor)
                .map_err(|err| kv_error(&self.name, err))?;
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(keys),
            }
        }
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
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
                Error::internal(format!(
                    "value of `{key}` in store `{}` is not the expected JSON: {err}",
                    self.name
                ))
            }),
        }
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

fn kv_error(name: &str, err: store::Error) -> Error {
    let reason = match err {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied (is it in the route's `kv` list?)".to_string(),
        store::Error::Other(other) => other,
    };
    Error::internal(format!("key-value store `{name}`: {reason}"))
}
