//! `header-append`: removes, renames, sets and adds request and response headers,
//! with values from literals, other headers or Envoy attributes, under conditions.
//!
//! Configuration (JSON; the README has the full reference):
//!
//! ```json
//! {
//!   "request": {
//!     "remove": ["x-internal"],
//!     "rename": [{"from": "x-user", "to": "x-forwarded-user"}],
//!     "set": [{"name": "x-client", "value": "{attr:source.address}"}],
//!     "add": [{"name": "x-trace", "value": "on"}],
//!     "rules": [{"when": {"path_prefix": "/api/", "methods": ["POST"]},
//!                "set": [{"name": "x-api", "value": "{request.header.x-tenant|none}"}]}]
//!   },
//!   "response": {
//!     "set": [{"name": "x-request-path", "value": "{request.path}"}]
//!   }
//! }
//! ```
//!
//! For each direction the operations run in the order `remove`, `rename`, `set`,
//! `add`, then each rule whose `when` matches, in order, with the same order
//! inside. Templates (see [`template`]) are parsed when the plugin is configured;
//! anything invalid is rejected then, with the offending field and the reason in
//! Envoy's log. Response templates that read the request get the values the
//! request had when it reached this filter, captured per stream.
//!
//! The configuration types, templates and rules live in `header-append-core`,
//! which depends on no SDK; this crate runs them on weir.

use std::rc::Rc;

pub use header_append_core::{
    Changes, Condition, Config, DEFAULT_MAX_VALUE_BYTES, Header, HeaderMatch, HeaderName,
    HeaderValue, MAX_VALUE_BYTES_LIMIT, Method, PathPrefix, Rename, Rule, ValueTemplate,
    attributes, template,
};
use weir::{Flow, Headers, HttpFilter, RequestHeaders, ResponseHeaders, Result};

/// A stream's header map, through weir, for the rules in `header-append-core`.
struct Map<'a>(&'a mut Headers);

impl header_append_core::HeaderMap for Map<'_> {
    type Error = weir::Error;

    #[inline]
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.0.get_bytes(name)
    }

    fn get_all(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        self.0.get_all_bytes(name)
    }

    #[inline]
    fn set(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.0.set(name, value)
    }

    #[inline]
    fn add(&mut self, name: &str, value: &[u8]) -> Result<()> {
        self.0.add(name, value)
    }

    #[inline]
    fn remove(&mut self, name: &str) -> Result<()> {
        self.0.remove(name)
    }

    fn attribute(&self, path: &[&str]) -> Option<Vec<u8>> {
        match weir::properties::get(path) {
            Ok(value) => value,
            Err(e) => {
                log::debug!("attribute {} is missing: {e}", path.join("."));
                None
            }
        }
    }
}

/// The filter: one value per HTTP stream.
#[derive(Debug)]
pub struct HeaderAppend {
    config: Rc<Config>,
    stream: header_append_core::Stream,
}

impl HttpFilter for HeaderAppend {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            stream: header_append_core::Stream::default(),
        }
    }

    fn on_request_headers(&mut self, headers: &mut RequestHeaders) -> Result<Flow> {
        self.stream.request(&self.config, &mut Map(headers))?;
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, headers: &mut ResponseHeaders) -> Result<Flow> {
        self.stream.response(&self.config, &mut Map(headers))?;
        Ok(Flow::Continue)
    }
}

weir::export_http_filter!(HeaderAppend);

#[cfg(test)]
mod tests;
