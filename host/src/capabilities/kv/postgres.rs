//! The PostgreSQL backend, for stores a fleet of hosts shares: a pool of
//! connections (`deadpool-postgres`) that opens them as needed, so a server
//! that is down does not stop the host from starting and one that comes
//! back is used again without a restart.
//!
//! Every store lives in one table, `edgehost_kv (store, key, value)`,
//! created at the first operation if it is missing. Keys compare byte by
//! byte (`COLLATE "C"`), so they list in the same order as on the other
//! backends, and `list-keys` pages from the last key seen (keyset paging).

use super::{KvBackend, KvError, Swap};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

/// Connections one host keeps to one server.
const MAX_CONNECTIONS: usize = 16;

/// How long opening a connection may take; a request's `kv_timeout`
/// bounds it too.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const CREATE_TABLE: &str = r#"CREATE TABLE IF NOT EXISTS edgehost_kv (
    store text NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (store, key)
)"#;

/// Whether the table is there (a role that may use it need not be allowed
/// to create tables, and `CREATE TABLE IF NOT EXISTS` wants that right).
const TABLE_EXISTS: &str = "SELECT to_regclass('edgehost_kv') IS NOT NULL";

const GET: &str = "SELECT value FROM edgehost_kv WHERE store = $1 AND key = $2";
const SET: &str = "INSERT INTO edgehost_kv (store, key, value) VALUES ($1, $2, $3)
    ON CONFLICT (store, key) DO UPDATE SET value = EXCLUDED.value";
const DELETE: &str = "DELETE FROM edgehost_kv WHERE store = $1 AND key = $2";
const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM edgehost_kv WHERE store = $1 AND key = $2)";
/// Two statements, so that each page's plan starts the index scan at its
/// cursor (one with `$2 IS NULL OR key > $2` may get a plan that does not).
const FIRST_KEYS: &str = "SELECT key FROM edgehost_kv WHERE store = $1 ORDER BY key LIMIT $2";
const KEYS_AFTER: &str =
    "SELECT key FROM edgehost_kv WHERE store = $1 AND key > $2 ORDER BY key LIMIT $3";
/// One statement: the row lock of ON CONFLICT makes it atomic across hosts.
/// A stored value that is not plain decimal text (the one form every
/// backend reads) is cast from `not a counter`, which fails as bad text.
const INCREMENT: &str = "INSERT INTO edgehost_kv (store, key, value)
    VALUES ($1, $2, convert_to($3::bigint::text, 'UTF8'))
    ON CONFLICT (store, key) DO UPDATE SET value = convert_to(((
        CASE WHEN convert_from(edgehost_kv.value, 'UTF8') ~ '^(0|-?[1-9][0-9]{0,18})$'
            AND convert_from(edgehost_kv.value, 'UTF8')::numeric
                BETWEEN -9223372036854775808 AND 9223372036854775807
        THEN convert_from(edgehost_kv.value, 'UTF8') ELSE 'not a counter' END
    )::bigint + $3::bigint)::text, 'UTF8')
    RETURNING convert_from(value, 'UTF8')::bigint";
const SWAP_IF: &str =
    "UPDATE edgehost_kv SET value = $4 WHERE store = $1 AND key = $2 AND value = $3";
const SWAP_IF_ABSENT: &str = "INSERT INTO edgehost_kv (store, key, value) VALUES ($1, $2, $3)
    ON CONFLICT (store, key) DO NOTHING";
const GET_MANY: &str = "SELECT key, value FROM edgehost_kv WHERE store = $1 AND key = ANY($2)";
/// Keys come sorted: two writers lock rows in one order and cannot deadlock.
const SET_MANY: &str = "INSERT INTO edgehost_kv (store, key, value)
    SELECT $1, key, value FROM UNNEST($2::text[], $3::bytea[]) AS given (key, value)
    ON CONFLICT (store, key) DO UPDATE SET value = EXCLUDED.value";
/// Rows are locked in key order first, as SET_MANY takes them: a plain
/// `DELETE ... = ANY` locks them in whatever order its scan meets them,
/// which can deadlock with a batch write of the same keys.
const DELETE_MANY: &str = "DELETE FROM edgehost_kv WHERE store = $1 AND key IN (
    SELECT key FROM edgehost_kv WHERE store = $1 AND key = ANY($2) ORDER BY key FOR UPDATE)";

/// Stores in one PostgreSQL database.
pub struct PostgresKv {
    pool: Pool,
    /// Set once the table is known to exist.
    table: OnceCell<()>,
}

impl PostgresKv {
    /// A backend for the database at `url` (`postgres://user@host:port/db`);
    /// checks the URL, connects at first use.
    pub fn connect(url: &str) -> Result<PostgresKv, KvError> {
        Ok(PostgresKv {
            pool: connection_pool(url, RecyclingMethod::Fast, None).map_err(KvError::Failed)?,
            table: OnceCell::new(),
        })
    }

    /// Whether `url` is one [`PostgresKv::connect`] takes.
    pub(crate) fn check_url(url: &str) -> Result<(), String> {
        let config = url
            .parse::<tokio_postgres::Config>()
            .map_err(|err| format!("not a PostgreSQL URL (postgres://user@host:port/db): {err}"))?;
        // Connections are plain TCP: one that must be TLS would never open.
        match config.get_ssl_mode() {
            SslMode::Require => Err(
                "sslmode=require: this host connects without TLS (use a local server, or a TLS proxy in front of it)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// A connection from the pool, the table made if need be.
    async fn client(&self) -> Result<deadpool_postgres::Object, KvError> {
        let client = self.pool.get().await.map_err(|err| match err {
            deadpool_postgres::PoolError::Backend(err) => database(err),
            other => KvError::Unavailable(other.to_string()),
        })?;
        self.table
            .get_or_try_init(|| async {
                let exists = client
                    .query_one(TABLE_EXISTS, &[])
                    .await
                    .map_err(database)?;
                if exists.try_get::<_, bool>(0).map_err(database)? {
                    return Ok(());
                }
                match client.batch_execute(CREATE_TABLE).await {
                    Ok(()) => Ok(()),
                    // Two hosts making it at once: the other one won (the
                    // race shows as one of these three).
                    Err(err)
                        if err.code() == Some(&SqlState::UNIQUE_VIOLATION)
                            || err.code() == Some(&SqlState::DUPLICATE_TABLE)
                            || err.code() == Some(&SqlState::DUPLICATE_OBJECT) =>
                    {
                        Ok(())
                    }
                    Err(err) => Err(database(err)),
                }
            })
            .await?;
        Ok(client)
    }
}

/// A pool of at most [`MAX_CONNECTIONS`] connections to the database at
/// `url`, opened as needed (the SQL databases' pools are made alike):
/// each connection checked by `recycling` before it is reused, and opened
/// with the server settings `options` (`-c name=value ...`) when given.
pub(crate) fn connection_pool(
    url: &str,
    recycling: RecyclingMethod,
    options: Option<&str>,
) -> Result<Pool, String> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|err| format!("not a PostgreSQL URL: {err}"))?;
    if let Some(options) = options {
        let given = config.get_options().unwrap_or_default().to_string();
        config.options(format!("{given} {options}").trim());
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: recycling,
        },
    );
    Pool::builder(manager)
        .max_size(MAX_CONNECTIONS)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|err| format!("cannot make a connection pool: {err}"))
}

/// Whether `err` means the server cannot be reached (a lost connection, a
/// server shutting down or starting) rather than a refusal.
pub(crate) fn unreachable(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => err.as_db_error().is_none(),
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
        }
    }
}

/// `sql` prepared on `client`, once per connection: later uses are one
/// round trip, not two.
async fn prepared(
    client: &deadpool_postgres::Object,
    sql: &str,
) -> Result<tokio_postgres::Statement, KvError> {
    client.prepare_cached(sql).await.map_err(database)
}

/// A lost connection, or a server shutting down or starting, is the store
/// being unavailable; anything else the database refused is a failure.
fn database(err: tokio_postgres::Error) -> KvError {
    let reason = match err.as_db_error() {
        Some(db) => db.message().to_string(),
        None => err.to_string(),
    };
    if unreachable(&err) {
        KvError::Unavailable(reason)
    } else {
        KvError::Failed(reason)
    }
}

#[async_trait]
impl KvBackend for PostgresKv {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&prepared(&client, GET).await?, &[&store, &key])
            .await
            .map_err(database)?;
        row.map(|row| row.try_get(0)).transpose().map_err(database)
    }

    async fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let client = self.client().await?;
        client
            .execute(&prepared(&client, SET).await?, &[&store, &key, &value])
            .await
            .map_err(database)?;
        Ok(())
    }

    async fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        let client = self.client().await?;
        client
            .execute(&prepared(&client, DELETE).await?, &[&store, &key])
            .await
            .map_err(database)?;
        Ok(())
    }

    async fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        let client = self.client().await?;
        let row = client
            .query_one(&prepared(&client, EXISTS).await?, &[&store, &key])
            .await
            .map_err(database)?;
        row.try_get(0).map_err(database)
    }

    async fn list_keys(
        &self,
        store: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<String>, bool), KvError> {
        let client = self.client().await?;
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = match after {
            None => {
                client
                    .query(&prepared(&client, FIRST_KEYS).await?, &[&store, &fetch])
                    .await
            }
            Some(after) => {
                client
                    .query(
                        &prepared(&client, KEYS_AFTER).await?,
                        &[&store, &after, &fetch],
                    )
                    .await
            }
        }
        .map_err(database)?;
        let mut keys = rows
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()
            .map_err(database)?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok((keys, more))
    }

    async fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                &prepared(&client, INCREMENT).await?,
                &[&store, &key, &delta],
            )
            .await
            .map_err(|err| match err.code() {
                Some(code) if *code == SqlState::NUMERIC_VALUE_OUT_OF_RANGE => {
                    KvError::counter_overflow(key)
                }
                Some(code)
                    if *code == SqlState::INVALID_TEXT_REPRESENTATION
                        || *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE =>
                {
                    KvError::not_a_counter(key)
                }
                _ => database(err),
            })?;
        row.try_get(0).map_err(database)
    }

    async fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Swap, KvError> {
        let client = self.client().await?;
        let swapped = match expected {
            Some(expected) => {
                client
                    .execute(
                        &prepared(&client, SWAP_IF).await?,
                        &[&store, &key, &expected, &value],
                    )
                    .await
            }
            None => {
                client
                    .execute(
                        &prepared(&client, SWAP_IF_ABSENT).await?,
                        &[&store, &key, &value],
                    )
                    .await
            }
        }
        .map_err(database)?;
        if swapped == 1 {
            return Ok(Swap::Done);
        }
        let row = client
            .query_opt(&prepared(&client, GET).await?, &[&store, &key])
            .await
            .map_err(database)?;
        let current = row
            .map(|row| row.try_get(0))
            .transpose()
            .map_err(database)?;
        Ok(Swap::Changed(current))
    }

    async fn get_many(
        &self,
        store: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let rows = client
            .query(&prepared(&client, GET_MANY).await?, &[&store, &keys])
            .await
            .map_err(database)?;
        let mut found: HashMap<String, Vec<u8>> = HashMap::with_capacity(rows.len());
        for row in &rows {
            found.insert(
                row.try_get(0).map_err(database)?,
                row.try_get(1).map_err(database)?,
            );
        }
        // A key asked for twice gets its value twice.
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    async fn set_many(&self, store: &str, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        // One row per key, the last value given winning (an upsert may not
        // touch a row twice), in key order (see SET_MANY).
        let mut last: BTreeMap<&str, &[u8]> = BTreeMap::new();
        for (key, value) in entries {
            last.insert(key, value);
        }
        if last.is_empty() {
            return Ok(());
        }
        let (keys, values): (Vec<&str>, Vec<&[u8]>) = last.into_iter().unzip();
        let client = self.client().await?;
        client
            .execute(
                &prepared(&client, SET_MANY).await?,
                &[&store, &keys, &values],
            )
            .await
            .map_err(database)?;
        Ok(())
    }

    async fn delete_many(&self, store: &str, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute(&prepared(&client, DELETE_MANY).await?, &[&store, &keys])
            .await
            .map_err(database)?;
        Ok(())
    }
}
