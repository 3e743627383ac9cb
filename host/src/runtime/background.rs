//! Guests that run on after their answer was sent (a streamed body, work
//! after a whole answer): counted, so a shutdown can wait for them within
//! its drain timeout.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// The guests running in tasks of their own.
#[derive(Default)]
pub(crate) struct Background {
    running: Arc<Running>,
}

#[derive(Default)]
struct Running {
    count: AtomicUsize,
    ended: Notify,
}

/// Held by one task: it is counted until it drops.
struct Counted(Arc<Running>);

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.ended.notify_waiters();
        }
    }
}

impl Background {
    /// Runs `task` on its own, counted until it ends.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.running.count.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(Arc::clone(&self.running));
        tokio::spawn(async move {
            let _counted = counted;
            task.await;
        });
    }

    /// How many are running.
    pub(crate) fn running(&self) -> usize {
        self.running.count.load(Ordering::Acquire)
    }

    /// Resolves when none is running.
    pub(crate) async fn drained(&self) {
        loop {
            let ended = self.running.ended.notified();
            if self.running() == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn drained_waits_for_every_task() {
        let background = Background::default();
        background.drained().await;
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        background.spawn(async move {
            let _ = wait.await;
        });
        assert_eq!(background.running(), 1);
        let drained = tokio::time::timeout(Duration::from_millis(50), background.drained()).await;
        assert!(drained.is_err(), "a task still runs");
        go.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), background.drained())
            .await
            .unwrap();
        assert_eq!(background.running(), 0);
    }
}
