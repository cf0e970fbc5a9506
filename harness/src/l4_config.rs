//! Reading a network filter chain from an Envoy bootstrap YAML: a listener whose
//! first filter chain is `envoy.filters.network.wasm` filters followed by
//! `envoy.filters.network.tcp_proxy`.
//!
//! **Read**: each wasm filter's plugin config (as for HTTP, see [`EnvoyConfig`])
//! and `tcp_proxy`'s `cluster`. Every other field of the bootstrap is
//! classified by path with the tables the HTTP loader uses (see
//! [`EnvoyConfig`]'s docs and `bootstrap.rs`): **inert** (e.g. `admin`,
//! `tcp_proxy`'s `stat_prefix` and `access_log`, the listener's `address`, a
//! cluster's `type`, `connect_timeout` and its one endpoint), **refused** with
//! [`Error::EnvoyConfig`] naming the field's path (e.g. other network filters,
//! `tcp_proxy`'s `weighted_clusters` and `tunneling_config`, the listener's
//! `per_connection_buffer_limit_bytes`, as read-buffer watermarks of network
//! filters are not emulated, and any field the tables do not know), or
//! **warned** in [`NetworkConfig::warnings`] (also logged) when only edge cases
//! differ (e.g. `tcp_proxy`'s `idle_timeout`). Also read, as for HTTP: the
//! bootstrap's `node`, the listener's `metadata` and that of `tcp_proxy`'s
//! cluster, of its endpoint and of the endpoint's locality, and that
//! cluster's `type` (see [`NetworkChainBuilder::upstream_host_metadata`]).
//!
//! [`EnvoyConfig`]: crate::EnvoyConfig

use serde_yaml_ng::Value;

use crate::bootstrap::{self, Loader};
use crate::chain::Filter;
use crate::envoy_config::{WasmFilterConfig, static_cluster, string_at, wasm_filter};
use crate::l4::NetworkChainBuilder;
use crate::xds::{Metadata, Node, host_metadata_from_yaml, metadata_from_yaml, node_from_yaml};
use crate::{Engine, Error, NetworkChain, Plugin, Result};

const NETWORK_WASM: &str = "envoy.filters.network.wasm";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

fn bad(message: impl Into<String>) -> Error {
    Error::EnvoyConfig(message.into())
}

/// The network filter chain of an Envoy bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkConfig {
    /// The wasm network filters, in chain order.
    pub filters: Vec<WasmFilterConfig>,
    /// `tcp_proxy`'s `cluster`.
    pub cluster: String,
    /// The bootstrap's `node`.
    pub node: Node,
    /// The listener's `metadata`.
    pub listener_metadata: Metadata,
    /// The `metadata` of `tcp_proxy`'s cluster.
    pub cluster_metadata: Metadata,
    /// The `metadata` of that cluster's endpoint
    /// (`load_assignment.endpoints[0].lb_endpoints[0].metadata`), if it has
    /// any.
    pub upstream_host_metadata: Option<Metadata>,
    /// The `metadata` of that endpoint's locality
    /// (`load_assignment.endpoints[0].metadata`), if it has any.
    pub upstream_host_locality_metadata: Option<Metadata>,
    /// That endpoint's locality (`load_assignment.endpoints[0].locality`),
    /// read as `upstream.locality`.
    upstream_locality: crate::xds::Locality,
    /// Fields the harness accepts but does not emulate, where only edge cases
    /// differ from Envoy (each names the field's path and what Envoy does);
    /// also logged with `tracing::warn!` when parsed.
    pub warnings: Vec<String>,
}

impl NetworkConfig {
    /// Parses the first listener's first filter chain.
    ///
    /// # Errors
    /// [`Error::EnvoyConfig`] for invalid YAML, a chain that is not wasm filters
    /// then `tcp_proxy`, or a field the harness does not emulate.
    pub fn parse(yaml: &str) -> Result<Self> {
        let root: Value = serde_yaml_ng::from_str(yaml).map_err(|e| bad(e.to_string()))?;
        let listener = root
            .get("static_resources")
            .and_then(|s| s.get("listeners"))
            .and_then(Value::as_sequence)
            .and_then(|l| l.first())
            .ok_or_else(|| bad("no listener in static_resources"))?;
        let filters = listener
            .get("filter_chains")
            .and_then(Value::as_sequence)
            .and_then(|c| c.first())
            .and_then(|c| c.get("filters"))
            .and_then(Value::as_sequence)
            .ok_or_else(|| bad("the first listener has no filter_chains[0].filters"))?;
        let mut wasm = Vec::new();
        let mut cluster = None;
        for (i, f) in filters.iter().enumerate() {
            if cluster.is_some() {
                return Err(bad(format!(
                    "filters[{i}]: {TCP_PROXY} must be the last network filter"
                )));
            }
            match string_at(f, &["name"]).as_deref() {
                Some(NETWORK_WASM) => wasm.push(wasm_filter(f)?),
                Some(TCP_PROXY) => {
                    let name = string_at(f, &["typed_config", "cluster"])
                        .ok_or_else(|| bad("tcp_proxy.cluster is required"))?;
                    cluster = Some(name);
                }
                Some(other) => {
                    return Err(bad(format!(
                        "network filter {other} is not emulated by the harness"
                    )));
                }
                None => return Err(bad(format!("filters[{i}] has no name"))),
            }
        }
        let cluster = cluster.ok_or_else(|| bad(format!("no {TCP_PROXY} in the filter chain")))?;
        // Every other field: after the reads above, whose errors say more.
        let warnings = bootstrap::check(
            &root,
            Loader::Network {
                upstream: Some(&cluster),
            },
        )?;
        let host = host_metadata_from_yaml(static_cluster(&root, &cluster), &cluster)?;
        Ok(Self {
            filters: wasm,
            node: node_from_yaml(root.get("node"))?,
            upstream_host_metadata: host.endpoint,
            upstream_host_locality_metadata: host.locality,
            upstream_locality: host.place,
            listener_metadata: metadata_from_yaml(
                listener.get("metadata"),
                "listeners[0].metadata",
            )?,
            cluster_metadata: metadata_from_yaml(
                static_cluster(&root, &cluster).and_then(|c| c.get("metadata")),
                &format!("clusters[{cluster}].metadata"),
            )?,
            cluster,
            warnings,
        })
    }

    /// A network chain builder with these filters. `load` turns each filter's
    /// `filename` into a plugin (tests map the in-container path to a build
    /// output).
    ///
    /// # Errors
    /// Whatever `load` returns.
    pub fn chain_builder(
        &self,
        engine: &Engine,
        mut load: impl FnMut(&WasmFilterConfig) -> Result<Plugin>,
    ) -> Result<NetworkChainBuilder> {
        let mut builder = NetworkChain::builder(engine)
            .cluster(&self.cluster)
            .node(self.node.clone())
            .listener_metadata(self.listener_metadata.clone())
            .cluster_metadata(self.cluster_metadata.clone());
        if let Some(metadata) = &self.upstream_host_metadata {
            builder = builder.upstream_host_metadata(metadata.clone());
        }
        if let Some(metadata) = &self.upstream_host_locality_metadata {
            builder = builder.upstream_host_locality_metadata(metadata.clone());
        }
        let place = &self.upstream_locality;
        builder = builder.upstream_locality(
            place.region.clone(),
            place.zone.clone(),
            place.sub_zone.clone(),
        );
        for f in &self.filters {
            let mut filter = Filter::new(load(f)?)
                .name(&f.name)
                .root_id(&f.root_id)
                .vm_id(&f.vm_id)
                .configuration(f.configuration.as_bytes())
                .vm_configuration(f.vm_configuration.as_bytes())
                .failure_policy(f.failure_policy)
                .reload_backoff(f.reload_backoff);
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
    use super::NetworkConfig;
    use crate::bootstrap::testing::with;

    const CHAIN: &str = r#"
static_resources:
  listeners:
  - name: l
    filter_chains:
    - filters:
      - name: envoy.filters.network.wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: stream
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: '{"a": 1}'
            vm_config:
              vm_id: v
              code: { local: { filename: /x/f.wasm } }
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: t
          cluster: backend
"#;

    #[test]
    fn wasm_filters_then_tcp_proxy() {
        let config = NetworkConfig::parse(CHAIN).expect("valid");
        assert_eq!(config.cluster, "backend");
        assert_eq!(config.filters.len(), 1);
        assert_eq!(config.filters[0].name, "stream");
        assert_eq!(config.filters[0].configuration, r#"{"a": 1}"#);
        assert_eq!(config.filters[0].vm_id, "v");
    }

    const PROXY: &str = "static_resources.listeners.0.filter_chains.0.filters.1.typed_config";
    const PROXY_PATH: &str =
        "static_resources.listeners[0].filter_chains[0].filters[1].typed_config";

    fn refusal(yaml: &str) -> String {
        NetworkConfig::parse(yaml)
            .map(|c| panic!("not refused: {c:?}"))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn what_is_not_emulated_is_refused_by_name() {
        let tunnel = with(CHAIN, &format!("{PROXY}.tunneling_config"), "{hostname: h}");
        let err = refusal(&tunnel);
        assert!(
            err.contains(&format!("{PROXY_PATH}.tunneling_config: Envoy tunnels")),
            "{err}"
        );

        let other = CHAIN.replace(
            "name: envoy.filters.network.tcp_proxy",
            "name: envoy.filters.network.echo",
        );
        let err = refusal(&other);
        assert!(err.contains("envoy.filters.network.echo"), "{err}");

        let limit = with(
            CHAIN,
            "static_resources.listeners.0.per_connection_buffer_limit_bytes",
            "5",
        );
        let err = refusal(&limit);
        assert!(
            err.contains("static_resources.listeners[0].per_connection_buffer_limit_bytes"),
            "{err}"
        );

        let none = CHAIN
            .split("      - name: envoy.filters.network.tcp_proxy")
            .next()
            .unwrap_or_default();
        let err = refusal(none);
        assert!(err.contains("no envoy.filters.network.tcp_proxy"), "{err}");
        assert!(NetworkConfig::parse("a: [").is_err());

        let typed = with(
            CHAIN,
            &format!("{PROXY}.@type"),
            "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo",
        );
        assert!(refusal(&typed).contains(&format!("{PROXY_PATH}.@type")));
    }

    #[test]
    fn a_warned_field_is_accepted_and_listed() {
        for (path, value, says) in [
            (
                format!("{PROXY}.idle_timeout"),
                "1s",
                format!("{PROXY_PATH}.idle_timeout: a timeout"),
            ),
            (
                "static_resources.listeners.1".to_owned(),
                "{name: other}",
                "listeners[1]: not emulated".to_owned(),
            ),
        ] {
            let config = NetworkConfig::parse(&with(CHAIN, &path, value))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(
                config.warnings.len() == 1 && config.warnings[0].contains(&says),
                "{path}: {:?}",
                config.warnings
            );
        }
    }

    #[test]
    fn an_inert_field_is_neither_refused_nor_warned() {
        let plain = NetworkConfig::parse(CHAIN).expect("valid");
        assert!(plain.warnings.is_empty(), "{:?}", plain.warnings);
        for (path, value) in [
            (format!("{PROXY}.stat_prefix"), "other"),
            (
                format!("{PROXY}.access_log"),
                "[{name: envoy.access_loggers.stdout}]",
            ),
            (
                "admin".to_owned(),
                "{address: {socket_address: {address: 0.0.0.0, port_value: 9901}}}",
            ),
            (
                "static_resources.listeners.0.address".to_owned(),
                "{socket_address: {address: 0.0.0.0, port_value: 10000}}",
            ),
            (
                "static_resources.clusters".to_owned(),
                "[{name: backend, type: STATIC, connect_timeout: 2s, lb_policy: ROUND_ROBIN}]",
            ),
        ] {
            let config = NetworkConfig::parse(&with(CHAIN, &path, value))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(config, plain, "{path}");
        }
    }

    #[test]
    fn an_unknown_field_is_refused_not_ignored() {
        for (path, shown) in [
            (format!("{PROXY}.frobnicate"), format!("{PROXY_PATH}.frobnicate")),
            (
                "static_resources.listeners.0.filter_chains.0.filters.0.typed_config.config.frobnicate"
                    .to_owned(),
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.config.frobnicate"
                    .to_owned(),
            ),
            ("frobnicate".to_owned(), "frobnicate".to_owned()),
        ] {
            let err = refusal(&with(CHAIN, &path, "1"));
            assert!(
                err.contains(&format!("{shown}: a field the harness's loader does not know")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_node_the_listeners_and_the_clusters_metadata() {
        let yaml = format!(
            "node: {{id: node-a, locality: {{zone: z}}}}\n{}\n  clusters:\n  - name: backend\n    \
             metadata: {{filter_metadata: {{cf: {{k: v}}}}}}\n",
            CHAIN.replace(
                "  - name: l\n",
                "  - name: l\n    metadata: {filter_metadata: {lf: {k: v}}}\n",
            )
        );
        let config = NetworkConfig::parse(&yaml).expect("valid");
        assert_eq!(config.node.id, "node-a");
        assert!(config.listener_metadata.filter_metadata.contains_key("lf"));
        assert!(config.cluster_metadata.filter_metadata.contains_key("cf"));
        assert!(config.warnings.is_empty(), "read: {:?}", config.warnings);
        let bad = yaml.replace("{cf: {k: v}}", "{cf: {k: yes}}");
        let err = NetworkConfig::parse(&bad).expect_err("ambiguous");
        assert!(err.to_string().contains("\"yes\""), "{err}");
        assert_eq!(config.upstream_host_metadata, None);
        assert_eq!(config.upstream_host_locality_metadata, None);
    }

    #[test]
    fn the_endpoints_locality_is_read_not_warned() {
        let yaml = format!(
            "{CHAIN}  clusters:\n  - name: backend\n    load_assignment:\n      endpoints:\n      \
             - locality: {{region: r1, sub_zone: s1}}\n        lb_endpoints:\n        \
             - endpoint: {{address: {{socket_address: {{address: db, port_value: 5432}}}}}}\n"
        );
        let config = NetworkConfig::parse(&yaml).expect("valid");
        assert!(config.warnings.is_empty(), "read: {:?}", config.warnings);
        let expected = crate::xds::Locality::new("r1", "", "s1");
        assert_eq!(config.upstream_locality, expected);
        let bad = yaml.replace("sub_zone: s1", "sub_zone: 7");
        let err = NetworkConfig::parse(&bad).expect_err("a number");
        assert!(
            err.to_string()
                .contains("clusters[backend].load_assignment.endpoints[0].locality.sub_zone"),
            "{err}"
        );
    }

    #[test]
    fn the_endpoints_and_its_localitys_metadata() {
        let yaml = format!(
            "{CHAIN}  clusters:\n  - name: backend\n    load_assignment:\n      endpoints:\n      \
             - metadata: {{filter_metadata: {{envoy.lb: {{zone: z1}}}}}}\n        lb_endpoints:\n        \
             - metadata: {{filter_metadata: {{istio: {{workload: db-0}}}}}}\n          \
             endpoint: {{address: {{socket_address: {{address: db, port_value: 5432}}}}}}\n"
        );
        let config = NetworkConfig::parse(&yaml).expect("valid");
        assert!(config.warnings.is_empty(), "read: {:?}", config.warnings);
        let host = config.upstream_host_metadata.as_ref().expect("endpoint");
        assert!(host.filter_metadata.contains_key("istio"));
        let locality = config
            .upstream_host_locality_metadata
            .as_ref()
            .expect("locality");
        assert!(locality.filter_metadata.contains_key("envoy.lb"));
        // Without metadata, a STRICT_DNS cluster's endpoint has an empty
        // message.
        let dns = format!(
            "{CHAIN}  clusters:\n  - name: backend\n    type: STRICT_DNS\n    load_assignment:\n      \
             endpoints:\n      - lb_endpoints:\n        \
             - endpoint: {{address: {{socket_address: {{address: db, port_value: 5432}}}}}}\n"
        );
        let config = NetworkConfig::parse(&dns).expect("valid");
        assert_eq!(config.upstream_host_metadata, Some(crate::Metadata::new()));
        assert_eq!(
            config.upstream_host_locality_metadata,
            Some(crate::Metadata::new())
        );
        let bad = yaml.replace("{workload: db-0}", "{workload: [1.5]}");
        let err = NetworkConfig::parse(&bad).expect_err("a float");
        assert!(
            err.to_string().contains(
                "clusters[backend].load_assignment.endpoints[0].lb_endpoints[0].metadata.\
                 filter_metadata.istio.workload[0]"
            ),
            "{err}"
        );
    }
}
