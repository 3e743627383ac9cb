//! `[kv.NAME]`: the backend of a key-value store, chosen when the host
//! starts. A store a route is granted without such a table is embedded.
//!
//! ```toml
//! [kv.posts]
//! backend = "redis"          # "embedded" (the default), "redis" or "postgres"
//! url_env = "REDIS_URL"      # the host environment variable holding its URL
//! max_size = "1GiB"          # embedded only: the most bytes of keys and values
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
    /// The most bytes of keys and values an embedded store may hold.
    pub(crate) max_size: u64,
    /// The table's line, for error messages.
    pub(crate) line: usize,
}

impl KvStoreSpec {
    /// Whether two manifests configure the store alike (a restart-only
    /// setting: a deploy that changes it warns).
    pub(crate) fn same_as(&self, other: &KvStoreSpec) -> bool {
        self.backend == other.backend
            && self.url_env == other.url_env
            && self.max_size == other.max_size
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Result<Manifest, String> {
        crate::manifest::parse(std::path::Path::new("m.toml"), text, &|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_bad_kv_table_names_its_line_and_store() {
        let cases = [
            (
                "[kv.posts]\nbackend = \"mongo\"\n",
                "m.toml:1: [kv.posts]: backend \"mongo\" is not one of embedded, redis, postgres",
            ),
            (
                "[kv.posts]\nbackend = \"redis\"\n",
                "m.toml:1: [kv.posts]: the redis backend needs url_env",
            ),
            (
                "\n[kv.posts]\nurl_env = \"X\"\n",
                "m.toml:2: [kv.posts]: url_env is for the redis and postgres backends",
            ),
            (
                "[kv.posts]\nbackend = \"postgres\"\nurl_env = \"A=B\"\n",
                "[kv.posts]: url_env \"A=B\" is not a variable name",
            ),
            (
                "[kv.\"bad name\"]\n",
                "[kv.bad name]: not a valid store name",
            ),
            (
                "[kv.posts]\nbackend = \"redis\"\nurl = \"redis://x\"\n",
                "unknown field `url`",
            ),
            (
                "[kv.posts]\nbackend = \"redis\"\nurl_env = \"X\"\nmax_size = \"1GiB\"\n",
                "m.toml:1: [kv.posts]: max_size is for the embedded backend",
            ),
            ("[kv.posts]\nmax_size = \"lots\"\n", "[kv.posts]: max_size:"),
        ];
        for (text, expected) in cases {
            let error = manifest(text).unwrap_err();
            assert!(
                error.contains(expected),
                "for\n{text}\ngot: {error}\nwanted: {expected}"
            );
        }
    }

    #[test]
    fn urls_come_from_the_environment_and_are_checked() {
        let text = "[kv.posts]\nbackend = \"redis\"\nurl_env = \"POSTS_URL\"\n\n[kv.sql]\nbackend = \"postgres\"\nurl_env = \"SQL_URL\"\n\n[kv.plain]\n";
        let m = manifest(text).unwrap();
        let env = |values: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let configs = store_configs(
            &m,
            &env(&[
                ("POSTS_URL", "redis://127.0.0.1:1/"),
                ("SQL_URL", "postgres://u@h:1/db"),
            ]),
        )
        .unwrap();
        assert_eq!(
            configs,
            BTreeMap::from([
                ("plain".to_string(), StoreConfig::Embedded),
                (
                    "posts".to_string(),
                    StoreConfig::Redis {
                        url: "redis://127.0.0.1:1/".into()
                    }
                ),
                (
                    "sql".to_string(),
                    StoreConfig::Postgres {
                        url: "postgres://u@h:1/db".into()
                    }
                ),
            ])
        );
        let missing = store_configs(&m, &env(&[("SQL_URL", "postgres://u@h:1/db")]))
            .unwrap_err()
            .to_string();
        assert!(
            missing
                .contains("m.toml:1: [kv.posts]: POSTS_URL is not set in the host's environment"),
            "{missing}"
        );
        let bad = store_configs(
            &m,
            &env(&[
                ("POSTS_URL", "http://not-redis"),
                ("SQL_URL", "postgres://u@h:notaport/db"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("[kv.posts]: POSTS_URL: not a Redis URL"),
            "{bad}"
        );
        assert!(
            bad.contains("[kv.sql]: SQL_URL: not a PostgreSQL URL"),
            "{bad}"
        );
        assert!(
            !bad.contains("not-redis"),
            "a URL is never shown (it may hold a password): {bad}"
        );
    }
}
