//! The same filter, config and requests through the harness and through real
//! Envoy 1.40: what the upstream and the client saw must be identical.

use std::collections::HashMap;

use weir_harness::EnvoyConfig;
use weir_tests::envoy::{Envoy, Rebind};
use weir_tests::net::{self, Upstream};
use weir_tests::observed::{ClientSaw, UpstreamSaw};
use weir_tests::{engine, envoy_yaml, filter_wasm, scenarios};

#[test]
#[allow(
    clippy::print_stdout,
    reason = "the run reports how many scenarios were identical"
)]
fn harness_matches_envoy_for_header_append() {
    let yaml = envoy_yaml("header-append.yaml");
    let handler = scenarios::header_append_upstream();

    let config = EnvoyConfig::parse(&yaml).expect("shipped config parses");
    let mut chain = config
        .chain_builder(engine(), |_| {
            engine().load_file(filter_wasm("header-append"))
        })
        .expect("module loads")
        .build()
        .expect("plugin starts");

    let upstream = Upstream::start(handler.clone()).expect("upstream");
    let how = Rebind {
        clusters: HashMap::from([("upstream".to_owned(), upstream.addr())]),
        modules: HashMap::from([(
            "header_append.wasm".to_owned(),
            filter_wasm("header-append"),
        )]),
        loopback: true,
    };
    let envoy = Envoy::start(&yaml, &how).unwrap_or_else(|e| panic!("{e:#}"));

    let scenarios = scenarios::header_append();
    let mut differences = Vec::new();
    for s in &scenarios {
        let harness = chain
            .send(s.request.clone(), handler.as_ref())
            .unwrap_or_else(|e| panic!("{}: harness: {e}", s.name));
        let harness_upstream = harness.upstream_request.as_ref().map(UpstreamSaw::of);
        let harness_client = ClientSaw::of(&harness.response);

        let response = net::send(envoy.listener, s.request.clone())
            .unwrap_or_else(|e| panic!("{}: envoy: {e:#}", s.name));
        let envoy_upstream = upstream.take_seen().first().map(UpstreamSaw::of);
        let envoy_client = ClientSaw::of(&response);

        if harness_upstream != envoy_upstream {
            differences.push(format!(
                "{}: upstream saw\n  harness: {harness_upstream:?}\n  envoy:   {envoy_upstream:?}",
                s.name
            ));
        }
        if harness_client != envoy_client {
            differences.push(format!(
                "{}: client saw\n  harness: {harness_client:?}\n  envoy:   {envoy_client:?}",
                s.name
            ));
        }
    }
    let identical = scenarios.len() - differences.len().min(scenarios.len());
    println!("{identical}/{} scenarios identical", scenarios.len());
    assert!(
        differences.is_empty(),
        "harness and Envoy differ:\n{}",
        differences.join("\n")
    );
}
