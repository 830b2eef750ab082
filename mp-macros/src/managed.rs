//! `#[mp::managed]`: an `impl` block of a user type becomes a type a manager can hold. The
//! block is kept as written; beside it come `TypeProxy` (the block's public `&self` /
//! `&mut self` methods, each returning `Result<_, mp::Error>`), `impl mp::Managed`, and a
//! registration of the type's name and method table for the manager process.

use proc_macro2::{Group, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, Pat, PathArguments, ReturnType, Type, Visibility,
};

use crate::args::{self, Errors};

pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let opts = args::parse(attr, &["name", "crate"], &mut errors);
    let block: ItemImpl = match syn::parse2(item.clone()) {
        Ok(b) => b,
        Err(_) => {
            let e = syn::Error::new(
                item.span(),
                "#[mp::managed] goes on an inherent `impl Type { … }` block of a serde type",
            )
            .to_compile_error();
            return quote!(#e #item);
        }
    };
    let methods = check(&block, &mut errors);
    if let Some(errs) = errors.into_tokens() {
        return quote!(#errs #block);
    }
    generate(&block, &methods, &opts)
}

/// The exposed methods: `pub fn` with a `&self` or `&mut self` receiver.
fn check<'a>(block: &'a ItemImpl, errors: &mut Errors) -> Vec<&'a ImplItemFn> {
    if let Some((_, path, _)) = &block.trait_ {
        errors.add_spanned(
            path,
            "#[mp::managed] goes on an inherent impl (`impl Type { … }`), not a trait impl",
        );
    }
    if !block.generics.params.is_empty() {
        errors.add_spanned(
            &block.generics,
            "a #[mp::managed] type cannot be generic: the manager finds it by name; write one \
             type per instantiation",
        );
    }
    if !matches!(&*block.self_ty, Type::Path(p) if p.qself.is_none()) {
        errors.add_spanned(&block.self_ty, "#[mp::managed] needs a named type (`impl Counter { … }`)");
    }
    let mut exposed = Vec::new();
    for item in &block.items {
        let ImplItem::Fn(f) = item else { continue };
        if !matches!(f.vis, Visibility::Public(_)) {
            continue; // private methods are not exposed
        }
        let sig = &f.sig;
        match sig.inputs.first() {
            Some(FnArg::Receiver(r)) if r.reference.is_some() => {}
            Some(FnArg::Receiver(r)) => {
                errors.add_spanned(
                    r,
                    "a #[mp::managed] method takes `&self` or `&mut self`: the object stays in \
                     the manager (make this method private to keep it out of the proxy)",
                );
                continue;
            }
            // Associated functions (constructors) run where they are called: not exposed.
            _ => continue,
        }
        let generic_msg = "a #[mp::managed] method cannot be generic: its arguments are decoded \
                           in the manager by a concrete type (make it private to keep it out of \
                           the proxy)";
        if !sig.generics.params.is_empty() {
            errors.add_spanned(&sig.generics, generic_msg);
        } else if let Some(w) = &sig.generics.where_clause {
            errors.add_spanned(w, generic_msg);
        }
        if let Some(a) = &sig.asyncness {
            errors.add(a.span(), "a #[mp::managed] method cannot be async");
        }
        if let Some(u) = &sig.unsafety {
            errors.add(u.span(), "a #[mp::managed] method cannot be unsafe");
        }
        for input in sig.inputs.iter().skip(1) {
            if let FnArg::Typed(pt) = input {
                check_type(&pt.ty, errors, "argument");
            }
        }
        if let ReturnType::Type(_, ty) = &sig.output {
            check_type(ty, errors, "return type");
        }
        exposed.push(f);
    }
    exposed
}

fn check_type(ty: &Type, errors: &mut Errors, what: &str) {
    match ty {
        Type::Reference(r) => errors.add_spanned(
            r,
            format!(
                "a #[mp::managed] method's {what} must be owned, not a reference: values are \
                 copied between processes (use String for &str, Vec<T> for &[T], T for &T)"
            ),
        ),
        Type::ImplTrait(i) => errors.add_spanned(
            i,
            format!("a #[mp::managed] method's {what} cannot be `impl Trait`: name a concrete type"),
        ),
        Type::Ptr(p) => {
            errors.add_spanned(p, format!("a #[mp::managed] method's {what} cannot be a raw pointer"))
        }
        Type::Tuple(t) => t.elems.iter().for_each(|e| check_type(e, errors, what)),
        Type::Paren(p) => check_type(&p.elem, errors, what),
        Type::Array(a) => check_type(&a.elem, errors, what),
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

/// `Self` in a method signature means the managed type; in the proxy it would mean the proxy.
fn replace_self(tokens: TokenStream, with: &TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .flat_map(|t| match t {
            TokenTree::Ident(i) if i == "Self" => with.clone(),
            TokenTree::Group(g) => {
                let mut ng = Group::new(g.delimiter(), replace_self(g.stream(), with));
                ng.set_span(g.span());
                TokenTree::Group(ng).into_token_stream()
            }
            other => other.into_token_stream(),
        })
        .collect()
}

fn generate(block: &ItemImpl, methods: &[&ImplItemFn], opts: &args::Options) -> TokenStream {
    let krate = &opts.krate;
    let self_ty = &block.self_ty;
    let self_tokens = self_ty.to_token_stream();
    let ident = match &**self_ty {
        Type::Path(p) => p.path.segments.last().expect("a path has a segment").ident.clone(),
        _ => unreachable!("checked"),
    };
    let proxy = format_ident!("{}Proxy", ident);
    let name = match &opts.name {
        Some((n, _)) => quote!(#n),
        None => quote!(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident))),
    };

    let mut proxy_methods = Vec::new();
    let mut dispatchers = Vec::new();
    let mut table = Vec::new();
    let mut checks = Vec::new();
    for f in methods {
        let sig = &f.sig;
        let m = &sig.ident;
        let m_name = m.to_string();
        let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc"));
        let mut names = Vec::new();
        let mut tys = Vec::new();
        for (i, input) in sig.inputs.iter().skip(1).enumerate() {
            let FnArg::Typed(pt) = input else { continue };
            let n = match &*pt.pat {
                Pat::Ident(pi) if pi.subpat.is_none() => pi.ident.clone(),
                _ => format_ident!("__mp_arg{}", i),
            };
            names.push(n);
            tys.push(replace_self(pt.ty.to_token_stream(), &self_tokens));
        }
        let output = match &sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, t) => replace_self(t.to_token_stream(), &self_tokens),
        };
        for (t, orig) in tys.iter().zip(sig.inputs.iter().skip(1)) {
            checks.push(quote_spanned! {orig.span()=>
                const _: () = #krate::__private::assert_transferable::<#t>();
            });
        }
        let out_span = match &sig.output {
            ReturnType::Default => sig.ident.span(),
            ReturnType::Type(_, t) => t.span(),
        };
        checks.push(quote_spanned! {out_span=>
            const _: () = #krate::__private::assert_transferable::<#output>();
        });
        let dispatch = format_ident!("__mp_method_{}", m);
        proxy_methods.push(quote! {
            #(#docs)*
            pub fn #m(&self, #(#names: #tys),*) -> ::core::result::Result<#output, #krate::Error> {
                self.0.call_method::<(#(#tys,)*), #output>(#m_name, &(#(#names,)*))
            }
        });
        dispatchers.push(quote! {
            fn #dispatch(
                obj: &mut (dyn ::core::any::Any + ::core::marker::Send),
                args: &mut &[u8],
                out: &mut ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<(), #krate::Error> {
                #krate::__private::call_method::<#self_ty, (#(#tys,)*), #output>(
                    obj, args, out, |this, (#(#names,)*)| <#self_ty>::#m(this, #(#names),*),
                )
            }
        });
        table.push(quote!((#m_name, #dispatch as #krate::__private::MethodFn)));
    }
    let doc = format!(
        "Proxy to a [`{ident}`] held by an `mp::Manager` (made by `#[mp::managed]`): its public \
         methods, each one round trip to the manager returning `Result<_, mp::Error>`; a panic \
         in the method comes back as `mp::Error::Panic`. Create one with \
         `manager.create({ident} {{ … }})`; pass it to workers like any argument."
    );
    let type_check = quote_spanned! {self_ty.span()=>
        const _: () = #krate::__private::assert_transferable::<#self_ty>();
    };

    quote! {
        #block

        #[doc = #doc]
        #[derive(Clone, Debug)]
        pub struct #proxy(#krate::__private::RawProxy);

        const _: () = {
            #type_check
            #(#checks)*

            impl #proxy {
                #(#proxy_methods)*
            }

            impl #krate::__private::serde::Serialize for #proxy {
                fn serialize<S: #krate::__private::serde::Serializer>(
                    &self,
                    s: S,
                ) -> ::core::result::Result<S::Ok, S::Error> {
                    #krate::__private::serde::Serialize::serialize(&self.0, s)
                }
            }

            impl<'de> #krate::__private::serde::Deserialize<'de> for #proxy {
                fn deserialize<D: #krate::__private::serde::Deserializer<'de>>(
                    d: D,
                ) -> ::core::result::Result<Self, D::Error> {
                    <#krate::__private::RawProxy as #krate::__private::serde::Deserialize<'de>>::deserialize(d)
                        .map(#proxy)
                }
            }

            impl #krate::Managed for #self_ty {
                type Proxy = #proxy;
                const NAME: &'static str = #name;
                fn __proxy(raw: #krate::__private::RawProxy) -> #proxy {
                    #proxy(raw)
                }
            }

            #(#dispatchers)*

            fn __mp_create(
                bytes: &[u8],
            ) -> ::core::result::Result<
                ::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send>,
                #krate::Error,
            > {
                #krate::__private::create_value::<#self_ty>(bytes)
            }

            #krate::__private::inventory::submit! {
                #krate::__private::ManagedEntry {
                    name: #name,
                    file: ::core::file!(),
                    line: ::core::line!(),
                    create: __mp_create,
                    methods: &[#(#table),*],
                }
            }
        };
    }
}
