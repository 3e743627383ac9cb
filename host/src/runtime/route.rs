//! A route ready to serve ([`CompiledRoute`]: compiled, pre-linked, its
//! exports read and type-checked, its grants resolved), and the immutable
//! [`RouteTable`] of one manifest's routes.

use super::compile::{read_component, Compiled};
use super::engine::Concurrency;
use super::store::{Grants, HostState};
use super::Runtime;
use crate::capabilities::kv::KvAccess;
use crate::capabilities::outbound::OutboundPolicy;
use crate::capabilities::sql::SqlAccess;
use crate::edge::RateLimiter;
use crate::manifest::{CorsPolicy, Limits, RouteSpec, ScheduleSpec};
use crate::metrics::{RouteMetrics, RunningGuard};
use crate::router::{Match, Params, PathError, Router};
use crate::wit::{check_method_export, Method};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{ComponentExportIndex, InstancePre};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// The export a standard `wasi:http/proxy` component answers with.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// The export a WASI 0.3 HTTP component (`wasi:http/service`, what Spin 4
/// builds) answers with.
const HANDLER_P3: &str = "wasi:http/handler@0.3";

/// The import of a route that reads its request body as it arrives.
const REQUEST_BODY: &str = "edge:route/request-body@0.1.0";

/// The components one load has read and compiled, by file, each with the
/// hash of its bytes: routes that share a component (a TypeScript app's)
/// share its compiled code, and its bytes are read and hashed once.
pub(super) type Loaded = std::collections::HashMap<PathBuf, (u64, Compiled, Concurrency)>;

/// A component that answers every method itself: a `wasi:http/proxy`
/// (WASI 0.2) or `wasi:http/service` (WASI 0.3) component.
pub(super) enum Proxy {
    P2(ProxyPre<HostState>),
    P3(ServicePre<HostState>),
}

/// One route, ready to serve: compiled, pre-linked and with its grants.
pub struct CompiledRoute {
    /// The route's pattern, as written in the manifest.
    pub(crate) name: Arc<str>,
    /// The component file it was compiled from.
    pub(crate) component: PathBuf,
    /// Its entry in the compile cache, if it has one.
    pub(crate) compiled: Option<PathBuf>,
    /// Its stores are made on the engine it was compiled for
    /// (`pre.engine()`).
    pub(super) pre: InstancePre<HostState>,
    /// Set for a standard `wasi:http/proxy` or `wasi:http/service`
    /// component: every method goes to it.
    pub(super) proxy: Option<Proxy>,
    /// Each method's export, by [`Method::index`].
    pub(super) handlers: [Option<ComponentExportIndex>; Method::ALL.len()],
    /// It imports `request-body`: its request bodies are streamed to it,
    /// not read whole first.
    pub(crate) streams_body: bool,
    /// A proxy component that gets Spin's request headers.
    pub(crate) spin_headers: bool,
    /// The `Allow` header's value, computed at load.
    pub(crate) allow: String,
    /// What each of its stores gets.
    pub(super) grants: Grants,
    pub(crate) limits: Limits,
    /// The route's counters (shared with earlier tables that had its pattern).
    pub(crate) metrics: Arc<RouteMetrics>,
    /// Its answers may be stored in the host's cache.
    pub(crate) cache: bool,
    pub(crate) cors: Option<Arc<CorsPolicy>>,
    /// Its clients' buckets (shared with earlier tables that had its
    /// pattern and policy).
    pub(crate) rate_limit: Option<Arc<RateLimiter>>,
    /// Its component and settings, hashed: what its cache entries belong to.
    pub(crate) fingerprint: u64,
}

impl CompiledRoute {
    /// Whether the component exports a handler for `method`.
    pub(crate) fn handles(&self, method: Method) -> bool {
        self.proxy.is_some() || self.handlers[method.index()].is_some()
    }

    /// Whether this is a standard `wasi:http/proxy` or `wasi:http/service` component.
    pub(crate) fn is_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    /// Whether this is a WASI 0.3 (`wasi:http/service`) component.
    pub(crate) fn is_p3(&self) -> bool {
        matches!(self.proxy, Some(Proxy::P3(_)))
    }

    /// A slot to run one instance, or `None` when `max_concurrency` are
    /// running, counting those still running on earlier deployments of this
    /// route's pattern.
    pub(crate) fn try_reserve(&self) -> Option<RunningGuard> {
        self.metrics.try_start(self.limits.max_concurrency)
    }
}

/// An immutable snapshot of every route, built from one validated manifest.
pub struct RouteTable {
    pub(super) router: Router,
    pub(super) routes: Vec<CompiledRoute>,
    /// The routes the host calls on a schedule.
    pub(super) schedules: Vec<ScheduleSpec>,
}

impl RouteTable {
    /// The route for a raw request path and its decoded params.
    pub fn lookup(&self, path: &str) -> Result<Option<(&CompiledRoute, Params)>, PathError> {
        Ok(self
            .router
            .lookup(path)?
            .and_then(|Match { route, params }| Some((self.routes.get(route)?, params))))
    }

    /// The manifest's `[[schedule]]` entries.
    pub(crate) fn schedules(&self) -> &[ScheduleSpec] {
        &self.schedules
    }

    /// The routes in manifest order.
    pub(crate) fn routes(&self) -> &[CompiledRoute] {
        &self.routes
    }

    /// Where `route` (one of this table's) is in [`RouteTable::routes`].
    pub(crate) fn index_of(&self, route: &CompiledRoute) -> Option<usize> {
        self.routes.iter().position(|r| std::ptr::eq(r, route))
    }
}

impl Runtime {
    /// Compiles (or loads from the cache) and links one route, reading and
    /// type-checking its exports; the reason when it cannot serve.
    pub(super) fn compile_route(
        &self,
        spec: &RouteSpec,
        loaded: &mut Loaded,
    ) -> Result<CompiledRoute, String> {
        if spec.limits.memory > self.settings.max_memory {
            return Err(format!(
                "memory limit of {} bytes is over the {} bytes per instance this host reserved when it started; restart the host with this manifest to raise it",
                spec.limits.memory, self.settings.max_memory
            ));
        }
        let file = spec.component.display();
        let (
            content,
            Compiled {
                component, entry, ..
            },
            concurrency,
        ) = match loaded.get(&spec.component) {
            // The routes of one TypeScript app share their component.
            Some(found) => found.clone(),
            None => {
                let bytes = read_component(&spec.component)?;
                let started = std::time::Instant::now();
                let (compiled, concurrency) = self
                    .compile_either(&bytes)
                    .map_err(|err| format!("{file} {err}"))?;
                let how = if compiled.cached {
                    "loaded from the compile cache"
                } else {
                    "compiled"
                };
                tracing::info!(route = %spec.pattern, "{how} in {:?}", started.elapsed());
                let content = content_hash(&bytes);
                let found = (content, compiled, concurrency);
                loaded.insert(spec.component.clone(), found.clone());
                found
            }
        };
        let (engine, linker) = self.side(concurrency)?;

        let ty = component.component_type();
        let streams_body = ty.imports(engine).any(|(name, _)| name == REQUEST_BODY);
        let imports_spin = ty
            .imports(engine)
            .any(|(name, _)| name.starts_with("spin:") || name.starts_with("fermyon:spin/"));
        let mut handlers = [None; Method::ALL.len()];
        for method in Method::ALL {
            if ty.get_export(engine, method.export_name()).is_some() {
                handlers[method.index()] = component.get_export_index(None, method.export_name());
            }
        }
        let has_methods = handlers.iter().any(Option::is_some);
        let exports = |prefix: &str| ty.exports(engine).any(|(name, _)| name.starts_with(prefix));
        let (exports_proxy, exports_p3) = (exports(INCOMING_HANDLER), exports(HANDLER_P3));
        // What it imports first: a component of another platform says so
        // there, whatever it exports.
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|err| unprovided_import(&file.to_string(), &err))?;
        if !has_methods && !exports_proxy && !exports_p3 {
            return Err(format!(
                "{file} exports no method handler (get, post, put, patch, delete, head, options), no wasi:http/incoming-handler@0.2 and no wasi:http/handler@0.3; is it built with guest_sdk::route!?"
            ));
        }
        let proxy = if has_methods {
            None
        } else if exports_p3 {
            Some(Proxy::P3(ServicePre::new(pre.clone()).map_err(|err| {
                format!("{file}: its wasi:http/handler@0.3 export is not one the host can call: {err:#}")
            })?))
        } else {
            Some(Proxy::P2(ProxyPre::new(pre.clone()).map_err(|err| {
                format!("{file}: its wasi:http/incoming-handler export is not one the host can call: {err:#}")
            })?))
        };
        for method in Method::ALL {
            if handlers[method.index()].is_none() {
                continue;
            }
            let name = method.export_name();
            let Some(ComponentItem::ComponentFunc(func)) =
                ty.get_export(engine, name).map(|e| e.ty)
            else {
                return Err(format!("{file}: export `{name}` is not a function"));
            };
            check_method_export(&func, &pre).map_err(|err| {
                format!("{file}: export `{name}` is not `func(req: request) -> response`: {err:#}")
            })?;
        }

        let sql = spec
            .sql
            .iter()
            .map(|database| {
                self.sql
                    .handle(database, &self.metrics)
                    .map_err(|err| format!("cannot open SQL database {database}: {err}"))
            })
            .collect::<Result<Arc<[_]>, String>>()?;
        let name: Arc<str> = Arc::from(spec.pattern.as_str());
        let fingerprint = fingerprint(content, spec);
        Ok(CompiledRoute {
            name: Arc::clone(&name),
            component: spec.component.clone(),
            compiled: entry,
            pre,
            allow: allow_header(proxy.is_some(), &handlers),
            streams_body,
            // Spin's headers cost a guest that copies every request header
            // (most wasi:http libraries do) about a microsecond each: given
            // to the components built for Spin, or where the manifest says.
            spin_headers: spec.spin_headers.unwrap_or(exports_p3 || imports_spin),
            proxy,
            handlers,
            grants: Grants {
                route: name,
                env: spec.env.clone().into(),
                kv: KvAccess {
                    granted: spec
                        .kv
                        .iter()
                        .map(|store| self.kv.handle(store, &self.metrics))
                        .collect(),
                    // Within the route's own time.
                    timeout: spec.limits.kv_timeout.min(spec.limits.timeout),
                    max_key: spec.limits.max_kv_key,
                    max_value: spec.limits.max_kv_value,
                },
                sql: SqlAccess {
                    granted: sql,
                    timeout: spec.limits.sql_timeout.min(spec.limits.timeout),
                    max_rows: spec.limits.max_sql_rows,
                    max_result: spec.limits.max_sql_result,
                    max_statement: spec.limits.max_sql_statement,
                    max_params: spec.limits.max_sql_params,
                },
                outbound: Arc::new(OutboundPolicy {
                    allowed: spec.allowed_outbound_hosts.clone(),
                    allow_private_networks: spec.allow_private_networks,
                    timeout: spec.limits.outbound_timeout,
                    max_requests: spec.limits.max_outbound_requests,
                    max_response: spec.limits.max_outbound_response,
                }),
                pool: Arc::clone(&self.pool),
                memory: spec.limits.memory,
                cpu_time: spec.limits.cpu_time,
                clock: self.settings.clock_resolution,
            },
            limits: spec.limits.clone(),
            metrics: self.metrics.route(spec.pattern.as_str()),
            cache: spec.cache,
            cors: spec.cors.clone(),
            rate_limit: spec
                .rate_limit
                .as_ref()
                .map(|policy| self.limiters.for_route(spec.pattern.as_str(), policy)),
            fingerprint,
        })
    }
}

/// Why a component cannot be linked: the import the host does not
/// provide, named, and for an interface of Spin's, which ones it does.
fn unprovided_import(file: &str, err: &wasmtime::Error) -> String {
    let reason = format!("{err:#}");
    let spin = if reason.contains("spin:") || reason.contains("fermyon:") {
        " (of Spin's interfaces this host provides spin:variables@3.0.0, spin:key-value@3.0.0 and spin:sqlite@3.1.0)"
    } else {
        ""
    };
    format!("{file} imports something the host does not provide: {reason}{spin}")
}

/// A route's component and everything the manifest sets for it, hashed: two
/// routes with the same fingerprint answer alike.
fn fingerprint(content: u64, spec: &RouteSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    content.hash(&mut hasher);
    let settings = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{:?}|{:?}|{:?}",
        spec.pattern.as_str(),
        spec.kv,
        spec.sql,
        spec.env,
        spec.allowed_outbound_hosts,
        spec.allow_private_networks,
        spec.cache,
        spec.spin_headers,
        spec.cors,
        spec.rate_limit,
        spec.limits
    );
    settings.hash(&mut hasher);
    hasher.finish()
}

/// A hash of a component's bytes, for [`fingerprint`].
fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The `Allow` header of a route: its methods, `HEAD` when it has `GET`, and
/// `OPTIONS` (the host answers both for it), sorted.
fn allow_header(proxy: bool, handlers: &[Option<ComponentExportIndex>]) -> String {
    let mut allowed: Vec<&str> = Method::ALL
        .into_iter()
        .filter(|m| proxy || handlers[m.index()].is_some())
        .map(Method::as_str)
        .collect();
    if (proxy || handlers[Method::Get.index()].is_some()) && !allowed.contains(&"HEAD") {
        allowed.push("HEAD");
    }
    if !allowed.contains(&"OPTIONS") {
        allowed.push("OPTIONS");
    }
    allowed.sort_unstable();
    allowed.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::kv::DiskKv;
    use crate::router::Pattern;
    use crate::runtime::EngineSettings;
    use std::time::Duration;

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
            clock_resolution: Duration::from_millis(1),
            compile_timeout: Duration::from_secs(60),
        };
        let runtime = Runtime::new(
            crate::capabilities::kv::KvStores::new(Arc::new(kv)),
            crate::capabilities::sql::SqlDatabases::none(),
            settings,
        )
        .unwrap();
        runtime.compile_route(
            &RouteSpec {
                pattern: Pattern::parse("/t").unwrap(),
                component: file,
                source: None,
                line: 1,
                kv: Vec::new(),
                sql: Vec::new(),
                env: Vec::new(),
                secrets: Vec::new(),
                allowed_outbound_hosts: Vec::new(),
                allow_private_networks: false,
                cache: true,
                spin_headers: None,
                cors: None,
                rate_limit: None,
                limits: Limits::default(),
            },
            &mut Loaded::new(),
        )
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

    #[test]
    fn a_component_needing_a_refused_feature_fails_to_load_naming_it() {
        for (core, feature) in [
            ("(memory i64 1)", "memory64"),
            ("(memory 1 1 shared)", "threads"),
            ("(memory 1) (memory 1)", "multi-memory"),
            (
                "(func (param v128) (result v128) local.get 0 local.get 0 i8x16.relaxed_swizzle)",
                "relaxed SIMD",
            ),
            ("(func (param i64 i64 i64 i64) (result i64 i64) local.get 0 local.get 1 local.get 2 local.get 3 i64.add128)", "wide arithmetic"),
            ("(type (struct))", "gc"),
        ] {
            let error = compile(&format!(
                r#"(component (core module $x {core}) {LIFTED_NOTHING})"#
            ))
            .err()
            .unwrap();
            assert!(error.contains("refuses"), "{feature}: {error}");
            assert!(
                error.to_lowercase().contains(&feature.to_lowercase()),
                "{feature}: {error}"
            );
        }
    }
}
