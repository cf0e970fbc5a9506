//! `sdk-bodies`: exercises the weir SDK's body API for the conformance suite.
//!
//! Per direction, `mode` is `off` (default), `chunks` (transform each chunk in
//! place, same size) or `whole` (buffer up to `limit` bytes, then transform).
//! Transforms: `upper` (ASCII upper-case), `wrap` (`[before, after]`, whole mode
//! only) and `json_set` (`[key, value]`: set a top-level field of a JSON object,
//! whole mode only). Every callback logs what it saw; dropping the stream logs
//! `stream done`.

use std::rc::Rc;

use serde::Deserialize;
use weir::{
    Body, BufferBody, Flow, Headers, HttpFilter, RequestBody, RequestHeaders, ResponseBody,
    ResponseHeaders, Result,
};

/// The plugin configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Request body handling.
    pub request: Direction,
    /// Response body handling.
    pub response: Direction,
}

/// How one direction's body is handled.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Direction {
    /// `off`, `chunks` or `whole`.
    pub mode: Mode,
    /// The buffer limit in `whole` mode.
    pub limit: Option<usize>,
    /// Upper-case ASCII letters.
    pub upper: bool,
    /// Text to put before and after the body (`whole` mode).
    pub wrap: Option<(String, String)>,
    /// A top-level field to set in a JSON object body (`whole` mode).
    pub json_set: Option<(String, serde_json::Value)>,
}

/// Body handling mode.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Leave bodies alone.
    #[default]
    Off,
    /// Transform each chunk in place.
    Chunks,
    /// Buffer the whole body, then transform it.
    Whole,
}

/// The filter.
#[derive(Debug)]
pub struct SdkBodies {
    config: Rc<Config>,
}

impl Direction {
    fn on_headers(&self, headers: &mut Headers) -> Result<()> {
        if self.mode == Mode::Whole {
            headers.buffer_body(BufferBody::up_to(self.limit.unwrap_or(1 << 20)).will_modify())?;
        }
        Ok(())
    }

    fn on_body(&self, what: &str, body: &mut Body) -> Result<Flow> {
        log::info!(
            "{what} body: {} bytes, end_of_stream={}",
            body.len(),
            body.end_of_stream()
        );
        if self.mode == Mode::Off || body.is_empty() && self.mode == Mode::Chunks {
            return Ok(Flow::Continue);
        }
        if let Some((key, value)) = &self.json_set {
            let mut doc: serde_json::Value = body.json()?;
            if let Some(object) = doc.as_object_mut() {
                object.insert(key.clone(), value.clone());
            }
            body.set_json(&doc)?;
        }
        if self.upper {
            let data = body.bytes()?.to_ascii_uppercase();
            body.replace(data)?;
        }
        if let Some((before, after)) = &self.wrap {
            body.prepend(before)?;
            body.append(after)?;
        }
        log::info!("{what} body now {} bytes", body.len());
        Ok(Flow::Continue)
    }
}

impl HttpFilter for SdkBodies {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self { config }
    }

    fn on_request_headers(&mut self, headers: &mut RequestHeaders) -> Result<Flow> {
        self.config.request.on_headers(headers)?;
        Ok(Flow::Continue)
    }

    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        self.config.request.on_body("request", body)
    }

    fn on_response_headers(&mut self, headers: &mut ResponseHeaders) -> Result<Flow> {
        self.config.response.on_headers(headers)?;
        Ok(Flow::Continue)
    }

    fn on_response_body(&mut self, body: &mut ResponseBody) -> Result<Flow> {
        self.config.response.on_body("response", body)
    }
}

impl Drop for SdkBodies {
    fn drop(&mut self) {
        log::info!("stream done");
    }
}

weir::export_http_filter!(SdkBodies);
