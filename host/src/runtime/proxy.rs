//! Calling a standard `wasi:http/proxy` route: the request streams in, the
//! answer's head comes back as soon as the guest sets it, and a guest still
//! streaming its body after that runs on in a task of its own until it
//! finishes or its `timeout` passes.

use super::cpu::{CpuMeter, Metered};
use super::failure::{guest_trap, instantiate_error, GuestError};
use super::route::{CompiledRoute, Proxy};
use super::store::new_store;
use super::Runtime;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a `wasi:http/proxy` or `wasi:http/service` guest's answer,
/// streamed from the guest while it runs.
pub(crate) type GuestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// How a `wasi:http/proxy` guest ended, or will: `true` if it failed (trap,
/// timeout), so a body that ended early must not look complete.
pub(crate) enum ProxyDone {
    /// It finished before its answer was sent.
    Finished(bool),
    /// It still runs in its own task, streaming its body.
    Running(tokio::sync::oneshot::Receiver<bool>),
}

impl Runtime {
    /// Runs a `wasi:http/proxy` route on `request` in a fresh instance. The
    /// answer's head comes back as soon as the guest sets it. The guest runs
    /// here, in the request's task, until it answers; most answer and finish
    /// their body in the same go, so the whole answer is ready for one write.
    /// A guest still running after it answered (a streamed body) moves to a
    /// task of its own, holding `guard` (the route's concurrency slot), and
    /// streams until it finishes or its `timeout` passes.
    pub(crate) async fn call_proxy<B>(
        &self,
        route: &CompiledRoute,
        request: http::Request<B>,
        request_id: &Arc<str>,
        guard: impl Send + 'static,
    ) -> Result<(http::Response<GuestBody>, ProxyDone), GuestError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let pre = match &route.proxy {
            Some(Proxy::P2(pre)) => pre.clone(),
            Some(Proxy::P3(pre)) => {
                return self
                    .call_service(route, pre.clone(), request, request_id, guard)
                    .await
            }
            None => {
                return Err(GuestError::Instantiate(wasmtime::format_err!(
                    "route is not a wasi:http/proxy component"
                )))
            }
        };
        let (response, done) = self.call_p2(route, pre, request, request_id, guard).await?;
        let response =
            response.map(|body| body.map_err(|err| Box::new(err) as BoxError).boxed_unsync());
        Ok((response, done))
    }

    async fn call_p2<B>(
        &self,
        route: &CompiledRoute,
        pre: wasmtime_wasi_http::p2::bindings::ProxyPre<super::store::HostState>,
        request: http::Request<B>,
        request_id: &Arc<str>,
        guard: impl Send + 'static,
    ) -> Result<(http::Response<HyperOutgoingBody>, ProxyDone), GuestError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let meter = route.limits.cpu_time.map(|_| Arc::new(CpuMeter::default()));
        let mut store = new_store(route.pre.engine(), &route.grants, request_id, meter.clone());
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        // Whether the guest set its response: a failure after that (while
        // streaming the body) is the guest's run to report, as nobody else sees it.
        let responded = Arc::new(AtomicBool::new(false));
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(GuestError::Instantiate)?;
        let flag = Arc::clone(&responded);
        let out = store
            .data_mut()
            .http()
            .new_response_outparam_from_callback(move |response| {
                flag.store(true, Ordering::Release);
                // The receiver is gone only if the request was dropped.
                let _ = sender.send(response);
            })
            .map_err(GuestError::Instantiate)?;
        let timeout = route.limits.timeout;
        let id = Arc::clone(request_id);
        let name = Arc::clone(&route.name);
        let metrics = Arc::clone(&route.metrics);
        let run = async move {
            let _guard = guard;
            let run = async {
                let proxy = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_error)?;
                let called = proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, out)
                    .await;
                called.map_err(|err| guest_trap(store.data(), &err, &id))
            };
            within_timeout(run, timeout, &responded, &metrics, &id, &name).await
        };
        let mut run = metered(run, meter);
        let answered = |answer: Result<http::Response<HyperOutgoingBody>, _>| match answer {
            Ok(response) => Ok(response),
            Err(code) => Err(GuestError::Trap(format!(
                "the guest answered with error {code:?}"
            ))),
        };
        // The guest ended without an answer: why is in how it ended.
        let unanswered = |ended: Result<(), GuestError>| {
            ended.err().unwrap_or_else(|| {
                GuestError::Trap("the guest returned without setting a response".into())
            })
        };
        tokio::select! {
            // The guest first: when it answers and finishes in one go, its
            // whole body is waiting in the response's channel.
            biased;
            result = &mut run => match receiver.try_recv() {
                Ok(answer) => Ok((answered(answer)?, ProxyDone::Finished(result.is_err()))),
                Err(_) => Err(unanswered(result)),
            },
            answer = &mut receiver => match answer {
                Ok(answer) => {
                    let response = answered(answer)?;
                    let (done, finished) = tokio::sync::oneshot::channel();
                    tokio::spawn(async move {
                        // Tells the response body whether it ended because the guest failed.
                        let _ = done.send(run.await.is_err());
                    });
                    Ok((response, ProxyDone::Running(finished)))
                }
                // The guest dropped its response without setting it.
                Err(_) => Err(unanswered(run.await)),
            },
        }
    }
}

/// A guest's whole run, boxed to be driven here or moved to a task.
pub(super) type Run = Pin<Box<dyn Future<Output = Result<(), GuestError>> + Send>>;

/// `run` within the route's `timeout`; a failure after the response head
/// was sent (`responded`) is counted and logged here, as nobody else sees it.
pub(super) async fn within_timeout(
    run: impl Future<Output = Result<(), GuestError>>,
    timeout: std::time::Duration,
    responded: &AtomicBool,
    metrics: &crate::metrics::RouteMetrics,
    id: &str,
    name: &str,
) -> Result<(), GuestError> {
    let result = tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Err(GuestError::Timeout(timeout)));
    if let Err(err) = &result {
        if responded.load(Ordering::Acquire) {
            metrics.count(err.verdict().event);
            tracing::error!(
                request_id = %id,
                route = %name,
                "{err} after the response head was sent; its body was cut short"
            );
        }
    }
    result
}

/// `run`, boxed, its CPU time metered when the route has a `cpu_time`.
pub(super) fn metered(
    run: impl Future<Output = Result<(), GuestError>> + Send + 'static,
    meter: Option<Arc<CpuMeter>>,
) -> Run {
    match meter {
        Some(meter) => Box::pin(Metered::new(run, meter)),
        None => Box::pin(run),
    }
}
