//! A request for an SDK route: the method picked (`HEAD` through `GET`,
//! `OPTIONS` answered by the host, `405` otherwise), the body read whole
//! within `max_body`, one instance called with the request record, and its
//! response record checked and sent.

use super::answer::{HeadBound, HostAnswer};
use super::body::{read_limited, BodyError, BoxError};
use crate::metrics::Event;
use crate::runtime::{CompiledRoute, Runtime};
use crate::wit::{Method, Request as GuestRequest, Response as GuestResponse};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Body;
use std::sync::Arc;
use std::time::Duration;

/// What the public listener bounds for every SDK request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Time a client has to send a whole request body.
    pub(crate) body_timeout: Duration,
    /// The guest's response head.
    pub(crate) head: HeadBound,
}

/// A matched request: method, body, instance, response.
pub(crate) async fn run<B>(
    runtime: &Runtime,
    bounds: &Bounds,
    route: &CompiledRoute,
    params: Vec<(String, String)>,
    req: Request<B>,
    client: &str,
    id: &Arc<str>,
) -> Result<Response<Full<Bytes>>, HostAnswer>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
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
            bounds.body_timeout,
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
    let response = runtime
        .call(route, method, request, id)
        .await
        .map_err(|err| HostAnswer::guest_failed(route, id, uri.path(), err))?;
    drop(slot);
    into_http(response, strip_body, limits.max_response, bounds.head).map_err(|reason| {
        count(Event::InvalidResponse);
        tracing::error!(
            request_id = %id,
            route = %route.name,
            path = %uri.path(),
            "guest returned an invalid response: {reason}"
        );
        HostAnswer::InvalidResponse
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
async fn read_request<B>(
    req: Request<B>,
    params: Vec<(String, String)>,
    client: &str,
    max_body: usize,
) -> Result<GuestRequest, HostAnswer>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let body = read_limited(&parts.headers, body, max_body)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => HostAnswer::BodyTooLarge(max_body),
            BodyError::Unreadable(reason) => HostAnswer::BadBody(reason),
        })?;

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
    head: HeadBound,
) -> Result<Response<Full<Bytes>>, String> {
    head.check(
        guest
            .headers
            .iter()
            .map(|(name, value)| (name.len(), value.len())),
    )?;
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
