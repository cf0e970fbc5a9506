//! Benchmark baseline: the same behaviour as `filters/header-append`, written the
//! way the `proxy-wasm` crate's own examples are (its host calls panic on
//! unexpected statuses; config errors are reported without field paths). It reads
//! the same configuration and makes the same host calls per request, so that
//! `weir-bench` can compare fuel, host calls and module size.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    request: Changes,
    response: Changes,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Changes {
    remove: Vec<String>,
    set: Vec<Header>,
    add: Vec<Header>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    value: String,
}

fn valid(c: &Changes) -> bool {
    let name_ok = |n: &str| {
        let body = n.strip_prefix(':').unwrap_or(n);
        !body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let value_ok = |v: &str| !v.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
    c.remove.iter().all(|n| name_ok(n))
        && c.set
            .iter()
            .chain(&c.add)
            .all(|h| name_ok(&h.name) && value_ok(&h.value))
}

struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let text = if bytes.is_empty() {
            b"{}".to_vec()
        } else {
            bytes
        };
        match serde_json::from_slice::<Config>(&text) {
            Ok(mut c) if valid(&c.request) && valid(&c.response) => {
                for h in c
                    .request
                    .remove
                    .iter_mut()
                    .chain(c.response.remove.iter_mut())
                {
                    *h = h.to_ascii_lowercase();
                }
                self.config = Rc::new(c);
                true
            }
            Ok(_) => {
                log::error!("invalid header name or value in configuration");
                false
            }
            Err(e) => {
                log::error!("invalid configuration: {e}");
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
            self.set_http_request_header(name, None);
        }
        for h in &c.set {
            self.set_http_request_header(&h.name, Some(&h.value));
        }
        for h in &c.add {
            self.add_http_request_header(&h.name, &h.value);
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
            self.set_http_response_header(name, None);
        }
        for h in &c.set {
            self.set_http_response_header(&h.name, Some(&h.value));
        }
        for h in &c.add {
            self.add_http_response_header(&h.name, &h.value);
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
