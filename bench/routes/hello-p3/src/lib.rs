//! The benchmark's hello route as a WASI 0.3 `wasi:http/service`
//! component: the same JSON as the native baseline.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

#[http_service]
async fn hello(_request: Request) -> impl IntoResponse {
    Response::builder()
        .header("content-type", "application/json")
        .body(r#"{"message":"hello"}"#.to_string())
        .map(IntoResponse::into_response)
}
