//! The plugin configuration and its validation.
//!
//! Everything that can be checked without a request is checked here, so a bad
//! configuration is refused when Envoy loads the plugin, with the field named.

use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use weir::config::is_token;
pub use weir::config::{HeaderName, HeaderValue};

use crate::pointer::Pointer;

/// The most operations one direction may have.
pub const MAX_OPS: usize = 64;
/// The largest `max_body_bytes` accepted (Envoy's own buffer limit is usually
/// lower: 1 MiB per connection by default).
pub const MAX_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// The filter's configuration.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawConfig")]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(
        crate = "weir::schemars",
        title = "transform configuration",
        with = "RawConfig"
    )
)]
pub struct Config {
    /// Media types treated as JSON.
    pub content_types: Vec<MediaType>,
    /// Largest body buffered, in bytes.
    pub max_body_bytes: usize,
    /// What to do with a body that is not valid JSON.
    pub on_invalid_json: OnInvalidJson,
    /// Hold headers until the body is transformed.
    pub hold_headers: bool,
    /// Request changes.
    pub request: Direction,
    /// Response changes.
    pub response: Direction,
    /// Response status rules.
    pub status: Vec<StatusRule>,
}

/// What the configuration says, before the checks across fields.
#[derive(Debug, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars", title = "transform configuration")
)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Media types whose bodies are transformed: a full type such as
    /// `application/json`, or a structured-syntax suffix such as `+json`.
    /// Parameters (`; charset=utf-8`) are ignored and matching is
    /// case-insensitive. Bodies of other types, or without `content-type`, pass
    /// through untouched.
    pub content_types: Vec<MediaType>,
    /// The largest body (request or response) that is buffered and transformed,
    /// in bytes; a larger one is answered with the direction's `too_large` reply.
    /// Keep it at or below the listener's `per_connection_buffer_limit_bytes`
    /// (1 MiB by default), past which Envoy answers 413 itself.
    #[cfg_attr(
        not(target_arch = "wasm32"),
        schemars(range(min = 1, max = 67_108_864))
    )]
    pub max_body_bytes: usize,
    /// A body of a JSON content type that does not parse (broken JSON, invalid
    /// UTF-8, nested deeper than 128 levels): `pass` forwards it untouched,
    /// `reject` answers with the direction's `invalid` reply.
    pub on_invalid_json: OnInvalidJson,
    /// Hold the headers until the body has been transformed. Needed by
    /// `body_to_header` operations and by status rules with `when`, and makes
    /// `content-length` exact instead of removed. Requires Envoy's
    /// `allow_on_headers_stop_iteration: true` in the plugin's `PluginConfig`
    /// (Envoy 1.35 or later): without it Envoy never delivers the body to a
    /// filter that holds the headers, and the stream stalls.
    pub hold_headers: bool,
    /// Operations on request bodies, and the replies this direction sends.
    pub request: RawDirection,
    /// Operations on response bodies, and the replies this direction sends.
    pub response: RawDirection,
    /// Response status rules, tried in order; the first that matches changes
    /// the status. Rules run before the response operations, on the body the
    /// upstream sent.
    pub status: Vec<StatusRule>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            content_types: vec![
                MediaType::Exact("application/json".to_owned()),
                MediaType::Suffix("+json".to_owned()),
            ],
            max_body_bytes: 256 * 1024,
            on_invalid_json: OnInvalidJson::Pass,
            hold_headers: false,
            request: RawDirection::default(),
            response: RawDirection::default(),
            status: Vec::new(),
        }
    }
}

/// What happens to a body of a JSON content type that is not valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalidJson {
    /// Forward it untouched.
    Pass,
    /// Answer with the direction's `invalid` reply (400 for requests, 502 for
    /// responses by default).
    Reject,
}

/// The operations of one direction, with its replies.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields, default)]
pub struct RawDirection {
    /// Operations, applied in order to the parsed body.
    pub ops: Vec<Op>,
    /// The reply when the body is larger than `max_body_bytes` (default 413 for
    /// requests, 502 for responses).
    pub too_large: Option<Reply>,
    /// The reply when the body is rejected: invalid JSON with `on_invalid_json:
    /// reject`, or a `required` operation that cannot apply (default 400 for
    /// requests, 502 for responses).
    pub invalid: Option<Reply>,
}

/// One direction, checked.
#[derive(Debug)]
pub struct Direction {
    /// Operations in order.
    pub ops: Vec<Op>,
    /// Reply for a body over the limit.
    pub too_large: Reply,
    /// Reply for a rejected body.
    pub invalid: Reply,
}

impl Direction {
    /// Whether anything in this direction needs the body.
    pub fn has_ops(&self) -> bool {
        !self.ops.is_empty()
    }

    /// Whether an operation reads headers into the body.
    pub fn reads_headers(&self) -> bool {
        self.ops
            .iter()
            .any(|op| matches!(op.kind, OpKind::HeaderToBody { .. }))
    }
}

/// A local reply the filter sends.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// HTTP status, 200 to 599.
    pub status: Status,
    /// The body.
    #[serde(default)]
    pub body: String,
    /// The reply's `content-type` (default `application/json`).
    #[serde(default = "json_type")]
    pub content_type: HeaderValue,
}

fn json_type() -> HeaderValue {
    HeaderValue::parse("application/json").unwrap_or_default()
}

impl Reply {
    fn new(status: u16, body: &str) -> Self {
        Self {
            status: Status(status),
            body: body.to_owned(),
            content_type: json_type(),
        }
    }
}

/// A final HTTP status code (200 to 599).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        match u16::try_from(n) {
            Ok(s) if (200..=599).contains(&s) => Ok(Self(s)),
            _ => Err(serde::de::Error::custom(format!(
                "status {n} is out of range: a final status is 200 to 599"
            ))),
        }
    }
}

/// A response status rule.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct StatusRule {
    /// The upstream status this rule applies to.
    pub from: Status,
    /// The status the client gets instead.
    pub to: Status,
    /// Only if the (JSON) response body matches. Needs `hold_headers`.
    #[serde(default)]
    pub when: Option<BodyMatch>,
}

/// A condition on the response body.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(
    not(target_arch = "wasm32"),
    derive(weir::schemars::JsonSchema),
    schemars(crate = "weir::schemars")
)]
#[serde(deny_unknown_fields)]
pub struct BodyMatch {
    /// Where to look in the body.
    pub path: Pointer,
    /// The value that must be there; without it, any value matches.
    #[serde(default, deserialize_with = "present")]
    pub equals: Option<Value>,
}

/// A JSON value that may be `null`: a present `null` is `Some(Value::Null)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A media type to treat as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaType {
    /// `type/subtype`, lower-cased.
    Exact(String),
    /// A suffix such as `+json`, lower-cased.
    Suffix(String),
}

impl MediaType {
    /// Parses `application/json` or `+json`.
    ///
    /// # Errors
    /// A message if it is neither.
    pub fn parse(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        if let Some(suffix) = lower.strip_prefix('+') {
            if !suffix.is_empty() && suffix.bytes().all(is_token) {
                return Ok(Self::Suffix(lower));
            }
        } else if let Some((t, sub)) = lower.split_once('/')
            && !t.is_empty()
            && !sub.is_empty()
            && t.bytes().all(is_token)
            && sub.bytes().all(is_token)
        {
            return Ok(Self::Exact(lower));
        }
        Err(format!(
            "invalid media type {s:?}: expected `type/subtype` (e.g. `application/json`) or a suffix (e.g. `+json`)"
        ))
    }

    /// Whether a `content-type` value has this media type.
    pub fn matches(&self, content_type: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(content_type) else {
            return false;
        };
        let essence = text.split(';').next().unwrap_or_default().trim();
        match self {
            Self::Exact(t) => essence.eq_ignore_ascii_case(t),
            Self::Suffix(s) => {
                essence.len() > s.len()
                    && essence.contains('/')
                    && essence
                        .get(essence.len() - s.len()..)
                        .is_some_and(|end| end.eq_ignore_ascii_case(s))
            }
        }
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One body operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    /// What it does.
    pub kind: OpKind,
    /// Whether the body is rejected when the operation cannot apply (otherwise
    /// the operation is skipped).
    pub required: bool,
}

/// What an operation does.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// Sets `path` to `value`.
    Set {
        /// Target.
        path: Pointer,
        /// Value.
        value: Value,
        /// Create missing parent objects.
        create: bool,
    },
    /// Removes `path`.
    Remove {
        /// Target.
        path: Pointer,
    },
    /// Renames the member at `path` to `to` in the same object.
    Rename {
        /// The member.
        path: Pointer,
        /// Its new name.
        to: String,
    },
    /// Moves `from` to `path`.
    Move {
        /// Source.
        from: Pointer,
        /// Target.
        path: Pointer,
        /// Create missing parent objects.
        create: bool,
    },
    /// Copies `from` to `path`.
    Copy {
        /// Source.
        from: Pointer,
        /// Target.
        path: Pointer,
        /// Create missing parent objects.
        create: bool,
    },
    /// Wraps the body so that it sits at `path`.
    Wrap {
        /// Where the body goes in the envelope.
        path: Pointer,
    },
    /// Replaces the body with the value at `path`.
    Unwrap {
        /// The value to keep.
        path: Pointer,
    },
    /// Sets `path` to the value of header `header`, as a string.
    HeaderToBody {
        /// The header.
        header: HeaderName,
        /// Target.
        path: Pointer,
        /// Create missing parent objects.
        create: bool,
    },
    /// Sets header `header` to the value at `path`.
    BodyToHeader {
        /// Source.
        path: Pointer,
        /// The header.
        header: HeaderName,
    },
}

impl OpKind {
    /// The operation's name in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Set { .. } => "set",
            Self::Remove { .. } => "remove",
            Self::Rename { .. } => "rename",
            Self::Move { .. } => "move",
            Self::Copy { .. } => "copy",
            Self::Wrap { .. } => "wrap",
            Self::Unwrap { .. } => "unwrap",
            Self::HeaderToBody { .. } => "header_to_body",
            Self::BodyToHeader { .. } => "body_to_header",
        }
    }
}

/// The operation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OpName {
    Set,
    Remove,
    Rename,
    Move,
    Copy,
    Wrap,
    Unwrap,
    HeaderToBody,
    BodyToHeader,
}

/// An operation as written: every field optional, checked per operation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp {
    op: OpName,
    #[serde(default)]
    path: Option<Pointer>,
    #[serde(default)]
    from: Option<Pointer>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    #[serde(default)]
    header: Option<HeaderName>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    create: Option<bool>,
}

/// Checks the fields of one operation.
struct Fields<'a> {
    raw: RawOp,
    name: &'a str,
}

impl Fields<'_> {
    fn need<T>(name: &str, field: &str, v: Option<T>) -> Result<T, String> {
        v.ok_or_else(|| format!("`{name}` needs `{field}`"))
    }

    /// Fails if a field the operation does not use was given.
    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        let r = &self.raw;
        let given = [
            ("path", r.path.is_some()),
            ("from", r.from.is_some()),
            ("to", r.to.is_some()),
            ("value", r.value.is_some()),
            ("header", r.header.is_some()),
            ("create", r.create.is_some()),
        ];
        match given.iter().find(|(f, set)| *set && !allowed.contains(f)) {
            Some((f, _)) => Err(format!("`{}` does not take `{f}`", self.name)),
            None => Ok(()),
        }
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawOp::deserialize(d)?;
        Op::check(raw).map_err(serde::de::Error::custom)
    }
}

impl Op {
    fn check(raw: RawOp) -> Result<Self, String> {
        let name = match raw.op {
            OpName::Set => "set",
            OpName::Remove => "remove",
            OpName::Rename => "rename",
            OpName::Move => "move",
            OpName::Copy => "copy",
            OpName::Wrap => "wrap",
            OpName::Unwrap => "unwrap",
            OpName::HeaderToBody => "header_to_body",
            OpName::BodyToHeader => "body_to_header",
        };
        let op = raw.op;
        let f = Fields { raw, name };
        let create = f.raw.create.unwrap_or(true);
        let required = f.raw.required;
        let kind = match op {
            OpName::Set => {
                f.only(&["path", "value", "create"])?;
                OpKind::Set {
                    path: Fields::need(name, "path", f.raw.path)?,
                    value: Fields::need(name, "value", f.raw.value)?,
                    create,
                }
            }
            OpName::Remove => {
                f.only(&["path"])?;
                let path = Fields::need(name, "path", f.raw.path)?;
                if path.is_root() {
                    return Err("`remove` cannot remove the whole body (`path` is \"\")".to_owned());
                }
                OpKind::Remove { path }
            }
            OpName::Rename => {
                f.only(&["path", "to"])?;
                let path = Fields::need(name, "path", f.raw.path)?;
                let to = Fields::need(name, "to", f.raw.to)?;
                match path.tokens().last() {
                    None => {
                        return Err(
                            "`rename` needs the `path` of an object member, not \"\"".to_owned()
                        );
                    }
                    Some(last) if *last == to => {
                        return Err(format!(
                            "conflicting `rename`: `{path}` already has the name {to:?}"
                        ));
                    }
                    Some(_) => {}
                }
                OpKind::Rename { path, to }
            }
            OpName::Move | OpName::Copy => {
                f.only(&["from", "path", "create"])?;
                let from = Fields::need(name, "from", f.raw.from)?;
                let path = Fields::need(name, "path", f.raw.path)?;
                if op == OpName::Move {
                    if from == path {
                        return Err(format!(
                            "conflicting `move`: `from` and `path` are both `{path}`"
                        ));
                    }
                    if from.is_root() || path.is_inside(&from) {
                        return Err(format!(
                            "conflicting `move`: `{path}` is inside `{from}`, which it moves"
                        ));
                    }
                    OpKind::Move { from, path, create }
                } else {
                    if from == path {
                        return Err(format!(
                            "conflicting `copy`: `from` and `path` are both `{path}`"
                        ));
                    }
                    OpKind::Copy { from, path, create }
                }
            }
            OpName::Wrap | OpName::Unwrap => {
                f.only(&["path"])?;
                let path = Fields::need(name, "path", f.raw.path)?;
                if path.is_root() {
                    return Err(format!(
                        "`{name}` needs a `path` such as \"/data\", not \"\""
                    ));
                }
                if op == OpName::Wrap {
                    OpKind::Wrap { path }
                } else {
                    OpKind::Unwrap { path }
                }
            }
            OpName::HeaderToBody => {
                f.only(&["header", "path", "create"])?;
                OpKind::HeaderToBody {
                    header: Fields::need(name, "header", f.raw.header)?,
                    path: Fields::need(name, "path", f.raw.path)?,
                    create,
                }
            }
            OpName::BodyToHeader => {
                f.only(&["path", "header"])?;
                let header = Fields::need(name, "header", f.raw.header)?;
                if header.is_pseudo()
                    || matches!(
                        header.as_str(),
                        "content-length" | "transfer-encoding" | "host"
                    )
                {
                    return Err(format!(
                        "`body_to_header` cannot write `{}`: pseudo-headers, `host`, `content-length` and `transfer-encoding` are managed by the proxy",
                        header.as_str()
                    ));
                }
                OpKind::BodyToHeader {
                    path: Fields::need(name, "path", f.raw.path)?,
                    header,
                }
            }
        };
        Ok(Self { kind, required })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        if raw.max_body_bytes == 0 || raw.max_body_bytes > MAX_BODY_LIMIT {
            return Err(format!(
                "`max_body_bytes` is {}: it must be 1 to {MAX_BODY_LIMIT}",
                raw.max_body_bytes
            ));
        }
        if raw.content_types.is_empty() {
            return Err("`content_types` is empty: no body would ever be transformed".to_owned());
        }
        for (dir, d) in [("request", &raw.request), ("response", &raw.response)] {
            if d.ops.len() > MAX_OPS {
                return Err(format!(
                    "`{dir}.ops` has {} operations; at most {MAX_OPS} are allowed",
                    d.ops.len()
                ));
            }
            let mut written: Vec<(&str, usize)> = Vec::new();
            for (i, op) in d.ops.iter().enumerate() {
                if let OpKind::BodyToHeader { header, .. } = &op.kind {
                    if !raw.hold_headers {
                        return Err(format!(
                            "`{dir}.ops[{i}]` (`body_to_header`) needs `hold_headers: true`: headers are sent on before the body arrives unless the filter holds them (which needs Envoy's `allow_on_headers_stop_iteration: true`)"
                        ));
                    }
                    if let Some((_, first)) = written.iter().find(|(h, _)| *h == header.as_str()) {
                        return Err(format!(
                            "conflicting operations: `{dir}.ops[{i}]` and `{dir}.ops[{first}]` both write header `{}`",
                            header.as_str()
                        ));
                    }
                    written.push((header.as_str(), i));
                }
            }
        }
        for (i, rule) in raw.status.iter().enumerate() {
            if rule.when.is_some() && !raw.hold_headers {
                return Err(format!(
                    "`status[{i}].when` needs `hold_headers: true`: the status is sent before the body arrives unless the filter holds the headers (which needs Envoy's `allow_on_headers_stop_iteration: true`)"
                ));
            }
            if let Some(j) = raw.status[..i]
                .iter()
                .position(|r| r.from == rule.from && r.when.is_none())
            {
                return Err(format!(
                    "conflicting status rules: `status[{i}]` can never apply, `status[{j}]` already maps every {} response",
                    rule.from.0
                ));
            }
        }
        Ok(Self {
            content_types: raw.content_types,
            max_body_bytes: raw.max_body_bytes,
            on_invalid_json: raw.on_invalid_json,
            hold_headers: raw.hold_headers,
            request: Direction {
                ops: raw.request.ops,
                too_large: raw
                    .request
                    .too_large
                    .unwrap_or_else(|| Reply::new(413, r#"{"error":"request body too large"}"#)),
                invalid: raw
                    .request
                    .invalid
                    .unwrap_or_else(|| Reply::new(400, r#"{"error":"invalid request body"}"#)),
            },
            response: Direction {
                ops: raw.response.ops,
                too_large: raw.response.too_large.unwrap_or_else(|| {
                    Reply::new(502, r#"{"error":"upstream response too large"}"#)
                }),
                invalid: raw
                    .response
                    .invalid
                    .unwrap_or_else(|| Reply::new(502, r#"{"error":"invalid upstream response"}"#)),
            },
            status: raw.status,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod schema {
    //! Hand-written schemas where the Rust type is checked by code: the
    //! operations (one shape per `op`), media types and statuses. Header names
    //! and values have theirs from `weir::config`.

    use std::borrow::Cow;

    use serde_json::Value;
    use weir::schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

    use crate::pointer::Pointer;

    fn default_true() -> bool {
        true
    }

    /// One body operation, by `op`. Operations run in order; one that cannot
    /// apply (nothing at `path`/`from`, a parent that is not an object or array,
    /// an index out of range, a missing header) is skipped, or rejects the body
    /// if `required`.
    #[allow(dead_code, reason = "only its schema is used")]
    #[derive(JsonSchema)]
    #[schemars(crate = "weir::schemars")]
    #[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
    enum OpSchema {
        /// Sets `path` to `value`: replaces a member or element, adds a member,
        /// or appends to an array (`/list/-`). `""` replaces the whole body.
        Set {
            /// Target.
            path: Pointer,
            /// Any JSON value, `null` included.
            value: Value,
            /// Create missing parent members as objects (default true);
            /// with false, a missing parent makes the operation fail.
            #[serde(default = "default_true")]
            create: bool,
            /// Reject the body if the operation cannot apply (default false: skip it).
            #[serde(default)]
            required: bool,
        },
        /// Removes `path` (array elements after it shift down).
        Remove {
            /// Target; not `""`.
            path: Pointer,
            /// Reject the body if there is nothing to remove.
            #[serde(default)]
            required: bool,
        },
        /// Renames the object member at `path` to `to`, in the same object; a
        /// member already named `to` is replaced.
        Rename {
            /// The member.
            path: Pointer,
            /// Its new name (not a pointer).
            to: String,
            /// Reject the body if there is no such member.
            #[serde(default)]
            required: bool,
        },
        /// Moves the value at `from` to `path` (JSON Patch `move`: removed first).
        Move {
            /// Source; `path` must not be inside it.
            from: Pointer,
            /// Target.
            path: Pointer,
            /// Create missing parent members as objects (default true).
            #[serde(default = "default_true")]
            create: bool,
            /// Reject the body if the operation cannot apply.
            #[serde(default)]
            required: bool,
        },
        /// Copies the value at `from` to `path`.
        Copy {
            /// Source.
            from: Pointer,
            /// Target.
            path: Pointer,
            /// Create missing parent members as objects (default true).
            #[serde(default = "default_true")]
            create: bool,
            /// Reject the body if the operation cannot apply.
            #[serde(default)]
            required: bool,
        },
        /// Wraps the body in an envelope: `/data` turns `B` into `{"data": B}`.
        Wrap {
            /// Where the body goes; not `""`.
            path: Pointer,
            /// Reject the body if the result would nest too deeply.
            #[serde(default)]
            required: bool,
        },
        /// Unwraps an envelope: the value at `path` becomes the body, and the
        /// rest of the envelope is dropped.
        Unwrap {
            /// The value to keep; not `""`.
            path: Pointer,
            /// Reject the body if there is nothing at `path`.
            #[serde(default)]
            required: bool,
        },
        /// Sets `path` to the first value of a request (or response) header, as
        /// a JSON string. Pseudo-headers such as `:path` can be read.
        HeaderToBody {
            /// The header.
            header: super::HeaderName,
            /// Target.
            path: Pointer,
            /// Create missing parent members as objects (default true).
            #[serde(default = "default_true")]
            create: bool,
            /// Reject the body if the header is absent or not UTF-8.
            #[serde(default)]
            required: bool,
        },
        /// Sets a header to the body value at `path` (a string, number or
        /// boolean). Needs `hold_headers`.
        BodyToHeader {
            /// Source.
            path: Pointer,
            /// The header; not a pseudo-header, `host`, `content-length` or
            /// `transfer-encoding`.
            header: super::HeaderName,
            /// Reject the body if there is no usable value at `path`.
            #[serde(default)]
            required: bool,
        },
    }

    impl JsonSchema for super::Op {
        fn schema_name() -> Cow<'static, str> {
            "Op".into()
        }

        fn json_schema(generator: &mut SchemaGenerator) -> Schema {
            OpSchema::json_schema(generator)
        }
    }

    impl JsonSchema for super::MediaType {
        fn schema_name() -> Cow<'static, str> {
            "MediaType".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "A media type (`application/json`) or a structured-syntax suffix (`+json`); case-insensitive.",
                "pattern": "^([!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+|\\+[!#$%&'*+.^_`|~0-9A-Za-z-]+)$"
            })
        }
    }

    impl JsonSchema for super::Status {
        fn schema_name() -> Cow<'static, str> {
            "Status".into()
        }

        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "integer",
                "description": "A final HTTP status code.",
                "minimum": 200,
                "maximum": 599
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        weir::parse_config::<Config>(json.as_bytes()).map_err(|e| e.to_string())
    }

    fn error(json: &str) -> String {
        parse(json).expect_err("invalid config")
    }

    #[test]
    fn empty_config_has_defaults() {
        let c = parse("").expect("empty is fine");
        assert_eq!(c.max_body_bytes, 256 * 1024);
        assert_eq!(c.on_invalid_json, OnInvalidJson::Pass);
        assert!(c.content_types[0].matches(b"application/json; charset=utf-8"));
        assert!(c.content_types[1].matches(b"application/problem+JSON"));
        assert!(!c.content_types[1].matches(b"+json"));
        assert!(!c.content_types[0].matches(b"text/json"));
        assert!(!c.content_types[0].matches(b"application/json\xff"));
        assert_eq!(c.request.too_large.status.0, 413);
        assert_eq!(c.request.invalid.status.0, 400);
        assert_eq!(c.response.invalid.status.0, 502);
    }

    #[test]
    fn parses_every_operation() {
        let c = parse(
            r#"{
              "hold_headers": true,
              "on_invalid_json": "reject",
              "content_types": ["application/vnd.api+json", "+json"],
              "request": {"ops": [
                {"op": "set", "path": "/a/b", "value": null, "create": false},
                {"op": "remove", "path": "/x~1y", "required": true},
                {"op": "rename", "path": "/userName", "to": "user_name"},
                {"op": "move", "from": "/a", "path": "/b"},
                {"op": "copy", "from": "/b", "path": "/b/copy"},
                {"op": "wrap", "path": "/data"},
                {"op": "unwrap", "path": "/data"},
                {"op": "header_to_body", "header": "X-Tenant", "path": "/tenant"},
                {"op": "body_to_header", "path": "/id", "header": "x-id"}
              ], "invalid": {"status": 422, "body": "no", "content_type": "text/plain"}},
              "status": [{"from": 404, "to": 200, "when": {"path": "/code", "equals": "gone"}},
                         {"from": 404, "to": 410}]
            }"#,
        )
        .expect("valid");
        let ops = &c.request.ops;
        assert_eq!(ops.len(), 9);
        assert_eq!(
            ops[0].kind,
            OpKind::Set {
                path: Pointer::parse("/a/b").expect("p"),
                value: json!(null),
                create: false
            }
        );
        assert!(ops[1].required);
        assert!(
            matches!(&ops[7].kind, OpKind::HeaderToBody { header, create: true, .. } if header.as_str() == "x-tenant")
        );
        assert_eq!(c.request.invalid.status.0, 422);
        assert_eq!(
            c.status[0].when.as_ref().and_then(|w| w.equals.clone()),
            Some(json!("gone"))
        );
    }

    #[test]
    fn bad_pointers_are_named() {
        let e = error(r#"{"request": {"ops": [{"op": "remove", "path": "a/b"}]}}"#);
        assert!(e.contains("request.ops[0].path"), "{e}");
        assert!(e.contains("starts with `/`"), "{e}");
        let e = error(
            r#"{"response": {"ops": [{"op": "set", "path": "/ok", "value": 1}, {"op": "set", "path": "/a~2", "value": 1}]}}"#,
        );
        assert!(e.contains("response.ops[1].path"), "{e}");
        assert!(e.contains("followed by `0`"), "{e}");
        let e = error(
            r#"{"status": [{"from": 404, "to": 200, "when": {"path": "x"}}], "hold_headers": true}"#,
        );
        assert!(e.contains("status[0].when.path"), "{e}");
    }

    #[test]
    fn operations_need_their_fields_and_only_those() {
        let e = error(r#"{"request": {"ops": [{"op": "set", "path": "/a"}]}}"#);
        assert!(
            e.contains("request.ops[0]") && e.contains("`set` needs `value`"),
            "{e}"
        );
        let e = error(r#"{"request": {"ops": [{"op": "remove", "path": "/a", "value": 1}]}}"#);
        assert!(e.contains("`remove` does not take `value`"), "{e}");
        let e = error(r#"{"request": {"ops": [{"op": "explode", "path": "/a"}]}}"#);
        assert!(
            e.contains("request.ops[0].op") && e.contains("unknown variant"),
            "{e}"
        );
        let e = error(r#"{"request": {"ops": [{"op": "remove", "path": "/a", "pth": 1}]}}"#);
        assert!(e.contains("unknown field `pth`"), "{e}");
    }

    #[test]
    fn conflicting_operations_are_rejected() {
        for (ops, want) in [
            (r#"{"op": "move", "from": "/a", "path": "/a"}"#, "both `/a`"),
            (
                r#"{"op": "move", "from": "/a", "path": "/a/b"}"#,
                "inside `/a`",
            ),
            (r#"{"op": "move", "from": "", "path": "/a"}"#, "inside"),
            (r#"{"op": "copy", "from": "/a", "path": "/a"}"#, "both `/a`"),
            (
                r#"{"op": "rename", "path": "/a", "to": "a"}"#,
                "already has the name",
            ),
            (r#"{"op": "rename", "path": "", "to": "a"}"#, "not \"\""),
            (r#"{"op": "remove", "path": ""}"#, "whole body"),
            (r#"{"op": "wrap", "path": ""}"#, "not \"\""),
            (r#"{"op": "unwrap", "path": ""}"#, "not \"\""),
        ] {
            let e = error(&format!(r#"{{"request": {{"ops": [{ops}]}}}}"#));
            assert!(
                e.contains("request.ops[0]") && e.contains(want),
                "{ops}: {e}"
            );
        }
        let e = error(
            r#"{"hold_headers": true, "response": {"ops": [
                {"op": "body_to_header", "path": "/a", "header": "x-a"},
                {"op": "body_to_header", "path": "/b", "header": "X-A"}]}}"#,
        );
        assert!(
            e.contains("`response.ops[1]` and `response.ops[0]` both write header `x-a`"),
            "{e}"
        );
        let e = error(r#"{"status": [{"from": 404, "to": 200}, {"from": 404, "to": 410}]}"#);
        assert!(e.contains("`status[1]` can never apply"), "{e}");
    }

    #[test]
    fn features_that_need_held_headers_say_so() {
        let e = error(
            r#"{"request": {"ops": [{"op": "body_to_header", "path": "/a", "header": "x-a"}]}}"#,
        );
        assert!(
            e.contains("`request.ops[0]` (`body_to_header`) needs `hold_headers: true`"),
            "{e}"
        );
        assert!(e.contains("allow_on_headers_stop_iteration"), "{e}");
        let e = error(r#"{"status": [{"from": 404, "to": 200, "when": {"path": "/a"}}]}"#);
        assert!(
            e.contains("`status[0].when` needs `hold_headers: true`"),
            "{e}"
        );
    }

    #[test]
    fn invalid_header_names_and_values_are_named() {
        let e = error(
            r#"{"request": {"ops": [{"op": "header_to_body", "header": "x tenant", "path": "/t"}]}}"#,
        );
        assert!(
            e.contains("request.ops[0].header") && e.contains("' ' is not allowed"),
            "{e}"
        );
        let e = error(
            r#"{"hold_headers": true, "request": {"ops": [{"op": "body_to_header", "header": ":path", "path": "/t"}]}}"#,
        );
        assert!(e.contains("cannot write `:path`"), "{e}");
        let e = error(
            r#"{"hold_headers": true, "request": {"ops": [{"op": "body_to_header", "header": "Content-Length", "path": "/t"}]}}"#,
        );
        assert!(e.contains("cannot write `content-length`"), "{e}");
        let e = error(r#"{"request": {"invalid": {"status": 400, "content_type": "a\nb"}}}"#);
        assert!(
            e.contains("request.invalid.content_type") && e.contains("CR, LF"),
            "{e}"
        );
        let e = error(r#"{"content_types": ["json"]}"#);
        assert!(
            e.contains("content_types[0]") && e.contains("invalid media type"),
            "{e}"
        );
        let e = error(r#"{"content_types": []}"#);
        assert!(e.contains("`content_types` is empty"), "{e}");
    }

    #[test]
    fn statuses_out_of_range_are_named() {
        for (json, at) in [
            (r#"{"status": [{"from": 404, "to": 99}]}"#, "status[0].to"),
            (
                r#"{"status": [{"from": 600, "to": 200}]}"#,
                "status[0].from",
            ),
            (r#"{"status": [{"from": 404, "to": 100}]}"#, "status[0].to"),
            (
                r#"{"request": {"too_large": {"status": 70000}}}"#,
                "request.too_large.status",
            ),
            (
                r#"{"response": {"invalid": {"status": -1}}}"#,
                "response.invalid.status",
            ),
        ] {
            let e = error(json);
            assert!(e.contains(at), "{json}: {e}");
        }
        assert!(error(r#"{"status": [{"from": 404, "to": 99}]}"#).contains("out of range"));
    }

    #[test]
    fn limits_are_checked() {
        let e = error(r#"{"max_body_bytes": 0}"#);
        assert!(e.contains("`max_body_bytes` is 0"), "{e}");
        let e = error(r#"{"max_body_bytes": 100000000000}"#);
        assert!(e.contains("max_body_bytes"), "{e}");
        let ops = vec![r#"{"op": "remove", "path": "/a"}"#; MAX_OPS + 1].join(",");
        let e = error(&format!(r#"{{"request": {{"ops": [{ops}]}}}}"#));
        assert!(e.contains("at most 64"), "{e}");
        let deep = "/a".repeat(crate::pointer::MAX_TOKENS + 1);
        let e = error(&format!(
            r#"{{"request": {{"ops": [{{"op": "remove", "path": "{deep}"}}]}}}}"#
        ));
        assert!(
            e.contains("request.ops[0].path") && e.contains("more than 32"),
            "{e}"
        );
    }

    /// `config.schema.json` (published by `weir push`) is generated from `Config`;
    /// `WEIR_UPDATE_SCHEMA=1 cargo test -p transform-core` rewrites it.
    #[test]
    fn the_published_schema_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.schema.json");
        let generated = weir::config_schema::<Config>();
        if std::env::var_os("WEIR_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &generated).expect("write the schema");
        }
        let published = std::fs::read_to_string(&path).expect("config.schema.json");
        assert_eq!(
            published, generated,
            "config.schema.json is stale: run WEIR_UPDATE_SCHEMA=1 cargo test -p transform-core"
        );
        let schema: Value = serde_json::from_str(&generated).expect("JSON");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["title"], "transform configuration");
        let ops = schema["$defs"]["Op"]["oneOf"]
            .as_array()
            .expect("one shape per op");
        assert_eq!(ops.len(), 9);
        assert_eq!(schema["$defs"]["Status"]["maximum"], 599);
    }
}
