//! `transform`: rewrites JSON request and response bodies and remaps response
//! statuses. See `README.md` and `config.schema.json` for the configuration.
//!
//! This crate is the module: it exports [`transform_core::Transform`], where the
//! filter's code and native tests live.

weir::export_http_filter!(transform_core::Transform);
