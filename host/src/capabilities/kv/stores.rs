//! Which backend each key-value store has, decided when the host starts
//! ([`KvStores`]), and what one route may do with the stores it is granted
//! ([`KvAccess`]): every operation bounded by the route's `kv_timeout`,
//! keys and values by its quotas, counted per store, and a store that
//! cannot be reached said so in the log once, not per request.

use super::{KvBackend, KvError, PostgresKv, RedisKv};
use crate::capabilities::log_throttle::{now_ns, LogThrottle, FAILURE_LOG_INTERVAL};
use crate::metrics::{KvMetrics, KvOp, KvResult, Metrics};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keys one batch call may name: a batch read of that many values at the
/// default `max_kv_value` is 100 MiB, as much as a guest may hold. The SDK
/// splits larger batches. (Workers KV reads at most 100 keys at a time.)
pub(crate) const MAX_BATCH_KEYS: usize = 100;

/// A store's backend as the manifest names it, with its URL read from the
/// host's environment.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoreConfig {
    /// The redb file in the data dir (the default).
    Embedded,
    Redis {
        url: String,
    },
    Postgres {
        url: String,
    },
}

impl std::fmt::Debug for StoreConfig {
    // A URL may hold a password: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreConfig::Embedded => "embedded",
            StoreConfig::Redis { .. } => "redis",
            StoreConfig::Postgres { .. } => "postgres",
        })
    }
}

/// One store as the host runs it.
pub(crate) struct StoreHandle {
    pub(crate) name: Arc<str>,
    pub(crate) backend: Arc<dyn KvBackend>,
    metrics: Arc<KvMetrics>,
    /// Since when (ns after the throttle's clock) the backend has been unreachable; 0
    /// while it answers. Only an operation begun after that time can say
    /// it is back, so one begun before it went cannot flip it back and forth.
    down_since: AtomicU64,
    /// When a failure was last logged.
    failure_logged: LogThrottle,
}

/// The backend of every store, for the whole life of the host: stores the
/// manifest configures with `[kv.NAME]`, and the embedded default for the
/// rest.
pub struct KvStores {
    default: Arc<dyn KvBackend>,
    configured: BTreeMap<String, Arc<dyn KvBackend>>,
    /// Handles made so far, one per store name (shared by every deployment).
    handles: std::sync::Mutex<BTreeMap<String, Arc<StoreHandle>>>,
}

impl KvStores {
    /// Every store on `default`.
    pub fn new(default: Arc<dyn KvBackend>) -> KvStores {
        KvStores {
            default,
            configured: BTreeMap::new(),
            handles: std::sync::Mutex::default(),
        }
    }

    /// Opens the backends `configs` name (a network store connects lazily:
    /// a store that is down does not stop the host from starting), the rest
    /// on `default`.
    pub fn open(
        default: Arc<dyn KvBackend>,
        configs: &BTreeMap<String, StoreConfig>,
    ) -> Result<KvStores, KvError> {
        let mut stores = KvStores::new(Arc::clone(&default));
        // One client per server: stores on one server share its connections.
        let mut clients: BTreeMap<&StoreConfig, Arc<dyn KvBackend>> = BTreeMap::new();
        for (name, config) in configs {
            let backend = match (config, clients.get(config)) {
                (StoreConfig::Embedded, _) => Arc::clone(&default),
                (_, Some(client)) => Arc::clone(client),
                (StoreConfig::Redis { url }, None) => {
                    let client: Arc<dyn KvBackend> = Arc::new(RedisKv::connect(url)?);
                    clients.insert(config, Arc::clone(&client));
                    client
                }
                (StoreConfig::Postgres { url }, None) => {
                    let client: Arc<dyn KvBackend> = Arc::new(PostgresKv::connect(url)?);
                    clients.insert(config, Arc::clone(&client));
                    client
                }
            };
            stores.configured.insert(name.clone(), backend);
        }
        Ok(stores)
    }

    /// The store named `name`, with its counters in `metrics`.
    pub(crate) fn handle(&self, name: &str, metrics: &Metrics) -> Arc<StoreHandle> {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        let handle = handles.entry(name.to_string()).or_insert_with(|| {
            let backend = self.configured.get(name).unwrap_or(&self.default);
            Arc::new(StoreHandle {
                name: Arc::from(name),
                backend: Arc::clone(backend),
                metrics: metrics.kv_store(name, backend.kind()),
                down_since: AtomicU64::new(0),
                failure_logged: LogThrottle::default(),
            })
        });
        Arc::clone(handle)
    }
}

/// What one route may do with key-value stores.
#[derive(Clone)]
pub(crate) struct KvAccess {
    /// The stores the route's manifest entry grants, by name.
    pub(crate) granted: Arc<[Arc<StoreHandle>]>,
    /// How long one operation may take (within the route's `timeout`).
    pub(crate) timeout: Duration,
    pub(crate) max_key: usize,
    pub(crate) max_value: usize,
}

impl KvAccess {
    /// The granted store named `name`.
    pub(crate) fn store(&self, name: &str) -> Option<&Arc<StoreHandle>> {
        self.granted.iter().find(|store| &*store.name == name)
    }

    /// Refuses a key over the route's `max_kv_key`, or one with a NUL
    /// character (PostgreSQL text cannot hold one: no backend takes it).
    pub(crate) fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.contains('\0') {
            return Err(KvError::Refused(
                "a key may not contain a NUL character".into(),
            ));
        }
        if key.len() > self.max_key {
            return Err(KvError::Refused(format!(
                "a key of {} bytes is over the route's max_kv_key of {}",
                key.len(),
                self.max_key
            )));
        }
        Ok(())
    }

    /// Refuses a batch call naming more than [`MAX_BATCH_KEYS`] keys.
    pub(crate) fn check_batch(&self, keys: usize) -> Result<(), KvError> {
        if keys > MAX_BATCH_KEYS {
            return Err(KvError::Refused(format!(
                "a batch of {keys} keys is over the {MAX_BATCH_KEYS} one call may name"
            )));
        }
        Ok(())
    }

    /// Refuses a value over the route's `max_kv_value`.
    pub(crate) fn check_value(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.check_key(key)?;
        if value.len() > self.max_value {
            return Err(KvError::Refused(format!(
                "a value of {} bytes for `{key}` is over the route's max_kv_value of {}",
                value.len(),
                self.max_value
            )));
        }
        Ok(())
    }

    /// Runs one backend operation on `store` within the timeout, counting
    /// it, and noting (once) when the store becomes unreachable or
    /// reachable again.
    pub(crate) async fn run<T>(
        &self,
        store: &StoreHandle,
        op: KvOp,
        call: impl Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        let started = Instant::now();
        let started_ns = now_ns();
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(KvError::Unavailable(format!(
                "no answer within the route's kv_timeout of {:?}",
                self.timeout
            ))),
        };
        let outcome = match &result {
            Ok(_) => KvResult::Ok,
            Err(KvError::Unavailable(_)) => KvResult::Unavailable,
            Err(_) => KvResult::Error,
        };
        store.metrics.record(op, outcome, started.elapsed());
        store.note(&result, started_ns);
        result.map_err(|err| match err {
            KvError::Unavailable(reason) => KvError::Unavailable(format!(
                "store {} ({}): {reason}",
                store.name,
                store.backend.kind()
            )),
            other => other,
        })
    }
}

impl StoreHandle {
    /// Logs a change of the store's health, and (at most every
    /// [`FAILURE_LOG_INTERVAL`]) a failure the store reported.
    fn note<T>(&self, result: &Result<T, KvError>, started_ns: u64) {
        let down_since = self.down_since.load(Ordering::Relaxed);
        let swap = |from: u64, to: u64| {
            self.down_since
                .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        };
        match result {
            Err(KvError::Unavailable(reason)) if down_since == 0 && swap(0, now_ns()) => {
                tracing::warn!(
                    store = %self.name,
                    backend = self.backend.kind(),
                    "key-value store {} is unavailable ({reason}); routes using it answer 503 until it is back",
                    self.name
                );
            }
            Ok(_) if down_since != 0 && started_ns > down_since && swap(down_since, 0) => {
                tracing::info!(
                    store = %self.name,
                    backend = self.backend.kind(),
                    "key-value store {} is reachable again",
                    self.name
                );
            }
            Err(KvError::Failed(reason)) if self.failure_logged.due() => {
                tracing::warn!(
                    store = %self.name,
                    backend = self.backend.kind(),
                    "key-value store {} failed an operation: {reason} (logged at most every {FAILURE_LOG_INTERVAL:?})",
                    self.name
                );
            }
            _ => {}
        }
    }
}
