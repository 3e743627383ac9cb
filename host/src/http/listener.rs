//! The accept loop, for the public listener and the admin API alike: each
//! connection served by hyper in a task of its own, within the listener's
//! limits on request heads; on shutdown, no new connections and a bounded
//! wait for the open ones to finish what they are doing.

use super::body::BoxError;
use super::connections::{Activity, Connections, Deadlines, Tracked};
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// hyper's smallest read buffer; the head limit cannot go below it.
const MIN_BUF_SIZE: usize = 8192;

/// How long to wait before accepting again after accept failed (out of
/// file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a listener's connections may send in a request head.
pub(crate) struct HeadLimits {
    /// Time a client has to send a request head (slow-loris defence).
    pub(crate) timeout: Duration,
    /// Largest head in bytes; `None`: hyper's default.
    pub(crate) max_bytes: Option<usize>,
    /// Most header lines; `None`: hyper's default.
    pub(crate) max_headers: Option<usize>,
}

/// Serves `listener` with `handle` (given each request and the client's
/// address, formatted once per connection) until `shutdown` resolves; then
/// stops accepting and waits up to `drain` for open connections to finish
/// their requests. `name` tells the log which listener this is.
pub(crate) async fn serve<H, F, B>(
    name: &'static str,
    listener: TcpListener,
    limits: HeadLimits,
    connections: Arc<Connections>,
    handle: H,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) where
    H: Fn(Request<Incoming>, Arc<str>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let handle = Arc::new(handle);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Keep serving the connections we have and try again shortly.
                    tracing::warn!("{name}: accept failed: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let admitted = match connections.admit(client) {
            Ok(admitted) => admitted,
            Err(limit) => {
                tracing::debug!(%client, "{name}: connection refused ({limit:?})");
                Connections::refuse(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handle = Arc::clone(&handle);
        // Formatted once per connection, not per request.
        let client_addr: Arc<str> = Arc::from(client.to_string());
        let activity = Arc::new(Activity::default());
        let io = Deadlines::new(stream, admitted, Arc::clone(&activity));
        let service = service_fn(move |req| {
            // Busy from the head until the response body is done with.
            let busy = activity.request_started();
            let answer = handle(req, Arc::clone(&client_addr));
            async move {
                let response = answer.await.map(|body| Tracked::new(body, busy));
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.timeout);
        if let Some(max_bytes) = limits.max_bytes {
            builder.max_buf_size(max_bytes.max(MIN_BUF_SIZE));
        }
        if let Some(max_headers) = limits.max_headers {
            builder.max_headers(max_headers);
        }
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%client, "{name}: connection ended: {err}");
            }
        });
    }
    drop(listener);
    tracing::info!("{name}: shutting down: waiting up to {drain:?} for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("{name}: all connections closed"),
        () = tokio::time::sleep(drain) => tracing::warn!("{name}: drain deadline passed; exiting with requests still open"),
    }
}
