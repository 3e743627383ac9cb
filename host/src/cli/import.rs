//! `edgehost import spin.toml`: a `manifest.toml` from a Spin manifest
//! (version 2). Each HTTP trigger becomes a `[[route]]`: Spin's route
//! (`/...` wildcard, `:name` segments) spelt ours (`$`, `$name`), its
//! component file, outbound hosts, key-value stores, SQLite databases,
//! environment and variables. Every setting that cannot be mapped is
//! reported with its reason; the written manifest maps the rest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// What an import made: the manifest's text, and what it could not map.
#[derive(Debug)]
pub(crate) struct Imported {
    pub(crate) manifest: String,
    pub(crate) unmapped: Vec<String>,
}

/// Imports the Spin manifest at `spin_toml` into `out` (default:
/// `manifest.toml` beside it), refusing to overwrite a file unless `force`.
pub fn import(spin_toml: &Path, out: Option<&Path>, force: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(spin_toml)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", spin_toml.display()))?;
    let imported =
        translate(&text).map_err(|err| anyhow::anyhow!("{}: {err}", spin_toml.display()))?;
    let out: PathBuf = match out {
        Some(out) => out.to_path_buf(),
        None => spin_toml
            .parent()
            .unwrap_or(Path::new("."))
            .join("manifest.toml"),
    };
    if out.exists() && !force {
        anyhow::bail!(
            "{} exists; pass --force to replace it, or --out to write elsewhere",
            out.display()
        );
    }
    std::fs::write(&out, &imported.manifest)
        .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", out.display()))?;
    println!("wrote {}", out.display());
    if imported.unmapped.is_empty() {
        println!("every setting was mapped");
    } else {
        println!("not mapped ({}):", imported.unmapped.len());
        for line in &imported.unmapped {
            println!("  - {line}");
        }
    }
    println!(
        "component paths are relative to the manifest; check it with `edgehost check {}`",
        out.display()
    );
    Ok(())
}

/// One `[[route]]` being written.
#[derive(Default)]
struct Route {
    path: String,
    component: String,
    env: BTreeMap<String, String>,
    secrets: Vec<String>,
    kv: Vec<String>,
    sql: Vec<String>,
    outbound: Vec<String>,
}

/// A Spin manifest's text as ours, with what could not be mapped.
pub(crate) fn translate(text: &str) -> Result<Imported, String> {
    let spin: Table = toml::from_str(text).map_err(|err| format!("not a TOML file: {err}"))?;
    match spin.get("spin_manifest_version") {
        Some(Value::Integer(2)) => {}
        Some(other) => {
            return Err(format!(
                "spin_manifest_version {other} is not supported: only version 2 (`spin doctor` upgrades older manifests)"
            ))
        }
        None => {
            return Err(
                "no spin_manifest_version: only version 2 manifests are supported (`spin doctor` upgrades older ones)".into(),
            )
        }
    }
    let mut unmapped = Vec::new();
    let app_variables = table(&spin, "variables");
    let components = table(&spin, "component");
    let empty = Table::new();
    let triggers = table(&spin, "trigger");
    for (kind, _) in triggers.unwrap_or(&empty) {
        if kind != "http" {
            unmapped.push(format!(
                "[[trigger.{kind}]]: only HTTP triggers are served (a schedule is edgehost's [[schedule]])"
            ));
        }
    }
    let http = triggers
        .and_then(|t| t.get("http"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if http.is_empty() {
        return Err("no [[trigger.http]]: nothing to serve".into());
    }
    let mut routes = Vec::new();
    let mut databases = Vec::new();
    for (index, trigger) in http.iter().enumerate() {
        let Some(trigger) = trigger.as_table() else {
            continue;
        };
        let label = format!("[[trigger.http]] #{}", index + 1);
        let path = match trigger.get("route") {
            Some(Value::String(route)) => match route_pattern(route) {
                Ok(path) => path,
                Err(reason) => {
                    unmapped.push(format!("{label}: route {route:?}: {reason}"));
                    continue;
                }
            },
            Some(Value::Table(t)) if t.get("private").is_some() => {
                unmapped.push(format!(
                    "{label}: a private route (reachable only by service chaining) has no URL here; left out"
                ));
                continue;
            }
            _ => {
                unmapped.push(format!("{label}: no route; left out"));
                continue;
            }
        };
        if let Some(executor) = trigger.get("executor") {
            let kind = executor.get("type").and_then(Value::as_str).unwrap_or("?");
            if kind != "http" {
                unmapped.push(format!(
                    "{label} ({path}): executor {kind:?}: only WebAssembly components answering wasi:http are served; left out"
                ));
                continue;
            }
        }
        for key in trigger.keys() {
            if !["route", "component", "executor", "id"].contains(&key.as_str()) {
                unmapped.push(format!("{label} ({path}): `{key}` has no equivalent"));
            }
        }
        let (name, component) = match trigger.get("component") {
            Some(Value::String(name)) => match components
                .and_then(|c| c.get(name))
                .and_then(Value::as_table)
            {
                Some(component) => (name.clone(), component),
                None => {
                    unmapped.push(format!("{label} ({path}): no [component.{name}]; left out"));
                    continue;
                }
            },
            Some(Value::Table(inline)) => (format!("{path} (inline)"), inline),
            _ => {
                unmapped.push(format!("{label} ({path}): no component; left out"));
                continue;
            }
        };
        let mut route = Route {
            path,
            ..Route::default()
        };
        let mut note = |what: String| unmapped.push(format!("[component.{name}]: {what}"));
        match component.get("source") {
            Some(Value::String(file)) => route.component = file.clone(),
            Some(Value::Table(_)) => {
                note(
                    "`source` is a URL with a digest: download the file and set `component` to it"
                        .into(),
                );
                route.component = format!("{name}.wasm");
            }
            _ => {
                note("no `source`".into());
                continue;
            }
        }
        for (key, value) in component {
            match key.as_str() {
                "source" | "description" | "build" | "id" => {}
                "allowed_outbound_hosts" | "allowed_http_hosts" => {
                    for host in strings(value) {
                        match outbound_host(&host) {
                            Ok(origin) => route.outbound.push(origin),
                            Err(reason) => note(format!("outbound host {host:?}: {reason}")),
                        }
                    }
                }
                "key_value_stores" => route.kv = strings(value),
                "sqlite_databases" => {
                    route.sql = strings(value);
                    databases.extend(route.sql.iter().cloned());
                }
                "environment" => {
                    for (env, value) in value.as_table().into_iter().flatten() {
                        match value.as_str() {
                            Some(text) => {
                                route.env.insert(env.clone(), text.to_owned());
                            }
                            None => note(format!("environment {env}: not a string")),
                        }
                    }
                }
                "variables" => {
                    for (variable, template) in value.as_table().into_iter().flatten() {
                        let Some(template) = template.as_str() else {
                            note(format!("variable {variable}: not a string"));
                            continue;
                        };
                        match resolve(template, app_variables) {
                            Resolved::Value(text) => {
                                route.env.insert(variable.to_ascii_uppercase(), text);
                            }
                            Resolved::FromHost(app) => {
                                let upper = variable.to_ascii_uppercase();
                                if app.to_ascii_uppercase() != upper {
                                    note(format!(
                                        "variable {variable} = {template:?}: read from the host's env var {upper} (Spin would read {app})"
                                    ));
                                }
                                route.secrets.push(upper);
                            }
                            Resolved::No(reason) => note(format!("variable {variable}: {reason}")),
                        }
                    }
                }
                "files" | "exclude_files" => {
                    note(format!("`{key}`: routes have no filesystem here; left out"))
                }
                other => note(format!("`{other}` has no equivalent; left out")),
            }
        }
        routes.push(route);
    }
    if routes.is_empty() {
        return Err(format!(
            "no HTTP trigger could be mapped:\n  - {}",
            unmapped.join("\n  - ")
        ));
    }
    for key in spin.keys() {
        if ![
            "spin_manifest_version",
            "application",
            "variables",
            "component",
            "trigger",
        ]
        .contains(&key.as_str())
        {
            unmapped.push(format!("`{key}` has no equivalent; left out"));
        }
    }
    Ok(Imported {
        manifest: write(&spin, &routes, &databases),
        unmapped,
    })
}

/// A table of `spin` at `key`.
fn table<'a>(spin: &'a Table, key: &str) -> Option<&'a Table> {
    spin.get(key).and_then(Value::as_table)
}

/// The strings of an array value.
fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Spin's route as our pattern: `/...` is `$` (the rest of the path),
/// `:name` is `$name`.
pub(crate) fn route_pattern(route: &str) -> Result<String, String> {
    if !route.starts_with('/') {
        return Err("does not start with /".into());
    }
    let segments: Vec<&str> = route.trim_end_matches('/').split('/').skip(1).collect();
    let mut out = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        out.push(match *segment {
            "..." if last => "$".to_owned(),
            "..." => return Err("`...` may only end a route".into()),
            s if s.starts_with(':') => {
                let name = &s[1..];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("`{s}` is not a :name segment"));
                }
                format!("${name}")
            }
            s if s.contains(['$', '*', '{', '}']) => {
                return Err(format!(
                    "segment `{s}` has characters a pattern cannot hold"
                ))
            }
            s => s.to_owned(),
        });
    }
    Ok(format!("/{}", out.join("/")))
}

/// A Spin outbound host as our origin; the reason when it is none.
fn outbound_host(host: &str) -> Result<String, String> {
    if host.contains("{{") {
        return Err("a templated host cannot be resolved ahead; list the origin itself".into());
    }
    if host.starts_with("*://") {
        return Err("any scheme: list the http:// and https:// origins".into());
    }
    let Some((scheme, _)) = host.split_once("://") else {
        return Err("no scheme".into());
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "{scheme}: only HTTP and HTTPS go out from a route (databases are granted as kv/sql)"
        ));
    }
    if host.contains("/*") || host.ends_with("/...") {
        return Err("a path after the origin has no meaning here".into());
    }
    Ok(host.trim_end_matches('/').to_owned())
}

/// What a component variable's value comes to.
enum Resolved {
    /// A value known now.
    Value(String),
    /// The host's environment at load (a secret, or a variable with no
    /// default): the application variable's name.
    FromHost(String),
    No(String),
}

/// A component variable's template (`"{{ api_key }}"`, `"v1"`,
/// `"https://{{ host }}/x"`) against the application's variables.
fn resolve(template: &str, app: Option<&Table>) -> Resolved {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            return Resolved::No(format!("{template:?}: an unclosed {{{{"));
        };
        let name = rest[start + 2..start + end].trim();
        let spec = app.and_then(|a| a.get(name)).and_then(Value::as_table);
        let Some(spec) = spec else {
            return Resolved::No(format!("{template:?}: no application variable {name}"));
        };
        let secret = spec.get("secret").and_then(Value::as_bool).unwrap_or(false);
        let default = spec.get("default").and_then(Value::as_str);
        let whole = start == 0 && rest[start + end + 2..].is_empty() && out.is_empty();
        match (secret, default) {
            (false, Some(value)) => out.push_str(value),
            _ if whole => return Resolved::FromHost(name.to_owned()),
            _ => {
                return Resolved::No(format!(
                    "{template:?}: mixes text with {name}, which is set only on the host; set it as a whole variable"
                ))
            }
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Resolved::Value(out)
}

/// TOML's quoting of a string.
fn quoted(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| quoted(i)).collect();
    format!("[{}]", items.join(", "))
}

/// The manifest's text.
fn write(spin: &Table, routes: &[Route], databases: &[String]) -> String {
    let app = table(spin, "application");
    let name = app
        .and_then(|a| a.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("app");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported from spin.toml (application {name:?}) by `edgehost import`.\n"
    );
    let _ = writeln!(
        out,
        "[server]\nlisten = \"127.0.0.1:3000\"\ndata_dir = \".edgehost\""
    );
    let mut seen = Vec::new();
    for database in databases {
        if !seen.contains(database) {
            seen.push(database.clone());
            let _ = writeln!(
                out,
                "\n# A SQLite file under data_dir, as Spin's default.\n[sql.{}]",
                quoted(database)
            );
        }
    }
    for route in routes {
        let _ = writeln!(out, "\n[[route]]\npath = {}", quoted(&route.path));
        let _ = writeln!(out, "component = {}", quoted(&route.component));
        // A Spin 3 (WASI 0.2) component reads them too.
        let _ = writeln!(out, "spin_headers = true");
        if !route.env.is_empty() {
            let pairs: Vec<String> = route
                .env
                .iter()
                .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
                .collect();
            let _ = writeln!(out, "env = {{ {} }}", pairs.join(", "));
        }
        for (key, items) in [
            ("secrets", &route.secrets),
            ("kv", &route.kv),
            ("sql", &route.sql),
            ("allowed_outbound_hosts", &route.outbound),
        ] {
            if !items.is_empty() {
                let _ = writeln!(out, "{key} = {}", list(items));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_routes_become_patterns() {
        assert_eq!(route_pattern("/...").unwrap(), "/$");
        assert_eq!(route_pattern("/api/...").unwrap(), "/api/$");
        assert_eq!(route_pattern("/items/:id").unwrap(), "/items/$id");
        assert_eq!(route_pattern("/hello").unwrap(), "/hello");
        assert_eq!(route_pattern("/").unwrap(), "/");
        assert!(route_pattern("/a/.../b").is_err());
        assert!(route_pattern("hello").is_err());
        assert!(route_pattern("/a/:").is_err());
    }

    const SPIN: &str = r#"
spin_manifest_version = 2

[application]
name = "shop"

[variables]
api_key = { required = true, secret = true }
greeting = { default = "hello" }
region = { required = true }

[[trigger.http]]
route = "/items/:id"
component = "items"

[[trigger.http]]
route = "/static/..."
component = "files"

[[trigger.http]]
route = { private = true }
component = "items"

[[trigger.redis]]
channel = "x"
component = "items"

[component.items]
source = "target/wasm32-wasip2/release/items.wasm"
allowed_outbound_hosts = ["https://api.example.com", "redis://cache:6379", "https://{{ host }}"]
key_value_stores = ["default"]
sqlite_databases = ["default"]
environment = { MODE = "prod" }
files = ["static/**"]
[component.items.variables]
api_key = "{{ api_key }}"
greeting = "{{ greeting }}, world"
region = "{{ region }}"
url = "https://{{ region }}.example.com"
[component.items.build]
command = "cargo build --target wasm32-wasip2 --release"

[component.files]
source = { url = "https://example.com/fileserver.wasm", digest = "sha256:00" }
"#;

    #[test]
    fn a_spin_manifest_maps_and_says_what_it_could_not() {
        let imported = translate(SPIN).unwrap();
        let manifest: Table = toml::from_str(&imported.manifest).unwrap();
        let routes = manifest["route"].as_array().unwrap();
        assert_eq!(routes.len(), 2, "{}", imported.manifest);
        let items = routes[0].as_table().unwrap();
        assert_eq!(items["path"].as_str(), Some("/items/$id"));
        assert_eq!(items["spin_headers"].as_bool(), Some(true));
        assert_eq!(
            items["component"].as_str(),
            Some("target/wasm32-wasip2/release/items.wasm")
        );
        assert_eq!(strings(&items["kv"]), ["default"]);
        assert_eq!(strings(&items["sql"]), ["default"]);
        assert_eq!(
            strings(&items["allowed_outbound_hosts"]),
            ["https://api.example.com"]
        );
        assert_eq!(strings(&items["secrets"]), ["API_KEY", "REGION"]);
        let env = items["env"].as_table().unwrap();
        assert_eq!(env["MODE"].as_str(), Some("prod"));
        assert_eq!(env["GREETING"].as_str(), Some("hello, world"));
        assert!(manifest["sql"].as_table().unwrap().contains_key("default"));
        assert_eq!(routes[1]["path"].as_str(), Some("/static/$"));
        let said = imported.unmapped.join("\n");
        for expected in [
            "private route",
            "[[trigger.redis]]",
            "redis://cache:6379",
            "templated host",
            "`files`",
            "variable url",
            "a URL with a digest",
        ] {
            assert!(
                said.contains(expected),
                "{expected:?} not reported in:\n{said}"
            );
        }
    }

    #[test]
    fn what_is_not_a_version_2_manifest_is_refused() {
        assert!(translate("spin_manifest_version = 1")
            .unwrap_err()
            .contains("only version 2"));
        assert!(translate("[application]\nname = 'x'")
            .unwrap_err()
            .contains("spin_manifest_version"));
        assert!(translate("spin_manifest_version = 2")
            .unwrap_err()
            .contains("trigger.http"));
        assert!(translate("not toml [").unwrap_err().contains("TOML"));
    }
}
