//! header-append in the harness, configured from envoy/header-append.yaml; and
//! the harness's trailers API (requests and upstream responses with
//! `Trailers`, what the upstream and the client received, the codecs'
//! `enable_trailers`) with the probe test filter.

use bytes::Bytes;
use weir_harness::{
    BodyChunks, Chain, ConnectionManager, EnvoyConfig, Error, Filter, LogLevel, Outcome, Trailers,
};
use weir_tests::{engine, envoy_yaml, filter_wasm, scenarios};

fn chain() -> Chain {
    let config =
        EnvoyConfig::parse(&envoy_yaml("header-append.yaml")).expect("shipped config parses");
    config
        .chain_builder(engine(), |_| {
            engine().load_file(filter_wasm("header-append"))
        })
        .expect("module loads")
        .log_level(LogLevel::Debug)
        .build()
        .expect("plugin starts")
}

fn header_values<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect()
}

#[test]
fn changes_request_and_response_headers() {
    let mut chain = chain();
    let req = http::Request::get("/admin")
        .header("host", "weir.test")
        .header("x-internal-secret", "let-me-in")
        .body(Bytes::new())
        .expect("request");
    let outcome = chain
        .send(req, scenarios::header_append_upstream().as_ref())
        .expect("request succeeds");

    let upstream = outcome
        .upstream_request
        .as_ref()
        .expect("reached the upstream");
    assert!(upstream.headers().get("x-internal-secret").is_none());
    assert_eq!(header_values(upstream.headers(), "x-env"), ["demo"]);
    assert_eq!(
        header_values(upstream.headers(), "x-via-weir"),
        ["header-append"]
    );
    assert_eq!(upstream.headers()["host"], "weir.test");
    assert_eq!(upstream.headers()["x-forwarded-proto"], "http");

    let res = &outcome.response;
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-powered-by").is_none());
    assert_eq!(header_values(res.headers(), "cache-control"), ["no-store"]);
    assert_eq!(res.headers()["x-filtered-by"], "weir");
    assert_eq!(res.headers()["server"], "envoy");
    assert!(outcome.local_reply.is_none());

    let debug: Vec<_> = outcome.logs_at(LogLevel::Debug).collect();
    assert_eq!(
        debug,
        [
            "request: removed 1, set 1, added 1 header(s)",
            "response: removed 1, set 1, added 1 header(s)"
        ]
    );
    assert!(outcome.fuel > 0);
}

#[test]
fn set_replaces_all_values_and_add_appends() {
    let mut chain = chain();
    let req = http::Request::get("/")
        .header("host", "weir.test")
        .header("x-env", "prod")
        .header("x-env", "staging")
        .header("x-via-weir", "client")
        .body(Bytes::new())
        .expect("request");
    let outcome = chain
        .send(req, scenarios::header_append_upstream().as_ref())
        .expect("request succeeds");
    let headers = outcome
        .upstream_request
        .expect("upstream")
        .into_parts()
        .0
        .headers;
    assert_eq!(header_values(&headers, "x-env"), ["demo"]);
    assert_eq!(
        header_values(&headers, "x-via-weir"),
        ["client", "header-append"]
    );
}

#[test]
fn non_utf8_header_values_pass_through() {
    let mut chain = chain();
    let req = http::Request::get("/")
        .header("host", "weir.test")
        .header(
            "x-binary",
            http::HeaderValue::from_bytes(b"caf\xe9 \xff").expect("obs-text"),
        )
        .body(Bytes::new())
        .expect("request");
    let outcome = chain
        .send(req, scenarios::header_append_upstream().as_ref())
        .expect("request succeeds");
    let upstream = outcome.upstream_request.expect("upstream");
    assert_eq!(upstream.headers()["x-binary"].as_bytes(), b"caf\xe9 \xff");
}

#[test]
fn invalid_config_is_rejected_at_configure_naming_the_field() {
    let plugin = engine()
        .load_file(filter_wasm("header-append"))
        .expect("loads");
    let bad =
        r#"{"response": {"add": [{"name": "x-ok", "value": "1"}, {"name": "x-bad", "value": 5}]}}"#;
    let err = Chain::builder(engine())
        .filter(Filter::new(plugin).name("ha").configuration(bad))
        .build()
        .expect_err("must be rejected");
    let Error::ConfigureFailed { plugin, logs } = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(plugin, "ha");
    assert!(
        logs.iter()
            .any(|l| l.contains("response.add[1].value") && l.contains("expected a string")),
        "{logs:?}"
    );
}

#[test]
fn unknown_fields_are_rejected() {
    let plugin = engine()
        .load_file(filter_wasm("header-append"))
        .expect("loads");
    let err = Chain::builder(engine())
        .filter(Filter::new(plugin).configuration(r#"{"requests": {}}"#))
        .build()
        .expect_err("typo must be rejected");
    assert!(
        err.to_string().contains("unknown field `requests`"),
        "{err}"
    );
}

#[test]
fn the_module_declares_abi_0_2_1() {
    let plugin = engine()
        .load_file(filter_wasm("header-append"))
        .expect("loads");
    assert_eq!(plugin.abi(), weir_harness::AbiVersion::V0_2_1);
}

#[test]
fn every_scenario_runs_without_error() {
    let mut chain = chain();
    let upstream = scenarios::header_append_upstream();
    for s in scenarios::header_append() {
        let outcome = chain
            .send(s.request, upstream.as_ref())
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        assert!(
            outcome.logs.iter().all(|l| l.level < LogLevel::Warn),
            "{}: {:?}",
            s.name,
            outcome.logs
        );
    }
}

/// vm_id sharing, driven by the `probe` test filter (`count` bumps a
/// module-global counter, `ids` reports the context and root ids).
/// tests/conformance/vm-sharing.yaml compares the same with Envoy 1.40.
mod vm_sharing {
    use bytes::Bytes;
    use weir_harness::{Chain, FailurePolicy, Filter, LogLevel, LogRecord};
    use weir_tests::{engine, filter_wasm};

    fn probe(name: &str, vm_id: &str) -> Filter {
        let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
        Filter::new(plugin).name(name).vm_id(vm_id)
    }

    fn chain(filters: Vec<Filter>) -> Chain {
        filters
            .into_iter()
            .fold(Chain::builder(engine()), |b, f| b.filter(f))
            .log_level(LogLevel::Info)
            .build()
            .expect("starts")
    }

    fn request(scripts: &[(&str, &str)]) -> http::Request<Bytes> {
        let mut b = http::Request::get("/").header("host", "vm.test");
        for (k, v) in scripts {
            b = b.header(*k, *v);
        }
        b.body(Bytes::new()).expect("request")
    }

    fn ok(_: http::Request<Bytes>) -> http::Response<Bytes> {
        http::Response::new(Bytes::from_static(b"up"))
    }

    /// `plugin: message` for every log line.
    fn lines(logs: &[LogRecord]) -> Vec<String> {
        logs.iter()
            .map(|l| format!("{}: {}", l.plugin, l.message))
            .collect()
    }

    fn send(chain: &mut Chain, scripts: &[(&str, &str)]) -> Vec<String> {
        lines(&chain.send(request(scripts), ok).expect("completes").logs)
    }

    #[test]
    fn plugins_with_one_vm_id_share_module_globals() {
        let mut chain = chain(vec![
            probe("a", "shared"),
            probe("b", "shared"),
            probe("c", "other"),
        ]);
        let logs = send(
            &mut chain,
            &[
                ("x-a-request", "count"),
                ("x-b-request", "count"),
                ("x-c-request", "count"),
                ("x-a-response", "count"),
            ],
        );
        for line in [
            "a: [a] on_request_headers count -> 0 1",
            "b: [b] on_request_headers count -> 0 2",
            "c: [c] on_request_headers count -> 0 1",
            "a: [a] on_response_headers count -> 0 3",
        ] {
            assert!(logs.iter().any(|l| l == line), "{line} not in {logs:#?}");
        }
    }

    #[test]
    fn a_different_vm_configuration_or_vm_id_gets_its_own_vm() {
        let mut chain = chain(vec![
            probe("a", "shared"),
            probe("b", "shared").vm_configuration("other bytes"),
            probe("c", "shared2"),
            probe("d", "shared"),
        ]);
        let logs = send(
            &mut chain,
            &[
                ("x-a-request", "count"),
                ("x-b-request", "count"),
                ("x-c-request", "count"),
                ("x-d-request", "count"),
            ],
        );
        for line in [
            "a: [a] on_request_headers count -> 0 1",
            "b: [b] on_request_headers count -> 0 1",
            "c: [c] on_request_headers count -> 0 1",
            "d: [d] on_request_headers count -> 0 2",
        ] {
            assert!(logs.iter().any(|l| l == line), "{line} not in {logs:#?}");
        }
    }

    #[test]
    fn context_ids_come_from_one_counter_per_vm() {
        let mut chain = chain(vec![
            probe("a", "shared"),
            probe("b", "shared"),
            probe("c", "other"),
        ]);
        let scripts = [
            ("x-a-request", "ids"),
            ("x-b-request", "ids"),
            ("x-c-request", "ids"),
            ("x-b-log", "ids"),
        ];
        let first = send(&mut chain, &scripts);
        for line in [
            "a: [a] on_request_headers ids -> 0 context=3 root=1",
            "b: [b] on_request_headers ids -> 0 context=4 root=2",
            "c: [c] on_request_headers ids -> 0 context=2 root=1",
            "b: [b] on_log ids -> 0 context=4 root=2",
        ] {
            assert!(first.iter().any(|l| l == line), "{line} not in {first:#?}");
        }
        let second = send(&mut chain, &scripts);
        for line in [
            "a: [a] on_request_headers ids -> 0 context=5 root=1",
            "b: [b] on_request_headers ids -> 0 context=6 root=2",
            "c: [c] on_request_headers ids -> 0 context=3 root=1",
        ] {
            assert!(
                second.iter().any(|l| l == line),
                "{line} not in {second:#?}"
            );
        }
    }

    #[test]
    fn plugin_properties_and_log_prefixes_are_each_plugins_own() {
        let mut chain = chain(vec![
            probe("a", "shared").root_id("ra"),
            probe("b", "shared").root_id("rb"),
        ]);
        let script = "prop:plugin_name;prop:plugin_root_id;prop:plugin_vm_id";
        let logs = send(
            &mut chain,
            &[("x-a-request", script), ("x-b-request", script)],
        );
        for line in [
            "a: [a] on_request_headers prop:plugin_name -> 0 a",
            "a: [a] on_request_headers prop:plugin_root_id -> 0 ra",
            "a: [a] on_request_headers prop:plugin_vm_id -> 0 shared",
            "b: [b] on_request_headers prop:plugin_name -> 0 b",
            "b: [b] on_request_headers prop:plugin_root_id -> 0 rb",
            "b: [b] on_request_headers prop:plugin_vm_id -> 0 shared",
        ] {
            assert!(logs.iter().any(|l| l == line), "{line} not in {logs:#?}");
        }
    }

    #[test]
    fn callouts_and_queues_reach_the_root_of_the_plugin_that_made_them() {
        let mut chain = chain(vec![probe("a", "shared"), probe("b", "shared")]);
        let logs = send(
            &mut chain,
            &[
                ("x-a-request", "qreg:jobs"),
                ("x-b-request", "qres:shared:jobs;qenq:1:run:ids"),
            ],
        );
        assert!(
            logs.iter()
                .any(|l| l == "a: [a] on_queue_ready ids -> 0 context=1 root=1"),
            "{logs:#?}"
        );
    }

    #[test]
    fn a_trap_fails_every_plugin_of_the_vm() {
        let mut chain = chain(vec![
            probe("a", "shared").failure_policy(FailurePolicy::FailOpen),
            probe("b", "shared").failure_policy(FailurePolicy::FailOpen),
            probe("c", "other").failure_policy(FailurePolicy::FailOpen),
        ]);
        let trapped = chain
            .send(request(&[("x-b-request", "trap")]), ok)
            .expect("completes");
        assert_eq!(trapped.traps.len(), 1, "{:?}", trapped.traps);
        // a never trapped, but its VM failed: it is bypassed (FAIL_OPEN) like
        // b, while c, in a VM of its own, still runs.
        let after = chain
            .send(
                request(&[("x-a-request", "count"), ("x-c-request", "count")]),
                ok,
            )
            .expect("completes");
        assert_eq!(after.response.status(), 200);
        let logs = lines(&after.logs);
        assert!(after.logs.iter().all(|l| l.plugin == "c"), "{logs:#?}");
        assert!(
            logs.iter()
                .any(|l| l == "c: [c] on_request_headers count -> 0 1"),
            "{logs:#?}"
        );
    }
}

/// The probe (scripts in `x-probe-*` headers) behind a connection manager
/// `hcm`, with a `callout` cluster that answers `ok`.
fn probe(hcm: ConnectionManager) -> Chain {
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    Chain::builder(engine())
        .filter(Filter::new(plugin).name("probe"))
        .connection_manager(hcm.generate_request_id(false))
        .cluster("callout", |_| {
            http::Response::new(Bytes::from_static(b"ok"))
        })
        .build()
        .expect("plugin starts")
}

fn both_ways() -> ConnectionManager {
    ConnectionManager::default()
        .enable_trailers(true)
        .upstream_enable_trailers(true)
}

fn trailers(pairs: &[(&str, &str)]) -> Trailers {
    Trailers::from_pairs(pairs.iter().copied()).expect("valid trailers")
}

/// A chunked POST with `body`, `trailers` and probe scripts.
fn post(
    body: &'static str,
    with: Option<Trailers>,
    scripts: &[(&str, &str)],
) -> http::Request<Bytes> {
    let mut b = http::Request::post("/upload")
        .header("host", "trailers.test")
        .header("transfer-encoding", "chunked");
    for (name, script) in scripts {
        b = b.header(*name, *script);
    }
    if let Some(t) = with {
        b = b.extension(t);
    }
    b.body(Bytes::from_static(body.as_bytes()))
        .expect("request")
}

/// An upstream that answers `body` with `trailers` (chunked).
fn answer(
    body: &'static str,
    with: Trailers,
) -> impl FnMut(http::Request<Bytes>) -> http::Response<Bytes> {
    move |_| {
        http::Response::builder()
            .extension(with.clone())
            .body(Bytes::from_static(body.as_bytes()))
            .expect("response")
    }
}

fn ok(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::new(Bytes::from_static(b"ok"))
}

fn infos(outcome: &Outcome) -> Vec<&str> {
    outcome.logs_at(LogLevel::Info).collect()
}

fn values<'a>(map: Option<&'a http::HeaderMap>, name: &str) -> Vec<&'a str> {
    map.map(|m| {
        m.get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    })
    .unwrap_or_default()
}

#[test]
fn trailers_reach_the_filter_the_upstream_and_the_client() {
    let mut chain = probe(both_ways());
    let req = post(
        "hello",
        Some(trailers(&[("x-t", "1"), ("x-u", "2")])),
        &[
            (
                "x-probe-request-trailers",
                "get:1:x-t;set:1:x-t=changed;del:1:x-u",
            ),
            ("x-probe-response-trailers", "add:3:x-added=yes"),
        ],
    );
    let o = chain
        .send(req, answer("world", trailers(&[("grpc-status", "0")])))
        .expect("request runs");
    assert_eq!(
        infos(&o),
        [
            "on_request_body 5 0",
            "on_request_trailers 2",
            "on_request_trailers get:1:x-t -> 0 1",
            "on_request_trailers set:1:x-t=changed -> 0",
            "on_request_trailers del:1:x-u -> 0",
            "on_response_body 5 0",
            "on_response_trailers 1",
            "on_response_trailers add:3:x-added=yes -> 0",
            "on_delete ",
        ]
    );
    let upstream = o.upstream_trailers().expect("the upstream got trailers");
    assert_eq!(values(Some(upstream), "x-t"), ["changed"]);
    assert!(upstream.get("x-u").is_none());
    let up = o.upstream_request.as_ref().expect("reached the upstream");
    assert_eq!(up.headers()["transfer-encoding"], "chunked");
    assert_eq!(up.body(), "hello");
    assert_eq!(values(o.response_trailers(), "grpc-status"), ["0"]);
    assert_eq!(values(o.response_trailers(), "x-added"), ["yes"]);
    assert_eq!(o.response.headers()["transfer-encoding"], "chunked");
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
}

#[test]
fn envoys_default_codecs_drop_trailers_and_say_so() {
    let mut chain = probe(ConnectionManager::default());
    let req = post(
        "hello",
        Some(trailers(&[("x-t", "1")])),
        &[("x-probe-request-trailers", "pairs:1")],
    );
    let o = chain
        .send(req, answer("world", trailers(&[("x-rt", "1")])))
        .expect("request runs");
    // The body ends the stream; no trailers callback.
    assert_eq!(
        infos(&o),
        [
            "on_request_body 5 0",
            "on_request_body 0 1",
            "on_response_body 5 0",
            "on_response_body 0 1",
            "on_delete ",
        ]
    );
    assert!(o.upstream_trailers().is_none());
    assert!(o.response_trailers().is_none());
    assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
    assert!(
        o.warnings[0].contains("enable_trailers"),
        "{:?}",
        o.warnings
    );
    assert!(
        o.warnings[1].contains("upstream_enable_trailers"),
        "{:?}",
        o.warnings
    );
}

#[test]
fn each_side_carries_trailers_only_if_its_codec_does() {
    // The client side only: filters see the client's trailers, the upstream
    // does not get them, and the upstream's never arrive.
    let mut chain = probe(ConnectionManager::default().enable_trailers(true));
    let req = post("hi", Some(trailers(&[("x-t", "1")])), &[]);
    let o = chain
        .send(req, answer("back", trailers(&[("x-rt", "1")])))
        .expect("request runs");
    assert!(
        infos(&o).contains(&"on_request_trailers 1"),
        "{:?}",
        infos(&o)
    );
    assert!(o.upstream_trailers().is_none());
    assert!(o.response_trailers().is_none());
    assert_eq!(o.warnings.len(), 1, "{:?}", o.warnings);

    // The upstream side only: the client's trailers are dropped; the
    // upstream's reach the filters but not the client.
    let mut chain = probe(ConnectionManager::default().upstream_enable_trailers(true));
    let req = post("hi", Some(trailers(&[("x-t", "1")])), &[]);
    let o = chain
        .send(req, answer("back", trailers(&[("x-rt", "1")])))
        .expect("request runs");
    assert!(
        infos(&o).contains(&"on_response_trailers 1"),
        "{:?}",
        infos(&o)
    );
    assert!(
        !infos(&o).contains(&"on_request_trailers 1"),
        "{:?}",
        infos(&o)
    );
    assert!(o.upstream_trailers().is_none());
    assert!(o.response_trailers().is_none());
}

#[test]
fn envoy_config_turns_trailers_on_per_codec() {
    let yaml = envoy_yaml("conformance.yaml")
        .replace(
            "generate_request_id: false",
            "generate_request_id: false\n          http_protocol_options: { enable_trailers: true }",
        )
        .replace(
            "  - name: upstream\n    type: STRICT_DNS",
            "  - name: upstream\n    type: STRICT_DNS\n    typed_extension_protocol_options:\n      \
             envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \
             \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        \
             explicit_http_config:\n          http_protocol_options: { enable_trailers: true }",
        );
    assert!(yaml.contains("explicit_http_config:\n          http_protocol_options"));
    let config = EnvoyConfig::parse(&yaml).expect("parses");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let mut chain = config
        .chain_builder(engine(), |_| engine().load_file(filter_wasm("probe")))
        .expect("module loads")
        .build()
        .expect("plugin starts");
    let req = post("hi", Some(trailers(&[("x-t", "1")])), &[]);
    let o = chain
        .send(req, answer("back", trailers(&[("x-rt", "1")])))
        .expect("request runs");
    assert_eq!(values(o.upstream_trailers(), "x-t"), ["1"]);
    assert_eq!(values(o.response_trailers(), "x-rt"), ["1"]);
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);

    // As shipped (no enable_trailers), both are dropped.
    let config = EnvoyConfig::parse(&envoy_yaml("conformance.yaml")).expect("parses");
    let mut chain = config
        .chain_builder(engine(), |_| engine().load_file(filter_wasm("probe")))
        .expect("module loads")
        .build()
        .expect("plugin starts");
    let req = post("hi", Some(trailers(&[("x-t", "1")])), &[]);
    let o = chain
        .send(req, answer("back", trailers(&[("x-rt", "1")])))
        .expect("request runs");
    assert!(o.upstream_trailers().is_none() && o.response_trailers().is_none());
}

#[test]
fn a_request_cannot_have_both_trailers_and_content_length() {
    let mut chain = probe(both_ways());
    let req = http::Request::post("/")
        .header("host", "trailers.test")
        .header("content-length", "5")
        .extension(trailers(&[("x-t", "1")]))
        .body(Bytes::from_static(b"hello"))
        .expect("request");
    let err = chain.send(req, ok).expect_err("refused");
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");
    assert!(err.to_string().contains("content-length"), "{err}");
}

#[test]
fn an_upstream_response_framed_by_content_length_loses_its_trailers() {
    let mut chain = probe(both_ways());
    let o = chain
        .send(post("hi", None, &[]), |_| {
            http::Response::builder()
                .header("content-length", "4")
                .extension(trailers(&[("x-rt", "1")]))
                .body(Bytes::from_static(b"back"))
                .expect("response")
        })
        .expect("request runs");
    assert!(o.response_trailers().is_none());
    assert!(
        !infos(&o)
            .iter()
            .any(|l| l.starts_with("on_response_trailers"))
    );
    assert!(o.warnings[0].contains("content-length"), "{:?}", o.warnings);
}

#[test]
fn trailers_added_at_the_end_of_a_body_are_sent_on() {
    let mut chain = probe(both_ways());
    let req = post(
        "hello",
        None,
        &[
            ("x-probe-request-body", "add:1:x-added=req"),
            ("x-probe-response-body", "add:3:x-added=res"),
        ],
    );
    let o = chain
        .send(req, |_| {
            http::Response::builder()
                .header("transfer-encoding", "chunked")
                .body(Bytes::from_static(b"back"))
                .expect("response")
        })
        .expect("request runs");
    assert_eq!(values(o.upstream_trailers(), "x-added"), ["req"]);
    assert_eq!(values(o.response_trailers(), "x-added"), ["res"]);
    // Only in the callback that ends the stream.
    assert_eq!(
        infos(&o),
        [
            "on_request_body 5 0",
            "on_request_body add:1:x-added=req -> 2",
            "on_request_body 0 1",
            "on_request_body add:1:x-added=req -> 0",
            "on_response_body 4 0",
            "on_response_body add:3:x-added=res -> 2",
            "on_response_body 0 1",
            "on_response_body add:3:x-added=res -> 0",
            "on_delete ",
        ]
    );
}

#[test]
fn a_buffered_body_waits_for_the_trailers_and_can_change_there() {
    let mut chain = probe(both_ways());
    let req = http::Request::post("/")
        .header("host", "trailers.test")
        .header("transfer-encoding", "chunked")
        .header("x-probe-request-body", "hold")
        .header(
            "x-probe-request-trailers",
            "buf:0:0:100;setbuf:0:0:100:HELLO WORLD",
        )
        .extension(BodyChunks(vec![5]))
        .extension(trailers(&[("x-t", "1")]))
        .body(Bytes::from_static(b"hello world"))
        .expect("request");
    let o = chain.send(req, ok).expect("request runs");
    assert_eq!(
        infos(&o),
        [
            "on_request_body 5 0",
            "on_request_body 11 0",
            "on_request_trailers 1",
            "on_request_trailers buf:0:0:100 -> 0 hello world",
            "on_request_trailers setbuf:0:0:100:HELLO WORLD -> 0",
            "on_response_body 2 0",
            "on_response_body 0 1",
            "on_delete ",
        ]
    );
    let up = o.upstream_request.as_ref().expect("reached the upstream");
    assert_eq!(up.body(), "HELLO WORLD");
    assert_eq!(values(o.upstream_trailers(), "x-t"), ["1"]);
}

#[test]
fn a_pause_on_trailers_waits_for_a_callout() {
    let mut chain = probe(both_ways());
    let req = post(
        "hello",
        Some(trailers(&[("x-t", "1")])),
        &[
            (
                "x-probe-request-trailers",
                "call:callout:GET:/check:trailers.test;return:1",
            ),
            ("x-probe-callout", "set:1:x-checked=yes;continue:0"),
        ],
    );
    let o = chain.send(req, ok).expect("request runs");
    assert_eq!(o.callouts.len(), 1);
    assert_eq!(values(o.upstream_trailers(), "x-checked"), ["yes"]);

    // Nobody resumes: the stream stalls on the trailers.
    let req = post(
        "hello",
        Some(trailers(&[("x-t", "1")])),
        &[("x-probe-request-trailers", "return:1")],
    );
    let err = chain.send(req, ok).expect_err("stalls");
    assert!(
        matches!(
            err,
            Error::Stalled {
                phase: "on_request_trailers",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn replies_from_trailers_answer_the_request_or_reset_the_response() {
    let mut chain = probe(both_ways());
    let req = post(
        "hello",
        Some(trailers(&[("x-t", "1")])),
        &[("x-probe-request-trailers", "reply:403:no:denied")],
    );
    let o = chain.send(req, ok).expect("request runs");
    assert_eq!(o.response.status(), 403);
    assert!(o.upstream_request.is_none());
    assert_eq!(o.local_reply.as_ref().map(|r| r.status), Some(403));

    // The response headers have gone to the client: Envoy resets the stream.
    let req = post(
        "hello",
        None,
        &[("x-probe-response-trailers", "reply:500:late:oops")],
    );
    let err = chain
        .send(req, answer("back", trailers(&[("x-rt", "1")])))
        .expect_err("reset");
    assert!(
        matches!(
            err,
            Error::Reset {
                phase: "on_response_trailers",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_reset_stream_reports_the_callouts_it_made() {
    let mut chain = probe(ConnectionManager::default());
    let req = post(
        "hello",
        None,
        &[
            (
                "x-probe-request",
                "call:callout:GET:/audit:audit.test;return:1",
            ),
            ("x-probe-callout", "close:0"),
        ],
    );
    let err = chain
        .send(req, ok)
        .expect_err("the callout's handler closes the stream");
    let Error::Reset {
        phase, callouts, ..
    } = err
    else {
        panic!("not a reset: {err}");
    };
    assert_eq!(phase, "on_http_call_response");
    assert_eq!(callouts.len(), 1, "{callouts:?}");
    assert_eq!(callouts[0].request.uri(), "/audit");
    assert_eq!(callouts[0].response.body(), "ok");
}

#[test]
fn on_log_reads_the_response_trailers_and_the_trailers_property() {
    let mut chain = probe(both_ways());
    let req = post(
        "hello",
        Some(trailers(&[("x-t", "1")])),
        &[(
            "x-probe-log",
            "get:3:x-rt;get:1:x-t;prop:response.trailers.x-rt",
        )],
    );
    let o = chain
        .send(
            req,
            answer("back", trailers(&[("x-rt", "a"), ("x-rt", "b")])),
        )
        .expect("request runs");
    let logs = infos(&o);
    assert!(logs.contains(&"on_log get:3:x-rt -> 0 a"), "{logs:?}");
    assert!(logs.contains(&"on_log get:1:x-t -> 1"), "{logs:?}");
    assert!(
        logs.contains(&"on_log prop:response.trailers.x-rt -> 0 a,b"),
        "{logs:?}"
    );
}

/// Local replies to gRPC requests through the public API: Envoy 1.40 sends
/// them as gRPC trailers-only responses (tests/conformance/grpc-local-reply.yaml
/// compares the same with Envoy).
mod grpc_local_replies {
    use bytes::Bytes;
    use weir_harness::{Chain, Filter, LogLevel, Outcome, UpstreamFault};
    use weir_tests::{engine, filter_wasm};

    fn chain() -> Chain {
        let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
        Chain::builder(engine())
            .filter(Filter::new(plugin).name("probe"))
            .log_level(LogLevel::Info)
            .build()
            .expect("starts")
    }

    fn request(content_type: Option<&str>, scripts: &[(&str, &str)]) -> http::Request<Bytes> {
        let mut b = http::Request::post("/pkg.Greeter/Hello").header("host", "grpc.test");
        if let Some(content_type) = content_type {
            b = b.header("content-type", content_type);
        }
        for (k, v) in scripts {
            b = b.header(*k, *v);
        }
        b.body(Bytes::from_static(b"\0\0\0\0\x02hi"))
            .expect("request")
    }

    fn ok(_: http::Request<Bytes>) -> http::Response<Bytes> {
        http::Response::new(Bytes::from_static(b"up"))
    }

    fn header<'a>(outcome: &'a Outcome, name: &str) -> Option<&'a str> {
        outcome
            .response
            .headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii"))
    }

    fn infos(outcome: &Outcome) -> Vec<&str> {
        outcome.logs_at(LogLevel::Info).collect()
    }

    #[test]
    fn a_filters_reply_to_a_grpc_request_is_trailers_only() {
        let outcome = chain()
            .send(
                request(
                    Some("application/grpc"),
                    &[
                        ("x-probe-request", "greply:403:-1:x-a=1:denied:no 100% sure"),
                        ("x-probe-response", "eos;get:2::status"),
                    ],
                ),
                ok,
            )
            .expect("completes");
        assert!(outcome.upstream_request.is_none());
        assert_eq!(outcome.response.status(), 200);
        assert!(outcome.response.body().is_empty());
        assert_eq!(header(&outcome, "content-type"), Some("application/grpc"));
        assert_eq!(header(&outcome, "grpc-status"), Some("7"));
        assert_eq!(header(&outcome, "grpc-message"), Some("no 100%25 sure"));
        assert_eq!(header(&outcome, "x-a"), Some("1"));
        assert_eq!(header(&outcome, "content-length"), Some("0"));
        let reply = outcome.local_reply.as_ref().expect("a local reply");
        assert_eq!(
            (reply.plugin.as_str(), reply.status, reply.grpc_status),
            ("probe", 403, Some(7))
        );
        assert_eq!(reply.details, "denied");
        // The filter's response path sees headers that end the stream.
        let logs = infos(&outcome);
        assert!(
            logs.contains(&"on_response_headers eos -> 0 true"),
            "{logs:?}"
        );
        assert!(
            logs.contains(&"on_response_headers get:2::status -> 0 200"),
            "{logs:?}"
        );
    }

    #[test]
    fn an_explicit_grpc_status_is_sent_when_known() {
        let mut chain = chain();
        for (grpc, expected) in [("0", "0"), ("16", "16"), ("17", "14"), ("-5", "14")] {
            let script = format!("greply:503:{grpc}::x:");
            let outcome = chain
                .send(
                    request(
                        Some("application/grpc+proto"),
                        &[("x-probe-request", &script)],
                    ),
                    ok,
                )
                .expect("completes");
            assert_eq!(header(&outcome, "grpc-status"), Some(expected), "{grpc}");
            assert_eq!(header(&outcome, "grpc-message"), None);
            let reply = outcome.local_reply.expect("a local reply");
            assert_eq!(reply.grpc_status, expected.parse().ok(), "{grpc}");
        }
    }

    #[test]
    fn replies_to_other_requests_are_unchanged() {
        let mut chain = chain();
        for content_type in [None, Some("application/grpc-web"), Some("text/plain")] {
            let outcome = chain
                .send(
                    request(
                        content_type,
                        &[("x-probe-request", "greply:403:7::denied:go away")],
                    ),
                    ok,
                )
                .expect("completes");
            assert_eq!(outcome.response.status(), 403, "{content_type:?}");
            assert_eq!(outcome.response.body(), "go away");
            assert_eq!(header(&outcome, "content-type"), Some("text/plain"));
            assert_eq!(header(&outcome, "grpc-status"), None);
            let reply = outcome.local_reply.expect("a local reply");
            assert_eq!((reply.status, reply.grpc_status), (403, None));
        }
    }

    #[test]
    fn envoys_own_replies_to_grpc_requests() {
        // The router's, for an upstream past the route's timeout.
        let mut chain = chain();
        let slow = |_: http::Request<Bytes>| {
            http::Response::builder()
                .extension(UpstreamFault::Delay(std::time::Duration::from_secs(20)))
                .body(Bytes::from_static(b"late"))
                .expect("response")
        };
        let outcome = chain
            .send(request(Some("application/grpc"), &[]), slow)
            .expect("completes");
        assert_eq!(outcome.response.status(), 200);
        assert_eq!(header(&outcome, "grpc-status"), Some("14"));
        assert_eq!(
            header(&outcome, "grpc-message"),
            Some("upstream request timeout")
        );
        let reply = outcome.local_reply.expect("a local reply");
        assert_eq!(
            (reply.plugin.as_str(), reply.status, reply.grpc_status),
            ("envoy.filters.http.router", 504, Some(14))
        );
        // A trap fails the VM: 503, gRPC status 14, for this stream and later ones.
        for scripts in [&[("x-probe-request", "trap")][..], &[]] {
            let outcome = chain
                .send(request(Some("application/grpc"), scripts), ok)
                .expect("completes");
            assert_eq!(outcome.response.status(), 200);
            assert_eq!(header(&outcome, "grpc-status"), Some("14"));
            assert_eq!(header(&outcome, "grpc-message"), None);
            let reply = outcome.local_reply.expect("a local reply");
            assert_eq!((reply.status, reply.grpc_status), (503, Some(14)));
            assert_eq!(reply.details, "wasm_fail_stream");
        }
    }
}

/// A request to `target` with `method`, the probe logging its path.
fn to_target(method: &str, target: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", "targets.test")
        .header("x-probe-request", "get:0::path")
        .header("x-probe-log", "prop:response.code_details")
        .body(Bytes::new())
        .expect("request")
}

#[test]
fn targets_that_are_not_paths_are_answered_before_the_filters() {
    for hcm in [
        ConnectionManager::default(),
        ConnectionManager::default()
            .normalize_path(true)
            .merge_slashes(true),
    ] {
        let mut chain = probe(hcm);
        // OPTIONS *: the connection manager's 404; no filter, no upstream.
        let outcome = chain
            .send(to_target("OPTIONS", "*"), |_| {
                http::Response::new(Bytes::new())
            })
            .expect("answered");
        assert_eq!(outcome.response.status(), 404);
        assert!(outcome.response.body().is_empty());
        assert!(outcome.response.headers().get("connection").is_none());
        assert!(outcome.upstream_request.is_none());
        assert!(outcome.logs.is_empty(), "{:?}", outcome.logs);
        let reply = outcome.local_reply.expect("a local reply");
        assert_eq!(reply.details, "absolute_path");
        // Another method, an authority form: the codec's 400.
        for (method, target) in [("GET", "*"), ("GET", "targets.test:80")] {
            let outcome = chain
                .send(to_target(method, target), |_| {
                    http::Response::new(Bytes::new())
                })
                .expect("answered");
            assert_eq!(outcome.response.status(), 400, "{method} {target}");
            assert_eq!(&outcome.response.body()[..], b"Bad Request");
            assert_eq!(
                header_values(outcome.response.headers(), "connection"),
                ["close"]
            );
            assert!(outcome.upstream_request.is_none());
            assert!(outcome.logs.is_empty(), "{:?}", outcome.logs);
        }
        // An absolute form goes upstream as its path, to its host.
        let outcome = chain
            .send(to_target("GET", "https://other.test/x?q=1"), |_| {
                http::Response::new(Bytes::new())
            })
            .expect("sent");
        let upstream = outcome.upstream_request.expect("forwarded");
        assert_eq!(upstream.uri(), "/x?q=1");
        assert_eq!(header_values(upstream.headers(), "host"), ["other.test"]);
    }
}

/// A HEAD request with probe scripts for the response phase.
fn head(scripts: &[(&str, &str)]) -> http::Request<Bytes> {
    let mut b = http::Request::head("/x").header("host", "head.test");
    for (name, script) in scripts {
        b = b.header(*name, *script);
    }
    b.body(Bytes::new()).expect("request")
}

const HEAD_RESPONSE: (&str, &str) = ("x-probe-response", "eos;get:2:content-length");
const HEAD_BODY: (&str, &str) = ("x-probe-response-body", "eos");
const HEAD_LOG: (&str, &str) = ("x-probe-log", "propn:response.size");

#[test]
fn a_head_response_keeps_the_upstreams_length_and_has_no_body() {
    let mut chain = probe(ConnectionManager::default());
    let outcome = chain
        .send(head(&[HEAD_RESPONSE, HEAD_BODY, HEAD_LOG]), ok)
        .expect("sent");
    let upstream = outcome.upstream_request.as_ref().expect("reached upstream");
    assert_eq!(upstream.method(), http::Method::HEAD);
    assert!(upstream.headers().get("content-length").is_none());
    // The upstream's body announced its length; none of it is read.
    assert_eq!(
        values(Some(outcome.response.headers()), "content-length"),
        ["2"]
    );
    assert!(outcome.response.body().is_empty());
    let logs = infos(&outcome);
    assert_headers_end_the_response(&logs);
    assert!(
        logs.contains(&"on_response_headers get:2:content-length -> 0 2"),
        "{logs:?}"
    );
    assert!(
        logs.contains(&"on_log propn:response.size -> 0 0"),
        "{logs:?}"
    );
}

/// The probe's log of a response to HEAD: its headers ended the stream and
/// no body callback ran.
fn assert_headers_end_the_response(logs: &[&str]) {
    assert!(
        logs.contains(&"on_response_headers eos -> 0 true"),
        "{logs:?}"
    );
    assert!(
        !logs.iter().any(|l| l.starts_with("on_response_body")),
        "{logs:?}"
    );
}

#[test]
fn a_head_response_without_a_length_is_chunked() {
    let mut chain = probe(ConnectionManager::default());
    let empty = |_: http::Request<Bytes>| http::Response::new(Bytes::new());
    let outcome = chain.send(head(&[HEAD_RESPONSE]), empty).expect("sent");
    let headers = outcome.response.headers();
    assert!(headers.get("content-length").is_none());
    assert_eq!(values(Some(headers), "transfer-encoding"), ["chunked"]);
    // A GET gets `content-length: 0` instead.
    let get = http::Request::get("/x")
        .header("host", "head.test")
        .body(Bytes::new())
        .expect("request");
    let outcome = chain.send(get, empty).expect("sent");
    assert_eq!(
        values(Some(outcome.response.headers()), "content-length"),
        ["0"]
    );
}

#[test]
fn an_upstreams_chunked_answer_to_head_is_headers_only() {
    let mut chain = probe(ConnectionManager::default());
    let chunked = |_: http::Request<Bytes>| {
        http::Response::builder()
            .extension(BodyChunks(vec![3]))
            .body(Bytes::from_static(b"0123456789"))
            .expect("response")
    };
    let outcome = chain
        .send(
            head(&[
                ("x-probe-response", "eos;get:2:transfer-encoding"),
                HEAD_BODY,
            ]),
            chunked,
        )
        .expect("sent");
    let logs = infos(&outcome);
    assert_headers_end_the_response(&logs);
    assert!(
        logs.contains(&"on_response_headers get:2:transfer-encoding -> 1"),
        "{logs:?}"
    );
    assert!(outcome.response.body().is_empty());
}

#[test]
fn a_local_reply_to_head_keeps_its_length_but_sends_no_body() {
    let mut chain = probe(ConnectionManager::default());
    let outcome = chain
        .send(
            head(&[
                ("x-probe-request", "reply:403:denied:nope"),
                HEAD_RESPONSE,
                HEAD_BODY,
                HEAD_LOG,
            ]),
            ok,
        )
        .expect("sent");
    assert!(outcome.upstream_request.is_none());
    assert_eq!(outcome.response.status(), 403);
    let headers = outcome.response.headers();
    assert_eq!(values(Some(headers), "content-length"), ["4"]);
    assert_eq!(values(Some(headers), "content-type"), ["text/plain"]);
    assert!(outcome.response.body().is_empty());
    let logs = infos(&outcome);
    assert_headers_end_the_response(&logs);
    assert!(
        logs.contains(&"on_log propn:response.size -> 0 0"),
        "{logs:?}"
    );
    // Without a body, the reply is chunked on the wire.
    let outcome = chain
        .send(head(&[("x-probe-request", "reply:403:denied:")]), ok)
        .expect("sent");
    let headers = outcome.response.headers();
    assert!(headers.get("content-length").is_none());
    assert_eq!(values(Some(headers), "transfer-encoding"), ["chunked"]);
}
