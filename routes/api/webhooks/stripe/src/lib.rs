//! `POST /api/webhooks/stripe`: accepts an event only when its
//! `stripe-signature` header proves it was signed with the webhook secret.
//!
//! The secret comes from `STRIPE_WEBHOOK_SECRET`, which the manifest grants
//! this route as a secret.

pub mod signature;

use guest_sdk::{Error, Request, Response};
use std::time::{SystemTime, UNIX_EPOCH};

fn post(req: Request) -> Result<Response, Error> {
    let Some(header) = req.header("stripe-signature") else {
        return Err(Error::bad_request("Missing signature"));
    };
    let secret = std::env::var("STRIPE_WEBHOOK_SECRET")
        .map_err(|_| Error::internal("STRIPE_WEBHOOK_SECRET is not granted to this route"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::internal("clock is before 1970"))?
        .as_secs();
    match signature::verify(req.body(), header, &secret, now) {
        Ok(()) => {
            let event_type = serde_json::from_slice::<serde_json::Value>(req.body())
                .ok()
                .and_then(|event| event.get("type")?.as_str().map(str::to_string));
            println!("verified stripe event of type {event_type:?}");
            Ok(Response::json(&serde_json::json!({ "received": true })))
        }
        Err(reason) => {
            eprintln!("rejected stripe webhook: {reason}");
            Err(Error::bad_request("Invalid signature"))
        }
    }
}

guest_sdk::route!(post);
