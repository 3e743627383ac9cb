//! Bodies: the one type every answer's body has, and reading a request body
//! within a limit (the one place a declared `Content-Length` is read).

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every answer's body: whole (host answers, method routes) or streamed
/// (`wasi:http/proxy` routes).
pub(crate) type HostBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A whole answer as a [`HostBody`] answer.
pub(crate) fn boxed(response: Response<Full<Bytes>>) -> Response<HostBody> {
    response.map(|body| body.map_err(|never| match never {}).boxed_unsync())
}

/// The body length a request declares. hyper has already refused a
/// malformed or repeated `Content-Length`, so one that does not parse here
/// is absent.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Whether a request declares a body longer than `limit`, which is refused
/// before any of it is read.
pub(crate) fn declares_more_than(headers: &HeaderMap, limit: usize) -> bool {
    declared_length(headers).is_some_and(|length| length > limit as u64)
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// It is (or declares itself) longer than the limit.
    TooLarge,
    /// The connection failed or the framing was bad.
    Unreadable(String),
}

/// Reads a whole body of at most `limit` bytes.
pub(crate) async fn read_limited<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if declares_more_than(headers, limit) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(err) => Err(BodyError::Unreadable(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(length: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, length.parse().unwrap());
        headers
    }

    #[tokio::test]
    async fn a_body_is_read_within_its_limit_and_refused_past_it() {
        let body = || Full::new(Bytes::from_static(b"0123456789"));
        let read = read_limited(&HeaderMap::new(), body(), 10).await.unwrap();
        assert_eq!(&read[..], b"0123456789");
        // Longer than the limit: refused while reading...
        let too_long = read_limited(&HeaderMap::new(), body(), 9).await;
        assert!(matches!(too_long, Err(BodyError::TooLarge)));
        // ...or at once, from what it declares.
        let declared = read_limited(&headers("11"), body(), 10).await;
        assert!(matches!(declared, Err(BodyError::TooLarge)));
        assert!(declares_more_than(&headers("11"), 10));
        assert!(!declares_more_than(&headers("10"), 10));
        assert!(!declares_more_than(&headers("nonsense"), 0));
    }
}
