//! What the harness's stream info tells filters (`proxy_get_property`), driven
//! by the `probe` test filter: time and durations on the virtual clock, body
//! and header sizes, response flags and details from the stream's fate (an
//! upstream that resets or times out, no route), the route and upstream
//! settings of the [`ConnectionManager`], and one stream info per stream in a
//! batch. `tests/conformance/properties-streaminfo.yaml` compares the same
//! attributes with Envoy's.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use weir_harness::{
    Arrival, Chain, ConnectionManager, EnvoyConfig, Error, Filter, LogLevel, LogRecord,
    UpstreamFault,
};
use weir_tests::{engine, filter_wasm};

/// The probe under a connection manager `hcm`, its clock starting at `start`.
fn chain(hcm: ConnectionManager, start: SystemTime) -> Chain {
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("probe"))
        .connection_manager(hcm)
        .log_level(LogLevel::Info)
        .start_time(start)
        .build()
        .expect("starts")
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// A request with probe scripts.
fn request(scripts: &[(&str, &str)], body: &'static str) -> http::Request<Bytes> {
    let mut b = http::Request::post("/p")
        .header("host", "streaminfo.test")
        .header("x-probe-id", "1");
    if !body.is_empty() {
        b = b.header("content-length", body.len());
    }
    for (name, script) in scripts {
        b = b.header(*name, *script);
    }
    b.body(Bytes::from_static(body.as_bytes()))
        .expect("request")
}

/// An upstream that answers `body` with `fault`.
fn upstream(
    fault: Option<UpstreamFault>,
    body: &'static str,
) -> impl FnMut(http::Request<Bytes>) -> http::Response<Bytes> {
    move |_| {
        let mut b = http::Response::builder();
        if let Some(fault) = fault {
            b = b.extension(fault);
        }
        b.body(Bytes::from_static(body.as_bytes()))
            .expect("response")
    }
}

/// The probe's lines for `callback`, without the callback's name.
fn lines(logs: &[LogRecord], callback: &str) -> Vec<String> {
    logs.iter()
        .filter_map(|l| l.message.strip_prefix(callback))
        .filter_map(|l| l.strip_prefix(' '))
        .map(str::to_owned)
        .collect()
}

#[test]
fn time_and_sizes_follow_the_virtual_clock_and_the_bytes() {
    let start = at(1_700_000_000);
    let mut chain = chain(ConnectionManager::default(), start);
    chain.advance(Duration::from_millis(1500));
    let scripts = [
        (
            "x-probe-request",
            "propn:request.time;propn:request.size;propn:response.flags",
        ),
        ("x-probe-request-body", "propn:request.size"),
        (
            "x-probe-log",
            "propn:request.duration;propn:response.size;propn:response.backend_latency;\
             propn:upstream.request_attempt_count",
        ),
    ];
    let outcome = chain
        .send(
            request(&scripts, "0123456789"),
            upstream(
                Some(UpstreamFault::Delay(Duration::from_millis(250))),
                "hello",
            ),
        )
        .expect("answered");
    assert_eq!(outcome.response.status(), 200);
    assert_eq!(
        lines(&outcome.logs, "on_request_headers"),
        [
            "propn:request.time -> 0 1700000001500000000",
            // The declared content-length.
            "propn:request.size -> 0 10",
            "propn:response.flags -> 0 0",
        ]
    );
    assert!(
        lines(&outcome.logs, "on_request_body").contains(&"propn:request.size -> 0 10".to_owned())
    );
    assert_eq!(
        lines(&outcome.logs, "on_log"),
        [
            "propn:request.duration -> 0 250000000",
            "propn:response.size -> 0 5",
            "propn:response.backend_latency -> 0 250000000",
            "propn:upstream.request_attempt_count -> 0 1",
        ]
    );
}

#[test]
fn an_upstream_that_closes_before_its_headers_is_answered_503() {
    let mut chain = chain(ConnectionManager::default(), at(0));
    let log = (
        "x-probe-log",
        "propn:response.flags;prop:response.code_details",
    );
    let outcome = chain
        .send(
            request(&[log], ""),
            upstream(Some(UpstreamFault::CloseBeforeHeaders), "never"),
        )
        .expect("answered");
    assert_eq!(outcome.response.status(), 503);
    assert_eq!(
        outcome.response.body(),
        "upstream connect error or disconnect/reset before headers. reset reason: \
         connection termination"
    );
    let reply = outcome.local_reply.expect("the router answered");
    assert_eq!(reply.plugin, "envoy.filters.http.router");
    assert_eq!(
        reply.details,
        "upstream_reset_before_response_started{connection_termination}"
    );
    // The upstream received the request.
    assert!(outcome.upstream_request.is_some());
    assert_eq!(
        lines(&outcome.logs, "on_log"),
        [
            "propn:response.flags -> 0 64",
            "prop:response.code_details -> 0 \
             upstream_reset_before_response_started{connection_termination}",
        ]
    );
}

#[test]
fn an_upstream_that_refuses_the_connection_is_answered_503_uf() {
    let mut chain = chain(ConnectionManager::default(), at(0));
    let log = (
        "x-probe-log",
        "propn:response.flags;prop:response.code_details;\
         prop:upstream.transport_failure_reason;prop:upstream.local_address",
    );
    let outcome = chain
        .send(
            request(&[log], ""),
            upstream(Some(UpstreamFault::ConnectionRefused), "never"),
        )
        .expect("answered");
    assert_eq!(outcome.response.status(), 503);
    assert_eq!(
        outcome.response.body(),
        "upstream connect error or disconnect/reset before headers. reset reason: \
         remote connection failure"
    );
    let details = "upstream_reset_before_response_started{remote_connection_failure|\
                   delayed_connect_error:_Connection_refused}";
    let reply = outcome.local_reply.expect("the router answered");
    assert_eq!(reply.plugin, "envoy.filters.http.router");
    assert_eq!(reply.details, details);
    // Nothing reached the host.
    assert!(outcome.upstream_request.is_none());
    assert_eq!(
        lines(&outcome.logs, "on_log"),
        [
            "propn:response.flags -> 0 32".to_owned(),
            format!("prop:response.code_details -> 0 {details}"),
            "prop:upstream.transport_failure_reason -> 0 delayed connect error: \
             Connection refused"
                .to_owned(),
            "prop:upstream.local_address -> 1".to_owned(),
        ]
    );
}

#[test]
fn a_callout_to_a_host_that_refuses_gets_envoys_503() {
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(plugin).name("probe"))
        .cluster(
            "callout",
            upstream(Some(UpstreamFault::ConnectionRefused), "never"),
        )
        .log_level(LogLevel::Info)
        .build()
        .expect("starts");
    let scripts = [
        ("x-probe-request", "call:callout:GET:/x:a.test;return:1"),
        ("x-probe-callout", "get:6::status;buf:4:0:200;continue:0"),
    ];
    let outcome = chain
        .send(request(&scripts, ""), upstream(None, "ok"))
        .expect("answered");
    assert_eq!(outcome.response.status(), 200);
    assert_eq!(
        lines(&outcome.logs, "on_http_call_response"),
        [
            "token=4 headers=3 body=98 trailers=0",
            "effective:2 -> 0",
            "get:6::status -> 0 503",
            "buf:4:0:200 -> 0 upstream connect error or disconnect/reset before headers. \
             reset reason: remote connection failure",
            "continue:0 -> 0",
        ]
    );
}

#[test]
fn an_upstream_slower_than_the_route_timeout_is_answered_504_when_it_expires() {
    let hcm = ConnectionManager::default().route_timeout(Some(Duration::from_secs(1)));
    let mut chain = chain(hcm, at(0));
    let log = (
        "x-probe-log",
        "propn:response.flags;prop:response.code_details;propn:request.duration;\
         prop:response.backend_latency",
    );
    let slow = Some(UpstreamFault::Delay(Duration::from_millis(1500)));
    let outcome = chain
        .send(request(&[log], ""), upstream(slow, "late"))
        .expect("answered");
    assert_eq!(outcome.response.status(), 504);
    assert_eq!(outcome.response.body(), "upstream request timeout");
    let reply = outcome.local_reply.expect("the router answered");
    assert_eq!(reply.details, "response_timeout");
    assert_eq!(
        lines(&outcome.logs, "on_log"),
        [
            "propn:response.flags -> 0 4",
            "prop:response.code_details -> 0 response_timeout",
            "propn:request.duration -> 0 1000000000",
            "prop:response.backend_latency -> 1",
        ]
    );
    // Within the timeout, the upstream's answer arrives; the next stream has
    // a stream info of its own.
    let quick = Some(UpstreamFault::Delay(Duration::from_millis(900)));
    let log = (
        "x-probe-log",
        "propn:response.flags;prop:response.code_details;propn:request.duration;\
         propn:response.backend_latency",
    );
    let outcome = chain
        .send(request(&[log], ""), upstream(quick, "in time"))
        .expect("answered");
    assert_eq!(outcome.response.status(), 200);
    assert_eq!(outcome.response.body(), "in time");
    assert_eq!(
        lines(&outcome.logs, "on_log"),
        [
            "propn:response.flags -> 0 0",
            "prop:response.code_details -> 0 via_upstream",
            "propn:request.duration -> 0 900000000",
            "propn:response.backend_latency -> 0 900000000",
        ]
    );
}

#[test]
fn an_upstream_that_closes_after_its_headers_resets_the_stream() {
    let mut chain = chain(ConnectionManager::default(), at(0));
    let scripts = [
        ("x-probe-response", "propn:response.code"),
        ("x-probe-response-body", "propn:response.size"),
        (
            "x-probe-log",
            "propn:response.flags;prop:response.code_details;propn:response.code;\
             propn:response.size",
        ),
    ];
    let result = chain.send(
        request(&scripts, ""),
        upstream(Some(UpstreamFault::CloseAfterHeaders), "partial"),
    );
    let Err(Error::Reset {
        plugin,
        upstream_request,
        logs,
        ..
    }) = result
    else {
        panic!("expected a reset, got {result:?}");
    };
    assert_eq!(plugin, "envoy.filters.http.router");
    assert!(upstream_request.is_some());
    assert_eq!(
        lines(&logs, "on_response_headers"),
        ["propn:response.code -> 0 200"]
    );
    // The body never reaches the filters.
    assert!(lines(&logs, "on_response_body").is_empty());
    assert_eq!(
        lines(&logs, "on_log"),
        [
            "propn:response.flags -> 0 8388608",
            "prop:response.code_details -> 0 upstream_reset_after_response_started{protocol_error}",
            "propn:response.code -> 0 200",
            "propn:response.size -> 0 0",
        ]
    );
}

#[test]
fn the_route_and_the_upstream_connection_come_from_the_connection_manager() {
    let hcm = ConnectionManager::default()
        .route_cluster("backend")
        .route_name("r1")
        .virtual_host_name("vh")
        .upstream_local_address("10.1.1.1:33000".parse().expect("addr"));
    let mut chain = chain(hcm, at(0));
    let scripts = [
        (
            "x-probe-request",
            "prop:xds.cluster_name;prop:xds.route_name;prop:xds.virtual_host_name;\
             prop:upstream.local_address",
        ),
        ("x-probe-response", "prop:upstream.local_address"),
    ];
    let outcome = chain
        .send(request(&scripts, ""), upstream(None, ""))
        .expect("answered");
    assert_eq!(
        lines(&outcome.logs, "on_request_headers"),
        [
            "prop:xds.cluster_name -> 0 backend",
            "prop:xds.route_name -> 0 r1",
            "prop:xds.virtual_host_name -> 0 vh",
            // Not before the router sends the request.
            "prop:upstream.local_address -> 1",
        ]
    );
    assert_eq!(
        lines(&outcome.logs, "on_response_headers"),
        ["prop:upstream.local_address -> 0 10.1.1.1:33000"]
    );
}

/// A route whose cluster is missing (`ConnectionManager::route_cluster_missing`,
/// what `EnvoyConfig` sets for `validate_clusters: false`): the router answers
/// 503 `cluster_not_found` with flag `NC` (0x1000000), nothing goes
/// upstream, the filter's response headers callback sees the reply end the
/// stream, and no stream attribute names a cluster.
#[test]
fn a_route_to_a_missing_cluster_is_answered_503_nc() {
    let hcm = ConnectionManager::default()
        .route_cluster("missing")
        .route_name("to-missing")
        .virtual_host_name("vh")
        .route_cluster_missing(true);
    let mut chain = chain(hcm, at(0));
    let scripts = [
        (
            "x-probe-request",
            "prop:xds.cluster_name;prop:xds.route_name;propn:upstream.num_endpoints",
        ),
        ("x-probe-request-body", "eos"),
        (
            "x-probe-response",
            "eos;propn:response.flags;prop:response.code_details;propn:response.code",
        ),
        (
            "x-probe-log",
            "propn:response.flags;prop:xds.cluster_name;prop:xds.route_name;\
             propn:upstream.request_attempt_count;prop:upstream.address",
        ),
    ];
    let outcome = chain
        .send(request(&scripts, "hello"), |_: http::Request<Bytes>| {
            panic!("nothing goes upstream")
        })
        .expect("answered");
    assert_eq!(outcome.response.status(), 503);
    assert!(outcome.upstream_request.is_none());
    assert_eq!(
        lines(&outcome.logs, "on_request_headers"),
        [
            "prop:xds.cluster_name -> 1",
            "prop:xds.route_name -> 0 to-missing",
            "propn:upstream.num_endpoints -> 1 not 8 bytes (0): ",
        ]
    );
    // Answered at the headers: the body callback never runs.
    assert!(lines(&outcome.logs, "on_request_body").is_empty());
    assert_eq!(
        lines(&outcome.logs, "on_response_headers"),
        [
            "eos -> 0 true",
            "propn:response.flags -> 0 16777216",
            "prop:response.code_details -> 0 cluster_not_found",
            "propn:response.code -> 0 503",
        ]
    );
    assert_eq!(
        lines(&outcome.logs, "on_log"),
        [
            "propn:response.flags -> 0 16777216",
            "prop:xds.cluster_name -> 1",
            "prop:xds.route_name -> 0 to-missing",
            "propn:upstream.request_attempt_count -> 0 0",
            "prop:upstream.address -> 1",
        ]
    );
}

#[test]
fn an_envoy_config_gives_its_route_and_virtual_host_names() {
    let yaml = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          route_config:
            virtual_hosts:
            - name: site
              domains: ["*"]
              routes:
              - name: everything
                match: { prefix: "/" }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
  clusters:
  - name: backend
"#;
    let config = EnvoyConfig::parse(yaml).expect("parses");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let mut chain = chain(config.connection_manager, at(0));
    let scripts = [(
        "x-probe-request",
        "prop:xds.route_name;prop:xds.virtual_host_name;prop:xds.cluster_name",
    )];
    let outcome = chain
        .send(request(&scripts, ""), upstream(None, ""))
        .expect("answered");
    assert_eq!(
        lines(&outcome.logs, "on_request_headers"),
        [
            "prop:xds.route_name -> 0 everything",
            "prop:xds.virtual_host_name -> 0 site",
            "prop:xds.cluster_name -> 0 backend",
        ]
    );
}

#[test]
fn each_stream_of_a_batch_has_its_own_stream_info() {
    let mut chain = chain(ConnectionManager::default(), at(100));
    // The first stream waits for its slow upstream while the second one
    // arrives and ends; then the first one logs.
    let log = (
        "x-probe-log",
        "propn:connection.id;propn:request.time;propn:request.duration;propn:request.size",
    );
    let first = request(&[log], "abc");
    let mut second = request(&[log], "0123456789");
    second
        .extensions_mut()
        .insert(Arrival(Duration::from_millis(100)));
    let outcomes = chain.send_all(
        [first, second],
        |req: http::Request<Bytes>| -> http::Response<Bytes> {
            let delay = if req.body().len() == 3 { 300 } else { 50 };
            http::Response::builder()
                .extension(UpstreamFault::Delay(Duration::from_millis(delay)))
                .body(Bytes::new())
                .expect("response")
        },
    );
    let logged: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| lines(&o.as_ref().expect("answered").logs, "on_log"))
        .collect();
    assert_eq!(
        logged,
        [
            [
                "propn:connection.id -> 0 1",
                "propn:request.time -> 0 100000000000",
                "propn:request.duration -> 0 300000000",
                "propn:request.size -> 0 3",
            ],
            [
                "propn:connection.id -> 0 2",
                "propn:request.time -> 0 100100000000",
                "propn:request.duration -> 0 50000000",
                "propn:request.size -> 0 10",
            ],
        ]
    );
}
