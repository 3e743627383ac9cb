//! The manifest as written: plain serde types, strict (an unknown key is an
//! error naming its line), spans kept for error messages. Nothing here is
//! checked; [`super::validate`] turns these into a [`super::Manifest`].
//!
//! `[server]` and `[[route]]` tables take, besides their own keys, the limit
//! keys of [`LIMITS`](super::limits::LIMITS); they are read by hand so that
//! the table is the only list of those keys.

use super::limits::{LimitSpec, Quantity, Scope, LIMITS};
use super::policies::{RawCache, RawCors, RawRateLimit};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    #[serde(default)]
    pub(crate) server: RawServer,
    pub(crate) admin: Option<RawAdmin>,
    /// `[routes]`: mount every route crate under a folder.
    #[serde(rename = "routes")]
    pub(crate) folder: Option<RawFolder>,
    #[serde(default, rename = "route")]
    pub(crate) routes: Vec<RawRoute>,
    /// `[kv.NAME]`: key-value stores' backends.
    #[serde(default)]
    pub(crate) kv: BTreeMap<String, Spanned<RawKvStore>>,
    /// `[sql.NAME]`: SQL databases' backends and migrations.
    #[serde(default)]
    pub(crate) sql: BTreeMap<String, Spanned<RawSqlDatabase>>,
    /// `[fleet]`: the fleet the host belongs to.
    pub(crate) fleet: Option<Spanned<RawFleet>>,
    /// `[cache]`: the host's response cache.
    pub(crate) cache: Option<Spanned<RawCache>>,
    /// `[[schedule]]`: routes the host calls on a schedule.
    #[serde(default, rename = "schedule")]
    pub(crate) schedules: Vec<Spanned<RawSchedule>>,
}

/// One `[[schedule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub(crate) cron: String,
    pub(crate) path: String,
    pub(crate) method: Option<String>,
}

/// `[fleet]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFleet {
    pub(crate) name: String,
    pub(crate) nats_url_env: Option<String>,
    pub(crate) deploy_secrets: Option<Vec<String>>,
}

/// `[kv.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKvStore {
    pub(crate) backend: Option<Spanned<String>>,
    pub(crate) url_env: Option<Spanned<String>>,
    pub(crate) max_size: Option<Spanned<Quantity>>,
}

/// `[sql.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSqlDatabase {
    pub(crate) backend: Option<Spanned<String>>,
    pub(crate) url_env: Option<Spanned<String>>,
    pub(crate) migrations: Option<Spanned<String>>,
    pub(crate) max_size: Option<Spanned<Quantity>>,
}

/// `[admin]`: the deploy and metrics API, off unless this table (or `serve
/// --admin`) is given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) token_env: Option<String>,
    pub(crate) max_upload: Option<Spanned<Quantity>>,
    pub(crate) deploy_secrets: Option<Vec<String>>,
}

/// `[routes]`: file-based routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFolder {
    /// The folder searched for route crates, relative to the manifest.
    pub(crate) dir: Spanned<String>,
    /// Cargo's target folder, relative to the manifest (default: where
    /// cargo builds, see [`super::folders::cargo_target_dir`]).
    pub(crate) target_dir: Option<String>,
}

impl RawFolder {
    /// `target_dir` as written, else where cargo builds the crates beside
    /// the manifest in `base`.
    pub(crate) fn target_dir(&self, base: &std::path::Path) -> String {
        self.target_dir
            .clone()
            .unwrap_or_else(|| super::folders::default_target_dir(base))
    }
}

/// Limit keys as one table gives them, in the order written.
pub(crate) type WrittenLimits = Vec<(&'static LimitSpec, Spanned<Quantity>)>;

/// `[server]`.
#[derive(Debug, Default)]
pub(crate) struct RawServer {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) data_dir: Option<String>,
    /// The CORS policy of routes that state none.
    pub(crate) cors: Option<Spanned<RawCors>>,
    /// Server limits, and the defaults of every route's limits.
    pub(crate) limits: WrittenLimits,
}

/// One `[[route]]`.
#[derive(Debug)]
pub(crate) struct RawRoute {
    pub(crate) path: Spanned<String>,
    /// Absent for a route crate found by `[routes]` that this entry configures.
    pub(crate) component: Option<Spanned<String>>,
    pub(crate) kv: Vec<String>,
    pub(crate) sql: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) secrets: Vec<String>,
    /// Origins the route may send HTTP requests to.
    pub(crate) allowed_outbound_hosts: Vec<Spanned<String>>,
    /// Outbound requests may reach loopback, private and link-local
    /// addresses by name (an IP literal entry always may).
    pub(crate) allow_private_networks: bool,
    /// `cache = false`: the route's answers are never stored.
    pub(crate) cache: bool,
    /// `spin_headers`: whether a proxy component gets Spin's request
    /// headers; absent, the host decides from the component.
    pub(crate) spin_headers: Option<bool>,
    pub(crate) cors: Option<Spanned<RawCors>>,
    pub(crate) rate_limit: Option<Spanned<RawRateLimit>>,
    pub(crate) limits: WrittenLimits,
}

impl RawRoute {
    /// The entry a route crate of `[routes]` gets when none configures it.
    pub(crate) fn mounted(path: Spanned<String>, component: Spanned<String>) -> RawRoute {
        RawRoute {
            path,
            component: Some(component),
            kv: Vec::new(),
            sql: Vec::new(),
            env: BTreeMap::new(),
            secrets: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            allow_private_networks: false,
            cache: true,
            spin_headers: None,
            cors: None,
            rate_limit: None,
            limits: Vec::new(),
        }
    }
}

#[derive(Clone, Copy)]
enum ServerKey {
    Listen,
    DataDir,
    Cors,
}

const SERVER_KEYS: &[(&str, ServerKey)] = &[
    ("listen", ServerKey::Listen),
    ("data_dir", ServerKey::DataDir),
    ("cors", ServerKey::Cors),
];

#[derive(Clone, Copy)]
enum RouteKey {
    Path,
    Component,
    Kv,
    Sql,
    Env,
    Secrets,
    AllowedOutboundHosts,
    AllowPrivateNetworks,
    Cache,
    SpinHeaders,
    Cors,
    RateLimit,
}

const ROUTE_KEYS: &[(&str, RouteKey)] = &[
    ("path", RouteKey::Path),
    ("component", RouteKey::Component),
    ("kv", RouteKey::Kv),
    ("sql", RouteKey::Sql),
    ("env", RouteKey::Env),
    ("secrets", RouteKey::Secrets),
    ("allowed_outbound_hosts", RouteKey::AllowedOutboundHosts),
    ("allow_private_networks", RouteKey::AllowPrivateNetworks),
    ("cache", RouteKey::Cache),
    ("spin_headers", RouteKey::SpinHeaders),
    ("cors", RouteKey::Cors),
    ("rate_limit", RouteKey::RateLimit),
];

/// A key of a table that takes limits: one of its own, or a limit.
enum Key<K> {
    Own(K),
    Limit(&'static LimitSpec),
}

/// Reads one key, refusing unknown ones while the key's position is known
/// (so the error names its line, as serde's `deny_unknown_fields` would).
struct KeySeed<K: 'static> {
    own: &'static [(&'static str, K)],
    scope: Scope,
}

impl<'de, K: Copy> DeserializeSeed<'de> for KeySeed<K> {
    type Value = Key<K>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<K>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<K: Copy> Visitor<'_> for KeySeed<K> {
    type Value = Key<K>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<K>, E> {
        if let Some((_, own)) = self.own.iter().find(|(name, _)| *name == key) {
            return Ok(Key::Own(*own));
        }
        if let Some(limit) = LimitSpec::find(key, self.scope) {
            return Ok(Key::Limit(limit));
        }
        let expected: Vec<String> = self
            .own
            .iter()
            .map(|(name, _)| *name)
            .chain(
                LIMITS
                    .iter()
                    .filter(|spec| self.scope == Scope::Server || spec.scope() == self.scope)
                    .map(|spec| spec.key),
            )
            .map(|name| format!("`{name}`"))
            .collect();
        Err(E::custom(format!(
            "unknown field `{key}`, expected one of {}",
            expected.join(", ")
        )))
    }
}

impl<'de> Deserialize<'de> for RawServer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ServerVisitor;
        impl<'de> Visitor<'de> for ServerVisitor {
            type Value = RawServer;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [server] table")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawServer, A::Error> {
                let mut server = RawServer::default();
                let seed = || KeySeed {
                    own: SERVER_KEYS,
                    scope: Scope::Server,
                };
                while let Some(key) = map.next_key_seed(seed())? {
                    match key {
                        Key::Own(ServerKey::Listen) => server.listen = Some(map.next_value()?),
                        Key::Own(ServerKey::DataDir) => server.data_dir = Some(map.next_value()?),
                        Key::Own(ServerKey::Cors) => server.cors = Some(map.next_value()?),
                        Key::Limit(spec) => server.limits.push((spec, map.next_value()?)),
                    }
                }
                Ok(server)
            }
        }
        deserializer.deserialize_map(ServerVisitor)
    }
}

impl<'de> Deserialize<'de> for RawRoute {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RouteVisitor;
        impl<'de> Visitor<'de> for RouteVisitor {
            type Value = RawRoute;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [[route]] table")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRoute, A::Error> {
                let mut path = None;
                let mut component = None;
                let mut kv = Vec::new();
                let mut sql = Vec::new();
                let mut env = BTreeMap::new();
                let mut secrets = Vec::new();
                let mut allowed_outbound_hosts = Vec::new();
                let mut allow_private_networks = false;
                let mut cache = true;
                let mut spin_headers = None;
                let mut cors = None;
                let mut rate_limit = None;
                let mut limits = Vec::new();
                let seed = || KeySeed {
                    own: ROUTE_KEYS,
                    scope: Scope::Route,
                };
                while let Some(key) = map.next_key_seed(seed())? {
                    match key {
                        Key::Own(RouteKey::Path) => path = Some(map.next_value()?),
                        Key::Own(RouteKey::Component) => component = Some(map.next_value()?),
                        Key::Own(RouteKey::Kv) => kv = map.next_value()?,
                        Key::Own(RouteKey::Sql) => sql = map.next_value()?,
                        Key::Own(RouteKey::Env) => env = map.next_value()?,
                        Key::Own(RouteKey::Secrets) => secrets = map.next_value()?,
                        Key::Own(RouteKey::AllowedOutboundHosts) => {
                            allowed_outbound_hosts = map.next_value()?
                        }
                        Key::Own(RouteKey::AllowPrivateNetworks) => {
                            allow_private_networks = map.next_value()?
                        }
                        Key::Own(RouteKey::Cache) => cache = map.next_value()?,
                        Key::Own(RouteKey::SpinHeaders) => spin_headers = Some(map.next_value()?),
                        Key::Own(RouteKey::Cors) => cors = Some(map.next_value()?),
                        Key::Own(RouteKey::RateLimit) => rate_limit = Some(map.next_value()?),
                        Key::Limit(spec) => limits.push((spec, map.next_value()?)),
                    }
                }
                Ok(RawRoute {
                    path: path.ok_or_else(|| de::Error::missing_field("path"))?,
                    component,
                    kv,
                    sql,
                    env,
                    secrets,
                    allowed_outbound_hosts,
                    allow_private_networks,
                    cache,
                    spin_headers,
                    cors,
                    rate_limit,
                    limits,
                })
            }
        }
        deserializer.deserialize_map(RouteVisitor)
    }
}
