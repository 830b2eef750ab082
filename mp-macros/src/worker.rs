//! `#[mp::worker]`: a free function becomes a unit struct implementing `mp::Worker`, derefing
//! to the plain function, registered by name for re-executed children.

use proc_macro2::{Delimiter, Group, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, ReturnType, Type};

use crate::args::{self, Errors};

const MAX_ARGS: usize = 12;

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let opts = args::parse(attr, &["name", "crate"], &mut errors);
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            let e = syn::Error::new(
                item.span(),
                "#[mp::worker] goes on a free function: `fn name(arg: T, …) -> R { … }`",
            );
            let e = e.to_compile_error();
            return quote!(#e #item);
        }
    };
    check(&func, &mut errors);
    if let Some(errs) = errors.into_tokens() {
        // Keep the function so the rest of the crate (and the IDE) still sees it.
        return quote!(#errs #func);
    }
    generate(func, opts)
}

fn check(f: &ItemFn, errors: &mut Errors) {
    let sig = &f.sig;
    // `Generics` prints only `<…>`: point at the where clause when that is all there is.
    let generic_msg = "a #[mp::worker] cannot be generic: a child finds the function by name, so \
                       each worker needs concrete types; write one worker per type";
    if !sig.generics.params.is_empty() {
        errors.add_spanned(&sig.generics, generic_msg);
    } else if let Some(w) = &sig.generics.where_clause {
        errors.add_spanned(w, generic_msg);
    }
    if let Some(a) = &sig.asyncness {
        errors.add(
            a.span(),
            "a #[mp::worker] cannot be async: write a plain fn (it has its own process; start a \
             runtime inside it if you need one)",
        );
    }
    if let Some(u) = &sig.unsafety {
        errors.add(u.span(), "a #[mp::worker] cannot be unsafe: wrap the unsafe call in a safe fn");
    }
    if let Some(abi) = &sig.abi {
        errors.add(abi.span(), "a #[mp::worker] cannot have an extern ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.add(v.span(), "a #[mp::worker] cannot be variadic");
    }
    let n = sig.inputs.len();
    if n > MAX_ARGS {
        // Point at the arguments past the limit.
        let extra: Vec<_> = sig.inputs.iter().skip(MAX_ARGS).collect();
        errors.add_spanned(
            quote!(#(#extra),*),
            format!("a #[mp::worker] takes at most {MAX_ARGS} arguments ({n} given); group them in a struct"),
        );
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.add_spanned(
                r,
                "a #[mp::worker] cannot take `self`: workers are free functions (a method cannot \
                 be found by name in another process)",
            ),
            FnArg::Typed(pt) => check_type(&pt.ty, errors, "argument"),
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        check_type(ty, errors, "return type");
    }
}

fn check_type(ty: &Type, errors: &mut Errors, what: &str) {
    match ty {
        Type::Reference(r) => errors.add_spanned(
            r,
            format!(
                "a #[mp::worker] {what} must be owned, not a reference: values are copied to \
                 another process (use String for &str, Vec<T> for &[T], T for &T)"
            ),
        ),
        Type::ImplTrait(i) => errors
            .add_spanned(i, format!("a #[mp::worker] {what} cannot be `impl Trait`: name a concrete type")),
        Type::Ptr(p) => errors.add_spanned(
            p,
            format!(
                "a #[mp::worker] {what} cannot be a raw pointer: addresses mean nothing in another process"
            ),
        ),
        Type::Tuple(t) => t.elems.iter().for_each(|e| check_type(e, errors, what)),
        Type::Paren(p) => check_type(&p.elem, errors, what),
        Type::Array(a) => check_type(&a.elem, errors, what),
        // A reference nested in a type's generic arguments (`Vec<&str>`) would otherwise fail
        // later with lifetime errors about the generated `Worker` impl.
        Type::Path(p) => {
            for seg in &p.path.segments {
                if let PathArguments::AngleBracketed(a) = &seg.arguments {
                    for arg in &a.args {
                        if let GenericArgument::Type(t) = arg {
                            check_type(t, errors, what);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn generate(func: ItemFn, opts: args::Options) -> TokenStream {
    let krate = &opts.krate;
    let ItemFn { attrs, vis, sig, block } = func;
    let ident = &sig.ident;
    let impl_ident = format_ident!("__mp_worker_{}", ident);
    let dispatch_ident = format_ident!("__mp_dispatch_{}", ident);

    let tys: Vec<&Type> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            FnArg::Typed(pt) => Some(&*pt.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
    let names: Vec<_> = (0..tys.len()).map(|i| format_ident!("__mp_arg{}", i)).collect();
    let output: Type = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let args_ty = match tys.len() {
        1 => quote!(#(#tys)*),
        _ => {
            // Span the tuple's parentheses at the parameter list, so that the `Worker::Args`
            // bound errors of a non-serde argument point there, not at the attribute.
            let mut tuple = Group::new(Delimiter::Parenthesis, quote!(#(#tys,)*));
            tuple.set_span(sig.paren_token.span.join());
            quote!(#tuple)
        }
    };
    let args_pat = match names.len() {
        1 => quote!(#(#names)*),
        _ => quote!((#(#names,)*)),
    };
    let fn_ptr_ty = quote!(fn(#(#tys),*) -> #output);
    let name = match &opts.name {
        Some((n, _)) => quote!(#n),
        None => quote!(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident))),
    };
    // One check per type, spanned at the type, so a non-serde type is reported where written
    // with `Transferable`'s message. The check sits in an array length, which the compiler
    // evaluates while checking item signatures: its error then comes before the generic serde
    // errors of the `Worker` impl's `Args`/`Output` bounds, not after them.
    let checks = tys.iter().map(|t| (*t).clone()).chain(std::iter::once(output.clone())).map(|t| {
        quote_spanned! {t.span()=>
            const _: [(); {
                #krate::__private::assert_transferable::<#t>();
                0
            }] = [];
        }
    });
    let mut impl_sig = sig.clone();
    impl_sig.ident = impl_ident.clone();
    let doc_note = format!(
        "\n\nThis is an [`mp::Worker`]: call it directly (`{ident}(…)`), or run it in another \
         process with `mp::Process::new({ident}, args)`."
    );

    quote! {
        #(#attrs)*
        #[doc = #doc_note]
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        #vis struct #ident;

        const _: () = {
            #(#checks)*

            #[allow(clippy::too_many_arguments)]
            #impl_sig #block

            impl ::core::ops::Deref for #ident {
                type Target = #fn_ptr_ty;
                fn deref(&self) -> &Self::Target {
                    const F: #fn_ptr_ty = #impl_ident;
                    &F
                }
            }

            impl #krate::Worker for #ident {
                type Args = #args_ty;
                type Output = #output;
                const NAME: &'static str = #name;
                #[inline]
                fn call(&self, args: Self::Args) -> Self::Output {
                    let #args_pat = args;
                    #impl_ident(#(#names),*)
                }
            }

            fn #dispatch_ident(
                args: &mut &[u8],
                out: &mut ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<(), #krate::Error> {
                #krate::__private::dispatch(#ident, args, out)
            }

            #krate::__private::inventory::submit! {
                #krate::__private::WorkerEntry {
                    name: #name,
                    file: ::core::file!(),
                    line: ::core::line!(),
                    dispatch: #dispatch_ident,
                }
            }
        };
    }
}
