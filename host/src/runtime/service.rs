//! Calling a WASI 0.3 `wasi:http/service` route (what Spin 4 builds): the
//! request streams in, the answer's head comes back as soon as the guest
//! returns it, and the store's event loop runs on in a task of its own
//! while the body streams out, until the body ends, the guest fails or its
//! `timeout` passes.

use super::cpu::CpuMeter;
use super::failure::{guest_trap, instantiate_error, GuestError};
use super::proxy::{metered, within_timeout, GuestBody, ProxyDone, Run};
use super::route::CompiledRoute;
use super::store::{new_store, HostState};
use super::Runtime;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::WasiHttpView;

type Head = Result<http::Response<GuestBody>, GuestError>;

impl Runtime {
    /// Runs a `wasi:http/service` route on `request` in a fresh instance;
    /// see [`Runtime::call_proxy`], whose contract this keeps.
    pub(super) async fn call_service<B>(
        &self,
        route: &CompiledRoute,
        pre: ServicePre<HostState>,
        request: http::Request<B>,
        request_id: &Arc<str>,
        guard: impl Send + 'static,
    ) -> Result<(http::Response<GuestBody>, ProxyDone), GuestError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let meter = route.limits.cpu_time.map(|_| Arc::new(CpuMeter::default()));
        let mut store = new_store(route.pre.engine(), &route.grants, request_id, meter.clone());
        let (request, request_io) =
            wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, request);
        let (head_tx, mut head_rx) = oneshot::channel::<Head>();
        let responded = Arc::new(AtomicBool::new(false));
        let timeout = route.limits.timeout;
        let id = Arc::clone(request_id);
        let name = Arc::clone(&route.name);
        let metrics = Arc::clone(&route.metrics);
        let flag = Arc::clone(&responded);
        let run = async move {
            let _guard = guard;
            let run = async {
                let service = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_error)?;
                let ran = store
                    .run_concurrent(async move |accessor| {
                        let handled = async {
                            let response = match service.handle(accessor, request).await? {
                                Ok(response) => response,
                                Err(code) => {
                                    let _ = head_tx.send(Err(GuestError::Trap(format!(
                                        "the guest answered with error {code:?}"
                                    ))));
                                    return Ok(());
                                }
                            };
                            let response = accessor.with(|mut store| {
                                response.into_http(&mut store, async { Ok(()) })
                            })?;
                            // The store's event loop moves the body from the
                            // guest: it runs until the body has ended.
                            let (ended_tx, ended) = oneshot::channel();
                            let response = response.map(|body| {
                                Ended {
                                    inner: body,
                                    ended: Some(ended_tx),
                                }
                                .map_err(|err| Box::new(err) as super::proxy::BoxError)
                                .boxed_unsync()
                            });
                            flag.store(true, Ordering::Release);
                            if head_tx.send(Ok(response)).is_ok() {
                                let _ = ended.await;
                            }
                            wasmtime::Result::<()>::Ok(())
                        };
                        // How the request body's transfer went: nothing to
                        // wait for, but it is polled with the handler.
                        let io = async {
                            let _ = request_io.await;
                            std::future::pending::<()>().await
                        };
                        tokio::select! {
                            handled = handled => handled,
                            () = io => Ok(()),
                        }
                    })
                    .await;
                match ran {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(err)) | Err(err) => Err(guest_trap(store.data(), &err, &id)),
                }
            };
            within_timeout(run, timeout, &responded, &metrics, &id, &name).await
        };
        let mut run = metered(run, meter);
        let unanswered = |ended: Result<(), GuestError>| {
            ended
                .err()
                .unwrap_or_else(|| GuestError::Trap("the guest returned without a response".into()))
        };
        tokio::select! {
            biased;
            head = &mut head_rx => match head {
                Ok(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    match take_whole(&mut run, body).await {
                        // A short answer, all of it here: one write, with
                        // its length, and no task of its own.
                        Taken::Whole(body, failed) => {
                            let failed = failed.unwrap_or(run.await.is_err());
                            Ok((http::Response::from_parts(parts, body), ProxyDone::Finished(failed)))
                        }
                        Taken::Streaming(body) => {
                            let (done, finished) = oneshot::channel();
                            tokio::spawn(async move {
                                // Tells the response body whether it ended because the guest failed.
                                let _ = done.send(run.await.is_err());
                            });
                            Ok((http::Response::from_parts(parts, body), ProxyDone::Running(finished)))
                        }
                    }
                }
                Ok(Err(err)) => {
                    let _ = run.await;
                    Err(err)
                }
                Err(_) => Err(unanswered(run.await)),
            },
            result = &mut run => match head_rx.try_recv() {
                Ok(Ok(response)) => Ok((response, ProxyDone::Finished(result.is_err()))),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(unanswered(result)),
            },
        }
    }
}

/// Bytes of an answer taken whole before its head goes out; a longer one
/// streams.
const WHOLE_LIMIT: usize = 64 << 10;

/// Rounds in a row in which neither the guest nor its body moved, after
/// which the body streams (the guest waits on something: a timer, I/O).
const IDLE_ROUNDS: usize = 3;

/// What [`take_whole`] got of a guest's body.
enum Taken {
    /// All of it, and whether the guest failed if it has finished.
    Whole(GuestBody, Option<bool>),
    /// What came so far, then the rest as it streams.
    Streaming(GuestBody),
}

type Frame = hyper::body::Frame<Bytes>;

/// Drives the guest and reads its body here, in the request's task, while
/// both move: most guests finish a short answer in the same go, which then
/// goes out whole, with its length. A body past [`WHOLE_LIMIT`], or one the
/// guest stops writing for a while, streams from where it got to.
async fn take_whole(run: &mut Run, mut body: GuestBody) -> Taken {
    enum Step {
        Frame(Frame),
        End,
        Failed(super::proxy::BoxError),
        Finished(bool),
        Idle,
    }
    let mut frames: Vec<Frame> = Vec::new();
    let (mut size, mut idle) = (0usize, 0usize);
    let mut finished: Option<bool> = None;
    loop {
        let step = std::future::poll_fn(|cx| {
            if finished.is_none() {
                if let Poll::Ready(result) = run.as_mut().poll(cx) {
                    return Poll::Ready(Step::Finished(result.is_err()));
                }
            }
            Poll::Ready(
                match hyper::body::Body::poll_frame(Pin::new(&mut body), cx) {
                    Poll::Ready(Some(Ok(frame))) => Step::Frame(frame),
                    Poll::Ready(Some(Err(err))) => Step::Failed(err),
                    Poll::Ready(None) => Step::End,
                    Poll::Pending => Step::Idle,
                },
            )
        })
        .await;
        match step {
            Step::Frame(frame) => {
                idle = 0;
                size += frame.data_ref().map_or(0, Bytes::len);
                frames.push(frame);
                if size > WHOLE_LIMIT {
                    return Taken::Streaming(then(frames, body));
                }
            }
            Step::End => return Taken::Whole(whole(frames), finished),
            Step::Failed(err) => {
                // The error ends the body as the guest's would.
                return Taken::Streaming(then(frames, failed(err)));
            }
            Step::Finished(failed) => finished = Some(failed),
            Step::Idle => {
                idle += 1;
                if idle >= IDLE_ROUNDS {
                    return Taken::Streaming(then(frames, body));
                }
                // The first idle round is the guest's own wake-up, moved
                // along at once; after that, a guest stopped at its slice's
                // end waits for the worker to poll for I/O first (as it
                // would in a task of its own).
                if idle > 1 {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

/// `frames`, all of the body: data only is one buffer of known length.
fn whole(frames: Vec<Frame>) -> GuestBody {
    if frames.iter().all(|f| f.is_data()) {
        let mut data = bytes::BytesMut::new();
        for frame in frames {
            if let Ok(chunk) = frame.into_data() {
                data.extend_from_slice(&chunk);
            }
        }
        return http_body_util::Full::new(data.freeze())
            .map_err(|never| match never {})
            .boxed_unsync();
    }
    then(
        frames,
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

/// `frames`, then `rest`.
fn then(frames: Vec<Frame>, rest: GuestBody) -> GuestBody {
    use futures_util::StreamExt;
    let first = futures_util::stream::iter(frames.into_iter().map(Ok));
    let rest = http_body_util::BodyStream::new(rest);
    http_body_util::StreamBody::new(first.chain(rest)).boxed_unsync()
}

/// A body that fails at once with `err`.
fn failed(err: super::proxy::BoxError) -> GuestBody {
    let once = futures_util::stream::iter([Err::<Frame, _>(err)]);
    http_body_util::StreamBody::new(once).boxed_unsync()
}

/// A guest's response body that says when it has ended (or was dropped),
/// so the store's event loop moving it can stop.
struct Ended<B> {
    inner: B,
    ended: Option<oneshot::Sender<()>>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Ended<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.ended.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
