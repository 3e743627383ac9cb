//! The boundary between the host and a route, as `guest-sdk/wit` declares it:
//! the bindings of what a route may import (world `guest-imports`), the
//! request and response records, and the method exports of world `route` in
//! `route.wit` (one `func(req: request) -> response` per HTTP method).
//!
//! The host checks each method export a component has against
//! [`MethodFunc`], whose types are generated from the same files the SDK's
//! `route!` macro builds routes from; a test pins [`Method::ALL`] to the
//! exports `route.wit` lists.

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "edge:route/guest-imports",
        // Key-value and SQL calls are async: a network store answers later,
        // and the embedded ones run on the blocking pool.
        // Body calls may stop the guest: past a limit they trap.
        imports: {
            "edge:route/response-body": async | trappable,
            "edge:route/request-body": async | trappable,
            default: async,
        },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
            "wasi:keyvalue/atomics.cas": super::Cas,
            "edge:sql/sql.connection": super::SqlConnection,
        },
    });
}

/// The first draft's key-value store, which components built with an
/// earlier guest-sdk import.
pub(crate) mod earlier {
    wasmtime::component::bindgen!({
        path: "../guest-sdk/wit",
        world: "edge:route/earlier-imports",
        imports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

/// The host's side of a `wasi:keyvalue` bucket a guest opened: the name of
/// the store (one the route was granted).
pub struct Bucket {
    pub(crate) name: String,
}

/// The host's side of a compare-and-swap in progress: the key and the
/// value it held when read.
pub struct Cas {
    pub(crate) store: String,
    pub(crate) key: String,
    pub(crate) current: Option<Vec<u8>>,
}

/// The host's side of a SQL connection a guest opened: the name of the
/// database (one the route was granted).
pub struct SqlConnection {
    pub(crate) name: String,
}

pub use bindings::edge::route::types::{Request, Response};

/// A method export's parameters and results: `func(req: request) -> response`.
type MethodParams = (Request,);
type MethodResults = (Response,);

/// A method export, typed.
pub(crate) type MethodFunc = wasmtime::component::TypedFunc<MethodParams, MethodResults>;

/// An HTTP method a route can export a handler for: the exports of world
/// `route`, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Head,
        Method::Options,
    ];

    /// The name of the component export that handles this method.
    pub(crate) fn export_name(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
            Method::Head => "head",
            Method::Options => "options",
        }
    }

    /// The method as HTTP spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }

    pub(crate) fn from_http(method: &http::Method) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == method.as_str())
    }

    /// Its place in [`Method::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Checks that `func`, an export of the component `pre` was linked from,
/// has the type of a method export ([`MethodFunc`]).
pub(crate) fn check_method_export<T>(
    func: &wasmtime::component::types::ComponentFunc,
    pre: &wasmtime::component::InstancePre<T>,
) -> wasmtime::Result<()> {
    func.typecheck::<MethodParams, MethodResults>(&pre.instance_type())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit_parser::{Resolve, Type, WorldItem, WorldKey};

    /// `route.wit` and the host agree: world `route` exports exactly
    /// [`Method::ALL`], in order, each `func(req: request) -> response`.
    #[test]
    fn the_route_world_exports_every_method_with_one_signature() {
        let mut resolve = Resolve::default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/wit");
        let (package, _) = resolve.push_dir(&dir).unwrap();
        let world = resolve.select_world(&[package], Some("route")).unwrap();
        let types = resolve
            .interfaces
            .iter()
            .find(|(_, i)| i.name.as_deref() == Some("types"))
            .map(|(_, i)| i)
            .unwrap();
        let request = types.types["request"];
        let response = types.types["response"];
        let mut exports = Vec::new();
        for (key, item) in &resolve.worlds[world].exports {
            let (WorldKey::Name(name), WorldItem::Function(func)) = (key, item) else {
                panic!("world route exports something other than a method: {key:?}");
            };
            // The world `use`s the records: its types alias those of `types`.
            let resolve_alias = |ty: Option<Type>| {
                let mut ty = ty?;
                while let Type::Id(id) = ty {
                    match resolve.types[id].kind {
                        wit_parser::TypeDefKind::Type(inner) => ty = inner,
                        _ => return Some(id),
                    }
                }
                None
            };
            assert_eq!(func.params.len(), 1, "{name} takes one request");
            assert_eq!(
                resolve_alias(func.params.first().map(|param| param.ty)),
                Some(request),
                "{name}'s parameter is a request"
            );
            assert_eq!(
                resolve_alias(func.result),
                Some(response),
                "{name} returns a response"
            );
            exports.push(name.clone());
        }
        let expected: Vec<&str> = Method::ALL.iter().map(|m| m.export_name()).collect();
        assert_eq!(exports, expected);
    }
}
