//! Edge policies as the manifest states them: `[cache]` (the host's shared
//! response cache), and per route `cache = false`, `cors = { ... }` (or a
//! `[server] cors` default) and `rate_limit = { ... }`. The host enforces
//! them before a guest runs; `crate::edge` holds what does.
//!
//! ```toml
//! [cache]
//! max_size = "128MiB"        # all entries together
//! max_entry_size = "1MiB"    # larger answers are not stored
//!
//! [[route]]
//! path = "/api/posts"
//! cors = { origins = ["https://app.example.com"], methods = ["GET", "POST"], headers = ["content-type"], max_age = "10m" }
//! rate_limit = { requests = 100, per = "1m", burst = 20 }
//! ```

use super::limits::Kind;
use super::quantity::Quantity;
use http::{HeaderName, Method};
use serde::Deserialize;
use std::time::Duration;

/// `[cache]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    enabled: Option<bool>,
    max_size: Option<Quantity>,
    max_entry_size: Option<Quantity>,
    x_cache: Option<bool>,
}

/// The host's response cache, as `[cache]` sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Off: every request runs its route, as if no answer were cacheable.
    pub enabled: bool,
    /// Bytes all entries may hold together (bodies, headers and keys).
    pub max_size: u64,
    /// An answer larger than this is not stored.
    pub max_entry_size: u64,
    /// Answers say `x-cache: HIT`, `MISS` or `STALE`.
    pub x_cache: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            max_size: 128 << 20,
            max_entry_size: 1 << 20,
            x_cache: true,
        }
    }
}

impl RawCache {
    pub(crate) fn check(&self) -> Result<CacheSettings, String> {
        let mut settings = CacheSettings::default();
        if let Some(enabled) = self.enabled {
            settings.enabled = enabled;
        }
        if let Some(x_cache) = self.x_cache {
            settings.x_cache = x_cache;
        }
        if let Some(size) = &self.max_size {
            settings.max_size = Kind::Size
                .parse(size)
                .map_err(|reason| format!("max_size: {reason}"))?;
        }
        if let Some(size) = &self.max_entry_size {
            settings.max_entry_size = Kind::Size
                .parse(size)
                .map_err(|reason| format!("max_entry_size: {reason}"))?;
        }
        if settings.max_entry_size > settings.max_size {
            return Err(format!(
                "max_entry_size ({}) is larger than max_size ({})",
                super::quantity::size(settings.max_entry_size),
                super::quantity::size(settings.max_size)
            ));
        }
        Ok(settings)
    }
}

/// A `cors = { ... }` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    origins: Vec<String>,
    methods: Option<Vec<String>>,
    headers: Option<Vec<String>>,
    expose_headers: Option<Vec<String>>,
    credentials: Option<bool>,
    max_age: Option<Quantity>,
}

/// Which browser origins may read a route's answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    /// `None`: any origin (`origins = ["*"]`); else the origins listed,
    /// as `scheme://host[:port]` in lower case.
    pub origins: Option<Vec<String>>,
    /// Methods a preflight allows; empty: the ones the route answers.
    pub methods: Vec<Method>,
    /// Request headers a preflight allows (lower case); `["*"]`: any.
    pub headers: Vec<String>,
    /// Response headers a page may read beyond the CORS-safelisted ones.
    pub expose_headers: Vec<String>,
    /// Cookies and `Authorization` may be sent, and the answer read.
    pub credentials: bool,
    /// How long a browser may keep a preflight's answer.
    pub max_age: Option<Duration>,
}

impl RawCors {
    pub(crate) fn check(&self) -> Result<CorsPolicy, String> {
        let any = self.origins.iter().any(|o| o == "*");
        let credentials = self.credentials.unwrap_or(false);
        let origins = if any {
            if self.origins.len() > 1 {
                return Err("origins: \"*\" stands alone".into());
            }
            if credentials {
                return Err(
                    "origins = [\"*\"] cannot go with credentials = true (browsers refuse it); list the origins"
                        .into(),
                );
            }
            None
        } else {
            if self.origins.is_empty() {
                return Err("origins: list at least one origin, or \"*\"".into());
            }
            Some(
                self.origins
                    .iter()
                    .map(|origin| origin_of(origin))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        let methods = self
            .methods
            .iter()
            .flatten()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("methods: {m:?} is not a method"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let header_names = |list: &Option<Vec<String>>, what: &str| {
            list.iter()
                .flatten()
                .map(|name| {
                    let lower = name.to_ascii_lowercase();
                    if lower == "*" || HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                        Ok(lower)
                    } else {
                        Err(format!("{what}: {name:?} is not a header name"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let headers = header_names(&self.headers, "headers")?;
        let expose_headers = header_names(&self.expose_headers, "expose_headers")?;
        if credentials && headers.iter().chain(&expose_headers).any(|h| h == "*") {
            return Err(
                "\"*\" in headers or expose_headers means a literal `*` with credentials = true; list the names"
                    .into(),
            );
        }
        let max_age = self
            .max_age
            .as_ref()
            .map(|age| Kind::Duration.parse(age).map(Duration::from_millis))
            .transpose()
            .map_err(|reason| format!("max_age: {reason}"))?;
        Ok(CorsPolicy {
            origins,
            methods,
            headers,
            expose_headers,
            credentials,
            max_age,
        })
    }
}

/// An origin as a browser sends it in `Origin`: `scheme://host[:port]`,
/// lower case, no path.
fn origin_of(written: &str) -> Result<String, String> {
    let bad =
        || format!("origins: {written:?} is not an origin such as \"https://app.example.com\"");
    let lower = written.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() {
        return Err(bad());
    }
    if rest.contains(['/', '?', '#', '@']) || rest.parse::<http::uri::Authority>().is_err() {
        return Err(bad());
    }
    Ok(lower)
}

/// A `rate_limit = { ... }` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    requests: Quantity,
    per: Quantity,
    burst: Option<Quantity>,
    header: Option<String>,
}

/// A token bucket per client: `requests` every `per`, at most `burst` at
/// once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitPolicy {
    pub requests: u64,
    pub per: Duration,
    /// The bucket's size: requests a client may make at once after a
    /// quiet spell (default: `requests`).
    pub burst: u64,
    /// A request header (an API key) whose value is the client, when a
    /// request has it; else the client's address.
    pub header: Option<HeaderName>,
}

impl RawRateLimit {
    pub(crate) fn check(&self) -> Result<RateLimitPolicy, String> {
        let requests = Kind::Count
            .parse(&self.requests)
            .map_err(|reason| format!("requests: {reason}"))?;
        let per = Kind::Duration
            .parse(&self.per)
            .map(Duration::from_millis)
            .map_err(|reason| format!("per: {reason}"))?;
        let burst = match &self.burst {
            None => requests,
            Some(burst) => Kind::Count
                .parse(burst)
                .map_err(|reason| format!("burst: {reason}"))?,
        };
        let header = self
            .header
            .as_ref()
            .map(|name| {
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("header: {name:?} is not a header name"))
            })
            .transpose()?;
        Ok(RateLimitPolicy {
            requests,
            per,
            burst,
            header,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(text: &str) -> Result<CorsPolicy, String> {
        toml::from_str::<RawCors>(text)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn cors_tables_are_checked() {
        let policy = cors("origins = [\"HTTPS://App.example.com:8443\"]\nmethods = [\"get\", \"POST\"]\nheaders = [\"Content-Type\"]\nmax_age = \"10m\"").unwrap();
        assert_eq!(
            policy.origins,
            Some(vec!["https://app.example.com:8443".to_string()])
        );
        assert_eq!(policy.methods, [Method::GET, Method::POST]);
        assert_eq!(policy.headers, ["content-type"]);
        assert_eq!(policy.max_age, Some(Duration::from_secs(600)));
        assert!(!policy.credentials);
        assert_eq!(cors("origins = [\"*\"]").unwrap().origins, None);
        for (text, wanted) in [
            (
                "origins = [\"*\"]\ncredentials = true",
                "cannot go with credentials",
            ),
            ("origins = []", "at least one origin"),
            ("origins = [\"app.example.com\"]", "is not an origin"),
            ("origins = [\"https://a.example/path\"]", "is not an origin"),
            ("origins = [\"ftp://a.example\"]", "is not an origin"),
            (
                "origins = [\"https://a\"]\nmethods = [\"G T\"]",
                "is not a method",
            ),
            (
                "origins = [\"https://a\"]\nheaders = [\"a b\"]",
                "not a header name",
            ),
            (
                "origins = [\"https://a\"]\ncredentials = true\nheaders = [\"*\"]",
                "list the names",
            ),
            ("origins = [\"https://a\"]\nmax_age = 5", "max_age"),
            (
                "origins = [\"https://a\"]\nmaxage = \"5s\"",
                "unknown field",
            ),
        ] {
            let err = cors(text).unwrap_err();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }

    #[test]
    fn rate_limits_and_cache_settings_are_checked() {
        let limit = |text: &str| {
            toml::from_str::<RawRateLimit>(text)
                .map_err(|e| e.to_string())
                .and_then(|raw| raw.check())
        };
        let policy =
            limit("requests = 100\nper = \"1m\"\nburst = 20\nheader = \"X-Api-Key\"").unwrap();
        assert_eq!(
            (policy.requests, policy.per, policy.burst),
            (100, Duration::from_secs(60), 20)
        );
        assert_eq!(policy.header.unwrap().as_str(), "x-api-key");
        assert_eq!(limit("requests = 5\nper = \"1s\"").unwrap().burst, 5);
        assert!(limit("requests = 0\nper = \"1s\"")
            .unwrap_err()
            .contains("requests"));
        assert!(limit("requests = 1\nper = \"0s\"")
            .unwrap_err()
            .contains("per"));
        assert!(limit("requests = 1\nper = 1").unwrap_err().contains("per"));

        let cache = |text: &str| {
            toml::from_str::<RawCache>(text)
                .map_err(|e| e.to_string())
                .and_then(|raw| raw.check())
        };
        assert_eq!(cache("").unwrap(), CacheSettings::default());
        let set = cache(
            "enabled = false\nmax_size = \"1MiB\"\nmax_entry_size = \"64KiB\"\nx_cache = false",
        )
        .unwrap();
        assert_eq!(
            set,
            CacheSettings {
                enabled: false,
                max_size: 1 << 20,
                max_entry_size: 64 << 10,
                x_cache: false
            }
        );
        assert!(cache("max_size = \"1KiB\"")
            .unwrap_err()
            .contains("larger than max_size"));
        assert!(cache("max_size = \"lots\"")
            .unwrap_err()
            .contains("max_size"));
    }
}
