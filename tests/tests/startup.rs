//! Callouts a plugin makes while it starts (`proxy_http_call` and gRPC calls
//! from `on_vm_start` / `on_configure`), driven by the `probe` test filter,
//! whose plugin configuration is a script run in `on_configure`: the clusters
//! are known from the start, and the answers reach the root context on the
//! virtual clock, before a request that arrives later.

use std::time::Duration;

use bytes::Bytes;
use weir_harness::{
    Chain, Filter, GrpcReply, GrpcRequest, LogLevel, NetworkChain, TcpReply, UpstreamFault,
};
use weir_tests::{engine, filter_wasm};

/// The probe configured with `script`, and a `keys` cluster that answers
/// `key-set` after `delay`.
fn chain(script: &str, delay: Duration) -> Chain {
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("probe").configuration(script))
        .log_level(LogLevel::Info)
        .cluster("keys", move |_: http::Request<Bytes>| {
            http::Response::builder()
                .header("x-key", "k1")
                .extension(UpstreamFault::Delay(delay))
                .body(Bytes::from_static(b"key-set"))
                .expect("response")
        })
        .grpc_service("grpc", |request: &GrpcRequest| {
            GrpcReply::status(0, "").message(Bytes::copy_from_slice(request.message()))
        })
        .build()
        .expect("starts")
}

/// A request whose `on_request_headers` runs `script`.
fn request(script: &str) -> http::Request<Bytes> {
    http::Request::get("/")
        .header("host", "startup.test")
        .header("x-probe-request", script)
        .body(Bytes::new())
        .expect("request")
}

fn ok(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::new(Bytes::from_static(b"ok"))
}

fn lines(logs: &[weir_harness::LogRecord]) -> Vec<String> {
    logs.iter().map(|l| l.message.clone()).collect()
}

/// What the probe's `startup` command reports on a request.
fn startup_answer(chain: &mut Chain) -> String {
    let outcome = chain.send(request("startup"), ok).expect("sent");
    lines(&outcome.logs)
        .into_iter()
        .find_map(|l| {
            l.strip_prefix("on_request_headers startup -> 0 ")
                .map(str::to_owned)
        })
        .expect("the probe reported")
}

#[test]
fn a_callout_from_on_configure_is_answered_before_the_first_request() {
    let mut chain = chain("call:keys:GET:/keys:keys.test", Duration::ZERO);
    let started = lines(chain.startup_logs());
    assert!(
        started
            .iter()
            .any(|l| l.starts_with("on_configure call:keys:GET:/keys:keys.test -> 0 token=")),
        "{started:?}"
    );
    let outcome = chain.send(request("startup"), ok).expect("sent");
    // The answer reached the root context first: the request reads it.
    let logs = lines(&outcome.logs);
    assert!(
        logs.iter()
            .any(|l| l.ends_with(":status=200 body=0 key-set") && l.contains("headers=")),
        "{logs:?}"
    );
    // The callout is reported with the first stream that saw it happen.
    assert_eq!(outcome.callouts.len(), 1);
    assert_eq!(outcome.callouts[0].cluster, "keys");
    assert_eq!(outcome.callouts[0].request.uri().path(), "/keys");
    // Only once.
    let again = chain.send(request("startup"), ok).expect("sent");
    assert!(again.callouts.is_empty());
}

#[test]
fn a_slow_start_up_callout_arrives_on_the_virtual_clock() {
    let mut chain = chain("call:keys:GET:/keys:keys.test", Duration::from_millis(1000));
    let early = chain.advance(Duration::from_millis(400));
    assert!(early.callouts.is_empty(), "not due before 1 s");
    // A request at 400 ms runs before the answer: the plugin has no keys yet.
    assert_eq!(startup_answer(&mut chain), "none");
    // The batch waited for the callout still in flight: the clock is at 1 s.
    assert!(chain.advance(Duration::ZERO).callouts.is_empty());
    assert!(startup_answer(&mut chain).ends_with("key-set"));
}

#[test]
fn advance_delivers_a_start_up_callout_when_it_is_due() {
    let mut chain = chain("call:keys:GET:/keys:keys.test", Duration::from_millis(500));
    assert!(
        chain
            .advance(Duration::from_millis(499))
            .callouts
            .is_empty()
    );
    let due = chain.advance(Duration::from_millis(1));
    assert_eq!(due.callouts.len(), 1);
    assert_eq!(due.callouts[0].response.body(), "key-set");
    assert!(startup_answer(&mut chain).ends_with("key-set"));
}

#[test]
fn a_start_up_callout_to_an_unknown_cluster_is_refused() {
    let chain = chain("call:nope:GET:/keys:keys.test", Duration::ZERO);
    // BadArgument (2), as Envoy answers for a cluster it does not know.
    assert!(
        lines(chain.startup_logs())
            .iter()
            .any(|l| l == "on_configure call:nope:GET:/keys:keys.test -> 2 token=0"),
        "{:?}",
        chain.startup_logs()
    );
}

#[test]
fn a_grpc_call_from_on_configure_reaches_its_service() {
    let mut chain = chain("gcall:grpc:svc.Keys:Get:1000:hello:", Duration::ZERO);
    assert!(
        lines(chain.startup_logs())
            .iter()
            .any(|l| l.starts_with("on_configure gcall:grpc:svc.Keys:Get:1000:hello: -> 0")),
        "{:?}",
        chain.startup_logs()
    );
    let background = chain.advance(Duration::ZERO);
    assert_eq!(background.grpc.len(), 1);
    assert_eq!(
        background.grpc[0].request.messages,
        vec![Bytes::from("hello")]
    );
    assert!(
        lines(&background.logs)
            .iter()
            .any(|l| l.contains("on_grpc_receive") && l.contains("hello")),
        "{:?}",
        background.logs
    );
}

#[test]
fn a_network_filter_gets_its_start_up_answer_before_the_connection() {
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    let mut chain = NetworkChain::builder(engine())
        .filter(
            Filter::new(plugin)
                .name("p")
                .vm_id("p")
                .configuration("call:keys:GET:/keys:keys.test"),
        )
        .callout_cluster("keys", |_: http::Request<Bytes>| {
            http::Response::new(Bytes::from_static(b"key-set"))
        })
        .build()
        .expect("starts");
    let mut conn = chain
        .connect(|_: &[u8]| TcpReply::none())
        .expect("connects");
    conn.send(b"probe:startup\n").expect("sent");
    let outcome = conn.finish();
    assert_eq!(outcome.callouts.len(), 1);
    assert!(
        lines(&outcome.logs)
            .iter()
            .any(|l| l.contains("startup -> 0 token=") && l.ends_with("key-set")),
        "{:?}",
        outcome.logs
    );
}
