//! Filters built with the weir SDK, in the harness: every host-call family of
//! tests/filters/sdk-families, including the plugin's timers on the virtual clock
//! (which Envoy can only run in real time; the rest is also in the conformance
//! suite, compared with Envoy).

use std::time::Duration;

use bytes::Bytes;
use weir_harness::{Chain, ConnectionManager, Filter, LogLevel, MetricValue, Trailers};
use weir_tests::{engine, filter_wasm};

fn chain(config: &str) -> Chain {
    chain_with(config, ConnectionManager::default())
}

fn chain_with(config: &str, hcm: ConnectionManager) -> Chain {
    let plugin = engine()
        .load_file(filter_wasm("sdk-families"))
        .expect("module loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("families").configuration(config))
        .connection_manager(hcm)
        .log_level(LogLevel::Info)
        .build()
        .expect("plugin starts")
}

fn send(chain: &mut Chain, path: &str, op: &str) -> weir_harness::Outcome {
    let req = http::Request::get(path)
        .header("host", "sdk.test")
        .header("x-op", op)
        .body(Bytes::new())
        .expect("request");
    chain
        .send(req, |_| http::Response::new(Bytes::from_static(b"ok")))
        .expect("request runs")
}

fn info(outcome: &weir_harness::Outcome) -> Vec<&str> {
    outcome.logs_at(LogLevel::Info).collect()
}

#[test]
fn properties_shared_data_and_metrics() {
    let mut chain = chain("{}");
    let o = send(&mut chain, "/p?x=1", "props");
    let props = info(&o)[0];
    assert!(props.contains("method=Some(\"GET\")"), "{props}");
    assert!(props.contains("url_path=Some(\"/p\")"), "{props}");
    assert!(props.contains("plugin=Some(\"families\")"), "{props}");
    assert!(props.contains("missing=None"), "{props}");

    let o = send(&mut chain, "/", "shared");
    assert_eq!(
        info(&o)[0],
        "shared: hits=1 raw=Some(\"1\") fresh_cas_written=true stale_cas_written=false"
    );
    let o = send(&mut chain, "/", "shared");
    assert!(info(&o)[0].starts_with("shared: hits=2 "), "{:?}", info(&o));

    send(&mut chain, "/", "metric");
    assert_eq!(
        chain.metrics().get("sdk_families_ops.op=metric"),
        Some(&MetricValue::Counter(3))
    );
}

#[test]
fn shared_queues_and_foreign_functions() {
    let mut chain = chain("{}");
    let o = send(&mut chain, "/jobs/1", "queue");
    assert_eq!(
        info(&o),
        [
            "queue: enqueued two jobs",
            "queue: no-such-queue resolves to None",
            // Delivered to the plugin once the request event is handled.
            "queue ready (jobs): first job for /jobs/1",
            "queue ready (jobs): second job",
            "response: status=Some(200) op=queue",
            "stream done",
        ]
    );
    let o = send(&mut chain, "/", "zip");
    let zip = info(&o)[0];
    assert!(zip.starts_with("zip: 29 bytes packed into "), "{zip}");
    assert!(zip.contains("round trip exact"), "{zip}");
    assert!(
        zip.contains("unknown function: Err(") && zip.contains("NotFound"),
        "{zip}"
    );
}

#[test]
fn errors_answer_with_their_reply() {
    let mut chain = chain("{}");
    let o = send(&mut chain, "/", "deny");
    assert_eq!(o.response.status(), 401);
    assert_eq!(
        o.response.headers()["www-authenticate"],
        "Bearer error=\"invalid_request\""
    );
    assert!(o.upstream_request.is_none());
    assert!(
        o.logs_at(LogLevel::Error).next().is_none(),
        "not logged as an error"
    );

    let o = send(&mut chain, "/", "fail");
    assert_eq!(o.response.status(), 500);
    let details = o.local_reply.as_ref().map(|r| r.details.as_str());
    assert_eq!(details, Some("weir_filter_error"));
    let errors: Vec<_> = o.logs_at(LogLevel::Error).collect();
    assert!(
        errors.iter().any(|e| e.contains("proxy_get_property")),
        "the error names the host call: {errors:?}"
    );
}

#[test]
fn plugin_timers_share_the_host_tick() {
    let mut chain = chain(r#"{"tick_ms": 100}"#);
    chain.advance(Duration::from_millis(650));
    let metrics = chain.metrics();
    assert_eq!(
        metrics.get("sdk_families_ticks.timer=fast"),
        Some(&MetricValue::Counter(6))
    );
    assert_eq!(
        metrics.get("sdk_families_ticks.timer=slow"),
        Some(&MetricValue::Counter(2))
    );
}

fn grpc_chain(service: impl weir_harness::GrpcService + 'static) -> Chain {
    let plugin = engine()
        .load_file(filter_wasm("sdk-families"))
        .expect("module loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("families").configuration("{}"))
        .grpc_service("grpc", service)
        .build()
        .expect("plugin starts")
}

#[test]
fn unary_grpc_calls_hold_the_request_until_their_answer() {
    let mut chain = grpc_chain(|req: &weir_harness::GrpcRequest| {
        let mut answer = b"hello ".to_vec();
        answer.extend_from_slice(req.message());
        weir_harness::GrpcReply::ok(answer)
    });
    let o = send(&mut chain, "/ada", "grpc");
    assert_eq!(o.response.status(), 200);
    let up = o.upstream_request.as_ref().expect("the request went on");
    assert_eq!(up.headers()["x-grpc-answer"], "hello ada");
    let [call] = o.grpc.as_slice() else {
        panic!("one call: {:?}", o.grpc);
    };
    assert_eq!(
        (call.request.service(), call.request.method()),
        ("pkg.Echo", "Say")
    );
    assert_eq!(call.request.http.headers()["x-op"], "grpc");
    assert_eq!(call.request.http.headers()["grpc-timeout"], "5000m");
    assert_eq!(call.status, Some(0));
    assert!(
        info(&o).contains(
            &"grpc: GrpcToken(5) status=0 ok=true message=\"hello ada\" status_message=\"\""
        ),
        "{:?}",
        info(&o)
    );
}

#[test]
fn grpc_failures_reach_the_filter_with_their_status() {
    let mut chain = grpc_chain(|req: &weir_harness::GrpcRequest| {
        if req.message() == b"slow" {
            weir_harness::GrpcReply::no_answer()
        } else {
            weir_harness::GrpcReply::status(7, "not allowed")
        }
    });
    let o = send(&mut chain, "/bob", "grpc");
    assert_eq!(o.response.status(), 503);
    assert_eq!(o.response.body().as_ref(), b"not allowed{via_upstream}");

    let req = http::Request::get("/slow")
        .header("host", "sdk.test")
        .header("x-op", "grpc")
        .header("x-timeout-ms", "200")
        .body(Bytes::new())
        .expect("request");
    let o = chain
        .send(req, |_| http::Response::new(Bytes::from_static(b"ok")))
        .expect("runs");
    assert_eq!(o.response.status(), 503);
    assert_eq!(
        o.response.body().as_ref(),
        b"upstream request timeout{response_timeout}"
    );

    let o = send(&mut chain, "/", "grpc-nowhere");
    assert!(
        info(&o)[0].starts_with("grpc: Err(") && info(&o)[0].contains("nowhere"),
        "{:?}",
        info(&o)
    );
}

#[test]
fn grpc_streams_deliver_metadata_messages_and_the_close() {
    let mut chain = grpc_chain(|req: &weir_harness::GrpcRequest| {
        let mut reply = weir_harness::GrpcReply::status(0, "").initial_metadata("x-h", "v");
        for m in &req.messages {
            reply = reply.message(m.clone());
        }
        reply.trailing_metadata("x-t", "w")
    });
    let o = send(&mut chain, "/", "grpc-stream");
    assert_eq!(o.response.status(), 200);
    let up = o.upstream_request.as_ref().expect("the request went on");
    assert_eq!(up.headers()["x-grpc-stream"], "one,two");
    assert_eq!(
        info(&o)[..6],
        [
            "grpc-stream: opened GrpcStream(6)",
            "grpc-stream: GrpcStream(6) metadata (4) [\":status=200\", \"content-type=application/grpc\", \"x-h=v\"]",
            "grpc-stream: message \"one\"",
            "grpc-stream: message \"two\"",
            "grpc-stream: GrpcStream(6) metadata (2) [\"x-t=w\", \"grpc-status=0\"]",
            "grpc-stream: closed 0 \"via_upstream\"",
        ]
    );
    let [stream] = o.grpc.as_slice() else {
        panic!("one stream: {:?}", o.grpc);
    };
    assert_eq!(stream.request.http.headers()["x-op"], "grpc-stream");
    assert!(stream.request.http.headers().get("grpc-timeout").is_none());
}

/// sdk-families with trailers carried on both sides.
fn trailers_chain() -> Chain {
    chain_with(
        "{}",
        ConnectionManager::default()
            .enable_trailers(true)
            .upstream_enable_trailers(true),
    )
}

fn trailers(pairs: &[(&str, &str)]) -> Trailers {
    Trailers::from_pairs(pairs.iter().copied()).expect("valid trailers")
}

/// A chunked POST with `op`, `body` and request `trailers`; the upstream
/// answers `answer` with `answer_trailers`.
fn send_with_trailers(
    chain: &mut Chain,
    op: &str,
    body: &'static str,
    request_trailers: Option<Trailers>,
    answer: &'static str,
    answer_trailers: Trailers,
) -> weir_harness::Outcome {
    let mut req = http::Request::post("/t")
        .header("host", "sdk.test")
        .header("x-op", op)
        .header("transfer-encoding", "chunked");
    if let Some(t) = request_trailers {
        req = req.extension(t);
    }
    let req = req
        .body(Bytes::from_static(body.as_bytes()))
        .expect("request");
    chain
        .send(req, move |_| {
            http::Response::builder()
                .extension(answer_trailers.clone())
                .body(Bytes::from_static(answer.as_bytes()))
                .expect("response")
        })
        .expect("request runs")
}

fn pairs(map: Option<&http::HeaderMap>) -> Vec<(String, String)> {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().expect("ascii").to_owned()))
            .collect()
    })
    .unwrap_or_default()
}

#[test]
fn trailer_views_read_and_change_trailers() {
    let mut chain = trailers_chain();
    let o = send_with_trailers(
        &mut chain,
        "trailers",
        "hello",
        Some(trailers(&[
            ("x-t", "1"),
            ("x-u", "2"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ])),
        "hi",
        trailers(&[("grpc-status", "0"), ("x-t", "one")]),
    );
    assert_eq!(
        info(&o),
        [
            "request trailers: x-t=1,x-u=2,x-multi=a,x-multi=b x-t=Some(\"1\") missing=None \
             x-multi=[\"a\", \"b\"] has x-u=true",
            "request trailers now: x-multi=a,x-multi=b,x-t=replaced,x-added=1,x-added=2",
            "response: status=Some(200) op=trailers",
            "response trailers: grpc-status=0,x-t=one x-t=Some(\"one\") missing=None x-multi=[] \
             has x-u=false",
            "response trailers now: grpc-status=0,x-t=replaced,x-added=1,x-added=2",
            "response trailers replaced: grpc-status=0,x-final=yes",
            "stream done",
        ]
    );
    let mut upstream = pairs(o.upstream_trailers());
    upstream.sort();
    let expected: Vec<(String, String)> = [
        ("x-added", "1"),
        ("x-added", "2"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("x-t", "replaced"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(upstream, expected);
    let client = pairs(o.response_trailers());
    assert_eq!(
        client,
        [
            ("grpc-status".to_owned(), "0".to_owned()),
            ("x-final".to_owned(), "yes".to_owned())
        ]
    );
}

#[test]
fn whole_bodies_come_just_before_the_trailers() {
    let mut chain = trailers_chain();
    let o = send_with_trailers(
        &mut chain,
        "trailers-body",
        "hello world",
        Some(trailers(&[("x-t", "1")])),
        "from upstream",
        trailers(&[("x-rt", "2")]),
    );
    assert_eq!(
        info(&o),
        [
            "request body: \"hello world\" end_of_stream=true",
            "request trailers: x-t=1",
            "response: status=Some(200) op=trailers-body",
            "response body: \"from upstream\" end_of_stream=true",
            "response trailers: x-rt=2",
            "stream done",
        ]
    );
    let up = o.upstream_request.as_ref().expect("reached the upstream");
    assert_eq!(up.body(), "HELLO WORLD");
    assert_eq!(o.response.body(), "from upstream (seen)");
    assert_eq!(pairs(o.upstream_trailers()).len(), 1);
    assert_eq!(pairs(o.response_trailers()).len(), 1);
}
