//! Reading the filter chain from an Envoy bootstrap YAML, so a test runs the same
//! plugins with the same configuration as the Envoy it mirrors.
//!
//! The subset read: the first listener's HTTP connection manager (its
//! `generate_request_id`, `server_name` and `http_protocol_options.enable_trailers`),
//! the first virtual host's and route's names, the first route's cluster's
//! HTTP/1 `enable_trailers` (in its
//! `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`), its `envoy.filters.http.wasm`
//! filters (plugin name, root id, configuration, failure policy, VM id, VM
//! configuration, local code file, environment key/values), the router's
//! `suppress_envoy_headers` and the first route's timeout; the bootstrap's
//! `node` (`id`, `cluster`, `metadata`, `locality`) and the `metadata` of the
//! first listener, its first virtual host and route and that route's cluster
//! (their `filter_metadata`; see [`crate::Node`], [`crate::Metadata`] for
//! how Envoy reads their YAML). Configuration values
//! must be `google.protobuf.StringValue` (passed raw, as Envoy does). Like
//! Envoy, it refuses a route table whose routes name a cluster the bootstrap
//! does not define, unless the route config sets `validate_clusters: false`:
//! then, as Envoy does, the harness answers a request on the first route, if
//! its cluster is missing, `503` `cluster_not_found` (response flag `NC`; see
//! [`ConnectionManager::route_cluster_missing`]).

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::chain::{FailurePolicy, Filter};
use crate::hcm::ConnectionManager;
use crate::xds::{Node, metadata_from_yaml, node_from_yaml};
use crate::{Engine, Error, Plugin, Result};

const WASM_FILTER: &str = "envoy.filters.http.wasm";
const HCM: &str = "envoy.filters.network.http_connection_manager";
const ROUTER: &str = "envoy.filters.http.router";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// One `envoy.filters.http.wasm` filter of an Envoy config.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WasmFilterConfig {
    /// `config.name`.
    pub name: String,
    /// `config.root_id`.
    pub root_id: String,
    /// `config.configuration` (a `StringValue`'s text).
    pub configuration: String,
    /// `config.failure_policy` (or the deprecated `config.fail_open`).
    pub failure_policy: FailurePolicy,
    /// `config.reload_config.backoff.base_interval` (default 1 s), for
    /// `FAIL_RELOAD`.
    pub reload_backoff: std::time::Duration,
    /// `vm_config.vm_id`.
    pub vm_id: String,
    /// `vm_config.configuration`.
    pub vm_configuration: String,
    /// `vm_config.code.local.filename`.
    pub filename: PathBuf,
    /// `vm_config.environment_variables.key_values`.
    pub environment: Vec<(String, String)>,
    /// `config.allow_on_headers_stop_iteration` (a `BoolValue`).
    pub allow_on_headers_stop_iteration: bool,
}

/// The parts of an Envoy bootstrap the harness emulates.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EnvoyConfig {
    /// The wasm filters, in chain order.
    pub filters: Vec<WasmFilterConfig>,
    /// The connection manager and router settings (the listener's, virtual
    /// host's, route's and cluster's `metadata` among them).
    pub connection_manager: ConnectionManager,
    /// The bootstrap's `node`.
    pub node: Node,
}

fn bad(message: impl Into<String>) -> Error {
    Error::EnvoyConfig(message.into())
}

pub(crate) fn string_at(v: &Value, path: &[&str]) -> Option<String> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A `google.protobuf.Duration` in its YAML/JSON form: seconds with an `s`
/// suffix and up to nine fractional digits (`"2s"`, `"0.250s"`).
fn proto_duration(text: &str) -> Option<std::time::Duration> {
    let number = text.strip_suffix('s')?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 9 {
        return None;
    }
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let secs = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let nanos = if fraction.is_empty() {
        0
    } else {
        fraction.parse::<u32>().ok()? * 10u32.pow(9 - fraction.len() as u32)
    };
    Some(std::time::Duration::new(secs, nanos))
}

fn string_value(v: Option<&Value>, field: &str) -> Result<String> {
    let Some(v) = v else { return Ok(String::new()) };
    match string_at(v, &["@type"]).as_deref() {
        Some(STRING_VALUE) => Ok(string_at(v, &["value"]).unwrap_or_default()),
        other => Err(bad(format!(
            "{field}: only {STRING_VALUE} is supported, found {}",
            other.unwrap_or("no @type")
        ))),
    }
}

/// Envoy's duration strings as used in routes, e.g. `15s` or `0.5s`.
fn duration(s: &str) -> Result<Duration> {
    s.strip_suffix('s')
        .and_then(|n| n.parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| bad(format!("unsupported duration {s:?}")))
}

pub(crate) fn wasm_filter(filter: &Value) -> Result<WasmFilterConfig> {
    let config = filter
        .get("typed_config")
        .and_then(|t| t.get("config"))
        .ok_or_else(|| bad("wasm filter without typed_config.config"))?;
    let vm = config
        .get("vm_config")
        .ok_or_else(|| bad("wasm filter without config.vm_config"))?;
    let filename = string_at(vm, &["code", "local", "filename"])
        .ok_or_else(|| bad("vm_config.code: only local.filename is supported by the harness"))?;
    let fail_open = string_at(config, &["fail_open"]).as_deref() == Some("true");
    let failure_policy = match string_at(config, &["failure_policy"]).as_deref() {
        None | Some("UNSPECIFIED") if fail_open => FailurePolicy::FailOpen,
        None | Some("UNSPECIFIED") => FailurePolicy::FailClosed,
        // Envoy refuses the plugin when both are set.
        Some(_) if fail_open => {
            return Err(bad("only one of fail_open or failure_policy can be set"));
        }
        Some("FAIL_CLOSED") => FailurePolicy::FailClosed,
        Some("FAIL_OPEN") => FailurePolicy::FailOpen,
        Some("FAIL_RELOAD") => FailurePolicy::FailReload,
        Some(other) => return Err(bad(format!("unknown failure_policy {other}"))),
    };
    let reload_backoff = match string_at(config, &["reload_config", "backoff", "base_interval"]) {
        None => std::time::Duration::from_secs(1),
        Some(text) => proto_duration(&text).ok_or_else(|| {
            bad(format!(
                "reload_config.backoff.base_interval: {text:?} is not a duration such as \"1.5s\""
            ))
        })?,
    };
    let environment = vm
        .get("environment_variables")
        .and_then(|e| e.get("key_values"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Ok(WasmFilterConfig {
        name: string_at(config, &["name"]).unwrap_or_default(),
        root_id: string_at(config, &["root_id"]).unwrap_or_default(),
        configuration: string_value(config.get("configuration"), "config.configuration")?,
        failure_policy,
        reload_backoff,
        vm_id: string_at(vm, &["vm_id"]).unwrap_or_default(),
        vm_configuration: string_value(vm.get("configuration"), "vm_config.configuration")?,
        filename: PathBuf::from(filename),
        environment,
        allow_on_headers_stop_iteration: config
            .get("allow_on_headers_stop_iteration")
            .and_then(|v| v.as_bool().or_else(|| v.get("value")?.as_bool()))
            .unwrap_or(false),
    })
}

/// Whether the static cluster `name` carries HTTP/1 trailers: its
/// `HttpProtocolOptions` (explicit HTTP/1 config), or the deprecated
/// cluster-level `http_protocol_options`.
fn cluster_trailers(root: &Value, name: &str) -> bool {
    const OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    let Some(cluster) = static_cluster(root, name) else {
        return false;
    };
    let explicit = cluster
        .get("typed_extension_protocol_options")
        .and_then(|o| o.get(OPTIONS))
        .and_then(|o| {
            string_at(
                o,
                &[
                    "explicit_http_config",
                    "http_protocol_options",
                    "enable_trailers",
                ],
            )
        });
    let legacy = string_at(cluster, &["http_protocol_options", "enable_trailers"]);
    explicit.or(legacy).as_deref() == Some("true")
}

/// The static cluster `name` of the bootstrap, if it defines it.
pub(crate) fn static_cluster<'a>(root: &'a Value, name: &str) -> Option<&'a Value> {
    root.get("static_resources")
        .and_then(|s| s.get("clusters"))
        .and_then(Value::as_sequence)
        .and_then(|c| {
            c.iter()
                .find(|c| string_at(c, &["name"]).as_deref() == Some(name))
        })
}

/// The names of the bootstrap's static clusters.
fn static_clusters(root: &Value) -> Vec<String> {
    root.get("static_resources")
        .and_then(|s| s.get("clusters"))
        .and_then(Value::as_sequence)
        .map(|clusters| {
            clusters
                .iter()
                .filter_map(|c| string_at(c, &["name"]))
                .collect()
        })
        .unwrap_or_default()
}

/// The clusters a route action names: `cluster`, or each of
/// `weighted_clusters.clusters`.
fn route_clusters(action: &Value) -> Vec<String> {
    let mut names: Vec<String> = string_at(action, &["cluster"]).into_iter().collect();
    if let Some(weighted) = action
        .get("weighted_clusters")
        .and_then(|w| w.get("clusters"))
        .and_then(Value::as_sequence)
    {
        names.extend(weighted.iter().filter_map(|c| string_at(c, &["name"])));
    }
    names
}

/// Envoy's check of a static route table: with `validate_clusters` (the
/// default for a `route_config` given inline), a route to a cluster the
/// bootstrap does not define makes Envoy 1.40 refuse the configuration at
/// start-up (`route: unknown cluster '<name>'`). Without it Envoy starts and
/// answers such a route `503` with details `cluster_not_found` and response
/// flag `NC` (measured, `tests/conformance/missing-cluster.yaml`). Returns
/// whether the emulated (first) route's `cluster` is such a cluster, which
/// the harness then answers the same way
/// ([`ConnectionManager::route_cluster_missing`]). A missing cluster among
/// the emulated route's `weighted_clusters` is refused: Envoy picks one of
/// them at random for each request.
fn check_route_clusters(root: &Value, hcm: &Value) -> Result<bool> {
    let Some(route_config) = hcm.get("route_config") else {
        return Ok(false);
    };
    let validate = string_at(route_config, &["validate_clusters"]).as_deref() != Some("false");
    let known = static_clusters(root);
    let hosts = route_config
        .get("virtual_hosts")
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut emulated_missing = false;
    for (h, host) in hosts.iter().enumerate() {
        let host_name = string_at(host, &["name"]).unwrap_or_else(|| format!("#{h}"));
        let routes = host
            .get("routes")
            .and_then(Value::as_sequence)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (r, route) in routes.iter().enumerate() {
            let Some(action) = route.get("route") else {
                continue;
            };
            let route_name = string_at(route, &["name"]).unwrap_or_else(|| format!("#{r}"));
            let emulated = h == 0 && r == 0;
            let single = string_at(action, &["cluster"]);
            for cluster in route_clusters(action) {
                if known.contains(&cluster) {
                    continue;
                }
                if validate {
                    return Err(bad(format!(
                        "route `{route_name}` of virtual host `{host_name}` names cluster \
                         `{cluster}`, which static_resources does not define: Envoy refuses \
                         this configuration at start-up (route: unknown cluster '{cluster}'); \
                         define the cluster, or set the route config's validate_clusters: false"
                    )));
                }
                if !emulated {
                    continue;
                }
                if single.as_deref() == Some(cluster.as_str()) {
                    emulated_missing = true;
                } else {
                    return Err(bad(format!(
                        "route `{route_name}` of virtual host `{host_name}` names cluster \
                         `{cluster}` among its weighted_clusters, which static_resources does \
                         not define; Envoy answers the requests it picks that cluster for 503 \
                         (cluster_not_found), a random choice the harness does not emulate"
                    )));
                }
            }
        }
    }
    Ok(emulated_missing)
}

impl EnvoyConfig {
    /// Parses the subset of an Envoy bootstrap described in the module docs.
    ///
    /// # Errors
    /// [`Error::EnvoyConfig`] for invalid YAML or a field the harness cannot
    /// emulate (it never silently ignores one it reads).
    pub fn parse(yaml: &str) -> Result<Self> {
        let root: Value = serde_yaml_ng::from_str(yaml).map_err(|e| bad(e.to_string()))?;
        let hcm = root
            .get("static_resources")
            .and_then(|s| s.get("listeners"))
            .and_then(Value::as_sequence)
            .and_then(|l| l.first())
            .and_then(|l| l.get("filter_chains"))
            .and_then(Value::as_sequence)
            .and_then(|c| c.first())
            .and_then(|c| c.get("filters"))
            .and_then(Value::as_sequence)
            .and_then(|f| {
                f.iter()
                    .find(|f| string_at(f, &["name"]).as_deref() == Some(HCM))
            })
            .and_then(|f| f.get("typed_config"))
            .ok_or_else(|| {
                bad("no http_connection_manager in the first listener's first filter chain")
            })?;
        let node = node_from_yaml(root.get("node"))?;
        let listener = root
            .get("static_resources")
            .and_then(|s| s.get("listeners"))
            .and_then(Value::as_sequence)
            .and_then(|l| l.first());
        let mut manager = ConnectionManager::default().listener_metadata(metadata_from_yaml(
            listener.and_then(|l| l.get("metadata")),
            "listeners[0].metadata",
        )?);
        let listener_limit =
            listener.and_then(|l| string_at(l, &["per_connection_buffer_limit_bytes"]));
        if let Some(limit) = listener_limit {
            let bytes = limit
                .parse::<usize>()
                .map_err(|_| bad("per_connection_buffer_limit_bytes is not a number of bytes"))?;
            manager = manager.buffer_limit(bytes);
        }
        if let Some(flag) = string_at(hcm, &["generate_request_id"]) {
            manager = manager.generate_request_id(flag == "true");
        }
        if let Some(name) = string_at(hcm, &["server_name"]) {
            manager = manager.server_name(name);
        }
        if let Some(flag) = string_at(hcm, &["http_protocol_options", "enable_trailers"]) {
            manager = manager.enable_trailers(flag == "true");
        }
        let cluster_missing = check_route_clusters(&root, hcm)?;
        let first_host = hcm
            .get("route_config")
            .and_then(|r| r.get("virtual_hosts"))
            .and_then(Value::as_sequence)
            .and_then(|v| v.first());
        if let Some(name) = first_host.and_then(|h| string_at(h, &["name"])) {
            manager = manager.virtual_host_name(name);
        }
        manager = manager.virtual_host_metadata(metadata_from_yaml(
            first_host.and_then(|h| h.get("metadata")),
            "route_config.virtual_hosts[0].metadata",
        )?);
        let first_entry = first_host
            .and_then(|v| v.get("routes"))
            .and_then(Value::as_sequence)
            .and_then(|r| r.first());
        if let Some(name) = first_entry.and_then(|r| string_at(r, &["name"])) {
            manager = manager.route_name(name);
        }
        manager = manager.route_metadata(metadata_from_yaml(
            first_entry.and_then(|r| r.get("metadata")),
            "route_config.virtual_hosts[0].routes[0].metadata",
        )?);
        let first_route = first_entry.and_then(|r| r.get("route"));
        if let Some(timeout) = first_route
            .and_then(|r| r.get("timeout"))
            .and_then(Value::as_str)
        {
            let timeout = duration(timeout)?;
            manager = manager.route_timeout((!timeout.is_zero()).then_some(timeout));
        }
        if let Some(cluster) = first_route.and_then(|r| string_at(r, &["cluster"])) {
            manager = manager.cluster_metadata(metadata_from_yaml(
                static_cluster(&root, &cluster).and_then(|c| c.get("metadata")),
                &format!("clusters[{cluster}].metadata"),
            )?);
            manager = manager.upstream_enable_trailers(cluster_trailers(&root, &cluster));
            manager = manager
                .route_cluster(cluster)
                .route_cluster_missing(cluster_missing);
        }
        let http_filters = hcm
            .get("http_filters")
            .and_then(Value::as_sequence)
            .ok_or_else(|| bad("http_connection_manager without http_filters"))?;
        let mut filters = Vec::new();
        for f in http_filters {
            match string_at(f, &["name"]).as_deref() {
                Some(WASM_FILTER) => filters.push(wasm_filter(f)?),
                Some(ROUTER) => {
                    let suppress = string_at(f, &["typed_config", "suppress_envoy_headers"]);
                    manager = manager.suppress_envoy_headers(suppress.as_deref() == Some("true"));
                }
                Some(other) => {
                    return Err(bad(format!(
                        "http filter {other} is not emulated by the harness"
                    )));
                }
                None => return Err(bad("http filter without a name")),
            }
        }
        Ok(Self {
            filters,
            connection_manager: manager,
            node,
        })
    }

    /// A chain builder with these filters and settings. `load` turns each filter's
    /// `filename` into a plugin (tests map the in-container path to a build output).
    ///
    /// # Errors
    /// Whatever `load` returns.
    pub fn chain_builder(
        &self,
        engine: &Engine,
        mut load: impl FnMut(&WasmFilterConfig) -> Result<Plugin>,
    ) -> Result<crate::ChainBuilder> {
        let mut builder = crate::Chain::builder(engine)
            .connection_manager(self.connection_manager.clone())
            .node(self.node.clone());
        for f in &self.filters {
            let mut filter = Filter::new(load(f)?)
                .name(&f.name)
                .root_id(&f.root_id)
                .vm_id(&f.vm_id)
                .configuration(f.configuration.as_bytes())
                .vm_configuration(f.vm_configuration.as_bytes())
                .failure_policy(f.failure_policy)
                .reload_backoff(f.reload_backoff)
                .allow_on_headers_stop_iteration(f.allow_on_headers_stop_iteration);
            for (k, v) in &f.environment {
                filter = filter.env(k, v);
            }
            builder = builder.filter(filter);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use super::{EnvoyConfig, proto_duration};
    use crate::Error;
    use std::time::Duration;

    /// A bootstrap whose first route goes to `first` and second to `second`,
    /// with `validate_clusters` as given; `upstream` is its only cluster.
    fn bootstrap(first: &str, second: &str, validate: Option<bool>) -> String {
        let validate = validate.map_or(String::new(), |v| format!("validate_clusters: {v}"));
        format!(
            r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          route_config:
            {validate}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - name: first
                match: {{ prefix: "/a" }}
                route: {first}
              - name: second
                match: {{ prefix: "/" }}
                route: {second}
          http_filters:
          - name: envoy.filters.http.router
  clusters:
  - name: upstream
"#
        )
    }

    fn refusal(yaml: &str) -> String {
        match EnvoyConfig::parse(yaml) {
            Err(Error::EnvoyConfig(text)) => text,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_route_to_a_missing_cluster_is_refused_unless_unvalidated() {
        for validate in [None, Some(true)] {
            let yaml = bootstrap("{ cluster: missing }", "{ cluster: upstream }", validate);
            let text = refusal(&yaml);
            assert!(
                text.contains("`first`") && text.contains("unknown cluster 'missing'"),
                "{text}"
            );
            let yaml = bootstrap("{ cluster: upstream }", "{ cluster: gone }", validate);
            let text = refusal(&yaml);
            assert!(
                text.contains("`second`") && text.contains("unknown cluster 'gone'"),
                "{text}"
            );
        }
    }

    #[test]
    fn an_unvalidated_missing_cluster_on_the_first_route_is_answered_not_refused() {
        let yaml = bootstrap("{ cluster: missing }", "{ cluster: upstream }", Some(false));
        let config = EnvoyConfig::parse(&yaml).expect("accepted, as Envoy does");
        let hcm = &config.connection_manager;
        assert!(hcm.route_cluster_is_missing());
        // The stream info has no cluster.
        assert_eq!(hcm.route_cluster_name(), None);
        assert_eq!(hcm.route_name_value(), "first");
    }

    #[test]
    fn a_missing_cluster_elsewhere_leaves_the_first_route_alone() {
        let yaml = bootstrap("{ cluster: upstream }", "{ cluster: gone }", Some(false));
        let config = EnvoyConfig::parse(&yaml).expect("accepted");
        let hcm = &config.connection_manager;
        assert!(!hcm.route_cluster_is_missing());
        assert_eq!(hcm.route_cluster_name(), Some("upstream"));
    }

    #[test]
    fn a_missing_weighted_cluster_on_the_first_route_is_refused() {
        let weighted = "{ weighted_clusters: { clusters: [{ name: upstream, weight: 1 }, \
                        { name: missing, weight: 1 }] } }";
        let yaml = bootstrap(weighted, "{ cluster: upstream }", Some(false));
        let text = refusal(&yaml);
        assert!(
            text.contains("`missing`") && text.contains("weighted_clusters"),
            "{text}"
        );
    }

    #[test]
    fn the_node_and_the_emulated_routes_metadata_are_read() {
        let yaml = bootstrap("{ cluster: upstream }", "{ cluster: upstream }", None)
            .replace(
                "static_resources:",
                "node: {id: node-a, cluster: c, metadata: {k: v}}\nstatic_resources:",
            )
            .replace(
                "  - name: l\n",
                "  - name: l\n    metadata: {filter_metadata: {lf: {a: 1}}}\n",
            )
            .replace(
                "            - name: all\n",
                "            - name: all\n              metadata: {filter_metadata: {vf: {}}}\n",
            )
            .replace(
                "              - name: first\n",
                "              - name: first\n                metadata: {filter_metadata: {rf: {b: [x]}}}\n",
            )
            .replace(
                "  - name: upstream\n",
                "  - name: upstream\n    metadata: {filter_metadata: {cf: {c: true}}}\n",
            );
        let config = EnvoyConfig::parse(&yaml).expect("valid");
        assert_eq!(config.node.id, "node-a");
        assert_eq!(config.node.cluster, "c");
        let xds = config.connection_manager.bootstrap(config.node.clone());
        let names = |m: &crate::Metadata| m.filter_metadata.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(&xds.listener), ["lf"]);
        assert_eq!(names(&xds.virtual_host), ["vf"]);
        assert_eq!(names(&xds.route), ["rf"]);
        assert_eq!(names(&xds.cluster), ["cf"]);

        let float = yaml.replace("{a: 1}", "{a: 1.5}");
        let text = refusal(&float);
        assert!(
            text.contains("listeners[0].metadata.filter_metadata.lf.a"),
            "{text}"
        );
        let typed = yaml.replace("{filter_metadata: {vf: {}}}", "{typed_filter_metadata: {}}");
        let text = refusal(&typed);
        assert!(text.contains("typed_filter_metadata"), "{text}");
    }

    #[test]
    fn durations_in_protobuf_json_form() {
        assert_eq!(proto_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(proto_duration("0.002s"), Some(Duration::from_millis(2)));
        assert_eq!(proto_duration(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(proto_duration("1.000000001s"), Some(Duration::new(1, 1)));
        for bad in ["2", "s", "-1s", "1.5ms", "1.0000000001s", "1e3s", ""] {
            assert_eq!(proto_duration(bad), None, "{bad:?}");
        }
    }
}
