//! The `cpu_time` meter: the time a guest's future spends being polled on a
//! host thread, checked at every epoch tick by the store's deadline callback.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The CPU time a guest has used, as the time its future spent being polled
/// on a host thread: what it holds a worker for. Time between polls (waiting
/// for I/O, a timer, or its turn after yielding) does not count. A thread's
/// own CPU clock would also leave out time the OS gave to other processes,
/// but reading it is a system call, two per poll, which cost more than the
/// rest of a small request.
#[derive(Default)]
pub(crate) struct CpuMeter {
    used_ns: AtomicU64,
    /// When the current poll began, in ns after `ORIGIN`; 0 between polls.
    poll_started_ns: AtomicU64,
}

/// The origin of [`CpuMeter`]'s clock readings.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Nanoseconds since [`ORIGIN`], never 0.
fn clock_ns() -> u64 {
    u64::try_from(ORIGIN.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl CpuMeter {
    /// Time used so far, including the poll running now (the epoch callback
    /// asks from inside it).
    pub(crate) fn used(&self) -> Duration {
        let mut used = self.used_ns.load(Ordering::Relaxed);
        let started = self.poll_started_ns.load(Ordering::Relaxed);
        if started != 0 {
            used += clock_ns().saturating_sub(started);
        }
        Duration::from_nanos(used)
    }
}

/// A future whose polls are charged to a [`CpuMeter`].
pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<CpuMeter>,
}

impl<F: Future> Metered<F> {
    pub(crate) fn new(inner: F, meter: Arc<CpuMeter>) -> Self {
        Metered {
            inner: Box::pin(inner),
            meter,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let started = clock_ns();
        self.meter.poll_started_ns.store(started, Ordering::Relaxed);
        let polled = self.inner.as_mut().poll(cx);
        let spent = clock_ns().saturating_sub(started);
        self.meter.used_ns.fetch_add(spent, Ordering::Relaxed);
        self.meter.poll_started_ns.store(0, Ordering::Relaxed);
        polled
    }
}

/// Raised from the epoch callback when a guest has used its `cpu_time`.
#[derive(Debug, thiserror::Error)]
#[error("the guest used more than its {0:?} of CPU time")]
pub(crate) struct CpuTimeExceeded(pub(crate) Duration);
