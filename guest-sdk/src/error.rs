use crate::Response;
use std::fmt;

/// A failure a handler returns; it becomes a JSON error response
/// `{"error": "<message>"}` with its status.
///
/// ```
/// use guest_sdk::Error;
///
/// let missing = Error::not_found("Not found");
/// assert_eq!(missing.status(), 404);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    status: u16,
    message: String,
    /// Seconds a client should wait before trying again (`Retry-After`).
    retry_after: Option<u32>,
}

impl Error {
    /// An error with any status. Statuses outside 400..=599 are sent as 500.
    ///
    /// ```
    /// let conflict = guest_sdk::Error::new(409, "Already exists");
    /// assert_eq!(conflict.message(), "Already exists");
    /// ```
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        let status = if (400..=599).contains(&status) {
            status
        } else {
            500
        };
        Error {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `400 Bad Request`: the client sent something the route cannot use.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Error::bad_request("Missing title").status(), 400);
    /// ```
    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::new(400, message)
    }

    /// `404 Not Found`.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Error::not_found("Not found").status(), 404);
    /// ```
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(404, message)
    }

    /// `500 Internal Server Error`: the route itself failed.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Error::internal("store unavailable").status(), 500);
    /// ```
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(500, message)
    }

    /// 503 Service Unavailable with `Retry-After: 1`: something the route
    /// needs (a key-value store, say) cannot be reached right now. A store
    /// that is down turns into this through `?`.
    ///
    /// ```
    /// use guest_sdk::Error;
    ///
    /// let busy = Error::unavailable("the posts store is down");
    /// assert_eq!(busy.status(), 503);
    /// assert_eq!(busy.into_response().header("retry-after"), Some(&b"1"[..]));
    /// ```
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error {
            retry_after: Some(1),
            ..Error::new(503, message)
        }
    }

    /// The HTTP status this error is sent with.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Error::new(418, "teapot").status(), 418);
    /// ```
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The message sent in the body's `error` field.
    ///
    /// ```
    /// assert_eq!(guest_sdk::Error::bad_request("x").message(), "x");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The response this error is sent as: `{"error": message}` with the status.
    ///
    /// ```
    /// let response = guest_sdk::Error::not_found("Not found").into_response();
    /// assert_eq!(response.status(), 404);
    /// assert_eq!(response.body(), br#"{"error":"Not found"}"#);
    /// ```
    pub fn into_response(self) -> Response {
        let response =
            Response::json(&serde_json::json!({ "error": self.message })).with_status(self.status);
        match self.retry_after {
            Some(seconds) => response.with_header("Retry-After", seconds.to_string()),
            None => response,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for Error {}

impl From<Error> for Response {
    fn from(error: Error) -> Response {
        error.into_response()
    }
}
