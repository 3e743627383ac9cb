//! Spin's `spin:sqlite@3.1.0`, backed by the route's granted SQL databases
//! through the same limits and backends as `edge:sql`: a database name
//! (Spin's `default` among them) is one the route's `sql` lists, any other
//! is `access-denied`.
//!
//! `last-insert-rowid` is SQLite's, read in the same transaction as the
//! INSERT that made the row; on a PostgreSQL database it stays 0.

use super::spin::bindings::spin::sqlite::sqlite;
use super::spin::{Spin, SpinView};
use super::sql::{RowSet, SqlAccess, SqlError, SqlValue, Statement};
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

/// The host's side of a Spin SQLite connection: the granted database, and
/// what the last statement on it left.
pub struct SpinSqlConnection {
    name: String,
    last_rowid: i64,
    changes: u64,
}

fn io(err: SqlError) -> sqlite::Error {
    sqlite::Error::Io(err.to_string())
}

fn value_in(value: sqlite::Value) -> SqlValue {
    match value {
        sqlite::Value::Null => SqlValue::Null,
        sqlite::Value::Integer(n) => SqlValue::Integer(n),
        sqlite::Value::Real(x) => SqlValue::Real(x),
        sqlite::Value::Text(text) => SqlValue::Text(text),
        sqlite::Value::Blob(blob) => SqlValue::Blob(blob),
    }
}

fn value_out(value: SqlValue) -> sqlite::Value {
    match value {
        SqlValue::Null => sqlite::Value::Null,
        SqlValue::Integer(n) => sqlite::Value::Integer(n),
        SqlValue::Real(x) => sqlite::Value::Real(x),
        SqlValue::Text(text) => sqlite::Value::Text(text),
        SqlValue::Blob(blob) => sqlite::Value::Blob(blob),
    }
}

fn rows_out(rows: Vec<Vec<SqlValue>>) -> Vec<sqlite::RowResult> {
    rows.into_iter()
        .map(|row| sqlite::RowResult {
            values: row.into_iter().map(value_out).collect(),
        })
        .collect()
}

/// Spin's (SQLite's) `?` and `?NNN` parameters as the `$N` ones the host's
/// SQL layer takes: a bare `?` is one more than the largest number so far,
/// as SQLite numbers them. String literals, quoted names and comments are
/// left as they are.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut largest = 0u32;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' | '`' | '[' => {
                let close = if c == '[' { ']' } else { c };
                out.push(c);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == close {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                out.push(c);
                let mut last = ' ';
                for inner in chars.by_ref() {
                    out.push(inner);
                    if last == '*' && inner == '/' {
                        break;
                    }
                    last = inner;
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let number = match digits.parse::<u32>() {
                    Ok(n) => n,
                    Err(_) => largest + 1,
                };
                largest = largest.max(number);
                out.push('$');
                out.push_str(&number.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// Whether a statement makes rows whose rowid SQLite reports.
fn inserts(sql: &str) -> bool {
    let word: String = sql
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    word.eq_ignore_ascii_case("insert") || word.eq_ignore_ascii_case("replace")
}

/// What one statement did: its rows, and for the connection its changes
/// and the rowid an INSERT made.
struct Ran {
    rows: RowSet,
    rowid: Option<i64>,
}

/// Runs `sql` on granted database `name`.
async fn run(
    access: &SqlAccess,
    name: &str,
    sql: String,
    params: Vec<sqlite::Value>,
) -> Result<Ran, sqlite::Error> {
    let db = access.database(name).ok_or(sqlite::Error::AccessDenied)?;
    let statement = Statement::new(numbered(&sql), params.into_iter().map(value_in).collect());
    if db.backend.kind() == "sqlite" && inserts(&statement.sql) {
        // Read in the same transaction, on the same connection.
        let rowid = Statement::new("SELECT last_insert_rowid()", Vec::new());
        let mut sets = access.batch(db, vec![statement, rowid]).await.map_err(io)?;
        let rowid = sets.pop().and_then(|set| match set.rows.first()?.first()? {
            SqlValue::Integer(n) => Some(*n),
            _ => None,
        });
        let rows = sets
            .pop()
            .ok_or_else(|| sqlite::Error::Io("the statement returned no result".into()))?;
        return Ok(Ran { rows, rowid });
    }
    let rows = access.query(db, statement).await.map_err(io)?;
    Ok(Ran { rows, rowid: None })
}

impl SpinView<'_> {
    fn open_sqlite(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<SpinSqlConnection>, sqlite::Error>> {
        if self.sql.database(&database).is_none() {
            return Ok(Err(sqlite::Error::AccessDenied));
        }
        Ok(Ok(self.table.push(SpinSqlConnection {
            name: database,
            last_rowid: 0,
            changes: 0,
        })?))
    }

    /// Notes what a statement on `connection` did.
    fn ran(&mut self, connection: &Resource<SpinSqlConnection>, ran: &Ran) -> wasmtime::Result<()> {
        let connection = self.table.get_mut(connection)?;
        connection.changes = ran.rows.rows_affected;
        if let Some(rowid) = ran.rowid {
            connection.last_rowid = rowid;
        }
        Ok(())
    }
}

impl sqlite::Host for SpinView<'_> {}

impl sqlite::HostConnection for SpinView<'_> {
    fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<SpinSqlConnection>, sqlite::Error>> {
        self.open_sqlite(database)
    }

    async fn execute(
        &mut self,
        connection: Resource<SpinSqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> wasmtime::Result<Result<sqlite::QueryResult, sqlite::Error>> {
        let name = self.table.get(&connection)?.name.clone();
        let access = self.sql.clone();
        let ran = match run(&access, &name, statement, parameters).await {
            Ok(ran) => ran,
            Err(err) => return Ok(Err(err)),
        };
        self.ran(&connection, &ran)?;
        Ok(Ok(sqlite::QueryResult {
            columns: ran.rows.columns,
            rows: rows_out(ran.rows.rows),
        }))
    }

    fn last_insert_rowid(
        &mut self,
        connection: Resource<SpinSqlConnection>,
    ) -> wasmtime::Result<i64> {
        Ok(self.table.get(&connection)?.last_rowid)
    }

    fn changes(&mut self, connection: Resource<SpinSqlConnection>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&connection)?.changes)
    }

    fn drop(&mut self, connection: Resource<SpinSqlConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

type Rows = (
    Vec<String>,
    StreamReader<sqlite::RowResult>,
    FutureReader<Result<(), sqlite::Error>>,
);

impl<T> sqlite::HostConnectionWithStore<T> for Spin {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<SpinSqlConnection>, sqlite::Error>> {
        accessor.with(|mut view| view.get().open_sqlite(database))
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<SpinSqlConnection>,
        statement: String,
        parameters: Vec<sqlite::Value>,
    ) -> wasmtime::Result<Result<Rows, sqlite::Error>> {
        let (access, name) = accessor.with(|mut view| {
            let view = view.get();
            let name = view.table.get(&connection)?.name.clone();
            wasmtime::Result::<_>::Ok((view.sql.clone(), name))
        })?;
        let ran = match run(&access, &name, statement, parameters).await {
            Ok(ran) => ran,
            Err(err) => return Ok(Err(err)),
        };
        accessor.with(|mut view| {
            view.get().ran(&connection, &ran)?;
            let columns = ran.rows.columns;
            let rows = StreamReader::new(&mut view, rows_out(ran.rows.rows))?;
            let ended = FutureReader::new(&mut view, async { Ok::<_, wasmtime::Error>(Ok(())) })?;
            Ok(Ok((columns, rows, ended)))
        })
    }

    async fn last_insert_rowid_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<SpinSqlConnection>,
    ) -> wasmtime::Result<i64> {
        accessor.with(|mut view| Ok(view.get().table.get(&connection)?.last_rowid))
    }

    async fn changes_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<SpinSqlConnection>,
    ) -> wasmtime::Result<u64> {
        accessor.with(|mut view| Ok(view.get().table.get(&connection)?.changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_parameters() {
        assert_eq!(numbered("SELECT ?, ?"), "SELECT $1, $2");
        assert_eq!(numbered("SELECT ?2, ?, ?1"), "SELECT $2, $3, $1");
        assert_eq!(
            numbered("SELECT '?', \"a?\", [b?] -- ?\n, ? /* ? */"),
            "SELECT '?', \"a?\", [b?] -- ?\n, $1 /* ? */"
        );
        assert_eq!(numbered("SELECT 'it''s', ?"), "SELECT 'it''s', $1");
    }

    #[test]
    fn inserts_are_told_from_other_statements() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "  insert into t",
            "REPLACE INTO t VALUES (1)",
        ] {
            assert!(inserts(sql), "{sql}");
        }
        for sql in [
            "SELECT 1",
            "UPDATE t SET a = 1",
            "insertx",
            "WITH x AS (SELECT 1) SELECT * FROM x",
        ] {
            assert!(!inserts(sql), "{sql}");
        }
    }
}
