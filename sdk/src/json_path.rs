//! Field paths for JSON errors, recovered from the error's position.
//!
//! serde_json reports where in the text an error was detected; scanning the text up
//! to that point tells which key or array element was being read. This names the
//! field (`request.set[1].name`) without wrapping every `Deserialize` impl in a
//! path-tracking deserializer, which would roughly double the deserialization code
//! in every filter module.

use serde::de::DeserializeOwned;

/// Deserializes `T` from a complete JSON document (trailing whitespace allowed).
///
/// # Errors
/// `(path, message)`: the path of the offending field (`.` for the document
/// itself) and serde's description of the problem.
pub(crate) fn from_slice<T: DeserializeOwned>(text: &[u8]) -> Result<T, (String, String)> {
    serde_json::from_slice(text).map_err(|e| {
        let message = e.to_string_without_position();
        // These are detected at the closing bracket and are about the container.
        let container = ["missing field", "invalid length", "trailing characters"]
            .iter()
            .any(|m| message.starts_with(m));
        (path_of(text, &e, container), message)
    })
}

trait WithoutPosition {
    fn to_string_without_position(&self) -> String;
}

impl WithoutPosition for serde_json::Error {
    /// serde_json appends ` at line L column C`; the path replaces that.
    fn to_string_without_position(&self) -> String {
        let full = self.to_string();
        let position = format!(" at line {} column {}", self.line(), self.column());
        // Byte comparison keeps string searchers out of filter modules.
        if self.line() > 0 && full.as_bytes().ends_with(position.as_bytes()) {
            full[..full.len() - position.len()].to_owned()
        } else {
            full
        }
    }
}

/// The path of the field `error` is about.
fn path_of(text: &[u8], error: &serde_json::Error, container: bool) -> String {
    // Lines are 1-based; the column counts the bytes read on that line.
    let line_start = if error.line() <= 1 {
        0
    } else {
        text.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(error.line() - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    path_at(text, line_start.saturating_add(error.column()), container)
}

enum Frame {
    Object {
        key: Option<String>,
        expect_key: bool,
    },
    Array {
        index: usize,
    },
}

/// The path of the value being read once `text[..offset]` has been consumed.
///
/// With `container`, the error is about a container as a whole (a missing field,
/// a wrong length), detected at its closing bracket: if that bracket is next, the
/// container's own path is returned.
pub(crate) fn path_at(text: &[u8], offset: usize, container: bool) -> String {
    let end = offset.min(text.len());
    let mut stack: Vec<Frame> = Vec::new();
    // A container that was just closed. Errors a field's own `Deserialize` raises
    // are positioned after the enclosing container's closing bracket when the field
    // is its last, so the pop waits for the next token.
    let mut just_closed = false;
    let mut i = 0;
    while i < end {
        let b = text[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if std::mem::take(&mut just_closed) {
            stack.pop();
        }
        match b {
            b'{' => stack.push(Frame::Object {
                key: None,
                expect_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => just_closed = true,
            b',' => match stack.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                None => {}
            },
            b'"' => {
                let (string, next) = scan_string(text, i + 1, end);
                if let Some(Frame::Object { key, expect_key }) = stack.last_mut()
                    && *expect_key
                {
                    *key = Some(string);
                    *expect_key = false;
                }
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if container {
        // The container is the subject: close it whether or not serde_json has
        // consumed its closing bracket yet.
        let next = text[end..].iter().find(|b| !b.is_ascii_whitespace());
        if just_closed || matches!(next, Some(b'}' | b']')) {
            stack.pop();
        }
    }
    render(&stack)
}

/// Reads a string body starting after its opening quote; returns its text
/// (unescaped when complete) and the index after the closing quote (or `end`).
fn scan_string(text: &[u8], start: usize, end: usize) -> (String, usize) {
    let mut i = start;
    while i < end {
        match text[i] {
            b'\\' => i += 2,
            b'"' => {
                let quoted = &text[start - 1..=i];
                let string = serde_json::from_slice(quoted)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&text[start..i]).into_owned());
                return (string, i + 1);
            }
            _ => i += 1,
        }
    }
    (
        String::from_utf8_lossy(&text[start..end.min(text.len())]).into_owned(),
        end,
    )
}

fn render(stack: &[Frame]) -> String {
    let mut path = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    if path.is_empty() {
        path.push('.');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Config {
        request: Changes,
        response: Changes,
        limit: u32,
        mode: Mode,
        pairs: Vec<(String, u8)>,
        labels: BTreeMap<String, Vec<u16>>,
        nested: Option<Box<Config>>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Changes {
        remove: Vec<String>,
        set: Vec<Header>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only parsed")]
    struct Header {
        name: Name,
        value: String,
    }

    #[derive(Debug, Default)]
    struct Name;

    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            if s.contains(' ') {
                return Err(serde::de::Error::custom("no spaces"));
            }
            Ok(Name)
        }
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        #[default]
        Strict,
        Lenient,
    }

    /// The path serde_path_to_error reports, for comparison.
    fn reference(text: &str) -> String {
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, Config>(&mut de) {
            Err(e) => e.path().to_string(),
            Ok(_) => match de.end() {
                Err(_) => ".".to_owned(),
                Ok(()) => panic!("{text} is valid"),
            },
        }
    }

    const BAD: &[&str] = &[
        r#"{"limit": "x"}"#,
        r#"{"limit": -1}"#,
        r#"{"limit": 1.5}"#,
        r#"{"limit": 99999999999}"#,
        r#"{"limt": 1}"#,
        r#"{"request": {"set": [{"name": "a", "value": "b"}, {"name": "a b", "value": "c"}]}}"#,
        r#"{"request": {"set": [{"name": "a", "value": "b"}, {"name": "ab"}]}}"#,
        r#"{"request": {"set": [{"name": "a", "value": 7}]}}"#,
        r#"{"request": {"set": {"name": "a"}}}"#,
        r#"{"request": {"remove": ["a", 1, "c"]}}"#,
        r#"{"request": {"remove": "a"}}"#,
        r#"{"request": 5}"#,
        r#"{"request": [["x"], [], 4]}"#,
        r#"{"request": {"bogus": 1}}"#,
        r#"{"response": {"set": [{"name": "x", "value": "y", "extra": true}]}}"#,
        r#"{"mode": "loose"}"#,
        r#"{"mode": 3}"#,
        r#"{"pairs": [["a", 1], ["b"]]}"#,
        r#"{"pairs": [["a", 1], ["b", 300]]}"#,
        r#"{"pairs": [["a", 1, 2]]}"#,
        r#"{"labels": {"x": [1, 2], "y": [3, "4"]}}"#,
        r#"{"labels": {"x": 1}}"#,
        r#"{"nested": {"nested": {"limit": true}}}"#,
        r#"{"nested": {"request": {"set": [{"value": "v", "name": "n m"}]}}}"#,
        "{\n  \"request\": {\n    \"set\": [\n      {\"name\": \"ok\", \"value\": \"1\"},\n      {\"name\": \"not ok\", \"value\": \"2\"}\n    ]\n  }\n}",
        r#"{"request": {"set": [{"name": "a\"b c", "value": "1"}]}}"#,
        r#"{"la\"bels": 1}"#,
        r#"[1]"#,
        r#""x""#,
    ];

    /// Syntax errors: the reference has no path for most, ours names the last key.
    const SYNTAX: &[(&str, &str)] = &[
        (r#"{"limit": 1,}"#, "limit"),
        (r#"{"limit": 1"#, "limit"),
        (
            r#"{"request": {"set": [{"name": "a", "value": "b"}"#,
            "request.set[0].value",
        ),
        (r#"{"limit" 1}"#, "limit"),
        (r#"{"limit": tru}"#, "limit"),
        (r#"{"limit": 1} {"#, "."),
    ];

    #[test]
    fn paths_match_a_path_tracking_deserializer() {
        for text in BAD {
            let (ours, message) = from_slice::<Config>(text.as_bytes()).expect_err(text);
            assert_eq!(ours, reference(text), "{text}: {message}");
            assert!(!message.contains(" at line "), "{message}");
        }
    }

    #[test]
    fn syntax_errors_name_where_the_parser_stopped() {
        for (text, path) in SYNTAX {
            let (ours, message) = from_slice::<Config>(text.as_bytes()).expect_err(text);
            assert_eq!(&ours, path, "{text}: {message}");
        }
    }

    #[test]
    fn valid_documents_parse() {
        let c: Config =
            from_slice(br#"{"limit": 3, "mode": "lenient", "labels": {"a": [1]}}"#).expect("valid");
        assert_eq!(c.limit, 3);
        assert!(matches!(c.mode, Mode::Lenient));
    }

    #[test]
    fn invalid_utf8_is_an_error_not_a_panic() {
        let (path, message) = from_slice::<Config>(b"{\"a\xff\": 1}").expect_err("not UTF-8");
        assert_eq!(path, "a\u{fffd}");
        assert!(message.contains("invalid unicode"), "{message}");
        let (path, _) = from_slice::<Config>(b"{\"limit\": \"\xff\"}").expect_err("not UTF-8");
        assert_eq!(path, "limit");
    }

    #[test]
    fn offsets_past_the_end_are_clamped() {
        assert_eq!(path_at(br#"{"a": [1, 2"#, 1000, false), "a[1]");
        assert_eq!(path_at(b"", 5, true), ".");
        assert_eq!(path_at(br#"{"unterminated"#, 1000, false), "unterminated");
    }
}
