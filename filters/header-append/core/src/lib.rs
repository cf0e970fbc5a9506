//! header-append's configuration, templates and header rules, written against
//! a small [`HeaderMap`] trait rather than a particular proxy-wasm SDK.
//!
//! The `header-append` filter runs them on weir; the benchmark baseline in
//! `tests/filters/header-append-raw` runs the very same code directly on the
//! `proxy-wasm` crate, so that comparing the two measures the SDK layer alone.
//!
//! For each direction the operations run in the order `remove`, `rename`, `set`,
//! `add`, then each rule whose `when` matches, in order, with the same order
//! inside. Templates (see [`template`]) are parsed when the configuration is
//! deserialized; anything invalid is an error then. Response templates that read
//! the request get the values the request had when it reached the filter,
//! captured per stream ([`Stream`]).

pub mod attributes;
mod engine;
pub mod template;

use std::cell::Cell;

use serde::{Deserialize, Deserializer};

pub use crate::engine::{HeaderMap, Stream};
use crate::template::{Phase, Source, Template};
pub use weir_names::{HeaderName, HeaderValue, is_token};

/// The default of [`Config::max_value_bytes`].
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8192;

/// The largest [`Config::max_value_bytes`] accepted (Envoy's default limit for a
/// whole request header block is 60 KiB).
pub const MAX_VALUE_BYTES_LIMIT: usize = 65536;

/// Header changes per direction.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(crate = "schemars", title = "header-append configuration")
)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Changes applied to request headers before they go upstream. Templates may
    /// read request headers and attributes, not the response.
    #[serde(deserialize_with = "request_changes")]
    pub request: Changes,
    /// Changes applied to response headers before they go to the client.
    /// Templates and conditions that read the request use the values it had when
    /// it reached this filter.
    #[serde(deserialize_with = "response_changes")]
    pub response: Changes,
    /// The largest value a template with expressions may produce, in bytes
    /// (default 8192, at most 65536). A longer value skips its operation.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65536)))]
    #[serde(deserialize_with = "max_value_bytes")]
    pub max_value_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            request: Changes::default(),
            response: Changes::default(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// Header changes for one direction: unconditional operations, then rules.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(crate = "schemars")
)]
#[serde(deny_unknown_fields, default)]
pub struct Changes {
    /// Headers to remove (every value).
    pub remove: Vec<HeaderName>,
    /// Headers to rename: every value of `from` moves to `to`, replacing it.
    pub rename: Vec<Rename>,
    /// Headers to set, replacing any existing values.
    pub set: Vec<Header>,
    /// Headers to append, keeping existing values.
    pub add: Vec<Header>,
    /// Conditional changes, applied in order after the operations above.
    pub rules: Vec<Rule>,
    /// Response side: the request-phase sources its templates read, captured
    /// per stream in the request phase.
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    carry: Vec<Source>,
    /// Only `remove`, `set` and `add` with literal values: the fast path.
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    literal: bool,
}

/// Operations applied only when `when` matches.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(crate = "schemars")
)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// The conditions; all must hold. Empty matches every request.
    pub when: Condition,
    /// Headers to remove.
    pub remove: Vec<HeaderName>,
    /// Headers to rename.
    pub rename: Vec<Rename>,
    /// Headers to set.
    pub set: Vec<Header>,
    /// Headers to append.
    pub add: Vec<Header>,
}

/// When a rule applies: every given condition must hold.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(crate = "schemars")
)]
#[serde(deny_unknown_fields, default)]
pub struct Condition {
    /// The request's `:path` (query included) starts with this.
    pub path_prefix: Option<PathPrefix>,
    /// The request's `:method` is one of these (case-sensitive).
    pub methods: Vec<Method>,
    /// Request header conditions.
    pub request_headers: Vec<HeaderMatch>,
    /// Response header conditions (response rules only).
    #[serde(deserialize_with = "response_header_matches")]
    pub response_headers: Vec<HeaderMatch>,
}

/// A condition on one header.
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(crate = "schemars", deny_unknown_fields)
)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// Whether it must be present (default) or absent.
    #[cfg_attr(feature = "schema", schemars(default = "yes"))]
    pub present: bool,
    /// Its first value must be exactly this (implies `present`).
    pub equals: Option<HeaderValue>,
}

#[cfg(feature = "schema")]
fn yes() -> bool {
    true
}

/// One header to rename.
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(crate = "schemars", deny_unknown_fields)
)]
pub struct Rename {
    /// The header whose values move (not a pseudo-header).
    pub from: HeaderName,
    /// Where they go (not a pseudo-header, not `from`).
    pub to: HeaderName,
}

/// One header to set or add.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(crate = "schemars")
)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The header name.
    pub name: HeaderName,
    /// The value: a template (literal text with `{expression}`s).
    pub value: ValueTemplate,
}

/// A header value template, parsed for the direction it is used in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTemplate(pub Template);

/// A path prefix: starts with `/`, visible ASCII only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix(String);

/// An HTTP method: a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(String);

impl PathPrefix {
    /// Validates `prefix`.
    ///
    /// # Errors
    /// If it does not start with `/` or has a character outside visible ASCII.
    pub fn parse(prefix: &str) -> Result<Self, String> {
        if !prefix.starts_with('/') {
            return Err(format!(
                "invalid path prefix {prefix:?}: must start with `/`"
            ));
        }
        if let Some(c) = prefix.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "invalid path prefix {prefix:?}: character {c:?} is not allowed (percent-encode it)"
            ));
        }
        Ok(Self(prefix.to_owned()))
    }
}

impl Method {
    /// Validates `method` (kept as written: methods are case-sensitive).
    ///
    /// # Errors
    /// If it is empty or not a token.
    pub fn parse(method: &str) -> Result<Self, String> {
        if method.is_empty() || !method.bytes().all(is_token) {
            return Err(format!(
                "invalid method {method:?}: must be a token such as GET"
            ));
        }
        Ok(Self(method.to_owned()))
    }
}

thread_local! {
    /// The direction whose changes are being deserialized: templates and
    /// conditions are validated for it.
    static PHASE: Cell<Phase> = const { Cell::new(Phase::Request) };
}

/// Runs `f` with [`PHASE`] set to `phase`.
fn in_phase<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let before = PHASE.with(|p| p.replace(phase));
    let out = f();
    PHASE.with(|p| p.set(before));
    out
}

fn request_changes<'de, D: Deserializer<'de>>(d: D) -> Result<Changes, D::Error> {
    let mut changes = in_phase(Phase::Request, || Changes::deserialize(d))?;
    changes.literal = changes.is_literal();
    Ok(changes)
}

fn response_changes<'de, D: Deserializer<'de>>(d: D) -> Result<Changes, D::Error> {
    let mut changes = in_phase(Phase::Response, || Changes::deserialize(d))?;
    changes.carry = changes.request_sources();
    changes.literal = changes.is_literal();
    Ok(changes)
}

fn max_value_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = u64::deserialize(d)?;
    match usize::try_from(n) {
        Ok(n @ 1..=MAX_VALUE_BYTES_LIMIT) => Ok(n),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is out of range: must be 1 to {MAX_VALUE_BYTES_LIMIT}"
        ))),
    }
}

fn response_header_matches<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HeaderMatch>, D::Error> {
    let matches = Vec::<HeaderMatch>::deserialize(d)?;
    if !matches.is_empty() && PHASE.with(Cell::get) == Phase::Request {
        return Err(serde::de::Error::custom(
            "response headers do not exist in the request phase: use `request_headers`, or move the rule to `response`",
        ));
    }
    Ok(matches)
}

impl<'de> Deserialize<'de> for PathPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ValueTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let phase = PHASE.with(Cell::get);
        Template::parse(&s, phase)
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("invalid template {s:?}: {e}")))
    }
}

impl<'de> Deserialize<'de> for HeaderMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            name: HeaderName,
            #[serde(default)]
            present: Option<bool>,
            #[serde(default)]
            equals: Option<HeaderValue>,
        }
        let f = Fields::deserialize(d)?;
        if f.present == Some(false) && f.equals.is_some() {
            return Err(serde::de::Error::custom(format!(
                "header `{}`: `equals` cannot be combined with `present: false`",
                f.name
            )));
        }
        Ok(Self {
            name: f.name,
            present: f.present.unwrap_or(true),
            equals: f.equals,
        })
    }
}

impl<'de> Deserialize<'de> for Rename {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            from: HeaderName,
            to: HeaderName,
        }
        let f = Fields::deserialize(d)?;
        if f.from.is_pseudo() || f.to.is_pseudo() {
            return Err(serde::de::Error::custom(format!(
                "cannot rename `{}` to `{}`: pseudo-headers cannot be renamed",
                f.from, f.to
            )));
        }
        if f.from == f.to {
            return Err(serde::de::Error::custom(format!(
                "cannot rename `{}` to itself",
                f.from
            )));
        }
        Ok(Self {
            from: f.from,
            to: f.to,
        })
    }
}

#[cfg(feature = "schema")]
mod schema {
    use std::borrow::Cow;

    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    impl JsonSchema for super::ValueTemplate {
        fn schema_name() -> Cow<'static, str> {
            "ValueTemplate".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "A header value template: literal text with `{source}` or `{source|default}` expressions; `{{` and `}}` are literal braces. Sources: `request.header.NAME`, `response.header.NAME` (response only), `request.path`, `request.method`, `request.host`, `request.scheme`, `request_id`, `attr:ATTRIBUTE`. An absent or empty value takes the default; without one the operation is skipped. CR, LF and NUL are not allowed.",
                "pattern": "^[^\\r\\n\\u0000]*$"
            })
        }
    }

    impl JsonSchema for super::PathPrefix {
        fn schema_name() -> Cow<'static, str> {
            "PathPrefix".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "A path prefix: starts with `/`, visible ASCII only.",
                "pattern": "^/[!-~]*$"
            })
        }
    }

    impl JsonSchema for super::Method {
        fn schema_name() -> Cow<'static, str> {
            "Method".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "An HTTP method (case-sensitive), e.g. `GET`.",
                "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
            })
        }
    }
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            remove: Vec::new(),
            rename: Vec::new(),
            set: Vec::new(),
            add: Vec::new(),
            rules: Vec::new(),
            carry: Vec::new(),
            literal: true,
        }
    }
}

impl Changes {
    /// Whether these changes take the fast path: only `remove`, and `set` and
    /// `add` with literal values.
    pub fn literal_only(&self) -> bool {
        self.literal
    }

    /// Response side: the request-phase sources its templates read, captured
    /// per stream in the request phase, in order (empty for the request side).
    pub fn carried(&self) -> &[Source] {
        &self.carry
    }

    /// Whether there is nothing but `remove`, and `set` and `add` of literals.
    fn is_literal(&self) -> bool {
        self.rename.is_empty()
            && self.rules.is_empty()
            && self
                .set
                .iter()
                .chain(&self.add)
                .all(|h| h.value.0.as_literal().is_some())
    }

    /// The request-phase sources read by these changes' templates, each once.
    fn request_sources(&self) -> Vec<Source> {
        let rule_headers = self.rules.iter().flat_map(|r| r.set.iter().chain(&r.add));
        let mut out: Vec<Source> = Vec::new();
        for h in self.set.iter().chain(&self.add).chain(rule_headers) {
            for s in h.value.0.sources() {
                if s.from_request_headers() && !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }
}
