//! Applying migrations to a SQLite file: on a connection of its own, in
//! one transaction, recorded in the migrations table, a failure named with
//! its file and (when SQLite says) line.

use super::{check_applied, line_of, Migration, MIGRATIONS_TABLE};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;
use std::path::Path;
use std::time::Duration;

/// Applies what `migrations` holds that `database` lacks, in one
/// transaction on a connection of its own (the operator's SQL, outside the
/// guest's sandbox).
pub(super) fn migrate(
    path: &Path,
    database: &str,
    migrations: &[Migration],
) -> Result<Vec<String>, String> {
    let shown = path.display();
    let mut conn = Connection::open(path).map_err(|err| format!("cannot open {shown}: {err}"))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|err| format!("{shown}: {err}"))?;
    // The operator's SQL may do anything, but a trigger or view a route
    // made may not touch the record of applied migrations.
    conn.authorizer(Some(|context: AuthContext<'_>| {
        let record = match context.action {
            AuthAction::Insert { table_name }
            | AuthAction::Update { table_name, .. }
            | AuthAction::Delete { table_name }
            | AuthAction::Read { table_name, .. } => {
                table_name.eq_ignore_ascii_case(MIGRATIONS_TABLE)
            }
            _ => false,
        };
        if record && context.accessor.is_some() {
            Authorization::Deny
        } else {
            Authorization::Allow
        }
    }))
    .map_err(|err| format!("{shown}: {err}"))?;
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|err| format!("{shown}: cannot begin the migrations: {err}"))?;
    let result = apply(&conn, database, migrations);
    let finish = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if let Err(err) = conn.execute_batch(finish) {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(format!("{shown}: cannot {finish} the migrations: {err}"));
    }
    result
}

fn apply(
    conn: &Connection,
    database: &str,
    migrations: &[Migration],
) -> Result<Vec<String>, String> {
    let failed = |err: rusqlite::Error| format!("database {database}: {err}");
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
            database TEXT NOT NULL,
            name TEXT NOT NULL,
            checksum TEXT NOT NULL,
            applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (database, name)
        )"
    ))
    .map_err(failed)?;
    let mut applied = std::collections::BTreeMap::new();
    {
        let mut select = conn
            .prepare(&format!(
                "SELECT name, checksum FROM {MIGRATIONS_TABLE} WHERE database = ?1"
            ))
            .map_err(failed)?;
        let rows = select
            .query_map([database], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(failed)?;
        for row in rows {
            let (name, checksum): (String, String) = row.map_err(failed)?;
            applied.insert(name, checksum);
        }
    }
    check_applied(database, &applied, migrations)?;
    let mut done = Vec::new();
    for migration in migrations.iter().filter(|m| !applied.contains_key(&m.name)) {
        conn.execute_batch(&migration.sql)
            .map_err(|err| migration_error(migration, database, &err))?;
        if conn.is_autocommit() {
            return Err(format!(
                "{}: database {database}: a migration may not end its transaction (COMMIT, END or ROLLBACK): each run is one transaction",
                migration.shown
            ));
        }
        conn.execute(
            &format!(
                "INSERT INTO {MIGRATIONS_TABLE} (database, name, checksum) VALUES (?1, ?2, ?3)"
            ),
            [database, &migration.name, &migration.checksum],
        )
        .map_err(failed)?;
        done.push(migration.name.clone());
    }
    Ok(done)
}

/// `file:line: error` when SQLite says where, `file: error` otherwise.
fn migration_error(migration: &Migration, database: &str, err: &rusqlite::Error) -> String {
    let line = match err {
        // `sql` is the rest of the file from the statement that failed on.
        rusqlite::Error::SqlInputError { sql, offset, .. }
            if migration.sql.ends_with(sql.as_str()) =>
        {
            let start = migration.sql.len() - sql.len();
            usize::try_from(*offset)
                .ok()
                .map(|offset| line_of(&migration.sql, start + offset))
        }
        _ => None,
    };
    let reason = match err {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    };
    match line {
        Some(line) => format!("{}:{line}: database {database}: {reason}", migration.shown),
        None => format!("{}: database {database}: {reason}", migration.shown),
    }
}
