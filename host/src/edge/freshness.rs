//! What RFC 9111 lets a shared cache do with an answer: whether it may be
//! stored ([`storable`]), for how long it is fresh, whether it may be served
//! stale while it is refreshed, and whether a request's conditional headers
//! match it ([`not_modified`]).
//!
//! Only explicit freshness is used (`s-maxage`, then `max-age`, then
//! `Expires`): an answer that states none is not stored, as a route that
//! says nothing about caching expects.

use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use std::time::{Duration, SystemTime};

/// Statuses a cache understands and may store with explicit freshness
/// (RFC 9110 section 15.1's heuristically cacheable ones, and the
/// redirects that may carry freshness).
const STORABLE_STATUSES: [u16; 13] = [
    200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 501,
];

/// The `Cache-Control` directives a shared cache acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives {
    pub(crate) s_maxage: Option<u64>,
    pub(crate) max_age: Option<u64>,
    pub(crate) public: bool,
    pub(crate) private: bool,
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub(crate) must_revalidate: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    /// A numeric directive that does not parse: the answer counts as stale.
    pub(crate) invalid: bool,
}

impl Directives {
    /// Every `Cache-Control` line of `headers` read as one list.
    pub(crate) fn of(headers: &HeaderMap) -> Directives {
        let mut found = Directives::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = line.to_str() else {
                found.invalid = true;
                continue;
            };
            for directive in text.split(',') {
                let (name, value) = match directive.split_once('=') {
                    Some((name, value)) => (name, Some(value.trim().trim_matches('"'))),
                    None => (directive, None),
                };
                let seconds = |invalid: &mut bool| {
                    let parsed = value.and_then(|v| v.parse::<u64>().ok());
                    *invalid |= parsed.is_none();
                    parsed
                };
                match name.trim().to_ascii_lowercase().as_str() {
                    "s-maxage" => found.s_maxage = seconds(&mut found.invalid),
                    "max-age" => found.max_age = seconds(&mut found.invalid),
                    "stale-while-revalidate" => {
                        found.stale_while_revalidate = seconds(&mut found.invalid)
                    }
                    "public" => found.public = true,
                    // `private="x"` and `no-cache="x"` name fields; they are
                    // taken as the whole directive, which is the safe reading.
                    "private" => found.private = true,
                    "no-store" => found.no_store = true,
                    "no-cache" => found.no_cache = true,
                    "must-revalidate" | "proxy-revalidate" => found.must_revalidate = true,
                    _ => {}
                }
            }
        }
        found
    }
}

/// How long a stored answer may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// Fresh for this long from the moment the route answered.
    pub(crate) lifetime: Duration,
    /// Then served stale for this long while one request refreshes it.
    pub(crate) stale_while_revalidate: Duration,
    /// `no-cache`: every use asks the route first (with the validators).
    pub(crate) revalidate_always: bool,
    /// `Age` the answer came with.
    pub(crate) initial_age: Duration,
}

/// Whether a shared cache may store the route's answer to a `GET`, and for
/// how long it is fresh; the reason when it may not.
pub(crate) fn storable(
    status: StatusCode,
    request: &HeaderMap,
    response: &HeaderMap,
    now: SystemTime,
) -> Result<Freshness, &'static str> {
    if !STORABLE_STATUSES.contains(&status.as_u16()) {
        return Err("status is not one a cache stores");
    }
    let cc = Directives::of(response);
    if cc.no_store {
        return Err("no-store");
    }
    if cc.private {
        return Err("private");
    }
    if vary_names(response).is_none() {
        return Err("Vary: *");
    }
    // RFC 9111 section 3.5: an answer to a request with credentials is
    // shared only when the route says so.
    if request.contains_key(header::AUTHORIZATION)
        && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate)
    {
        return Err("the request has Authorization and the answer is not public");
    }
    if response.contains_key(header::SET_COOKIE) && !cc.public {
        return Err("Set-Cookie without public");
    }
    let has_validator = has_validator(response);
    let lifetime = if cc.invalid {
        Some(0)
    } else {
        cc.s_maxage
            .or(cc.max_age)
            .or_else(|| expires_in(response, now))
    };
    let lifetime = match lifetime {
        Some(lifetime) => lifetime,
        // Kept to be confirmed by the route on each use.
        None if cc.no_cache && has_validator => 0,
        None => return Err("no explicit freshness (s-maxage, max-age or Expires)"),
    };
    let stale_while_revalidate = if cc.must_revalidate {
        0
    } else {
        cc.stale_while_revalidate.unwrap_or(0)
    };
    if (cc.no_cache || lifetime == 0) && !has_validator && stale_while_revalidate == 0 {
        return Err("it could never be served without asking the route again");
    }
    let initial_age = response
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Freshness {
        lifetime: Duration::from_secs(lifetime),
        stale_while_revalidate: Duration::from_secs(stale_while_revalidate),
        revalidate_always: cc.no_cache,
        initial_age: Duration::from_secs(initial_age),
    })
}

/// Whether an answer carries a validator (`ETag` or `Last-Modified`), so a
/// cache can ask the route whether it still holds.
pub(crate) fn has_validator(response: &HeaderMap) -> bool {
    response.contains_key(header::ETAG) || response.contains_key(header::LAST_MODIFIED)
}

/// Seconds from `Date` (or now) to `Expires`; an `Expires` that does not
/// parse is in the past (RFC 9111 section 5.3).
fn expires_in(response: &HeaderMap, now: SystemTime) -> Option<u64> {
    let expires = response.get(header::EXPIRES)?;
    let Some(expires) = http_date(expires) else {
        return Some(0);
    };
    let date = response
        .get(header::DATE)
        .and_then(http_date)
        .unwrap_or(now);
    Some(expires.duration_since(date).map_or(0, |d| d.as_secs()))
}

fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

/// The request header names an answer's `Vary` lists (lower case); `None`
/// for `Vary: *`, which matches no later request.
pub(crate) fn vary_names(response: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for line in response.get_all(header::VARY) {
        for name in line.to_str().unwrap_or("*").split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                return None;
            }
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// A request header's value as a `Vary` comparison sees it: every line
/// joined, whitespace around commas dropped; `None` when absent.
pub(crate) fn vary_value(request: &HeaderMap, name: &str) -> Option<String> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let joined: Vec<String> = lines
        .flat_map(|line| {
            String::from_utf8_lossy(line.as_bytes())
                .split(',')
                .map(|part| part.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    Some(joined.join(","))
}

/// Whether a request's `If-None-Match` (or, without one, its
/// `If-Modified-Since`) matches an answer with these headers, so that `304
/// Not Modified` is the answer (RFC 9110 section 13.1).
pub(crate) fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
    if let Some(wanted) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let weak = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
        return wanted
            .to_str()
            .unwrap_or("")
            .split(',')
            .any(|tag| tag.trim() == "*" || weak(tag) == weak(etag));
    }
    let since = request.get(header::IF_MODIFIED_SINCE).and_then(http_date);
    let modified = stored.get(header::LAST_MODIFIED).and_then(http_date);
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// The headers a `304` carries from the stored answer (RFC 9110 section 15.4.5).
pub(crate) const NOT_MODIFIED_HEADERS: [header::HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in list {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn verdict(
        request: &[(&str, &str)],
        response: &[(&str, &str)],
    ) -> Result<Freshness, &'static str> {
        storable(
            StatusCode::OK,
            &headers(request),
            &headers(response),
            SystemTime::now(),
        )
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_expires() {
        let fresh = verdict(&[], &[("cache-control", "public, max-age=10, s-maxage=60")]).unwrap();
        assert_eq!(fresh.lifetime, Duration::from_secs(60));
        let fresh = verdict(&[], &[("cache-control", "max-age=10"), ("age", "3")]).unwrap();
        assert_eq!(
            (fresh.lifetime, fresh.initial_age),
            (Duration::from_secs(10), Duration::from_secs(3))
        );
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let fresh = storable(
            StatusCode::OK,
            &HeaderMap::new(),
            &headers(&[
                ("date", &httpdate::fmt_http_date(date)),
                (
                    "expires",
                    &httpdate::fmt_http_date(date + Duration::from_secs(30)),
                ),
            ]),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(fresh.lifetime, Duration::from_secs(30));
        let swr = verdict(
            &[],
            &[("cache-control", "s-maxage=1, stale-while-revalidate=30")],
        )
        .unwrap();
        assert_eq!(swr.stale_while_revalidate, Duration::from_secs(30));
        let strict = verdict(
            &[],
            &[(
                "cache-control",
                "s-maxage=1, stale-while-revalidate=30, must-revalidate",
            )],
        )
        .unwrap();
        assert_eq!(strict.stale_while_revalidate, Duration::ZERO);
    }

    #[test]
    fn what_a_shared_cache_must_not_store_is_refused() {
        for (request, response, reason) in [
            (
                vec![],
                vec![("cache-control", "private, max-age=60")],
                "private",
            ),
            (
                vec![],
                vec![("cache-control", "no-store, max-age=60")],
                "no-store",
            ),
            (
                vec![],
                vec![("cache-control", "max-age=60"), ("vary", "Accept, *")],
                "Vary: *",
            ),
            (
                vec![],
                vec![("cache-control", "max-age=60"), ("set-cookie", "a=b")],
                "Set-Cookie without public",
            ),
            (
                vec![("authorization", "Bearer x")],
                vec![("cache-control", "max-age=60")],
                "Authorization",
            ),
            (
                vec![],
                vec![("content-type", "text/plain")],
                "no explicit freshness",
            ),
            (
                vec![],
                vec![("cache-control", "no-cache, max-age=60")],
                "never be served",
            ),
            (
                vec![],
                vec![("cache-control", "max-age=soon")],
                "never be served",
            ),
        ] {
            let err = verdict(&request, &response).unwrap_err();
            assert!(err.contains(reason), "{response:?}: {err}");
        }
        assert_eq!(
            storable(
                StatusCode::CREATED,
                &HeaderMap::new(),
                &headers(&[("cache-control", "max-age=60")]),
                SystemTime::now()
            ),
            Err("status is not one a cache stores")
        );
        // What the route marks public may be stored after all.
        verdict(
            &[],
            &[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "a=b"),
            ],
        )
        .unwrap();
        verdict(
            &[("authorization", "Bearer x")],
            &[("cache-control", "s-maxage=60")],
        )
        .unwrap();
        let no_cache = verdict(&[], &[("cache-control", "no-cache"), ("etag", "\"v1\"")]).unwrap();
        assert!(no_cache.revalidate_always);
    }

    #[test]
    fn vary_and_conditionals_read_as_rfc_9110_says() {
        assert_eq!(
            vary_names(&headers(&[
                ("vary", "Accept-Language, accept"),
                ("vary", "Accept")
            ])),
            Some(vec!["accept-language".to_string(), "accept".to_string()])
        );
        assert_eq!(vary_names(&headers(&[("vary", "*")])), None);
        let req = headers(&[("accept-language", "en, fr"), ("accept-language", "de")]);
        assert_eq!(
            vary_value(&req, "accept-language").as_deref(),
            Some("en,fr,de")
        );
        assert_eq!(vary_value(&req, "accept"), None);

        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]);
        assert!(not_modified(
            &headers(&[("if-none-match", "\"v0\", W/\"v1\"")]),
            &stored
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored
        ));
        // If-None-Match decides alone when present.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Wed, 02 Dec 2026 10:00:00 GMT")
            ]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Wed, 02 Dec 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(&HeaderMap::new(), &stored));
    }
}
