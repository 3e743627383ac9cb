//! Counters the host keeps and renders in the Prometheus text format for the
//! admin API's `GET /metrics`.
//!
//! Each route's counters live in a [`RouteMetrics`] looked up by pattern when
//! a route table is loaded, never per request: a request only adds to
//! atomics. A route keeps its counters across deploys that keep its pattern.
//! Each key-value store's are in a [`KvMetrics`] (`kv.rs`), each SQL
//! database's in a [`SqlMetrics`] (`sql.rs`); latencies go to
//! a [`Histogram`] of atomics (`histogram.rs`).

mod cache;
mod connections;
mod histogram;
mod kv;
mod sql;

use crate::wit::Method;
pub(crate) use cache::{CacheMetrics, Lookup};
pub(crate) use connections::{ConnectionMetrics, Refusal};
use histogram::{Histogram, REQUEST_BUCKETS};
pub(crate) use kv::{KvMetrics, KvOp, KvResult};
pub(crate) use sql::{SqlMetrics, SqlOp, SqlResult};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Methods counted apart; anything else counts as `OTHER`.
const METHODS: usize = Method::ALL.len() + 1;
/// Status classes 1xx to 5xx.
const CLASSES: usize = 5;

/// Something that went wrong in a route, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// The guest trapped or panicked.
    Trap,
    /// The guest returned a response the host cannot send.
    InvalidResponse,
    /// The instance could not be set up.
    Instantiate,
    /// Limits hit, by the manifest key that set them.
    Timeout,
    CpuTime,
    Memory,
    MaxBody,
    MaxPart,
    MaxResponse,
    WaitUntil,
    BodyTimeout,
    MaxConcurrency,
    MaxInstances,
    RateLimit,
}

impl Event {
    const ALL: [Event; 14] = [
        Event::Trap,
        Event::InvalidResponse,
        Event::Instantiate,
        Event::Timeout,
        Event::CpuTime,
        Event::Memory,
        Event::MaxBody,
        Event::MaxPart,
        Event::MaxResponse,
        Event::WaitUntil,
        Event::BodyTimeout,
        Event::MaxConcurrency,
        Event::MaxInstances,
        Event::RateLimit,
    ];

    /// The metric family and `kind` label this event is counted under.
    fn family_and_kind(self) -> (&'static str, &'static str) {
        match self {
            Event::Trap => ("edgehost_guest_errors_total", "trap"),
            Event::InvalidResponse => ("edgehost_guest_errors_total", "invalid_response"),
            Event::Instantiate => ("edgehost_guest_errors_total", "instantiate"),
            Event::Timeout => ("edgehost_limit_hits_total", "timeout"),
            Event::CpuTime => ("edgehost_limit_hits_total", "cpu_time"),
            Event::Memory => ("edgehost_limit_hits_total", "memory"),
            Event::MaxBody => ("edgehost_limit_hits_total", "max_body"),
            Event::MaxPart => ("edgehost_limit_hits_total", "max_part"),
            Event::MaxResponse => ("edgehost_limit_hits_total", "max_response"),
            Event::WaitUntil => ("edgehost_limit_hits_total", "wait_until"),
            Event::BodyTimeout => ("edgehost_limit_hits_total", "body_timeout"),
            Event::MaxConcurrency => ("edgehost_limit_hits_total", "max_concurrency"),
            Event::MaxInstances => ("edgehost_limit_hits_total", "max_instances"),
            Event::RateLimit => ("edgehost_limit_hits_total", "rate_limit"),
        }
    }
}

impl Event {
    /// The manifest key of the limit this event is a hit of, if it is one:
    /// what an answer the host gives because of it names.
    pub(crate) fn limit_name(self) -> Option<&'static str> {
        match self.family_and_kind() {
            ("edgehost_limit_hits_total", kind) => Some(kind),
            _ => None,
        }
    }
}

/// One route's counters.
pub(crate) struct RouteMetrics {
    requests: [[AtomicU64; CLASSES]; METHODS],
    latency: Histogram,
    running: AtomicI64,
    events: [AtomicU64; Event::ALL.len()],
}

impl Default for RouteMetrics {
    fn default() -> Self {
        RouteMetrics {
            requests: Default::default(),
            latency: Histogram::new(REQUEST_BUCKETS),
            running: AtomicI64::new(0),
            events: Default::default(),
        }
    }
}

impl RouteMetrics {
    /// Counts one answered request.
    pub(crate) fn record(&self, method: &http::Method, status: u16, elapsed: Duration) {
        let method = Method::from_http(method).map_or(METHODS - 1, |m| m as usize);
        let class = usize::from(status / 100).clamp(1, CLASSES) - 1;
        self.requests[method][class].fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
    }

    pub(crate) fn count(&self, event: Event) {
        self.events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Marks an instance running until the guard drops, unless `limit`
    /// instances of this route are running already. The count belongs to the
    /// route's pattern, not to a deployment: requests still running on an
    /// older deployment count against the new one's limit.
    pub(crate) fn try_start(self: &Arc<Self>, limit: usize) -> Option<RunningGuard> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |running| {
                (running < limit).then_some(running + 1)
            })
            .ok()?;
        Some(RunningGuard(Arc::clone(self)))
    }
}

/// Holds one count in `edgehost_instances_running`.
pub(crate) struct RunningGuard(Arc<RouteMetrics>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every counter of one host.
pub(crate) struct Metrics {
    routes: Mutex<BTreeMap<Arc<str>, Arc<RouteMetrics>>>,
    /// Requests that matched no route (404, or a path that does not decode).
    pub(crate) unmatched: Arc<RouteMetrics>,
    deploys_ok: AtomicU64,
    deploys_rejected: AtomicU64,
    rollbacks: AtomicU64,
    deployment: Mutex<String>,
    /// Key-value stores' counters, by store name.
    kv: Mutex<BTreeMap<Arc<str>, Arc<KvMetrics>>>,
    /// SQL databases' counters, by database name.
    sql: Mutex<BTreeMap<Arc<str>, Arc<SqlMetrics>>>,
    /// The public listener's connections.
    pub(crate) connections: Arc<ConnectionMetrics>,
    /// The response cache.
    pub(crate) cache: Arc<CacheMetrics>,
    /// Outbound HTTP connections opened, and requests sent on a kept one.
    pub(crate) outbound_opened: AtomicU64,
    pub(crate) outbound_reused: AtomicU64,
}

/// The `route` label of requests that matched no route.
const UNMATCHED: &str = "(none)";

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            routes: Mutex::default(),
            unmatched: Arc::default(),
            deploys_ok: AtomicU64::new(0),
            deploys_rejected: AtomicU64::new(0),
            rollbacks: AtomicU64::new(0),
            deployment: Mutex::default(),
            kv: Mutex::default(),
            sql: Mutex::default(),
            connections: Arc::default(),
            cache: Arc::default(),
            outbound_opened: AtomicU64::new(0),
            outbound_reused: AtomicU64::new(0),
        }
    }
}

/// How a deployment became current.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// The table the host started with: not counted as a deploy.
    Start,
    /// A deploy through the admin API or a `--watch` reload.
    Deploy,
    Rollback,
}

impl Metrics {
    /// The counters of the route with this pattern, created on first use.
    pub(crate) fn route(&self, pattern: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(routes.entry(Arc::from(pattern)).or_default())
    }

    /// The counters of the key-value store `name` (on a `kind` backend),
    /// created on first use.
    pub(crate) fn kv_store(&self, name: &str, kind: &'static str) -> Arc<KvMetrics> {
        let mut stores = self.kv.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            stores
                .entry(Arc::from(name))
                .or_insert_with(|| Arc::new(KvMetrics::new(kind))),
        )
    }

    /// The counters of the SQL database `name` (on a `kind` backend),
    /// created on first use.
    pub(crate) fn sql_database(&self, name: &str, kind: &'static str) -> Arc<SqlMetrics> {
        let mut databases = self.sql.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            databases
                .entry(Arc::from(name))
                .or_insert_with(|| Arc::new(SqlMetrics::new(kind))),
        )
    }

    /// A deployment became current.
    pub(crate) fn deployed(&self, id: &str, how: Activation) {
        match how {
            Activation::Start => {}
            Activation::Deploy => {
                self.deploys_ok.fetch_add(1, Ordering::Relaxed);
            }
            Activation::Rollback => {
                self.rollbacks.fetch_add(1, Ordering::Relaxed);
            }
        }
        *self.deployment.lock().unwrap_or_else(|p| p.into_inner()) = id.to_string();
    }

    /// A deploy or reload was refused and changed nothing.
    pub(crate) fn deploy_rejected(&self) {
        self.deploys_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Everything, in the Prometheus text exposition format (0.0.4).
    pub(crate) fn render(&self) -> String {
        let mut routes: Vec<(String, Arc<RouteMetrics>)> = self
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, metrics)| (escape(name), Arc::clone(metrics)))
            .collect();
        routes.push((UNMATCHED.to_string(), Arc::clone(&self.unmatched)));
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);

        header(
            &mut out,
            "edgehost_requests_total",
            "counter",
            "Requests answered, by route, method and status class.",
        );
        for (route, m) in &routes {
            for (method, counts) in m.requests.iter().enumerate() {
                let method = Method::ALL.get(method).map_or("OTHER", |m| m.as_str());
                for (class, count) in counts.iter().enumerate() {
                    let count = load(count);
                    if count > 0 {
                        let _ = writeln!(
                            out,
                            "edgehost_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{}xx\"}} {count}",
                            class + 1
                        );
                    }
                }
            }
        }

        header(
            &mut out,
            "edgehost_request_duration_seconds",
            "histogram",
            "Time from reading a request's head to having its response, by route.",
        );
        for (route, m) in &routes {
            m.latency.render(
                &mut out,
                "edgehost_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }

        header(
            &mut out,
            "edgehost_instances_running",
            "gauge",
            "Guest instances running now, by route.",
        );
        // Unmatched requests run no guest: they have only the two families above.
        let routes = &routes[..routes.len() - 1];
        for (route, m) in routes {
            let _ = writeln!(
                out,
                "edgehost_instances_running{{route=\"{route}\"}} {}",
                m.running.load(Ordering::Relaxed)
            );
        }

        for (family, help) in [
            (
                "edgehost_guest_errors_total",
                "Requests a guest failed (trap, invalid response, instantiation), by route and kind.",
            ),
            (
                "edgehost_limit_hits_total",
                "Requests stopped by a limit, by route and the limit's manifest key.",
            ),
        ] {
            header(&mut out, family, "counter", help);
            for (route, m) in routes {
                for event in Event::ALL {
                    let (event_family, kind) = event.family_and_kind();
                    if event_family == family {
                        let _ = writeln!(
                            out,
                            "{family}{{route=\"{route}\",kind=\"{kind}\"}} {}",
                            load(&m.events[event as usize])
                        );
                    }
                }
            }
        }

        self.connections.render(&mut out);
        self.cache.render(&mut out);
        header(
            &mut out,
            "edgehost_outbound_connections_total",
            "counter",
            "Outbound HTTP requests by connection: a new one opened, or a kept one reused.",
        );
        for (result, count) in [
            ("opened", &self.outbound_opened),
            ("reused", &self.outbound_reused),
        ] {
            let _ = writeln!(
                out,
                "edgehost_outbound_connections_total{{result=\"{result}\"}} {}",
                load(count)
            );
        }

        header(
            &mut out,
            "edgehost_deploys_total",
            "counter",
            "Deploys and reloads, by result (a rejected one changed nothing).",
        );
        let _ = writeln!(
            out,
            "edgehost_deploys_total{{result=\"ok\"}} {}",
            load(&self.deploys_ok)
        );
        let _ = writeln!(
            out,
            "edgehost_deploys_total{{result=\"rejected\"}} {}",
            load(&self.deploys_rejected)
        );
        header(
            &mut out,
            "edgehost_rollbacks_total",
            "counter",
            "Rollbacks to an earlier deployment.",
        );
        let _ = writeln!(out, "edgehost_rollbacks_total {}", load(&self.rollbacks));
        header(
            &mut out,
            "edgehost_deployment_info",
            "gauge",
            "The deployment being served (its id is the label).",
        );
        let id = escape(&self.deployment.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = writeln!(out, "edgehost_deployment_info{{id=\"{id}\"}} 1");
        let stores: Vec<(String, Arc<KvMetrics>)> = self
            .kv
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, metrics)| (escape(name), Arc::clone(metrics)))
            .collect();
        kv::render(&mut out, &stores);
        let databases: Vec<(String, Arc<SqlMetrics>)> = self
            .sql
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, metrics)| (escape(name), Arc::clone(metrics)))
            .collect();
        sql::render(&mut out, &databases);
        out
    }
}

pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_buckets_and_escaped_labels() {
        let metrics = Metrics::default();
        let route = metrics.route("/api/\"x\"/$id");
        route.record(&http::Method::GET, 200, Duration::from_micros(300));
        route.record(&http::Method::GET, 204, Duration::from_millis(2));
        route.record(
            &http::Method::from_bytes(b"PURGE").unwrap(),
            503,
            Duration::from_secs(9),
        );
        route.count(Event::Timeout);
        metrics.deployed("7", Activation::Deploy);
        metrics.deploy_rejected();
        let text = metrics.render();
        let label = r#"route="/api/\"x\"/$id""#;
        for line in [
            format!(r#"edgehost_requests_total{{{label},method="GET",status="2xx"}} 2"#),
            format!(r#"edgehost_requests_total{{{label},method="OTHER",status="5xx"}} 1"#),
            format!(r#"edgehost_request_duration_seconds_bucket{{{label},le="0.0005"}} 1"#),
            format!(r#"edgehost_request_duration_seconds_bucket{{{label},le="0.0025"}} 2"#),
            format!(r#"edgehost_request_duration_seconds_bucket{{{label},le="5"}} 2"#),
            format!(r#"edgehost_request_duration_seconds_bucket{{{label},le="+Inf"}} 3"#),
            format!(r#"edgehost_request_duration_seconds_count{{{label}}} 3"#),
            format!(r#"edgehost_limit_hits_total{{{label},kind="timeout"}} 1"#),
            format!(r#"edgehost_guest_errors_total{{{label},kind="trap"}} 0"#),
            r#"edgehost_deploys_total{result="ok"} 1"#.to_string(),
            r#"edgehost_deploys_total{result="rejected"} 1"#.to_string(),
            r#"edgehost_deployment_info{id="7"} 1"#.to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line}:\n{text}");
        }
        // The same pattern gets the same counters (they survive a deploy).
        assert!(Arc::ptr_eq(&route, &metrics.route("/api/\"x\"/$id")));
    }

    #[test]
    fn running_gauge_follows_guards_and_caps_at_the_limit() {
        let metrics = Metrics::default();
        let route = metrics.route("/r");
        let first = route.try_start(2).unwrap();
        let second = route.try_start(2).unwrap();
        assert!(route.try_start(2).is_none(), "a third past a limit of 2");
        drop(first);
        assert!(metrics
            .render()
            .contains("edgehost_instances_running{route=\"/r\"} 1\n"));
        // A lower limit (a new deployment's) counts the one still running.
        assert!(metrics.route("/r").try_start(1).is_none());
        drop(second);
        assert!(metrics
            .render()
            .contains("edgehost_instances_running{route=\"/r\"} 0\n"));
        assert!(route.try_start(1).is_some());
    }
}
