//! The host's shared response cache: answers stored by URL and by the
//! request headers their `Vary` names, within a byte budget, evicted least
//! recently used first (the clock algorithm: a hit only sets a flag, so
//! hits share a read lock).
//!
//! An entry remembers the route that made it by the route's fingerprint
//! (its component and settings): a deploy that changes a route drops that
//! route's entries, and no entry is ever served by a route that did not
//! make it.

use super::freshness::{vary_value, Freshness};
use crate::manifest::CacheSettings;
use crate::metrics::CacheMetrics;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

/// Variants one URL keeps (one per distinct set of `Vary` values); past
/// this the oldest goes, so a header with endless values cannot pile up
/// entries under one URL.
const MAX_VARIANTS: usize = 32;

/// Bytes counted for an entry besides its body and headers (the maps, the
/// key, the bookkeeping).
const ENTRY_OVERHEAD: u64 = 256;

/// One stored answer.
pub(crate) struct Entry {
    pub(crate) status: StatusCode,
    /// As it will be sent (without `Set-Cookie`, `Cache-Tag` and the
    /// framing headers).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// When the route's answer was received.
    pub(crate) stored: Instant,
    pub(crate) freshness: Freshness,
    /// The request's values of the headers `Vary` names.
    pub(crate) vary: Vec<(String, Option<String>)>,
    /// `Cache-Tag` values, for purges.
    pub(crate) tags: Vec<String>,
    /// The URL path, for purges by prefix.
    pub(crate) path: String,
    /// The fingerprint of the route that answered.
    pub(crate) route: u64,
    size: u64,
    /// Used since the clock hand last passed.
    referenced: AtomicBool,
    /// One request is refreshing it now.
    refreshing: AtomicBool,
}

/// Where an entry stands at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    Fresh,
    /// Past its lifetime, within `stale-while-revalidate`.
    StaleWhileRevalidate,
    /// Only usable if the route confirms it (a `304`).
    MustRevalidate,
}

impl Entry {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        stored: Instant,
        freshness: Freshness,
        vary: Vec<(String, Option<String>)>,
        tags: Vec<String>,
        path: String,
        route: u64,
    ) -> Entry {
        let head: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        let extra: usize = vary
            .iter()
            .map(|(name, value)| name.len() + value.as_ref().map_or(0, String::len))
            .chain(tags.iter().map(String::len))
            .sum::<usize>()
            + path.len();
        Entry {
            size: ENTRY_OVERHEAD + (body.len() + head + extra) as u64,
            status,
            headers,
            body,
            stored,
            freshness,
            vary,
            tags,
            path,
            route,
            referenced: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
        }
    }

    /// Its age at `now` (the `Age` header's value).
    pub(crate) fn age(&self, now: Instant) -> Duration {
        self.freshness.initial_age + now.saturating_duration_since(self.stored)
    }

    pub(crate) fn standing(&self, now: Instant) -> Standing {
        let age = self.age(now);
        let fresh = self.freshness.lifetime;
        if self.freshness.revalidate_always {
            Standing::MustRevalidate
        } else if age < fresh {
            Standing::Fresh
        } else if age < fresh + self.freshness.stale_while_revalidate {
            Standing::StaleWhileRevalidate
        } else {
            Standing::MustRevalidate
        }
    }

    /// Claims the one refresh of this entry; false while another runs.
    pub(crate) fn claim_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// The refresh ended without replacing the entry: the next request may
    /// try again.
    pub(crate) fn release_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    fn matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| vary_value(request, name) == *value)
    }
}

/// The cache, shared by every request and deployment of one host.
pub(crate) struct ResponseCache {
    pub(crate) settings: CacheSettings,
    inner: RwLock<Store>,
    pub(crate) metrics: Arc<CacheMetrics>,
}

#[derive(Default)]
struct Store {
    /// Entries by URL key, each URL's variants oldest first.
    entries: HashMap<Arc<str>, Vec<Arc<Entry>>>,
    /// Every entry in the order the clock hand visits them.
    clock: VecDeque<(Arc<str>, Weak<Entry>)>,
    live: usize,
    bytes: u64,
}

impl ResponseCache {
    pub(crate) fn new(settings: CacheSettings, metrics: Arc<CacheMetrics>) -> ResponseCache {
        ResponseCache {
            settings,
            inner: RwLock::default(),
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Store> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Store> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry stored under `key` for a request with these headers, made
    /// by the route with fingerprint `route`.
    pub(crate) fn get(&self, key: &str, request: &HeaderMap, route: u64) -> Option<Arc<Entry>> {
        let store = self.read();
        let entry = store
            .entries
            .get(key)?
            .iter()
            .rev()
            .find(|entry| entry.route == route && entry.matches(request))?;
        entry.referenced.store(true, Ordering::Relaxed);
        Some(Arc::clone(entry))
    }

    /// Stores `entry` under `key`, replacing the variant with the same
    /// `Vary` values (and any a changed route made), then evicts until the
    /// cache is within its size. An entry over `max_entry_size` is not kept.
    pub(crate) fn insert(&self, key: &str, entry: Entry) {
        if entry.size > self.settings.max_entry_size {
            self.metrics.count_too_large();
            return;
        }
        let entry = Arc::new(entry);
        let mut store = self.write();
        let key: Arc<str> = match store.entries.get_key_value(key) {
            Some((existing, _)) => Arc::clone(existing),
            None => Arc::from(key),
        };
        let mut dropped = Vec::new();
        let variants = store.entries.entry(Arc::clone(&key)).or_default();
        variants.retain(|old| {
            let keep = old.route == entry.route && old.vary != entry.vary;
            if !keep {
                dropped.push(Arc::clone(old));
            }
            keep
        });
        if variants.len() >= MAX_VARIANTS {
            dropped.push(variants.remove(0));
        }
        variants.push(Arc::clone(&entry));
        for old in &dropped {
            store.forget(old);
        }
        store.live += 1;
        store.bytes += entry.size;
        store.clock.push_back((key, Arc::downgrade(&entry)));
        self.evict(&mut store);
        self.metrics.held(store.bytes, store.live);
    }

    /// Evicts entries not used since the hand last passed until the store is
    /// within `max_size`.
    fn evict(&self, store: &mut Store) {
        while store.bytes > self.settings.max_size {
            let Some((key, weak)) = store.clock.pop_front() else {
                break;
            };
            let Some(entry) = weak.upgrade() else {
                continue;
            };
            if entry.referenced.swap(false, Ordering::Relaxed) {
                store.clock.push_back((key, weak));
                continue;
            }
            store.remove(&key, &entry);
            self.metrics.count_eviction();
        }
        store.compact();
    }

    /// Drops every entry `doomed` picks; how many.
    fn purge(&self, doomed: impl Fn(&Entry) -> bool) -> usize {
        let mut store = self.write();
        let mut gone = Vec::new();
        for (key, variants) in &store.entries {
            gone.extend(
                variants
                    .iter()
                    .filter(|entry| doomed(entry))
                    .map(|entry| (Arc::clone(key), Arc::clone(entry))),
            );
        }
        for (key, entry) in &gone {
            store.remove(key, entry);
        }
        store.compact();
        self.metrics.held(store.bytes, store.live);
        gone.len()
    }

    /// Drops the entries under a URL path starting with `prefix`.
    pub(crate) fn purge_prefix(&self, prefix: &str) -> usize {
        self.purge(|entry| entry.path.starts_with(prefix))
    }

    /// Drops the entries tagged `tag` (by a `Cache-Tag` header).
    pub(crate) fn purge_tag(&self, tag: &str) -> usize {
        self.purge(|entry| entry.tags.iter().any(|t| t == tag))
    }

    /// Keeps only the entries of routes in `routes` (a deployment's
    /// fingerprints): a route whose component or settings changed is a
    /// route no entry belongs to.
    pub(crate) fn keep_routes(&self, routes: &HashSet<u64>) -> usize {
        self.purge(|entry| !routes.contains(&entry.route))
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.read().bytes
    }
}

impl Store {
    /// Replaced and purged entries leave dead hands on the clock: drop them
    /// once they outnumber the live ones.
    fn compact(&mut self) {
        if self.clock.len() > 2 * self.live + 64 {
            self.clock.retain(|(_, weak)| weak.strong_count() > 0);
        }
    }

    /// Takes `entry` out of the URL's variants and the counts.
    fn remove(&mut self, key: &str, entry: &Arc<Entry>) {
        let Some(variants) = self.entries.get_mut(key) else {
            return;
        };
        let before = variants.len();
        variants.retain(|e| !Arc::ptr_eq(e, entry));
        let (removed, empty) = (variants.len() < before, variants.is_empty());
        if empty {
            self.entries.remove(key);
        }
        if removed {
            self.forget(entry);
        }
    }

    /// Counts out an entry already taken out of its URL's variants.
    fn forget(&mut self, entry: &Entry) {
        self.live = self.live.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(entry.size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn entry(path: &str, body: usize, route: u64, vary: Option<&str>, tags: &[&str]) -> Entry {
        Entry::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(vec![b'x'; body]),
            Instant::now(),
            Freshness {
                lifetime: Duration::from_secs(60),
                stale_while_revalidate: Duration::ZERO,
                revalidate_always: false,
                initial_age: Duration::ZERO,
            },
            vary.map(|v| vec![("accept-language".to_string(), Some(v.to_string()))])
                .unwrap_or_default(),
            tags.iter().map(|t| t.to_string()).collect(),
            path.to_string(),
            route,
        )
    }

    fn cache(max_size: u64) -> ResponseCache {
        ResponseCache::new(
            CacheSettings {
                max_size,
                max_entry_size: max_size,
                ..CacheSettings::default()
            },
            Arc::default(),
        )
    }

    fn language(value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("accept-language", HeaderValue::from_str(value).unwrap());
        map
    }

    #[test]
    fn variants_by_vary_values_and_by_route() {
        let cache = cache(1 << 20);
        cache.insert("/a", entry("/a", 10, 1, Some("en"), &[]));
        cache.insert("/a", entry("/a", 20, 1, Some("fr"), &[]));
        assert_eq!(cache.get("/a", &language("en"), 1).unwrap().body.len(), 10);
        assert_eq!(cache.get("/a", &language("fr"), 1).unwrap().body.len(), 20);
        assert!(cache.get("/a", &language("de"), 1).is_none());
        assert!(cache.get("/a", &HeaderMap::new(), 1).is_none());
        // Another route's entry is never served, and its answer replaces them.
        assert!(cache.get("/a", &language("en"), 2).is_none());
        cache.insert("/a", entry("/a", 30, 2, Some("en"), &[]));
        assert!(cache.get("/a", &language("fr"), 1).is_none());
        assert_eq!(cache.metrics.entries(), 1);
    }

    #[test]
    fn the_size_bound_holds_and_recently_used_entries_stay() {
        let each = entry("/0", 1000, 1, None, &[]).size;
        let cache = cache(each * 10);
        cache.insert("/keep", entry("/keep", 1000, 1, None, &[]));
        for i in 0..1000 {
            let path = format!("/{i}");
            cache.insert(&path, entry(&path, 1000, 1, None, &[]));
            // Used between insertions: the clock gives it another turn.
            assert!(
                cache.get("/keep", &HeaderMap::new(), 1).is_some(),
                "evicted at {i}"
            );
            assert!(cache.bytes() <= each * 10);
        }
        assert!(cache.metrics.evictions() >= 990);
        // Entries over the entry limit are not stored at all.
        let small = ResponseCache::new(
            CacheSettings {
                max_entry_size: 100,
                ..CacheSettings::default()
            },
            Arc::default(),
        );
        small.insert("/big", entry("/big", 1000, 1, None, &[]));
        assert!(small.get("/big", &HeaderMap::new(), 1).is_none());
    }

    #[test]
    fn purges_by_prefix_tag_and_route() {
        let cache = cache(1 << 20);
        cache.insert("/api/posts", entry("/api/posts", 1, 1, None, &["posts"]));
        cache.insert(
            "/api/posts/1",
            entry("/api/posts/1", 1, 2, None, &["posts", "post-1"]),
        );
        cache.insert("/api/data", entry("/api/data", 1, 3, None, &[]));
        assert_eq!(cache.purge_tag("post-1"), 1);
        assert_eq!(cache.purge_prefix("/api/p"), 1);
        assert!(cache.get("/api/data", &HeaderMap::new(), 3).is_some());
        assert_eq!(cache.keep_routes(&HashSet::from([1, 2])), 1);
        assert_eq!(cache.bytes(), 0);
    }
}
