//! The WebAssembly side of the host: the engine, the linker, each route's
//! compiled and pre-linked component, and running one request in a fresh
//! instance.
//!
//! Everything that depends only on the manifest happens in [`Runtime::load`]:
//! compiling each component, reading which methods it exports, resolving its
//! imports against the linker. Per request there is only a new `Store`, an
//! instantiation from the pre-linked component and one call.

use crate::capabilities::kv::{KvAccess, KvBackend};
use crate::capabilities::outbound::{OutboundHooks, OutboundPolicy};
use crate::capabilities::stdio::{GuestLog, Stream};
use crate::manifest::{Limits, Manifest, ManifestError, ManifestErrors, RouteSpec};
use crate::metrics::{Event, Metrics, RouteMetrics, RunningGuard};
use crate::router::{Match, Params, PathError, Router};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{
    Component, ComponentExportIndex, HasSelf, InstancePre, Linker, ResourceTable, TypedFunc,
};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError,
    PoolingAllocationConfig, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "edge:route/guest-imports",
        // Key-value calls are async so that a write (a disk commit) runs on
        // the blocking pool instead of stalling an async worker.
        imports: {
            "wasi:keyvalue/store.[method]bucket.set": async,
            "wasi:keyvalue/store.[method]bucket.delete": async,
        },
        with: {
            "wasi:keyvalue/store.bucket": crate::capabilities::kv::Bucket,
        },
    });
}

pub use bindings::edge::route::types::{Request as GuestRequest, Response as GuestResponse};

/// How often the epoch ticks. A running guest yields to the scheduler at each
/// tick, so a busy guest cannot starve other requests on its thread, and a
/// time limit is enforced within one tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Wasm stack one instance may use. Deep recursion past it is a trap (a
/// 500), never a host stack overflow.
const MAX_WASM_STACK: usize = 512 * 1024;

/// An HTTP method a route can export a handler for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Head,
        Method::Options,
    ];

    /// The name of the component export that handles this method.
    pub fn export_name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
            Method::Head => "head",
            Method::Options => "options",
        }
    }

    /// The method as HTTP spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }

    pub fn from_http(method: &http::Method) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == method.as_str())
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The per-request state a guest's imports work on.
pub struct HostState {
    wasi: LazyWasi,
    pub(crate) table: ResourceTable,
    pub(crate) kv: KvAccess,
    limits: Limiter,
    /// The guest's CPU clock and its `cpu_time`, when the route has one.
    cpu: Option<(Arc<CpuMeter>, Duration)>,
    http: WasiHttpCtx,
    outbound: OutboundHooks,
}

/// The store's limits, noting when a memory grow was refused so that the
/// trap that usually follows is reported as the memory limit it is.
struct Limiter {
    limits: StoreLimits,
    memory_refused: bool,
    /// The route's `memory`: for all of the instance's linear memories
    /// together (wasmtime's own limit is per memory).
    memory_limit: usize,
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
}

impl LazyWasi {
    fn get(&mut self) -> &mut WasiCtx {
        let LazyWasi {
            ctx,
            env,
            route,
            request_id,
        } = self;
        ctx.get_or_insert_with(|| {
            // Lines the guest leaves unfinished are logged when the store
            // (and these writers with it) is dropped.
            let log = GuestLog::new(Arc::clone(route), Arc::clone(request_id));
            WasiCtx::builder()
                .envs(env)
                .stdout(log.writer(Stream::Stdout))
                .stderr(log.writer(Stream::Stderr))
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
impl bindings::edge::route::types::Host for HostState {}

/// Why a guest call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The guest trapped (a panic, `unreachable`, a bad memory access, stack
    /// exhaustion...); the message is the trap's reason, one line.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest trapped after it was refused memory past its limit.
    #[error("guest trapped after being refused memory past its {limit} byte limit: {reason}")]
    OutOfMemory { limit: usize, reason: String },
    /// The guest ran past its time limit and was stopped.
    #[error("guest ran past its {0:?} time limit")]
    Timeout(Duration),
    /// The guest ran on the CPU past its `cpu_time` and was stopped.
    #[error("guest used more than its {0:?} of CPU time")]
    CpuTime(Duration),
    /// The host could not set up the instance.
    #[error("could not instantiate the route: {0:#}")]
    Instantiate(wasmtime::Error),
    /// Every slot of the instance pool is in use.
    #[error("all instance slots are in use")]
    PoolExhausted,
}

/// One route, ready to serve: compiled, pre-linked and with its grants.
pub struct CompiledRoute {
    /// The route's pattern, as written in the manifest.
    pub name: Arc<str>,
    /// The component file it was compiled from.
    pub component: PathBuf,
    /// Its entry in the compile cache, if it has one.
    pub compiled: Option<PathBuf>,
    pre: InstancePre<HostState>,
    /// Set for a standard `wasi:http/proxy` component (it exports
    /// `wasi:http/incoming-handler`): every method goes to it.
    proxy: Option<ProxyPre<HostState>>,
    handlers: [Option<ComponentExportIndex>; 7],
    /// The `Allow` header's value, computed at load.
    pub allow: String,
    /// Where the route may send HTTP requests.
    outbound: Arc<OutboundPolicy>,
    env: Arc<[(String, String)]>,
    kv: KvAccess,
    pub limits: Limits,
    /// The route's counters (shared with earlier tables that had its pattern).
    pub metrics: Arc<RouteMetrics>,
}

impl CompiledRoute {
    /// Whether the component exports a handler for `method`.
    pub fn handles(&self, method: Method) -> bool {
        self.proxy.is_some() || self.handlers[method.index()].is_some()
    }

    /// Whether this is a standard `wasi:http/proxy` component.
    pub fn is_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    /// A slot to run one instance, or `None` when `max_concurrency` are
    /// running, counting those still running on earlier deployments of this
    /// route's pattern.
    pub fn try_reserve(&self) -> Option<RunningGuard> {
        self.metrics.try_start(self.limits.max_concurrency)
    }
}

/// An immutable snapshot of every route, built from one validated manifest.
pub struct RouteTable {
    router: Router,
    routes: Vec<CompiledRoute>,
}

impl RouteTable {
    /// The route for a raw request path and its decoded params.
    pub fn lookup(&self, path: &str) -> Result<Option<(&CompiledRoute, Params)>, PathError> {
        Ok(self
            .router
            .lookup(path)?
            .and_then(|Match { route, params }| Some((self.routes.get(route)?, params))))
    }

    pub fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }
}

/// Linear memory bytes reset with `memset` rather than `madvise` when a slot
/// is reused. With `pagemap_scan` only pages the guest dirtied are reset, so
/// a small route costs a few page copies and no page-table work (no TLB
/// shootdown across cores) per request.
const KEEP_RESIDENT_MEMORY: usize = 8 << 20;
const KEEP_RESIDENT_TABLE: usize = 1 << 20;
const KEEP_RESIDENT_STACK: usize = 128 << 10;

/// Engine settings, one place.
pub struct EngineSettings {
    /// The largest linear memory any route may have (the pool's slot size).
    pub max_memory: usize,
    /// Where compiled components are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may be alive at once across all routes: the size of
    /// the pooling allocator's pool. Virtual address space is reserved for
    /// each slot, physical memory only for what instances touch.
    pub max_instances: usize,
}

impl EngineSettings {
    /// The settings a manifest asks for: a pool slot as large as its largest
    /// route memory, as many slots as `max_instances`, and the compile cache
    /// under `data_dir`.
    pub fn for_manifest(manifest: &Manifest, data_dir: &Path) -> EngineSettings {
        EngineSettings {
            max_instances: manifest.max_instances,
            // At least the default, so that a later deploy of routes with
            // default limits fits the slots made at start.
            max_memory: manifest
                .routes
                .iter()
                .map(|route| route.limits.memory)
                .max()
                .unwrap_or(0)
                .max(Limits::default().memory),
            cache_dir: Some(data_dir.join("compiled")),
        }
    }
}

/// The engine and linker shared by all routes.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    kv: Arc<dyn KvBackend>,
    cache_dir: Option<PathBuf>,
    max_memory: usize,
    metrics: Arc<Metrics>,
}

impl Runtime {
    /// Builds the engine (with the epoch ticker that enforces time limits)
    /// and the linker holding every import a route may use.
    pub fn new(kv: Arc<dyn KvBackend>, settings: EngineSettings) -> wasmtime::Result<Runtime> {
        let instances = u32::try_from(settings.max_instances).unwrap_or(u32::MAX);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(instances)
            // A Rust component has one or two core instances, memories and tables.
            .total_core_instances(instances.saturating_mul(4))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(2))
            .total_stacks(instances)
            .max_memory_size(settings.max_memory)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .async_stack_keep_resident(KEEP_RESIDENT_STACK)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        // Instances come from a pool of pre-reserved slots: instantiation is
        // a slot reuse, not an mmap, and memory images are copy-on-write.
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Epoch checks cost a load and compare at loop headers and calls,
        // far less than fuel, and are enough for wall-time limits.
        config.epoch_interruption(true);
        config.max_wasm_stack(MAX_WASM_STACK);
        let engine = Engine::new(&config)?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let mut linker = Linker::new(&engine);
        // WASI p2 is linked because every Rust wasm32-wasip2 program imports
        // it; what it can reach is set per request (no preopens, only the
        // granted env, sockets denied).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // Outbound HTTP: every route may import it; what it reaches is its
        // allowed_outbound_hosts (none unless listed).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::GuestImports::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )?;
        Ok(Runtime {
            engine,
            linker,
            kv,
            cache_dir: settings.cache_dir,
            max_memory: settings.max_memory,
            metrics: Arc::default(),
        })
    }

    /// The counters of every route this runtime has loaded.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Compiles and links every route of a validated manifest. Reports every
    /// route that fails, each with the manifest line.
    pub fn load(&self, manifest: &Manifest) -> Result<RouteTable, ManifestErrors> {
        let mut errors = Vec::new();
        let mut routes = Vec::new();
        for spec in &manifest.routes {
            match self.compile_route(spec) {
                Ok(route) => routes.push(route),
                Err(reason) => errors.push(ManifestError::Component {
                    file: manifest.file.display().to_string(),
                    line: spec.line,
                    route: spec.pattern.to_string(),
                    reason,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ManifestErrors(errors));
        }
        let router = Router::new(manifest.routes.iter().map(|spec| &spec.pattern));
        Ok(RouteTable { router, routes })
    }

    fn compile_route(&self, spec: &RouteSpec) -> Result<CompiledRoute, String> {
        if spec.limits.memory > self.max_memory {
            return Err(format!(
                "memory limit of {} bytes is over the {} bytes per instance this host reserved when it started; restart the host with this manifest to raise it",
                spec.limits.memory, self.max_memory
            ));
        }
        let file = spec.component.display();
        let bytes = std::fs::read(&spec.component)
            .map_err(|err| format!("cannot read component {file}: {err}"))?;
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
            Some([0, b'a', b's', b'm', _, _, 0, 0]) => {
                return Err(format!(
                    "{file} is a core WebAssembly module, not a component; build the route for wasm32-wasip2"
                ))
            }
            _ => return Err(format!("{file} is not a WebAssembly component")),
        }
        let started = std::time::Instant::now();
        let (component, cached, compiled) = self
            .compile_cached(&bytes)
            .map_err(|err| format!("{file} does not compile: {err}"))?;
        let how = if cached {
            "loaded from the compile cache"
        } else {
            "compiled"
        };
        tracing::info!(route = %spec.pattern, "{how} in {:?}", started.elapsed());

        let mut handlers = [None; 7];
        let ty = component.component_type();
        for method in Method::ALL {
            if ty.get_export(&self.engine, method.export_name()).is_some() {
                handlers[method.index()] = component.get_export_index(None, method.export_name());
            }
        }
        let exports_proxy = ty
            .exports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:http/incoming-handler@0.2"));
        if handlers.iter().all(Option::is_none) && !exports_proxy {
            return Err(format!(
                "{file} exports no method handler (get, post, put, patch, delete, head, options) and no wasi:http/incoming-handler; is it built with guest_sdk::route!?"
            ));
        }

        let pre = self.linker.instantiate_pre(&component).map_err(|err| {
            format!("{file} imports something the host does not provide: {err:#}")
        })?;
        let proxy = if handlers.iter().all(Option::is_none) {
            Some(ProxyPre::new(pre.clone()).map_err(|err| {
                format!("{file}: its wasi:http/incoming-handler export is not one the host can call: {err:#}")
            })?)
        } else {
            None
        };
        for method in Method::ALL {
            if handlers[method.index()].is_none() {
                continue;
            }
            let func = match ty
                .get_export(&self.engine, method.export_name())
                .map(|e| e.ty)
            {
                Some(wasmtime::component::types::ComponentItem::ComponentFunc(func)) => func,
                _ => {
                    return Err(format!(
                        "{file}: export `{}` is not a function",
                        method.export_name()
                    ))
                }
            };
            func.typecheck::<(GuestRequest,), (GuestResponse,)>(&pre.instance_type())
                .map_err(|err| {
                    format!(
                        "{file}: export `{}` is not `func(req: request) -> response`: {err:#}",
                        method.export_name()
                    )
                })?;
        }

        let mut allowed: Vec<&str> = Method::ALL
            .into_iter()
            .filter(|m| proxy.is_some() || handlers[m.index()].is_some())
            .map(Method::as_str)
            .collect();
        if handlers[Method::Get.index()].is_some() && !allowed.contains(&"HEAD") {
            allowed.push("HEAD");
        }
        if !allowed.contains(&"OPTIONS") {
            allowed.push("OPTIONS");
        }
        allowed.sort_unstable();

        Ok(CompiledRoute {
            name: Arc::from(spec.pattern.as_str()),
            component: spec.component.clone(),
            compiled,
            pre,
            proxy,
            handlers,
            allow: allowed.join(", "),
            outbound: Arc::new(OutboundPolicy {
                allowed: spec.allowed_outbound_hosts.clone(),
                timeout: spec.limits.outbound_timeout,
                max_requests: spec.limits.max_outbound_requests,
                max_response: spec.limits.max_outbound_response,
            }),
            env: spec.env.clone().into(),
            kv: KvAccess {
                backend: Arc::clone(&self.kv),
                granted: spec.kv.clone().into(),
            },
            limits: spec.limits.clone(),
            metrics: self.metrics.route(spec.pattern.as_str()),
        })
    }

    /// Compiles a component, or loads it from the cache when these bytes were
    /// compiled before with the same engine settings.
    /// Says whether it came from the cache, and names its cache entry.
    fn compile_cached(&self, bytes: &[u8]) -> Result<(Component, bool, Option<PathBuf>), String> {
        let compile = || Component::new(&self.engine, bytes).map_err(|err| format!("{err:#}"));
        let Some(dir) = &self.cache_dir else {
            return Ok((compile()?, false, None));
        };
        let cached = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if cached.is_file() {
            // SAFETY: the file was written by `Component::serialize` below with
            // this engine's settings (they are part of its name), into the
            // host's own data folder. Whoever can write there can run native
            // code in the host, as they could by replacing its binary.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok((component, true, Some(cached))),
                Err(err) => tracing::warn!(
                    "ignoring unusable compile cache entry {}: {err:#}",
                    cached.display()
                ),
            }
        }
        let component = compile()?;
        if let Err(err) = write_cache_entry(dir, &cached, &component) {
            tracing::warn!(
                "could not cache the compiled component in {}: {err}",
                dir.display()
            );
            return Ok((component, false, None));
        }
        Ok((component, false, Some(cached)))
    }

    /// Content hash of the component plus everything about the engine that
    /// makes compiled code compatible.
    fn cache_key(&self, bytes: &[u8]) -> String {
        struct Sha(Sha256);
        impl std::hash::Hasher for Sha {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
        }
        let mut hasher = Sha(Sha256::new());
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut hasher);
        hasher.0.update(bytes);
        hasher
            .0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Runs `method`'s handler of `route` on `request` in a fresh instance,
    /// within the route's time and memory limits. The caller holds a slot from
    /// [`CompiledRoute::try_reserve`].
    pub async fn call(
        &self,
        route: &CompiledRoute,
        method: Method,
        request: GuestRequest,
        request_id: &Arc<str>,
    ) -> Result<GuestResponse, GuestError> {
        let timeout = route.limits.timeout;
        let meter = route.limits.cpu_time.map(|_| Arc::new(CpuMeter::default()));
        let call = self.call_in_fresh_instance(route, method, request, request_id, meter.clone());
        // Dropping the call's future at the deadline drops the store and the
        // instance with it; the guest is paused at an epoch tick, never mid-host-call.
        let result = match meter {
            Some(meter) => tokio::time::timeout(timeout, Metered::new(call, meter)).await,
            None => tokio::time::timeout(timeout, call).await,
        };
        result.unwrap_or(Err(GuestError::Timeout(timeout)))
    }

    /// A fresh store for one request of `route`: its env, captured stdio,
    /// memory limit, outbound policy and epoch deadline.
    fn new_store(
        &self,
        route: &CompiledRoute,
        request_id: &Arc<str>,
        cpu: Option<Arc<CpuMeter>>,
    ) -> Store<HostState> {
        let wasi = LazyWasi {
            ctx: None,
            env: Arc::clone(&route.env),
            route: Arc::clone(&route.name),
            request_id: Arc::clone(request_id),
        };
        // Host-side resources a guest can create: bounded, like its memory.
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_GUEST_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        let state = HostState {
            wasi,
            table,
            kv: route.kv.clone(),
            limits: Limiter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(route.limits.memory)
                    // A route is one component: a handful of instances, tables
                    // and memories, never thousands.
                    .instances(64)
                    .tables(64)
                    .memories(4)
                    .build(),
                memory_refused: false,
                memory_limit: route.limits.memory,
                memory_used: 0,
            },
            cpu: cpu.zip(route.limits.cpu_time),
            http,
            outbound: OutboundHooks::new(
                Arc::clone(&route.outbound),
                Arc::clone(&route.name),
                Arc::clone(request_id),
            ),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        if store.data().cpu.is_some() {
            // At every tick: stop the guest if it has used its CPU time,
            // else yield to the scheduler.
            store.epoch_deadline_callback(|store| match &store.data().cpu {
                Some((meter, limit)) if meter.used() > *limit => {
                    Err(CpuTimeExceeded(*limit).into())
                }
                _ => Ok(wasmtime::UpdateDeadline::Yield(1)),
            });
        } else {
            // Yield to the scheduler at every tick.
            store.epoch_deadline_async_yield_and_update(1);
        }
        store
    }

    /// Runs a `wasi:http/proxy` route on `request` in a fresh instance. The
    /// answer's head comes back as soon as the guest sets it. The guest runs
    /// here, in the request's task, until it answers; most answer and finish
    /// their body in the same go, so the whole answer is ready for one write.
    /// A guest still running after it answered (a streamed body) moves to a
    /// task of its own, holding `guard` (the route's concurrency slot), and
    /// streams until it finishes or its `timeout` passes.
    pub async fn call_proxy<B>(
        &self,
        route: &CompiledRoute,
        request: http::Request<B>,
        request_id: &Arc<str>,
        guard: impl Send + 'static,
    ) -> Result<(http::Response<HyperOutgoingBody>, ProxyDone), GuestError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Some(pre) = route.proxy.clone() else {
            return Err(GuestError::Instantiate(wasmtime::format_err!(
                "route is not a wasi:http/proxy component"
            )));
        };
        let meter = route.limits.cpu_time.map(|_| Arc::new(CpuMeter::default()));
        let mut store = self.new_store(route, request_id, meter.clone());
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        // Whether the guest set its response: a failure after that (while
        // streaming the body) is the guest's run to report, as nobody else sees it.
        let responded = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(GuestError::Instantiate)?;
        let flag = Arc::clone(&responded);
        let out = store
            .data_mut()
            .http()
            .new_response_outparam_from_callback(move |response| {
                flag.store(true, std::sync::atomic::Ordering::Release);
                // The receiver is gone only if the request was dropped.
                let _ = sender.send(response);
            })
            .map_err(GuestError::Instantiate)?;
        let timeout = route.limits.timeout;
        let id = Arc::clone(request_id);
        let name = Arc::clone(&route.name);
        let metrics = Arc::clone(&route.metrics);
        let run = async move {
            let _guard = guard;
            let run = async {
                let proxy = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiate_error)?;
                let called = proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, out)
                    .await;
                called.map_err(|err| guest_trap(store.data(), &err, &id))
            };
            let result = tokio::time::timeout(timeout, run)
                .await
                .unwrap_or(Err(GuestError::Timeout(timeout)));
            if let Err(err) = &result {
                if responded.load(std::sync::atomic::Ordering::Acquire) {
                    metrics.count(match err {
                        GuestError::Timeout(_) => Event::Timeout,
                        GuestError::CpuTime(_) => Event::CpuTime,
                        GuestError::OutOfMemory { .. } => Event::Memory,
                        _ => Event::Trap,
                    });
                    tracing::error!(
                        request_id = %id,
                        route = %name,
                        "{err} after the response head was sent; its body was cut short"
                    );
                }
            }
            result
        };
        let mut run: Pin<Box<dyn Future<Output = Result<(), GuestError>> + Send>> = match meter {
            Some(meter) => Box::pin(Metered::new(run, meter)),
            None => Box::pin(run),
        };
        let answered = |answer: Result<http::Response<HyperOutgoingBody>, _>| match answer {
            Ok(response) => Ok(response),
            Err(code) => Err(GuestError::Trap(format!(
                "the guest answered with error {code:?}"
            ))),
        };
        // The guest ended without an answer: why is in how it ended.
        let unanswered = |ended: Result<(), GuestError>| {
            ended.err().unwrap_or_else(|| {
                GuestError::Trap("the guest returned without setting a response".into())
            })
        };
        tokio::select! {
            // The guest first: when it answers and finishes in one go, its
            // whole body is waiting in the response's channel.
            biased;
            result = &mut run => match receiver.try_recv() {
                Ok(answer) => Ok((answered(answer)?, ProxyDone::Finished(result.is_err()))),
                Err(_) => Err(unanswered(result)),
            },
            answer = &mut receiver => match answer {
                Ok(answer) => {
                    let response = answered(answer)?;
                    let (done, finished) = tokio::sync::oneshot::channel();
                    tokio::spawn(async move {
                        // Tells the response body whether it ended because the guest failed.
                        let _ = done.send(run.await.is_err());
                    });
                    Ok((response, ProxyDone::Running(finished)))
                }
                // The guest dropped its response without setting it.
                Err(_) => Err(unanswered(run.await)),
            },
        }
    }

    async fn call_in_fresh_instance(
        &self,
        route: &CompiledRoute,
        method: Method,
        request: GuestRequest,
        request_id: &Arc<str>,
        cpu: Option<Arc<CpuMeter>>,
    ) -> Result<GuestResponse, GuestError> {
        let no_export = || {
            GuestError::Instantiate(wasmtime::format_err!(
                "route has no `{}` export",
                method.export_name()
            ))
        };
        let export = route.handlers[method.index()].ok_or_else(no_export)?;
        let mut store = self.new_store(route, request_id, cpu);
        let instance = route
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(instantiate_error)?;
        let func = instance
            .get_func(&mut store, export)
            .ok_or_else(no_export)?;
        // SAFETY: `compile_route` type-checked every method export against
        // `func(request) -> response` when the route was loaded; checking it
        // again per request would cost a tenth of a microsecond each time.
        let func = unsafe { TypedFunc::<(GuestRequest,), (GuestResponse,)>::new_unchecked(func) };
        let (response,) = func
            .call_async(&mut store, (request,))
            .await
            .map_err(|err| guest_trap(store.data(), &err, request_id))?;
        Ok(response)
    }
}

/// Writes a compiled component atomically (temporary file, then rename), so
/// a crash never leaves a truncated entry behind.
fn write_cache_entry(dir: &Path, path: &Path, component: &Component) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|err| err.to_string())?;
    let bytes = component.serialize().map_err(|err| format!("{err:#}"))?;
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temporary, bytes).map_err(|err| err.to_string())?;
    std::fs::rename(&temporary, path).map_err(|err| err.to_string())
}

/// Resources (streams, pollables, HTTP fields...) one request's guest may
/// hold at once in the host's table (wasmtime's default is a million).
const MAX_GUEST_RESOURCES: usize = 10_000;

/// Bytes of one set of HTTP headers a guest may build (in memory form).
const MAX_FIELDS_BYTES: usize = 128 * 1024;

/// How a `wasi:http/proxy` guest ended, or will: `true` if it failed (trap,
/// timeout), so a body that ended early must not look complete.
pub enum ProxyDone {
    /// It finished before its answer was sent.
    Finished(bool),
    /// It still runs in its own task, streaming its body.
    Running(tokio::sync::oneshot::Receiver<bool>),
}

/// A failed instantiation: a full instance pool, or anything else.
fn instantiate_error(err: wasmtime::Error) -> GuestError {
    if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        GuestError::PoolExhausted
    } else {
        GuestError::Instantiate(err)
    }
}

/// The CPU time a guest has used, as the time its future spent being polled
/// on a host thread: what it holds a worker for. Time between polls (waiting
/// for I/O, a timer, or its turn after yielding) does not count. A thread's
/// own CPU clock would also leave out time the OS gave to other processes,
/// but reading it is a system call, two per poll, which cost more than the
/// rest of a small request.
#[derive(Default)]
pub(crate) struct CpuMeter {
    used_ns: AtomicU64,
    /// When the current poll began, in ns after `EPOCH`; 0 between polls.
    poll_started_ns: AtomicU64,
}

/// The origin of [`CpuMeter`]'s clock readings.
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// Nanoseconds since [`EPOCH`], never 0.
fn clock_ns() -> u64 {
    u64::try_from(EPOCH.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl CpuMeter {
    /// Time used so far, including the poll running now (the epoch callback
    /// asks from inside it).
    fn used(&self) -> Duration {
        let mut used = self.used_ns.load(Ordering::Relaxed);
        let started = self.poll_started_ns.load(Ordering::Relaxed);
        if started != 0 {
            used += clock_ns().saturating_sub(started);
        }
        Duration::from_nanos(used)
    }
}

/// A future whose polls are charged to a [`CpuMeter`].
struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<CpuMeter>,
}

impl<F: Future> Metered<F> {
    fn new(inner: F, meter: Arc<CpuMeter>) -> Self {
        Metered {
            inner: Box::pin(inner),
            meter,
        }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let started = clock_ns();
        self.meter.poll_started_ns.store(started, Ordering::Relaxed);
        let polled = self.inner.as_mut().poll(cx);
        let spent = clock_ns().saturating_sub(started);
        self.meter.used_ns.fetch_add(spent, Ordering::Relaxed);
        self.meter.poll_started_ns.store(0, Ordering::Relaxed);
        polled
    }
}

/// Raised from the epoch callback when a guest has used its `cpu_time`.
#[derive(Debug, thiserror::Error)]
#[error("the guest used more than its {0:?} of CPU time")]
struct CpuTimeExceeded(Duration);

/// What a guest's trap means: its CPU time used up, running out of memory
/// when a grow was refused before it, else the trap's one-line reason.
fn guest_trap(state: &HostState, err: &wasmtime::Error, request_id: &str) -> GuestError {
    // The wasm backtrace can run to thousands of frames (deep recursion): the
    // log gets it only at debug level.
    tracing::debug!(request_id, "guest trap in full: {err:?}");
    if let Some(CpuTimeExceeded(limit)) = err.downcast_ref::<CpuTimeExceeded>() {
        return GuestError::CpuTime(*limit);
    }
    let reason = trap_reason(err);
    if state.limits.memory_refused {
        GuestError::OutOfMemory {
            limit: state.limits.memory_limit,
            reason,
        }
    } else {
        GuestError::Trap(reason)
    }
}

/// The one-line reason of a trap: wasmtime's trap code when there is one.
fn trap_reason(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::kv::DiskKv;
    use crate::manifest::Limits;
    use crate::router::Pattern;

    /// Compiles a component written in WAT as the route `/t`.
    fn compile(wat: &str) -> Result<CompiledRoute, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.wasm");
        std::fs::write(&file, wat::parse_str(wat).unwrap()).unwrap();
        let kv = DiskKv::open(&dir.path().join("kv")).unwrap();
        let settings = EngineSettings {
            max_memory: Limits::default().memory,
            cache_dir: None,
            max_instances: 4,
        };
        let runtime = Runtime::new(Arc::new(kv), settings).unwrap();
        runtime.compile_route(&RouteSpec {
            pattern: Pattern::parse("/t").unwrap(),
            component: file,
            source: None,
            line: 1,
            kv: Vec::new(),
            env: Vec::new(),
            secrets: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            limits: Limits::default(),
        })
    }

    /// A core module with one function, lifted as component export `get`.
    const LIFTED_NOTHING: &str = r#"
        (core module $m (func (export "f")))
        (core instance $i (instantiate $m))
        (func $get (canon lift (core func $i "f")))
        (export "get" (func $get))
    "#;

    #[test]
    fn an_import_the_host_lacks_is_a_load_error() {
        let error = compile(&format!(
            r#"(component
                (import "unknown:pkg/iface" (instance (export "f" (func))))
                {LIFTED_NOTHING}
            )"#
        ))
        .err()
        .unwrap();
        assert!(
            error.contains("imports something the host does not provide"),
            "{error}"
        );
        assert!(error.contains("unknown:pkg/iface"), "{error}");
    }

    #[test]
    fn a_handler_of_the_wrong_type_is_a_load_error() {
        let error = compile(&format!("(component {LIFTED_NOTHING})"))
            .err()
            .unwrap();
        assert!(
            error.contains("export `get` is not `func(req: request) -> response`"),
            "{error}"
        );
    }

    #[test]
    fn exports_that_are_not_methods_do_not_count() {
        let error = compile(
            r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "run" (func $f))
            )"#,
        )
        .err()
        .unwrap();
        assert!(error.contains("exports no method handler"), "{error}");
    }
}
