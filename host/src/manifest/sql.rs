//! `[sql.NAME]`: the backend of a SQL database, chosen when the host
//! starts, and its migrations. A database a route is granted without such
//! a table is a SQLite file in the data dir, with no migrations.
//!
//! ```toml
//! [sql.main]
//! backend = "sqlite"              # the default; or "postgres"
//! url_env = "DATABASE_URL"        # postgres: the variable holding its URL
//! migrations = "migrations/main"  # optional: a folder of NNN_name.sql files
//! ```
//!
//! Migration files are read with the manifest (from the folder beside it,
//! or from what a deploy uploaded) and applied before its routes serve.

use super::error::{ManifestError, ManifestErrors};
use super::schema::RawSqlDatabase;
use super::{Lookup, Manifest};
use crate::capabilities::kv::PostgresKv;
use crate::capabilities::sql::{DatabaseConfig, Migration};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Where a database keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlBackendKind {
    Sqlite,
    Postgres,
}

impl SqlBackendKind {
    /// The manifest's names for the backends.
    pub(crate) const NAMES: [(&'static str, SqlBackendKind); 2] = [
        ("sqlite", SqlBackendKind::Sqlite),
        ("postgres", SqlBackendKind::Postgres),
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            SqlBackendKind::Sqlite => "sqlite",
            SqlBackendKind::Postgres => "postgres",
        }
    }
}

/// One `[sql.NAME]` table, checked, with its migrations read.
#[derive(Debug, Clone)]
pub struct SqlDatabaseSpec {
    pub(crate) backend: SqlBackendKind,
    /// The host environment variable holding the URL (postgres).
    pub(crate) url_env: Option<String>,
    /// Its migrations, in the order they apply.
    pub(crate) migrations: Vec<Migration>,
    /// The largest a SQLite file may grow, in bytes.
    pub(crate) max_size: u64,
    /// The table's line, for error messages.
    pub(crate) line: usize,
}

impl SqlDatabaseSpec {
    /// Whether two manifests put the database on the same backend (a
    /// restart-only setting).
    pub(crate) fn same_backend(&self, other: &SqlDatabaseSpec) -> bool {
        self.backend == other.backend
            && self.url_env == other.url_env
            && self.max_size == other.max_size
    }
}

/// One migration file as read: its name and text.
pub(crate) type MigrationFile = (String, String);

/// The `.sql` files of the migrations folder `dir`, by name; other files
/// (a README) are skipped.
pub(crate) fn read_migration_files(dir: &Path) -> Result<Vec<MigrationFile>, String> {
    let shown = dir.display();
    let entries =
        std::fs::read_dir(dir).map_err(|err| format!("cannot read the folder {shown}: {err}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| format!("cannot read the folder {shown}: {err}"))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "sql") || !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        files.push((name, text));
    }
    files.sort();
    Ok(files)
}

/// Migrations from the files of folder `dir` (as written): each named
/// `NNN_name.sql`, applied in the order of their numbers; two with one
/// number are an error.
pub(crate) fn migrations_from(
    dir: &str,
    files: Vec<MigrationFile>,
) -> Result<Vec<Migration>, String> {
    let mut numbered = Vec::new();
    for (name, sql) in files {
        let number = name
            .split_once('_')
            .filter(|(digits, rest)| {
                !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && rest.len() > ".sql".len()
            })
            .and_then(|(digits, _)| digits.parse::<u64>().ok())
            .ok_or_else(|| {
                format!("{dir}/{name}: a migration is named NNN_name.sql (001_create_posts.sql)")
            })?;
        let checksum = Sha256::digest(sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        numbered.push((
            number,
            Migration {
                shown: format!("{dir}/{name}"),
                name,
                sql,
                checksum,
            },
        ));
    }
    numbered.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
    for pair in numbered.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(format!(
                "{} and {} have the same number: the order they apply in would be a guess",
                pair[0].1.shown, pair[1].1.shown
            ));
        }
    }
    Ok(numbered.into_iter().map(|(_, m)| m).collect())
}

/// Each `[sql.NAME]` table: a database name, a known backend, a
/// `url_env` exactly for postgres, and migrations that read and are
/// named well.
pub(super) fn check_tables(
    raw: &BTreeMap<String, toml::Spanned<RawSqlDatabase>>,
    lookup: &Lookup<'_>,
    file: &str,
    line_of: &dyn Fn(usize) -> usize,
    is_name: &dyn Fn(&str) -> bool,
    errors: &mut Vec<ManifestError>,
) -> BTreeMap<String, SqlDatabaseSpec> {
    let mut databases = BTreeMap::new();
    for (name, table) in raw {
        let line = line_of(table.span().start);
        let mut fail = |reason: String| {
            errors.push(ManifestError::SqlDatabase {
                file: file.to_string(),
                line,
                database: name.clone(),
                reason,
            });
        };
        if !is_name(name) {
            fail(
                    "not a valid database name (letters, digits, `_` and `-`, not starting with a digit)"
                        .into(),
                );
            continue;
        }
        let table = table.get_ref();
        let written = table.backend.as_ref().map(|b| b.get_ref().as_str());
        let backend =
            match super::backend_named(written, SqlBackendKind::Sqlite, &SqlBackendKind::NAMES) {
                Ok(backend) => backend,
                Err(reason) => {
                    fail(reason);
                    continue;
                }
            };
        let url_env = table.url_env.as_ref().map(|v| v.get_ref().clone());
        match (backend, &url_env) {
            (SqlBackendKind::Sqlite, Some(_)) => {
                fail("url_env is for the postgres backend".into());
                continue;
            }
            (SqlBackendKind::Postgres, None) => {
                fail(
                        "the postgres backend needs url_env, the host environment variable holding its URL"
                            .into(),
                    );
                continue;
            }
            (_, Some(var)) if !is_name(var) => {
                fail(format!("url_env {var:?} is not a variable name"));
                continue;
            }
            _ => {}
        }
        let max_size = match super::max_size_of(
            table.max_size.as_ref(),
            backend == SqlBackendKind::Sqlite,
            crate::capabilities::sql::DEFAULT_MAX_SIZE,
            "max_size is for the sqlite backend (a PostgreSQL server has its own quotas)",
        ) {
            Ok(bytes) => bytes,
            Err(reason) => {
                fail(reason);
                continue;
            }
        };
        let migrations_dir = table.migrations.as_ref().map(|d| d.get_ref().clone());
        let migrations = match &migrations_dir {
            None => Vec::new(),
            Some(dir) => {
                match (lookup.migrations)(dir).and_then(|files| migrations_from(dir, files)) {
                    Ok(migrations) => migrations,
                    Err(reason) => {
                        fail(format!("migrations: {reason}"));
                        continue;
                    }
                }
            }
        };
        databases.insert(
            name.clone(),
            SqlDatabaseSpec {
                backend,
                url_env,
                migrations,
                max_size,
                line,
            },
        );
    }
    databases
}

/// The backend of every database `manifest` configures, each URL read with
/// `env` (the host's environment) and checked.
pub(crate) fn database_configs(
    manifest: &Manifest,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, DatabaseConfig>, ManifestErrors> {
    let mut configs = BTreeMap::new();
    let mut errors = Vec::new();
    for (database, spec) in &manifest.sql {
        let fail = |reason: String| ManifestError::SqlDatabase {
            file: manifest.file.display().to_string(),
            line: spec.line,
            database: database.clone(),
            reason,
        };
        match (spec.backend, &spec.url_env) {
            (SqlBackendKind::Sqlite, _) => {
                configs.insert(
                    database.clone(),
                    DatabaseConfig::Sqlite {
                        max_size: spec.max_size,
                    },
                );
            }
            (SqlBackendKind::Postgres, Some(var)) => match env(var) {
                Some(url) if !url.is_empty() => match PostgresKv::check_url(&url) {
                    Ok(()) => {
                        configs.insert(database.clone(), DatabaseConfig::Postgres { url });
                    }
                    Err(reason) => errors.push(fail(format!("{var}: {reason}"))),
                },
                _ => errors.push(fail(format!(
                    "{var} is not set in the host's environment (it holds the postgres URL)"
                ))),
            },
            // Checked with the manifest: postgres has url_env.
            (SqlBackendKind::Postgres, None) => errors.push(fail("needs url_env".into())),
        }
    }
    if errors.is_empty() {
        Ok(configs)
    } else {
        Err(ManifestErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<MigrationFile> {
        names
            .iter()
            .map(|n| (n.to_string(), format!("-- {n}")))
            .collect()
    }

    #[test]
    fn migrations_apply_in_the_order_of_their_numbers() {
        let m = migrations_from("m", files(&["10_c.sql", "002_b.sql", "1_a.sql"])).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["1_a.sql", "002_b.sql", "10_c.sql"]);
        assert_eq!(m[0].shown, "m/1_a.sql");
        assert_eq!(m[0].checksum.len(), 64);
    }

    #[test]
    fn badly_named_or_ambiguous_migrations_are_refused() {
        let bad = migrations_from("m", files(&["create.sql"])).unwrap_err();
        assert!(
            bad.contains("m/create.sql: a migration is named NNN_name.sql"),
            "{bad}"
        );
        let same = migrations_from("m", files(&["1_a.sql", "001_b.sql"])).unwrap_err();
        assert!(same.contains("have the same number"), "{same}");
    }

    fn manifest(text: &str) -> Result<Manifest, String> {
        crate::manifest::parse(std::path::Path::new("m.toml"), text, &|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_bad_sql_table_names_its_line_and_database() {
        let cases = [
            (
                "[sql.main]\nbackend = \"mysql\"\n",
                "m.toml:1: [sql.main]: backend \"mysql\" is not one of sqlite, postgres",
            ),
            (
                "[sql.main]\nbackend = \"postgres\"\n",
                "m.toml:1: [sql.main]: the postgres backend needs url_env",
            ),
            (
                "\n[sql.main]\nurl_env = \"X\"\n",
                "m.toml:2: [sql.main]: url_env is for the postgres backend",
            ),
            (
                "[sql.\"bad name\"]\n",
                "[sql.bad name]: not a valid database name",
            ),
            (
                "[sql.main]\nmigrations = \"nowhere\"\n",
                "m.toml:1: [sql.main]: migrations: cannot read the folder",
            ),
            (
                "[sql.main]\nbackend = \"postgres\"\nurl_env = \"X\"\nmax_size = \"1GiB\"\n",
                "m.toml:1: [sql.main]: max_size is for the sqlite backend",
            ),
            ("[sql.main]\nmax_size = \"lots\"\n", "[sql.main]: max_size:"),
        ];
        for (text, expected) in cases {
            let error = manifest(text).unwrap_err();
            assert!(
                error.contains(expected),
                "for\n{text}\ngot: {error}\nwanted: {expected}"
            );
        }
    }

    #[test]
    fn postgres_urls_come_from_the_environment() {
        let m = manifest("[sql.main]\nbackend = \"postgres\"\nurl_env = \"DB\"\n\n[sql.local]\n")
            .unwrap();
        let configs =
            database_configs(&m, &|v| (v == "DB").then(|| "postgres://u@h/db".into())).unwrap();
        assert_eq!(
            configs["main"],
            DatabaseConfig::Postgres {
                url: "postgres://u@h/db".into()
            }
        );
        assert_eq!(
            configs["local"],
            DatabaseConfig::Sqlite {
                max_size: crate::capabilities::sql::DEFAULT_MAX_SIZE
            }
        );
        let missing = database_configs(&m, &|_| None).unwrap_err().to_string();
        assert!(
            missing.contains("m.toml:1: [sql.main]: DB is not set in the host's environment"),
            "{missing}"
        );
    }
}
