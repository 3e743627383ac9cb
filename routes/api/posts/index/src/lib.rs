//! `GET /api/posts` lists the posts; `POST /api/posts` creates one.
//!
//! Posts live in the `main` SQL database (table `posts`, made by
//! `migrations/main`): each one the JSON object it was created with, its
//! `id` and `createdAt` added. `db.posts.findMany()` is one ordered `SELECT`.

use guest_sdk::sql::Database;
use guest_sdk::{Error, Request, Response};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Deserialize)]
struct Stored {
    body: String,
}

fn get(_req: Request) -> Result<Response, Error> {
    let db = Database::open("main")?;
    let rows: Vec<Stored> = db.query_as("SELECT body FROM posts ORDER BY created_at, id", &[])?;
    let posts = rows
        .iter()
        .map(|row| serde_json::from_str(&row.body))
        .collect::<Result<Vec<Value>, _>>()
        .map_err(|err| Error::internal(format!("a stored post is not JSON: {err}")))?;
    Ok(Response::json(&posts))
}

fn post(req: Request) -> Result<Response, Error> {
    let mut post: Map<String, Value> = match req.json()? {
        Value::Object(fields) => fields,
        _ => return Err(Error::bad_request("A post must be a JSON object")),
    };
    let id = new_id()?;
    let created_at = now_ms()?;
    post.insert("id".into(), Value::String(id.clone()));
    post.insert("createdAt".into(), Value::from(created_at));
    let body = Value::Object(post);
    Database::open("main")?.execute(
        "INSERT INTO posts (id, created_at, body) VALUES ($1, $2, $3)",
        &[
            id.clone().into(),
            created_at.into(),
            body.to_string().into(),
        ],
    )?;
    Ok(Response::json(&body)
        .with_status(201)
        .with_header("Location", format!("/api/posts/{id}")))
}

/// 16 random hex digits: unguessable and collision-free in practice.
fn new_id() -> Result<String, Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|err| Error::internal(format!("no randomness: {err}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn now_ms() -> Result<i64, Error> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::internal("clock is before 1970"))?;
    i64::try_from(since_epoch.as_millis()).map_err(|_| Error::internal("clock is past 2^63 ms"))
}

guest_sdk::route!(get, post);
