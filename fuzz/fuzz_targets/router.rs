//! Route patterns and request paths: parsing never panics, and the route the
//! trie picks for a path is one whose pattern matches that path on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

#[allow(dead_code)]
#[path = "../../host/src/router.rs"]
mod router;

use router::{Pattern, Router};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Every line but the last is a pattern; the last is the request path.
    let mut lines: Vec<&str> = text.split('\n').collect();
    let path = lines.pop().unwrap_or("");
    let mut shapes = HashSet::new();
    let patterns: Vec<Pattern> = lines
        .iter()
        .filter_map(|line| Pattern::parse(line).ok())
        .filter(|pattern| shapes.insert(pattern.shape()))
        .collect();
    let table = Router::new(&patterns);
    let Ok(found) = table.lookup(path) else {
        return;
    };
    if let Some(found) = found {
        let pattern = &patterns[found.route];
        let alone = Router::new([pattern]).lookup(path);
        assert!(
            matches!(alone, Ok(Some(_))),
            "{path:?} went to {:?}, which does not match it alone",
            pattern.as_str()
        );
    }
});
