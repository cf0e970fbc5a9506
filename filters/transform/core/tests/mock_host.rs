//! The filter's logic natively, against weir's in-process mock host. Envoy's own
//! behaviour (header windows, buffering) is covered by the harness and Envoy tests
//! in `weir-tests`.

use serde_json::{Value, json};
use transform_core::Transform;
use weir::testing::{Action, MockHost, MockPlugin};

fn load(host: &MockHost, config: Value) -> MockPlugin {
    host.load::<Transform>(&config.to_string())
        .unwrap_or_else(|logs| panic!("config rejected: {logs}"))
}

fn json_request(host: &MockHost, body: &str) {
    host.set_request_headers(&[
        (":method", "POST"),
        (":path", "/items"),
        ("content-type", "application/json"),
        ("content-length", &body.len().to_string()),
        ("x-tenant", "acme"),
    ]);
}

fn body_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"))
}

#[test]
fn request_ops_run_on_a_body_in_chunks() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        json!({"request": {"ops": [
            {"op": "rename", "path": "/userName", "to": "user_name"},
            {"op": "set", "path": "/meta/source", "value": "edge"},
            {"op": "remove", "path": "/password"},
            {"op": "move", "from": "/tags/0", "path": "/first_tag"},
            {"op": "header_to_body", "header": "x-tenant", "path": "/tenant"}
        ]}}),
    );
    let mut stream = plugin.stream();
    let body = r#"{"userName":"ann","password":"hunter2","tags":["a","b"]}"#;
    json_request(&host, body);
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(
        host.request_header("content-length"),
        None,
        "size will change"
    );
    let (a, rest) = body.split_at(10);
    let (b, c) = rest.split_at(20);
    assert_eq!(stream.request_body(a.as_bytes(), false), Action::Pause);
    assert_eq!(stream.request_body(b.as_bytes(), false), Action::Pause);
    assert_eq!(stream.request_body(c.as_bytes(), false), Action::Pause);
    assert_eq!(stream.request_body(b"", true), Action::Continue);
    assert_eq!(
        body_json(&host.request_body()),
        json!({"user_name": "ann", "meta": {"source": "edge"}, "tags": ["b"],
               "first_tag": "a", "tenant": "acme"})
    );
    assert!(host.take_local_reply().is_none());
}

#[test]
fn other_content_types_pass_untouched() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        json!({"request": {"ops": [{"op": "wrap", "path": "/d"}]}}),
    );
    for ct in ["text/plain", "application/jsonx", "multipart/form-data"] {
        let mut stream = plugin.stream();
        host.set_request_headers(&[
            (":method", "POST"),
            ("content-type", ct),
            ("content-length", "2"),
        ]);
        assert_eq!(stream.request_headers(false), Action::Continue);
        assert_eq!(host.request_header("content-length").as_deref(), Some("2"));
        assert_eq!(stream.request_body(b"{}", true), Action::Continue);
        assert_eq!(host.request_body(), b"{}");
    }
    // No content-type at all.
    let mut stream = plugin.stream();
    host.set_request_headers(&[(":method", "POST")]);
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(stream.request_body(b"{}", true), Action::Continue);
    assert_eq!(host.request_body(), b"{}");
}

#[test]
fn invalid_json_passes_untouched_by_default() {
    let host = MockHost::new();
    let config = json!({"request": {"ops": [{"op": "wrap", "path": "/d"}]}});
    let mut plugin = load(&host, config.clone());
    for bad in [&b"{\"a\":"[..], b"\xff\xfe{}", b"{} {}", b"nul"] {
        let mut stream = plugin.stream();
        json_request(&host, "x");
        assert_eq!(stream.request_headers(false), Action::Continue);
        assert_eq!(stream.request_body(bad, true), Action::Continue);
        assert_eq!(host.request_body(), bad, "passed untouched");
    }
}

#[test]
fn invalid_json_is_rejected_when_configured() {
    let host = MockHost::new();
    let config = json!({"request": {"ops": [{"op": "wrap", "path": "/d"}]}});
    let mut reject = config;
    reject["on_invalid_json"] = json!("reject");
    let mut plugin = load(&host, reject);
    let mut stream = plugin.stream();
    json_request(&host, "x");
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(stream.request_body(b"{\"a\":", true), Action::Pause);
    let reply = host.take_local_reply().expect("rejected");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.details, "transform_invalid_json");
    assert_eq!(
        body_json(&reply.body),
        json!({"error": "invalid request body"})
    );
}

#[test]
fn bodies_over_the_limit_are_answered() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        json!({"max_body_bytes": 16, "request": {"ops": [{"op": "wrap", "path": "/d"}],
               "too_large": {"status": 413, "body": "too big", "content_type": "text/plain"}}}),
    );
    // Announced by content-length: answered before any body.
    let stream = plugin.stream();
    json_request(&host, "01234567890123456789");
    assert_eq!(stream.request_headers(false), Action::Pause);
    let reply = host.take_local_reply().expect("413");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (413, "transform_body_too_large")
    );
    assert_eq!(reply.body, b"too big");
    assert!(
        reply
            .headers
            .contains(&("content-type".into(), b"text/plain".to_vec()))
    );

    // Streamed without content-length: answered once the buffer passes the limit.
    let mut stream = plugin.stream();
    host.set_request_headers(&[(":method", "POST"), ("content-type", "application/json")]);
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(stream.request_body(b"[1,2,3,4,5,", false), Action::Pause);
    assert!(host.take_local_reply().is_none());
    assert_eq!(stream.request_body(b"6,7,8]", false), Action::Pause);
    assert_eq!(host.take_local_reply().expect("413").status, 413);
}

#[test]
fn empty_bodies_pass() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        json!({"on_invalid_json": "reject", "request": {"ops": [{"op": "wrap", "path": "/d"}]}}),
    );
    let mut stream = plugin.stream();
    json_request(&host, "");
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(stream.request_body(b"", true), Action::Continue);
    assert_eq!(host.request_body(), b"");
    assert!(host.take_local_reply().is_none());
    // Headers that end the stream: no body at all.
    let stream = plugin.stream();
    json_request(&host, "");
    assert_eq!(stream.request_headers(true), Action::Continue);
}

#[test]
fn held_headers_get_exact_length_and_body_values() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        json!({"hold_headers": true, "request": {"ops": [
            {"op": "body_to_header", "path": "/id", "header": "x-item-id"},
            {"op": "body_to_header", "path": "/missing", "header": "x-none"},
            {"op": "wrap", "path": "/data"}
        ]}}),
    );
    let mut stream = plugin.stream();
    let body = r#"{"id":42}"#;
    json_request(&host, body);
    assert_eq!(stream.request_headers(false), Action::Pause, "headers held");
    assert_eq!(stream.request_body(body.as_bytes(), false), Action::Pause);
    assert_eq!(stream.request_body(b"", true), Action::Continue);
    let out = host.request_body();
    assert_eq!(body_json(&out), json!({"data": {"id": 42}}));
    assert_eq!(
        host.request_header("content-length"),
        Some(out.len().to_string())
    );
    assert_eq!(host.request_header("x-item-id").as_deref(), Some("42"));
    assert_eq!(host.request_header("x-none"), None, "skipped, not required");
}

#[test]
fn required_operations_reject_the_body() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        json!({"request": {"ops": [{"op": "remove", "path": "/a/b", "required": true}]},
               "response": {"ops": [{"op": "unwrap", "path": "/data", "required": true}]}}),
    );
    let mut stream = plugin.stream();
    json_request(&host, "x");
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(stream.request_body(br#"{"a":"text"}"#, true), Action::Pause);
    let reply = host.take_local_reply().expect("400");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (400, "transform_op_failed")
    );
    // The filter's own reply is not transformed on its way out.
    host.set_response_headers(&[(":status", "400"), ("content-type", "application/json")]);
    assert_eq!(stream.response_headers(false), Action::Continue);
    assert_eq!(
        stream.response_body(br#"{"error":"invalid request body"}"#, true),
        Action::Continue
    );

    let mut stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET")]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    host.set_response_headers(&[(":status", "200"), ("content-type", "application/json")]);
    assert_eq!(stream.response_headers(false), Action::Continue);
    assert_eq!(
        stream.response_body(br#"{"items":[]}"#, true),
        Action::Pause
    );
    let reply = host.take_local_reply().expect("502");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (502, "transform_op_failed")
    );
}

#[test]
fn statuses_are_remapped() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        json!({"hold_headers": true, "status": [
            {"from": 404, "to": 200, "when": {"path": "/error/code", "equals": "EMPTY"}},
            {"from": 404, "to": 410},
            {"from": 503, "to": 502}
        ], "response": {"ops": [{"op": "set", "path": "/remapped", "value": true}]}}),
    );
    // A plain remap happens in the headers.
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET")]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    host.set_response_headers(&[(":status", "503"), ("content-type", "text/plain")]);
    assert_eq!(stream.response_headers(false), Action::Continue);
    assert_eq!(host.response_header(":status").as_deref(), Some("502"));

    // A body match waits for the body, with the headers held.
    for (body, status) in [
        (r#"{"error":{"code":"EMPTY"}}"#, "200"),
        (r#"{"error":{"code":"OTHER"}}"#, "410"),
        ("not json", "410"),
    ] {
        let mut stream = plugin.stream();
        host.set_request_headers(&[(":method", "GET")]);
        assert_eq!(stream.request_headers(true), Action::Continue);
        host.set_response_headers(&[(":status", "404"), ("content-type", "application/json")]);
        assert_eq!(stream.response_headers(false), Action::Pause);
        assert_eq!(
            stream.response_body(body.as_bytes(), true),
            Action::Continue
        );
        assert_eq!(
            host.response_header(":status").as_deref(),
            Some(status),
            "{body}"
        );
    }
    // Without a JSON body the body rule cannot match.
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET")]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    host.set_response_headers(&[(":status", "404")]);
    assert_eq!(stream.response_headers(true), Action::Continue);
    assert_eq!(host.response_header(":status").as_deref(), Some("410"));
}

#[test]
fn bad_config_is_refused_with_the_field_named() {
    let host = MockHost::new();
    let logs = host
        .load::<Transform>(r#"{"request": {"ops": [{"op": "remove", "path": "nope"}]}}"#)
        .expect_err("refused");
    assert!(logs.contains("request.ops[0].path"), "{logs}");
    assert!(logs.contains("invalid JSON Pointer"), "{logs}");
}
