//! Parsing of `key = "value"` attribute options shared by the macros.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, MetaNameValue, Path, Token};

/// Options given inside the attribute's parentheses.
pub struct Options {
    pub krate: Path,
    pub name: Option<(String, Span)>,
}

/// Collects every error before reporting, so the user fixes them all in one go.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn add(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push(syn::Error::new(span, msg));
    }

    /// Like [`Errors::add`], but underlines all of `tokens` rather than their first token
    /// (on stable, `Spanned::span` cannot join spans and returns only the first one).
    pub fn add_spanned(&mut self, tokens: impl quote::ToTokens, msg: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, msg));
    }

    pub fn into_tokens(self) -> Option<TokenStream> {
        self.0.map(|e| e.to_compile_error())
    }
}

pub fn parse(attr: TokenStream, allowed: &[&str], errors: &mut Errors) -> Options {
    let mut opts = Options { krate: syn::parse_quote!(::mp), name: None };
    let list = match Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(attr.clone()) {
        Ok(l) => l,
        Err(_) => {
            // syn's own error often sits at the end of the input, which is the whole attribute:
            // underline the options instead.
            errors.add_spanned(&attr, format!("expected `key = \"value\"` options ({})", allowed.join(", ")));
            return opts;
        }
    };
    for nv in list {
        let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        let value = match &nv.value {
            Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => s.clone(),
            other => {
                errors.add(syn::spanned::Spanned::span(other), "expected a string literal");
                continue;
            }
        };
        match key.as_str() {
            "crate" if allowed.contains(&"crate") => match value.parse::<Path>() {
                Ok(p) => opts.krate = p,
                Err(_) => errors.add(value.span(), "`crate` must be a path, like \"::mp\" or \"my_mp\""),
            },
            "name" if allowed.contains(&"name") => {
                if value.value().is_empty() {
                    errors.add(value.span(), "`name` must not be empty");
                } else {
                    opts.name = Some((value.value(), value.span()));
                }
            }
            _ => errors.add(
                syn::spanned::Spanned::span(&nv.path),
                format!("unknown option; expected one of: {}", allowed.join(", ")),
            ),
        }
    }
    opts
}
