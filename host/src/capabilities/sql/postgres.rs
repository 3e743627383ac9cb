//! The PostgreSQL backend, for databases a fleet of hosts shares: a
//! bounded pool of connections per database, made as the key-value
//! stores' are (opened as needed, so a server that is down does not stop
//! the host from starting).
//!
//! Values cross as the types the statement has: PostgreSQL infers each
//! parameter's type from the statement, and an integer bound where it
//! expects `int4` is sent as one (within its range). Columns of the common
//! types come back as values; others (`numeric`, `timestamp`...) are
//! refused with the cast to write (`::text`).
//!
//! A route has the rights of the database user in the URL. What would
//! outlive its call on a pooled connection is refused: transaction
//! statements (a batch is the transaction) and session settings (`SET`,
//! `LISTEN`, `PREPARE`...). A statement past its time is cancelled on the
//! server and its connection closed.

use super::{
    check_applied, line_of, Bounds, Budget, Migration, RowSet, SqlBackend, SqlError, SqlValue,
    Statement, MIGRATIONS_TABLE,
};
use crate::capabilities::kv::{connection_pool, postgres_unreachable};
use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use deadpool_postgres::{GenericClient, Pool, PoolError, RecyclingMethod};
use futures_util::{pin_mut, StreamExt};
use std::collections::BTreeMap;
use std::error::Error as _;
use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

/// Statements that would leave state on a pooled connection, by their
/// first word.
const SESSION_STATEMENTS: [&str; 19] = [
    "BEGIN",
    "START",
    "COMMIT",
    "END",
    "ROLLBACK",
    "ABORT",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "RESET",
    "DISCARD",
    "LISTEN",
    "UNLISTEN",
    "PREPARE",
    "DEALLOCATE",
    "DECLARE",
    "CLOSE",
    "LOCK",
    "COPY",
];

/// Run on a connection before it is reused: whatever a route left on it
/// (an open transaction, settings, temporary tables, advisory locks,
/// listeners) is gone; prepared statements stay.
const RECYCLE: &str = "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
    UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES;";

/// Server-side bounds of every connection, behind the host's own
/// `sql_timeout`: a lock wait, an idle transaction and a statement cannot
/// last longer than these whatever a route does.
const SESSION_BOUNDS: &str = "-c lock_timeout=10s -c idle_in_transaction_session_timeout=30s \
    -c statement_timeout=60s";

/// How long migrations may wait for another host's (the advisory lock)
/// and run.
const MIGRATION_TIMEOUT: &str = "10min";

/// A database on a PostgreSQL server.
pub struct PostgresDb {
    pool: Pool,
}

impl PostgresDb {
    /// A backend for the database at `url`; checks the URL, connects at
    /// first use.
    pub fn connect(url: &str) -> Result<PostgresDb, String> {
        Ok(PostgresDb {
            pool: connection_pool(
                url,
                RecyclingMethod::Custom(RECYCLE.to_string()),
                Some(SESSION_BOUNDS),
            )?,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SqlError> {
        self.pool.get().await.map_err(|err| match err {
            PoolError::Backend(err) => database(&err),
            other => SqlError::Unavailable(other.to_string()),
        })
    }

    /// A pooled connection, by `deadline`.
    async fn checkout(
        &self,
        deadline: tokio::time::Instant,
        bounds: Bounds,
    ) -> Result<deadpool_postgres::Object, SqlError> {
        tokio::time::timeout_at(deadline, self.client())
            .await
            .map_err(|_| late(bounds))?
    }
}

fn late(bounds: Bounds) -> SqlError {
    SqlError::Unavailable(format!(
        "no answer within the route's sql_timeout of {:?}; the statement was cancelled",
        bounds.timeout
    ))
}

/// What a call on `client` came to; past its time the statement is
/// cancelled on the server and the connection closed, not pooled (a cancel
/// arriving later could hit the next request's statement on it).
fn finish<T>(
    client: deadpool_postgres::Object,
    result: Result<Result<T, SqlError>, tokio::time::error::Elapsed>,
    bounds: Bounds,
) -> Result<T, SqlError> {
    match result {
        // A result refused part way (too many rows or bytes) may still be
        // running on the server: stopped like one that ran out of time.
        Ok(Err(SqlError::Refused(reason))) => {
            stop(client);
            Err(SqlError::Refused(reason))
        }
        Ok(result) => result,
        Err(_) => {
            stop(client);
            Err(late(bounds))
        }
    }
}

/// Cancels what `client` runs and closes it, out of the pool.
fn stop(client: deadpool_postgres::Object) {
    let cancel = client.cancel_token();
    let detached = deadpool_postgres::Object::take(client);
    tokio::spawn(async move {
        let _ = cancel.cancel_query(NoTls).await;
        drop(detached);
    });
}

/// Runs `statements` on `client` as one transaction.
async fn batch_on(
    client: &mut deadpool_postgres::Object,
    statements: &[Statement],
    bounds: Bounds,
) -> Result<Vec<RowSet>, SqlError> {
    let transaction = client.transaction().await.map_err(|e| database(&e))?;
    let mut results = Vec::with_capacity(statements.len());
    for (i, statement) in statements.iter().enumerate() {
        // Dropping the transaction rolls it back.
        let rows = run(&transaction, statement, bounds)
            .await
            .map_err(|err| super::in_batch(i, err))?;
        results.push(rows);
    }
    transaction.commit().await.map_err(|e| database(&e))?;
    Ok(results)
}

#[async_trait]
impl SqlBackend for PostgresDb {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn query(&self, statement: Statement, bounds: Bounds) -> Result<RowSet, SqlError> {
        check_statement(&statement.sql)?;
        let deadline = tokio::time::Instant::now() + bounds.timeout;
        let client = self.checkout(deadline, bounds).await?;
        let result = tokio::time::timeout_at(deadline, run(&client, &statement, bounds)).await;
        finish(client, result, bounds)
    }

    async fn batch(
        &self,
        statements: Vec<Statement>,
        bounds: Bounds,
    ) -> Result<Vec<RowSet>, SqlError> {
        for (i, statement) in statements.iter().enumerate() {
            check_statement(&statement.sql).map_err(|err| super::in_batch(i, err))?;
        }
        let deadline = tokio::time::Instant::now() + bounds.timeout;
        let mut client = self.checkout(deadline, bounds).await?;
        let result =
            tokio::time::timeout_at(deadline, batch_on(&mut client, &statements, bounds)).await;
        finish(client, result, bounds)
    }

    async fn migrate(
        &self,
        database_name: &str,
        migrations: &[Migration],
    ) -> Result<Vec<String>, String> {
        let failed = |err: tokio_postgres::Error| {
            let reason = err
                .as_db_error()
                .map_or_else(|| err.to_string(), |db| db.message().to_string());
            format!("database {database_name}: {reason}")
        };
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|err| format!("database {database_name}: cannot connect: {err}"))?;
        let transaction = client.transaction().await.map_err(failed)?;
        // One host migrates at a time; the others then find it done.
        transaction
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '{MIGRATION_TIMEOUT}';
                SET LOCAL statement_timeout = '{MIGRATION_TIMEOUT}';
                SELECT pg_advisory_xact_lock(hashtext('{MIGRATIONS_TABLE}'));
                CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                    database text NOT NULL,
                    name text NOT NULL,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (database, name)
                )"
            ))
            .await
            .map_err(failed)?;
        let rows = transaction
            .query(
                &format!("SELECT name, checksum FROM {MIGRATIONS_TABLE} WHERE database = $1"),
                &[&database_name],
            )
            .await
            .map_err(failed)?;
        let mut applied = BTreeMap::new();
        for row in rows {
            let name: String = row.try_get(0).map_err(failed)?;
            let checksum: String = row.try_get(1).map_err(failed)?;
            applied.insert(name, checksum);
        }
        check_applied(database_name, &applied, migrations)?;
        let mut done = Vec::new();
        for migration in migrations.iter().filter(|m| !applied.contains_key(&m.name)) {
            if let Err(err) = transaction.batch_execute(&migration.sql).await {
                return Err(migration_error(migration, database_name, &err));
            }
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {MIGRATIONS_TABLE} (database, name, checksum) VALUES ($1, $2, $3)"
                    ),
                    &[&database_name, &migration.name, &migration.checksum],
                )
                .await
                .map_err(failed)?;
            done.push(migration.name.clone());
        }
        transaction.commit().await.map_err(failed)?;
        Ok(done)
    }
}

/// `file:line: error` when PostgreSQL says where, `file: error` otherwise.
fn migration_error(migration: &Migration, database: &str, err: &tokio_postgres::Error) -> String {
    let Some(db) = err.as_db_error() else {
        return format!("{}: database {database}: {err}", migration.shown);
    };
    // The position counts characters from 1.
    let line = match db.position() {
        Some(ErrorPosition::Original(position)) => {
            let chars = usize::try_from(*position).unwrap_or(0).saturating_sub(1);
            let offset = migration
                .sql
                .char_indices()
                .nth(chars)
                .map_or(migration.sql.len(), |(at, _)| at);
            Some(line_of(&migration.sql, offset))
        }
        _ => None,
    };
    match line {
        Some(line) => format!(
            "{}:{line}: database {database}: {}",
            migration.shown,
            db.message()
        ),
        None => format!("{}: database {database}: {}", migration.shown, db.message()),
    }
}

/// Refuses a statement that would leave state on the connection.
fn check_statement(sql: &str) -> Result<(), SqlError> {
    let word = first_word(sql).to_ascii_uppercase();
    if SESSION_STATEMENTS.contains(&word.as_str()) {
        return Err(SqlError::Refused(format!(
            "{word} statements are not allowed: transactions are batches, and nothing may outlive the call on a shared connection"
        )));
    }
    Ok(())
}

/// The statement's first word, past spaces and comments.
fn first_word(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        // Empty statements (`;`) are dropped by the server: skipped too.
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next);
        } else if let Some(after) = trimmed.strip_prefix("/*") {
            rest = past_comment(after);
        } else {
            let end = trimmed
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(trimmed.len());
            return &trimmed[..end];
        }
    }
}

/// What follows a block comment whose `/*` came just before `text`:
/// PostgreSQL's block comments nest.
fn past_comment(text: &str) -> &str {
    let mut depth = 1;
    let mut at = 0;
    let bytes = text.as_bytes();
    while at + 1 < bytes.len() {
        match (bytes[at], bytes[at + 1]) {
            (b'/', b'*') => {
                depth += 1;
                at += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                at += 2;
                if depth == 0 {
                    return &text[at..];
                }
            }
            _ => at += 1,
        }
    }
    ""
}

/// Runs one statement on `client`, reading at most what `bounds` allows.
async fn run(
    client: &impl GenericClient,
    statement: &Statement,
    bounds: Bounds,
) -> Result<RowSet, SqlError> {
    let prepared = client
        .prepare_cached(&statement.sql)
        .await
        .map_err(|e| database(&e))?;
    let wanted = prepared.params().len();
    if wanted != statement.params.len() {
        return Err(SqlError::Invalid(format!(
            "the statement takes {wanted} parameters, and {} were given",
            statement.params.len()
        )));
    }
    let columns: Vec<String> = prepared
        .columns()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let params: Vec<Param<'_>> = statement.params.iter().map(Param).collect();
    let stream = client
        .query_raw(&prepared, params.iter().map(|p| p as &(dyn ToSql + Sync)))
        .await
        .map_err(|e| database(&e))?;
    pin_mut!(stream);
    let mut budget = Budget::new(bounds);
    let mut rows = Vec::new();
    while let Some(row) = stream.next().await {
        let row = row.map_err(|e| database(&e))?;
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            let Column(value) = row.try_get(i).map_err(|e| database(&e))?;
            values.push(value);
        }
        budget.take(&values)?;
        rows.push(values);
    }
    let reads = matches!(
        first_word(&statement.sql).to_ascii_uppercase().as_str(),
        "SELECT" | "VALUES" | "TABLE" | "SHOW" | "EXPLAIN"
    );
    let rows_affected = if reads {
        0
    } else {
        stream.rows_affected().unwrap_or(0)
    };
    Ok(RowSet {
        columns,
        rows,
        rows_affected,
    })
}

/// A PostgreSQL error as the guest sees it.
fn database(err: &tokio_postgres::Error) -> SqlError {
    // Our own conversions (a parameter or a column of a type not carried)
    // come back as the error's source.
    if let Some(ours) = err.source().and_then(|s| s.downcast_ref::<Conversion>()) {
        return SqlError::Invalid(ours.0.clone());
    }
    let Some(db) = err.as_db_error() else {
        return if postgres_unreachable(err) {
            SqlError::Unavailable(err.to_string())
        } else {
            SqlError::Failed(err.to_string())
        };
    };
    let reason = match db.detail() {
        Some(detail) => format!("{} ({detail})", db.message()),
        None => db.message().to_string(),
    };
    let code = db.code();
    let class = &code.code()[..2.min(code.code().len())];
    // 40: deadlock or serialization failure, 53: out of resources, 55P03:
    // a lock not got in time; each worth retrying.
    if postgres_unreachable(err)
        || *code == SqlState::QUERY_CANCELED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || class == "40"
        || class == "53"
    {
        SqlError::Unavailable(reason)
    } else if class == "23" {
        SqlError::Constraint(reason)
    } else if class == "42" || class == "22" {
        SqlError::Invalid(reason)
    } else if class == "54" {
        SqlError::Refused(reason)
    } else {
        SqlError::Failed(reason)
    }
}

/// A parameter or column that cannot be carried.
#[derive(Debug)]
struct Conversion(String);

impl std::fmt::Display for Conversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Conversion {}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

fn cannot(reason: String) -> BoxError {
    Box::new(Conversion(reason))
}

/// Text types, by name (`citext` is an extension's, with no fixed oid).
fn is_text(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(ty)
        || ty.name() == "citext"
}

/// A parameter, sent as the type the statement gives it.
#[derive(Debug)]
struct Param<'a>(&'a SqlValue);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let mismatch = |what: &str| {
            cannot(format!(
                "a {what} parameter cannot be sent where the statement wants {ty}; cast it in the statement (for example $1::text::{ty})"
            ))
        };
        match self.0 {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Integer(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(*n)
                    .map_err(|_| cannot(format!("{n} is out of range for int4")))?
                    .to_sql(ty, out),
                Type::INT2 => i16::try_from(*n)
                    .map_err(|_| cannot(format!("{n} is out of range for int2")))?
                    .to_sql(ty, out),
                Type::FLOAT8 => (*n as f64).to_sql(ty, out),
                Type::FLOAT4 => (*n as f32).to_sql(ty, out),
                Type::BOOL if *n == 0 || *n == 1 => (*n == 1).to_sql(ty, out),
                _ if is_text(ty) => n.to_string().as_str().to_sql(&Type::TEXT, out),
                _ => Err(mismatch("integer")),
            },
            SqlValue::Real(x) => match *ty {
                Type::FLOAT8 => x.to_sql(ty, out),
                Type::FLOAT4 => (*x as f32).to_sql(ty, out),
                _ => Err(mismatch("real")),
            },
            SqlValue::Text(text) => match *ty {
                Type::JSON => {
                    out.put_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSONB => {
                    out.put_u8(1);
                    out.put_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                _ if is_text(ty) => text.as_str().to_sql(&Type::TEXT, out),
                _ => Err(mismatch("text")),
            },
            SqlValue::Blob(blob) => match *ty {
                Type::BYTEA => blob.as_slice().to_sql(ty, out),
                _ => Err(mismatch("blob")),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A column's value.
struct Column(SqlValue);

impl<'a> FromSql<'a> for Column {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Column, BoxError> {
        let value = match *ty {
            Type::BOOL => SqlValue::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => SqlValue::Integer(i64::from(i16::from_sql(ty, raw)?)),
            Type::INT4 => SqlValue::Integer(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT8 => SqlValue::Integer(i64::from_sql(ty, raw)?),
            Type::OID => SqlValue::Integer(i64::from(u32::from_sql(ty, raw)?)),
            Type::FLOAT4 => SqlValue::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::FLOAT8 => SqlValue::Real(f64::from_sql(ty, raw)?),
            Type::BYTEA => SqlValue::Blob(raw.to_vec()),
            Type::JSON => SqlValue::Text(String::from_utf8_lossy(raw).into_owned()),
            // Binary jsonb is a version byte, then the text.
            Type::JSONB => SqlValue::Text(String::from_utf8_lossy(raw.get(1..).unwrap_or(&[])).into_owned()),
            Type::UUID => {
                let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                if hex.len() != 32 {
                    return Err(cannot("a uuid of the wrong size".into()));
                }
                SqlValue::Text(format!(
                    "{}-{}-{}-{}-{}",
                    &hex[..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..]
                ))
            }
            _ if is_text(ty) => SqlValue::Text(String::from_utf8_lossy(raw).into_owned()),
            _ => {
                return Err(cannot(format!(
                    "a column of type {ty} is not carried; cast it in the query (for example ::text, or ::float8 for numeric)"
                )))
            }
        };
        Ok(Column(value))
    }

    fn from_sql_null(_: &Type) -> Result<Column, BoxError> {
        Ok(Column(SqlValue::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_skips_spaces_and_comments() {
        assert_eq!(first_word("  select 1"), "select");
        assert_eq!(first_word("-- a\n/* b */ BEGIN;"), "BEGIN");
        assert_eq!(first_word("/* unclosed"), "");
        assert_eq!(first_word("; ;\n BEGIN"), "BEGIN");
        assert_eq!(first_word("/* /* */ SELECT */ BEGIN"), "BEGIN");
        assert_eq!(first_word("/* a */* b */ x"), "");
        assert!(check_statement(" -- x\n begin").is_err());
        assert!(check_statement("set search_path = evil").is_err());
        assert!(check_statement("SELECT 'BEGIN'").is_ok());
    }
}
