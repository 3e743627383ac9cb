//! `GET /api/health`: liveness with the current time.

use guest_sdk::{Error, Request, Response};
use std::time::{SystemTime, UNIX_EPOCH};

fn get(_req: Request) -> Result<Response, Error> {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::internal("clock is before 1970"))?
        .as_millis();
    Ok(Response::json(&serde_json::json!({
        "status": "ok",
        "timestamp": timestamp,
    })))
}

guest_sdk::route!(get);
