//! The public listener and the request path, top to bottom in [`handle`]:
//! an id, the route table the request is served from, the route its path
//! matches, the route's answer with its edge policies (`edge.rs`) or the
//! host's, the metrics, the access line.
//!
//! Routes are served from the current deployment, an immutable snapshot
//! swapped atomically by a deploy, a reload or a rollback. A request holds
//! the snapshot it started with until it is answered.

use super::access_log::AccessLine;
use super::answer::{build_failed, HostAnswer};
use super::body::{boxed, HostBody};
use super::connections::{ConnectionLimits, Connections};
use super::edge::{self, Guests};
use super::listener::{self, HeadLimits};
use super::request_id::RequestIds;
use super::schedule::{SCHEDULED, SCHEDULED_AT};
use crate::control::Host;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// What every request on the public listener shares.
struct Public {
    host: Arc<Host>,
    ids: RequestIds,
    /// The host and what an SDK request may take (the proxy ones take the
    /// head bound).
    guests: Guests,
}

/// Serves the routes of `host` on `listener` until `shutdown` resolves;
/// then the host is shutting down, and in-flight requests have up to the
/// drain timeout to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    host: Arc<Host>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = host.started_with.server.clone();
    let public = Arc::new(Public {
        host: Arc::clone(&host),
        ids: RequestIds::new(),
        guests: Guests::new(Arc::clone(&host)),
    });
    let connections = Connections::new(
        ConnectionLimits {
            max_total: limits.max_connections,
            max_per_client: limits.max_connections_per_client,
            keep_alive: limits.keep_alive_timeout,
            write_timeout: limits.write_timeout,
        },
        Arc::clone(&host.metrics().connections),
    );
    let began = Arc::new(std::sync::OnceLock::new());
    let began_at = Arc::clone(&began);
    let drained_host = Arc::clone(&host);
    let shutdown = async move {
        shutdown.await;
        let _ = began_at.set(tokio::time::Instant::now());
        host.begin_shutdown();
    };
    listener::serve(
        "public listener",
        listener,
        HeadLimits {
            timeout: limits.header_timeout,
            max_bytes: Some(limits.max_header_bytes),
            max_headers: Some(limits.max_headers),
        },
        connections,
        move |req, client| {
            let public = Arc::clone(&public);
            async move { handle(&public, req, &client).await }
        },
        shutdown,
        limits.drain_timeout,
    )
    .await;
    // Guests working on after their answers (wait_until) get what is left
    // of the drain timeout too.
    let began = began
        .get()
        .copied()
        .unwrap_or_else(tokio::time::Instant::now);
    let runtime = &drained_host.runtime;
    let drained =
        tokio::time::timeout_at(began + limits.drain_timeout, runtime.background_drained());
    if drained.await.is_err() {
        tracing::warn!(
            "{} guests still working after their answers are stopped: the drain timeout of {:?} passed",
            runtime.background_running(),
            limits.drain_timeout
        );
    }
}

/// One request, start to finish.
async fn handle(public: &Public, mut req: Request<Incoming>, client: &str) -> Response<HostBody> {
    let started = Instant::now();
    // Only the host's scheduler marks a call as scheduled: a client's
    // marks are dropped.
    // (Names made at compile time: no parsing per request.)
    const MARKS: [HeaderName; 2] = [
        HeaderName::from_static(SCHEDULED),
        HeaderName::from_static(SCHEDULED_AT),
    ];
    let headers = req.headers_mut();
    for mark in &MARKS {
        headers.remove(mark);
    }
    // No span per request: creating one formats its fields even when nothing
    // is logged. Each event names the request id itself.
    let id = public.ids.for_request(req.headers());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let deployment = public.host.deployments.current();
    let lookup = match refusal(&req) {
        Some(answer) => Err(answer),
        None => deployment
            .table
            .lookup(&path)
            .map_err(|err| HostAnswer::BadPath(err.to_string())),
    };
    let (route, answer) = match lookup {
        Err(answer) => (None, Err(answer)),
        Ok(None) => (None, Err(HostAnswer::NotFound)),
        Ok(Some((route, params))) => {
            let build_error = public
                .host
                .build_errors
                .as_ref()
                .and_then(|errors| errors.for_component(&route.component));
            // The route's policies (CORS, rate limit, cache) around its guest.
            let answer = match build_error {
                Some(text) => boxed(build_failed(&text)),
                None => {
                    edge::answer(&public.guests, &deployment, route, params, req, client, &id).await
                }
            };
            (Some(route), Ok(answer))
        }
    };
    let mut response = answer.unwrap_or_else(|answer| boxed(answer.into_response()));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    route
        .map_or(&public.host.metrics().unmatched, |route| &route.metrics)
        .record(&method, status, elapsed);
    let access = AccessLine {
        id,
        method,
        path,
        route: route.map(|route| Arc::clone(&route.name)),
        status,
        started,
    };
    access.attach(response, elapsed)
}

/// What the host refuses before looking for a route: an HTTP/1.1 request
/// without exactly one valid `Host` (RFC 9112 section 3.2 says 400), and
/// the methods no route is ever given (`CONNECT` would tunnel, `TRACE`
/// would echo credentials back).
fn refusal(req: &Request<Incoming>) -> Option<HostAnswer> {
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Some(HostAnswer::MethodNotServed(req.method().clone()));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Some(HostAnswer::BadHost("more than one Host header"));
    }
    match first {
        None if req.version() == Version::HTTP_11 => Some(HostAnswer::BadHost(
            "an HTTP/1.1 request needs a Host header",
        )),
        None => None,
        Some(value) => (!valid_host(value.as_bytes()))
            .then_some(HostAnswer::BadHost("the Host header is not a host[:port]")),
    }
}

/// `host[:port]` as RFC 9110 section 7.2 allows it: a name, an IPv4 address
/// or a bracketed IPv6 literal, no user info, no path.
fn valid_host(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    !text.is_empty()
        && !text.contains(['@', '/', '?', '#'])
        && text.parse::<http::uri::Authority>().is_ok()
}
