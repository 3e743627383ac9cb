//! The WebAssembly side of the host: the engine, the linker, each route's
//! compiled and pre-linked component, and running one request in a fresh
//! instance.
//!
//! Everything that depends only on the manifest happens in [`Runtime::load`]:
//! compiling each component, reading which methods it exports, resolving its
//! imports against the linker. Per request there is only a new `Store`, an
//! instantiation from the pre-linked component and one call.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `engine.rs` | the engine's configuration (a comment per knob), its epoch ticker, the linker |
//! | `compile.rs` | reading a component file, compiling it, the compile cache |
//! | `route.rs` | [`CompiledRoute`] (exports read and checked, grants resolved) and [`RouteTable`] |
//! | `store.rs` | one request's store: WASI context, limiter, epoch deadline |
//! | `call.rs` | calling an SDK route's method export; a guest that answered early runs on |
//! | `body.rs` | `body.wit`: answers sent before the method returns, request bodies read as they arrive |
//! | `background.rs` | guests still running after their answer, waited for at shutdown |
//! | `proxy.rs` | calling a `wasi:http/proxy` component, streaming both ways |
//! | `service.rs` | calling a WASI 0.3 `wasi:http/service` component, streaming both ways |
//! | `cpu.rs` | the `cpu_time` meter |
//! | `failure.rs` | [`GuestError`] and its one mapping to a status, a metric and a log level |

mod background;
mod body;
mod call;
pub(crate) mod compile;
mod cpu;
mod engine;
mod failure;
mod incremental;
mod proxy;
mod route;
mod service;
mod store;

pub use crate::wit::{Method, Request as GuestRequest, Response as GuestResponse};
pub(crate) use body::{Incoming, Piece};
pub(crate) use call::Answer;
pub use engine::EngineSettings;
pub use failure::GuestError;
pub(crate) use proxy::{GuestBody, ProxyDone};
pub use route::{CompiledRoute, RouteTable};

use crate::capabilities::kv::KvStores;
use crate::capabilities::pool::OutboundPool;
use crate::capabilities::sql::SqlDatabases;
use crate::edge::RateLimiters;
use crate::manifest::{Manifest, ManifestError, ManifestErrors};
use crate::metrics::Metrics;
use crate::router::Router;
use engine::Concurrency;
use std::sync::{Arc, OnceLock};
use store::HostState;
use wasmtime::component::Linker;
use wasmtime::Engine;

/// The engine and linker shared by all routes.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// What the engines are made with (the async one alike), and the
    /// compile cache, memory bound, clock step and compile timeout routes get.
    settings: EngineSettings,
    /// The engine and linker of WASI 0.3 components, made when the first
    /// one loads: hosts without such routes never have the component-model
    /// async runtime.
    async_side: OnceLock<Result<(Engine, Linker<HostState>), String>>,
    kv: KvStores,
    sql: SqlDatabases,
    metrics: Arc<Metrics>,
    /// Every route's rate-limit buckets, kept across deploys.
    limiters: RateLimiters,
    /// Guests running on after their answer.
    background: background::Background,
    /// Outbound connections kept between requests.
    pool: Arc<OutboundPool>,
}

impl Runtime {
    /// Builds the engine (with the epoch ticker that enforces time limits)
    /// and the linker holding every import a route may use; routes' stores
    /// are on the backends `kv` says, their databases on those `sql` says.
    pub fn new(
        kv: KvStores,
        sql: SqlDatabases,
        settings: EngineSettings,
    ) -> wasmtime::Result<Runtime> {
        let engine = engine::engine(&settings)?;
        let linker = engine::linker(&engine, Concurrency::Off)?;
        let metrics = Arc::<Metrics>::default();
        Ok(Runtime {
            engine,
            linker,
            async_side: OnceLock::new(),
            kv,
            sql,
            settings,
            pool: Arc::new(OutboundPool::new(Arc::clone(&metrics))),
            metrics,
            limiters: RateLimiters::default(),
            background: background::Background::default(),
        })
    }

    /// The engine and linker for components of `concurrency`.
    fn side(&self, concurrency: Concurrency) -> Result<(&Engine, &Linker<HostState>), String> {
        match concurrency {
            Concurrency::Off => Ok((&self.engine, &self.linker)),
            Concurrency::Async => {
                let side = self.async_side.get_or_init(|| {
                    let engine = engine::async_engine(&self.settings)
                        .map_err(|err| format!("cannot make the WASI 0.3 engine: {err:#}"))?;
                    let linker = engine::linker(&engine, Concurrency::Async)
                        .map_err(|err| format!("cannot link WASI 0.3: {err:#}"))?;
                    tracing::info!("WASI 0.3 engine made (component-model async on)");
                    Ok((engine, linker))
                });
                match side {
                    Ok((engine, linker)) => Ok((engine, linker)),
                    Err(err) => Err(err.clone()),
                }
            }
        }
    }

    /// Compiles a component on the engine every route runs on, or, when it
    /// needs component-model async (a WASI 0.3 component), on the async
    /// engine.
    fn compile_either(&self, bytes: &[u8]) -> Result<(compile::Compiled, Concurrency), String> {
        let compile = |engine: &Engine| {
            compile::compile_cached(
                engine,
                self.settings.cache_dir.as_deref(),
                bytes,
                self.settings.compile_timeout,
            )
        };
        match compile(&self.engine) {
            Ok(compiled) => Ok((compiled, Concurrency::Off)),
            Err(err) if err.contains("component model async") => {
                let (engine, _) = self.side(Concurrency::Async)?;
                let compiled = compile(engine).map_err(|err| format!("does not compile: {err}"))?;
                Ok((compiled, Concurrency::Async))
            }
            Err(err) => Err(format!("does not compile: {err}")),
        }
    }

    /// The counters of every route this runtime has loaded.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Resolves when no guest runs on after its answer (streaming its
    /// body, or working on within its `wait_until` budget).
    pub(crate) async fn background_drained(&self) {
        self.background.drained().await
    }

    /// How many guests run on after their answer.
    pub(crate) fn background_running(&self) -> usize {
        self.background.running()
    }

    /// Compiles and links every route of a validated manifest. Reports every
    /// route that fails, each with the manifest line.
    pub fn load(&self, manifest: &Manifest) -> Result<RouteTable, ManifestErrors> {
        let mut errors = Vec::new();
        // A database's backend is the one the host started with.
        for (name, spec) in &manifest.sql {
            let running = self.sql.config(name).kind();
            if running != spec.backend.name() {
                errors.push(ManifestError::SqlDatabase {
                    file: manifest.file.display().to_string(),
                    line: spec.line,
                    database: name.clone(),
                    reason: format!(
                        "this host runs the database on {running}; a database's backend changes on a restart"
                    ),
                });
            }
        }
        let mut routes = Vec::new();
        let mut loaded = route::Loaded::new();
        for spec in &manifest.routes {
            match self.compile_route(spec, &mut loaded) {
                Ok(route) => routes.push(route),
                Err(reason) => errors.push(ManifestError::Component {
                    file: manifest.file.display().to_string(),
                    line: spec.line,
                    route: spec.pattern.to_string(),
                    reason,
                }),
            }
        }
        let router = Router::new(manifest.routes.iter().map(|spec| &spec.pattern));
        // A schedule's route must answer its method.
        for schedule in &manifest.schedules {
            let route = router
                .lookup(&schedule.path)
                .ok()
                .flatten()
                .and_then(|found| routes.get(found.route));
            let method = Method::from_http(&schedule.method);
            if let (Some(route), Some(method)) = (route, method) {
                if !route.handles(method) {
                    errors.push(ManifestError::Schedule {
                        file: manifest.file.display().to_string(),
                        line: schedule.line,
                        reason: format!(
                            "{} {}: route {:?} does not answer {} (it answers {})",
                            schedule.method,
                            schedule.path,
                            route.name,
                            schedule.method,
                            route.allow
                        ),
                    });
                }
            }
        }
        if !errors.is_empty() {
            return Err(ManifestErrors(errors));
        }
        Ok(RouteTable {
            router,
            routes,
            schedules: manifest.schedules.clone(),
        })
    }

    /// Applies the migrations of `manifest`'s databases that are not yet
    /// applied, each database's in one transaction; on a failure nothing
    /// more is applied and the reason names the file (and line).
    pub async fn migrate(&self, manifest: &Manifest) -> Result<(), ManifestErrors> {
        for (name, spec) in &manifest.sql {
            if spec.migrations.is_empty() {
                continue;
            }
            match self
                .sql
                .migrate(name, &spec.migrations, &self.metrics)
                .await
            {
                Ok(applied) if applied.is_empty() => {}
                Ok(applied) => tracing::info!(
                    database = %name,
                    "database {name}: applied {} migration{} ({})",
                    applied.len(),
                    if applied.len() == 1 { "" } else { "s" },
                    applied.join(", ")
                ),
                Err(reason) => {
                    return Err(ManifestErrors(vec![ManifestError::Migration {
                        file: manifest.file.display().to_string(),
                        line: spec.line,
                        database: name.clone(),
                        reason,
                    }]))
                }
            }
        }
        Ok(())
    }
}
