//! Header value templates: literal text with `{expression}`s, parsed once at
//! configure time.
//!
//! ```text
//! template   := ( text | "{{" | "}}" | expression )*
//! expression := "{" source ( "|" default )? "}"
//! source     := "request.header." NAME | "response.header." NAME
//!             | "request.path" | "request.method" | "request.host" | "request.scheme"
//!             | "request_id" | "attr:" ATTRIBUTE
//! default    := any text without "{", "}", CR, LF or NUL (may be empty)
//! ```
//!
//! `{{` and `}}` stand for literal braces. The first `|` in an expression starts
//! its default, so a header whose name contains `|` (a legal but unheard-of
//! token character) cannot be read by a template. An expression whose value is absent or
//! empty takes its default; without a default the whole template has no value
//! and the operation using it is skipped.

use std::fmt;

use crate::HeaderName;
use crate::attributes::{self, Attribute, Availability};

/// Which headers a template is applied to: decides which sources it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Request headers, on their way upstream.
    Request,
    /// Response headers, on their way to the client.
    Response,
}

impl Phase {
    /// `request` or `response`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
        }
    }
}

/// Where an expression's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The first value of a request header (pseudo-headers included).
    RequestHeader(HeaderName),
    /// The first value of a response header.
    ResponseHeader(HeaderName),
    /// An Envoy attribute.
    Attribute(&'static Attribute),
}

impl Source {
    /// Whether the value only exists while the request headers do; response
    /// templates then use the value captured in the request phase.
    pub fn from_request_headers(&self) -> bool {
        match self {
            Source::RequestHeader(_) => true,
            Source::ResponseHeader(_) => false,
            Source::Attribute(a) => a.availability == Availability::RequestHeaders,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::RequestHeader(name) => write!(f, "request.header.{name}"),
            Source::ResponseHeader(name) => write!(f, "response.header.{name}"),
            Source::Attribute(a) => write!(f, "attr:{a}"),
        }
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text (braces already unescaped).
    Text(String),
    /// A value looked up per request.
    Expr {
        /// Where the value comes from.
        source: Source,
        /// Used when the value is absent or empty.
        default: Option<String>,
    },
}

/// A parsed template: literal text, or parts with at least one expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Without expressions, the value; otherwise empty. A field of its own so
    /// that literal values are read without a branch.
    literal: String,
    /// The parts, if there is an expression; otherwise empty.
    parts: Box<[Part]>,
}

/// Why a template was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at column {column})")]
pub struct TemplateError {
    /// 1-based position of the offending character, counted in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn error(column: usize, message: impl Into<String>) -> TemplateError {
    TemplateError {
        column,
        message: message.into(),
    }
}

const SOURCES: &str = "request.header.NAME, response.header.NAME, request.path, \
                       request.method, request.host, request.scheme, request_id or attr:NAME";

fn parse_source(text: &str, column: usize, phase: Phase) -> Result<Source, TemplateError> {
    let header = |name: &str| {
        HeaderName::parse(name).map_err(|e| error(column, format!("in `{text}`: {e}")))
    };
    let source = if let Some(name) = text.strip_prefix("request.header.") {
        Source::RequestHeader(header(name)?)
    } else if let Some(name) = text.strip_prefix("response.header.") {
        Source::ResponseHeader(header(name)?)
    } else if let Some(name) = text.strip_prefix("attr:") {
        let attribute = attributes::find(name).ok_or_else(|| {
            error(
                column,
                format!("unknown attribute `{name}` (the README lists the attributes templates can read)"),
            )
        })?;
        Source::Attribute(attribute)
    } else {
        let pseudo = match text {
            "request.path" => ":path",
            "request.method" => ":method",
            "request.host" => ":authority",
            "request.scheme" => ":scheme",
            "request_id" => "x-request-id",
            "" => {
                return Err(error(
                    column,
                    "empty expression `{}` (write `{{` for a literal brace)",
                ));
            }
            _ => {
                return Err(error(
                    column,
                    format!("unknown source `{text}`: expected {SOURCES}"),
                ));
            }
        };
        // The shorthands name pseudo-headers, which always parse.
        Source::RequestHeader(HeaderName::parse(pseudo).map_err(|e| error(column, e))?)
    };
    if phase == Phase::Request {
        let response_only = match &source {
            Source::ResponseHeader(_) => true,
            Source::Attribute(a) => a.availability == Availability::Response,
            Source::RequestHeader(_) => false,
        };
        if response_only {
            return Err(error(
                column,
                format!(
                    "`{text}` does not exist in the request phase: use it in `response` changes"
                ),
            ));
        }
    }
    Ok(source)
}

fn forbidden(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\0')
}

impl Template {
    /// Parses `text` for headers of `phase`.
    ///
    /// # Errors
    /// What is wrong and where: unbalanced braces, an unknown source or
    /// attribute, an invalid header name, a source the phase does not have, or
    /// CR, LF or NUL in the text.
    pub fn parse(text: &str, phase: Phase) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            let column = i + 1;
            match c {
                '{' if chars.next_if(|&(_, c)| c == '{').is_some() => literal.push('{'),
                '}' if chars.next_if(|&(_, c)| c == '}').is_some() => literal.push('}'),
                '}' => {
                    return Err(error(
                        column,
                        "unmatched `}` (write `}}` for a literal brace)",
                    ));
                }
                '{' => {
                    let mut source = String::new();
                    let mut default: Option<String> = None;
                    let mut closed = false;
                    for (j, c) in chars.by_ref() {
                        match c {
                            '}' => {
                                closed = true;
                                break;
                            }
                            '{' => {
                                return Err(error(
                                    j + 1,
                                    "`{` inside an expression (expressions do not nest)",
                                ));
                            }
                            c if forbidden(c) => {
                                return Err(error(j + 1, "CR, LF and NUL are not allowed"));
                            }
                            '|' if default.is_none() => default = Some(String::new()),
                            c => match default.as_mut() {
                                Some(d) => d.push(c),
                                None => source.push(c),
                            },
                        }
                    }
                    if !closed {
                        return Err(error(
                            column,
                            "unclosed `{` (write `{{` for a literal brace)",
                        ));
                    }
                    let source = parse_source(&source, column, phase)?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Expr { source, default });
                }
                c if forbidden(c) => {
                    return Err(error(column, "CR, LF and NUL are not allowed"));
                }
                c => literal.push(c),
            }
        }
        if parts.is_empty() {
            return Ok(Template::literal(literal));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            literal: String::new(),
            parts: parts.into_boxed_slice(),
        })
    }

    /// A template without expressions whose value is `text`.
    pub fn literal(text: impl Into<String>) -> Self {
        Self {
            literal: text.into(),
            parts: Box::default(),
        }
    }

    /// The value if the template has no expressions.
    pub fn as_literal(&self) -> Option<&str> {
        self.parts.is_empty().then_some(self.literal.as_str())
    }

    /// The value of a template known to have no expressions (empty otherwise).
    #[inline]
    pub(crate) fn literal_text(&self) -> &str {
        &self.literal
    }

    /// Its parts: empty for a literal template, otherwise text and
    /// expressions (at least one) in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The sources of its expressions, in order.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr { source, .. } => Some(source),
            Part::Text(_) => None,
        })
    }

    /// Renders into `out` (cleared first), asking `value` for each expression's
    /// value. Returns `false` if an expression without a default had no value:
    /// the template then has none. Stops at the first error `value` returns.
    ///
    /// # Errors
    /// Whatever `value` returns.
    pub fn render<E>(
        &self,
        out: &mut Vec<u8>,
        mut value: impl FnMut(&Source) -> Result<Option<Vec<u8>>, E>,
    ) -> Result<bool, E> {
        out.clear();
        if self.parts.is_empty() {
            out.extend_from_slice(self.literal.as_bytes());
            return Ok(true);
        }
        for part in self.parts.iter() {
            match part {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Expr { source, default } => match value(source)? {
                    Some(v) if !v.is_empty() => out.extend_from_slice(&v),
                    _ => match default {
                        Some(d) => out.extend_from_slice(d.as_bytes()),
                        None => return Ok(false),
                    },
                },
            }
        }
        Ok(true)
    }
}

/// Writes `text` as a template that renders to exactly `text` (braces doubled).
pub fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

impl fmt::Display for Template {
    /// The template in its canonical spelling, which parses back to an equal
    /// template.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_literal() {
            Some(text) => f.write_str(&escape(text)),
            None => {
                for part in self.parts.iter() {
                    match part {
                        Part::Text(text) => f.write_str(&escape(text))?,
                        Part::Expr { source, default } => {
                            write!(f, "{{{source}")?;
                            if let Some(d) = default {
                                write!(f, "|{d}")?;
                            }
                            f.write_str("}")?;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Template, TemplateError> {
        Template::parse(text, Phase::Request)
    }

    fn res(text: &str) -> Result<Template, TemplateError> {
        Template::parse(text, Phase::Response)
    }

    fn render(t: &Template, values: &[(&str, &[u8])]) -> Option<String> {
        let mut out = Vec::new();
        let ok = t
            .render(&mut out, |s| {
                Ok::<_, ()>(
                    values
                        .iter()
                        .find(|(k, _)| *k == s.to_string())
                        .map(|(_, v)| v.to_vec()),
                )
            })
            .expect("lookups do not fail");
        ok.then(|| String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn literals_stay_literal() {
        assert_eq!(req("prod").expect("valid"), Template::literal("prod"));
        assert_eq!(req("").expect("valid"), Template::literal(""));
        assert_eq!(
            req("a {{b}} c").expect("valid"),
            Template::literal("a {b} c")
        );
        assert_eq!(req("{{}}").expect("valid").as_literal(), Some("{}"));
        assert_eq!(req("é ✓").expect("valid").as_literal(), Some("é ✓"));
    }

    #[test]
    fn expressions_and_defaults() {
        let t = req("user={request.header.X-User|anonymous};").expect("valid");
        assert_eq!(
            t.parts(),
            [
                Part::Text("user=".into()),
                Part::Expr {
                    source: Source::RequestHeader(HeaderName::parse("x-user").expect("valid")),
                    default: Some("anonymous".into()),
                },
                Part::Text(";".into()),
            ]
        );
        assert_eq!(
            render(&t, &[("request.header.x-user", b"ann")]).as_deref(),
            Some("user=ann;")
        );
        assert_eq!(render(&t, &[]).as_deref(), Some("user=anonymous;"));
        assert_eq!(
            render(&t, &[("request.header.x-user", b"")]).as_deref(),
            Some("user=anonymous;"),
            "an empty value takes the default"
        );
    }

    #[test]
    fn a_missing_value_without_default_has_no_value() {
        let t = req("{request_id}/{attr:source.address}").expect("valid");
        assert_eq!(render(&t, &[("request.header.x-request-id", b"r1")]), None);
        assert_eq!(
            render(
                &t,
                &[
                    ("request.header.x-request-id", b"r1"),
                    ("attr:source.address", b"1.2.3.4:5")
                ]
            )
            .as_deref(),
            Some("r1/1.2.3.4:5")
        );
        // An empty default renders nothing.
        let t = req("[{request.header.x|}]").expect("valid");
        assert_eq!(render(&t, &[]).as_deref(), Some("[]"));
    }

    #[test]
    fn shorthands_read_pseudo_headers() {
        for (text, header) in [
            ("{request.path}", ":path"),
            ("{request.method}", ":method"),
            ("{request.host}", ":authority"),
            ("{request.scheme}", ":scheme"),
            ("{request_id}", "x-request-id"),
        ] {
            let t = req(text).expect("valid");
            let sources: Vec<_> = t.sources().cloned().collect();
            assert_eq!(
                sources,
                [Source::RequestHeader(
                    HeaderName::parse(header).expect("valid")
                )]
            );
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases: &[(&str, usize, &str)] = &[
            ("abc}", 4, "unmatched `}`"),
            ("ab{request_id", 3, "unclosed `{`"),
            ("x{}", 2, "empty expression"),
            ("{nope}", 1, "unknown source `nope`"),
            (
                "é{attr:source.adress}",
                2,
                "unknown attribute `source.adress`",
            ),
            ("{request.header.bad name}", 1, "' ' is not allowed"),
            ("{request.header.}", 1, "empty"),
            ("{a{b}}", 3, "do not nest"),
            ("a\nb", 2, "CR, LF and NUL"),
            ("{request.header.x|a\rb}", 20, "CR, LF and NUL"),
            (
                "{response.header.x}",
                1,
                "does not exist in the request phase",
            ),
            (
                "x{attr:upstream.address}",
                2,
                "does not exist in the request phase",
            ),
            (
                "{attr:response.code}",
                1,
                "does not exist in the request phase",
            ),
        ];
        for (text, column, message) in cases {
            let err = req(text).expect_err(text);
            assert_eq!(err.column, *column, "{text}: {err}");
            assert!(err.message.contains(message), "{text}: {err}");
            assert!(
                err.to_string().ends_with(&format!("(at column {column})")),
                "{err}"
            );
        }
    }

    #[test]
    fn response_templates_read_both_sides() {
        let t =
            res("{request.path} -> {response.header.x-up} {attr:upstream.address}").expect("valid");
        let from_request: Vec<bool> = t.sources().map(Source::from_request_headers).collect();
        assert_eq!(from_request, [true, false, false]);
        assert!(
            res("{attr:request.url_path}")
                .expect("valid")
                .sources()
                .all(Source::from_request_headers)
        );
        assert!(
            !res("{attr:plugin_name}")
                .expect("valid")
                .sources()
                .any(Source::from_request_headers)
        );
    }

    #[test]
    fn a_pipe_after_the_default_is_text() {
        let t = req("{request.header.a|x|y}").expect("valid");
        assert_eq!(render(&t, &[]).as_deref(), Some("x|y"));
    }

    #[test]
    fn display_parses_back() {
        for text in [
            "plain",
            "{{literal}}",
            "a{request.header.x-a|d}b{{c}}{attr:xds.cluster_name}",
            "{request.path}{request_id|none}",
            "{response.header.x|}",
        ] {
            let t = res(text).expect("valid");
            assert_eq!(res(&t.to_string()).expect("valid"), t, "{text} -> {t}");
        }
    }
}
