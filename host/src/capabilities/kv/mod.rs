//! Key-value stores, granted per route (`kv = ["posts"]`).
//!
//! A store's data lives behind a [`KvBackend`]: the embedded default
//! ([`DiskKv`], a `redb` file in the data dir), Redis ([`RedisKv`]) or
//! PostgreSQL ([`PostgresKv`]), chosen per store by the manifest's
//! `[kv.NAME]` table when the host starts. Every backend gives the same
//! answers (one test suite runs against all three): keys listed in byte
//! order, a cursor that is the last key of a page (so paging is stable under
//! concurrent writes), counters stored as plain decimal text. Keys are text
//! without NUL (refused before any backend sees them).
//!
//! | file | what it owns |
//! | --- | --- |
//! | `mod.rs` | the [`KvBackend`] interface and its errors |
//! | `embedded.rs` | the `redb` backend |
//! | `redis.rs` | the Redis backend |
//! | `postgres.rs` | the PostgreSQL backend |
//! | `stores.rs` | which backend each store has; per-route grants, limits, health, metrics |
//! | `guest.rs` | the `wasi:keyvalue` interfaces a guest imports |

mod embedded;
pub(crate) mod guest;
mod postgres;
mod redis;
mod stores;

pub(crate) use embedded::NoKv;
pub use embedded::{DiskKv, DEFAULT_MAX_SIZE};
pub(crate) use guest::{KvData, KvView};
pub use postgres::PostgresKv;
pub(crate) use postgres::{connection_pool, unreachable as postgres_unreachable};
pub use redis::RedisKv;
pub(crate) use stores::KvAccess;
pub use stores::{KvStores, StoreConfig};

use async_trait::async_trait;

/// A store operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The backend cannot be reached right now (down, or too slow): worth
    /// retrying later. The SDK answers 503 with `Retry-After`.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The host will not do it: a key or value over its limit, a value that
    /// is not a counter.
    #[error("refused: {0}")]
    Refused(String),
    /// The backend failed otherwise.
    #[error("{0}")]
    Failed(String),
}

/// What a compare-and-swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The value was as expected and is now the new one.
    Done,
    /// The value was not as expected: here it is as it is now.
    Changed(Option<Vec<u8>>),
}

/// Where key-value data lives. Every call names the store, so one backend
/// holds many stores, each its own key space. Implementations must be safe
/// to call from many requests at once and must not block an async worker.
#[async_trait]
pub trait KvBackend: Send + Sync {
    /// What it is, for logs and `edgehost routes`: `embedded`, `redis`...
    fn kind(&self) -> &'static str;
    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    async fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    /// Deleting a key that is not there is no error.
    async fn delete(&self, store: &str, key: &str) -> Result<(), KvError>;
    async fn exists(&self, store: &str, key: &str) -> Result<bool, KvError>;
    /// Up to `limit` keys in order, after `after` when given; and whether
    /// more follow.
    async fn list_keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), KvError>;
    /// Adds `delta` to the counter under `key` (decimal text; a missing key
    /// is 0) and returns the new value, atomically.
    async fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Sets `key` to `value` if it holds `expected` (`None`: no value),
    /// atomically.
    async fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Swap, KvError>;
    /// The values of `keys`, in their order.
    async fn get_many(&self, store: &str, keys: &[String])
        -> Result<Vec<Option<Vec<u8>>>, KvError>;
    async fn set_many(&self, store: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError>;
    async fn delete_many(&self, store: &str, keys: &[String]) -> Result<(), KvError>;
}

impl KvError {
    /// A counter operation on a value that is not one.
    pub(crate) fn not_a_counter(key: &str) -> KvError {
        KvError::Refused(format!(
            "the value of `{key}` is not a counter (a whole number in plain decimal text, such as -42)"
        ))
    }

    /// A counter operation that would go past the 64-bit range.
    pub(crate) fn counter_overflow(key: &str) -> KvError {
        KvError::Refused(format!("the counter `{key}` would overflow"))
    }
}

/// A counter's value as stored: plain decimal text (`-?(0|[1-9][0-9]*)`,
/// within 64 bits), the one form every backend reads alike (Redis's `INCRBY`
/// refuses `+5`, `007` and ` 5`).
pub(crate) fn parse_counter(key: &str, value: &[u8]) -> Result<i64, KvError> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    let plain = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits.first() != Some(&b'0'))
        && value != b"-0";
    std::str::from_utf8(value)
        .ok()
        .filter(|_| plain)
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or_else(|| KvError::not_a_counter(key))
}

/// `current + delta`, or why not.
pub(crate) fn add_to_counter(key: &str, current: i64, delta: i64) -> Result<i64, KvError> {
    current
        .checked_add(delta)
        .ok_or_else(|| KvError::counter_overflow(key))
}
