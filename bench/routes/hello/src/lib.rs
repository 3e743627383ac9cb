//! The benchmark's hello route: the same JSON as the native baseline.

use guest_sdk::{Error, Request, Response};

fn get(_req: Request) -> Result<Response, Error> {
    Ok(Response::new(200)
        .with_header("content-type", "application/json")
        .with_body(&br#"{"message":"hello"}"#[..]))
}

guest_sdk::route!(get);
