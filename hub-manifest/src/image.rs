//! Image layouts: building the three formats weir pushes, and recognising every
//! Wasm-in-OCI layout in the wild.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::manifest::{FilterManifest, MANIFEST_ANNOTATION};
use crate::module::oci_digest;
use crate::runtime_config::{ENVOY_PROXY, RuntimeConfig};
use crate::{Error, Result};

/// Media types of manifests, configs and layers.
pub mod media_type {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// OCI gzip tar layer (compat variant).
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// Docker gzip tar layer (compat variant, Docker flavour).
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// WebAssembly-Hub ("oci" variant) runtime config.
    pub const HUB_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
    /// WebAssembly-Hub ("oci" variant) raw module layer.
    pub const HUB_CONTENT: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
    /// CNCF wasm artifact config.
    pub const CNCF_CONFIG: &str = "application/vnd.wasm.config.v0+json";
    /// CNCF wasm artifact layer.
    pub const CNCF_LAYER: &str = "application/wasm";
    /// Legacy wasm-to-oci config.
    pub const WASM_TO_OCI_CONFIG: &str = "application/vnd.wasm.config.v1+json";
    /// Legacy wasm-to-oci layer.
    pub const WASM_TO_OCI_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
}

/// Annotation keys weir writes.
pub mod annotation {
    /// Marks a compat image (`compat`).
    pub const VARIANT: &str = "module.wasm.image/variant";
    /// The runtime type, `envoy_proxy`.
    pub const RUNTIME_TYPE: &str = "module.wasm.runtime/type";
    /// ABI versions, comma-separated.
    pub const ABI_VERSION: &str = "module.wasm.runtime/abi_version";
    /// Layer title.
    pub const TITLE: &str = "org.opencontainers.image.title";
    /// Version.
    pub const VERSION: &str = "org.opencontainers.image.version";
    /// Description.
    pub const DESCRIPTION: &str = "org.opencontainers.image.description";
    /// License.
    pub const LICENSES: &str = "org.opencontainers.image.licenses";
    /// Source repository.
    pub const SOURCE: &str = "org.opencontainers.image.source";
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
}

/// An image manifest or an index, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type, when the document states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The config blob (image manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    /// The layers (image manifests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Descriptor>,
    /// The entries (indexes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// Parses a manifest document.
    ///
    /// # Errors
    /// [`Error::Registry`]-free: [`Error::InvalidManifest`] if it is not JSON of
    /// this shape.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidManifest(format!("image manifest: {e}")))
    }

    /// Whether this is an index (OCI index or Docker manifest list).
    pub fn is_index(&self) -> bool {
        matches!(
            self.media_type.as_deref(),
            Some(media_type::OCI_INDEX | media_type::DOCKER_LIST)
        ) || (self.config.is_none() && !self.manifests.is_empty())
    }

    /// The weir filter manifest in the annotations, if weir pushed this image.
    pub fn filter_manifest(&self) -> Option<FilterManifest> {
        self.annotations
            .get(MANIFEST_ANNOTATION)
            .and_then(|json| FilterManifest::from_json(json).ok())
    }

    /// Which layout this manifest has.
    pub fn layout(&self) -> Layout {
        if self.is_index() {
            return Layout::Index;
        }
        let config = self.config.as_ref().map(|c| c.media_type.as_str());
        let last = self.layers.last().map(|l| l.media_type.as_str());
        let has = |t: &str| self.layers.iter().any(|l| l.media_type == t);
        if self.media_type.as_deref() == Some(media_type::DOCKER_MANIFEST) {
            return Layout::CompatDocker;
        }
        if last == Some(media_type::OCI_LAYER) {
            return Layout::Compat;
        }
        if has(media_type::HUB_CONTENT) {
            return Layout::Hub;
        }
        if config == Some(media_type::CNCF_CONFIG) || has(media_type::CNCF_LAYER) {
            return Layout::Cncf;
        }
        if config == Some(media_type::WASM_TO_OCI_CONFIG) || has(media_type::WASM_TO_OCI_LAYER) {
            return Layout::WasmToOci;
        }
        Layout::Unknown
    }
}

/// The image formats weir writes, chosen with `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Istio's "compat" variant: one tar+gzip layer with `plugin.wasm` and
    /// `runtime-config.json`, a standard image config. Loads in Istio and works
    /// on every registry. The default.
    #[default]
    Compat,
    /// The two-layer WebAssembly-Hub ("oci") variant `wasme push` wrote:
    /// runtime-config as config and first layer, the raw module as second
    /// layer. Loads in Istio and Gloo.
    Oci,
    /// The CNCF TAG-Runtime wasm artifact: one `application/wasm` layer. For
    /// wasmCloud, containerd and wkg; Istio does not load it.
    Cncf,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 3] = [Format::Compat, Format::Oci, Format::Cncf];

    /// The `--format` name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Compat => "compat",
            Format::Oci => "oci",
            Format::Cncf => "cncf",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "compat" => Ok(Format::Compat),
            "oci" | "hub" | "wasme" => Ok(Format::Oci),
            "cncf" => Ok(Format::Cncf),
            other => Err(Error::InvalidManifest(format!(
                "unknown format {other:?}: use compat, oci or cncf"
            ))),
        }
    }
}

/// A layout recognised in a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Compat variant, OCI media types.
    Compat,
    /// Compat variant, Docker media types.
    CompatDocker,
    /// WebAssembly-Hub two-layer variant.
    Hub,
    /// CNCF wasm artifact.
    Cncf,
    /// Legacy wasm-to-oci artifact.
    WasmToOci,
    /// An image index / manifest list.
    Index,
    /// Anything else.
    Unknown,
}

impl Layout {
    /// The short name: the `--format` name for the formats weir writes.
    pub fn short(self) -> &'static str {
        match self {
            Layout::Compat => "compat",
            Layout::CompatDocker => "compat (docker)",
            Layout::Hub => "oci",
            Layout::Cncf => "cncf",
            Layout::WasmToOci => "wasm-to-oci",
            Layout::Index => "index",
            Layout::Unknown => "unknown",
        }
    }

    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Layout::Compat => "compat (Istio, tar+gzip layer with plugin.wasm)",
            Layout::CompatDocker => "compat, Docker media types",
            Layout::Hub => "oci (WebAssembly Hub, two layers)",
            Layout::Cncf => "cncf (CNCF wasm artifact)",
            Layout::WasmToOci => "wasm-to-oci (legacy)",
            Layout::Index => "image index",
            Layout::Unknown => "unknown",
        }
    }
}

/// A blob with its media type and digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Media type it is referenced with.
    pub media_type: String,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
    /// The content.
    pub data: Bytes,
}

impl Blob {
    /// A blob of `data`, its digest computed.
    pub fn new(media_type: &str, data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            media_type: media_type.to_owned(),
            digest: oci_digest(&data),
            data,
        }
    }

    fn descriptor(&self, annotations: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.data.len() as u64,
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            platform: None,
        }
    }
}

/// An image: its manifest (exact bytes and parsed) and every blob it references.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest bytes, exactly as pushed or pulled.
    pub manifest_bytes: Bytes,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// `sha256:<hex>` of `manifest_bytes`: the manifest digest Istio pins.
    pub digest: String,
    /// The config and layer blobs, each once.
    pub blobs: Vec<Blob>,
}

impl Image {
    /// Builds the image of `wasm` in `format`, annotated with `filter`.
    ///
    /// The result is deterministic: the same module and manifest give the same
    /// digest, so a re-push uploads nothing.
    ///
    /// # Errors
    /// If the filter manifest is invalid or does not describe `wasm`.
    pub fn build(format: Format, filter: &FilterManifest, wasm: &[u8]) -> Result<Self> {
        filter.validate()?;
        let module = crate::module::sha256_hex(wasm);
        if module != filter.sha256 || wasm.len() as u64 != filter.size {
            return Err(Error::InvalidManifest(format!(
                "the manifest describes a module with sha256 {} but the module's is {module}",
                filter.sha256
            )));
        }
        let runtime =
            RuntimeConfig::envoy(filter.abi_versions.clone(), filter.root_ids.clone()).to_json();
        let mut annotations = BTreeMap::new();
        let mut note = |k: &str, v: &str| {
            annotations.insert(k.to_owned(), v.to_owned());
        };
        note(annotation::RUNTIME_TYPE, ENVOY_PROXY);
        note(annotation::ABI_VERSION, &filter.abi_versions.join(","));
        note(annotation::TITLE, &filter.name);
        note(annotation::VERSION, &filter.version);
        if let Some(d) = &filter.description {
            note(annotation::DESCRIPTION, d);
        }
        if let Some(l) = &filter.license {
            note(annotation::LICENSES, l);
        }
        if let Some(s) = &filter.source {
            note(annotation::SOURCE, s);
        }
        note(MANIFEST_ANNOTATION, &filter.to_json());
        let wasm_title = format!("{}.wasm", filter.name.replace('-', "_"));

        let (config, layers, blobs) = match format {
            Format::Compat => {
                let tar = compat_tar(wasm, &runtime)?;
                let diff_id = oci_digest(&tar);
                let layer = Blob::new(media_type::OCI_LAYER, gzip(&tar)?);
                let config = serde_json::json!({
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                });
                let config = Blob::new(media_type::OCI_CONFIG, config.to_string());
                annotations.insert(annotation::VARIANT.into(), "compat".into());
                (
                    config.descriptor(&[]),
                    vec![layer.descriptor(&[])],
                    vec![config, layer],
                )
            }
            Format::Oci => {
                let config = Blob::new(media_type::HUB_CONFIG, runtime);
                let module = Blob::new(media_type::HUB_CONTENT, wasm.to_vec());
                let config_desc = config.descriptor(&[(annotation::TITLE, "runtime-config.json")]);
                (
                    config_desc.clone(),
                    vec![
                        config_desc,
                        module.descriptor(&[(annotation::TITLE, "filter.wasm")]),
                    ],
                    vec![config, module],
                )
            }
            Format::Cncf => {
                let module = Blob::new(media_type::CNCF_LAYER, wasm.to_vec());
                let config = serde_json::json!({
                    "architecture": "wasm",
                    "os": "wasip1",
                    "layerDigests": [module.digest],
                });
                let config = Blob::new(media_type::CNCF_CONFIG, config.to_string());
                (
                    config.descriptor(&[]),
                    vec![module.descriptor(&[(annotation::TITLE, &wasm_title)])],
                    vec![config, module],
                )
            }
        };
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_MANIFEST.to_owned()),
            config: Some(config),
            layers,
            manifests: Vec::new(),
            annotations,
        };
        Ok(Self::from_manifest(manifest, blobs))
    }

    /// An image from a manifest and its blobs (the manifest is serialised here).
    pub fn from_manifest(manifest: ImageManifest, blobs: Vec<Blob>) -> Self {
        let bytes = Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
        Self {
            digest: oci_digest(&bytes),
            manifest_bytes: bytes,
            manifest,
            blobs,
        }
    }

    /// The blob with `digest`.
    pub fn blob(&self, digest: &str) -> Option<&Blob> {
        self.blobs.iter().find(|b| b.digest == digest)
    }

    /// Bytes of the manifest plus every blob.
    pub fn size(&self) -> u64 {
        self.manifest_bytes.len() as u64
            + self.blobs.iter().map(|b| b.data.len() as u64).sum::<u64>()
    }

    /// The layout of the manifest.
    pub fn layout(&self) -> Layout {
        self.manifest.layout()
    }
}

/// The compat layer's tar: `plugin.wasm` and `runtime-config.json`, owned by
/// root, mode 0644, time 0 (so the same module always gives the same digest).
fn compat_tar(wasm: &[u8], runtime_config: &[u8]) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("plugin.wasm", wasm),
        ("runtime-config.json", runtime_config),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, data)
            .map_err(|e| Error::InvalidManifest(format!("writing the layer tar: {e}")))?;
    }
    builder
        .into_inner()
        .map_err(|e| Error::InvalidManifest(format!("writing the layer tar: {e}")))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .map_err(|e| Error::InvalidManifest(format!("compressing the layer: {e}")))
}
