//! The HTTP side: accept connections, match the path, run the route, write
//! the answer. The request path reads top to bottom in [`handle`].
//!
//! Every answer the host makes itself is JSON `{"error": "..."}`; the mapping
//! from failures to statuses lives in [`HostAnswer::into_response`].
//!
//! Routes are served from the current [`Deployment`], an immutable snapshot
//! swapped atomically by a deploy, a reload or a rollback. A request holds
//! the snapshot it started with until it is answered.

use crate::manifest::{ClientLimits, Manifest};
use crate::metrics::{Activation, Event, Metrics};
use crate::runtime::{
    CompiledRoute, GuestError, GuestRequest, GuestResponse, Method, ProxyDone, RouteTable, Runtime,
};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;

/// Deployments kept for `rollback`, the current one included.
const KEPT_DEPLOYMENTS: usize = 10;

/// One route table and where it came from.
pub struct Deployment {
    /// `1` for the table the host started with, then counting up.
    pub id: String,
    /// What made it: the manifest file at start, a deploy, a reload.
    pub source: String,
    pub created: SystemTime,
    pub table: RouteTable,
}

/// What every connection shares.
pub struct Host {
    pub runtime: Runtime,
    current: ArcSwap<Deployment>,
    /// Kept deployments, oldest first; the last is the current one.
    history: Mutex<Vec<Arc<Deployment>>>,
    next_deployment: AtomicU64,
    /// Deploys and reloads take turns: each one validates, compiles and
    /// swaps before the next starts.
    pub(crate) deploying: tokio::sync::Mutex<()>,
    /// The manifest the host started with: its server-wide settings stay.
    pub started_with: Manifest,
    clients: ClientLimits,
    ids: RequestIds,
    shutting_down: AtomicBool,
    /// Build errors to answer with, under `edgehost dev` only.
    pub dev: Option<crate::dev::DevErrors>,
}

impl Host {
    /// A host serving `table`, loaded by `runtime` from `manifest`.
    pub fn new(runtime: Runtime, table: RouteTable, manifest: Manifest) -> Host {
        let first = Arc::new(Deployment {
            id: "1".into(),
            source: manifest.file.display().to_string(),
            created: SystemTime::now(),
            table,
        });
        runtime.metrics().deployed(&first.id, Activation::Start);
        Host {
            runtime,
            current: ArcSwap::new(Arc::clone(&first)),
            history: Mutex::new(vec![first]),
            next_deployment: AtomicU64::new(2),
            deploying: tokio::sync::Mutex::new(()),
            clients: manifest.clients.clone(),
            started_with: manifest,
            ids: RequestIds::new(),
            shutting_down: AtomicBool::new(false),
            dev: None,
        }
    }

    /// The deployment new requests are served from.
    pub fn current(&self) -> Arc<Deployment> {
        self.current.load_full()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.runtime.metrics()
    }

    /// Makes `table` the one new requests see. Requests already running
    /// finish on the table they started with.
    pub fn activate(&self, table: RouteTable, source: String) -> Arc<Deployment> {
        let id = self.next_deployment.fetch_add(1, Ordering::Relaxed);
        let deployment = Arc::new(Deployment {
            id: id.to_string(),
            source,
            created: SystemTime::now(),
            table,
        });
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push(Arc::clone(&deployment));
        let excess = history.len().saturating_sub(KEPT_DEPLOYMENTS);
        history.drain(..excess);
        self.current.store(Arc::clone(&deployment));
        self.metrics().deployed(&deployment.id, Activation::Deploy);
        tracing::info!(
            deployment = %deployment.id,
            "now serving {} routes from {}",
            deployment.table.routes().len(),
            deployment.source
        );
        deployment
    }

    /// Goes back to the deployment before the current one, or says why not.
    pub fn rollback(&self) -> Result<Arc<Deployment>, String> {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() < 2 {
            return Err("there is no earlier deployment to roll back to".into());
        }
        let left = history.pop();
        let previous = history
            .last()
            .cloned()
            .ok_or_else(|| "there is no earlier deployment to roll back to".to_string())?;
        self.current.store(Arc::clone(&previous));
        self.metrics().deployed(&previous.id, Activation::Rollback);
        tracing::info!(
            deployment = %previous.id,
            "rolled back from deployment {}; serving {} routes from {}",
            left.map_or_else(String::new, |d| d.id.clone()),
            previous.table.routes().len(),
            previous.source
        );
        Ok(previous)
    }

    /// Kept deployments, oldest first (the last is current).
    pub fn deployments(&self) -> Vec<Arc<Deployment>> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// False once the host has begun shutting down.
    pub fn ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Relaxed)
    }
}

/// Request ids: the client's `x-request-id` when it is a sane token, else
/// this process's random prefix and a counter.
struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

/// The longest `x-request-id` taken from a client.
const MAX_REQUEST_ID: usize = 128;

impl RequestIds {
    fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // std's hasher keys are random per process: enough to tell apart the
        // ids of two host processes, with no extra crate.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        RequestIds {
            prefix: hasher.finish() as u32,
            next: AtomicU64::new(1),
        }
    }

    fn for_request(&self, headers: &http::HeaderMap) -> Arc<str> {
        let given = headers
            .get("x-request-id")
            .map(HeaderValue::as_bytes)
            .filter(|id| {
                (1..=MAX_REQUEST_ID).contains(&id.len())
                    && id
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
            })
            .and_then(|id| std::str::from_utf8(id).ok());
        match given {
            Some(id) => Arc::from(id),
            None => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                generated_id(self.prefix, n)
            }
        }
    }
}

/// `{prefix:08x}-{n}`, written by hand: `format!` costs more than the rest
/// of the request's bookkeeping.
fn generated_id(prefix: u32, n: u64) -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // 8 hex digits, a dash, up to 20 decimal digits.
    let mut text = [0u8; 29];
    for (i, digit) in text[..8].iter_mut().enumerate() {
        *digit = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    text[8] = b'-';
    let mut decimal = [0u8; 20];
    let mut start = decimal.len();
    let mut rest = n;
    loop {
        start -= 1;
        decimal[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let len = 9 + decimal.len() - start;
    text[9..len].copy_from_slice(&decimal[start..]);
    // Only ASCII digits, letters and a dash were written.
    Arc::from(std::str::from_utf8(&text[..len]).unwrap_or("-"))
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and
/// waits up to the drain timeout for in-flight requests.
pub async fn serve(listener: TcpListener, host: Arc<Host>, shutdown: impl Future<Output = ()>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections we have and try again shortly.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let for_service = Arc::clone(&host);
        // Formatted once per connection, not per request.
        let client_addr: Arc<str> = Arc::from(client.to_string());
        let service = service_fn(move |req| {
            let host = Arc::clone(&for_service);
            let client_addr = Arc::clone(&client_addr);
            async move { Ok::<_, std::convert::Infallible>(handle(&host, req, &client_addr).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(host.clients.header_timeout)
            .max_buf_size(host.clients.max_header_bytes.max(MIN_BUF_SIZE))
            .max_headers(host.clients.max_headers)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%client, "connection ended: {err}");
            }
        });
    }
    drop(listener);
    host.shutting_down.store(true, Ordering::Relaxed);
    let drain = host.clients.drain_timeout;
    tracing::info!("shutting down: waiting up to {drain:?} for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain deadline passed; exiting with requests still open"),
    }
}

/// One request, start to finish.
async fn handle(host: &Host, req: Request<Incoming>, client: &str) -> Response<HostBody> {
    let started = Instant::now();
    // No span per request: creating one formats its fields even when nothing
    // is logged. Each event names the request id itself.
    let id = host.ids.for_request(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let deployment = host.current();
    let (route, answer) = match deployment.table.lookup(&path) {
        Err(err) => (None, Err(HostAnswer::BadPath(err.to_string()))),
        Ok(None) => (None, Err(HostAnswer::NotFound)),
        Ok(Some((route, params))) => {
            let build_error = host
                .dev
                .as_ref()
                .and_then(|dev| dev.for_component(&route.component));
            let answer = match build_error {
                Some(text) => Ok(boxed(build_failed(&text))),
                None if route.is_proxy() => run_proxy(host, route, params, req, client, &id).await,
                None => run_route(host, route, params, req, client, &id)
                    .await
                    .map(boxed),
            };
            (Some(route), answer)
        }
    };
    let mut response = answer.unwrap_or_else(|answer| boxed(answer.into_response()));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    route
        .map_or(&host.metrics().unmatched, |route| &route.metrics)
        .record(&method, status, elapsed);
    let access = AccessLine {
        id,
        method,
        path,
        route: route.map(|route| Arc::clone(&route.name)),
        status,
        started,
    };
    match response.body().size_hint().exact() {
        Some(bytes) => access.write(bytes, elapsed),
        // A streamed answer of unknown length: its line is written when the
        // body ends (or the client goes), with what was sent by then.
        None if tracing::enabled!(target: "access", tracing::Level::INFO) => {
            response = response.map(|body| {
                CountedBody {
                    inner: body,
                    bytes: 0,
                    access: Some(access),
                }
                .boxed_unsync()
            });
        }
        None => {}
    }
    response
}

/// One request's access log line, written once its answer is known.
struct AccessLine {
    id: Arc<str>,
    method: http::Method,
    path: String,
    route: Option<Arc<str>>,
    status: u16,
    started: Instant,
}

impl AccessLine {
    fn write(&self, bytes: u64, elapsed: Duration) {
        tracing::info!(
            target: "access",
            request_id = %self.id,
            method = %self.method,
            path = %self.path,
            route = %self.route.as_deref().unwrap_or("-"),
            status = self.status,
            duration_us = elapsed.as_micros() as u64,
            bytes,
        );
    }
}

/// A streamed answer's body, counting the bytes it passes on so that its
/// access line can say how many were sent.
struct CountedBody {
    inner: HostBody,
    bytes: u64,
    /// Written when the body ends, fails or is dropped, whichever is first.
    access: Option<AccessLine>,
}

impl CountedBody {
    fn finish(&mut self) {
        if let Some(access) = self.access.take() {
            access.write(self.bytes, access.started.elapsed());
        }
    }
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            std::task::Poll::Ready(_) => self.finish(),
            std::task::Poll::Pending => {}
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

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Under `edgehost dev`, a route whose crate failed to build answers with
/// the compiler's errors, as plain text for a terminal.
fn build_failed(text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_string())));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A matched request: method, body, instance, response.
async fn run_route(
    host: &Host,
    route: &CompiledRoute,
    params: Vec<(String, String)>,
    req: Request<Incoming>,
    client: &str,
    id: &Arc<str>,
) -> Result<Response<Full<Bytes>>, HostAnswer> {
    let requested = Method::from_http(req.method());
    let (method, strip_body) = match requested {
        Some(m) if route.handles(m) => (m, false),
        Some(Method::Head) if route.handles(Method::Get) => (Method::Get, true),
        Some(Method::Options) => return Ok(options_answer(route)),
        _ => return Err(HostAnswer::MethodNotAllowed(route.allow.clone())),
    };

    let limits = &route.limits;
    let count = |event: Event| route.metrics.count(event);
    // For the log, should the guest fail (a cheap reference-counted clone).
    let uri = req.uri().clone();
    // A request without a body (most GETs) needs no timer for reading it.
    let request = if req.body().is_end_stream() {
        read_request(req, params, client, limits.max_body).await
    } else {
        tokio::time::timeout(
            host.clients.body_timeout,
            read_request(req, params, client, limits.max_body),
        )
        .await
        .unwrap_or(Err(HostAnswer::BodyTimeout))
    }
    .inspect_err(|answer| match answer {
        HostAnswer::BodyTooLarge(_) => count(Event::MaxBody),
        HostAnswer::BodyTimeout => count(Event::BodyTimeout),
        _ => {}
    })?;
    let Some(slot) = route.try_reserve() else {
        count(Event::MaxConcurrency);
        return Err(HostAnswer::Busy);
    };
    let response = host
        .runtime
        .call(route, method, request, id)
        .await
        .map_err(|err| guest_failure(route, id, uri.path(), err))?;
    drop(slot);
    into_http(response, strip_body, limits.max_response).map_err(|reason| {
        count(Event::InvalidResponse);
        tracing::error!(
            request_id = %id,
            route = %route.name,
            path = %uri.path(),
            "guest returned an invalid response: {reason}"
        );
        HostAnswer::GuestFailed
    })
}

/// What the client gets when the guest gave no answer, counted and logged
/// (a limit the route ran into as a warning, a guest failure as an error).
fn guest_failure(route: &CompiledRoute, id: &Arc<str>, path: &str, err: GuestError) -> HostAnswer {
    let (event, answer) = match &err {
        GuestError::Timeout(_) => (Event::Timeout, HostAnswer::Timeout),
        GuestError::CpuTime(_) => (Event::CpuTime, HostAnswer::GuestFailed),
        GuestError::PoolExhausted => (Event::MaxInstances, HostAnswer::Busy),
        GuestError::OutOfMemory { .. } => (Event::Memory, HostAnswer::GuestFailed),
        GuestError::Instantiate(_) => (Event::Instantiate, HostAnswer::GuestFailed),
        GuestError::Trap(_) => (Event::Trap, HostAnswer::GuestFailed),
    };
    route.metrics.count(event);
    let route = &route.name;
    match err {
        GuestError::Timeout(limit) => {
            tracing::warn!(request_id = %id, %route, path = %path, "guest timed out after {limit:?}")
        }
        GuestError::CpuTime(limit) => tracing::warn!(
            request_id = %id, %route, path = %path,
            "guest stopped after using its {limit:?} of CPU time"
        ),
        GuestError::PoolExhausted => tracing::warn!(
            request_id = %id, %route, path = %path,
            "all instance slots are in use; answering 503"
        ),
        other => tracing::error!(request_id = %id, %route, path = %path, "{other}"),
    }
    answer
}

/// The headers a `wasi:http/proxy` route gets from the host (any a client
/// sent under these names are dropped): its matched params as a query
/// string (`postId=1&_splat=a%2Fb`), its pattern, the client's address.
pub const PARAMS_HEADER: &str = "x-edge-params";
pub const ROUTE_HEADER: &str = "x-edge-route";
pub const CLIENT_HEADER: &str = "x-edge-client-addr";

/// A request for a standard `wasi:http/proxy` component: the body streams
/// in (within `max_body`) and the answer streams out (within
/// `max_response`) while the guest runs.
async fn run_proxy(
    host: &Host,
    route: &CompiledRoute,
    params: Vec<(String, String)>,
    req: Request<Incoming>,
    client: &str,
    id: &Arc<str>,
) -> Result<Response<HostBody>, HostAnswer> {
    let limits = &route.limits;
    let count = |event: Event| route.metrics.count(event);
    let (mut parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body as u64) {
        count(Event::MaxBody);
        return Err(HostAnswer::BodyTooLarge(limits.max_body));
    }
    // wasi:http needs the request's authority; HTTP/1.0 may come without one.
    let has_host = parts.uri.authority().is_some()
        || parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| !h.is_empty());
    if !has_host {
        return Err(HostAnswer::BadPath(
            "a Host header (visible ASCII) is required".into(),
        ));
    }
    for name in [PARAMS_HEADER, ROUTE_HEADER, CLIENT_HEADER] {
        parts.headers.remove(name);
    }
    let encoded: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect();
    let added = [
        (PARAMS_HEADER, encoded.join("&")),
        (ROUTE_HEADER, route.name.to_string()),
        (CLIENT_HEADER, client.to_owned()),
    ];
    for (name, value) in added {
        if let Ok(value) = HeaderValue::from_str(&value) {
            parts.headers.insert(name, value);
        }
    }
    let path = parts.uri.path().to_string();
    let max_body = limits.max_body;
    // A body longer than max_body fails in the guest's read, not here: the
    // guest has the head already.
    let body =
        Limited::new(body, max_body).map_err(move |err| match err.downcast::<hyper::Error>() {
            Ok(err) => wasmtime_wasi_http::Error::Hyper(*err),
            Err(_) => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max_body as u64)),
        });
    let Some(slot) = route.try_reserve() else {
        count(Event::MaxConcurrency);
        return Err(HostAnswer::Busy);
    };
    let (response, done) = host
        .runtime
        .call_proxy(route, Request::from_parts(parts, body), id, slot)
        .await
        .map_err(|err| guest_failure(route, id, &path, err))?;
    let status = response.status().as_u16();
    if status < 200 {
        // 1xx (101 above all) would change the connection under a proxy.
        return Err(guest_failure(
            route,
            id,
            &path,
            GuestError::Trap(format!(
                "the guest answered with {status}, not a final status"
            )),
        ));
    }
    let max_response = limits.max_response;
    let route_name = Arc::clone(&route.name);
    let request_id = Arc::clone(id);
    Ok(response.map(move |body| {
        LimitedResponse {
            inner: body,
            left: max_response,
            route: route_name,
            request_id,
            done: Some(done),
            ended: false,
        }
        .boxed_unsync()
    }))
}

/// Query-string escaping of one name or value: all but unreserved characters.
fn form_encode(text: &str) -> String {
    const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, ESCAPED).to_string()
}

/// A streamed response body that ends with an error past `max_response`
/// bytes, or when the guest failed before finishing it (so the connection is
/// cut rather than the truncated body looking complete).
struct LimitedResponse {
    inner: wasmtime_wasi_http::p2::body::HyperOutgoingBody,
    left: usize,
    route: Arc<str>,
    request_id: Arc<str>,
    /// Taken once the guest's outcome is known.
    done: Option<ProxyDone>,
    /// The guest's body has ended.
    ended: bool,
}

impl hyper::body::Body for LimitedResponse {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        if !self.ended {
            match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        if data.len() > self.left {
                            tracing::error!(
                                request_id = %self.request_id,
                                route = %self.route,
                                "the guest's streamed response went past max_response; connection cut"
                            );
                            return Poll::Ready(Some(Err("response over max_response".into())));
                        }
                        self.left -= data.len();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(Box::new(err)))),
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.ended = true,
            }
        }
        // The body ended: cleanly only if the guest did not fail.
        let failed = match self.done.as_mut() {
            None => return Poll::Ready(None),
            Some(ProxyDone::Finished(failed)) => *failed,
            Some(ProxyDone::Running(finished)) => match std::pin::Pin::new(finished).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(failed) => failed.unwrap_or(true),
            },
        };
        self.done = None;
        if failed {
            Poll::Ready(Some(Err(
                "the guest failed before finishing its response".into()
            )))
        } else {
            Poll::Ready(None)
        }
    }

    fn is_end_stream(&self) -> bool {
        let guest_done_well = matches!(self.done, None | Some(ProxyDone::Finished(false)));
        guest_done_well && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every answer's body: whole (host answers, method routes) or streamed
/// (`wasi:http/proxy` routes).
pub type HostBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

fn boxed(response: Response<Full<Bytes>>) -> Response<HostBody> {
    response.map(|body| body.map_err(|never| match never {}).boxed_unsync())
}

/// `OPTIONS` on a route without its own handler: list what it answers.
fn options_answer(route: &CompiledRoute) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    if let Ok(allow) = HeaderValue::from_str(&route.allow) {
        response.headers_mut().insert(header::ALLOW, allow);
    }
    response
}

/// Reads the body within `max_body` and builds the record the guest gets.
async fn read_request(
    req: Request<Incoming>,
    params: Vec<(String, String)>,
    client: &str,
    max_body: usize,
) -> Result<GuestRequest, HostAnswer> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return Err(HostAnswer::BodyTooLarge(max_body));
    }
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|err| {
            if err.downcast_ref::<LengthLimitError>().is_some() {
                HostAnswer::BodyTooLarge(max_body)
            } else {
                HostAnswer::BadBody(err.to_string())
            }
        })?
        .to_bytes();

    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    Ok(GuestRequest {
        method: parts.method.as_str().to_string(),
        url: format!("http://{authority}{path_and_query}"),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        params,
        headers,
        body: body.to_vec(),
        client_addr: client.to_owned(),
    })
}

/// hyper's smallest read buffer; the head limit cannot go below it.
const MIN_BUF_SIZE: usize = 8192;

/// Headers the host owns: framing and connection management are decided by
/// the host, never by a guest.
const HOST_OWNED_HEADERS: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Checks and converts a guest's response.
fn into_http(
    guest: GuestResponse,
    strip_body: bool,
    max_response: usize,
) -> Result<Response<Full<Bytes>>, String> {
    if guest.body.len() > max_response {
        return Err(format!(
            "body of {} bytes is over the route's max_response of {max_response}",
            guest.body.len()
        ));
    }
    let status = StatusCode::from_u16(guest.status)
        .ok()
        .filter(|s| s.as_u16() >= 200)
        .ok_or_else(|| format!("status {} is not a final HTTP status", guest.status))?;
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in guest.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not valid"))?;
        if HOST_OWNED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_bytes(&value)
            .map_err(|_| format!("value of header {name} is not valid"))?;
        headers.append(name, value);
    }
    let no_body = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    if no_body && !guest.body.is_empty() {
        return Err(format!("status {status} cannot have a body"));
    }
    if strip_body {
        // HEAD answered by GET: the same headers, the length GET would send,
        // and no body.
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(guest.body.len()));
    } else {
        *response.body_mut() = Full::new(Bytes::from(guest.body));
    }
    Ok(response)
}

/// An answer the host gives itself instead of the route's.
#[derive(Debug)]
enum HostAnswer {
    NotFound,
    BadPath(String),
    MethodNotAllowed(String),
    BodyTooLarge(usize),
    BadBody(String),
    BodyTimeout,
    Busy,
    GuestFailed,
    Timeout,
}

impl HostAnswer {
    /// The one place failures become statuses.
    fn into_response(self) -> Response<Full<Bytes>> {
        let (status, body, allow) = match self {
            HostAnswer::NotFound => (
                StatusCode::NOT_FOUND,
                serde_json::json!({ "error": "Not found" }),
                None,
            ),
            HostAnswer::BadPath(reason) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": format!("Bad request: {reason}") }),
                None,
            ),
            HostAnswer::MethodNotAllowed(allow) => (
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({ "error": "Method not allowed", "allow": allow }),
                Some(allow),
            ),
            HostAnswer::BodyTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({ "error": "Request body too large", "limit_bytes": limit }),
                None,
            ),
            HostAnswer::BadBody(reason) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": format!("Could not read the request body: {reason}") }),
                None,
            ),
            HostAnswer::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                serde_json::json!({ "error": "The request body took too long to arrive" }),
                None,
            ),
            HostAnswer::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": "The route is busy; try again shortly" }),
                None,
            ),
            HostAnswer::GuestFailed => (
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({ "error": "Internal server error" }),
                None,
            ),
            HostAnswer::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                serde_json::json!({ "error": "The route took too long to answer" }),
                None,
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(allow) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            headers.insert(header::ALLOW, allow);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
        ) {
            // The request was not read to its end, so the rest of it may still
            // be on the wire: this connection cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::generated_id;

    #[test]
    fn generated_ids_read_as_prefix_dash_counter() {
        for (prefix, n) in [
            (0, 0),
            (0xdead_beef, 1),
            (0x0000_00a0, 42),
            (u32::MAX, 1_000_000_007),
            (0x1234_5678, u64::MAX),
        ] {
            assert_eq!(&*generated_id(prefix, n), format!("{prefix:08x}-{n}"));
        }
    }
}
