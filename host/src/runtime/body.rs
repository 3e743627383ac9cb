//! The host's side of `body.wit`: an SDK route's answer sent before its
//! method returns (streamed with `start-response` and `write`, or whole
//! with `respond`), and its request body read as it arrives, whole or as
//! `multipart/form-data` parts the host parses within `max_body` and
//! `max_part`.
//!
//! A streamed body goes to the client through a small bounded channel, so
//! a guest writing faster than its client reads waits in `write` and the
//! host holds a few chunks, never the whole body. Past a limit the import
//! returns a trap ([`OverLimit`]): the guest is stopped there, whatever it
//! would do with an error.

use crate::wit::bindings::edge::route::request_body::{self, Part, ReadError};
use crate::wit::bindings::edge::route::response_body::{self, BodyError};
use crate::wit::Response as GuestResponse;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A request body as the host hands it to a streaming route.
pub(crate) type RequestBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Chunks of a streamed answer the host holds for a slow client.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Bytes one `read` or `read-part` returns at most, whatever the guest asks.
const MAX_READ: usize = 1 << 20;

/// One piece of a streamed answer's body, as the route sends it.
pub(crate) enum Piece {
    Data(Bytes),
    /// The body is complete.
    End,
    /// The guest failed (or was stopped) before completing it: the
    /// connection must be cut so the client does not take it as whole.
    Cut,
}

/// An answer a route sent before its method returned.
pub(crate) enum Early {
    /// The whole answer (`respond`).
    Whole(GuestResponse),
    /// Status and headers (`start-response`, with an empty body); the body
    /// follows on the receiver.
    Streamed(GuestResponse, mpsc::Receiver<Piece>),
}

/// An early answer; for a streamed one a sender of the host's own, to cut
/// the body ([`Piece::Cut`]) if the guest ends without finishing it; and
/// the end of the guest's `wait_until` budget once its answer is complete.
pub(crate) struct EarlyAnswer {
    pub(crate) early: Early,
    pub(crate) own: Option<mpsc::Sender<Piece>>,
    pub(crate) answered: watch::Receiver<Option<Instant>>,
}

/// A guest went past one of its limits in a body call: the trap that stops it.
#[derive(Debug, thiserror::Error)]
#[error("the route went past its {limit} of {bytes} bytes")]
pub(crate) struct OverLimit {
    /// The limit's manifest key.
    pub(crate) limit: &'static str,
    pub(crate) bytes: usize,
}

/// The trap of a guest past `limit` (its manifest key) of `bytes`.
fn over(limit: &'static str, bytes: usize) -> wasmtime::Error {
    OverLimit { limit, bytes }.into()
}

/// The first `max` bytes of `buffer` (at least one, at most [`MAX_READ`]),
/// taken from it.
fn take(buffer: &mut Bytes, max: usize) -> Vec<u8> {
    let take = max.clamp(1, MAX_READ).min(buffer.len());
    buffer.split_to(take).to_vec()
}

/// What a store's body imports work on: the answer side, and the request
/// body of a route that streams it.
#[derive(Default)]
pub(crate) struct Bodies {
    pub(crate) answering: Answering,
    pub(crate) incoming: Option<Incoming>,
}

/// The answer side of one call (the default: no early answer can be sent).
#[derive(Default)]
pub(crate) struct Answering {
    /// Taken by the first early answer.
    early: Option<oneshot::Sender<EarlyAnswer>>,
    /// The streamed body, between `start-response` and `finish`.
    chunks: Option<mpsc::Sender<Piece>>,
    /// Bytes of body the route may still write (`max_response`).
    left: usize,
    max_response: usize,
    /// Set, to the end of the route's `wait_until` budget, once its whole
    /// answer is sent while it works on (made with the early answer: most
    /// calls never need it).
    answered: Option<watch::Sender<Option<Instant>>>,
    wait_until: Duration,
}

impl Answering {
    /// The answer side of a call whose early answer goes to `early`.
    pub(crate) fn new(
        early: oneshot::Sender<EarlyAnswer>,
        max_response: usize,
        wait_until: Duration,
    ) -> Answering {
        Answering {
            early: Some(early),
            chunks: None,
            left: max_response,
            max_response,
            answered: None,
            wait_until,
        }
    }

    /// Sends `early`; the reason if an answer was sent already.
    fn send(&mut self, early: Early, own: Option<mpsc::Sender<Piece>>) -> Result<(), BodyError> {
        let sender = self
            .early
            .take()
            .ok_or_else(|| BodyError::Invalid("the route already answered".into()))?;
        let (answered_sender, answered) = watch::channel(None);
        self.answered = Some(answered_sender);
        let message = EarlyAnswer {
            early,
            own,
            answered,
        };
        // Nobody waits for the answer only when the request is gone.
        sender.send(message).map_err(|_| BodyError::Closed)
    }

    /// The answer is complete: the route's `wait_until` budget starts.
    fn complete(&mut self) {
        if let Some(answered) = &self.answered {
            let _ = answered.send(Some(Instant::now() + self.wait_until));
        }
    }
}

impl response_body::Host for Bodies {
    async fn start_response(
        &mut self,
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), BodyError>> {
        let (sender, receiver) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let head = GuestResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let answering = &mut self.answering;
        let sent = answering.send(Early::Streamed(head, receiver), Some(sender.clone()));
        if sent.is_ok() {
            answering.chunks = Some(sender);
        }
        Ok(sent)
    }

    async fn write(&mut self, chunk: Vec<u8>) -> wasmtime::Result<Result<(), BodyError>> {
        let answering = &mut self.answering;
        let Some(chunks) = &answering.chunks else {
            return Ok(Err(BodyError::Invalid(
                "write comes after start-response, before finish".into(),
            )));
        };
        if chunk.len() > answering.left {
            return Err(over("max_response", answering.max_response));
        }
        answering.left -= chunk.len();
        if chunk.is_empty() {
            return Ok(Ok(()));
        }
        // Waits while the client reads slower than the route writes.
        Ok(chunks
            .send(Piece::Data(Bytes::from(chunk)))
            .await
            .map_err(|_| BodyError::Closed))
    }

    async fn finish(&mut self) -> wasmtime::Result<Result<(), BodyError>> {
        let answering = &mut self.answering;
        let Some(chunks) = answering.chunks.take() else {
            return Ok(Err(BodyError::Invalid(
                "finish ends a body start-response began".into(),
            )));
        };
        let sent = chunks.send(Piece::End).await.map_err(|_| BodyError::Closed);
        answering.complete();
        Ok(sent)
    }

    async fn respond(
        &mut self,
        response: GuestResponse,
    ) -> wasmtime::Result<Result<(), BodyError>> {
        let answering = &mut self.answering;
        if response.body.len() > answering.max_response {
            return Err(over("max_response", answering.max_response));
        }
        let sent = answering.send(Early::Whole(response), None);
        if sent.is_ok() {
            answering.complete();
        }
        Ok(sent)
    }
}

/// The request side of one call of a streaming route.
pub(crate) struct Incoming {
    body: Option<RequestBody>,
    /// What a frame held past the last read's `max`.
    left_over: Bytes,
    /// Bytes read so far, and the route's `max_body`.
    read: usize,
    max_body: usize,
    max_part: usize,
    /// The longest a read may wait for the client's next bytes.
    idle: Duration,
    /// The request's `Content-Type`, for the multipart boundary.
    content_type: Option<String>,
    multipart: Option<multer::Multipart<'static>>,
    part: Option<multer::Field<'static>>,
}

impl Incoming {
    pub(crate) fn new(
        body: RequestBody,
        content_type: Option<String>,
        max_body: usize,
        max_part: Option<usize>,
        idle: Duration,
    ) -> Incoming {
        Incoming {
            body: Some(body),
            left_over: Bytes::new(),
            read: 0,
            max_body,
            max_part: max_part.unwrap_or(max_body),
            idle,
            content_type,
            multipart: None,
            part: None,
        }
    }

    /// Up to `max` bytes of the body, whole frames cut at `max`.
    async fn read(&mut self, max: usize) -> wasmtime::Result<Result<Option<Vec<u8>>, ReadError>> {
        if self.multipart.is_some() {
            return Ok(Err(ReadError::Unreadable(
                "the body is being read as multipart parts".into(),
            )));
        }
        while self.left_over.is_empty() {
            let Some(body) = self.body.as_mut() else {
                return Ok(Ok(None));
            };
            let frame = match tokio::time::timeout(self.idle, body.frame()).await {
                Err(_) => return Ok(Err(ReadError::Unreadable(stalled(self.idle)))),
                Ok(None) => {
                    self.body = None;
                    return Ok(Ok(None));
                }
                Ok(Some(Err(err))) => return Ok(Err(ReadError::Unreadable(err.to_string()))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                self.read = self.read.saturating_add(data.len());
                if self.read > self.max_body {
                    return Err(over("max_body", self.max_body));
                }
                self.left_over = data;
            }
        }
        Ok(Ok(Some(take(&mut self.left_over, max))))
    }

    /// The multipart parser, made at the first part from the body and the
    /// boundary of its `Content-Type`.
    fn multipart(&mut self) -> Result<&mut multer::Multipart<'static>, ReadError> {
        if self.multipart.is_none() {
            let boundary = self
                .content_type
                .as_deref()
                .ok_or_else(|| ReadError::NotMultipart("the request has no Content-Type".into()))
                .and_then(|ct| {
                    multer::parse_boundary(ct)
                        .map_err(|err| ReadError::NotMultipart(err.to_string()))
                })?;
            if self.read > 0 || !self.left_over.is_empty() {
                return Err(ReadError::NotMultipart(
                    "part of the body was already read as bytes".into(),
                ));
            }
            let Some(body) = self.body.take() else {
                return Err(ReadError::NotMultipart("the body was already read".into()));
            };
            let idle = self.idle;
            let stream = http_body_util::BodyDataStream::new(body);
            // A client that stops sending mid-part fails the read, as `read` does.
            let stream = futures_util::stream::unfold(stream, move |mut stream| async move {
                match tokio::time::timeout(idle, stream.next()).await {
                    Ok(Some(item)) => Some((item, stream)),
                    Ok(None) => None,
                    Err(_) => Some((Err(stalled(idle).into()), stream)),
                }
            });
            let limits = multer::SizeLimit::new()
                .whole_stream(self.max_body as u64)
                .per_field(self.max_part as u64);
            self.multipart = Some(multer::Multipart::with_constraints(
                stream,
                boundary,
                multer::Constraints::new().size_limit(limits),
            ));
        }
        self.multipart
            .as_mut()
            .ok_or_else(|| ReadError::NotMultipart("no multipart parser".into()))
    }

    /// A multipart error: a limit stops the guest, anything else is its to see.
    fn multipart_error(&self, err: multer::Error) -> wasmtime::Result<ReadError> {
        match err {
            multer::Error::FieldSizeExceeded { .. } => Err(over("max_part", self.max_part)),
            multer::Error::StreamSizeExceeded { .. } => Err(over("max_body", self.max_body)),
            multer::Error::StreamReadFailed(err) => Ok(ReadError::Unreadable(err.to_string())),
            other => Ok(ReadError::NotMultipart(other.to_string())),
        }
    }
}

fn stalled(idle: Duration) -> String {
    format!("the client sent nothing for {idle:?} (body_timeout)")
}

/// A request without a body (a `GET`) has no [`Incoming`].
fn no_body() -> ReadError {
    ReadError::NotMultipart("the request has no body".into())
}

impl request_body::Host for Bodies {
    async fn read(&mut self, max: u32) -> wasmtime::Result<Result<Option<Vec<u8>>, ReadError>> {
        match self.incoming.as_mut() {
            Some(incoming) => incoming.read(max as usize).await,
            None => Ok(Ok(None)),
        }
    }

    async fn next_part(&mut self) -> wasmtime::Result<Result<Option<Part>, ReadError>> {
        let Some(incoming) = self.incoming.as_mut() else {
            return Ok(Err(no_body()));
        };
        // What is left of the current part is skipped by the parser.
        incoming.part = None;
        incoming.left_over = Bytes::new();
        let multipart = match incoming.multipart() {
            Ok(multipart) => multipart,
            Err(err) => return Ok(Err(err)),
        };
        match multipart.next_field().await {
            Ok(None) => Ok(Ok(None)),
            Ok(Some(field)) => {
                let part = Part {
                    name: field.name().map(str::to_owned),
                    filename: field.file_name().map(str::to_owned),
                    content_type: field.content_type().map(|m| m.to_string()),
                };
                incoming.part = Some(field);
                Ok(Ok(Some(part)))
            }
            Err(err) => incoming.multipart_error(err).map(Err),
        }
    }

    async fn read_part(
        &mut self,
        max: u32,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, ReadError>> {
        let Some(incoming) = self.incoming.as_mut() else {
            return Ok(Ok(None));
        };
        let max = max as usize;
        if !incoming.left_over.is_empty() && incoming.part.is_some() {
            return Ok(Ok(Some(take(&mut incoming.left_over, max))));
        }
        let Some(part) = incoming.part.as_mut() else {
            return Ok(Ok(None));
        };
        match part.chunk().await {
            Ok(None) => {
                incoming.part = None;
                Ok(Ok(None))
            }
            Ok(Some(mut chunk)) => {
                let first = take(&mut chunk, max);
                incoming.left_over = chunk;
                Ok(Ok(Some(first)))
            }
            Err(err) => incoming.multipart_error(err).map(Err),
        }
    }
}
