//! `[kv.NAME]`: the backend of a key-value store, chosen when the host
//! starts. A store a route is granted without such a table is embedded.
//!
//! ```toml
//! [kv.posts]
//! backend = "redis"          # "embedded" (the default), "redis" or "postgres"
//! url_env = "REDIS_URL"      # the host environment variable holding its URL
//! ```
//!
//! The URL itself never appears in the manifest: it is read from the
//! host's environment when the stores are opened ([`store_configs`]).

use super::error::{ManifestError, ManifestErrors};
use super::Manifest;
use crate::capabilities::kv::{PostgresKv, RedisKv, StoreConfig};
use std::collections::BTreeMap;

/// Where a store keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvBackendKind {
    Embedded,
    Redis,
    Postgres,
}

impl KvBackendKind {
    /// The manifest's names for the backends.
    pub(crate) const NAMES: [(&'static str, KvBackendKind); 3] = [
        ("embedded", KvBackendKind::Embedded),
        ("redis", KvBackendKind::Redis),
        ("postgres", KvBackendKind::Postgres),
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            KvBackendKind::Embedded => "embedded",
            KvBackendKind::Redis => "redis",
            KvBackendKind::Postgres => "postgres",
        }
    }
}

/// One `[kv.NAME]` table, checked.
#[derive(Debug, Clone)]
pub struct KvStoreSpec {
    pub(crate) backend: KvBackendKind,
    /// The host environment variable holding the URL (network backends).
    pub(crate) url_env: Option<String>,
    /// The table's line, for error messages.
    pub(crate) line: usize,
}

impl KvStoreSpec {
    /// Whether two manifests configure the store alike (a restart-only
    /// setting: a deploy that changes it warns).
    pub(crate) fn same_as(&self, other: &KvStoreSpec) -> bool {
        self.backend == other.backend && self.url_env == other.url_env
    }
}

/// The backend of every store `manifest` configures, each URL read with
/// `env` (the host's environment) and checked; every problem named with
/// its line and store.
pub(crate) fn store_configs(
    manifest: &Manifest,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, StoreConfig>, ManifestErrors> {
    let mut configs = BTreeMap::new();
    let mut errors = Vec::new();
    for (store, spec) in &manifest.kv {
        let fail = |reason: String| ManifestError::KvStore {
            file: manifest.file.display().to_string(),
            line: spec.line,
            store: store.clone(),
            reason,
        };
        let url = match &spec.url_env {
            None => None,
            Some(var) => match env(var) {
                Some(url) if !url.is_empty() => Some(url),
                _ => {
                    errors.push(fail(format!(
                        "{var} is not set in the host's environment (it holds the {} URL)",
                        spec.backend.name()
                    )));
                    continue;
                }
            },
        };
        let checked = match (spec.backend, url) {
            (KvBackendKind::Embedded, _) => Ok(StoreConfig::Embedded),
            (KvBackendKind::Redis, Some(url)) => {
                RedisKv::check_url(&url).map(|()| StoreConfig::Redis { url })
            }
            (KvBackendKind::Postgres, Some(url)) => {
                PostgresKv::check_url(&url).map(|()| StoreConfig::Postgres { url })
            }
            // Checked when the manifest was: a network backend has url_env.
            (_, None) => Err("needs url_env".to_string()),
        };
        match checked {
            Ok(config) => {
                configs.insert(store.clone(), config);
            }
            Err(reason) => {
                let var = spec.url_env.as_deref().unwrap_or("its url_env");
                errors.push(fail(format!("{var}: {reason}")));
            }
        }
    }
    if errors.is_empty() {
        Ok(configs)
    } else {
        Err(ManifestErrors(errors))
    }
}
