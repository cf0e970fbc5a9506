//! `header-append`: adds, sets and removes request and response headers.
//!
//! Configuration (JSON):
//!
//! ```json
//! {
//!   "request":  { "remove": ["x-internal"], "set": [{"name": "x-env", "value": "prod"}],
//!                 "add": [{"name": "x-trace", "value": "on"}] },
//!   "response": { "set": [{"name": "cache-control", "value": "no-store"}] }
//! }
//! ```
//!
//! For each direction the operations run in the order `remove`, `set`, `add`. Header
//! names must be valid HTTP token characters and are lower-cased; values must not
//! contain CR, LF or NUL. Anything else is rejected when the plugin is configured,
//! with the offending field named in Envoy's log.

use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Deserializer};
use weir::{Flow, Headers, HttpFilter, RequestHeaders, ResponseHeaders, Result};

/// Header changes per direction; for each direction the operations run in the
/// order remove, set, add.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars", title = "header-append configuration")
)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Changes applied to request headers before they go upstream.
    pub request: Changes,
    /// Changes applied to response headers before they go to the client.
    pub response: Changes,
}

/// Header changes for one direction.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields, default)]
pub struct Changes {
    /// Headers to remove (every value).
    pub remove: Vec<HeaderName>,
    /// Headers to set, replacing any existing values.
    pub set: Vec<Header>,
    /// Headers to append, keeping existing values.
    pub add: Vec<Header>,
}

/// One header to set or add.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The header name.
    pub name: HeaderName,
    /// The value.
    pub value: HeaderValue,
}

/// A validated, lower-cased header name (pseudo-headers such as `:path` allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderName(String);

/// A header value without CR, LF or NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValue(String);

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl HeaderName {
    /// Validates and lower-cases `name`.
    ///
    /// # Errors
    /// A message naming the problem if `name` is not a valid header name.
    pub fn parse(name: &str) -> Result<Self, String> {
        let body = name.strip_prefix(':').unwrap_or(name);
        if body.is_empty() {
            return Err(format!("invalid header name {name:?}: empty"));
        }
        if let Some(c) = body.bytes().find(|&b| !is_token(b)) {
            return Err(format!(
                "invalid header name {name:?}: character {:?} is not allowed",
                char::from(c)
            ));
        }
        Ok(Self(name.to_ascii_lowercase()))
    }

    /// The lower-cased name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl HeaderValue {
    /// Validates `value`.
    ///
    /// # Errors
    /// A message naming the problem if `value` contains CR, LF or NUL.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(format!(
                "invalid header value {value:?}: CR, LF and NUL are not allowed"
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod schema {
    use std::borrow::Cow;

    use weir::schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    impl JsonSchema for super::HeaderName {
        fn schema_name() -> Cow<'static, str> {
            "HeaderName".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "An HTTP header name: token characters, or a pseudo-header such as `:path`. Lower-cased.",
                "pattern": "^:?[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
            })
        }
    }

    impl JsonSchema for super::HeaderValue {
        fn schema_name() -> Cow<'static, str> {
            "HeaderValue".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "A header value; CR, LF and NUL are not allowed.",
                "pattern": "^[^\\r\\n\\u0000]*$"
            })
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Changes {
    /// Applies the changes; returns whether there were any.
    fn apply(&self, headers: &mut Headers) -> Result<bool> {
        for name in &self.remove {
            headers.remove(name.as_str())?;
        }
        for h in &self.set {
            headers.set(h.name.as_str(), &h.value.0)?;
        }
        for h in &self.add {
            headers.add(h.name.as_str(), &h.value.0)?;
        }
        Ok(self.remove.len() + self.set.len() + self.add.len() > 0)
    }
}

/// The filter: one value per HTTP stream.
#[derive(Debug)]
pub struct HeaderAppend {
    config: Rc<Config>,
}

impl HttpFilter for HeaderAppend {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self { config }
    }

    fn on_request_headers(&mut self, headers: &mut RequestHeaders) -> Result<Flow> {
        let c = &self.config.request;
        if c.apply(headers)? {
            log::debug!(
                "request: removed {}, set {}, added {} header(s)",
                c.remove.len(),
                c.set.len(),
                c.add.len()
            );
        }
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, headers: &mut ResponseHeaders) -> Result<Flow> {
        let c = &self.config.response;
        if c.apply(headers)? {
            log::debug!(
                "response: removed {}, set {}, added {} header(s)",
                c.remove.len(),
                c.set.len(),
                c.add.len()
            );
        }
        Ok(Flow::Continue)
    }
}

weir::export_http_filter!(HeaderAppend);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c: Config = weir::parse_config(
            br#"{"request": {"remove": ["X-Drop"], "set": [{"name": "X-A", "value": "1"}]},
                 "response": {"add": [{"name": "x-b", "value": "2"}]}}"#,
        )
        .expect("valid");
        assert_eq!(c.request.remove[0].as_str(), "x-drop");
        assert_eq!(c.request.set[0].name.as_str(), "x-a");
        assert_eq!(c.response.add[0].value.0, "2");
    }

    #[test]
    fn names_the_bad_field() {
        let err = weir::parse_config::<Config>(
            br#"{"response": {"set": [{"name": "ok", "value": "1"}, {"name": "bad name", "value": "2"}]}}"#,
        )
        .expect_err("space in name");
        let msg = err.to_string();
        assert!(msg.contains("response.set[1].name"), "{msg}");
        assert!(msg.contains("' ' is not allowed"), "{msg}");
    }

    #[test]
    fn rejects_header_injection() {
        let err = weir::parse_config::<Config>(
            br#"{"request": {"add": [{"name": "x", "value": "a\r\nx-evil: 1"}]}}"#,
        )
        .expect_err("CRLF");
        assert!(err.to_string().contains("request.add[0].value"), "{err}");
    }

    /// `config.schema.json` (published by `weir push`) is generated from `Config`;
    /// `WEIR_UPDATE_SCHEMA=1 cargo test -p header-append` rewrites it.
    #[test]
    fn the_published_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.schema.json");
        let generated = weir::config_schema::<Config>();
        if std::env::var_os("WEIR_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).expect("write the schema");
        }
        let published = std::fs::read_to_string(&path).expect("config.schema.json");
        assert_eq!(
            published, generated,
            "config.schema.json is stale: run WEIR_UPDATE_SCHEMA=1 cargo test -p header-append"
        );
        // The schema accepts what the filter accepts.
        let schema: serde_json::Value = serde_json::from_str(&generated).expect("JSON");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            schema["$defs"]["HeaderName"]["pattern"],
            "^:?[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
        );
    }

    #[test]
    fn empty_config_changes_nothing() {
        let c: Config = weir::parse_config(b"").expect("empty is fine");
        assert!(c.request.set.is_empty() && c.response.remove.is_empty());
    }
}
