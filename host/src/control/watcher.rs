//! The one file watcher, used by `serve --watch` and by `dev`: it looks at
//! what it is given at a fixed interval and reports a change once it has
//! settled.
//!
//! It polls (a few `stat` calls per look) rather than asking the kernel for
//! events: what is watched includes files that do not exist yet (a
//! component before its first build) and folders that appear later (a new
//! route crate), which event watchers only see by re-arming watches on
//! every parent folder as the tree changes.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// What a look sees of one file: its modification time and length.
pub(crate) type Stamp = (SystemTime, u64);

/// `path`'s stamp, `None` while it does not exist.
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Watches what `look` returns.
pub(crate) struct Watcher<T, F> {
    look: F,
    seen: T,
    interval: Duration,
}

/// A settled change.
pub(crate) struct Change<T> {
    /// What was seen before it.
    pub(crate) before: T,
    /// What is seen now.
    pub(crate) after: T,
    /// When the change was first seen (before waiting for it to settle).
    pub(crate) first_seen: Instant,
}

impl<T: PartialEq + Clone, F: FnMut() -> T> Watcher<T, F> {
    /// Starts from what `look` sees now.
    pub(crate) fn new(interval: Duration, mut look: F) -> Self {
        let seen = look();
        Watcher {
            look,
            seen,
            interval,
        }
    }

    /// Waits until what `look` sees differs from what it saw last, and then
    /// stays the same for one more look (a build or an editor may write in
    /// steps). A change made after that is the next one.
    pub(crate) async fn changed(&mut self) -> Change<T> {
        loop {
            tokio::time::sleep(self.interval).await;
            let now = (self.look)();
            if now == self.seen {
                continue;
            }
            let first_seen = Instant::now();
            let mut settled = now;
            loop {
                tokio::time::sleep(self.interval).await;
                let again = (self.look)();
                if again == settled {
                    break;
                }
                settled = again;
            }
            let before = std::mem::replace(&mut self.seen, settled.clone());
            return Change {
                before,
                after: settled,
                first_seen,
            };
        }
    }

    /// [`Watcher::changed`], for a caller outside the async runtime.
    pub(crate) fn changed_blocking(&mut self) -> std::io::Result<Change<T>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        Ok(runtime.block_on(self.changed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watcher over a scripted sequence of looks.
    fn scripted(looks: &'static [u32]) -> Watcher<u32, impl FnMut() -> u32> {
        let mut next = looks.iter().copied();
        let last = *looks.last().unwrap_or(&0);
        Watcher::new(Duration::from_millis(1), move || {
            next.next().unwrap_or(last)
        })
    }

    #[test]
    fn a_change_is_reported_once_it_has_settled() {
        // Seen 1; unchanged; then 2, 3 while still being written; then 3 again.
        let mut watcher = scripted(&[1, 1, 2, 3, 3, 3]);
        let change = watcher.changed_blocking().unwrap();
        assert_eq!((change.before, change.after), (1, 3));
    }

    #[test]
    fn each_change_is_reported_against_the_last_one() {
        let mut watcher = scripted(&[1, 2, 2, 4, 4]);
        let first = watcher.changed_blocking().unwrap();
        assert_eq!((first.before, first.after), (1, 2));
        let second = watcher.changed_blocking().unwrap();
        assert_eq!((second.before, second.after), (2, 4));
    }
}
