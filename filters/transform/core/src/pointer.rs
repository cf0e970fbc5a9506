//! JSON Pointers (RFC 6901), parsed once when the plugin is configured.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// The most reference tokens a pointer may have. Together with the document depth
/// limit it keeps every recursive walk of a body shallow.
pub const MAX_TOKENS: usize = 32;

/// A parsed JSON Pointer: `""` is the whole document, `/a/0/b~1c` is member `a`,
/// element 0, member `b/c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

/// Why a string is not a JSON Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PointerError {
    /// A non-empty pointer must start with `/`.
    NoLeadingSlash,
    /// `~` must be followed by `0` (for `~`) or `1` (for `/`).
    BadEscape {
        /// Byte offset of the `~`.
        at: usize,
    },
    /// More than [`MAX_TOKENS`] reference tokens.
    TooDeep,
}

impl fmt::Display for PointerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLeadingSlash => f.write_str("a JSON Pointer is empty or starts with `/`"),
            Self::BadEscape { at } => write!(
                f,
                "`~` at byte {at} must be followed by `0` (for `~`) or `1` (for `/`)"
            ),
            Self::TooDeep => write!(f, "more than {MAX_TOKENS} reference tokens"),
        }
    }
}

impl Pointer {
    /// Parses `text` as an RFC 6901 JSON Pointer.
    ///
    /// # Errors
    /// [`PointerError`] naming the problem.
    pub fn parse(text: &str) -> Result<Self, PointerError> {
        if text.is_empty() {
            return Ok(Self::root());
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash);
        };
        let mut tokens = Vec::new();
        let mut offset = 1;
        for raw in rest.split('/') {
            if tokens.len() == MAX_TOKENS {
                return Err(PointerError::TooDeep);
            }
            tokens.push(unescape(raw, offset)?);
            offset += raw.len() + 1;
        }
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer to the whole document (`""`).
    pub fn root() -> Self {
        Self {
            text: String::new(),
            tokens: Vec::new(),
        }
    }

    /// A pointer from unescaped reference tokens.
    ///
    /// # Errors
    /// [`PointerError::TooDeep`] past [`MAX_TOKENS`].
    pub fn from_tokens(tokens: Vec<String>) -> Result<Self, PointerError> {
        if tokens.len() > MAX_TOKENS {
            return Err(PointerError::TooDeep);
        }
        let mut text = String::new();
        for t in &tokens {
            text.push('/');
            text.push_str(&t.replace('~', "~0").replace('/', "~1"));
        }
        Ok(Self { text, tokens })
    }

    /// The unescaped reference tokens.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Whether this is the whole document.
    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `self` points strictly inside `other` (`/a/b` is inside `/a`).
    pub fn is_inside(&self, other: &Self) -> bool {
        self.tokens.len() > other.tokens.len() && self.tokens.starts_with(&other.tokens)
    }

    /// The pointer to the first `n` tokens, as text (for messages).
    pub fn prefix_text(&self, n: usize) -> String {
        let mut text = String::new();
        for t in self.tokens.iter().take(n) {
            text.push('/');
            text.push_str(&t.replace('~', "~0").replace('/', "~1"));
        }
        text
    }
}

fn unescape(raw: &str, offset: usize) -> Result<String, PointerError> {
    if !raw.contains('~') {
        return Ok(raw.to_owned());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '0')) => out.push('~'),
            Some((_, '1')) => out.push('/'),
            _ => return Err(PointerError::BadEscape { at: offset + i }),
        }
    }
    Ok(out)
}

/// An array index token: `0` or digits without a leading zero (RFC 6901 §4).
pub fn array_index(token: &str) -> Option<usize> {
    let bytes = token.as_bytes();
    let well_formed = match bytes {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if well_formed {
        token.parse().ok()
    } else {
        None
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            f.write_str("(the whole body)")
        } else {
            f.write_str(&self.text)
        }
    }
}

impl<'de> Deserialize<'de> for Pointer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid JSON Pointer {s:?}: {e}")))
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl weir::schemars::JsonSchema for Pointer {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JsonPointer".into()
    }

    fn json_schema(_: &mut weir::schemars::SchemaGenerator) -> weir::schemars::Schema {
        weir::schemars::json_schema!({
            "type": "string",
            "description": "An RFC 6901 JSON Pointer: \"\" is the whole body, \"/a/0/b~1c\" is member `a`, element 0, member `b/c` (`~0` is `~`, `~1` is `/`). At most 32 tokens.",
            "pattern": "^(/([^~/]|~[01])*)*$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(p: &str) -> Vec<String> {
        Pointer::parse(p).expect("valid").tokens().to_vec()
    }

    #[test]
    fn parses_rfc_6901_examples() {
        assert!(Pointer::parse("").expect("root").is_root());
        assert_eq!(tokens("/foo"), ["foo"]);
        assert_eq!(tokens("/foo/0"), ["foo", "0"]);
        assert_eq!(tokens("/"), [""]);
        assert_eq!(tokens("/a~1b"), ["a/b"]);
        assert_eq!(tokens("/m~0n"), ["m~n"]);
        assert_eq!(tokens("/~01"), ["~1"], "~01 is ~ then 1, not /");
        assert_eq!(tokens("/c%d"), ["c%d"]);
        assert_eq!(tokens("/ "), [" "]);
        assert_eq!(tokens("//x"), ["", "x"]);
        assert_eq!(tokens("/é/ü"), ["é", "ü"]);
    }

    #[test]
    fn rejects_malformed_pointers() {
        assert_eq!(Pointer::parse("a"), Err(PointerError::NoLeadingSlash));
        assert_eq!(
            Pointer::parse("/a~"),
            Err(PointerError::BadEscape { at: 2 })
        );
        assert_eq!(
            Pointer::parse("/ok/x~2"),
            Err(PointerError::BadEscape { at: 5 })
        );
        let deep = "/a".repeat(MAX_TOKENS + 1);
        assert_eq!(Pointer::parse(&deep), Err(PointerError::TooDeep));
        assert!(Pointer::parse(&"/a".repeat(MAX_TOKENS)).is_ok());
    }

    #[test]
    fn array_indexes_follow_the_rfc() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("17"), Some(17));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-"), None);
        assert_eq!(array_index("1e3"), None);
        assert_eq!(array_index(""), None);
        assert_eq!(array_index("99999999999999999999999"), None);
    }

    #[test]
    fn round_trips_through_tokens() {
        let p = Pointer::parse("/a~1b/m~0n/0").expect("valid");
        let q = Pointer::from_tokens(p.tokens().to_vec()).expect("short");
        assert_eq!(p, q);
        assert_eq!(q.as_str(), "/a~1b/m~0n/0");
    }

    #[test]
    fn nesting() {
        let a = Pointer::parse("/a").expect("valid");
        let ab = Pointer::parse("/a/b").expect("valid");
        let abc = Pointer::parse("/abc").expect("valid");
        assert!(ab.is_inside(&a));
        assert!(!a.is_inside(&a));
        assert!(!abc.is_inside(&a));
        assert!(a.is_inside(&Pointer::root()));
    }
}
