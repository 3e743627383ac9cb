//! SQL databases' counters: queries and batches by result, and their
//! latency, per database.

use super::header;
use super::histogram::{Histogram, KV_BUCKETS};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a guest ran, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlOp {
    Query,
    Batch,
}

impl SqlOp {
    const ALL: [SqlOp; 2] = [SqlOp::Query, SqlOp::Batch];

    fn label(self) -> &'static str {
        match self {
            SqlOp::Query => "query",
            SqlOp::Batch => "batch",
        }
    }
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SqlResult {
    Ok,
    /// The database could not be reached, or did not answer in time.
    Unavailable,
    /// Refused by the host before or while it ran (a limit, the sandbox).
    Refused,
    /// A constraint refused the change.
    Constraint,
    /// A wrong statement or another database error.
    Error,
}

impl SqlResult {
    const ALL: [SqlResult; 5] = [
        SqlResult::Ok,
        SqlResult::Unavailable,
        SqlResult::Refused,
        SqlResult::Constraint,
        SqlResult::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            SqlResult::Ok => "ok",
            SqlResult::Unavailable => "unavailable",
            SqlResult::Refused => "refused",
            SqlResult::Constraint => "constraint",
            SqlResult::Error => "error",
        }
    }
}

/// One database's counters.
pub(crate) struct SqlMetrics {
    /// Its backend's kind, as a label.
    backend: &'static str,
    queries: [[AtomicU64; SqlResult::ALL.len()]; SqlOp::ALL.len()],
    latency: Histogram,
}

impl SqlMetrics {
    pub(crate) fn new(backend: &'static str) -> SqlMetrics {
        SqlMetrics {
            backend,
            queries: Default::default(),
            latency: Histogram::new(KV_BUCKETS),
        }
    }

    /// Counts one query or batch that took `elapsed`.
    pub(crate) fn record(&self, op: SqlOp, result: SqlResult, elapsed: Duration) {
        self.queries[op as usize][result as usize].fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
    }
}

/// The SQL families, for `databases` (names already escaped).
pub(super) fn render(out: &mut String, databases: &[(String, std::sync::Arc<SqlMetrics>)]) {
    header(
        out,
        "edgehost_sql_queries_total",
        "counter",
        "SQL queries and batches, by database, kind and result (ok, unavailable, refused, constraint, error).",
    );
    for (database, m) in databases {
        for op in SqlOp::ALL {
            for result in SqlResult::ALL {
                let count = m.queries[op as usize][result as usize].load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "edgehost_sql_queries_total{{database=\"{database}\",backend=\"{}\",op=\"{}\",result=\"{}\"}} {count}",
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
        "edgehost_sql_query_duration_seconds",
        "histogram",
        "Time one SQL query or batch took, by database.",
    );
    for (database, m) in databases {
        m.latency.render(
            out,
            "edgehost_sql_query_duration_seconds",
            &format!("database=\"{database}\",backend=\"{}\"", m.backend),
        );
    }
}
