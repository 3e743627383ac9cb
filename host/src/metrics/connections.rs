//! The public listener's connections: open now, refused by which limit,
//! closed by which deadline.

use super::header;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a connection was refused: the limit it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections`
    Total,
    /// `max_connections_per_client`
    PerClient,
}

/// The public listener's connection counters.
#[derive(Default)]
pub(crate) struct ConnectionMetrics {
    open: AtomicI64,
    refused_total: AtomicU64,
    refused_per_client: AtomicU64,
    idle_closed: AtomicU64,
    write_timeouts: AtomicU64,
}

impl ConnectionMetrics {
    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, why: Refusal) {
        match why {
            Refusal::Total => &self.refused_total,
            Refusal::PerClient => &self.refused_per_client,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn idle_closed(&self) {
        self.idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn write_timed_out(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        header(
            out,
            "edgehost_connections_open",
            "gauge",
            "Client connections open now on the public listener.",
        );
        let _ = writeln!(
            out,
            "edgehost_connections_open {}",
            self.open.load(Ordering::Relaxed)
        );
        header(
            out,
            "edgehost_connections_refused_total",
            "counter",
            "Connections refused with a 503 at accept, by the limit they hit.",
        );
        for (limit, count) in [
            ("max_connections", &self.refused_total),
            ("max_connections_per_client", &self.refused_per_client),
        ] {
            let _ = writeln!(
                out,
                "edgehost_connections_refused_total{{limit=\"{limit}\"}} {}",
                load(count)
            );
        }
        header(
            out,
            "edgehost_connections_closed_total",
            "counter",
            "Connections the host closed on a deadline, by the limit that set it.",
        );
        for (limit, count) in [
            ("keep_alive_timeout", &self.idle_closed),
            ("write_timeout", &self.write_timeouts),
        ] {
            let _ = writeln!(
                out,
                "edgehost_connections_closed_total{{limit=\"{limit}\"}} {}",
                load(count)
            );
        }
    }
}
