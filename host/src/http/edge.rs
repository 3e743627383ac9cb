//! A matched route's answer with the edge policies around its guest, in
//! the order [`answer`] applies them: a CORS preflight answered by the
//! host; the rate limit; the response cache (a fresh entry is the answer,
//! with no instance, no concurrency slot and nothing the guest would read);
//! the guest; its answer stored when RFC 9111 lets a shared cache keep it;
//! the CORS and rate-limit headers. A route without policies runs as if
//! this file did not exist, but for one cache lookup on `GET` and `HEAD`.

use super::answer::HostAnswer;
use super::body::{boxed, BoxError, HostBody};
use super::storing::{renewed, store_on_the_way_out, store_whole, CACHE_TAG};
use super::{proxy, sdk};
use crate::control::{Deployment, Host};
use crate::edge::freshness::{self, has_validator, not_modified};
use crate::edge::{cors, rate_limit, Entry, RateLimiter, ResponseCache, Standing, Verdict};
use crate::metrics::{Event, Lookup};
use crate::runtime::CompiledRoute;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Empty, Full};
use hyper::body::{Body, Incoming};
use std::sync::Arc;
use std::time::Instant;

/// What running a guest needs, shared by a request and the background
/// refresh it may start.
#[derive(Clone)]
pub(crate) struct Guests {
    pub(crate) host: Arc<Host>,
    pub(crate) bounds: sdk::Bounds,
}

impl Guests {
    /// Guests of `host`, bounded as its `[server]` limits say.
    pub(crate) fn new(host: Arc<Host>) -> Guests {
        let limits = &host.started_with.server;
        let bounds = sdk::Bounds {
            body_timeout: limits.body_timeout,
            head: super::answer::HeadBound {
                max_headers: limits.max_headers,
                max_bytes: limits.max_header_bytes,
            },
        };
        Guests { host, bounds }
    }
}

/// The route's answer to `req`, its policies applied.
pub(crate) async fn answer(
    guests: &Guests,
    deployment: &Arc<Deployment>,
    route: &CompiledRoute,
    params: Vec<(String, String)>,
    req: Request<Incoming>,
    client: &str,
    id: &Arc<str>,
) -> Response<HostBody> {
    if let Some(policy) = &route.cors {
        if cors::is_preflight(req.method(), req.headers()) {
            return boxed(cors::preflight(policy, &route.allow, req.headers()));
        }
    }
    let origin = route
        .cors
        .as_ref()
        .and_then(|_| req.headers().get(header::ORIGIN).cloned());
    let verdict = route.rate_limit.as_ref().map(|limiter| {
        let client = rate_limit_client(limiter, req.headers(), client);
        (limiter, limiter.check(&client, Instant::now()))
    });
    let mut response = match verdict {
        Some((_, verdict)) if !verdict.allowed => {
            route.metrics.count(Event::RateLimit);
            boxed(HostAnswer::RateLimited(verdict.retry_after).into_response())
        }
        _ => cached(guests, deployment, route, params, req, client, id)
            .await
            .unwrap_or_else(|answer| boxed(answer.into_response())),
    };
    let headers = response.headers_mut();
    headers.remove(CACHE_TAG);
    if let Some((limiter, verdict)) = verdict {
        rate_limit_headers(limiter, verdict, headers);
    }
    if let Some(policy) = &route.cors {
        cors::decorate(policy, origin.as_ref(), headers);
    }
    response
}

/// The guest's answer to `req`, whatever its body.
pub(crate) async fn run_guest<B>(
    guests: &Guests,
    route: &CompiledRoute,
    params: Vec<(String, String)>,
    req: Request<B>,
    client: &str,
    id: &Arc<str>,
) -> Result<Response<HostBody>, HostAnswer>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let runtime = &guests.host.runtime;
    if route.is_proxy() {
        proxy::run(runtime, route, params, req, client, id, guests.bounds.head).await
    } else {
        sdk::run(runtime, &guests.bounds, route, params, req, client, id).await
    }
}

/// The client a rate limit counts: the configured header's value when the
/// request has one, else the address (an IPv4 address or an IPv6 /64).
fn rate_limit_client(limiter: &RateLimiter, headers: &HeaderMap, client: &str) -> String {
    if let Some(value) = limiter.policy.header.as_ref().and_then(|h| headers.get(h)) {
        return format!("h:{}", String::from_utf8_lossy(value.as_bytes()));
    }
    match client.parse::<std::net::SocketAddr>() {
        Ok(addr) => format!("a:{}", super::connections::canonical(addr.ip())),
        Err(_) => format!("a:{client}"),
    }
}

/// `RateLimit-Policy` and `RateLimit` (the IETF draft's fields) on every
/// answer of a limited route.
fn rate_limit_headers(limiter: &RateLimiter, verdict: Verdict, headers: &mut HeaderMap) {
    if let Ok(value) = HeaderValue::from_str(&rate_limit::policy_header(&limiter.policy)) {
        headers.insert("ratelimit-policy", value);
    }
    let state = format!(
        "limit={}, remaining={}, reset={}",
        verdict.limit, verdict.remaining, verdict.reset
    );
    if let Ok(value) = HeaderValue::from_str(&state) {
        headers.insert("ratelimit", value);
    }
}

/// The answer from the cache when it holds a usable one, else the guest's
/// (stored on the way out when it may be).
async fn cached(
    guests: &Guests,
    deployment: &Arc<Deployment>,
    route: &CompiledRoute,
    params: Vec<(String, String)>,
    mut req: Request<Incoming>,
    client: &str,
    id: &Arc<str>,
) -> Result<Response<HostBody>, HostAnswer> {
    let head = req.method() == Method::HEAD;
    let cache = match &guests.host.cache {
        Some(cache) if route.cache && (head || req.method() == Method::GET) => cache,
        _ => return run_guest(guests, route, params, req, client, id).await,
    };
    let path = normalise(req.uri().path());
    let key = cache_key(&path, req.uri(), req.headers());
    let now = Instant::now();
    let found = cache.get(&key, req.headers(), route.fingerprint);
    let mut revalidating = None;
    // The client's own headers, kept before a revalidation replaces its
    // conditionals.
    let mut original = None;
    if let Some(entry) = found {
        match entry.standing(now) {
            Standing::Fresh => {
                cache.metrics.count(Lookup::Hit);
                return Ok(from_entry(cache, &entry, req.headers(), head, now, "HIT"));
            }
            Standing::StaleWhileRevalidate => {
                cache.metrics.count(Lookup::Stale);
                if entry.claim_refresh() {
                    refresh_in_background(
                        guests, deployment, route, &params, &req, client, id, &key, &entry,
                    );
                }
                return Ok(from_entry(cache, &entry, req.headers(), head, now, "STALE"));
            }
            Standing::MustRevalidate if has_validator(&entry.headers) => {
                // Ask the route whether the stored answer still holds.
                original = Some(req.headers().clone());
                let headers = req.headers_mut();
                headers.remove(header::IF_NONE_MATCH);
                headers.remove(header::IF_MODIFIED_SINCE);
                if let Some(etag) = entry.headers.get(header::ETAG) {
                    headers.insert(header::IF_NONE_MATCH, etag.clone());
                }
                if let Some(modified) = entry.headers.get(header::LAST_MODIFIED) {
                    headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
                }
                revalidating = Some(entry);
            }
            Standing::MustRevalidate => {}
        }
    }
    let request_headers = original.unwrap_or_else(|| req.headers().clone());
    let mut response = run_guest(guests, route, params, req, client, id).await?;
    if let Some(entry) = revalidating {
        if response.status() == StatusCode::NOT_MODIFIED {
            if let Some(renewed) = renewed(&entry, response.headers(), &request_headers) {
                cache.metrics.count(Lookup::Revalidated);
                let answer = from_entry(cache, &renewed, &request_headers, head, now, "HIT");
                cache.insert(&key, renewed);
                return Ok(answer);
            }
        }
    }
    cache.metrics.count(Lookup::Miss);
    if !head {
        response = store_on_the_way_out(
            cache,
            key,
            path,
            route.fingerprint,
            &request_headers,
            response,
        );
    }
    if cache.settings.x_cache {
        response
            .headers_mut()
            .insert("x-cache", HeaderValue::from_static("MISS"));
    }
    Ok(response)
}

/// The stored answer for a request: `304` when the request's conditionals
/// match it, else the answer (without its body for `HEAD`), with its `Age`.
fn from_entry(
    cache: &ResponseCache,
    entry: &Entry,
    request: &HeaderMap,
    head: bool,
    now: Instant,
    label: &'static str,
) -> Response<HostBody> {
    let mut response = if not_modified(request, &entry.headers) {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        let headers = response.headers_mut();
        for name in &freshness::NOT_MODIFIED_HEADERS {
            for value in entry.headers.get_all(name) {
                headers.append(name, value.clone());
            }
        }
        response
    } else {
        let body = if head {
            Bytes::new()
        } else {
            entry.body.clone()
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        if head {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(entry.body.len()));
        }
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
    if cache.settings.x_cache {
        headers.insert("x-cache", HeaderValue::from_static(label));
    }
    boxed(response)
}

/// Runs the route again for a stale entry in a task of its own (the one
/// refresh of that entry), storing its answer; a failed refresh lets the
/// next request try.
#[allow(clippy::too_many_arguments)]
fn refresh_in_background(
    guests: &Guests,
    deployment: &Arc<Deployment>,
    route: &CompiledRoute,
    params: &[(String, String)],
    req: &Request<Incoming>,
    client: &str,
    id: &Arc<str>,
    key: &str,
    entry: &Arc<Entry>,
) {
    let Some(index) = deployment.table.index_of(route) else {
        entry.release_refresh();
        return;
    };
    let (guests, deployment, entry) = (guests.clone(), Arc::clone(deployment), Arc::clone(entry));
    let (params, client, id, key) = (
        params.to_vec(),
        client.to_owned(),
        Arc::clone(id),
        key.to_owned(),
    );
    // A body type without lifetimes in its error keeps the task `Send`.
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = req.uri().clone();
    *request.headers_mut() = req.headers().clone();
    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        request.headers_mut().remove(name);
    }
    tokio::spawn(async move {
        let Some(route) = deployment.table.routes().get(index) else {
            return;
        };
        let Some(cache) = guests.host.cache.as_ref() else {
            return;
        };
        let headers = request.headers().clone();
        let stored = match run_guest(&guests, route, params, request, &client, &id).await {
            Ok(response) => {
                store_whole(
                    cache,
                    &key,
                    &entry.path,
                    route.fingerprint,
                    &headers,
                    response,
                )
                .await
            }
            Err(_) => false,
        };
        if !stored {
            entry.release_refresh();
            tracing::debug!(request_id = %id, route = %route.name, "background refresh stored nothing");
        }
    });
}

/// The cache key of a request: its host, its `path` (normalised), and its
/// query with percent-escapes in one spelling.
fn cache_key(path: &str, uri: &Uri, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut key = host;
    key.push_str(path);
    if let Some(query) = uri.query().filter(|q| !q.is_empty()) {
        key.push('?');
        key.push_str(&normalise(query));
    }
    key
}

/// A path or query with escapes of unreserved characters decoded and the
/// others in upper-case hex (RFC 3986 section 6.2.2), so `/a%7e` and `/a~`
/// are one entry.
pub(crate) fn normalise(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let byte = (hi * 16 + lo) as u8;
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                    out.push(byte as char);
                } else {
                    out.push('%');
                    out.push_str(&format!("{byte:02X}"));
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spell_escapes_one_way() {
        assert_eq!(normalise("/a%7e/b%2f%2Fc"), "/a~/b%2F%2Fc");
        assert_eq!(normalise("/100%"), "/100%");
        assert_eq!(normalise("/x%zz"), "/x%zz");
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("Example.COM"));
        let key = |uri: &str| {
            let uri: Uri = uri.parse().unwrap();
            cache_key(&normalise(uri.path()), &uri, &headers)
        };
        assert_eq!(key("/api/data?"), "example.com/api/data");
        assert_eq!(key("/api/%64ata?q=%7e"), "example.com/api/data?q=~");
        assert_ne!(key("/api/data?a=1&b=2"), key("/api/data?b=2&a=1"));
    }
}
