//! The layout rules, checked over the host's own source: no file holds more
//! than 600 lines before its tests, and no two modules import each other,
//! neither the top-level ones (`cli`, `http`, `control`, `runtime`, ...) nor
//! two files of one folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The most lines a host file may have before its `#[cfg(test)]`.
const MAX_LINES: usize = 600;

/// A module by its path below `src`: `["http", "server"]`.
type Module = Vec<String>;

/// Every module file under `src` (not `main.rs`, `lib.rs`) and its text.
fn modules(src: &Path) -> BTreeMap<Module, (PathBuf, String)> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Module, (PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut module = prefix.to_vec();
            if path.is_dir() {
                module.push(name);
                walk(&path, &module, out);
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            if prefix.is_empty() && (stem == "main" || stem == "lib") {
                continue;
            }
            if stem != "mod" {
                module.push(stem.to_string());
            }
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(module, (path, text));
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The crate paths `text` (code, not comments) of `module` names, absolute:
/// `crate::a::b`, and `super::c` resolved from `module`.
fn references(module: &Module, text: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find(['c', 's']) {
            let tail = &rest[at..];
            let boundary = rest[..at]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let start: Option<(Vec<String>, &str)> = if !boundary {
                None
            } else if let Some(after) = tail.strip_prefix("crate::") {
                Some((Vec::new(), after))
            } else if tail.starts_with("super::") {
                // Each `super` is one module up, from a file or a folder alike.
                let mut after = tail;
                let mut base = module.clone();
                while let Some(more) = after.strip_prefix("super::") {
                    after = more;
                    base.pop();
                }
                Some((base, after))
            } else {
                None
            };
            match start {
                Some((base, after)) => {
                    collect(&base, after, &mut found);
                    rest = after;
                }
                None => rest = &tail[1..],
            }
        }
    }
    found
}

/// Paths written at `text` (after `crate::` or `super::`), with groups
/// `{a, b::c}` expanded, each prefixed with `base`.
fn collect(base: &[String], text: &str, found: &mut Vec<Vec<String>>) {
    let mut path = base.to_vec();
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut entry_start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' | ',' if depth == 1 => {
                        collect(&path, group[entry_start..i].trim(), found);
                        entry_start = i + 1;
                        if c == '}' {
                            break;
                        }
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            return;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end > 0 {
            path.push(rest[..end].to_string());
        }
        rest = &rest[end..];
        match rest.strip_prefix("::") {
            Some(more) => rest = more,
            None => {
                found.push(path);
                return;
            }
        }
    }
}

/// The module `path` lands in: its longest prefix that is a module.
fn target(path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| known.contains(prefix))
}

/// A cycle in `edges`, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, edges, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_host_file_is_over_600_lines_before_its_tests() {
    for (path, text) in modules(&src()).values() {
        let lines = text
            .lines()
            .take_while(|line| line.trim() != "#[cfg(test)]")
            .count();
        assert!(
            lines <= MAX_LINES,
            "{} has {lines} lines before its tests (at most {MAX_LINES}): split it by concept",
            path.display()
        );
    }
}

#[test]
fn no_two_modules_import_each_other() {
    let modules = modules(&src());
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Files of one folder, by folder: file -> files it imports.
    let mut siblings: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (module, (path, text)) in &modules {
        let is_folder = path.ends_with("mod.rs");
        for reference in references(module, text) {
            let Some(to) = target(&reference, &known) else {
                continue;
            };
            if to == *module {
                continue;
            }
            if module[0] != to[0] {
                top.entry(module[0].clone())
                    .or_default()
                    .insert(to[0].clone());
            }
            // Two files of one folder (a folder's mod.rs declares its files,
            // which may use what it re-exports: that is no circle).
            let same_folder = module.len() == to.len()
                && module.len() > 1
                && module[..module.len() - 1] == to[..to.len() - 1];
            if same_folder && !is_folder {
                let folder = module[..module.len() - 1].to_vec();
                siblings
                    .entry(folder)
                    .or_default()
                    .entry(module.join("::"))
                    .or_default()
                    .insert(to.join("::"));
            }
        }
    }
    assert!(
        top.contains_key("http") && top["http"].contains("runtime"),
        "the scan found the imports: {top:?}"
    );
    if let Some(found) = cycle(&top) {
        panic!(
            "top-level modules import each other: {}",
            found.join(" -> ")
        );
    }
    for (folder, edges) in &siblings {
        if let Some(found) = cycle(edges) {
            panic!(
                "files of {} import each other: {}",
                folder.join("/"),
                found.join(" -> ")
            );
        }
    }
}

#[test]
fn references_resolve_crate_super_and_groups() {
    let module: Module = vec!["runtime".into(), "route".into()];
    let text = "use super::store::{Grants, HostState};\nuse crate::manifest::{self, Limits};\n// use crate::ignored;\nlet x = super::Runtime::new();\nuse super::{call, proxy::ProxyDone};";
    let found = references(&module, text);
    let strings: Vec<String> = found.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        strings,
        [
            "runtime::store::Grants",
            "runtime::store::HostState",
            "manifest::self",
            "manifest::Limits",
            "runtime::Runtime::new",
            "runtime::call",
            "runtime::proxy::ProxyDone",
        ]
    );
    let folder: Module = vec!["runtime".into()];
    let from_mod = references(&folder, "use super::metrics::Metrics;");
    assert_eq!(
        from_mod,
        [vec!["metrics".to_string(), "Metrics".to_string()]]
    );
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycle(&edges),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
