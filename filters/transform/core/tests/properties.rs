//! Property tests of the JSON Pointer parser and the body operations, natively.
//! Bounded (a few hundred cases each, small documents) so they run in seconds.

use proptest::prelude::*;
use serde_json::{Map, Value};
use transform_core::config::{HeaderName, Op, OpKind};
use transform_core::ops::{self, MAX_DEPTH};
use transform_core::pointer::Pointer;

/// Tokens that often hit the generated documents, plus the awkward ones.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("0".to_owned()),
        Just("1".to_owned()),
        Just("-".to_owned()),
        Just("01".to_owned()),
        Just("~".to_owned()),
        Just("/".to_owned()),
        Just(String::new()),
        "[a-c~/0-9]{0,3}",
    ]
}

fn pointer() -> impl Strategy<Value = Pointer> {
    prop::collection::vec(token(), 0..5)
        .prop_map(|t| Pointer::from_tokens(t).unwrap_or_else(|e| panic!("{e}")))
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("~".to_owned()),
        Just("/".to_owned()),
        Just(String::new()),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        (pointer(), json(), any::<bool>()).prop_map(|(path, value, create)| OpKind::Set {
            path,
            value,
            create
        }),
        pointer().prop_map(|path| OpKind::Remove { path }),
        (pointer(), key()).prop_map(|(path, to)| OpKind::Rename { path, to }),
        (pointer(), pointer(), any::<bool>()).prop_map(|(from, path, create)| OpKind::Move {
            from,
            path,
            create
        }),
        (pointer(), pointer(), any::<bool>()).prop_map(|(from, path, create)| OpKind::Copy {
            from,
            path,
            create
        }),
        pointer().prop_map(|path| OpKind::Wrap { path }),
        pointer().prop_map(|path| OpKind::Unwrap { path }),
        (pointer(), any::<bool>()).prop_map(|(path, create)| OpKind::HeaderToBody {
            header: HeaderName::parse("x-h").expect("a valid name"),
            path,
            create
        }),
        pointer().prop_map(|path| OpKind::BodyToHeader {
            path,
            header: HeaderName::parse("x-h").expect("a valid name"),
        }),
    ];
    (kind, any::<bool>()).prop_map(|(kind, required)| Op { kind, required })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any string either parses or is refused; what parses prints back as written.
    #[test]
    fn the_parser_never_panics_and_round_trips(text in "(/[a-c~01/ -]{0,4}){0,6}|[^/].{0,8}|.{0,12}") {
        if let Ok(p) = Pointer::parse(&text) {
            let again = Pointer::from_tokens(p.tokens().to_vec());
            prop_assert_eq!(again.map(|q| q.as_str().to_owned()), Ok(text));
        }
    }

    /// Escaping then parsing gives the tokens back (`~0`, `~1` included).
    #[test]
    fn tokens_survive_escaping(tokens in prop::collection::vec(".{0,6}", 0..8)) {
        let p = Pointer::from_tokens(tokens.clone()).unwrap_or_else(|e| panic!("{e}"));
        let parsed = Pointer::parse(p.as_str()).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(parsed.tokens(), &tokens[..]);
    }

    /// After a successful `set`, `get` finds the value (`-` appends, so the
    /// value is then the last element).
    #[test]
    fn set_then_get_returns_the_value(mut doc in json(), p in pointer(), v in json(), create in any::<bool>()) {
        if ops::set(&mut doc, &p, v.clone(), create).is_ok() {
            // `-` appends to an array (in an object it is a member name).
            let parent = p
                .tokens()
                .split_last()
                .map(|(_, up)| Pointer::from_tokens(up.to_vec()).unwrap_or_else(|e| panic!("{e}")));
            let appended = p.tokens().last().is_some_and(|t| t == "-")
                && parent.as_ref().and_then(|up| ops::get(&doc, up)).is_some_and(Value::is_array);
            let found = match (appended, &parent) {
                (true, Some(up)) => ops::get(&doc, up).and_then(|a| a.as_array()?.last().cloned()),
                _ => ops::get(&doc, &p).cloned(),
            };
            prop_assert_eq!(found, Some(v));
        }
    }

    /// `set` then `remove` of a new member gives the document back.
    #[test]
    fn set_then_remove_restores(doc in json(), p in pointer(), v in json()) {
        let mut changed = doc.clone();
        let absent = ops::get(&doc, &p).is_none();
        let plain = p.tokens().last().is_some_and(|t| t != "-");
        if absent && plain && ops::set(&mut changed, &p, v.clone(), false).is_ok() {
            prop_assert_eq!(ops::remove(&mut changed, &p), Ok(v));
            prop_assert_eq!(changed, doc);
        }
    }

    /// Renaming to a free name and back gives the document back.
    #[test]
    fn rename_is_reversible(doc in json(), p in pointer(), to in key()) {
        let mut changed = doc.clone();
        let Some(last) = p.tokens().last().cloned() else { return Ok(()) };
        let mut sibling = p.tokens().to_vec();
        *sibling.last_mut().unwrap_or_else(|| unreachable!()) = to.clone();
        let sibling = Pointer::from_tokens(sibling).unwrap_or_else(|e| panic!("{e}"));
        if to != last && ops::get(&doc, &sibling).is_none() && ops::rename(&mut changed, &p, &to).is_ok() {
            prop_assert_eq!(ops::get(&changed, &sibling), ops::get(&doc, &p));
            prop_assert!(ops::rename(&mut changed, &sibling, &last).is_ok());
            prop_assert_eq!(changed, doc);
        }
    }

    /// Wrapping then unwrapping at the same pointer is the identity.
    #[test]
    fn wrap_then_unwrap_is_the_identity(doc in json(), p in pointer()) {
        if p.is_root() { return Ok(()) }
        let mut changed = doc.clone();
        prop_assert!(ops::wrap(&mut changed, &p).is_ok());
        prop_assert!(ops::unwrap(&mut changed, &p).is_ok());
        prop_assert_eq!(changed, doc);
    }

    /// An operation that fails leaves the document exactly as it was.
    #[test]
    fn failures_change_nothing(doc in json(), op in op()) {
        let mut changed = doc.clone();
        let op = Op { required: true, ..op };
        if ops::apply(std::slice::from_ref(&op), &mut changed, &[None]).is_err() {
            prop_assert_eq!(changed, doc);
        }
    }

    /// Any list of operations on any document: no panic, the document stays
    /// within the depth limit, and it still serializes.
    #[test]
    fn operation_lists_never_panic(mut doc in json(), list in prop::collection::vec(op(), 0..12), header in proptest::option::of("[ -~]{0,8}")) {
        let captured = vec![header; list.len()];
        let _ = ops::apply(&list, &mut doc, &captured);
        prop_assert!(ops::depth(&doc) <= MAX_DEPTH);
        prop_assert!(serde_json::to_vec(&doc).is_ok());
    }
}

/// Repeated wraps stop at the depth limit instead of growing without bound.
#[test]
fn wraps_stop_at_the_depth_limit() {
    let p = Pointer::from_tokens(vec!["x".to_owned(); 32]).unwrap_or_else(|e| panic!("{e}"));
    let list: Vec<Op> = (0..20)
        .map(|_| Op {
            kind: OpKind::Wrap { path: p.clone() },
            required: false,
        })
        .collect();
    let mut doc = Value::Null;
    let applied = ops::apply(&list, &mut doc, &[]).expect("nothing required");
    assert_eq!(ops::depth(&doc), 256);
    assert_eq!(applied.skipped.len(), 12);
}
