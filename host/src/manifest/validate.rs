//! From manifest text to a checked [`Manifest`]: one pipeline, read as the
//! list of steps in [`check`]. Every step reports what it finds and the
//! pipeline goes on, so one run names every problem; only a manifest with
//! none comes out.

use super::error::{line_of, syntax_message, ManifestError, ManifestErrors};
use super::folders::FolderRoute;
use super::kv::{KvBackendKind, KvStoreSpec};
use super::limits::{Kind, Limits, ServerLimits};
use super::mount::mount_folder_routes;
use super::policies::{CacheSettings, CorsPolicy, RawCache, RawCors};
use super::schema::{RawAdmin, RawKvStore, RawManifest, RawRoute, RawServer, WrittenLimits};
use super::{
    base_of, schedule, AdminSettings, Lookup, Manifest, RouteSpec, Secret, DEFAULT_DATA_DIR,
    DEFAULT_LISTEN,
};
use crate::capabilities::outbound::AllowedHost;
use crate::router::Pattern;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Checks manifest `text`, read from `file`, looking up what it names with
/// `lookup`.
pub(crate) fn check(
    file: &Path,
    text: &str,
    lookup: &Lookup<'_>,
) -> Result<Manifest, ManifestErrors> {
    let mut checker = Checker {
        file: file.display().to_string(),
        text,
        errors: Vec::new(),
    };
    // 1. The text into the schema: syntax, unknown keys, types.
    let mut raw: RawManifest = toml::from_str(text).map_err(|err| ManifestError::Syntax {
        file: checker.file.clone(),
        message: syntax_message(text, &err),
    })?;
    // 2. `[routes]`: every route crate found becomes an entry.
    let sources = checker.mount_folder(&mut raw, lookup);
    // 3. `[server]`: the address, the data folder, the server's limits and
    //    every route's default limits.
    let (listen, server, limits) = checker.server(&raw.server);
    let defaults = RouteDefaults {
        cors: checker.cors(raw.server.cors.as_ref(), None),
        limits,
    };
    let cache = checker.cache(raw.cache.as_ref());
    let data_dir = base_of(file).join(raw.server.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR));
    // 4. `[admin]`, `[kv.NAME]` and `[sql.NAME]` (its migrations read).
    let admin = raw.admin.as_ref().map(|admin| checker.admin(admin));
    let kv = checker.kv_stores(&raw.kv);
    let sql = {
        let text = checker.text;
        super::sql::check_tables(
            &raw.sql,
            lookup,
            &checker.file,
            &|offset| line_of(text, offset),
            &is_name,
            &mut checker.errors,
        )
    };
    let fleet =
        raw.fleet.as_ref().and_then(
            |table| match super::fleet::check(table.get_ref(), &is_name) {
                Ok(fleet) => Some(fleet),
                Err(reason) => {
                    checker.errors.push(ManifestError::Fleet {
                        file: checker.file.clone(),
                        line: checker.line(table.span().start),
                        reason,
                    });
                    None
                }
            },
        );
    // 5. Each route: its path, its shape unique, its component, its grants,
    //    its limits.
    let has_folder = raw.folder.is_some();
    let mut shapes = HashMap::new();
    let mut routes = Vec::new();
    for (raw_route, source) in raw.routes.into_iter().zip(sources) {
        let route = checker.route(
            raw_route,
            source,
            &defaults,
            has_folder,
            lookup,
            &mut shapes,
        );
        routes.extend(route);
    }
    // 6. `[[schedule]]`: each pattern, and a route for each path.
    let (file_name, errors) = (&checker.file, &mut checker.errors);
    let schedules = schedule::check_all(
        &raw.schedules,
        &routes,
        file_name,
        &|o| line_of(text, o),
        errors,
    );
    if !checker.errors.is_empty() {
        return Err(ManifestErrors(checker.errors));
    }
    Ok(Manifest {
        file: file.to_path_buf(),
        listen,
        data_dir,
        server,
        admin,
        kv,
        sql,
        fleet,
        cache,
        routes,
        schedules,
    })
}

/// What `[server]` sets for every route that does not set its own.
struct RouteDefaults {
    limits: Limits,
    cors: Option<Arc<CorsPolicy>>,
}

/// One manifest being checked, and the problems found so far.
struct Checker<'a> {
    file: String,
    text: &'a str,
    errors: Vec<ManifestError>,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// Adds `[routes]`'s crates to the entries; for each entry after that,
    /// the crate it comes from.
    fn mount_folder(
        &mut self,
        raw: &mut RawManifest,
        lookup: &Lookup<'_>,
    ) -> Vec<Option<FolderRoute>> {
        let none = vec![None; raw.routes.len()];
        let Some(folder) = &raw.folder else {
            return none;
        };
        match (lookup.discover)(folder.dir.get_ref(), &folder.target_dir(lookup.base)) {
            Ok(found) => {
                let text = self.text;
                mount_folder_routes(
                    &mut raw.routes,
                    found,
                    folder.dir.span(),
                    &self.file,
                    &mut self.errors,
                    &|offset| line_of(text, offset),
                )
            }
            Err(reason) => {
                self.errors.push(ManifestError::Folder {
                    file: self.file.clone(),
                    line: self.line(folder.dir.span().start),
                    reason,
                });
                none
            }
        }
    }

    /// An address as written in `listen`, or the default when it is not one.
    fn address(&mut self, value: &toml::Spanned<String>) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.errors.push(ManifestError::BadListen {
                    file: self.file.clone(),
                    line: self.line(value.span().start),
                    value: value.get_ref().clone(),
                });
                None
            }
        }
    }

    /// `written` over `route` and `server`, each value checked by its kind.
    fn limits(
        &mut self,
        written: &WrittenLimits,
        owner: Option<&str>,
        route: &mut Limits,
        server: &mut ServerLimits,
    ) {
        for (spec, value) in written {
            match spec.kind.parse(value.get_ref()) {
                Ok(parsed) => spec.set(route, server, parsed),
                Err(reason) => self.errors.push(ManifestError::BadLimit {
                    file: self.file.clone(),
                    line: self.line(value.span().start),
                    route: owner.map(str::to_string),
                    key: spec.key,
                    reason,
                }),
            }
        }
    }

    fn server(&mut self, raw: &RawServer) -> (SocketAddr, ServerLimits, Limits) {
        let listen = raw
            .listen
            .as_ref()
            .and_then(|value| self.address(value))
            .unwrap_or(DEFAULT_LISTEN);
        let (mut server, mut defaults) = (ServerLimits::default(), Limits::default());
        self.limits(&raw.limits, None, &mut defaults, &mut server);
        (listen, server, defaults)
    }

    /// `[cache]` checked; the defaults where it is absent or wrong.
    fn cache(&mut self, raw: Option<&toml::Spanned<RawCache>>) -> CacheSettings {
        let Some(raw) = raw else {
            return CacheSettings::default();
        };
        raw.get_ref().check().unwrap_or_else(|reason| {
            self.errors.push(ManifestError::BadLimit {
                file: self.file.clone(),
                line: self.line(raw.span().start),
                route: None,
                key: "[cache]",
                reason,
            });
            CacheSettings::default()
        })
    }

    /// A `cors = { ... }` table checked, in `route` (or `[server]`).
    fn cors(
        &mut self,
        raw: Option<&toml::Spanned<RawCors>>,
        route: Option<&str>,
    ) -> Option<Arc<CorsPolicy>> {
        let raw = raw?;
        self.policy(raw.get_ref().check(), raw.span().start, route, "cors")
            .map(Arc::new)
    }

    /// A policy's check, its reason recorded under `key` when it fails.
    fn policy<T>(
        &mut self,
        checked: Result<T, String>,
        offset: usize,
        route: Option<&str>,
        key: &'static str,
    ) -> Option<T> {
        checked
            .map_err(|reason| {
                self.errors.push(ManifestError::BadLimit {
                    file: self.file.clone(),
                    line: self.line(offset),
                    route: route.map(str::to_string),
                    key,
                    reason,
                })
            })
            .ok()
    }

    fn admin(&mut self, raw: &RawAdmin) -> AdminSettings {
        let mut admin = AdminSettings::default();
        if let Some(addr) = raw.listen.as_ref().and_then(|value| self.address(value)) {
            admin.listen = addr;
        }
        if let Some(name) = &raw.token_env {
            admin.token_env = name.clone();
        }
        admin.deploy_secrets = raw.deploy_secrets.clone();
        if let Some(value) = &raw.max_upload {
            match Kind::Size.parse(value.get_ref()) {
                Ok(bytes) => admin.max_upload = usize::try_from(bytes).unwrap_or(usize::MAX),
                Err(reason) => self.errors.push(ManifestError::BadLimit {
                    file: self.file.clone(),
                    line: self.line(value.span().start),
                    route: None,
                    key: "max_upload",
                    reason,
                }),
            }
        }
        admin
    }

    /// Each `[kv.NAME]` table: a store name, a known backend, and a
    /// `url_env` exactly when the backend is on the network.
    fn kv_stores(
        &mut self,
        raw: &BTreeMap<String, toml::Spanned<RawKvStore>>,
    ) -> BTreeMap<String, KvStoreSpec> {
        let mut stores = BTreeMap::new();
        for (name, table) in raw {
            let line = self.line(table.span().start);
            let fail = |checker: &mut Self, reason: String| {
                checker.errors.push(ManifestError::KvStore {
                    file: checker.file.clone(),
                    line,
                    store: name.clone(),
                    reason,
                });
            };
            if !is_name(name) {
                fail(
                    self,
                    "not a valid store name (letters, digits, `_` and `-`, not starting with a digit)"
                        .into(),
                );
                continue;
            }
            let table = table.get_ref();
            let written = table.backend.as_ref().map(|b| b.get_ref().as_str());
            let backend =
                match super::backend_named(written, KvBackendKind::Embedded, &KvBackendKind::NAMES)
                {
                    Ok(backend) => backend,
                    Err(reason) => {
                        fail(self, reason);
                        continue;
                    }
                };
            let url_env = table.url_env.as_ref().map(|v| v.get_ref().clone());
            match (backend, &url_env) {
                (KvBackendKind::Embedded, Some(_)) => {
                    fail(
                        self,
                        "url_env is for the redis and postgres backends".into(),
                    );
                    continue;
                }
                (KvBackendKind::Redis | KvBackendKind::Postgres, None) => {
                    fail(
                        self,
                        format!(
                            "the {} backend needs url_env, the host environment variable holding its URL",
                            backend.name()
                        ),
                    );
                    continue;
                }
                (_, Some(var)) if !is_name(var) => {
                    fail(self, format!("url_env {var:?} is not a variable name"));
                    continue;
                }
                _ => {}
            }
            let max_size = match super::max_size_of(
                table.max_size.as_ref(),
                backend == KvBackendKind::Embedded,
                crate::capabilities::kv::DEFAULT_MAX_SIZE,
                "max_size is for the embedded backend (bound a Redis or PostgreSQL server with its own quotas, such as Redis's maxmemory)",
            ) {
                Ok(bytes) => bytes,
                Err(reason) => {
                    fail(self, reason);
                    continue;
                }
            };
            stores.insert(
                name.clone(),
                KvStoreSpec {
                    backend,
                    url_env,
                    max_size,
                    line,
                },
            );
        }
        stores
    }

    /// One route checked; `None` when its path or component is unusable
    /// (the reasons are recorded).
    fn route(
        &mut self,
        raw: RawRoute,
        source: Option<FolderRoute>,
        defaults: &RouteDefaults,
        has_folder: bool,
        lookup: &Lookup<'_>,
        shapes: &mut HashMap<String, (String, usize)>,
    ) -> Option<RouteSpec> {
        let line = self.line(raw.path.span().start);
        let name = raw.path.get_ref().clone();
        let fail = |checker: &mut Self, make: &dyn Fn(String, usize, String) -> ManifestError| {
            checker
                .errors
                .push(make(checker.file.clone(), line, name.clone()));
        };

        let pattern = match Pattern::parse(&name) {
            Ok(pattern) => Some(pattern),
            Err(reason) => {
                fail(self, &|file, line, route| ManifestError::BadPath {
                    file,
                    line,
                    route,
                    reason: reason.clone(),
                });
                None
            }
        };
        if let Some(pattern) = &pattern {
            self.claim_shape(pattern, &name, line, shapes);
        }

        let written = raw.component.as_ref().map(|c| c.get_ref().clone());
        // With [routes], mount_folder_routes reported a missing component.
        if written.is_none() && !has_folder {
            fail(self, &|file, line, route| ManifestError::NoComponent {
                file,
                line,
                route,
                folder: false,
            });
        }
        let component = written.as_deref().and_then(lookup.component);
        if let (Some(written), None) = (&written, &component) {
            fail(self, &|file, line, route| ManifestError::MissingComponent {
                file,
                line,
                route,
                component: written.clone(),
            });
        }

        for store in &raw.kv {
            if !is_name(store) {
                fail(self, &|file, line, route| ManifestError::BadName {
                    file,
                    line,
                    route,
                    what: "key-value store",
                    name: store.clone(),
                });
            }
        }
        for database in &raw.sql {
            if !is_name(database) {
                fail(self, &|file, line, route| ManifestError::BadName {
                    file,
                    line,
                    route,
                    what: "SQL database",
                    name: database.clone(),
                });
            }
        }

        // The environment: plain values, then secrets, sorted by name.
        let mut env: Vec<(String, String)> = Vec::new();
        for (var, value) in &raw.env {
            if !is_name(var) {
                fail(self, &|file, line, route| ManifestError::BadName {
                    file,
                    line,
                    route,
                    what: "env var",
                    name: var.clone(),
                });
            }
            env.push((var.clone(), value.clone()));
        }
        let mut secrets = raw.secrets.clone();
        secrets.sort();
        for secret in &secrets {
            if !is_name(secret) {
                fail(self, &|file, line, route| ManifestError::BadName {
                    file,
                    line,
                    route,
                    what: "secret",
                    name: secret.clone(),
                });
                continue;
            }
            if env.iter().any(|(existing, _)| existing == secret) {
                fail(self, &|file, line, route| ManifestError::DuplicateEnv {
                    file,
                    line,
                    route,
                    name: secret.clone(),
                });
                continue;
            }
            let (file, route, name) = (self.file.clone(), name.clone(), secret.clone());
            let problem = match (lookup.secret)(secret) {
                Secret::Value(value) => {
                    env.push((secret.clone(), value));
                    continue;
                }
                Secret::Missing => ManifestError::MissingSecret {
                    file,
                    line,
                    route,
                    name,
                },
                Secret::NotDeployable => ManifestError::SecretNotDeployable {
                    file,
                    line,
                    route,
                    name,
                },
            };
            self.errors.push(problem);
        }

        let mut allowed_outbound_hosts = Vec::new();
        for entry in &raw.allowed_outbound_hosts {
            match AllowedHost::parse(entry.get_ref()) {
                Ok(allowed) => allowed_outbound_hosts.push(allowed),
                Err(reason) => self.errors.push(ManifestError::BadOutboundHost {
                    file: self.file.clone(),
                    line: self.line(entry.span().start),
                    route: name.clone(),
                    reason,
                }),
            }
        }

        let mut limits = defaults.limits.clone();
        // Routes take no server limits: the schema refused them.
        let mut unused = ServerLimits::default();
        self.limits(&raw.limits, Some(&name), &mut limits, &mut unused);

        // Edge policies: the route's CORS table replaces `[server]`'s.
        let cors = match &raw.cors {
            Some(_) => self.cors(raw.cors.as_ref(), Some(&name)),
            None => defaults.cors.clone(),
        };
        let rate_limit = raw.rate_limit.as_ref().and_then(|table| {
            self.policy(
                table.get_ref().check(),
                table.span().start,
                Some(&name),
                "rate_limit",
            )
        });

        Some(RouteSpec {
            pattern: pattern?,
            component: component?,
            source,
            line,
            kv: raw.kv,
            sql: raw.sql,
            env,
            secrets,
            allowed_outbound_hosts,
            allow_private_networks: raw.allow_private_networks,
            cache: raw.cache,
            spin_headers: raw.spin_headers,
            cors,
            rate_limit,
            limits,
        })
    }

    /// Records that the route `name` on `line` answers `pattern`'s paths,
    /// unless an earlier route does (`/a/$x` and `/A/$y` claim the same
    /// paths); `shapes` holds those seen, with the route and line that
    /// claimed each.
    fn claim_shape(
        &mut self,
        pattern: &Pattern,
        name: &str,
        line: usize,
        shapes: &mut HashMap<String, (String, usize)>,
    ) {
        match shapes.get(&pattern.shape()) {
            Some((first, first_line)) => self.errors.push(ManifestError::DuplicatePattern {
                file: self.file.clone(),
                line,
                route: name.to_string(),
                first: first.clone(),
                first_line: *first_line,
            }),
            None => {
                shapes.insert(pattern.shape(), (name.to_string(), line));
            }
        }
    }
}

/// Names of env vars, secrets and stores: what a shell and a key would accept.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
