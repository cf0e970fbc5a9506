//! header-append's templates, rules, renames and carried values, as a module in
//! the harness: the shipped envoy/header-append-templates.yaml, bad input
//! (non-UTF-8 values, oversized headers, missing attributes, empty values) and
//! invalid configurations.

use bytes::Bytes;
use weir_harness::{Chain, EnvoyConfig, Error, Filter, LogLevel, Outcome};
use weir_tests::{engine, envoy_yaml, filter_wasm};

fn chain_with(config: &str) -> Chain {
    let plugin = engine()
        .load_file(filter_wasm("header-append"))
        .expect("module loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("ha").configuration(config))
        .log_level(LogLevel::Debug)
        .build()
        .unwrap_or_else(|e| panic!("plugin starts: {e}"))
}

fn upstream(req: http::Request<Bytes>) -> http::Response<Bytes> {
    let status = match req.uri().path() {
        "/status/503" => 503,
        _ => 200,
    };
    http::Response::builder()
        .status(status)
        .header("x-powered-by", "php")
        .header("x-cache", "hit")
        .body(Bytes::from_static(b"ok"))
        .unwrap_or_default()
}

fn get(path: &str, headers: &[(&str, &[u8])]) -> http::Request<Bytes> {
    let mut b = http::Request::get(path).header("host", "weir.test");
    for (k, v) in headers {
        b = b.header(*k, http::HeaderValue::from_bytes(v).expect("valid value"));
    }
    b.body(Bytes::new()).expect("request")
}

fn send(chain: &mut Chain, req: http::Request<Bytes>) -> Outcome {
    let outcome = chain.send(req, upstream).expect("request succeeds");
    assert!(outcome.traps.is_empty(), "{:?}", outcome.traps);
    outcome
}

fn up(o: &Outcome) -> &http::HeaderMap {
    o.upstream_request
        .as_ref()
        .expect("reached the upstream")
        .headers()
}

#[test]
fn the_shipped_templates_config_runs() {
    let config = EnvoyConfig::parse(&envoy_yaml("header-append-templates.yaml"))
        .expect("shipped config parses");
    let mut chain = config
        .chain_builder(engine(), |_| {
            engine().load_file(filter_wasm("header-append"))
        })
        .expect("module loads")
        .build()
        .expect("plugin starts");
    let o = send(
        &mut chain,
        get(
            "/api/items?page=2",
            &[("x-user", b"ann"), ("x-internal-secret", b"s")],
        ),
    );
    let upstream = up(&o);
    assert_eq!(upstream["x-forwarded-user"], "ann");
    assert!(upstream.get("x-user").is_none() && upstream.get("x-internal-secret").is_none());
    assert_eq!(upstream["x-client"], "127.0.0.1:50000");
    assert_eq!(upstream["x-route"], "upstream/default");
    assert!(upstream.get("x-api-write").is_none(), "GET is not a write");
    // Envoy generated the request id; the response echoes the same one.
    let id = upstream["x-request-id"].clone();
    let res = o.response.headers();
    assert_eq!(res["x-request-id"], id);
    assert_eq!(res["x-original-path"], "/api/items?page=2");
    assert_eq!(res["x-served-by"], "127.0.0.1:8080");
    assert_eq!(res["cache-control"], "public, max-age=60");
    assert!(res.get("x-powered-by").is_none());
}

#[test]
fn non_utf8_values_are_copied_as_bytes() {
    let mut chain = chain_with(
        r#"{"request": {"set": [{"name": "x-copy", "value": "<{request.header.x-binary}>"}],
                        "rename": [{"from": "x-binary-2", "to": "x-renamed"}],
                        "rules": [{"when": {"request_headers": [{"name": "x-binary", "present": true}]},
                                   "add": [{"name": "x-seen", "value": "1"}]}]},
            "response": {"set": [{"name": "x-echo", "value": "{request.header.x-binary}"}]}}"#,
    );
    let bytes: &[u8] = b"caf\xe9 \xff\x80";
    let o = send(
        &mut chain,
        get("/", &[("x-binary", bytes), ("x-binary-2", b"\xfe")]),
    );
    let upstream = up(&o);
    assert_eq!(upstream["x-copy"].as_bytes(), b"<caf\xe9 \xff\x80>");
    assert_eq!(upstream["x-binary"].as_bytes(), bytes, "untouched");
    assert_eq!(upstream["x-renamed"].as_bytes(), b"\xfe");
    assert_eq!(upstream["x-seen"], "1");
    assert_eq!(o.response.headers()["x-echo"].as_bytes(), bytes);
}

#[test]
fn oversized_headers_are_copied_up_to_the_limit_and_skipped_past_it() {
    let big = vec![b'a'; 32 * 1024];
    let mut limited = chain_with(
        r#"{"request": {"set": [{"name": "x-copy", "value": "{request.header.x-big}"},
                                {"name": "x-default", "value": "{request.header.x-big|fallback}"}]},
            "response": {"add": [{"name": "x-echo", "value": "{request.header.x-big}"}]}}"#,
    );
    let o = send(&mut limited, get("/", &[("x-big", &big)]));
    assert!(up(&o).get("x-copy").is_none(), "over 8192 bytes: skipped");
    assert!(
        up(&o).get("x-default").is_none(),
        "the default replaces a missing value, not an oversized one"
    );
    assert!(o.response.headers().get("x-echo").is_none());
    assert!(
        o.logs.iter().any(|l| l.message
            == "request.set[0] `x-copy` skipped: the value is longer than max_value_bytes"),
        "{:?}",
        o.logs
    );
    let mut roomy = chain_with(
        r#"{"max_value_bytes": 65536,
            "request": {"set": [{"name": "x-copy", "value": "{request.header.x-big}"}]}}"#,
    );
    let o = send(&mut roomy, get("/", &[("x-big", &big)]));
    assert_eq!(up(&o)["x-copy"].as_bytes(), &big[..]);
}

#[test]
fn missing_attributes_take_the_default_or_skip() {
    let mut chain = chain_with(
        r#"{"request": {"set": [
              {"name": "x-sni", "value": "{attr:connection.requested_server_name|none}"},
              {"name": "x-sni-skipped", "value": "{attr:connection.requested_server_name}"},
              {"name": "x-route", "value": "{attr:xds.route_name|unnamed}"},
              {"name": "x-plugin", "value": "{attr:plugin_name}"}]},
            "response": {"set": [
              {"name": "x-local-addr", "value": "{attr:upstream.local_address|unknown}"},
              {"name": "x-upstream", "value": "{attr:upstream.address|local}"},
              {"name": "x-code", "value": "{attr:response.code}"}],
                         "rules": [{"when": {"path_prefix": "/noroute"},
                                    "set": [{"name": "x-noroute", "value": "{attr:response.code_details}"}]}]},
            "max_value_bytes": 100}"#,
    );
    let o = send(&mut chain, get("/", &[]));
    let upstream = up(&o);
    assert_eq!(upstream["x-sni"], "none");
    assert!(upstream.get("x-sni-skipped").is_none());
    assert_eq!(
        upstream["x-route"], "unnamed",
        "an empty attribute is missing"
    );
    assert_eq!(upstream["x-plugin"], "ha");
    let res = o.response.headers();
    // The router's connection to the upstream has a local address, as in
    // Envoy (the harness's default one).
    assert_eq!(res["x-local-addr"], "127.0.0.1:40000");
    assert_eq!(res["x-upstream"], "127.0.0.1:8080");
    assert_eq!(res["x-code"], "200");
}

#[test]
fn a_local_reply_has_no_upstream() {
    // Removing x-forwarded-proto leaves no route: the router answers 404.
    let mut chain = chain_with(
        r#"{"request": {"remove": ["x-forwarded-proto"]},
            "response": {"set": [{"name": "x-upstream", "value": "{attr:upstream.address|local}"},
                                 {"name": "x-details", "value": "{attr:response.code}/{attr:response.code_details}"},
                                 {"name": "x-path", "value": "{request.path}"}]}}"#,
    );
    let o = chain.send(get("/x", &[]), upstream).expect("answered");
    assert!(o.upstream_request.is_none());
    let res = o.response.headers();
    assert_eq!(o.response.status(), 404);
    assert_eq!(res["x-upstream"], "local");
    assert_eq!(res["x-details"], "404/route_not_found");
    assert_eq!(res["x-path"], "/x");
}

#[test]
fn empty_values_are_missing_but_empty_literals_are_set() {
    let mut chain = chain_with(
        r#"{"request": {"set": [{"name": "x-copy", "value": "{request.header.x-empty}"},
                                {"name": "x-default", "value": "{request.header.x-empty|d}"},
                                {"name": "x-literal", "value": ""}],
                        "rules": [{"when": {"request_headers": [{"name": "x-empty", "equals": ""}]},
                                   "set": [{"name": "x-matched", "value": "1"}]}]}}"#,
    );
    let o = send(&mut chain, get("/", &[("x-empty", b"")]));
    let upstream = up(&o);
    assert!(upstream.get("x-copy").is_none());
    assert_eq!(upstream["x-default"], "d");
    assert_eq!(upstream["x-literal"], "");
    assert_eq!(upstream["x-matched"], "1");
}

#[test]
fn rules_and_carried_values_across_streams() {
    let mut chain = chain_with(
        r#"{"request": {"rules": [{"when": {"path_prefix": "/api/", "methods": ["POST"]},
                                   "set": [{"name": "x-write", "value": "{request.method}"}]}]},
            "response": {"set": [{"name": "x-path", "value": "{request.path}"}],
                         "rules": [{"when": {"methods": ["POST"]}, "add": [{"name": "x-was-post", "value": "yes"}]},
                                   {"when": {"response_headers": [{"name": "x-cache", "equals": "miss"}]},
                                    "add": [{"name": "x-never", "value": "1"}]}]}}"#,
    );
    for (method, path, write) in [
        ("POST", "/api/a", true),
        ("GET", "/api/b", false),
        ("POST", "/web", false),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "weir.test")
            .body(Bytes::new())
            .expect("request");
        let o = send(&mut chain, req);
        assert_eq!(up(&o).get("x-write").is_some(), write, "{method} {path}");
        let res = o.response.headers();
        assert_eq!(res["x-path"], path);
        assert_eq!(res.get("x-was-post").is_some(), method == "POST");
        assert!(res.get("x-never").is_none());
    }
}

/// Invalid configurations are rejected at configure, the log naming the field
/// and the reason.
#[test]
fn invalid_configs_are_rejected_naming_field_and_reason() {
    let cases = [
        (
            r#"{"request": {"set": [{"name": "x", "value": "a{request.header.x"}]}}"#,
            "request.set[0].value",
            "unclosed `{`",
        ),
        (
            r#"{"response": {"add": [{"name": "x", "value": "{attr:source.ip}"}]}}"#,
            "response.add[0].value",
            "unknown attribute `source.ip`",
        ),
        (
            r#"{"request": {"set": [{"name": "x", "value": "{request.header.bad name}"}]}}"#,
            "request.set[0].value",
            "invalid header name",
        ),
        (
            r#"{"request": {"rules": [{"when": {"path_prefix": "api"}}]}}"#,
            "request.rules[0].when.path_prefix",
            "must start with `/`",
        ),
        (
            r#"{"request": {"rules": [{"when": {"response_headers": [{"name": "x"}]}}]}}"#,
            "request.rules[0].when.response_headers",
            "do not exist in the request phase",
        ),
        (
            r#"{"request": {"set": [{"name": "x", "value": "{attr:upstream.address}"}]}}"#,
            "request.set[0].value",
            "does not exist in the request phase",
        ),
        (
            r#"{"request": {"rename": [{"from": ":path", "to": "x"}]}}"#,
            "request.rename[0]",
            "pseudo-headers cannot be renamed",
        ),
    ];
    for (config, field, reason) in cases {
        let plugin = engine()
            .load_file(filter_wasm("header-append"))
            .expect("module loads");
        let err = Chain::builder(engine())
            .filter(Filter::new(plugin).name("ha").configuration(config))
            .build()
            .expect_err(config);
        let Error::ConfigureFailed { logs, .. } = &err else {
            panic!("{config}: unexpected error {err}");
        };
        assert!(
            logs.iter()
                .any(|l| l.contains(&format!("`{field}`")) && l.contains(reason)),
            "{config}: {logs:?}"
        );
    }
}

/// Header values of every byte Envoy allows, through every kind of template
/// source: the module never traps and copies what it reads.
#[test]
fn arbitrary_header_bytes_never_trap() {
    let mut chain = chain_with(
        // `rename` runs before `set`: the copy reads the renamed header.
        r#"{"request": {"set": [{"name": "x-copy", "value": "{request.header.x-moved}|{request.path}"}],
                        "rename": [{"from": "x-in", "to": "x-moved"}],
                        "rules": [{"when": {"request_headers": [{"name": "x-in", "equals": "a"}]}, "set": [{"name": "x-a", "value": "1"}]}]},
            "response": {"set": [{"name": "x-echo", "value": "{request.header.x-in|none}"}]}}"#,
    );
    // Envoy accepts HTAB, SP, visible ASCII and obs-text (0x80-0xFF) in values.
    let allowed: Vec<u8> = (0u8..=255)
        .filter(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
        .collect();
    for chunk in allowed.chunks(17) {
        // Leading and trailing whitespace is not part of a header value.
        let value: Vec<u8> = [b"<", chunk, b">"].concat();
        let o = send(&mut chain, get("/p", &[("x-in", &value)]));
        let upstream = up(&o);
        let mut expected = value.clone();
        expected.extend_from_slice(b"|/p");
        assert_eq!(upstream["x-copy"].as_bytes(), &expected[..]);
        assert_eq!(upstream["x-moved"].as_bytes(), &value[..]);
        assert_eq!(o.response.headers()["x-echo"].as_bytes(), &value[..]);
    }
}
