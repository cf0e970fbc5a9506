//! The `transform` filter as a library: rewrites JSON request and response
//! bodies and remaps response statuses. The `transform` crate exports
//! [`Transform`] as the module's filter; this crate holds everything else, so
//! tests link it natively while the module keeps link-time optimization.
//!
//! Configuration (JSON; see `README.md` and `config.schema.json`):
//!
//! ```json
//! {
//!   "request":  {"ops": [{"op": "rename", "path": "/userName", "to": "user_name"},
//!                        {"op": "header_to_body", "header": "x-tenant", "path": "/tenant"}]},
//!   "response": {"ops": [{"op": "wrap", "path": "/data"}]},
//!   "status":   [{"from": 404, "to": 200}]
//! }
//! ```
//!
//! Bodies whose `content-type` is JSON (`application/json` or a `+json` type by
//! default) are buffered through the SDK up to `max_body_bytes`, parsed,
//! changed by the operations in order, and written back. Everything else passes
//! through untouched. Nothing a client or upstream sends can make the filter
//! panic: every failure is a documented status.

pub mod config;
pub mod ops;
pub mod pointer;

use std::rc::Rc;

use serde_json::Value;
use weir::{
    BufferBody, Flow, Headers, HttpFilter, LocalReply, RequestBody, RequestHeaders, ResponseBody,
    ResponseHeaders, Result,
};

pub use config::Config;
use config::{Direction, OnInvalidJson, Reply};

/// Response-code details of the filter's replies.
pub mod details {
    /// A body larger than `max_body_bytes`.
    pub const TOO_LARGE: &str = "transform_body_too_large";
    /// A body that is not valid JSON, with `on_invalid_json: reject`.
    pub const INVALID_JSON: &str = "transform_invalid_json";
    /// A `required` operation that could not apply.
    pub const OP_FAILED: &str = "transform_op_failed";
}

/// Which way a body travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request,
    Response,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Response => "response",
        }
    }
}

/// Per-direction state of one stream.
#[derive(Debug, Default)]
struct Side {
    /// The body is being buffered for transformation.
    active: bool,
    /// The body callback ran.
    finished: bool,
    /// The headers are held until the body is done.
    held: bool,
    /// The headers carried `content-length`.
    had_length: bool,
    /// Header values read for `header_to_body`, by operation index.
    captured: Vec<Option<String>>,
}

/// The filter: one value per HTTP stream.
#[derive(Debug)]
pub struct Transform {
    config: Rc<Config>,
    request: Side,
    response: Side,
    /// The status rule (index) that waits for the response body.
    pending_status: Option<usize>,
    /// The filter answered this stream itself.
    replied: bool,
}

fn local_reply(reply: &Reply, details: &str) -> LocalReply {
    LocalReply::new(reply.status.0)
        .header("content-type", reply.content_type.as_str())
        .body(reply.body.clone())
        .details(details)
}

/// The first `content-length` value, if it is a number.
fn content_length(headers: &Headers) -> Result<Option<u64>> {
    Ok(headers
        .get_bytes("content-length")?
        .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse().ok()))
}

impl Transform {
    fn direction(&self, dir: Dir) -> &Direction {
        match dir {
            Dir::Request => &self.config.request,
            Dir::Response => &self.config.response,
        }
    }

    fn side(&mut self, dir: Dir) -> &mut Side {
        match dir {
            Dir::Request => &mut self.request,
            Dir::Response => &mut self.response,
        }
    }

    /// Whether the headers announce a JSON body.
    fn json_body(&self, headers: &Headers) -> Result<bool> {
        if headers.end_of_stream() {
            return Ok(false);
        }
        let Some(ct) = headers.get_bytes("content-type")? else {
            return Ok(false);
        };
        Ok(self.config.content_types.iter().any(|m| m.matches(&ct)))
    }

    /// Reads the headers `header_to_body` operations copy.
    fn capture(&mut self, dir: Dir, headers: &Headers) -> Result<()> {
        let ops = &self.direction(dir).ops;
        let mut captured = Vec::with_capacity(ops.len());
        for op in ops {
            captured.push(match &op.kind {
                // Absent or not UTF-8: the operation does not apply.
                config::OpKind::HeaderToBody { header, .. } => {
                    headers.get(header.as_str()).ok().flatten()
                }
                _ => None,
            });
        }
        self.side(dir).captured = captured;
        Ok(())
    }

    /// Starts buffering a JSON body, or answers at once if its announced size is
    /// over the limit.
    fn begin(&mut self, dir: Dir, headers: &mut Headers) -> Result<Flow> {
        let config = Rc::clone(&self.config);
        let too_large = match dir {
            Dir::Request => &config.request.too_large,
            Dir::Response => &config.response.too_large,
        };
        let length = content_length(headers)?;
        if length.is_some_and(|n| n > config.max_body_bytes as u64) {
            log::debug!("{}: content-length over max_body_bytes", dir.name());
            self.replied = true;
            return Ok(Flow::Respond(local_reply(too_large, details::TOO_LARGE)));
        }
        let mut spec = BufferBody::up_to(config.max_body_bytes)
            .too_large(local_reply(too_large, details::TOO_LARGE));
        if !config.hold_headers {
            // The size will change: content-length goes now, while the headers
            // can still change.
            spec = spec.will_modify();
        }
        headers.buffer_body(spec)?;
        let side = self.side(dir);
        side.active = true;
        side.held = config.hold_headers;
        side.had_length = length.is_some();
        Ok(if side.held {
            Flow::Pause
        } else {
            Flow::Continue
        })
    }

    /// Status rules from `from` on, for a response whose JSON body is `body`
    /// (`None`: no body, or not JSON). The new status, if a rule matches.
    fn resolve_status(&self, status: u16, from: usize, body: Option<&Value>) -> Option<u16> {
        self.config.status[from..]
            .iter()
            .filter(|r| r.from.0 == status)
            .find(|r| match (&r.when, body) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(m), Some(b)) => match (ops::get(b, &m.path), &m.equals) {
                    (Some(found), Some(want)) => found == want,
                    (Some(_), None) => true,
                    (None, _) => false,
                },
            })
            .map(|r| r.to.0)
    }

    /// Rejects the body with the direction's `invalid` reply.
    fn reject(&mut self, dir: Dir, details: &str) -> Flow {
        self.replied = true;
        Flow::Respond(local_reply(&self.direction(dir).invalid, details))
    }

    /// Transforms a whole buffered body. `held` is the headers view if the
    /// headers are held.
    fn transform(
        &mut self,
        dir: Dir,
        body: &mut weir::Body,
        mut held: Option<&mut Headers>,
    ) -> Result<Flow> {
        self.side(dir).finished = true;
        let bytes = body.bytes()?;
        let parsed = if bytes.is_empty() {
            // Nothing to transform: an empty body passes untouched.
            None
        } else {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    log::debug!("{}: the body is not valid JSON: {e}", dir.name());
                    if self.config.on_invalid_json == OnInvalidJson::Reject {
                        return Ok(self.reject(dir, details::INVALID_JSON));
                    }
                    None
                }
            }
        };
        // Status rules that waited for this body.
        if dir == Dir::Response
            && let (Some(from), Some(h)) = (self.pending_status, held.as_deref_mut())
            && let Some(status) = h
                .get_bytes(":status")?
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            && let Some(to) = self.resolve_status(status, from, parsed.as_ref())
        {
            h.set(":status", to.to_string())?;
        }
        let config = Rc::clone(&self.config);
        let ops = match dir {
            Dir::Request => &config.request.ops,
            Dir::Response => &config.response.ops,
        };
        let Some(mut value) = parsed.filter(|_| !ops.is_empty()) else {
            return Ok(Flow::Continue);
        };
        let captured = std::mem::take(&mut self.side(dir).captured);
        let applied = match ops::apply(ops, &mut value, &captured) {
            Ok(applied) => applied,
            Err((i, e)) => {
                log::debug!(
                    "{}.ops[{i}] ({}) is required and cannot apply: {e}",
                    dir.name(),
                    ops[i]
                );
                return Ok(self.reject(dir, details::OP_FAILED));
            }
        };
        for (i, e) in &applied.skipped {
            log::debug!("{}.ops[{i}] ({}) skipped: {e}", dir.name(), ops[*i]);
        }
        let out = serde_json::to_vec(&value).map_err(|e| {
            weir::Error::from(weir::ErrorKind::InvalidArgument {
                message: format!("cannot write the {} body: {e}", dir.name()),
            })
        })?;
        body.replace(&out)?;
        if let Some(h) = held {
            if self.side(dir).had_length {
                h.set("content-length", out.len().to_string())?;
            }
            for (name, v) in &applied.headers {
                h.set(name, v)?;
            }
        }
        Ok(Flow::Continue)
    }
}

impl HttpFilter for Transform {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            request: Side::default(),
            response: Side::default(),
            pending_status: None,
            replied: false,
        }
    }

    fn on_request_headers(&mut self, headers: &mut RequestHeaders) -> Result<Flow> {
        if !self.config.request.has_ops() {
            return Ok(Flow::Continue);
        }
        if self.config.request.reads_headers() {
            self.capture(Dir::Request, headers)?;
        }
        if !self.json_body(headers)? {
            return Ok(Flow::Continue);
        }
        self.begin(Dir::Request, headers)
    }

    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        if !self.request.active || self.request.finished {
            return Ok(Flow::Continue);
        }
        let mut held = self.request.held.then(|| body.held_headers());
        self.transform(Dir::Request, body, held.as_deref_mut())
    }

    fn on_response_headers(&mut self, headers: &mut ResponseHeaders) -> Result<Flow> {
        if self.replied {
            return Ok(Flow::Continue);
        }
        if self.request.active
            && !self.request.finished
            && weir::properties::response_code_details()?.as_deref() == Some(details::TOO_LARGE)
        {
            // The SDK answered a request body over the limit.
            return Ok(Flow::Continue);
        }
        let json = self.json_body(headers)?;
        if !self.config.status.is_empty()
            && let Some(status) = headers.status()?
        {
            let first = self.config.status.iter().enumerate().find(|(_, r)| {
                r.from.0 == status && (r.when.is_none() || (json && self.config.hold_headers))
            });
            match first {
                Some((_, rule)) if rule.when.is_none() => {
                    headers.set(":status", rule.to.0.to_string())?;
                }
                Some((i, _)) => self.pending_status = Some(i),
                None => {}
            }
        }
        if !self.config.response.has_ops() && self.pending_status.is_none() {
            return Ok(Flow::Continue);
        }
        if self.config.response.reads_headers() {
            self.capture(Dir::Response, headers)?;
        }
        if !json {
            return Ok(Flow::Continue);
        }
        self.begin(Dir::Response, headers)
    }

    fn on_response_body(&mut self, body: &mut ResponseBody) -> Result<Flow> {
        if !self.response.active || self.response.finished {
            return Ok(Flow::Continue);
        }
        let mut held = self.response.held.then(|| body.held_headers());
        self.transform(Dir::Response, body, held.as_deref_mut())
    }
}
