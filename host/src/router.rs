//! Path patterns and the matcher that picks a route for a request path.
//!
//! Pattern syntax (TanStack Start's file-route paths):
//! - `/api/posts`: static segments, compared case-insensitively;
//! - `/api/posts/$postId`: a `$name` segment matches one non-empty segment and
//!   exposes it, percent-decoded, as param `name`;
//! - `/files/$`: a final bare `$` (splat) matches the rest of the path, slashes
//!   included and possibly empty, exposed as param `_splat`: its segments,
//!   each percent-decoded but for `%` and `/`, which stay `%25` and `%2F`,
//!   joined by `/`. So a separator and an encoded slash stay apart:
//!   `/files/a%2Fb/c` gives `_splat = "a%2Fb/c"` (two segments, `a/b` and
//!   `c`), `/files/a/b/c` gives `"a/b/c"` (three), and `/files/hello%20w`
//!   gives `"hello w"`. Splitting `_splat` on `/` and decoding each part
//!   gives the segments exactly.
//!
//! Precedence, whatever the order of the manifest:
//! 1. segment by segment from the left, the earlier segment decides first;
//! 2. within a segment, static beats `$param`, which beats the splat;
//! 3. a shorter splat never blocks a longer match (`/a/b/c/$` wins over `/a/$` for `/a/b/c/d`).
//!
//! A trailing slash on the request path is ignored (`/api/health/` is
//! `/api/health`). The path is split on `/` before decoding, so an encoded
//! slash (`%2F`) stays inside its segment: `/api/posts/a%2Fb` gives
//! `postId = "a/b"`, never another route. A malformed escape is an error the
//! server answers with 400.
//!
//! Lookup walks a trie whose static children are hashed, so its cost depends
//! on the path's length, not on the number of routes.

use std::collections::HashMap;
use std::fmt;

/// The param name a splat's value is exposed under.
pub const SPLAT: &str = "_splat";

/// One segment of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Lower-cased literal text.
    Static(String),
    Param(String),
    Splat,
}

/// A validated route pattern such as `/api/posts/$postId`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

/// Why a pattern is not valid; shown to the user with the manifest line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a path must start with `/`")]
    NoLeadingSlash,
    #[error("empty segment (`//`) or trailing `/`; write `/a/b`, not `/a//b` or `/a/b/`")]
    EmptySegment,
    #[error("the splat `$` must be the last segment")]
    SplatNotLast,
    #[error(
        "`${0}` is not a valid param name; use letters, digits and `_`, not starting with a digit"
    )]
    BadParamName(String),
    #[error("param `${0}` appears twice")]
    DuplicateParam(String),
    #[error("segment `{0}`: `$` may only start a segment (`$name`); optional `{{-$x}}` and prefix/suffix params are not supported")]
    MisplacedDollar(String),
    #[error("segment `{0}` contains `{1}`, which is not allowed in a path pattern")]
    BadCharacter(String, char),
}

impl Pattern {
    /// Parses a manifest path such as `/api/posts/$postId`.
    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        let rest = source
            .strip_prefix('/')
            .ok_or(PatternError::NoLeadingSlash)?;
        let mut segments = Vec::new();
        if !rest.is_empty() {
            let raw: Vec<&str> = rest.split('/').collect();
            for (i, segment) in raw.iter().enumerate() {
                if segment.is_empty() {
                    return Err(PatternError::EmptySegment);
                }
                if let Some(bad) = segment.chars().find(|c| {
                    matches!(c, '?' | '#' | '%' | '{' | '}' | '\\')
                        || c.is_control()
                        || c.is_whitespace()
                }) {
                    return Err(PatternError::BadCharacter(segment.to_string(), bad));
                }
                let parsed = match segment.strip_prefix('$') {
                    Some("") if i + 1 == raw.len() => Segment::Splat,
                    Some("") => return Err(PatternError::SplatNotLast),
                    Some(name) if name.contains('$') => {
                        return Err(PatternError::MisplacedDollar(segment.to_string()))
                    }
                    Some(name) => {
                        if !is_param_name(name) {
                            return Err(PatternError::BadParamName(name.to_string()));
                        }
                        if segments.contains(&Segment::Param(name.to_string())) {
                            return Err(PatternError::DuplicateParam(name.to_string()));
                        }
                        Segment::Param(name.to_string())
                    }
                    None if segment.contains('$') => {
                        return Err(PatternError::MisplacedDollar(segment.to_string()))
                    }
                    None => Segment::Static(segment.to_lowercase()),
                };
                segments.push(parsed);
            }
        }
        Ok(Pattern {
            source: source.to_string(),
            segments,
        })
    }

    /// The pattern as written in the manifest.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The pattern with param names erased: two patterns with the same shape
    /// could never both be reached, so they count as duplicates.
    pub fn shape(&self) -> String {
        let mut shape = String::new();
        for segment in &self.segments {
            shape.push('/');
            match segment {
                Segment::Static(text) => shape.push_str(text),
                Segment::Param(_) => shape.push_str("$param"),
                Segment::Splat => shape.push('$'),
            }
        }
        if shape.is_empty() {
            shape.push('/');
        }
        shape
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != SPLAT
}

/// A request path the router could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path has a malformed percent-escape")]
    MalformedEscape,
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
}

/// Decoded path params, in pattern order.
pub type Params = Vec<(String, String)>;

/// The winning route for a path, with its params decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The route's index in the list given to [`Router::new`].
    pub route: usize,
    pub params: Params,
}

#[derive(Debug, Default)]
struct Node {
    /// The route whose pattern ends exactly here.
    route: Option<usize>,
    statics: HashMap<String, Node>,
    param: Option<(String, Box<Node>)>,
    splat: Option<usize>,
}

/// Maps request paths to routes; built once per route table.
#[derive(Debug, Default)]
pub struct Router {
    root: Node,
}

impl Router {
    /// Builds the trie. Patterns must be free of duplicate shapes (the manifest
    /// checks that); should two collide anyway, the first one wins.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a Pattern>) -> Router {
        let mut root = Node::default();
        for (index, pattern) in patterns.into_iter().enumerate() {
            let mut node = &mut root;
            for segment in &pattern.segments {
                node = match segment {
                    Segment::Static(text) => node.statics.entry(text.clone()).or_default(),
                    Segment::Param(name) => {
                        &mut node
                            .param
                            .get_or_insert_with(|| (name.clone(), Box::default()))
                            .1
                    }
                    Segment::Splat => {
                        node.splat.get_or_insert(index);
                        break;
                    }
                };
            }
            if !matches!(pattern.segments.last(), Some(Segment::Splat)) {
                node.route.get_or_insert(index);
            }
        }
        Router { root }
    }

    /// Finds the route for a raw (still percent-encoded) request path.
    pub fn lookup(&self, path: &str) -> Result<Option<Match>, PathError> {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        let segments: Vec<String> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split('/').map(decode).collect::<Result<_, _>>()?
        };
        let mut params = Vec::new();
        Ok(find(&self.root, &segments, &mut params).map(|route| Match { route, params }))
    }
}

/// Depth-first search trying static, then param, then splat at each level:
/// the first full match is the most specific, because an earlier segment's
/// choice is settled before a later one is tried.
fn find(node: &Node, segments: &[String], params: &mut Vec<(String, String)>) -> Option<usize> {
    let Some((first, rest)) = segments.split_first() else {
        return node.route.or_else(|| {
            node.splat
                .inspect(|_| params.push((SPLAT.to_string(), String::new())))
        });
    };
    if let Some(child) = node.statics.get(first.to_lowercase().as_str()) {
        if let Some(route) = find(child, rest, params) {
            return Some(route);
        }
    }
    if let Some((name, child)) = &node.param {
        if !first.is_empty() {
            params.push((name.clone(), first.clone()));
            if let Some(route) = find(child, rest, params) {
                return Some(route);
            }
            params.pop();
        }
    }
    node.splat
        .inspect(|_| params.push((SPLAT.to_string(), splat_value(segments))))
}

/// A splat's value: decoded segments, `%` and `/` in them escaped again,
/// joined by `/` (see the module's rule).
fn splat_value(segments: &[String]) -> String {
    let mut value = String::new();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            value.push('/');
        }
        for c in segment.chars() {
            match c {
                '%' => value.push_str("%25"),
                '/' => value.push_str("%2F"),
                c => value.push(c),
            }
        }
    }
    value
}

/// Percent-decodes one path segment.
fn decode(segment: &str) -> Result<String, PathError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::MalformedEscape)?;
            let value = std::str::from_utf8(hex)
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
                .ok_or(PathError::MalformedEscape)?;
            out.push(value);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(patterns: &[&str]) -> (Router, Vec<Pattern>) {
        let parsed: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect();
        (Router::new(&parsed), parsed)
    }

    /// (patterns, path) -> winning pattern and its params.
    #[test]
    fn precedence_table() {
        type Case<'a> = (
            &'a [&'a str],
            &'a str,
            Option<(&'a str, &'a [(&'a str, &'a str)])>,
        );
        let cases: &[Case] = &[
            (
                &["/api/posts", "/api/posts/$postId"],
                "/api/posts",
                Some(("/api/posts", &[])),
            ),
            (
                &["/api/posts/$postId", "/api/posts/new"],
                "/api/posts/new",
                Some(("/api/posts/new", &[])),
            ),
            (
                &["/api/posts/$postId", "/api/posts/new"],
                "/api/posts/42",
                Some(("/api/posts/$postId", &[("postId", "42")])),
            ),
            // static beats param beats splat, regardless of manifest order
            (
                &["/files/$", "/files/$id", "/files/readme"],
                "/files/readme",
                Some(("/files/readme", &[])),
            ),
            (
                &["/files/$", "/files/$id", "/files/readme"],
                "/files/x",
                Some(("/files/$id", &[("id", "x")])),
            ),
            (
                &["/files/$", "/files/$id"],
                "/files/a/b",
                Some(("/files/$", &[("_splat", "a/b")])),
            ),
            // the earlier segment decides first
            (
                &["/$a/b", "/a/$"],
                "/a/b",
                Some(("/a/$", &[("_splat", "b")])),
            ),
            (
                &["/a/$b/$", "/a/$b/c"],
                "/a/x/c",
                Some(("/a/$b/c", &[("b", "x")])),
            ),
            // a short splat does not block a longer match, and backtracking works
            (
                &["/a/$", "/a/b/c/$"],
                "/a/b/c/d/e",
                Some(("/a/b/c/$", &[("_splat", "d/e")])),
            ),
            (
                &["/a/$", "/a/b/c/$"],
                "/a/b/x",
                Some(("/a/$", &[("_splat", "b/x")])),
            ),
            (
                &["/a/b/c", "/a/$x/d"],
                "/a/b/d",
                Some(("/a/$x/d", &[("x", "b")])),
            ),
            // a splat keeps an encoded slash apart from a separator
            (
                &["/files/$"],
                "/files/a%2Fb/c",
                Some(("/files/$", &[("_splat", "a%2Fb/c")])),
            ),
            (
                &["/files/$"],
                "/files/a/b/c",
                Some(("/files/$", &[("_splat", "a/b/c")])),
            ),
            (
                &["/files/$"],
                "/files/100%25%2f/hello%20w%C3%B6rld",
                Some(("/files/$", &[("_splat", "100%25%2F/hello wörld")])),
            ),
            // splat may be empty
            (
                &["/files/$"],
                "/files",
                Some(("/files/$", &[("_splat", "")])),
            ),
            (
                &["/files/$"],
                "/files/",
                Some(("/files/$", &[("_splat", "")])),
            ),
            (&["/$"], "/", Some(("/$", &[("_splat", "")]))),
            (&["/", "/$"], "/", Some(("/", &[]))),
            // trailing slash tolerated, static case-insensitive, params keep case
            (&["/api/health"], "/api/health/", Some(("/api/health", &[]))),
            (&["/api/health"], "/API/Health", Some(("/api/health", &[]))),
            (
                &["/api/posts/$postId"],
                "/Api/Posts/AbC",
                Some(("/api/posts/$postId", &[("postId", "AbC")])),
            ),
            // params are decoded and never escape their segment
            (
                &["/api/posts/$postId"],
                "/api/posts/a%2Fb",
                Some(("/api/posts/$postId", &[("postId", "a/b")])),
            ),
            (
                &["/api/posts/$postId", "/api/posts/a/b"],
                "/api/posts/a%2Fb",
                Some(("/api/posts/$postId", &[("postId", "a/b")])),
            ),
            (
                &["/api/posts/$postId"],
                "/api/posts/hello%20w%C3%B6rld",
                Some(("/api/posts/$postId", &[("postId", "hello wörld")])),
            ),
            (
                &["/api/posts/$postId"],
                "/api/posts/..",
                Some(("/api/posts/$postId", &[("postId", "..")])),
            ),
            (
                &["/api/$x"],
                "/api/%2e%2e",
                Some(("/api/$x", &[("x", "..")])),
            ),
            (&["/a/$x"], "/a/%24", Some(("/a/$x", &[("x", "$")]))),
            // static segments match their decoded form
            (&["/api/posts"], "/api/po%73ts", Some(("/api/posts", &[]))),
            // no match
            (&["/api/posts/$postId"], "/api/posts", None),
            (&["/api/posts/$postId"], "/api/posts/1/2", None),
            (&["/api/posts"], "/api//posts", None),
            (&["/api/posts/$postId"], "/api/posts//", None),
            (&[], "/", None),
        ];
        for (patterns, path, expected) in cases {
            let (router, parsed) = router(patterns);
            let got = router.lookup(path).unwrap().map(|m| {
                let params: Vec<(String, String)> = m.params;
                (parsed[m.route].as_str().to_string(), params)
            });
            let expected = expected.map(|(pattern, params)| {
                (
                    pattern.to_string(),
                    params
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<Vec<_>>(),
                )
            });
            assert_eq!(got, expected, "patterns {patterns:?}, path {path}");
        }
    }

    #[test]
    fn malformed_escapes_are_errors_not_panics() {
        let (router, _) = router(&["/a/$x"]);
        for path in ["/a/%", "/a/%2", "/a/%zz", "/a/%+1", "/a/%-1", "/a/x%"] {
            assert_eq!(
                router.lookup(path),
                Err(PathError::MalformedEscape),
                "{path}"
            );
        }
        assert_eq!(router.lookup("/a/%ff"), Err(PathError::NotUtf8));
        assert_eq!(
            router.lookup("/a/%C3%A9").unwrap().unwrap().params[0].1,
            "é"
        );
    }

    #[test]
    fn pattern_errors() {
        let cases = [
            ("api", PatternError::NoLeadingSlash),
            ("/a//b", PatternError::EmptySegment),
            ("/a/", PatternError::EmptySegment),
            ("/$/a", PatternError::SplatNotLast),
            ("/$1a", PatternError::BadParamName("1a".into())),
            ("/$a-b", PatternError::BadParamName("a-b".into())),
            ("/$_splat", PatternError::BadParamName("_splat".into())),
            ("/$a/$a", PatternError::DuplicateParam("a".into())),
            (
                "/post-$id",
                PatternError::MisplacedDollar("post-$id".into()),
            ),
            ("/$a$b", PatternError::MisplacedDollar("$a$b".into())),
            ("/{-$x}", PatternError::BadCharacter("{-$x}".into(), '{')),
            ("/a?b", PatternError::BadCharacter("a?b".into(), '?')),
            ("/a%20", PatternError::BadCharacter("a%20".into(), '%')),
            ("/a b", PatternError::BadCharacter("a b".into(), ' ')),
        ];
        for (source, expected) in cases {
            assert_eq!(Pattern::parse(source), Err(expected), "{source}");
        }
        for ok in [
            "/",
            "/api",
            "/api/posts/$postId",
            "/files/$",
            "/$",
            "/v1/$a/x/$b_2/$",
        ] {
            assert!(Pattern::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn shapes_ignore_param_names_and_case() {
        let shape = |p: &str| Pattern::parse(p).unwrap().shape();
        assert_eq!(shape("/api/posts/$postId"), shape("/API/posts/$id"));
        assert_ne!(shape("/api/posts/$postId"), shape("/api/posts/$"));
        assert_eq!(shape("/"), "/");
    }

    #[test]
    fn lookup_cost_does_not_depend_on_route_count() {
        let patterns: Vec<String> = (0..1000).map(|i| format!("/r{i}/$id")).collect();
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let (router, parsed) = router(&refs);
        let m = router.lookup("/r999/x").unwrap().unwrap();
        assert_eq!(parsed[m.route].as_str(), "/r999/$id");
        // Hashed static children: the root has one entry per route, found directly.
        assert_eq!(router.root.statics.len(), 1000);
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Segment kinds in precedence order: lower wins.
        fn rank(segment: &Segment) -> u8 {
            match segment {
                Segment::Static(_) => 0,
                Segment::Param(_) => 1,
                Segment::Splat => 2,
            }
        }

        /// The reference: does `pattern` match `path`, and with what kind sequence?
        fn reference_match(pattern: &Pattern, segments: &[String]) -> Option<Vec<u8>> {
            let mut kinds = Vec::new();
            for (i, segment) in pattern.segments.iter().enumerate() {
                kinds.push(rank(segment));
                match segment {
                    Segment::Splat => return Some(kinds),
                    Segment::Static(text) => {
                        if segments.get(i)?.to_lowercase() != *text {
                            return None;
                        }
                    }
                    Segment::Param(_) => {
                        if segments.get(i)?.is_empty() {
                            return None;
                        }
                    }
                }
            }
            (segments.len() == pattern.segments.len()).then_some(kinds)
        }

        fn pattern_strategy() -> impl Strategy<Value = String> {
            let segment = prop_oneof![
                Just("a".to_string()),
                Just("b".to_string()),
                Just("$p".to_string()),
                Just("$q".to_string()),
            ];
            (prop::collection::vec(segment, 0..4), any::<bool>()).prop_map(|(segments, splat)| {
                let mut names = 0;
                let mut path = String::new();
                for segment in segments {
                    path.push('/');
                    if segment.starts_with('$') {
                        // Unique param names within one pattern.
                        names += 1;
                        path.push_str(&format!("{segment}{names}"));
                    } else {
                        path.push_str(&segment);
                    }
                }
                if splat || path.is_empty() {
                    path.push_str("/$");
                }
                path
            })
        }

        proptest! {
            #[test]
            fn lookup_never_panics(path in "\\PC*") {
                let patterns: Vec<Pattern> = ["/", "/$", "/a/$x", "/a/b/$"]
                    .iter()
                    .map(|p| Pattern::parse(p).unwrap())
                    .collect();
                let _ = Router::new(&patterns).lookup(&path);
            }

            #[test]
            fn pattern_parse_never_panics(source in "\\PC*") {
                let _ = Pattern::parse(&source);
            }

            /// The trie agrees with a brute-force matcher that ranks every
            /// matching pattern segment by segment, whatever the pattern order.
            #[test]
            fn trie_picks_the_most_specific_match(
                sources in prop::collection::vec(pattern_strategy(), 1..8),
                path_segments in prop::collection::vec(
                    prop_oneof![Just("a"), Just("B"), Just("b"), Just("x"), Just("a%2Fb")], 0..5),
                reverse in any::<bool>(),
            ) {
                let mut patterns: Vec<Pattern> = Vec::new();
                for source in &sources {
                    let pattern = Pattern::parse(source).unwrap();
                    if !patterns.iter().any(|p| p.shape() == pattern.shape()) {
                        patterns.push(pattern);
                    }
                }
                if reverse {
                    patterns.reverse();
                }
                let path = format!("/{}", path_segments.join("/"));
                let decoded: Vec<String> = path_segments.iter().map(|s| s.replace("%2F", "/")).collect();
                let expected = patterns
                    .iter()
                    .filter_map(|p| reference_match(p, &decoded).map(|kinds| (kinds, p.as_str())))
                    .min()
                    .map(|(_, source)| source.to_string());
                let router = Router::new(&patterns);
                let got = router.lookup(&path).unwrap().map(|m| patterns[m.route].as_str().to_string());
                prop_assert_eq!(got, expected, "path {}", path);
            }
        }
    }
}
