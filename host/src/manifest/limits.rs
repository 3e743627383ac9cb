//! Every limit the host enforces, declared once in [`LIMITS`]: its manifest
//! key, its unit, where it may be set and what happens when it is hit. The
//! defaults, each with its reason, are the `Default` impls of [`Limits`] (per
//! route) and [`ServerLimits`] (the whole server).
//!
//! The table drives parsing (`[server]` defaults, then each route's own
//! keys), the `edgehost routes` listing and the README's limits table (a
//! test renders it and compares).

pub(crate) use super::quantity::{size, Kind, Quantity};
use std::time::Duration;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Limits that apply to each route. The defaults are here; `[server]` may
/// change them for every route, and a route's own keys change them for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall time one request may spend in the guest; past it the instance is
    /// dropped and the client gets 504. 10 s bounds a stuck route while
    /// leaving far more than an API call needs.
    pub(crate) timeout: Duration,
    /// Time the guest may spend running on a host thread, checked at every
    /// epoch tick (waiting, such as for an outbound request or a sleep, does
    /// not count); past it, 500. `None`: only `timeout` bounds it. Workers
    /// gives 10 ms to 5 min of CPU, Fastly 50 ms.
    pub(crate) cpu_time: Option<Duration>,
    /// Linear memory of one instance. 128 MiB is what Workers, Fastly and
    /// Vercel give an isolate.
    pub(crate) memory: usize,
    /// Largest request body; larger is 413 without reading the rest.
    pub(crate) max_body: usize,
    /// Largest response body a guest may return; larger is 500 (a
    /// streamed one is cut off).
    pub(crate) max_response: usize,
    /// Largest part of a `multipart/form-data` body the host parses for
    /// the route; larger is 413 before the rest is read. `None`: only
    /// `max_body` bounds a part.
    pub(crate) max_part: Option<usize>,
    /// Time a route may work on after its answer was sent (`wait_until`
    /// in the SDK); past it the instance is stopped. 10 s, the route's
    /// default `timeout` again, finishes a log write or a cache fill.
    pub(crate) wait_until: Duration,
    /// Instances of the route running at once; past it, 503 with
    /// `Retry-After`, so one hot or stuck route cannot take every thread.
    pub(crate) max_concurrency: usize,
    /// Time for one outbound request to answer (its head); the route's
    /// `timeout` bounds everything the request does as well.
    pub(crate) outbound_timeout: Duration,
    /// Outbound requests one incoming request may make (Workers allows 50).
    pub(crate) max_outbound_requests: usize,
    /// Largest outbound response body a route may read.
    pub(crate) max_outbound_response: usize,
    /// Time one key-value operation may take (within `timeout`); past it
    /// the guest's call fails as unavailable. 2 s is long for a store on
    /// the local network and short enough that a stuck one answers 503, not
    /// a 504 when the route's whole time is gone.
    pub(crate) kv_timeout: Duration,
    /// Longest key-value key, in bytes (Workers KV allows 512).
    pub(crate) max_kv_key: usize,
    /// Largest key-value value, in bytes: the default request body, so a
    /// route can store what it was sent.
    pub(crate) max_kv_value: usize,
    /// Time one SQL query or batch may take (within `timeout`); past it the
    /// statement is cancelled and the guest's call fails as unavailable.
    /// 5 s is long for an API query and short enough to answer 503 before
    /// the route's whole time is gone.
    pub(crate) sql_timeout: Duration,
    /// Rows one query may return (D1 and most ORMs page far below this).
    pub(crate) max_sql_rows: usize,
    /// Bytes of values one query may return: the default response body, so
    /// a route can answer what it read.
    pub(crate) max_sql_result: usize,
    /// Longest SQL statement, in bytes (D1 allows 100 KB).
    pub(crate) max_sql_statement: usize,
    /// Parameters one statement may bind (D1 allows 100; a multi-row insert
    /// wants more).
    pub(crate) max_sql_params: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            cpu_time: None,
            memory: 128 * MIB,
            max_body: MIB,
            max_response: 16 * MIB,
            max_part: None,
            wait_until: Duration::from_secs(10),
            max_concurrency: 64,
            outbound_timeout: Duration::from_secs(10),
            max_outbound_requests: 50,
            max_outbound_response: 16 * MIB,
            kv_timeout: Duration::from_secs(2),
            max_kv_key: 512,
            max_kv_value: MIB,
            sql_timeout: Duration::from_secs(5),
            max_sql_rows: 10_000,
            max_sql_result: 16 * MIB,
            max_sql_statement: 100 * KIB,
            max_sql_params: 1000,
        }
    }
}

/// Limits of the whole server: on clients, and on instances of all routes
/// together. They belong to the process: a deploy cannot change them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Instances alive at once across all routes (the instance pool's
    /// size); past it a request gets 503, like a route at its concurrency.
    /// Each slot reserves address space, not memory.
    pub(crate) max_instances: usize,
    /// Time a client has to send a request head (slow-loris defence).
    pub(crate) header_timeout: Duration,
    /// Time a client has to send a whole request body; past it, 408.
    pub(crate) body_timeout: Duration,
    /// Largest request head in bytes; larger is 431. 64 KiB holds any sane
    /// set of headers and cookies (Cloudflare allows 128 KB in all).
    pub(crate) max_header_bytes: usize,
    /// Most header lines in one request; more is 431.
    pub(crate) max_headers: usize,
    /// On shutdown, how long in-flight requests may take to finish.
    pub(crate) drain_timeout: Duration,
    /// Client connections open at once; past it a new one gets a 503 and
    /// is closed. 768 stays under the usual limit of 1024 open files, with
    /// room for the host's own files and backend connections; a 2-core host
    /// serves its throughput over far fewer.
    pub(crate) max_connections: usize,
    /// Connections open at once from one client address: a browser opens
    /// 6, so 64 leaves room for a few users behind one NAT without letting
    /// one client hold every connection.
    pub(crate) max_connections_per_client: usize,
    /// How long a kept-alive connection may wait for its next request
    /// before it is closed (Node's and Apache's 5 s): idle connections
    /// count against `max_connections`.
    pub(crate) keep_alive_timeout: Duration,
    /// How long a client may accept none of its response's bytes before
    /// the connection is dropped, with the guest and its slot.
    pub(crate) write_timeout: Duration,
    /// Granularity of the clocks guests read (monotonic and wall), the
    /// timer defence Workers uses against timing side channels.
    pub(crate) clock_resolution: Duration,
    /// Time to compile one uploaded or changed component; past it the
    /// deploy is refused. A 13 MB JavaScript component takes 9 to 17 s on
    /// 2 cores.
    pub(crate) compile_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_instances: 1000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * KIB,
            max_headers: 100,
            drain_timeout: Duration::from_secs(30),
            max_connections: 768,
            max_connections_per_client: 64,
            keep_alive_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            clock_resolution: Duration::from_millis(1),
            compile_timeout: Duration::from_secs(60),
        }
    }
}

/// Where a limit may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// In `[server]` (the default for every route) and in a route's entry.
    Route,
    /// In `[server]` only.
    Server,
}

/// Where a limit's value lives.
#[derive(Clone, Copy)]
pub(crate) enum Field {
    Route {
        get: fn(&Limits) -> Option<u64>,
        set: fn(&mut Limits, u64),
    },
    Server {
        get: fn(&ServerLimits) -> u64,
        set: fn(&mut ServerLimits, u64),
    },
}

/// One row of the limits table.
pub(crate) struct LimitSpec {
    /// The manifest key.
    pub(crate) key: &'static str,
    pub(crate) kind: Kind,
    pub(crate) field: Field,
    /// What happens when it is hit (the README's words).
    pub(crate) when_hit: &'static str,
    /// Shown in the LIMITS column of `edgehost routes`.
    pub(crate) listed: bool,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn count(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Every limit, in the order the README lists them.
pub(crate) const LIMITS: [LimitSpec; 31] = [
    LimitSpec {
        key: "timeout",
        kind: Kind::Duration,
        field: Field::Route {
            get: |l| Some(millis(l.timeout)),
            set: |l, v| l.timeout = Duration::from_millis(v),
        },
        when_hit: "the guest is stopped (epoch interruption): 504",
        listed: true,
    },
    LimitSpec {
        key: "cpu_time",
        kind: Kind::Duration,
        field: Field::Route {
            get: |l| l.cpu_time.map(millis),
            set: |l, v| l.cpu_time = Some(Duration::from_millis(v)),
        },
        when_hit: "unset, `timeout` bounds it. Time the guest spends running on a host thread, checked at every 5 ms tick; waiting (an outbound request, a sleep, its turn after yielding) does not count. Past it the guest is stopped: 500 (like Workers' `cpu_ms`, Fastly's 50 ms of CPU)",
        listed: true,
    },
    LimitSpec {
        key: "memory",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| Some(l.memory as u64),
            set: |l, v| l.memory = count(v),
        },
        when_hit: "the instance's linear memories together cannot grow past it: the guest traps, 500",
        listed: true,
    },
    LimitSpec {
        key: "max_body",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| Some(l.max_body as u64),
            set: |l, v| l.max_body = count(v),
        },
        when_hit: "413, without reading the rest",
        listed: true,
    },
    LimitSpec {
        key: "max_response",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| Some(l.max_response as u64),
            set: |l, v| l.max_response = count(v),
        },
        when_hit: "500; a streamed answer is cut off there (the connection is closed without its last chunk) and the guest stopped",
        listed: false,
    },
    LimitSpec {
        key: "max_part",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| l.max_part.map(|v| v as u64),
            set: |l, v| l.max_part = Some(count(v)),
        },
        when_hit: "unset, `max_body` bounds it. One part of a `multipart/form-data` body the host parses for the route; a larger part stops the guest: 413 naming `max_part`, without reading the rest",
        listed: false,
    },
    LimitSpec {
        key: "wait_until",
        kind: Kind::Duration,
        field: Field::Route {
            get: |l| Some(millis(l.wait_until)),
            set: |l, v| l.wait_until = Duration::from_millis(v),
        },
        when_hit: "work a route goes on with after its answer was sent (`wait_until` in the SDK); past it the instance is stopped and the hit counted",
        listed: false,
    },
    LimitSpec {
        key: "max_concurrency",
        kind: Kind::Count,
        field: Field::Route {
            get: |l| Some(l.max_concurrency as u64),
            set: |l, v| l.max_concurrency = count(v),
        },
        when_hit: "requests of one route running at once, counting those still finishing on an earlier deployment; past it 503 with `Retry-After`",
        listed: true,
    },
    LimitSpec {
        key: "outbound_timeout",
        kind: Kind::Duration,
        field: Field::Route {
            get: |l| Some(millis(l.outbound_timeout)),
            set: |l, v| l.outbound_timeout = Duration::from_millis(v),
        },
        when_hit: "one outbound request without its response head (or stalled between bytes): the guest's fetch fails; the route's `timeout` still bounds the whole request (504)",
        listed: false,
    },
    LimitSpec {
        key: "max_outbound_requests",
        kind: Kind::Count,
        field: Field::Route {
            get: |l| Some(l.max_outbound_requests as u64),
            set: |l, v| l.max_outbound_requests = count(v),
        },
        when_hit: "outbound requests per incoming request; past it the guest's fetch is denied",
        listed: false,
    },
    LimitSpec {
        key: "max_outbound_response",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| Some(l.max_outbound_response as u64),
            set: |l, v| l.max_outbound_response = count(v),
        },
        when_hit: "an outbound response body larger than this fails in the guest",
        listed: false,
    },
    LimitSpec {
        key: "kv_timeout",
        kind: Kind::Duration,
        field: Field::Route {
            get: |l| Some(millis(l.kv_timeout)),
            set: |l, v| l.kv_timeout = Duration::from_millis(v),
        },
        when_hit: "one key-value operation (bounded by `timeout` too); past it the store counts as unavailable: the guest's call fails, 503 with the SDK",
        listed: false,
    },
    LimitSpec {
        key: "max_kv_key",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| Some(l.max_kv_key as u64),
            set: |l, v| l.max_kv_key = count(v),
        },
        when_hit: "a longer key is refused: the guest's call fails (`refused: ...`)",
        listed: false,
    },
    LimitSpec {
        key: "max_kv_value",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| Some(l.max_kv_value as u64),
            set: |l, v| l.max_kv_value = count(v),
        },
        when_hit: "a larger value is refused: the guest's call fails (`refused: ...`)",
        listed: false,
    },
    LimitSpec {
        key: "sql_timeout",
        kind: Kind::Duration,
        field: Field::Route {
            get: |l| Some(millis(l.sql_timeout)),
            set: |l, v| l.sql_timeout = Duration::from_millis(v),
        },
        when_hit: "one SQL query or batch (bounded by `timeout` too): the statement is cancelled (a batch rolled back) and the guest's call fails as unavailable, 503 with the SDK",
        listed: false,
    },
    LimitSpec {
        key: "max_sql_rows",
        kind: Kind::Count,
        field: Field::Route {
            get: |l| Some(l.max_sql_rows as u64),
            set: |l, v| l.max_sql_rows = count(v),
        },
        when_hit: "a query returning more rows is refused: the guest's call fails (`refused: ...`); a batch is rolled back",
        listed: false,
    },
    LimitSpec {
        key: "max_sql_result",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| Some(l.max_sql_result as u64),
            set: |l, v| l.max_sql_result = count(v),
        },
        when_hit: "a query returning more bytes of values is refused: the guest's call fails (`refused: ...`); a batch is rolled back",
        listed: false,
    },
    LimitSpec {
        key: "max_sql_statement",
        kind: Kind::Size,
        field: Field::Route {
            get: |l| Some(l.max_sql_statement as u64),
            set: |l, v| l.max_sql_statement = count(v),
        },
        when_hit: "a longer statement is refused before the database sees it",
        listed: false,
    },
    LimitSpec {
        key: "max_sql_params",
        kind: Kind::Count,
        field: Field::Route {
            get: |l| Some(l.max_sql_params as u64),
            set: |l, v| l.max_sql_params = count(v),
        },
        when_hit: "a statement with more parameters is refused before the database sees it",
        listed: false,
    },
    LimitSpec {
        key: "max_instances",
        kind: Kind::Count,
        field: Field::Server {
            get: |s| s.max_instances as u64,
            set: |s, v| s.max_instances = count(v),
        },
        when_hit: "instances alive at once across all routes; past it 503 with `Retry-After`",
        listed: false,
    },
    LimitSpec {
        key: "header_timeout",
        kind: Kind::Duration,
        field: Field::Server {
            get: |s| millis(s.header_timeout),
            set: |s, v| s.header_timeout = Duration::from_millis(v),
        },
        when_hit: "time to send the request head: 408, connection closed",
        listed: false,
    },
    LimitSpec {
        key: "body_timeout",
        kind: Kind::Duration,
        field: Field::Server {
            get: |s| millis(s.body_timeout),
            set: |s, v| s.body_timeout = Duration::from_millis(v),
        },
        when_hit: "time to send the body: 408",
        listed: false,
    },
    LimitSpec {
        key: "max_header_bytes",
        kind: Kind::Size,
        field: Field::Server {
            get: |s| s.max_header_bytes as u64,
            set: |s, v| s.max_header_bytes = count(v),
        },
        when_hit: "431",
        listed: false,
    },
    LimitSpec {
        key: "max_headers",
        kind: Kind::Count,
        field: Field::Server {
            get: |s| s.max_headers as u64,
            set: |s, v| s.max_headers = count(v),
        },
        when_hit: "431",
        listed: false,
    },
    LimitSpec {
        key: "drain_timeout",
        kind: Kind::Duration,
        field: Field::Server {
            get: |s| millis(s.drain_timeout),
            set: |s, v| s.drain_timeout = Duration::from_millis(v),
        },
        when_hit: "how long in-flight requests may finish on shutdown",
        listed: false,
    },
    LimitSpec {
        key: "max_connections",
        kind: Kind::Count,
        field: Field::Server {
            get: |s| s.max_connections as u64,
            set: |s, v| s.max_connections = count(v),
        },
        when_hit: "client connections open at once; past it a new one gets 503 (written without reading the request) and is closed",
        listed: false,
    },
    LimitSpec {
        key: "max_connections_per_client",
        kind: Kind::Count,
        field: Field::Server {
            get: |s| s.max_connections_per_client as u64,
            set: |s, v| s.max_connections_per_client = count(v),
        },
        when_hit: "connections open at once from one client (an IPv4 address, or an IPv6 /64); past it the same 503",
        listed: false,
    },
    LimitSpec {
        key: "keep_alive_timeout",
        kind: Kind::Duration,
        field: Field::Server {
            get: |s| millis(s.keep_alive_timeout),
            set: |s, v| s.keep_alive_timeout = Duration::from_millis(v),
        },
        when_hit: "an idle kept-alive connection waiting for its next request is closed",
        listed: false,
    },
    LimitSpec {
        key: "write_timeout",
        kind: Kind::Duration,
        field: Field::Server {
            get: |s| millis(s.write_timeout),
            set: |s, v| s.write_timeout = Duration::from_millis(v),
        },
        when_hit: "a client that accepts none of its response for this long is dropped; a guest still streaming to it is stopped",
        listed: false,
    },
    LimitSpec {
        key: "clock_resolution",
        kind: Kind::Duration,
        field: Field::Server {
            get: |s| millis(s.clock_resolution),
            set: |s, v| s.clock_resolution = Duration::from_millis(v),
        },
        when_hit: "guests read the monotonic and wall clocks rounded down to this step",
        listed: false,
    },
    LimitSpec {
        key: "compile_timeout",
        kind: Kind::Duration,
        field: Field::Server {
            get: |s| millis(s.compile_timeout),
            set: |s, v| s.compile_timeout = Duration::from_millis(v),
        },
        when_hit: "compiling one component of a deploy takes longer: the deploy is refused, and the current routes keep serving",
        listed: false,
    },
];

impl std::fmt::Debug for LimitSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "limit `{}`", self.key)
    }
}

impl LimitSpec {
    /// The limit a table of this scope may set under `key`.
    pub(crate) fn find(key: &str, scope: Scope) -> Option<&'static LimitSpec> {
        LIMITS
            .iter()
            .find(|spec| spec.key == key && (scope == Scope::Server || spec.scope() == scope))
    }

    pub(crate) fn scope(&self) -> Scope {
        match self.field {
            Field::Route { .. } => Scope::Route,
            Field::Server { .. } => Scope::Server,
        }
    }

    /// Sets this limit to `value` (in its kind's unit) in `route` or
    /// `server`, whichever holds it.
    pub(crate) fn set(&self, route: &mut Limits, server: &mut ServerLimits, value: u64) {
        match self.field {
            Field::Route { set, .. } => set(route, value),
            Field::Server { set, .. } => set(server, value),
        }
    }

    /// Its value in `route` or `server`, `None` when unset.
    pub(crate) fn get(&self, route: &Limits, server: &ServerLimits) -> Option<u64> {
        match self.field {
            Field::Route { get, .. } => get(route),
            Field::Server { get, .. } => Some(get(server)),
        }
    }

    /// `value` as the manifest would spell it: `"10s"`, `"64KiB"`, `64`.
    pub(crate) fn show(&self, value: u64) -> String {
        match self.kind {
            Kind::Duration if value.is_multiple_of(1000) => format!("{}s", value / 1000),
            Kind::Duration => format!("{value}ms"),
            Kind::Size => size(value),
            Kind::Count => value.to_string(),
        }
    }
}

/// The README's limits table, rendered from [`LIMITS`] and the defaults.
pub(crate) fn markdown_table() -> String {
    let (route, server) = (Limits::default(), ServerLimits::default());
    let mut table = String::from("| key | default | when it is hit |\n| --- | --- | --- |\n");
    for spec in &LIMITS {
        let key = match spec.scope() {
            Scope::Route => format!("`{}`", spec.key),
            Scope::Server => format!("`{}` (`[server]` only)", spec.key),
        };
        let default = match (spec.get(&route, &server), spec.kind) {
            (None, _) => "none".to_string(),
            (Some(value), Kind::Count) => format!("`{}`", spec.show(value)),
            (Some(value), _) => format!("`\"{}\"`", spec.show(value)),
        };
        table.push_str(&format!("| {key} | {default} | {} |\n", spec.when_hit));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README lists every limit with its default, as the table says.
    #[test]
    fn the_readme_limits_table_is_the_limits_table() {
        let readme = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
        )
        .unwrap();
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's limits table differs from host/src/manifest/limits.rs; it should read:\n\n{table}"
        );
    }

    /// Setting and reading back each limit goes to the field its key names.
    #[test]
    fn each_key_sets_and_reads_its_own_field() {
        for (i, spec) in LIMITS.iter().enumerate() {
            let (mut route, mut server) = (Limits::default(), ServerLimits::default());
            let value = 7_000 + i as u64;
            spec.set(&mut route, &mut server, value);
            assert_eq!(spec.get(&route, &server), Some(value), "{}", spec.key);
            let changed = usize::from(route != Limits::default())
                + usize::from(server != ServerLimits::default());
            assert_eq!(changed, 1, "{} changed one struct", spec.key);
            // No other key reads the changed value.
            for other in LIMITS.iter().filter(|o| o.key != spec.key) {
                assert_eq!(
                    other.get(&route, &server),
                    other.get(&Limits::default(), &ServerLimits::default()),
                    "{} moved {}",
                    spec.key,
                    other.key
                );
            }
        }
        let keys: std::collections::BTreeSet<_> = LIMITS.iter().map(|s| s.key).collect();
        assert_eq!(keys.len(), LIMITS.len(), "keys are unique");
    }

    #[test]
    fn values_show_as_the_manifest_writes_them() {
        let show = |key: &str, value: u64| LimitSpec::find(key, Scope::Server).unwrap().show(value);
        assert_eq!(show("timeout", 2000), "2s");
        assert_eq!(show("timeout", 1500), "1500ms");
        assert_eq!(show("memory", 64 << 20), "64MiB");
        assert_eq!(show("max_body", 2_000_000), "2000000B");
        assert_eq!(show("max_concurrency", 3), "3");
        for spec in &LIMITS {
            let written = match spec.kind {
                Kind::Count => Quantity::Number(4096),
                _ => Quantity::Text(spec.show(4096)),
            };
            assert_eq!(spec.kind.parse(&written), Ok(4096), "{}", spec.key);
        }
    }
}
