//! gRPC callouts in the harness, driven by the `probe` test filter: what the
//! service receives, what the outcome records, timeouts on the virtual clock,
//! and a host call that would crash Envoy. (tests/conformance/grpc.yaml
//! compares the same host calls with Envoy 1.40.)

use std::time::Duration;

use bytes::Bytes;
use weir_harness::{Chain, Error, Filter, GrpcReply, GrpcRequest, LogLevel};
use weir_tests::{engine, filter_wasm};

fn chain(service: impl FnMut(&GrpcRequest) -> GrpcReply + 'static) -> Chain {
    let probe = engine().load_file(filter_wasm("probe")).expect("loads");
    Chain::builder(engine())
        .filter(Filter::new(probe).name("probe"))
        .grpc_service("grpc", service)
        .log_level(LogLevel::Info)
        .build()
        .expect("starts")
}

fn request(scripts: &[(&str, &str)]) -> http::Request<Bytes> {
    let mut b = http::Request::get("/").header("host", "grpc.test");
    for (k, v) in scripts {
        b = b.header(*k, *v);
    }
    b.body(Bytes::new()).expect("request")
}

fn ok(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::new(Bytes::from_static(b"up"))
}

fn lines(logs: &[weir_harness::LogRecord]) -> Vec<&str> {
    logs.iter().map(|l| l.message.as_str()).collect()
}

#[test]
fn a_unary_call_reaches_its_service_and_the_outcome() {
    let mut chain = chain(|req: &GrpcRequest| {
        let mut answer = b"hello ".to_vec();
        answer.extend_from_slice(req.message());
        GrpcReply::ok(answer)
    });
    let outcome = chain
        .send(
            request(&[
                (
                    "x-probe-request",
                    "gcall:grpc:pkg.Greeter:Greet:250:ada:x-tenant=a;return:1",
                ),
                ("x-probe-grpc-message", "continue:0"),
            ]),
            ok,
        )
        .expect("completes");
    assert_eq!(outcome.response.status(), 200);
    assert!(
        lines(&outcome.logs).contains(&"on_grpc_receive token=5 size=9 buf:5 -> 0 hello ada"),
        "{:?}",
        outcome.logs
    );
    let [call] = outcome.grpc.as_slice() else {
        panic!("one call: {:?}", outcome.grpc);
    };
    assert_eq!(call.request.cluster, "grpc");
    assert_eq!(
        (call.request.service(), call.request.method()),
        ("pkg.Greeter", "Greet")
    );
    assert_eq!(call.request.messages, [Bytes::from_static(b"ada")]);
    let headers = call.request.http.headers();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-timeout"], "250m");
    assert_eq!(headers["x-tenant"], "a");
    assert_eq!(call.request.http.uri(), "http://grpc/pkg.Greeter/Greet");
    // The body is the length-prefixed message.
    assert_eq!(&call.request.http.body()[..], b"\0\0\0\0\x03ada");
    assert_eq!(call.status, Some(0));
}

#[test]
fn a_held_stream_waits_for_the_call_timeout_on_the_virtual_clock() {
    let mut chain = chain(|_: &GrpcRequest| GrpcReply::no_answer());
    let outcome = chain
        .send(
            request(&[
                ("x-probe-request", "gcall:grpc:pkg.Slow:Wait:300:x;return:1"),
                ("x-probe-grpc-close", "continue:0"),
            ]),
            ok,
        )
        .expect("the timeout resumes the stream");
    assert_eq!(outcome.response.status(), 200);
    assert!(
        lines(&outcome.logs).iter().any(|l| l.starts_with(
            "on_grpc_close token=5 status=14 status -> 0 14 upstream request timeout{response_timeout}"
        )),
        "{:?}",
        outcome.logs
    );
    assert_eq!(outcome.grpc[0].status, Some(14));
    // The clock moved 300 ms: a 299 ms wait later fires nothing more.
    assert!(chain.advance(Duration::from_millis(299)).logs.is_empty());
}

#[test]
fn an_unawaited_call_times_out_when_the_clock_is_advanced() {
    let mut chain = chain(|_: &GrpcRequest| GrpcReply::no_answer());
    let outcome = chain
        .send(
            request(&[("x-probe-request", "gcall:grpc:pkg.Slow:Wait:1000:x")]),
            ok,
        )
        .expect("completes");
    assert_eq!(outcome.grpc.len(), 1);
    assert_eq!(outcome.grpc[0].status, None);
    assert!(chain.advance(Duration::from_millis(999)).logs.is_empty());
    let later = chain.advance(Duration::from_millis(1));
    assert_eq!(
        lines(&later.logs),
        [
            "on_grpc_close token=5 status=14 status -> 0 14 upstream request timeout{response_timeout}"
        ]
    );
}

#[test]
fn a_stream_sends_every_message_and_receives_the_script() {
    let mut chain = chain(|req: &GrpcRequest| {
        let mut reply = GrpcReply::status(0, "").initial_metadata("x-h", "v");
        for m in &req.messages {
            reply = reply.message(m.clone());
        }
        reply.trailing_metadata("x-t", "w")
    });
    let outcome = chain
        .send(
            request(&[(
                "x-probe-request",
                "gstream:grpc:pkg.Chat:Talk:;gsend:$:one:0;gsend:$:two:0;gclose:$",
            )]),
            ok,
        )
        .expect("completes");
    let got = lines(&outcome.logs);
    let grpc: Vec<&str> = got
        .iter()
        .copied()
        .filter(|l| l.starts_with("on_grpc"))
        .collect();
    assert_eq!(
        grpc,
        [
            "on_grpc_receive_initial_metadata token=6 n=4 pairs:4 -> 0 :status=200,content-type=application/grpc,x-h=v,x-envoy-upstream-service-time=<ms>",
            "on_grpc_receive token=6 size=3 buf:5 -> 0 one",
            "on_grpc_receive token=6 size=3 buf:5 -> 0 two",
            "on_grpc_receive_trailing_metadata token=6 n=2 pairs:5 -> 0 x-t=w,grpc-status=0",
            "on_grpc_close token=6 status=0 status -> 0 0 via_upstream",
        ]
    );
    assert_eq!(
        outcome.grpc[0].request.messages,
        [Bytes::from_static(b"one"), Bytes::from_static(b"two")]
    );
}

#[test]
fn an_empty_service_argument_would_crash_envoy() {
    let mut chain = chain(|_: &GrpcRequest| GrpcReply::ok("x"));
    let err = chain
        .send(request(&[("x-probe-request", "gcall:hex=:s:m:0:x")]), ok)
        .expect_err("Envoy panics on a GrpcService without a target");
    assert!(
        matches!(err, Error::WouldCrashEnvoy { reason, .. } if reason.contains("PANIC_DUE_TO_PROTO_UNSET")),
        "{err}"
    );
}

#[test]
fn calls_to_a_cluster_without_a_grpc_service_close_unavailable() {
    let probe = engine().load_file(filter_wasm("probe")).expect("loads");
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(probe).name("probe"))
        .cluster("http-only", ok)
        .build()
        .expect("starts");
    let outcome = chain
        .send(
            request(&[("x-probe-request", "gcall:http-only:s:m:0:x")]),
            ok,
        )
        .expect("completes");
    assert!(
        lines(&outcome.logs)
            .contains(&"on_grpc_close token=5 status=14 status -> 0 14 via_upstream"),
        "{:?}",
        outcome.logs
    );
}

#[test]
fn calls_from_a_root_callback_are_answered_after_it() {
    let mut chain = chain(|req: &GrpcRequest| GrpcReply::ok(req.message().to_vec()));
    let outcome = chain
        .send(
            request(&[(
                "x-probe-request",
                "qreg:jobs;qenq:1:run:gcall:grpc:pkg.Root:Call:0:from-root",
            )]),
            ok,
        )
        .expect("completes");
    let got = lines(&outcome.logs);
    let at = |line: &str| got.iter().position(|l| *l == line);
    let call = at("on_queue_ready gcall:grpc:pkg.Root:Call:0:from-root -> 0 token=5")
        .expect("the root callback made the call");
    let answer = at("on_grpc_receive token=5 size=9 buf:5 -> 0 from-root")
        .expect("the answer reached the root context");
    assert!(call < answer, "{got:?}");
    assert_eq!(outcome.grpc[0].request.service(), "pkg.Root");
}
