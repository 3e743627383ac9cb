//! A guest's stdout and stderr, captured into the host's log.
//!
//! Each complete line becomes one `tracing` event tagged with the route and
//! request id. What a request may write is bounded ([`LOG_BUDGET`]): past it,
//! output is dropped (and the drop noted once), so a guest printing megabytes
//! costs the host neither memory nor log volume.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of stdout plus stderr one request may log.
pub const LOG_BUDGET: usize = 64 * 1024;
/// A line longer than this is logged in pieces.
const MAX_LINE: usize = 4096;

/// Which stream a [`GuestLog`] writer is.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The log of one request: shared by its stdout and stderr writers.
#[derive(Clone)]
pub struct GuestLog {
    inner: Arc<Mutex<LogState>>,
}

struct LogState {
    route: Arc<str>,
    request_id: Arc<str>,
    budget: usize,
    truncated: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl GuestLog {
    pub fn new(route: Arc<str>, request_id: Arc<str>) -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(LogState {
                route,
                request_id,
                budget: LOG_BUDGET,
                truncated: false,
                stdout: Vec::new(),
                stderr: Vec::new(),
            })),
        }
    }

    /// A writer for one of the two streams.
    pub fn writer(&self, stream: Stream) -> GuestLogWriter {
        GuestLogWriter {
            log: self.clone(),
            stream,
        }
    }

    /// Logs whatever partial lines remain; called when the request ends.
    pub fn finish(&self) {
        if let Ok(mut state) = self.inner.lock() {
            for stream in [Stream::Stdout, Stream::Stderr] {
                let rest = std::mem::take(state.buffer(stream));
                if !rest.is_empty() {
                    state.emit(stream, &rest);
                }
            }
        }
    }

    fn write(&self, stream: Stream, mut bytes: &[u8]) {
        // A poisoned lock means another writer panicked; dropping output is
        // the right answer for a log.
        let Ok(mut state) = self.inner.lock() else {
            return;
        };
        if bytes.len() > state.budget {
            bytes = &bytes[..state.budget];
            if !state.truncated {
                state.truncated = true;
                tracing::warn!(
                    route = %state.route,
                    request_id = %state.request_id,
                    "guest output over {LOG_BUDGET} bytes; the rest is dropped"
                );
            }
        }
        state.budget -= bytes.len();
        state.buffer(stream).extend_from_slice(bytes);
        loop {
            let buffer = state.buffer(stream);
            let cut = match buffer.iter().position(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None if buffer.len() >= MAX_LINE => MAX_LINE,
                None => break,
            };
            let line: Vec<u8> = buffer.drain(..cut).collect();
            state.emit(stream, &line);
        }
    }
}

impl LogState {
    fn buffer(&mut self, stream: Stream) -> &mut Vec<u8> {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    fn emit(&self, stream: Stream, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        match stream {
            Stream::Stdout => tracing::info!(
                target: "guest",
                route = %self.route,
                request_id = %self.request_id,
                stream = "stdout",
                "{text}"
            ),
            Stream::Stderr => tracing::warn!(
                target: "guest",
                route = %self.route,
                request_id = %self.request_id,
                stream = "stderr",
                "{text}"
            ),
        }
    }
}

/// The stdout or stderr of one request, as WASI sees it.
#[derive(Clone)]
pub struct GuestLogWriter {
    log: GuestLog,
    stream: Stream,
}

impl IsTerminal for GuestLogWriter {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLogWriter {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestLogWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.log.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: over-budget output is dropped, never blocked on.
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLogWriter {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLogWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.log.write(self.stream, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
