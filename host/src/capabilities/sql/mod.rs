//! SQL databases, granted per route (`sql = ["main"]`).
//!
//! A database lives behind a [`SqlBackend`]: an embedded SQLite file in the
//! data dir ([`SqliteDb`], the default) or PostgreSQL ([`PostgresDb`]),
//! chosen per database by the manifest's `[sql.NAME]` table when the host
//! starts. Every backend gives the same answers (one test suite runs
//! against both): values are null, 64-bit integers, doubles, text and
//! blobs; parameters are `$1..$n` bound by number; a batch is one
//! transaction; there is no transaction across calls, so a guest that traps
//! holds no lock.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `mod.rs` | the [`SqlBackend`] interface, values, errors, migrations as read |
//! | `sqlite.rs` | the SQLite backend: one writer, a few readers, the sandbox's authorizer |
//! | `sqlite_migrations.rs` | applying migrations to a SQLite file |
//! | `sqlite_pool.rs` | a SQLite file's connections, and where work on them runs (async worker, blocking pool) |
//! | `postgres.rs` | the PostgreSQL backend: a bounded pool, parameters typed by the statement |
//! | `databases.rs` | which backend each database has; per-route grants, limits, metrics |
//! | `guest.rs` | the `edge:sql` interface a guest imports |

mod databases;
mod guest;
mod postgres;
mod sqlite;
mod sqlite_migrations;
mod sqlite_pool;

pub(crate) use databases::SqlAccess;
pub use databases::{DatabaseConfig, SqlDatabases};
pub(crate) use guest::{SqlData, SqlView};
pub use postgres::PostgresDb;
pub use sqlite::SqliteDb;

use async_trait::async_trait;
use std::time::Duration;

/// Statements one batch may hold.
pub(crate) const MAX_BATCH_STATEMENTS: usize = 100;

/// The largest a SQLite database may grow unless `[sql.NAME] max_size`
/// says.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;

/// The table that records applied migrations, in every database.
pub(crate) const MIGRATIONS_TABLE: &str = "edgehost_migrations";

/// One value of a parameter or a column.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl SqlValue {
    /// Bytes it counts for in a result's size.
    pub(crate) fn size(&self) -> usize {
        match self {
            SqlValue::Null => 1,
            SqlValue::Integer(_) | SqlValue::Real(_) => 8,
            SqlValue::Text(text) => text.len(),
            SqlValue::Blob(blob) => blob.len(),
        }
    }
}

/// What one statement returned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RowSet {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
    pub rows_affected: u64,
}

/// One statement with its parameters (`$1` is the first).
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<SqlValue>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<SqlValue>) -> Statement {
        Statement {
            sql: sql.into(),
            params,
        }
    }
}

/// What one query or batch may take.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Past it the statement is cancelled (a batch rolled back).
    pub timeout: Duration,
    /// Rows one statement may return.
    pub max_rows: usize,
    /// Bytes of values one statement may return.
    pub max_bytes: usize,
}

/// A query that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqlError {
    /// The database cannot be reached right now, or did not answer in
    /// time: worth retrying later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The host will not run it (a limit, the sandbox).
    #[error("refused: {0}")]
    Refused(String),
    /// A constraint refused the change.
    #[error("constraint: {0}")]
    Constraint(String),
    /// A wrong statement: syntax, unknown names, parameters.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database failed otherwise.
    #[error("{0}")]
    Failed(String),
}

/// One migration file, as read from the manifest's `migrations` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// Its file name (`001_create_posts.sql`): what the database records.
    pub name: String,
    /// Where it was read from, for error messages.
    pub shown: String,
    pub sql: String,
    /// SHA-256 of its text, hex: a file changed after it was applied is
    /// an error.
    pub checksum: String,
}

/// Where a database keeps its data. Implementations must be safe to call
/// from many requests at once and must not block an async worker.
#[async_trait]
pub trait SqlBackend: Send + Sync {
    /// What it is, for logs and metrics: `sqlite` or `postgres`.
    fn kind(&self) -> &'static str;
    /// Runs one statement.
    async fn query(&self, statement: Statement, bounds: Bounds) -> Result<RowSet, SqlError>;
    /// Runs `statements` in order as one transaction.
    async fn batch(
        &self,
        statements: Vec<Statement>,
        bounds: Bounds,
    ) -> Result<Vec<RowSet>, SqlError>;
    /// Applies the migrations of `migrations` not yet applied to the
    /// database `database`, in order, in one transaction, and records them;
    /// returns the names applied. Refuses (changing nothing) when one
    /// fails, or when an applied one's file changed or is gone: the reason
    /// names the file and, when the database says, the line.
    async fn migrate(
        &self,
        database: &str,
        migrations: &[Migration],
    ) -> Result<Vec<String>, String>;
}

/// Says which statement of a batch failed.
pub(crate) fn in_batch(index: usize, err: SqlError) -> SqlError {
    let at = |reason: String| format!("statement {} of the batch: {reason}", index + 1);
    match err {
        SqlError::Unavailable(r) => SqlError::Unavailable(at(r)),
        SqlError::Refused(r) => SqlError::Refused(at(r)),
        SqlError::Constraint(r) => SqlError::Constraint(at(r)),
        SqlError::Invalid(r) => SqlError::Invalid(at(r)),
        SqlError::Failed(r) => SqlError::Failed(at(r)),
    }
}

/// The line (1-based) of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Checks what was applied against the files: every applied migration's
/// file is there, unchanged. `applied` is name -> checksum.
pub(crate) fn check_applied(
    database: &str,
    applied: &std::collections::BTreeMap<String, String>,
    migrations: &[Migration],
) -> Result<(), String> {
    for (name, checksum) in applied {
        match migrations.iter().find(|m| &m.name == name) {
            None => {
                return Err(format!(
                    "database {database}: migration {name} was applied, but its file is no longer in the migrations folder (migrations are never removed; add a new one to undo it)"
                ))
            }
            Some(m) if &m.checksum != checksum => {
                return Err(format!(
                    "{}: this migration was applied to database {database} and its file has changed since (add a new migration instead of editing an applied one)",
                    m.shown
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Counts a result's rows and bytes against `bounds` as it is read.
pub(crate) struct Budget {
    rows: usize,
    bytes: usize,
    bounds: Bounds,
}

impl Budget {
    pub(crate) fn new(bounds: Bounds) -> Budget {
        Budget {
            rows: 0,
            bytes: 0,
            bounds,
        }
    }

    /// Takes one more row, or refuses it.
    pub(crate) fn take(&mut self, row: &[SqlValue]) -> Result<(), SqlError> {
        self.row()?;
        row.iter().try_for_each(|value| self.value(value.size()))
    }

    /// Counts one more row, or refuses it.
    pub(crate) fn row(&mut self) -> Result<(), SqlError> {
        self.rows += 1;
        if self.rows > self.bounds.max_rows {
            return Err(SqlError::Refused(format!(
                "the query returns more than the route's max_sql_rows of {} rows (add a LIMIT)",
                self.bounds.max_rows
            )));
        }
        Ok(())
    }

    /// Counts a value of `size` bytes before it is copied, or refuses it.
    pub(crate) fn value(&mut self, size: usize) -> Result<(), SqlError> {
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.bounds.max_bytes {
            return Err(SqlError::Refused(format!(
                "the query returns more than the route's max_sql_result of {} bytes",
                self.bounds.max_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let text = "a\nbb\nccc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 3);
        assert_eq!(line_of(text, 999), 3);
    }
}
