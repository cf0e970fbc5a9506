//! Benchmark baseline: the same behaviour as `filters/header-append`, written the
//! way the `proxy-wasm` crate's own examples are (its host calls panic on
//! unexpected statuses). Like the weir filter it rejects invalid configuration
//! naming the offending field, here with `serde_path_to_error`, the usual crate
//! for that. It reads the same configuration and makes the same host calls per
//! request, so that `sdk-bench` can compare fuel, host calls and module size; the
//! bench checks that both accept and reject the same configurations.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    request: Changes,
    response: Changes,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Changes {
    remove: Vec<Name>,
    set: Vec<Header>,
    add: Vec<Header>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: Name,
    value: Value,
}

/// A lower-cased header name made of token characters (pseudo-headers allowed).
#[derive(Debug)]
struct Name(String);

/// A header value without CR, LF or NUL.
#[derive(Debug)]
struct Value(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        let body = name.strip_prefix(':').unwrap_or(&name);
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if body.is_empty() || !body.bytes().all(token) {
            return Err(serde::de::Error::custom(format!(
                "invalid header name {name:?}"
            )));
        }
        Ok(Name(name.to_ascii_lowercase()))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = String::deserialize(d)?;
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(serde::de::Error::custom(format!(
                "invalid header value {value:?}: CR, LF and NUL are not allowed"
            )));
        }
        Ok(Value(value))
    }
}

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
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    config: Rc<Config>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let c = &self.config.request;
        for name in &c.remove {
            self.set_http_request_header(&name.0, None);
        }
        for h in &c.set {
            self.set_http_request_header(&h.name.0, Some(&h.value.0));
        }
        for h in &c.add {
            self.add_http_request_header(&h.name.0, &h.value.0);
        }
        if c.remove.len() + c.set.len() + c.add.len() > 0 {
            log::debug!(
                "request: removed {}, set {}, added {} header(s)",
                c.remove.len(),
                c.set.len(),
                c.add.len()
            );
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _eos: bool) -> Action {
        let c = &self.config.response;
        for name in &c.remove {
            self.set_http_response_header(&name.0, None);
        }
        for h in &c.set {
            self.set_http_response_header(&h.name.0, Some(&h.value.0));
        }
        for h in &c.add {
            self.add_http_response_header(&h.name.0, &h.value.0);
        }
        if c.remove.len() + c.set.len() + c.add.len() > 0 {
            log::debug!(
                "response: removed {}, set {}, added {} header(s)",
                c.remove.len(),
                c.set.len(),
                c.add.len()
            );
        }
        Action::Continue
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
