//! Which backend each SQL database has, decided when the host starts
//! ([`SqlDatabases`]), and what one route may do with the databases it is
//! granted ([`SqlAccess`]): statements bounded in length and parameters,
//! results in rows and bytes, every call by the route's `sql_timeout`,
//! counted per database, and failures logged at most every few seconds.

use super::{
    Bounds, Migration, PostgresDb, RowSet, SqlBackend, SqlError, SqliteDb, Statement,
    MAX_BATCH_STATEMENTS,
};
use crate::capabilities::log_throttle::{LogThrottle, FAILURE_LOG_INTERVAL};
use crate::metrics::{Metrics, SqlMetrics, SqlOp, SqlResult};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A database's backend as the manifest names it, with its URL read from
/// the host's environment.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// A file under the data dir (the default), of at most `max_size`
    /// bytes.
    Sqlite {
        max_size: u64,
    },
    Postgres {
        url: String,
    },
}

impl DatabaseConfig {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            DatabaseConfig::Sqlite { .. } => "sqlite",
            DatabaseConfig::Postgres { .. } => "postgres",
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    // A URL may hold a password: never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

/// One database as the host runs it.
pub(crate) struct DatabaseHandle {
    pub(crate) name: Arc<str>,
    pub(crate) backend: Arc<dyn SqlBackend>,
    metrics: Arc<SqlMetrics>,
    /// When a failure was last logged.
    failure_logged: LogThrottle,
}

/// The backend of every database, for the whole life of the host: those
/// the manifest configures with `[sql.NAME]`, and SQLite files under the
/// data dir for the rest, opened when first granted.
pub struct SqlDatabases {
    /// Where SQLite files go (`None`: databases cannot be opened, as for
    /// `edgehost check`).
    dir: Option<PathBuf>,
    configured: BTreeMap<String, DatabaseConfig>,
    handles: Mutex<BTreeMap<String, Arc<DatabaseHandle>>>,
}

impl SqlDatabases {
    /// Databases that are never opened (for commands that do not serve).
    pub fn none() -> SqlDatabases {
        SqlDatabases {
            dir: None,
            configured: BTreeMap::new(),
            handles: Mutex::default(),
        }
    }

    /// Databases on the backends `configs` name, SQLite files in `dir` for
    /// the rest. A PostgreSQL database connects at first use, so one that
    /// is down does not stop the host from starting.
    pub fn new(dir: PathBuf, configs: BTreeMap<String, DatabaseConfig>) -> SqlDatabases {
        SqlDatabases {
            dir: Some(dir),
            configured: configs,
            handles: Mutex::default(),
        }
    }

    /// What the host runs the database `name` on.
    pub(crate) fn config(&self, name: &str) -> DatabaseConfig {
        self.configured
            .get(name)
            .cloned()
            .unwrap_or(DatabaseConfig::Sqlite {
                max_size: super::DEFAULT_MAX_SIZE,
            })
    }

    /// The database `name`, opened if it is not yet.
    pub(crate) fn handle(
        &self,
        name: &str,
        metrics: &Metrics,
    ) -> Result<Arc<DatabaseHandle>, String> {
        let mut handles = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = handles.get(name) {
            return Ok(Arc::clone(handle));
        }
        let backend: Arc<dyn SqlBackend> = match (&self.dir, self.config(name)) {
            (None, _) => Arc::new(NoSql),
            (Some(dir), DatabaseConfig::Sqlite { max_size }) => {
                Arc::new(SqliteDb::open(&dir.join(format!("{name}.db")), max_size)?)
            }
            (Some(_), DatabaseConfig::Postgres { url }) => Arc::new(PostgresDb::connect(&url)?),
        };
        let handle = Arc::new(DatabaseHandle {
            name: Arc::from(name),
            metrics: metrics.sql_database(name, backend.kind()),
            backend,
            failure_logged: LogThrottle::default(),
        });
        handles.insert(name.to_string(), Arc::clone(&handle));
        Ok(handle)
    }

    /// Applies `migrations` to the database `name` (opened if need be);
    /// the names applied, or why nothing was.
    pub(crate) async fn migrate(
        &self,
        name: &str,
        migrations: &[Migration],
        metrics: &Metrics,
    ) -> Result<Vec<String>, String> {
        let handle = self.handle(name, metrics)?;
        handle.backend.migrate(name, migrations).await
    }
}

/// The backend of commands that load a manifest without serving it
/// (`check`, `routes`): nothing is opened, nothing runs.
struct NoSql;

#[async_trait::async_trait]
impl SqlBackend for NoSql {
    fn kind(&self) -> &'static str {
        "none"
    }

    async fn query(&self, _: Statement, _: Bounds) -> Result<RowSet, SqlError> {
        Err(SqlError::Failed(
            "databases are not opened by this command".into(),
        ))
    }

    async fn batch(&self, _: Vec<Statement>, _: Bounds) -> Result<Vec<RowSet>, SqlError> {
        Err(SqlError::Failed(
            "databases are not opened by this command".into(),
        ))
    }

    async fn migrate(&self, _: &str, _: &[Migration]) -> Result<Vec<String>, String> {
        Err("databases are not opened by this command".into())
    }
}

/// What one route may do with SQL databases.
#[derive(Clone)]
pub(crate) struct SqlAccess {
    /// The databases the route's manifest entry grants, by name.
    pub(crate) granted: Arc<[Arc<DatabaseHandle>]>,
    /// Within the route's `timeout`.
    pub(crate) timeout: Duration,
    pub(crate) max_rows: usize,
    pub(crate) max_result: usize,
    pub(crate) max_statement: usize,
    pub(crate) max_params: usize,
}

impl SqlAccess {
    /// The granted database named `name`.
    pub(crate) fn database(&self, name: &str) -> Option<&Arc<DatabaseHandle>> {
        self.granted.iter().find(|db| &*db.name == name)
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            timeout: self.timeout,
            max_rows: self.max_rows,
            max_bytes: self.max_result,
        }
    }

    /// Refuses a statement over the route's length or parameter limits.
    fn check(&self, statement: &Statement) -> Result<(), SqlError> {
        if statement.sql.len() > self.max_statement {
            return Err(SqlError::Refused(format!(
                "a statement of {} bytes is over the route's max_sql_statement of {}",
                statement.sql.len(),
                self.max_statement
            )));
        }
        if statement.params.len() > self.max_params {
            return Err(SqlError::Refused(format!(
                "{} parameters are over the route's max_sql_params of {}",
                statement.params.len(),
                self.max_params
            )));
        }
        if statement.sql.contains('\0') {
            return Err(SqlError::Invalid("a statement may not contain NUL".into()));
        }
        Ok(())
    }

    /// Runs one statement on `db`.
    pub(crate) async fn query(
        &self,
        db: &DatabaseHandle,
        statement: Statement,
    ) -> Result<RowSet, SqlError> {
        let started = Instant::now();
        let result = match self.check(&statement) {
            Ok(()) => db.backend.query(statement, self.bounds()).await,
            Err(err) => Err(err),
        };
        db.note(SqlOp::Query, &result, started.elapsed());
        result
    }

    /// Runs `statements` on `db` as one transaction.
    pub(crate) async fn batch(
        &self,
        db: &DatabaseHandle,
        statements: Vec<Statement>,
    ) -> Result<Vec<RowSet>, SqlError> {
        let started = Instant::now();
        let checked = if statements.len() > MAX_BATCH_STATEMENTS {
            Err(SqlError::Refused(format!(
                "a batch of {} statements is over the {MAX_BATCH_STATEMENTS} one batch may hold",
                statements.len()
            )))
        } else {
            statements
                .iter()
                .enumerate()
                .try_for_each(|(i, s)| self.check(s).map_err(|e| super::in_batch(i, e)))
        };
        let result = match checked {
            Ok(()) => db.backend.batch(statements, self.bounds()).await,
            Err(err) => Err(err),
        };
        db.note(SqlOp::Batch, &result, started.elapsed());
        result
    }
}

impl DatabaseHandle {
    /// Counts a call, and logs (at most every [`FAILURE_LOG_INTERVAL`]) a
    /// database that is unreachable or failing.
    fn note<T>(&self, op: SqlOp, result: &Result<T, SqlError>, elapsed: Duration) {
        let outcome = match result {
            Ok(_) => SqlResult::Ok,
            Err(SqlError::Unavailable(_)) => SqlResult::Unavailable,
            Err(SqlError::Refused(_)) => SqlResult::Refused,
            Err(SqlError::Constraint(_)) => SqlResult::Constraint,
            Err(SqlError::Invalid(_) | SqlError::Failed(_)) => SqlResult::Error,
        };
        self.metrics.record(op, outcome, elapsed);
        if let Err(err @ (SqlError::Unavailable(_) | SqlError::Failed(_))) = result {
            if self.failure_logged.due() {
                tracing::warn!(
                    database = %self.name,
                    backend = self.backend.kind(),
                    "SQL database {}: {err} (logged at most every {FAILURE_LOG_INTERVAL:?})",
                    self.name
                );
            }
        }
    }
}
