//! `manifest.toml`: parsed strictly (unknown keys are errors), then checked
//! into a [`Manifest`], the only form the rest of the host accepts. Every
//! problem found is reported, each naming the file, the line and the route.
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
//! sql = ["main"]                      # databases the route may open
//! env = { LOG_LEVEL = "debug" }       # plain values the route sees as env vars
//! secrets = ["STRIPE_WEBHOOK_SECRET"] # copied from the host's environment at load
//! ```
//!
//! | file | what it owns |
//! | --- | --- |
//! | `schema.rs` | the manifest as written (serde types, spans) |
//! | `validate.rs` | the pipeline from text to a checked [`Manifest`], step by step |
//! | `limits.rs` | every limit once: key, unit, scope, default, what happens when hit |
//! | `quantity.rs` | counts, sizes and durations as written (`"64KiB"`, `"10s"`) |
//! | `kv.rs` | `[kv.NAME]`: each key-value store's backend |
//! | `sql.rs` | `[sql.NAME]`: each SQL database's backend, its migrations read |
//! | `fleet.rs` | `[fleet]`: the fleet a host takes its deployments from |
//! | `schedule.rs` | `[[schedule]]`: routes the host calls on a cron schedule |
//! | `policies.rs` | edge policies: `[cache]`, and each route's `cache`, `cors` and `rate_limit` |
//! | `folders.rs` | file-based routes: folder = URL, and where cargo puts components |
//! | `scripts.rs` | TypeScript route files: their URLs, the one component of an app |
//! | `mount.rs` | merging `[routes]` crates into the `[[route]]` entries |
//! | `error.rs` | [`ManifestError`], one per problem |

mod error;
pub(crate) mod fleet;
pub(crate) mod folders;
pub(crate) mod kv;
pub(crate) mod limits;
mod mount;
pub(crate) mod policies;
mod quantity;
pub(crate) mod schedule;
mod schema;
pub(crate) mod scripts;
pub(crate) mod sql;
mod validate;

pub use error::{ManifestError, ManifestErrors};
pub use fleet::FleetSpec;
pub use kv::{KvBackendKind, KvStoreSpec};
pub use limits::{Limits, ServerLimits};
pub use policies::{CacheSettings, CorsPolicy, RateLimitPolicy};
pub use schedule::ScheduleSpec;
pub use sql::{SqlBackendKind, SqlDatabaseSpec};

use crate::capabilities::outbound::AllowedHost;
use crate::router::Pattern;
use folders::FolderRoute;
use schema::RawManifest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where key-value data lives by default, relative to the manifest.
pub(crate) const DEFAULT_DATA_DIR: &str = ".edgehost";

/// Where the host listens when neither the manifest nor the command line says.
pub(crate) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// A checked manifest: every pattern parses, no two collide, every component
/// file exists and every secret was found.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Limits of the whole server (clients, the instance pool).
    pub server: ServerLimits,
    /// The admin API's settings when `[admin]` is given.
    pub admin: Option<AdminSettings>,
    /// Key-value stores given a backend by `[kv.NAME]`.
    pub kv: BTreeMap<String, KvStoreSpec>,
    /// SQL databases given a backend (and migrations) by `[sql.NAME]`.
    pub sql: BTreeMap<String, SqlDatabaseSpec>,
    /// The fleet the host belongs to, when `[fleet]` is given.
    pub fleet: Option<FleetSpec>,
    /// The host's response cache (`[cache]`).
    pub cache: CacheSettings,
    pub routes: Vec<RouteSpec>,
    /// Routes the host calls on a schedule (`[[schedule]]`).
    pub schedules: Vec<ScheduleSpec>,
}

/// Where the admin API listens and how it checks callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Its own address, loopback unless told otherwise.
    pub(crate) listen: SocketAddr,
    /// The host environment variable holding the bearer token.
    pub(crate) token_env: String,
    /// Largest component one upload may carry; larger is 413.
    pub(crate) max_upload: usize,
    /// Host environment variables a deployed manifest may name in
    /// `secrets`; `None`: those the manifest the host started with names.
    pub(crate) deploy_secrets: Option<Vec<String>>,
}

/// Where the admin API finds its token unless `[admin] token_env` says.
pub const TOKEN_ENV: &str = "EDGEHOST_ADMIN_TOKEN";

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            token_env: TOKEN_ENV.into(),
            // A 13 MB JavaScript route fits; a runaway upload does not.
            max_upload: 64 << 20,
            deploy_secrets: None,
        }
    }
}

/// One route as the manifest grants it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub(crate) pattern: Pattern,
    /// The component file, resolved against the manifest's folder.
    pub(crate) component: PathBuf,
    /// The route crate's folder and package when `[routes]` found it.
    pub source: Option<FolderRoute>,
    /// The line of the route's `path`, for error messages.
    pub(crate) line: usize,
    /// Key-value stores the route may open.
    pub(crate) kv: Vec<String>,
    /// SQL databases the route may open.
    pub(crate) sql: Vec<String>,
    /// Environment the route sees: `env` values, then secrets (sorted by name).
    pub(crate) env: Vec<(String, String)>,
    /// Which of `env` are secrets (their names, sorted), for listings that
    /// must not show their values.
    pub(crate) secrets: Vec<String>,
    /// Origins the route may send HTTP requests to; empty: none.
    pub(crate) allowed_outbound_hosts: Vec<AllowedHost>,
    /// Names in `allowed_outbound_hosts` may resolve to loopback, private
    /// and link-local addresses (`allow_private_networks = true`).
    pub(crate) allow_private_networks: bool,
    /// Its answers may be stored in the host's cache (`cache = false`: never).
    pub(crate) cache: bool,
    /// Whether a proxy component gets Spin's request headers
    /// (`spin_headers`); `None`: when it is a WASI 0.3 component or imports
    /// one of Spin's interfaces.
    pub(crate) spin_headers: Option<bool>,
    /// Its CORS policy (its own or `[server]`'s), if any.
    pub(crate) cors: Option<std::sync::Arc<CorsPolicy>>,
    pub(crate) rate_limit: Option<RateLimitPolicy>,
    pub(crate) limits: Limits,
}

/// A secret as the host can give it.
pub(crate) enum Secret {
    Value(String),
    /// Not set in the host's environment.
    Missing,
    /// Set, but not one a deploy may use (`[admin] deploy_secrets`).
    NotDeployable,
}

/// Finds the route crates of `[routes]`: given its `dir` and `target_dir`
/// as written, the crates and their URLs.
pub(crate) type Discover<'a> = dyn Fn(&str, &str) -> Result<Vec<FolderRoute>, String> + 'a;

/// How a manifest's references are resolved: from the files beside it for
/// a manifest on disk, from the uploaded components for a deploy.
pub(crate) struct Lookup<'a> {
    /// The manifest's folder.
    pub(crate) base: &'a Path,
    /// A secret by name.
    pub(crate) secret: &'a dyn Fn(&str) -> Secret,
    /// The file for a `component = ...` value as written, `None` when there
    /// is none.
    pub(crate) component: &'a dyn Fn(&str) -> Option<PathBuf>,
    /// The route crates of `[routes]`.
    pub(crate) discover: &'a Discover<'a>,
    /// The migration files of a `[sql.NAME] migrations` folder as written.
    pub(crate) migrations: &'a dyn Fn(&str) -> Result<Vec<sql::MigrationFile>, String>,
}

/// The backend a `[kv.NAME]` or `[sql.NAME]` table's `backend` names among
/// `names` (`default` when it names none), or why it is not one of them.
pub(crate) fn backend_named<K: Copy>(
    written: Option<&str>,
    default: K,
    names: &[(&str, K)],
) -> Result<K, String> {
    let Some(written) = written else {
        return Ok(default);
    };
    match names.iter().find(|(spelled, _)| *spelled == written) {
        Some((_, kind)) => Ok(*kind),
        None => {
            let names: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "backend {written:?} is not one of {}",
                names.join(", ")
            ))
        }
    }
}

/// A `[kv.NAME]` or `[sql.NAME]` table's `max_size` in bytes: `default`
/// when it is not written. Only a backend on this host's disk (`local`)
/// takes one; for another, `remote` says why not.
pub(crate) fn max_size_of(
    written: Option<&toml::Spanned<limits::Quantity>>,
    local: bool,
    default: u64,
    remote: &str,
) -> Result<u64, String> {
    match written {
        None => Ok(default),
        Some(_) if !local => Err(remote.to_string()),
        Some(value) => limits::Kind::Size
            .parse(value.get_ref())
            .map_err(|reason| format!("max_size: {reason}")),
    }
}

/// The folder a manifest file is in.
pub(crate) fn base_of(file: &Path) -> &Path {
    file.parent().unwrap_or(Path::new("."))
}

/// Reads and checks the manifest at `file`, reading secrets from the
/// process environment.
pub fn load(file: &Path) -> Result<Manifest, ManifestErrors> {
    load_with_secrets(file, &|name| std::env::var(name).ok())
}

/// [`load`] with secrets looked up by `secret`.
pub(crate) fn load_with_secrets(
    file: &Path,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestErrors> {
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
        file: file.display().to_string(),
        source,
    })?;
    parse(file, &text, secret)
}

/// Checks manifest `text` as if read from `file`, its components and route
/// crates beside it; `secret` looks up a secret by name.
pub fn parse(
    file: &Path,
    text: &str,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestErrors> {
    let base = base_of(file);
    check(
        file,
        text,
        &Lookup {
            base,
            secret: &|name| secret(name).map_or(Secret::Missing, Secret::Value),
            component: &|written| {
                let path = base.join(written);
                path.is_file().then_some(path)
            },
            discover: &|dir, target_dir| folders::discover(base, dir, target_dir),
            migrations: &|dir| sql::read_migration_files(&base.join(dir)),
        },
    )
}

/// Checks manifest `text` as if read from `file`, resolving what it names
/// with `lookup`.
pub(crate) fn check(
    file: &Path,
    text: &str,
    lookup: &Lookup<'_>,
) -> Result<Manifest, ManifestErrors> {
    validate::check(file, text, lookup)
}

/// What a manifest loads its routes from, without checking anything else:
/// the `component = ...` values as written, and the route crates its
/// `[routes]` folder holds (searched from `base`, the manifest's folder).
/// What a deploy must upload and what `--watch` looks at.
pub(crate) struct Sources {
    pub(crate) components: Vec<String>,
    pub(crate) folder_routes: Vec<FolderRoute>,
    /// `[sql.NAME] migrations` folders as written.
    pub(crate) migrations: Vec<String>,
}

impl Sources {
    pub(crate) fn read(text: &str, base: &Path) -> Result<Sources, String> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|err| error::syntax_message(text, &err))?;
        let folder_routes = match &raw.folder {
            None => Vec::new(),
            Some(folder) => {
                folders::discover(base, folder.dir.get_ref(), &folder.target_dir(base))?
            }
        };
        let migrations = raw
            .sql
            .values()
            .filter_map(|table| table.get_ref().migrations.as_ref())
            .map(|dir| dir.get_ref().clone())
            .collect();
        let components = raw
            .routes
            .into_iter()
            .filter_map(|route| route.component.map(toml::Spanned::into_inner))
            .chain(folder_routes.iter().map(|route| route.component.clone()))
            .collect();
        Ok(Sources {
            components,
            folder_routes,
            migrations,
        })
    }

    /// The sources of the manifest at `file`, as far as it can be read.
    pub(crate) fn of_file(file: &Path) -> Option<Sources> {
        let text = std::fs::read_to_string(file).ok()?;
        Sources::read(&text, base_of(file)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    /// Problems come `[server]` first, then `[admin]`, then route by route
    /// in the manifest's order, each route's problems together (its limits
    /// too).
    #[test]
    fn problems_are_listed_route_by_route() {
        let error = check(
            "[server]\nmemory = \"lots\"\n\n[admin]\nlisten = \"nowhere\"\n\n[[route]]\npath = \"/a\"\ncomponent = \"missing.wasm\"\ntimeout = 5\n\n[[route]]\npath = \"b\"\ncomponent = \"a.wasm\"\nmax_body = \"-1\"\n",
        )
        .unwrap_err();
        let lines: Vec<&str> = error.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|line| line.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} in\n{error}"))
        };
        let order = [
            at("`memory`"),
            at("`listen = \"nowhere\"`"),
            at("component file missing.wasm"),
            at("route \"/a\": `timeout`"),
            at("route \"b\": bad path"),
            at("route \"b\": `max_body`"),
        ];
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{error}");
        assert_eq!(lines.len(), order.len(), "{error}");
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
        assert_eq!(manifest.server.body_timeout, Duration::from_millis(250));
        assert_eq!(manifest.server.max_header_bytes, 32 * 1024);
        assert_eq!(
            manifest.server.header_timeout,
            ServerLimits::default().header_timeout
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
        assert_eq!(manifest.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn a_secret_deploys_may_not_use_is_named_as_such() {
        let dir = folder();
        let file = dir.path().join("manifest.toml");
        let text = "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\nsecrets = [\"HOST_ONLY\", \"ABSENT\"]\n";
        let error = super::check(
            &file,
            text,
            &Lookup {
                base: dir.path(),
                secret: &|name| match name {
                    "HOST_ONLY" => Secret::NotDeployable,
                    _ => Secret::Missing,
                },
                component: &|written| Some(dir.path().join(written)),
                discover: &|_, _| Ok(Vec::new()),
                migrations: &|_| Ok(Vec::new()),
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains(":2: route \"/a\": secret HOST_ONLY is not one deploys may use (list it in [admin] deploy_secrets)"),
            "{error}"
        );
        assert!(
            error.contains(":2: route \"/a\": secret ABSENT is not set in the host's environment"),
            "{error}"
        );
    }

    /// `[routes]` without `target_dir` finds the components where cargo
    /// builds them: the workspace's `target`, even for a manifest in a
    /// folder below the workspace root.
    #[test]
    fn routes_folder_components_are_in_the_workspace_target() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        let app = dir.path().join("app");
        let release = dir.path().join("target/wasm32-wasip2/release");
        std::fs::create_dir_all(app.join("routes/hello")).unwrap();
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(
            app.join("routes/hello/Cargo.toml"),
            "[package]\nname = \"hello\"\n",
        )
        .unwrap();
        std::fs::write(release.join("hello.wasm"), b"").unwrap();
        let parsed = parse(
            &app.join("manifest.toml"),
            "[routes]\ndir = \"routes\"\n",
            &|_| None,
        );
        match std::env::var("CARGO_TARGET_DIR")
            .ok()
            .filter(|d| !d.is_empty())
        {
            None => {
                let manifest = parsed.unwrap();
                assert_eq!(manifest.routes.len(), 1);
                assert_eq!(
                    std::fs::canonicalize(&manifest.routes[0].component).unwrap(),
                    std::fs::canonicalize(release.join("hello.wasm")).unwrap()
                );
            }
            // Cargo builds where the environment says: the component is
            // looked for there.
            Some(target) => {
                let error = parsed.unwrap_err().to_string();
                let expected = std::path::absolute(&target)
                    .unwrap()
                    .join("wasm32-wasip2/release/hello.wasm");
                assert!(
                    error.contains(&format!("{} not found", expected.display())),
                    "{error}"
                );
            }
        }
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

            /// Manifests assembled from every table and key the schema
            /// knows (and some it does not), each given any kind of value:
            /// a manifest or errors, never a panic; every error names the
            /// file; and checking is deterministic.
            #[test]
            fn assembled_manifests_check_cleanly(
                tables in proptest::collection::vec(table(), 0..6),
            ) {
                let text: String = tables.concat();
                let first = check(&text);
                if let Err(errors) = &first {
                    prop_assert!(errors.starts_with("<dir>/manifest.toml"), "{errors}");
                }
                prop_assert_eq!(first.map(|_| ()), check(&text).map(|_| ()));
            }
        }

        /// One table: a header the schema knows (or not) and a few keys.
        fn table() -> impl Strategy<Value = String> {
            let header = prop_oneof![
                Just("[server]".to_string()),
                Just("[[route]]".to_string()),
                Just("[routes]".to_string()),
                Just("[admin]".to_string()),
                Just("[fleet]".to_string()),
                "[a-z_]{1,8}".prop_map(|name| format!("[kv.{name}]")),
                "[a-z_]{1,8}".prop_map(|name| format!("[sql.{name}]")),
                "\\PC{0,10}".prop_map(|name| format!("[{name}]")),
            ];
            (header, proptest::collection::vec((key(), value()), 0..8)).prop_map(
                |(header, entries)| {
                    let mut text = format!("\n{header}\n");
                    for (key, value) in entries {
                        text.push_str(&format!("{key} = {value}\n"));
                    }
                    text
                },
            )
        }

        fn key() -> impl Strategy<Value = String> {
            let own = [
                "path",
                "component",
                "kv",
                "sql",
                "env",
                "secrets",
                "allowed_outbound_hosts",
                "allow_private_networks",
                "spin_headers",
                "listen",
                "data_dir",
                "dir",
                "target_dir",
                "backend",
                "url_env",
                "migrations",
                "max_size",
                "name",
                "token_env",
            ];
            prop_oneof![
                proptest::sample::select(own.to_vec()).prop_map(str::to_string),
                proptest::sample::select(limits::LIMITS.iter().map(|l| l.key).collect::<Vec<_>>())
                    .prop_map(str::to_string),
                "[a-z_]{1,12}",
            ]
        }

        fn value() -> impl Strategy<Value = String> {
            let leaf = prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                "\\PC{0,16}".prop_map(|text| format!("{text:?}")),
                proptest::sample::select(vec![
                    "\"10s\"",
                    "\"0ms\"",
                    "\"64KiB\"",
                    "\"1GiB\"",
                    "\"a.wasm\"",
                    "\"/api/$id\"",
                    "\"/$\"",
                    "\"redis\"",
                    "\"postgres\"",
                    "\"embedded\"",
                    "\"sqlite\"",
                    "\"https://*.a.com\"",
                    "\"127.0.0.1:0\"",
                    "\"PRESENT\"",
                    "1.5",
                    "-1",
                    "0",
                ])
                .prop_map(str::to_string),
            ];
            prop_oneof![
                3 => leaf.clone(),
                1 => proptest::collection::vec(leaf.clone(), 0..4)
                    .prop_map(|items| format!("[{}]", items.join(", "))),
                1 => proptest::collection::vec(("[A-Z_]{1,6}", leaf), 0..3).prop_map(|pairs| {
                    let inner: Vec<String> =
                        pairs.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    format!("{{ {} }}", inner.join(", "))
                }),
            ]
        }
    }
}
