//! `edgehost new <url pattern>`: a route crate at the folder its URL spells,
//! with a handler that compiles and answers, added to the cargo workspace and
//! (unless a `[routes]` folder mounts it already) to the manifest; with
//! `--ts`, a TypeScript route file there instead, in TanStack Start's form.

use crate::manifest::folders::{self, relative, TARGET};
use crate::router::Pattern;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// What `new` made.
#[derive(Debug)]
struct Created {
    crate_dir: PathBuf,
    package: String,
    /// Whether a `[[route]]` entry was added to the manifest (otherwise its
    /// `[routes]` folder mounts the crate).
    added_to_manifest: bool,
}

/// `edgehost new`.
pub fn new_route(
    manifest_path: &Path,
    url: &str,
    sdk: Option<&Path>,
    typescript: bool,
) -> anyhow::Result<()> {
    if typescript {
        let (file, added_folder) = scaffold_ts(manifest_path, url)?;
        println!("created {}", file.display());
        if added_folder {
            println!(
                "added [routes] dir = \"routes\" to {}: its route files answer at the URL their place spells",
                manifest_path.display()
            );
        }
        println!("next: edit it, then `edgehost dev` (or `edgehost build && edgehost serve`)");
        return Ok(());
    }
    let created = scaffold(manifest_path, url, sdk)?;
    println!(
        "created {} (package {})",
        created.crate_dir.display(),
        created.package
    );
    if created.added_to_manifest {
        println!("added route {url} to {}", manifest_path.display());
    } else {
        println!("the manifest's [routes] folder mounts it at {url}");
    }
    println!(
        "next: edit its src/lib.rs, then `edgehost dev` (or `edgehost build && edgehost serve`)"
    );
    Ok(())
}

/// The URL pattern `new` was given, checked: its canonical spelling.
fn checked_url(url: &str) -> anyhow::Result<Pattern> {
    let pattern = Pattern::parse(url).map_err(|err| anyhow::anyhow!("{url:?}: {err}"))?;
    if url
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        bail!("{url:?}: `.` and `..` segments would put the route outside the routes folder");
    }
    Ok(pattern)
}

/// A manifest `new` adds a route to, read, with its `[routes]` folder.
struct Project {
    /// The route's URL pattern, checked, and its canonical spelling.
    pattern: Pattern,
    url: String,
    manifest: toml_edit::DocumentMut,
    /// The manifest's folder.
    base: PathBuf,
    /// `[routes] dir`, or `routes`.
    routes_dir: String,
    /// Whether the manifest has a `[routes]` table.
    mounted_by_folder: bool,
    /// `[routes] target_dir`, if written.
    target_dir: Option<String>,
    /// The routes already under the routes folder.
    existing: Vec<folders::FolderRoute>,
}

impl Project {
    fn read(manifest_path: &Path, url: &str) -> anyhow::Result<Project> {
        let pattern = checked_url(url)?;
        let url = pattern.to_string();
        let manifest_text = std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?;
        let manifest: toml_edit::DocumentMut = manifest_text
            .parse()
            .with_context(|| format!("{} is not valid TOML", manifest_path.display()))?;
        let base = absolute(manifest_path.parent().unwrap_or(Path::new(".")))?;
        let folder_table = manifest.get("routes").and_then(|t| t.as_table_like());
        let routes_dir = folder_table
            .and_then(|t| t.get("dir"))
            .and_then(|d| d.as_str())
            .unwrap_or("routes")
            .to_string();
        let mounted_by_folder = folder_table.is_some();
        let target_dir = folder_table
            .and_then(|t| t.get("target_dir"))
            .and_then(|d| d.as_str())
            .map(str::to_string);
        let existing = if base.join(&routes_dir).is_dir() {
            folders::discover(&base, &routes_dir, &folders::default_target_dir(&base))
                .map_err(|reason| anyhow::anyhow!(reason))?
        } else {
            Vec::new()
        };
        Ok(Project {
            pattern,
            url,
            manifest,
            base,
            routes_dir,
            mounted_by_folder,
            target_dir,
            existing,
        })
    }

    /// Refuses when a route already there answers the new route's URLs.
    fn refuse_clash(&self) -> anyhow::Result<()> {
        let shape = self.pattern.shape();
        if let Some(clash) = self
            .existing
            .iter()
            .find(|r| Pattern::parse(&r.path).is_ok_and(|p| p.shape() == shape))
        {
            let what = if clash.script {
                "route file"
            } else {
                "route crate"
            };
            bail!("{what} {} already answers {}", clash.crate_dir, clash.path);
        }
        Ok(())
    }

    fn write_manifest(&self, manifest_path: &Path) -> anyhow::Result<()> {
        std::fs::write(manifest_path, self.manifest.to_string())
            .with_context(|| format!("cannot write {}", manifest_path.display()))
    }
}

/// Writes a TypeScript route file for `url` into the manifest's routes
/// folder, adding `[routes]` to the manifest when it has none; the file,
/// and whether `[routes]` was added.
fn scaffold_ts(manifest_path: &Path, url: &str) -> anyhow::Result<(PathBuf, bool)> {
    let mut project = Project::read(manifest_path, url)?;
    let mut file = project
        .base
        .join(&project.routes_dir)
        .join(folders::folder_of(&project.url));
    file.as_mut_os_string().push(".ts");
    if file.exists() {
        bail!("{} already exists", file.display());
    }
    project.refuse_clash()?;
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&file, ts_handler_source(&project.url))
        .with_context(|| format!("cannot write {}", file.display()))?;
    let add_folder = !project.mounted_by_folder;
    if add_folder {
        let mut table = toml_edit::Table::new();
        table.insert("dir", toml_edit::value(project.routes_dir.as_str()));
        project
            .manifest
            .insert("routes", toml_edit::Item::Table(table));
        project.write_manifest(manifest_path)?;
    }
    Ok((file, add_folder))
}

/// The starting TypeScript route: `GET` answers JSON with the route and
/// its params, as the Rust one does.
fn ts_handler_source(url: &str) -> String {
    let quoted = format!("'{}'", url.replace('\\', "\\\\").replace('\'', "\\'"));
    format!(
        r#"import {{ createAPIFileRoute }} from '@tanstack/react-start/api'

// {url}: one handler per HTTP method. Code at the top level runs once, when
// the component is built: read the clock, randomness or process.env inside
// a handler.
export const APIRoute = createAPIFileRoute({quoted})({{
  GET: async ({{ params }}) => Response.json({{ route: {quoted}, params }}),
}})
"#
    )
}

/// Scaffolds the route crate for `url` for the manifest at `manifest_path`.
/// `sdk` is the guest-sdk crate's folder (found above the manifest if not given).
fn scaffold(manifest_path: &Path, url: &str, sdk: Option<&Path>) -> anyhow::Result<Created> {
    let mut project = Project::read(manifest_path, url)?;
    let (base, url) = (project.base.clone(), project.url.clone());
    let crate_dir = base
        .join(&project.routes_dir)
        .join(folders::folder_of(&url));
    if crate_dir.join("Cargo.toml").exists() {
        bail!("{} already holds a route crate", crate_dir.display());
    }
    let package = folders::package_for(&url);
    if let Some(clash) = project.existing.iter().find(|r| r.package == package) {
        bail!(
            "package {package} already exists at {}; pick another URL or rename that crate",
            clash.crate_dir
        );
    }
    project.refuse_clash()?;
    let sdk = match sdk {
        Some(sdk) => absolute(sdk)?,
        None => find_sdk(&base).context(
            "cannot find the guest-sdk crate in a folder above the manifest; pass --sdk <folder>",
        )?,
    };
    if !sdk.join("Cargo.toml").is_file() {
        bail!(
            "{} has no Cargo.toml: not the guest-sdk crate",
            sdk.display()
        );
    }

    std::fs::create_dir_all(crate_dir.join("src"))
        .with_context(|| format!("cannot create {}", crate_dir.display()))?;
    let sdk_path = relative(&crate_dir, &sdk);
    std::fs::write(
        crate_dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{package}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
guest-sdk = {{ path = {sdk_path:?} }}
serde_json = "1"
"#
        ),
    )?;
    std::fs::write(crate_dir.join("src/lib.rs"), handler_source(&url))?;

    let workspace = find_workspace(&crate_dir)?;
    if let Some(root) = &workspace {
        add_member(root, &crate_dir)?;
    }

    let added_to_manifest = !project.mounted_by_folder;
    if added_to_manifest {
        // Where cargo builds the new crate, relative to the manifest.
        let target = project
            .target_dir
            .clone()
            .unwrap_or_else(|| folders::written_target_dir(&crate_dir, &base));
        let component = format!("{target}/{TARGET}/release/{package}.wasm");
        let mut entry = toml_edit::Table::new();
        entry.insert("path", toml_edit::value(url.clone()));
        entry.insert("component", toml_edit::value(component));
        let routes = project
            .manifest
            .entry("route")
            .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
        match routes.as_array_of_tables_mut() {
            Some(array) => array.push(entry),
            None => bail!(
                "{}: `route` is not a list of [[route]] tables",
                manifest_path.display()
            ),
        }
        project.write_manifest(manifest_path)?;
    }
    Ok(Created {
        crate_dir,
        package,
        added_to_manifest,
    })
}

/// The starting handler: `GET` answers JSON with the route and its params.
fn handler_source(url: &str) -> String {
    format!(
        r#"//! `{url}`: one function per HTTP method; `route!` exports them.

use guest_sdk::{{Error, Request, Response}};

fn get(req: Request) -> Result<Response, Error> {{
    let params: std::collections::BTreeMap<&str, &str> = req.params().collect();
    Ok(Response::json(&serde_json::json!({{
        "route": {url:?},
        "params": params,
    }})))
}}

guest_sdk::route!(get);
"#
    )
}

/// A `guest-sdk` folder in `start` or a folder above it.
fn find_sdk(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join("guest-sdk"))
        .find(|sdk| sdk.join("Cargo.toml").is_file())
}

/// The nearest folder above `crate_dir` whose Cargo.toml has `[workspace]`.
fn find_workspace(crate_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    for dir in crate_dir.ancestors().skip(1) {
        let cargo_toml = dir.join("Cargo.toml");
        if cargo_toml.is_file() {
            let text = std::fs::read_to_string(&cargo_toml)?;
            let doc: toml_edit::DocumentMut = text
                .parse()
                .with_context(|| format!("{} is not valid TOML", cargo_toml.display()))?;
            if doc.contains_key("workspace") {
                return Ok(Some(dir.to_path_buf()));
            }
        }
    }
    Ok(None)
}

/// Adds `crate_dir` to the workspace's `members`, keeping the file's layout.
fn add_member(root: &Path, crate_dir: &Path) -> anyhow::Result<()> {
    let cargo_toml = root.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml)?;
    let mut doc: toml_edit::DocumentMut = text.parse()?;
    let member = relative(root, crate_dir);
    let members = doc["workspace"]
        .as_table_like_mut()
        .context("[workspace] is not a table")?
        .entry("members")
        .or_insert(toml_edit::value(toml_edit::Array::new()));
    let array = members
        .as_array_mut()
        .context("[workspace] members is not a list")?;
    if array.iter().any(|m| m.as_str() == Some(member.as_str())) {
        return Ok(());
    }
    // Follow the list's layout: one member per line if it is written so.
    let multiline = array
        .iter()
        .next()
        .and_then(|first| first.decor().prefix())
        .and_then(|p| p.as_str())
        .is_some_and(|p| p.contains('\n'));
    array.push(member.as_str());
    if multiline {
        if let Some(last) = array.iter_mut().last() {
            last.decor_mut().set_prefix("\n    ");
        }
        array.set_trailing("\n");
        array.set_trailing_comma(true);
    }
    std::fs::write(&cargo_toml, doc.to_string())
        .with_context(|| format!("cannot write {}", cargo_toml.display()))?;
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::fs::canonicalize(path).with_context(|| format!("cannot find {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffolds_a_crate_adds_it_to_the_workspace_and_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("Cargo.toml"),
            "# the workspace\n[workspace]\nresolver = \"2\"\nmembers = [\n    \"guest-sdk\",\n]\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("guest-sdk")).unwrap();
        std::fs::write(
            root.join("guest-sdk/Cargo.toml"),
            "[package]\nname = \"guest-sdk\"\n",
        )
        .unwrap();
        std::fs::write(
            root.join("manifest.toml"),
            "# my app\n[server]\nlisten = \"127.0.0.1:8080\"\n",
        )
        .unwrap();

        let created = scaffold(&root.join("manifest.toml"), "/api/users/$userId", None).unwrap();
        assert_eq!(created.package, "api_users_userid");
        assert!(created.added_to_manifest);
        let crate_dir = root.join("routes/api/users/$userId");
        let cargo = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"api_users_userid\""), "{cargo}");
        assert!(
            cargo.contains("path = \"../../../../guest-sdk\""),
            "{cargo}"
        );
        let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(workspace.starts_with("# the workspace\n"), "{workspace}");
        assert!(
            workspace
                .contains("members = [\n    \"guest-sdk\",\n    \"routes/api/users/$userId\",\n]"),
            "{workspace}"
        );
        let manifest = std::fs::read_to_string(root.join("manifest.toml")).unwrap();
        assert!(manifest.starts_with("# my app\n[server]"), "{manifest}");
        let target = std::env::var("CARGO_TARGET_DIR")
            .ok()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "target".into());
        let entry = format!("[[route]]\npath = \"/api/users/$userId\"\ncomponent = \"{target}/wasm32-wasip2/release/api_users_userid.wasm\"\n");
        assert!(manifest.contains(&entry), "{manifest}");

        // Again: the folder is taken.
        let again = scaffold(&root.join("manifest.toml"), "/api/users/$userId", None);
        assert!(again
            .unwrap_err()
            .to_string()
            .contains("already holds a route crate"));
        // A bad pattern is refused before anything is written.
        assert!(scaffold(&root.join("manifest.toml"), "api/x", None).is_err());
        assert!(scaffold(&root.join("manifest.toml"), "/../escape", None).is_err());
        assert!(!root.join("escape").exists());
        assert!(!root.join("routes/api/x").exists());
    }

    #[test]
    fn with_a_routes_folder_the_manifest_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sdk")).unwrap();
        std::fs::write(
            root.join("sdk/Cargo.toml"),
            "[package]\nname = \"guest-sdk\"\n",
        )
        .unwrap();
        let text = "[routes]\ndir = \"app\"\n";
        std::fs::write(root.join("manifest.toml"), text).unwrap();
        let created = scaffold(&root.join("manifest.toml"), "/", Some(&root.join("sdk"))).unwrap();
        assert!(!created.added_to_manifest);
        assert!(root.join("app/index/src/lib.rs").is_file());
        assert_eq!(
            std::fs::read_to_string(root.join("manifest.toml")).unwrap(),
            text
        );
        // Another crate answering the same URL shape is refused.
        let clash = scaffold(
            &root.join("manifest.toml"),
            "/index",
            Some(&root.join("sdk")),
        );
        assert!(clash.is_err());
    }

    #[test]
    fn a_typescript_route_is_a_file_where_its_url_says() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let manifest = root.join("manifest.toml");
        std::fs::write(
            &manifest,
            "# my app\n[server]\nlisten = \"127.0.0.1:8080\"\n",
        )
        .unwrap();
        let (file, added) = scaffold_ts(&manifest, "/api/hello/$name").unwrap();
        assert!(added);
        assert_eq!(
            file,
            root.canonicalize()
                .unwrap()
                .join("routes/api/hello/$name.ts")
        );
        let source = std::fs::read_to_string(&file).unwrap();
        assert!(
            source.contains("createAPIFileRoute('/api/hello/$name')"),
            "{source}"
        );
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(text.starts_with("# my app\n[server]"), "{text}");
        assert!(text.contains("[routes]\ndir = \"routes\"\n"), "{text}");
        // The folder finds it at the URL it was made for.
        let found = folders::discover(root, "routes", "target").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "/api/hello/$name");
        assert!(found[0].script);

        // Again, or another spelling of the same URLs: refused, nothing written.
        assert!(scaffold_ts(&manifest, "/api/hello/$name")
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        let clash = scaffold_ts(&manifest, "/api/hello/$who").unwrap_err();
        assert!(
            clash
                .to_string()
                .contains("route file routes/api/hello/$name.ts already answers /api/hello/$name"),
            "{clash}"
        );
        assert!(!root.join("routes/api/hello/$who.ts").exists());
        // With [routes] there, the manifest is left alone.
        let (_, added) = scaffold_ts(&manifest, "/").unwrap();
        assert!(!added);
        assert!(root.join("routes/index.ts").is_file());
        assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);
    }
}
