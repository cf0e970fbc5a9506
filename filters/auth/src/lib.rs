//! `auth`: authenticates requests with JSON Web Tokens or API keys, with rules
//! per path prefix and method. See the crate's README for the configuration.
//!
//! This crate is the module: it exports [`auth_core::Auth`] with its plugin
//! [`auth_core::AuthPlugin`] (the remote key set's refresh); the filter's code
//! and tests live in `auth-core`. Its features (`hmac`, `rsa`, `ecdsa`, `eddsa`)
//! pick the signature families built into the module.

weir::export_http_filter!(auth_core::Auth, plugin = auth_core::AuthPlugin);
