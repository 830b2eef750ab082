//! Attribute macros of [mp](https://docs.rs/mp). Each entry point only parses, expands and
//! turns errors into tokens; the logic sits in one module per macro.

mod args;
mod entry;
mod managed;
mod worker;

use proc_macro::TokenStream;

/// Makes a free function runnable in other processes.
///
/// ```ignore
/// #[mp::worker]
/// fn square(x: i32) -> i32 { x * x }
/// ```
///
/// expands to a unit struct `square` implementing `mp::Worker` (`Args = i32`,
/// `Output = i32`, `NAME = module_path!()::square`) that derefs to the plain `fn`, plus a
/// registration so a child process can find it by name. Arguments and the result must be
/// owned `Serialize + DeserializeOwned` types; generic, `async`, `unsafe` and `self` functions,
/// reference and `impl Trait` types are compile errors.
///
/// Options: `name = "stable::name"` registers under another name; `crate = "path"` names
/// the mp crate when it is renamed.
#[proc_macro_attribute]
pub fn worker(attr: TokenStream, item: TokenStream) -> TokenStream {
    worker::expand(attr.into(), item.into()).into()
}

/// Makes a type holdable by an `mp::Manager`, with a typed proxy to call it from any process.
///
/// ```ignore
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct Counter { n: i64 }
///
/// #[mp::managed]
/// impl Counter {
///     pub fn incr(&mut self, by: i64) -> i64 { self.n += by; self.n }
///     fn reset(&mut self) { self.n = 0 }          // private: not exposed
/// }
///
/// let c: CounterProxy = manager.create(Counter { n: 0 })?;
/// c.incr(2)?;                                      // -> Result<i64, mp::Error>
/// ```
///
/// The `impl` block stays as written. Beside it come `CounterProxy` (Clone, serde, passable
/// to workers) with one method per `pub fn` taking `&self` or `&mut self`, returning
/// `Result<R, mp::Error>` (a panic in the method is `Error::Panic`); `impl mp::Managed for
/// Counter`; and a registration so the manager process can create the type and call exactly
/// those methods by name. Private methods and associated functions are not exposed. The type
/// must be `Serialize + DeserializeOwned + Send`; use one `#[mp::managed]` block per type
/// (two types registered under one name are reported by `mp::init()`, like workers). As for
/// workers, a type defined in a library crate is registered only if the binary links that
/// crate.
///
/// Options: `name = "stable::name"` registers under another name; `crate = "path"` names
/// the mp crate when it is renamed.
#[proc_macro_attribute]
pub fn managed(attr: TokenStream, item: TokenStream) -> TokenStream {
    managed::expand(attr.into(), item.into()).into()
}

/// Runs `mp::init()` before `main`'s body and, when the body returns (or panics),
/// terminates daemonic children and joins the others.
///
/// ```ignore
/// #[mp::main]
/// fn main() -> Result<(), mp::Error> { /* … */ Ok(()) }
/// // is about
/// fn main() -> Result<(), mp::Error> { mp::init(); /* … */ }
/// ```
///
/// (`mp::init()` alone registers the same clean-up to run at process exit; the attribute
/// also runs it when `main` unwinds from a panic.)
#[proc_macro_attribute]
pub fn main(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand_main(attr.into(), item.into()).into()
}

/// A `#[test]` that may start child processes. Its first statement (inserted) is
/// `mp::init()`; children re-run the test binary on one `#[mp::test]` (any will do: each
/// starts with `init()`, where a child branches off), so use it on every test that starts
/// processes: a plain `#[test]` would fail with `Error::NotInitialized` when run alone.
#[proc_macro_attribute]
pub fn test(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand_test(attr.into(), item.into()).into()
}
