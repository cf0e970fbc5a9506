//! The transform sample filter with envoy/transform.yaml, in the harness and in
//! real Envoy 1.40: the same requests, the same outcomes. Bad input (broken,
//! huge, empty, non-UTF-8, deeply nested JSON; non-UTF-8 header values) gets the
//! documented status every time and never traps the module.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use weir_harness::{BodyChunks, Chain, EnvoyConfig, Error, Filter, LogLevel, Outcome};
use weir_tests::envoy::{Envoy, Rebind};
use weir_tests::net::{self, Handler, Upstream};
use weir_tests::observed::{ClientSaw, UpstreamSaw};
use weir_tests::{built_filters, engine, envoy_yaml, filter_wasm};

fn chain() -> Chain {
    let config = EnvoyConfig::parse(&envoy_yaml("transform.yaml")).expect("shipped config parses");
    config
        .chain_builder(engine(), |_| engine().load_file(filter_wasm("transform")))
        .expect("module loads")
        .log_level(LogLevel::Debug)
        .build()
        .expect("plugin starts")
}

/// A chain with one transform filter configured with `config`.
fn chain_with(config: &Value, allow_stop: bool) -> Chain {
    let plugin = engine()
        .load_file(filter_wasm("transform"))
        .expect("module loads");
    Chain::builder(engine())
        .filter(
            Filter::new(plugin)
                .name("transform")
                .configuration(config.to_string())
                .allow_on_headers_stop_iteration(allow_stop),
        )
        .log_level(LogLevel::Debug)
        .build()
        .expect("plugin starts")
}

/// The upstream: echoes what it received as JSON, wrapped as `{"payload": ...}`
/// with a version, except for paths that ask for something else.
fn handler() -> Handler {
    Arc::new(|req: http::Request<Bytes>| {
        let path = req.uri().path().to_owned();
        let json = |status: u16, body: &str| {
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("date", "Thu, 01 Jan 2026 00:00:00 GMT")
                .body(Bytes::from(body.to_owned()))
                .unwrap_or_default()
        };
        match path.as_str() {
            "/search" => json(404, r#"{"error":"no results"}"#),
            "/gone" => json(404, r#"{"error":"gone"}"#),
            "/raw" => json(200, r#"{"payload": [1, 2"#),
            _ => {
                let received = serde_json::from_slice::<Value>(req.body()).unwrap_or(Value::Null);
                let body = json!({"payload": {"version": 3, "received": received}});
                json(200, &body.to_string())
            }
        }
    })
}

fn post(path: &str, headers: &[(&str, &[u8])], body: impl Into<Bytes>) -> http::Request<Bytes> {
    let body = body.into();
    let mut b = http::Request::post(path)
        .header("host", "weir.test")
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(
            *k,
            http::HeaderValue::from_bytes(v).expect("valid header bytes"),
        );
    }
    if !body.is_empty() {
        b = b.header("content-length", body.len());
    }
    b.body(body).expect("request")
}

fn send(chain: &mut Chain, req: http::Request<Bytes>) -> Outcome {
    let outcome = chain
        .send(req, handler().as_ref())
        .expect("the stream completes");
    assert!(outcome.traps.is_empty(), "trapped: {:?}", outcome.traps);
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    outcome
}

fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[test]
fn the_shipped_config_transforms_both_ways() {
    let mut chain = chain();
    let req = post(
        "/users",
        &[("x-tenant", b"acme")],
        r#"{"id":"u-7","userName":"ann","password":"hunter2","tags":["admin","ops"]}"#,
    );
    let outcome = send(&mut chain, req);

    let up = outcome
        .upstream_request
        .as_ref()
        .expect("reached the upstream");
    let sent = body_json(up.body());
    assert_eq!(
        sent,
        json!({"id": "u-7", "user_name": "ann", "tags": ["ops"], "primary_tag": "admin",
               "meta": {"via": "weir-transform", "tenant": "acme"}})
    );
    assert_eq!(up.headers()["x-item-id"], "u-7");
    assert_eq!(up.headers()["content-length"], up.body().len().to_string());

    let res = &outcome.response;
    assert_eq!(res.status(), 200);
    let got = body_json(res.body());
    assert_eq!(got["data"]["version"], 3);
    assert_eq!(got["data"]["received"], sent);
    assert_eq!(res.headers()["x-api-version"], "3");
    assert_eq!(
        res.headers()["content-length"],
        res.body().len().to_string()
    );
}

#[test]
fn statuses_are_remapped_on_the_body() {
    let mut chain = chain();
    let get = |path: &str| {
        http::Request::get(path)
            .header("host", "weir.test")
            .body(Bytes::new())
            .expect("request")
    };
    let outcome = send(&mut chain, get("/search"));
    assert_eq!(outcome.response.status(), 200);
    assert_eq!(
        body_json(outcome.response.body()),
        json!({"data": {"error": "no results"}})
    );
    let outcome = send(&mut chain, get("/gone"));
    assert_eq!(outcome.response.status(), 404);
}

#[test]
fn bad_request_bodies_get_the_documented_status() {
    let mut chain = chain();
    // 60 000 bytes: under the 64 KiB limit, so the parser sees it.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let too_deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let cases: Vec<(&str, Bytes, u16)> = vec![
        ("broken JSON", Bytes::from_static(b"{\"id\": "), 400),
        ("trailing garbage", Bytes::from_static(b"{} []"), 400),
        (
            "not UTF-8",
            Bytes::from_static(b"{\"id\": \"\xff\xfe\"}"),
            400,
        ),
        ("nested 30 000 deep", Bytes::from(deep), 400),
        (
            "nested past serde_json's 128 levels",
            Bytes::from(too_deep),
            400,
        ),
        ("over the limit", Bytes::from(vec![b' '; 70_000]), 413),
    ];
    for (what, body, status) in cases {
        let outcome = send(&mut chain, post("/x", &[], body));
        assert_eq!(outcome.response.status(), status, "{what}");
        assert!(
            outcome.upstream_request.is_none(),
            "{what} reached the upstream"
        );
        let reply = outcome.local_reply.as_ref().expect("a local reply");
        assert!(
            reply.details.starts_with("transform_"),
            "{what}: {}",
            reply.details
        );
    }
}

#[test]
fn odd_but_valid_input_passes() {
    let mut chain = chain();
    // Empty body: nothing to transform.
    let outcome = send(&mut chain, post("/empty", &[], Bytes::new()));
    assert_eq!(
        outcome
            .upstream_request
            .as_ref()
            .expect("upstream")
            .body()
            .len(),
        0
    );
    // 120 levels deep: parsed, transformed, written back.
    let nested = format!("{{\"id\":1,\"n\":{}0{}}}", "[".repeat(120), "]".repeat(120));
    let outcome = send(&mut chain, post("/nested", &[], nested));
    let sent = body_json(outcome.upstream_request.as_ref().expect("upstream").body());
    assert_eq!(sent["meta"]["via"], "weir-transform");
    // Pointers into the wrong types and missing fields are skipped.
    let odd = r#"{"id":{"obj":1},"userName":["x"],"tags":"not an array","password":7}"#;
    let outcome = send(&mut chain, post("/odd", &[], odd));
    let up = outcome.upstream_request.as_ref().expect("upstream");
    assert!(
        up.headers().get("x-item-id").is_none(),
        "an object is no header value"
    );
    let sent = body_json(up.body());
    assert_eq!(sent["tags"], "not an array");
    assert!(sent.get("password").is_none());
    // A header value that is not UTF-8 is not copied into the body.
    let outcome = send(
        &mut chain,
        post("/t", &[("x-tenant", b"caf\xe9")], r#"{"id":1}"#),
    );
    let sent = body_json(outcome.upstream_request.as_ref().expect("upstream").body());
    assert!(sent["meta"].get("tenant").is_none(), "{sent}");
    // A scalar body: member operations do not apply.
    let outcome = send(&mut chain, post("/scalar", &[], "\"just a string\""));
    assert_eq!(
        outcome.upstream_request.as_ref().expect("upstream").body(),
        "\"just a string\""
    );
    // Another content type: untouched, content-length kept.
    let req = http::Request::post("/text")
        .header("host", "weir.test")
        .header("content-type", "text/plain")
        .header("content-length", "8")
        .body(Bytes::from_static(b"{\"id\":1}"))
        .expect("request");
    let outcome = send(&mut chain, req);
    let up = outcome.upstream_request.as_ref().expect("upstream");
    assert_eq!(up.body(), "{\"id\":1}");
    assert!(up.headers().get("x-item-id").is_none());
}

#[test]
fn a_body_in_many_chunks_is_transformed_once() {
    let mut chain = chain();
    let body = r#"{"id":42,"userName":"bo","tags":["a"],"pad":"0123456789"}"#;
    let mut req = post("/chunks", &[], body);
    req.headers_mut().remove("content-length");
    req.extensions_mut().insert(BodyChunks(vec![1; 40]));
    let outcome = send(&mut chain, req);
    let up = outcome.upstream_request.as_ref().expect("upstream");
    assert_eq!(body_json(up.body())["user_name"], "bo");
    assert_eq!(up.headers()["x-item-id"], "42");
    assert!(
        up.headers().get("content-length").is_none(),
        "stays chunked"
    );
}

/// Operations that would nest the body past 256 levels are skipped, so
/// serializing and freeing it never exhausts the wasm stack.
#[test]
fn documents_never_nest_past_the_limit() {
    let wrap32 = format!("/{}", vec!["w"; 32].join("/"));
    let ops: Vec<Value> = (0..5)
        .map(|_| json!({"op": "wrap", "path": wrap32}))
        .collect();
    let mut chain = chain_with(&json!({"request": {"ops": ops}}), false);
    let body = format!("{}0{}", "[".repeat(127), "]".repeat(127));
    let outcome = send(&mut chain, post("/deep", &[], body));
    let sent = outcome
        .upstream_request
        .as_ref()
        .expect("upstream")
        .body()
        .clone();
    // 127 + 4 × 32 = 255 levels; the fifth wrap would make 287.
    let opening = sent
        .iter()
        .take_while(|&&b| b == b'{' || b == b'"' || b == b'w' || b == b':')
        .count();
    assert!(opening > 0);
    let depth = sent.iter().filter(|&&b| b == b'{' || b == b'[').count();
    assert_eq!(depth, 255);
    let skipped: Vec<_> = outcome
        .logs_at(LogLevel::Debug)
        .filter(|l| l.contains("skipped"))
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("request.ops[4] (wrap)") && skipped[0].contains("256"));
}

#[test]
fn invalid_config_is_refused_with_the_field_named() {
    let plugin = engine()
        .load_file(filter_wasm("transform"))
        .expect("module loads");
    for (config, field, reason) in [
        (
            r#"{"request": {"ops": [{"op": "move", "from": "/a", "path": "a"}]}}"#,
            "request.ops[0].path",
            "invalid JSON Pointer",
        ),
        (
            r#"{"response": {"ops": [{"op": "move", "from": "/a", "path": "/a/b"}]}}"#,
            "response.ops[0]",
            "conflicting `move`",
        ),
        (
            r#"{"request": {"ops": [{"op": "header_to_body", "header": "bad header", "path": "/h"}]}}"#,
            "request.ops[0].header",
            "is not allowed",
        ),
        (
            r#"{"status": [{"from": 404, "to": 1000}]}"#,
            "status[0].to",
            "out of range",
        ),
    ] {
        let err = Chain::builder(engine())
            .filter(
                Filter::new(plugin.clone())
                    .name("transform")
                    .configuration(config),
            )
            .build()
            .expect_err("must be refused");
        let Error::ConfigureFailed { logs, .. } = &err else {
            panic!("unexpected error: {err}");
        };
        assert!(
            logs.iter().any(|l| l.contains(field) && l.contains(reason)),
            "{config}: {logs:?}"
        );
    }
}

/// Fuel for a typical transform (a 1 KB JSON body each way) and the module size;
/// `cargo test -p weir-tests --test transform -- --show-output` prints them.
#[test]
#[allow(clippy::print_stdout, reason = "the figures are the output")]
fn fuel_and_size() {
    let wasm = filter_wasm("transform");
    let size = std::fs::metadata(&wasm).expect("module").len();
    let mut chain = chain();
    let items: Vec<Value> = (0..22)
        .map(|i| json!({"sku": format!("SKU-{i:05}"), "qty": i, "price": 12.5}))
        .collect();
    let body = json!({"id": "order-1", "userName": "ann", "password": "x", "tags": ["a", "b"],
                      "items": items})
    .to_string();
    assert!((900..1200).contains(&body.len()), "{}", body.len());
    let outcome = send(
        &mut chain,
        post("/orders", &[("x-tenant", b"acme")], body.clone()),
    );
    let response_len = outcome.response.body().len();
    let transform_fuel = outcome.fuel;

    // The same request through a filter that transforms nothing, for comparison.
    let mut idle = chain_with(&json!({}), false);
    let baseline = send(&mut idle, post("/orders", &[], body.clone())).fuel;
    println!(
        "transform.wasm: {size} bytes; fuel per request (request {} B + response {response_len} B JSON, \
         6 request ops + 3 response ops, held headers): {transform_fuel}; with no ops: {baseline}",
        body.len()
    );
    assert!(transform_fuel > baseline);
}

// ── Real Envoy ────────────────────────────────────────────────────────────────

fn modules() -> HashMap<String, std::path::PathBuf> {
    built_filters()
        .iter()
        .map(|f| {
            (
                format!("{}.wasm", f.package.replace('-', "_")),
                f.wasm.clone(),
            )
        })
        .collect()
}

fn start(yaml: &str, upstream: &Upstream) -> anyhow::Result<Envoy> {
    let how = Rebind {
        clusters: HashMap::from([("upstream".to_owned(), upstream.addr())]),
        modules: modules(),
        loopback: true,
    };
    Envoy::start(yaml, &how)
}

/// The requests of the tests above, through Envoy and through the harness: what
/// the upstream and the client saw is identical.
#[test]
fn envoy_and_the_harness_agree() {
    let upstream = Upstream::start(handler()).expect("upstream");
    let envoy = start(&envoy_yaml("transform.yaml"), &upstream).unwrap_or_else(|e| panic!("{e:#}"));
    let mut chain = chain();
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let mut chunked = post(
        "/chunks",
        &[],
        r#"{"id":"c","userName":"z","pad":"0123456789abcdef"}"#,
    );
    chunked.headers_mut().remove("content-length");
    chunked.headers_mut().insert(
        "transfer-encoding",
        http::HeaderValue::from_static("chunked"),
    );
    chunked
        .extensions_mut()
        .insert(BodyChunks(vec![7, 7, 7, 7]));
    let requests: Vec<(&str, http::Request<Bytes>)> = vec![
        (
            "all request ops",
            post(
                "/users",
                &[("x-tenant", b"acme")],
                r#"{"id":"u-7","userName":"ann","password":"p","tags":["a","b"]}"#,
            ),
        ),
        ("broken JSON", post("/x", &[], "{\"id\": ")),
        (
            "not UTF-8",
            post("/x", &[], Bytes::from_static(b"{\"id\": \"\xff\"}")),
        ),
        ("nested 30 000 deep", post("/x", &[], deep)),
        ("over the limit", post("/x", &[], vec![b' '; 70_000])),
        ("empty", post("/empty", &[], Bytes::new())),
        (
            "non-UTF-8 header value",
            post("/t", &[("x-tenant", b"caf\xe9")], r#"{"id":1}"#),
        ),
        (
            "wrong types",
            post("/odd", &[], r#"{"id":{"o":1},"userName":["x"],"tags":"s"}"#),
        ),
        (
            "status remap on the body",
            http::Request::get("/search")
                .header("host", "weir.test")
                .body(Bytes::new())
                .expect("request"),
        ),
        (
            "invalid upstream JSON",
            http::Request::get("/raw")
                .header("host", "weir.test")
                .body(Bytes::new())
                .expect("request"),
        ),
        ("chunked", chunked),
    ];
    for (what, req) in requests {
        let harness = chain
            .send(req.clone(), handler().as_ref())
            .expect("harness");
        let harness = (
            harness.upstream_request.as_ref().map(UpstreamSaw::of),
            ClientSaw::of(&harness.response),
        );
        let response = net::send(envoy.listener, req).unwrap_or_else(|e| panic!("{what}: {e:#}"));
        let envoy_saw = (
            upstream.take_seen().first().map(UpstreamSaw::of),
            ClientSaw::of(&response),
        );
        assert_eq!(harness, envoy_saw, "{what}\n{}", envoy.log());
    }
}

/// Envoy refuses a bad configuration when it loads the plugin, and its log names
/// the field.
#[test]
fn envoy_refuses_an_invalid_config() {
    let shipped = envoy_yaml("transform.yaml");
    let good = r#"{"op": "rename", "path": "/userName", "to": "user_name"}"#;
    assert!(
        shipped.contains(good),
        "the shipped config changed; update this test"
    );
    let upstream = Upstream::start(handler()).expect("upstream");
    for (bad, field) in [
        (
            r#"{"op": "rename", "path": "userName", "to": "user_name"}"#,
            "request.ops[0].path",
        ),
        (
            r#"{"op": "rename", "path": "/userName", "to": "userName"}"#,
            "conflicting `rename`",
        ),
    ] {
        let yaml = shipped.replace(good, bad);
        let err = start(&yaml, &upstream).expect_err("Envoy must refuse the plugin");
        let log = format!("{err:#}");
        assert!(log.contains(field), "{log}");
    }
    for (good, bad, field) in [
        (
            r#"{"from": 503, "to": 502}"#,
            r#"{"from": 503, "to": 700}"#,
            "status[1].to",
        ),
        (
            r#""header": "x-tenant""#,
            r#""header": "x tenant""#,
            "request.ops[4].header",
        ),
    ] {
        assert!(
            shipped.contains(good),
            "the shipped config changed; update this test"
        );
        let err = start(&shipped.replace(good, bad), &upstream).expect_err("Envoy must refuse");
        assert!(format!("{err:#}").contains(field), "{err:#}");
    }
}
