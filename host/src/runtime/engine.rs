//! The wasmtime engine every route runs on, configured in one place with a
//! comment per knob, its epoch ticker, and the linker holding every import a
//! route may use.

use super::store::HostState;
use crate::capabilities::kv::KvData;
use crate::capabilities::sql::SqlData;
use crate::manifest::{Limits, Manifest};
use crate::wit::bindings::edge::route::types;
use crate::wit::bindings::edge::sql::sql;
use crate::wit::bindings::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use crate::wit::earlier::wasi::keyvalue0_2_0_draft::store as earlier_store;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

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
pub struct EngineSettings {
    /// The largest linear memory any route may have (the pool's slot size).
    pub(crate) max_memory: usize,
    /// Where compiled components are cached; `None` compiles every time.
    pub(crate) cache_dir: Option<PathBuf>,
    /// Instances that may be alive at once across all routes: the size of
    /// the pooling allocator's pool. Virtual address space is reserved for
    /// each slot, physical memory only for what instances touch.
    pub(crate) max_instances: usize,
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
        }
    }
}

/// The engine for `settings`, with a thread ticking its epoch for as long as
/// the engine lives.
pub(crate) fn engine(settings: &EngineSettings) -> wasmtime::Result<Engine> {
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

/// Every import a route may use. What each reaches is set per request.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
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
    store::add_to_linker::<HostState, KvData>(&mut linker, HostState::kv)?;
    atomics::add_to_linker::<HostState, KvData>(&mut linker, HostState::kv)?;
    batch::add_to_linker::<HostState, KvData>(&mut linker, HostState::kv)?;
    // Components built with an earlier guest-sdk: the first draft's store.
    earlier_store::add_to_linker::<HostState, KvData>(&mut linker, HostState::kv)?;
    // SQL databases (only those the route is granted open).
    sql::add_to_linker::<HostState, SqlData>(&mut linker, HostState::sql)?;
    Ok(linker)
}
