//! The embedded SQLite backend: one file per database under the data dir,
//! in WAL mode, with one writer connection and a few read-only ones, all
//! used on the blocking pool.
//!
//! A guest's statements pass an authorizer: it may read and change its own
//! tables (and create, alter and drop them), nothing else. `ATTACH` (and so
//! `VACUUM INTO`, which attaches its target) is refused, as are pragmas
//! other than schema inspection, `load_extension`, transaction statements
//! (a batch is the transaction) and the migrations table. A statement that
//! runs past its time is interrupted.

use super::sqlite_pool::{Guarded, Pool};
use super::{
    Bounds, Budget, Migration, RowSet, SqlBackend, SqlError, SqlValue, Statement, MIGRATIONS_TABLE,
};
use async_trait::async_trait;
use rusqlite::config::DbConfig;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Read-only connections per database: reads run in parallel with the one
/// writer and each other (WAL).
const READERS: usize = 4;

/// How long a connection waits for SQLite's write lock (held by the writer
/// or a migration) before failing as busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest string or blob a statement may make (`randomblob(1e9)` and
/// runaway `group_concat` stop here, not in the host's memory).
const MAX_VALUE_BYTES: i32 = 64 * 1024 * 1024;

/// Memory all SQLite connections of the host may hold together; past it a
/// statement fails as out of memory instead of the host growing.
const HEAP_LIMIT: i64 = 512 * 1024 * 1024;

/// The write-ahead log is truncated back to this after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Schema inspection pragmas a guest may run (read-only).
const READ_PRAGMAS: [&str; 6] = [
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "foreign_key_list",
];

/// A SQLite database file.
pub struct SqliteDb {
    path: PathBuf,
    writer: Arc<Pool>,
    readers: Arc<Pool>,
}

impl SqliteDb {
    /// Opens (creating it and its folder if needed) the database at
    /// `path`, which routes can grow to at most `max_size` bytes: past it a
    /// write fails as refused, the disk is not filled.
    pub fn open(path: &Path, max_size: u64) -> Result<SqliteDb, String> {
        let shown = path.display();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
        }
        let writer =
            open_connection(path, Some(max_size)).map_err(|err| format!("{shown}: {err}"))?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_connection(path, None).map_err(|err| format!("{shown}: {err}"))?);
        }
        Ok(SqliteDb {
            path: path.to_path_buf(),
            writer: Arc::new(Pool::new(vec![writer])),
            readers: Arc::new(Pool::new(readers)),
        })
    }
}

/// Opens a guest's connection to `path`: WAL, a busy timeout, the limits
/// and the authorizer; the writer (given the database's `max_size`) or a
/// read-only one.
fn open_connection(path: &Path, max_size: Option<u64>) -> rusqlite::Result<Guarded> {
    let read_only = max_size.is_none();
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    static HEAP: std::sync::Once = std::sync::Once::new();
    // SAFETY: sets a process-wide limit; SQLite allows the call at any time
    // from any thread (it takes its own mutex).
    HEAP.call_once(|| unsafe {
        rusqlite::ffi::sqlite3_hard_heap_limit64(HEAP_LIMIT);
    });
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let page: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
        let max = i64::try_from(max_size.unwrap_or(super::DEFAULT_MAX_SIZE)).unwrap_or(i64::MAX);
        conn.pragma_update(None, "max_page_count", (max / page.max(1)).max(1))?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // No writing the schema table by hand, no functions with side effects
    // run from a schema a route wrote (views, triggers).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)?;
    let host_statement = Arc::new(AtomicBool::new(false));
    let denied = Arc::new(Mutex::new(None));
    let (flag, note) = (Arc::clone(&host_statement), Arc::clone(&denied));
    conn.authorizer(Some(move |context: AuthContext<'_>| {
        let refusal = refusal(&context.action, flag.load(Ordering::Relaxed));
        match refusal {
            None => Authorization::Allow,
            Some(reason) => {
                *note.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                Authorization::Deny
            }
        }
    }))?;
    Ok(Guarded {
        conn,
        host_statement,
        denied,
        cancelled: Arc::new(AtomicBool::new(false)),
    })
}

/// Why the sandbox refuses `action`, if it does.
fn refusal(action: &AuthAction<'_>, host_statement: bool) -> Option<String> {
    let own_table = |table: &str| table.eq_ignore_ascii_case(MIGRATIONS_TABLE);
    match action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Some(
            "ATTACH, DETACH and VACUUM INTO are not allowed: a route reaches only its own database"
                .into(),
        ),
        AuthAction::Pragma { pragma_name, .. }
            if !READ_PRAGMAS.iter().any(|p| p.eq_ignore_ascii_case(pragma_name)) =>
        {
            Some(format!(
                "PRAGMA {pragma_name} is not allowed (only {} may be read)",
                READ_PRAGMAS.join(", ")
            ))
        }
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            Some("load_extension is not allowed".into())
        }
        // Temporary objects would outlive the call on a shared connection
        // (a temporary table shadowing another route's, a trigger firing on
        // its writes).
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. } => Some(
            "temporary tables, indexes, views and triggers are not allowed: they would outlive the call"
                .into(),
        ),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } if !host_statement => Some(
            "transaction statements are not allowed: run the statements as one batch, which is a transaction"
                .into(),
        ),
        AuthAction::Read { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::AlterTable { table_name, .. }
        | AuthAction::CreateTable { table_name }
        | AuthAction::CreateIndex { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
            if own_table(table_name) =>
        {
            Some(format!("{MIGRATIONS_TABLE} belongs to the host"))
        }
        _ => None,
    }
}

/// What running a statement on a read-only connection found.
enum Read {
    Done(RowSet),
    /// It writes: run it on the writer.
    Writes,
}

#[async_trait]
impl SqlBackend for SqliteDb {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn query(&self, statement: Statement, bounds: Bounds) -> Result<RowSet, SqlError> {
        let started = tokio::time::Instant::now();
        let shared = Arc::new(statement);
        let reading = Arc::clone(&shared);
        let read = self
            .readers
            .read(bounds.timeout, move |g| {
                let prepared = g
                    .conn
                    .prepare_cached(&reading.sql)
                    .map_err(|err| map_error(g, err))?;
                if !prepared.readonly() {
                    return Ok(Read::Writes);
                }
                drop(prepared);
                run(g, &reading, bounds, false).map(Read::Done)
            })
            .await?;
        let statement = Arc::unwrap_or_clone(shared);
        match read {
            Read::Done(rows) => Ok(rows),
            Read::Writes => {
                let left = bounds.timeout.saturating_sub(started.elapsed());
                self.writer
                    .run(left, move |g| run(g, &statement, bounds, false))
                    .await
            }
        }
    }

    async fn batch(
        &self,
        statements: Vec<Statement>,
        bounds: Bounds,
    ) -> Result<Vec<RowSet>, SqlError> {
        self.writer
            .run(bounds.timeout, move |g| {
                host_statement(g, "BEGIN IMMEDIATE")?;
                let mut results = Vec::with_capacity(statements.len());
                for (i, statement) in statements.iter().enumerate() {
                    if g.cancelled.load(Ordering::Relaxed) {
                        let _ = host_statement(g, "ROLLBACK");
                        return Err(SqlError::Unavailable(
                            "stopped at the route's sql_timeout".into(),
                        ));
                    }
                    match run(g, statement, bounds, true) {
                        Ok(rows) => results.push(rows),
                        Err(err) => {
                            let _ = host_statement(g, "ROLLBACK");
                            return Err(super::in_batch(i, err));
                        }
                    }
                }
                if let Err(err) = host_statement(g, "COMMIT") {
                    let _ = host_statement(g, "ROLLBACK");
                    return Err(err);
                }
                Ok(results)
            })
            .await
    }

    async fn migrate(
        &self,
        database: &str,
        migrations: &[Migration],
    ) -> Result<Vec<String>, String> {
        let path = self.path.clone();
        let database = database.to_string();
        let migrations = migrations.to_vec();
        tokio::task::spawn_blocking(move || {
            super::sqlite_migrations::migrate(&path, &database, &migrations)
        })
        .await
        .map_err(|err| format!("the migrations stopped: {err}"))?
    }
}

/// Runs a transaction statement of the host's own past the authorizer.
fn host_statement(g: &mut Guarded, sql: &str) -> Result<(), SqlError> {
    g.host_statement.store(true, Ordering::Relaxed);
    let result = g.conn.execute_batch(sql);
    g.host_statement.store(false, Ordering::Relaxed);
    result.map_err(|err| map_error(g, err))
}

/// Runs one statement on `g`, reading at most what `bounds` allows.
fn run(
    g: &mut Guarded,
    statement: &Statement,
    bounds: Bounds,
    in_batch: bool,
) -> Result<RowSet, SqlError> {
    let before = g.conn.total_changes();
    let result = run_statement(g, statement, bounds);
    // The authorizer refuses transaction statements; should one slip
    // through, no transaction outlives the call.
    if !in_batch && !g.conn.is_autocommit() {
        let _ = host_statement(g, "ROLLBACK");
    }
    let mut rows = result?;
    if g.conn.total_changes() != before {
        rows.rows_affected = g.conn.changes();
    }
    Ok(rows)
}

fn run_statement(g: &Guarded, statement: &Statement, bounds: Bounds) -> Result<RowSet, SqlError> {
    *g.denied.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let mut prepared = g
        .conn
        .prepare_cached(&statement.sql)
        .map_err(|err| map_error(g, err))?;
    bind(&mut prepared, &statement.params).map_err(|err| match err {
        Bind::Invalid(reason) => SqlError::Invalid(reason),
        Bind::Sqlite(err) => map_error(g, err),
    })?;
    let columns: Vec<String> = prepared.column_names().map(String::from).collect();
    let mut budget = Budget::new(bounds);
    let mut out = Vec::new();
    let mut rows = prepared.raw_query();
    while let Some(row) = rows.next().map_err(|err| map_error(g, err))? {
        budget.row()?;
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let value = row.get_ref(i).map_err(|err| map_error(g, err))?;
            // Counted before it is copied: a row of huge blobs is refused,
            // not allocated.
            budget.value(match value {
                ValueRef::Text(bytes) | ValueRef::Blob(bytes) => bytes.len(),
                ValueRef::Null => 1,
                _ => 8,
            })?;
            values.push(match value {
                ValueRef::Null => SqlValue::Null,
                ValueRef::Integer(n) => SqlValue::Integer(n),
                ValueRef::Real(x) => SqlValue::Real(x),
                ValueRef::Text(text) => SqlValue::Text(String::from_utf8_lossy(text).into_owned()),
                ValueRef::Blob(blob) => SqlValue::Blob(blob.to_vec()),
            });
        }
        out.push(values);
    }
    Ok(RowSet {
        columns,
        rows: out,
        rows_affected: 0,
    })
}

enum Bind {
    Invalid(String),
    Sqlite(rusqlite::Error),
}

/// Binds `params` by name: the statement's `$k` gets `params[k - 1]`,
/// wherever it appears; any other kind of parameter is refused.
fn bind(statement: &mut rusqlite::CachedStatement<'_>, params: &[SqlValue]) -> Result<(), Bind> {
    let mut highest = 0;
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index);
        let number = name
            .and_then(|n| n.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                Bind::Invalid(format!(
                    "parameters are written $1, $2...; found {}",
                    name.unwrap_or("?")
                ))
            })?;
        highest = highest.max(number);
        let Some(value) = params.get(number - 1) else {
            continue;
        };
        let value = match value {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(n) => ValueRef::Integer(*n),
            SqlValue::Real(x) => ValueRef::Real(*x),
            SqlValue::Text(text) => ValueRef::Text(text.as_bytes()),
            SqlValue::Blob(blob) => ValueRef::Blob(blob),
        };
        statement
            .raw_bind_parameter(index, ToSqlOutput::Borrowed(value))
            .map_err(Bind::Sqlite)?;
    }
    if highest != params.len() {
        return Err(Bind::Invalid(format!(
            "the statement takes {highest} parameters, and {} were given",
            params.len()
        )));
    }
    Ok(())
}

/// A SQLite error as the guest sees it.
fn map_error(g: &Guarded, err: rusqlite::Error) -> SqlError {
    let denied = g.denied.lock().unwrap_or_else(|p| p.into_inner()).take();
    let code = match &err {
        rusqlite::Error::SqliteFailure(e, _) => Some(e.code),
        rusqlite::Error::SqlInputError { error, .. } => Some(error.code),
        _ => None,
    };
    let message = match &err {
        rusqlite::Error::SqliteFailure(e, Some(msg)) => format!("{msg} ({:?})", e.code),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        rusqlite::Error::MultipleStatement => {
            return SqlError::Invalid("one statement per query; run several as a batch".into())
        }
        other => other.to_string(),
    };
    // A refusal of the authorizer shows as SQLITE_AUTH, or (for a
    // function) as a plain error saying "not authorized".
    if let Some(reason) = denied {
        return SqlError::Refused(reason);
    }
    match code {
        Some(ErrorCode::AuthorizationForStatementDenied) => SqlError::Refused(message),
        Some(ErrorCode::ConstraintViolation) => SqlError::Constraint(message),
        Some(ErrorCode::OperationInterrupted) => {
            SqlError::Unavailable("stopped at the route's sql_timeout".into())
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            SqlError::Unavailable(format!("the database is busy: {message}"))
        }
        Some(ErrorCode::TooBig) => SqlError::Refused(message),
        Some(ErrorCode::DiskFull) => SqlError::Refused(format!(
            "the database is full: it is at its max_size, or the disk is ({message})"
        )),
        Some(ErrorCode::OutOfMemory) => {
            SqlError::Refused(format!("the statement needs too much memory ({message})"))
        }
        Some(ErrorCode::Unknown | ErrorCode::TypeMismatch | ErrorCode::ParameterOutOfRange) => {
            SqlError::Invalid(message)
        }
        _ => SqlError::Failed(message),
    }
}
