//! SQL databases end to end: the real host serving a hostile route that
//! runs whatever SQL it is sent, migrations at start and deploy, and the
//! example posts shared by two hosts through one PostgreSQL server.

mod support;

use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use support::backends::PostgresServer;
use support::{component, repo_root, write_manifest, Host, Reply, Start};

const TOKEN: &str = "sql-test-token";

fn start(dir: &Path, manifest: &Path, env: Vec<(&str, &str)>, admin: bool) -> Host {
    let mut env = env;
    env.push(("EDGEHOST_ADMIN_TOKEN", TOKEN));
    let args: &[&str] = if admin {
        &["serve", "--admin", "127.0.0.1:0"]
    } else {
        &[]
    };
    Host::start_with_args(
        Start {
            manifest,
            data_dir: &dir.join("data"),
            env,
        },
        args,
    )
}

/// Runs one statement through the hostile route.
fn sql(host: &Host, db: &str, statement: &str, params: Value) -> Reply {
    let body = json!({ "sql": statement, "params": params }).to_string();
    host.post(&format!("/sql/{db}"), &body)
}

fn kind(reply: &Reply) -> String {
    reply.json()["kind"].as_str().unwrap_or("").to_string()
}

fn hostile_manifest(dir: &Path, extra: &str) -> std::path::PathBuf {
    write_manifest(
        dir,
        &format!(
            "[[route]]\npath = \"/sql/$db\"\ncomponent = {:?}\nsql = [\"main\"]\nsql_timeout = \"500ms\"\nmax_sql_statement = \"2KiB\"\nmax_sql_params = 3\nmax_sql_rows = 50\n{extra}",
            component("fixture_sql")
        ),
    )
}

#[test]
fn a_hostile_route_reaches_only_its_own_tables_and_stays_within_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = hostile_manifest(dir.path(), "\n[sql.main]\nmax_size = \"256KiB\"\n");
    let host = start(dir.path(), &manifest, vec![], false);

    let made = sql(&host, "main", "CREATE TABLE posts (title TEXT)", json!([]));
    assert_eq!(made.status, 200, "{}", made.text());
    let hostile = "'; DROP TABLE posts; --";
    let stored = sql(
        &host,
        "main",
        "INSERT INTO posts (title) VALUES ($1)",
        json!([{ "text": hostile }]),
    );
    assert_eq!(stored.json()["rowsAffected"], 1, "{}", stored.text());
    let read = sql(&host, "main", "SELECT title FROM posts", json!([]));
    assert_eq!(read.json()["rows"], json!([[{ "text": hostile }]]));

    let outside = dir.path().join("copy.db");
    let refused = [
        "ATTACH DATABASE '/etc/passwd' AS stolen".to_string(),
        format!("VACUUM INTO '{}'", outside.display()),
        "SELECT load_extension('/tmp/evil.so')".to_string(),
        "PRAGMA writable_schema = 1".to_string(),
        "PRAGMA journal_mode = DELETE".to_string(),
        "BEGIN".to_string(),
        "SAVEPOINT s".to_string(),
        // It would outlive the call on a shared connection.
        "CREATE TEMP TABLE posts (title TEXT)".to_string(),
        // A route cannot forge the record of applied migrations.
        "CREATE TABLE edgehost_migrations (database TEXT, name TEXT, checksum TEXT)".to_string(),
    ];
    for statement in &refused {
        let reply = sql(&host, "main", statement, json!([]));
        assert_eq!(
            (reply.status, kind(&reply)),
            (403, "refused".to_string()),
            "{statement}: {}",
            reply.text()
        );
    }
    assert!(!outside.exists(), "VACUUM INTO wrote a file");
    // Schema inspection is allowed.
    let info = sql(&host, "main", "PRAGMA table_info(posts)", json!([]));
    assert_eq!(info.status, 200, "{}", info.text());

    // A database the route is not granted cannot be opened.
    let other = sql(&host, "other", "SELECT 1", json!([]));
    assert_eq!((other.status, kind(&other)), (403, "access-denied".into()));

    // Its limits: statement length, and time (a runaway query is stopped
    // and the route and host keep serving).
    let long = format!("SELECT '{}'", "x".repeat(3000));
    let reply = sql(&host, "main", &long, json!([]));
    assert_eq!((reply.status, kind(&reply)), (403, "refused".into()));
    assert!(
        reply.text().contains("max_sql_statement"),
        "{}",
        reply.text()
    );
    let params = sql(
        &host,
        "main",
        "SELECT $1, $2, $3, $4",
        json!([{ "integer": 1 }, { "integer": 2 }, { "integer": 3 }, { "integer": 4 }]),
    );
    assert_eq!((params.status, kind(&params)), (403, "refused".into()));
    assert!(
        params.text().contains("max_sql_params of 3"),
        "{}",
        params.text()
    );
    let rows = sql(
        &host,
        "main",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 51) SELECT x FROM c",
        json!([]),
    );
    assert_eq!((rows.status, kind(&rows)), (403, "refused".into()));
    assert!(
        rows.text().contains("max_sql_rows of 50"),
        "{}",
        rows.text()
    );
    let slow = sql(
        &host,
        "main",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        json!([]),
    );
    assert_eq!(
        (slow.status, kind(&slow)),
        (503, "unavailable".into()),
        "{}",
        slow.text()
    );
    let after = sql(&host, "main", "SELECT count(*) AS n FROM posts", json!([]));
    assert_eq!(after.json()["rows"], json!([[{ "integer": 1 }]]));

    // The file cannot grow past max_size: a megabyte is refused, the disk
    // is not filled, and small writes still go in.
    sql(&host, "main", "CREATE TABLE big (b BLOB)", json!([]));
    let huge = sql(
        &host,
        "main",
        "INSERT INTO big VALUES (zeroblob(1000000))",
        json!([]),
    );
    assert_eq!(
        (huge.status, kind(&huge)),
        (403, "refused".into()),
        "{}",
        huge.text()
    );
    assert!(
        huge.text().contains("the database is full"),
        "{}",
        huge.text()
    );
    let size = std::fs::metadata(dir.path().join("data/sql/main.db"))
        .unwrap()
        .len();
    assert!(size <= 256 * 1024, "the file grew to {size} bytes");
    let small = sql(
        &host,
        "main",
        "INSERT INTO big VALUES (zeroblob(100))",
        json!([]),
    );
    assert_eq!(small.status, 200, "{}", small.text());

    // A unique key taken is a constraint the route can answer 409 for.
    sql(
        &host,
        "main",
        "CREATE TABLE u (id TEXT PRIMARY KEY)",
        json!([]),
    );
    let insert = "INSERT INTO u (id) VALUES ($1)";
    assert_eq!(
        sql(&host, "main", insert, json!([{ "text": "a" }])).status,
        200
    );
    let again = sql(&host, "main", insert, json!([{ "text": "a" }]));
    assert_eq!((again.status, kind(&again)), (409, "constraint".into()));
}

fn edgehost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(args)
        .env("EDGEHOST_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run edgehost")
}

#[test]
fn migrations_apply_once_and_a_broken_one_refuses_the_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = dir.path().join("migrations");
    std::fs::create_dir(&migrations).unwrap();
    std::fs::write(
        migrations.join("001_posts.sql"),
        "CREATE TABLE posts (id TEXT PRIMARY KEY);\nINSERT INTO posts VALUES ('seed');\n",
    )
    .unwrap();
    let manifest = hostile_manifest(dir.path(), "\n[sql.main]\nmigrations = \"migrations\"\n");

    let first = start(dir.path(), &manifest, vec![], false);
    first.wait_for_log("database main: applied 1 migration (001_posts.sql)");
    drop(first);
    let host = start(dir.path(), &manifest, vec![], true);
    assert!(!host.log().contains("applied"), "{}", host.log());
    let read = sql(&host, "main", "SELECT id FROM posts", json!([]));
    assert_eq!(read.json()["rows"], json!([[{ "text": "seed" }]]));
    for statement in [
        "SELECT * FROM edgehost_migrations",
        "DELETE FROM edgehost_migrations",
        "DROP TABLE edgehost_migrations",
    ] {
        let reply = sql(&host, "main", statement, json!([]));
        assert_eq!(
            (reply.status, kind(&reply)),
            (403, "refused".into()),
            "{statement}"
        );
    }
    // Counted per database, by kind and result.
    let metrics = host.admin_request("GET", "/metrics", TOKEN, b"").text();
    for line in [
        "edgehost_sql_queries_total{database=\"main\",backend=\"sqlite\",op=\"query\",result=\"ok\"} 1",
        "edgehost_sql_queries_total{database=\"main\",backend=\"sqlite\",op=\"query\",result=\"refused\"} 3",
        "edgehost_sql_query_duration_seconds_count{database=\"main\",backend=\"sqlite\"} 4",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }

    // A deploy whose new migration fails on its third line is refused,
    // naming it, and changes nothing: the table it made first is not there.
    std::fs::write(
        migrations.join("002_broken.sql"),
        "CREATE TABLE extra (x INTEGER);\nINSERT INTO posts VALUES ('second');\nSELEC oops;\n",
    )
    .unwrap();
    let to = format!("http://{}", host.admin());
    let out = edgehost(&["deploy", manifest.to_str().unwrap(), "--to", &to]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("migrations/002_broken.sql:3:"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    let read = sql(&host, "main", "SELECT id FROM posts", json!([]));
    assert_eq!(read.json()["rows"], json!([[{ "text": "seed" }]]));
    let extra = sql(&host, "main", "SELECT x FROM extra", json!([]));
    assert_eq!(extra.status, 400, "{}", extra.text());

    // Mended, the deploy applies it before the new routes serve.
    std::fs::write(
        migrations.join("002_broken.sql"),
        "CREATE TABLE extra (x INTEGER);\nINSERT INTO posts VALUES ('second');\n",
    )
    .unwrap();
    let out = edgehost(&["deploy", manifest.to_str().unwrap(), "--to", &to]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = sql(&host, "main", "SELECT id FROM posts ORDER BY id", json!([]));
    assert_eq!(
        read.json()["rows"],
        json!([[{ "text": "second" }], [{ "text": "seed" }]])
    );

    // Editing an applied migration is an error at the next start.
    drop(host);
    std::fs::write(
        migrations.join("001_posts.sql"),
        "CREATE TABLE posts (id TEXT);\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--manifest"])
        .arg(&manifest)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "001_posts.sql: this migration was applied to database main and its file has changed"
        ),
        "{stderr}"
    );
}

#[test]
fn two_hosts_on_one_postgres_share_the_example_posts() {
    let server = PostgresServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let migrations = repo_root().join("migrations/main");
    let manifest = write_manifest(
        dir.path(),
        &format!(
            "[sql.main]\nbackend = \"postgres\"\nurl_env = \"DATABASE_URL\"\nmigrations = {:?}\n\n[[route]]\npath = \"/api/posts\"\ncomponent = {:?}\nsql = [\"main\"]\n\n[[route]]\npath = \"/api/posts/$postId\"\ncomponent = {:?}\nsql = [\"main\"]\n",
            migrations,
            component("api_posts"),
            component("api_posts_postid"),
        ),
    );
    let a_dir = dir.path().join("a");
    let b_dir = dir.path().join("b");
    let a = start(&a_dir, &manifest, vec![("DATABASE_URL", &url)], false);
    a.wait_for_log("database main: applied 1 migration");
    let b = start(&b_dir, &manifest, vec![("DATABASE_URL", &url)], false);
    assert!(
        !b.log().contains("applied"),
        "the first host migrated: {}",
        b.log()
    );

    let made = a.post("/api/posts", r#"{"title":"shared"}"#);
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["id"].as_str().unwrap().to_string();
    let seen = b.get(&format!("/api/posts/{id}"));
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.json()["title"], "shared");
    assert_eq!(b.get("/api/posts").json().as_array().unwrap().len(), 1);
    assert_eq!(
        b.request("DELETE", &format!("/api/posts/{id}"), &[], b"")
            .status,
        204
    );
    assert_eq!(a.get(&format!("/api/posts/{id}")).status, 404);
}
