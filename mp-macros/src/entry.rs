//! `#[mp::main]` and `#[mp::test]`: insert `mp::init()` where a child branches off.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::args::{self, Errors};

fn parse(attr: TokenStream, item: TokenStream, which: &str) -> Result<(ItemFn, args::Options), TokenStream> {
    let mut errors = Errors::default();
    let opts = args::parse(attr, &["crate"], &mut errors);
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let e =
                syn::Error::new(item.span(), format!("#[mp::{which}] goes on a function")).to_compile_error();
            return Err(quote!(#e #item));
        }
    };
    if let Some(a) = &func.sig.asyncness {
        errors.add(
            a.span(),
            format!(
                "#[mp::{which}] cannot be async: use a plain fn and start your runtime after \
                 mp::init() (children must branch off before any runtime starts)"
            ),
        );
    }
    if !func.sig.inputs.is_empty() {
        errors.add_spanned(&func.sig.inputs, format!("#[mp::{which}] functions take no arguments"));
    }
    if !func.sig.generics.params.is_empty() {
        errors.add_spanned(&func.sig.generics, format!("#[mp::{which}] functions cannot be generic"));
    }
    match errors.into_tokens() {
        Some(e) => Err(quote!(#e #func)),
        None => Ok((func, opts)),
    }
}

pub fn expand_main(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (func, opts) = match parse(attr, item, "main") {
        Ok(v) => v,
        Err(t) => return t,
    };
    let krate = &opts.krate;
    let ItemFn { attrs, vis, sig, block } = func;
    let output = &sig.output;
    quote! {
        #(#attrs)*
        #vis #sig {
            fn __mp_main_body() #output #block
            // Dropped after the body, even when it panics: daemons are terminated, other
            // children joined.
            let __mp_guard = #krate::__private::MainGuard::new();
            let __mp_result = __mp_main_body();
            ::core::mem::drop(__mp_guard);
            __mp_result
        }
    }
}

pub fn expand_test(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (func, opts) = match parse(attr, item, "test") {
        Ok(v) => v,
        Err(t) => return t,
    };
    let krate = &opts.krate;
    let ItemFn { attrs, vis, sig, block } = func;
    let ident = &sig.ident;
    let stmts = &block.stmts;
    quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis #sig {
            #krate::__private::test_init(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident)));
            #(#stmts)*
        }
    }
}
