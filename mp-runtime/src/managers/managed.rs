//! `#[mp::managed]` types: the [`Managed`] trait the macro implements, and the registry of
//! their method tables (one `inventory` entry per type, like workers), by which a manager
//! finds a type and its exposed methods by name.

use std::any::Any;
use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::protocol::RemoteError;
use super::proxy::RawProxy;
use crate::error::Error;
use crate::wire::codec;

/// A type whose values can live in a manager, implemented by `#[mp::managed]` on its `impl`
/// block; [`Manager::create`](crate::Manager::create) moves a value there and returns its
/// typed proxy.
///
/// # Examples
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct Tally { n: u64 }
///
/// #[mp::managed]
/// impl Tally {
///     pub fn add(&mut self, k: u64) -> u64 { self.n += k; self.n }
/// }
///
/// assert_eq!(<Tally as mp::Managed>::NAME, concat!(module_path!(), "::Tally"));
/// ```
pub trait Managed: Send + 'static {
    /// The generated proxy (`TypeProxy`): the type's public methods, each returning `Result`.
    type Proxy;
    /// `module_path!()::Type`, or the `name = "…"` given to the attribute.
    const NAME: &'static str;
    #[doc(hidden)]
    fn __proxy(raw: RawProxy) -> Self::Proxy;
}

/// Decodes the argument tuple at the front of `args`, runs the method, appends the encoded
/// result to `out`.
#[doc(hidden)]
pub type MethodFn = fn(obj: &mut (dyn Any + Send), args: &mut &[u8], out: &mut Vec<u8>) -> Result<(), Error>;

/// Decodes a new value of a managed type.
#[doc(hidden)]
pub type CreateFn = fn(&[u8]) -> Result<Box<dyn Any + Send>, Error>;

/// One `#[mp::managed]` type (created by the macro).
#[doc(hidden)]
pub struct ManagedEntry {
    pub name: &'static str,
    pub file: &'static str,
    pub line: u32,
    pub create: CreateFn,
    pub methods: &'static [(&'static str, MethodFn)],
}

inventory::collect!(ManagedEntry);

type Table = HashMap<&'static str, &'static ManagedEntry>;

/// The name table, or every duplicate name with both locations.
fn table() -> Result<&'static Table, Error> {
    static TABLE: OnceLock<Result<Table, String>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let mut map = Table::new();
            let mut dups = Vec::new();
            for e in inventory::iter::<ManagedEntry> {
                if let Some(prev) = map.insert(e.name, e) {
                    dups.push(format!(
                        "two #[mp::managed] types are registered as `{}`: {}:{} and {}:{}; give \
                         one of them #[mp::managed(name = \"…\")] (one #[mp::managed] impl per type)",
                        e.name, prev.file, prev.line, e.file, e.line
                    ));
                }
            }
            if dups.is_empty() { Ok(map) } else { Err(dups.join("\n")) }
        })
        .as_ref()
        .map_err(|e| Error::invalid(e.clone()))
}

/// Checked by `mp::init()`, next to the workers' names.
pub(crate) fn check() -> Result<(), Error> {
    table().map(|_| ())
}

fn entry(name: &str) -> Result<&'static ManagedEntry, Error> {
    table()?.get(name).copied().ok_or_else(|| {
        Error::invalid(format!(
            "no #[mp::managed] type named `{name}` is registered in the manager's binary; only \
             registered types can be created"
        ))
    })
}

/// Creates a value of registered type `name` from its encoding.
pub(crate) fn create(name: &str, bytes: &[u8]) -> Result<(&'static str, Box<dyn Any + Send>), RemoteError> {
    let e = entry(name).map_err(|e| RemoteError::Refused(e.to_string()))?;
    Ok((e.name, (e.create)(bytes).map_err(RemoteError::from_error)?))
}

/// Finds exposed method `method` of registered type `name`.
pub(crate) fn method(name: &str, method: &str) -> Result<MethodFn, Error> {
    let e = entry(name)?;
    e.methods.iter().find(|(n, _)| *n == method).map(|(_, f)| *f).ok_or_else(|| {
        let names: Vec<&str> = e.methods.iter().map(|(n, _)| *n).collect();
        Error::invalid(format!(
            "`{name}` has no exposed method `{method}` (exposed: {}); only `pub fn`s taking \
             `&self` or `&mut self` in its #[mp::managed] impl can be called",
            names.join(", ")
        ))
    })
}

/// Generated glue: decodes a `T`.
#[doc(hidden)]
pub fn create_value<T: DeserializeOwned + Send + 'static>(
    bytes: &[u8],
) -> Result<Box<dyn Any + Send>, Error> {
    Ok(Box::new(codec::decode::<T>(bytes)?))
}

/// Generated glue: decodes the arguments, calls `f` on the object, encodes the result.
#[doc(hidden)]
pub fn call_method<T: 'static, A: DeserializeOwned, R: Serialize>(
    obj: &mut (dyn Any + Send),
    args: &mut &[u8],
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut T, A) -> R,
) -> Result<(), Error> {
    let this = obj.downcast_mut::<T>().ok_or_else(|| {
        Error::invalid(format!("the managed object is not a {}", std::any::type_name::<T>()))
    })?;
    let a = codec::decode::<A>(args)?;
    *args = &[];
    let r = f(this, a);
    codec::encode_into(&r, out)
}
