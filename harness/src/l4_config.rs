//! Reading a network filter chain from an Envoy bootstrap YAML: a listener whose
//! first filter chain is `envoy.filters.network.wasm` filters followed by
//! `envoy.filters.network.tcp_proxy`.
//!
//! Read: each wasm filter's plugin config (as for HTTP, see [`EnvoyConfig`]),
//! `tcp_proxy`'s `stat_prefix` and `cluster`, the bootstrap's `node`, the
//! listener's `metadata` and that of `tcp_proxy`'s cluster (as for HTTP).
//! Anything else in the filter chain or in `tcp_proxy` is refused with the
//! field named, as the harness does not emulate it.
//!
//! [`EnvoyConfig`]: crate::EnvoyConfig

use serde_yaml_ng::Value;

use crate::chain::Filter;
use crate::envoy_config::{WasmFilterConfig, static_cluster, string_at, wasm_filter};
use crate::l4::NetworkChainBuilder;
use crate::xds::{Metadata, Node, metadata_from_yaml, node_from_yaml};
use crate::{Engine, Error, NetworkChain, Plugin, Result};

const NETWORK_WASM: &str = "envoy.filters.network.wasm";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
/// The `tcp_proxy` fields the harness emulates.
const TCP_PROXY_FIELDS: &[&str] = &["@type", "stat_prefix", "cluster"];

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
        if listener.get("per_connection_buffer_limit_bytes").is_some() {
            return Err(bad(
                "per_connection_buffer_limit_bytes: read-buffer watermarks of network filters \
                 are not emulated",
            ));
        }
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
                    let config = f
                        .get("typed_config")
                        .and_then(Value::as_mapping)
                        .ok_or_else(|| {
                            bad(format!("filters[{i}]: tcp_proxy without typed_config"))
                        })?;
                    for key in config.keys() {
                        let key = key.as_str().unwrap_or_default();
                        if !TCP_PROXY_FIELDS.contains(&key) {
                            return Err(bad(format!(
                                "tcp_proxy.{key} is not emulated by the harness"
                            )));
                        }
                    }
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
        Ok(Self {
            filters: wasm,
            node: node_from_yaml(root.get("node"))?,
            listener_metadata: metadata_from_yaml(
                listener.get("metadata"),
                "listeners[0].metadata",
            )?,
            cluster_metadata: metadata_from_yaml(
                static_cluster(&root, &cluster).and_then(|c| c.get("metadata")),
                &format!("clusters[{cluster}].metadata"),
            )?,
            cluster,
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
        let bad = yaml.replace("{cf: {k: v}}", "{cf: {k: yes}}");
        let err = NetworkConfig::parse(&bad).expect_err("ambiguous");
        assert!(err.to_string().contains("\"yes\""), "{err}");
    }

    #[test]
    fn what_is_not_emulated_is_refused_by_name() {
        let idle = CHAIN.replace(
            "cluster: backend",
            "cluster: backend\n          idle_timeout: 1s",
        );
        let err = NetworkConfig::parse(&idle).expect_err("idle_timeout");
        assert!(err.to_string().contains("tcp_proxy.idle_timeout"), "{err}");

        let other = CHAIN.replace(
            "name: envoy.filters.network.tcp_proxy",
            "name: envoy.filters.network.echo",
        );
        let err = NetworkConfig::parse(&other).expect_err("echo");
        assert!(
            err.to_string().contains("envoy.filters.network.echo"),
            "{err}"
        );

        let limit = CHAIN.replace(
            "  - name: l\n",
            "  - name: l\n    per_connection_buffer_limit_bytes: 5\n",
        );
        let err = NetworkConfig::parse(&limit).expect_err("limit");
        assert!(
            err.to_string()
                .contains("per_connection_buffer_limit_bytes"),
            "{err}"
        );

        let none = CHAIN
            .split("      - name: envoy.filters.network.tcp_proxy")
            .next()
            .unwrap_or_default();
        let err = NetworkConfig::parse(none).expect_err("no tcp_proxy");
        assert!(
            err.to_string()
                .contains("no envoy.filters.network.tcp_proxy"),
            "{err}"
        );
        assert!(NetworkConfig::parse("a: [").is_err());
    }
}
