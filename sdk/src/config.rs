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

pub use weir_names::{HeaderName, HeaderValue, is_token};

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
