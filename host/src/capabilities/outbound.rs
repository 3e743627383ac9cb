//! Outbound HTTP (`wasi:http/outgoing-handler`): a route reaches only the
//! origins its manifest entry lists in `allowed_outbound_hosts`, within its
//! outbound limits. A refused request fails in the guest with
//! `HTTP-request-denied` before any connection is made, and is logged.

pub(crate) use super::allowed_host::AllowedHost;
use super::destinations;
use super::pool::{Origin, OutboundPool, Timeouts};
use http::uri::Scheme;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// What one route may send, from its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct OutboundPolicy {
    /// Empty: no outbound network at all.
    pub(crate) allowed: Vec<AllowedHost>,
    /// Time for one outbound request, from sending to the last byte of its
    /// response head (the route's `timeout` bounds the whole request too).
    pub(crate) timeout: Duration,
    /// Outbound requests one incoming request may make.
    pub(crate) max_requests: usize,
    /// Largest outbound response body; larger fails in the guest.
    pub(crate) max_response: usize,
    /// Allowed names may resolve to non-public addresses.
    pub(crate) allow_private_networks: bool,
}

impl OutboundPolicy {
    /// Why `uri` may not be fetched, if it may not.
    #[cfg(test)]
    fn refusal(&self, uri: &http::Uri) -> Option<String> {
        self.target(uri).err()
    }

    /// Where `uri` goes if the allow-list lets it: its host, port, and
    /// whether an entry names that host exactly (not by a wildcard).
    fn target(&self, uri: &http::Uri) -> Result<Target, String> {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return Err("only http and https URLs can be fetched".into()),
        };
        let Some(host) = uri.host() else {
            return Err("the URL has no host".into());
        };
        // A fully qualified name (`api.example.com.`) is the same host.
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut matching = self
            .allowed
            .iter()
            .filter(|a| a.allows(https, &host, port))
            .peekable();
        if matching.peek().is_some() {
            let exact = matching.any(|a| !a.is_wildcard());
            return Ok(Target {
                https,
                host,
                port,
                exact,
            });
        }
        let scheme = if https { "https" } else { "http" };
        Err(if self.allowed.is_empty() {
            format!(
                "{scheme}://{host}:{port} is not allowed: the route has no allowed_outbound_hosts"
            )
        } else {
            format!("{scheme}://{host}:{port} is not in the route's allowed_outbound_hosts")
        })
    }
}

/// An allowed destination, before its name is resolved.
struct Target {
    https: bool,
    /// Lower case, without a trailing dot; an IPv6 literal keeps its brackets.
    host: String,
    port: u16,
    /// An allow-list entry names `host` itself, not by a wildcard.
    exact: bool,
}

/// The per-request side of outbound HTTP: the policy, and what was used.
pub(crate) struct OutboundHooks {
    policy: Arc<OutboundPolicy>,
    /// The host's kept connections.
    pool: Arc<OutboundPool>,
    route: Arc<str>,
    request_id: Arc<str>,
    sent: usize,
}

impl OutboundHooks {
    pub(crate) fn new(
        policy: Arc<OutboundPolicy>,
        pool: Arc<OutboundPool>,
        route: Arc<str>,
        request_id: Arc<str>,
    ) -> Self {
        OutboundHooks {
            policy,
            pool,
            route,
            request_id,
            sent: 0,
        }
    }

    fn refuse(&self, uri: &http::Uri, reason: &str) {
        log_refusal(&self.route, &self.request_id, uri, reason);
    }
}

/// The log line of a refused outbound request, made before or after its
/// name was resolved.
fn log_refusal(route: &str, request_id: &str, uri: &http::Uri, reason: &str) {
    tracing::warn!(
        target: "guest",
        route = %route,
        request_id = %request_id,
        "outbound request to {uri} refused: {reason}"
    );
}

type SendResult = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
    ) -> SendResult {
        drop(fut);
        let uri = request.uri().clone();
        // Every attempt counts, refused or not: a guest looping on a refused
        // URL gets max_outbound_requests log lines, not one per iteration.
        if self.sent >= self.policy.max_requests {
            if self.sent == self.policy.max_requests {
                let reason = format!(
                    "the route already made its {} outbound requests (max_outbound_requests); further ones are refused without a log line",
                    self.policy.max_requests
                );
                self.refuse(&uri, &reason);
            }
            self.sent = self.sent.saturating_add(1);
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        self.sent += 1;
        let target = match self.policy.target(&uri) {
            Ok(target) => target,
            Err(reason) => {
                self.refuse(&uri, &reason);
                return Box::new(async { Err(Error::HttpRequestDenied) });
            }
        };
        let timeout = self.policy.timeout;
        let max_response = self.policy.max_response;
        let allow_private = self.policy.allow_private_networks;
        let options = RequestOptions {
            connect_timeout: capped(options.and_then(|o| o.connect_timeout), timeout),
            first_byte_timeout: capped(options.and_then(|o| o.first_byte_timeout), timeout),
            between_bytes_timeout: capped(options.and_then(|o| o.between_bytes_timeout), timeout),
        };
        let (route, request_id) = (Arc::clone(&self.route), Arc::clone(&self.request_id));
        let pool = Arc::clone(&self.pool);
        Box::new(async move {
            let send = async {
                let at =
                    destinations::resolve(&target.host, target.port, allow_private, target.exact)
                        .await
                        .map_err(|reason| {
                            log_refusal(&route, &request_id, &uri, &reason);
                            Error::HttpRequestDenied
                        })?;
                // The connection goes to the address just checked, so a
                // second lookup cannot point it elsewhere; the Host header
                // (and for HTTPS the certificate's name) keeps the name.
                let origin = Origin {
                    https: target.https,
                    addr: at,
                    name: target.host,
                };
                let timeouts = Timeouts {
                    connect: options.connect_timeout.unwrap_or(timeout),
                    first_byte: options.first_byte_timeout.unwrap_or(timeout),
                    between_bytes: options.between_bytes_timeout.unwrap_or(timeout),
                };
                let response = pool.send(origin, request, timeouts).await?;
                // The pool drives each connection in a task of its own.
                let io = async { Ok::<(), Error>(()) };
                Ok::<_, Error>((response, io))
            };
            let (response, io) = match tokio::time::timeout(timeout, send).await {
                Ok(result) => result?,
                Err(_) => return Err(Error::ConnectionTimeout),
            };
            let response = response.map(|body| {
                http_body_util::Limited::new(body, max_response)
                    .map_err(move |err| match err.downcast::<Error>() {
                        Ok(err) => *err,
                        Err(_) => Error::HttpResponseBodySize(Some(max_response as u64)),
                    })
                    .boxed_unsync()
            });
            Ok((
                response,
                Box::new(io) as Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}

/// A guest's own timeout for one step of a request, within the route's
/// `outbound_timeout`. Zero, which HTTP libraries often use for "no
/// timeout", is the route's.
fn capped(asked: Option<Duration>, timeout: Duration) -> Option<Duration> {
    Some(match asked {
        Some(asked) if !asked.is_zero() => asked.min(timeout),
        _ => timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> OutboundPolicy {
        OutboundPolicy {
            allowed: allowed
                .iter()
                .map(|a| AllowedHost::parse(a).unwrap())
                .collect(),
            timeout: Duration::from_secs(1),
            max_requests: 1,
            max_response: 1,
            allow_private_networks: false,
        }
    }

    /// A guest asks for shorter timeouts, never longer ones; zero is the
    /// route's own.
    #[test]
    fn guest_timeouts_are_capped_and_zero_is_the_routes() {
        let route = Duration::from_secs(10);
        assert_eq!(capped(None, route), Some(route));
        assert_eq!(capped(Some(Duration::ZERO), route), Some(route));
        assert_eq!(capped(Some(Duration::from_secs(60)), route), Some(route));
        let short = Duration::from_millis(5);
        assert_eq!(capped(Some(short), route), Some(short));
    }

    #[test]
    fn allowed_hosts_match_scheme_host_and_port() {
        let p = policy(&[
            "https://api.example.com",
            "http://127.0.0.1:8080",
            "https://*.cdn.example.com",
            "http://any-port.test:*",
            "https://fqdn.test.",
        ]);
        for (uri, allowed) in [
            ("https://api.example.com/v1", true),
            ("https://API.example.com:443/v1", true),
            ("http://api.example.com/v1", false),
            ("https://api.example.com:8443/", false),
            ("https://evil.com/?https://api.example.com", false),
            ("https://api.example.com.evil.com/", false),
            ("https://api.example.com./v1", true),
            ("https://api.example.com../v1", false),
            ("https://a.cdn.example.com./", true),
            ("http://127.0.0.1:8080/x", true),
            ("http://127.0.0.1:8081/x", false),
            ("http://127.0.0.1/x", false),
            ("https://a.cdn.example.com/", true),
            ("https://a.b.cdn.example.com/", true),
            ("https://cdn.example.com/", false),
            ("https://xcdn.example.com/", false),
            ("http://any-port.test:1234/", true),
            ("https://fqdn.test/", true),
            ("https://fqdn.test./", true),
            ("ftp://api.example.com/", false),
        ] {
            let uri: http::Uri = uri.parse().unwrap();
            assert_eq!(p.refusal(&uri).is_none(), allowed, "{uri}");
        }
        assert!(policy(&[])
            .refusal(&"https://a.com/".parse().unwrap())
            .unwrap()
            .contains("no allowed_outbound_hosts"));
    }
}
