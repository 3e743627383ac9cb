//! A route's CORS policy at work: preflights answered by the host without
//! the guest, and the `Access-Control-*` headers of the route's answers
//! (the guest's own replaced). An origin the policy does not list gets
//! nothing extra, so the browser keeps the answer from the page.

use crate::manifest::CorsPolicy;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

/// The CORS response headers; a route with a policy has these from the
/// host alone.
const CORS_HEADERS: [header::HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// Whether a request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The `Access-Control-Allow-Origin` value for `origin`, if the policy
/// lets it read answers.
fn allowed_origin(policy: &CorsPolicy, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    match &policy.origins {
        None => Some(HeaderValue::from_static("*")),
        Some(list) => {
            let origin = origin?;
            let text = origin.to_str().ok()?.to_ascii_lowercase();
            list.contains(&text).then(|| origin.clone())
        }
    }
}

/// The host's answer to a preflight for a route answering `allow` (its
/// `Allow` header): `204`, with the grant only when the origin, the method
/// and every requested header are allowed.
pub(crate) fn preflight<B: Default>(
    policy: &CorsPolicy,
    allow: &str,
    request: &HeaderMap,
) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.append(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    let Some(origin) = allowed_origin(policy, request.get(header::ORIGIN)) else {
        return response;
    };
    let methods: Vec<String> = if policy.methods.is_empty() {
        allow.split(',').map(|m| m.trim().to_string()).collect()
    } else {
        policy.methods.iter().map(ToString::to_string).collect()
    };
    let wanted = request
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // GET, HEAD and POST need no grant (the Fetch standard's CORS-safelisted methods).
    let safelisted = matches!(wanted, "GET" | "HEAD" | "POST");
    if !safelisted && !methods.iter().any(|m| m == wanted) {
        return response;
    }
    let any_header = policy.headers.iter().any(|h| h == "*");
    let requested: Vec<String> = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if !any_header && !requested.iter().all(|h| policy.headers.contains(h)) {
        return response;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Ok(value) = HeaderValue::from_str(&methods.join(", ")) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, value);
    }
    if !requested.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&requested.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
    }
    if policy.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(age) = policy.max_age {
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(age.as_secs()),
        );
    }
    response
}

/// Applies the policy to an answer for a request from `origin`: the
/// guest's CORS headers go, the policy's come for an allowed origin, and
/// `Vary: Origin` whenever the answer depends on it.
pub(crate) fn decorate(policy: &CorsPolicy, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    for name in CORS_HEADERS {
        headers.remove(name);
    }
    if policy.origins.is_some() {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if origin.is_none() {
        return;
    }
    let Some(allowed) = allowed_origin(policy, origin) else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    if policy.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !policy.expose_headers.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&policy.expose_headers.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> CorsPolicy {
        CorsPolicy {
            origins: Some(vec!["https://app.example.com".into()]),
            methods: vec![Method::GET, Method::POST, Method::DELETE],
            headers: vec!["content-type".into()],
            expose_headers: vec!["x-request-id".into()],
            credentials: true,
            max_age: Some(Duration::from_secs(600)),
        }
    }

    fn request(list: &[(&str, &str)]) -> HeaderMap {
        list.iter()
            .map(|(n, v)| {
                (
                    header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_preflight_is_granted_only_in_full() {
        let asked = |list: &[(&str, &str)]| {
            preflight::<()>(&policy(), "GET, HEAD, OPTIONS", &request(list))
        };
        let granted = asked(&[
            ("origin", "https://App.example.com"),
            ("access-control-request-method", "DELETE"),
            ("access-control-request-headers", "Content-Type"),
        ]);
        let h = granted.headers();
        assert_eq!(granted.status(), StatusCode::NO_CONTENT);
        assert_eq!(h["access-control-allow-origin"], "https://App.example.com");
        assert_eq!(h["access-control-allow-methods"], "GET, POST, DELETE");
        assert_eq!(h["access-control-allow-headers"], "content-type");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "600");
        for refused in [
            asked(&[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ]),
            asked(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
            ]),
            asked(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type, x-secret"),
            ]),
        ] {
            assert_eq!(refused.status(), StatusCode::NO_CONTENT);
            assert!(!refused
                .headers()
                .contains_key("access-control-allow-origin"));
        }
    }

    #[test]
    fn answers_carry_the_policy_not_the_guests_headers() {
        let mut headers = request(&[("access-control-allow-origin", "*")]);
        decorate(
            &policy(),
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut headers,
        );
        assert!(!headers.contains_key("access-control-allow-origin"));
        assert_eq!(headers["vary"], "Origin");
        let mut headers = HeaderMap::new();
        decorate(
            &policy(),
            Some(&HeaderValue::from_static("https://app.example.com")),
            &mut headers,
        );
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(headers["access-control-expose-headers"], "x-request-id");
        let any = CorsPolicy {
            origins: None,
            credentials: false,
            ..policy()
        };
        let mut headers = HeaderMap::new();
        decorate(
            &any,
            Some(&HeaderValue::from_static("https://x.example")),
            &mut headers,
        );
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert!(!headers.contains_key("vary"));
    }
}
