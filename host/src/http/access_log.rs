//! The access log: one `access` line per request, with its id, method, path,
//! route, status, duration and the bytes sent; for a streamed answer, once
//! its body has ended.

use super::body::{BoxError, HostBody};
use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Body;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request's access log line, written once its answer is known.
pub(crate) struct AccessLine {
    pub(crate) id: Arc<str>,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) status: u16,
    pub(crate) started: Instant,
}

impl AccessLine {
    /// Writes the line of an answer that is done, or arranges for it to be
    /// written when the body of a streamed one ends.
    pub(crate) fn attach(
        self,
        response: Response<HostBody>,
        elapsed: Duration,
    ) -> Response<HostBody> {
        match response.body().size_hint().exact() {
            Some(bytes) => {
                self.write(bytes, elapsed);
                response
            }
            // A streamed answer of unknown length: its line is written when the
            // body ends (or the client goes), with what was sent by then.
            None if tracing::enabled!(target: "access", tracing::Level::INFO) => {
                response.map(|body| {
                    CountedBody {
                        inner: body,
                        bytes: 0,
                        access: Some(self),
                    }
                    .boxed_unsync()
                })
            }
            None => response,
        }
    }

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
