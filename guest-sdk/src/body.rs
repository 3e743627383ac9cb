//! Request bodies read as they arrive: [`BodyStream`] for raw bytes,
//! [`Multipart`] for `multipart/form-data` uploads, part by part.
//!
//! A route that uses either gets every request body this way (the host
//! does not read it first), so an upload of hundreds of megabytes passes
//! through a route with a few megabytes of memory.
//!
//! ```no_run
//! use guest_sdk::{Error, Request, Response};
//!
//! fn post(req: Request) -> Result<Response, Error> {
//!     let mut sizes = Vec::new();
//!     let mut parts = req.multipart();
//!     while let Some(mut part) = parts.next_part()? {
//!         let mut size = 0;
//!         while let Some(chunk) = part.chunk()? {
//!             size += chunk.len();
//!         }
//!         sizes.push(serde_json::json!({ "name": part.name(), "bytes": size }));
//!     }
//!     Ok(Response::json(&sizes))
//! }
//! # fn main() {}
//! ```

use crate::bindings::edge::route::request_body::{self, ReadError};
use crate::Error;
use std::io;

/// Bytes one read asks the host for.
const CHUNK: u32 = 64 * 1024;

fn read_error(err: ReadError) -> Error {
    match err {
        ReadError::Unreadable(reason) => {
            Error::bad_request(format!("Could not read the request body: {reason}"))
        }
        ReadError::NotMultipart(reason) => {
            Error::bad_request(format!("Not a multipart/form-data body: {reason}"))
        }
    }
}

/// A request body, read as it arrives ([`crate::Request::body_stream`]).
pub struct BodyStream {
    /// A body built by hand (unit tests), served from memory.
    memory: Option<(Vec<u8>, usize)>,
}

impl BodyStream {
    pub(crate) fn from_host() -> Self {
        BodyStream { memory: None }
    }

    pub(crate) fn in_memory(body: Vec<u8>) -> Self {
        BodyStream {
            memory: Some((body, 0)),
        }
    }

    /// The next chunk of the body, `None` at its end.
    pub fn chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        match &mut self.memory {
            Some((body, at)) => {
                if *at >= body.len() {
                    return Ok(None);
                }
                let end = body.len().min(*at + CHUNK as usize);
                let chunk = body[*at..end].to_vec();
                *at = end;
                Ok(Some(chunk))
            }
            None => request_body::read(CHUNK).map_err(read_error),
        }
    }
}

impl io::Read for BodyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let chunk = match &mut self.memory {
            Some((body, at)) => {
                let n = buf.len().min(body.len() - *at);
                buf[..n].copy_from_slice(&body[*at..*at + n]);
                *at += n;
                return Ok(n);
            }
            None => request_body::read(ask(buf)),
        };
        copy_into(buf, chunk)
    }
}

/// What a read into `buf` asks the host for.
fn ask(buf: &[u8]) -> u32 {
    buf.len().min(u32::MAX as usize) as u32
}

/// A chunk the host read (at most `buf.len()` bytes, as asked) copied into
/// `buf`, as [`io::Read`] wants it.
fn copy_into(buf: &mut [u8], chunk: Result<Option<Vec<u8>>, ReadError>) -> io::Result<usize> {
    match chunk {
        Ok(Some(chunk)) => {
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            Ok(n)
        }
        Ok(None) => Ok(0),
        Err(err) => Err(io::Error::other(read_error(err).message().to_owned())),
    }
}

/// The parts of a `multipart/form-data` body ([`crate::Request::multipart`]).
pub struct Multipart {
    from_host: bool,
}

impl Multipart {
    pub(crate) fn new(from_host: bool) -> Self {
        Multipart { from_host }
    }

    /// The next part, `None` after the last. What was not read of the part
    /// before is skipped. A body that is not multipart is a 400 error.
    pub fn next_part(&mut self) -> Result<Option<Part>, Error> {
        if !self.from_host {
            return Err(Error::internal(
                "multipart bodies are parsed by the host: a request built by hand has none",
            ));
        }
        Ok(request_body::next_part()
            .map_err(read_error)?
            .map(|head| Part { head }))
    }
}

/// One part of a multipart body: its head, and its content read as it
/// arrives. It implements [`std::io::Read`].
pub struct Part {
    head: request_body::Part,
}

impl Part {
    /// The form field's name (`Content-Disposition: form-data; name=...`).
    pub fn name(&self) -> Option<&str> {
        self.head.name.as_deref()
    }

    /// The uploaded file's name, for a file field.
    pub fn filename(&self) -> Option<&str> {
        self.head.filename.as_deref()
    }

    /// The part's `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.head.content_type.as_deref()
    }

    /// The next chunk of the part's content, `None` at its end.
    pub fn chunk(&mut self) -> Result<Option<Vec<u8>>, Error> {
        request_body::read_part(CHUNK).map_err(read_error)
    }
}

impl io::Read for Part {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        copy_into(buf, request_body::read_part(ask(buf)))
    }
}
