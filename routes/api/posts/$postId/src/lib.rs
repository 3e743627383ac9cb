//! `GET /api/posts/$postId` reads one post; `DELETE` removes it.

use guest_sdk::sql::Database;
use guest_sdk::{Error, Request, Response};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Stored {
    body: String,
}

fn post_id(req: &Request) -> Result<&str, Error> {
    req.param("postId")
        .ok_or_else(|| Error::internal("route pattern has no `$postId`"))
}

fn get(req: Request) -> Result<Response, Error> {
    let db = Database::open("main")?;
    let rows: Vec<Stored> = db.query_as(
        "SELECT body FROM posts WHERE id = $1",
        &[post_id(&req)?.into()],
    )?;
    let Some(row) = rows.first() else {
        return Err(Error::not_found("Not found"));
    };
    let post: Value = serde_json::from_str(&row.body)
        .map_err(|err| Error::internal(format!("the stored post is not JSON: {err}")))?;
    Ok(Response::json(&post))
}

fn delete(req: Request) -> Result<Response, Error> {
    let db = Database::open("main")?;
    if db.execute("DELETE FROM posts WHERE id = $1", &[post_id(&req)?.into()])? == 0 {
        return Err(Error::not_found("Not found"));
    }
    Ok(Response::empty())
}

guest_sdk::route!(get, delete);
