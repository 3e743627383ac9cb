//! One conformance suite for every key-value backend: the embedded one, and
//! real Redis and PostgreSQL servers started for the test. Every case runs
//! against each backend and expects the same answers.

mod support;

use edgehost::capabilities::kv::{DiskKv, KvBackend, KvError, PostgresKv, RedisKv, Swap};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use support::backends::{PostgresServer, RedisServer};

type Backend = Arc<dyn KvBackend>;
type Case = fn(Backend) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every case, by name. Each uses stores of its own, so cases sharing a
/// server do not see each other's keys.
const CASES: &[(&str, Case)] = &[
    ("get, set, delete, exists", |kv| Box::pin(basics(kv))),
    ("list-keys pages in key order", |kv| Box::pin(paging(kv))),
    ("list-keys under concurrent writes", |kv| {
        Box::pin(paging_while_writing(kv))
    }),
    ("increment", |kv| Box::pin(increment(kv))),
    ("increment under contention", |kv| {
        Box::pin(increment_contention(kv))
    }),
    ("compare-and-swap", |kv| Box::pin(compare_and_swap(kv))),
    ("compare-and-swap under contention", |kv| {
        Box::pin(cas_contention(kv))
    }),
    ("batch calls", |kv| Box::pin(batch(kv))),
    ("two stores keep separate keys", |kv| {
        Box::pin(separate_stores(kv))
    }),
    ("the largest value and key a route may store", |kv| {
        Box::pin(large(kv))
    }),
    ("batch writes of overlapping keys at once", |kv| {
        Box::pin(batch_contention(kv))
    }),
];

fn run_all(kv: Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (name, case) in CASES {
        eprintln!("{} backend: {name}", kv.kind());
        runtime.block_on(case(Arc::clone(&kv)));
    }
}

#[test]
fn the_embedded_backend_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    run_all(Arc::new(DiskKv::open(dir.path()).unwrap()));
}

#[test]
fn the_redis_backend_passes_the_suite() {
    let server = RedisServer::start();
    run_all(Arc::new(RedisKv::connect(&server.url()).unwrap()));
}

#[test]
fn the_postgres_backend_passes_the_suite() {
    let server = PostgresServer::start();
    run_all(Arc::new(PostgresKv::connect(&server.url()).unwrap()));
}

async fn basics(kv: Backend) {
    let s = "basics";
    assert_eq!(kv.get(s, "a").await.unwrap(), None);
    assert!(!kv.exists(s, "a").await.unwrap());
    kv.set(s, "a", b"one").await.unwrap();
    assert_eq!(kv.get(s, "a").await.unwrap().as_deref(), Some(&b"one"[..]));
    assert!(kv.exists(s, "a").await.unwrap());
    kv.set(s, "a", b"two").await.unwrap();
    assert_eq!(kv.get(s, "a").await.unwrap().as_deref(), Some(&b"two"[..]));
    // Any bytes, any key text.
    let odd_key = "ключ/with spaces:and\u{1f600}";
    let bytes: Vec<u8> = (0..=255).collect();
    kv.set(s, odd_key, &bytes).await.unwrap();
    assert_eq!(kv.get(s, odd_key).await.unwrap(), Some(bytes));
    kv.set(s, "empty", b"").await.unwrap();
    assert_eq!(kv.get(s, "empty").await.unwrap().as_deref(), Some(&b""[..]));
    kv.delete(s, "a").await.unwrap();
    assert_eq!(kv.get(s, "a").await.unwrap(), None);
    assert!(!kv.exists(s, "a").await.unwrap());
    kv.delete(s, "never-there").await.unwrap();
}

/// Every key of `store`, page by page, each page at most `limit`.
async fn list_all(kv: &Backend, store: &str, limit: usize) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = kv.list_keys(store, after.as_deref(), limit).await.unwrap();
        assert!(page.len() <= limit);
        keys.extend(page.iter().cloned());
        if !more {
            return keys;
        }
        assert!(!page.is_empty(), "more keys promised after an empty page");
        after = page.last().cloned();
    }
}

async fn paging(kv: Backend) {
    let s = "paging";
    assert_eq!(kv.list_keys(s, None, 10).await.unwrap(), (vec![], false));
    let mut written: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
    let entries: Vec<(String, Vec<u8>)> =
        written.iter().map(|k| (k.clone(), b"v".to_vec())).collect();
    for chunk in entries.chunks(500) {
        kv.set_many(s, chunk).await.unwrap();
    }
    written.sort();
    assert_eq!(
        list_all(&kv, s, 1000).await,
        written,
        "byte order, every key once"
    );
    let (first, more) = kv.list_keys(s, None, 3).await.unwrap();
    assert_eq!(
        (first, more),
        (vec!["k0".into(), "k1".into(), "k10".into()], true)
    );
    let (next, _) = kv.list_keys(s, Some("k10"), 2).await.unwrap();
    assert_eq!(next, ["k100", "k1000"]);
    // Uppercase before lowercase, as bytes compare.
    kv.set("paging-order", "b", b"").await.unwrap();
    kv.set("paging-order", "B", b"").await.unwrap();
    kv.set("paging-order", "a", b"").await.unwrap();
    assert_eq!(list_all(&kv, "paging-order", 10).await, ["B", "a", "b"]);
}

async fn paging_while_writing(kv: Backend) {
    let s = "paging-live";
    let stable: Vec<String> = (0..600).map(|i| format!("s{i:04}")).collect();
    for key in &stable {
        kv.set(s, key, b"v").await.unwrap();
    }
    let doomed: Vec<String> = (0..300).map(|i| format!("s{i:04}-doomed")).collect();
    for key in &doomed {
        kv.set(s, key, b"v").await.unwrap();
    }
    // Page through while another task adds keys before and after the
    // cursor and deletes others.
    let writer = {
        let kv = Arc::clone(&kv);
        let doomed = doomed.clone();
        tokio::spawn(async move {
            for (i, key) in doomed.iter().enumerate() {
                kv.delete(s, key).await.unwrap();
                kv.set(s, &format!("s{i:04}-new"), b"v").await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = kv.list_keys(s, after.as_deref(), 50).await.unwrap();
        listed.extend(page.iter().cloned());
        if !more {
            break;
        }
        after = page.last().cloned();
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no key listed twice");
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "in order");
    for key in &stable {
        assert!(
            unique.contains(key),
            "{key}, present throughout, was not listed"
        );
    }
}

async fn increment(kv: Backend) {
    let s = "counters";
    assert_eq!(
        kv.increment(s, "c", 5).await.unwrap(),
        5,
        "a missing key counts from 0"
    );
    assert_eq!(kv.increment(s, "c", 1).await.unwrap(), 6);
    assert_eq!(kv.increment(s, "c", -10).await.unwrap(), -4);
    assert_eq!(
        kv.get(s, "c").await.unwrap().as_deref(),
        Some(&b"-4"[..]),
        "decimal text"
    );
    kv.set(s, "written", b"41").await.unwrap();
    assert_eq!(
        kv.increment(s, "written", 1).await.unwrap(),
        42,
        "a set counter counts on"
    );
    kv.set(s, "text", b"hello").await.unwrap();
    let refused = kv.increment(s, "text", 1).await.unwrap_err();
    assert!(
        matches!(&refused, KvError::Refused(reason) if reason.contains("not a counter")),
        "{refused:?}"
    );
    assert_eq!(
        kv.get(s, "text").await.unwrap().as_deref(),
        Some(&b"hello"[..]),
        "unchanged"
    );
    // Only plain decimal text is a counter, on every backend.
    for not_plain in [
        "+5",
        "007",
        " 5",
        "5 ",
        "-0",
        "1e3",
        "0x1F",
        "",
        "99999999999999999999",
    ] {
        kv.set(s, "odd", not_plain.as_bytes()).await.unwrap();
        let refused = kv.increment(s, "odd", 1).await.unwrap_err();
        assert!(
            matches!(&refused, KvError::Refused(reason) if reason.contains("not a counter")),
            "{not_plain:?}: {refused:?}"
        );
    }
    kv.delete(s, "odd").await.unwrap();
    kv.set(s, "big", i64::MAX.to_string().as_bytes())
        .await
        .unwrap();
    let overflow = kv.increment(s, "big", 1).await.unwrap_err();
    assert!(
        matches!(&overflow, KvError::Refused(reason) if reason.contains("overflow")),
        "{overflow:?}"
    );
    let keys = list_all(&kv, s, 10).await;
    assert_eq!(
        keys,
        ["big", "c", "text", "written"],
        "a counter is listed like any key"
    );
}

async fn increment_contention(kv: Backend) {
    let s = "counters-busy";
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let kv = Arc::clone(&kv);
            tokio::spawn(async move {
                for _ in 0..200 {
                    kv.increment(s, "hits", 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        kv.get(s, "hits").await.unwrap().as_deref(),
        Some(&b"1600"[..])
    );
}

async fn compare_and_swap(kv: Backend) {
    let s = "cas";
    assert_eq!(
        kv.compare_and_swap(s, "k", None, b"first").await.unwrap(),
        Swap::Done
    );
    assert_eq!(
        kv.compare_and_swap(s, "k", None, b"again").await.unwrap(),
        Swap::Changed(Some(b"first".to_vec())),
        "expected absent, but it is there"
    );
    assert_eq!(
        kv.compare_and_swap(s, "k", Some(b"stale"), b"x")
            .await
            .unwrap(),
        Swap::Changed(Some(b"first".to_vec()))
    );
    assert_eq!(
        kv.compare_and_swap(s, "k", Some(b"first"), b"second")
            .await
            .unwrap(),
        Swap::Done
    );
    assert_eq!(
        kv.get(s, "k").await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(
        kv.compare_and_swap(s, "gone", Some(b"x"), b"y")
            .await
            .unwrap(),
        Swap::Changed(None),
        "expected a value, but there is none"
    );
    assert_eq!(kv.get(s, "gone").await.unwrap(), None);
    assert_eq!(
        list_all(&kv, s, 10).await,
        ["k"],
        "a swapped-in key is listed"
    );
}

async fn cas_contention(kv: Backend) {
    let s = "cas-busy";
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let kv = Arc::clone(&kv);
            tokio::spawn(async move {
                for _ in 0..50 {
                    loop {
                        let current = kv.get(s, "n").await.unwrap();
                        let n: u64 = current
                            .as_deref()
                            .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                        let next = (n + 1).to_string();
                        match kv
                            .compare_and_swap(s, "n", current.as_deref(), next.as_bytes())
                            .await
                            .unwrap()
                        {
                            Swap::Done => break,
                            Swap::Changed(_) => continue,
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(kv.get(s, "n").await.unwrap().as_deref(), Some(&b"400"[..]));
}

async fn batch(kv: Backend) {
    let s = "batch";
    let entries = vec![
        ("a".to_string(), b"1".to_vec()),
        ("b".to_string(), b"2".to_vec()),
        ("a".to_string(), b"3".to_vec()),
    ];
    kv.set_many(s, &entries).await.unwrap();
    let keys = ["b", "missing", "a", "b"].map(String::from);
    assert_eq!(
        kv.get_many(s, &keys).await.unwrap(),
        [
            Some(b"2".to_vec()),
            None,
            Some(b"3".to_vec()),
            Some(b"2".to_vec())
        ],
        "in the order asked, a key asked twice answered twice; the last value given for a key wins"
    );
    assert_eq!(
        kv.get_many(s, &[]).await.unwrap(),
        Vec::<Option<Vec<u8>>>::new()
    );
    kv.set_many(s, &[]).await.unwrap();
    kv.delete_many(s, &["a".to_string(), "nope".to_string()])
        .await
        .unwrap();
    kv.delete_many(s, &[]).await.unwrap();
    assert_eq!(list_all(&kv, s, 10).await, ["b"]);
}

async fn separate_stores(kv: Backend) {
    kv.set("left", "shared", b"L").await.unwrap();
    kv.set("right", "shared", b"R").await.unwrap();
    kv.set("right", "only-right", b"R").await.unwrap();
    assert_eq!(
        kv.get("left", "shared").await.unwrap().as_deref(),
        Some(&b"L"[..])
    );
    assert_eq!(
        kv.get("right", "shared").await.unwrap().as_deref(),
        Some(&b"R"[..])
    );
    assert_eq!(list_all(&kv, "left", 10).await, ["shared"]);
    assert_eq!(list_all(&kv, "right", 10).await, ["only-right", "shared"]);
    kv.delete("left", "shared").await.unwrap();
    assert_eq!(
        kv.get("right", "shared").await.unwrap().as_deref(),
        Some(&b"R"[..])
    );
    assert_eq!(kv.increment("left", "n", 1).await.unwrap(), 1);
    assert_eq!(kv.increment("right", "n", 5).await.unwrap(), 5);
    // A store whose name starts like another's is still its own.
    kv.set("left-more", "x", b"").await.unwrap();
    assert_eq!(list_all(&kv, "left", 10).await, ["n"]);
}

/// A value of the default `max_kv_value` (1 MiB) and a key of the default
/// `max_kv_key` (512 bytes) go in and come back whole (the limits themselves
/// are the host's, before any backend: see shared_kv.rs).
async fn large(kv: Backend) {
    let s = "large";
    let value: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let key = "k".repeat(512);
    kv.set(s, &key, &value).await.unwrap();
    assert_eq!(kv.get(s, &key).await.unwrap(), Some(value.clone()));
    assert_eq!(
        kv.get_many(s, std::slice::from_ref(&key)).await.unwrap(),
        [Some(value)]
    );
    assert_eq!(list_all(&kv, s, 10).await, [key]);
}

/// Several writers setting and deleting the same keys in batches, each in
/// its own order: none fails (a database locking rows in the order given
/// could deadlock).
async fn batch_contention(kv: Backend) {
    let s = "batch-busy";
    let tasks: Vec<_> = (0..4)
        .map(|writer| {
            let kv = Arc::clone(&kv);
            tokio::spawn(async move {
                for round in 0..20 {
                    let mut entries: Vec<(String, Vec<u8>)> = (0..50)
                        .map(|i| (format!("k{i:02}"), format!("{writer}-{round}").into_bytes()))
                        .collect();
                    if writer % 2 == 1 {
                        entries.reverse();
                    }
                    kv.set_many(s, &entries).await.unwrap();
                    let keys: Vec<String> = entries
                        .iter()
                        .rev()
                        .take(10)
                        .map(|(k, _)| k.clone())
                        .collect();
                    kv.delete_many(s, &keys).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(list_all(&kv, s, 100).await.len() <= 50);
}
