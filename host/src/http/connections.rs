//! Client connections in number and in time: at most `max_connections` open
//! and `max_connections_per_client` from one address (past them a new one
//! gets a 503 written at once, without its request being read, and is
//! closed), an idle kept-alive connection closed after
//! `keep_alive_timeout`, and one whose client accepts none of its response
//! for `write_timeout` dropped, so that what it holds is freed.

use crate::metrics::{ConnectionMetrics, Refusal};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// What a refused connection is told, before any of its request is read.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 44\r\n\r\n{\"error\":\"Too many connections; try again\"}\n";

/// A listener's bounds on its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_total: usize,
    pub(crate) max_per_client: usize,
    /// Time an idle kept-alive connection may wait for its next request.
    pub(crate) keep_alive: Duration,
    /// Time a client may accept none of its response's bytes.
    pub(crate) write_timeout: Duration,
}

/// The connections one listener has open.
pub(crate) struct Connections {
    limits: ConnectionLimits,
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<ConnectionMetrics>,
}

impl Connections {
    pub(crate) fn new(limits: ConnectionLimits, metrics: Arc<ConnectionMetrics>) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            total: AtomicUsize::new(0),
            per_client: Mutex::default(),
            metrics,
        })
    }

    /// Counts a new connection from `client` in, or says why it may not be.
    pub(crate) fn admit(self: &Arc<Self>, client: SocketAddr) -> Result<Admitted, Refusal> {
        let ip = canonical(client.ip());
        let admitted = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.limits.max_total).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            self.metrics.refused(Refusal::Total);
            return Err(Refusal::Total);
        }
        let mut per_client = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        let open = per_client.entry(ip).or_insert(0);
        if *open >= self.limits.max_per_client {
            drop(per_client);
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.metrics.refused(Refusal::PerClient);
            return Err(Refusal::PerClient);
        }
        *open += 1;
        self.metrics.opened();
        Ok(Admitted {
            connections: Arc::clone(self),
            ip,
        })
    }

    /// Tells a refused connection so, without reading from it, and closes
    /// it. One non-blocking write: a client that cannot take 200 bytes at
    /// once only sees the close.
    pub(crate) fn refuse(stream: TcpStream) {
        let _ = stream.try_write(REFUSED);
        drop(stream);
    }
}

/// The client a connection counts against: an IPv4 address, or an IPv6
/// /64, the block one subscriber or server is handed (counting single IPv6
/// addresses would let one host pass `max_connections_per_client` with as
/// many addresses as it likes). An IPv4 client reached over IPv6 is the
/// IPv4 client.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

/// One open connection, counted until it drops.
pub(crate) struct Admitted {
    connections: Arc<Connections>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let connections = &self.connections;
        {
            let mut per_client = connections
                .per_client
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(open) = per_client.get_mut(&self.ip) {
                *open -= 1;
                if *open == 0 {
                    per_client.remove(&self.ip);
                }
            }
        }
        connections.total.fetch_sub(1, Ordering::AcqRel);
        connections.metrics.closed();
    }
}

/// What a connection's stream and its service share: whether a request is
/// being answered (from its head until its response body is done), and
/// whether bytes of the next one have come since.
#[derive(Default)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    head_started: AtomicBool,
}

impl Activity {
    /// A request's head was read: the connection is busy until the guard
    /// (moved into the response body) drops.
    pub(crate) fn request_started(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(false, Ordering::Release);
        Busy(Arc::clone(self))
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.head_started.load(Ordering::Acquire)
    }
}

/// A request being answered; dropped when its response is sent or abandoned.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's stream with its idle and write deadlines.
pub(crate) struct Deadlines {
    stream: TcpStream,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    metrics: Arc<ConnectionMetrics>,
    /// Running while the connection waits, idle, for a request.
    idle: Option<Pin<Box<Sleep>>>,
    /// Running while a write waits for the client to take bytes.
    write: Option<Pin<Box<Sleep>>>,
    _admitted: Admitted,
}

impl Deadlines {
    pub(crate) fn new(stream: TcpStream, admitted: Admitted, activity: Arc<Activity>) -> Self {
        let limits = admitted.connections.limits;
        let metrics = Arc::clone(&admitted.connections.metrics);
        Deadlines {
            stream,
            activity,
            limits,
            metrics,
            idle: None,
            write: None,
            _admitted: admitted,
        }
    }

    /// Polls a pending write's deadline: an error once it has passed.
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limits.write_timeout;
        let deadline = self
            .write
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.write = None;
                self.metrics.write_timed_out();
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client accepted none of its response for {limit:?} (write_timeout)"
                    ),
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// What a write poll returned, with the write deadline kept.
    fn track_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.write = None;
                Poll::Ready(result)
            }
            Poll::Pending => self.write_pending(cx).map(Err),
        }
    }
}

impl AsyncRead for Deadlines {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.idle = None;
                    if this.activity.in_flight.load(Ordering::Acquire) == 0 {
                        this.activity.head_started.store(true, Ordering::Release);
                    }
                }
                Poll::Ready(result)
            }
            Poll::Pending if this.activity.idle() => {
                let limit = this.limits.keep_alive;
                let deadline = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.idle = None;
                        this.metrics.idle_closed();
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("idle for {limit:?} (keep_alive_timeout)"),
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Pending => {
                this.idle = None;
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Deadlines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.track_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.track_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_flush(cx);
        self.track_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.track_write(cx, polled)
    }
}

/// A response body that keeps its connection busy until it is done.
pub(crate) struct Tracked<B> {
    body: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, busy: Busy) -> Self {
        Tracked { body, _busy: busy }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::REFUSED;

    /// One client is one IPv4 address, or one IPv6 /64.
    #[test]
    fn one_client_is_an_ipv4_address_or_an_ipv6_64() {
        let key = |ip: &str| super::canonical(ip.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::1"), "::");
    }

    /// The refusal's content-length is its body's length, so a client reads
    /// one whole answer.
    #[test]
    fn the_refusal_is_one_well_framed_answer() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(length, body.len());
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }
}
