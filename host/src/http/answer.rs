//! Answers the host makes itself, as JSON `{"error": "..."}` with the right
//! status: [`HostAnswer::into_response`] is the one place they become
//! responses. (Under `edgehost dev`, a route whose crate failed to build
//! answers with the compiler's text instead: [`build_failed`].)

use crate::runtime::{CompiledRoute, GuestError};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// Bounds on a guest's response head: the ones a request's head has
/// (`max_headers`, `max_header_bytes`), so a route cannot send a client
/// more than the host would take from one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadBound {
    pub(crate) max_headers: usize,
    pub(crate) max_bytes: usize,
}

impl HeadBound {
    /// Why a head of these (name, value) lengths is over the bound, if it is.
    /// Each line counts its name, its value and the four bytes of `: ` and
    /// CRLF.
    pub(crate) fn check(&self, lines: impl Iterator<Item = (usize, usize)>) -> Result<(), Invalid> {
        let (count, bytes) = lines.fold((0usize, 0usize), |(count, bytes), (name, value)| {
            let line = name.saturating_add(value).saturating_add(4);
            (count + 1, bytes.saturating_add(line))
        });
        if count > self.max_headers {
            return Err(Invalid::over(
                format!(
                    "its {count} headers are over max_headers ({})",
                    self.max_headers
                ),
                "max_headers",
            ));
        }
        if bytes > self.max_bytes {
            return Err(Invalid::over(
                format!(
                    "its head of {bytes} bytes is over max_header_bytes ({})",
                    self.max_bytes
                ),
                "max_header_bytes",
            ));
        }
        Ok(())
    }
}

/// Why a guest's answer cannot be sent, and the limit it is over if that
/// is why.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) reason: String,
    pub(crate) limit: Option<&'static str>,
}

impl Invalid {
    pub(crate) fn over(reason: String, limit: &'static str) -> Invalid {
        Invalid {
            reason,
            limit: Some(limit),
        }
    }
}

impl From<String> for Invalid {
    fn from(reason: String) -> Invalid {
        Invalid {
            reason,
            limit: None,
        }
    }
}

/// What a client told to retry is told.
const BUSY: &str = "The route is busy; try again shortly";

/// An answer the host gives itself instead of the route's.
#[derive(Debug)]
pub(crate) enum HostAnswer {
    NotFound,
    BadPath(String),
    /// An HTTP/1.1 request without exactly one valid `Host` (RFC 9112 3.2).
    BadHost(&'static str),
    /// A method the host never routes (`CONNECT`, `TRACE`).
    MethodNotServed(http::Method),
    MethodNotAllowed(String),
    BodyTooLarge(usize),
    BadBody(String),
    BodyTimeout,
    /// The route is at its `max_concurrency`.
    Busy,
    /// The client is over the route's `rate_limit`: retry after this many
    /// seconds.
    RateLimited(u64),
    /// The guest gave no answer: the status its failure's verdict says,
    /// and the limit it ran into, if that is why.
    Guest(StatusCode, Option<&'static str>),
    /// The guest gave an answer the host cannot send: over this limit, if
    /// that is why.
    InvalidResponse(Option<&'static str>),
}

impl HostAnswer {
    /// What the client gets when the guest gave no answer: its verdict's
    /// status, counted and logged (a limit the route ran into as a warning,
    /// a guest failure as an error).
    pub(crate) fn guest_failed(
        route: &CompiledRoute,
        id: &str,
        path: &str,
        err: GuestError,
    ) -> HostAnswer {
        let verdict = err.verdict();
        route.metrics.count(verdict.event);
        err.log(id, &route.name, path);
        HostAnswer::Guest(verdict.status, verdict.event.limit_name())
    }

    /// The one place host answers become responses.
    pub(crate) fn into_response(self) -> Response<Full<Bytes>> {
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
            HostAnswer::BadHost(reason) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": format!("Bad request: {reason}") }),
                None,
            ),
            HostAnswer::MethodNotServed(method) => (
                StatusCode::NOT_IMPLEMENTED,
                serde_json::json!({ "error": format!("{method} is not served here") }),
                None,
            ),
            HostAnswer::MethodNotAllowed(allow) => (
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({ "error": "Method not allowed", "allow": allow }),
                Some(allow),
            ),
            HostAnswer::BodyTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({ "error": "Request body too large", "limit": "max_body", "limit_bytes": limit }),
                None,
            ),
            HostAnswer::BadBody(reason) => (
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": format!("Could not read the request body: {reason}") }),
                None,
            ),
            HostAnswer::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                serde_json::json!({ "error": "The request body took too long to arrive", "limit": "body_timeout" }),
                None,
            ),
            HostAnswer::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": BUSY, "limit": "max_concurrency" }),
                None,
            ),
            HostAnswer::RateLimited(seconds) => {
                let mut response = json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &serde_json::json!({ "error": "Too many requests", "limit": "rate_limit", "retry_after_seconds": seconds }),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
                return response;
            }
            // The status is the failure's verdict; only the words are chosen here.
            HostAnswer::Guest(status, limit) => {
                let error = match status {
                    StatusCode::GATEWAY_TIMEOUT => "The route took too long to answer",
                    StatusCode::SERVICE_UNAVAILABLE => BUSY,
                    StatusCode::PAYLOAD_TOO_LARGE if limit == Some("max_part") => {
                        "A part of the request body is too large"
                    }
                    StatusCode::PAYLOAD_TOO_LARGE => "Request body too large",
                    _ => "Internal server error",
                };
                let mut body = serde_json::json!({ "error": error });
                if let Some(limit) = limit {
                    body["limit"] = limit.into();
                }
                (status, body, None)
            }
            HostAnswer::InvalidResponse(limit) => {
                let mut body = serde_json::json!({ "error": "Internal server error" });
                if let Some(limit) = limit {
                    body["limit"] = limit.into();
                }
                (StatusCode::INTERNAL_SERVER_ERROR, body, None)
            }
        };
        let mut response = json(status, &body);
        let headers = response.headers_mut();
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

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Under `edgehost dev`, a route whose crate failed to build answers with
/// the compiler's errors, as plain text for a terminal.
pub(crate) fn build_failed(text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_string())));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
