//! `manifest.toml`: parsed strictly (unknown keys are errors), then validated
//! into a [`Manifest`], the only form the server accepts. Every problem found
//! is reported, each naming the file, the line and the route.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"   # overridden by `serve --listen`
//! data_dir = ".edgehost"      # where key-value stores persist, relative to this file
//!
//! [[route]]
//! path = "/api/posts/$postId"
//! component = "target/wasm32-wasip2/release/api_posts_postid.wasm"
//! kv = ["posts"]                      # stores the route may open
//! env = { LOG_LEVEL = "debug" }       # plain values the route sees as env vars
//! secrets = ["STRIPE_WEBHOOK_SECRET"] # copied from the host's environment at load
//! ```

use crate::capabilities::outbound::AllowedHost;
use crate::folders::{self, FolderRoute};
use crate::router::{Pattern, PatternError};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where the host listens when neither the manifest nor the command line says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where key-value data lives by default, relative to the manifest.
pub const DEFAULT_DATA_DIR: &str = ".edgehost";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    server: RawServer,
    admin: Option<RawAdmin>,
    /// `[routes]`: mount every route crate under a folder.
    #[serde(rename = "routes")]
    folder: Option<RawFolder>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

/// `[admin]`: the deploy and metrics API, off unless this table (or `serve
/// --admin`) is given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
    token_env: Option<String>,
    max_upload: Option<Spanned<Quantity>>,
    deploy_secrets: Option<Vec<String>>,
}

/// `[routes]`: file-based routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFolder {
    /// The folder searched for route crates, relative to the manifest.
    dir: Spanned<String>,
    /// Cargo's target folder, relative to the manifest (default `target`).
    target_dir: Option<String>,
}

impl RawFolder {
    /// `target_dir` as written, else where cargo puts builds.
    fn target_dir(&self) -> String {
        self.target_dir.clone().unwrap_or_else(default_target_dir)
    }
}

/// Cargo's target folder when `[routes]` names none and `CARGO_TARGET_DIR`
/// is not set.
pub const DEFAULT_TARGET_DIR: &str = "target";

/// Cargo's target folder for `[routes]` without `target_dir`: where cargo
/// puts builds, `CARGO_TARGET_DIR` or `target` next to the manifest.
pub fn default_target_dir() -> String {
    std::env::var("CARGO_TARGET_DIR")
        .ok()
        .filter(|dir| !dir.is_empty())
        .unwrap_or_else(|| DEFAULT_TARGET_DIR.to_string())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    data_dir: Option<String>,
    header_timeout: Option<Spanned<Quantity>>,
    body_timeout: Option<Spanned<Quantity>>,
    drain_timeout: Option<Spanned<Quantity>>,
    max_header_bytes: Option<Spanned<Quantity>>,
    max_headers: Option<Spanned<Quantity>>,
    max_instances: Option<Spanned<Quantity>>,
    // Defaults for every route's limits.
    timeout: Option<Spanned<Quantity>>,
    cpu_time: Option<Spanned<Quantity>>,
    memory: Option<Spanned<Quantity>>,
    max_body: Option<Spanned<Quantity>>,
    max_response: Option<Spanned<Quantity>>,
    max_concurrency: Option<Spanned<Quantity>>,
    outbound_timeout: Option<Spanned<Quantity>>,
    max_outbound_requests: Option<Spanned<Quantity>>,
    max_outbound_response: Option<Spanned<Quantity>>,
}

/// A limit as written: a number, or a string with a unit (`"64MiB"`, `"5s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Quantity {
    Number(u64),
    Text(String),
}

/// Limits that apply to each route. The defaults are here; `[server]` may
/// change them for every route, and a route's own keys change them for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall time one request may spend in the guest; past it the instance is
    /// dropped and the client gets 504. 10 s bounds a stuck route while
    /// leaving far more than an API call needs.
    pub timeout: Duration,
    /// Time the guest may spend running on a host thread, checked at every
    /// epoch tick (waiting, such as for an outbound request or a sleep, does
    /// not count); past it, 500. `None`: only `timeout` bounds it. Workers
    /// gives 10 ms to 5 min of CPU, Fastly 50 ms.
    pub cpu_time: Option<Duration>,
    /// Linear memory of one instance. 128 MiB is what Workers, Fastly and
    /// Vercel give an isolate.
    pub memory: usize,
    /// Largest request body; larger is 413 without reading the rest.
    pub max_body: usize,
    /// Largest response body a guest may return; larger is 500.
    pub max_response: usize,
    /// Instances of the route running at once; past it, 503 with
    /// `Retry-After`, so one hot or stuck route cannot take every thread.
    pub max_concurrency: usize,
    /// Time for one outbound request to answer (its head); the route's
    /// `timeout` bounds everything the request does as well.
    pub outbound_timeout: Duration,
    /// Outbound requests one incoming request may make (Workers allows 50).
    pub max_outbound_requests: usize,
    /// Largest outbound response body a route may read.
    pub max_outbound_response: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            cpu_time: None,
            memory: 128 * MIB,
            max_body: MIB,
            max_response: 16 * MIB,
            max_concurrency: 64,
            outbound_timeout: Duration::from_secs(10),
            max_outbound_requests: 50,
            max_outbound_response: 16 * MIB,
        }
    }
}

/// Limits on clients, for the whole server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time a client has to send a request head (slow-loris defence).
    pub header_timeout: Duration,
    /// Time a client has to send a whole request body; past it, 408.
    pub body_timeout: Duration,
    /// Largest request head in bytes; larger is 431. 64 KiB holds any sane
    /// set of headers and cookies (Cloudflare allows 128 KB in all).
    pub max_header_bytes: usize,
    /// Most header lines in one request; more is 431.
    pub max_headers: usize,
    /// On shutdown, how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * KIB,
            max_headers: 100,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: Spanned<String>,
    /// Absent for a route crate found by `[routes]` that this entry configures.
    component: Option<Spanned<String>>,
    #[serde(default)]
    kv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<String>,
    /// Origins the route may send HTTP requests to.
    #[serde(default)]
    allowed_outbound_hosts: Vec<Spanned<String>>,
    timeout: Option<Spanned<Quantity>>,
    cpu_time: Option<Spanned<Quantity>>,
    memory: Option<Spanned<Quantity>>,
    max_body: Option<Spanned<Quantity>>,
    max_response: Option<Spanned<Quantity>>,
    max_concurrency: Option<Spanned<Quantity>>,
    outbound_timeout: Option<Spanned<Quantity>>,
    max_outbound_requests: Option<Spanned<Quantity>>,
    max_outbound_response: Option<Spanned<Quantity>>,
}

/// A checked manifest: every pattern parses, no two collide, every component
/// file exists and every secret was found.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub clients: ClientLimits,
    /// Instances alive at once across all routes (the instance pool's
    /// size). Past it a request gets 503, like a route at its concurrency.
    pub max_instances: usize,
    /// The admin API's settings when `[admin]` is given.
    pub admin: Option<AdminSettings>,
    pub routes: Vec<RouteSpec>,
}

/// Where the admin API listens and how it checks callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Its own address, loopback unless told otherwise.
    pub listen: SocketAddr,
    /// The host environment variable holding the bearer token.
    pub token_env: String,
    /// Largest component one upload may carry; larger is 413.
    pub max_upload: usize,
    /// Host environment variables a deployed manifest may name in
    /// `secrets`; `None`: those the manifest the host started with names.
    pub deploy_secrets: Option<Vec<String>>,
}

/// Where the admin API listens when `[admin]` gives no `listen`.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_env: "EDGEHOST_ADMIN_TOKEN".into(),
            max_upload: 64 * MIB,
            deploy_secrets: None,
        }
    }
}

/// The instance pool's size unless `[server] max_instances` says otherwise.
pub const DEFAULT_MAX_INSTANCES: usize = 1000;

/// One route as the manifest grants it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub pattern: Pattern,
    /// The component file, resolved against the manifest's folder.
    pub component: PathBuf,
    /// The route crate's folder and package when `[routes]` found it.
    pub source: Option<FolderRoute>,
    /// The line of the route's `path`, for error messages.
    pub line: usize,
    /// Key-value stores the route may open.
    pub kv: Vec<String>,
    /// Environment the route sees: `env` values, then secrets (sorted by name).
    pub env: Vec<(String, String)>,
    /// Which of `env` are secrets (their names, sorted), for listings that
    /// must not show their values.
    pub secrets: Vec<String>,
    /// Origins the route may send HTTP requests to; empty: none.
    pub allowed_outbound_hosts: Vec<AllowedHost>,
    pub limits: Limits,
}

/// One problem in a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: cannot read the manifest: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}:{line}: `listen = {value:?}` is not an address such as \"127.0.0.1:8080\"")]
    BadListen {
        file: String,
        line: usize,
        value: String,
    },
    #[error("{file}:{line}: route {route:?}: bad path: {reason}")]
    BadPath {
        file: String,
        line: usize,
        route: String,
        reason: PatternError,
    },
    #[error("{file}:{line}: route {route:?} claims the same paths as route {first:?} on line {first_line}")]
    DuplicatePattern {
        file: String,
        line: usize,
        route: String,
        first: String,
        first_line: usize,
    },
    #[error("{file}:{line}: route {route:?}: component file {component} not found (build the routes first: `edgehost build`)")]
    MissingComponent {
        file: String,
        line: usize,
        route: String,
        component: String,
    },
    #[error("{file}:{line}: route {route:?}: allowed_outbound_hosts: {reason}")]
    BadOutboundHost {
        file: String,
        line: usize,
        route: String,
        reason: String,
    },
    #[error("{file}:{line}: [routes]: {reason}")]
    Folder {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}:{line}: route crates {first} and {second} both map to {route:?}")]
    FolderClash {
        file: String,
        line: usize,
        route: String,
        first: String,
        second: String,
    },
    #[error("{file}:{line}: route {route:?} names a component, but route crate {crate_dir} already maps to it; drop `component` to configure the crate's route")]
    FolderAndComponent {
        file: String,
        line: usize,
        route: String,
        crate_dir: String,
    },
    #[error("{file}:{line}: route {route:?} has no `component`{}", if *.folder { ", and no route crate under [routes] maps to it" } else { " (or a [routes] folder with a route crate for it)" })]
    NoComponent {
        file: String,
        line: usize,
        route: String,
        /// Whether the manifest has `[routes]`.
        folder: bool,
    },
    #[error("{file}:{line}: route {route:?}: secret {name} is not set in the host's environment")]
    MissingSecret {
        file: String,
        line: usize,
        route: String,
        name: String,
    },
    #[error("{file}:{line}: route {route:?}: {what} {name:?} is not a valid name (letters, digits and `_`, not starting with a digit)")]
    BadName {
        file: String,
        line: usize,
        route: String,
        what: &'static str,
        name: String,
    },
    #[error("{file}:{line}: route {route:?}: env var {name} is given twice (in `env` and `secrets`, or twice in `secrets`)")]
    DuplicateEnv {
        file: String,
        line: usize,
        route: String,
        name: String,
    },
    #[error("{file}:{line}: {}`{key}`: {reason}", in_route(.route))]
    BadLimit {
        file: String,
        line: usize,
        /// The route the limit belongs to; `None` in `[server]` and `[admin]`.
        route: Option<String>,
        key: &'static str,
        reason: String,
    },
    #[error("{file}:{line}: route {route:?}: {reason}")]
    Component {
        file: String,
        line: usize,
        route: String,
        reason: String,
    },
}

/// Every problem found in one manifest, one per line when shown.
#[derive(Debug)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

impl From<ManifestError> for ManifestErrors {
    fn from(error: ManifestError) -> Self {
        ManifestErrors(vec![error])
    }
}

/// Reads and validates the manifest at `file`, reading secrets from the
/// process environment.
pub fn load(file: &Path) -> Result<Manifest, ManifestErrors> {
    load_with_secrets(file, &|name| std::env::var(name).ok())
}

/// [`load`] with secrets looked up by `secret`.
pub fn load_with_secrets(
    file: &Path,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestErrors> {
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
        file: file.display().to_string(),
        source,
    })?;
    parse(file, &text, secret)
}

/// Validates manifest `text` as if read from `file`; `secret` looks up a
/// secret by name (the process environment, or a table in tests).
pub fn parse(
    file: &Path,
    text: &str,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestErrors> {
    let base = file.parent().unwrap_or(Path::new("."));
    parse_with(
        file,
        text,
        secret,
        &|written| {
            let path = base.join(written);
            path.is_file().then_some(path)
        },
        &|dir, target_dir| folders::discover(base, dir, target_dir),
    )
}

/// What a manifest loads its routes from, without validating anything else:
/// the `component = ...` values as written, and the route crates its
/// `[routes]` folder holds (searched from `base`, the manifest's folder).
/// What a deploy must upload and what `--watch` looks at.
pub struct Sources {
    pub components: Vec<String>,
    pub folder_routes: Vec<FolderRoute>,
}

impl Sources {
    pub fn read(text: &str, base: &Path) -> Result<Sources, String> {
        let raw: RawManifest = toml::from_str(text).map_err(|err| syntax_message(text, &err))?;
        let folder_routes = match &raw.folder {
            None => Vec::new(),
            Some(folder) => folders::discover(base, folder.dir.get_ref(), &folder.target_dir())?,
        };
        let components = raw
            .routes
            .into_iter()
            .filter_map(|route| route.component.map(Spanned::into_inner))
            .chain(folder_routes.iter().map(|route| route.component.clone()))
            .collect();
        Ok(Sources {
            components,
            folder_routes,
        })
    }
}

/// Finds the route crates of `[routes]`: given its `dir` and `target_dir`
/// as written, the crates and their URLs.
pub type Discover<'a> = dyn Fn(&str, &str) -> Result<Vec<FolderRoute>, String> + 'a;

/// [`parse`] with components found by `component`: the file for a
/// `component = ...` value as written, or `None` when there is none (a
/// deploy resolves them in the host's store of uploaded components), and
/// `[routes]` crates found by `discover`.
pub fn parse_with(
    file: &Path,
    text: &str,
    secret: &dyn Fn(&str) -> Option<String>,
    component: &dyn Fn(&str) -> Option<PathBuf>,
    discover: &Discover<'_>,
) -> Result<Manifest, ManifestErrors> {
    let file_name = file.display().to_string();
    let raw: RawManifest = toml::from_str(text).map_err(|err| ManifestError::Syntax {
        file: file_name.clone(),
        message: syntax_message(text, &err),
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut errors = Vec::new();
    let mut raw = raw;
    let mut sources = vec![None; raw.routes.len()];
    if let Some(folder) = &raw.folder {
        match discover(folder.dir.get_ref(), &folder.target_dir()) {
            Ok(found) => {
                sources = mount_folder_routes(
                    &mut raw.routes,
                    found,
                    folder.dir.span(),
                    &file_name,
                    &mut errors,
                    &line_of,
                );
            }
            Err(reason) => errors.push(ManifestError::Folder {
                file: file_name.clone(),
                line: line_of(folder.dir.span().start),
                reason,
            }),
        }
    }

    let listen = match &raw.server.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(value) => match value.get_ref().parse() {
            Ok(addr) => addr,
            Err(_) => {
                errors.push(ManifestError::BadListen {
                    file: file_name.clone(),
                    line: line_of(value.span().start),
                    value: value.get_ref().clone(),
                });
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        },
    };
    let data_dir = base.join(raw.server.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR));

    let mut limit = |route: Option<&str>,
                     key: &'static str,
                     value: &Option<Spanned<Quantity>>,
                     kind: Kind|
     -> Option<u64> {
        let value = value.as_ref()?;
        match kind.parse(value.get_ref()) {
            Ok(parsed) => Some(parsed),
            Err(reason) => {
                errors.push(ManifestError::BadLimit {
                    file: file_name.clone(),
                    line: line_of(value.span().start),
                    route: route.map(str::to_string),
                    key,
                    reason,
                });
                None
            }
        }
    };
    let server = &raw.server;
    let mut clients = ClientLimits::default();
    set_duration(
        &mut clients.header_timeout,
        limit(
            None,
            "header_timeout",
            &server.header_timeout,
            Kind::Duration,
        ),
    );
    set_duration(
        &mut clients.body_timeout,
        limit(None, "body_timeout", &server.body_timeout, Kind::Duration),
    );
    set_duration(
        &mut clients.drain_timeout,
        limit(None, "drain_timeout", &server.drain_timeout, Kind::Duration),
    );
    set_size(
        &mut clients.max_header_bytes,
        limit(
            None,
            "max_header_bytes",
            &server.max_header_bytes,
            Kind::Size,
        ),
    );
    set_size(
        &mut clients.max_headers,
        limit(None, "max_headers", &server.max_headers, Kind::Count),
    );
    let mut max_instances = DEFAULT_MAX_INSTANCES;
    set_size(
        &mut max_instances,
        limit(None, "max_instances", &server.max_instances, Kind::Count),
    );
    let max_upload = raw
        .admin
        .as_ref()
        .and_then(|admin| limit(None, "max_upload", &admin.max_upload, Kind::Size));
    let mut defaults = Limits::default();
    apply_limits(
        &mut defaults,
        None,
        [
            &server.timeout,
            &server.cpu_time,
            &server.memory,
            &server.max_body,
            &server.max_response,
            &server.max_concurrency,
            &server.outbound_timeout,
            &server.max_outbound_requests,
            &server.max_outbound_response,
        ],
        &mut limit,
    );
    let mut route_limits = Vec::new();
    for raw_route in &raw.routes {
        let mut limits = defaults.clone();
        apply_limits(
            &mut limits,
            Some(raw_route.path.get_ref()),
            [
                &raw_route.timeout,
                &raw_route.cpu_time,
                &raw_route.memory,
                &raw_route.max_body,
                &raw_route.max_response,
                &raw_route.max_concurrency,
                &raw_route.outbound_timeout,
                &raw_route.max_outbound_requests,
                &raw_route.max_outbound_response,
            ],
            &mut limit,
        );
        route_limits.push(limits);
    }

    let admin = raw.admin.as_ref().map(|raw_admin| {
        let mut admin = AdminSettings::default();
        if let Some(value) = &raw_admin.listen {
            match value.get_ref().parse() {
                Ok(addr) => admin.listen = addr,
                Err(_) => errors.push(ManifestError::BadListen {
                    file: file_name.clone(),
                    line: line_of(value.span().start),
                    value: value.get_ref().clone(),
                }),
            }
        }
        if let Some(name) = &raw_admin.token_env {
            admin.token_env = name.clone();
        }
        admin.deploy_secrets = raw_admin.deploy_secrets.clone();
        set_size(&mut admin.max_upload, max_upload);
        admin
    });

    let mut routes = Vec::new();
    // shape -> (pattern, line) of the first route with that shape
    let mut shapes: HashMap<String, (String, usize)> = HashMap::new();
    let has_folder = raw.folder.is_some();
    for ((raw_route, limits), source) in raw.routes.into_iter().zip(route_limits).zip(sources) {
        let line = line_of(raw_route.path.span().start);
        let route = raw_route.path.get_ref().clone();
        let fail = |errors: &mut Vec<ManifestError>,
                    make: &dyn Fn(String, usize, String) -> ManifestError| {
            errors.push(make(file_name.clone(), line, route.clone()));
        };
        let pattern = match Pattern::parse(&route) {
            Ok(pattern) => Some(pattern),
            Err(reason) => {
                fail(&mut errors, &|file, line, route| ManifestError::BadPath {
                    file,
                    line,
                    route,
                    reason: reason.clone(),
                });
                None
            }
        };
        if let Some(pattern) = &pattern {
            match shapes.get(&pattern.shape()) {
                Some((first, first_line)) => fail(&mut errors, &|file, line, route| {
                    ManifestError::DuplicatePattern {
                        file,
                        line,
                        route,
                        first: first.clone(),
                        first_line: *first_line,
                    }
                }),
                None => {
                    shapes.insert(pattern.shape(), (route.clone(), line));
                }
            }
        }
        let written = raw_route.component.as_ref().map(|c| c.get_ref().clone());
        // With [routes], mount_folder_routes reported a missing component.
        if written.is_none() && !has_folder {
            fail(&mut errors, &|file, line, route| {
                ManifestError::NoComponent {
                    file,
                    line,
                    route,
                    folder: false,
                }
            });
        }
        let resolved = written.as_deref().and_then(component);
        if let (Some(written), None) = (&written, &resolved) {
            fail(&mut errors, &|file, line, route| {
                ManifestError::MissingComponent {
                    file,
                    line,
                    route,
                    component: written.clone(),
                }
            });
        }
        for name in &raw_route.kv {
            if !is_name(name) {
                fail(&mut errors, &|file, line, route| ManifestError::BadName {
                    file,
                    line,
                    route,
                    what: "key-value store",
                    name: name.clone(),
                });
            }
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for (name, value) in &raw_route.env {
            if !is_name(name) {
                fail(&mut errors, &|file, line, route| ManifestError::BadName {
                    file,
                    line,
                    route,
                    what: "env var",
                    name: name.clone(),
                });
            }
            env.push((name.clone(), value.clone()));
        }
        let mut secrets = raw_route.secrets.clone();
        secrets.sort();
        for name in &secrets {
            if !is_name(name) {
                fail(&mut errors, &|file, line, route| ManifestError::BadName {
                    file,
                    line,
                    route,
                    what: "secret",
                    name: name.clone(),
                });
                continue;
            }
            if env.iter().any(|(existing, _)| existing == name) {
                fail(&mut errors, &|file, line, route| {
                    ManifestError::DuplicateEnv {
                        file,
                        line,
                        route,
                        name: name.clone(),
                    }
                });
                continue;
            }
            match secret(name) {
                Some(value) => env.push((name.clone(), value)),
                None => fail(&mut errors, &|file, line, route| {
                    ManifestError::MissingSecret {
                        file,
                        line,
                        route,
                        name: name.clone(),
                    }
                }),
            }
        }
        let mut allowed_outbound_hosts = Vec::new();
        for entry in &raw_route.allowed_outbound_hosts {
            match AllowedHost::parse(entry.get_ref()) {
                Ok(allowed) => allowed_outbound_hosts.push(allowed),
                Err(reason) => errors.push(ManifestError::BadOutboundHost {
                    file: file_name.clone(),
                    line: line_of(entry.span().start),
                    route: route.clone(),
                    reason,
                }),
            }
        }
        if let (Some(pattern), Some(component)) = (pattern, resolved) {
            routes.push(RouteSpec {
                pattern,
                component,
                source,
                line,
                kv: raw_route.kv,
                env,
                secrets,
                allowed_outbound_hosts,
                limits,
            });
        }
    }
    if errors.is_empty() {
        Ok(Manifest {
            file: file.to_path_buf(),
            listen,
            data_dir,
            clients,
            max_instances,
            admin,
            routes,
        })
    } else {
        Err(ManifestErrors(errors))
    }
}

/// Merges the route crates `[routes]` found into the manifest's routes: an
/// entry without `component` configures the crate with its path, every other
/// crate becomes a route of its own (reported at the `dir` line). Returns, for
/// each route after merging, the crate it comes from.
fn mount_folder_routes(
    routes: &mut Vec<RawRoute>,
    found: Vec<FolderRoute>,
    dir_span: std::ops::Range<usize>,
    file: &str,
    errors: &mut Vec<ManifestError>,
    line_of: &dyn Fn(usize) -> usize,
) -> Vec<Option<FolderRoute>> {
    let dir_line = line_of(dir_span.start);
    let shape_of = |path: &str| Pattern::parse(path).ok().map(|p| p.shape());
    // One crate per shape: (shape, crate, configured by an entry).
    let mut crates: Vec<(Option<String>, FolderRoute, bool)> = Vec::new();
    for route in found {
        let shape = shape_of(&route.path);
        let same =
            |(s, _, _): &&(Option<String>, FolderRoute, bool)| shape.is_some() && *s == shape;
        if let Some((_, first, _)) = crates.iter().find(same) {
            errors.push(ManifestError::FolderClash {
                file: file.to_string(),
                line: dir_line,
                route: route.path.clone(),
                first: first.crate_dir.clone(),
                second: route.crate_dir.clone(),
            });
            continue;
        }
        crates.push((shape, route, false));
    }
    let mut sources = Vec::with_capacity(routes.len() + crates.len());
    for raw in routes.iter_mut() {
        let shape = shape_of(raw.path.get_ref());
        let line = line_of(raw.path.span().start);
        let route = raw.path.get_ref().clone();
        let crate_match = crates
            .iter_mut()
            .find(|(s, _, _)| shape.is_some() && *s == shape);
        let source = match (crate_match, &raw.component) {
            (Some((_, found, claimed)), None) => {
                *claimed = true;
                raw.component = Some(Spanned::new(raw.path.span(), found.component.clone()));
                Some(found.clone())
            }
            (Some((_, found, claimed)), Some(_)) => {
                *claimed = true;
                errors.push(ManifestError::FolderAndComponent {
                    file: file.to_string(),
                    line,
                    route,
                    crate_dir: found.crate_dir.clone(),
                });
                None
            }
            (None, None) => {
                errors.push(ManifestError::NoComponent {
                    file: file.to_string(),
                    line,
                    route,
                    folder: true,
                });
                None
            }
            (None, Some(_)) => None,
        };
        sources.push(source);
    }
    for (_, found, claimed) in crates {
        if claimed {
            continue;
        }
        routes.push(RawRoute {
            path: Spanned::new(dir_span.clone(), found.path.clone()),
            component: Some(Spanned::new(dir_span.clone(), found.component.clone())),
            kv: Vec::new(),
            env: BTreeMap::new(),
            secrets: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            timeout: None,
            cpu_time: None,
            memory: None,
            max_body: None,
            max_response: None,
            max_concurrency: None,
            outbound_timeout: None,
            max_outbound_requests: None,
            max_outbound_response: None,
        });
        sources.push(Some(found));
    }
    sources
}

/// The largest count a limit may be (concurrency, instances, headers,
/// outbound requests): far above any real need, far below what would
/// overflow a semaphore or a pool.
const MAX_COUNT: u64 = 1_000_000;

/// What unit a limit is in.
#[derive(Clone, Copy)]
enum Kind {
    /// Milliseconds; written `"500ms"`, `"10s"`, `"2m"`.
    Duration,
    /// Bytes; written as a number or `"64KiB"`, `"16MiB"`, `"1GiB"` (or KB/MB/GB, powers of 1000).
    Size,
    /// A plain positive number.
    Count,
}

impl Kind {
    fn parse(self, value: &Quantity) -> Result<u64, String> {
        let parsed = match (self, value) {
            (Kind::Duration, Quantity::Number(_)) => {
                return Err("give a unit, for example \"500ms\" or \"10s\"".into())
            }
            (_, Quantity::Number(n)) => Some(*n),
            (Kind::Count, Quantity::Text(_)) => None,
            (Kind::Duration, Quantity::Text(text)) => {
                with_unit(text, &[("ms", 1), ("s", 1000), ("m", 60_000)])
            }
            (Kind::Size, Quantity::Text(text)) => with_unit(
                text,
                &[
                    ("B", 1),
                    ("KiB", 1 << 10),
                    ("MiB", 1 << 20),
                    ("GiB", 1 << 30),
                    ("KB", 1000),
                    ("MB", 1_000_000),
                    ("GB", 1_000_000_000),
                    ("", 1),
                ],
            ),
        };
        let what = match self {
            Kind::Duration => "a duration such as \"500ms\", \"10s\" or \"2m\"",
            Kind::Size => "a size such as 65536, \"64KiB\" or \"16MiB\"",
            Kind::Count => "a whole number",
        };
        match parsed {
            Some(0) => Err(format!("must be more than zero; expected {what}")),
            Some(n) if matches!(self, Kind::Count) && n > MAX_COUNT => {
                Err(format!("at most {MAX_COUNT}"))
            }
            Some(n) => Ok(n),
            None => Err(format!("expected {what}")),
        }
    }
}

/// `"<number><unit>"` with one of `units` (longest suffix wins).
fn with_unit(text: &str, units: &[(&str, u64)]) -> Option<u64> {
    let text = text.trim();
    units.iter().find_map(|(unit, factor)| {
        let number = text.strip_suffix(unit)?.trim();
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        number.parse::<u64>().ok()?.checked_mul(*factor)
    })
}

fn set_duration(slot: &mut Duration, ms: Option<u64>) {
    if let Some(ms) = ms {
        *slot = Duration::from_millis(ms);
    }
}

fn set_size(slot: &mut usize, value: Option<u64>) {
    if let Some(value) = value {
        *slot = usize::try_from(value).unwrap_or(usize::MAX);
    }
}

type LimitParser<'a> =
    dyn FnMut(Option<&str>, &'static str, &Option<Spanned<Quantity>>, Kind) -> Option<u64> + 'a;

/// `route "/x": ` before an error about a route's setting.
fn in_route(route: &Option<String>) -> String {
    route
        .as_ref()
        .map(|route| format!("route {route:?}: "))
        .unwrap_or_default()
}

/// Overrides `limits` with the keys given (timeout, cpu_time, memory,
/// max_body, max_response, max_concurrency, outbound_timeout,
/// max_outbound_requests, max_outbound_response).
fn apply_limits(
    limits: &mut Limits,
    route: Option<&str>,
    keys: [&Option<Spanned<Quantity>>; 9],
    parse: &mut LimitParser<'_>,
) {
    let [timeout, cpu_time, memory, max_body, max_response, max_concurrency, outbound_timeout, max_outbound_requests, max_outbound_response] =
        keys;
    set_duration(
        &mut limits.timeout,
        parse(route, "timeout", timeout, Kind::Duration),
    );
    if let Some(ms) = parse(route, "cpu_time", cpu_time, Kind::Duration) {
        limits.cpu_time = Some(Duration::from_millis(ms));
    }
    set_size(
        &mut limits.memory,
        parse(route, "memory", memory, Kind::Size),
    );
    set_size(
        &mut limits.max_body,
        parse(route, "max_body", max_body, Kind::Size),
    );
    set_size(
        &mut limits.max_response,
        parse(route, "max_response", max_response, Kind::Size),
    );
    set_size(
        &mut limits.max_concurrency,
        parse(route, "max_concurrency", max_concurrency, Kind::Count),
    );
    set_duration(
        &mut limits.outbound_timeout,
        parse(route, "outbound_timeout", outbound_timeout, Kind::Duration),
    );
    set_size(
        &mut limits.max_outbound_requests,
        parse(
            route,
            "max_outbound_requests",
            max_outbound_requests,
            Kind::Count,
        ),
    );
    set_size(
        &mut limits.max_outbound_response,
        parse(
            route,
            "max_outbound_response",
            max_outbound_response,
            Kind::Size,
        ),
    );
}

/// Names of env vars, secrets and stores: what a shell and a key would accept.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// toml's message, reduced to `line N: reason` with the line's text.
fn syntax_message(text: &str, err: &toml::de::Error) -> String {
    let reason = err.message();
    match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {reason} (in `{source}`)")
        }
        None => reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest folder with two component files (content does not matter here).
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"").unwrap();
        std::fs::write(dir.path().join("b.wasm"), b"").unwrap();
        dir
    }

    fn check(text: &str) -> Result<Manifest, String> {
        let dir = folder();
        let secrets = |name: &str| (name == "PRESENT").then(|| "s3cret".to_string());
        parse(&dir.path().join("manifest.toml"), text, &secrets).map_err(|errors| {
            errors
                .to_string()
                .replace(&dir.path().display().to_string(), "<dir>")
        })
    }

    /// A manifest folder with route crates under `routes/` (built or not).
    fn crates(list: &[(&str, &str, bool)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("target/wasm32-wasip2/release");
        std::fs::create_dir_all(&release).unwrap();
        for (folder, package, built) in list {
            let path = dir.path().join("routes").join(folder);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(
                path.join("Cargo.toml"),
                format!("[package]\nname = \"{package}\"\n"),
            )
            .unwrap();
            if *built {
                std::fs::write(release.join(format!("{package}.wasm")), b"").unwrap();
            }
        }
        dir
    }

    fn check_in(dir: &tempfile::TempDir, text: &str) -> Result<Manifest, String> {
        parse(&dir.path().join("manifest.toml"), text, &|_| None).map_err(|errors| {
            errors
                .to_string()
                .replace(&dir.path().display().to_string(), "<dir>")
        })
    }

    #[test]
    fn routes_folder_mounts_crates_and_entries_configure_them() {
        let dir = crates(&[
            ("api/posts/index", "api_posts", true),
            ("api/posts/$postId", "api_posts_postid", true),
            ("(admin)/stats", "stats", true),
        ]);
        let manifest = check_in(
            &dir,
            "[routes]\ndir = \"routes\"\ntarget_dir = \"target\"\n\n[[route]]\npath = \"/api/posts/$id\"\nkv = [\"posts\"]\ntimeout = \"2s\"\n",
        )
        .unwrap();
        let summary: Vec<(String, String, usize, Vec<String>)> = manifest
            .routes
            .iter()
            .map(|r| {
                (
                    r.pattern.to_string(),
                    r.source.as_ref().unwrap().crate_dir.clone(),
                    r.line,
                    r.kv.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                // The entry keeps its own spelling of the param and its line.
                (
                    "/api/posts/$id".into(),
                    "routes/api/posts/$postId".into(),
                    6,
                    vec!["posts".into()]
                ),
                ("/stats".into(), "routes/(admin)/stats".into(), 2, vec![]),
                (
                    "/api/posts".into(),
                    "routes/api/posts/index".into(),
                    2,
                    vec![]
                ),
            ]
        );
        assert_eq!(manifest.routes[0].limits.timeout, Duration::from_secs(2));
        assert!(manifest.routes[2]
            .component
            .ends_with("target/wasm32-wasip2/release/api_posts.wasm"));
    }

    #[test]
    fn routes_folder_errors_name_the_crates() {
        let dir = crates(&[
            ("api/posts/index", "api_posts", true),
            ("(v1)/api/posts", "old_posts", true),
            ("api/users/$id", "users", true),
            ("api/unbuilt", "unbuilt", false),
        ]);
        let error = check_in(
            &dir,
            "[routes]\ndir = \"routes\"\ntarget_dir = \"target\"\n\n[[route]]\npath = \"/api/users/$x\"\ncomponent = \"x.wasm\"\n\n[[route]]\npath = \"/api/nothing\"\n",
        )
        .unwrap_err();
        for expected in [
            "<dir>/manifest.toml:2: route crates routes/(v1)/api/posts and routes/api/posts/index both map to \"/api/posts\"",
            "<dir>/manifest.toml:6: route \"/api/users/$x\" names a component, but route crate routes/api/users/$id already maps to it",
            "<dir>/manifest.toml:10: route \"/api/nothing\" has no `component`, and no route crate under [routes] maps to it",
            "<dir>/manifest.toml:2: route \"/api/unbuilt\": component file target/wasm32-wasip2/release/unbuilt.wasm not found",
        ] {
            assert!(error.contains(expected), "missing {expected}\nin\n{error}");
        }
        let error = check_in(&dir, "[routes]\ndir = \"elsewhere\"\n").unwrap_err();
        assert!(
            error.contains("<dir>/manifest.toml:2: [routes]: routes folder elsewhere not found"),
            "{error}"
        );
        // Without [routes], a route still needs its component.
        let error = check_in(&dir, "[[route]]\npath = \"/a\"\n").unwrap_err();
        assert!(
            error.contains(
                "<dir>/manifest.toml:2: route \"/a\" has no `component` (or a [routes] folder"
            ),
            "{error}"
        );
    }

    #[test]
    fn valid_manifest_resolves_paths_env_and_secrets() {
        let manifest = check(
            r#"
[server]
listen = "127.0.0.1:9000"

[[route]]
path = "/api/posts/$postId"
component = "a.wasm"
kv = ["posts"]
env = { MODE = "test" }
secrets = ["PRESENT"]
"#,
        )
        .unwrap();
        assert_eq!(manifest.listen.to_string(), "127.0.0.1:9000");
        let route = &manifest.routes[0];
        assert_eq!(route.line, 6);
        assert_eq!(route.kv, ["posts"]);
        assert_eq!(
            route.env,
            [
                ("MODE".into(), "test".into()),
                ("PRESENT".into(), "s3cret".into())
            ]
        );
        assert!(route.component.ends_with("a.wasm"));
        assert!(manifest.data_dir.ends_with(DEFAULT_DATA_DIR));
    }

    #[test]
    fn each_error_names_file_line_and_route() {
        let cases = [
            (
                "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\ntimeout_ms = 5\n",
                "<dir>/manifest.toml: line 4: unknown field `timeout_ms`",
            ),
            ("[server]\nport = 1\n", "<dir>/manifest.toml: line 2: unknown field `port`"),
            ("[[route]]\npath = \"/a\"\n", "<dir>/manifest.toml:2: route \"/a\" has no `component`"),
            ("[[route]\n", "<dir>/manifest.toml: line 1:"),
            (
                "[[route]]\npath = \"api\"\ncomponent = \"a.wasm\"\n",
                "<dir>/manifest.toml:2: route \"api\": bad path: a path must start with `/`",
            ),
            (
                "[[route]]\npath = \"/a/$x\"\ncomponent = \"a.wasm\"\n\n[[route]]\npath = \"/A/$y\"\ncomponent = \"b.wasm\"\n",
                "<dir>/manifest.toml:6: route \"/A/$y\" claims the same paths as route \"/a/$x\" on line 2",
            ),
            (
                "[[route]]\npath = \"/a\"\ncomponent = \"missing.wasm\"\n",
                "<dir>/manifest.toml:2: route \"/a\": component file missing.wasm not found",
            ),
            (
                "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\nsecrets = [\"ABSENT\"]\n",
                "<dir>/manifest.toml:2: route \"/a\": secret ABSENT is not set in the host's environment",
            ),
            (
                "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\nenv = { PRESENT = \"x\" }\nsecrets = [\"PRESENT\"]\n",
                "route \"/a\": env var PRESENT is given twice",
            ),
            (
                "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\nenv = { \"A=B\" = \"x\" }\n",
                "route \"/a\": env var \"A=B\" is not a valid name",
            ),
            (
                "[server]\nlisten = \"localhost\"\n",
                "<dir>/manifest.toml:2: `listen = \"localhost\"` is not an address",
            ),
        ];
        for (text, expected) in cases {
            let error = check(text).unwrap_err();
            assert!(
                error.contains(expected),
                "for\n{text}\ngot: {error}\nwanted: {expected}"
            );
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let error = check(
            "[[route]]\npath = \"nope\"\ncomponent = \"x.wasm\"\n\n[[route]]\npath = \"/b\"\ncomponent = \"a.wasm\"\nsecrets = [\"ABSENT\"]\n",
        )
        .unwrap_err();
        assert_eq!(error.lines().count(), 3, "{error}");
    }

    #[test]
    fn limits_default_then_server_then_route() {
        let manifest = check(
            r#"
[server]
timeout = "2s"
memory = "64MiB"
max_body = 2048
body_timeout = "250ms"
max_header_bytes = "32KiB"

[[route]]
path = "/a"
component = "a.wasm"

[[route]]
path = "/b"
component = "b.wasm"
timeout = "1m"
cpu_time = "50ms"
max_response = "2MB"
max_concurrency = 3
"#,
        )
        .unwrap();
        let [a, b] = [&manifest.routes[0].limits, &manifest.routes[1].limits];
        assert_eq!(a.timeout, Duration::from_secs(2));
        assert_eq!(a.memory, 64 << 20);
        assert_eq!(a.max_body, 2048);
        assert_eq!(a.max_response, Limits::default().max_response);
        assert_eq!(a.max_concurrency, Limits::default().max_concurrency);
        assert_eq!(b.timeout, Duration::from_secs(60));
        assert_eq!(a.cpu_time, None, "no CPU limit of its own by default");
        assert_eq!(b.cpu_time, Some(Duration::from_millis(50)));
        assert_eq!(b.memory, 64 << 20, "server default still applies");
        assert_eq!(b.max_response, 2_000_000);
        assert_eq!(b.max_concurrency, 3);
        assert_eq!(manifest.clients.body_timeout, Duration::from_millis(250));
        assert_eq!(manifest.clients.max_header_bytes, 32 * 1024);
        assert_eq!(
            manifest.clients.header_timeout,
            ClientLimits::default().header_timeout
        );
    }

    #[test]
    fn bad_limits_name_the_key_and_line() {
        let cases = [
            (
                "[server]\ntimeout = 5\n",
                "manifest.toml:2: `timeout`: give a unit",
            ),
            (
                "[server]\ntimeout = \"5 parsecs\"\n",
                "manifest.toml:2: `timeout`: expected a duration",
            ),
            (
                "[server]\nmemory = \"lots\"\n",
                "manifest.toml:2: `memory`: expected a size",
            ),
            (
                "[server]\ncpu_time = \"soon\"\n",
                "manifest.toml:2: `cpu_time`: expected a duration",
            ),
            (
                "[server]\nmax_body = \"0KiB\"\n",
                "`max_body`: must be more than zero",
            ),
            (
                "[server]\nmax_concurrency = \"many\"\n",
                "`max_concurrency`: expected a whole number",
            ),
            (
                "[server]\nmax_concurrency = 0\n",
                "`max_concurrency`: must be more than zero",
            ),
            (
                "[server]\nmax_concurrency = 9999999999999999999\n",
                "`max_concurrency`: at most 1000000",
            ),
            (
                "[server]\nmemory = \"99999999999999999999GiB\"\n",
                "`memory`: expected a size",
            ),
            (
                "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\nmax_body = \"-1\"\n",
                "manifest.toml:4: route \"/a\": `max_body`: expected a size",
            ),
        ];
        for (text, expected) in cases {
            let error = check(text).unwrap_err();
            assert!(
                error.contains(expected),
                "for\n{text}\ngot: {error}\nwanted: {expected}"
            );
        }
    }

    #[test]
    fn empty_manifest_is_valid_and_serves_nothing() {
        let manifest = check("").unwrap();
        assert!(manifest.routes.is_empty());
        assert_eq!(manifest.listen.to_string(), DEFAULT_LISTEN);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the text, parsing returns a manifest or errors, never panics.
            #[test]
            fn arbitrary_text_never_panics(text in "\\PC*") {
                let _ = check(&text);
            }

            /// Near-valid manifests: random values in every key.
            #[test]
            fn arbitrary_values_never_panic(
                path in "\\PC{0,12}",
                limit in "\\PC{0,8}",
                number in any::<i64>(),
                key in prop_oneof![Just("timeout"), Just("memory"), Just("max_body"), Just("max_concurrency"), Just("listen")],
            ) {
                let text = format!(
                    "[server]\n{key} = {limit:?}\n\n[[route]]\npath = {path:?}\ncomponent = \"a.wasm\"\nmax_concurrency = {number}\n"
                );
                let _ = check(&text);
            }
        }
    }
}
