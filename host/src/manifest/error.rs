//! What can be wrong with a manifest: one [`ManifestError`] per problem,
//! each naming the file, the line and the route, and [`ManifestErrors`], all
//! of one manifest's problems together.

use crate::router::PatternError;
use std::fmt;

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
    /// A deployed manifest names a secret the host's `[admin]
    /// deploy_secrets` does not list.
    #[error("{file}:{line}: route {route:?}: secret {name} is not one deploys may use (list it in [admin] deploy_secrets)")]
    SecretNotDeployable {
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
    #[error("{file}:{line}: [fleet]: {reason}")]
    Fleet {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}:{line}: [[schedule]]: {reason}")]
    Schedule {
        file: String,
        line: usize,
        reason: String,
    },
    #[error("{file}:{line}: [kv.{store}]: {reason}")]
    KvStore {
        file: String,
        line: usize,
        store: String,
        reason: String,
    },
    #[error("{file}:{line}: [sql.{database}]: {reason}")]
    SqlDatabase {
        file: String,
        line: usize,
        database: String,
        reason: String,
    },
    #[error("{reason}\n  (migrating [sql.{database}] of {file}:{line}; nothing was changed)")]
    Migration {
        file: String,
        line: usize,
        database: String,
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

/// `route "/x": ` before an error about a route's setting.
fn in_route(route: &Option<String>) -> String {
    route
        .as_ref()
        .map(|route| format!("route {route:?}: "))
        .unwrap_or_default()
}

/// toml's message, reduced to `line N: reason` with the line's text.
pub(crate) fn syntax_message(text: &str, err: &toml::de::Error) -> String {
    let reason = err.message();
    match err.span() {
        Some(span) => {
            let line = line_of(text, span.start);
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}: {reason} (in `{source}`)")
        }
        None => reason.to_string(),
    }
}

/// The line (from 1) of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
