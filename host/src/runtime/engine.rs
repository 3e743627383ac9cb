//! The wasmtime engine every route runs on, configured in one place with a
//! comment per knob, its epoch ticker, and the linker holding every import a
//! route may use.

use super::body::Bodies;
use super::store::HostState;
use crate::capabilities::kv::KvData;
use crate::capabilities::sql::SqlData;
use crate::manifest::{Limits, Manifest};
use crate::wit::bindings::edge::route::{request_body, response_body, types};
use crate::wit::bindings::edge::sql::sql;
use crate::wit::bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use crate::wit::earlier::wasi::keyvalue0_2_0_draft::store as earlier_store;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, WasmFeatures,
};

/// How often the epoch ticks. A running guest yields to the scheduler at each
/// tick, so a busy guest cannot starve other requests on its thread, and a
/// time limit is enforced within one tick.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Wasm stack one instance may use. Deep recursion past it is a trap (a
/// 500), never a host stack overflow.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Linear memory bytes reset with `memset` rather than `madvise` when a slot
/// is reused. With `pagemap_scan` only pages the guest dirtied are reset, so
/// a small route costs a few page copies and no page-table work (no TLB
/// shootdown across cores) per request.
const KEEP_RESIDENT_MEMORY: usize = 8 << 20;
const KEEP_RESIDENT_TABLE: usize = 1 << 20;
const KEEP_RESIDENT_STACK: usize = 128 << 10;

/// What the engine is sized for.
#[derive(Clone)]
pub struct EngineSettings {
    /// The largest linear memory any route may have (the pool's slot size).
    pub(crate) max_memory: usize,
    /// Where compiled components are cached; `None` compiles every time.
    pub(crate) cache_dir: Option<PathBuf>,
    /// Instances that may be alive at once across all routes: the size of
    /// the pooling allocator's pool. Virtual address space is reserved for
    /// each slot, physical memory only for what instances touch.
    pub(crate) max_instances: usize,
    /// The step of the clocks guests read.
    pub(crate) clock_resolution: Duration,
    /// Time one component may take to compile on a deploy.
    pub(crate) compile_timeout: Duration,
}

impl EngineSettings {
    /// The settings a manifest asks for: a pool slot as large as its largest
    /// route memory, as many slots as `max_instances`, and the compile cache
    /// under `data_dir`.
    pub fn for_manifest(manifest: &Manifest, data_dir: &Path) -> EngineSettings {
        EngineSettings {
            max_instances: manifest.server.max_instances,
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
            clock_resolution: manifest.server.clock_resolution,
            compile_timeout: manifest.server.compile_timeout,
        }
    }
}

/// The engine for `settings`, with a thread ticking its epoch for as long as
/// the engine lives.
pub(crate) fn engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    engine_with(settings, None)
}

/// Which component-model runtime an engine has.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Concurrency {
    /// None: components whose imports and exports are all synchronous
    /// (WASI 0.2, the SDK's routes). Every route that can is served here.
    Off,
    /// Component-model async (WASI 0.3: `stream`, `future`, `async func`),
    /// for the components that need it and only those.
    Async,
}

/// [`engine`] with component-model async on: the engine of WASI 0.3
/// components, apart from the one every other route runs on.
pub(crate) fn async_engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    build(settings, None, Concurrency::Async)
}

/// [`engine`], its compiler keeping each function it compiles in `functions`
/// and taking from there what it compiled before (Cranelift's incremental
/// cache). Its compiled code is the same as [`engine`]'s.
pub(crate) fn engine_with(
    settings: &EngineSettings,
    functions: Option<std::sync::Arc<dyn wasmtime::CacheStore>>,
) -> wasmtime::Result<Engine> {
    build(settings, functions, Concurrency::Off)
}

fn build(
    settings: &EngineSettings,
    functions: Option<std::sync::Arc<dyn wasmtime::CacheStore>>,
    concurrency: Concurrency,
) -> wasmtime::Result<Engine> {
    let instances = u32::try_from(settings.max_instances).unwrap_or(u32::MAX);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        // A Rust component has one or two core instances, memories and tables.
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(2))
        .total_stacks(instances)
        // A slot holds the largest memory a route may ask for.
        .max_memory_size(settings.max_memory)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        // Only effective with `async_stack_zeroing` below: the kept part is
        // zeroed with memset, the rest returned to the kernel.
        .async_stack_keep_resident(KEEP_RESIDENT_STACK)
        // Reset only the pages the last instance dirtied (Linux 6.7 and later).
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    // Instances come from a pool of pre-reserved slots: instantiation is
    // a slot reuse, not an mmap, and memory images are copy-on-write.
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Epoch checks cost a load and compare at loop headers and calls,
    // far less than fuel, and are enough for wall-time limits.
    config.epoch_interruption(true);
    config.max_wasm_stack(MAX_WASM_STACK);
    // A pooled stack is reused by another route's instance: zero it, so that
    // a compiler bug reading a slot before writing it cannot see a
    // neighbour's data.
    config.async_stack_zeroing(true);
    set_wasm_features(&mut config, concurrency);
    if let Some(functions) = functions {
        config.enable_incremental_compilation(functions)?;
    }
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
    Ok(engine)
}

/// Every WebAssembly feature, set here rather than left to wasmtime's
/// defaults or its Cargo features, each with its reason: what `wasm32`
/// components built by rustc and clang use is on, the rest is off, so a
/// component that needs more fails to load with the feature's name.
const WASM_FEATURES: [(WasmFeatures, bool); 42] = [
    // On: the WebAssembly 2.0 core that rustc and clang emit for wasm32.
    (WasmFeatures::MUTABLE_GLOBAL, true), // WebAssembly 1.0 (the stack pointer)
    (WasmFeatures::SATURATING_FLOAT_TO_INT, true), // rustc's `as` casts
    (WasmFeatures::SIGN_EXTENSION, true), // rustc's default
    (WasmFeatures::MULTI_VALUE, true),    // several results; rustc's default
    (WasmFeatures::BULK_MEMORY, true),    // memory.copy/fill; rustc's default
    (WasmFeatures::BULK_MEMORY_OPT, true), // the same, as LLVM names it
    (WasmFeatures::REFERENCE_TYPES, true), // rustc's call_indirect encoding
    (WasmFeatures::CALL_INDIRECT_OVERLONG, true), // the same encoding
    (WasmFeatures::FLOATS, true),         // f32/f64: WebAssembly 1.0
    (WasmFeatures::SIMD, true),           // fixed-width SIMD: deterministic, tier 1
    (WasmFeatures::TAIL_CALL, true),      // WebAssembly 3.0, tier 1; compilers may emit return_call
    (WasmFeatures::EXTENDED_CONST, true), // constant expressions in globals, tier 1
    (WasmFeatures::COMPONENT_MODEL, true), // every route is a component
    // Off: no wasm32 route needs them, and each widens what can go wrong.
    (WasmFeatures::MEMORY64, false), // 64-bit memories and tables: where recent pooling-allocator advisories hit
    (WasmFeatures::RELAXED_SIMD, false), // results differ from one CPU to another
    (WasmFeatures::THREADS, false),  // shared memory would outlive the request's instance
    (WasmFeatures::SHARED_EVERYTHING_THREADS, false), // the same, wider
    (WasmFeatures::GC, false),       // a second, garbage-collected heap: more runtime for no route
    (WasmFeatures::GC_TYPES, false), // the types of the same
    (WasmFeatures::FUNCTION_REFERENCES, false), // typed references: only useful with GC
    (WasmFeatures::EXCEPTIONS, false), // needs the GC runtime in wasmtime
    (WasmFeatures::LEGACY_EXCEPTIONS, false), // the pre-standard form of the same
    (WasmFeatures::STACK_SWITCHING, false), // unfinished in wasmtime (tier 3)
    (WasmFeatures::WIDE_ARITHMETIC, false), // 128-bit arithmetic: new, unneeded
    (WasmFeatures::CUSTOM_PAGE_SIZES, false), // pages other than 64 KiB: new, unneeded
    (WasmFeatures::MEMORY_CONTROL, false), // unfinished proposal
    (WasmFeatures::MULTI_MEMORY, false), // toolchains emit one memory per module; each is a pool slot
    (WasmFeatures::CUSTOM_DESCRIPTORS, false), // unfinished proposal
    (WasmFeatures::COMPACT_IMPORTS, false), // an encoding no toolchain we build with emits
    (WasmFeatures::CM_ASYNC, false), // component-model async (WASI 0.3): only on the async engine (ASYNC_FEATURES)
    (WasmFeatures::CM_ASYNC_STACKFUL, false), // stackful async lifts: no toolchain we take emits them
    (WasmFeatures::CM_MORE_ASYNC_BUILTINS, false), // only on the async engine (ASYNC_FEATURES)
    (WasmFeatures::CM_THREADING, false),      // component-model threads: unfinished
    (WasmFeatures::CM_ERROR_CONTEXT, false),  // belongs to component-model async
    (WasmFeatures::CM_FIXED_LENGTH_LISTS, false), // new WIT types no interface here uses
    (WasmFeatures::CM_MAP, false),            // the same
    (WasmFeatures::CM64, false),              // 64-bit component memories: see MEMORY64
    (WasmFeatures::CM_GC, false),             // GC-typed lifting: see GC
    (WasmFeatures::CM_IMPLEMENTS, false),     // new, unneeded
    (WasmFeatures::CM_VALUES, false),         // component start values: unfinished
    (WasmFeatures::CM_NESTED_NAMES, false),   // unfinished naming extension
    (WasmFeatures::CM_CANON_NAMES, false),    // the same
];

/// What the async engine adds to [`WASM_FEATURES`]: what components built
/// with wit-bindgen's async support (Spin 4's SDK, WASI 0.3) use.
const ASYNC_FEATURES: [WasmFeatures; 2] = [
    // `stream`, `future`, `async func` and their canonical built-ins.
    WasmFeatures::CM_ASYNC,
    // The built-ins wit-bindgen's runtime calls besides (`context.get`...).
    WasmFeatures::CM_MORE_ASYNC_BUILTINS,
];

fn set_wasm_features(config: &mut Config, concurrency: Concurrency) {
    for (feature, enabled) in WASM_FEATURES {
        config.wasm_features(feature, enabled);
    }
    let on = concurrency == Concurrency::Async;
    for feature in ASYNC_FEATURES {
        config.wasm_features(feature, on);
    }
    // Were relaxed SIMD ever turned on, the same results on every CPU.
    config.relaxed_simd_deterministic(true);
    // The component-model async runtime in the stores only where the
    // engine serves components that need it.
    config.concurrency_support(on);
}

/// Every import a route may use. What each reaches is set per request.
pub(crate) fn linker(
    engine: &Engine,
    concurrency: Concurrency,
) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    if concurrency == Concurrency::Async {
        // WASI 0.3 and its HTTP client, for the components built for it,
        // reaching what their 0.2 imports reach; and Spin's interfaces,
        // whose functions are `async func`.
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        crate::capabilities::spin::add_to_linker(&mut linker, HostState::spin)?;
    }
    // WASI p2 is linked because every Rust wasm32-wasip2 program imports
    // it; what it can reach is set per request (no preopens, only the
    // granted env, sockets denied).
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Outbound HTTP: every route may import it; what it reaches is its
    // allowed_outbound_hosts (none unless listed).
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    // The SDK's imports: the boundary's records, and key-value stores (only
    // those the route is granted open).
    types::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| state)?;
    // Bodies that stream, both ways (`body.wit`).
    response_body::add_to_linker::<HostState, HasSelf<Bodies>>(&mut linker, HostState::bodies)?;
    request_body::add_to_linker::<HostState, HasSelf<Bodies>>(&mut linker, HostState::bodies)?;
    store::add_to_linker::<HostState, KvData>(&mut linker, HostState::kv)?;
    atomics::add_to_linker::<HostState, KvData>(&mut linker, HostState::kv)?;
    batch::add_to_linker::<HostState, KvData>(&mut linker, HostState::kv)?;
    // Components built with an earlier guest-sdk: the first draft's store.
    earlier_store::add_to_linker::<HostState, KvData>(&mut linker, HostState::kv)?;
    // SQL databases (only those the route is granted open).
    sql::add_to_linker::<HostState, SqlData>(&mut linker, HostState::sql)?;
    Ok(linker)
}
