//! Per-request instance cost: instantiate a route from its pre-linked
//! component, call its handler, drop the instance, in-process (no HTTP).
//!
//! `cargo bench -p edgehost --bench instance -- <manifest> <path> [iterations]`
//! prints one line: `instance <path>: mean <us> us, p50 <us> us, p99 <us> us`.

use edgehost::capabilities::kv::{DiskKv, KvStores};
use edgehost::capabilities::sql::SqlDatabases;
use edgehost::manifest;
use edgehost::runtime::{EngineSettings, GuestRequest, Method, Runtime};
use std::sync::Arc;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(manifest_path), Some(path)) = (args.first(), args.get(1)) else {
        eprintln!("usage: instance <manifest> <path> [iterations]");
        return Ok(());
    };
    let iterations: usize = args
        .get(2)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let manifest = manifest::load(manifest_path.as_ref())?;
    let data = tempfile::tempdir()?;
    let kv = DiskKv::open(data.path())?;
    let settings = EngineSettings::for_manifest(&manifest, &manifest.data_dir);
    let runtime = Runtime::new(
        KvStores::new(Arc::new(kv)),
        SqlDatabases::new(data.path().join("sql"), Default::default()),
        settings,
    )
    .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let table = runtime.load(&manifest)?;
    let (route, params) = table
        .lookup(path)?
        .ok_or_else(|| anyhow::anyhow!("no route for {path}"))?;
    let request = GuestRequest {
        method: "GET".into(),
        url: format!("http://localhost{path}"),
        path: path.clone(),
        query: String::new(),
        params,
        headers: vec![("accept".into(), b"*/*".to_vec())],
        body: Vec::new(),
        client_addr: "127.0.0.1:1".into(),
    };
    // The server's runtime flavour.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut samples = Vec::with_capacity(iterations);
    let request_id: std::sync::Arc<str> = std::sync::Arc::from("bench");
    tokio.block_on(async {
        for i in 0..iterations + 1000 {
            let started = Instant::now();
            let response = runtime
                .call(route, Method::Get, request.clone(), &request_id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let elapsed = started.elapsed();
            anyhow::ensure!(response.status == 200, "status {}", response.status);
            if i >= 1000 {
                samples.push(elapsed.as_nanos() as f64 / 1000.0);
            }
        }
        anyhow::Ok(())
    })?;
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "instance {path}: mean {mean:.1} us, p50 {:.1} us, p99 {:.1} us ({iterations} iterations)",
        at(0.5),
        at(0.99)
    );
    Ok(())
}
