//! Native tests: configuration parsing and validation, and the filter's
//! behaviour against weir's mock host.

use weir::testing::{Action, MockHost, MockPlugin};

use super::*;

fn parse(json: &str) -> Result<Config, String> {
    weir::parse_config::<Config>(json.as_bytes()).map_err(|e| e.to_string())
}

/// Asserts `json` is rejected, naming `field` and saying `reason`.
#[track_caller]
fn rejects(json: &str, field: &str, reason: &str) {
    let err = parse(json).expect_err(json);
    assert!(
        err.contains(&format!("`{field}`")),
        "{json}\n  field: {err}"
    );
    assert!(err.contains(reason), "{json}\n  reason: {err}");
}

#[test]
fn parses_a_full_config() {
    let c = parse(
        r#"{"request": {"remove": ["X-Drop"], "set": [{"name": "X-A", "value": "1"}]},
             "response": {"add": [{"name": "x-b", "value": "2"}]}}"#,
    )
    .expect("valid");
    assert_eq!(c.request.remove[0].as_str(), "x-drop");
    assert_eq!(c.request.set[0].name.as_str(), "x-a");
    assert_eq!(c.response.add[0].value.0.as_literal(), Some("2"));
    assert_eq!(c.max_value_bytes, DEFAULT_MAX_VALUE_BYTES);
    assert!(
        c.request.literal_only() && c.response.literal_only(),
        "the fast path"
    );
}

#[test]
fn parses_templates_rules_and_renames() {
    let c = parse(
        r#"{"request": {
              "rename": [{"from": "X-Old", "to": "x-new"}],
              "set": [{"name": "x-client", "value": "{attr:source.address}"}],
              "rules": [{"when": {"path_prefix": "/api/", "methods": ["GET", "POST"],
                                  "request_headers": [{"name": "x-debug"},
                                                      {"name": "x-env", "equals": "prod"},
                                                      {"name": "x-skip", "present": false}]},
                         "add": [{"name": "x-api", "value": "{{literal}}"}]}]},
            "response": {"set": [{"name": "x-path", "value": "{request.path}"},
                                 {"name": "x-up", "value": "{attr:upstream.address|none}"}],
                         "rules": [{"when": {"response_headers": [{"name": "x-cache"}]},
                                    "set": [{"name": "x-m", "value": "{request.header.x-m}"}]}]},
            "max_value_bytes": 100}"#,
    )
    .expect("valid");
    assert_eq!(c.request.rename[0].from.as_str(), "x-old");
    let when = &c.request.rules[0].when;
    assert_eq!(when.methods.len(), 2);
    assert!(when.request_headers[0].present && when.request_headers[0].equals.is_none());
    assert!(!when.request_headers[2].present);
    assert_eq!(
        c.request.rules[0].add[0].value.0.as_literal(),
        Some("{literal}")
    );
    // The response reads `:path` and `x-m` from the request: both are carried.
    let carried: Vec<String> = c.response.carried().iter().map(|s| s.to_string()).collect();
    assert_eq!(carried, ["request.header.:path", "request.header.x-m"]);
    assert!(c.request.carried().is_empty());
    assert!(!c.request.literal_only() && !c.response.literal_only());
    assert!(parse("").expect("empty").request.literal_only());
    assert_eq!(c.max_value_bytes, 100);
}

#[test]
fn names_the_bad_field() {
    rejects(
        r#"{"response": {"set": [{"name": "ok", "value": "1"}, {"name": "bad name", "value": "2"}]}}"#,
        "response.set[1].name",
        "' ' is not allowed",
    );
}

#[test]
fn rejects_header_injection() {
    rejects(
        r#"{"request": {"add": [{"name": "x", "value": "a\r\nx-evil: 1"}]}}"#,
        "request.add[0].value",
        "CR, LF and NUL are not allowed (at column 2)",
    );
}

#[test]
fn rejects_bad_templates_with_field_and_column() {
    rejects(
        r#"{"request": {"set": [{"name": "x", "value": "a{request.header.x"}]}}"#,
        "request.set[0].value",
        "unclosed `{` (write `{{` for a literal brace) (at column 2)",
    );
    rejects(
        r#"{"request": {"set": [{"name": "x", "value": "a}"}]}}"#,
        "request.set[0].value",
        "unmatched `}`",
    );
    rejects(
        r#"{"request": {"rules": [{"set": [{"name": "x", "value": "{requestid}"}]}]}}"#,
        "request.rules[0].set[0].value",
        "unknown source `requestid`",
    );
    rejects(
        r#"{"response": {"add": [{"name": "x", "value": "ip={attr:source.ip}"}]}}"#,
        "response.add[0].value",
        "unknown attribute `source.ip` (the README lists the attributes templates can read) (at column 4)",
    );
    rejects(
        r#"{"request": {"set": [{"name": "x", "value": "{request.header.x y}"}]}}"#,
        "request.set[0].value",
        "invalid header name \"x y\"",
    );
}

#[test]
fn rejects_sources_the_phase_does_not_have() {
    rejects(
        r#"{"request": {"set": [{"name": "x", "value": "{response.header.server}"}]}}"#,
        "request.set[0].value",
        "does not exist in the request phase",
    );
    rejects(
        r#"{"request": {"set": [{"name": "x", "value": "{attr:upstream.address}"}]}}"#,
        "request.set[0].value",
        "does not exist in the request phase",
    );
    rejects(
        r#"{"request": {"rules": [{"when": {"response_headers": [{"name": "x"}]}}]}}"#,
        "request.rules[0].when.response_headers",
        "response headers do not exist in the request phase",
    );
}

#[test]
fn rejects_invalid_conditions() {
    rejects(
        r#"{"request": {"rules": [{"when": {"path_prefix": "api/"}}]}}"#,
        "request.rules[0].when.path_prefix",
        "must start with `/`",
    );
    rejects(
        r#"{"request": {"rules": [{"when": {"path_prefix": "/a b"}}]}}"#,
        "request.rules[0].when.path_prefix",
        "' ' is not allowed",
    );
    rejects(
        r#"{"request": {"rules": [{"when": {"methods": ["GET", "PO ST"]}}]}}"#,
        "request.rules[0].when.methods[1]",
        "invalid method",
    );
    rejects(
        r#"{"request": {"rules": [{"when": {"methods": [""]}}]}}"#,
        "request.rules[0].when.methods[0]",
        "invalid method",
    );
    rejects(
        r#"{"response": {"rules": [{"when": {"request_headers": [{"name": "x", "present": false, "equals": "1"}]}}]}}"#,
        "response.rules[0].when.request_headers[0]",
        "`equals` cannot be combined with `present: false`",
    );
    rejects(
        r#"{"request": {"rules": [{"when": {"request_headers": [{"name": "x", "value": "1"}]}}]}}"#,
        "request.rules[0].when.request_headers[0].value",
        "unknown field `value`",
    );
    rejects(
        r#"{"request": {"rules": [{"if": {}}]}}"#,
        "request.rules[0].if",
        "unknown field `if`",
    );
}

#[test]
fn rejects_invalid_renames_and_limits() {
    rejects(
        r#"{"request": {"rename": [{"from": ":path", "to": "x-path"}]}}"#,
        "request.rename[0]",
        "pseudo-headers cannot be renamed",
    );
    rejects(
        r#"{"request": {"rename": [{"from": "X-A", "to": "x-a"}]}}"#,
        "request.rename[0]",
        "cannot rename `x-a` to itself",
    );
    rejects(
        r#"{"request": {"rename": [{"from": "x-a"}]}}"#,
        "request.rename[0]",
        "missing field `to`",
    );
    rejects(
        r#"{"max_value_bytes": 0}"#,
        "max_value_bytes",
        "out of range",
    );
    rejects(
        r#"{"max_value_bytes": 65537}"#,
        "max_value_bytes",
        "out of range",
    );
    rejects(
        r#"{"max_value_bytes": -1}"#,
        "max_value_bytes",
        "invalid value",
    );
}

/// `config.schema.json` (published by `weir push`) is generated from `Config`;
/// `WEIR_UPDATE_SCHEMA=1 cargo test -p header-append` rewrites it.
#[test]
fn the_published_schema_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.schema.json");
    let generated = weir::config_schema::<Config>();
    if std::env::var_os("WEIR_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write the schema");
    }
    let published = std::fs::read_to_string(&path).expect("config.schema.json");
    assert_eq!(
        published, generated,
        "config.schema.json is stale: run WEIR_UPDATE_SCHEMA=1 cargo test -p header-append"
    );
    // The schema accepts what the filter accepts.
    let schema: serde_json::Value = serde_json::from_str(&generated).expect("JSON");
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["$defs"]["HeaderName"]["pattern"],
        "^:?[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
    );
    assert_eq!(schema["properties"]["max_value_bytes"]["maximum"], 65536);
    assert_eq!(schema["$defs"]["Changes"]["properties"].get("carry"), None);
    for def in [
        "Rule",
        "Condition",
        "HeaderMatch",
        "Rename",
        "ValueTemplate",
    ] {
        assert!(schema["$defs"].get(def).is_some(), "{def} missing");
    }
}

#[test]
fn empty_config_changes_nothing() {
    let c = parse("").expect("empty is fine");
    assert!(c.request.set.is_empty() && c.response.remove.is_empty());
}

// ---- behaviour, against the mock host

fn load(host: &MockHost, config: &str) -> MockPlugin {
    host.load::<HeaderAppend>(config)
        .unwrap_or_else(|logs| panic!("rejected: {logs}"))
}

const REQUEST: &[(&str, &str)] = &[
    (":method", "GET"),
    (":path", "/api/items?x=1"),
    (":authority", "weir.test"),
    (":scheme", "http"),
    ("x-request-id", "req-1"),
    ("x-user", "ann"),
];

#[test]
fn the_mock_host_reports_a_rejected_config_with_the_field() {
    let host = MockHost::new();
    let logs = host
        .load::<HeaderAppend>(r#"{"request": {"set": [{"name": "x", "value": "{attr:nope}"}]}}"#)
        .expect_err("rejected");
    assert!(
        logs.contains("request.set[0].value") && logs.contains("unknown attribute `nope`"),
        "{logs}"
    );
}

#[test]
fn literal_changes_as_before() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"request": {"remove": ["x-user"], "set": [{"name": "x-env", "value": "prod"}],
                        "add": [{"name": "x-via", "value": "weir"}]},
            "response": {"set": [{"name": "cache-control", "value": "no-store"}]}}"#,
    );
    let stream = plugin.stream();
    host.set_request_headers(&[(":path", "/"), ("x-user", "u"), ("x-env", "a")]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header("x-user"), None);
    assert_eq!(host.request_header("x-env").as_deref(), Some("prod"));
    assert_eq!(host.request_header("x-via").as_deref(), Some("weir"));
    host.set_response_headers(&[(":status", "200"), ("cache-control", "max-age=1")]);
    assert_eq!(stream.response_headers(true), Action::Continue);
    assert_eq!(
        host.response_header("cache-control").as_deref(),
        Some("no-store")
    );
}

/// The literal fast path and the general path change headers identically.
#[test]
fn the_fast_path_matches_the_general_path() {
    let literal = r#"{"request": {"remove": ["x-a"], "set": [{"name": "x-b", "value": "{{b}}"}],
                                  "add": [{"name": "x-c", "value": ""}, {"name": "x-a", "value": "3"}]},
                      "response": {"remove": ["server"], "add": [{"name": "vary", "value": "x"}]}"#;
    // A rename of a header that is never there forces the general path.
    let general = literal.replace(
        r#""remove": ["x-a"]"#,
        r#""remove": ["x-a"], "rename": [{"from": "x-never", "to": "x-none"}]"#,
    );
    let general = general.replace(
        r#""remove": ["server"]"#,
        r#""remove": ["server"], "rules": [{"when": {"path_prefix": "/never"}}]"#,
    );
    // One plugin per mock host, and one mock host per thread.
    let run = |config: String| {
        std::thread::spawn(move || {
            let host = MockHost::new();
            let mut plugin = load(&host, &config);
            let stream = plugin.stream();
            host.set_request_headers(&[(":path", "/"), ("x-a", "1"), ("x-b", "2"), ("x-c", "c")]);
            assert_eq!(stream.request_headers(true), Action::Continue);
            host.set_response_headers(&[(":status", "200"), ("server", "s"), ("vary", "a")]);
            assert_eq!(stream.response_headers(true), Action::Continue);
            (host.request_headers(), host.response_headers())
        })
        .join()
        .expect("no panic")
    };
    let seen = [run(format!("{literal}}}")), run(format!("{general}}}"))];
    assert_eq!(seen[0], seen[1]);
    let (request, response) = &seen[0];
    let names: Vec<String> = request.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(names, [":path=/", "x-b={b}", "x-c=c", "x-c=", "x-a=3"]);
    assert!(response.iter().all(|(k, _)| k != "server"));
}

#[test]
fn templates_read_headers_and_attributes() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"request": {"set": [
              {"name": "x-forwarded-user", "value": "{request.header.x-user}"},
              {"name": "x-where", "value": "{request.method} {request.host}{request.path}"},
              {"name": "x-peer", "value": "{attr:source.address}/{attr:source.port}"},
              {"name": "x-meta", "value": "{attr:plugin_name}@{attr:xds.cluster_name};mtls={attr:connection.mtls}"},
              {"name": "x-id", "value": "id {{{request_id}}}"}]}}"#,
    );
    host.set_property(&["source", "address"], b"10.1.2.3:5555");
    host.set_property(&["source", "port"], &5555i64.to_le_bytes());
    host.set_property(&["plugin_name"], b"edge");
    host.set_property(&["xds", "cluster_name"], b"backend");
    host.set_property(&["connection", "mtls"], &[1]);
    let stream = plugin.stream();
    host.set_request_headers(REQUEST);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(
        host.request_header("x-forwarded-user").as_deref(),
        Some("ann")
    );
    assert_eq!(
        host.request_header("x-where").as_deref(),
        Some("GET weir.test/api/items?x=1")
    );
    assert_eq!(
        host.request_header("x-peer").as_deref(),
        Some("10.1.2.3:5555/5555")
    );
    assert_eq!(
        host.request_header("x-meta").as_deref(),
        Some("edge@backend;mtls=true")
    );
    assert_eq!(host.request_header("x-id").as_deref(), Some("id {req-1}"));
}

#[test]
fn missing_values_skip_the_operation_or_take_the_default() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"request": {
              "set": [{"name": "x-a", "value": "{request.header.x-absent}"},
                      {"name": "x-b", "value": "{request.header.x-absent|anonymous}"},
                      {"name": "x-c", "value": "{attr:source.address|unknown}"},
                      {"name": "x-d", "value": "[{request.header.x-empty|}]"},
                      {"name": "x-e", "value": "{request.header.x-empty}"},
                      {"name": "x-f", "value": "{attr:source.port}"},
                      {"name": "x-keep", "value": "{request.header.x-absent}"}],
              "add": [{"name": "x-g", "value": "{attr:xds.route_name|none}"}]}}"#,
    );
    // A malformed attribute (wrong size for an integer) is missing too.
    host.set_property(&["source", "port"], b"abc");
    host.set_property(&["xds", "route_name"], b"");
    let stream = plugin.stream();
    let mut headers = REQUEST.to_vec();
    headers.extend([("x-empty", ""), ("x-keep", "old")]);
    host.set_request_headers(&headers);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header("x-a"), None, "skipped");
    assert_eq!(host.request_header("x-b").as_deref(), Some("anonymous"));
    assert_eq!(host.request_header("x-c").as_deref(), Some("unknown"));
    assert_eq!(host.request_header("x-d").as_deref(), Some("[]"));
    assert_eq!(host.request_header("x-e"), None, "empty is missing");
    assert_eq!(host.request_header("x-f"), None, "malformed is missing");
    assert_eq!(
        host.request_header("x-keep").as_deref(),
        Some("old"),
        "a skipped set leaves the header alone"
    );
    assert_eq!(host.request_header("x-g").as_deref(), Some("none"));
    assert!(
        host.logs().iter().any(
            |(_, l)| l == "request.set[0] `x-a` skipped: a value is missing and has no default"
        ),
        "{:?}",
        host.logs()
    );
}

#[test]
fn oversized_values_are_skipped() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"max_value_bytes": 10,
            "request": {"set": [{"name": "x-copy", "value": "{request.header.x-big}"},
                                {"name": "x-fits", "value": "<{request.header.x-small}>"},
                                {"name": "x-literal", "value": "literal values are not limited"}]}}"#,
    );
    let stream = plugin.stream();
    host.set_request_headers(&[
        (":path", "/"),
        ("x-big", "0123456789a"),
        ("x-small", "01234567"),
    ]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header("x-copy"), None);
    assert_eq!(host.request_header("x-fits").as_deref(), Some("<01234567>"));
    assert!(host.request_header("x-literal").is_some());
    assert!(
        host.logs()
            .iter()
            .any(|(_, l)| l.contains("`x-copy` skipped: the value is longer than max_value_bytes"))
    );
}

#[test]
fn attribute_values_with_line_breaks_are_never_written() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"request": {"set": [{"name": "x-cert", "value": "{attr:connection.subject_peer_certificate|none}"}]}}"#,
    );
    host.set_property(
        &["connection", "subject_peer_certificate"],
        b"CN=a\r\nx-evil: 1",
    );
    let stream = plugin.stream();
    host.set_request_headers(&[(":path", "/")]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header("x-cert"), None);
    assert_eq!(host.request_header("x-evil"), None);
}

#[test]
fn rename_moves_every_value_and_replaces_the_target() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"request": {"rename": [{"from": "x-old", "to": "x-new"}, {"from": "x-absent", "to": "x-kept"}]},
            "response": {"rename": [{"from": "server", "to": "x-upstream-server"}]}}"#,
    );
    let stream = plugin.stream();
    host.set_request_headers(&[
        (":path", "/"),
        ("x-old", "1"),
        ("x-new", "stale"),
        ("x-old", "2"),
        ("x-kept", "k"),
    ]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    let values = |name: &str| -> Vec<String> {
        host.request_headers()
            .into_iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    };
    assert_eq!(values("x-new"), ["1", "2"]);
    assert!(values("x-old").is_empty());
    assert_eq!(
        values("x-kept"),
        ["k"],
        "renaming an absent header does nothing"
    );
    host.set_response_headers(&[(":status", "200"), ("server", "nginx")]);
    assert_eq!(stream.response_headers(true), Action::Continue);
    assert_eq!(
        host.response_header("x-upstream-server").as_deref(),
        Some("nginx")
    );
    assert_eq!(host.response_header("server"), None);
}

#[test]
fn rules_apply_only_when_their_conditions_hold() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"request": {"rules": [
              {"when": {"path_prefix": "/api/"}, "set": [{"name": "x-api", "value": "1"}]},
              {"when": {"methods": ["POST", "PUT"]}, "set": [{"name": "x-write", "value": "1"}]},
              {"when": {"request_headers": [{"name": "x-debug"}]}, "set": [{"name": "x-dbg", "value": "1"}]},
              {"when": {"request_headers": [{"name": "x-env", "equals": "prod"}]}, "set": [{"name": "x-prod", "value": "1"}]},
              {"when": {"request_headers": [{"name": "x-internal", "present": false}]}, "set": [{"name": "x-external", "value": "1"}]},
              {"when": {"path_prefix": "/api/", "methods": ["GET"], "request_headers": [{"name": "x-user"}]},
               "remove": ["x-user"], "add": [{"name": "x-all", "value": "{request.header.x-user|gone}"}]}]}}"#,
    );
    /// Request headers, and the headers the rules add, in order.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case<'_>] = &[
        (REQUEST, &["x-api", "x-external", "x-all"]),
        (
            &[(":method", "POST"), (":path", "/api"), ("x-env", "prod")],
            &["x-write", "x-prod", "x-external"],
        ),
        (
            &[
                (":method", "GET"),
                (":path", "/"),
                ("x-debug", ""),
                ("x-env", "production"),
                ("x-internal", "1"),
            ],
            &["x-dbg"],
        ),
    ];
    for (request, expected) in cases {
        let stream = plugin.stream();
        host.set_request_headers(request);
        assert_eq!(stream.request_headers(true), Action::Continue);
        let set: Vec<String> = host
            .request_headers()
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !request.iter().any(|(r, _)| r == k))
            .collect();
        assert_eq!(set, *expected, "{request:?}");
    }
    // Operations run in order: the last rule removed x-user before adding.
    let stream = plugin.stream();
    host.set_request_headers(REQUEST);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header("x-all").as_deref(), Some("gone"));
}

#[test]
fn request_values_are_carried_to_the_response() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"request": {"set": [{"name": ":path", "value": "/rewritten"}]},
            "response": {
              "set": [{"name": "x-original-path", "value": "{request.path}"},
                      {"name": "x-request-id", "value": "{request_id|none}"},
                      {"name": "x-url-path", "value": "{attr:request.url_path}"},
                      {"name": "x-up", "value": "{response.header.x-up|-}|{attr:response.code}"}],
              "rules": [
                {"when": {"path_prefix": "/api/"}, "add": [{"name": "x-api-user", "value": "{request.header.x-user}"}]},
                {"when": {"methods": ["DELETE"]}, "add": [{"name": "x-deleted", "value": "1"}]},
                {"when": {"response_headers": [{"name": "x-cache", "equals": "hit"}]},
                 "add": [{"name": "x-cached-path", "value": "{request.path}"}]}]}}"#,
    );
    host.set_property(&["request", "url_path"], b"/api/items");
    host.set_property(&["response", "code"], &200i64.to_le_bytes());
    let stream = plugin.stream();
    host.set_request_headers(REQUEST);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header(":path").as_deref(), Some("/rewritten"));
    // In Envoy the request headers are gone by now: prove nothing reads them.
    host.set_request_headers(&[(":path", "/other"), ("x-user", "mallory")]);
    host.set_property(&["request", "url_path"], b"/other");
    host.set_response_headers(&[(":status", "200"), ("x-up", "u"), ("x-cache", "hit")]);
    assert_eq!(stream.response_headers(true), Action::Continue);
    let r = |name| host.response_header(name);
    assert_eq!(
        r("x-original-path").as_deref(),
        Some("/api/items?x=1"),
        "the path as it arrived, before the request changes"
    );
    assert_eq!(r("x-request-id").as_deref(), Some("req-1"));
    assert_eq!(r("x-url-path").as_deref(), Some("/api/items"));
    assert_eq!(r("x-up").as_deref(), Some("u|200"));
    assert_eq!(r("x-api-user").as_deref(), Some("ann"));
    assert_eq!(r("x-deleted"), None);
    assert_eq!(r("x-cached-path").as_deref(), Some("/api/items?x=1"));
}

#[test]
fn each_stream_carries_its_own_values() {
    let host = MockHost::new();
    let mut plugin = load(
        &host,
        r#"{"response": {"set": [{"name": "x-echo", "value": "{request.header.x-user|nobody}"}],
                         "rules": [{"when": {"path_prefix": "/a"}, "set": [{"name": "x-a", "value": "1"}]}]}}"#,
    );
    let first = plugin.stream();
    host.set_request_headers(&[(":path", "/a"), ("x-user", "one")]);
    assert_eq!(first.request_headers(true), Action::Continue);
    let second = plugin.stream();
    host.set_request_headers(&[(":path", "/b")]);
    assert_eq!(second.request_headers(true), Action::Continue);
    // A stream whose request phase never ran here (an earlier filter answered).
    let third = plugin.stream();

    host.set_response_headers(&[(":status", "200")]);
    assert_eq!(second.response_headers(true), Action::Continue);
    assert_eq!(host.response_header("x-echo").as_deref(), Some("nobody"));
    assert_eq!(host.response_header("x-a"), None);
    host.set_response_headers(&[(":status", "200")]);
    assert_eq!(first.response_headers(true), Action::Continue);
    assert_eq!(host.response_header("x-echo").as_deref(), Some("one"));
    assert_eq!(host.response_header("x-a").as_deref(), Some("1"));
    host.set_response_headers(&[(":status", "503")]);
    assert_eq!(third.response_headers(true), Action::Continue);
    assert_eq!(host.response_header("x-echo").as_deref(), Some("nobody"));
    assert_eq!(host.response_header("x-a"), None);
}
