//! The Redis backend, for stores a fleet of hosts shares: one multiplexed
//! connection per server, reconnecting by itself (the `redis` crate's
//! connection manager), made at the first operation so that a server that
//! is down does not stop the host from starting.
//!
//! Layout: store `S`'s key `k` is the Redis key `edgehost:kv:S:k` (a store
//! name has no `:`, so two stores on one server never share a key), and the
//! sorted set `edgehost:kv-keys:S` lists the store's keys, so `list-keys`
//! pages in key order from the last key seen, like the other backends,
//! whatever is written meanwhile (a `SCAN` may repeat keys and has no
//! order). Every write changes a value and the list in one `MULTI`.

use super::{KvBackend, KvError, Swap};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long connecting may take; a request's `kv_timeout` bounds it too.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sets a key to a value if it holds the expected one, and lists it.
/// KEYS: value key, key list. ARGV: 1 if a value is expected, the expected
/// value, the new value, the key as listed. Returns `{1}` when swapped, else
/// `{0}` and the current value, if any.
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
local expected = ARGV[1] == '1' and ARGV[2] or false
if current == expected then
  redis.call('SET', KEYS[1], ARGV[3])
  redis.call('ZADD', KEYS[2], 0, ARGV[4])
  return {1}
end
if current then return {0, current} end
return {0}
";

/// Stores on one Redis server.
pub struct RedisKv {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    swap: redis::Script,
}

impl RedisKv {
    /// A backend for the server at `url` (`redis://host:port/db`); checks the
    /// URL, connects at first use.
    pub fn connect(url: &str) -> Result<RedisKv, KvError> {
        let client = redis::Client::open(url)
            .map_err(|err| KvError::Failed(format!("not a Redis URL: {err}")))?;
        Ok(RedisKv {
            client,
            connection: OnceCell::new(),
            swap: redis::Script::new(COMPARE_AND_SWAP),
        })
    }

    /// Whether `url` is one [`RedisKv::connect`] takes.
    pub(crate) fn check_url(url: &str) -> Result<(), String> {
        redis::Client::open(url)
            .map(|_| ())
            .map_err(|err| format!("not a Redis URL (redis://host:port/db): {err}"))
    }

    async fn connection(&self) -> Result<ConnectionManager, KvError> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                // No response timeout of the client's own (its default is
                // 500 ms): the route's kv_timeout bounds every call.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None)
                    .set_number_of_retries(1);
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .map_err(unavailable)?;
        Ok(manager.clone())
    }
}

fn value_key(store: &str, key: &str) -> String {
    format!("edgehost:kv:{store}:{key}")
}

fn key_list(store: &str) -> String {
    format!("edgehost:kv-keys:{store}")
}

/// A connection that failed or timed out is the store being unavailable;
/// a refused command is not.
fn unavailable(err: RedisError) -> KvError {
    if err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
    {
        KvError::Unavailable(err.to_string())
    } else {
        KvError::Failed(err.to_string())
    }
}

#[async_trait]
impl KvBackend for RedisKv {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut conn = self.connection().await?;
        redis::cmd("GET")
            .arg(value_key(store, key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let mut conn = self.connection().await?;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(value_key(store, key))
            .arg(value)
            .ignore()
            .cmd("ZADD")
            .arg(key_list(store))
            .arg(0)
            .arg(key)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        self.delete_many(store, &[key.to_string()]).await
    }

    async fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        let mut conn = self.connection().await?;
        redis::cmd("EXISTS")
            .arg(value_key(store, key))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn list_keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), KvError> {
        let mut conn = self.connection().await?;
        let start = after.map_or_else(|| "-".to_string(), |after| format!("({after}"));
        let mut keys: Vec<String> = redis::cmd("ZRANGE")
            .arg(key_list(store))
            .arg(start)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.saturating_add(1))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok((keys, more))
    }

    async fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut conn = self.connection().await?;
        let (value,): (i64,) = redis::pipe()
            .atomic()
            .cmd("INCRBY")
            .arg(value_key(store, key))
            .arg(delta)
            .cmd("ZADD")
            .arg(key_list(store))
            .arg(0)
            .arg(key)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(|err| match err.code() {
                // INCRBY's own refusals: not a number, or out of range.
                Some("ERR") if err.to_string().contains("overflow") => {
                    KvError::counter_overflow(key)
                }
                Some("ERR") => KvError::not_a_counter(key),
                _ => unavailable(err),
            })?;
        Ok(value)
    }

    async fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Swap, KvError> {
        let mut conn = self.connection().await?;
        let answer: Vec<Value> = self
            .swap
            .key(value_key(store, key))
            .key(key_list(store))
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .arg(key)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        match answer.as_slice() {
            [Value::Int(1)] => Ok(Swap::Done),
            [Value::Int(0)] => Ok(Swap::Changed(None)),
            [Value::Int(0), Value::BulkString(current)] => Ok(Swap::Changed(Some(current.clone()))),
            other => Err(KvError::Failed(format!(
                "unexpected answer from the compare-and-swap script: {other:?}"
            ))),
        }
    }

    async fn get_many(
        &self,
        store: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connection().await?;
        let names: Vec<String> = keys.iter().map(|key| value_key(store, key)).collect();
        redis::cmd("MGET")
            .arg(names)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn set_many(&self, store: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mset = pipe.cmd("MSET");
        for (key, value) in entries {
            mset.arg(value_key(store, key)).arg(value);
        }
        mset.ignore();
        let zadd = pipe.cmd("ZADD").arg(key_list(store));
        for (key, _) in entries {
            zadd.arg(0).arg(key);
        }
        zadd.ignore();
        pipe.query_async(&mut conn).await.map_err(unavailable)
    }

    async fn delete_many(&self, store: &str, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        let names: Vec<String> = keys.iter().map(|key| value_key(store, key)).collect();
        redis::pipe()
            .atomic()
            .cmd("DEL")
            .arg(names)
            .ignore()
            .cmd("ZREM")
            .arg(key_list(store))
            .arg(keys)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }
}
