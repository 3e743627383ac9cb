//! Rate limits: a token bucket per client of a route, `burst` tokens deep,
//! refilled at `requests` per `per`. One request takes one token; with
//! none left the host answers `429` with `Retry-After` before the guest
//! runs. A route keeps its buckets across deploys that keep its policy.

use crate::manifest::RateLimitPolicy;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clients one route tracks at once. Past this, buckets that have filled
/// up again (clients that went quiet) are dropped first; a flood of new
/// addresses beyond that is served without a bucket rather than growing
/// the host's memory.
const MAX_CLIENTS: usize = 100_000;

/// What one request got from the limiter, for its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    /// The bucket's size.
    pub(crate) limit: u64,
    /// Whole tokens left after this request.
    pub(crate) remaining: u64,
    /// Seconds until the bucket is full again.
    pub(crate) reset: u64,
    /// Seconds until a refused client has a token (at least one).
    pub(crate) retry_after: u64,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One route's buckets.
pub(crate) struct RateLimiter {
    pub(crate) policy: RateLimitPolicy,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(policy: RateLimitPolicy) -> RateLimiter {
        RateLimiter {
            policy,
            buckets: Mutex::default(),
        }
    }

    /// Tokens per second.
    fn rate(&self) -> f64 {
        self.policy.requests as f64 / self.policy.per.as_secs_f64().max(1e-3)
    }

    /// Takes a token from `client`'s bucket at `now`, if it has one.
    pub(crate) fn check(&self, client: &str, now: Instant) -> Verdict {
        let burst = self.policy.burst as f64;
        let rate = self.rate();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let full = Bucket {
            tokens: burst,
            updated: now,
        };
        if !buckets.contains_key(client) {
            if buckets.len() >= MAX_CLIENTS {
                buckets.retain(|_, b| {
                    b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst
                });
            }
            if buckets.len() < MAX_CLIENTS {
                buckets.insert(client.to_string(), full);
            }
        }
        let mut untracked = full;
        let bucket = buckets.get_mut(client).unwrap_or(&mut untracked);
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let seconds = |tokens: f64| (tokens.max(0.0) / rate).ceil() as u64;
        Verdict {
            allowed,
            limit: self.policy.burst,
            remaining: bucket.tokens.floor() as u64,
            reset: seconds(burst - bucket.tokens),
            retry_after: seconds(1.0 - bucket.tokens).max(1),
        }
    }
}

/// Every route's limiter, by route pattern: a deploy that keeps a route's
/// pattern and policy keeps its buckets (a deploy is no way around a limit).
#[derive(Default)]
pub(crate) struct RateLimiters {
    by_route: Mutex<HashMap<String, Arc<RateLimiter>>>,
}

impl RateLimiters {
    /// The limiter for `route` under `policy`: the one it had if the policy
    /// is the same, else a new one.
    pub(crate) fn for_route(&self, route: &str, policy: &RateLimitPolicy) -> Arc<RateLimiter> {
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        match by_route.get(route) {
            Some(limiter) if limiter.policy == *policy => Arc::clone(limiter),
            _ => {
                let limiter = Arc::new(RateLimiter::new(policy.clone()));
                by_route.insert(route.to_string(), Arc::clone(&limiter));
                limiter
            }
        }
    }
}

/// The `RateLimit-Policy` value of a policy: its bucket and window, as the
/// IETF draft writes them (`20;w=12` for 20 requests refilled over 12 s).
pub(crate) fn policy_header(policy: &RateLimitPolicy) -> String {
    let window = Duration::from_secs_f64(
        policy.per.as_secs_f64() * policy.burst as f64 / policy.requests as f64,
    );
    format!("{};w={}", policy.burst, window.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u64, per: u64, burst: u64) -> RateLimiter {
        RateLimiter::new(RateLimitPolicy {
            requests,
            per: Duration::from_secs(per),
            burst,
            header: None,
        })
    }

    #[test]
    fn a_burst_passes_then_the_refill_rate_holds() {
        let limiter = limiter(60, 60, 5);
        let start = Instant::now();
        let verdicts: Vec<bool> = (0..7).map(|_| limiter.check("a", start).allowed).collect();
        assert_eq!(verdicts, [true, true, true, true, true, false, false]);
        let refused = limiter.check("a", start);
        assert_eq!(
            (refused.remaining, refused.retry_after, refused.reset),
            (0, 1, 5)
        );
        // Another client has its own bucket.
        assert!(limiter.check("b", start).allowed);
        // One token a second comes back.
        assert!(
            limiter
                .check("a", start + Duration::from_millis(1000))
                .allowed
        );
        assert!(
            !limiter
                .check("a", start + Duration::from_millis(1500))
                .allowed
        );
        let later = limiter.check("a", start + Duration::from_secs(60));
        assert_eq!((later.allowed, later.remaining), (true, 4));
    }

    #[test]
    fn buckets_survive_a_deploy_that_keeps_the_policy() {
        let limiters = RateLimiters::default();
        let policy = RateLimitPolicy {
            requests: 1,
            per: Duration::from_secs(60),
            burst: 1,
            header: None,
        };
        let first = limiters.for_route("/a", &policy);
        assert!(first.check("c", Instant::now()).allowed);
        let same = limiters.for_route("/a", &policy);
        assert!(!same.check("c", Instant::now()).allowed);
        let changed = limiters.for_route(
            "/a",
            &RateLimitPolicy {
                requests: 2,
                ..policy.clone()
            },
        );
        assert!(changed.check("c", Instant::now()).allowed);
        assert_eq!(
            policy_header(&RateLimitPolicy {
                requests: 100,
                per: Duration::from_secs(60),
                burst: 20,
                header: None
            }),
            "20;w=12"
        );
    }
}
