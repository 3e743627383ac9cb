//! The response cache's counters: lookups by result, evictions, answers
//! too large to keep, and what it holds now.

use super::header;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a cacheable request was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// From a fresh entry; no guest ran.
    Hit,
    /// By the route (nothing usable was stored).
    Miss,
    /// From a stale entry while one request refreshes it.
    Stale,
    /// From an entry the route confirmed with a `304`.
    Revalidated,
}

impl Lookup {
    const ALL: [Lookup; 4] = [
        Lookup::Hit,
        Lookup::Miss,
        Lookup::Stale,
        Lookup::Revalidated,
    ];

    fn label(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Stale => "stale",
            Lookup::Revalidated => "revalidated",
        }
    }
}

#[derive(Default)]
pub(crate) struct CacheMetrics {
    lookups: [AtomicU64; Lookup::ALL.len()],
    evictions: AtomicU64,
    too_large: AtomicU64,
    purged: AtomicU64,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl CacheMetrics {
    pub(crate) fn count(&self, lookup: Lookup) {
        self.lookups[lookup as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_eviction(&self) {
        self.evictions.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_too_large(&self) {
        self.too_large.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_purged(&self, entries: usize) {
        self.purged.fetch_add(entries as u64, Ordering::Relaxed);
    }

    /// What the cache holds after a change.
    pub(crate) fn held(&self, bytes: u64, entries: usize) {
        self.bytes.store(bytes, Ordering::Relaxed);
        self.entries.store(entries as u64, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    pub(super) fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            out,
            "edgehost_cache_requests_total",
            "counter",
            "Cacheable requests (GET and HEAD on routes with the cache on), by how they were served.",
        );
        for lookup in Lookup::ALL {
            let _ = writeln!(
                out,
                "edgehost_cache_requests_total{{result=\"{}\"}} {}",
                lookup.label(),
                load(&self.lookups[lookup as usize])
            );
        }
        for (name, help, value) in [
            (
                "edgehost_cache_evictions_total",
                "Entries evicted to keep the cache within its max_size.",
                &self.evictions,
            ),
            (
                "edgehost_cache_too_large_total",
                "Cacheable answers not stored for being over max_entry_size.",
                &self.too_large,
            ),
            (
                "edgehost_cache_purged_total",
                "Entries dropped by purges and by deploys that changed their route.",
                &self.purged,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", load(value));
        }
        for (name, help, value) in [
            (
                "edgehost_cache_bytes",
                "Bytes the cache holds now.",
                &self.bytes,
            ),
            (
                "edgehost_cache_entries",
                "Entries the cache holds now.",
                &self.entries,
            ),
        ] {
            header(out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", load(value));
        }
    }
}
