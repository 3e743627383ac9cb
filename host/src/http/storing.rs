//! Copying a guest's answer into the response cache: what of it an entry
//! keeps ([`Storing`]), the body that copies it on its way to the client,
//! reading a background refresh's answer whole, and renewing an entry the
//! route confirmed with a `304`.

use super::body::{BoxError, HostBody};
use crate::edge::freshness::{self, storable, vary_names, vary_value};
use crate::edge::{Entry, ResponseCache};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

/// A route's answers may tag themselves for purges; the client never sees it.
pub(crate) const CACHE_TAG: &str = "cache-tag";

/// A stored answer the route confirmed with a `304`: its headers updated
/// from the `304`'s, fresh again from now; `None` if it may no longer be kept.
pub(crate) fn renewed(entry: &Entry, confirmed: &HeaderMap, request: &HeaderMap) -> Option<Entry> {
    let mut headers = entry.headers.clone();
    for name in confirmed.keys() {
        if name == header::CONTENT_LENGTH || name.as_str() == CACHE_TAG {
            continue;
        }
        headers.remove(name);
        for value in confirmed.get_all(name) {
            headers.append(name, value.clone());
        }
    }
    let fresh = storable(entry.status, request, &headers, SystemTime::now()).ok()?;
    headers.remove(header::AGE);
    Some(Entry::new(
        entry.status,
        headers,
        entry.body.clone(),
        Instant::now(),
        fresh,
        entry.vary.clone(),
        entry.tags.clone(),
        entry.path.clone(),
        entry.route,
    ))
}

/// What of a storable answer goes into an entry: its headers as a cache
/// sends them, the request's `Vary` values, its tags, its freshness. `None`
/// when a shared cache may not keep it.
struct Storing {
    status: StatusCode,
    headers: HeaderMap,
    freshness: freshness::Freshness,
    vary: Vec<(String, Option<String>)>,
    tags: Vec<String>,
}

impl Storing {
    fn of(status: StatusCode, response: &HeaderMap, request: &HeaderMap) -> Option<Storing> {
        let freshness = storable(status, request, response, SystemTime::now()).ok()?;
        let vary = vary_names(response)?
            .into_iter()
            .map(|name| {
                let value = vary_value(request, &name);
                (name, value)
            })
            .collect();
        let tags = response
            .get_all(CACHE_TAG)
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split([',', ' '])
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut headers = response.clone();
        // Never one client's cookie to another; the rest is the host's to set.
        for name in [
            header::SET_COOKIE,
            header::CONTENT_LENGTH,
            header::AGE,
            HeaderName::from_static(CACHE_TAG),
        ] {
            headers.remove(name);
        }
        Some(Storing {
            status,
            headers,
            freshness,
            vary,
            tags,
        })
    }

    fn into_entry(self, body: Bytes, path: String, route: u64) -> Entry {
        Entry::new(
            self.status,
            self.headers,
            body,
            Instant::now(),
            self.freshness,
            self.vary,
            self.tags,
            path,
            route,
        )
    }
}

/// The guest's answer, its body copied into the cache as it goes to the
/// client when a shared cache may keep it and its length is known and
/// within `max_entry_size`.
pub(crate) fn store_on_the_way_out(
    cache: &Arc<ResponseCache>,
    key: String,
    path: String,
    route: u64,
    request: &HeaderMap,
    response: Response<HostBody>,
) -> Response<HostBody> {
    let Some(length) = response.body().size_hint().exact() else {
        return response;
    };
    let Some(storing) = Storing::of(response.status(), response.headers(), request) else {
        return response;
    };
    if length > cache.settings.max_entry_size {
        cache.metrics.count_too_large();
        return response;
    }
    if length == 0 {
        // Nothing to copy (and hyper may never poll an empty body).
        cache.insert(&key, storing.into_entry(Bytes::new(), path, route));
        return response;
    }
    response.map(|inner| {
        StoringBody {
            inner,
            collected: BytesMut::new(),
            length,
            pending: Some(Pending {
                cache: Arc::clone(cache),
                key,
                path,
                route,
                storing,
            }),
        }
        .boxed_unsync()
    })
}

/// Where a body being copied goes once it ends.
struct Pending {
    cache: Arc<ResponseCache>,
    key: String,
    path: String,
    route: u64,
    storing: Storing,
}

/// A body passed through to the client and copied; stored once its last
/// byte has come (hyper stops polling a body of known length there), dropped
/// on an error, trailers or more bytes than it declared.
struct StoringBody {
    inner: HostBody,
    collected: BytesMut,
    /// The length it declared.
    length: u64,
    pending: Option<Pending>,
}

impl StoringBody {
    fn store(&mut self) {
        if let Some(pending) = self.pending.take() {
            let body = std::mem::take(&mut self.collected).freeze();
            let entry = pending
                .storing
                .into_entry(body, pending.path, pending.route);
            pending.cache.insert(&pending.key, entry);
        }
    }
}

impl Body for StoringBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) if this.pending.is_some() => {
                    if (this.collected.len() + data.len()) as u64 > this.length {
                        this.pending = None;
                    } else {
                        this.collected.extend_from_slice(data);
                        if this.collected.len() as u64 == this.length {
                            this.store();
                        }
                    }
                }
                Some(_) => {}
                None => this.pending = None,
            },
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.pending = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a whole answer within `max_entry_size` and stores it if it may be
/// kept; whether it was.
pub(crate) async fn store_whole(
    cache: &ResponseCache,
    key: &str,
    path: &str,
    route: u64,
    request: &HeaderMap,
    response: Response<HostBody>,
) -> bool {
    let (parts, mut body) = response.into_parts();
    let Some(storing) = Storing::of(parts.status, &parts.headers, request) else {
        return false;
    };
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(Ok(data)) = frame.map(Frame::into_data) else {
            // An error, or trailers (which are not stored).
            return false;
        };
        if (collected.len() + data.len()) as u64 > cache.settings.max_entry_size {
            return false;
        }
        collected.extend_from_slice(&data);
    }
    cache.insert(
        key,
        storing.into_entry(collected.freeze(), path.to_string(), route),
    );
    true
}
