//! Property tests of the template parser: it never panics, literals survive
//! escape → parse → render unchanged, and what it prints parses back to the same
//! template. Bounded to a few thousand cases so it runs in a second or two.

use header_append_core::attributes::ATTRIBUTES;
use header_append_core::template::{Part, Phase, Source, Template, escape};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text without CR, LF and NUL, biased towards the characters the grammar uses.
fn text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec!['{', '}', '|', ':', '.', ' ', 'é', '✓', 'x']);
    let any = any::<char>().prop_filter("no CR, LF, NUL", |c| !matches!(c, '\r' | '\n' | '\0'));
    prop::collection::vec(prop_oneof![special, any], 0..40).prop_map(|v| v.into_iter().collect())
}

/// Any text at all, CR, LF and NUL included.
fn anything() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec!['{', '}', '|', '\r', '\n', '\0', 'r', '.', ':']);
    let words = prop::sample::select(vec![
        "{request.header.x-a",
        "{response.header.x-b}",
        "{attr:source.address",
        "{request_id",
        "{request.path}",
        "|default}",
        "{{",
        "}}",
    ]);
    prop::collection::vec(
        prop_oneof![
            special.prop_map(String::from),
            words.prop_map(String::from),
            any::<char>().prop_map(String::from),
        ],
        0..24,
    )
    .prop_map(|v| v.concat())
}

fn phase() -> impl Strategy<Value = Phase> {
    prop::sample::select(vec![Phase::Request, Phase::Response])
}

/// The spelling of a valid source for a response template, and the source.
fn source() -> impl Strategy<Value = (String, Source)> {
    // Every token character but `|`, which ends the source (a header whose
    // name has a `|` cannot be read by a template).
    let header = "[a-z0-9!#$%&'*+.^_`~-]{1,12}";
    prop_oneof![
        header.prop_map(|h| {
            let name = header_append_core::HeaderName::parse(&h).expect("token");
            (format!("request.header.{h}"), Source::RequestHeader(name))
        }),
        header.prop_map(|h| {
            let name = header_append_core::HeaderName::parse(&h).expect("token");
            (format!("response.header.{h}"), Source::ResponseHeader(name))
        }),
        prop::sample::select(ATTRIBUTES.iter().collect::<Vec<_>>())
            .prop_map(|a| (format!("attr:{}", a.name), Source::Attribute(a))),
    ]
}

/// A default: text without braces, CR, LF or NUL.
fn default() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[^{}\r\n\u{0}]{0,8}")
}

fn render(t: &Template, value: impl Fn(&Source) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let rendered = t
        .render(&mut out, |s| Ok::<_, ()>(value(s)))
        .expect("lookups do not fail");
    rendered.then_some(out)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn escaped_literals_round_trip(s in text(), phase in phase()) {
        let t = Template::parse(&escape(&s), phase).expect("an escaped literal parses");
        prop_assert_eq!(t.as_literal(), Some(s.as_str()));
        prop_assert_eq!(render(&t, |_| None), Some(s.clone().into_bytes()));
        prop_assert_eq!(t.to_string(), escape(&s));
    }

    #[test]
    fn parsing_never_panics_and_printing_parses_back(s in anything(), phase in phase()) {
        match Template::parse(&s, phase) {
            Ok(t) => {
                let again = Template::parse(&t.to_string(), phase).expect("printed templates parse");
                prop_assert_eq!(&again, &t);
                // Rendering never panics either, whatever the lookups return.
                let _ = render(&t, |_| Some(b"v\xff".to_vec()));
                let _ = render(&t, |_| None);
            }
            Err(e) => {
                prop_assert!(e.column >= 1 && e.column <= s.chars().count() + 1, "{e} for {s:?}");
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn composed_templates_parse_to_their_parts(
        pieces in prop::collection::vec((text(), prop::option::of((source(), default()))), 0..6),
        values in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..6)), 6),
    ) {
        let mut spelled = String::new();
        let mut expected: Vec<Part> = Vec::new();
        for (literal, expr) in &pieces {
            spelled.push_str(&escape(literal));
            if !literal.is_empty() {
                match expected.last_mut() {
                    Some(Part::Text(t)) => t.push_str(literal),
                    _ => expected.push(Part::Text(literal.clone())),
                }
            }
            if let Some(((name, source), default)) = expr {
                spelled.push('{');
                spelled.push_str(name);
                if let Some(d) = default {
                    spelled.push('|');
                    spelled.push_str(d);
                }
                spelled.push('}');
                expected.push(Part::Expr { source: source.clone(), default: default.clone() });
            }
        }
        let t = Template::parse(&spelled, Phase::Response).expect("composed templates parse");
        let has_expr = expected.iter().any(|p| matches!(p, Part::Expr { .. }));
        if has_expr {
            prop_assert_eq!(t.parts(), &expected[..]);
            prop_assert_eq!(t.as_literal(), None);
        } else {
            let text: String = expected.iter().map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Expr { .. } => "",
            }).collect();
            prop_assert_eq!(t.as_literal(), Some(text.as_str()));
        }
        // Rendering: each expression's value in order, its default when the
        // value is absent or empty, no value at all when neither exists.
        let sources: Vec<Source> = t.sources().cloned().collect();
        let value_of = |s: &Source| {
            let i = sources.iter().position(|x| x == s).expect("known source");
            values[i % values.len()].clone()
        };
        let mut want: Option<Vec<u8>> = Some(Vec::new());
        for p in &expected {
            let Some(out) = want.as_mut() else { break };
            match p {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Expr { source, default } => match (value_of(source), default) {
                    (Some(v), _) if !v.is_empty() => out.extend_from_slice(&v),
                    (_, Some(d)) => out.extend_from_slice(d.as_bytes()),
                    (_, None) => want = None,
                },
            }
        }
        prop_assert_eq!(render(&t, value_of), want);
    }
}
