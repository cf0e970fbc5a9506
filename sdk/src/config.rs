//! Typed plugin configuration: parsing with field paths in errors, the JSON
//! Schema for tooling, and validated header types for configuration structs.

use serde::de::DeserializeOwned;

use crate::{Error, ErrorKind, Result};

/// Parses a plugin configuration document into `T`.
///
/// An empty configuration is read as `{}`, so a config type whose fields all have
/// defaults accepts it; a type that takes no configuration, `()`, accepts an
/// empty configuration and `{}`. Errors name the offending field as a path such as
/// `request.add[1].value`.
///
/// # Examples
/// ```
/// #[derive(serde::Deserialize, Debug)]
/// #[serde(deny_unknown_fields)]
/// struct Config { limit: u32 }
///
/// let ok: Config = weir::parse_config(br#"{"limit": 3}"#).unwrap();
/// assert_eq!(ok.limit, 3);
///
/// let err = weir::parse_config::<Config>(br#"{"limit": "three"}"#).unwrap_err();
/// assert!(err.to_string().starts_with("invalid configuration at `limit`"));
/// ```
///
/// # Errors
/// [`ErrorKind::Config`] when the bytes are not JSON or do not match `T`.
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let empty = bytes.iter().all(u8::is_ascii_whitespace);
    let bytes: &[u8] = if empty { b"{}" } else { bytes };
    crate::json_path::from_slice(bytes).or_else(|(path, message)| {
        // A type that takes no object, such as `()`, reads "nothing" (an empty
        // or `{}` configuration) as `null`.
        if (empty || is_empty_object(bytes))
            && let Ok(config) = crate::json_path::from_slice(b"null")
        {
            return Ok(config);
        }
        Err(Error::from(ErrorKind::Config { path, message }))
    })
}

/// Reads the configuration buffer `buffer` (`size` bytes, as the host announced)
/// and parses it into `T` (see [`parse_config`]); `target` names it in a host
/// error.
pub(crate) fn read_config<T: DeserializeOwned>(
    buffer: crate::host::BufferType,
    size: usize,
    target: &'static str,
) -> Result<T> {
    let bytes = crate::host::get_buffer(buffer, 0, size)
        .map_err(|status| Error::host("proxy_get_buffer_bytes", target, status))?
        .unwrap_or_default();
    parse_config(&bytes)
}

/// `{}`, with any whitespace.
fn is_empty_object(bytes: &[u8]) -> bool {
    let mut rest = bytes.iter().filter(|b| !b.is_ascii_whitespace());
    rest.next() == Some(&b'{') && rest.next() == Some(&b'}') && rest.next().is_none()
}

/// The JSON Schema (draft 2020-12) of a configuration type, as pretty JSON, for
/// tooling: editors, `weir push` (which publishes a filter's
/// `config.schema.json`), admission checks. Derive `schemars::JsonSchema` on the
/// config type in native builds (the feature is not meant for the module).
///
/// # Examples
/// ```
/// /// Rate limits.
/// #[derive(serde::Deserialize, weir::schemars::JsonSchema)]
/// #[schemars(crate = "weir::schemars")]
/// #[serde(deny_unknown_fields)]
/// struct Config {
///     /// Requests per second.
///     limit: u32,
/// }
/// let schema = weir::config_schema::<Config>();
/// assert!(schema.contains(r#""limit""#));
/// assert!(schema.contains("Requests per second."));
/// ```
#[cfg(feature = "schema")]
pub fn config_schema<T: schemars::JsonSchema>() -> String {
    let schema = schemars::schema_for!(T);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// Whether `b` may appear in an HTTP token (RFC 9110 `tchar`): header names,
/// methods, media type parts.
pub fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header name in a configuration type: validated when the configuration is
/// parsed (token characters, or a pseudo-header such as `:path`) and
/// lower-cased. A bad name fails `on_configure` with its field named.
///
/// # Examples
/// ```
/// use weir::config::HeaderName;
///
/// assert_eq!(HeaderName::parse("X-Env").unwrap().as_str(), "x-env");
/// assert!(HeaderName::parse(":path").unwrap().is_pseudo());
/// assert!(HeaderName::parse("x env").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderName(String);

impl HeaderName {
    /// Validates and lower-cases `name`.
    ///
    /// # Errors
    /// A message naming the problem if `name` is not a valid header name.
    pub fn parse(name: &str) -> std::result::Result<Self, String> {
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

    /// Whether it is a pseudo-header (`:path`, `:status`, ...).
    pub fn is_pseudo(&self) -> bool {
        self.0.starts_with(':')
    }
}

impl std::fmt::Display for HeaderName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for HeaderName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A header value in a configuration type: validated when the configuration is
/// parsed (no CR, LF or NUL, which Envoy would refuse).
///
/// # Examples
/// ```
/// use weir::config::HeaderValue;
///
/// assert_eq!(HeaderValue::parse("no-store").unwrap().as_str(), "no-store");
/// assert!(HeaderValue::parse("a\r\nb").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HeaderValue(String);

impl HeaderValue {
    /// Validates `value`.
    ///
    /// # Errors
    /// A message naming the problem if `value` contains CR, LF or NUL.
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(format!(
                "invalid header value {value:?}: CR, LF and NUL are not allowed"
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for HeaderValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
mod schema {
    use std::borrow::Cow;

    use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Nested {
        items: Vec<Item>,
    }

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[allow(dead_code, reason = "only parsed")]
        name: String,
    }

    #[test]
    fn empty_config_is_an_empty_object() {
        let n: Nested = parse_config(b"").expect("defaults");
        assert!(n.items.is_empty());
        let n: Nested = parse_config(b"  \n").expect("defaults");
        assert!(n.items.is_empty());
    }

    #[test]
    fn a_unit_config_takes_nothing_or_an_empty_object() {
        for text in [&b""[..], b" ", b"{}", b" { } ", b"null"] {
            parse_config::<()>(text).expect("no configuration");
        }
        let err = parse_config::<()>(br#"{"a": 1}"#).expect_err("not empty");
        assert!(err.to_string().contains("expected unit"), "{err}");
        // A struct with a required field still reports the field, not `null`.
        let err = parse_config::<Item>(b"").expect_err("name is required");
        assert!(err.to_string().contains("missing field `name`"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse_config::<Nested>(br#"{"items": [{"name": "a"}, {"name": 7}]}"#)
            .expect_err("bad type");
        let ErrorKind::Config { path, message } = err.kind() else {
            panic!("wrong error: {err}")
        };
        assert_eq!(path, "items[1].name");
        assert!(message.contains("expected a string"), "{message}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = parse_config::<Nested>(br#"{"itmes": []}"#).expect_err("typo");
        assert!(err.to_string().contains("unknown field `itmes`"), "{err}");
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        assert!(parse_config::<Nested>(br#"{} x"#).is_err());
        assert!(parse_config::<Nested>(b"not json").is_err());
    }
}
