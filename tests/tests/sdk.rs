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

/// The `callout` cluster of the async tests: answers by path.
fn async_cluster(req: http::Request<Bytes>) -> http::Response<Bytes> {
    let user = req
        .headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (status, body) = match req.uri().path() {
        "/authorize" if user == "mallory" => (403, "no".to_owned()),
        "/authorize" => (200, format!("token-{user}")),
        "/a" => (200, "A".to_owned()),
        "/b" => (200, "B".to_owned()),
        "/audit" => (200, "audited".to_owned()),
        "/broken" => {
            return http::Response::builder()
                .extension(weir_harness::UpstreamFault::CloseAfterHeaders)
                .body(Bytes::from_static(b"partial"))
                .expect("response");
        }
        "/slow" => {
            return http::Response::builder()
                .extension(weir_harness::UpstreamFault::Delay(Duration::from_millis(
                    1000,
                )))
                .body(Bytes::from_static(b"slow"))
                .expect("response");
        }
        _ => (404, String::new()),
    };
    http::Response::builder()
        .status(status)
        .body(Bytes::from(body))
        .expect("response")
}

fn async_chain(config: &str) -> Chain {
    let plugin = engine()
        .load_file(filter_wasm("sdk-async"))
        .expect("module loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("async").configuration(config))
        .cluster("callout", async_cluster)
        .grpc_service("grpc", |req: &weir_harness::GrpcRequest| {
            match req.message() {
                b"mallory" => weir_harness::GrpcReply::status(7, "permission denied"),
                b"" => weir_harness::GrpcReply::status(14, "unavailable"),
                user => {
                    let mut answer = b"granted:".to_vec();
                    answer.extend_from_slice(user);
                    weir_harness::GrpcReply::ok(answer)
                }
            }
        })
        .log_level(LogLevel::Info)
        .build()
        .expect("plugin starts")
}

fn async_send(chain: &mut Chain, path: &str, headers: &[(&str, &str)]) -> weir_harness::Outcome {
    let mut req = http::Request::get(path).header("host", "async.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    chain
        .send(req.body(Bytes::new()).expect("request"), |_| {
            http::Response::builder()
                .header("x-upstream", "1")
                .body(Bytes::from_static(b"ok"))
                .expect("response")
        })
        .expect("request runs")
}

fn upstream_header(o: &weir_harness::Outcome, name: &str) -> Option<String> {
    let up = o.upstream_request.as_ref()?;
    up.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

#[test]
fn async_tasks_await_callouts_and_answer_or_resume() {
    let mut chain = async_chain(r#"{"cluster": "callout"}"#);
    let o = async_send(&mut chain, "/one", &[("x-user", "alice")]);
    assert_eq!(o.response.status(), 200);
    assert_eq!(
        upstream_header(&o, "x-auth").as_deref(),
        Some("token-alice")
    );
    assert_eq!(o.callouts.len(), 1);
    assert_eq!(o.callouts[0].request.uri().path(), "/authorize");
    assert_eq!(
        info(&o),
        ["one: answered 200", "task over: /one", "stream done"]
    );

    // The filter's own error type makes the reply.
    let o = async_send(&mut chain, "/one", &[("x-user", "mallory")]);
    assert_eq!(o.response.status(), 403);
    assert_eq!(o.response.headers()["x-denied-by"], "403");
    assert_eq!(o.response.body().as_ref(), b"denied");
    assert_eq!(
        o.local_reply.as_ref().map(|r| r.details.as_str()),
        Some("sdk_async_denied")
    );
    assert!(o.upstream_request.is_none());

    // A task that does not wait answers the callback: no callout, no pause.
    let o = async_send(&mut chain, "/sync", &[]);
    assert_eq!(upstream_header(&o, "x-sync").as_deref(), Some("done"));
    assert!(o.callouts.is_empty());
}

#[test]
fn async_joined_callouts_are_in_flight_together() {
    let mut chain = async_chain(r#"{"cluster": "callout"}"#);
    let o = async_send(&mut chain, "/join", &[]);
    assert_eq!(o.response.status(), 200);
    let paths: Vec<&str> = o.callouts.iter().map(|c| c.request.uri().path()).collect();
    assert_eq!(paths, ["/a", "/b"]);
    assert_eq!(upstream_header(&o, "x-a").as_deref(), Some("A"));
    assert_eq!(upstream_header(&o, "x-b").as_deref(), Some("B"));
    assert_eq!(info(&o)[0], "join: answered 200 and 200");
}

#[test]
fn async_failures_and_grpc() {
    let mut chain = async_chain(r#"{"cluster": "callout"}"#);
    let o = async_send(&mut chain, "/grpc", &[("x-user", "ada")]);
    assert_eq!(
        upstream_header(&o, "x-grpc").as_deref(),
        Some("granted:ada")
    );
    assert_eq!(o.grpc.len(), 1);

    let o = async_send(&mut chain, "/grpc", &[("x-user", "mallory")]);
    assert_eq!(o.response.status(), 403);
    // Envoy's status message carries the response details.
    assert!(
        info(&o).contains(
            &"grpc: gRPC call to `grpc` failed with status 7: permission denied{via_upstream}"
        ),
        "{:?}",
        info(&o)
    );

    // Any other status is an error: 500, logged.
    let o = async_send(&mut chain, "/grpc", &[]);
    assert_eq!(o.response.status(), 500);
    let errors: Vec<&str> = o.logs_at(LogLevel::Error).collect();
    assert_eq!(
        errors,
        ["SdkAsync: gRPC call to `grpc` failed with status 14: unavailable{via_upstream}"]
    );
}

#[test]
fn async_response_tasks_hold_the_response() {
    let mut chain = async_chain(r#"{"cluster": "callout"}"#);
    let o = async_send(&mut chain, "/sync", &[("x-audit", "1")]);
    assert_eq!(o.response.status(), 200);
    assert_eq!(o.response.headers()["x-audited"], "audited");
    assert_eq!(o.response.headers()["x-upstream"], "1");
    let audit = o.callouts.last().expect("the audit callout");
    assert_eq!(audit.request.uri().path(), "/audit");
    assert_eq!(audit.request.body().as_ref(), b"200");
}

#[test]
fn async_select_and_timeout_race_a_slow_callout_against_the_tick() {
    let mut chain = async_chain(r#"{"cluster": "callout", "wait_ms": 200}"#);
    // The tick at 200 ms comes before the answer at 1000 ms.
    let o = async_send(&mut chain, "/select", &[]);
    assert_eq!(o.response.status(), 504);
    assert_eq!(o.response.body().as_ref(), b"too slow");
    assert_eq!(
        info(&o),
        ["select: the timer won", "task over: /select", "stream done"]
    );
    assert_eq!(o.callouts.len(), 1, "the slow call was sent");

    let o = async_send(&mut chain, "/timeout", &[]);
    assert_eq!(o.response.status(), 500);
    let errors: Vec<&str> = o.logs_at(LogLevel::Error).collect();
    assert_eq!(errors, ["SdkAsync: timed out after 200ms"]);

    // The timer wins, the request goes on, the late answer is ignored.
    let o = async_send(&mut chain, "/late", &[]);
    assert_eq!(o.response.status(), 200);
    assert_eq!(upstream_header(&o, "x-late").as_deref(), Some("timer"));
    assert_eq!(
        info(&o),
        [
            "select: the timer won, going on",
            "task over: /late",
            "stream done"
        ]
    );

    // With more time than the call takes, the call wins.
    let mut chain = async_chain(r#"{"cluster": "callout", "wait_ms": 1500}"#);
    let o = async_send(&mut chain, "/select", &[]);
    assert_eq!(upstream_header(&o, "x-answer").as_deref(), Some("slow"));
    let o = async_send(&mut chain, "/timeout", &[]);
    assert_eq!(upstream_header(&o, "x-answer").as_deref(), Some("slow"));
}

#[test]
fn async_sleeps_resume_the_stream_on_the_tick() {
    let mut chain = async_chain(r#"{"cluster": "callout", "wait_ms": 300}"#);
    let before = chain.advance(Duration::ZERO);
    assert!(before.logs.is_empty());
    let o = async_send(&mut chain, "/sleep", &[]);
    assert_eq!(o.response.status(), 200);
    assert_eq!(upstream_header(&o, "x-slept").as_deref(), Some("300"));
    assert_eq!(info(&o)[0], "sleep: woke up");
}

#[test]
fn async_plugin_tasks_refresh_on_the_virtual_clock() {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&counter);
    let plugin = engine()
        .load_file(filter_wasm("sdk-async"))
        .expect("module loads");
    let mut chain = Chain::builder(engine())
        .filter(
            Filter::new(plugin)
                .name("async")
                .configuration(r#"{"cluster": "callout", "refresh_ms": 1000}"#),
        )
        .cluster("callout", move |req: http::Request<Bytes>| {
            assert_eq!(req.uri().path(), "/value");
            let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            http::Response::new(Bytes::from(format!("v{n}")))
        })
        .log_level(LogLevel::Info)
        .build()
        .expect("plugin starts");
    // The task sleeps first: nothing yet.
    let o = async_send(&mut chain, "/value", &[]);
    assert_eq!(upstream_header(&o, "x-value").as_deref(), Some("none"));
    let background = chain.advance(Duration::from_millis(999));
    assert!(background.callouts.is_empty());
    let background = chain.advance(Duration::from_millis(1));
    assert_eq!(background.callouts.len(), 1);
    let lines: Vec<&str> = background.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(lines, ["refresh 1: v1"]);
    let o = async_send(&mut chain, "/value", &[]);
    assert_eq!(upstream_header(&o, "x-value").as_deref(), Some("v1"));
    chain.advance(Duration::from_millis(2000));
    assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 3);
    let o = async_send(&mut chain, "/value", &[]);
    assert_eq!(upstream_header(&o, "x-value").as_deref(), Some("v3"));
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
