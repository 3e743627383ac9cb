//! A SQLite database's connections of one kind (the writer, or the
//! readers) and where work on them runs: a read on the async worker for at
//! most [`INLINE_BUDGET`], then on the blocking pool; a write on the
//! blocking pool. Past the route's `sql_timeout` the statement running is
//! interrupted; a connection goes back to its pool even if the work on it
//! panicked.

use super::SqlError;
use rusqlite::Connection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// One connection and its sandbox's state.
pub(super) struct Guarded {
    pub(super) conn: Connection,
    /// Set while the host itself runs `BEGIN`/`COMMIT`/`ROLLBACK`.
    pub(super) host_statement: Arc<AtomicBool>,
    /// What the authorizer last refused, for the error message.
    pub(super) denied: Arc<Mutex<Option<String>>>,
    /// Set when the call ran out of time: a batch stops before its next
    /// statement (an interrupt between statements is lost).
    pub(super) cancelled: Arc<AtomicBool>,
}

/// Connections of one kind and a gate as wide as there are connections, so
/// a request waits on the async side, never on a blocking thread.
pub(super) struct Pool {
    gate: Arc<Semaphore>,
    conns: Mutex<Vec<Guarded>>,
}

impl Pool {
    pub(super) fn new(conns: Vec<Guarded>) -> Pool {
        Pool {
            gate: Arc::new(Semaphore::new(conns.len())),
            conns: Mutex::new(conns),
        }
    }

    /// A connection of the pool, waiting for one until `deadline`.
    async fn take(
        self: &Arc<Self>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Returned, SqlError> {
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.gate).acquire_owned())
            .await
            .map_err(|_| late(timeout))?
            .map_err(|_| SqlError::Failed("the database is closed".into()))?;
        let guarded = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .ok_or_else(|| SqlError::Failed("no connection to the database is left".into()))?;
        Ok(Returned {
            pool: Arc::clone(self),
            guarded: Some(guarded),
            permit: Some(permit),
        })
    }

    /// Runs `work` on one of the pool's connections on the blocking pool,
    /// within `timeout` (waiting for a connection included); past it the
    /// statement running is interrupted.
    pub(super) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        timeout: Duration,
        work: impl FnOnce(&mut Guarded) -> Result<T, SqlError> + Send + 'static,
    ) -> Result<T, SqlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let returned = self.take(deadline, timeout).await?;
        blocking(returned, deadline, timeout, work).await
    }

    /// Runs `work`, which only reads and so may run twice, on one of the
    /// pool's connections: on the async worker first, where a short read
    /// costs no thread handoff, and stopped there after [`INLINE_BUDGET`]
    /// to run again on the blocking pool within `timeout`.
    pub(super) async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        timeout: Duration,
        work: impl Fn(&mut Guarded) -> Result<T, SqlError> + Send + Sync + 'static,
    ) -> Result<T, SqlError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut returned = self.take(deadline, timeout).await?;
        let Some(guarded) = returned.guarded.as_mut() else {
            return Err(SqlError::Failed("no connection".into()));
        };
        let until = Instant::now() + INLINE_BUDGET;
        let tripped = Arc::new(AtomicBool::new(false));
        let trip = Arc::clone(&tripped);
        let budget = guarded.conn.progress_handler(
            PROGRESS_OPS,
            Some(move || {
                let over = Instant::now() > until;
                trip.fetch_or(over, Ordering::Relaxed);
                over
            }),
        );
        if budget.is_err() {
            // No budget to stop it with: only the blocking pool is safe.
            return blocking(returned, deadline, timeout, move |g| work(g)).await;
        }
        let result = work(guarded);
        if guarded
            .conn
            .progress_handler(PROGRESS_OPS, None::<fn() -> bool>)
            .is_err()
        {
            // Its spent budget would stop every later statement: the
            // connection is closed and the pool is one smaller.
            returned.discard();
            return Err(SqlError::Failed(
                "a database connection could not be reset".into(),
            ));
        }
        if !tripped.load(Ordering::Relaxed) {
            return result;
        }
        blocking(returned, deadline, timeout, move |g| work(g)).await
    }
}

/// How long a read runs on the async worker before it moves to the
/// blocking pool (a primary-key lookup takes a few microseconds; a guest's
/// wasm runs on the same worker in slices of an epoch tick).
const INLINE_BUDGET: Duration = Duration::from_micros(200);

/// SQLite virtual machine steps between two checks of that budget.
const PROGRESS_OPS: std::ffi::c_int = 1000;

fn late(timeout: Duration) -> SqlError {
    SqlError::Unavailable(format!(
        "no answer within the route's sql_timeout of {timeout:?}; the statement was stopped"
    ))
}

/// Runs `work` on the connection `returned` holds, on the blocking pool,
/// until `deadline`; past it the statement running is interrupted.
async fn blocking<T: Send + 'static>(
    mut returned: Returned,
    deadline: tokio::time::Instant,
    timeout: Duration,
    work: impl FnOnce(&mut Guarded) -> Result<T, SqlError> + Send + 'static,
) -> Result<T, SqlError> {
    let Some(guarded) = returned.guarded.as_mut() else {
        return Err(SqlError::Failed("no connection".into()));
    };
    let interrupt = guarded.conn.get_interrupt_handle();
    guarded.cancelled.store(false, Ordering::Relaxed);
    let cancelled = Arc::clone(&guarded.cancelled);
    // Set once `work` is over: an interrupt sent after it could hit the
    // next request's statement on the same connection.
    let finished = Arc::new(Mutex::new(false));
    let done = Arc::clone(&finished);
    let task = tokio::task::spawn_blocking(move || {
        let mut returned = returned;
        let result = match returned.guarded.as_mut() {
            Some(guarded) => work(guarded),
            None => Err(SqlError::Failed("no connection".into())),
        };
        *done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        result
    });
    match tokio::time::timeout_at(deadline, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => Err(SqlError::Failed(format!("the query stopped: {err}"))),
        Err(_) => {
            // A batch between two statements is stopped by the flag.
            cancelled.store(true, Ordering::Relaxed);
            let finished = finished.lock().unwrap_or_else(|p| p.into_inner());
            if !*finished {
                interrupt.interrupt();
            }
            Err(late(timeout))
        }
    }
}

/// A connection taken from its pool, put back when dropped (also when the
/// work on it panicked), with the gate's permit.
struct Returned {
    pool: Arc<Pool>,
    guarded: Option<Guarded>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Returned {
    /// Closes the connection instead of returning it, its permit with it.
    fn discard(mut self) {
        self.guarded = None;
        if let Some(permit) = self.permit.take() {
            permit.forget();
        }
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        if let Some(guarded) = self.guarded.take() {
            self.pool
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(guarded);
        }
    }
}
