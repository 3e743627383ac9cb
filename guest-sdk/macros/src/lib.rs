//! The `route!` macro behind `guest_sdk::route!`. Route authors use it through
//! `guest-sdk`; see that crate's documentation.
//!
//! It exists as a procedural macro because the component's world must list
//! exactly the methods the route implements (the host learns them from the
//! component's type), so the WIT world is written per route at compile time.

use proc_macro::{Delimiter, TokenStream, TokenTree};

/// guest-sdk's WIT folder (the boundary's types and their dependencies). It is
/// named explicitly, by absolute path, so that wit-bindgen never falls back to
/// a `wit/` folder of the route's own crate.
const WIT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit");

const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

/// Exports the given handler functions as the route's methods.
///
/// `route!(get, post)` exports the functions `get` and `post` found where the
/// macro is called; `route!(get => show_post)` exports `show_post` as `get`.
#[proc_macro]
pub fn route(input: TokenStream) -> TokenStream {
    match parse(input) {
        Ok(handlers) => expand(&handlers),
        Err(message) => format!("compile_error!({message:?});")
            .parse()
            .unwrap_or_default(),
    }
}

/// (method, handler function path) pairs, in the order written.
fn parse(input: TokenStream) -> Result<Vec<(String, String)>, String> {
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
        if !METHODS.contains(&method.as_str()) {
            return Err(format!(
                "route!: `{method}` is not a method; use one of {}",
                METHODS.join(", ")
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

fn expand(handlers: &[(String, String)]) -> TokenStream {
    let mut world = String::from(
        "package edge:route-exports;\n\nworld route {\n    use edge:route/types@0.1.0.{request, response};\n",
    );
    let mut impls = String::new();
    for (method, handler) in handlers {
        world.push_str(&format!(
            "    export {method}: func(req: request) -> response;\n"
        ));
        impls.push_str(&format!(
            "fn {method}(req: ::guest_sdk::__private::types::Request) \
             -> ::guest_sdk::__private::types::Response {{ \
             ::guest_sdk::__private::dispatch(req, super::{handler}) }}\n"
        ));
    }
    world.push_str("}\n");
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
        with: {{ "edge:route/types@0.1.0": ::guest_sdk::__private::types }},
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
