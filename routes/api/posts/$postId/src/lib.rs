//! `GET /api/posts/$postId` reads one post; `DELETE` removes it.

use guest_sdk::kv::Store;
use guest_sdk::{Error, Request, Response};
use serde_json::Value;

fn post_id(req: &Request) -> Result<&str, Error> {
    req.param("postId")
        .ok_or_else(|| Error::internal("route pattern has no `$postId`"))
}

fn get(req: Request) -> Result<Response, Error> {
    match Store::open("posts")?.get_json::<Value>(post_id(&req)?)? {
        Some(post) => Ok(Response::json(&post)),
        None => Err(Error::not_found("Not found")),
    }
}

fn delete(req: Request) -> Result<Response, Error> {
    let id = post_id(&req)?;
    let store = Store::open("posts")?;
    if !store.exists(id)? {
        return Err(Error::not_found("Not found"));
    }
    store.delete(id)?;
    Ok(Response::empty())
}

guest_sdk::route!(get, delete);
