//! What the host does at the edge, before and around a guest: the shared
//! response cache, CORS and rate limits, as the manifest's policies say
//! (`crate::manifest::policies`). The request path applies them in
//! `crate::http::edge`.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `freshness.rs` | RFC 9111 for a shared cache: storable or not, fresh for how long, `Vary`, conditionals |
//! | `cache.rs` | [`ResponseCache`]: entries by URL and `Vary` values, the byte bound, purges |
//! | `cors.rs` | preflights answered by the host, the CORS headers of answers |
//! | `rate_limit.rs` | token buckets per route and client |

pub(crate) mod cache;
pub(crate) mod cors;
pub(crate) mod freshness;
pub(crate) mod rate_limit;

pub(crate) use cache::{Entry, ResponseCache, Standing};
pub(crate) use rate_limit::{RateLimiter, RateLimiters, Verdict};
