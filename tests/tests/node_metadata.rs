//! The node and the xDS metadata a test gives the harness's builders
//! ([`Node`], [`Metadata`], [`ConnectionManager::route_metadata`] and its
//! siblings, [`NetworkChainBuilder::node`](weir_harness::NetworkChainBuilder::node))
//! or a bootstrap ([`EnvoyConfig::parse`]), as the `probe` test filter reads
//! them with `proxy_get_property`; the upstream host's and its locality's
//! metadata ([`ConnectionManager::upstream_host_metadata`] and its siblings)
//! likewise. `tests/conformance/node-*.yaml` and
//! `tests/conformance/*upstream-host-metadata*.yaml` compare the same reads
//! with Envoy 1.40's.

use bytes::Bytes;
use serde_json::json;
use weir_harness::{
    Chain, ConnectionManager, EnvoyConfig, Error, Filter, LogLevel, LogRecord, Metadata,
    NetworkChain, Node, TcpReply,
};
use weir_tests::{engine, envoy_yaml, filter_wasm};

/// The probe, named `probe`, whose configuration `configure` runs in
/// `on_configure`.
fn probe(configure: &str) -> Filter {
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    Filter::new(plugin).name("probe").configuration(configure)
}

/// The probe's lines, as `<callback> <command> -> <status> [<value>]`.
fn lines(logs: &[LogRecord]) -> Vec<String> {
    logs.iter()
        .filter(|l| l.level >= LogLevel::Info)
        .map(|l| l.message.clone())
        .collect()
}

/// How the probe prints bytes that are not text.
fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// The probe's log lines for one request whose headers run `script`.
fn request_lines(chain: &mut Chain, script: &str) -> Vec<String> {
    phase_lines(chain, script, "", "")
}

#[track_caller]
fn assert_has(lines: &[String], line: &str) {
    assert!(
        lines.iter().any(|l| l == line),
        "no line {line:?} in {lines:#?}"
    );
}

fn node() -> Node {
    Node::default()
        .id("sidecar~10.0.0.1~web-0.default~default.svc.cluster.local")
        .cluster("web")
        .metadata(json!({
            "NAMESPACE": "default",
            "LABELS": {"app": "web", "version": "v1"},
            "ratio": 2.5,
            "ports": [8080, {"name": "admin"}],
            "mesh": true,
            "none": null,
        }))
        .expect("a Struct holds it")
        .locality("us-east1", "us-east1-b", "")
}

#[test]
fn a_node_and_metadata_given_to_the_builders_are_what_filters_read() {
    let hcm = ConnectionManager::default()
        .virtual_host_name("all")
        .route_cluster("upstream")
        .route_metadata(
            Metadata::new()
                .filter("istio", json!({"config": "/apis/v1/web", "weight": 10}))
                .expect("route"),
        )
        .virtual_host_metadata(
            Metadata::new()
                .filter("vh", json!({"tier": "gold"}))
                .expect("vh"),
        )
        .cluster_metadata(
            Metadata::new()
                .filter("envoy.lb", json!({"canary": false}))
                .expect("cluster"),
        )
        .listener_metadata(
            Metadata::new()
                .filter("lf", json!({"lk": "lv"}))
                .expect("listener"),
        );
    let configure = "prop:xds.node.id;prop:xds.node.metadata.ratio;propmap:xds.node.metadata.LABELS;\
                     prop:xds.node.locality.zone;prop:xds.node.metadata.none;prop:xds.route_metadata";
    let mut chain = Chain::builder(engine())
        .filter(probe(configure))
        .connection_manager(hcm)
        .node(node())
        .build()
        .expect("starts");

    // The root context: the node, no stream attributes.
    let started = lines(chain.startup_logs());
    let id = "sidecar~10.0.0.1~web-0.default~default.svc.cluster.local";
    assert_has(
        &started,
        &format!("on_configure prop:xds.node.id -> 0 {id}"),
    );
    // A JSON number is a double.
    let ratio = escaped(&2.5f64.to_le_bytes());
    assert_has(
        &started,
        &format!("on_configure prop:xds.node.metadata.ratio -> 0 {ratio}"),
    );
    assert_has(
        &started,
        "on_configure propmap:xds.node.metadata.LABELS -> 0 2 [app=web, version=v1]",
    );
    assert_has(
        &started,
        "on_configure prop:xds.node.locality.zone -> 0 us-east1-b",
    );
    // Envoy cannot serialize a null.
    assert_has(&started, "on_configure prop:xds.node.metadata.none -> 3");
    assert_has(&started, "on_configure prop:xds.route_metadata -> 1");

    // A stream: the four metadata too.
    let script = "prop:xds.node.cluster;prop:xds.node.metadata.ports.1.name;\
                  prop:xds.route_metadata.filter_metadata.istio.config;\
                  prop:xds.route_metadata.filter_metadata.istio.weight;\
                  prop:xds.virtual_host_metadata;\
                  propv:xds/cluster_metadata/filter_metadata/envoy.lb/canary;\
                  prop:xds.listener_metadata.filter_metadata.lf.lk;\
                  prop:xds.route_metadata.filter_metadata.missing";
    let seen = request_lines(&mut chain, script);
    assert_has(&seen, "on_request_headers prop:xds.node.cluster -> 0 web");
    assert_has(
        &seen,
        "on_request_headers prop:xds.node.metadata.ports.1.name -> 0 admin",
    );
    assert_has(
        &seen,
        "on_request_headers prop:xds.route_metadata.filter_metadata.istio.config -> 0 /apis/v1/web",
    );
    let ten = escaped(&10f64.to_le_bytes());
    assert_has(
        &seen,
        &format!(
            "on_request_headers prop:xds.route_metadata.filter_metadata.istio.weight -> 0 {ten}"
        ),
    );
    // The whole message, serialized: filter_metadata {vh: {tier: "gold"}}.
    assert_has(
        &seen,
        "on_request_headers prop:xds.virtual_host_metadata -> 0 \
         \\x0a\\x16\\x0a\\x02vh\\x12\\x10\\x0a\\x0e\\x0a\\x04tier\\x12\\x06\\x1a\\x04gold",
    );
    assert_has(
        &seen,
        "on_request_headers propv:xds/cluster_metadata/filter_metadata/envoy.lb/canary -> 0 \\x00",
    );
    assert_has(
        &seen,
        "on_request_headers prop:xds.listener_metadata.filter_metadata.lf.lk -> 0 lv",
    );
    assert_has(
        &seen,
        "on_request_headers prop:xds.route_metadata.filter_metadata.missing -> 1",
    );
}

#[test]
fn without_a_node_or_metadata_filters_read_a_plain_bootstrap() {
    let mut chain = Chain::builder(engine())
        .filter(probe("prop:xds.node.id;prop:xds.node.metadata"))
        .build()
        .expect("starts");
    let started = lines(chain.startup_logs());
    assert_has(&started, "on_configure prop:xds.node.id -> 0");
    assert_has(
        &started,
        "on_configure prop:xds.node.metadata -> 0 \\x00\\x00\\x00\\x00",
    );
    let seen = request_lines(
        &mut chain,
        "prop:xds.route_metadata;prop:xds.route_metadata.filter_metadata",
    );
    assert_has(&seen, "on_request_headers prop:xds.route_metadata -> 0");
    assert_has(
        &seen,
        "on_request_headers prop:xds.route_metadata.filter_metadata -> 0 \\x00\\x00\\x00\\x00",
    );
}

#[test]
fn a_value_a_struct_cannot_hold_is_a_clear_error() {
    let not_an_object = Node::default().metadata(json!(["a"]));
    let Err(Error::InvalidMetadata(text)) = not_an_object else {
        panic!("accepted: {not_an_object:?}");
    };
    assert!(
        text.contains("node.metadata") && text.contains("JSON object"),
        "{text}"
    );

    let inexact = Metadata::new().filter("f", json!({"ids": [1, u64::MAX]}));
    let Err(Error::InvalidMetadata(text)) = inexact else {
        panic!("accepted: {inexact:?}");
    };
    assert!(text.contains("filter_metadata.f.ids[1]"), "{text}");

    let scalar = Metadata::new().filter("f", json!("text"));
    assert!(
        matches!(scalar, Err(Error::InvalidMetadata(_))),
        "{scalar:?}"
    );
}

#[test]
fn a_network_chain_has_the_node_the_listeners_and_the_clusters_metadata() {
    let mut chain = NetworkChain::builder(engine())
        .filter(probe(
            "onconnect:prop:xds.node.id,prop:xds.listener_metadata.filter_metadata.lf.lk,\
             prop:xds.cluster_metadata",
        ))
        .node(Node::default().id("gateway"))
        .listener_metadata(
            Metadata::new()
                .filter("lf", json!({"lk": "lv"}))
                .expect("lf"),
        )
        .cluster_metadata(
            Metadata::new()
                .filter("cf", json!({"ck": "cv"}))
                .expect("cf"),
        )
        .log_level(LogLevel::Info)
        .build()
        .expect("starts");
    let seen = connection_lines(
        &mut chain,
        b"probe:prop:xds.cluster_metadata.filter_metadata.cf.ck;prop:xds.route_metadata\n",
    );
    assert_has(&seen, "on_new_connection prop:xds.node.id -> 0 gateway");
    assert_has(
        &seen,
        "on_new_connection prop:xds.listener_metadata.filter_metadata.lf.lk -> 0 lv",
    );
    // No cluster until tcp_proxy connects.
    assert_has(&seen, "on_new_connection prop:xds.cluster_metadata -> 1");
    assert_has(
        &seen,
        "on_downstream_data prop:xds.cluster_metadata.filter_metadata.cf.ck -> 0 cv",
    );
    assert_has(&seen, "on_downstream_data prop:xds.route_metadata -> 1");
}

#[test]
fn a_bootstraps_node_and_metadata_reach_the_filters() {
    let yaml = envoy_yaml("conformance.yaml")
        .replace(
            "static_resources:",
            "node: {id: from-bootstrap, metadata: {k: [1, x]}}\nstatic_resources:",
        )
        .replace(
            "              - match: { prefix: \"/\" }\n",
            "              - match: { prefix: \"/\" }\n                metadata: {filter_metadata: {rf: {rk: rv}}}\n",
        );
    let config = EnvoyConfig::parse(&yaml).expect("parses");
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    let mut chain = config
        .chain_builder(engine(), |_| Ok(plugin.clone()))
        .expect("builder")
        .build()
        .expect("starts");
    let seen = request_lines(
        &mut chain,
        "prop:xds.node.id;prop:xds.node.metadata.k.1;prop:xds.route_metadata.filter_metadata.rf.rk",
    );
    assert_has(
        &seen,
        "on_request_headers prop:xds.node.id -> 0 from-bootstrap",
    );
    assert_has(
        &seen,
        "on_request_headers prop:xds.node.metadata.k.1 -> 0 x",
    );
    assert_has(
        &seen,
        "on_request_headers prop:xds.route_metadata.filter_metadata.rf.rk -> 0 rv",
    );

    // A number that is not an integer: Envoy keeps its text, which the
    // harness cannot know.
    let float = yaml.replace("{k: [1, x]}", "{k: [1.50, x]}");
    let Err(Error::EnvoyConfig(text)) = EnvoyConfig::parse(&float) else {
        panic!("accepted a float");
    };
    assert!(
        text.contains("node.metadata.k[0]") && text.contains("quoted"),
        "{text}"
    );
}

/// The log lines of one connection through `chain` that sends `data` and
/// half-closes, with an upstream that answers nothing.
fn connection_lines(chain: &mut NetworkChain, data: &[u8]) -> Vec<String> {
    let mut conn = chain
        .connect(|_: &[u8]| TcpReply::none())
        .expect("connects");
    conn.send(data).expect("sent");
    conn.close_write().expect("half-closed");
    lines(&conn.finish().logs)
}

/// The probe's log lines for one request whose headers run `request`, whose
/// response headers run `response` and whose `on_log` runs `log`.
fn phase_lines(chain: &mut Chain, request: &str, response: &str, log: &str) -> Vec<String> {
    let request = http::Request::get("/")
        .header("host", "node.test")
        .header("x-probe-request", request)
        .header("x-probe-response", response)
        .header("x-probe-log", log)
        .body(Bytes::new())
        .expect("request");
    let outcome = chain
        .send(request, |_| http::Response::new(Bytes::new()))
        .expect("sent");
    lines(&outcome.logs)
}

#[test]
fn the_upstream_hosts_metadata_given_to_the_builder_once_the_router_picked_it() {
    let host = Metadata::new()
        .filter(
            "istio",
            json!({"workload": "reviews-v2", "labels": {"app": "reviews"}, "weight": 3}),
        )
        .expect("host");
    let locality = Metadata::new()
        .filter("envoy.lb", json!({"zone": "us-east1-b"}))
        .expect("locality");
    let hcm = ConnectionManager::default()
        .route_cluster("upstream")
        .upstream_host_metadata(host)
        .upstream_host_locality_metadata(locality);
    let mut chain = Chain::builder(engine())
        .filter(probe("prop:xds.upstream_host_metadata"))
        .connection_manager(hcm)
        .build()
        .expect("starts");
    // A root context has no host.
    assert_has(
        &lines(chain.startup_logs()),
        "on_configure prop:xds.upstream_host_metadata -> 1",
    );
    let reads = "prop:xds.upstream_host_metadata.filter_metadata.istio.workload;\
                 propmap:xds.upstream_host_metadata.filter_metadata.istio.labels;\
                 prop:xds.upstream_host_metadata.filter_metadata.istio.weight;\
                 propv:xds/upstream_host_locality_metadata/filter_metadata/envoy.lb/zone;\
                 prop:xds.upstream_host_metadata.filter_metadata.missing";
    let seen = phase_lines(&mut chain, reads, reads, reads);
    // Before the router: no host.
    assert_has(
        &seen,
        "on_request_headers prop:xds.upstream_host_metadata.filter_metadata.istio.workload -> 1",
    );
    assert_has(
        &seen,
        "on_request_headers propv:xds/upstream_host_locality_metadata/filter_metadata/envoy.lb/zone -> 1",
    );
    let three = escaped(&3f64.to_le_bytes());
    for phase in ["on_response_headers", "on_log"] {
        assert_has(
            &seen,
            &format!(
                "{phase} prop:xds.upstream_host_metadata.filter_metadata.istio.workload -> 0 reviews-v2"
            ),
        );
        assert_has(
            &seen,
            &format!(
                "{phase} propmap:xds.upstream_host_metadata.filter_metadata.istio.labels -> 0 1 [app=reviews]"
            ),
        );
        assert_has(
            &seen,
            &format!(
                "{phase} prop:xds.upstream_host_metadata.filter_metadata.istio.weight -> 0 {three}"
            ),
        );
        assert_has(
            &seen,
            &format!(
                "{phase} propv:xds/upstream_host_locality_metadata/filter_metadata/envoy.lb/zone -> 0 us-east1-b"
            ),
        );
        assert_has(
            &seen,
            &format!("{phase} prop:xds.upstream_host_metadata.filter_metadata.missing -> 1"),
        );
    }

    // A filter's reply keeps the request from the router: no host.
    let seen = phase_lines(
        &mut chain,
        "reply:403:mine:denied",
        "",
        "prop:xds.upstream_host_metadata.filter_metadata.istio.workload",
    );
    assert_has(
        &seen,
        "on_log prop:xds.upstream_host_metadata.filter_metadata.istio.workload -> 1",
    );
}

#[test]
fn a_host_without_metadata_has_a_null_message_and_an_empty_one_is_a_message() {
    let hcm = ConnectionManager::default()
        .route_cluster("upstream")
        .upstream_host_locality_metadata(Metadata::new());
    let mut chain = Chain::builder(engine())
        .filter(probe(""))
        .connection_manager(hcm)
        .build()
        .expect("starts");
    let reads = "prop:xds.upstream_host_metadata;prop:xds.upstream_host_metadata.filter_metadata;\
                 prop:xds.upstream_host_locality_metadata;\
                 prop:xds.upstream_host_locality_metadata.filter_metadata";
    let seen = phase_lines(&mut chain, "", reads, "");
    // No metadata: Envoy cannot serialize the null message, nor find a field.
    assert_has(
        &seen,
        "on_response_headers prop:xds.upstream_host_metadata -> 3",
    );
    assert_has(
        &seen,
        "on_response_headers prop:xds.upstream_host_metadata.filter_metadata -> 1",
    );
    // Empty metadata given: an empty message.
    assert_has(
        &seen,
        "on_response_headers prop:xds.upstream_host_locality_metadata -> 0",
    );
    assert_has(
        &seen,
        "on_response_headers prop:xds.upstream_host_locality_metadata.filter_metadata -> 0 \\x00\\x00\\x00\\x00",
    );
}

#[test]
fn a_network_chain_reads_the_endpoints_metadata_once_tcp_proxy_connected() {
    let mut chain = NetworkChain::builder(engine())
        .filter(probe(
            "onconnect:prop:xds.upstream_host_metadata.filter_metadata.istio.workload",
        ))
        .upstream_host_metadata(
            Metadata::new()
                .filter("istio", json!({"workload": "db-0"}))
                .expect("host"),
        )
        .log_level(LogLevel::Info)
        .build()
        .expect("starts");
    let seen = connection_lines(
        &mut chain,
        b"probe:prop:xds.upstream_host_metadata.filter_metadata.istio.workload;\
          prop:xds.upstream_host_locality_metadata;\
          onlog:prop:xds.upstream_host_metadata.filter_metadata.istio.workload\n",
    );
    // tcp_proxy has not connected yet in on_new_connection.
    assert_has(
        &seen,
        "on_new_connection prop:xds.upstream_host_metadata.filter_metadata.istio.workload -> 1",
    );
    assert_has(
        &seen,
        "on_downstream_data prop:xds.upstream_host_metadata.filter_metadata.istio.workload -> 0 db-0",
    );
    // The locality gives none: a null message.
    assert_has(
        &seen,
        "on_downstream_data prop:xds.upstream_host_locality_metadata -> 3",
    );
    assert_has(
        &seen,
        "on_log prop:xds.upstream_host_metadata.filter_metadata.istio.workload -> 0 db-0",
    );
}

/// The conformance bootstrap with its last `from` (in the route's cluster,
/// the last one) replaced by `to`.
fn with_route_cluster(from: &str, to: &str) -> String {
    let shipped = envoy_yaml("conformance.yaml");
    let at = shipped.rfind(from).expect("the route's cluster has it");
    format!("{}{to}{}", &shipped[..at], &shipped[at + from.len()..])
}

/// A probe chain from `yaml`, which must load without warnings.
fn probe_chain(yaml: &str) -> Chain {
    let config = EnvoyConfig::parse(yaml).expect("parses");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let plugin = engine().load_file(filter_wasm("probe")).expect("loads");
    config
        .chain_builder(engine(), |_| Ok(plugin.clone()))
        .expect("builder")
        .build()
        .expect("starts")
}

#[test]
fn a_bootstraps_endpoint_metadata_loads_without_warnings_and_reaches_the_filters() {
    let endpoint = "      - lb_endpoints:\n        - endpoint:\n            address:\n              \
                    socket_address: { address: upstream, port_value: 8080 }\n";
    let with_metadata = "      - metadata: {filter_metadata: {envoy.lb: {zone: z1}}}\n        \
                         lb_endpoints:\n        - metadata: {filter_metadata: {istio: {workload: reviews-v2, ports: [9080]}}}\n          \
                         endpoint:\n            address:\n              \
                         socket_address: { address: upstream, port_value: 8080 }\n";
    let yaml = with_route_cluster(endpoint, with_metadata);
    let mut chain = probe_chain(&yaml);
    let seen = phase_lines(
        &mut chain,
        "",
        "prop:xds.upstream_host_metadata.filter_metadata.istio.workload;\
         prop:xds.upstream_host_metadata.filter_metadata.istio.ports.0;\
         propv:xds/upstream_host_locality_metadata/filter_metadata/envoy.lb/zone",
        "",
    );
    assert_has(
        &seen,
        "on_response_headers prop:xds.upstream_host_metadata.filter_metadata.istio.workload -> 0 reviews-v2",
    );
    let port = escaped(&9080f64.to_le_bytes());
    assert_has(
        &seen,
        &format!(
            "on_response_headers prop:xds.upstream_host_metadata.filter_metadata.istio.ports.0 -> 0 {port}"
        ),
    );
    assert_has(
        &seen,
        "on_response_headers propv:xds/upstream_host_locality_metadata/filter_metadata/envoy.lb/zone -> 0 z1",
    );

    // A value Envoy reads differently from the harness: refused, the path named.
    for (bad, path) in [
        (
            yaml.replace("ports: [9080]", "ports: [90.80]"),
            "clusters[upstream].load_assignment.endpoints[0].lb_endpoints[0].metadata.filter_metadata.istio.ports[0]",
        ),
        (
            yaml.replace("{zone: z1}", "{zone: yes}"),
            "clusters[upstream].load_assignment.endpoints[0].metadata.filter_metadata.envoy.lb.zone",
        ),
    ] {
        let Err(Error::EnvoyConfig(text)) = EnvoyConfig::parse(&bad) else {
            panic!("accepted {path}");
        };
        assert!(text.contains(path), "{text}");
    }
}

#[test]
fn the_endpoints_locality_given_to_the_builder_once_the_router_picked_it() {
    let hcm = ConnectionManager::default()
        .route_cluster("upstream")
        .upstream_locality("us-east1", "us-east1-b", "");
    let mut chain = Chain::builder(engine())
        .filter(probe("prop:upstream.locality"))
        .connection_manager(hcm)
        .build()
        .expect("starts");
    // A root context has no host.
    assert_has(
        &lines(chain.startup_logs()),
        "on_configure prop:upstream.locality -> 1",
    );
    let reads = "prop:upstream.locality;prop:upstream.locality.region;\
                 prop:upstream.locality.zone;prop:upstream.locality.sub_zone;\
                 prop:upstream.locality.x";
    let seen = phase_lines(&mut chain, reads, reads, reads);
    // Before the router: no host.
    assert_has(&seen, "on_request_headers prop:upstream.locality -> 1");
    assert_has(&seen, "on_request_headers prop:upstream.locality.zone -> 1");
    // Once picked: the message (region 1, zone 2; an empty sub_zone is left
    // out) and each field.
    for phase in ["on_response_headers", "on_log"] {
        assert_has(
            &seen,
            &format!("{phase} prop:upstream.locality -> 0 \\x0a\\x08us-east1\\x12\\x0aus-east1-b"),
        );
        assert_has(
            &seen,
            &format!("{phase} prop:upstream.locality.region -> 0 us-east1"),
        );
        assert_has(
            &seen,
            &format!("{phase} prop:upstream.locality.zone -> 0 us-east1-b"),
        );
        assert_has(
            &seen,
            &format!("{phase} prop:upstream.locality.sub_zone -> 0"),
        );
        assert_has(&seen, &format!("{phase} prop:upstream.locality.x -> 1"));
    }
    // A filter's reply keeps the request from the router: no host.
    let seen = phase_lines(
        &mut chain,
        "reply:403:mine:denied",
        "",
        "prop:upstream.locality.zone",
    );
    assert_has(&seen, "on_log prop:upstream.locality.zone -> 1");

    // Without one given: an empty locality once the host is picked.
    let mut plain = Chain::builder(engine())
        .filter(probe(""))
        .connection_manager(ConnectionManager::default().route_cluster("upstream"))
        .build()
        .expect("starts");
    let seen = phase_lines(
        &mut plain,
        "",
        "prop:upstream.locality;prop:upstream.locality.zone",
        "",
    );
    assert_has(&seen, "on_response_headers prop:upstream.locality -> 0");
    assert_has(
        &seen,
        "on_response_headers prop:upstream.locality.zone -> 0",
    );
}

#[test]
fn a_network_chain_reads_the_endpoints_locality_once_tcp_proxy_connected() {
    let mut chain = NetworkChain::builder(engine())
        .filter(probe("onconnect:prop:upstream.locality.zone"))
        .upstream_locality("", "eu-west1-c", "rack-2")
        .log_level(LogLevel::Info)
        .build()
        .expect("starts");
    let seen = connection_lines(&mut chain, b"probe:prop:upstream.locality;prop:upstream.locality.sub_zone;onlog:prop:upstream.locality.zone\n");
    // tcp_proxy has not connected yet in on_new_connection.
    assert_has(&seen, "on_new_connection prop:upstream.locality.zone -> 1");
    assert_has(
        &seen,
        "on_downstream_data prop:upstream.locality -> 0 \\x12\\x0aeu-west1-c\\x1a\\x06rack-2",
    );
    assert_has(
        &seen,
        "on_downstream_data prop:upstream.locality.sub_zone -> 0 rack-2",
    );
    assert_has(&seen, "on_log prop:upstream.locality.zone -> 0 eu-west1-c");
}

#[test]
fn a_bootstraps_endpoint_locality_loads_without_warnings_and_reaches_the_filters() {
    let endpoint = "      - lb_endpoints:\n";
    let with_locality = "      - locality: {region: us-east1, zone: us-east1-b, sub_zone: rack-7}\n        \
                         lb_endpoints:\n";
    let mut chain = probe_chain(&with_route_cluster(endpoint, with_locality));
    let seen = phase_lines(
        &mut chain,
        "",
        "prop:upstream.locality.region;prop:upstream.locality.sub_zone",
        "prop:upstream.locality.zone",
    );
    assert_has(
        &seen,
        "on_response_headers prop:upstream.locality.region -> 0 us-east1",
    );
    assert_has(
        &seen,
        "on_response_headers prop:upstream.locality.sub_zone -> 0 rack-7",
    );
    assert_has(&seen, "on_log prop:upstream.locality.zone -> 0 us-east1-b");
}
