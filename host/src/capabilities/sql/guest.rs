//! The `edge:sql` interface a guest imports (`guest-sdk/wit/deps/edge-sql`).
//!
//! A route opens only the databases its manifest entry lists; any other
//! name is `access-denied`. Each failure reaches the guest as the variant
//! it is: `unavailable` (the SDK answers 503), `refused`, `constraint`
//! (a route may answer 409), `invalid` or `other`.

use super::databases::SqlAccess;
use super::{RowSet, SqlError, SqlValue, Statement};
use crate::wit::bindings::edge::sql::sql;
use crate::wit::SqlConnection;
use wasmtime::component::{HasData, Resource, ResourceTable};

/// What the SQL import works on in one request: its grants and the
/// request's resource table, where the connections it opened live.
pub(crate) struct SqlView<'a> {
    table: &'a mut ResourceTable,
    access: &'a SqlAccess,
}

/// Links the SQL import to a [`SqlView`] of the store's state.
pub(crate) struct SqlData;

impl HasData for SqlData {
    type Data<'a> = SqlView<'a>;
}

impl<'a> SqlView<'a> {
    pub(crate) fn new(table: &'a mut ResourceTable, access: &'a SqlAccess) -> Self {
        SqlView { table, access }
    }

    /// The granted database a connection the guest holds is on.
    fn database(
        &self,
        connection: &Resource<SqlConnection>,
    ) -> Result<(&'a SqlAccess, &'a super::databases::DatabaseHandle), sql::Error> {
        let access: &'a SqlAccess = self.access;
        let name = &self
            .table
            .get(connection)
            .map_err(|err| sql::Error::Other(err.to_string()))?
            .name;
        let db = access.database(name).ok_or(sql::Error::AccessDenied)?;
        Ok((access, db))
    }
}

fn to_guest(err: SqlError) -> sql::Error {
    match err {
        SqlError::Unavailable(reason) => sql::Error::Unavailable(reason),
        SqlError::Refused(reason) => sql::Error::Refused(reason),
        SqlError::Constraint(reason) => sql::Error::Constraint(reason),
        SqlError::Invalid(reason) => sql::Error::Invalid(reason),
        SqlError::Failed(reason) => sql::Error::Other(reason),
    }
}

fn from_guest(value: sql::Value) -> SqlValue {
    match value {
        sql::Value::Null => SqlValue::Null,
        sql::Value::Integer(n) => SqlValue::Integer(n),
        sql::Value::Real(x) => SqlValue::Real(x),
        sql::Value::Text(text) => SqlValue::Text(text),
        sql::Value::Blob(blob) => SqlValue::Blob(blob),
    }
}

fn rows_to_guest(rows: RowSet) -> sql::RowSet {
    sql::RowSet {
        columns: rows.columns,
        rows: rows
            .rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|value| match value {
                        SqlValue::Null => sql::Value::Null,
                        SqlValue::Integer(n) => sql::Value::Integer(n),
                        SqlValue::Real(x) => sql::Value::Real(x),
                        SqlValue::Text(text) => sql::Value::Text(text),
                        SqlValue::Blob(blob) => sql::Value::Blob(blob),
                    })
                    .collect()
            })
            .collect(),
        rows_affected: rows.rows_affected,
    }
}

impl sql::Host for SqlView<'_> {}

impl sql::HostConnection for SqlView<'_> {
    async fn open(&mut self, name: String) -> Result<Resource<SqlConnection>, sql::Error> {
        if self.access.database(&name).is_none() {
            return Err(sql::Error::AccessDenied);
        }
        self.table
            .push(SqlConnection { name })
            .map_err(|err| sql::Error::Other(err.to_string()))
    }

    async fn query(
        &mut self,
        connection: Resource<SqlConnection>,
        sql: String,
        params: Vec<sql::Value>,
    ) -> Result<sql::RowSet, sql::Error> {
        let (access, db) = self.database(&connection)?;
        let statement = Statement::new(sql, params.into_iter().map(from_guest).collect());
        access
            .query(db, statement)
            .await
            .map(rows_to_guest)
            .map_err(to_guest)
    }

    async fn batch(
        &mut self,
        connection: Resource<SqlConnection>,
        statements: Vec<sql::Statement>,
    ) -> Result<Vec<sql::RowSet>, sql::Error> {
        let (access, db) = self.database(&connection)?;
        let statements = statements
            .into_iter()
            .map(|s| Statement::new(s.sql, s.params.into_iter().map(from_guest).collect()))
            .collect();
        access
            .batch(db, statements)
            .await
            .map(|sets| sets.into_iter().map(rows_to_guest).collect())
            .map_err(to_guest)
    }

    async fn drop(&mut self, connection: Resource<SqlConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}
