//! `GET /api/posts` lists the posts; `POST /api/posts` creates one.
//!
//! Posts live in the `posts` key-value store, one JSON object per key, keyed
//! by the post's `id`.

use guest_sdk::kv::Store;
use guest_sdk::{Error, Request, Response};
use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

fn get(_req: Request) -> Result<Response, Error> {
    let store = Store::open("posts")?;
    let keys = store.keys()?;
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    // One call for every post; one deleted since the listing is left out.
    let mut posts: Vec<Value> = store
        .get_many_json::<Value>(&keys)?
        .into_iter()
        .flatten()
        .collect();
    posts.sort_by_key(|post| post.get("createdAt").and_then(Value::as_u64).unwrap_or(0));
    Ok(Response::json(&posts))
}

fn post(req: Request) -> Result<Response, Error> {
    let mut post: Map<String, Value> = match req.json()? {
        Value::Object(fields) => fields,
        _ => return Err(Error::bad_request("A post must be a JSON object")),
    };
    let id = new_id()?;
    post.insert("id".into(), Value::String(id.clone()));
    post.insert("createdAt".into(), Value::from(now_ms()?));
    Store::open("posts")?.set_json(&id, &post)?;
    Ok(Response::json(&post)
        .with_status(201)
        .with_header("Location", format!("/api/posts/{id}")))
}

/// 16 random hex digits: unguessable and collision-free in practice.
fn new_id() -> Result<String, Error> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|err| Error::internal(format!("no randomness: {err}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn now_ms() -> Result<u64, Error> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::internal("clock is before 1970"))?;
    Ok(since_epoch.as_millis() as u64)
}

guest_sdk::route!(get, post);
