//! Engines that bound each callback by an epoch deadline instead of fuel
//! (`EngineBuilder::deadline_per_call`): the sample header-append filter
//! behaves exactly as with fuel metering, and a guest that never returns is
//! stopped by the deadline under each failure policy. Only the trap is
//! asserted, never how long it took.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use weir_harness::{
    CallLimit, Chain, ChainBuilder, Engine, EnvoyConfig, FailurePolicy, Filter, LogLevel, Outcome,
};
use weir_tests::{envoy_yaml, filter_wasm, root, scenarios};

const DEADLINE: Duration = Duration::from_millis(50);

/// One deadline engine for the file, with the on-disk module cache the other
/// tests use (its key keeps fuel and deadline code apart).
fn deadline_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::builder()
            .deadline_per_call(DEADLINE)
            .cache_dir(weir_cli::build::target_dir(root()).join("weir-cache"))
            .build()
            .expect("deadline engine")
    })
}

/// `envoy/header-append.yaml`'s chain on `engine`.
fn header_append(engine: &Engine) -> ChainBuilder {
    EnvoyConfig::parse(&envoy_yaml("header-append.yaml"))
        .expect("shipped config parses")
        .chain_builder(engine, |_| engine.load_file(filter_wasm("header-append")))
        .expect("module loads")
        .log_level(LogLevel::Debug)
}

/// A filter whose `on_request_headers` never returns on the second request
/// a VM sees (a fresh VM counts from zero again).
fn runaway() -> Filter {
    let wasm = wat::parse_str(
        r#"(module
  (memory (export "memory") 1)
  (global $requests (mut i32) (i32.const 0))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (global.set $requests (i32.add (global.get $requests) (i32.const 1)))
    (if (i32.eq (global.get $requests) (i32.const 2))
      (then (loop $forever (br $forever))))
    (i32.const 0)))"#,
    )
    .expect("wat");
    Filter::new(deadline_engine().load(&wasm).expect("loads")).name("runaway")
}

fn send(chain: &mut Chain) -> Outcome {
    let request = http::Request::get("/hello")
        .header("host", "weir.test")
        .body(Bytes::new())
        .expect("request");
    chain
        .send(request, scenarios::header_append_upstream().as_ref())
        .expect("answered")
}

/// Header-append then the runaway filter, failing as `policy` says.
fn chain(policy: FailurePolicy) -> Chain {
    header_append(deadline_engine())
        .filter(
            runaway()
                .failure_policy(policy)
                .reload_backoff(Duration::from_millis(100)),
        )
        .build()
        .expect("starts")
}

fn filtered(o: &Outcome) -> bool {
    o.response.status() == 200 && o.response.headers()["x-filtered-by"] == "weir"
}

/// The request whose callback ran past the deadline: 503, and the trap as
/// Envoy reports it, naming the deadline, with the wasm backtrace.
fn assert_stopped(o: &Outcome) {
    assert_eq!(o.response.status(), 503);
    let reply = o.local_reply.as_ref().expect("a local reply");
    assert_eq!(reply.details, "wasm_fail_stream");
    assert!(o.upstream_request.is_none());
    assert_eq!(o.traps.len(), 1, "{:?}", o.traps);
    let trap = &o.traps[0];
    assert!(
        trap.starts_with("runaway: Function: proxy_on_request_headers failed: "),
        "{trap}"
    );
    assert!(trap.contains("ran past its deadline of 50ms"), "{trap}");
    assert!(trap.contains("wasm backtrace"), "{trap}");
}

#[test]
fn header_append_behaves_as_with_fuel() {
    assert_eq!(
        deadline_engine().call_limit(),
        CallLimit::Deadline(DEADLINE)
    );
    assert_eq!(weir_tests::engine().call_limit(), CallLimit::Fuel);
    let mut metered = header_append(weir_tests::engine()).build().expect("starts");
    let mut timed = header_append(deadline_engine()).build().expect("starts");
    let upstream = scenarios::header_append_upstream();
    for scenario in scenarios::header_append() {
        let name = scenario.name;
        let a = metered
            .send(scenario.request.clone(), upstream.as_ref())
            .expect("fuel");
        let b = timed
            .send(scenario.request, upstream.as_ref())
            .expect("deadline");
        assert!(b.traps.is_empty(), "{name}: {:?}", b.traps);
        assert_eq!(
            a.upstream_request.as_ref().map(|r| r.headers()),
            b.upstream_request.as_ref().map(|r| r.headers()),
            "{name}"
        );
        assert_eq!(a.response.status(), b.response.status(), "{name}");
        assert_eq!(a.response.headers(), b.response.headers(), "{name}");
        assert_eq!(a.response.body(), b.response.body(), "{name}");
        assert_eq!(a.logs, b.logs, "{name}");
        assert_eq!(a.host_calls, b.host_calls, "{name}");
        // Fuel is metered with fuel only.
        assert!(a.fuel > 0, "{name}");
        assert_eq!(b.fuel, 0, "{name}");
    }
}

#[test]
fn fail_closed_answers_503_once_the_deadline_stopped_a_guest() {
    let mut chain = chain(FailurePolicy::FailClosed);
    assert!(filtered(&send(&mut chain)));
    assert_stopped(&send(&mut chain));
    // The failed VM is called no more: every request is refused.
    let o = send(&mut chain);
    assert_eq!(o.response.status(), 503);
    assert!(o.traps.is_empty(), "{:?}", o.traps);
}

#[test]
fn fail_open_skips_the_filter_once_the_deadline_stopped_it() {
    let mut chain = chain(FailurePolicy::FailOpen);
    assert!(filtered(&send(&mut chain)));
    assert_stopped(&send(&mut chain));
    // Later requests skip the failed filter; header-append still runs.
    for _ in 0..2 {
        let o = send(&mut chain);
        assert!(filtered(&o), "{:?}", o.response);
        assert!(o.upstream_request.is_some());
        assert!(o.traps.is_empty(), "{:?}", o.traps);
    }
}

#[test]
fn fail_reload_starts_a_fresh_vm_after_the_deadline_stopped_one() {
    let mut chain = chain(FailurePolicy::FailReload);
    assert!(filtered(&send(&mut chain)));
    assert_stopped(&send(&mut chain));
    assert_eq!(
        send(&mut chain).response.status(),
        503,
        "within the backoff"
    );
    // The backoff (drawn from [100, 150) ms of virtual time) has passed.
    chain.advance(Duration::from_millis(150));
    assert!(filtered(&send(&mut chain)), "a fresh VM's first request");
    assert_stopped(&send(&mut chain));
}
