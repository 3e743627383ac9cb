//! `GET /api/proxy/$`: forwards the request to the upstream its manifest entry
//! names in `UPSTREAM_URL` (which `allowed_outbound_hosts` must list) and
//! answers with the upstream's status, content type and body. An upstream
//! the host refuses, or one that does not answer, is a 502.

use guest_sdk::fetch::Fetch;
use guest_sdk::{Error, Request, Response};

fn get(req: Request) -> Result<Response, Error> {
    let upstream = std::env::var("UPSTREAM_URL")
        .map_err(|_| Error::internal("UPSTREAM_URL is not set for this route"))?;
    let mut url = format!(
        "{}/{}",
        upstream.trim_end_matches('/'),
        req.param("_splat").unwrap_or_default()
    );
    if !req.query_string().is_empty() {
        url.push('?');
        url.push_str(req.query_string());
    }
    let mut fetch = Fetch::get(url);
    if let Some(accept) = req.header("accept") {
        fetch = fetch.header("accept", accept);
    }
    let answer = fetch.send()?;
    let mut response = Response::new(answer.status).with_body(answer.body.clone());
    if let Some(content_type) = answer.header("content-type") {
        response = response.with_header("content-type", content_type);
    }
    Ok(response.with_header("x-upstream-url", &answer.url))
}

guest_sdk::route!(get);
