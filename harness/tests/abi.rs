//! Envoy's ABI semantics, checked with tiny hand-written WAT guests: each guest
//! reports what the host answered by logging the status code.

use std::time::Duration;

use bytes::Bytes;
use weir_harness::{Chain, Error, FailurePolicy, Filter, LogLevel, Outcome};

mod common;
use common::engine;

/// A 0.2.1 module with memory, a bump allocator, `proxy_log`, a `$status`
/// helper that logs a status code as two digits, and `extra` (imports first,
/// then functions and data).
fn module(imports: &str, body: &str) -> Vec<u8> {
    common::guest(
        imports,
        &format!(
            r#"(func $status (param $s i32)
    (i32.store8 (i32.const 100) (i32.add (i32.const 48) (i32.div_u (local.get $s) (i32.const 10))))
    (i32.store8 (i32.const 101) (i32.add (i32.const 48) (i32.rem_u (local.get $s) (i32.const 10))))
    (drop (call $log (i32.const 2) (i32.const 100) (i32.const 2))))
  {body}"#
        ),
    )
}

fn chain(wasm: &[u8], policy: FailurePolicy) -> Result<Chain, Error> {
    let plugin = engine().load(wasm)?;
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("t").failure_policy(policy))
        .log_level(LogLevel::Trace)
        .fuel_per_call(10_000_000)
        .build()
}

fn get(path: &str) -> http::Request<Bytes> {
    http::Request::get(path)
        .header("host", "t.test")
        .header("x-key", "v")
        .body(Bytes::new())
        .expect("request")
}

fn ok_upstream(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::new(Bytes::from_static(b"up"))
}

fn infos(o: &Outcome) -> Vec<&str> {
    o.logs_at(LogLevel::Info).collect()
}

#[test]
fn refuses_a_module_without_abi_marker() {
    let wasm = wat::parse_str(r#"(module (memory (export "memory") 1))"#).expect("wat");
    let err = engine().load(&wasm).expect_err("no marker");
    assert!(matches!(err, Error::UnknownAbi { .. }), "{err}");
    assert!(err.to_string().contains("proxy_abi_version_0_2_1"), "{err}");
}

#[test]
fn refuses_a_module_without_allocator() {
    let wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")))"#,
    )
    .expect("wat");
    let err = engine().load(&wasm).expect_err("no malloc");
    assert!(matches!(err, Error::MissingAllocator), "{err}");
}

#[test]
fn refuses_a_mistyped_callback_like_v8() {
    let wasm = module(
        "",
        r#"(func (export "proxy_on_request_headers") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    let err = engine()
        .load(&wasm)
        .expect_err("2-param headers callback in a 0.2.1 module");
    assert!(
        matches!(err, Error::BadExport { ref name, .. } if name == "proxy_on_request_headers"),
        "{err}"
    );
}

#[test]
fn refuses_an_import_the_host_does_not_provide() {
    let wasm = module(
        r#"(import "env" "proxy_no_such_call" (func (param i32) (result i32)))"#,
        "",
    );
    let err = engine().load(&wasm).expect_err("unknown import");
    assert!(
        matches!(err, Error::Link(ref m) if m.contains("proxy_no_such_call")),
        "{err}"
    );
}

#[test]
fn proxy_calls_other_than_log_trap_during_initialize() {
    let wasm = module(
        r#"(import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))"#,
        r#"(func (export "_initialize") (drop (call $tick (i32.const 5))))"#,
    );
    let err = chain(&wasm, FailurePolicy::FailClosed).expect_err("restricted call");
    assert!(err.to_string().contains("restricted_callback"), "{err}");
}

#[test]
fn callbacks_run_in_envoys_order() {
    let wasm = module(
        "",
        r#"
  (data (i32.const 200) "create root")
  (data (i32.const 220) "vm_start")
  (data (i32.const 240) "configure")
  (data (i32.const 260) "create stream")
  (data (i32.const 280) "request")
  (data (i32.const 300) "response")
  (data (i32.const 320) "log")
  (data (i32.const 340) "done")
  (data (i32.const 360) "delete")
  (func (export "proxy_on_context_create") (param $id i32) (param $parent i32)
    (if (local.get $parent)
      (then (call $say (i32.const 260) (i32.const 13)))
      (else (call $say (i32.const 200) (i32.const 11)))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (call $say (i32.const 220) (i32.const 8)) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (call $say (i32.const 240) (i32.const 9)) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $say (i32.const 280) (i32.const 7)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $say (i32.const 300) (i32.const 8)) (i32.const 0))
  (func (export "proxy_on_log") (param i32) (call $say (i32.const 320) (i32.const 3)))
  (func (export "proxy_on_done") (param i32) (result i32) (call $say (i32.const 340) (i32.const 4)) (i32.const 1))
  (func (export "proxy_on_delete") (param i32) (call $say (i32.const 360) (i32.const 6)))
"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let startup: Vec<_> = chain
        .startup_logs()
        .iter()
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(startup, ["create root", "vm_start", "configure"]);
    let o = chain.send(get("/"), ok_upstream).expect("send");
    assert_eq!(
        infos(&o),
        [
            "create stream",
            "request",
            "response",
            "log",
            "done",
            "delete"
        ]
    );
}

/// Reads request headers in the request and response phases and logs the
/// statuses: Envoy answers OK, then BadArgument (map gone) for values, and
/// OK with an empty map for pairs.
#[test]
fn request_headers_are_only_available_in_their_window() {
    let wasm = module(
        r#"(import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))"#,
        r#"
  (data (i32.const 200) "x-key")
  (func $probe
    (call $status (call $get (i32.const 0) (i32.const 200) (i32.const 5) (i32.const 300) (i32.const 304)))
    (call $status (call $pairs (i32.const 0) (i32.const 300) (i32.const 304)))
    (call $status (i32.load (i32.const 304))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $probe) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $probe) (i32.const 0))
"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let o = chain.send(get("/"), ok_upstream).expect("send");
    let logs = infos(&o);
    assert_eq!(&logs[..2], ["00", "00"], "request phase: OK, OK");
    assert_ne!(logs[2], "00", "request phase: pairs are not empty");
    assert_eq!(
        &logs[3..],
        ["02", "00", "00"],
        "response phase: BadArgument, OK with 0 bytes"
    );
}

#[test]
fn bad_guest_pointers_get_invalid_memory_access() {
    let wasm = module(
        r#"(import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $status (call $get (i32.const 0) (i32.const 65530) (i32.const 100) (i32.const 300) (i32.const 304)))
    (call $status (call $log (i32.const 2) (i32.const -8) (i32.const 16)))
    (i32.const 0))
"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let o = chain.send(get("/"), ok_upstream).expect("send");
    assert_eq!(infos(&o), ["06", "06"]);
}

#[test]
fn a_local_reply_stops_the_chain_and_runs_the_response_path() {
    let wasm = module(
        r#"(import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"
  (data (i32.const 200) "access denied")
  (data (i32.const 220) "denied")
  (data (i32.const 240) "saw response")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $status (call $reply (i32.const 403) (i32.const 200) (i32.const 13) (i32.const 220) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (call $say (i32.const 240) (i32.const 12)) (i32.const 0))
"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let o = chain
        .send(
            get("/"),
            |_: http::Request<Bytes>| -> http::Response<Bytes> {
                panic!("the upstream must not be called")
            },
        )
        .expect("send");
    assert!(o.upstream_request.is_none());
    assert_eq!(o.response.status(), 403);
    assert_eq!(o.response.body().as_ref(), b"denied");
    assert_eq!(o.response.headers()["content-type"], "text/plain");
    let reply = o.local_reply.as_ref().expect("local reply");
    assert_eq!(reply.details, "access_denied", "whitespace becomes _");
    assert_eq!(infos(&o), ["00", "saw response"]);
}

fn trapping() -> Vec<u8> {
    module(
        "",
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)"#,
    )
}

#[test]
fn a_trap_fails_closed_with_503_for_this_and_later_requests() {
    let mut chain = chain(&trapping(), FailurePolicy::FailClosed).expect("starts");
    for _ in 0..2 {
        let o = chain.send(get("/"), ok_upstream).expect("send");
        assert_eq!(o.response.status(), 503);
        assert_eq!(
            o.local_reply.as_ref().map(|r| r.details.as_str()),
            Some("wasm_fail_stream")
        );
        assert!(o.upstream_request.is_none());
    }
}

#[test]
fn a_trap_fails_open_for_later_requests() {
    let mut chain = chain(&trapping(), FailurePolicy::FailOpen).expect("starts");
    // The request whose callback trapped is still answered 503 (as in Envoy 1.40).
    let o = chain.send(get("/"), ok_upstream).expect("send");
    assert_eq!(o.response.status(), 503);
    assert!(
        o.traps
            .iter()
            .any(|m| m.contains("proxy_on_request_headers failed") && m.contains("unreachable")),
        "{:?}",
        o.traps
    );
    // Later requests bypass the failed VM.
    let o = chain.send(get("/"), ok_upstream).expect("send");
    assert_eq!(o.response.status(), 200);
    assert!(o.upstream_request.is_some());
    assert!(o.traps.is_empty());
}

#[test]
fn fail_reload_starts_a_fresh_vm_after_the_backoff() {
    // Traps on its second request only, so a fresh VM is visible.
    let wasm = module(
        "",
        r#"(global $n (mut i32) (i32.const 0))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.eq (global.get $n) (i32.const 1)) (then unreachable))
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.const 0))"#,
    );
    let plugin = engine().load(&wasm).expect("loads");
    let filter = Filter::new(plugin)
        .name("t")
        .failure_policy(FailurePolicy::FailReload)
        .reload_backoff(Duration::from_millis(100));
    let mut chain = Chain::builder(engine())
        .filter(filter)
        .build()
        .expect("starts");
    let status = |chain: &mut Chain| {
        chain
            .send(get("/"), ok_upstream)
            .expect("send")
            .response
            .status()
    };
    assert_eq!(status(&mut chain), 200);
    assert_eq!(status(&mut chain), 503, "the trap");
    // The backoff counts from the load, and is drawn from [100, 150) ms.
    chain.advance(Duration::from_millis(99));
    assert_eq!(status(&mut chain), 503, "still within the backoff");
    chain.advance(Duration::from_millis(51));
    assert_eq!(status(&mut chain), 200, "a fresh VM");
    assert_eq!(status(&mut chain), 503, "which fails like the first");
    assert_eq!(status(&mut chain), 503, "and waits again");
}

#[test]
fn fail_reload_refuses_a_backoff_envoy_cannot_draw_from() {
    let plugin = engine().load(&trapping()).expect("loads");
    let filter = Filter::new(plugin)
        .failure_policy(FailurePolicy::FailReload)
        .reload_backoff(Duration::from_millis(1));
    let err = Chain::builder(engine())
        .filter(filter)
        .build()
        .expect_err("1 ms");
    assert!(matches!(err, Error::WouldCrashEnvoy { .. }), "{err}");
}

#[test]
fn a_pause_nobody_resumes_is_reported() {
    let wasm = module(
        "",
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let err = chain.send(get("/"), ok_upstream).expect_err("stalls");
    assert!(matches!(err, Error::Stalled { .. }), "{err}");
}

#[test]
fn a_runaway_guest_is_stopped() {
    let wasm = module(
        "",
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0))"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let o = chain.send(get("/"), ok_upstream).expect("answered");
    assert_eq!(o.response.status(), 503);
}

#[test]
fn configure_returning_false_rejects_the_plugin() {
    let wasm = module(
        "",
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    let err = chain(&wasm, FailurePolicy::FailClosed).expect_err("rejected");
    assert!(matches!(err, Error::ConfigureFailed { .. }), "{err}");
}

#[test]
fn continuing_the_response_before_it_exists_is_reported_as_an_envoy_crash() {
    let wasm = module(
        r#"(import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))"#,
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $continue (i32.const 1))) (i32.const 0))"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let err = chain
        .send(get("/"), ok_upstream)
        .expect_err("Envoy 1.40 segfaults here");
    assert!(matches!(err, Error::WouldCrashEnvoy { .. }), "{err}");
}

#[test]
fn removing_x_forwarded_proto_leaves_no_route() {
    let wasm = module(
        r#"(import "env" "proxy_remove_header_map_value" (func $del (param i32 i32 i32) (result i32)))"#,
        r#"(data (i32.const 200) "x-forwarded-proto")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $del (i32.const 0) (i32.const 200) (i32.const 17))) (i32.const 0))"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let o = chain.send(get("/"), ok_upstream).expect("answered");
    assert_eq!(o.response.status(), 404);
    assert!(o.upstream_request.is_none());
    let reply = o.local_reply.expect("the router answered");
    assert_eq!(
        (reply.plugin.as_str(), reply.details.as_str()),
        ("envoy.filters.http.router", "route_not_found")
    );
}

/// A guest whose `on_response_headers` logs the end-of-stream flag it got
/// (`00`/`01`) and whose `on_request_body` logs `body`.
fn response_callbacks() -> Vec<u8> {
    module(
        "",
        r#"(data (i32.const 200) "body")
           (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
             (call $say (i32.const 200) (i32.const 4)) (i32.const 0))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
             (call $status (local.get 2)) (i32.const 0))"#,
    )
}

/// [`response_callbacks`] as filter `t` in front of a route whose cluster
/// the bootstrap does not define.
fn missing_cluster_chain() -> Chain {
    let plugin = engine().load(&response_callbacks()).expect("loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("t"))
        .connection_manager(
            weir_harness::ConnectionManager::default()
                .route_cluster("missing")
                .route_cluster_missing(true),
        )
        .log_level(LogLevel::Info)
        .build()
        .expect("starts")
}

#[test]
fn a_route_to_a_missing_cluster_is_answered_503_by_the_router() {
    let mut chain = missing_cluster_chain();
    let request = http::Request::post("/")
        .header("host", "t.test")
        .header("content-length", "2")
        .body(Bytes::from_static(b"hi"))
        .expect("request");
    let o = chain
        .send(request, |_| panic!("nothing goes upstream"))
        .expect("answered");
    assert_eq!(o.response.status(), 503);
    assert!(o.upstream_request.is_none());
    assert!(o.response.body().is_empty());
    // Answered at the headers: the body never reached the filter, and the
    // client's connection closes (its request was not read in full).
    assert_eq!(o.response.headers()["content-length"], "0");
    assert_eq!(o.response.headers()["connection"], "close");
    let reply = o.local_reply.as_ref().expect("the router answered");
    assert_eq!(
        (reply.plugin.as_str(), reply.details.as_str()),
        ("envoy.filters.http.router", "cluster_not_found")
    );
    // The reply's headers end the stream.
    assert_eq!(infos(&o), ["01"]);
}

#[test]
fn a_grpc_request_to_a_missing_cluster_gets_a_trailers_only_unavailable() {
    let mut chain = missing_cluster_chain();
    let request = http::Request::post("/pkg.Echo/Say")
        .header("host", "t.test")
        .header("content-type", "application/grpc")
        .body(Bytes::new())
        .expect("request");
    let o = chain
        .send(request, |_| panic!("nothing goes upstream"))
        .expect("answered");
    assert_eq!(o.response.status(), 200);
    let headers = o.response.headers();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "14");
    assert!(headers.get("grpc-message").is_none(), "{headers:?}");
    assert!(o.response.body().is_empty());
    let reply = o.local_reply.as_ref().expect("the router answered");
    assert_eq!((reply.status, reply.grpc_status), (503, Some(14)));
    assert_eq!(reply.details, "cluster_not_found");
}

#[test]
fn ticks_fire_on_the_virtual_clock() {
    let wasm = module(
        r#"(import "env" "proxy_set_tick_period_milliseconds" (func $period (param i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))"#,
        r#"
  (data (i32.const 200) "tick")
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $period (i32.const 100))) (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (call $say (i32.const 200) (i32.const 4)))
"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let quiet = chain.advance(std::time::Duration::from_millis(99));
    assert!(
        quiet.logs.is_empty(),
        "the first tick comes one period after it was set"
    );
    let ticks = chain.advance(std::time::Duration::from_millis(250));
    let lines: Vec<_> = ticks.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(lines, ["tick", "tick", "tick"], "at 100, 200 and 300 ms");
}

/// Holds the request at its headers with a 200 ms tick and a callout to `slow`;
/// the tick resumes the stream (as the stream: `proxy_set_effective_context`),
/// and the callout's answer is logged.
fn tick_or_answer() -> Vec<u8> {
    module(
        r#"(import "env" "proxy_set_tick_period_milliseconds" (func $period (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"
  (global $stream (mut i32) (i32.const 0))
  (data (i32.const 200) "tick")
  (data (i32.const 210) "answer")
  (data (i32.const 220) "slow")
  ;; :method GET, :path /, :authority a (the proxy-wasm map format)
  (data (i32.const 300) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\01\00\00\00:method\00GET\00:path\00/\00:authority\00a\00")
  (func (export "proxy_on_request_headers") (param $id i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $id))
    (drop (call $call (i32.const 220) (i32.const 4) (i32.const 300) (i32.const 61)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 400)))
    (drop (call $period (i32.const 200)))
    (i32.const 1))
  (func (export "proxy_on_tick") (param i32)
    (call $say (i32.const 200) (i32.const 4))
    (drop (call $period (i32.const 0)))
    (drop (call $effective (global.get $stream)))
    (drop (call $continue (i32.const 0))))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (call $say (i32.const 210) (i32.const 6))
    (drop (call $effective (global.get $stream)))
    (drop (call $continue (i32.const 0))))
"#,
    )
}

fn slow_chain(delay: Duration) -> Chain {
    let plugin = engine().load(&tick_or_answer()).expect("loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("t"))
        .cluster("slow", move |_: http::Request<Bytes>| {
            http::Response::builder()
                .extension(weir_harness::UpstreamFault::Delay(delay))
                .body(Bytes::from_static(b"late"))
                .expect("response")
        })
        .log_level(LogLevel::Trace)
        .build()
        .expect("starts")
}

#[test]
fn a_held_stream_gets_the_ticks_due_before_a_slow_callout_answer() {
    // The answer (after 1 s) comes after the tick at 200 ms: the tick resumes
    // the stream, the answer arrives once the request went on.
    let mut chain = slow_chain(Duration::from_millis(1000));
    let o = chain
        .send(get("/"), ok_upstream)
        .expect("resumed by the tick");
    assert_eq!(o.response.status(), 200);
    assert!(o.upstream_request.is_some());
    assert_eq!(infos(&o), ["tick", "answer"]);
    assert_eq!(o.callouts.len(), 1);

    // A quicker answer (100 ms) comes first and resumes the stream: no tick.
    let mut chain = slow_chain(Duration::from_millis(100));
    let o = chain
        .send(get("/"), ok_upstream)
        .expect("resumed by the answer");
    assert_eq!(infos(&o), ["answer"]);
}

#[test]
fn a_slow_callout_of_a_filter_that_let_the_stream_go_is_answered_after_it() {
    // The callout (answered after 1 s) is made from the request headers,
    // which continue, as does the body: nothing waits for it, so the stream
    // goes upstream and ends (on_log) before the answer arrives, as in Envoy
    // 1.40 (body-while-paused-callouts.yaml).
    let wasm = module(
        r#"(import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"
  (data (i32.const 200) "log")
  (data (i32.const 210) "answer")
  (data (i32.const 220) "slow")
  ;; :method GET, :path /, :authority a (the proxy-wasm map format)
  (data (i32.const 300) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\01\00\00\00:method\00GET\00:path\00/\00:authority\00a\00")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $call (i32.const 220) (i32.const 4) (i32.const 300) (i32.const 61)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 400)))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (call $say (i32.const 200) (i32.const 3)))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (call $say (i32.const 210) (i32.const 6)))
"#,
    );
    let plugin = engine().load(&wasm).expect("loads");
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(plugin).name("t"))
        .cluster("slow", |_: http::Request<Bytes>| {
            http::Response::builder()
                .extension(weir_harness::UpstreamFault::Delay(Duration::from_secs(1)))
                .body(Bytes::from_static(b"late"))
                .expect("response")
        })
        .log_level(LogLevel::Trace)
        .build()
        .expect("starts");
    let post = http::Request::post("/")
        .header("host", "t.test")
        .body(Bytes::from_static(b"body"))
        .expect("request");
    let o = chain.send(post, ok_upstream).expect("send");
    assert_eq!(o.response.status(), 200);
    assert_eq!(infos(&o), ["log", "answer"]);
}

#[test]
fn a_stream_held_on_ticks_alone_stalls_after_envoys_idle_timeout() {
    // Ticks every 100 ms that never resume the stream.
    let wasm = module(
        r#"(import "env" "proxy_set_tick_period_milliseconds" (func $period (param i32) (result i32)))"#,
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $period (i32.const 100))) (i32.const 1))
           (func (export "proxy_on_tick") (param i32))"#,
    );
    let mut chain = chain(&wasm, FailurePolicy::FailClosed).expect("starts");
    let err = chain.send(get("/"), ok_upstream).expect_err("stalls");
    assert!(matches!(err, Error::Stalled { .. }), "{err}");
}

#[test]
fn buffering_past_the_buffer_limit_is_answered_413() {
    // Pauses (buffers) every request body chunk until the end of the stream.
    let wasm = module(
        "",
        r#"
  (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
    (i32.eqz (local.get 2)))
"#,
    );
    let plugin = engine().load(&wasm).expect("loads");
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(plugin).name("t"))
        .connection_manager(weir_harness::ConnectionManager::default().buffer_limit(64))
        .build()
        .expect("starts");
    let post = |len: usize| {
        http::Request::post("/")
            .header("host", "t.test")
            .body(Bytes::from(vec![b'x'; len]))
            .expect("request")
    };
    let o = chain.send(post(64), ok_upstream).expect("send");
    assert_eq!(
        o.upstream_request.map(|r| r.body().len()),
        Some(64),
        "at the limit"
    );

    let o = chain
        .send(
            post(65),
            |_: http::Request<Bytes>| -> http::Response<Bytes> {
                panic!("the upstream must not be called")
            },
        )
        .expect("send");
    assert_eq!(o.response.status(), 413);
    assert_eq!(o.response.body().as_ref(), b"Payload Too Large");
    let reply = o.local_reply.expect("local reply");
    assert_eq!(reply.details, "request_payload_too_large");
}

#[test]
fn grpc_calls_check_guest_pointers_and_write_the_token_last() {
    // 1: the service name runs out of memory; 2: a valid call whose token
    // pointer does not: the call is still sent (Envoy writes the token after
    // sending); 3: a stream with a bad method pointer.
    let wasm = module(
        r#"(import "env" "proxy_grpc_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"
  (data (i32.const 200) "grpc")
  (data (i32.const 220) "pkg.S")
  (data (i32.const 240) "M")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $status (call $call (i32.const 65530) (i32.const 100) (i32.const 220) (i32.const 5)
      (i32.const 240) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 300)))
    (call $status (call $call (i32.const 200) (i32.const 4) (i32.const 220) (i32.const 5)
      (i32.const 240) (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 0) (i32.const 65535)))
    (call $status (call $stream (i32.const 200) (i32.const 4) (i32.const 220) (i32.const 5)
      (i32.const -1) (i32.const 2) (i32.const 0) (i32.const 0) (i32.const 300)))
    (i32.const 0))
"#,
    );
    let plugin = engine().load(&wasm).expect("loads");
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(plugin).name("t"))
        .grpc_service("grpc", |_: &weir_harness::GrpcRequest| {
            weir_harness::GrpcReply::ok("m")
        })
        .build()
        .expect("starts");
    let o = chain.send(get("/"), ok_upstream).expect("send");
    assert_eq!(infos(&o), ["06", "06", "06"]);
    assert_eq!(
        o.grpc.len(),
        1,
        "the call with the bad token pointer was sent"
    );
    assert_eq!(o.grpc[0].request.service(), "pkg.S");
}

#[test]
fn the_date_header_follows_the_virtual_clock() {
    let mut chain = chain(&module("", ""), FailurePolicy::FailClosed).expect("chain");
    let date = |chain: &mut Chain| {
        let outcome = chain.send(get("/"), ok_upstream).expect("send");
        outcome.response.headers()["date"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    assert_eq!(date(&mut chain), "Thu, 01 Jan 2026 00:00:00 GMT");
    assert_eq!(date(&mut chain), "Thu, 01 Jan 2026 00:00:00 GMT");
    chain.advance(Duration::from_secs(2));
    assert_eq!(date(&mut chain), "Thu, 01 Jan 2026 00:00:02 GMT");
}

/// Request trailers: the last body callback does not end the stream, the
/// trailers callback gets their count, and map 1 is readable and writable only
/// there; the upstream receives the result after the chunked body.
#[test]
fn request_trailers_follow_the_body_and_are_theirs_to_change() {
    let wasm = module(
        r#"(import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))"#,
        r#"
  (data (i32.const 200) "x-t")
  (data (i32.const 210) "x-a")
  (func (export "proxy_on_request_body") (param i32) (param i32) (param $eos i32) (result i32)
    (call $status (local.get $eos))
    (call $status (call $get (i32.const 1) (i32.const 200) (i32.const 3) (i32.const 300) (i32.const 304)))
    (i32.const 0))
  (func (export "proxy_on_request_trailers") (param i32) (param $n i32) (result i32)
    (call $status (local.get $n))
    (call $status (call $get (i32.const 1) (i32.const 200) (i32.const 3) (i32.const 300) (i32.const 304)))
    (call $status (call $add (i32.const 1) (i32.const 210) (i32.const 3) (i32.const 200) (i32.const 1)))
    (i32.const 0))
"#,
    );
    let mut chain = trailers_chain(&wasm);
    let request = http::Request::post("/")
        .header("host", "t.test")
        .header("transfer-encoding", "chunked")
        .extension(weir_harness::Trailers::from_pairs([("x-t", "1")]).expect("valid"))
        .body(Bytes::from_static(b"abc"))
        .expect("request");
    let o = chain.send(request, ok_upstream).expect("send");
    assert_eq!(infos(&o), ["00", "02", "01", "00", "00"]);
    let trailers = o.upstream_trailers().expect("the upstream got trailers");
    assert_eq!(trailers["x-t"], "1");
    assert_eq!(trailers["x-a"], "x");
    assert_eq!(o.upstream_request.as_ref().map(|r| r.body().len()), Some(3));
}

/// The chain keeps a stream's buffers for the next one: what filters, the
/// upstream and the client see of a stream must not depend on the streams
/// before it (here a larger one, with a body and more headers).
#[test]
fn a_stream_sees_nothing_of_the_streams_before_it() {
    let wasm = module(
        r#"(import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))"#,
        r#"
  (func $show (param $map i32)
    (drop (call $pairs (local.get $map) (i32.const 300) (i32.const 304)))
    (call $say (i32.load (i32.const 300)) (i32.load (i32.const 304))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $show (i32.const 0)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $show (i32.const 2)) (i32.const 0))
  (func (export "proxy_on_log") (param i32) (call $show (i32.const 0)) (call $show (i32.const 2)))
"#,
    );
    let plugin = engine().load(&wasm).expect("loads");
    let build = || {
        Chain::builder(engine())
            .filter(Filter::new(plugin.clone()).name("t"))
            .connection_manager(
                weir_harness::ConnectionManager::default().generate_request_id(false),
            )
            .log_level(LogLevel::Trace)
            .build()
            .expect("starts")
    };
    let mut big = http::Request::post("/a/longer/path?with=query").header("host", "t.test");
    for i in 0..40 {
        big = big.header(format!("x-h{i}"), "v".repeat(50));
    }
    let big = big.body(Bytes::from(vec![b'b'; 5000])).expect("request");
    let big_upstream = |_: http::Request<Bytes>| {
        let mut response = http::Response::new(Bytes::from(vec![b'u'; 3000]));
        for i in 0..30 {
            response.headers_mut().insert(
                http::HeaderName::try_from(format!("x-r{i}")).expect("name"),
                http::HeaderValue::from_static("long-response-header-value"),
            );
        }
        response
    };
    let show = |o: &Outcome| {
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}",
            o.upstream_request,
            o.response,
            o.logs,
            (o.fuel, o.host_calls)
        )
    };
    let mut reused = build();
    reused.send(big, big_upstream).expect("big");
    let after_big = reused.send(get("/"), ok_upstream).expect("after");
    let fresh = build().send(get("/"), ok_upstream).expect("fresh");
    assert_eq!(show(&after_big), show(&fresh));
    assert!(
        infos(&fresh).iter().any(|l| l.contains("x-key")),
        "{:?}",
        infos(&fresh)
    );
}

/// A chain of one plugin of `wasm` whose connection manager and upstream
/// cluster carry trailers.
fn trailers_chain(wasm: &[u8]) -> Chain {
    let plugin = engine().load(wasm).expect("loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("t"))
        .connection_manager(
            weir_harness::ConnectionManager::default()
                .enable_trailers(true)
                .upstream_enable_trailers(true),
        )
        .build()
        .expect("starts")
}

/// An upstream that answers `xyz` then the trailer `x-rt: one`.
fn upstream_with_trailers(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::builder()
        .header("transfer-encoding", "chunked")
        .extension(weir_harness::Trailers::from_pairs([("x-rt", "one")]).expect("valid"))
        .body(Bytes::from_static(b"xyz"))
        .expect("response")
}

/// Measured in Envoy 1.40: closing the HTTP request or response stream in
/// `on_response_trailers` crashes Envoy once the stream is torn down; closing
/// the downstream or upstream stream there leaves the response alone.
#[test]
fn closing_the_stream_in_response_trailers_is_reported_as_an_envoy_crash() {
    for (kind, crashes) in [(0, true), (1, true), (2, false), (3, false)] {
        let wasm = module(
            r#"(import "env" "proxy_close_stream" (func $close (param i32) (result i32)))"#,
            &format!(
                r#"(func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
                     (call $status (call $close (i32.const {kind}))) (i32.const 0))"#
            ),
        );
        let mut chain = trailers_chain(&wasm);
        let result = chain.send(get("/"), upstream_with_trailers);
        if crashes {
            let err = result.expect_err("Envoy 1.40 crashes here");
            assert!(
                matches!(err, Error::WouldCrashEnvoy { .. }),
                "{kind}: {err}"
            );
            assert!(err.to_string().contains("on_response_trailers"), "{err}");
        } else {
            let o = result.expect("answered");
            assert_eq!(o.response.status(), 200, "stream type {kind}");
            assert_eq!(infos(&o), ["00"]);
        }
    }
}
