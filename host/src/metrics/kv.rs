//! Key-value stores' counters: operations by kind and result, and their
//! latency, per store.

use super::header;
use super::histogram::{Histogram, KV_BUCKETS};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A key-value operation, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvOp {
    Get,
    Set,
    Delete,
    Exists,
    ListKeys,
    Increment,
    CompareAndSwap,
    GetMany,
    SetMany,
    DeleteMany,
}

impl KvOp {
    const ALL: [KvOp; 10] = [
        KvOp::Get,
        KvOp::Set,
        KvOp::Delete,
        KvOp::Exists,
        KvOp::ListKeys,
        KvOp::Increment,
        KvOp::CompareAndSwap,
        KvOp::GetMany,
        KvOp::SetMany,
        KvOp::DeleteMany,
    ];

    fn label(self) -> &'static str {
        match self {
            KvOp::Get => "get",
            KvOp::Set => "set",
            KvOp::Delete => "delete",
            KvOp::Exists => "exists",
            KvOp::ListKeys => "list_keys",
            KvOp::Increment => "increment",
            KvOp::CompareAndSwap => "compare_and_swap",
            KvOp::GetMany => "get_many",
            KvOp::SetMany => "set_many",
            KvOp::DeleteMany => "delete_many",
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KvResult {
    Ok,
    /// The backend could not be reached, or did not answer in time.
    Unavailable,
    /// Refused or failed otherwise.
    Error,
}

impl KvResult {
    const ALL: [KvResult; 3] = [KvResult::Ok, KvResult::Unavailable, KvResult::Error];

    fn label(self) -> &'static str {
        match self {
            KvResult::Ok => "ok",
            KvResult::Unavailable => "unavailable",
            KvResult::Error => "error",
        }
    }
}

/// One store's counters.
pub(crate) struct KvMetrics {
    /// Its backend's kind, as a label.
    backend: &'static str,
    operations: [[AtomicU64; KvResult::ALL.len()]; KvOp::ALL.len()],
    latency: Histogram,
}

impl KvMetrics {
    pub(crate) fn new(backend: &'static str) -> KvMetrics {
        KvMetrics {
            backend,
            operations: Default::default(),
            latency: Histogram::new(KV_BUCKETS),
        }
    }

    /// Counts one operation that took `elapsed`.
    pub(crate) fn record(&self, op: KvOp, result: KvResult, elapsed: Duration) {
        self.operations[op as usize][result as usize].fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
    }
}

/// The key-value families, for `stores` (names already escaped).
pub(super) fn render(out: &mut String, stores: &[(String, Arc<KvMetrics>)]) {
    header(
        out,
        "edgehost_kv_operations_total",
        "counter",
        "Key-value operations, by store, operation and result (ok, unavailable, error).",
    );
    for (store, m) in stores {
        for op in KvOp::ALL {
            for result in KvResult::ALL {
                let count = m.operations[op as usize][result as usize].load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "edgehost_kv_operations_total{{store=\"{store}\",backend=\"{}\",op=\"{}\",result=\"{}\"}} {count}",
                        m.backend,
                        op.label(),
                        result.label()
                    );
                }
            }
        }
    }
    header(
        out,
        "edgehost_kv_operation_duration_seconds",
        "histogram",
        "Time one key-value operation took, by store.",
    );
    for (store, m) in stores {
        m.latency.render(
            out,
            "edgehost_kv_operation_duration_seconds",
            &format!("store=\"{store}\",backend=\"{}\"", m.backend),
        );
    }
}
