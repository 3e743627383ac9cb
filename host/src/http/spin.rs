//! The request headers Spin gives its HTTP components, so that components
//! built for Spin (its SDK's routers read them) run here unchanged. Any
//! `spin-*` header a client sent is dropped first: only the host says what
//! matched.
//!
//! A route pattern is spelt Spin's way in them: `$name` is `:name`, a
//! trailing `$` is `...`.

use crate::router::SPLAT;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The prefix of every header Spin sets.
const PREFIX: &str = "spin-";

/// What one request's Spin headers are made from.
pub(crate) struct SpinRequest<'a> {
    /// The route's pattern, as the manifest writes it.
    pub(crate) pattern: &'a str,
    /// Its matched params, the splat as `_splat`.
    pub(crate) params: &'a [(String, String)],
    /// The request's path and query, as sent.
    pub(crate) path_and_query: &'a str,
    /// The `Host` the client asked for.
    pub(crate) host: &'a str,
    pub(crate) client: &'a str,
}

/// Removes every `spin-*` header of `headers`, then sets Spin's for
/// `request`, if given.
pub(crate) fn set_headers(headers: &mut HeaderMap, request: Option<&SpinRequest<'_>>) {
    if headers.keys().any(|name| name.as_str().starts_with(PREFIX)) {
        let forged: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(PREFIX))
            .cloned()
            .collect();
        for name in forged {
            headers.remove(&name);
        }
    }
    let Some(request) = request else {
        return;
    };
    for (name, value) in spin_headers(request) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
}

/// Spin's headers for `request`, by name.
fn spin_headers(request: &SpinRequest<'_>) -> Vec<(String, String)> {
    let route = spin_route(request.pattern);
    let splat = request
        .params
        .iter()
        .find(|(name, _)| name == SPLAT)
        .map(|(_, value)| value.as_str());
    // What the trailing wildcard matched, with its leading `/`.
    let path_info = match splat {
        Some(rest) if !rest.is_empty() => format!("/{rest}"),
        _ => String::new(),
    };
    // The route without its wildcard: `/api/...` is `/api`.
    let component_route = match route.strip_suffix("/...") {
        Some("") => "/".to_owned(),
        Some(prefix) => prefix.to_owned(),
        None => route.clone(),
    };
    let mut headers = vec![
        ("spin-path-info".to_owned(), path_info),
        (
            "spin-full-url".to_owned(),
            format!("http://{}{}", request.host, request.path_and_query),
        ),
        ("spin-matched-route".to_owned(), route.clone()),
        ("spin-base-path".to_owned(), "/".to_owned()),
        ("spin-raw-component-route".to_owned(), route),
        ("spin-component-route".to_owned(), component_route),
        ("spin-client-addr".to_owned(), request.client.to_owned()),
    ];
    for (name, value) in request.params {
        if name != SPLAT {
            headers.push((
                format!("{PREFIX}path-match-{}", name.to_ascii_lowercase()),
                value.clone(),
            ));
        }
    }
    headers
}

/// A pattern as Spin writes routes: `/api/posts/$postId` is
/// `/api/posts/:postId`, `/files/$` is `/files/...`.
pub(crate) fn spin_route(pattern: &str) -> String {
    if pattern == "/$" {
        return "/...".to_owned();
    }
    pattern
        .split('/')
        .map(|segment| match segment.strip_prefix('$') {
            Some("") => "...".to_owned(),
            Some(name) => format!(":{name}"),
            None => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_for(pattern: &str, params: &[(&str, &str)], path: &str) -> HeaderMap {
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert("spin-path-match-admin", HeaderValue::from_static("true"));
        headers.insert("spin-client-addr", HeaderValue::from_static("10.0.0.1:1"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        set_headers(
            &mut headers,
            Some(&SpinRequest {
                pattern,
                params: &params,
                path_and_query: path,
                host: "example.test:8080",
                client: "127.0.0.1:5000",
            }),
        );
        headers
    }

    #[test]
    fn without_spin_headers_a_clients_are_still_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert("spin-path-match-id", HeaderValue::from_static("forged"));
        headers.insert("accept", HeaderValue::from_static("*/*"));
        set_headers(&mut headers, None);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("accept"));
    }

    fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_param_route_gets_its_match_and_no_path_info() {
        let h = headers_for("/api/posts/$postId", &[("postId", "7")], "/api/posts/7?x=1");
        assert_eq!(get(&h, "spin-path-match-postid"), Some("7"));
        assert_eq!(get(&h, "spin-path-info"), Some(""));
        assert_eq!(get(&h, "spin-matched-route"), Some("/api/posts/:postId"));
        assert_eq!(get(&h, "spin-component-route"), Some("/api/posts/:postId"));
        assert_eq!(
            get(&h, "spin-full-url"),
            Some("http://example.test:8080/api/posts/7?x=1")
        );
        assert_eq!(get(&h, "spin-client-addr"), Some("127.0.0.1:5000"));
        assert_eq!(get(&h, "spin-base-path"), Some("/"));
        // The client's forged match is gone; its other headers stay.
        assert_eq!(get(&h, "spin-path-match-admin"), None);
        assert_eq!(get(&h, "accept"), Some("*/*"));
    }

    #[test]
    fn a_wildcard_route_gets_the_rest_as_path_info() {
        let h = headers_for("/files/$", &[("_splat", "a/b%2Fc")], "/files/a/b%2Fc");
        assert_eq!(get(&h, "spin-path-info"), Some("/a/b%2Fc"));
        assert_eq!(get(&h, "spin-matched-route"), Some("/files/..."));
        assert_eq!(get(&h, "spin-raw-component-route"), Some("/files/..."));
        assert_eq!(get(&h, "spin-component-route"), Some("/files"));
        let root = headers_for("/$", &[("_splat", "x")], "/x");
        assert_eq!(get(&root, "spin-matched-route"), Some("/..."));
        assert_eq!(get(&root, "spin-component-route"), Some("/"));
        assert_eq!(get(&root, "spin-path-info"), Some("/x"));
    }
}
