//! A request for a standard `wasi:http/proxy` component: every method goes
//! to it, the body streams in (within `max_body`) and the answer streams
//! out (within `max_response`) while the guest runs; the host adds the
//! matched params, the route and the client's address as headers, ours and
//! Spin's.

use super::answer::{HeadBound, HostAnswer};
use super::body::{declares_more_than, BoxError, HostBody};
use super::spin;
use crate::metrics::Event;
use crate::runtime::{CompiledRoute, GuestError, ProxyDone, Runtime};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use std::future::Future;
use std::sync::Arc;

/// The headers a `wasi:http/proxy` route gets from the host (any a client
/// sent under these names are dropped): its matched params as a query
/// string (`postId=1&_splat=a%2Fb`), its pattern, the client's address.
const PARAMS_HEADER: &str = "x-edge-params";
const ROUTE_HEADER: &str = "x-edge-route";
const CLIENT_HEADER: &str = "x-edge-client-addr";

/// A request for a standard `wasi:http/proxy` component: the body streams
/// in (within `max_body`) and the answer streams out (within
/// `max_response`) while the guest runs.
pub(crate) async fn run<B>(
    runtime: &Runtime,
    route: &CompiledRoute,
    params: Vec<(String, String)>,
    req: Request<B>,
    client: &str,
    id: &Arc<str>,
    head: HeadBound,
) -> Result<Response<HostBody>, HostAnswer>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limits = &route.limits;
    let count = |event: Event| route.metrics.count(event);
    let (mut parts, body) = req.into_parts();
    if declares_more_than(&parts.headers, limits.max_body) {
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
    // The same, as Spin tells its components (when the route gets them);
    // any `spin-*` header a client sent is dropped either way.
    if route.spin_headers {
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                let host = parts.headers.get(header::HOST)?.to_str().ok()?;
                Some(host.to_owned())
            })
            .unwrap_or_default();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        let spin = spin::SpinRequest {
            pattern: &route.name,
            params: &params,
            path_and_query: &path_and_query,
            host: &host,
            client,
        };
        spin::set_headers(&mut parts.headers, Some(&spin));
    } else {
        spin::set_headers(&mut parts.headers, None);
    }
    let path = parts.uri.path().to_string();
    let max_body = limits.max_body;
    // A body longer than max_body fails in the guest's read, not here: the
    // guest has the head already.
    let body = Limited::new(body, max_body).map_err(move |err: BoxError| {
        match err.downcast::<hyper::Error>() {
            Ok(err) => wasmtime_wasi_http::Error::Hyper(*err),
            Err(_) => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max_body as u64)),
        }
    });
    let Some(slot) = route.try_reserve() else {
        count(Event::MaxConcurrency);
        return Err(HostAnswer::Busy);
    };
    let (response, done) = runtime
        .call_proxy(route, Request::from_parts(parts, body), id, slot)
        .await
        .map_err(|err| HostAnswer::guest_failed(route, id, &path, err))?;
    let lines = response
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().len(), value.len()));
    if let Err(invalid) = head.check(lines) {
        count(Event::InvalidResponse);
        tracing::error!(
            request_id = %id,
            route = %route.name,
            path = %path,
            "guest returned an invalid response: its head is too large: {}",
            invalid.reason
        );
        return Err(HostAnswer::InvalidResponse(invalid.limit));
    }
    let status = response.status().as_u16();
    if status < 200 {
        // 1xx (101 above all) would change the connection under a proxy.
        return Err(HostAnswer::guest_failed(
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
    inner: crate::runtime::GuestBody,
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
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
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
