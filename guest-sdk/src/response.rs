use crate::bindings::edge::route::types;
use crate::stream::StreamFn;
use serde::Serialize;
use std::cell::RefCell;
use std::rc::Rc;

/// The HTTP response a handler returns.
///
/// ```
/// use guest_sdk::Response;
///
/// let response = Response::json(&serde_json::json!({ "status": "ok" }))
///     .with_header("Cache-Control", "public, s-maxage=60");
/// assert_eq!(response.status(), 200);
/// assert_eq!(response.header("cache-control"), Some(&b"public, s-maxage=60"[..]));
/// ```
#[derive(Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// What writes a streamed body ([`Response::stream`]); clones share it.
    stream: Option<Rc<RefCell<Option<StreamFn>>>>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body)
            .field("streamed", &self.stream.is_some())
            .finish()
    }
}

/// Two responses are equal when their status, headers and body are, and
/// they stream with the same writer (or neither streams).
impl PartialEq for Response {
    fn eq(&self, other: &Self) -> bool {
        let same_stream = match (&self.stream, &other.stream) {
            (None, None) => true,
            (Some(a), Some(b)) => Rc::ptr_eq(a, b),
            _ => false,
        };
        self.status == other.status
            && self.headers == other.headers
            && self.body == other.body
            && same_stream
    }
}

impl Eq for Response {}

impl Response {
    /// An empty response with `status` and no headers.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Response::new(202).status(), 202);
    /// ```
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            stream: None,
        }
    }

    /// The same response with its body written by `write` as it streams.
    pub(crate) fn with_stream(mut self, write: StreamFn) -> Self {
        self.body = Vec::new();
        self.stream = Some(Rc::new(RefCell::new(Some(write))));
        self
    }

    /// Whether the body is streamed ([`Response::stream`], [`Response::sse`]).
    ///
    /// ```
    /// assert!(!guest_sdk::Response::text("x").is_streamed());
    /// ```
    pub fn is_streamed(&self) -> bool {
        self.stream.is_some()
    }

    /// The record the host reads, and the streamed body's writer if it has one.
    pub(crate) fn into_parts(self) -> (types::Response, Option<StreamFn>) {
        let stream = self.stream.and_then(|stream| stream.borrow_mut().take());
        let record = types::Response {
            status: self.status,
            headers: self.headers,
            body: self.body,
        };
        (record, stream)
    }

    /// `200` with `value` serialized as JSON and `content-type: application/json`.
    /// A value that cannot be serialized (a map with non-string keys) gives a
    /// 500 JSON error instead.
    ///
    /// ```
    /// let response = guest_sdk::Response::json(&vec![1, 2]);
    /// assert_eq!(response.body(), b"[1,2]");
    /// assert_eq!(response.header("content-type"), Some(&b"application/json"[..]));
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(200)
                .with_header("content-type", "application/json")
                .with_body(body),
            Err(err) => Response::new(500)
                .with_header("content-type", "application/json")
                .with_body(
                    serde_json::json!({ "error": format!("Could not serialize the response: {err}") })
                        .to_string(),
                ),
        }
    }

    /// `200` with a plain-text body (`text/plain; charset=utf-8`).
    ///
    /// ```
    /// assert_eq!(guest_sdk::Response::text("hi").body(), b"hi");
    /// ```
    pub fn text(body: impl Into<String>) -> Self {
        Response::new(200)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// `204 No Content`, no body.
    ///
    /// ```
    /// let response = guest_sdk::Response::empty();
    /// assert_eq!((response.status(), response.body().len()), (204, 0));
    /// ```
    pub fn empty() -> Self {
        Response::new(204)
    }

    /// The same response with another status.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Response::text("made").with_status(201).status(), 201);
    /// ```
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The same response with header `name` set to `value`, replacing any
    /// earlier value of that header (names compare case-insensitively).
    ///
    /// ```
    /// let response = guest_sdk::Response::text("x")
    ///     .with_header("Content-Type", "text/csv");
    /// assert_eq!(response.header("content-type"), Some(&b"text/csv"[..]));
    /// ```
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// The same response with another header line added, keeping earlier
    /// values of the same name (for headers such as `set-cookie`).
    ///
    /// ```
    /// let response = guest_sdk::Response::empty()
    ///     .append_header("set-cookie", "a=1")
    ///     .append_header("set-cookie", "b=2");
    /// assert_eq!(response.headers().count(), 2);
    /// ```
    pub fn append_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// The same response with another body.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Response::new(200).with_body("x").body(), b"x");
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.stream = None;
        self
    }

    /// The status.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Response::empty().status(), 204);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (any case).
    ///
    /// ```
    /// assert_eq!(guest_sdk::Response::empty().header("x"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Every header line, in order.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Response::text("").headers().count(), 1);
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The body.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Response::text("ok").body(), b"ok");
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

impl From<Response> for types::Response {
    /// The record of a whole response (a streamed one's body is empty).
    fn from(response: Response) -> Self {
        response.into_parts().0
    }
}
