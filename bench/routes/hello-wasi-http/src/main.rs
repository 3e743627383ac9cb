//! The benchmark's hello route as a `wasi:http/proxy` component: the same
//! JSON as the native baseline, for `wasmtime serve` and edgehost alike.

use wstd::http::body::IncomingBody;
use wstd::http::server::{Finished, Responder};
use wstd::http::{IntoBody, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<IncomingBody>, responder: Responder) -> Finished {
    let response = Response::builder()
        .header("content-type", "application/json")
        .body(r#"{"message":"hello"}"#.into_body())
        .unwrap();
    responder.respond(response).await
}
