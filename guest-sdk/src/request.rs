use crate::bindings::edge::route::types;
use crate::Error;
use serde::de::DeserializeOwned;

/// The HTTP request a handler receives.
///
/// ```
/// use guest_sdk::Request;
///
/// let req = Request::builder("GET", "/api/posts/42?expand=author")
///     .param("postId", "42")
///     .header("Accept", "application/json")
///     .build();
/// assert_eq!(req.param("postId"), Some("42"));
/// assert_eq!(req.query("expand").as_deref(), Some("author"));
/// assert_eq!(req.header("accept"), Some("application/json"));
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    inner: types::Request,
    /// From the host (not built by hand): an empty body may be one to read
    /// as it arrives.
    from_host: bool,
}

impl Request {
    /// The method, upper case (`"GET"`, `"POST"`, ...).
    ///
    /// ```
    /// assert_eq!(guest_sdk::Request::builder("POST", "/").build().method(), "POST");
    /// ```
    pub fn method(&self) -> &str {
        &self.inner.method
    }

    /// The full URL the client asked for, including scheme, host and query.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/a?b=1").build();
    /// assert_eq!(req.url(), "http://localhost/a?b=1");
    /// ```
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The path, as sent (still percent-encoded).
    ///
    /// ```
    /// assert_eq!(guest_sdk::Request::builder("GET", "/a%20b?x").build().path(), "/a%20b");
    /// ```
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// The raw query string, without `?`; empty when there is none.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Request::builder("GET", "/?a=1&b").build().query_string(), "a=1&b");
    /// ```
    pub fn query_string(&self) -> &str {
        &self.inner.query
    }

    /// The first value of query parameter `name`, decoded (`+` is a space).
    /// A parameter given without `=` has the value `""`.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/?q=hello+world%21&flag").build();
    /// assert_eq!(req.query("q").as_deref(), Some("hello world!"));
    /// assert_eq!(req.query("flag").as_deref(), Some(""));
    /// assert_eq!(req.query("missing"), None);
    /// ```
    pub fn query(&self, name: &str) -> Option<String> {
        self.inner
            .query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| decode_form(key) == name)
            .map(|(_, value)| decode_form(value))
    }

    /// The path parameter `name` from the route's pattern, percent-decoded.
    /// A splat (`$` at the end of the pattern) is under `"_splat"`: the rest
    /// of the path, each segment decoded but for `%` and `/` (kept as `%25`
    /// and `%2F`), so `/files/a%2Fb/c` gives `"a%2Fb/c"` and `/files/a/b/c`
    /// gives `"a/b/c"`.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/files/a/b").param("_splat", "a/b").build();
    /// assert_eq!(req.param("_splat"), Some("a/b"));
    /// ```
    pub fn param(&self, name: &str) -> Option<&str> {
        self.inner
            .params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// All path parameters, in pattern order.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/").param("a", "1").build();
    /// assert_eq!(req.params().collect::<Vec<_>>(), [("a", "1")]);
    /// ```
    pub fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of header `name` (any case) as text, if it is valid UTF-8.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/").header("X-Id", "7").build();
    /// assert_eq!(req.header("x-id"), Some("7"));
    /// assert_eq!(req.header("X-ID"), Some("7"));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first value of header `name` (any case) as bytes.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/").header("x-raw", "\u{e9}").build();
    /// assert_eq!(req.header_bytes("x-raw"), Some("\u{e9}".as_bytes()));
    /// ```
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.inner
            .headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Every header, names in lower case, in the order received.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/").header("A", "1").build();
    /// assert_eq!(req.headers().count(), 1);
    /// ```
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.inner
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// The body as raw bytes, exactly as received.
    ///
    /// A route that reads its body as a stream anywhere
    /// ([`Request::body_stream`], [`Request::multipart`]) gets every body
    /// that way: this is then empty.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("POST", "/").body("hi").build();
    /// assert_eq!(req.body(), b"hi");
    /// ```
    pub fn body(&self) -> &[u8] {
        &self.inner.body
    }

    /// The body as text; a body that is not UTF-8 is a 400 error.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("POST", "/").body(vec![0xff]).build();
    /// assert_eq!(req.text().unwrap_err().status(), 400);
    /// ```
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.inner.body)
            .map_err(|_| Error::bad_request("Request body is not valid UTF-8"))
    }

    /// The body parsed as JSON into `T`; a body that does not parse is a 400
    /// error whose message says why, so `req.json()?` is all a handler needs.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("POST", "/").body("{\"n\":1}").build();
    /// let value: serde_json::Value = req.json().unwrap();
    /// assert_eq!(value["n"], 1);
    ///
    /// let bad = guest_sdk::Request::builder("POST", "/").body("{oops").build();
    /// assert_eq!(bad.json::<serde_json::Value>().unwrap_err().status(), 400);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.inner.body)
            .map_err(|err| Error::bad_request(format!("Invalid JSON body: {err}")))
    }

    /// The client's address as `ip:port`.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Request::builder("GET", "/").build().client_addr(), "127.0.0.1:0");
    /// ```
    pub fn client_addr(&self) -> &str {
        &self.inner.client_addr
    }

    /// The body as it arrives, for bodies too large to hold whole: the
    /// host sends it on as the client does, within the route's `max_body`
    /// (past it the host stops the route and answers 413). It implements
    /// [`std::io::Read`].
    ///
    /// ```
    /// use std::io::Read;
    ///
    /// let req = guest_sdk::Request::builder("POST", "/upload").body("abc").build();
    /// let mut body = String::new();
    /// req.body_stream().read_to_string(&mut body).unwrap();
    /// assert_eq!(body, "abc");
    /// ```
    pub fn body_stream(&self) -> crate::body::BodyStream {
        if self.from_host && self.inner.body.is_empty() {
            crate::body::BodyStream::from_host()
        } else {
            crate::body::BodyStream::in_memory(self.inner.body.clone())
        }
    }

    /// The parts of a `multipart/form-data` body, one after another, each
    /// read as it arrives. The host parses the body within the route's
    /// `max_body` and `max_part`; a part over `max_part` stops the route
    /// with a 413 naming the limit, before the rest is read.
    pub fn multipart(&self) -> crate::body::Multipart {
        crate::body::Multipart::new(self.from_host)
    }

    /// Starts a request by hand, for unit tests of handlers.
    /// `path_and_query` is what follows the host in the URL.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("DELETE", "/api/posts/1").build();
    /// assert_eq!(req.method(), "DELETE");
    /// ```
    pub fn builder(method: &str, path_and_query: &str) -> RequestBuilder {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        RequestBuilder {
            inner: types::Request {
                method: method.to_ascii_uppercase(),
                url: format!("http://localhost{path_and_query}"),
                path: path.to_string(),
                query: query.to_string(),
                params: Vec::new(),
                headers: Vec::new(),
                body: Vec::new(),
                client_addr: "127.0.0.1:0".to_string(),
            },
        }
    }
}

impl From<types::Request> for Request {
    fn from(inner: types::Request) -> Self {
        Request {
            inner,
            from_host: true,
        }
    }
}

/// Builds a [`Request`] by hand, for unit tests of handlers.
///
/// ```
/// let req = guest_sdk::Request::builder("POST", "/api/posts")
///     .header("content-type", "application/json")
///     .body(r#"{"title":"Hello"}"#)
///     .build();
/// assert_eq!(req.text().unwrap(), r#"{"title":"Hello"}"#);
/// ```
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    inner: types::Request,
}

impl RequestBuilder {
    /// Adds a path parameter.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/").param("id", "1").build();
    /// assert_eq!(req.param("id"), Some("1"));
    /// ```
    pub fn param(mut self, name: &str, value: &str) -> Self {
        self.inner
            .params
            .push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a header; the name is stored in lower case, as the host sends it.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/").header("X-A", "b").build();
    /// assert_eq!(req.headers().next(), Some(("x-a", &b"b"[..])));
    /// ```
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.inner
            .headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("PUT", "/").body("x").build();
    /// assert_eq!(req.body(), b"x");
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.inner.body = body.into();
        self
    }

    /// Finishes the request.
    ///
    /// ```
    /// let req = guest_sdk::Request::builder("GET", "/").build();
    /// assert_eq!(req.path(), "/");
    /// ```
    pub fn build(self) -> Request {
        Request {
            inner: self.inner,
            from_host: false,
        }
    }
}

/// Decodes one `application/x-www-form-urlencoded` component; a malformed
/// escape is kept as written rather than failing the lookup.
fn decode_form(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let escaped = match (byte, bytes.get(i + 1..i + 3)) {
            (b'%', Some(&[hi, lo])) => hex_value(hi).zip(hex_value(lo)),
            _ => None,
        };
        match (byte, escaped) {
            (_, Some((hi, lo))) => {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            (b'+', None) => out.push(b' '),
            (other, None) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}
