//! A client that closes its connection before its stream ends
//! ([`weir_harness::Disconnect`]), driven by the `probe` test filter: Envoy
//! resets the stream, the filters' access logging and teardown still run, and
//! what was in flight for it arrives later at the root context.

use std::time::Duration;

use bytes::Bytes;
use weir_harness::{Chain, Disconnect, Error, Filter, LogLevel, UpstreamFault};
use weir_tests::{engine, filter_wasm};

/// The probe, with a `callout` cluster and an upstream that both answer after
/// `delay`.
fn chain() -> Chain {
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("probe"))
        .log_level(LogLevel::Info)
        .cluster("callout", |_: http::Request<Bytes>| {
            http::Response::builder()
                .extension(UpstreamFault::Delay(Duration::from_millis(500)))
                .body(Bytes::from_static(b"late"))
                .expect("response")
        })
        .build()
        .expect("starts")
}

fn slow_upstream(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::builder()
        .extension(UpstreamFault::Delay(Duration::from_millis(500)))
        .body(Bytes::from_static(b"ok"))
        .expect("response")
}

/// A request with probe scripts whose client leaves after `after_ms`.
fn request(id: &str, after_ms: u64, scripts: &[(&str, &str)]) -> http::Request<Bytes> {
    let mut b = http::Request::get("/")
        .header("host", "disconnect.test")
        .header("x-probe-id", id)
        .extension(Disconnect(Duration::from_millis(after_ms)));
    for (name, script) in scripts {
        b = b.header(*name, *script);
    }
    b.body(Bytes::new()).expect("request")
}

fn lines(logs: &[weir_harness::LogRecord]) -> Vec<String> {
    logs.iter().map(|l| l.message.clone()).collect()
}

const LOG: (&str, &str) = (
    "x-probe-log",
    "prop:response.code;prop:response.code_details;get:0::path",
);

#[test]
fn leaving_while_a_filter_waits_for_a_callout_resets_the_stream() {
    let mut chain = chain();
    let result = chain.send(
        request(
            "a",
            200,
            &[
                ("x-probe-request", "call:callout:GET:/auth:a.test;return:1"),
                ("x-probe-callout", "continue:0"),
                LOG,
            ],
        ),
        slow_upstream,
    );
    let Err(Error::Disconnected {
        phase,
        upstream_request,
        logs,
        callouts,
    }) = result
    else {
        panic!("expected a disconnect, got {result:?}");
    };
    assert_eq!(phase, "on_request_headers");
    assert!(
        upstream_request.is_none(),
        "the request never went upstream"
    );
    let logs = lines(&logs);
    let at = |line: &str| {
        logs.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no {line:?} in {logs:?}"))
    };
    // Access logging runs with no response and the connection manager's
    // details, then teardown; the callout answered later finds no stream.
    assert!(at("on_log prop:response.code -> 1") < at("on_delete a"));
    at("on_log prop:response.code_details -> 0 downstream_remote_disconnect");
    at("on_log get:0::path -> 0 /");
    assert!(at("on_delete a") < at("on_http_call_response effective:2 -> 2"));
    assert_eq!(callouts.len(), 1);
}

#[test]
fn leaving_while_the_upstream_is_slow_resets_its_request() {
    let mut chain = chain();
    let result = chain.send(request("b", 200, &[LOG]), slow_upstream);
    let Err(Error::Disconnected {
        phase,
        upstream_request,
        logs,
        ..
    }) = result
    else {
        panic!("expected a disconnect, got {result:?}");
    };
    assert_eq!(phase, "the upstream's response");
    assert!(upstream_request.is_some(), "the upstream had the request");
    assert!(lines(&logs).contains(&"on_log prop:response.code -> 1".to_owned()));
}

#[test]
fn a_client_that_would_leave_later_gets_its_response() {
    let mut chain = chain();
    let outcome = chain
        .send(request("c", 600, &[LOG]), slow_upstream)
        .expect("answered before the client left");
    assert_eq!(outcome.response.status(), 200);
    assert!(
        lines(&outcome.logs)
            .contains(&"on_log prop:response.code_details -> 0 via_upstream".to_owned())
    );
}

#[test]
fn one_client_leaving_leaves_the_other_streams_alone() {
    let mut chain = chain();
    let waits = [
        ("x-probe-request", "call:callout:GET:/auth:a.test;return:1"),
        ("x-probe-callout", "continue:0"),
    ];
    let results = chain.send_all(
        [
            request("left", 100, &waits),
            request("stays", 10_000, &waits),
        ],
        slow_upstream,
    );
    assert!(matches!(results[0], Err(Error::Disconnected { .. })));
    let stays = results[1].as_ref().expect("the other stream is answered");
    assert_eq!(stays.response.status(), 200);
    // Its own callout resumed it; the other's answer found no stream.
    assert!(lines(&stays.logs).contains(&"on_http_call_response continue:0 -> 0".to_owned()));
}
