//! Several streams at once ([`Chain::send_all`]), driven by the `probe` test
//! filter (scripts in `x-probe-*` headers): streams that wait for callouts
//! while others arrive, run and end, each resumed only by what belongs to it,
//! in the order Envoy's worker interleaves them.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use weir_harness::{
    Arrival, Chain, Disconnect, FailurePolicy, Filter, GrpcReply, GrpcRequest, LogLevel, Outcome,
    UpstreamFault,
};
use weir_tests::{engine, filter_wasm};

/// What the cluster and the upstream saw, in order, across streams.
type Seen = Rc<RefCell<Vec<String>>>;

/// The probe with a `callout` cluster that answers `/slow` after 200 ms,
/// `/fast` after 20 ms and anything else at once, recording each call.
fn chain(policy: FailurePolicy) -> (Chain, Seen) {
    let seen: Seen = Rc::default();
    let record = Rc::clone(&seen);
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    let chain = Chain::builder(engine())
        .filter(Filter::new(plugin).name("probe").failure_policy(policy))
        .log_level(LogLevel::Info)
        .cluster("callout", move |request: http::Request<Bytes>| {
            let path = request.uri().path().to_owned();
            let delay = match path.as_str() {
                "/slow" => Duration::from_millis(200),
                "/fast" => Duration::from_millis(20),
                _ => Duration::ZERO,
            };
            record.borrow_mut().push(format!("cluster {path}"));
            http::Response::builder()
                .extension(UpstreamFault::Delay(delay))
                .body(Bytes::from_static(b"ok"))
                .expect("response")
        })
        // Answers each call with its own message, echoed.
        .grpc_service("grpc", |request: &GrpcRequest| {
            GrpcReply::status(0, "").message(Bytes::copy_from_slice(request.message()))
        })
        .build()
        .expect("starts");
    (chain, seen)
}

/// A GET with probe `id`, arriving `after` the batch starts, with scripts.
fn request(id: &str, after: Option<u64>, scripts: &[(&str, &str)]) -> http::Request<Bytes> {
    let mut b = http::Request::get(format!("/{id}"))
        .header("host", "streams.test")
        .header("x-probe-id", id);
    for (name, script) in scripts {
        b = b.header(*name, *script);
    }
    if let Some(ms) = after {
        b = b.extension(Arrival(Duration::from_millis(ms)));
    }
    b.body(Bytes::new()).expect("request")
}

/// An upstream that records which stream reached it and answers its id,
/// after `delay_ms` if the request carries `x-delay-ms`.
fn upstream(seen: &Seen) -> impl FnMut(http::Request<Bytes>) -> http::Response<Bytes> + use<> {
    let seen = Rc::clone(seen);
    move |request| {
        let id = header(&request, "x-probe-id");
        seen.borrow_mut().push(format!("upstream {id}"));
        let delay = header(&request, "x-delay-ms").parse().unwrap_or(0);
        http::Response::builder()
            .extension(UpstreamFault::Delay(Duration::from_millis(delay)))
            .body(Bytes::from(id))
            .expect("response")
    }
}

fn header(request: &http::Request<Bytes>, name: &str) -> String {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn infos(outcome: &Outcome) -> Vec<&str> {
    outcome.logs_at(LogLevel::Info).collect()
}

fn has(outcome: &Outcome, line: &str) -> bool {
    infos(outcome).iter().any(|l| l.contains(line))
}

fn ok(result: &weir_harness::Result<Outcome>) -> &Outcome {
    match result {
        Ok(outcome) => outcome,
        Err(e) => panic!("the stream failed: {e}"),
    }
}

/// The first `context=N` a line with `prefix` reports.
fn context_id(outcome: &Outcome, prefix: &str) -> u32 {
    infos(outcome)
        .iter()
        .find(|l| l.starts_with(prefix) && l.contains("context="))
        .and_then(|l| l.split("context=").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` line with ids in {:?}", infos(outcome)))
}

#[test]
fn two_streams_wait_each_for_its_own_callout() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    let outcomes = chain.send_all(
        [
            request(
                "a",
                None,
                &[
                    (
                        "x-probe-request",
                        "ids;call:callout:GET:/slow:a.test;return:1",
                    ),
                    ("x-probe-callout", "get:0::path;continue:0"),
                ],
            ),
            // Arrives while a waits, waits less.
            request(
                "b",
                Some(50),
                &[
                    (
                        "x-probe-request",
                        "ids;call:callout:GET:/fast:b.test;return:1",
                    ),
                    ("x-probe-callout", "get:0::path;continue:0"),
                ],
            ),
        ],
        upstream(&seen),
    );
    let [a, b] = [ok(&outcomes[0]), ok(&outcomes[1])];
    // b arrived after a sent its callout, got its own answer first, went
    // upstream and ended; a's answer came later and resumed only a.
    assert_eq!(
        *seen.borrow(),
        ["cluster /slow", "cluster /fast", "upstream b", "upstream a"]
    );
    assert_eq!(
        (a.response.status().as_u16(), b.response.status().as_u16()),
        (200, 200)
    );
    assert_eq!(a.response.body().as_ref(), b"a");
    assert_eq!(b.response.body().as_ref(), b"b");
    // Each outcome has its own stream's callouts and log lines.
    let paths = |o: &Outcome| -> Vec<String> {
        o.callouts
            .iter()
            .map(|c| c.request.uri().path().to_owned())
            .collect()
    };
    assert_eq!(
        (paths(a), paths(b)),
        (vec!["/slow".to_owned()], vec!["/fast".to_owned()])
    );
    assert!(has(a, "get:0::path -> 0 /a"), "{:?}", infos(a));
    assert!(has(b, "get:0::path -> 0 /b"), "{:?}", infos(b));
    assert!(has(a, "on_delete a") && !has(a, "on_delete b"));
    assert!(has(b, "on_delete b") && !has(b, "on_delete a"));
    // Each stream has its own context, and its callout answer was delivered
    // with that context effective.
    let (ca, cb) = (
        context_id(a, "on_request_headers ids"),
        context_id(b, "on_request_headers ids"),
    );
    assert_ne!(ca, cb, "two streams, two contexts");
    assert!(has(
        a,
        &format!("on_http_call_response effective:{ca} -> 0")
    ));
    assert!(has(
        b,
        &format!("on_http_call_response effective:{cb} -> 0")
    ));
    assert!(a.fuel > 0 && b.fuel > 0);
}

#[test]
fn streams_arriving_together_are_each_decoded_until_they_wait() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    let scripts = |id: &'static str| {
        [
            ("x-probe-request", "call:callout:GET:/now:n.test;return:1"),
            ("x-probe-callout", "continue:0"),
            (
                "x-probe-log",
                if id == "a" { "sget:k" } else { "sset:k:0:b" },
            ),
        ]
    };
    let outcomes = chain.send_all(
        [
            request("a", None, &scripts("a")),
            request("b", None, &scripts("b")),
        ],
        upstream(&seen),
    );
    // Both callouts went out before either answer came back (even from a
    // cluster without delay), then each stream resumed in order.
    assert_eq!(
        *seen.borrow(),
        ["cluster /now", "cluster /now", "upstream a", "upstream b"]
    );
    let (a, b) = (ok(&outcomes[0]), ok(&outcomes[1]));
    assert!(
        has(a, "on_log sget:k -> 1"),
        "a ends before b writes: {:?}",
        infos(a)
    );
    assert!(has(b, "on_log sset:k:0:b -> 0"));
}

#[test]
fn a_stream_reads_shared_data_a_waiting_stream_wrote() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    let outcomes = chain.send_all(
        [
            request(
                "a",
                None,
                &[
                    (
                        "x-probe-request",
                        "sset:cache:0:filled-by-a;call:callout:GET:/slow:a.test;return:1",
                    ),
                    ("x-probe-callout", "continue:0"),
                ],
            ),
            request("b", Some(50), &[("x-probe-request", "sget:cache")]),
        ],
        upstream(&seen),
    );
    let b = ok(&outcomes[1]);
    assert!(
        has(b, "on_request_headers sget:cache -> 0 filled-by-a"),
        "{:?}",
        infos(b)
    );
    assert_eq!(
        *seen.borrow(),
        ["cluster /slow", "upstream b", "upstream a"],
        "b did not wait for a's callout"
    );
    assert_eq!(ok(&outcomes[0]).response.status(), 200);
}

#[test]
fn arrivals_order_the_streams_and_outcomes_keep_request_order() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    let outcomes = chain.send_all(
        [
            request("late", Some(300), &[]),
            request("first", None, &[]),
            request("middle", Some(100), &[]),
        ],
        upstream(&seen),
    );
    assert_eq!(
        *seen.borrow(),
        ["upstream first", "upstream middle", "upstream late"]
    );
    let bodies: Vec<&[u8]> = outcomes
        .iter()
        .map(|o| ok(o).response.body().as_ref())
        .collect();
    assert_eq!(bodies, [&b"late"[..], b"first", b"middle"]);
}

#[test]
fn upstream_delays_order_the_responses() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    let slow = http::Request::get("/slow")
        .header("host", "streams.test")
        .header("x-probe-id", "slow")
        .header("x-delay-ms", "300")
        .header("x-probe-response", "sget:answered")
        .body(Bytes::new())
        .expect("request");
    let quick = http::Request::get("/quick")
        .header("host", "streams.test")
        .header("x-probe-id", "quick")
        .header("x-delay-ms", "100")
        .header("x-probe-response", "sset:answered:0:quick")
        .body(Bytes::new())
        .expect("request");
    let outcomes = chain.send_all([slow, quick], upstream(&seen));
    assert_eq!(*seen.borrow(), ["upstream slow", "upstream quick"]);
    let slow = ok(&outcomes[0]);
    assert!(
        has(slow, "on_response_headers sget:answered -> 0 quick"),
        "the quicker response came first: {:?}",
        infos(slow)
    );
}

#[test]
fn a_local_reply_while_another_stream_waits() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    let outcomes = chain.send_all(
        [
            request(
                "a",
                None,
                &[
                    ("x-probe-request", "call:callout:GET:/slow:a.test;return:1"),
                    ("x-probe-callout", "sget:b-done;continue:0"),
                ],
            ),
            request(
                "b",
                Some(50),
                &[
                    ("x-probe-request", "reply:403:denied:no"),
                    ("x-probe-log", "sset:b-done:0:yes"),
                ],
            ),
        ],
        upstream(&seen),
    );
    let (a, b) = (ok(&outcomes[0]), ok(&outcomes[1]));
    assert_eq!(b.response.status(), 403);
    assert_eq!(
        b.local_reply
            .as_ref()
            .map(|r| (r.plugin.as_str(), r.details.as_str())),
        Some(("probe", "denied"))
    );
    assert!(b.upstream_request.is_none());
    // b was answered and ended while a waited.
    assert!(has(a, "sget:b-done -> 0 yes"), "{:?}", infos(a));
    assert_eq!(a.response.status(), 200);
    assert!(a.local_reply.is_none());
    assert_eq!(*seen.borrow(), ["cluster /slow", "upstream a"]);
}

/// a waits for a slow callout (its client gives up after 1 s); b, arriving
/// meanwhile, traps the VM.
fn trap_while_waiting(policy: FailurePolicy) -> (Vec<weir_harness::Result<Outcome>>, Chain, Seen) {
    let (mut chain, seen) = chain(policy);
    let mut a = request(
        "a",
        None,
        &[
            ("x-probe-request", "call:callout:GET:/slow:a.test;return:1"),
            ("x-probe-callout", "continue:0"),
            ("x-probe-log", "loglevel"),
        ],
    );
    a.extensions_mut()
        .insert(Disconnect(Duration::from_millis(1000)));
    let outcomes = chain.send_all(
        [a, request("b", Some(50), &[("x-probe-request", "trap")])],
        upstream(&seen),
    );
    (outcomes, chain, seen)
}

fn details(outcome: &Outcome) -> Option<&str> {
    outcome.local_reply.as_ref().map(|r| r.details.as_str())
}

/// What every policy does to the stream that waited in the failed VM: its
/// answer reaches nobody, so it stays paused until its client leaves, and
/// the failed VM's access log is not called.
fn assert_left_paused(outcomes: &[weir_harness::Result<Outcome>], seen: &Seen) {
    let b = ok(&outcomes[1]);
    assert_eq!(b.response.status(), 503);
    assert_eq!(details(b), Some("wasm_fail_stream"));
    assert_eq!(b.traps.len(), 1, "the trap is the trapping stream's");
    match &outcomes[0] {
        Err(weir_harness::Error::Disconnected {
            phase,
            upstream_request,
            logs,
            callouts,
        }) => {
            assert_eq!(*phase, "on_request_headers");
            assert!(upstream_request.is_none());
            assert!(
                !logs
                    .iter()
                    .any(|l| l.message.contains("on_log")
                        || l.message.contains("on_http_call_response")),
                "the failed VM is called no more: {logs:?}"
            );
            // The cluster still answered the callout, at its time.
            assert_eq!(callouts.len(), 1);
            assert_eq!(callouts[0].request.uri().path(), "/slow");
        }
        other => panic!("a stays paused until its client leaves: {other:?}"),
    }
    assert_eq!(*seen.borrow(), ["cluster /slow"]);
}

#[test]
fn a_trap_leaves_a_waiting_stream_paused_with_fail_closed() {
    let (outcomes, mut chain, seen) = trap_while_waiting(FailurePolicy::FailClosed);
    assert_left_paused(&outcomes, &seen);
    let later = chain
        .send(request("c", None, &[]), upstream(&seen))
        .expect("answered");
    assert_eq!(later.response.status(), 503);
}

#[test]
fn a_trap_leaves_a_waiting_stream_paused_with_fail_open() {
    let (outcomes, mut chain, seen) = trap_while_waiting(FailurePolicy::FailOpen);
    assert_left_paused(&outcomes, &seen);
    // Later streams skip the failed filter.
    let later = chain
        .send(request("c", None, &[]), upstream(&seen))
        .expect("answered");
    assert_eq!(later.response.status(), 200);
    assert_eq!(*seen.borrow(), ["cluster /slow", "upstream c"]);
}

#[test]
fn a_trap_leaves_a_waiting_stream_paused_with_fail_reload() {
    let (outcomes, _, seen) = trap_while_waiting(FailurePolicy::FailReload);
    assert_left_paused(&outcomes, &seen);
}

/// A FAIL_RELOAD reload while a stream waits in the failed VM: the stream
/// keeps the failed VM (its callout's answer, due after the reload, reaches
/// nobody, not the fresh VM's context with the same id) until its client
/// leaves; the reloaded plugin serves the stream that reloaded it.
#[test]
fn a_reload_does_not_resume_a_stream_paused_in_the_failed_vm() {
    let seen: Seen = Rc::default();
    let record = Rc::clone(&seen);
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    let mut chain = Chain::builder(engine())
        .filter(
            Filter::new(plugin)
                .name("probe")
                .failure_policy(FailurePolicy::FailReload)
                .reload_backoff(Duration::from_millis(100)),
        )
        .log_level(LogLevel::Info)
        .cluster("callout", move |request: http::Request<Bytes>| {
            let path = request.uri().path().to_owned();
            record.borrow_mut().push(format!("cluster {path}"));
            let delay = if path == "/late" { 1000 } else { 10 };
            http::Response::builder()
                .extension(UpstreamFault::Delay(Duration::from_millis(delay)))
                .body(Bytes::from_static(b"ok"))
                .expect("response")
        })
        .build()
        .expect("starts");
    let mut a = request(
        "a",
        None,
        &[
            (
                "x-probe-request",
                "ids;call:callout:GET:/late:a.test;return:1",
            ),
            ("x-probe-callout", "continue:0"),
        ],
    );
    a.extensions_mut()
        .insert(Disconnect(Duration::from_millis(2000)));
    let outcomes = chain.send_all(
        [
            a,
            request("b", Some(20), &[("x-probe-request", "trap")]),
            // After the backoff: reloads the plugin; its context has a's id.
            request(
                "d",
                Some(400),
                &[
                    ("x-probe-request", "ids;call:callout:GET:/d:d.test;return:1"),
                    ("x-probe-callout", "count;continue:0"),
                ],
            ),
        ],
        upstream(&seen),
    );
    let d = ok(&outcomes[2]);
    assert_eq!(d.response.status(), 200);
    assert!(has(d, "count -> 0 1"), "a fresh VM: {:?}", infos(d));
    let a_ids = match &outcomes[0] {
        Err(weir_harness::Error::Disconnected { logs, callouts, .. }) => {
            assert_eq!(callouts.len(), 1, "the late answer reached nobody");
            logs.iter()
                .find(|l| l.message.starts_with("on_request_headers ids"))
                .map(|l| l.message.clone())
        }
        other => panic!("a stays paused in the failed VM: {other:?}"),
    };
    let d_ids = infos(d)
        .into_iter()
        .find(|l| l.starts_with("on_request_headers ids"));
    assert_eq!(
        a_ids.as_deref(),
        d_ids,
        "the fresh VM gives d the failed VM's context id"
    );
    assert_eq!(
        *seen.borrow(),
        ["cluster /late", "cluster /d", "upstream d"]
    );
}

#[test]
fn a_callback_of_one_stream_resumes_another_through_the_effective_context() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    // a's context id, to let b resume it.
    let probe = chain
        .send(
            request("p", None, &[("x-probe-request", "ids")]),
            upstream(&seen),
        )
        .expect("completes");
    let next = context_id(&probe, "on_request_headers ids") + 1;
    seen.borrow_mut().clear();
    let outcomes = chain.send_all(
        [
            request(
                "a",
                None,
                &[
                    (
                        "x-probe-request",
                        "ids;call:callout:GET:/slow:a.test;return:1",
                    ),
                    ("x-probe-callout", "get:0::path"),
                ],
            ),
            request(
                "b",
                Some(50),
                &[("x-probe-request", &format!("effective:{next};continue:0"))],
            ),
        ],
        upstream(&seen),
    );
    let (a, b) = (ok(&outcomes[0]), ok(&outcomes[1]));
    assert_eq!(context_id(a, "on_request_headers ids"), next);
    assert!(has(b, &format!("effective:{next} -> 0")));
    // b's continue resumed a before a's callout answered: a went upstream
    // and ended; the answer came later, to the root context, which found a's
    // context gone (it is still a's callout, in a's outcome).
    assert_eq!(
        *seen.borrow(),
        ["cluster /slow", "upstream b", "upstream a"]
    );
    assert_eq!(a.response.status(), 200);
    let lines = infos(a);
    let ended = lines.iter().position(|l| *l == "on_delete a");
    let answered = lines
        .iter()
        .position(|l| *l == format!("on_http_call_response effective:{next} -> 2"));
    assert!(ended.is_some() && ended < answered, "{lines:?}");
    assert_eq!(a.callouts.len(), 1);
    assert!(b.callouts.is_empty());
}

#[test]
fn send_is_a_batch_of_one() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    let one = chain
        .send(
            request(
                "a",
                None,
                &[
                    ("x-probe-request", "call:callout:GET:/fast:a.test;return:1"),
                    ("x-probe-callout", "continue:0"),
                ],
            ),
            upstream(&seen),
        )
        .expect("completes");
    let (mut again, seen_again) = self::chain(FailurePolicy::FailClosed);
    let batch = again.send_all(
        [request(
            "a",
            None,
            &[
                ("x-probe-request", "call:callout:GET:/fast:a.test;return:1"),
                ("x-probe-callout", "continue:0"),
            ],
        )],
        upstream(&seen_again),
    );
    let batch = ok(&batch[0]);
    assert_eq!(one.logs, batch.logs);
    assert_eq!(one.callouts.len(), batch.callouts.len());
    assert_eq!(one.fuel, batch.fuel);
    assert_eq!(*seen.borrow(), *seen_again.borrow());
}

#[test]
fn grpc_answers_resume_the_stream_that_made_the_call() {
    let (mut chain, seen) = chain(FailurePolicy::FailClosed);
    let scripts = |id: &str| {
        [
            (
                "x-probe-request",
                format!("gcall:grpc:s:m:1000:from-{id};return:1"),
            ),
            // A unary call answered OK ends with its message.
            ("x-probe-grpc-message", "get:0::path;continue:0".to_owned()),
        ]
    };
    let request = |id: &str| {
        let owned = scripts(id);
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self::request(id, None, &pairs)
    };
    // Both arrive together: each is decoded until it waits for its call.
    let outcomes = chain.send_all([request("a"), request("b")], upstream(&seen));
    let (a, b) = (ok(&outcomes[0]), ok(&outcomes[1]));
    assert_eq!(*seen.borrow(), ["upstream a", "upstream b"]);
    for (outcome, id) in [(a, "a"), (b, "b")] {
        assert_eq!(outcome.response.status(), 200);
        assert!(
            has(outcome, &format!("on_grpc_receive get:0::path -> 0 /{id}")),
            "{:?}",
            infos(outcome)
        );
        let messages: Vec<&[u8]> = outcome.grpc.iter().map(|g| g.request.message()).collect();
        assert_eq!(messages, [format!("from-{id}").as_bytes()]);
    }
}
