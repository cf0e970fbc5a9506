//! Would it load? The rules each consumer applies to an image it pulls.
//!
//! [`istio`] follows the order of checks of Istio's image fetcher
//! (`pkg/wasm/imagefetcher.go`): a Docker schema 2 manifest must end in a Docker
//! tar+gzip layer; otherwise the image is tried as the compat variant (the
//! **last** layer is `application/vnd.oci.image.layer.v1.tar+gzip` and holds a
//! file whose base name is `plugin.wasm`), then as the oci variant (**exactly
//! two** layers, one of type `application/vnd.module.wasm.content.layer.v1+wasm`,
//! read raw); anything else is "in invalid format as an OCI image". The module
//! must then start with the Wasm magic number. [`gloo`] follows wasme's puller,
//! which Gloo's image support comes from: the first layer of the WebAssembly-Hub
//! content type is the module and the Hub runtime config describes it. [`cncf`]
//! checks the CNCF wasm artifact rules.

use std::io::Read as _;

use crate::image::{Image, media_type};
use crate::runtime_config::RuntimeConfig;

/// What a consumer would load from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The module bytes.
    pub module: Vec<u8>,
    /// Where the module was found, e.g. `plugin.wasm in the last layer`.
    pub found_in: String,
}

fn layer_bytes<'a>(image: &'a Image, digest: &str) -> Result<&'a [u8], String> {
    image
        .blob(digest)
        .map(|b| b.data.as_ref())
        .ok_or_else(|| format!("layer {digest} was not fetched"))
}

fn wasm_magic(module: Vec<u8>, found_in: String) -> Result<Loaded, String> {
    if module.starts_with(b"\0asm") {
        Ok(Loaded { module, found_in })
    } else {
        Err(format!(
            "fetched Wasm binary ({found_in}) is invalid: it does not start with the Wasm magic number"
        ))
    }
}

/// Istio's rules. `Ok` carries the module Istio would hand to Envoy; `Err` the
/// reason Istio would give.
///
/// # Errors
/// The rule that fails, in Istio's words.
pub fn istio(image: &Image) -> Result<Loaded, String> {
    let manifest = &image.manifest;
    let media = manifest
        .media_type
        .as_deref()
        .unwrap_or(media_type::OCI_MANIFEST);
    if manifest.is_index() {
        return Err("could not fetch image: it is an index with no linux/amd64 image".into());
    }
    if media != media_type::OCI_MANIFEST && media != media_type::DOCKER_MANIFEST {
        return Err(format!(
            "could not fetch image: manifest media type {media} is not an image"
        ));
    }
    if media == media_type::DOCKER_MANIFEST {
        let (module, found) = last_tar_layer(image, media_type::DOCKER_LAYER).map_err(|e| {
            format!("could not extract Wasm file from the image as Docker container {e}")
        })?;
        return wasm_magic(module, found);
    }
    let compat = last_tar_layer(image, media_type::OCI_LAYER);
    let (module, found) = match compat {
        Ok(found) => found,
        Err(compat) => match hub_layer(image) {
            Ok(found) => found,
            Err(oci) => {
                return Err(format!(
                    "the given image is in invalid format as an OCI image: \
                     could not parse as compat variant: {compat}; \
                     could not parse as oci variant: {oci}"
                ));
            }
        },
    };
    wasm_magic(module, found)
}

fn last_tar_layer(image: &Image, want: &str) -> Result<(Vec<u8>, String), String> {
    let Some(last) = image.manifest.layers.last() else {
        return Err("number of layers must be greater than zero".into());
    };
    if last.media_type != want {
        return Err(format!(
            "invalid media type {} (expect {want})",
            last.media_type
        ));
    }
    let data = layer_bytes(image, &last.digest)?;
    let module = plugin_wasm(data).map_err(|e| format!("could not extract wasm binary: {e}"))?;
    Ok((module, "plugin.wasm in the last layer".into()))
}

/// The first tar entry whose base name is `plugin.wasm`, from a tar+gzip layer.
fn plugin_wasm(layer: &[u8]) -> Result<Vec<u8>, String> {
    let gz = flate2::read::GzDecoder::new(layer);
    let mut archive = tar::Archive::new(gz);
    let entries = archive
        .entries()
        .map_err(|e| format!("failed to parse layer as tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("failed to parse layer as tar.gz: {e}"))?;
        let is_plugin = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n == "plugin.wasm"))
            .unwrap_or(false);
        if is_plugin {
            let mut module = Vec::new();
            entry
                .read_to_end(&mut module)
                .map_err(|e| format!("failed to read plugin.wasm: {e}"))?;
            return Ok(module);
        }
    }
    Err("plugin.wasm not found in the archive".into())
}

fn hub_layer(image: &Image) -> Result<(Vec<u8>, String), String> {
    let layers = &image.manifest.layers;
    if layers.len() != 2 {
        return Err(format!(
            "number of layers must be 2 but got {}",
            layers.len()
        ));
    }
    let Some((i, layer)) = layers
        .iter()
        .enumerate()
        .find(|(_, l)| l.media_type == media_type::HUB_CONTENT)
    else {
        return Err(format!(
            "could not find the layer of type {}",
            media_type::HUB_CONTENT
        ));
    };
    let module = layer_bytes(image, &layer.digest)?.to_vec();
    Ok((module, format!("raw module in layer {i}")))
}

/// Gloo's rules for WebAssembly-Hub images (wasme's puller): the first layer of
/// type `application/vnd.module.wasm.content.layer.v1+wasm` is the module, and
/// the Hub runtime config (`application/vnd.module.wasm.config.v1+json`) must
/// be present and describe an `envoy_proxy` module.
///
/// # Errors
/// The rule that fails.
pub fn gloo(image: &Image) -> Result<(Loaded, RuntimeConfig), String> {
    let manifest = &image.manifest;
    let children = manifest.config.iter().chain(&manifest.layers);
    let mut config = None;
    let mut module = None;
    for d in children {
        if d.media_type == media_type::HUB_CONFIG && config.is_none() {
            config = Some(d);
        }
        if d.media_type == media_type::HUB_CONTENT && module.is_none() {
            module = Some(d);
        }
    }
    let module = module.ok_or_else(|| {
        format!(
            "no layer of type {}: Gloo pulls WebAssembly-Hub images (push with --format oci)",
            media_type::HUB_CONTENT
        )
    })?;
    let config = config.ok_or_else(|| {
        format!(
            "no runtime config of type {}: Gloo reads the root id from it",
            media_type::HUB_CONFIG
        )
    })?;
    let runtime =
        RuntimeConfig::parse(layer_bytes(image, &config.digest)?).map_err(|e| e.to_string())?;
    if runtime.runtime_type != crate::runtime_config::ENVOY_PROXY {
        return Err(format!(
            "runtime type is {:?}, not \"envoy_proxy\"",
            runtime.runtime_type
        ));
    }
    let loaded = wasm_magic(
        layer_bytes(image, &module.digest)?.to_vec(),
        "the WebAssembly-Hub content layer".into(),
    )?;
    Ok((loaded, runtime))
}

/// The CNCF wasm artifact rules: config `application/vnd.wasm.config.v0+json`
/// with `architecture: wasm`, `os: wasip1|wasip2` and `layerDigests` matching
/// the layers, and exactly one `application/wasm` layer.
///
/// # Errors
/// The rule that fails.
pub fn cncf(image: &Image) -> Result<Loaded, String> {
    let manifest = &image.manifest;
    let Some(config) = &manifest.config else {
        return Err("no config".into());
    };
    if config.media_type != media_type::CNCF_CONFIG {
        return Err(format!(
            "config media type is {}, not {}",
            config.media_type,
            media_type::CNCF_CONFIG
        ));
    }
    if manifest.layers.len() != 1 {
        return Err(format!(
            "a wasm artifact has exactly one layer, this one has {}",
            manifest.layers.len()
        ));
    }
    let layer = &manifest.layers[0];
    if layer.media_type != media_type::CNCF_LAYER {
        return Err(format!(
            "layer media type is {}, not {}",
            layer.media_type,
            media_type::CNCF_LAYER
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(layer_bytes(image, &config.digest)?)
        .map_err(|e| format!("config is not JSON: {e}"))?;
    if json["architecture"] != "wasm" {
        return Err(format!(
            "config architecture is {}, not \"wasm\"",
            json["architecture"]
        ));
    }
    if json["os"] != "wasip1" && json["os"] != "wasip2" {
        return Err(format!(
            "config os is {}, not \"wasip1\" or \"wasip2\"",
            json["os"]
        ));
    }
    if let Some(digests) = json.get("layerDigests")
        && digests != &serde_json::json!([layer.digest])
    {
        return Err(format!(
            "config layerDigests {digests} do not match the layer"
        ));
    }
    wasm_magic(
        layer_bytes(image, &layer.digest)?.to_vec(),
        "the application/wasm layer".into(),
    )
}
