//! TypeScript route files: `routes/**/*.ts`, each file's URL spelled by its
//! folders and its name as TanStack Start's file routes spell them, and
//! every file of one routes folder built into one component.
//!
//! | file under the routes dir | URL |
//! | --- | --- |
//! | `api/health.ts` | `/api/health` |
//! | `api/posts/index.ts`, `api/posts.index.ts`, `api/posts/route.ts` | `/api/posts` |
//! | `api/posts/$postId.ts`, `api/posts.$postId.ts` | `/api/posts/$postId` |
//! | `files/$.ts` | `/files/$` (splat) |
//! | `(admin)/stats.ts`, `_layout/stats.ts` | `/stats` (groups and pathless layouts are left out) |
//! | `posts_.$postId.edit.ts` | `/posts/$postId/edit` (a trailing `_` only un-nests) |
//! | `users[.]json.ts` | `/users.json` (`[x]` escapes a character) |
//!
//! Files whose name starts with `-`, declaration files (`.d.ts`) and tests
//! (`.test.ts`, `.spec.ts`) are not routes.

use std::path::{Component, Path};

/// Whether a file name is a TypeScript route.
pub(crate) fn is_route_file(name: &str) -> bool {
    name.ends_with(".ts")
        && !name.starts_with('-')
        && !name.starts_with('.')
        && ![".d.ts", ".test.ts", ".spec.ts"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// The URL pattern of a route file, from its path below the routes folder.
pub(crate) fn url_of_file(relative: &Path) -> String {
    let mut names: Vec<String> = Vec::new();
    let parts: Vec<String> = relative
        .components()
        .filter_map(|part| match part {
            Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            let stem = part.strip_suffix(".ts").unwrap_or(part);
            names.extend(flat_segments(stem));
        } else {
            names.push(part.clone());
        }
    }
    let mut segments: Vec<String> = names
        .into_iter()
        .filter(|name| !(name.starts_with('(') && name.ends_with(')')))
        .filter(|name| !(name.starts_with('_') && name.len() > 1))
        .map(|name| match name.strip_suffix('_') {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => name,
        })
        .collect();
    if segments
        .last()
        .is_some_and(|last| last == "index" || last == "route")
    {
        segments.pop();
    }
    format!("/{}", segments.join("/"))
}

/// A file name's segments: `.` separates them, `[x]` is a literal `x`.
fn flat_segments(stem: &str) -> Vec<String> {
    let mut segments = vec![String::new()];
    let mut escaped = false;
    for c in stem.chars() {
        match c {
            '[' if !escaped => escaped = true,
            ']' if escaped => escaped = false,
            '.' if !escaped => segments.push(String::new()),
            _ => {
                if let Some(last) = segments.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    segments.retain(|segment| !segment.is_empty());
    segments
}

/// The folder (below the target folder) the app components are built into.
pub(crate) const APP_FOLDER: &str = "edgehost-ts";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_spell_urls_as_tanstack_does() {
        for (file, url) in [
            ("api/health.ts", "/api/health"),
            ("api/posts/index.ts", "/api/posts"),
            ("api/posts.index.ts", "/api/posts"),
            ("api/posts/route.ts", "/api/posts"),
            ("api/posts.ts", "/api/posts"),
            ("api/posts/$postId.ts", "/api/posts/$postId"),
            ("api/posts.$postId.ts", "/api/posts/$postId"),
            ("api.posts.$postId.ts", "/api/posts/$postId"),
            ("files/$.ts", "/files/$"),
            ("(admin)/stats.ts", "/stats"),
            ("_layout/stats.ts", "/stats"),
            ("posts_.$postId.edit.ts", "/posts/$postId/edit"),
            ("users[.]json.ts", "/users.json"),
            ("index.ts", "/"),
        ] {
            assert_eq!(url_of_file(Path::new(file)), url, "{file}");
        }
    }

    #[test]
    fn only_route_files_are_routes() {
        for name in ["health.ts", "$postId.ts", "posts.index.ts"] {
            assert!(is_route_file(name), "{name}");
        }
        for name in [
            "-helpers.ts",
            "types.d.ts",
            "x.test.ts",
            "x.spec.ts",
            "x.tsx",
            "x.js",
            ".x.ts",
        ] {
            assert!(!is_route_file(name), "{name}");
        }
    }
}
