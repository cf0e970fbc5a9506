//! A body sent in pieces that arrive over virtual time (`BodyChunks` with a
//! `ChunkGap`), while a filter waits for a callout slower than the gap: the
//! order of events, checked with tiny hand-written WAT guests in a chain of
//! three (`a`, `b`, `c`). The request cases were measured in Envoy 1.40
//! (`tests/conformance/body-pieces-slow-callouts.yaml` runs them against
//! it); for the response, see `response_pieces_arrive_over_time_too`.

use std::time::Duration;

use bytes::Bytes;
use weir_harness::{BodyChunks, Chain, ChunkGap, Filter, LogLevel, Outcome};

mod common;
use common::engine;

/// A 0.2.1 module whose body callbacks log `q<size> <eos>` (request) and
/// `s<size> <eos>` (response), sizes in two digits, and return what
/// `body_return` computes (from `$eos`); `extra` adds imports and functions.
fn module(imports: &str, body_return: &str, extra: &str) -> Vec<u8> {
    common::guest(
        imports,
        &format!(
            r#"  (func $body (param $tag i32) (param $size i32) (param $eos i32)
    (i32.store8 (i32.const 110) (local.get $tag))
    (i32.store8 (i32.const 111) (i32.add (i32.const 48) (i32.div_u (local.get $size) (i32.const 10))))
    (i32.store8 (i32.const 112) (i32.add (i32.const 48) (i32.rem_u (local.get $size) (i32.const 10))))
    (i32.store8 (i32.const 113) (i32.const 32))
    (i32.store8 (i32.const 114) (i32.add (i32.const 48) (local.get $eos)))
    (call $say (i32.const 110) (i32.const 5)))
  (func (export "proxy_on_request_body") (param i32) (param $size i32) (param $eos i32) (result i32)
    (call $body (i32.const 113) (local.get $size) (local.get $eos))
    {body_return})
  (func (export "proxy_on_response_body") (param i32) (param $size i32) (param $eos i32) (result i32)
    (call $body (i32.const 115) (local.get $size) (local.get $eos))
    {body_return})
  {extra}"#
        ),
    )
}

/// Logs its body callbacks and lets everything go.
fn logger() -> Vec<u8> {
    module("", "(i32.const 0)", "")
}

/// Where [`caller`] waits for its callout.
#[derive(Clone, Copy)]
enum Waits {
    /// Its request headers callback pauses.
    RequestHeaders,
    /// Its response headers callback pauses.
    ResponseHeaders,
    /// Its request headers go on; its request body callback buffers
    /// (`StopIterationAndBuffer`) every piece but the end of the stream.
    RequestBody,
    /// Its request headers callback stops iteration with
    /// `allow_on_headers_stop_iteration` (it holds the headers and still gets
    /// the body); its request body callback continues, or buffers every
    /// piece (the end of the stream too) with `buffer`.
    HeldHeaders { buffer: bool },
}

/// Calls out to cluster `slow` from the headers callback of `waits`' direction,
/// logs its body callbacks, and on the answer logs `answer` and continues that
/// direction of its stream.
fn caller(waits: Waits) -> Vec<u8> {
    caller_of(waits, "slow")
}

/// [`caller`], calling cluster `cluster` (four letters).
fn caller_of(waits: Waits, cluster: &str) -> Vec<u8> {
    assert_eq!(cluster.len(), 4, "the guest sends four letters");
    let imports = r#"(import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))"#;
    let (headers, body_return, resume) = match waits {
        Waits::RequestHeaders => ("proxy_on_request_headers", "(i32.const 0)", 0),
        Waits::ResponseHeaders => ("proxy_on_response_headers", "(i32.const 0)", 1),
        Waits::RequestBody => (
            "proxy_on_request_headers",
            "(i32.sub (i32.const 1) (local.get $eos))",
            0,
        ),
        Waits::HeldHeaders { buffer: false } => ("proxy_on_request_headers", "(i32.const 0)", 0),
        Waits::HeldHeaders { buffer: true } => ("proxy_on_request_headers", "(i32.const 1)", 0),
    };
    let headers_return = match waits {
        Waits::RequestBody => 0,
        _ => 1,
    };
    let extra = format!(
        r#"
  (data (i32.const 210) "answer")
  (data (i32.const 220) "{cluster}")
  ;; :method GET, :path /, :authority a (the proxy-wasm map format)
  (data (i32.const 300) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\01\00\00\00:method\00GET\00:path\00/\00:authority\00a\00")
  (func (export "{headers}") (param $id i32) (param i32 i32) (result i32)
    ;; the stream of each callout, by token (a word at 1024 + 4 × token)
    (drop (call $call (i32.const 220) (i32.const 4) (i32.const 300) (i32.const 61)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 400)))
    (i32.store (i32.add (i32.const 1024) (i32.mul (i32.load (i32.const 400)) (i32.const 4)))
      (local.get $id))
    (i32.const {headers_return}))
  (func (export "proxy_on_http_call_response") (param i32) (param $token i32) (param i32 i32 i32)
    (call $say (i32.const 210) (i32.const 6))
    (drop (call $effective
      (i32.load (i32.add (i32.const 1024) (i32.mul (local.get $token) (i32.const 4))))))
    (drop (call $continue (i32.const {resume}))))
"#
    );
    module(imports, body_return, &extra)
}

/// `a`, then `b` (a [`caller`]), then `c`; cluster `slow` answers after
/// `delay`.
fn chain(waits: Waits, delay: Duration) -> Chain {
    let load = |wasm: &[u8]| engine().load(wasm).expect("loads");
    let held = matches!(waits, Waits::HeldHeaders { .. });
    Chain::builder(engine())
        .filter(Filter::new(load(&logger())).name("a"))
        .filter(
            Filter::new(load(&caller(waits)))
                .name("b")
                .allow_on_headers_stop_iteration(held),
        )
        .filter(Filter::new(load(&logger())).name("c"))
        .cluster("slow", move |_: http::Request<Bytes>| {
            http::Response::builder()
                .extension(weir_harness::UpstreamFault::Delay(delay))
                .body(Bytes::from_static(b"ok"))
                .expect("response")
        })
        .log_level(LogLevel::Info)
        .build()
        .expect("starts")
}

/// A 12-byte body in four pieces of 3 (at 0, 40, 80 and 120 ms with a 40 ms
/// gap; the end of the stream at 160 ms).
fn post(gap: Option<Duration>) -> http::Request<Bytes> {
    let mut b = http::Request::post("/")
        .header("host", "t.test")
        .header("transfer-encoding", "chunked")
        .extension(BodyChunks(vec![3, 3, 3]));
    if let Some(gap) = gap {
        b = b.extension(ChunkGap(gap));
    }
    b.body(Bytes::from_static(b"0123456789ab"))
        .expect("request")
}

fn echo(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::new(Bytes::new())
}

/// `plugin: message` for every log line.
fn lines(o: &Outcome) -> Vec<String> {
    o.logs
        .iter()
        .map(|l| format!("{}: {}", l.plugin, l.message))
        .collect()
}

const GAP: Duration = Duration::from_millis(40);

#[test]
fn pieces_reach_the_filters_before_a_paused_one_until_the_answer() {
    // The answer (100 ms) comes between the third piece (80 ms) and the
    // fourth (120 ms): the filter before the paused one gets the first three
    // one by one; the paused filter resumes with them in one frame; the
    // fourth piece and the end of the stream then go through the chain.
    let mut chain = chain(Waits::RequestHeaders, Duration::from_millis(100));
    let o = chain.send(post(Some(GAP)), echo).expect("send");
    assert_eq!(
        lines(&o),
        [
            "a: q03 0",
            "a: q03 0",
            "a: q03 0",
            "b: answer",
            "b: q09 0",
            "c: q09 0",
            "a: q03 0",
            "b: q03 0",
            "c: q03 0",
            "a: q00 1",
            "b: q00 1",
            "c: q00 1",
        ]
    );
    let upstream = o.upstream_request.expect("went upstream");
    assert_eq!(upstream.body().as_ref(), b"0123456789ab");
}

#[test]
fn an_answer_quicker_than_the_gap_comes_before_the_second_piece() {
    // 20 ms: only the first piece has arrived; the same order as pieces
    // without time between them (the rest after what is due at once).
    let expected = [
        "a: q03 0",
        "b: answer",
        "b: q03 0",
        "c: q03 0",
        "a: q03 0",
        "b: q03 0",
        "c: q03 0",
        "a: q03 0",
        "b: q03 0",
        "c: q03 0",
        "a: q03 0",
        "b: q03 0",
        "c: q03 0",
        "a: q00 1",
        "b: q00 1",
        "c: q00 1",
    ];
    let mut chain = chain(Waits::RequestHeaders, Duration::from_millis(20));
    let gapped = chain.send(post(Some(GAP)), echo).expect("send");
    assert_eq!(lines(&gapped), expected);
    let mut chain = self::chain(Waits::RequestHeaders, Duration::from_millis(20));
    let at_once = chain.send(post(None), echo).expect("send");
    assert_eq!(lines(&at_once), expected);
    // A zero gap is no gap.
    let mut chain = self::chain(Waits::RequestHeaders, Duration::from_millis(20));
    let zero = chain.send(post(Some(Duration::ZERO)), echo).expect("send");
    assert_eq!(lines(&zero), expected);
}

#[test]
fn the_end_of_the_stream_that_arrives_while_paused_comes_with_the_body() {
    // 250 ms: every piece and the end of the stream (160 ms) arrive first.
    let mut chain = chain(Waits::RequestHeaders, Duration::from_millis(250));
    let o = chain.send(post(Some(GAP)), echo).expect("send");
    assert_eq!(
        lines(&o),
        [
            "a: q03 0",
            "a: q03 0",
            "a: q03 0",
            "a: q03 0",
            "a: q00 1",
            "b: answer",
            "b: q12 1",
            "c: q12 1",
        ]
    );
}

#[test]
fn a_body_callback_that_buffers_sees_each_piece_join_its_buffer() {
    // `b` buffers every piece but the last while its callout (100 ms) is in
    // flight: each arrival reaches it with what it buffered (3, 6, 9 bytes);
    // the answer sends those on; the fourth piece is buffered again until
    // the end of the stream.
    let mut chain = chain(Waits::RequestBody, Duration::from_millis(100));
    let o = chain.send(post(Some(GAP)), echo).expect("send");
    assert_eq!(
        lines(&o),
        [
            "a: q03 0",
            "b: q03 0",
            "a: q03 0",
            "b: q06 0",
            "a: q03 0",
            "b: q09 0",
            "b: answer",
            "c: q09 0",
            "a: q03 0",
            "b: q03 0",
            "a: q00 1",
            "b: q03 1",
            "c: q03 1",
        ]
    );
}

#[test]
fn response_pieces_arrive_over_time_too() {
    // The upstream's pieces (2, 2, 2 bytes at 0, 40, 80 ms after its
    // headers, the end at 120 ms) reach `c`, the first filter of the
    // response path, while `b` waits for its answer (100 ms). Envoy 1.40
    // does the same, except that it often reads an upstream's first two
    // pieces as one when the response comes while a callout is in flight or
    // after a delay (from run to run: no conformance scenario pins it down).
    let mut chain = chain(Waits::ResponseHeaders, Duration::from_millis(100));
    let get = http::Request::get("/")
        .header("host", "t.test")
        .body(Bytes::new())
        .expect("request");
    let o = chain
        .send(get, |_: http::Request<Bytes>| {
            http::Response::builder()
                .header("transfer-encoding", "chunked")
                .extension(BodyChunks(vec![2, 2]))
                .extension(ChunkGap(GAP))
                .body(Bytes::from_static(b"abcdef"))
                .expect("response")
        })
        .expect("send");
    assert_eq!(
        lines(&o),
        [
            "c: s02 0",
            "c: s02 0",
            "c: s02 0",
            "b: answer",
            "b: s06 0",
            "a: s06 0",
            "c: s00 1",
            "b: s00 1",
            "a: s00 1",
        ]
    );
    assert_eq!(o.response.body().as_ref(), b"abcdef");
}

#[test]
fn concurrent_streams_each_get_their_pieces_on_time() {
    // Two streams, the second arriving 20 ms after the first: their pieces
    // arrive in turn (0, 20, 40, 60, ... ms) while `b` waits 100 ms for each
    // stream's answer; neither holds the other up.
    let mut chain = chain(Waits::RequestHeaders, Duration::from_millis(100));
    let mut second = post(Some(GAP));
    second
        .extensions_mut()
        .insert(weir_harness::Arrival(Duration::from_millis(20)));
    let outcomes = chain.send_all([post(Some(GAP)), second], echo);
    let logs: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| lines(o.as_ref().expect("send")))
        .collect();
    let expected = [
        "a: q03 0",
        "a: q03 0",
        "a: q03 0",
        "b: answer",
        "b: q09 0",
        "c: q09 0",
        "a: q03 0",
        "b: q03 0",
        "c: q03 0",
        "a: q00 1",
        "b: q00 1",
        "c: q00 1",
    ];
    assert_eq!(logs[0], expected);
    assert_eq!(logs[1], expected);
    for o in &outcomes {
        let upstream = o.as_ref().ok().and_then(|o| o.upstream_request.as_ref());
        assert_eq!(
            upstream.map(|u| u.body().as_ref()),
            Some(&b"0123456789ab"[..])
        );
    }
}

#[test]
fn a_client_that_leaves_between_pieces_ends_the_stream_there() {
    // The client closes its connection at 60 ms, after the second piece
    // (40 ms), while `b` still waits for its answer (100 ms): the stream
    // ends with what arrived.
    let mut chain = chain(Waits::RequestHeaders, Duration::from_millis(100));
    let mut request = post(Some(GAP));
    request
        .extensions_mut()
        .insert(weir_harness::Disconnect(Duration::from_millis(60)));
    let err = chain.send(request, echo).expect_err("the client left");
    let weir_harness::Error::Disconnected {
        logs,
        upstream_request,
        ..
    } = err
    else {
        panic!("not a disconnect: {err}");
    };
    assert!(upstream_request.is_none());
    let lines: Vec<String> = logs
        .iter()
        .map(|l| format!("{}: {}", l.plugin, l.message))
        .collect();
    assert_eq!(lines[..2], ["a: q03 0", "a: q03 0"]);
    assert!(
        !lines.iter().any(|l| l.starts_with("b: q")),
        "the paused filter got no body: {lines:?}"
    );
}

#[test]
fn a_gap_longer_than_envoys_idle_timeout_is_refused() {
    let mut chain = chain(Waits::RequestHeaders, Duration::from_millis(100));
    let err = chain
        .send(post(Some(Duration::from_secs(301))), echo)
        .expect_err("refused");
    assert!(
        matches!(err, weir_harness::Error::InvalidRequest(ref m) if m.contains("ChunkGap")),
        "{err}"
    );
    let get = http::Request::get("/")
        .header("host", "t.test")
        .body(Bytes::new())
        .expect("request");
    let err = chain
        .send(get, |_: http::Request<Bytes>| {
            http::Response::builder()
                .extension(BodyChunks(vec![1]))
                .extension(ChunkGap(Duration::MAX))
                .body(Bytes::from_static(b"ab"))
                .expect("response")
        })
        .expect_err("refused");
    assert!(
        matches!(err, weir_harness::Error::InvalidRequest(ref m) if m.contains("response")),
        "{err}"
    );
    // The chain goes on.
    let o = chain.send(post(Some(GAP)), echo).expect("send");
    assert_eq!(
        o.upstream_request.map(|u| u.into_body()),
        Some(Bytes::from_static(b"0123456789ab"))
    );
}

#[test]
fn an_earlier_filters_answer_sends_its_buffer_on_to_a_later_paused_filter() {
    // `a` buffers in its body callback until its callout (50 ms) answers;
    // `c` pauses its headers until its own (70 ms). `a`'s answer sends the
    // two pieces it buffered through `b`, to wait at `c`; `c` resumes with
    // them; later pieces are buffered by `a` again until the end.
    let load = |wasm: &[u8]| engine().load(wasm).expect("loads");
    let answer_after = |ms: u64| {
        move |_: http::Request<Bytes>| {
            http::Response::builder()
                .extension(weir_harness::UpstreamFault::Delay(Duration::from_millis(
                    ms,
                )))
                .body(Bytes::from_static(b"ok"))
                .expect("response")
        }
    };
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(load(&caller_of(Waits::RequestBody, "fast"))).name("a"))
        .filter(Filter::new(load(&logger())).name("b"))
        .filter(Filter::new(load(&caller_of(Waits::RequestHeaders, "slow"))).name("c"))
        .cluster("fast", answer_after(50))
        .cluster("slow", answer_after(70))
        .log_level(LogLevel::Info)
        .build()
        .expect("starts");
    let o = chain.send(post(Some(GAP)), echo).expect("send");
    assert_eq!(
        lines(&o),
        [
            "a: q03 0",
            "a: q06 0",
            "a: answer",
            "b: q06 0",
            "c: answer",
            "c: q06 0",
            "a: q03 0",
            "a: q06 0",
            "a: q06 1",
            "b: q06 1",
            "c: q06 1",
        ]
    );
    let upstream = o.upstream_request.expect("went upstream");
    assert_eq!(upstream.body().as_ref(), b"0123456789ab");
}

#[test]
fn a_filter_holding_its_headers_gets_the_pieces_before_its_answer() {
    // Measured in Envoy 1.40 (held-headers-callouts.yaml): `b` holds its
    // headers while its callout (100 ms) is in flight; each piece reaches it
    // and, as its body callback continues, the filters after it. The answer's
    // resume sends Envoy's emptied body buffer on: `c` gets an empty frame.
    let mut chain = chain(
        Waits::HeldHeaders { buffer: false },
        Duration::from_millis(100),
    );
    let o = chain.send(post(Some(GAP)), echo).expect("send");
    assert_eq!(
        lines(&o),
        [
            "a: q03 0",
            "b: q03 0",
            "c: q03 0",
            "a: q03 0",
            "b: q03 0",
            "c: q03 0",
            "a: q03 0",
            "b: q03 0",
            "c: q03 0",
            "b: answer",
            "c: q00 0",
            "a: q03 0",
            "b: q03 0",
            "c: q03 0",
            "a: q00 1",
            "b: q00 1",
            "c: q00 1",
        ]
    );
    let upstream = o.upstream_request.expect("went upstream");
    assert_eq!(upstream.body().as_ref(), b"0123456789ab");
}

#[test]
fn a_filter_holding_its_headers_buffers_the_whole_body_until_its_answer() {
    // The callout (300 ms) is answered after the end of the stream (160 ms):
    // `b` buffers every piece and the end of the stream while it holds the
    // headers; the answer lets the headers and the whole body go to `c`.
    let mut chain = chain(
        Waits::HeldHeaders { buffer: true },
        Duration::from_millis(300),
    );
    let o = chain.send(post(Some(GAP)), echo).expect("send");
    assert_eq!(
        lines(&o),
        [
            "a: q03 0",
            "b: q03 0",
            "a: q03 0",
            "b: q06 0",
            "a: q03 0",
            "b: q09 0",
            "a: q03 0",
            "b: q12 0",
            "a: q00 1",
            "b: q12 1",
            "b: answer",
            "c: q12 1",
        ]
    );
    let upstream = o.upstream_request.expect("went upstream");
    assert_eq!(upstream.body().as_ref(), b"0123456789ab");
}
