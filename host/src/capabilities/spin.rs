//! Spin's interfaces, for components built with Spin 4's SDK, policed by
//! the same grants as ours: `spin:variables@3.0.0` reads the route's `env`
//! (its granted secrets among them), `spin:key-value@3.0.0` opens only the
//! route's granted key-value stores, through the same limits and backends
//! as `wasi:keyvalue`; `spin:sqlite@3.1.0` (`spin_sqlite.rs`) opens only
//! its granted SQL databases.
//!
//! Their functions are `async func`: they are linked only on the engine of
//! WASI 0.3 components.

use super::kv::guest as kv;
use super::kv::KvAccess;
use super::sql::SqlAccess;
use crate::wit::Bucket;
use std::sync::Arc;
use wasmtime::component::{
    Accessor, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader,
};

pub(super) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/spin",
        world: "edge:spin/imports",
        // `async func`s take the store's accessor; the one blocking call
        // that waits on a database runs on the guest's fiber.
        imports: {
            "spin:sqlite/sqlite.[method]connection.execute": async | trappable,
            default: trappable,
        },
        with: {
            "spin:key-value/key-value.store": crate::wit::Bucket,
            "spin:sqlite/sqlite.connection": super::super::spin_sqlite::SpinSqlConnection,
        },
    });
}

use bindings::spin::key_value::key_value;
use bindings::spin::variables::variables;

/// Keys one `get-keys` may list: a store with more is an error, not a
/// host allocation without end.
const MAX_LISTED_KEYS: usize = 100_000;

/// What Spin's imports work on in one request.
pub(crate) struct SpinView<'a> {
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) kv: &'a KvAccess,
    pub(crate) sql: &'a SqlAccess,
    pub(crate) env: &'a Arc<[(String, String)]>,
}

/// Links Spin's imports to a [`SpinView`] of the store's state.
pub(crate) struct Spin;

impl HasData for Spin {
    type Data<'a> = SpinView<'a>;
}

/// Links Spin's interfaces, each reaching what `view` gives of a store's state.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> SpinView<'_>,
) -> wasmtime::Result<()> {
    variables::add_to_linker::<T, Spin>(linker, view)?;
    key_value::add_to_linker::<T, Spin>(linker, view)?;
    bindings::spin::sqlite::sqlite::add_to_linker::<T, Spin>(linker, view)?;
    Ok(())
}

/// Whether `name` is a Spin variable name: lower-case ASCII letters,
/// digits and `_`, starting with a letter.
fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The value of Spin variable `name` in a route's environment: the env
/// value of that name, or of its upper-case form (`api_key` is `API_KEY`).
fn variable(env: &[(String, String)], name: &str) -> Result<String, variables::Error> {
    if !is_variable_name(name) {
        return Err(variables::Error::InvalidName(format!(
            "{name:?} is not a variable name (lower-case letters, digits and _, starting with a letter)"
        )));
    }
    let upper = name.to_ascii_uppercase();
    env.iter()
        .find(|(key, _)| *key == name)
        .or_else(|| env.iter().find(|(key, _)| *key == upper))
        .map(|(_, value)| value.clone())
        .ok_or_else(|| variables::Error::Undefined(format!("no variable {name:?} in this route")))
}

impl variables::Host for SpinView<'_> {}

impl<T> variables::HostWithStore<T> for Spin {
    async fn get(
        accessor: &Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, variables::Error>> {
        Ok(accessor.with(|mut view| variable(view.get().env, &name)))
    }
}

/// A `wasi:keyvalue` error as Spin's interface spells it.
fn spin_error(
    err: crate::wit::bindings::wasi::keyvalue0_2_0_draft2::store::Error,
) -> key_value::Error {
    use crate::wit::bindings::wasi::keyvalue0_2_0_draft2::store::Error as Kv;
    match err {
        Kv::NoSuchStore => key_value::Error::NoSuchStore,
        Kv::AccessDenied => key_value::Error::AccessDenied,
        Kv::Other(reason) => key_value::Error::Other(reason),
    }
}

/// The route's access and the store name of a store the guest holds.
fn opened<T>(
    accessor: &Accessor<T, Spin>,
    store: &Resource<Bucket>,
) -> wasmtime::Result<Result<(KvAccess, String), key_value::Error>> {
    accessor.with(|mut view| {
        let view = view.get();
        let name = view.table.get(store)?.name.clone();
        Ok(match view.kv.store(&name) {
            Some(_) => Ok((view.kv.clone(), name)),
            None => Err(key_value::Error::AccessDenied),
        })
    })
}

/// Runs `op` on the granted store a guest's `store` resource names.
macro_rules! on_store {
    ($accessor:expr, $store:expr, |$access:ident, $handle:ident| $op:expr) => {{
        let ($access, name) = match opened($accessor, &$store)? {
            Ok(found) => found,
            Err(err) => return Ok(Err(err)),
        };
        let Some($handle) = $access.store(&name) else {
            return Ok(Err(key_value::Error::AccessDenied));
        };
        Ok($op.await.map_err(spin_error))
    }};
}

impl key_value::Host for SpinView<'_> {}

impl key_value::HostStore for SpinView<'_> {
    fn drop(&mut self, store: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl<T> key_value::HostStoreWithStore<T> for Spin {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, key_value::Error>> {
        accessor.with(|mut view| {
            let view = view.get();
            if view.kv.store(&label).is_none() {
                return Ok(Err(key_value::Error::AccessDenied));
            }
            Ok(Ok(view.table.push(Bucket { name: label })?))
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::Error>> {
        on_store!(accessor, store, |access, handle| kv::get(
            &access, handle, key
        ))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        on_store!(accessor, store, |access, handle| kv::set(
            &access, handle, key, value
        ))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        on_store!(accessor, store, |access, handle| kv::delete(
            &access, handle, key
        ))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, key_value::Error>> {
        on_store!(accessor, store, |access, handle| kv::exists(
            &access, handle, key
        ))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<Bucket>,
    ) -> wasmtime::Result<(
        StreamReader<String>,
        FutureReader<Result<(), key_value::Error>>,
    )> {
        let found = opened(accessor, &store)?;
        let listed: Result<Vec<String>, key_value::Error> = async {
            let (access, name) = found?;
            let handle = access.store(&name).ok_or(key_value::Error::AccessDenied)?;
            let mut keys = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let (page, more) = kv::page(&access, handle, cursor.as_deref(), kv::KEYS_PER_PAGE)
                    .await
                    .map_err(spin_error)?;
                keys.extend(page);
                if keys.len() > MAX_LISTED_KEYS {
                    return Err(key_value::Error::Other(format!(
                        "the store has more than the {MAX_LISTED_KEYS} keys one listing may return"
                    )));
                }
                if !more {
                    return Ok(keys);
                }
                cursor = keys.last().cloned();
            }
        }
        .await;
        let (keys, ended) = match listed {
            Ok(keys) => (keys, Ok(())),
            Err(err) => (Vec::new(), Err(err)),
        };
        accessor.with(|mut access| {
            let keys = StreamReader::new(&mut access, keys)?;
            let ended =
                FutureReader::new(&mut access, async move { Ok::<_, wasmtime::Error>(ended) })?;
            Ok((keys, ended))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_read_the_env_by_name_or_upper_case() {
        let env = [
            ("greeting".to_string(), "hi".to_string()),
            ("API_KEY".to_string(), "s3cret".to_string()),
        ];
        assert_eq!(variable(&env, "greeting").ok().as_deref(), Some("hi"));
        assert_eq!(variable(&env, "api_key").ok().as_deref(), Some("s3cret"));
        assert!(matches!(
            variable(&env, "missing"),
            Err(variables::Error::Undefined(_))
        ));
        for bad in ["API_KEY", "1st", "", "a-b"] {
            assert!(
                matches!(variable(&env, bad), Err(variables::Error::InvalidName(_))),
                "{bad:?} is not a Spin variable name"
            );
        }
    }
}
