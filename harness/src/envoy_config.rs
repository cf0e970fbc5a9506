//! Reading the filter chain from an Envoy bootstrap YAML, so a test runs the same
//! plugins with the same configuration as the Envoy it mirrors.
//!
//! **Read**: the first listener's `per_connection_buffer_limit_bytes` and its
//! first filter chain, which must be one HTTP connection manager: its
//! `generate_request_id`, `server_name`, `http_protocol_options.enable_trailers`
//! and path normalization (`normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`; see [`ConnectionManager::normalize_path`]);
//! its route table's `validate_clusters`, whose first virtual host (its `name`;
//! its `domains` must include `*`) and that host's first route (its `name`;
//! `match: { prefix: "/" }`, so that it takes every request as the harness
//! routes them all through it; its `route`'s `cluster` and `timeout`) are
//! emulated; that cluster's HTTP/1 `enable_trailers` (in its
//! `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`, or the deprecated
//! cluster-level field); the `envoy.filters.http.wasm` filters (plugin name,
//! root id, configuration, failure policy and reload backoff, VM id, VM
//! configuration, local code file, environment key/values,
//! `allow_on_headers_stop_iteration`) and the router's `suppress_envoy_headers`,
//! which must end the chain; the bootstrap's `node` (`id`, `cluster`,
//! `metadata`, `locality`) and the `metadata` of the first listener, of the
//! emulated virtual host and route, of that route's cluster and of the
//! cluster's endpoint and its locality (`load_assignment.endpoints[0]`'s and
//! its `lb_endpoints[0]`'s; their `filter_metadata`; see [`crate::Node`],
//! [`crate::Metadata`] for how Envoy reads their YAML) and that cluster's
//! `type` (the endpoint of a `STRICT_DNS` or `LOGICAL_DNS` cluster has empty
//! metadata where the bootstrap gives none, a `STATIC` one's none: see
//! [`ConnectionManager::upstream_host_metadata`]), and the endpoints'
//! `locality` (`upstream.locality`, see
//! [`ConnectionManager::upstream_locality`]). Configuration values must be
//! `google.protobuf.StringValue` (passed raw, as Envoy does). Like Envoy, it
//! refuses a route table whose routes name a cluster the bootstrap does not
//! define, unless the route config sets `validate_clusters: false`: then, as
//! Envoy does, the harness answers a request on the first route, if its cluster
//! is missing, `503` `cluster_not_found` (response flag `NC`; see
//! [`ConnectionManager::route_cluster_missing`]).
//!
//! Every other field of the bootstrap is classified by path (the tables and
//! the reason for each class are in `bootstrap.rs`):
//! - **inert**, as it cannot change what a filter, an upstream or a client
//!   observes in the harness: e.g. `admin`, stats settings, the listener's
//!   `address` and `stat_prefix`, access logs, the `type` of clusters other
//!   than the route's, a cluster's `connect_timeout`, `lb_policy` and its one
//!   endpoint's address, the
//!   protocol of clusters other than the route's (callouts go to the test's
//!   handlers), routes after the first (no request reaches them), `@type` keys;
//! - **refused** with [`Error::EnvoyConfig`] naming the field's full path and
//!   what Envoy would do, when ordinary requests would be answered
//!   differently: e.g. path or host rewrites, header additions or removals in
//!   the route table, other HTTP or network filters, a second virtual host or
//!   filter chain, route matching other than `prefix: "/"`, redirects and
//!   direct responses, HTTP/2 clients or upstreams, `use_remote_address`,
//!   `via`, tracing, RDS;
//! - **warned** in [`EnvoyConfig::warnings`] (and logged with
//!   `tracing::warn!`), when only edge cases differ: e.g. timeouts the harness
//!   does not model (`stream_idle_timeout`, `common_http_protocol_options`,
//!   a route's `idle_timeout`), retries and mirroring, a second listener,
//!   circuit breakers and health checks;
//! - a field the tables do not know is **refused**: the loader cannot tell
//!   what Envoy does with it. It never silently ignores a field.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use crate::bootstrap::{self, Loader};
use crate::chain::{FailurePolicy, Filter};
use crate::hcm::{ConnectionManager, EscapedSlashesAction};
use crate::xds::{Node, host_metadata_from_yaml, metadata_from_yaml, node_from_yaml};
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
    /// Fields the harness accepts but does not emulate, where only edge cases
    /// differ from Envoy (each names the field's path and what Envoy does);
    /// also logged with `tracing::warn!` when parsed.
    pub warnings: Vec<String>,
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

/// The first virtual host and its first route: the harness sends every
/// request through them, so, as Envoy's matching goes, they must take every
/// request (the walk refuses any other match condition and a second virtual
/// host).
fn emulated_route(hcm: &Value) -> Result<(&Value, &Value)> {
    let host = hcm
        .get("route_config")
        .and_then(|r| r.get("virtual_hosts"))
        .and_then(Value::as_sequence)
        .and_then(|v| v.first())
        .ok_or_else(|| {
            bad(
                "route_config has no virtual host: the harness emulates a static route table \
                 whose first virtual host and route take every request",
            )
        })?;
    let every_host = host
        .get("domains")
        .and_then(Value::as_sequence)
        .is_some_and(|d| d.iter().any(|d| d.as_str() == Some("*")));
    if !every_host {
        return Err(bad(
            "the first virtual host's domains must include \"*\": Envoy answers requests for \
             other hosts 404 (route_not_found), which the harness does not emulate",
        ));
    }
    let route = host
        .get("routes")
        .and_then(Value::as_sequence)
        .and_then(|r| r.first())
        .ok_or_else(|| {
            bad(
                "the first virtual host has no route: Envoy answers every request 404 \
                 (route_not_found), which the harness does not emulate",
            )
        })?;
    let prefix = route.get("match").and_then(|m| string_at(m, &["prefix"]));
    if !matches!(prefix.as_deref(), Some("/" | "")) || route.get("route").is_none() {
        return Err(bad("the first route must send every request to a cluster \
             (match: { prefix: \"/\" }, route: { cluster: ... }): the harness routes every \
             request through it"));
    }
    Ok((host, route))
}

impl EnvoyConfig {
    /// Parses the subset of an Envoy bootstrap described in the module docs.
    ///
    /// # Errors
    /// [`Error::EnvoyConfig`] for invalid YAML or a field the harness cannot
    /// emulate (it never silently ignores one it reads).
    pub fn parse(yaml: &str) -> Result<Self> {
        let root: Value = serde_yaml_ng::from_str(yaml).map_err(|e| bad(e.to_string()))?;
        let chain = root
            .get("static_resources")
            .and_then(|s| s.get("listeners"))
            .and_then(Value::as_sequence)
            .and_then(|l| l.first())
            .and_then(|l| l.get("filter_chains"))
            .and_then(Value::as_sequence)
            .and_then(|c| c.first())
            .and_then(|c| c.get("filters"))
            .and_then(Value::as_sequence)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let hcm = match chain {
            [only] if string_at(only, &["name"]).as_deref() == Some(HCM) => only
                .get("typed_config")
                .ok_or_else(|| bad("http_connection_manager without typed_config"))?,
            _ => {
                return Err(bad("the first listener's first filter chain must be one \
                     http_connection_manager, the only network filter the harness emulates"));
            }
        };
        let cluster_missing = check_route_clusters(&root, hcm)?;
        let (first_host, first_entry) = emulated_route(hcm)?;
        let first_route = first_entry.get("route");
        let upstream = first_route.and_then(|r| string_at(r, &["cluster"]));
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
        if let Some(flag) = string_at(hcm, &["normalize_path"]) {
            manager = manager.normalize_path(flag == "true");
        }
        if let Some(flag) = string_at(hcm, &["merge_slashes"]) {
            manager = manager.merge_slashes(flag == "true");
        }
        if let Some(name) = string_at(hcm, &["path_with_escaped_slashes_action"]) {
            let action = EscapedSlashesAction::from_name(&name).ok_or_else(|| {
                bad(format!(
                    "path_with_escaped_slashes_action {name:?} is not one Envoy knows \
                     (IMPLEMENTATION_SPECIFIC_DEFAULT, KEEP_UNCHANGED, REJECT_REQUEST, \
                     UNESCAPE_AND_REDIRECT, UNESCAPE_AND_FORWARD)"
                ))
            })?;
            manager = manager.path_with_escaped_slashes_action(action);
        }
        if let Some(name) = string_at(first_host, &["name"]) {
            manager = manager.virtual_host_name(name);
        }
        manager = manager.virtual_host_metadata(metadata_from_yaml(
            first_host.get("metadata"),
            "route_config.virtual_hosts[0].metadata",
        )?);
        if let Some(name) = string_at(first_entry, &["name"]) {
            manager = manager.route_name(name);
        }
        manager = manager.route_metadata(metadata_from_yaml(
            first_entry.get("metadata"),
            "route_config.virtual_hosts[0].routes[0].metadata",
        )?);
        if let Some(timeout) = first_route
            .and_then(|r| r.get("timeout"))
            .and_then(Value::as_str)
        {
            let timeout = duration(timeout)?;
            manager = manager.route_timeout((!timeout.is_zero()).then_some(timeout));
        }
        if let Some(cluster) = upstream.clone() {
            manager = manager.cluster_metadata(metadata_from_yaml(
                static_cluster(&root, &cluster).and_then(|c| c.get("metadata")),
                &format!("clusters[{cluster}].metadata"),
            )?);
            let host = host_metadata_from_yaml(static_cluster(&root, &cluster), &cluster)?;
            if let Some(metadata) = host.endpoint {
                manager = manager.upstream_host_metadata(metadata);
            }
            if let Some(metadata) = host.locality {
                manager = manager.upstream_host_locality_metadata(metadata);
            }
            let place = host.place;
            manager = manager.upstream_locality(place.region, place.zone, place.sub_zone);
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
        for (i, f) in http_filters.iter().enumerate() {
            let name = string_at(f, &["name"]);
            // Envoy's rule: the terminal filter, and only it, ends the chain.
            if (name.as_deref() == Some(ROUTER)) != (i + 1 == http_filters.len()) {
                return Err(bad(format!(
                    "http_filters[{i}]: {ROUTER} must be the last http filter, and only it"
                )));
            }
            match name.as_deref() {
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
        // Every other field: after the reads above, whose errors say more.
        let warnings = bootstrap::check(
            &root,
            Loader::Http {
                upstream: upstream.as_deref(),
            },
        )?;
        Ok(Self {
            filters,
            connection_manager: manager,
            node,
            warnings,
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
    use crate::bootstrap::testing::with;
    use std::time::Duration;

    /// A bootstrap like the ones the repository ships: admin, a listener with
    /// the connection manager (a wasm filter, the router), the route's
    /// cluster, a callout cluster and a gRPC cluster.
    const SHIPPED: &str = r#"
admin:
  address:
    socket_address: { address: 0.0.0.0, port_value: 9901 }
stats_config:
  stats_tags:
  - tag_name: result
    regex: '(\.result=([^.]*))'
static_resources:
  listeners:
  - name: ingress_http
    address:
      socket_address: { address: 0.0.0.0, port_value: 10000 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          codec_type: AUTO
          generate_request_id: false
          route_config:
            name: local_routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: upstream, timeout: 15s }
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: probe
                root_id: ""
                failure_policy: FAIL_CLOSED
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: "{}"
                vm_config:
                  vm_id: probe
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: /etc/envoy/filters/probe.wasm } }
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: grpc
    type: STRICT_DNS
    connect_timeout: 2s
    lb_policy: ROUND_ROBIN
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
    load_assignment:
      cluster_name: grpc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: grpc, port_value: 8080 }
  - name: upstream
    type: STRICT_DNS
    connect_timeout: 2s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: upstream, port_value: 8080 }
"#;

    const LISTENER: &str = "static_resources.listeners.0";
    const HCM: &str = "static_resources.listeners.0.filter_chains.0.filters.0.typed_config";
    const HCM_PATH: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
    const ROUTE: &str = "static_resources.listeners.0.filter_chains.0.filters.0.typed_config.\
                         route_config.virtual_hosts.0.routes.0";
    const UPSTREAM: &str = "static_resources.clusters.1";

    fn parsed(yaml: &str) -> EnvoyConfig {
        EnvoyConfig::parse(yaml).unwrap_or_else(|e| panic!("refused: {e}"))
    }

    #[test]
    fn a_shipped_like_bootstrap_loads_without_warnings() {
        let config = parsed(SHIPPED);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert_eq!(config.filters.len(), 1);
        assert_eq!(
            config.connection_manager.route_cluster_name(),
            Some("upstream")
        );
    }

    #[test]
    fn a_refused_field_names_its_full_path_and_what_envoy_does() {
        let yaml = with(SHIPPED, &format!("{ROUTE}.route.prefix_rewrite"), "/v2/");
        let text = refusal(&yaml);
        assert!(
            text.contains(&format!(
                "{HCM_PATH}.route_config.virtual_hosts[0].routes[0].route.prefix_rewrite"
            )) && text.contains("rewrites the path"),
            "{text}"
        );
        // Each of these answers ordinary requests differently in Envoy.
        for (path, value, says) in [
            (
                format!("{ROUTE}.request_headers_to_add"),
                "[{header: {key: x-a, value: b}}]",
                "routes[0].request_headers_to_add",
            ),
            (
                format!("{HCM}.route_config.virtual_hosts.0.response_headers_to_remove"),
                "[server]",
                "virtual_hosts[0].response_headers_to_remove",
            ),
            (
                format!("{ROUTE}.route.host_rewrite_literal"),
                "example.com",
                "route.host_rewrite_literal",
            ),
            (
                format!("{HCM}.codec_type"),
                "HTTP2",
                "typed_config.codec_type is \"HTTP2\"",
            ),
            (
                format!("{ROUTE}.match.prefix"),
                "/api",
                "first route must send every request",
            ),
            (
                format!("{ROUTE}.match.headers"),
                "[{name: x-a, present_match: true}]",
                "routes[0].match.headers",
            ),
            (
                format!("{HCM}.route_config.virtual_hosts.1"),
                "{name: other, domains: [example.com], routes: [{match: {prefix: /}, route: {cluster: upstream}}]}",
                "virtual_hosts[1]",
            ),
            (
                format!("{UPSTREAM}.typed_extension_protocol_options"),
                "{envoy.extensions.upstreams.http.v3.HttpProtocolOptions: {explicit_http_config: {http2_protocol_options: {}}}}",
                "explicit_http_config.http2_protocol_options",
            ),
            (
                format!("{HCM}.http_filters.0.typed_config.@type"),
                "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "http_filters[0].typed_config.@type",
            ),
            (
                format!("{HCM}.use_remote_address"),
                "true",
                "x-forwarded-for",
            ),
            (
                format!("{LISTENER}.filter_chains.0.transport_socket"),
                "{name: envoy.transport_sockets.tls}",
                "filter_chains[0].transport_socket",
            ),
            (
                "dynamic_resources".to_owned(),
                "{lds_config: {}}",
                "dynamic_resources",
            ),
        ] {
            let text = refusal(&with(SHIPPED, &path, value));
            assert!(text.contains(says), "{path}: {text}");
        }
    }

    #[test]
    fn every_refusal_is_reported_at_once() {
        let yaml = with(SHIPPED, &format!("{ROUTE}.route.prefix_rewrite"), "/v2/");
        let yaml = with(&yaml, &format!("{HCM}.via"), "weir");
        let text = refusal(&yaml);
        assert!(
            text.contains("prefix_rewrite") && text.contains(".via"),
            "{text}"
        );
    }

    #[test]
    fn a_warned_field_is_accepted_and_listed() {
        for (path, value, says) in [
            (
                format!("{HCM}.common_http_protocol_options.idle_timeout"),
                "30s",
                "common_http_protocol_options.idle_timeout",
            ),
            (
                format!("{HCM}.stream_idle_timeout"),
                "5s",
                "stream_idle_timeout",
            ),
            (
                format!("{ROUTE}.route.retry_policy"),
                "{retry_on: 5xx}",
                "route.retry_policy: Envoy retries",
            ),
            (
                "static_resources.listeners.1".to_owned(),
                "{name: other}",
                "listeners[1]: not emulated",
            ),
        ] {
            let config = parsed(&with(SHIPPED, &path, value));
            assert!(
                config.warnings.len() == 1 && config.warnings[0].contains(says),
                "{path}: {:?}",
                config.warnings
            );
        }
    }

    #[test]
    fn the_node_and_the_emulated_metadata_are_read_not_warned() {
        for (path, value) in [
            ("node".to_owned(), "{id: n1, cluster: c}"),
            (
                format!("{ROUTE}.metadata"),
                "{filter_metadata: {a: {b: c}}}",
            ),
            (
                format!("{LISTENER}.metadata"),
                "{filter_metadata: {a: {b: c}}}",
            ),
            (
                format!("{UPSTREAM}.metadata"),
                "{filter_metadata: {a: {b: c}}}",
            ),
        ] {
            let config = parsed(&with(SHIPPED, &path, value));
            assert!(config.warnings.is_empty(), "{path}: {:?}", config.warnings);
        }
        // Another cluster's metadata, its endpoint's and its locality's: no
        // stream goes there.
        for path in [
            "static_resources.clusters.0.metadata",
            "static_resources.clusters.0.load_assignment.endpoints.0.lb_endpoints.0.metadata",
            "static_resources.clusters.0.load_assignment.endpoints.0.metadata",
        ] {
            let other = parsed(&with(SHIPPED, path, "{filter_metadata: {a: {b: c}}}"));
            assert!(other.warnings.is_empty(), "{path}: {:?}", other.warnings);
            assert_eq!(
                format!("{:?}", other.connection_manager),
                format!("{:?}", parsed(SHIPPED).connection_manager),
                "{path}"
            );
        }
    }

    #[test]
    fn the_upstream_hosts_and_its_localitys_metadata_are_read_not_warned() {
        let endpoint = format!("{UPSTREAM}.load_assignment.endpoints.0.lb_endpoints.0.metadata");
        let locality = format!("{UPSTREAM}.load_assignment.endpoints.0.metadata");
        let yaml = with(
            &with(
                SHIPPED,
                &endpoint,
                "{filter_metadata: {istio: {workload: reviews-v2, labels: {app: reviews}}}}",
            ),
            &locality,
            "{}",
        );
        let config = parsed(&yaml);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let xds = config.connection_manager.bootstrap(config.node.clone());
        let host = xds.host.endpoint.expect("the endpoint's metadata");
        assert_eq!(host.filter_metadata.keys().collect::<Vec<_>>(), ["istio"]);
        // Given, if empty: a locality with metadata.
        assert_eq!(xds.host.locality, Some(crate::Metadata::new()));
        // Neither given: a STATIC cluster's host has none, a DNS cluster's
        // (the shipped one is STRICT_DNS) an empty message.
        let none = parsed(SHIPPED);
        let xds = none.connection_manager.bootstrap(none.node.clone());
        let empty = crate::xds::HostMetadata {
            endpoint: Some(crate::Metadata::new()),
            locality: Some(crate::Metadata::new()),
            ..crate::xds::HostMetadata::default()
        };
        assert_eq!(xds.host, empty);
        for (kind, expected) in [
            ("LOGICAL_DNS", empty.clone()),
            ("STATIC", crate::xds::HostMetadata::default()),
        ] {
            let config = parsed(&with(SHIPPED, &format!("{UPSTREAM}.type"), kind));
            let xds = config.connection_manager.bootstrap(config.node.clone());
            assert_eq!(xds.host, expected, "{kind}");
        }

        // A value Envoy reads differently from the harness: refused, named.
        let text = refusal(&with(
            SHIPPED,
            &endpoint,
            "{filter_metadata: {istio: {weight: 0.5}}}",
        ));
        assert!(
            text.contains(
                "clusters[upstream].load_assignment.endpoints[0].lb_endpoints[0].metadata.\
                 filter_metadata.istio.weight"
            ),
            "{text}"
        );
        let text = refusal(&with(
            SHIPPED,
            &locality,
            "{typed_filter_metadata: {x: {}}}",
        ));
        assert!(
            text.contains(
                "clusters[upstream].load_assignment.endpoints[0].metadata.typed_filter_metadata"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_endpoints_locality_is_read_not_warned() {
        let at = format!("{UPSTREAM}.load_assignment.endpoints.0.locality");
        let config = parsed(&with(
            SHIPPED,
            &at,
            "{region: us-east1, zone: us-east1-b, sub_zone: rack-7}",
        ));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let xds = config.connection_manager.bootstrap(config.node.clone());
        let expected = crate::xds::Locality::new("us-east1", "us-east1-b", "rack-7");
        assert_eq!(xds.host.place, expected);
        // Fields not given are empty, as is a locality not given.
        let config = parsed(&with(SHIPPED, &at, "{zone: z1}"));
        let xds = config.connection_manager.bootstrap(config.node.clone());
        assert_eq!(
            (xds.host.place.region.as_str(), xds.host.place.zone.as_str()),
            ("", "z1")
        );
        let none = parsed(SHIPPED);
        let xds = none.connection_manager.bootstrap(none.node.clone());
        assert_eq!(xds.host.place, crate::xds::Locality::default());
        // A field Envoy's Locality does not have, or a value that is not a
        // string: refused, the path named.
        let text = refusal(&with(SHIPPED, &at, "{zone: z1, rack: r1}"));
        assert!(
            text.contains("clusters[upstream].load_assignment.endpoints[0].locality.rack"),
            "{text}"
        );
        let text = refusal(&with(SHIPPED, &at, "{zone: [z1]}"));
        assert!(
            text.contains("clusters[upstream].load_assignment.endpoints[0].locality.zone"),
            "{text}"
        );
    }

    #[test]
    fn path_normalization_is_read() {
        use crate::hcm::{ConnectionManager, EscapedSlashesAction};
        let config = parsed(&with(
            &with(
                &with(SHIPPED, &format!("{HCM}.normalize_path"), "true"),
                &format!("{HCM}.merge_slashes"),
                "true",
            ),
            &format!("{HCM}.path_with_escaped_slashes_action"),
            "REJECT_REQUEST",
        ));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let expected = ConnectionManager::default()
            .normalize_path(true)
            .merge_slashes(true)
            .path_with_escaped_slashes_action(EscapedSlashesAction::RejectRequest);
        let read = format!("{:?}", config.connection_manager);
        for field in [
            "normalize_path: true",
            "merge_slashes: true",
            "escaped_slashes: RejectRequest",
        ] {
            assert!(read.contains(field), "{field}: {read}");
        }
        assert!(format!("{expected:?}").contains("escaped_slashes: RejectRequest"));
        let bad = EnvoyConfig::parse(&with(
            SHIPPED,
            &format!("{HCM}.path_with_escaped_slashes_action"),
            "SOMETHING_ELSE",
        ));
        let text = format!("{:?}", bad.err());
        assert!(
            text.contains("path_with_escaped_slashes_action") && text.contains("SOMETHING_ELSE"),
            "{text}"
        );
    }

    #[test]
    fn an_inert_field_is_neither_refused_nor_warned() {
        let plain = parsed(SHIPPED);
        for (path, value) in [
            ("admin.access_log", "[{name: envoy.access_loggers.stdout}]"),
            (
                &format!("{HCM}.access_log"),
                "[{name: envoy.access_loggers.stdout}]",
            ),
            (&format!("{HCM}.codec_type"), "HTTP1"),
            (&format!("{HCM}.normalize_path"), "false"),
            (&format!("{LISTENER}.address"), "{pipe: {path: /tmp/x}}"),
            (&format!("{UPSTREAM}.connect_timeout"), "0.25s"),
            ("static_resources.clusters.0.type", "STATIC"),
            (&format!("{UPSTREAM}.dns_lookup_family"), "V4_ONLY"),
            // After the catch-all first route, no request reaches these.
            (
                &format!("{HCM}.route_config.virtual_hosts.0.routes.1"),
                "{match: {prefix: /b}, route: {cluster: grpc, prefix_rewrite: /}}",
            ),
            // The gRPC cluster's protocol: the test's handler answers it.
            ("static_resources.clusters.0.http2_protocol_options", "{}"),
        ] {
            let config = parsed(&with(SHIPPED, path, value));
            assert!(config.warnings.is_empty(), "{path}: {:?}", config.warnings);
            assert_eq!(config.filters, plain.filters, "{path}");
            assert_eq!(
                format!("{:?}", config.connection_manager),
                format!("{:?}", plain.connection_manager),
                "{path}"
            );
        }
    }

    #[test]
    fn an_unknown_field_is_refused_not_ignored() {
        for (path, shown) in [
            (
                format!("{HCM}.frobnicate"),
                format!("{HCM_PATH}.frobnicate"),
            ),
            ("frobnicate".to_owned(), "frobnicate".to_owned()),
            (
                format!("{UPSTREAM}.load_assignment.frobnicate"),
                "static_resources.clusters[1].load_assignment.frobnicate".to_owned(),
            ),
            (
                format!("{HCM}.http_filters.0.typed_config.config.vm_config.frobnicate"),
                format!("{HCM_PATH}.http_filters[0].typed_config.config.vm_config.frobnicate"),
            ),
        ] {
            let text = refusal(&with(SHIPPED, &path, "1"));
            assert!(
                text.contains(&format!(
                    "{shown}: a field the harness's loader does not know"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn the_first_route_must_take_every_request() {
        let no_star = with(
            SHIPPED,
            &format!("{HCM}.route_config.virtual_hosts.0.domains"),
            "[example.com]",
        );
        assert!(refusal(&no_star).contains("domains must include"));
        let no_route = with(
            SHIPPED,
            &format!("{HCM}.route_config.virtual_hosts.0.routes"),
            "",
        );
        assert!(refusal(&no_route).contains("no route"));
        let redirect = with(SHIPPED, &format!("{ROUTE}.route"), "");
        let redirect = with(
            &redirect,
            &format!("{ROUTE}.redirect"),
            "{path_redirect: /x}",
        );
        assert!(refusal(&redirect).contains("first route must send every request"));
        let empty_prefix = with(SHIPPED, &format!("{ROUTE}.match.prefix"), "\"\"");
        assert!(parsed(&empty_prefix).warnings.is_empty());
    }

    #[test]
    fn the_router_ends_the_chain_and_nothing_precedes_the_connection_manager() {
        let after = with(
            SHIPPED,
            &format!("{HCM}.http_filters.2"),
            "{name: envoy.filters.http.wasm, typed_config: {config: {vm_config: {code: {local: {filename: /x.wasm}}}}}}",
        );
        assert!(refusal(&after).contains("must be the last http filter"));
        let before = with(
            SHIPPED,
            &format!("{LISTENER}.filter_chains.0.filters.0"),
            "{name: envoy.filters.network.rbac}",
        );
        assert!(refusal(&before).contains("only network filter the harness emulates"));
    }

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
                match: {{ prefix: "/" }}
                route: {first}
              - name: second
                match: {{ prefix: "/b" }}
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
    fn durations_in_protobuf_json_form() {
        assert_eq!(proto_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(proto_duration("0.002s"), Some(Duration::from_millis(2)));
        assert_eq!(proto_duration(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(proto_duration("1.000000001s"), Some(Duration::new(1, 1)));
        for bad in ["2", "s", "-1s", "1.5ms", "1.0000000001s", "1e3s", ""] {
            assert_eq!(proto_duration(bad), None, "{bad:?}");
        }
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
}
