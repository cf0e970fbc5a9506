//! header-append in the harness, configured from envoy/header-append.yaml.

use bytes::Bytes;
use weir_harness::{Chain, EnvoyConfig, Error, Filter, LogLevel};
use weir_tests::{engine, envoy_yaml, filter_wasm, scenarios};

fn chain() -> Chain {
    let config =
        EnvoyConfig::parse(&envoy_yaml("header-append.yaml")).expect("shipped config parses");
    config
        .chain_builder(engine(), |_| {
            engine().load_file(filter_wasm("header-append"))
        })
        .expect("module loads")
        .log_level(LogLevel::Debug)
        .build()
        .expect("plugin starts")
}

fn header_values<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect()
}

#[test]
fn changes_request_and_response_headers() {
    let mut chain = chain();
    let req = http::Request::get("/admin")
        .header("host", "weir.test")
        .header("x-internal-secret", "let-me-in")
        .body(Bytes::new())
        .expect("request");
    let outcome = chain
        .send(req, scenarios::header_append_upstream().as_ref())
        .expect("request succeeds");

    let upstream = outcome
        .upstream_request
        .as_ref()
        .expect("reached the upstream");
    assert!(upstream.headers().get("x-internal-secret").is_none());
    assert_eq!(header_values(upstream.headers(), "x-env"), ["demo"]);
    assert_eq!(
        header_values(upstream.headers(), "x-via-weir"),
        ["header-append"]
    );
    assert_eq!(upstream.headers()["host"], "weir.test");
    assert_eq!(upstream.headers()["x-forwarded-proto"], "http");

    let res = &outcome.response;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-powered-by").is_none());
    assert_eq!(header_values(res.headers(), "cache-control"), ["no-store"]);
    assert_eq!(res.headers()["x-filtered-by"], "weir");
    assert_eq!(res.headers()["server"], "envoy");
    assert!(outcome.local_reply.is_none());

    let debug: Vec<_> = outcome.logs_at(LogLevel::Debug).collect();
    assert_eq!(
        debug,
        [
            "request: removed 1, set 1, added 1 header(s)",
            "response: removed 1, set 1, added 1 header(s)"
        ]
    );
    assert!(outcome.fuel > 0);
}

#[test]
fn set_replaces_all_values_and_add_appends() {
    let mut chain = chain();
    let req = http::Request::get("/")
        .header("host", "weir.test")
        .header("x-env", "prod")
        .header("x-env", "staging")
        .header("x-via-weir", "client")
        .body(Bytes::new())
        .expect("request");
    let outcome = chain
        .send(req, scenarios::header_append_upstream().as_ref())
        .expect("request succeeds");
    let headers = outcome
        .upstream_request
        .expect("upstream")
        .into_parts()
        .0
        .headers;
    assert_eq!(header_values(&headers, "x-env"), ["demo"]);
    assert_eq!(
        header_values(&headers, "x-via-weir"),
        ["client", "header-append"]
    );
}

#[test]
fn non_utf8_header_values_pass_through() {
    let mut chain = chain();
    let req = http::Request::get("/")
        .header("host", "weir.test")
        .header(
            "x-binary",
            http::HeaderValue::from_bytes(b"caf\xe9 \xff").expect("obs-text"),
        )
        .body(Bytes::new())
        .expect("request");
    let outcome = chain
        .send(req, scenarios::header_append_upstream().as_ref())
        .expect("request succeeds");
    let upstream = outcome.upstream_request.expect("upstream");
    assert_eq!(upstream.headers()["x-binary"].as_bytes(), b"caf\xe9 \xff");
}

#[test]
fn invalid_config_is_rejected_at_configure_naming_the_field() {
    let plugin = engine()
        .load_file(filter_wasm("header-append"))
        .expect("loads");
    let bad =
        r#"{"response": {"add": [{"name": "x-ok", "value": "1"}, {"name": "x-bad", "value": 5}]}}"#;
    let err = Chain::builder(engine())
        .filter(Filter::new(plugin).name("ha").configuration(bad))
        .build()
        .expect_err("must be rejected");
    let Error::ConfigureFailed { plugin, logs } = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(plugin, "ha");
    assert!(
        logs.iter()
            .any(|l| l.contains("response.add[1].value") && l.contains("expected a string")),
        "{logs:?}"
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let plugin = engine()
        .load_file(filter_wasm("header-append"))
        .expect("loads");
    let err = Chain::builder(engine())
        .filter(Filter::new(plugin).configuration(r#"{"requests": {}}"#))
        .build()
        .expect_err("typo must be rejected");
    assert!(
        err.to_string().contains("unknown field `requests`"),
        "{err}"
    );
}

#[test]
fn the_module_declares_abi_0_2_1() {
    let plugin = engine()
        .load_file(filter_wasm("header-append"))
        .expect("loads");
    assert_eq!(plugin.abi(), weir_harness::AbiVersion::V0_2_1);
}

#[test]
fn every_scenario_runs_without_error() {
    let mut chain = chain();
    let upstream = scenarios::header_append_upstream();
    for s in scenarios::header_append() {
        let outcome = chain
            .send(s.request, upstream.as_ref())
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert!(
            outcome.logs.iter().all(|l| l.level < LogLevel::Warn),
            "{}: {:?}",
            s.name,
            outcome.logs
        );
    }
}
