//! header-append in the harness, configured from envoy/header-append.yaml.

use bytes::Bytes;
use weir_harness::{Chain, EnvoyConfig, Error, Filter, LogLevel};
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
