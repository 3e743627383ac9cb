//! Answers that do not wait for the route to finish: a body streamed as
//! the route writes it ([`Response::stream`], server-sent events with
//! [`Response::sse`]) and work that goes on after the answer is sent
//! ([`wait_until`]).

use crate::bindings::edge::route::response_body::{self, BodyError};
use crate::bindings::edge::route::types;
use crate::{Error, Response};
use std::cell::RefCell;
use std::io;

/// What a streamed answer's body is written by.
pub(crate) type StreamFn = Box<dyn FnOnce(&mut BodyWriter) -> Result<(), Error>>;

/// Writes a streamed answer's body: every [`BodyWriter::write_chunk`] is
/// sent to the client at once. It also implements [`std::io::Write`].
///
/// A write fails once the client has gone away; return then (the host
/// stops a route that keeps running after its client left). Past the
/// route's `max_response` the host stops the route.
pub struct BodyWriter {
    _private: (),
}

impl BodyWriter {
    /// Sends `chunk` now; waits while the client reads slower than the
    /// route writes.
    pub fn write_chunk(&mut self, chunk: impl AsRef<[u8]>) -> Result<(), Error> {
        response_body::write(chunk.as_ref()).map_err(body_error)
    }
}

impl io::Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        response_body::write(buf)
            .map(|()| buf.len())
            .map_err(|err| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    body_error(err).message().to_owned(),
                )
            })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn body_error(err: BodyError) -> Error {
    match err {
        BodyError::Closed => Error::new(CLIENT_GONE, "The client went away"),
        BodyError::Invalid(reason) => Error::internal(reason),
    }
}

/// Sends server-sent events (`text/event-stream`), one event per call,
/// each flushed to the client at once.
pub struct EventSink<'a> {
    writer: &'a mut BodyWriter,
}

impl EventSink<'_> {
    /// Sends one event with `data` (each of its lines a `data:` line).
    pub fn send(&mut self, data: &str) -> Result<(), Error> {
        self.send_event(&Event::new(data))
    }

    /// Sends one event with its name, id and retry time.
    pub fn send_event(&mut self, event: &Event) -> Result<(), Error> {
        self.writer.write_chunk(event.to_string())
    }

    /// Sends a comment line, which clients ignore: keeps an idle stream
    /// open through proxies.
    pub fn comment(&mut self, text: &str) -> Result<(), Error> {
        let text = text.replace(['\r', '\n'], " ");
        self.writer.write_chunk(format!(": {text}\n\n"))
    }
}

/// One server-sent event.
///
/// ```
/// let event = guest_sdk::Event::new("line one\nline two").name("tick").id("7");
/// assert_eq!(event.to_string(), "event: tick\nid: 7\ndata: line one\ndata: line two\n\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    data: String,
    name: Option<String>,
    id: Option<String>,
    retry_ms: Option<u64>,
}

impl Event {
    /// An event carrying `data`.
    pub fn new(data: impl Into<String>) -> Self {
        Event {
            data: data.into(),
            name: None,
            id: None,
            retry_ms: None,
        }
    }

    /// The event's type (`event:`), which `EventSource.addEventListener` listens for.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The event's id (`id:`), which a reconnecting client sends as `Last-Event-ID`.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// How long a client waits before reconnecting (`retry:`).
    pub fn retry_ms(mut self, ms: u64) -> Self {
        self.retry_ms = Some(ms);
        self
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A line break inside a field would end it early: fields keep one line.
        let one_line = |text: &str| text.replace(['\r', '\n'], " ");
        if let Some(name) = &self.name {
            writeln!(f, "event: {}", one_line(name))?;
        }
        if let Some(id) = &self.id {
            writeln!(f, "id: {}", one_line(id))?;
        }
        if let Some(retry) = self.retry_ms {
            writeln!(f, "retry: {retry}")?;
        }
        for line in self.data.split('\n') {
            writeln!(f, "data: {}", line.strip_suffix('\r').unwrap_or(line))?;
        }
        writeln!(f)
    }
}

impl Response {
    /// `200` with a body written by `write` while the client receives it:
    /// the head is sent first, then each chunk as it is written. Memory
    /// stays flat however long the body is.
    ///
    /// ```no_run
    /// use guest_sdk::{Error, Request, Response};
    ///
    /// fn get(_req: Request) -> Result<Response, Error> {
    ///     Ok(Response::stream(|body| {
    ///         for i in 0..1000 {
    ///             body.write_chunk(format!("line {i}\n"))?;
    ///         }
    ///         Ok(())
    ///     })
    ///     .with_header("content-type", "text/plain"))
    /// }
    /// # fn main() {}
    /// ```
    pub fn stream(write: impl FnOnce(&mut BodyWriter) -> Result<(), Error> + 'static) -> Self {
        Response::new(200).with_stream(Box::new(write))
    }

    /// Server-sent events: `200` with `content-type: text/event-stream`,
    /// `cache-control: no-cache`, and each event `send` is given written
    /// to the client at once.
    ///
    /// ```no_run
    /// use guest_sdk::{Error, Request, Response};
    ///
    /// fn get(_req: Request) -> Result<Response, Error> {
    ///     Ok(Response::sse(|events| {
    ///         for i in 0..10 {
    ///             events.send(&format!("{{\"tick\":{i}}}"))?;
    ///             std::thread::sleep(std::time::Duration::from_millis(100));
    ///         }
    ///         Ok(())
    ///     }))
    /// }
    /// # fn main() {}
    /// ```
    pub fn sse(send: impl FnOnce(&mut EventSink<'_>) -> Result<(), Error> + 'static) -> Self {
        Response::stream(move |writer| send(&mut EventSink { writer }))
            .with_header("content-type", "text/event-stream")
            .with_header("cache-control", "no-cache")
            // Proxies in front (nginx) would otherwise hold the events back.
            .with_header("x-accel-buffering", "no")
    }
}

thread_local! {
    /// Work handed over with [`wait_until`], run after the answer is sent.
    static AFTER: RefCell<Vec<Box<dyn FnOnce()>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `work` after the route's answer is sent, as Workers' `waitUntil`:
/// the client gets its answer at once, and the instance goes on with
/// `work` within the route's `wait_until` budget (10 s unless the manifest
/// says otherwise), past which the host stops it. A deploy or a graceful
/// shutdown lets it finish within the drain timeout.
///
/// ```no_run
/// use guest_sdk::{Error, Request, Response};
///
/// fn post(req: Request) -> Result<Response, Error> {
///     let body = req.body().to_vec();
///     guest_sdk::wait_until(move || {
///         // Slow work the client need not wait for: an audit log line, a cache fill.
///         let _ = body;
///     });
///     Ok(Response::json(&serde_json::json!({ "accepted": true })).with_status(202))
/// }
/// # fn main() {}
/// ```
pub fn wait_until(work: impl FnOnce() + 'static) {
    AFTER.with(|after| after.borrow_mut().push(Box::new(work)));
}

/// Sends `response` the way it asks (whole, or streamed), then runs the
/// work handed to [`wait_until`]. What the method export returns.
pub(crate) fn send(response: Response) -> types::Response {
    let pending = AFTER.with(|after| !after.borrow().is_empty());
    let (record, stream) = response.into_parts();
    let Some(stream) = stream else {
        if !pending {
            return record;
        }
        // Failing here means the client is gone: the work still runs.
        let _ = response_body::respond(&record);
        run_after();
        return empty();
    };
    if response_body::start_response(record.status, &record.headers).is_ok() {
        let mut writer = BodyWriter { _private: () };
        match stream(&mut writer) {
            Ok(()) => {
                let _ = response_body::finish();
            }
            // The head is sent: returning without `finish` cuts the body,
            // so the client cannot take it as whole.
            Err(err) if err.status() == CLIENT_GONE => return empty(),
            Err(err) => {
                eprintln!("streamed answer cut short: {}", err.message());
                return empty();
            }
        }
    }
    run_after();
    empty()
}

/// The status of the error a write gets once the client has gone.
const CLIENT_GONE: u16 = 499;

/// Runs the work handed to [`wait_until`], in the order it was handed
/// over (work may hand over more).
fn run_after() {
    loop {
        let work = AFTER.with(|after| std::mem::take(&mut *after.borrow_mut()));
        if work.is_empty() {
            return;
        }
        for work in work {
            work();
        }
    }
}

/// The record a method returns when it already answered.
fn empty() -> types::Response {
    types::Response {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    }
}
