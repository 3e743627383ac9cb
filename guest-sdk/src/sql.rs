//! SQL databases the manifest grants the route (`sql = ["main"]`): an
//! embedded SQLite file by default, PostgreSQL for a fleet.
//!
//! Parameters are bound, never spliced into the text: write `$1`, `$2`...
//! in the statement and pass the values in that order. [`Database::batch`]
//! runs several statements as one transaction: all of them or none.
//!
//! With `?`, a database that cannot be reached answers 503 with
//! `Retry-After`, anything else 500; match [`SqlError::Constraint`] to
//! answer 409 when a unique key is taken.
//!
//! ```no_run
//! use guest_sdk::sql::{Database, Value};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Post {
//!     id: String,
//!     title: String,
//! }
//!
//! # fn run() -> Result<(), guest_sdk::Error> {
//! let db = Database::open("main")?;
//! db.execute("INSERT INTO posts (id, title) VALUES ($1, $2)", &["1".into(), "Hello".into()])?;
//! let posts: Vec<Post> = db.query_as("SELECT id, title FROM posts ORDER BY id", &[])?;
//! # Ok(()) }
//! ```

use crate::bindings::edge::sql::sql;
use crate::Error;
use serde::de::DeserializeOwned;

pub use sql::Value;

/// Why a statement failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlError {
    /// The route is not granted the database.
    AccessDenied(String),
    /// The database cannot be reached, or did not answer in time (503).
    Unavailable(String),
    /// The host refused it: a limit of the route, or the sandbox.
    Refused(String),
    /// A unique, foreign key, not-null or check constraint refused it.
    Constraint(String),
    /// The statement is wrong (syntax, names, parameters).
    Invalid(String),
    /// The database failed otherwise, or a row did not fit the type asked for.
    Other(String),
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlError::AccessDenied(db) => write!(f, "this route is not granted database {db}"),
            SqlError::Unavailable(r) => write!(f, "database unavailable: {r}"),
            SqlError::Refused(r) => write!(f, "refused: {r}"),
            SqlError::Constraint(r) => write!(f, "constraint: {r}"),
            SqlError::Invalid(r) => write!(f, "invalid statement: {r}"),
            SqlError::Other(r) => write!(f, "database error: {r}"),
        }
    }
}

impl std::error::Error for SqlError {}

impl From<SqlError> for Error {
    /// 503 with `Retry-After` when the database is unavailable, else 500.
    fn from(err: SqlError) -> Error {
        match err {
            SqlError::Unavailable(_) => Error::unavailable(err.to_string()),
            other => Error::internal(other.to_string()),
        }
    }
}

fn from_wit(database: &str, err: sql::Error) -> SqlError {
    match err {
        sql::Error::AccessDenied => SqlError::AccessDenied(database.to_string()),
        sql::Error::Unavailable(r) => SqlError::Unavailable(r),
        sql::Error::Refused(r) => SqlError::Refused(r),
        sql::Error::Constraint(r) => SqlError::Constraint(r),
        sql::Error::Invalid(r) => SqlError::Invalid(r),
        sql::Error::Other(r) => SqlError::Other(r),
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Integer(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Value {
        Value::Integer(n.into())
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Integer(b.into())
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Value {
        Value::Real(x)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_string())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Text(text)
    }
}

impl From<Vec<u8>> for Value {
    fn from(blob: Vec<u8>) -> Value {
        Value::Blob(blob)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

/// What a statement returned: its columns, its rows, and how many rows it
/// changed.
#[derive(Debug, Clone)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
}

impl Rows {
    /// Each row as a `T`, read from a JSON object of column name to value
    /// (integers and reals as numbers, blobs as arrays of bytes).
    ///
    /// ```no_run
    /// # let db = guest_sdk::sql::Database::open("main")?;
    /// #[derive(serde::Deserialize)]
    /// struct Count { n: i64 }
    /// let rows = db.query("SELECT count(*) AS n FROM posts", &[])?;
    /// let counts: Vec<Count> = rows.into_typed()?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn into_typed<T: DeserializeOwned>(self) -> Result<Vec<T>, SqlError> {
        let columns = self.columns;
        self.rows
            .into_iter()
            .map(|row| {
                let object: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .cloned()
                    .zip(row.into_iter().map(to_json))
                    .collect();
                serde_json::from_value(serde_json::Value::Object(object))
                    .map_err(|err| SqlError::Other(format!("a row does not fit: {err}")))
            })
            .collect()
    }
}

fn to_json(value: Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Integer(n) => n.into(),
        Value::Real(x) => {
            serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Text(text) => text.into(),
        Value::Blob(blob) => blob.into(),
    }
}

impl From<sql::RowSet> for Rows {
    fn from(set: sql::RowSet) -> Rows {
        Rows {
            columns: set.columns,
            rows: set.rows,
            rows_affected: set.rows_affected,
        }
    }
}

/// One statement of a [`Database::batch`].
pub struct Statement {
    sql: String,
    params: Vec<Value>,
}

impl Statement {
    /// ```
    /// let s = guest_sdk::sql::Statement::new("DELETE FROM posts WHERE id = $1", &["1".into()]);
    /// # let _ = s;
    /// ```
    pub fn new(sql: &str, params: &[Value]) -> Statement {
        Statement {
            sql: sql.to_string(),
            params: params.to_vec(),
        }
    }
}

/// An open SQL database.
pub struct Database {
    connection: sql::Connection,
    name: String,
}

impl Database {
    /// Opens the database `name`; it fails (a 500 with `?`) when the
    /// manifest does not grant this route that database.
    ///
    /// ```no_run
    /// let db = guest_sdk::sql::Database::open("main")?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Database, SqlError> {
        let connection = sql::Connection::open(name).map_err(|err| from_wit(name, err))?;
        Ok(Database {
            connection,
            name: name.to_string(),
        })
    }

    /// Runs one statement and returns its rows.
    ///
    /// ```no_run
    /// # let db = guest_sdk::sql::Database::open("main")?;
    /// let rows = db.query("SELECT title FROM posts WHERE id = $1", &["1".into()])?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Rows, SqlError> {
        self.connection
            .query(sql, params)
            .map(Rows::from)
            .map_err(|err| from_wit(&self.name, err))
    }

    /// Runs one statement and returns the rows it changed.
    ///
    /// ```no_run
    /// # let db = guest_sdk::sql::Database::open("main")?;
    /// let deleted = db.execute("DELETE FROM posts WHERE id = $1", &["1".into()])?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        self.query(sql, params).map(|rows| rows.rows_affected)
    }

    /// Runs one statement and reads each row as a `T` (see [`Rows::into_typed`]).
    ///
    /// ```no_run
    /// # let db = guest_sdk::sql::Database::open("main")?;
    /// #[derive(serde::Deserialize)]
    /// struct Post { id: String, title: String }
    /// let posts: Vec<Post> = db.query_as("SELECT id, title FROM posts ORDER BY id", &[])?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn query_as<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<T>, SqlError> {
        self.query(sql, params)?.into_typed()
    }

    /// Runs `statements` in order as one transaction: when one fails, none
    /// of them took effect. What each returned.
    ///
    /// ```no_run
    /// use guest_sdk::sql::{Database, Statement};
    /// # let db = Database::open("main")?;
    /// db.batch(&[
    ///     Statement::new("UPDATE accounts SET balance = balance - 10 WHERE id = $1", &[1.into()]),
    ///     Statement::new("UPDATE accounts SET balance = balance + 10 WHERE id = $1", &[2.into()]),
    /// ])?;
    /// # Ok::<(), guest_sdk::Error>(())
    /// ```
    pub fn batch(&self, statements: &[Statement]) -> Result<Vec<Rows>, SqlError> {
        let statements: Vec<sql::Statement> = statements
            .iter()
            .map(|s| sql::Statement {
                sql: s.sql.clone(),
                params: s.params.clone(),
            })
            .collect();
        self.connection
            .batch(&statements)
            .map(|sets| sets.into_iter().map(Rows::from).collect())
            .map_err(|err| from_wit(&self.name, err))
    }
}
