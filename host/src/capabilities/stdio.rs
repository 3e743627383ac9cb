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
pub(crate) const LOG_BUDGET: usize = 64 * 1024;
/// A line longer than this is logged in pieces.
const MAX_LINE: usize = 4096;

/// Which stream a [`GuestLog`] writer is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The log of one request: shared by its stdout and stderr writers.
#[derive(Clone)]
pub(crate) struct GuestLog {
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
    pub(crate) fn new(route: Arc<str>, request_id: Arc<str>) -> Self {
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
    pub(crate) fn writer(&self, stream: Stream) -> GuestLogWriter {
        GuestLogWriter {
            log: self.clone(),
            stream,
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

/// Whatever partial lines remain are logged when the request's last writer
/// goes, that is when its store is dropped: at the end of the request, or at
/// its time limit.
impl Drop for LogState {
    fn drop(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(self.buffer(stream));
            if !rest.is_empty() {
                self.emit(stream, &rest);
            }
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
        let text = escape_controls(text.trim_end_matches(['\n', '\r']));
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

/// A guest's text as it may reach an operator's terminal: every control
/// character (escape sequences, carriage returns, backspaces, bells) and
/// every bidirectional override written as an escape (`\u{1b}`, `\r`),
/// so a guest can neither repaint the screen nor forge a log line.
pub(crate) fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let needs = |c: char| {
        c.is_control()
            || matches!(
                c,
                // Bidirectional overrides, isolates and marks; line and
                // paragraph separators (a new line to some viewers).
                '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{061c}'
                    | '\u{2028}'
                    | '\u{2029}'
            )
    };
    if !text.chars().any(needs) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// The stdout or stderr of one request, as WASI sees it.
#[derive(Clone)]
pub(crate) struct GuestLogWriter {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_controls("plain text, ünïcode"),
            "plain text, ünïcode"
        );
        assert_eq!(
            escape_controls("\u{1b}[2J\rforged\u{7}\tx\u{202e}"),
            "\\u{1b}[2J\\rforged\\u{7}\\tx\\u{202e}"
        );
        assert_eq!(
            escape_controls("a\u{2028}b\u{200f}c"),
            "a\\u{2028}b\\u{200f}c"
        );
    }

    /// Everything `tracing` writes while `f` runs, as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_are_logged_as_they_end_and_the_rest_when_the_writers_go() {
        let log = logged(|| {
            let log = GuestLog::new(Arc::from("/r"), Arc::from("req-1"));
            let mut out = log.writer(Stream::Stdout);
            let mut err = log.writer(Stream::Stderr);
            drop(log);
            out.write(Bytes::from_static(b"first line\nunfinished"))
                .unwrap();
            err.write(Bytes::from_static(b"half an error")).unwrap();
            tracing::info!("before the store goes");
            // The store (holding the writers) is dropped at the end of the
            // request or at its time limit.
            drop((out, err));
        });
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        assert!(lines[0].contains("first line") && lines[0].contains("request_id=req-1"));
        assert!(lines[1].contains("before the store goes"));
        let rest = lines[2..].join("\n");
        assert!(
            rest.contains("unfinished") && rest.contains("stream=\"stdout\""),
            "{log}"
        );
        assert!(
            rest.contains("half an error") && rest.contains("stream=\"stderr\""),
            "{log}"
        );
    }
}
