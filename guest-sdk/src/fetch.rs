//! Outbound HTTP, blocking style: build a [`Fetch`], [`send`](Fetch::send)
//! it, read the [`Fetched`] response.
//!
//! The host sends it only to origins the route's manifest entry lists in
//! `allowed_outbound_hosts`; anything else fails with
//! [`FetchError::Denied`] before a connection is made. Redirects are
//! followed (up to 5, for `GET` and `HEAD`), each hop checked the same way.
//! A [`FetchError`] turns into a `502 Bad Gateway` [`Error`] with `?`.
//!
//! ```no_run
//! use guest_sdk::{fetch::Fetch, Error, Request, Response};
//!
//! fn get(_req: Request) -> Result<Response, Error> {
//!     let upstream = Fetch::get("https://api.example.com/status")
//!         .header("accept", "application/json")
//!         .send()?;
//!     Ok(Response::new(upstream.status).with_body(upstream.body))
//! }
//! # fn main() {}
//! ```

use crate::Error;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;

/// An outbound request being built.
#[derive(Debug, Clone)]
pub struct Fetch {
    method: String,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// An outbound response, read whole.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The URL that answered (after redirects).
    pub url: String,
}

/// Why an outbound request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The host refused it: the origin is not in the route's
    /// `allowed_outbound_hosts`, or the route used up `max_outbound_requests`.
    Denied(String),
    /// The URL is not `http(s)://host[:port]/path`.
    BadUrl(String),
    /// Anything else: connection, timeout, TLS, a body over the limit.
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Denied(url) => write!(f, "outbound request to {url} denied by the host"),
            FetchError::BadUrl(url) => write!(f, "{url:?} is not an http(s) URL"),
            FetchError::Failed(reason) => write!(f, "outbound request failed: {reason}"),
        }
    }
}

impl std::error::Error for FetchError {}

impl From<FetchError> for Error {
    fn from(err: FetchError) -> Error {
        Error::new(502, err.to_string())
    }
}

impl Fetch {
    /// A request with any method (`"GET"`, `"POST"`, ...).
    pub fn new(method: &str, url: impl Into<String>) -> Fetch {
        Fetch {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: impl Into<String>) -> Fetch {
        Fetch::new("GET", url)
    }

    pub fn post(url: impl Into<String>) -> Fetch {
        Fetch::new("POST", url)
    }

    /// Adds a header (names are case-insensitive).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Fetch {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Fetch {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Fetch {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.header("content-type", "application/json").body(body)
    }

    /// Sends it and reads the whole response, following redirects for `GET`
    /// and `HEAD`.
    pub fn send(self) -> Result<Fetched, FetchError> {
        let follows = matches!(self.method.as_str(), "GET" | "HEAD");
        let mut url = self.url.clone();
        let mut headers = self.headers.clone();
        for _ in 0..=MAX_REDIRECTS {
            let fetched = send_once(&self.method, &url, &headers, &self.body)?;
            let location = fetched
                .header("location")
                .map(|l| String::from_utf8_lossy(l).into_owned());
            match location {
                Some(location)
                    if follows && matches!(fetched.status, 301 | 302 | 303 | 307 | 308) =>
                {
                    let next = resolve(&url, &location);
                    // Credentials stay with the origin they were meant for.
                    if origin(&next) != origin(&url) {
                        headers.retain(|(name, _)| {
                            !matches!(
                                name.as_str(),
                                "authorization" | "cookie" | "proxy-authorization"
                            )
                        });
                    }
                    url = next;
                }
                _ => return Ok(fetched),
            }
        }
        Err(FetchError::Failed(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

impl Fetched {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; a body that does not parse is a 502.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|err| Error::new(502, format!("upstream answered with invalid JSON: {err}")))
    }
}

/// `scheme://authority` of a URL, lower case.
fn origin(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    url[..end].to_ascii_lowercase()
}

/// `location` against `base`: absolute URLs as they are, `/path` on the same origin.
fn resolve(base: &str, location: &str) -> String {
    let lower = location.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return location.to_string();
    }
    let origin_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|i| *i >= origin_end)
            .unwrap_or(origin_end);
        format!("{}/{location}", &base[..dir_end])
    }
}

fn send_once(
    method: &str,
    url: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Result<Fetched, FetchError> {
    let bad_url = || FetchError::BadUrl(url.to_string());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad_url)?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad_url()),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.is_empty() {
        return Err(bad_url());
    }
    let fields = Fields::from_list(headers)
        .map_err(|err| FetchError::Failed(format!("bad header: {err:?}")))?;
    let request = OutgoingRequest::new(fields);
    let failed = |what: &str| FetchError::Failed(format!("cannot set the request's {what}"));
    request
        .set_method(&method_of(method))
        .map_err(|()| failed("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| failed("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|()| failed("authority"))?;
    request
        .set_path_with_query(Some(&path))
        .map_err(|()| failed("path"))?;
    let outgoing = request.body().map_err(|()| failed("body"))?;
    let pending = outgoing_handler::handle(request, None).map_err(|code| error(url, code))?;
    let wait = || loop {
        match pending.get() {
            Some(result) => break result,
            None => pending.subscribe().block(),
        }
    };
    let mut sent = Ok(());
    {
        let stream = outgoing.write().map_err(|()| failed("body"))?;
        for chunk in body.chunks(4096) {
            if let Err(err) = stream.blocking_write_and_flush(chunk) {
                sent = Err(format!("sending the body: {err:?}"));
                break;
            }
        }
    }
    if sent.is_ok() {
        sent = OutgoingBody::finish(outgoing, None).map_err(|code| format!("{code:?}"));
    }
    if let Err(reason) = sent {
        // A refused request (or an upstream that answered early) closes the
        // body: its own error says why.
        return Err(match wait() {
            Ok(Err(code)) => error(url, code),
            _ => FetchError::Failed(reason),
        });
    }

    let response = wait();
    let response = response
        .map_err(|()| FetchError::Failed("the response was already taken".into()))?
        .map_err(|code| error(url, code))?;
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|()| FetchError::Failed("cannot read the response body".into()))?;
    let mut body = Vec::new();
    {
        let stream = incoming
            .stream()
            .map_err(|()| FetchError::Failed("cannot read the response body".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(err)) => {
                    let reason = wasip2::http::types::http_error_code(&err)
                        .map(|code| format!("{code:?}"))
                        .unwrap_or_else(|| err.to_debug_string());
                    return Err(FetchError::Failed(format!(
                        "reading the response body: {reason}"
                    )));
                }
            }
        }
    }
    drop(IncomingBody::finish(incoming));
    Ok(Fetched {
        status,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        body,
        url: url.to_string(),
    })
}

fn method_of(method: &str) -> Method {
    match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "PATCH" => Method::Patch,
        "CONNECT" => Method::Connect,
        "TRACE" => Method::Trace,
        other => Method::Other(other.to_string()),
    }
}

fn error(url: &str, code: ErrorCode) -> FetchError {
    match code {
        ErrorCode::HttpRequestDenied => FetchError::Denied(url.to_string()),
        other => FetchError::Failed(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn redirect_locations_resolve() {
        assert_eq!(resolve("http://a.com/x/y", "/z"), "http://a.com/z");
        assert_eq!(resolve("http://a.com/x/y", "z"), "http://a.com/x/z");
        assert_eq!(resolve("http://a.com", "/z"), "http://a.com/z");
        assert_eq!(
            resolve("http://a.com/x", "https://b.com/"),
            "https://b.com/"
        );
        assert_eq!(
            resolve("http://a.com/x", "/login?next=https://b.com/"),
            "http://a.com/login?next=https://b.com/"
        );
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        use super::origin;
        assert_eq!(origin("http://A.com:80/x?y"), "http://a.com:80");
        assert_ne!(origin("https://a.com/x"), origin("http://a.com/x"));
        assert_eq!(origin("https://a.com?q"), "https://a.com");
    }
}
