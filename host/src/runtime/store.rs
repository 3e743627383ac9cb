//! One request's store: the state a guest's imports work on (its WASI
//! context, built lazily, its key-value grants and outbound policy, its
//! resource table), the memory limiter, and the epoch deadline that enforces
//! its time limits.

use super::body::Bodies;
use super::cpu::{CpuMeter, CpuTimeExceeded};
use crate::capabilities::clocks::{CoarseMonotonicClock, CoarseWallClock};
use crate::capabilities::kv::{KvAccess, KvView};
use crate::capabilities::outbound::{OutboundHooks, OutboundPolicy};
use crate::capabilities::pool::OutboundPool;
use crate::capabilities::sql::{SqlAccess, SqlView};
use crate::capabilities::stdio::{GuestLog, Stream};
use crate::wit::bindings::edge::route::types;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Resources (streams, pollables, HTTP fields...) one request's guest may
/// hold at once in the host's table (wasmtime's default is a million).
const MAX_GUEST_RESOURCES: usize = 10_000;

/// Bytes of one set of HTTP headers a guest may build (in memory form).
const MAX_FIELDS_BYTES: usize = 128 * 1024;

/// Bytes one `get-random-bytes` call may ask for; more traps.
const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// A route is one component: a handful of instances, tables and memories,
/// never thousands.
const MAX_INSTANCES_PER_STORE: usize = 64;
const MAX_TABLES_PER_STORE: usize = 64;
const MAX_MEMORIES_PER_STORE: usize = 4;

/// What every store of one route is made with, resolved when it loads.
pub(crate) struct Grants {
    /// The route's pattern, for its log lines.
    pub(crate) route: Arc<str>,
    /// The environment it sees.
    pub(crate) env: Arc<[(String, String)]>,
    pub(crate) kv: KvAccess,
    pub(crate) sql: SqlAccess,
    /// Where it may send HTTP requests.
    pub(crate) outbound: Arc<OutboundPolicy>,
    /// The host's kept outbound connections.
    pub(crate) pool: Arc<OutboundPool>,
    /// Its linear memories' limit, all together.
    pub(crate) memory: usize,
    pub(crate) cpu_time: Option<Duration>,
    /// The step of the clocks it reads (`clock_resolution`).
    pub(crate) clock: Duration,
}

/// The per-request state a guest's imports work on.
pub(crate) struct HostState {
    wasi: LazyWasi,
    table: ResourceTable,
    kv: KvAccess,
    sql: SqlAccess,
    pub(super) limits: Limiter,
    /// The guest's CPU clock and its `cpu_time`, when the route has one.
    cpu: Option<(Arc<CpuMeter>, Duration)>,
    http: WasiHttpCtx,
    outbound: OutboundHooks,
    /// An SDK route's answer sent before its method returns, and the
    /// request body of a route that streams it.
    pub(super) bodies: Bodies,
}

impl HostState {
    /// What the key-value import works on.
    pub(crate) fn kv(&mut self) -> KvView<'_> {
        KvView::new(&mut self.table, &self.kv)
    }

    /// What the body imports work on.
    pub(crate) fn bodies(&mut self) -> &mut Bodies {
        &mut self.bodies
    }

    /// What Spin's imports work on.
    pub(crate) fn spin(&mut self) -> crate::capabilities::spin::SpinView<'_> {
        crate::capabilities::spin::SpinView {
            table: &mut self.table,
            kv: &self.kv,
            sql: &self.sql,
            env: &self.wasi.env,
        }
    }

    /// What the SQL import works on.
    pub(crate) fn sql(&mut self) -> SqlView<'_> {
        SqlView::new(&mut self.table, &self.sql)
    }
}

/// The store's limits, noting when a memory grow was refused so that the
/// trap that usually follows is reported as the memory limit it is.
pub(super) struct Limiter {
    limits: StoreLimits,
    pub(super) memory_refused: bool,
    /// The route's `memory`: for all of the instance's linear memories
    /// together (wasmtime's own limit is per memory).
    pub(super) memory_limit: usize,
    /// Bytes of linear memory the instance holds, all memories summed.
    memory_used: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let within_total = self
            .memory_used
            .checked_add(growth)
            .is_some_and(|total| total <= self.memory_limit);
        let allowed = within_total && self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_used += growth;
        }
        self.memory_refused |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// A request's WASI context, built at the guest's first WASI call: most
/// SDK routes make none, and building one (env copied, stdio writers, random
/// generators seeded) is a tenth of an instance's cost.
struct LazyWasi {
    ctx: Option<WasiCtx>,
    env: Arc<[(String, String)]>,
    route: Arc<str>,
    request_id: Arc<str>,
    clock: Duration,
}

impl LazyWasi {
    fn get(&mut self) -> &mut WasiCtx {
        let LazyWasi {
            ctx,
            env,
            route,
            request_id,
            clock,
        } = self;
        ctx.get_or_insert_with(|| {
            // Lines the guest leaves unfinished are logged when the store
            // (and these writers with it) is dropped.
            let log = GuestLog::new(Arc::clone(route), Arc::clone(request_id));
            WasiCtx::builder()
                .envs(env)
                .stdout(log.writer(Stream::Stdout))
                .stderr(log.writer(Stream::Stderr))
                .wall_clock(CoarseWallClock::new(*clock))
                .monotonic_clock(CoarseMonotonicClock::new(*clock))
                // One call's random bytes are a host allocation: a route
                // needs keys and nonces, not the default 64 MiB at once.
                .max_random_size(MAX_RANDOM_BYTES)
                .build()
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get(),
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The boundary's types interface holds only records: nothing to implement.
impl types::Host for HostState {}

/// A fresh store for one request of a route with `grants`: its env,
/// captured stdio, memory limit, outbound policy and epoch deadline.
pub(super) fn new_store(
    engine: &Engine,
    grants: &Grants,
    request_id: &Arc<str>,
    cpu: Option<Arc<CpuMeter>>,
) -> Store<HostState> {
    let wasi = LazyWasi {
        ctx: None,
        env: Arc::clone(&grants.env),
        route: Arc::clone(&grants.route),
        request_id: Arc::clone(request_id),
        clock: grants.clock,
    };
    // Host-side resources a guest can create: bounded, like its memory.
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_GUEST_RESOURCES);
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(MAX_FIELDS_BYTES);
    let state = HostState {
        wasi,
        table,
        kv: grants.kv.clone(),
        sql: grants.sql.clone(),
        limits: Limiter {
            limits: StoreLimitsBuilder::new()
                .memory_size(grants.memory)
                .instances(MAX_INSTANCES_PER_STORE)
                .tables(MAX_TABLES_PER_STORE)
                .memories(MAX_MEMORIES_PER_STORE)
                .build(),
            memory_refused: false,
            memory_limit: grants.memory,
            memory_used: 0,
        },
        cpu: cpu.zip(grants.cpu_time),
        http,
        outbound: OutboundHooks::new(
            Arc::clone(&grants.outbound),
            Arc::clone(&grants.pool),
            Arc::clone(&grants.route),
            Arc::clone(request_id),
        ),
        bodies: Bodies::default(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    // At every tick: stop the guest if it has used its CPU time, else yield
    // to the scheduler. tokio's `yield_now` wakes the guest only after the
    // worker has polled for I/O and timers: a plain yield (wasmtime's own)
    // puts it straight back in the run queue, so two guests spinning on two
    // workers would leave new connections unaccepted for 61 of their slices
    // (tokio's event interval), 300 ms, while every request waited.
    store.epoch_deadline_callback(|store| match &store.data().cpu {
        Some((meter, limit)) if meter.used() > *limit => Err(CpuTimeExceeded(*limit).into()),
        _ => Ok(wasmtime::UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        )),
    });
    store
}
