//! The sdk-stream network filter (weir's `StreamFilter` API) in the harness's
//! network chain: what the client and the upstream receive, pausing and
//! re-delivery, closing, failures, the order of callbacks and metrics.

use std::time::Duration;

use weir_harness::{
    CloseType, Echo, Error, FailurePolicy, Filter, LogLevel, MetricValue, NetworkChain,
    NetworkConfig, TcpReply, UpstreamFault,
};
use weir_tests::{engine, envoy_yaml, filter_wasm, probe_filter};

fn filter(name: &str, config: &str) -> Filter {
    let plugin = engine()
        .load_file(filter_wasm("sdk-stream"))
        .expect("sdk-stream loads");
    Filter::new(plugin)
        .name(name)
        .vm_id(name)
        .configuration(config)
}

fn chain(filters: Vec<Filter>) -> NetworkChain {
    let mut builder = NetworkChain::builder(engine()).log_level(LogLevel::Info);
    for f in filters {
        builder = builder.filter(f);
    }
    builder.build().expect("plugins start")
}

fn infos(logs: &[weir_harness::LogRecord]) -> Vec<String> {
    logs.iter()
        .filter(|l| l.level >= LogLevel::Info)
        .map(|l| format!("{}: {}", l.plugin, l.message))
        .collect()
}

/// Asserts that an info line (or above) ends with `tail`.
#[track_caller]
fn assert_logged(logs: &[weir_harness::LogRecord], tail: &str) {
    assert!(
        infos(logs).iter().any(|l| l.ends_with(tail)),
        "no line ends with {tail:?}: {logs:?}"
    );
}

#[test]
fn echo_round_trip_in_envoys_callback_order() {
    let mut chain = chain(vec![filter(
        "s",
        r#"{"downstream_prefix": "D:", "upstream_prefix": "U:"}"#,
    )]);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"hello\n").expect("sent");
    assert_eq!(conn.upstream_received(), Some(&b"D:hello\n"[..]));
    assert_eq!(conn.client_received(), b"U:D:hello\n");
    conn.close_write().expect("half-closed");
    assert_eq!(conn.closed(), Some(CloseType::Local));
    let outcome = conn.finish();
    assert!(outcome.client_saw_end && outcome.upstream_saw_end);
    assert_eq!(
        infos(&outcome.logs),
        [
            "s: new connection",
            "s: downstream 6 eos=false: hello\\n",
            "s: upstream 8 eos=false: D:hello\\n",
            "s: downstream 0 eos=true: ",
            "s: upstream 0 eos=true: ",
            "s: upstream closed: Unknown",
            "s: downstream closed: Local",
            "s: done: 8 bytes to upstream, 10 bytes to client",
        ]
    );
    let metrics = chain.metrics();
    assert_eq!(
        metrics.get("stream_bytes.direction=downstream"),
        Some(&MetricValue::Counter(8))
    );
    assert_eq!(
        metrics.get("stream_bytes.direction=upstream"),
        Some(&MetricValue::Counter(10))
    );
}

#[test]
fn an_upstream_that_closes_first_makes_the_client_close_remote() {
    let mut chain = chain(vec![filter("s", "")]);
    let upstream = |data: &[u8]| TcpReply::data(data).and_close();
    let mut conn = chain.connect(upstream).expect("connects");
    conn.send(b"ping").expect("sent");
    assert_eq!(conn.client_received(), b"ping");
    assert_eq!(conn.closed(), None, "the client has not half-closed yet");
    conn.close_write().expect("half-closed");
    let outcome = conn.finish();
    assert_eq!(outcome.closed, Some(CloseType::Remote));
    assert_eq!(
        infos(&outcome.logs)[2..],
        [
            "s: upstream 4 eos=false: ping",
            "s: upstream 0 eos=true: ",
            "s: upstream closed: Unknown",
            "s: downstream 0 eos=true: ",
            "s: downstream closed: Remote",
            "s: done: 4 bytes to upstream, 4 bytes to client",
        ]
    );
}

#[test]
fn paused_bytes_are_held_and_delivered_again_with_the_next_ones() {
    let mut chain = chain(vec![filter("s", r#"{"frame_delimiter": "\n"}"#)]);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"he").expect("sent");
    conn.send(b"llo").expect("sent");
    assert_eq!(conn.upstream_received(), Some(&b""[..]));
    conn.send(b"\n").expect("sent");
    assert_eq!(conn.upstream_received(), Some(&b"hello\n"[..]));
    conn.send(b"next").expect("sent");
    assert_eq!(conn.upstream_received(), Some(&b"hello\n"[..]));
    // The half-close lets the incomplete frame through.
    conn.close_write().expect("half-closed");
    let outcome = conn.finish();
    assert_eq!(
        outcome.upstream_received.as_deref(),
        Some(&b"hello\nnext"[..])
    );
    assert_eq!(outcome.client_received, b"hello\nnext");
    let logs = infos(&outcome.logs);
    assert_eq!(
        logs[1..7],
        [
            "s: downstream 2 eos=false: he",
            "s: holding 2 bytes",
            "s: downstream 5 eos=false: hello",
            "s: holding 5 bytes",
            "s: downstream 6 eos=false: hello\\n",
            "s: upstream 6 eos=false: hello\\n",
        ]
    );
}

#[test]
fn in_a_chain_a_later_pause_makes_earlier_filters_see_bytes_again() {
    // Read filters run in order, write filters in reverse; a pause in `b` keeps
    // the bytes in the connection buffer, so `a` sees them again (as in Envoy).
    let mut chain = chain(vec![
        filter("a", ""),
        filter("b", r#"{"frame_delimiter": ";", "upstream_prefix": "b>"}"#),
    ]);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"x").expect("sent");
    conn.send(b"y;").expect("sent");
    conn.close_write().expect("half-closed");
    let outcome = conn.finish();
    assert_eq!(outcome.client_received, b"b>xy;");
    assert_eq!(
        infos(&outcome.logs)[..9],
        [
            "a: new connection",
            "b: new connection",
            "a: downstream 1 eos=false: x",
            "b: downstream 1 eos=false: x",
            "b: holding 1 bytes",
            "a: downstream 3 eos=false: xy;",
            "b: downstream 3 eos=false: xy;",
            "b: upstream 3 eos=false: xy;",
            "a: upstream 5 eos=false: b>xy;",
        ]
    );
}

#[test]
fn closing_from_a_filter_ends_the_connection_locally() {
    let mut chain = chain(vec![filter("s", r#"{"close_on": "QUIT"}"#)]);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"a").expect("sent");
    conn.send(b"QUIT").expect("sent");
    assert_eq!(conn.closed(), Some(CloseType::Local));
    // Envoy reads nothing more from a closed connection.
    conn.send(b"more").expect("ignored");
    let outcome = conn.finish();
    assert_eq!(outcome.upstream_received.as_deref(), Some(&b"a"[..]));
    assert!(outcome.upstream_saw_end, "tcp_proxy closes the upstream");
    assert_eq!(
        infos(&outcome.logs)[3..],
        [
            "s: downstream 4 eos=false: QUIT",
            "s: closing",
            "s: downstream closed: Local",
            "s: done: 1 bytes to upstream, 1 bytes to client",
        ]
    );
}

#[test]
fn an_error_closes_the_connection_and_is_logged() {
    let mut chain = chain(vec![filter("s", r#"{"fail_on": "FAIL"}"#)]);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"FAIL").expect("sent");
    let outcome = conn.finish();
    assert_eq!(outcome.closed, Some(CloseType::Local));
    assert_eq!(outcome.upstream_received.as_deref(), Some(&b""[..]));
    assert!(
        outcome
            .logs_at(LogLevel::Error)
            .any(|l| l.contains("the client sent the failure command")),
        "{:?}",
        outcome.logs
    );
}

#[test]
fn pausing_a_new_connection_keeps_the_upstream_unconnected() {
    let mut chain = chain(vec![filter("s", r#"{"pause_new_connection": true}"#)]);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"hello").expect("sent");
    conn.close_write().expect("half-closed");
    let outcome = conn.finish();
    assert_eq!(outcome.upstream_received, None);
    assert_eq!(outcome.closed, None, "the connection waits");
    assert_eq!(infos(&outcome.logs), ["s: new connection"]);
}

#[test]
fn a_greeting_upstream_speaks_first() {
    struct Greeter;
    impl weir_harness::TcpUpstream for Greeter {
        fn on_connect(&mut self) -> TcpReply {
            TcpReply::data(&b"220 ready\n"[..])
        }
        fn on_data(&mut self, data: &[u8]) -> TcpReply {
            TcpReply::data([b"ok ", data].concat())
        }
    }
    let mut chain = chain(vec![filter("s", r#"{"upstream_prefix": "> "}"#)]);
    let mut conn = chain.connect(Greeter).expect("connects");
    assert_eq!(conn.client_received(), b"> 220 ready\n");
    conn.send(b"x").expect("sent");
    assert_eq!(conn.client_received(), b"> 220 ready\n> ok x");
}

#[test]
fn invalid_configuration_fails_the_plugin_with_the_field_named() {
    let err = NetworkChain::builder(engine())
        .filter(filter("s", r#"{"frame_delimiter": 7}"#))
        .build()
        .expect_err("rejected");
    match err {
        Error::ConfigureFailed { logs, .. } => assert!(
            logs.iter()
                .any(|l| l.contains("invalid configuration at `frame_delimiter`")),
            "{logs:?}"
        ),
        other => panic!("unexpected {other}"),
    }
}

/// The probe (raw ABI) as a network filter with `policy`; its upstream
/// does not echo, so only the client's bytes run scripts.
fn probe_with_policy(policy: FailurePolicy) -> NetworkChain {
    NetworkChain::builder(engine())
        .filter(
            probe_filter()
                .failure_policy(policy)
                .reload_backoff(Duration::from_secs(2)),
        )
        .log_level(LogLevel::Info)
        .build()
        .expect("probe starts")
}

fn silent(_: &[u8]) -> TcpReply {
    TcpReply::none()
}

/// Sends `script` on a new connection and half-closes; what was observed.
fn one_connection(chain: &mut NetworkChain, script: &str) -> weir_harness::ConnectionOutcome {
    let mut conn = chain.connect(silent).expect("connects");
    conn.send(script).expect("sent");
    if conn.closed().is_none() {
        conn.close_write().expect("half-closed");
    }
    conn.finish()
}

#[test]
fn a_trap_closes_its_connection_whatever_the_policy() {
    for policy in [
        FailurePolicy::FailClosed,
        FailurePolicy::FailOpen,
        FailurePolicy::FailReload,
    ] {
        let mut chain = probe_with_policy(policy);
        let outcome = one_connection(&mut chain, "probe:trap\n");
        assert_eq!(outcome.closed, Some(CloseType::Local), "{policy:?}");
        assert_eq!(outcome.traps.len(), 1, "{policy:?}");
        // The trapping bytes never went upstream.
        assert_eq!(outcome.upstream_received.as_deref(), Some(&b""[..]));
        // The next connection: FAIL_OPEN leaves the failed VM out of the
        // chain, the others close it as it is accepted.
        let next = one_connection(&mut chain, "probe:count\n");
        if policy == FailurePolicy::FailOpen {
            assert_eq!(
                next.upstream_received.as_deref(),
                Some(&b"probe:count\n"[..])
            );
            assert!(next.logs.is_empty(), "{:?}", next.logs);
        } else {
            assert_eq!(next.closed, Some(CloseType::Local), "{policy:?}");
            assert_eq!(next.upstream_received, None, "{policy:?}");
        }
    }
}

#[test]
fn fail_reload_gives_a_connection_after_the_backoff_a_fresh_vm() {
    let mut chain = probe_with_policy(FailurePolicy::FailReload);
    let count = |outcome: &weir_harness::ConnectionOutcome| {
        infos(&outcome.logs)
            .into_iter()
            .find(|l| l.contains("count ->"))
    };
    let first = one_connection(&mut chain, "probe:count\n");
    assert_eq!(
        count(&first).as_deref(),
        Some("p: [p] on_downstream_data count -> 0 1")
    );
    let _ = one_connection(&mut chain, "probe:trap\n");
    // Within the backoff ([2 s, 3 s) since the VM was loaded) the failed VM
    // closes new connections.
    let _ = chain.advance(Duration::from_millis(1900));
    let within = one_connection(&mut chain, "probe:count\n");
    assert_eq!(within.closed, Some(CloseType::Local));
    assert_eq!(within.upstream_received, None);
    // Past it, a fresh VM (module globals start again) serves the connection.
    let _ = chain.advance(Duration::from_millis(1200));
    let fresh = one_connection(&mut chain, "probe:count\n");
    assert_eq!(
        count(&fresh).as_deref(),
        Some("p: [p] on_downstream_data count -> 0 1")
    );
    assert_eq!(
        fresh.upstream_received.as_deref(),
        Some(&b"probe:count\n"[..])
    );
    // The backoff counts from the reload.
    let _ = one_connection(&mut chain, "probe:trap\n");
    let _ = chain.advance(Duration::from_millis(1900));
    let again = one_connection(&mut chain, "probe:count\n");
    assert_eq!(again.closed, Some(CloseType::Local));
}

#[test]
fn a_fail_reload_backoff_below_2_ms_would_crash_envoy() {
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    let err = NetworkChain::builder(engine())
        .filter(
            Filter::new(plugin)
                .failure_policy(FailurePolicy::FailReload)
                .reload_backoff(Duration::from_millis(1)),
        )
        .build()
        .expect_err("refused");
    assert!(matches!(err, Error::WouldCrashEnvoy { .. }), "{err}");
}

#[test]
fn the_shipped_l4_config_loads() {
    let config = NetworkConfig::parse(&envoy_yaml("conformance-l4.yaml")).expect("parses");
    assert_eq!(config.cluster, "upstream");
    let mut chain = config
        .chain_builder(engine(), |_| engine().load_file(filter_wasm("sdk-stream")))
        .expect("module loads")
        .build()
        .expect("plugin starts");
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"hi").expect("sent");
    assert_eq!(conn.client_received(), b"hi");
}

#[test]
fn an_http_filter_in_a_network_chain_traps_and_closes_the_connection() {
    // proxy-wasm's dispatcher has no stream context for an HTTP filter: the
    // callback traps, and the fail-closed connection is closed.
    let plugin = engine()
        .load_file(filter_wasm("header-append"))
        .expect("loads");
    let mut chain = NetworkChain::builder(engine())
        .filter(
            Filter::new(plugin)
                .name("h")
                .configuration(r#"{"request": {"set": [{"name": "x", "value": "1"}]}}"#),
        )
        .build()
        .expect("starts");
    let conn = chain.connect(Echo).expect("connects");
    let outcome = conn.finish();
    assert_eq!(outcome.closed, Some(CloseType::Local));
    assert_eq!(outcome.upstream_received, None);
    assert_eq!(outcome.traps.len(), 1, "{:?}", outcome.traps);
    assert!(outcome.traps[0].contains("proxy_on_new_connection"));
}

/// A probe (raw ABI) network filter whose plugin configuration is a script
/// run in `on_configure`.
fn probe_chain(configure: &str) -> NetworkChain {
    NetworkChain::builder(engine())
        .filter(probe_filter().configuration(configure))
        .callout_cluster("auth", |request: http::Request<bytes::Bytes>| {
            let allowed = request.uri().path() == "/allow";
            http::Response::builder()
                .status(if allowed { 200 } else { 403 })
                .body(bytes::Bytes::from_static(b"answer"))
                .unwrap_or_default()
        })
        .build()
        .expect("probe starts")
}

#[test]
fn a_callout_answer_resumes_the_bytes_a_connection_held() {
    let mut chain = probe_chain("");
    // The upstream does not echo, so only the client's bytes run scripts.
    let mut conn = chain
        .connect(|_: &[u8]| TcpReply::none())
        .expect("connects");
    conn.send(b"probe:oncallout:continue:2;call:auth:GET:/allow:auth.test;return:1\n")
        .expect("sent");
    // The answer came on a later event and resumed reading after the filter.
    assert!(
        conn.upstream_received()
            .is_some_and(|b| b.starts_with(b"probe:"))
    );
    let outcome = conn.finish();
    assert_eq!(outcome.callouts.len(), 1);
    assert_eq!(outcome.callouts[0].cluster, "auth");
    assert_eq!(outcome.callouts[0].request.uri().path(), "/allow");
    assert_eq!(outcome.callouts[0].response.status(), 200);
    let logs = infos(&outcome.logs);
    let answer = logs
        .iter()
        .position(|l| l.contains("on_http_call_response token="))
        .expect("the answer was delivered");
    assert!(
        logs[answer..]
            .iter()
            .any(|l| l.ends_with("continue:2 -> 0"))
    );
}

#[test]
fn a_callout_to_an_unknown_cluster_is_refused() {
    let mut chain = probe_chain("");
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"probe:call:nope:GET:/allow:auth.test\n")
        .expect("sent");
    let outcome = conn.finish();
    assert!(outcome.callouts.is_empty());
    // BadArgument (2), as Envoy answers for a cluster it does not know.
    assert_logged(&outcome.logs, "call:nope:GET:/allow:auth.test -> 2 token=0");
}

#[test]
fn ticks_fire_on_the_virtual_clock_with_no_connection_open() {
    // The configuration script sets a 100 ms tick period.
    let mut chain = probe_chain("period:100");
    let background = chain.advance(std::time::Duration::from_millis(350));
    let ticks = background
        .logs
        .iter()
        .filter(|l| l.message.ends_with("on_tick"))
        .count();
    assert_eq!(ticks, 3);
    // The next one is due at 400 ms.
    assert!(
        chain
            .advance(std::time::Duration::from_millis(49))
            .logs
            .is_empty()
    );
    assert_eq!(
        chain
            .advance(std::time::Duration::from_millis(1))
            .logs
            .len(),
        1
    );
}

#[test]
fn a_tick_closes_a_connection_through_its_effective_context() {
    let mut chain = probe_chain("");
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"probe:ontick:close:2,period:0;period:200;return:1\n")
        .expect("sent");
    conn.advance(std::time::Duration::from_millis(199));
    assert_eq!(conn.closed(), None, "the tick is not due yet");
    conn.advance(std::time::Duration::from_millis(1));
    assert_eq!(conn.closed(), Some(CloseType::Local));
    // The held bytes never reached the upstream.
    assert_eq!(conn.upstream_received(), Some(&b""[..]));
}

/// The probe with an `auth` cluster that answers `/delay/<ms>` that late.
fn timed_probe_chain(configure: &str) -> NetworkChain {
    NetworkChain::builder(engine())
        .filter(probe_filter().configuration(configure))
        .log_level(LogLevel::Info)
        .callout_cluster("auth", |request: http::Request<bytes::Bytes>| {
            let delay = request
                .uri()
                .path()
                .strip_prefix("/delay/")
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(0);
            http::Response::builder()
                .extension(UpstreamFault::Delay(Duration::from_millis(delay)))
                .body(bytes::Bytes::from_static(b"answer"))
                .unwrap_or_default()
        })
        .build()
        .expect("probe starts")
}

#[test]
fn a_slow_callout_answer_arrives_when_its_cluster_answers() {
    let mut chain = timed_probe_chain("");
    let mut conn = chain.connect(silent).expect("connects");
    conn.send(b"probe:oncallout:continue:2;call:auth:GET:/delay/300:a.test;return:1\n")
        .expect("sent");
    // The client's next bytes come before the answer, and are held too.
    conn.send(b"more").expect("sent");
    conn.advance(Duration::from_millis(299));
    assert_eq!(conn.upstream_received(), Some(&b""[..]), "not answered yet");
    conn.advance(Duration::from_millis(1));
    let sent = conn.upstream_received().expect("connected").to_vec();
    assert!(sent.starts_with(b"probe:") && sent.ends_with(b"more"));
    let outcome = conn.finish();
    let logs = infos(&outcome.logs);
    let answer = logs
        .iter()
        .position(|l| l.contains("on_http_call_response token="))
        .expect("answered");
    let second_data = logs
        .iter()
        .rposition(|l| l.contains("on_downstream_data"))
        .expect("data");
    assert!(second_data < answer, "{logs:?}");
}

#[test]
fn answers_and_ticks_arrive_in_time_order() {
    let mut chain = timed_probe_chain("");
    let mut conn = chain.connect(silent).expect("connects");
    conn.send(
        b"probe:ontick:loglevel,period:0;period:200;\
          call:auth:GET:/delay/500:slow.test;call:auth:GET:/delay/100:fast.test;return:1\n",
    )
    .expect("sent");
    conn.advance(Duration::from_millis(600));
    let outcome = conn.finish();
    let order: Vec<&str> = outcome
        .callouts
        .iter()
        .map(|c| c.request.uri().path())
        .collect();
    assert_eq!(order, ["/delay/100", "/delay/500"]);
    let logs = infos(&outcome.logs);
    let at = |what: &str| {
        logs.iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what}: {logs:?}"))
    };
    // 100 ms: the fast answer; 200 ms: the tick; 500 ms: the slow answer.
    let answers: Vec<usize> = logs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("on_http_call_response token="))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(answers.len(), 2, "{logs:?}");
    let tick = at("on_tick");
    assert!(answers[0] < tick && tick < answers[1], "{logs:?}");
}

#[test]
fn a_callout_timeout_answers_504_at_the_timeout() {
    let mut chain = timed_probe_chain("");
    let mut conn = chain.connect(silent).expect("connects");
    conn.send(b"probe:oncallout:get:6::status,continue:2;callt:100:auth:GET:/delay/1000:a.test;return:1\n")
        .expect("sent");
    conn.advance(Duration::from_millis(99));
    assert_eq!(conn.upstream_received(), Some(&b""[..]));
    conn.advance(Duration::from_millis(1));
    assert!(
        conn.upstream_received()
            .is_some_and(|b| b.starts_with(b"probe:"))
    );
    let outcome = conn.finish();
    assert_logged(&outcome.logs, "get:6::status -> 0 504");
}

#[test]
fn a_slow_start_up_callout_is_answered_on_the_network_chains_clock() {
    let mut chain = timed_probe_chain("call:auth:GET:/delay/500:keys.test");
    assert!(
        chain
            .advance(Duration::from_millis(499))
            .callouts
            .is_empty()
    );
    let background = chain.advance(Duration::from_millis(1));
    assert_eq!(background.callouts.len(), 1);
    // A connection opened before the answer is due does not get it early.
    let mut chain = timed_probe_chain("call:auth:GET:/delay/500:keys.test");
    let conn = chain.connect(silent).expect("connects");
    let outcome = conn.finish();
    // finish lets the answer arrive (Envoy keeps running).
    assert_eq!(outcome.callouts.len(), 1);
}

/// A probe network chain with its upstream's addresses and cluster named.
fn addressed_probe_chain(configure: &str) -> NetworkChain {
    NetworkChain::builder(engine())
        .filter(probe_filter().configuration(configure))
        .upstream_address("10.0.0.9:7000".parse().expect("address"))
        .upstream_local_address("10.0.0.1:41000".parse().expect("address"))
        .cluster("backend")
        .build()
        .expect("probe starts")
}

#[test]
fn a_connection_has_its_own_stream_info() {
    let mut chain = addressed_probe_chain(
        "onconnect:propn:connection.id,prop:upstream.address,prop:xds.cluster_name,\
         propn:request.size,prop:upstream.transport_failure_reason,prop:request.protocol",
    );
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"probe:prop:upstream.address;prop:upstream.local_address;prop:xds.cluster_name;propn:upstream.num_endpoints;onlog:propn:request.size,propn:response.size,propn:connection_id,prop:request.duration\n")
        .expect("sent");
    conn.close_write().expect("half-closed");
    let outcome = conn.finish();
    // Before tcp_proxy connects: an id, no upstream host or cluster yet.
    assert_logged(
        &outcome.logs,
        "on_new_connection propn:connection.id -> 0 1",
    );
    assert_logged(
        &outcome.logs,
        "on_new_connection prop:upstream.address -> 1",
    );
    assert_logged(
        &outcome.logs,
        "on_new_connection prop:xds.cluster_name -> 1",
    );
    assert_logged(&outcome.logs, "on_new_connection propn:request.size -> 0 0");
    assert_logged(
        &outcome.logs,
        "on_new_connection prop:upstream.transport_failure_reason -> 0",
    );
    assert_logged(
        &outcome.logs,
        "on_new_connection prop:request.protocol -> 1",
    );
    // Once connected.
    assert_logged(
        &outcome.logs,
        "on_downstream_data prop:upstream.address -> 0 10.0.0.9:7000",
    );
    assert_logged(
        &outcome.logs,
        "on_downstream_data prop:upstream.local_address -> 0 10.0.0.1:41000",
    );
    assert_logged(
        &outcome.logs,
        "on_downstream_data prop:xds.cluster_name -> 0 backend",
    );
    assert_logged(
        &outcome.logs,
        "on_downstream_data propn:upstream.num_endpoints -> 0 1",
    );
    // Every byte the client sent was read, and the echo written back.
    let sent = outcome.client_received.len();
    assert_logged(
        &outcome.logs,
        &format!("on_log propn:request.size -> 0 {sent}"),
    );
    assert_logged(
        &outcome.logs,
        &format!("on_log propn:response.size -> 0 {sent}"),
    );
    assert_logged(&outcome.logs, "on_log propn:connection_id -> 0 1");
    assert_logged(&outcome.logs, "on_log prop:request.duration -> 1");
    // The next connection has the next id, and no cluster until it connects.
    let conn = chain.connect(Echo).expect("connects");
    let outcome = conn.finish();
    assert_logged(
        &outcome.logs,
        "on_new_connection propn:connection.id -> 0 2",
    );
    assert_logged(
        &outcome.logs,
        "on_new_connection prop:xds.cluster_name -> 1",
    );
}

#[test]
fn held_bytes_count_as_received_again_at_each_read() {
    let mut chain = addressed_probe_chain("");
    let mut conn = chain
        .connect(|_: &[u8]| TcpReply::none())
        .expect("connects");
    let first = b"probe:hold;propn:request.size\n";
    conn.send(first).expect("sent");
    conn.send(b"tail").expect("sent");
    let outcome = conn.finish();
    let n = first.len();
    assert_logged(
        &outcome.logs,
        &format!("on_downstream_data propn:request.size -> 0 {n}"),
    );
    // The held bytes and the new ones: the read buffer, counted again.
    assert_logged(
        &outcome.logs,
        &format!("on_downstream_data propn:request.size -> 0 {}", n + n + 4),
    );
}

#[test]
fn the_grpc_calls_of_a_vm_a_reload_replaced_are_still_reported() {
    let mut chain = NetworkChain::builder(engine())
        .filter(
            probe_filter()
                .failure_policy(FailurePolicy::FailReload)
                .reload_backoff(Duration::from_secs(2)),
        )
        .grpc_service("grpc", |_: &weir_harness::GrpcRequest| {
            weir_harness::GrpcReply::no_answer()
        })
        .build()
        .expect("probe starts");
    let mut conn = chain.connect(silent).expect("connects");
    conn.send(b"probe:gcall:grpc:pkg.Audit:Note:60000:opened:\n")
        .expect("sent");
    conn.send(b"probe:trap\n").expect("sent");
    assert_eq!(conn.closed(), Some(CloseType::Local));
    // Past the backoff, with the connection left without its outcome.
    conn.advance(Duration::from_secs(4));
    drop(conn);
    // The next connection gets a fresh VM; the call the failed one made
    // reached its service all the same.
    let outcome = one_connection(&mut chain, "probe:count\n");
    assert_logged(&outcome.logs, "count -> 0 1");
    assert_eq!(outcome.grpc.len(), 1, "{:?}", outcome.grpc);
    assert_eq!(outcome.grpc[0].request.service(), "pkg.Audit");
    assert_eq!(outcome.grpc[0].request.message(), b"opened");
}
