//! The `route!` macro behind `guest_sdk::route!`. Route authors use it through
//! `guest-sdk`; see that crate's documentation.
//!
//! It exists as a procedural macro because the component's world must list
//! exactly the methods the route implements (the host learns them from the
//! component's type), so the WIT world is written per route at compile time:
//! the lines of world `route` in guest-sdk's `wit/route.wit` for the methods
//! the route names. The methods, their names and their signature come from
//! that file, the one the host checks components against.

use proc_macro::{Delimiter, TokenStream, TokenTree};

/// guest-sdk's WIT folder (the boundary's types and their dependencies). It is
/// named explicitly, by absolute path, so that wit-bindgen never falls back to
/// a `wit/` folder of the route's own crate.
const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");

/// The boundary's world of a route: its imports and one export per method.
const ROUTE_WIT: &str = include_str!("../../wit/route.wit");

/// What the macro needs from `route.wit`.
struct Boundary {
    /// `edge:route` and `0.1.0`, from the `package` line.
    package: String,
    version: String,
    /// (method, its `export ...;` line) in the order the world lists them.
    methods: Vec<(String, String)>,
}

/// Reads the package and the method exports of world `route`.
fn boundary(wit: &str) -> Result<Boundary, String> {
    let package_line = wit
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("package "))
        .ok_or("route.wit has no package line")?;
    let (package, version) = package_line
        .trim_end_matches(';')
        .split_once('@')
        .ok_or("route.wit's package has no version")?;
    let (_, world) = wit
        .split_once("world route {")
        .ok_or("route.wit has no world route")?;
    let methods: Vec<(String, String)> = world
        .lines()
        .map(str::trim)
        // The world ends at its closing brace, alone on its line.
        .take_while(|line| *line != "}")
        .filter_map(|line| {
            let name = line.strip_prefix("export ")?.split(':').next()?.trim();
            Some((name.to_string(), line.to_string()))
        })
        .collect();
    if methods.is_empty() {
        return Err("route.wit's world route exports no method".into());
    }
    Ok(Boundary {
        package: package.to_string(),
        version: version.to_string(),
        methods,
    })
}

/// Exports the given handler functions as the route's methods.
///
/// `route!(get, post)` exports the functions `get` and `post` found where the
/// macro is called; `route!(get => show_post)` exports `show_post` as `get`.
#[proc_macro]
pub fn route(input: TokenStream) -> TokenStream {
    let expanded = boundary(ROUTE_WIT).and_then(|boundary| {
        let handlers = parse(input, &boundary)?;
        Ok(expand(&boundary, &handlers))
    });
    match expanded {
        Ok(code) => code,
        Err(message) => format!("compile_error!({message:?});")
            .parse()
            .unwrap_or_default(),
    }
}

/// (method, handler function path) pairs, in the order written.
fn parse(input: TokenStream, boundary: &Boundary) -> Result<Vec<(String, String)>, String> {
    let known: Vec<&str> = boundary.methods.iter().map(|(m, _)| m.as_str()).collect();
    let mut handlers: Vec<(String, String)> = Vec::new();
    let mut tokens = input.into_iter().peekable();
    while let Some(token) = tokens.next() {
        let method = match token {
            TokenTree::Ident(ident) => ident.to_string(),
            TokenTree::Group(group) if group.delimiter() == Delimiter::None => {
                group.stream().to_string()
            }
            other => return Err(format!("route!: expected a method name, found `{other}`")),
        };
        if !known.contains(&method.as_str()) {
            return Err(format!(
                "route!: `{method}` is not a method; use one of {}",
                known.join(", ")
            ));
        }
        if handlers.iter().any(|(m, _)| *m == method) {
            return Err(format!("route!: `{method}` is listed twice"));
        }
        let mut handler = method.clone();
        if matches!(tokens.peek(), Some(TokenTree::Punct(p)) if p.as_char() == '=') {
            tokens.next();
            match tokens.next() {
                Some(TokenTree::Punct(p)) if p.as_char() == '>' => {}
                _ => return Err("route!: expected `=>` after the method name".into()),
            }
            handler.clear();
            while let Some(token) = tokens.peek() {
                if matches!(token, TokenTree::Punct(p) if p.as_char() == ',') {
                    break;
                }
                handler.push_str(&token.to_string());
                tokens.next();
            }
            if handler.is_empty() {
                return Err(format!("route!: `{method} =>` needs a function"));
            }
        }
        handlers.push((method, handler));
        match tokens.next() {
            None => break,
            Some(TokenTree::Punct(p)) if p.as_char() == ',' => {}
            Some(other) => return Err(format!("route!: expected `,`, found `{other}`")),
        }
    }
    if handlers.is_empty() {
        return Err("route!: name at least one method, for example `route!(get)`".into());
    }
    Ok(handlers)
}

fn expand(boundary: &Boundary, handlers: &[(String, String)]) -> TokenStream {
    let Boundary {
        package, version, ..
    } = boundary;
    let mut world = format!(
        "package edge:route-exports;\n\nworld route {{\n    use {package}/types@{version}.{{request, response}};\n"
    );
    let mut impls = String::new();
    for (method, handler) in handlers {
        // `parse` accepted only methods the boundary lists.
        if let Some((_, line)) = boundary.methods.iter().find(|(m, _)| m == method) {
            world.push_str(&format!("    {line}\n"));
        }
        impls.push_str(&format!(
            "fn {method}(req: ::guest_sdk::__private::types::Request) \
             -> ::guest_sdk::__private::types::Response {{ \
             ::guest_sdk::__private::dispatch(req, super::{handler}) }}\n"
        ));
    }
    world.push_str("}\n");
    let types = format!("{package}/types@{version}");
    let code = format!(
        r#"
#[doc(hidden)]
#[allow(warnings, clippy::all)]
mod __guest_sdk_route {{
    ::guest_sdk::__private::wit_bindgen::generate!({{
        inline: {world:?},
        path: {WIT_DIR:?},
        world: "edge:route-exports/route",
        runtime_path: "::guest_sdk::__private::wit_bindgen::rt",
        with: {{ {types:?}: ::guest_sdk::__private::types }},
    }});
    struct Exports;
    impl Guest for Exports {{
        {impls}
    }}
    export!(Exports);
}}
"#
    );
    code.parse().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_boundary_is_read_from_route_wit() {
        let boundary = boundary(ROUTE_WIT).unwrap();
        assert_eq!(
            (boundary.package.as_str(), boundary.version.as_str()),
            ("edge:route", "0.1.0")
        );
        let names: Vec<&str> = boundary.methods.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            names,
            ["get", "post", "put", "patch", "delete", "head", "options"]
        );
        for (method, line) in &boundary.methods {
            assert_eq!(
                line,
                &format!("export {method}: func(req: request) -> response;")
            );
        }
    }

    #[test]
    fn a_boundary_without_methods_is_an_error() {
        let error = boundary("package edge:route@0.1.0;\nworld route {\n}\n")
            .err()
            .unwrap();
        assert!(error.contains("exports no method"), "{error}");
    }
}
