//! CORS in a real browser: headless Chromium loads a page from one loopback
//! origin the policy lists and one it does not, and each page `fetch`es the
//! host on its own port. The browser decides what the page may read, from
//! the headers the host sends (and its answers to the preflights).
//!
//! Needs Debian's `chromium` and the pinned `playwright-core`;
//! `scripts/browser-setup.sh` (run by `scripts/test.sh`) installs both.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use support::{component, repo_root, write_manifest, Host, Start};

/// Where `scripts/browser-setup.sh` installs playwright-core.
fn browser_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EDGEHOST_BROWSER_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    cache.join("edgehost/browser")
}

fn chromium() -> PathBuf {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("chromium"))
        .find(|path| path.is_file());
    found.unwrap_or_else(|| {
        panic!("chromium is not installed: run scripts/browser-setup.sh (or `apt-get install chromium`)")
    })
}

#[test]
fn a_browser_reads_answers_only_where_the_cors_policy_allows() {
    let modules = browser_dir();
    assert!(
        modules.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run scripts/browser-setup.sh",
        modules.display()
    );
    let chromium = chromium();
    let mut driver = Command::new("node")
        .arg(repo_root().join("tests/browser/cors.mjs"))
        .arg(&modules)
        .arg(&chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is not installed: apt-get install nodejs");
    let mut out = BufReader::new(driver.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let ports: Vec<&str> = line
        .trim()
        .strip_prefix("ports ")
        .expect("the page ports")
        .split(' ')
        .collect();
    let listed = format!("http://127.0.0.1:{}", ports[0]);

    let dir = tempfile::tempdir().unwrap();
    let (data, kv) = (component("api_data"), component("fixture_kv"));
    let manifest = write_manifest(
        dir.path(),
        &format!(
            r#"[[route]]
path = "/api/data"
component = {data:?}
cors = {{ origins = ["{listed}"] }}

[[route]]
path = "/kv/$store/$op"
component = {kv:?}
kv = ["runs"]
cors = {{ origins = ["{listed}"], methods = ["POST"], headers = ["content-type"] }}

# Listed, but a JSON body's content-type is not among its headers.
[[route]]
path = "/strict/$store/$op"
component = {kv:?}
kv = ["runs"]
cors = {{ origins = ["{listed}"], methods = ["POST"] }}
"#
        ),
    );
    let host = Host::start(Start {
        manifest: &manifest,
        data_dir: &dir.path().join("data"),
        env: Vec::new(),
    });
    let stdin = driver.stdin.as_mut().unwrap();
    writeln!(stdin, "http://{}", host.addr).unwrap();
    let mut results = String::new();
    out.read_line(&mut results).unwrap();
    let status = driver.wait().unwrap();
    assert!(status.success(), "the browser driver failed: {results}");
    let results: serde_json::Value = serde_json::from_str(&results)
        .unwrap_or_else(|err| panic!("{err}: {results}\n{}", host.log()));

    // The listed origin reads the answer; the unlisted one is refused by the
    // browser (though the route answered: the policy sent it no grant).
    assert_eq!(results["listed_get"]["status"], 200, "{results}");
    assert!(results["listed_get"]["body"]
        .as_str()
        .unwrap()
        .contains("alpha"));
    assert!(results["unlisted_get"]["error"].is_string(), "{results}");
    // A JSON POST is preflighted: it goes through only where the policy
    // grants the origin, the method and the content-type header.
    assert_eq!(results["listed_post"]["status"], 200, "{results}");
    assert!(results["unlisted_post"]["error"].is_string(), "{results}");
    assert!(
        results["listed_strict_post"]["error"].is_string(),
        "{results}"
    );
    assert!(
        results["unlisted_strict_post"]["error"].is_string(),
        "{results}"
    );
    // Refused preflights never reached the guest: only the granted POST ran.
    let count = |key: &str| host.post(&format!("/kv/runs/get?key={key}"), "").status;
    assert_eq!(count("listed"), 200);
    for key in ["unlisted", "strict-listed", "strict-unlisted"] {
        assert_eq!(count(key), 404, "{key} ran the guest");
    }
}
