//! `HttpUpstream`: the same answers, given in-process by a closure and by a
//! real HTTP/1.1 server on loopback (`weir_tests::net::Upstream`, which puts
//! an `UpstreamFault` on the wire), make the same outcome; what the server
//! received is what the harness says went upstream.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_harness::{
    Chain, EnvoyConfig, Error, Filter, HttpUpstream, LogLevel, Outcome, Trailers, UpstreamFault,
};
use weir_tests::net::{Handler, Upstream as Server};
use weir_tests::{engine, envoy_yaml, filter_wasm, scenarios};

/// The route's timeout in these chains.
const ROUTE_TIMEOUT: Duration = Duration::from_millis(200);

/// header-append as `envoy/header-append.yaml` configures it, with trailers
/// on both codecs and a short route timeout.
fn chain() -> Chain {
    let config =
        EnvoyConfig::parse(&envoy_yaml("header-append.yaml")).expect("shipped config parses");
    let hcm = config
        .connection_manager
        .clone()
        .enable_trailers(true)
        .upstream_enable_trailers(true)
        .route_timeout(Some(ROUTE_TIMEOUT));
    config
        .chain_builder(engine(), |_| {
            engine().load_file(filter_wasm("header-append"))
        })
        .expect("module loads")
        .connection_manager(hcm)
        .log_level(LogLevel::Debug)
        .build()
        .expect("plugin starts")
}

/// What the client received, without the server's `date`.
fn client_saw(outcome: &Outcome) -> (u16, Vec<(String, String)>, Bytes, Option<Trailers>) {
    let response = &outcome.response;
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    (
        response.status().as_u16(),
        headers,
        response.body().clone(),
        outcome.response_trailers().cloned().map(Trailers),
    )
}

/// The outcome in-process, the outcome over TCP, what the server received.
type Both = (
    Result<Outcome, Error>,
    Result<Outcome, Error>,
    Vec<http::Request<Bytes>>,
);

/// Sends `request` once with `handler` in-process and once with `handler`
/// served on loopback; returns both outcomes (or errors) and what the server
/// received.
fn both(request: &http::Request<Bytes>, handler: &Handler) -> Both {
    let in_process = {
        let handler = Arc::clone(handler);
        chain().send(request.clone(), move |r| handler(r))
    };
    let server = Server::start(Arc::clone(handler)).expect("server starts");
    let upstream = HttpUpstream::new(server.addr())
        .expect("runtime")
        .timeout(ROUTE_TIMEOUT + Duration::from_millis(100));
    let over_tcp = chain().send(request.clone(), upstream);
    (in_process, over_tcp, server.take_seen())
}

fn request(method: &str, body: &'static [u8]) -> http::Request<Bytes> {
    http::Request::builder()
        .method(method)
        .uri("/items?id=7")
        .header("host", "weir.test")
        .header("x-internal-secret", "s")
        .body(Bytes::from_static(body))
        .expect("request")
}

fn answering(response: impl Fn() -> http::Response<Bytes> + Send + Sync + 'static) -> Handler {
    Arc::new(move |_| response())
}

#[test]
fn a_server_on_loopback_answers_as_the_same_closure_does() {
    let handler = scenarios::header_append_upstream();
    for request in [request("GET", b""), request("POST", b"a body")] {
        let (in_process, over_tcp, seen) = both(&request, &handler);
        let (in_process, over_tcp) = (in_process.expect("in-process"), over_tcp.expect("over TCP"));
        assert_eq!(client_saw(&over_tcp), client_saw(&in_process));
        assert_eq!(over_tcp.logs, in_process.logs);

        // The server got what the outcome says went upstream.
        let sent = over_tcp.upstream_request.as_ref().expect("went upstream");
        let [received] = seen.as_slice() else {
            panic!("one request expected, got {seen:?}");
        };
        assert_eq!(received.method(), sent.method());
        assert_eq!(received.uri(), sent.uri());
        assert_eq!(received.headers(), sent.headers());
        assert_eq!(received.body(), sent.body());
        assert!(received.headers().get("x-internal-secret").is_none());
        assert_eq!(received.headers()["x-env"], "demo");
    }
}

#[test]
fn trailers_cross_the_wire_both_ways() {
    let handler = answering(|| {
        http::Response::builder()
            .header("trailer", "x-checksum")
            .extension(Trailers::from_pairs([("x-checksum", "abc")]).expect("trailers"))
            .body(Bytes::from_static(b"streamed"))
            .expect("response")
    });
    let mut post = request("POST", b"data");
    let headers = post.headers_mut();
    headers.insert(
        "transfer-encoding",
        http::HeaderValue::from_static("chunked"),
    );
    headers.insert("te", http::HeaderValue::from_static("trailers"));
    headers.insert("trailer", http::HeaderValue::from_static("x-sent"));
    post.extensions_mut()
        .insert(Trailers::from_pairs([("x-sent", "1")]).expect("trailers"));

    let (in_process, over_tcp, seen) = both(&post, &handler);
    let (in_process, over_tcp) = (in_process.expect("in-process"), over_tcp.expect("over TCP"));
    assert_eq!(client_saw(&over_tcp), client_saw(&in_process));
    assert_eq!(
        over_tcp
            .response_trailers()
            .and_then(|t| t.get("x-checksum")),
        Some(&http::HeaderValue::from_static("abc"))
    );
    let [received] = seen.as_slice() else {
        panic!("one request expected, got {seen:?}");
    };
    assert_eq!(received.body().as_ref(), b"data");
    assert_eq!(
        received.extensions().get::<Trailers>(),
        over_tcp.upstream_trailers().cloned().map(Trailers).as_ref()
    );
    assert!(received.extensions().get::<Trailers>().is_some());
}

#[test]
fn network_failures_reach_the_chain_as_envoy_answers_them() {
    let fault = |fault: UpstreamFault| {
        answering(move || {
            http::Response::builder()
                .extension(fault)
                .body(Bytes::from_static(b"never whole"))
                .expect("response")
        })
    };
    // Closed before the headers: the router's 503.
    let (in_process, over_tcp, _) = both(
        &request("GET", b""),
        &fault(UpstreamFault::CloseBeforeHeaders),
    );
    let (in_process, over_tcp) = (in_process.expect("in-process"), over_tcp.expect("over TCP"));
    assert_eq!(over_tcp.response.status(), 503);
    assert_eq!(client_saw(&over_tcp), client_saw(&in_process));
    assert_eq!(over_tcp.logs, in_process.logs);

    // Slower than the route's timeout: the router's 504.
    let (in_process, over_tcp, _) = both(
        &request("GET", b""),
        &fault(UpstreamFault::Delay(Duration::from_secs(1))),
    );
    let (in_process, over_tcp) = (in_process.expect("in-process"), over_tcp.expect("over TCP"));
    assert_eq!(over_tcp.response.status(), 504);
    assert_eq!(client_saw(&over_tcp), client_saw(&in_process));

    // Closed in the middle of the body: the stream is reset.
    let (in_process, over_tcp, _) = both(
        &request("GET", b""),
        &fault(UpstreamFault::CloseAfterHeaders),
    );
    let reset = |r: Result<Outcome, Error>| match r {
        Err(Error::Reset { phase, .. }) => phase,
        other => panic!("expected a reset, got {other:?}"),
    };
    assert_eq!(reset(over_tcp), reset(in_process));
}

#[test]
fn a_refused_connection_is_envoys_connection_failure() {
    // A port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("ephemeral port");
    let over_tcp = chain()
        .send(
            request("GET", b""),
            HttpUpstream::new(port).expect("runtime"),
        )
        .expect("answered");
    let in_process = chain()
        .send(request("GET", b""), |_: http::Request<Bytes>| {
            http::Response::builder()
                .extension(UpstreamFault::ConnectionRefused)
                .body(Bytes::new())
                .expect("response")
        })
        .expect("answered");
    assert_eq!(over_tcp.response.status(), 503);
    assert_eq!(client_saw(&over_tcp), client_saw(&in_process));
    assert_eq!(over_tcp.logs, in_process.logs);
}

#[test]
fn a_callout_cluster_can_be_a_server_on_loopback() {
    let server = Server::start(answering(|| {
        http::Response::builder()
            .header("x-verdict", "allow")
            .body(Bytes::from_static(b"ok"))
            .expect("response")
    }))
    .expect("server starts");
    let plugin = engine()
        .load_file(filter_wasm("probe"))
        .expect("probe loads");
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(plugin).name("probe"))
        .cluster(
            "callout",
            HttpUpstream::new(server.addr()).expect("runtime"),
        )
        .log_level(LogLevel::Info)
        .build()
        .expect("starts");
    let request = http::Request::get("/")
        .header("host", "weir.test")
        .header("x-probe-request", "call:callout:GET:/check:a.test;return:1")
        .header("x-probe-callout", "get:6:x-verdict;buf:4:0:10;continue:0")
        .body(Bytes::new())
        .expect("request");
    let outcome = chain.send(request, |_: http::Request<Bytes>| {
        http::Response::new(Bytes::from_static(b"up"))
    });
    let outcome = outcome.expect("resumed by the answer");
    assert_eq!(outcome.response.status(), 200);
    let infos: Vec<&str> = outcome.logs_at(LogLevel::Info).collect();
    assert!(
        infos.contains(&"on_http_call_response get:6:x-verdict -> 0 allow"),
        "{infos:?}"
    );
    assert!(
        infos.contains(&"on_http_call_response buf:4:0:10 -> 0 ok"),
        "{infos:?}"
    );
    let [check] = server.take_seen().try_into().expect("one callout");
    assert_eq!(check.uri(), "/check");
    assert_eq!(check.headers()["host"], "a.test");
}
