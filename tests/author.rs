//! The route author's loop, as a new user runs it: `new` scaffolds a route
//! crate where its URL says, `build` compiles it, the host serves it, and
//! `dev` rebuilds and reloads on save, showing a failed build as the 500 body.
//!
//! The project lives in a temporary cargo workspace; it shares the
//! repository's target folder (and lock file) so dependencies built once are
//! not built again.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{repo_root, Host, Start};

/// A fresh project: a workspace, a manifest mounting `routes/`.
fn project() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("Cargo.toml"),
        "[workspace]\nresolver = \"2\"\nmembers = []\n",
    )
    .unwrap();
    std::fs::copy(repo_root().join("Cargo.lock"), root.join("Cargo.lock")).unwrap();
    let manifest = root.join("manifest.toml");
    std::fs::write(
        &manifest,
        format!(
            "[routes]\ndir = \"routes\"\ntarget_dir = {:?}\n",
            target_dir().display().to_string()
        ),
    )
    .unwrap();
    (dir, manifest)
}

fn target_dir() -> PathBuf {
    repo_root().join("target")
}

fn edgehost(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgehost"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run edgehost")
}

fn new_route(dir: &Path, url: &str) {
    let sdk = repo_root().join("guest-sdk");
    let out = edgehost(dir, &["new", url, "--sdk", sdk.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "new {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `path` until `check` accepts the answer, with a deadline.
fn wait_until(host: &Host, path: &str, what: &str, check: impl Fn(&support::Reply) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let reply = host.get(path);
        if check(&reply) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened; last answer {} {}\n{}",
            reply.status,
            reply.text(),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn new_build_dev_from_nothing_to_a_reloaded_route() {
    let (dir, manifest) = project();
    let root = dir.path();

    // `new` puts the crate where the URL says and into the workspace.
    new_route(root, "/api/greet/$name");
    let crate_dir = root.join("routes/api/greet/$name");
    assert!(crate_dir.join("src/lib.rs").is_file());
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        workspace.contains("\"routes/api/greet/$name\""),
        "{workspace}"
    );
    // The manifest mounts routes/ already: it is left alone.
    assert!(!std::fs::read_to_string(&manifest)
        .unwrap()
        .contains("[[route]]"));

    // `build` compiles it (one cargo run) and `check` accepts the manifest.
    let out = edgehost(root, &["build", "routes"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    assert!(log.contains("built 1 route crate"), "{log}");
    let out = edgehost(root, &["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `dev` serves it (run from the project, as a user would)...
    let host = Host::start_in(
        Some(root),
        Start {
            manifest: Path::new("manifest.toml"),
            data_dir: &root.join("data"),
            env: vec![("CARGO_TARGET_DIR", target_dir().to_str().unwrap())],
        },
        &["dev"],
    );
    let reply = host.get("/api/greet/world");
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["route"], "/api/greet/$name");
    assert_eq!(reply.json()["params"]["name"], "world");

    // ...rebuilds and reloads a changed handler on save...
    let source = crate_dir.join("src/lib.rs");
    let original = std::fs::read_to_string(&source).unwrap();
    let changed = original.replace(
        "\"params\": params,",
        "\"params\": params, \"greeting\": \"hello\",",
    );
    assert_ne!(changed, original, "the scaffold changed shape");
    let saved = Instant::now();
    std::fs::write(&source, &changed).unwrap();
    wait_until(&host, "/api/greet/world", "the reload", |reply| {
        reply.status == 200 && reply.json()["greeting"] == "hello"
    });
    eprintln!(
        "saved handler to new answer: {:.2}s",
        saved.elapsed().as_secs_f64()
    );

    // ...shows a failed build as the route's 500 and in the terminal...
    std::fs::write(&source, changed.replace("fn get(", "fn get(oops ")).unwrap();
    wait_until(&host, "/api/greet/world", "the build error", |reply| {
        reply.status == 500
            && reply.text().contains("build of route /api/greet/$name")
            && reply.text().contains("error")
    });
    let log = host.wait_for_log("build failed in route /api/greet/$name");
    assert!(
        log.contains("route /api/greet/$name (routes/api/greet/$name):"),
        "{log}"
    );

    // ...and serves again once it is fixed.
    std::fs::write(&source, changed.replace("\"hello\"", "\"hello again\"")).unwrap();
    wait_until(&host, "/api/greet/world", "the fixed build", |reply| {
        reply.status == 200 && reply.json()["greeting"] == "hello again"
    });

    // A route crate added while `dev` runs is built and mounted too.
    new_route(root, "/api/stats");
    wait_until(&host, "/api/stats", "the new route", |reply| {
        reply.status == 200 && reply.json()["route"] == "/api/stats"
    });
}

#[test]
fn two_crates_for_one_url_are_a_load_error_naming_both() {
    let (dir, manifest) = project();
    let root = dir.path();
    for (folder, package) in [
        ("api/posts/index", "a_posts"),
        ("(v2)/api/posts", "b_posts"),
    ] {
        let path = root.join("routes").join(folder);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(
            path.join("Cargo.toml"),
            format!("[package]\nname = \"{package}\"\nversion = \"0.1.0\"\n"),
        )
        .unwrap();
    }
    let out = edgehost(root, &["check", manifest.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "manifest.toml:2: route crates routes/(v2)/api/posts and routes/api/posts/index both map to \"/api/posts\""
        ),
        "{stderr}"
    );
}

#[test]
fn new_ts_then_dev_reloads_an_edited_typescript_route() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let manifest = root.join("manifest.toml");
    std::fs::write(&manifest, "# my app\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_edgehost"))
            .args(args)
            .current_dir(root)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("run edgehost")
    };

    // `new --ts` writes the route file where the URL says and mounts routes/.
    let out = run(&["new", "/api/hello/$name", "--ts"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let source = root.join("routes/api/hello/$name.ts");
    assert!(source.is_file());
    assert!(std::fs::read_to_string(&manifest)
        .unwrap()
        .contains("[routes]"));

    // `dev` builds it and serves it.
    let host = Host::start_in(
        Some(root),
        Start {
            manifest: Path::new("manifest.toml"),
            data_dir: &root.join("data"),
            env: vec![],
        },
        &["dev"],
    );
    let reply = host.get("/api/hello/world");
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), host.log());
    assert_eq!(
        reply.json(),
        serde_json::json!({ "route": "/api/hello/$name", "params": { "name": "world" } })
    );

    // An edit is answered after the save...
    let original = std::fs::read_to_string(&source).unwrap();
    let changed = original.replace(
        "route: '/api/hello/$name', params",
        "greeting: `hello ${params.name}`",
    );
    assert_ne!(changed, original, "the scaffold changed shape");
    let saved = Instant::now();
    std::fs::write(&source, &changed).unwrap();
    wait_until(&host, "/api/hello/world", "the reload", |reply| {
        reply.status == 200 && reply.json()["greeting"] == "hello world"
    });
    eprintln!(
        "saved TypeScript route to new answer: {:.2}s",
        saved.elapsed().as_secs_f64()
    );

    // ...a type error is the route's 500 and in the terminal, under its file...
    std::fs::write(&source, changed.replace("params.name", "params.nmae")).unwrap();
    wait_until(&host, "/api/hello/world", "the build error", |reply| {
        reply.status == 500
            && reply
                .text()
                .contains("route /api/hello/$name (routes/api/hello/$name.ts):")
            && reply.text().contains("Property 'nmae' does not exist")
    });
    let log = host.wait_for_log("routes/api/hello/$name.ts:");
    assert!(log.contains("Property 'nmae' does not exist"), "{log}");

    // ...and it serves again once fixed.
    std::fs::write(&source, changed.replace("hello ", "hi ")).unwrap();
    wait_until(&host, "/api/hello/world", "the fixed build", |reply| {
        reply.status == 200 && reply.json()["greeting"] == "hi world"
    });
}
