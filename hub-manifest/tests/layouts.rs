//! Image layouts against the consumers' rules: ours load where they should,
//! and every layout Istio's image fetcher rejects is rejected here too.

use std::collections::BTreeMap;
use std::io::Write as _;

use weir_hub::image::{Blob, Descriptor, ImageManifest, annotation, media_type};
use weir_hub::{FilterManifest, Format, Image, Layout, ModuleInfo, RuntimeConfig, rules};

fn module() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))"#,
    )
    .expect("valid wat")
}

fn filter(wasm: &[u8]) -> FilterManifest {
    let info = ModuleInfo::read(wasm).expect("proxy-wasm module");
    let mut f = FilterManifest::new("header-append", "0.1.0", &info).expect("valid");
    f.description = Some("Adds headers".into());
    f.license = Some("Apache-2.0".into());
    f
}

fn ours(format: Format) -> (Vec<u8>, Image) {
    let wasm = module();
    let image = Image::build(format, &filter(&wasm), &wasm).expect("builds");
    (wasm, image)
}

fn desc(blob: &Blob) -> Descriptor {
    Descriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.data.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// An image with `config` and `layers`, manifest media type `media`.
fn image(media: Option<&str>, config: Blob, layers: Vec<Blob>) -> Image {
    let mut blobs = vec![config.clone()];
    for l in &layers {
        if !blobs.iter().any(|b| b.digest == l.digest) {
            blobs.push(l.clone());
        }
    }
    Image::from_manifest(
        ImageManifest {
            schema_version: 2,
            media_type: media.map(str::to_owned),
            config: Some(desc(&config)),
            layers: layers.iter().map(desc).collect(),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        },
        blobs,
    )
}

fn tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, *data)
            .expect("tar entry");
    }
    builder.into_inner().expect("tar")
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn oci_config() -> Blob {
    Blob::new(
        media_type::OCI_CONFIG,
        r#"{"architecture":"amd64","os":"linux"}"#,
    )
}

fn hub_config() -> Blob {
    Blob::new(
        media_type::HUB_CONFIG,
        RuntimeConfig::envoy(vec!["v0.2.1".into()], vec![]).to_json(),
    )
}

fn istio_rejects(image: &Image, expect: &str) {
    let err = rules::istio(image).expect_err("Istio must reject this layout");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
}

// --- our three formats ---

#[test]
fn compat_loads_in_istio_only() {
    let (wasm, image) = ours(Format::Compat);
    assert_eq!(image.layout(), Layout::Compat);
    assert_eq!(
        rules::istio(&image).expect("Istio loads compat").module,
        wasm
    );
    assert!(rules::gloo(&image).is_err());
    assert!(rules::cncf(&image).is_err());
    let m = &image.manifest;
    assert_eq!(m.media_type.as_deref(), Some(media_type::OCI_MANIFEST));
    assert_eq!(m.layers.len(), 1);
    assert_eq!(m.layers[0].media_type, media_type::OCI_LAYER);
    assert_eq!(m.annotations[annotation::VARIANT], "compat");
    assert_eq!(m.annotations[annotation::ABI_VERSION], "v0.2.1");
    assert_eq!(m.annotations[annotation::RUNTIME_TYPE], "envoy_proxy");
    assert_eq!(m.filter_manifest().expect("annotated"), filter(&wasm));
    // The config is a real image config whose diff_id is the uncompressed tar's.
    let config = image
        .blob(&m.config.as_ref().expect("config").digest)
        .expect("blob");
    let json: serde_json::Value = serde_json::from_slice(&config.data).expect("json");
    assert_eq!(json["rootfs"]["type"], "layers");
    let layer = image.blob(&m.layers[0].digest).expect("layer");
    let mut tar = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&layer.data[..]), &mut tar)
        .expect("gunzip");
    assert_eq!(
        json["rootfs"]["diff_ids"][0],
        weir_hub::module::oci_digest(&tar)
    );
    // runtime-config.json sits next to plugin.wasm, in camelCase.
    let mut archive = tar::Archive::new(&tar[..]);
    let names: Vec<String> = archive
        .entries()
        .expect("entries")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["plugin.wasm", "runtime-config.json"]);
}

#[test]
fn oci_variant_loads_in_istio_and_gloo() {
    let (wasm, image) = ours(Format::Oci);
    assert_eq!(image.layout(), Layout::Hub);
    assert_eq!(rules::istio(&image).expect("Istio loads it").module, wasm);
    let (loaded, runtime) = rules::gloo(&image).expect("Gloo loads it");
    assert_eq!(loaded.module, wasm);
    assert_eq!(runtime.abi_versions, ["v0.2.1"]);
    let m = &image.manifest;
    // As wasme pushed it: the runtime config is the config and the first layer.
    assert_eq!(m.layers.len(), 2);
    assert_eq!(m.layers[0], *m.config.as_ref().expect("config"));
    assert_eq!(m.layers[1].media_type, media_type::HUB_CONTENT);
    assert_eq!(m.layers[1].annotations[annotation::TITLE], "filter.wasm");
    assert_eq!(
        m.layers[0].annotations[annotation::TITLE],
        "runtime-config.json"
    );
}

#[test]
fn cncf_artifact_loads_in_cncf_consumers_not_istio() {
    let (wasm, image) = ours(Format::Cncf);
    assert_eq!(image.layout(), Layout::Cncf);
    assert_eq!(rules::cncf(&image).expect("valid artifact").module, wasm);
    istio_rejects(&image, "invalid format as an OCI image");
    assert!(rules::gloo(&image).is_err());
}

#[test]
fn images_are_deterministic() {
    for format in Format::ALL {
        assert_eq!(ours(format).1.digest, ours(format).1.digest, "{format}");
    }
    assert_ne!(ours(Format::Compat).1.digest, ours(Format::Oci).1.digest);
}

#[test]
fn a_manifest_for_another_module_is_refused() {
    let wasm = module();
    let mut other = wasm.clone();
    other.extend_from_slice(&[0, 2, 1, b'x']); // a custom section
    let err = Image::build(Format::Compat, &filter(&wasm), &other).expect_err("mismatch");
    assert!(err.to_string().contains("sha256"), "{err}");
}

// --- layouts Istio accepts that we did not write ---

#[test]
fn istio_accepts_compat_from_image_builders() {
    let wasm = module();
    // plugin.wasm in a directory, runtime-config.json absent, an earlier layer.
    let base = Blob::new(media_type::OCI_LAYER, gz(&tar(&[("etc/motd", b"hi")])));
    let last = Blob::new(
        media_type::OCI_LAYER,
        gz(&tar(&[("app/plugin.wasm", &wasm)])),
    );
    let img = image(
        Some(media_type::OCI_MANIFEST),
        oci_config(),
        vec![base, last],
    );
    assert_eq!(rules::istio(&img).expect("last layer wins").module, wasm);
    // No manifest mediaType field at all (older OCI writers).
    let last = Blob::new(media_type::OCI_LAYER, gz(&tar(&[("plugin.wasm", &wasm)])));
    let img = image(None, oci_config(), vec![last]);
    assert_eq!(rules::istio(&img).expect("no mediaType").module, wasm);
}

#[test]
fn istio_accepts_docker_compat() {
    let wasm = module();
    let layer = Blob::new(
        media_type::DOCKER_LAYER,
        gz(&tar(&[("plugin.wasm", &wasm)])),
    );
    let config = Blob::new(media_type::DOCKER_CONFIG, "{}");
    let img = image(Some(media_type::DOCKER_MANIFEST), config, vec![layer]);
    assert_eq!(img.layout(), Layout::CompatDocker);
    assert_eq!(rules::istio(&img).expect("docker compat").module, wasm);
}

// --- every layout Istio rejects ---

#[test]
fn istio_rejects_wasm_to_oci() {
    let wasm = module();
    let img = image(
        Some(media_type::OCI_MANIFEST),
        Blob::new(media_type::WASM_TO_OCI_CONFIG, "{}"),
        vec![Blob::new(media_type::WASM_TO_OCI_LAYER, wasm)],
    );
    assert_eq!(img.layout(), Layout::WasmToOci);
    istio_rejects(
        &img,
        "could not parse as compat variant: invalid media type",
    );
    istio_rejects(
        &img,
        "could not parse as oci variant: number of layers must be 2 but got 1",
    );
}

#[test]
fn istio_rejects_hub_images_with_more_than_two_layers() {
    let wasm = module();
    let readme = Blob::new("text/markdown", "# readme");
    let img = image(
        Some(media_type::OCI_MANIFEST),
        hub_config(),
        vec![
            hub_config(),
            Blob::new(media_type::HUB_CONTENT, wasm.clone()),
            readme,
        ],
    );
    istio_rejects(&img, "number of layers must be 2 but got 3");
    // Gloo (wasme) finds the module by media type and would still load it.
    assert_eq!(rules::gloo(&img).expect("gloo").0.module, wasm);
}

#[test]
fn istio_rejects_a_single_layer_hub_image() {
    let img = image(
        Some(media_type::OCI_MANIFEST),
        hub_config(),
        vec![Blob::new(media_type::HUB_CONTENT, module())],
    );
    istio_rejects(&img, "number of layers must be 2 but got 1");
}

#[test]
fn istio_rejects_two_layers_without_the_hub_content_type() {
    let img = image(
        Some(media_type::OCI_MANIFEST),
        hub_config(),
        vec![hub_config(), Blob::new(media_type::CNCF_LAYER, module())],
    );
    istio_rejects(
        &img,
        "could not find the layer of type application/vnd.module.wasm.content.layer.v1+wasm",
    );
}

#[test]
fn istio_rejects_compat_without_plugin_wasm() {
    let layer = Blob::new(
        media_type::OCI_LAYER,
        gz(&tar(&[("filter.wasm", &module())])),
    );
    let img = image(Some(media_type::OCI_MANIFEST), oci_config(), vec![layer]);
    istio_rejects(&img, "plugin.wasm not found in the archive");
}

#[test]
fn istio_rejects_an_uncompressed_tar_layer() {
    let tar_only = Blob::new(
        "application/vnd.oci.image.layer.v1.tar",
        tar(&[("plugin.wasm", &module())]),
    );
    let img = image(Some(media_type::OCI_MANIFEST), oci_config(), vec![tar_only]);
    istio_rejects(
        &img,
        "invalid media type application/vnd.oci.image.layer.v1.tar",
    );
    // The right media type on bytes that are not gzip.
    let not_gzip = Blob::new(media_type::OCI_LAYER, tar(&[("plugin.wasm", &module())]));
    let img = image(Some(media_type::OCI_MANIFEST), oci_config(), vec![not_gzip]);
    istio_rejects(&img, "failed to parse layer as tar.gz");
}

#[test]
fn istio_rejects_compat_when_the_module_is_not_the_last_layer() {
    let wasm_layer = Blob::new(
        media_type::OCI_LAYER,
        gz(&tar(&[("plugin.wasm", &module())])),
    );
    let notes = Blob::new("application/vnd.example.notes+json", "{}");
    let img = image(
        Some(media_type::OCI_MANIFEST),
        oci_config(),
        vec![wasm_layer, notes],
    );
    istio_rejects(
        &img,
        "invalid media type application/vnd.example.notes+json",
    );
}

#[test]
fn istio_rejects_docker_manifests_with_oci_layers() {
    // A Docker manifest is only ever read as Docker compat: no fallback.
    let layer = Blob::new(
        media_type::OCI_LAYER,
        gz(&tar(&[("plugin.wasm", &module())])),
    );
    let img = image(Some(media_type::DOCKER_MANIFEST), oci_config(), vec![layer]);
    istio_rejects(&img, "as Docker container invalid media type");
}

#[test]
fn istio_rejects_images_without_layers() {
    let img = image(Some(media_type::OCI_MANIFEST), oci_config(), vec![]);
    istio_rejects(&img, "number of layers must be greater than zero");
}

#[test]
fn istio_rejects_a_plugin_that_is_not_wasm() {
    let layer = Blob::new(
        media_type::OCI_LAYER,
        gz(&tar(&[("plugin.wasm", b"#!/bin/sh")])),
    );
    let img = image(Some(media_type::OCI_MANIFEST), oci_config(), vec![layer]);
    istio_rejects(&img, "does not start with the Wasm magic number");
}

#[test]
fn istio_rejects_indexes_and_artifact_manifests() {
    let mut img = image(Some(media_type::OCI_INDEX), oci_config(), vec![]);
    img.manifest.config = None;
    istio_rejects(&img, "index");
    let (_, mut ours) = ours(Format::Oci);
    ours.manifest.media_type = Some("application/vnd.oci.artifact.manifest.v1+json".into());
    istio_rejects(&ours, "is not an image");
}

// --- Gloo and CNCF negatives ---

#[test]
fn gloo_needs_the_hub_runtime_config() {
    let img = image(
        Some(media_type::OCI_MANIFEST),
        oci_config(),
        vec![oci_config(), Blob::new(media_type::HUB_CONTENT, module())],
    );
    assert!(
        rules::gloo(&img)
            .expect_err("no runtime config")
            .contains("runtime config")
    );
    let other = Blob::new(media_type::HUB_CONFIG, r#"{"type":"wasmtime"}"#);
    let img = image(
        Some(media_type::OCI_MANIFEST),
        other.clone(),
        vec![other, Blob::new(media_type::HUB_CONTENT, module())],
    );
    assert!(
        rules::gloo(&img)
            .expect_err("not envoy")
            .contains("envoy_proxy")
    );
}

#[test]
fn cncf_rules() {
    let wasm = module();
    let layer = Blob::new(media_type::CNCF_LAYER, wasm.clone());
    let bad_digests = Blob::new(
        media_type::CNCF_CONFIG,
        r#"{"architecture":"wasm","os":"wasip1","layerDigests":["sha256:00"]}"#,
    );
    let img = image(
        Some(media_type::OCI_MANIFEST),
        bad_digests,
        vec![layer.clone()],
    );
    assert!(
        rules::cncf(&img)
            .expect_err("digests")
            .contains("layerDigests")
    );
    let two = image(
        Some(media_type::OCI_MANIFEST),
        Blob::new(
            media_type::CNCF_CONFIG,
            r#"{"architecture":"wasm","os":"wasip1"}"#,
        ),
        vec![
            layer.clone(),
            Blob::new(media_type::CNCF_LAYER, b"\0asm\x01\0\0\0".to_vec()),
        ],
    );
    assert!(
        rules::cncf(&two)
            .expect_err("two layers")
            .contains("exactly one layer")
    );
}
