//! `runtime-config.json`, the wasme runtime description that WebAssembly-Hub
//! images carry as their config blob and compat images carry in their layer.
//!
//! It is written in the camelCase form `wasme build` stores
//! (`type`, `abiVersions`, `config.rootIds`) and read in every spelling found
//! in the wild: the protobuf names `abi_versions` / `root_ids`, the spec's
//! singular `abi_version` (a string or a list) and `root_id`.

use serde::{Deserialize, Deserializer, Serialize};

use crate::{Error, Result};

/// The runtime type for Envoy (and so Istio and Gloo).
pub const ENVOY_PROXY: &str = "envoy_proxy";

/// A wasme `runtime-config.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// The target runtime, `envoy_proxy` for Envoy.
    #[serde(rename = "type", default)]
    pub runtime_type: String,
    /// The ABI versions the module works with, e.g. `v0.2.1`.
    #[serde(
        default,
        alias = "abi_versions",
        alias = "abi_version",
        alias = "abiVersion",
        deserialize_with = "one_or_many"
    )]
    pub abi_versions: Vec<String>,
    /// Runtime-specific settings.
    #[serde(default)]
    pub config: EnvoyRuntime,
}

/// The Envoy part of a [`RuntimeConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyRuntime {
    /// The root ids the module registers.
    #[serde(
        default,
        alias = "root_ids",
        alias = "root_id",
        alias = "rootId",
        deserialize_with = "one_or_many"
    )]
    pub root_ids: Vec<String>,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        Null(()),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
        OneOrMany::Null(()) => Vec::new(),
    })
}

impl RuntimeConfig {
    /// An Envoy runtime config.
    pub fn envoy(abi_versions: Vec<String>, root_ids: Vec<String>) -> Self {
        Self {
            runtime_type: ENVOY_PROXY.to_owned(),
            abi_versions,
            config: EnvoyRuntime { root_ids },
        }
    }

    /// Parses any spelling of `runtime-config.json`.
    ///
    /// # Errors
    /// [`Error::InvalidRuntimeConfig`] if it is not a JSON object of this shape.
    pub fn parse(json: &[u8]) -> Result<Self> {
        serde_json::from_slice(json).map_err(|e| Error::InvalidRuntimeConfig(e.to_string()))
    }

    /// The camelCase JSON wasme writes.
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_camel_case() {
        let c = RuntimeConfig::envoy(vec!["v0.2.1".into()], vec!["add_header".into()]);
        assert_eq!(
            String::from_utf8(c.to_json()).expect("utf8"),
            r#"{"type":"envoy_proxy","abiVersions":["v0.2.1"],"config":{"rootIds":["add_header"]}}"#
        );
    }

    #[test]
    fn reads_every_spelling() {
        let want = RuntimeConfig::envoy(vec!["v0.2.1".into()], vec!["add_header".into()]);
        for json in [
            r#"{"type":"envoy_proxy","abiVersions":["v0.2.1"],"config":{"rootIds":["add_header"]}}"#,
            r#"{"type":"envoy_proxy","abi_versions":["v0.2.1"],"config":{"root_ids":["add_header"]}}"#,
            r#"{"type":"envoy_proxy","abi_version":"v0.2.1","config":{"root_id":"add_header"}}"#,
            r#"{"type":"envoy_proxy","abi_version":["v0.2.1"],"config":{"rootIds":["add_header"]},"extra":1}"#,
        ] {
            assert_eq!(
                RuntimeConfig::parse(json.as_bytes()).expect(json),
                want,
                "{json}"
            );
        }
    }

    #[test]
    fn missing_fields_default_and_garbage_is_an_error() {
        let c = RuntimeConfig::parse(br#"{"type":"envoy_proxy"}"#).expect("minimal");
        assert!(c.abi_versions.is_empty() && c.config.root_ids.is_empty());
        let c =
            RuntimeConfig::parse(br#"{"type":"envoy_proxy","abiVersions":null}"#).expect("null");
        assert!(c.abi_versions.is_empty());
        assert!(RuntimeConfig::parse(b"[1]").is_err());
    }
}
