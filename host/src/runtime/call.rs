//! Calling an SDK route: one method export, on one request record, in a
//! fresh instance, within the route's time, CPU and memory limits.
//!
//! Most routes answer by returning their response record. A route may also
//! answer before it returns (`body.wit`): a streamed answer's head, or its
//! whole answer with work to do after it. The guest then runs on in a task
//! of its own, holding its concurrency slot: a streamed answer within the
//! route's `timeout`, stopped when the client goes away; work after a whole
//! answer within its `wait_until` budget, tracked so a shutdown lets it
//! finish.

use super::body::{Answering, Early, EarlyAnswer, Incoming, Piece};
use super::cpu::{CpuMeter, Metered};
use super::failure::{guest_trap, instantiate_error, GuestError};
use super::route::CompiledRoute;
use super::store::new_store;
use super::Runtime;
use crate::metrics::RouteMetrics;
use crate::wit::{Method, MethodFunc, Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A route's answer.
pub(crate) enum Answer {
    /// Whole: returned by the method, or sent with `respond`.
    Whole(Response),
    /// Its head (with an empty body), the body to follow on the receiver.
    Streamed(Response, mpsc::Receiver<Piece>),
}

type Run = Pin<Box<dyn Future<Output = Result<Response, GuestError>> + Send>>;

impl Runtime {
    /// Runs `method`'s handler of `route` on `request` in a fresh instance,
    /// within the route's time and memory limits, and returns its response
    /// record. A streamed answer's head is returned without its body.
    pub async fn call(
        &self,
        route: &CompiledRoute,
        method: Method,
        request: Request,
        request_id: &Arc<str>,
    ) -> Result<Response, GuestError> {
        let answer = self
            .answer(route, method, request, None, request_id, ())
            .await?;
        Ok(match answer {
            Answer::Whole(response) | Answer::Streamed(response, _) => response,
        })
    }

    /// Runs `method`'s handler of `route` on `request` (its body streamed
    /// from `incoming` when the route reads it so) in a fresh instance. The
    /// caller's `slot` (from [`CompiledRoute::try_reserve`]) is held until
    /// the guest ends, which may be after its answer.
    pub(crate) async fn answer(
        &self,
        route: &CompiledRoute,
        method: Method,
        request: Request,
        incoming: Option<Incoming>,
        request_id: &Arc<str>,
        slot: impl Send + 'static,
    ) -> Result<Answer, GuestError> {
        let no_export = move || {
            GuestError::Instantiate(wasmtime::format_err!(
                "route has no `{}` export",
                method.export_name()
            ))
        };
        let export = route.handlers[method.index()].ok_or_else(no_export)?;
        let limits = &route.limits;
        let meter = limits.cpu_time.map(|_| Arc::new(CpuMeter::default()));
        let mut store = new_store(route.pre.engine(), &route.grants, request_id, meter.clone());
        let (early_sender, mut early) = oneshot::channel::<EarlyAnswer>();
        let bodies = store.data_mut().bodies();
        bodies.answering = Answering::new(early_sender, limits.max_response, limits.wait_until);
        bodies.incoming = incoming;
        let pre = route.pre.clone();
        let id = Arc::clone(request_id);
        let run = async move {
            let _slot = slot;
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(instantiate_error)?;
            let func = instance
                .get_func(&mut store, export)
                .ok_or_else(no_export)?;
            // SAFETY: `compile_route` type-checked every method export against
            // `MethodFunc` when the route was loaded; checking it again per
            // request would cost a tenth of a microsecond each time.
            let func = unsafe { MethodFunc::new_unchecked(func) };
            let (response,) = func
                .call_async(&mut store, (request,))
                .await
                .map_err(|err| guest_trap(store.data(), &err, &id))?;
            Ok(response)
        };
        // Dropping `run` drops the store and the instance with it; the guest
        // is paused at an epoch tick or in a host call, never mid-instruction.
        let mut run: Run = match meter {
            Some(meter) => Box::pin(Metered::new(run, meter)),
            None => Box::pin(run),
        };
        let deadline = tokio::time::Instant::now() + limits.timeout;
        tokio::select! {
            // The guest first: most return their answer in one go.
            biased;
            result = &mut run => match early.try_recv() {
                Err(_) => result.map(Answer::Whole),
                // It answered early and has ended since.
                Ok(EarlyAnswer { early, own, .. }) => {
                    // Its body may fill the channel before anyone reads it:
                    // ending it waits on its own.
                    let ended = Ended::new(route, request_id, own);
                    self.background.spawn(ended.report(result.err()));
                    Ok(early.into())
                }
            },
            sent = &mut early => match sent {
                Ok(EarlyAnswer { early, own, answered }) => {
                    let ended = Ended::new(route, request_id, own);
                    let budgets = (limits.timeout, limits.wait_until);
                    let task = run_on(run, deadline, budgets, answered, ended);
                    self.background.spawn(task);
                    Ok(early.into())
                }
                // The guest dropped its answer side: it can only have ended.
                Err(_) => run.await.map(Answer::Whole),
            },
            () = tokio::time::sleep_until(deadline) => Err(GuestError::Timeout(limits.timeout)),
        }
    }
}

impl From<Early> for Answer {
    fn from(early: Early) -> Answer {
        match early {
            Early::Whole(response) => Answer::Whole(response),
            Early::Streamed(head, body) => Answer::Streamed(head, body),
        }
    }
}

/// What is left to do when a guest that answered early ends: cut its
/// streamed body if it did not finish it, count and log a failure nobody
/// else saw.
struct Ended {
    route: Arc<str>,
    metrics: Arc<RouteMetrics>,
    request_id: Arc<str>,
    /// The host's sender on a streamed body.
    own: Option<mpsc::Sender<Piece>>,
}

impl Ended {
    fn new(route: &CompiledRoute, request_id: &Arc<str>, own: Option<mpsc::Sender<Piece>>) -> Self {
        Ended {
            route: Arc::clone(&route.name),
            metrics: Arc::clone(&route.metrics),
            request_id: Arc::clone(request_id),
            own,
        }
    }

    async fn report(self, failure: Option<GuestError>) {
        if let Some(own) = &self.own {
            // Only `finish` ends a streamed body whole: one the guest left
            // unfinished is cut. A body already ended, or dropped, ignores it.
            let _ = own.send(Piece::Cut).await;
        }
        if let Some(err) = failure {
            self.metrics.count(err.verdict().event);
            tracing::warn!(
                request_id = %self.request_id,
                route = %self.route,
                "{err}, after the route answered"
            );
        }
    }
}

/// The guest's run after it answered early, until it ends, its deadline
/// passes, or (while it streams: `ended` holds a sender on its body) the
/// client goes away. Its deadline is the
/// route's `timeout` until its whole answer is sent, then the end of its
/// `wait_until` budget.
async fn run_on(
    mut run: Run,
    timeout_at: tokio::time::Instant,
    budgets: (Duration, Duration),
    mut answered: watch::Receiver<Option<Instant>>,
    ended: Ended,
) {
    let (timeout, wait_until) = budgets;
    let mut after: Option<Instant> = *answered.borrow_and_update();
    let mut watching = true;
    let failure = loop {
        let deadline = after.map_or(timeout_at, tokio::time::Instant::from_std);
        let client_gone = async {
            match (&ended.own, after.is_none()) {
                (Some(own), true) => own.closed().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            result = &mut run => break result.err(),
            changed = answered.changed(), if watching => match changed {
                Ok(()) => after = *answered.borrow_and_update(),
                // The store is gone: `run` is about to end.
                Err(_) => watching = false,
            },
            () = tokio::time::sleep_until(deadline) => {
                break Some(match after {
                    Some(_) => GuestError::WaitUntil(wait_until),
                    None => GuestError::Timeout(timeout),
                });
            }
            () = client_gone => {
                tracing::debug!(
                    request_id = %ended.request_id,
                    route = %ended.route,
                    "the client went away while the route streamed its answer; stopped"
                );
                return;
            }
        }
    };
    drop(run);
    ended.report(failure).await;
}
