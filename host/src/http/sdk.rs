//! A request for an SDK route: the method picked (`HEAD` through `GET`,
//! `OPTIONS` answered by the host, `405` otherwise), the body read whole
//! within `max_body` (or, for a route that imports `request-body`, handed
//! to it as it arrives), one instance called with the request record, and
//! its answer checked and sent: a response record whole, a streamed answer
//! chunk by chunk as the guest writes it.

use super::answer::{HeadBound, HostAnswer, Invalid};
use super::body::{boxed, declares_more_than, read_limited, BodyError, BoxError, HostBody};
use crate::metrics::Event;
use crate::runtime::{Answer, CompiledRoute, Incoming, Piece, Runtime};
use crate::wit::{Method, Request as GuestRequest, Response as GuestResponse};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
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
) -> Result<Response<HostBody>, HostAnswer>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let requested = Method::from_http(req.method());
    let (method, strip_body) = match requested {
        Some(m) if route.handles(m) => (m, false),
        Some(Method::Head) if route.handles(Method::Get) => (Method::Get, true),
        Some(Method::Options) => return Ok(boxed(options_answer(route))),
        _ => return Err(HostAnswer::MethodNotAllowed(route.allow.clone())),
    };

    let limits = &route.limits;
    let count = |event: Event| route.metrics.count(event);
    // For the log, should the guest fail (a cheap reference-counted clone).
    let uri = req.uri().clone();
    let (request, incoming) = if route.streams_body && !req.body().is_end_stream() {
        streamed_request(req, params, client, limits, bounds.body_timeout)
            .inspect_err(|_| count(Event::MaxBody))?
    } else {
        let request = read_whole(req, params, client, limits.max_body, bounds.body_timeout)
            .await
            .inspect_err(|answer| match answer {
                HostAnswer::BodyTooLarge(_) => count(Event::MaxBody),
                HostAnswer::BodyTimeout => count(Event::BodyTimeout),
                _ => {}
            })?;
        (request, None)
    };
    let Some(slot) = route.try_reserve() else {
        count(Event::MaxConcurrency);
        return Err(HostAnswer::Busy);
    };
    let answer = runtime
        .answer(route, method, request, incoming, id, slot)
        .await
        .map_err(|err| HostAnswer::guest_failed(route, id, uri.path(), err))?;
    let checked = match answer {
        Answer::Whole(response) => {
            into_http(response, strip_body, limits.max_response, bounds.head).map(boxed)
        }
        Answer::Streamed(head, body) => into_head(head, bounds.head).map(|response| {
            // HEAD, or a status without a body: the head alone; the guest
            // finds its client gone at its next write.
            let bodiless = strip_body || status_has_no_body(response.status());
            let body = if bodiless { None } else { Some(body) };
            response.map(|()| Streamed { body }.boxed_unsync())
        }),
    };
    checked.map_err(|Invalid { reason, limit }| {
        count(match limit {
            Some("max_response") => Event::MaxResponse,
            _ => Event::InvalidResponse,
        });
        tracing::error!(
            request_id = %id,
            route = %route.name,
            path = %uri.path(),
            "guest returned an invalid response: {reason}"
        );
        HostAnswer::InvalidResponse(limit)
    })
}

/// The request record of a route that reads its body as it arrives, and
/// that body; a body declared over `max_body` is refused first.
fn streamed_request<B>(
    req: Request<B>,
    params: Vec<(String, String)>,
    client: &str,
    limits: &crate::manifest::Limits,
    body_timeout: Duration,
) -> Result<(GuestRequest, Option<Incoming>), HostAnswer>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if declares_more_than(req.headers(), limits.max_body) {
        return Err(HostAnswer::BodyTooLarge(limits.max_body));
    }
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = body.map_err(Into::into).boxed_unsync();
    let incoming = Incoming::new(
        body,
        content_type,
        limits.max_body,
        limits.max_part,
        body_timeout,
    );
    let request = record(&parts, params, client, Vec::new());
    Ok((request, Some(incoming)))
}

/// The request record with its whole body, read within `max_body` and the
/// body timeout.
async fn read_whole<B>(
    req: Request<B>,
    params: Vec<(String, String)>,
    client: &str,
    max_body: usize,
    body_timeout: Duration,
) -> Result<GuestRequest, HostAnswer>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // A request without a body (most GETs) needs no timer for reading it.
    if req.body().is_end_stream() {
        read_request(req, params, client, max_body).await
    } else {
        tokio::time::timeout(body_timeout, read_request(req, params, client, max_body))
            .await
            .unwrap_or(Err(HostAnswer::BodyTimeout))
    }
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
    Ok(record(&parts, params, client, body.to_vec()))
}

/// The record the guest gets for a request with `body`.
fn record(
    parts: &http::request::Parts,
    params: Vec<(String, String)>,
    client: &str,
    body: Vec<u8>,
) -> GuestRequest {
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
    GuestRequest {
        method: parts.method.as_str().to_string(),
        url: format!("http://{authority}{path_and_query}"),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        params,
        headers,
        body,
        client_addr: client.to_owned(),
    }
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
    mut guest: GuestResponse,
    strip_body: bool,
    max_response: usize,
    head: HeadBound,
) -> Result<Response<Full<Bytes>>, Invalid> {
    if guest.body.len() > max_response {
        return Err(Invalid::over(
            format!(
                "body of {} bytes is over the route's max_response of {max_response}",
                guest.body.len()
            ),
            "max_response",
        ));
    }
    let body = std::mem::take(&mut guest.body);
    let mut response = into_head(guest, head)?;
    let status = response.status();
    if status_has_no_body(status) && !body.is_empty() {
        return Err(format!("status {status} cannot have a body").into());
    }
    if strip_body {
        // HEAD answered by GET: the same headers, the length GET would send,
        // and no body.
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        Ok(response.map(|()| Full::new(Bytes::new())))
    } else {
        Ok(response.map(|()| Full::new(Bytes::from(body))))
    }
}

fn status_has_no_body(status: StatusCode) -> bool {
    matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// Checks and converts a guest's status and headers (its body aside): a
/// final status, valid names and values within the head's bound, the
/// headers the host owns dropped.
fn into_head(guest: GuestResponse, head: HeadBound) -> Result<Response<()>, Invalid> {
    head.check(
        guest
            .headers
            .iter()
            .map(|(name, value)| (name.len(), value.len())),
    )?;
    let status = StatusCode::from_u16(guest.status)
        .ok()
        .filter(|s| s.as_u16() >= 200)
        .ok_or_else(|| format!("status {} is not a final HTTP status", guest.status))?;
    let mut response = Response::new(());
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
    Ok(response)
}

/// A streamed answer's body: each chunk sent as the guest writes it, the
/// connection cut (an error) when the guest failed before its end.
struct Streamed {
    /// `None` for `HEAD`.
    body: Option<tokio::sync::mpsc::Receiver<Piece>>,
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let piece = match body.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(piece) => piece,
        };
        match piece {
            Some(Piece::Data(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Some(Piece::End) => {
                self.body = None;
                Poll::Ready(None)
            }
            Some(Piece::Cut) | None => {
                self.body = None;
                Poll::Ready(Some(Err(
                    "the route failed before finishing its streamed answer".into(),
                )))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_none()
    }
}
