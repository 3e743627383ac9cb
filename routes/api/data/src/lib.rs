//! `GET /api/data`: JSON with cache and CORS headers set by the route.

use guest_sdk::{Error, Request, Response};

fn get(_req: Request) -> Result<Response, Error> {
    let data = serde_json::json!({
        "items": [
            { "id": 1, "name": "alpha" },
            { "id": 2, "name": "beta" },
        ],
    });
    Ok(Response::json(&data)
        .with_header("Cache-Control", "public, s-maxage=60")
        .with_header("Access-Control-Allow-Origin", "*"))
}

guest_sdk::route!(get);
