//! `POST /api/views/$postId` counts one view of a post and answers the
//! count; `GET` answers it without counting. Counters live in the `views`
//! key-value store: `increment` is atomic, also across hosts sharing it.

use guest_sdk::kv::Store;
use guest_sdk::{Error, Request, Response};
use serde_json::json;

fn post_id(req: &Request) -> Result<&str, Error> {
    req.param("postId")
        .ok_or_else(|| Error::internal("route pattern has no `$postId`"))
}

fn get(req: Request) -> Result<Response, Error> {
    let id = post_id(&req)?;
    let views = match Store::open("views")?.get(id)? {
        Some(raw) => String::from_utf8_lossy(&raw)
            .parse::<i64>()
            .map_err(|_| Error::internal("the counter is not a number"))?,
        None => 0,
    };
    Ok(Response::json(&json!({ "postId": id, "views": views })))
}

fn post(req: Request) -> Result<Response, Error> {
    let id = post_id(&req)?;
    let views = Store::open("views")?.increment(id, 1)?;
    Ok(Response::json(&json!({ "postId": id, "views": views })))
}

guest_sdk::route!(get, post);
