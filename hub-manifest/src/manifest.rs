//! The weir filter manifest: what a published filter is, as Rust types and as a
//! JSON Schema.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::module::ModuleInfo;
use crate::{Error, Result};

/// The version of the manifest format written by this crate.
pub const MANIFEST_VERSION: u32 = 1;

/// The manifest annotation key that carries the whole [`FilterManifest`] as JSON
/// on every image weir pushes, whatever its format.
pub const MANIFEST_ANNOTATION: &str = "dev.weir.filter.manifest";

/// The published JSON Schema of [`FilterManifest`]
/// (`hub-manifest/schema/filter-manifest.schema.json`). A test keeps it equal to
/// [`FilterManifest::json_schema`].
pub const PUBLISHED_SCHEMA: &str = include_str!("../schema/filter-manifest.schema.json");

/// Describes one published version of a proxy-wasm filter.
///
/// The ABI versions, root ids, digest and size are read from the module; the
/// rest comes from the filter's package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "weir filter manifest")]
pub struct FilterManifest {
    /// Version of this manifest format; currently 1.
    pub manifest_version: u32,
    /// Filter name, e.g. `header-append`.
    pub name: String,
    /// Filter version, e.g. `0.1.0`.
    pub version: String,
    /// One-line description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// SPDX license expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Where the source lives (a repository URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// proxy-wasm ABI versions, read from the module's `proxy_abi_version_*`
    /// exports, e.g. `v0.2.1`.
    pub abi_versions: Vec<String>,
    /// Root ids, read from the module's `weir.root_ids` custom section; empty
    /// means the module answers to any root id.
    #[serde(default)]
    pub root_ids: Vec<String>,
    /// JSON Schema of the filter's configuration, when the filter has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Value>,
    /// The SDK the filter was written with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk: Option<Sdk>,
    /// Lower-case hex sha256 of the module (what Envoy's `remote` source checks).
    #[schemars(regex(pattern = r"^[a-f0-9]{64}$"))]
    pub sha256: String,
    /// Size of the module in bytes.
    pub size: u64,
}

/// An SDK and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Sdk {
    /// SDK name, e.g. `weir`.
    pub name: String,
    /// SDK version, e.g. `0.1.0`.
    pub version: String,
}

impl FilterManifest {
    /// A manifest for `module`, with the module facts filled in and the package
    /// facts empty.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] if `name` or `version` is empty or has
    /// characters that do not belong in an image tag or repository.
    pub fn new(name: &str, version: &str, module: &ModuleInfo) -> Result<Self> {
        let manifest = Self {
            manifest_version: MANIFEST_VERSION,
            name: name.to_owned(),
            version: version.to_owned(),
            description: None,
            license: None,
            source: None,
            abi_versions: module.abi_versions.clone(),
            root_ids: module.root_ids.clone(),
            config_schema: None,
            sdk: None,
            sha256: module.sha256.clone(),
            size: module.size,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the fields a reader relies on.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidManifest(m));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        {
            return bad(format!(
                "name {:?} must be non-empty lower-case letters, digits, '-', '_' or '.'",
                self.name
            ));
        }
        if self.version.is_empty() || self.version.chars().any(char::is_whitespace) {
            return bad(format!(
                "version {:?} must be non-empty, without spaces",
                self.version
            ));
        }
        if self.abi_versions.is_empty() {
            return bad("abiVersions is empty: the module has no ABI marker".into());
        }
        if self.sha256.len() != 64 || !self.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad(format!("sha256 {:?} is not 64 hex digits", self.sha256));
        }
        if let Some(schema) = &self.config_schema
            && !(schema.is_object() || schema.is_boolean())
        {
            return bad("configSchema must be a JSON Schema (an object or a boolean)".into());
        }
        Ok(())
    }

    /// Parses a manifest from JSON.
    ///
    /// # Errors
    /// [`Error::InvalidManifest`] if the JSON does not match or the fields are
    /// invalid.
    pub fn from_json(json: &str) -> Result<Self> {
        let manifest: Self =
            serde_json::from_str(json).map_err(|e| Error::InvalidManifest(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Compact JSON, as stored in the [`MANIFEST_ANNOTATION`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON Schema of this type, as published.
    pub fn json_schema() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(FilterManifest))
            .unwrap_or(serde_json::Value::Null)
    }
}
