//! The HTTP side: accept connections, match the path, run the route, write
//! the answer. The request path reads top to bottom in [`handle`].
//!
//! Every answer the host makes itself is JSON `{"error": "..."}`; the mapping
//! from failures to statuses lives in [`HostAnswer::into_response`].

use crate::manifest::ClientLimits;
use crate::runtime::{
    CompiledRoute, GuestError, GuestRequest, GuestResponse, Method, RouteTable, Runtime,
};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What every connection shares.
pub struct Host {
    runtime: Runtime,
    table: RouteTable,
    clients: ClientLimits,
    next_request_id: AtomicU64,
}

impl Host {
    pub fn new(runtime: Runtime, table: RouteTable, clients: ClientLimits) -> Host {
        Host {
            runtime,
            table,
            clients,
            next_request_id: AtomicU64::new(1),
        }
    }
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
        let service = service_fn(move |req| {
            let host = Arc::clone(&for_service);
            async move { Ok::<_, std::convert::Infallible>(handle(&host, req, client).await) }
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
    let drain = host.clients.drain_timeout;
    tracing::info!("shutting down: waiting up to {drain:?} for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain deadline passed; exiting with requests still open"),
    }
}

/// One request, start to finish.
async fn handle(host: &Host, req: Request<Incoming>, client: SocketAddr) -> Response<Full<Bytes>> {
    let id = host.next_request_id.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    // No span per request: creating one formats its fields even when nothing
    // is logged. Each event names the request id itself.
    let method = req.method().clone();
    let mut response = route_request(host, req, client, id)
        .await
        .unwrap_or_else(HostAnswer::into_response);
    response
        .headers_mut()
        .insert("x-request-id", HeaderValue::from(id));
    tracing::debug!(
        request_id = id,
        %method,
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "done"
    );
    response
}

async fn route_request(
    host: &Host,
    req: Request<Incoming>,
    client: SocketAddr,
    id: u64,
) -> Result<Response<Full<Bytes>>, HostAnswer> {
    let (route, params) = host
        .table
        .lookup(req.uri().path())
        .map_err(|err| HostAnswer::BadPath(err.to_string()))?
        .ok_or(HostAnswer::NotFound)?;

    let requested = Method::from_http(req.method());
    let (method, strip_body) = match requested {
        Some(m) if route.handles(m) => (m, false),
        Some(Method::Head) if route.handles(Method::Get) => (Method::Get, true),
        Some(Method::Options) => return Ok(options_answer(route)),
        _ => return Err(HostAnswer::MethodNotAllowed(route.allow.clone())),
    };

    let limits = &route.limits;
    // For the log, should the guest fail (a cheap reference-counted clone).
    let uri = req.uri().clone();
    // A request without a body (most GETs) needs no timer for reading it.
    let request = if req.body().is_end_stream() {
        read_request(req, params, client, limits.max_body).await?
    } else {
        tokio::time::timeout(
            host.clients.body_timeout,
            read_request(req, params, client, limits.max_body),
        )
        .await
        .map_err(|_| HostAnswer::BodyTimeout)??
    };
    let _slot = route.try_reserve().ok_or(HostAnswer::Busy)?;
    let response = host
        .runtime
        .call(route, method, request, id)
        .await
        .map_err(|err| match err {
            GuestError::Timeout(limit) => {
                tracing::warn!(
                    request_id = id,
                    route = %route.name,
                    path = %uri.path(),
                    "guest timed out after {limit:?}"
                );
                HostAnswer::Timeout
            }
            GuestError::PoolExhausted => {
                tracing::warn!(
                    request_id = id,
                    route = %route.name,
                    path = %uri.path(),
                    "all instance slots are in use; answering 503"
                );
                HostAnswer::Busy
            }
            other => {
                tracing::error!(
                    request_id = id,
                    route = %route.name,
                    path = %uri.path(),
                    "{other}"
                );
                HostAnswer::GuestFailed
            }
        })?;
    into_http(response, strip_body, limits.max_response).map_err(|reason| {
        tracing::error!(
            request_id = id,
            route = %route.name,
            path = %uri.path(),
            "guest returned an invalid response: {reason}"
        );
        HostAnswer::GuestFailed
    })
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
    client: SocketAddr,
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
        client_addr: client.to_string(),
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
