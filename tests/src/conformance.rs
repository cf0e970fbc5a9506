//! The conformance suite: scenarios as data (`tests/conformance/*.yaml`), each run
//! through weir-harness and through real Envoy with the `probe` test filter, and
//! compared on everything observable: what the upstream received, what the client
//! received, and the probe's log lines (which report every host call's status and
//! result).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::Deserialize;
use weir_harness::{EnvoyConfig, LogLevel, UpstreamFault};

use crate::envoy::{Envoy, Rebind};
use crate::grpc::GrpcUpstream;
use crate::grpc_scenario::{GrpcCluster, closed_port, grpc_seen};
pub use crate::grpc_scenario::{GrpcSpec, StepSpec, StreamSpec};
use crate::net::{self, Upstream};
use crate::observed::{ClientSaw, UpstreamSaw};

/// One file of scenarios sharing a plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The filter under test (default `probe`).
    #[serde(default = "default_filter")]
    pub filter: String,
    /// Its plugin configuration (for the probe, a script run in `on_configure`).
    #[serde(default)]
    pub config: String,
    /// The plugins' `failure_policy` (default `FAIL_CLOSED`).
    #[serde(default)]
    pub failure_policy: Option<String>,
    /// `reload_config.backoff.base_interval` for `FAIL_RELOAD`, e.g. `"2s"`.
    #[serde(default)]
    pub reload_backoff: Option<String>,
    /// The plugins' `vm_config.configuration` (default: the template's,
    /// `vm-config-bytes`, which the probe logs).
    #[serde(default)]
    pub vm_config: Option<String>,
    /// The plugins' `root_id` (default empty).
    #[serde(default)]
    pub root_id: Option<String>,
    /// The plugin must fail to start, trapping in this callback (e.g.
    /// `proxy_on_configure`): the harness refuses to build the chain and Envoy
    /// refuses the configuration. The suite then has no scenarios.
    #[serde(default)]
    pub expect_start_failure: Option<String>,
    /// The plugin must refuse its configuration: `on_vm_start` or `on_configure`
    /// returns false, the harness refuses to build the chain and Envoy refuses
    /// the configuration, both logging this text (e.g. the field's name). The
    /// suite then has no scenarios.
    #[serde(default)]
    pub expect_rejection: Option<Rejection>,
    /// The module must fail to load (a missing import or an export with the
    /// wrong signature): the harness's error and Envoy's log must both name this
    /// function. The suite then has no scenarios.
    #[serde(default)]
    pub expect_load_failure: Option<String>,
    /// Plugin names for a chain of several instances of the filter, in order
    /// (default: one, named `probe`). Each gets its own VM (`vm_id` = name)
    /// unless `vm_ids` says otherwise.
    #[serde(default)]
    pub chain: Vec<String>,
    /// The `vm_id` of each plugin of `chain`, in order (default: its name).
    /// Plugins with the same vm_id (and, as always here, the same module and
    /// VM configuration) share one VM in Envoy and in the harness.
    #[serde(default)]
    pub vm_ids: Vec<String>,
    /// The listener's `per_connection_buffer_limit_bytes` (default Envoy's 1 MiB).
    #[serde(default)]
    pub buffer_limit: Option<u64>,
    /// The plugins' `allow_on_headers_stop_iteration` (default false).
    #[serde(default)]
    pub allow_on_headers_stop_iteration: bool,
    /// The connection manager's `http_protocol_options.enable_trailers`
    /// (default false, as in Envoy): the client's request trailers reach the
    /// filters and response trailers reach the client.
    #[serde(default)]
    pub enable_trailers: bool,
    /// The `upstream` cluster's HTTP/1 `enable_trailers` (default false):
    /// request trailers reach the upstream and its response trailers reach
    /// the filters.
    #[serde(default)]
    pub upstream_enable_trailers: bool,
    /// The route's `timeout` (default Envoy's 15 s), e.g. `"1s"`: an upstream
    /// slower than this is answered `504` by the router.
    #[serde(default)]
    pub route_timeout: Option<String>,
    /// The route's cluster (default `upstream`). A cluster the bootstrap does
    /// not define needs `validate_clusters: false` (Envoy refuses it
    /// otherwise): the router then answers `503` `cluster_not_found`.
    #[serde(default)]
    pub route_cluster: Option<String>,
    /// The route config's `validate_clusters` (default: unset, Envoy's true).
    #[serde(default)]
    pub validate_clusters: Option<bool>,
    /// Clusters whose host refuses connections (`upstream`, `callout`,
    /// `grpc`): in Envoy they point at a closed loopback port, in the harness
    /// they answer [`UpstreamFault::ConnectionRefused`] (gRPC:
    /// [`weir_harness::GrpcRefusingHost`]). Their scenarios' answers are not
    /// used.
    #[serde(default)]
    pub refused: Vec<String>,
    /// The log line that ends a stream (`{id}` is the scenario's `x-probe-id`);
    /// the Envoy side waits for it before comparing logs. Empty: wait 300 ms.
    #[serde(default = "default_done_line")]
    pub done_line: String,
    /// Headers that carry the client's ephemeral port (for example copied from
    /// `source.address`): in these, in the upstream request and the client
    /// response, every number after a `:` is compared as `<port>`. The harness
    /// is given Envoy's listener and upstream addresses, so `destination.*` and
    /// `upstream.*` need no mask.
    #[serde(default)]
    pub mask_ports: Vec<String>,
    /// Compare the callouts each scenario made as a set, not in order: a
    /// filter with several callouts in flight at once (Envoy's network decides
    /// which one reaches the cluster first).
    #[serde(default)]
    pub callouts_unordered: bool,
    /// Send every scenario at once, as concurrent streams: each arrives
    /// `arrive_ms` after the batch starts (in Envoy, a client per scenario
    /// connects then; the harness sends the batch with `Chain::send_all` and
    /// `Arrival`). Arrivals, callout and upstream delays (`delay_ms`) at
    /// least 100 ms apart keep Envoy's order deterministic. Compared: each
    /// scenario's upstream request, client response and callouts, and the
    /// batch's whole log in order (how the streams' callbacks interleave).
    /// gRPC calls are not compared per scenario in a concurrent suite.
    #[serde(default)]
    pub concurrent: bool,
    /// Time to let pass after start-up, before the first scenario, for the
    /// callouts the plugin makes while it starts (Envoy's side sleeps, the
    /// harness's clock advances). Those callouts are then compared as a set:
    /// Envoy's main thread and its worker each make them (the canary VM is
    /// gone before its call is sent); both answered as the first scenario's
    /// `callout` says.
    #[serde(default)]
    pub startup_wait_ms: u64,
    /// The connection manager's `normalize_path` (default: unset, Envoy's
    /// false): dot segments are removed from the path (RFC 3986) before the
    /// filters see it.
    #[serde(default)]
    pub normalize_path: Option<bool>,
    /// The connection manager's `merge_slashes` (default: unset, Envoy's
    /// false): repeated slashes in the path are merged into one.
    #[serde(default)]
    pub merge_slashes: Option<bool>,
    /// The connection manager's `path_with_escaped_slashes_action` (default:
    /// unset, Envoy's `IMPLEMENTATION_SPECIFIC_DEFAULT`), e.g.
    /// `REJECT_REQUEST` or `UNESCAPE_AND_FORWARD`.
    #[serde(default)]
    pub path_with_escaped_slashes_action: Option<String>,
    /// The scenarios (HTTP requests).
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    /// Network (L4) connections instead of HTTP scenarios: the suite then runs
    /// its filter as `envoy.filters.network.wasm` in front of `tcp_proxy` (see
    /// [`crate::conformance_l4`]).
    #[serde(default)]
    pub connections: Vec<crate::conformance_l4::ConnectionScenario>,
    /// The bootstrap's `node` (`id`, `cluster`, `metadata`, `locality`),
    /// written into Envoy's bootstrap as given; the harness reads it from
    /// that bootstrap.
    #[serde(default)]
    pub node: Option<serde_yaml_ng::Value>,
    /// The `metadata` of the listener, the virtual host, the route and the
    /// route's cluster, written into Envoy's bootstrap as given.
    #[serde(default)]
    pub metadata: MetadataSpec,
    /// The `type` of the route's (or `tcp_proxy`'s) cluster, in Envoy and in
    /// the bootstrap the harness reads: `STATIC` (default; the tests rebind
    /// every cluster to a loopback address), `STRICT_DNS` or `LOGICAL_DNS`
    /// (which resolve that address).
    #[serde(default)]
    pub upstream_type: Option<String>,
    /// The `locality` (`region`, `zone`, `sub_zone`) of the route's (or
    /// `tcp_proxy`'s) cluster's endpoints (its
    /// `load_assignment.endpoints[0].locality`), which filters read as
    /// `upstream.locality`, written into Envoy's bootstrap as given.
    #[serde(default)]
    pub upstream_locality: Option<serde_yaml_ng::Value>,
}

impl Suite {
    /// The clusters whose `type` Envoy keeps (see [`Suite::upstream_type`]).
    pub(crate) fn kept_types<'a>(&self, cluster: &'a str) -> Vec<&'a str> {
        if self.upstream_type.is_some() {
            vec![cluster]
        } else {
            Vec::new()
        }
    }
}

/// The `metadata` fields a suite gives the bootstrap (each an
/// `envoy.config.core.v3.Metadata`, e.g. `{filter_metadata: {f: {k: v}}}`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSpec {
    /// The (first) listener's.
    #[serde(default)]
    pub listener: Option<serde_yaml_ng::Value>,
    /// The first virtual host's (HTTP only).
    #[serde(default)]
    pub virtual_host: Option<serde_yaml_ng::Value>,
    /// The first route's (HTTP only).
    #[serde(default)]
    pub route: Option<serde_yaml_ng::Value>,
    /// The cluster the route (or `tcp_proxy`) goes to.
    #[serde(default)]
    pub cluster: Option<serde_yaml_ng::Value>,
    /// That cluster's endpoint's (its
    /// `load_assignment.endpoints[0].lb_endpoints[0].metadata`), which
    /// filters read as `xds.upstream_host_metadata`.
    #[serde(default)]
    pub upstream_host: Option<serde_yaml_ng::Value>,
    /// The endpoint's locality's (the cluster's
    /// `load_assignment.endpoints[0].metadata`), which filters read as
    /// `xds.upstream_host_locality_metadata`.
    #[serde(default)]
    pub upstream_host_locality: Option<serde_yaml_ng::Value>,
}

/// Writes the suite's `node` into `root` and its listener's, cluster's,
/// endpoint's and locality's metadata into the first listener, the static
/// cluster `cluster` and that cluster's first locality and endpoint.
pub(crate) fn write_node_and_metadata(
    suite: &Suite,
    root: &mut serde_yaml_ng::Value,
    cluster: &str,
) -> Result<()> {
    if let Some(node) = &suite.node {
        root["node"] = node.clone();
    }
    // What Envoy runs (see `Suite::upstream_type`), for the harness to read.
    if let Some(target) = root["static_resources"]["clusters"]
        .as_sequence_mut()
        .and_then(|c| c.iter_mut().find(|c| c["name"].as_str() == Some(cluster)))
    {
        let kind = suite.upstream_type.as_deref().unwrap_or("STATIC");
        target["type"] = serde_yaml_ng::Value::from(kind);
    } else if suite.upstream_type.is_some() {
        bail!("upstream_type: the bootstrap has no cluster {cluster}");
    }
    if let Some(locality) = &suite.upstream_locality {
        let endpoints = root["static_resources"]["clusters"]
            .as_sequence_mut()
            .and_then(|c| c.iter_mut().find(|c| c["name"].as_str() == Some(cluster)))
            .and_then(|c| c["load_assignment"]["endpoints"].as_sequence_mut())
            .and_then(|e| e.first_mut())
            .with_context(|| format!("upstream_locality: cluster {cluster} has no endpoints"))?;
        endpoints["locality"] = locality.clone();
    }
    if let Some(metadata) = &suite.metadata.listener {
        root["static_resources"]["listeners"][0]["metadata"] = metadata.clone();
    }
    let spec = &suite.metadata;
    let fields = [
        ("cluster", &spec.cluster),
        ("upstream_host", &spec.upstream_host),
        ("upstream_host_locality", &spec.upstream_host_locality),
    ];
    for (field, metadata) in fields {
        let Some(metadata) = metadata else {
            continue;
        };
        let target = root["static_resources"]["clusters"]
            .as_sequence_mut()
            .and_then(|c| c.iter_mut().find(|c| c["name"].as_str() == Some(cluster)))
            .with_context(|| format!("metadata.{field}: the bootstrap has no cluster {cluster}"))?;
        let at = if field == "cluster" {
            target
        } else {
            let locality = target["load_assignment"]["endpoints"]
                .as_sequence_mut()
                .and_then(|e| e.first_mut())
                .with_context(|| format!("metadata.{field}: cluster {cluster} has no endpoints"))?;
            if field == "upstream_host_locality" {
                locality
            } else {
                locality["lb_endpoints"]
                    .as_sequence_mut()
                    .and_then(|e| e.first_mut())
                    .with_context(|| {
                        format!("metadata.{field}: cluster {cluster} has no lb_endpoints")
                    })?
            }
        };
        at["metadata"] = metadata.clone();
    }
    Ok(())
}

/// A configuration the plugin must refuse (see [`Suite::expect_rejection`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// `proxy_on_vm_start` or `proxy_on_configure`.
    pub callback: String,
    /// Text both logs must contain.
    pub log: String,
}

fn default_filter() -> String {
    "probe".to_owned()
}

fn default_done_line() -> String {
    "info: on_delete {id}".to_owned()
}

/// One request and how the upstream answers it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it checks.
    pub name: String,
    /// The request.
    #[serde(default)]
    pub request: RequestSpec,
    /// The upstream's answer.
    #[serde(default)]
    pub upstream: ResponseSpec,
    /// How the `callout` cluster answers the probe's callouts, and any callout
    /// without `x-probe-id` made while this scenario runs (a filter fetching a
    /// resource of its own, such as a key set).
    #[serde(default)]
    pub callout: ResponseSpec,
    /// How the `grpc` cluster answers the probe's gRPC calls and streams.
    #[serde(default)]
    pub grpc: GrpcSpec,
    /// Time to let pass before the request: Envoy's side sleeps, the harness's
    /// virtual clock advances.
    #[serde(default)]
    pub wait_ms: u64,
    /// The client closes its connection this long after it sent the request,
    /// unless the whole response came first (harness: a
    /// [`weir_harness::Disconnect`] on the request).
    #[serde(default)]
    pub disconnect_ms: Option<u64>,
    /// The log line that ends this scenario in Envoy, instead of the suite's
    /// `done_line` (for work that ends after the stream, such as a callout
    /// answered after the client left).
    #[serde(default)]
    pub done_line: Option<String>,
    /// In a concurrent suite: when the request arrives, after the batch starts.
    #[serde(default)]
    pub arrive_ms: u64,
    /// What the client must receive (checked in the harness; Envoy must match it).
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// The expected outcome of a scenario.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status the client receives.
    pub status: u16,
    /// Headers the upstream must receive with exactly these values.
    #[serde(default)]
    pub upstream_headers: Vec<(String, String)>,
}

impl Expect {
    /// What differs from `observed`, if anything.
    fn check(&self, observed: &Observed) -> Option<String> {
        let status = observed.client.as_ref().map(|c| c.status).ok();
        if status != Some(self.status) {
            return Some(format!("expected status {}, got {status:?}", self.status));
        }
        for (name, value) in &self.upstream_headers {
            let got: Vec<&str> = observed
                .upstream
                .iter()
                .flat_map(|u| &u.headers)
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect();
            if got != [value.as_str()] {
                return Some(format!("expected upstream {name}: {value}, got {got:?}"));
            }
        }
        None
    }
}

/// A request as data.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestSpec {
    /// Method (default GET).
    pub method: String,
    /// Origin-form path (default `/`).
    pub path: String,
    /// Headers in order; `host: conformance.test` is added first.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Send the body chunked, in pieces of these sizes (the rest is one more
    /// piece), each read separately by the proxy: a piece every
    /// [`net::CHUNK_GAP`], the end of the body one gap after the last (the
    /// harness gets the same gap, a [`weir_harness::ChunkGap`]).
    pub chunks: Vec<usize>,
    /// Trailers after the (then chunked) body, in order; the request names
    /// them in a `trailer` header.
    pub trailers: Vec<(String, String)>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        Self {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            headers: Vec::new(),
            body: String::new(),
            chunks: Vec::new(),
            trailers: Vec::new(),
        }
    }
}

/// A response as data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseSpec {
    /// Status (default 200).
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Send the body chunked, in pieces of these sizes (as for requests).
    pub chunks: Vec<usize>,
    /// Answer after this long (for callouts: past their timeout, Envoy answers
    /// 504 itself).
    pub delay_ms: u64,
    /// Close the connection instead of answering in full.
    pub close: Option<Close>,
    /// Trailers after the (then chunked) body, in order; the response names
    /// them in a `trailer` header, and the request asks for them with
    /// `te: trailers` (an HTTP/1 server sends trailers only then).
    pub trailers: Vec<(String, String)>,
}

/// When a [`ResponseSpec`] closes the connection.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Close {
    /// Before any response.
    BeforeHeaders,
    /// After the headers, before the body is complete.
    AfterHeaders,
}

impl Default for ResponseSpec {
    fn default() -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: String::new(),
            chunks: Vec::new(),
            delay_ms: 0,
            close: None,
            trailers: Vec::new(),
        }
    }
}

/// The `trailer` header that announces `trailers` (a peer that is not told
/// does not send them), unless `headers` has one.
fn announce(headers: &[(String, String)], trailers: &[(String, String)]) -> Option<String> {
    let announced = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("trailer"));
    if trailers.is_empty() || announced {
        return None;
    }
    let mut names: Vec<&str> = Vec::new();
    for (name, _) in trailers {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name);
        }
    }
    Some(names.join(", "))
}

/// The [`weir_harness::Trailers`] extension for `pairs`, if any.
fn trailers_of(pairs: &[(String, String)]) -> Result<Option<weir_harness::Trailers>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    Ok(Some(weir_harness::Trailers::from_pairs(
        pairs.iter().map(|(k, v)| (k, v)),
    )?))
}

impl ResponseSpec {
    /// The response. A fixed `date` is set unless the scenario gives one, so that
    /// hyper (upstream of Envoy) and the harness's in-process upstream send the
    /// same headers.
    fn response(&self) -> http::Response<Bytes> {
        let mut b = http::Response::builder().status(self.status);
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("date"))
        {
            b = b.header("date", "Thu, 01 Jan 2026 00:00:00 GMT");
        }
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        if let Some(names) = announce(&self.headers, &self.trailers) {
            b = b.header("trailer", names);
        }
        match trailers_of(&self.trailers) {
            Ok(Some(trailers)) => b = b.extension(trailers),
            Ok(None) => {}
            Err(e) => panic!("bad upstream trailers in scenario: {e}"),
        }
        if !self.chunks.is_empty() {
            b = b
                .header("transfer-encoding", "chunked")
                .extension(weir_harness::BodyChunks(self.chunks.clone()))
                .extension(weir_harness::ChunkGap(net::CHUNK_GAP));
        }
        let fault = match self.close {
            Some(Close::BeforeHeaders) => Some(UpstreamFault::CloseBeforeHeaders),
            Some(Close::AfterHeaders) => Some(UpstreamFault::CloseAfterHeaders),
            None if self.delay_ms > 0 => {
                Some(UpstreamFault::Delay(Duration::from_millis(self.delay_ms)))
            }
            None => None,
        };
        if let Some(fault) = fault {
            b = b.extension(fault);
        }
        b.body(Bytes::from(self.body.clone()))
            .unwrap_or_else(|e| panic!("bad upstream response in scenario: {e}"))
    }
}

impl Scenario {
    fn request(&self, id: usize) -> Result<http::Request<Bytes>> {
        let r = &self.request;
        let mut b = http::Request::builder()
            .method(r.method.as_str())
            .uri(r.path.as_str())
            .header("host", "conformance.test")
            .header("x-probe-id", id);
        for (k, v) in &r.headers {
            b = b.header(k, v);
        }
        let asks_for_trailers = r.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("te"));
        if !self.upstream.trailers.is_empty() && !asks_for_trailers {
            b = b.header("te", "trailers");
        }
        if let Some(names) = announce(&r.headers, &r.trailers) {
            b = b.header("trailer", names);
        }
        if let Some(trailers) = trailers_of(&r.trailers)? {
            b = b.extension(trailers);
        }
        if let Some(ms) = self.disconnect_ms {
            b = b.extension(weir_harness::Disconnect(Duration::from_millis(ms)));
        }
        if !r.chunks.is_empty() || !r.trailers.is_empty() {
            b = b.header("transfer-encoding", "chunked");
            if !r.chunks.is_empty() {
                // The Envoy side sends the pieces this far apart.
                b = b
                    .extension(weir_harness::BodyChunks(r.chunks.clone()))
                    .extension(weir_harness::ChunkGap(net::CHUNK_GAP));
            }
        } else if !r.body.is_empty() {
            b = b.header("content-length", r.body.len());
        }
        Ok(b.body(Bytes::from(r.body.clone()))?)
    }
}

/// Everything observable about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// What the upstream received, if anything.
    pub upstream: Option<UpstreamSaw>,
    /// What the client received, or `reset` if the stream was reset (the
    /// connection closed before a response).
    pub client: Result<ClientSaw, String>,
    /// The plugin's log lines for this request, as `level: message`.
    pub logs: Vec<String>,
    /// What the `callout` cluster received.
    pub callouts: Vec<UpstreamSaw>,
    /// The complete gRPC requests the `grpc` cluster received.
    pub grpc: Vec<UpstreamSaw>,
}

/// The result of one suite.
#[derive(Debug, Default)]
pub struct Report {
    /// Scenarios run.
    pub total: usize,
    /// Descriptions of the scenarios that differed.
    pub differences: Vec<String>,
}

/// Loads a suite file.
///
/// # Errors
/// If the file cannot be read or parsed.
pub fn load(path: &Path) -> Result<Suite> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `envoy/conformance.yaml` running `filter` (a module in /etc/envoy/filters/)
/// with `config`, once per name in `chain` (or once as shipped).
fn envoy_yaml(suite: &Suite) -> Result<String> {
    let (filter, config, chain) = (&suite.filter, &suite.config, &suite.chain);
    let mut root: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&crate::envoy_yaml("conformance.yaml"))?;
    let listener = &mut root["static_resources"]["listeners"][0];
    if let Some(limit) = suite.buffer_limit {
        listener["per_connection_buffer_limit_bytes"] = serde_yaml_ng::Value::from(limit);
    }
    let filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
        .as_sequence_mut()
        .context("conformance.yaml has no http_filters")?;
    let at = filters
        .iter()
        .position(|f| f["name"].as_str() == Some("envoy.filters.http.wasm"))
        .context("conformance.yaml has no wasm filter")?;
    let plugin = &mut filters[at]["typed_config"]["config"];
    plugin["configuration"]["value"] = serde_yaml_ng::Value::from(config.as_str());
    if let Some(policy) = &suite.failure_policy {
        plugin["failure_policy"] = serde_yaml_ng::Value::from(policy.as_str());
    }
    if let Some(vm_config) = &suite.vm_config {
        let mut value = serde_yaml_ng::Mapping::new();
        value.insert(
            "@type".into(),
            "type.googleapis.com/google.protobuf.StringValue".into(),
        );
        value.insert("value".into(), vm_config.as_str().into());
        plugin["vm_config"]["configuration"] = serde_yaml_ng::Value::Mapping(value);
    }
    if let Some(root_id) = &suite.root_id {
        plugin["root_id"] = serde_yaml_ng::Value::from(root_id.as_str());
    }
    if let Some(base) = &suite.reload_backoff {
        plugin["reload_config"]["backoff"]["base_interval"] =
            serde_yaml_ng::Value::from(base.as_str());
    }
    if suite.allow_on_headers_stop_iteration {
        plugin["allow_on_headers_stop_iteration"] = serde_yaml_ng::Value::from(true);
    }

    plugin["vm_config"]["code"]["local"]["filename"] =
        serde_yaml_ng::Value::from(format!("/etc/envoy/filters/{}", module_name(filter)));
    if !suite.vm_ids.is_empty() && suite.vm_ids.len() != chain.len() {
        bail!(
            "vm_ids has {} entries for a chain of {}",
            suite.vm_ids.len(),
            chain.len()
        );
    }
    if !chain.is_empty() {
        let template = filters.remove(at);
        for (i, name) in chain.iter().enumerate() {
            let mut f = template.clone();
            let vm_id = suite.vm_ids.get(i).unwrap_or(name);
            f["typed_config"]["config"]["name"] = serde_yaml_ng::Value::from(name.as_str());
            f["typed_config"]["config"]["vm_config"]["vm_id"] =
                serde_yaml_ng::Value::from(vm_id.as_str());
            filters.insert(at + i, f);
        }
    }
    if suite.enable_trailers {
        let hcm = &mut root["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
        hcm["typed_config"]["http_protocol_options"]["enable_trailers"] =
            serde_yaml_ng::Value::from(true);
    }
    if suite.upstream_enable_trailers {
        enable_cluster_trailers(&mut root, "upstream")?;
    }
    let hcm = &mut root["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    if let Some(on) = suite.normalize_path {
        hcm["normalize_path"] = serde_yaml_ng::Value::from(on);
    }
    if let Some(on) = suite.merge_slashes {
        hcm["merge_slashes"] = serde_yaml_ng::Value::from(on);
    }
    if let Some(action) = &suite.path_with_escaped_slashes_action {
        hcm["path_with_escaped_slashes_action"] = serde_yaml_ng::Value::from(action.as_str());
    }
    if let Some(timeout) = &suite.route_timeout {
        let hcm = &mut root["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
        let route = &mut hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0];
        route["route"]["timeout"] = serde_yaml_ng::Value::from(timeout.as_str());
    }
    let route_config = &mut root["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        [0]["typed_config"]["route_config"];
    if let Some(validate) = suite.validate_clusters {
        route_config["validate_clusters"] = serde_yaml_ng::Value::from(validate);
    }
    if let Some(cluster) = &suite.route_cluster {
        route_config["virtual_hosts"][0]["routes"][0]["route"]["cluster"] =
            serde_yaml_ng::Value::from(cluster.as_str());
    }
    if let Some(metadata) = &suite.metadata.virtual_host {
        route_config["virtual_hosts"][0]["metadata"] = metadata.clone();
    }
    if let Some(metadata) = &suite.metadata.route {
        route_config["virtual_hosts"][0]["routes"][0]["metadata"] = metadata.clone();
    }
    let cluster = suite.route_cluster.as_deref().unwrap_or("upstream");
    write_node_and_metadata(suite, &mut root, cluster)?;
    Ok(serde_yaml_ng::to_string(&root)?)
}

/// The suite's bootstrap as the harness loads it. A field the harness accepts
/// without emulating it fails the suite: what Envoy does with it could differ.
fn load_config(yaml: &str) -> Result<EnvoyConfig> {
    let config = EnvoyConfig::parse(yaml)?;
    if !config.warnings.is_empty() {
        bail!(
            "the harness does not emulate fields of the suite's bootstrap:\n{}",
            config.warnings.join("\n")
        );
    }
    Ok(config)
}

/// Gives cluster `name` of `root` HTTP/1 `enable_trailers`.
fn enable_cluster_trailers(root: &mut serde_yaml_ng::Value, name: &str) -> Result<()> {
    const OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let cluster = root["static_resources"]["clusters"]
        .as_sequence_mut()
        .and_then(|c| c.iter_mut().find(|c| c["name"].as_str() == Some(name)))
        .with_context(|| format!("conformance.yaml has no cluster {name}"))?;
    let mut options = serde_yaml_ng::Mapping::new();
    options.insert(
        "@type".into(),
        format!("type.googleapis.com/{OPTIONS}").into(),
    );
    let yaml = "explicit_http_config: {http_protocol_options: {enable_trailers: true}}";
    let explicit: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml)?;
    if let serde_yaml_ng::Value::Mapping(m) = explicit {
        options.extend(m);
    }
    cluster["typed_extension_protocol_options"][OPTIONS] = options.into();
    Ok(())
}

fn module_name(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

/// Extracts `level: message` from Envoy's `wasm log` lines.
fn envoy_wasm_logs(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            // Envoy (spdlog) prints `warning` for proxy-wasm's `warn`.
            let level = match line.split("][").nth(2)? {
                "warning" => "warn",
                level => level,
            };
            let rest = line.split_once("wasm log ")?.1;
            let message = rest.split_once(": ")?.1;
            Some(format!("{level}: {message}"))
        })
        .collect()
}

/// Runs every scenario of `suite` in the harness and in Envoy.
///
/// # Errors
/// If Envoy or the harness cannot be set up, or a request cannot be sent.
pub fn run(suite: &Suite) -> Result<Report> {
    if !suite.connections.is_empty() {
        return crate::conformance_l4::run(suite);
    }
    let probe = crate::filter_wasm(&suite.filter);
    let yaml = envoy_yaml(suite)?;

    let current = Arc::new(AtomicUsize::new(0));
    let handler = by_probe_id(
        suite.scenarios.iter().map(|s| s.upstream.clone()).collect(),
        Arc::clone(&current),
    );
    let callout_handler = by_probe_id(
        suite.scenarios.iter().map(|s| s.callout.clone()).collect(),
        Arc::clone(&current),
    );

    if suite.expect_start_failure.is_some()
        || suite.expect_load_failure.is_some()
        || suite.expect_rejection.is_some()
    {
        let config = load_config(&yaml)?;
        let engine = crate::engine();
        let harness = config
            .chain_builder(engine, |_| engine.load_file(&probe))
            .and_then(|builder| builder.build());
        // No request is sent: the clusters only need an address.
        let unused = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
        let how = Rebind {
            clusters: HashMap::from([
                ("upstream".to_owned(), unused),
                ("callout".to_owned(), unused),
                ("grpc".to_owned(), unused),
            ]),
            modules: HashMap::from([(module_name(&suite.filter), probe.clone())]),
            loopback: true,
        };
        let envoy = Envoy::start(&yaml, &how);
        return Ok(
            match (&suite.expect_start_failure, &suite.expect_rejection) {
                (Some(callback), _) => start_failure(callback, harness.err(), envoy.err()),
                (None, Some(rejection)) => rejected(rejection, harness.err(), envoy.err()),
                (None, None) => load_failure(
                    suite.expect_load_failure.as_deref().unwrap_or_default(),
                    harness.err(),
                    envoy.err(),
                ),
            },
        );
    }
    let upstream = Upstream::start(Arc::clone(&handler))?;
    let callout_upstream = Upstream::start(Arc::clone(&callout_handler))?;
    let closed = closed_port()?;
    let refuses = |name: &str| suite.refused.iter().any(|r| r == name);
    // A suite that scripts streams serves them full duplex, on both sides.
    let mut grpc = GrpcCluster::start(
        "grpc",
        suite.scenarios.iter().map(|s| s.grpc.clone()).collect(),
        Arc::clone(&current),
        true,
        refuses("grpc"),
    )?;
    if let Some(other) = suite
        .refused
        .iter()
        .find(|r| !matches!(r.as_str(), "upstream" | "callout" | "grpc"))
    {
        bail!("refused: {other:?} is not a cluster that can refuse (upstream, callout, grpc)");
    }
    let address =
        |name: &str, open: std::net::SocketAddr| if refuses(name) { closed } else { open };
    let how = Rebind {
        clusters: HashMap::from([
            ("upstream".to_owned(), address("upstream", upstream.addr())),
            (
                "callout".to_owned(),
                address("callout", callout_upstream.addr()),
            ),
            ("grpc".to_owned(), grpc.addr()),
        ]),
        modules: HashMap::from([(module_name(&suite.filter), probe.clone())]),
        loopback: true,
    };
    let cluster = suite.route_cluster.as_deref().unwrap_or("upstream");
    let envoy = Envoy::start_keeping_types(&yaml, &how, &suite.kept_types(cluster))?;

    // The harness sees the addresses Envoy has: its listener and the upstream.
    let config = load_config(&yaml)?;
    let hcm = config
        .connection_manager
        .clone()
        .destination_address(envoy.listener)
        .upstream_address(address("upstream", upstream.addr()));
    let engine = crate::engine();
    let for_harness = if refuses("callout") {
        refusing()
    } else {
        Arc::clone(&callout_handler)
    };
    let handler = if refuses("upstream") {
        refusing()
    } else {
        handler
    };
    let builder = config
        .chain_builder(engine, |_| engine.load_file(&probe))?
        .connection_manager(hcm)
        .cluster("callout", move |req| for_harness(req));
    let mut chain = match grpc.harness() {
        Some(answer) => answer.add_to(builder, "grpc"),
        None => builder,
    }
    .build()?;
    let upstreams = Upstreams {
        upstream: &upstream,
        callout: &callout_upstream,
        grpc: grpc.upstream(),
    };
    run_scenarios(suite, &mut chain, &handler, &envoy, &upstreams, &current)
}

/// Whether a callout answered with `response` reached its cluster's host
/// (one that refused the connection never saw the request).
impl Observed {
    /// What the harness's outcome (or its reset or disconnect) shows; another
    /// error is not an observation.
    fn in_harness(
        result: weir_harness::Result<weir_harness::Outcome>,
    ) -> Result<Observed, weir_harness::Error> {
        let callouts = |callouts: &[weir_harness::Callout]| -> Vec<UpstreamSaw> {
            callouts
                .iter()
                .filter(|c| reached(&c.response))
                .map(|c| UpstreamSaw::of(&c.request))
                .collect()
        };
        Ok(match result {
            Ok(outcome) => Observed {
                upstream: outcome.upstream_request.as_ref().map(UpstreamSaw::of),
                client: Ok(ClientSaw::of(&outcome.response)),
                logs: info_logs(&outcome.logs),
                callouts: callouts(&outcome.callouts),
                grpc: outcome
                    .grpc
                    .iter()
                    .filter(|c| !c.reply.refuses_connection())
                    .map(|c| UpstreamSaw::of(&c.request.http))
                    .collect(),
            },
            // The stream ended without a response: what reached the
            // upstream and the callouts, and how the client saw it.
            Err(
                ref e @ (weir_harness::Error::Reset {
                    ref logs,
                    ref upstream_request,
                    callouts: ref made,
                    ..
                }
                | weir_harness::Error::Disconnected {
                    ref logs,
                    ref upstream_request,
                    callouts: ref made,
                    ..
                }),
            ) => Observed {
                upstream: upstream_request.as_deref().map(UpstreamSaw::of),
                client: Err(match e {
                    weir_harness::Error::Reset { .. } => "reset".to_owned(),
                    _ => "disconnected".to_owned(),
                }),
                logs: info_logs(logs),
                callouts: callouts(made),
                grpc: Vec::new(),
            },
            Err(e) => return Err(e),
        })
    }
}

fn reached(response: &http::Response<Bytes>) -> bool {
    response.extensions().get::<UpstreamFault>() != Some(&UpstreamFault::ConnectionRefused)
}

/// The harness's side of a cluster whose host refuses connections.
fn refusing() -> net::Handler {
    Arc::new(|_| {
        http::Response::builder()
            .extension(UpstreamFault::ConnectionRefused)
            .body(Bytes::new())
            .unwrap_or_default()
    })
}

/// The servers behind Envoy's clusters.
struct Upstreams<'a> {
    upstream: &'a Upstream,
    callout: &'a Upstream,
    grpc: &'a GrpcUpstream,
}

/// An upstream that answers each request with the response of the scenario its
/// `x-probe-id` names, or without one, of the scenario running (`current`).
fn by_probe_id(responses: Vec<ResponseSpec>, current: Arc<AtomicUsize>) -> net::Handler {
    Arc::new(move |req: http::Request<Bytes>| {
        let id = match req.headers().get("x-probe-id") {
            Some(v) => v.to_str().ok().and_then(|v| v.parse::<usize>().ok()),
            None => Some(current.load(Ordering::SeqCst)),
        };
        match id.and_then(|i| responses.get(i)) {
            Some(spec) => spec.response(),
            None => http::Response::builder()
                .status(404)
                .body(Bytes::from_static(b"no such scenario"))
                .unwrap_or_default(),
        }
    })
}

fn run_scenarios(
    suite: &Suite,
    chain: &mut weir_harness::Chain,
    handler: &net::Handler,
    envoy: &Envoy,
    upstreams: &Upstreams<'_>,
    current: &AtomicUsize,
) -> Result<Report> {
    let startup = envoy_wasm_logs(&envoy.log());
    let mut seen_lines = startup.len();

    let mut report = Report::default();
    // Start-up: with one worker, Envoy 1.40 configures the plugin three times
    // (the canary VM that validates the config, the main thread's VM and the
    // worker's VM); the harness once.
    report.total += 1;
    let harness_startup = info_logs(chain.startup_logs());
    let expected: Vec<String> = (0..3)
        .flat_map(|_| harness_startup.iter().cloned())
        .collect();
    if startup != expected {
        report.differences.push(format!(
            "── start-up (on_vm_start, on_configure)\n  harness (x3): {expected:?}\n  envoy:        {startup:?}\n"
        ));
    }
    if suite.startup_wait_ms > 0 {
        report.total += 1;
        let wait = Duration::from_millis(suite.startup_wait_ms);
        let background = chain.advance(wait);
        std::thread::sleep(wait);
        let distinct = |mut seen: Vec<UpstreamSaw>| {
            seen.sort_by(|a, b| (&a.uri, &a.headers).cmp(&(&b.uri, &b.headers)));
            seen.dedup();
            seen
        };
        let harness = distinct(
            background
                .callouts
                .iter()
                .map(|c| UpstreamSaw::of(&c.request))
                .collect(),
        );
        let envoy_saw = distinct(
            upstreams
                .callout
                .take_seen()
                .iter()
                .map(UpstreamSaw::of)
                .collect(),
        );
        let lines = envoy_wasm_logs(&envoy.log());
        let envoy_logs = lines[seen_lines.min(lines.len())..].to_vec();
        seen_lines = lines.len();
        let harness_logs = info_logs(&background.logs);
        if harness != envoy_saw || harness_logs != envoy_logs {
            report.differences.push(format!(
                "── after start-up ({wait:?}): callouts and logs\n  harness: {harness:?} {harness_logs:?}\n  envoy:   {envoy_saw:?} {envoy_logs:?}\n"
            ));
        }
    }
    if suite.concurrent {
        run_batch(
            suite,
            chain,
            handler,
            envoy,
            upstreams,
            seen_lines,
            &mut report,
        )?;
        return Ok(report);
    }
    for (id, scenario) in suite.scenarios.iter().enumerate() {
        report.total += 1;
        if scenario.wait_ms > 0 {
            let wait = Duration::from_millis(scenario.wait_ms);
            chain.advance(wait);
            std::thread::sleep(wait);
        }
        current.store(id, Ordering::SeqCst);
        let harness = Observed::in_harness(chain.send(scenario.request(id)?, handler.as_ref()))
            .map_err(|e| anyhow::anyhow!("{}: harness: {e}", scenario.name))?;

        let response = match scenario.disconnect_ms {
            Some(ms) => net::send_then_disconnect(
                envoy.listener,
                scenario.request(id)?,
                Duration::from_millis(ms),
            )
            .and_then(|r| r.ok_or_else(|| anyhow::anyhow!("client disconnected"))),
            None => net::send(envoy.listener, scenario.request(id)?),
        };
        let last_line = scenario
            .done_line
            .as_deref()
            .unwrap_or(&suite.done_line)
            .replace("{id}", &id.to_string());
        // Without a line to wait for, give Envoy's log a moment to settle.
        let wait = if last_line.is_empty() { 300 } else { 5000 };
        let deadline = Instant::now() + Duration::from_millis(wait);
        let lines = loop {
            let all = envoy_wasm_logs(&envoy.log());
            if all[seen_lines.min(all.len())..].contains(&last_line) || Instant::now() > deadline {
                break all;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let envoy_observed = Observed {
            upstream: upstreams.upstream.take_seen().first().map(UpstreamSaw::of),
            client: match response {
                Ok(r) => Ok(ClientSaw::of(&r)),
                // Closed before the response, or in the middle of its body.
                Err(e)
                    if format!("{e:#}").contains("connection closed")
                        || format!("{e:#}").contains("error reading a body") =>
                {
                    Err("reset".to_owned())
                }
                Err(e) if format!("{e:#}").contains("client disconnected") => {
                    Err("disconnected".to_owned())
                }
                Err(e) => bail!("{}: envoy: {e:#}", scenario.name),
            },
            logs: lines[seen_lines.min(lines.len())..].to_vec(),
            callouts: upstreams
                .callout
                .take_seen()
                .iter()
                .map(UpstreamSaw::of)
                .collect(),
            grpc: grpc_seen(upstreams.grpc, harness.grpc.len()),
        };
        seen_lines = lines.len();
        show(&scenario.name, &harness, &envoy_observed);

        let (mut harness, mut envoy_observed) = (
            mask_ports(harness, &suite.mask_ports),
            mask_ports(envoy_observed, &suite.mask_ports),
        );
        if suite.callouts_unordered {
            for callouts in [&mut harness.callouts, &mut envoy_observed.callouts] {
                callouts.sort_by(|a, b| (&a.uri, &a.headers).cmp(&(&b.uri, &b.headers)));
            }
        }
        if harness != envoy_observed {
            report
                .differences
                .push(describe(&scenario.name, &harness, &envoy_observed));
        } else if let Some(problem) = scenario.expect.as_ref().and_then(|e| e.check(&harness)) {
            report
                .differences
                .push(format!("── {}\n  {problem}\n", scenario.name));
        }
    }
    Ok(report)
}

/// Runs a concurrent suite's scenarios as one batch in the harness and in
/// Envoy (see [`Suite::concurrent`]), adding to `report` a check per scenario
/// and one for the batch's interleaved log.
fn run_batch(
    suite: &Suite,
    chain: &mut weir_harness::Chain,
    handler: &net::Handler,
    envoy: &Envoy,
    upstreams: &Upstreams<'_>,
    seen_lines: usize,
    report: &mut Report,
) -> Result<()> {
    let mut requests = Vec::with_capacity(suite.scenarios.len());
    for (id, scenario) in suite.scenarios.iter().enumerate() {
        let mut request = scenario.request(id)?;
        request
            .extensions_mut()
            .insert(weir_harness::Arrival(Duration::from_millis(
                scenario.arrive_ms,
            )));
        requests.push(request);
    }
    // The harness logs every guest line through `tracing` as well: captured,
    // they give the batch's log in the order the streams' callbacks ran.
    let capture = Arc::new(GuestLines::default());
    let outcomes = tracing::subscriber::with_default(Arc::clone(&capture), || {
        chain.send_all(requests, handler.as_ref())
    });
    let harness_log = capture.take();

    // Envoy: a client per scenario, each connecting at its arrival time.
    let start = Instant::now();
    let mut clients = Vec::with_capacity(suite.scenarios.len());
    for (id, scenario) in suite.scenarios.iter().enumerate() {
        let request = scenario.request(id)?;
        let at = start + Duration::from_millis(scenario.arrive_ms);
        let listener = envoy.listener;
        let disconnect = scenario.disconnect_ms.map(Duration::from_millis);
        clients.push(std::thread::spawn(move || {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            match disconnect {
                Some(after) => net::send_then_disconnect(listener, request, after)
                    .and_then(|r| r.ok_or_else(|| anyhow::anyhow!("client disconnected"))),
                None => net::send(listener, request),
            }
        }));
    }
    let responses: Vec<Result<http::Response<Bytes>>> = clients
        .into_iter()
        .map(|c| {
            c.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the client thread panicked")))
        })
        .collect();
    let done: Vec<String> = (0..suite.scenarios.len())
        .map(|id| suite.done_line.replace("{id}", &id.to_string()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let envoy_log = loop {
        let all = envoy_wasm_logs(&envoy.log());
        let batch = all[seen_lines.min(all.len())..].to_vec();
        if done.iter().all(|d| d.is_empty() || batch.contains(d)) || Instant::now() > deadline {
            break batch;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let upstream_seen = upstreams.upstream.take_seen();
    let callouts_seen = upstreams.callout.take_seen();
    let for_id = |requests: &[http::Request<Bytes>], id: usize| -> Vec<UpstreamSaw> {
        requests
            .iter()
            .filter(|r| {
                r.headers()
                    .get("x-probe-id")
                    .is_some_and(|v| v.as_bytes() == id.to_string().as_bytes())
            })
            .map(UpstreamSaw::of)
            .collect()
    };

    for (id, ((scenario, outcome), response)) in suite
        .scenarios
        .iter()
        .zip(outcomes)
        .zip(responses)
        .enumerate()
    {
        report.total += 1;
        // Concurrent streams' log lines and gRPC calls interleave in Envoy:
        // they are not compared per stream.
        let mut harness = Observed::in_harness(outcome)
            .map_err(|e| anyhow::anyhow!("{}: harness: {e}", scenario.name))?;
        harness.logs.clear();
        harness.grpc.clear();
        let envoy_observed = Observed {
            upstream: for_id(&upstream_seen, id).into_iter().next(),
            client: match response {
                Ok(r) => Ok(ClientSaw::of(&r)),
                Err(e)
                    if format!("{e:#}").contains("connection closed")
                        || format!("{e:#}").contains("error reading a body") =>
                {
                    Err("reset".to_owned())
                }
                Err(e) if format!("{e:#}").contains("client disconnected") => {
                    Err("disconnected".to_owned())
                }
                Err(e) => bail!("{}: envoy: {e:#}", scenario.name),
            },
            logs: Vec::new(),
            callouts: for_id(&callouts_seen, id),
            grpc: Vec::new(),
        };
        show(&scenario.name, &harness, &envoy_observed);
        let (harness, envoy_observed) = (
            mask_ports(harness, &suite.mask_ports),
            mask_ports(envoy_observed, &suite.mask_ports),
        );
        if harness != envoy_observed {
            report
                .differences
                .push(describe(&scenario.name, &harness, &envoy_observed));
        } else if let Some(problem) = scenario.expect.as_ref().and_then(|e| e.check(&harness)) {
            report
                .differences
                .push(format!("── {}\n  {problem}\n", scenario.name));
        }
    }
    // The interleaving: every stream's lines, in the order they were logged.
    report.total += 1;
    let interleaved = |logs: Vec<String>| Observed {
        upstream: None,
        client: Err(String::new()),
        logs,
        callouts: Vec::new(),
        grpc: Vec::new(),
    };
    let (harness, envoy) = (interleaved(harness_log), interleaved(envoy_log));
    show("the batch's log, in order", &harness, &envoy);
    if harness != envoy {
        report
            .differences
            .push(describe("the batch's log, in order", &harness, &envoy));
    }
    Ok(())
}

/// A `tracing` subscriber that keeps the guest log lines the harness emits
/// (target `weir_harness::guest`) at info level and above, as `level: message`.
#[derive(Default)]
struct GuestLines(std::sync::Mutex<Vec<String>>);

impl GuestLines {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The `level` and `message` fields of one guest log event.
#[derive(Default)]
struct GuestLine {
    level: String,
    message: String,
}

impl tracing::field::Visit for GuestLine {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "level" => self.level = format!("{value:?}").to_lowercase(),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

impl tracing::Subscriber for GuestLines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        metadata.is_event() && metadata.target() == "weir_harness::guest"
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = GuestLine::default();
        event.record(&mut line);
        if matches!(line.level.as_str(), "info" | "warn" | "error" | "critical") {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{}: {}", line.level, line.message));
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Compares a start-up that must fail: both sides refuse the plugin, each
/// reporting a trap in `callback`.
fn start_failure(
    callback: &str,
    harness: Option<weir_harness::Error>,
    envoy: Option<anyhow::Error>,
) -> Report {
    let harness = match harness {
        Some(weir_harness::Error::Trap { function, .. }) if function == callback => Ok(()),
        Some(other) => Err(format!("failed otherwise: {other}")),
        None => Err("started".to_owned()),
    };
    let envoy = match envoy {
        Some(e) if format!("{e:#}").contains(&format!("Function: {callback} failed")) => Ok(()),
        Some(e) => Err(format!("failed otherwise: {e:#}")),
        None => Err("started".to_owned()),
    };
    single_check(format!("start-up must fail in {callback}"), harness, envoy)
}

/// A one-check report: `what` must hold in the harness and in Envoy.
fn single_check(what: String, harness: Result<(), String>, envoy: Result<(), String>) -> Report {
    let mut report = Report {
        total: 1,
        ..Report::default()
    };
    if harness.is_err() || envoy.is_err() {
        report.differences.push(format!(
            "── {what}\n  harness: {harness:?}\n  envoy:   {envoy:?}\n"
        ));
    }
    report
}

/// Both must refuse the configuration in `rejection.callback` (returning
/// false, not trapping), logging `rejection.log`.
fn rejected(
    rejection: &Rejection,
    harness: Option<weir_harness::Error>,
    envoy: Option<anyhow::Error>,
) -> Report {
    use weir_harness::Error as E;
    let harness = match (rejection.callback.as_str(), harness) {
        ("proxy_on_vm_start", Some(E::VmStartFailed { logs, .. }))
        | ("proxy_on_configure", Some(E::ConfigureFailed { logs, .. }))
            if logs.iter().any(|l| l.contains(&rejection.log)) =>
        {
            Ok(())
        }
        (_, Some(other)) => Err(format!("failed otherwise: {other}")),
        (_, None) => Err("started".to_owned()),
    };
    let envoy = match envoy {
        Some(e) if format!("{e:#}").contains(&rejection.log) => Ok(()),
        Some(e) => Err(format!("failed otherwise: {e:#}")),
        None => Err("started".to_owned()),
    };
    single_check(
        format!(
            "{} must refuse the configuration, logging {:?}",
            rejection.callback, rejection.log
        ),
        harness,
        envoy,
    )
}

/// Both must refuse to load the module, naming `function` (the missing import
/// or the mistyped export): the harness at compile or link time, Envoy with
/// "Failed to initialize Wasm code".
fn load_failure(
    function: &str,
    harness: Option<weir_harness::Error>,
    envoy: Option<anyhow::Error>,
) -> Report {
    use weir_harness::Error as E;
    let harness = match harness {
        Some(e @ (E::Link(_) | E::BadExport { .. })) if e.to_string().contains(function) => Ok(()),
        Some(other) => Err(format!("failed otherwise: {other}")),
        None => Err("loaded".to_owned()),
    };
    let envoy = match envoy {
        Some(e) => {
            let text = format!("{e:#}");
            if text.contains("Failed to initialize Wasm code") && text.contains(function) {
                Ok(())
            } else {
                Err(format!("failed otherwise: {text}"))
            }
        }
        None => Err("loaded".to_owned()),
    };
    single_check(format!("loading must fail on {function}"), harness, envoy)
}

/// Replaces every number after a `:` in the values of `names` with `<port>`.
fn mask_ports(mut observed: Observed, names: &[String]) -> Observed {
    if names.is_empty() {
        return observed;
    }
    let mask = |headers: &mut crate::observed::Headers| {
        for (name, value) in headers.iter_mut() {
            if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                *value = mask_port_numbers(value);
            }
        }
    };
    if let Some(up) = observed.upstream.as_mut() {
        mask(&mut up.headers);
    }
    if let Ok(client) = observed.client.as_mut() {
        mask(&mut client.headers);
    }
    observed
}

fn mask_port_numbers(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut after_colon = false;
    let mut in_number = false;
    for c in value.chars() {
        if c.is_ascii_digit() && (after_colon || in_number) {
            if !in_number {
                out.push_str("<port>");
                in_number = true;
            }
        } else {
            in_number = false;
            out.push(c);
        }
        after_colon = c == ':';
    }
    out
}

fn info_logs(logs: &[weir_harness::LogRecord]) -> Vec<String> {
    logs.iter()
        .filter(|l| l.level >= LogLevel::Info)
        .map(|l| format!("{}: {}", l.level, l.message))
        .collect()
}

/// With `WEIR_CONFORMANCE_SHOW` set, prints what a scenario observed (in the
/// harness, and in Envoy where that differs), to read while writing scenarios.
#[allow(
    clippy::print_stderr,
    reason = "an opt-in report for whoever writes scenarios"
)]
fn show(name: &str, harness: &Observed, envoy: &Observed) {
    if std::env::var_os("WEIR_CONFORMANCE_SHOW").is_none() {
        return;
    }
    eprintln!("── {name}");
    if let Some(up) = &harness.upstream {
        eprintln!("  upstream: {} {} {:?}", up.method, up.uri, up.body);
        eprintln!("    headers {:?}", up.headers);
        eprintln!("    trailers {:?}", up.trailers);
    }
    match &harness.client {
        Ok(c) => {
            eprintln!("  client: {} {:?}", c.status, c.body);
            eprintln!("    headers {:?}", c.headers);
            eprintln!("    trailers {:?}", c.trailers);
        }
        Err(e) => eprintln!("  client: {e}"),
    }
    for line in &harness.logs {
        eprintln!("  {line}");
    }
    for grpc in &harness.grpc {
        eprintln!("  grpc: {} {} {:?}", grpc.method, grpc.uri, grpc.body);
    }
    if harness != envoy {
        eprintln!("{}", describe("(envoy differs)", harness, envoy));
    }
}

fn describe(name: &str, harness: &Observed, envoy: &Observed) -> String {
    let mut out = format!("── {name}\n");
    if harness.upstream != envoy.upstream {
        out += &format!(
            "  upstream saw\n    harness: {:?}\n    envoy:   {:?}\n",
            harness.upstream, envoy.upstream
        );
    }
    if harness.client != envoy.client {
        out += &format!(
            "  client saw\n    harness: {:?}\n    envoy:   {:?}\n",
            harness.client, envoy.client
        );
    }
    if harness.grpc != envoy.grpc {
        out += &format!(
            "  grpc\n    harness: {:?}\n    envoy:   {:?}\n",
            harness.grpc, envoy.grpc
        );
    }
    if harness.callouts != envoy.callouts {
        out += &format!(
            "  callouts\n    harness: {:?}\n    envoy:   {:?}\n",
            harness.callouts, envoy.callouts
        );
    }
    if harness.logs != envoy.logs {
        out += "  logs\n";
        let n = harness.logs.len().max(envoy.logs.len());
        for i in 0..n {
            let h = harness.logs.get(i).map_or("", String::as_str);
            let e = envoy.logs.get(i).map_or("", String::as_str);
            let mark = if h == e { " " } else { "≠" };
            out += &format!("   {mark} harness: {h}\n     envoy:   {e}\n");
        }
    }
    out
}

/// Fails with every difference, or returns the count of identical scenarios.
///
/// # Errors
/// Lists the differing scenarios.
pub fn check(reports: &[Report]) -> Result<(usize, usize)> {
    let total: usize = reports.iter().map(|r| r.total).sum();
    let differences: Vec<&String> = reports.iter().flat_map(|r| &r.differences).collect();
    if !differences.is_empty() {
        bail!(
            "{}/{total} scenarios identical; harness and Envoy differ:\n{}",
            total - differences.len(),
            differences
                .iter()
                .map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join("")
        );
    }
    Ok((total, total))
}

#[cfg(test)]
mod tests {
    use super::mask_port_numbers;

    #[test]
    fn ports_are_masked_after_colons_only() {
        assert_eq!(mask_port_numbers("127.0.0.1:54321"), "127.0.0.1:<port>");
        assert_eq!(mask_port_numbers("p:8 q:12x"), "p:<port> q:<port>x");
        assert_eq!(mask_port_numbers("[::1]:443"), "[::<port>]:<port>");
        assert_eq!(mask_port_numbers("no ports 123"), "no ports 123");
    }
}
