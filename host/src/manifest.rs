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

use crate::router::{Pattern, PatternError};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    data_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: Spanned<String>,
    component: Spanned<String>,
    #[serde(default)]
    kv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    secrets: Vec<String>,
}

/// A checked manifest: every pattern parses, no two collide, every component
/// file exists and every secret was found.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub routes: Vec<RouteSpec>,
}

/// One route as the manifest grants it.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub pattern: Pattern,
    /// The component file, resolved against the manifest's folder.
    pub component: PathBuf,
    /// The line of the route's `path`, for error messages.
    pub line: usize,
    /// Key-value stores the route may open.
    pub kv: Vec<String>,
    /// Environment the route sees: `env` values, then secrets (sorted by name).
    pub env: Vec<(String, String)>,
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
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
        file: file.display().to_string(),
        source,
    })?;
    parse(file, &text, &|name| std::env::var(name).ok())
}

/// Validates manifest `text` as if read from `file`; `secret` looks up a
/// secret by name (the process environment, or a table in tests).
pub fn parse(
    file: &Path,
    text: &str,
    secret: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestErrors> {
    let file_name = file.display().to_string();
    let raw: RawManifest = toml::from_str(text).map_err(|err| ManifestError::Syntax {
        file: file_name.clone(),
        message: syntax_message(text, &err),
    })?;
    let base = file.parent().unwrap_or(Path::new("."));
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let mut errors = Vec::new();

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

    let mut routes = Vec::new();
    // shape -> (pattern, line) of the first route with that shape
    let mut shapes: HashMap<String, (String, usize)> = HashMap::new();
    for raw_route in raw.routes {
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
        let component = base.join(raw_route.component.get_ref());
        if !component.is_file() {
            fail(&mut errors, &|file, line, route| {
                ManifestError::MissingComponent {
                    file,
                    line,
                    route,
                    component: raw_route.component.get_ref().clone(),
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
        if let Some(pattern) = pattern {
            routes.push(RouteSpec {
                pattern,
                component,
                line,
                kv: raw_route.kv,
                env,
            });
        }
    }
    if errors.is_empty() {
        Ok(Manifest {
            file: file.to_path_buf(),
            listen,
            data_dir,
            routes,
        })
    } else {
        Err(ManifestErrors(errors))
    }
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
            ("[[route]]\npath = \"/a\"\n", "<dir>/manifest.toml: line 1: missing field `component`"),
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
    fn empty_manifest_is_valid_and_serves_nothing() {
        let manifest = check("").unwrap();
        assert!(manifest.routes.is_empty());
        assert_eq!(manifest.listen.to_string(), DEFAULT_LISTEN);
    }
}
