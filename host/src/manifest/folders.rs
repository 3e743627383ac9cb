//! File-based routes: the folder a route crate lives in is its URL, as in
//! TanStack Start's `routes/` tree.
//!
//! | folder under the routes dir | URL |
//! | --- | --- |
//! | `api/posts/index` | `/api/posts` |
//! | `api/posts/$postId` | `/api/posts/$postId` |
//! | `files/$` | `/files/$` (splat) |
//! | `(admin)/api/stats` | `/api/stats` (a group folder is left out) |
//!
//! A route crate is a folder with a `Cargo.toml` that has a `[package]`; its
//! component is `<target_dir>/wasm32-wasip2/release/<crate name>.wasm`, where
//! `target_dir` is where cargo builds ([`cargo_target_dir`], the one place
//! that decides it).

use super::scripts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Component, Path, PathBuf};

/// The target route crates are built for.
pub(crate) const TARGET: &str = "wasm32-wasip2";

/// One route crate found under a routes folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRoute {
    /// The URL pattern its folder spells.
    pub path: String,
    /// Its folder, relative to the manifest's folder, with `/` separators.
    pub crate_dir: String,
    /// Its package name as cargo knows it.
    pub package: String,
    /// Its built component, relative to the manifest's folder.
    pub component: String,
    /// A TypeScript route file rather than a crate: `crate_dir` is the file,
    /// `package` is empty, and `component` is the one every route file of
    /// its routes folder is built into (see `scripts.rs`).
    #[serde(default)]
    pub script: bool,
}

/// The URL pattern a crate folder spells, from its path below the routes
/// folder: `index` is its parent's path, `(group)` folders are left out.
pub(crate) fn url_of(relative: &Path) -> String {
    let mut segments: Vec<String> = Vec::new();
    for part in relative.components() {
        if let Component::Normal(name) = part {
            let name = name.to_string_lossy();
            if name.starts_with('(') && name.ends_with(')') {
                continue;
            }
            segments.push(name.into_owned());
        }
    }
    if segments.last().is_some_and(|last| last == "index") {
        segments.pop();
    }
    format!("/{}", segments.join("/"))
}

/// The folder (below the routes folder) for a URL pattern:
/// `/api/posts` -> `api/posts`, `/` -> `index`.
pub(crate) fn folder_of(url: &str) -> PathBuf {
    let trimmed = url.trim_matches('/');
    if trimmed.is_empty() {
        PathBuf::from("index")
    } else {
        trimmed.split('/').collect()
    }
}

/// A package name for the crate at a URL: `/api/posts/$postId` ->
/// `api_posts_postid`, `/files/$` -> `files_splat`, `/` -> `index`.
pub(crate) fn package_for(url: &str) -> String {
    let parts: Vec<String> = url
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|segment| match segment {
            "$" => "splat".to_string(),
            _ => segment
                .trim_start_matches('$')
                .chars()
                .map(name_char)
                .collect(),
        })
        .collect();
    let name = parts.join("_");
    match name.chars().next() {
        None => "index".to_string(),
        Some(first) if first.is_ascii_digit() => format!("route_{name}"),
        Some(_) => name,
    }
}

/// A character of a generated name: ASCII letters (lowercased) and digits
/// as they are, anything else `_`.
fn name_char(c: char) -> char {
    if c.is_ascii_alphanumeric() {
        c.to_ascii_lowercase()
    } else {
        '_'
    }
}

/// The file name of the component the TypeScript route files of the
/// folder `root` build into: the folder's last two names and a short hash
/// of its absolute path, so two apps sharing a target folder never share a
/// component. `discover` passes the folder canonicalized, so a manifest
/// reached through `..` or a link names the component its build wrote.
pub(crate) fn app_component_name(root: &Path) -> String {
    let absolute = absolute(root);
    let digest = Sha256::digest(absolute.to_string_lossy().as_bytes());
    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let names: Vec<String> = absolute
        .components()
        .filter_map(|part| match part {
            Component::Normal(name) => {
                Some(name.to_string_lossy().chars().map(name_char).collect())
            }
            _ => None,
        })
        .collect();
    let last_two = &names[names.len().saturating_sub(2)..];
    format!("{}-{short}.wasm", last_two.join("-"))
}

/// The package name in a `Cargo.toml`, if it has a `[package]`.
pub(crate) fn package_name(cargo_toml: &Path) -> Result<Option<String>, String> {
    let text = std::fs::read_to_string(cargo_toml)
        .map_err(|err| format!("cannot read {}: {err}", cargo_toml.display()))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|err| {
        format!(
            "{} is not valid TOML: {}",
            cargo_toml.display(),
            err.message()
        )
    })?;
    Ok(doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string))
}

/// Every route crate and TypeScript route file below `base/dir`, sorted by
/// folder. A crate's folder is not searched further; `target`, `src`,
/// `node_modules` and hidden folders are skipped.
pub(crate) fn discover(
    base: &Path,
    dir: &str,
    target_dir: &str,
) -> Result<Vec<FolderRoute>, String> {
    let root = base.join(dir);
    if !root.is_dir() {
        return Err(format!("routes folder {dir} not found"));
    }
    let mut found = Vec::new();
    walk(&root, &root, &mut found)?;
    let app = Path::new(target_dir)
        .join(scripts::APP_FOLDER)
        .join(app_component_name(
            &std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone()),
        ));
    Ok(found
        .into_iter()
        .map(|found| match found {
            Found::Crate(relative, package) => FolderRoute {
                path: url_of(&relative),
                crate_dir: slashes(&Path::new(dir).join(&relative)),
                component: slashes(
                    &Path::new(target_dir)
                        .join(TARGET)
                        .join("release")
                        .join(format!("{}.wasm", package.replace('-', "_"))),
                ),
                package,
                script: false,
            },
            Found::Script(relative) => FolderRoute {
                path: scripts::url_of_file(&relative),
                crate_dir: slashes(&Path::new(dir).join(&relative)),
                component: slashes(&app),
                package: String::new(),
                script: true,
            },
        })
        .collect())
}

/// What the walk found: a crate's folder and package, or a route file.
enum Found {
    Crate(PathBuf, String),
    Script(PathBuf),
}

fn walk(root: &Path, dir: &Path, found: &mut Vec<Found>) -> Result<(), String> {
    let relative = |path: &Path| path.strip_prefix(root).unwrap_or(path).to_path_buf();
    let cargo_toml = dir.join("Cargo.toml");
    if cargo_toml.is_file() {
        if let Some(package) = package_name(&cargo_toml)? {
            found.push(Found::Crate(relative(dir), package));
            return Ok(());
        }
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|err| format!("cannot read folder {}: {err}", dir.display()))?;
    let mut entries: Vec<(PathBuf, String)> = entries
        .filter_map(Result::ok)
        .map(|entry| {
            (
                entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            )
        })
        .collect();
    entries.sort();
    for (path, name) in &entries {
        if path.is_file() && scripts::is_route_file(name) {
            found.push(Found::Script(relative(path)));
        }
    }
    for (path, name) in entries {
        let skipped =
            name.starts_with('.') || ["target", "src", "node_modules"].contains(&name.as_str());
        if path.is_dir() && !skipped {
            walk(root, &path, found)?;
        }
    }
    Ok(())
}

/// A relative path written with `/`, as in a manifest.
fn slashes(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Where cargo puts the builds of the crates at or below `start`, as it
/// decides: `CARGO_TARGET_DIR` when set (relative to the current folder, as
/// cargo reads it), else `target` in the nearest folder at or above `start`
/// whose `Cargo.toml` has a `[workspace]`, else `target` in `start`.
pub(crate) fn cargo_target_dir(start: &Path) -> PathBuf {
    target_dir_for(start, std::env::var_os("CARGO_TARGET_DIR"))
}

/// [`cargo_target_dir`] with `CARGO_TARGET_DIR` given.
fn target_dir_for(start: &Path, from_env: Option<std::ffi::OsString>) -> PathBuf {
    let start = absolute(start);
    if let Some(dir) = from_env.filter(|dir| !dir.is_empty()) {
        return absolute(Path::new(&dir));
    }
    let root = start
        .ancestors()
        .find(|dir| is_workspace_root(dir))
        .unwrap_or(&start);
    root.join("target")
}

/// [`cargo_target_dir`] of the crates under `base`, as a manifest beside
/// them would write it.
pub(crate) fn default_target_dir(base: &Path) -> String {
    written_target_dir(base, base)
}

/// [`cargo_target_dir`] of the crates at or below `start`, as a manifest in
/// `base` would write it: relative to `base` (`target`, `../target`) when it
/// is the workspace's, the absolute path `CARGO_TARGET_DIR` names otherwise.
pub(crate) fn written_target_dir(start: &Path, base: &Path) -> String {
    let target = cargo_target_dir(start);
    if std::env::var_os("CARGO_TARGET_DIR").is_some_and(|dir| !dir.is_empty()) {
        slashes(&target)
    } else {
        relative(&absolute(base), &target)
    }
}

fn is_workspace_root(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|doc| doc.contains_key("workspace"))
}

/// `path` made absolute against the current folder (without resolving links).
fn absolute(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `to` relative to `from` (both absolute), written with `/`; `to` itself
/// when they share no root.
pub(crate) fn relative(from: &Path, to: &Path) -> String {
    fn normal(path: &Path) -> Vec<Component<'_>> {
        path.components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect()
    }
    let (from, to) = (normal(from), normal(to));
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common == 0 {
        return slashes(&to.iter().collect::<PathBuf>());
    }
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        to[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_spell_urls() {
        for (folder, url) in [
            ("api/health", "/api/health"),
            ("api/posts/index", "/api/posts"),
            ("api/posts/$postId", "/api/posts/$postId"),
            ("files/$", "/files/$"),
            ("(admin)/api/stats", "/api/stats"),
            ("api/(v1)/users/index", "/api/users"),
            ("index", "/"),
            ("(marketing)/index", "/"),
            // Only a last `index` is the parent's path.
            ("index/more", "/index/more"),
        ] {
            assert_eq!(url_of(Path::new(folder)), url, "{folder}");
        }
    }

    #[test]
    fn each_routes_folder_has_its_own_component() {
        let a = app_component_name(Path::new("/w/examples/tanstack/routes"));
        let b = app_component_name(Path::new("/w/tests/ts-app/routes"));
        assert!(
            a.starts_with("tanstack-routes-") && a.ends_with(".wasm"),
            "{a}"
        );
        assert!(b.starts_with("ts_app-routes-"), "{b}");
        assert_ne!(a, b);
        assert_eq!(
            a,
            app_component_name(Path::new("/w/examples/tanstack/routes"))
        );
    }

    #[test]
    fn urls_give_folders_and_package_names() {
        for (url, folder, package) in [
            (
                "/api/posts/$postId",
                "api/posts/$postId",
                "api_posts_postid",
            ),
            ("/api/posts/", "api/posts", "api_posts"),
            ("/files/$", "files/$", "files_splat"),
            ("/", "index", "index"),
            ("/v1/my-thing", "v1/my-thing", "v1_my_thing"),
            ("/2024/report", "2024/report", "route_2024_report"),
        ] {
            assert_eq!(folder_of(url), PathBuf::from(folder), "{url}");
            assert_eq!(package_for(url), package, "{url}");
            if url.len() > 1 && !url.ends_with('/') {
                assert_eq!(url_of(&folder_of(url)), url, "round trip of {url}");
            }
        }
    }

    #[test]
    fn discover_finds_crates_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let make = |folder: &str, name: &str| {
            let path = dir.path().join("routes").join(folder);
            std::fs::create_dir_all(path.join("src")).unwrap();
            std::fs::write(
                path.join("Cargo.toml"),
                format!("[package]\nname = \"{name}\"\n"),
            )
            .unwrap();
        };
        make("api/posts/index", "api-posts");
        make("api/posts/$postId", "api_posts_postid");
        make("(admin)/stats", "stats");
        // Not searched: inside a crate, target folders, hidden folders.
        make("api/posts/index/nested", "nested");
        make("target/x", "built");
        make(".cache/y", "hidden");
        let found = discover(dir.path(), "routes", "target").unwrap();
        let summary: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|r| (r.path.as_str(), r.crate_dir.as_str(), r.component.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "/stats",
                    "routes/(admin)/stats",
                    "target/wasm32-wasip2/release/stats.wasm"
                ),
                (
                    "/api/posts/$postId",
                    "routes/api/posts/$postId",
                    "target/wasm32-wasip2/release/api_posts_postid.wasm"
                ),
                (
                    "/api/posts",
                    "routes/api/posts/index",
                    "target/wasm32-wasip2/release/api_posts.wasm"
                ),
            ]
        );
        assert!(discover(dir.path(), "nowhere", "target")
            .unwrap_err()
            .contains("routes folder nowhere not found"));
    }

    /// One answer to "where are the components": the environment's
    /// `CARGO_TARGET_DIR`, else the workspace's `target`, else `target` here.
    #[test]
    fn the_target_folder_is_where_cargo_builds() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path().join("ws");
        let app = workspace.join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::write(workspace.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        // A crate's own Cargo.toml (no [workspace]) is not the root.
        std::fs::write(app.join("Cargo.toml"), "[package]\nname = \"app\"\n").unwrap();
        assert_eq!(target_dir_for(&app, None), workspace.join("target"));
        assert_eq!(
            relative(&app, &target_dir_for(&app, None)),
            "../target",
            "relative to the manifest's folder"
        );
        let alone = dir.path().join("alone");
        std::fs::create_dir_all(&alone).unwrap();
        assert_eq!(target_dir_for(&alone, None), alone.join("target"));
        let from_env = target_dir_for(&app, Some("/elsewhere/t".into()));
        assert_eq!(from_env, PathBuf::from("/elsewhere/t"));
        let relative_env = target_dir_for(&app, Some("rel-target".into()));
        assert_eq!(
            relative_env,
            std::env::current_dir().unwrap().join("rel-target"),
            "cargo reads a relative CARGO_TARGET_DIR from the current folder"
        );
        assert_eq!(
            target_dir_for(&app, Some("".into())),
            workspace.join("target")
        );
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/w/routes/api/x"), Path::new("/w/guest-sdk")),
            "../../../guest-sdk"
        );
        assert_eq!(relative(Path::new("/w"), Path::new("/w/target")), "target");
        assert_eq!(relative(Path::new("/w"), Path::new("/w")), "");
    }
}
