//! One conformance suite for both SQL backends: SQLite files and a real
//! PostgreSQL server started for the test. Every case runs against each
//! backend and expects the same answers.

mod support;

use edgehost::capabilities::sql::{
    Bounds, Migration, PostgresDb, RowSet, SqlBackend, SqlError, SqlValue, SqliteDb, Statement,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::backends::PostgresServer;

type Backend = Arc<dyn SqlBackend>;
/// A case gets a backend and a prefix for the tables it makes (cases
/// sharing a PostgreSQL server do not see each other's tables).
type Case = fn(Backend, String) -> Pin<Box<dyn Future<Output = ()> + Send>>;

const CASES: &[(&str, Case)] = &[
    ("values round-trip", |db, p| Box::pin(round_trip(db, p))),
    ("parameters bind by number", |db, p| {
        Box::pin(parameters(db, p))
    }),
    ("a parameter stays data", |db, p| Box::pin(injection(db, p))),
    ("a failing batch changes nothing", |db, p| {
        Box::pin(batch_rolls_back(db, p))
    }),
    ("RETURNING and rows affected", |db, p| {
        Box::pin(returning(db, p))
    }),
    ("constraints are named as such", |db, p| {
        Box::pin(constraints(db, p))
    }),
    ("results are bounded in rows and bytes", |db, p| {
        Box::pin(result_limits(db, p))
    }),
    ("a slow query stops at its timeout", |db, p| {
        Box::pin(timeout(db, p))
    }),
    ("migrations", |db, p| Box::pin(migrations(db, p))),
    ("a call leaves nothing behind on its connection", |db, p| {
        Box::pin(nothing_left_behind(db, p))
    }),
];

const BOUNDS: Bounds = Bounds {
    timeout: Duration::from_secs(10),
    max_rows: 1000,
    max_bytes: 1 << 20,
};

fn run_all(open: &dyn Fn(&str) -> Backend) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (i, (name, case)) in CASES.iter().enumerate() {
        let prefix = format!("c{i}");
        let db = open(&prefix);
        eprintln!("{} backend: {name}", db.kind());
        runtime.block_on(case(db, prefix));
    }
}

#[test]
fn the_sqlite_backend_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    run_all(&|prefix| {
        Arc::new(SqliteDb::open(&dir.path().join(format!("{prefix}.db")), 1 << 30).unwrap())
            as Backend
    });
}

#[test]
fn the_postgres_backend_passes_the_suite() {
    let server = PostgresServer::start();
    let db: Backend = Arc::new(PostgresDb::connect(&server.url()).unwrap());
    run_all(&|_| Arc::clone(&db));
}

fn st(sql: impl Into<String>, params: Vec<SqlValue>) -> Statement {
    Statement::new(sql, params)
}

async fn exec(db: &Backend, sql: &str, params: Vec<SqlValue>) -> RowSet {
    db.query(st(sql, params), BOUNDS)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_string())
}

async fn round_trip(db: Backend, p: String) {
    exec(
        &db,
        &format!("CREATE TABLE {p}_t (k BIGINT PRIMARY KEY, i BIGINT, r DOUBLE PRECISION, s TEXT, b BYTEA, n TEXT)"),
        vec![],
    )
    .await;
    let rows = [
        vec![
            SqlValue::Integer(1),
            SqlValue::Integer(i64::MAX),
            SqlValue::Real(1.5),
            text("héllo ✓ 日本 \u{1f600}"),
            SqlValue::Blob((0..=255).collect()),
            SqlValue::Null,
        ],
        vec![
            SqlValue::Integer(2),
            SqlValue::Integer(i64::MIN),
            SqlValue::Real(-0.000_125),
            text(""),
            SqlValue::Blob(Vec::new()),
            SqlValue::Null,
        ],
    ];
    for row in &rows {
        let done = exec(
            &db,
            &format!("INSERT INTO {p}_t (k, i, r, s, b, n) VALUES ($1, $2, $3, $4, $5, $6)"),
            row.clone(),
        )
        .await;
        assert_eq!(done.rows_affected, 1);
    }
    let read = exec(
        &db,
        &format!("SELECT k, i, r, s, b, n FROM {p}_t ORDER BY k"),
        vec![],
    )
    .await;
    assert_eq!(read.columns, ["k", "i", "r", "s", "b", "n"]);
    assert_eq!(read.rows, rows);
    assert_eq!(read.rows_affected, 0, "a SELECT changes nothing");
}

async fn parameters(db: Backend, p: String) {
    exec(
        &db,
        &format!("CREATE TABLE {p}_t (a TEXT, b BIGINT)"),
        vec![],
    )
    .await;
    exec(
        &db,
        &format!("INSERT INTO {p}_t (a, b) VALUES ($1, $2), ($1, $3)"),
        vec![text("x"), SqlValue::Integer(2), SqlValue::Integer(3)],
    )
    .await;
    // $2 comes first in the text: it still binds the second value.
    let found = exec(
        &db,
        &format!("SELECT a, b FROM {p}_t WHERE b = $2 AND a = $1"),
        vec![text("x"), SqlValue::Integer(3)],
    )
    .await;
    assert_eq!(found.rows, [vec![text("x"), SqlValue::Integer(3)]]);
    let wrong = db
        .query(
            st(
                format!("SELECT a FROM {p}_t WHERE b = $2 AND a = $1"),
                vec![text("x")],
            ),
            BOUNDS,
        )
        .await;
    assert!(
        matches!(&wrong, Err(SqlError::Invalid(m)) if m.contains("takes 2 parameters")),
        "{wrong:?}"
    );
    let syntax = db
        .query(st(format!("SELEC a FROM {p}_t"), vec![]), BOUNDS)
        .await;
    assert!(matches!(syntax, Err(SqlError::Invalid(_))), "{syntax:?}");
    let missing = db
        .query(st("SELECT * FROM nowhere_at_all", vec![]), BOUNDS)
        .await;
    assert!(matches!(missing, Err(SqlError::Invalid(_))), "{missing:?}");
}

async fn injection(db: Backend, p: String) {
    exec(&db, &format!("CREATE TABLE {p}_posts (title TEXT)"), vec![]).await;
    let hostile = format!("'; DROP TABLE {p}_posts; --");
    exec(
        &db,
        &format!("INSERT INTO {p}_posts (title) VALUES ($1)"),
        vec![text(&hostile)],
    )
    .await;
    let read = exec(&db, &format!("SELECT title FROM {p}_posts"), vec![]).await;
    assert_eq!(
        read.rows,
        [vec![text(&hostile)]],
        "the table is still there"
    );
}

async fn batch_rolls_back(db: Backend, p: String) {
    exec(
        &db,
        &format!("CREATE TABLE {p}_t (id BIGINT PRIMARY KEY)"),
        vec![],
    )
    .await;
    let insert = format!("INSERT INTO {p}_t (id) VALUES ($1)");
    let failed = db
        .batch(
            vec![
                st(&insert, vec![SqlValue::Integer(1)]),
                st(&insert, vec![SqlValue::Integer(2)]),
                st(&insert, vec![SqlValue::Integer(1)]),
            ],
            BOUNDS,
        )
        .await;
    assert!(
        matches!(&failed, Err(SqlError::Constraint(m)) if m.contains("statement 3 of the batch")),
        "{failed:?}"
    );
    let count = exec(&db, &format!("SELECT count(*) AS n FROM {p}_t"), vec![]).await;
    assert_eq!(count.rows, [vec![SqlValue::Integer(0)]], "all or nothing");
    let done = db
        .batch(
            vec![
                st(&insert, vec![SqlValue::Integer(1)]),
                st(&insert, vec![SqlValue::Integer(2)]),
                st(format!("SELECT id FROM {p}_t ORDER BY id"), vec![]),
            ],
            BOUNDS,
        )
        .await
        .unwrap();
    assert_eq!(done.len(), 3);
    assert_eq!(done[0].rows_affected, 1);
    assert_eq!(
        done[2].rows,
        [vec![SqlValue::Integer(1)], vec![SqlValue::Integer(2)]]
    );
    // The connection is usable after both (no transaction left open).
    exec(&db, &insert, vec![SqlValue::Integer(3)]).await;
}

async fn returning(db: Backend, p: String) {
    exec(
        &db,
        &format!("CREATE TABLE {p}_t (id BIGINT PRIMARY KEY, title TEXT)"),
        vec![],
    )
    .await;
    let made = exec(
        &db,
        &format!("INSERT INTO {p}_t (id, title) VALUES ($1, $2), ($3, $4) RETURNING id, title"),
        vec![
            SqlValue::Integer(7),
            text("a"),
            SqlValue::Integer(8),
            text("b"),
        ],
    )
    .await;
    assert_eq!(made.columns, ["id", "title"]);
    assert_eq!(
        made.rows,
        [
            vec![SqlValue::Integer(7), text("a")],
            vec![SqlValue::Integer(8), text("b")]
        ]
    );
    assert_eq!(made.rows_affected, 2);
    let updated = exec(
        &db,
        &format!("UPDATE {p}_t SET title = $1"),
        vec![text("c")],
    )
    .await;
    assert_eq!(updated.rows_affected, 2);
    let deleted = exec(
        &db,
        &format!("DELETE FROM {p}_t WHERE id = $1"),
        vec![SqlValue::Integer(99)],
    )
    .await;
    assert_eq!(deleted.rows_affected, 0);
}

async fn constraints(db: Backend, p: String) {
    exec(
        &db,
        &format!("CREATE TABLE {p}_t (id BIGINT PRIMARY KEY, title TEXT NOT NULL)"),
        vec![],
    )
    .await;
    let insert = format!("INSERT INTO {p}_t (id, title) VALUES ($1, $2)");
    exec(&db, &insert, vec![SqlValue::Integer(1), text("a")]).await;
    for params in [
        vec![SqlValue::Integer(1), text("again")],
        vec![SqlValue::Integer(2), SqlValue::Null],
    ] {
        let refused = db.query(st(&insert, params), BOUNDS).await;
        assert!(
            matches!(refused, Err(SqlError::Constraint(_))),
            "{refused:?}"
        );
    }
}

async fn result_limits(db: Backend, p: String) {
    exec(&db, &format!("CREATE TABLE {p}_t (v TEXT)"), vec![]).await;
    let rows: Vec<Statement> = (0..20)
        .map(|i| {
            st(
                format!("INSERT INTO {p}_t (v) VALUES ($1)"),
                vec![text(&format!("{i:0>100}"))],
            )
        })
        .collect();
    db.batch(rows, BOUNDS).await.unwrap();
    let select = format!("SELECT v FROM {p}_t");
    let few_rows = Bounds {
        max_rows: 10,
        ..BOUNDS
    };
    let refused = db.query(st(&select, vec![]), few_rows).await;
    assert!(
        matches!(&refused, Err(SqlError::Refused(m)) if m.contains("max_sql_rows of 10")),
        "{refused:?}"
    );
    let few_bytes = Bounds {
        max_bytes: 1000,
        ..BOUNDS
    };
    let refused = db.query(st(&select, vec![]), few_bytes).await;
    assert!(
        matches!(&refused, Err(SqlError::Refused(m)) if m.contains("max_sql_result of 1000")),
        "{refused:?}"
    );
    let all = db.query(st(&select, vec![]), BOUNDS).await.unwrap();
    assert_eq!(all.rows.len(), 20);
}

async fn timeout(db: Backend, _p: String) {
    // A read longer than SQLite's time on the async worker moves to the
    // blocking pool and still answers, once.
    let long = exec(
        &db,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT count(*) AS n FROM c",
        vec![],
    )
    .await;
    assert_eq!(long.rows, [vec![SqlValue::Integer(300_000)]]);
    let slow = match db.kind() {
        "postgres" => "SELECT pg_sleep(30)",
        _ => {
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
        }
    };
    let bounds = Bounds {
        timeout: Duration::from_millis(300),
        ..BOUNDS
    };
    let started = Instant::now();
    let stopped = db.query(st(slow, vec![]), bounds).await;
    assert!(
        matches!(&stopped, Err(SqlError::Unavailable(m)) if m.contains("sql_timeout")),
        "{stopped:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the call answered at its timeout, not the query's end: {:?}",
        started.elapsed()
    );
    // The backend keeps serving: the slow statement was stopped, not left
    // holding a connection or a lock.
    for _ in 0..8 {
        let ok = exec(&db, "SELECT 1 AS one", vec![]).await;
        assert_eq!(ok.rows, [vec![SqlValue::Integer(1)]]);
    }
    let batch = db
        .batch(vec![st("SELECT 1", vec![]), st(slow, vec![])], bounds)
        .await;
    assert!(matches!(batch, Err(SqlError::Unavailable(_))), "{batch:?}");
    exec(&db, "SELECT 1 AS one", vec![]).await;
}

fn migration(name: &str, sql: &str) -> Migration {
    use sha2::{Digest, Sha256};
    Migration {
        name: name.into(),
        shown: format!("migrations/{name}"),
        sql: sql.into(),
        checksum: Sha256::digest(sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    }
}

async fn migrations(db: Backend, p: String) {
    let database = format!("{p}_db");
    let first = vec![
        migration(
            "001_posts.sql",
            &format!("CREATE TABLE {p}_posts (id TEXT PRIMARY KEY);\nINSERT INTO {p}_posts VALUES ('seed');\n"),
        ),
        migration(
            "002_title.sql",
            &format!("ALTER TABLE {p}_posts ADD COLUMN title TEXT;"),
        ),
    ];
    let applied = db.migrate(&database, &first).await.unwrap();
    assert_eq!(applied, ["001_posts.sql", "002_title.sql"]);
    assert!(
        db.migrate(&database, &first).await.unwrap().is_empty(),
        "applied once"
    );
    let read = exec(&db, &format!("SELECT id, title FROM {p}_posts"), vec![]).await;
    assert_eq!(read.rows, [vec![text("seed"), SqlValue::Null]]);

    // A broken third one: its first statement would make a table, its
    // second fails on line 3. Nothing of it stays.
    let mut broken = first.clone();
    broken.push(migration(
        "003_broken.sql",
        &format!("CREATE TABLE {p}_extra (x BIGINT);\n\nSELEC oops;\n"),
    ));
    let err = db.migrate(&database, &broken).await.unwrap_err();
    assert!(err.starts_with("migrations/003_broken.sql:3: "), "{err}");
    let extra = db
        .query(st(format!("SELECT x FROM {p}_extra"), vec![]), BOUNDS)
        .await;
    assert!(matches!(extra, Err(SqlError::Invalid(_))), "{extra:?}");

    // A failure at run time (no position) still names the file, and one
    // run is all or nothing: 003 applies only with 004.
    let mut failing = first.clone();
    failing.push(migration(
        "003_ok.sql",
        &format!("CREATE TABLE {p}_more (x BIGINT);"),
    ));
    failing.push(migration(
        "004_dup.sql",
        &format!("INSERT INTO {p}_posts (id) VALUES ('seed');"),
    ));
    let err = db.migrate(&database, &failing).await.unwrap_err();
    assert!(err.starts_with("migrations/004_dup.sql"), "{err}");
    let more = db
        .query(st(format!("SELECT x FROM {p}_more"), vec![]), BOUNDS)
        .await;
    assert!(matches!(more, Err(SqlError::Invalid(_))), "{more:?}");

    // An applied file that changed, or is gone, is an error.
    let mut edited = first.clone();
    edited[1] = migration(
        "002_title.sql",
        &format!("ALTER TABLE {p}_posts ADD COLUMN title TEXT NOT NULL;"),
    );
    let err = db.migrate(&database, &edited).await.unwrap_err();
    assert!(
        err.contains("002_title.sql") && err.contains("has changed"),
        "{err}"
    );
    let err = db.migrate(&database, &first[..1]).await.unwrap_err();
    assert!(err.contains("002_title.sql was applied"), "{err}");

    // Another database's record is its own.
    let other = format!("{p}_other");
    let mine = vec![migration(
        "001_posts.sql",
        &format!("CREATE TABLE {p}_other_posts (id TEXT);"),
    )];
    assert_eq!(db.migrate(&other, &mine).await.unwrap(), ["001_posts.sql"]);
}

async fn nothing_left_behind(db: Backend, p: String) {
    exec(&db, &format!("CREATE TABLE {p}_t (a TEXT)"), vec![]).await;
    // (Block comments nest on PostgreSQL only.)
    let nested = if db.kind() == "postgres" {
        "/* /* */ SELECT */ BEGIN"
    } else {
        "/* SELECT */ BEGIN"
    };
    for statement in ["BEGIN", "; BEGIN", nested, "SAVEPOINT s"] {
        let refused = db.query(st(statement, vec![]), BOUNDS).await;
        assert!(
            matches!(refused, Err(SqlError::Refused(_))),
            "{statement}: {refused:?}"
        );
    }
    if db.kind() == "postgres" {
        // Settings and temporary tables made through functions are reset
        // before the connection serves again.
        exec(
            &db,
            "SELECT set_config('search_path', 'nowhere', false) AS s",
            vec![],
        )
        .await;
        let path = exec(&db, "SELECT current_setting('search_path') AS s", vec![]).await;
        assert_eq!(path.rows, [vec![text("\"$user\", public")]]);
        // It would shadow the table of the same name, holding a row.
        exec(
            &db,
            &format!("CREATE TEMP TABLE {p}_t AS SELECT 'mine'::text AS a"),
            vec![],
        )
        .await;
        let seen = exec(&db, &format!("SELECT a FROM {p}_t"), vec![]).await;
        assert!(
            seen.rows.is_empty(),
            "the temporary table outlived its call"
        );
    } else {
        let temp = db
            .query(
                st(format!("CREATE TEMP TABLE {p}_t (a TEXT)"), vec![]),
                BOUNDS,
            )
            .await;
        assert!(matches!(temp, Err(SqlError::Refused(_))), "{temp:?}");
    }
}
