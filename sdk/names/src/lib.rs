//! HTTP header names and values for filter configuration types, validated
//! when the configuration is parsed, so that a bad name or value fails
//! `on_configure` with its field named instead of failing a request later.
//!
//! The SDK re-exports these as `weir::config::{HeaderName, HeaderValue,
//! is_token}`; this crate depends on no proxy-wasm SDK, so filter logic kept in
//! SDK-independent crates can use the same types.
//!
//! ```
//! #[derive(Debug, serde::Deserialize)]
//! struct Config {
//!     name: weir_names::HeaderName,
//!     value: weir_names::HeaderValue,
//! }
//!
//! let config: Config = serde_json::from_str(r#"{"name": "X-Env", "value": "prod"}"#).unwrap();
//! assert_eq!(config.name.as_str(), "x-env");
//! assert_eq!(config.value.as_str(), "prod");
//!
//! let err = serde_json::from_str::<Config>(r#"{"name": "x env", "value": ""}"#).unwrap_err();
//! assert!(err.to_string().contains("character ' ' is not allowed"));
//! ```

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
/// use weir_names::HeaderName;
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
/// use weir_names::HeaderValue;
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

    #[test]
    fn names_are_tokens_or_pseudo_headers_and_lower_cased() {
        assert_eq!(
            HeaderName::parse("X-Env").map(|n| n.to_string()),
            Ok("x-env".to_owned())
        );
        assert!(HeaderName::parse(":authority").is_ok_and(|n| n.is_pseudo()));
        assert!(!HeaderName::parse("x").is_ok_and(|n| n.is_pseudo()));
        for bad in ["", ":", "a b", "a:b", "é", "a\r"] {
            assert!(HeaderName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_refuse_cr_lf_and_nul() {
        assert_eq!(
            HeaderValue::parse("a b;c=d").map(|v| v.as_str().to_owned()),
            Ok("a b;c=d".to_owned())
        );
        for bad in ["a\rb", "a\nb", "a\0b"] {
            let err = HeaderValue::parse(bad).expect_err(bad);
            assert!(err.contains("CR, LF and NUL"), "{err}");
        }
    }
}
