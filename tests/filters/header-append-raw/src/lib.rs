//! Benchmark baseline: `filters/header-append` written directly on the
//! `proxy-wasm` crate, the way that crate's own examples are (its host calls
//! panic on unexpected statuses).
//!
//! Everything that does not touch the SDK is shared with the weir filter through
//! `header-append-core`: the configuration types and their validation, templates,
//! rules and the order in which changes are applied. This crate only wires them
//! to `proxy-wasm`'s contexts and host calls, as the weir filter wires them to
//! weir's, so that `sdk-bench` measures the SDK layer alone. Invalid
//! configuration is rejected naming the offending field, here with
//! `serde_path_to_error`, the usual crate for that.

use std::convert::Infallible;
use std::rc::Rc;

use header_append_core::{Config, HeaderMap};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let text = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}".to_vec()
        } else {
            bytes
        };
        let mut de = serde_json::Deserializer::from_slice(&text);
        let parsed = serde_path_to_error::deserialize::<_, Config>(&mut de)
            .map_err(|e| format!("at `{}`: {}", e.path(), e.inner()))
            .and_then(|c| de.end().map(|()| c).map_err(|e| format!("at `.`: {e}")));
        match parsed {
            Ok(c) => {
                self.config = Rc::new(c);
                true
            }
            Err(e) => {
                log::error!("invalid configuration {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: Rc::clone(&self.config),
            state: header_append_core::Stream::default(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    config: Rc<Config>,
    state: header_append_core::Stream,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        match self.state.request(&self.config, &mut Request) {
            Ok(()) => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        match self.state.response(&self.config, &mut Response) {
            Ok(()) => Action::Continue,
        }
    }
}

/// The request headers, through `proxy-wasm`'s `HttpContext` methods (which
/// need no state of their own).
struct Request;
/// The response headers, likewise.
struct Response;

impl Context for Request {}
impl HttpContext for Request {}
impl Context for Response {}
impl HttpContext for Response {}

/// The values of `name` among `pairs`, in order.
fn values_of(pairs: Vec<(String, Vec<u8>)>, name: &str) -> Vec<Vec<u8>> {
    pairs
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

impl HeaderMap for Request {
    type Error = Infallible;

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.get_http_request_header_bytes(name))
    }

    fn get_all(&self, name: &str) -> Result<Vec<Vec<u8>>, Infallible> {
        Ok(values_of(self.get_http_request_headers_bytes(), name))
    }

    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), Infallible> {
        self.set_http_request_header_bytes(name, Some(value));
        Ok(())
    }

    fn add(&mut self, name: &str, value: &[u8]) -> Result<(), Infallible> {
        self.add_http_request_header_bytes(name, value);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), Infallible> {
        self.set_http_request_header_bytes(name, None);
        Ok(())
    }

    fn attribute(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.get_property(path.to_vec())
    }
}

impl HeaderMap for Response {
    type Error = Infallible;

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.get_http_response_header_bytes(name))
    }

    fn get_all(&self, name: &str) -> Result<Vec<Vec<u8>>, Infallible> {
        Ok(values_of(self.get_http_response_headers_bytes(), name))
    }

    fn set(&mut self, name: &str, value: &[u8]) -> Result<(), Infallible> {
        self.set_http_response_header_bytes(name, Some(value));
        Ok(())
    }

    fn add(&mut self, name: &str, value: &[u8]) -> Result<(), Infallible> {
        self.add_http_response_header_bytes(name, value);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), Infallible> {
        self.set_http_response_header_bytes(name, None);
        Ok(())
    }

    fn attribute(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.get_property(path.to_vec())
    }
}

#[doc(hidden)]
pub mod export {
    use super::*;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Trace);
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::new(Root { config: Rc::new(Config::default()) })
        });
    }}
}
