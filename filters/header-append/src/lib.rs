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

pub mod attributes;
pub mod template;

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Deserializer};
use weir::config::is_token;
pub use weir::config::{HeaderName, HeaderValue};
use weir::{Flow, Headers, HttpFilter, RequestHeaders, ResponseHeaders, Result};

use crate::attributes::Attribute;
use crate::template::{Phase, Source, Template};

/// The default of [`Config::max_value_bytes`].
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8192;

/// The largest [`Config::max_value_bytes`] accepted (Envoy's default limit for a
/// whole request header block is 60 KiB).
pub const MAX_VALUE_BYTES_LIMIT: usize = 65536;

/// Header changes per direction.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars", title = "header-append configuration")
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
    #[cfg_attr(not(target_arch = "wasm32"), schemars(range(min = 1, max = 65536)))]
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
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
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
    #[cfg_attr(not(target_arch = "wasm32"), schemars(skip))]
    carry: Vec<Source>,
    /// Only `remove`, `set` and `add` with literal values: the fast path.
    #[serde(skip)]
    #[cfg_attr(not(target_arch = "wasm32"), schemars(skip))]
    literal: bool,
}

/// Operations applied only when `when` matches.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
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
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
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
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars", deny_unknown_fields)
)]
pub struct HeaderMatch {
    /// The header.
    pub name: HeaderName,
    /// Whether it must be present (default) or absent.
    #[cfg_attr(not(target_arch = "wasm32"), schemars(default = "yes"))]
    pub present: bool,
    /// Its first value must be exactly this (implies `present`).
    pub equals: Option<HeaderValue>,
}

#[cfg(not(target_arch = "wasm32"))]
fn yes() -> bool {
    true
}

/// One header to rename.
#[derive(Debug, Clone)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars", deny_unknown_fields)
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
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
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

#[cfg(not(target_arch = "wasm32"))]
mod schema {
    use std::borrow::Cow;

    use weir::schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

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

    /// The fast path for literal changes (see [`Changes::is_literal`]): the same
    /// host calls, and nothing else, as a filter without templates would make.
    /// Returns whether there were any changes.
    #[inline]
    fn apply_literal(&self, headers: &mut Headers) -> Result<bool> {
        for name in &self.remove {
            headers.remove(name.as_str())?;
        }
        for h in &self.set {
            headers.set(h.name.as_str(), h.value.0.literal_text())?;
        }
        for h in &self.add {
            headers.add(h.name.as_str(), h.value.0.literal_text())?;
        }
        Ok(self.remove.len() + self.set.len() + self.add.len() > 0)
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

impl Condition {
    /// Whether it has conditions on the request.
    fn reads_request(&self) -> bool {
        self.path_prefix.is_some() || !self.methods.is_empty() || !self.request_headers.is_empty()
    }

    /// Whether the request-side conditions hold for `request`.
    fn request_matches(&self, request: &Headers) -> Result<bool> {
        if let Some(prefix) = &self.path_prefix {
            let path = request.get_bytes(":path")?.unwrap_or_default();
            if !path.starts_with(prefix.0.as_bytes()) {
                return Ok(false);
            }
        }
        if !self.methods.is_empty() {
            let method = request.get_bytes(":method")?.unwrap_or_default();
            if !self.methods.iter().any(|m| m.0.as_bytes() == method) {
                return Ok(false);
            }
        }
        headers_match(&self.request_headers, request)
    }
}

fn headers_match(matches: &[HeaderMatch], headers: &Headers) -> Result<bool> {
    for m in matches {
        let value = headers.get_bytes(m.name.as_str())?;
        let ok = match (&value, &m.equals) {
            (None, _) => !m.present,
            (Some(v), Some(expected)) => v.as_slice() == expected.as_str().as_bytes(),
            (Some(_), None) => m.present,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What one direction's changes did, for the debug log.
#[derive(Debug, Default)]
struct Stats {
    removed: usize,
    renamed: usize,
    set: usize,
    added: usize,
    skipped: usize,
}

/// Where template values come from while one direction's changes run.
struct Values<'a> {
    phase: Phase,
    max: usize,
    /// The response side's carried sources and their captured values.
    carry: &'a [Source],
    carried: &'a [Option<Vec<u8>>],
    scratch: Vec<u8>,
}

/// Reads an attribute; absent, unreadable or malformed values are missing.
fn attribute(a: &Attribute) -> Option<Vec<u8>> {
    match weir::properties::get(a.path) {
        Ok(Some(raw)) => a.render(raw),
        Ok(None) => None,
        Err(e) => {
            log::debug!("attribute {a} is missing: {e}");
            None
        }
    }
}

/// The value of `source` in the phase whose headers are `headers`.
fn lookup(headers: &Headers, source: &Source) -> Result<Option<Vec<u8>>> {
    match source {
        Source::RequestHeader(name) | Source::ResponseHeader(name) => {
            headers.get_bytes(name.as_str())
        }
        Source::Attribute(a) => Ok(attribute(a)),
    }
}

impl Values<'_> {
    fn value(&self, headers: &Headers, source: &Source) -> Result<Option<Vec<u8>>> {
        if self.phase == Phase::Response && source.from_request_headers() {
            // Captured in the request phase (absent if it never ran).
            let at = self.carry.iter().position(|s| s == source);
            return Ok(at.and_then(|i| self.carried.get(i)).cloned().flatten());
        }
        lookup(headers, source)
    }

    /// The value `template` gives now, or `None` (logged) if the operation is
    /// to be skipped.
    fn render<'t>(
        &'t mut self,
        headers: &Headers,
        template: &'t Template,
        what: fmt::Arguments<'_>,
    ) -> Result<Option<&'t [u8]>> {
        if let Some(text) = template.as_literal() {
            return Ok(Some(text.as_bytes()));
        }
        let mut out = std::mem::take(&mut self.scratch);
        let rendered = template.render(&mut out, |s| self.value(headers, s))?;
        self.scratch = out;
        let problem = if !rendered {
            "a value is missing and has no default"
        } else if self.scratch.len() > self.max {
            "the value is longer than max_value_bytes"
        } else if self.scratch.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            "the value contains CR, LF or NUL"
        } else {
            return Ok(Some(&self.scratch));
        };
        log::debug!("{what} skipped: {problem}");
        Ok(None)
    }
}

/// One set of operations (a direction's unconditional ones or a rule's).
struct Ops<'a> {
    remove: &'a [HeaderName],
    rename: &'a [Rename],
    set: &'a [Header],
    add: &'a [Header],
    /// For log lines, e.g. `request` or `response.rules[2]`.
    at: fmt::Arguments<'a>,
}

impl Ops<'_> {
    fn apply(
        &self,
        headers: &mut Headers,
        values: &mut Values<'_>,
        stats: &mut Stats,
    ) -> Result<()> {
        for name in self.remove {
            headers.remove(name.as_str())?;
            stats.removed += 1;
        }
        for r in self.rename {
            let moved = headers.get_all_bytes(r.from.as_str())?;
            if moved.is_empty() {
                continue;
            }
            headers.remove(r.from.as_str())?;
            headers.remove(r.to.as_str())?;
            for v in &moved {
                headers.add(r.to.as_str(), v)?;
            }
            stats.renamed += 1;
        }
        for (i, h) in self.set.iter().enumerate() {
            let at = format_args!("{}.set[{i}] `{}`", self.at, h.name);
            match values.render(headers, &h.value.0, at)? {
                Some(v) => {
                    headers.set(h.name.as_str(), v)?;
                    stats.set += 1;
                }
                None => stats.skipped += 1,
            }
        }
        for (i, h) in self.add.iter().enumerate() {
            let at = format_args!("{}.add[{i}] `{}`", self.at, h.name);
            match values.render(headers, &h.value.0, at)? {
                Some(v) => {
                    headers.add(h.name.as_str(), v)?;
                    stats.added += 1;
                }
                None => stats.skipped += 1,
            }
        }
        Ok(())
    }
}

/// The filter: one value per HTTP stream.
#[derive(Debug)]
pub struct HeaderAppend {
    config: Rc<Config>,
    /// What the response side captured from the request; `None` if it needs
    /// nothing or the request phase never ran here. Boxed so that streams of
    /// literal configurations carry one null pointer.
    captured: Option<Box<Captured>>,
}

/// Request-phase values kept for the response phase of one stream.
#[derive(Debug, Default)]
struct Captured {
    /// The values of `config.response.carry`.
    values: Vec<Option<Vec<u8>>>,
    /// Per response rule, whether its request-side conditions held.
    rules: Vec<bool>,
}

fn log_stats(phase: Phase, s: &Stats) {
    if s.renamed == 0 && s.skipped == 0 {
        log::debug!(
            "{}: removed {}, set {}, added {} header(s)",
            phase.as_str(),
            s.removed,
            s.set,
            s.added
        );
    } else {
        log::debug!(
            "{}: removed {}, renamed {}, set {}, added {} header(s), skipped {}",
            phase.as_str(),
            s.removed,
            s.renamed,
            s.set,
            s.added,
            s.skipped
        );
    }
}

impl HeaderAppend {
    /// Runs one direction's changes.
    fn apply(&self, phase: Phase, headers: &mut Headers) -> Result<()> {
        let (changes, name) = match phase {
            Phase::Request => (&self.config.request, "request"),
            Phase::Response => (&self.config.response, "response"),
        };
        let mut values = Values {
            phase,
            max: self.config.max_value_bytes,
            carry: &changes.carry,
            carried: self.captured.as_ref().map_or(&[], |c| &c.values),
            scratch: Vec::new(),
        };
        let mut stats = Stats::default();
        Ops {
            remove: &changes.remove,
            rename: &changes.rename,
            set: &changes.set,
            add: &changes.add,
            at: format_args!("{name}"),
        }
        .apply(headers, &mut values, &mut stats)?;
        for (i, rule) in changes.rules.iter().enumerate() {
            let when = &rule.when;
            let matches = match phase {
                Phase::Request => when.request_matches(headers)?,
                Phase::Response => {
                    let request_ok = !when.reads_request()
                        || self
                            .captured
                            .as_ref()
                            .and_then(|c| c.rules.get(i).copied())
                            .unwrap_or(false);
                    request_ok && headers_match(&when.response_headers, headers)?
                }
            };
            if !matches {
                continue;
            }
            Ops {
                remove: &rule.remove,
                rename: &rule.rename,
                set: &rule.set,
                add: &rule.add,
                at: format_args!("{name}.rules[{i}]"),
            }
            .apply(headers, &mut values, &mut stats)?;
        }
        if stats.removed + stats.renamed + stats.set + stats.added + stats.skipped > 0 {
            log_stats(phase, &stats);
        }
        Ok(())
    }

    /// The request phase when templates, renames or rules are involved.
    #[inline(never)]
    fn request_general(&mut self, headers: &mut Headers) -> Result<Flow> {
        // Literal response changes read nothing from the request.
        if !self.config.response.literal {
            self.capture(headers)?;
        }
        self.apply(Phase::Request, headers)?;
        Ok(Flow::Continue)
    }

    /// The response phase when templates, renames or rules are involved.
    #[inline(never)]
    fn response_general(&mut self, headers: &mut Headers) -> Result<Flow> {
        self.apply(Phase::Response, headers)?;
        Ok(Flow::Continue)
    }

    /// Captures what the response side needs from the request.
    fn capture(&mut self, request: &Headers) -> Result<()> {
        let response = &self.config.response;
        let values = response
            .carry
            .iter()
            .map(|s| lookup(request, s))
            .collect::<Result<_>>()?;
        let rules = response
            .rules
            .iter()
            .map(|r| {
                if r.when.reads_request() {
                    r.when.request_matches(request)
                } else {
                    Ok(true)
                }
            })
            .collect::<Result<_>>()?;
        self.captured = Some(Box::new(Captured { values, rules }));
        Ok(())
    }
}

impl HttpFilter for HeaderAppend {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            captured: None,
        }
    }

    fn on_request_headers(&mut self, headers: &mut RequestHeaders) -> Result<Flow> {
        // One branch for the common case of literal changes both ways.
        if !(self.config.request.literal & self.config.response.literal) {
            return self.request_general(headers);
        }
        let c = &self.config.request;
        if c.apply_literal(headers)? {
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
        if !c.literal {
            return self.response_general(headers);
        }
        if c.apply_literal(headers)? {
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
mod tests;
