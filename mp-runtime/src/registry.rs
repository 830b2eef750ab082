//! The worker registry: every `#[mp::worker]` submits one [`WorkerEntry`] through `inventory`,
//! so a re-executed copy of the binary can find a function by name.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A function that can run in another process. Implemented by `#[mp::worker]`; you do not
/// implement it by hand.
///
/// # Examples
///
/// ```
/// use mp::Worker;
///
/// #[mp::worker]
/// fn add(a: i32, b: i32) -> i32 { a + b }
///
/// assert_eq!(<add as Worker>::NAME, concat!(module_path!(), "::add"));
/// assert_eq!(add.call((2, 3)), 5);
/// assert_eq!(add(2, 3), 5); // still a plain function
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an mp worker",
    label = "expected a function marked #[mp::worker]",
    note = "only named functions marked #[mp::worker] can run in another process (the child finds \
            them by name); closures and plain fns cannot: move the code into \
            `#[mp::worker] fn name(args…) -> T`"
)]
pub trait Worker: Copy + Send + Sync + 'static {
    /// The arguments: `()`, the single argument's type, or a tuple of them.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// The return type.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// `module_path!()::fn_name`, or the `name = "…"` given to the attribute.
    const NAME: &'static str;
    /// Runs the function in this process.
    fn call(&self, args: Self::Args) -> Self::Output;
}

/// Marker checked by `#[mp::worker]` on every argument and on the return type, so a type
/// that cannot cross a process boundary fails to compile at its own span.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent to or from a worker process",
    label = "this type must implement serde's `Serialize` and `DeserializeOwned`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to it, or pass an owned type \
            that does (String instead of &str, Vec<T> instead of &[T])"
)]
pub trait Transferable: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Transferable for T {}

/// Runs the worker on the encoded arguments at the front of `args` (advancing past them, so
/// a chunk of several argument sets can be walked), appending the encoded output to `out`.
pub type DispatchFn = fn(args: &mut &[u8], out: &mut Vec<u8>) -> Result<(), Error>;

/// One registered worker (created by `#[mp::worker]`).
#[doc(hidden)]
pub struct WorkerEntry {
    pub name: &'static str,
    pub file: &'static str,
    pub line: u32,
    pub dispatch: DispatchFn,
}

inventory::collect!(WorkerEntry);

/// Generated dispatch glue: decode, call, encode.
#[doc(hidden)]
pub fn dispatch<W: Worker>(w: W, args: &mut &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    let (decoded, rest) = crate::wire::codec::decode_prefix::<W::Args>(args)?;
    *args = rest;
    let args = decoded;
    let output = w.call(args);
    crate::wire::codec::encode_into(&output, out)
}

static TABLE: OnceLock<Result<HashMap<&'static str, &'static WorkerEntry>, String>> = OnceLock::new();

/// Builds the name table, reporting duplicate names with both locations.
pub(crate) fn check() -> Result<(), Error> {
    table().map(|_| ())
}

fn table() -> Result<&'static HashMap<&'static str, &'static WorkerEntry>, Error> {
    TABLE
        .get_or_init(|| {
            let mut map: HashMap<&'static str, &'static WorkerEntry> = HashMap::new();
            let mut dups = Vec::new();
            for e in inventory::iter::<WorkerEntry> {
                if let Some(prev) = map.insert(e.name, e) {
                    dups.push(format!(
                        "two workers are registered as `{}`: {}:{} and {}:{}; give one of them \
                         #[mp::worker(name = \"…\")]",
                        e.name, prev.file, prev.line, e.file, e.line
                    ));
                }
            }
            if dups.is_empty() { Ok(map) } else { Err(dups.join("\n")) }
        })
        .as_ref()
        .map_err(|e| Error::invalid(e.clone()))
}

/// Finds a worker by name.
pub(crate) fn lookup(name: &str) -> Result<&'static WorkerEntry, Error> {
    table()?.get(name).copied().ok_or_else(|| Error::UnknownWorker { name: name.to_string() })
}

/// The names of every registered worker (sorted), e.g. for diagnostics. mp's own entry
/// points (the manager server, the shared-memory tracker, named `mp::…`) are not listed.
///
/// # Examples
///
/// ```
/// #[mp::worker]
/// fn noop() {}
///
/// let names = mp::registered_workers();
/// assert!(names.iter().any(|n| n.ends_with("::noop")));
/// assert!(!names.iter().any(|n| n.starts_with("mp::")));
/// ```
pub fn registered_workers() -> Vec<&'static str> {
    let mut v: Vec<_> = inventory::iter::<WorkerEntry>
        .into_iter()
        .map(|e| e.name)
        .filter(|n| !n.starts_with("mp::"))
        .collect();
    v.sort_unstable();
    v
}
