//! The body operations on a parsed JSON document.
//!
//! Every operation either applies completely or leaves the document as it was,
//! and none of them recurses: walks follow a pointer (at most
//! [`MAX_TOKENS`](crate::pointer::MAX_TOKENS) steps) and depth is measured with an
//! explicit stack. A document never nests deeper than [`MAX_DEPTH`], so
//! serializing and dropping it stays well within the wasm stack.

use std::fmt;

use serde_json::{Map, Value};

use crate::config::{Op, OpKind};
use crate::pointer::{Pointer, array_index};

/// The deepest a transformed document may nest. serde_json refuses to parse
/// more than 128 levels; operations may add depth up to this limit.
pub const MAX_DEPTH: usize = 256;

/// Why an operation did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// Nothing at this pointer (a missing member or an index past the end).
    Missing(String),
    /// A value on the way is not an object or array.
    NotContainer {
        /// Where the value is.
        at: String,
        /// Its JSON type.
        found: &'static str,
    },
    /// The token is not a valid index for the array at `at`.
    BadIndex {
        /// The array.
        at: String,
        /// The token.
        token: String,
    },
    /// The operation needs an object member here (rename), not an array element.
    NotMember(String),
    /// The request or response has no such header (or its value is not UTF-8).
    MissingHeader(String),
    /// A body value cannot become a header value.
    NotHeaderValue {
        /// Where the value is.
        at: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The result would nest deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(at) => write!(f, "nothing at `{at}`"),
            Self::NotContainer { at, found } => {
                write!(f, "`{at}` is {found}, not an object or array")
            }
            Self::BadIndex { at, token } => {
                write!(f, "`{token}` is not an index of the array at `{at}`")
            }
            Self::NotMember(at) => write!(f, "`{at}` is not an object member"),
            Self::MissingHeader(name) => write!(f, "no UTF-8 header `{name}`"),
            Self::NotHeaderValue { at, reason } => {
                write!(f, "the value at `{at}` cannot be a header value: {reason}")
            }
            Self::TooDeep => write!(f, "the body would nest deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// The JSON type of `v`, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How deeply `v` nests: 0 for a scalar, 1 for `[]` or `{"a": 1}`.
pub fn depth(v: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                max = max.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            Value::Object(m) => {
                max = max.max(d + 1);
                stack.extend(m.values().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    max
}

/// The value at `ptr`, if any.
pub fn get<'a>(root: &'a Value, ptr: &Pointer) -> Option<&'a Value> {
    let mut cur = root;
    for t in ptr.tokens() {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(array_index(t)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Where a value goes in its parent.
enum Slot<'a> {
    Member(&'a mut Map<String, Value>, &'a str),
    /// An index (`None` appends: `-` or the length).
    Element(&'a mut Vec<Value>, Option<usize>),
}

/// Walks to the parent of `ptr`'s last token. With `create`, missing members on
/// the way are created as empty objects. Fails before changing anything, except
/// for creating objects, which only happens once no failure can follow.
fn parent_slot<'a>(
    root: &'a mut Value,
    ptr: &'a Pointer,
    create: bool,
    for_insert: bool,
) -> Result<Slot<'a>, OpError> {
    let tokens = ptr.tokens();
    let Some((last, path)) = tokens.split_last() else {
        return Err(OpError::Missing(String::new()));
    };
    let mut cur = root;
    for (i, t) in path.iter().enumerate() {
        cur = match cur {
            Value::Object(m) => {
                if create && !m.contains_key(t) {
                    m.insert(t.clone(), Value::Object(Map::new()));
                }
                match m.get_mut(t) {
                    Some(v) => v,
                    None => return Err(OpError::Missing(ptr.prefix_text(i + 1))),
                }
            }
            Value::Array(a) => {
                let len = a.len();
                match array_index(t) {
                    Some(n) if n < len => &mut a[n],
                    Some(_) => return Err(OpError::Missing(ptr.prefix_text(i + 1))),
                    None => {
                        return Err(OpError::BadIndex {
                            at: ptr.prefix_text(i),
                            token: t.clone(),
                        });
                    }
                }
            }
            other => {
                return Err(OpError::NotContainer {
                    at: ptr.prefix_text(i),
                    found: type_name(other),
                });
            }
        };
    }
    let at = path.len();
    match cur {
        Value::Object(m) => Ok(Slot::Member(m, last)),
        Value::Array(a) => {
            let index = if last == "-" { None } else { array_index(last) };
            match index {
                Some(n) if n < a.len() => Ok(Slot::Element(a, Some(n))),
                Some(n) if for_insert && n == a.len() => Ok(Slot::Element(a, None)),
                None if for_insert && last == "-" => Ok(Slot::Element(a, None)),
                // `-` is the element after the last: there is nothing there.
                Some(_) => Err(OpError::Missing(ptr.prefix_text(at + 1))),
                None if last == "-" => Err(OpError::Missing(ptr.prefix_text(at + 1))),
                None => Err(OpError::BadIndex {
                    at: ptr.prefix_text(at),
                    token: last.clone(),
                }),
            }
        }
        other => Err(OpError::NotContainer {
            at: ptr.prefix_text(at),
            found: type_name(other),
        }),
    }
}

/// Checks that `value` at `ptr` keeps the document within [`MAX_DEPTH`]. The rest
/// of the document already is, so only the new value's depth counts.
fn check_depth(ptr: &Pointer, value: &Value) -> Result<(), OpError> {
    if ptr.tokens().len() + depth(value) > MAX_DEPTH {
        return Err(OpError::TooDeep);
    }
    Ok(())
}

/// Sets the value at `ptr`: replaces a member or element, adds a member, or
/// appends to an array (token `-` or the array's length). `""` replaces the
/// whole document. With `create`, missing parent members are created as objects.
///
/// # Errors
/// [`OpError`] if a parent is missing (without `create`) or not a container, or
/// an index is out of range; the document is then unchanged.
pub fn set(root: &mut Value, ptr: &Pointer, value: Value, create: bool) -> Result<(), OpError> {
    check_depth(ptr, &value)?;
    if ptr.is_root() {
        *root = value;
        return Ok(());
    }
    match parent_slot(root, ptr, create, true)? {
        Slot::Member(m, key) => {
            m.insert(key.to_owned(), value);
        }
        Slot::Element(a, Some(n)) => a[n] = value,
        Slot::Element(a, None) => a.push(value),
    }
    Ok(())
}

/// Removes the value at `ptr` and returns it. Array elements after it shift down.
///
/// # Errors
/// [`OpError`] if there is nothing at `ptr`; `""` cannot be removed.
pub fn remove(root: &mut Value, ptr: &Pointer) -> Result<Value, OpError> {
    match parent_slot(root, ptr, false, false)? {
        Slot::Member(m, key) => m
            .remove(key)
            .ok_or_else(|| OpError::Missing(ptr.as_str().to_owned())),
        Slot::Element(a, Some(n)) => Ok(a.remove(n)),
        Slot::Element(_, None) => Err(OpError::Missing(ptr.as_str().to_owned())),
    }
}

/// Puts `value` back where [`remove`] took it from.
fn restore(root: &mut Value, ptr: &Pointer, value: Value) {
    if let Ok(slot) = parent_slot(root, ptr, false, true) {
        match slot {
            Slot::Member(m, key) => {
                m.insert(key.to_owned(), value);
            }
            Slot::Element(a, Some(n)) => a.insert(n, value),
            Slot::Element(a, None) => a.push(value),
        }
    }
}

/// Renames the object member at `ptr` to `to`, in the same object. An existing
/// member `to` is replaced.
///
/// # Errors
/// [`OpError`] if there is no such member, or `ptr` is an array element.
pub fn rename(root: &mut Value, ptr: &Pointer, to: &str) -> Result<(), OpError> {
    match parent_slot(root, ptr, false, false)? {
        Slot::Member(m, key) => {
            let v = m
                .remove(key)
                .ok_or_else(|| OpError::Missing(ptr.as_str().to_owned()))?;
            m.insert(to.to_owned(), v);
            Ok(())
        }
        Slot::Element(..) => Err(OpError::NotMember(ptr.as_str().to_owned())),
    }
}

/// Moves the value at `from` to `to` (as [`remove`] then [`set`]: JSON Patch
/// `move`). On failure the document is unchanged.
///
/// # Errors
/// As for [`remove`] and [`set`].
pub fn move_value(
    root: &mut Value,
    from: &Pointer,
    to: &Pointer,
    create: bool,
) -> Result<(), OpError> {
    let value = remove(root, from)?;
    if let Err(e) = check_depth(to, &value) {
        restore(root, from, value);
        return Err(e);
    }
    // `set` only fails before changing anything, so the value can go back.
    let attempt = value.clone();
    match set(root, to, attempt, create) {
        Ok(()) => Ok(()),
        Err(e) => {
            restore(root, from, value);
            Err(e)
        }
    }
}

/// Copies the value at `from` to `to`.
///
/// # Errors
/// As for [`get`] (nothing at `from`) and [`set`].
pub fn copy(root: &mut Value, from: &Pointer, to: &Pointer, create: bool) -> Result<(), OpError> {
    let value = get(root, from)
        .cloned()
        .ok_or_else(|| OpError::Missing(from.as_str().to_owned()))?;
    set(root, to, value, create)
}

/// Wraps the whole document: it becomes the value at `ptr` of a new document
/// made of objects (`/data` gives `{"data": <body>}`).
///
/// # Errors
/// [`OpError::TooDeep`] if the result would nest too deeply.
pub fn wrap(root: &mut Value, ptr: &Pointer) -> Result<(), OpError> {
    check_depth(ptr, root)?;
    let body = std::mem::take(root);
    let mut wrapped = body;
    for t in ptr.tokens().iter().rev() {
        let mut m = Map::new();
        m.insert(t.clone(), wrapped);
        wrapped = Value::Object(m);
    }
    *root = wrapped;
    Ok(())
}

/// Unwraps the document: the value at `ptr` becomes the whole document, and the
/// rest of the envelope is dropped.
///
/// # Errors
/// [`OpError`] if there is nothing at `ptr`.
pub fn unwrap(root: &mut Value, ptr: &Pointer) -> Result<(), OpError> {
    let inner = remove(root, ptr)?;
    *root = inner;
    Ok(())
}

/// The header value for the body value at `ptr`: strings as they are, numbers
/// and booleans as JSON text.
///
/// # Errors
/// [`OpError`] if there is nothing there, it is another type, or it contains
/// CR, LF or NUL.
pub fn header_value(root: &Value, ptr: &Pointer) -> Result<String, OpError> {
    let v = get(root, ptr).ok_or_else(|| OpError::Missing(ptr.as_str().to_owned()))?;
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return Err(OpError::NotHeaderValue {
                at: ptr.as_str().to_owned(),
                reason: "only strings, numbers and booleans can be",
            });
        }
    };
    if text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(OpError::NotHeaderValue {
            at: ptr.as_str().to_owned(),
            reason: "it contains CR, LF or NUL",
        });
    }
    Ok(text)
}

/// What [`apply`] did besides changing the body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Headers to set (`body_to_header`), in order.
    pub headers: Vec<(String, String)>,
    /// Operations that could not apply and were skipped: index and reason.
    pub skipped: Vec<(usize, OpError)>,
}

/// Applies `ops` to `body` in order. `captured[i]` is the header value read for
/// operation `i` if it is a `header_to_body` (absent or not UTF-8: `None`).
///
/// # Errors
/// The index and reason of the first `required` operation that cannot apply;
/// `body` may then hold the earlier operations' changes.
pub fn apply(
    ops: &[Op],
    body: &mut Value,
    captured: &[Option<String>],
) -> Result<Applied, (usize, OpError)> {
    let mut applied = Applied::default();
    for (i, op) in ops.iter().enumerate() {
        let result = match &op.kind {
            OpKind::Set {
                path,
                value,
                create,
            } => set(body, path, value.clone(), *create),
            OpKind::Remove { path } => remove(body, path).map(drop),
            OpKind::Rename { path, to } => rename(body, path, to),
            OpKind::Move { from, path, create } => move_value(body, from, path, *create),
            OpKind::Copy { from, path, create } => copy(body, from, path, *create),
            OpKind::Wrap { path } => wrap(body, path),
            OpKind::Unwrap { path } => unwrap(body, path),
            OpKind::HeaderToBody {
                header,
                path,
                create,
            } => match captured.get(i).cloned().flatten() {
                Some(v) => set(body, path, Value::String(v), *create),
                None => Err(OpError::MissingHeader(header.as_str().to_owned())),
            },
            OpKind::BodyToHeader { path, header } => header_value(body, path)
                .map(|v| applied.headers.push((header.as_str().to_owned(), v))),
        };
        match result {
            Ok(()) => {}
            Err(e) if op.required => return Err((i, e)),
            Err(e) => applied.skipped.push((i, e)),
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(s: &str) -> Pointer {
        Pointer::parse(s).expect("valid pointer")
    }

    #[test]
    fn get_follows_members_and_indexes() {
        let doc = json!({"a": {"b": [10, {"c~d": 1, "e/f": 2}]}, "": 3});
        assert_eq!(get(&doc, &p("/a/b/0")), Some(&json!(10)));
        assert_eq!(get(&doc, &p("/a/b/1/c~0d")), Some(&json!(1)));
        assert_eq!(get(&doc, &p("/a/b/1/e~1f")), Some(&json!(2)));
        assert_eq!(get(&doc, &p("/")), Some(&json!(3)));
        assert_eq!(get(&doc, &p("")), Some(&doc));
        assert_eq!(get(&doc, &p("/a/b/2")), None);
        assert_eq!(get(&doc, &p("/a/b/01")), None);
        assert_eq!(get(&doc, &p("/a/b/-")), None);
        assert_eq!(get(&doc, &p("/a/b/0/x")), None, "into a number");
    }

    #[test]
    fn set_replaces_adds_appends_and_creates() {
        let mut doc = json!({"a": 1, "list": [1, 2]});
        set(&mut doc, &p("/a"), json!(2), false).expect("replace");
        set(&mut doc, &p("/b"), json!("new"), false).expect("add");
        set(&mut doc, &p("/list/0"), json!(0), false).expect("replace element");
        set(&mut doc, &p("/list/-"), json!(3), false).expect("append");
        set(&mut doc, &p("/list/3"), json!(4), false).expect("append at length");
        set(&mut doc, &p("/x/y/z"), json!(true), true).expect("create parents");
        assert_eq!(
            doc,
            json!({"a": 2, "b": "new", "list": [0, 2, 3, 4], "x": {"y": {"z": true}}})
        );
        set(&mut doc, &p(""), json!([]), false).expect("whole document");
        assert_eq!(doc, json!([]));
    }

    #[test]
    fn set_failures_leave_the_document_unchanged() {
        let doc = json!({"s": "text", "list": [1]});
        let cases = [
            ("/missing/x", false, OpError::Missing("/missing".into())),
            (
                "/s/x",
                true,
                OpError::NotContainer {
                    at: "/s".into(),
                    found: "a string",
                },
            ),
            (
                "/s/x/y",
                true,
                OpError::NotContainer {
                    at: "/s".into(),
                    found: "a string",
                },
            ),
            ("/list/5", true, OpError::Missing("/list/5".into())),
            (
                "/list/x",
                true,
                OpError::BadIndex {
                    at: "/list".into(),
                    token: "x".into(),
                },
            ),
            ("/list/3/a", true, OpError::Missing("/list/3".into())),
        ];
        for (ptr, create, expected) in cases {
            let mut d = doc.clone();
            assert_eq!(
                set(&mut d, &p(ptr), json!(1), create),
                Err(expected),
                "{ptr}"
            );
            assert_eq!(d, doc, "{ptr} changed the document");
        }
    }

    #[test]
    fn remove_rename_move_copy() {
        let mut doc = json!({"a": {"b": 1, "c": [1, 2, 3]}, "d": "x"});
        assert_eq!(remove(&mut doc, &p("/a/c/1")), Ok(json!(2)));
        assert_eq!(
            remove(&mut doc, &p("/a/c/5")),
            Err(OpError::Missing("/a/c/5".into()))
        );
        assert_eq!(
            remove(&mut doc, &p("/a/c/-")),
            Err(OpError::Missing("/a/c/-".into()))
        );
        rename(&mut doc, &p("/a/b"), "bee").expect("rename");
        assert_eq!(
            rename(&mut doc, &p("/a/c/0"), "x"),
            Err(OpError::NotMember("/a/c/0".into()))
        );
        move_value(&mut doc, &p("/d"), &p("/a/moved"), false).expect("move");
        copy(&mut doc, &p("/a/c"), &p("/copy/of/c"), true).expect("copy");
        assert_eq!(
            doc,
            json!({"a": {"bee": 1, "c": [1, 3], "moved": "x"}, "copy": {"of": {"c": [1, 3]}}})
        );
    }

    #[test]
    fn a_failed_move_puts_the_value_back() {
        let mut doc = json!({"list": [1, 2, 3], "s": "text"});
        let before = doc.clone();
        assert!(move_value(&mut doc, &p("/list/1"), &p("/s/x"), true).is_err());
        assert_eq!(doc, before);
        assert!(move_value(&mut doc, &p("/nothing"), &p("/y"), true).is_err());
        assert_eq!(doc, before);
    }

    #[test]
    fn moving_within_an_array_removes_first() {
        let mut doc = json!([1, 2, 3]);
        move_value(&mut doc, &p("/0"), &p("/-"), false).expect("move to end");
        assert_eq!(doc, json!([2, 3, 1]));
    }

    #[test]
    fn envelopes() {
        let mut doc = json!([1, 2]);
        wrap(&mut doc, &p("/data")).expect("wrap");
        assert_eq!(doc, json!({"data": [1, 2]}));
        wrap(&mut doc, &p("/outer/inner")).expect("wrap deeper");
        assert_eq!(doc, json!({"outer": {"inner": {"data": [1, 2]}}}));
        unwrap(&mut doc, &p("/outer/inner/data")).expect("unwrap");
        assert_eq!(doc, json!([1, 2]));
        assert_eq!(
            unwrap(&mut doc, &p("/data")),
            Err(OpError::BadIndex {
                at: String::new(),
                token: "data".into()
            })
        );
        let mut env = json!({"data": {"id": 1}, "meta": {"page": 2}});
        unwrap(&mut env, &p("/data")).expect("unwrap drops the rest");
        assert_eq!(env, json!({"id": 1}));
    }

    #[test]
    fn header_values() {
        let doc = json!({"s": "abc", "n": 12.5, "b": false, "o": {}, "bad": "a\r\nb", "z": null});
        assert_eq!(header_value(&doc, &p("/s")).as_deref(), Ok("abc"));
        assert_eq!(header_value(&doc, &p("/n")).as_deref(), Ok("12.5"));
        assert_eq!(header_value(&doc, &p("/b")).as_deref(), Ok("false"));
        assert!(header_value(&doc, &p("/o")).is_err());
        assert!(header_value(&doc, &p("/z")).is_err());
        assert!(header_value(&doc, &p("/bad")).is_err());
        assert_eq!(
            header_value(&doc, &p("/none")),
            Err(OpError::Missing("/none".into()))
        );
    }

    #[test]
    fn depth_is_bounded() {
        let mut doc = json!({});
        let mut deep = json!(1);
        for _ in 0..MAX_DEPTH - 3 {
            deep = json!([deep]);
        }
        assert_eq!(depth(&deep), MAX_DEPTH - 3);
        set(&mut doc, &p("/a/b/c"), deep.clone(), true).expect("exactly the limit");
        assert_eq!(depth(&doc), MAX_DEPTH);
        let mut doc2 = json!({});
        assert_eq!(
            set(&mut doc2, &p("/a/b/c/d"), deep.clone(), true),
            Err(OpError::TooDeep)
        );
        assert_eq!(doc2, json!({}));
        let mut doc3 = deep;
        assert_eq!(wrap(&mut doc3, &p("/a/b/c/d")), Err(OpError::TooDeep));
    }
}
