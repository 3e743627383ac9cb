//! Outbound HTTP connections kept open between requests, per origin, as
//! Spin's pool does: a route that calls one API fifty times opens one
//! connection, not fifty, and the next request of the route reuses it.
//!
//! A connection is keyed by the address it was opened to (after the
//! allow-list and the private-address rule passed for the request that
//! opened it), its scheme and, for HTTPS, the name its certificate proved.
//! Every request is still checked against its route's allow-list and its
//! name resolved and checked before a connection is picked, and still
//! counts against `max_outbound_requests`. A connection goes back to the
//! pool only once its answer was read to the end; it is dropped after
//! [`IDLE_TIMEOUT`] unused, and the pool keeps at most [`MAX_IDLE_PER_ORIGIN`]
//! per origin and [`MAX_IDLE`] in all.

use crate::metrics::Metrics;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, WasiBody};

/// How long an idle connection is kept.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept to one origin.
pub(crate) const MAX_IDLE_PER_ORIGIN: usize = 32;
/// Idle connections kept in all.
pub(crate) const MAX_IDLE: usize = 256;

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub(crate) https: bool,
    /// The checked address it connects to.
    pub(crate) addr: SocketAddr,
    /// The name in the URL (the TLS server name for HTTPS).
    pub(crate) name: String,
}

struct Idle {
    sender: SendRequest<WasiBody>,
    since: Instant,
}

/// The host's outbound connections.
pub(crate) struct OutboundPool {
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    tls: OnceLock<tokio_rustls::TlsConnector>,
    /// Counts connections opened and reused.
    metrics: Arc<Metrics>,
}

/// Timeouts of one outbound request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) first_byte: Duration,
    pub(crate) between_bytes: Duration,
}

impl OutboundPool {
    pub(crate) fn new(metrics: Arc<Metrics>) -> OutboundPool {
        OutboundPool {
            idle: Mutex::default(),
            tls: OnceLock::new(),
            metrics,
        }
    }

    /// Sends `request` to `origin` on an idle connection or a new one; the
    /// answer's body gives the connection back once it is read whole.
    pub(crate) async fn send(
        self: &Arc<Self>,
        origin: Origin,
        mut request: Request<WasiBody>,
        timeouts: Timeouts,
    ) -> Result<Response<WasiBody>, Error> {
        // The request line carries the path only (no proxy in between);
        // the Host header names the origin.
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
        let mut sender = match self.take_idle(&origin) {
            Some(sender) => {
                self.metrics.outbound_reused.fetch_add(1, Ordering::Relaxed);
                sender
            }
            None => self.connect(&origin, timeouts.connect).await?,
        };
        let response = loop {
            let sent = tokio::time::timeout(timeouts.first_byte, sender.try_send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?;
            match sent {
                Ok(response) => break response,
                // A kept connection the server closed meanwhile: the request
                // was not sent, so it goes on a new one.
                Err(mut err) => match err.take_message() {
                    Some(unsent) => {
                        request = unsent;
                        sender = self.connect(&origin, timeouts.connect).await?;
                    }
                    None => return Err(Error::from(err.into_error())),
                },
            }
        };
        let between = timeouts.between_bytes.max(Duration::from_nanos(1));
        let pool = Arc::clone(self);
        Ok(response.map(move |incoming| {
            let mut timer = tokio::time::interval(between);
            timer.reset();
            let mut body = Pooled {
                incoming,
                timer,
                back: Some((pool, origin, sender)),
            };
            // An empty body is read whole already.
            if body.incoming.is_end_stream() {
                body.done();
            }
            body.boxed_unsync()
        }))
    }

    fn take_idle(&self, origin: &Origin) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.idle.lock().ok()?;
        let kept = idle.get_mut(origin)?;
        while let Some(Idle { sender, since }) = kept.pop() {
            if since.elapsed() < IDLE_TIMEOUT && sender.is_ready() {
                return Some(sender);
            }
        }
        idle.remove(origin);
        None
    }

    async fn connect(
        &self,
        origin: &Origin,
        timeout: Duration,
    ) -> Result<SendRequest<WasiBody>, Error> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(origin.addr)
                .await
                .map_err(Error::Connect)?;
            let _ = tcp.set_nodelay(true);
            if origin.https {
                let literal = origin.name.trim_start_matches('[').trim_end_matches(']');
                let name = match literal.parse::<std::net::IpAddr>() {
                    Ok(ip) => rustls::pki_types::ServerName::from(ip),
                    Err(_) => rustls::pki_types::ServerName::try_from(origin.name.clone())
                        .map_err(|_| Error::HttpRequestUriInvalid)?,
                };
                let tls = self
                    .tls
                    .get_or_init(tls_connector)
                    .connect(name, tcp)
                    .await
                    .map_err(Error::Tls)?;
                handshake(tls).await
            } else {
                handshake(tcp).await
            }
        };
        let sender = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        self.metrics.outbound_opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// Keeps `sender` for the next request to `origin`, once it can take one.
    fn give_back(self: Arc<Self>, origin: Origin, mut sender: SendRequest<WasiBody>) {
        tokio::spawn(async move {
            // Ready once the connection is idle; an error means it closed.
            let ready = tokio::time::timeout(IDLE_TIMEOUT, sender.ready()).await;
            if !matches!(ready, Ok(Ok(()))) {
                return;
            }
            let Ok(mut idle) = self.idle.lock() else {
                return;
            };
            let total: usize = idle.values().map(Vec::len).sum();
            let kept = idle.entry(origin).or_default();
            kept.retain(|i| i.since.elapsed() < IDLE_TIMEOUT && !i.sender.is_closed());
            if kept.len() < MAX_IDLE_PER_ORIGIN && total < MAX_IDLE {
                kept.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// An HTTP/1.1 connection on `io`, driven by a task of its own until it
/// closes (when its sender is dropped, or the server closes it).
async fn handshake<T>(io: T) -> Result<SendRequest<WasiBody>, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::from)?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!("outbound connection ended: {err}");
        }
    });
    Ok(sender)
}

/// TLS as wasmtime's own client does it: the web's root certificates.
fn tls_connector() -> tokio_rustls::TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An outbound answer's body: stalls between bytes time out, and the
/// connection goes back to the pool when the body has been read whole.
struct Pooled {
    incoming: Incoming,
    timer: tokio::time::Interval,
    back: Option<(Arc<OutboundPool>, Origin, SendRequest<WasiBody>)>,
}

impl Pooled {
    fn done(&mut self) {
        if let Some((pool, origin, sender)) = self.back.take() {
            pool.give_back(origin, sender);
        }
    }
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                self.done();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                // A broken connection is not kept.
                self.back = None;
                Poll::Ready(Some(Err(if err.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(err)
                })))
            }
            Poll::Ready(Some(Ok(frame))) => {
                self.timer.reset();
                if self.incoming.is_end_stream() {
                    self.done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if self.timer.poll_tick(cx).is_ready() {
                    self.back = None;
                    return Poll::Ready(Some(Err(Error::ConnectionReadTimeout)));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.incoming.size_hint()
    }
}
