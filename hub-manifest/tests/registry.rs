//! Push, pull, tag and the error cases against a real registry: Debian's
//! `docker-registry` on loopback, with and without htpasswd auth. These tests
//! fail (never skip) when the registry binary is missing.

#![allow(
    clippy::print_stdout,
    reason = "the timing test prints push and pull times (shown with --show-output)"
)]

use std::sync::Arc;
use std::time::Instant;

use weir_hub::progress::Quiet;
use weir_hub::registry::{Check, Client, ClientOptions, ImageRef};
use weir_hub::testing::LocalRegistry;
use weir_hub::{Credentials, Error, FilterManifest, Format, Image, Layout, ModuleInfo, rules};

fn registry() -> LocalRegistry {
    LocalRegistry::start().unwrap_or_else(|e| panic!("cannot start docker-registry: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client(credentials: Credentials) -> Client {
    Client::new(ClientOptions {
        insecure: true,
        credentials,
    })
}

/// A proxy-wasm module padded with a custom section to about `size` bytes.
fn module(size: usize, salt: &str) -> Vec<u8> {
    let mut wasm = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "proxy_abi_version_0_2_1"))
             (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))"#,
    )
    .expect("valid wat");
    let name = format!("pad-{salt}");
    let pad = size.saturating_sub(wasm.len() + name.len() + 2);
    let mut payload = Vec::with_capacity(pad);
    let mut x: u32 = 0x9e37_79b9 ^ salt.len() as u32;
    for _ in 0..pad {
        // Incompressible filler, so gzip does not hide the size.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        payload.push(x as u8);
    }
    let mut section = Vec::new();
    leb(&mut section, name.len() as u64);
    section.extend_from_slice(name.as_bytes());
    section.extend_from_slice(&payload);
    wasm.push(0);
    leb(&mut wasm, section.len() as u64);
    wasm.extend_from_slice(&section);
    wasm
}

fn leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
}

fn image(format: Format, wasm: &[u8], version: &str) -> Image {
    let info = ModuleInfo::read(wasm).expect("proxy-wasm module");
    let filter = FilterManifest::new("probe", version, &info).expect("manifest");
    Image::build(format, &filter, wasm).expect("image")
}

fn reference(reg: &LocalRegistry, repo: &str, tag: &str) -> ImageRef {
    format!("{}/{repo}:{tag}", reg.host())
        .parse()
        .expect("reference")
}

#[test]
fn round_trip_in_every_format() {
    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    let wasm = module(100 * 1024, "round-trip");
    for format in Format::ALL {
        let img = image(format, &wasm, "1.0.0");
        let r = reference(&reg, &format!("filters/{format}"), "1.0.0");
        let report = rt
            .block_on(c.push(&r, &img, format, Arc::new(Quiet)))
            .unwrap_or_else(|e| panic!("{format}: {e}\n{}", reg.log()));
        assert_eq!(report.digest, img.digest);
        assert_eq!(report.uploaded_blobs, img.blobs.len());
        let v = &report.verified;
        match format {
            Format::Compat => {
                assert_eq!(v.layout, Some(Layout::Compat));
                assert!(
                    v.istio.loads() && !v.gloo.loads() && !v.cncf.loads(),
                    "{v:?}"
                );
            }
            Format::Oci => {
                assert_eq!(v.layout, Some(Layout::Hub));
                assert!(
                    v.istio.loads() && v.gloo.loads() && !v.cncf.loads(),
                    "{v:?}"
                );
            }
            Format::Cncf => {
                assert_eq!(v.layout, Some(Layout::Cncf));
                assert!(
                    matches!(v.istio, Check::Rejected(_)) && v.cncf.loads(),
                    "{v:?}"
                );
            }
        }
        let pulled = rt.block_on(c.pull(&r, Arc::new(Quiet))).expect("pull");
        assert_eq!(pulled.image.digest, img.digest, "{format}");
        assert_eq!(pulled.image.manifest_bytes, img.manifest_bytes);
        let module = match format {
            Format::Cncf => rules::cncf(&pulled.image).expect("cncf").module,
            _ => rules::istio(&pulled.image).expect("istio").module,
        };
        assert_eq!(module, wasm, "{format}");
        assert_eq!(
            pulled
                .image
                .manifest
                .filter_manifest()
                .expect("annotated")
                .sha256,
            weir_hub::module::sha256_hex(&wasm)
        );
    }
}

fn one_line(e: &Error) -> String {
    let text = e.to_string();
    assert!(!text.contains('\n'), "not one line: {text}");
    text
}

fn secret() -> String {
    // A password generated per run; nothing secret is stored in the repository.
    weir_hub::module::sha256_hex(format!("{:?}{}", Instant::now(), std::process::id()).as_bytes())
        [..20]
        .to_owned()
}

#[test]
fn wrong_password_and_missing_credentials_are_named() {
    let password = secret();
    let reg = LocalRegistry::start_with_auth("alice", &password)
        .unwrap_or_else(|e| panic!("cannot start docker-registry: {e}"));
    let rt = runtime();
    let wasm = module(4096, "auth");
    let img = image(Format::Compat, &wasm, "1.0.0");
    let r = reference(&reg, "team/auth", "1.0.0");
    let good = Credentials::Basic {
        username: "alice".into(),
        password: password.clone(),
    };
    let bad = Credentials::Basic {
        username: "alice".into(),
        password: format!("{password}-wrong"),
    };

    rt.block_on(client(good.clone()).push(&r, &img, Format::Compat, Arc::new(Quiet)))
        .unwrap_or_else(|e| panic!("push with the right password: {e}\n{}", reg.log()));
    rt.block_on(client(good.clone()).pull(&r, Arc::new(Quiet)))
        .expect("pull with the right password");

    let err = rt
        .block_on(client(bad.clone()).push(&r, &img, Format::Compat, Arc::new(Quiet)))
        .expect_err("wrong password");
    assert!(matches!(err, Error::WrongCredentials { .. }), "{err}");
    assert!(
        one_line(&err).contains("rejected the credentials of user \"alice\""),
        "{err}"
    );
    let err = rt
        .block_on(client(bad.clone()).pull(&r, Arc::new(Quiet)))
        .expect_err("wrong password");
    assert!(matches!(err, Error::WrongCredentials { .. }), "{err}");
    let err = rt
        .block_on(client(Credentials::Anonymous).pull(&r, Arc::new(Quiet)))
        .expect_err("no credentials");
    assert!(matches!(err, Error::CredentialsRequired { .. }), "{err}");
    assert!(one_line(&err).contains("weir login"), "{err}");

    // The `weir login` check.
    let host = reg.host();
    rt.block_on(weir_hub::registry::check_login(&host, &good, true))
        .expect("login accepted");
    let err = rt
        .block_on(weir_hub::registry::check_login(&host, &bad, true))
        .expect_err("login refused");
    assert!(matches!(err, Error::WrongCredentials { .. }), "{err}");
}

#[test]
fn unknown_repository_and_tag_are_named() {
    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    let err = rt
        .block_on(c.pull(&reference(&reg, "nobody/here", "1.0.0"), Arc::new(Quiet)))
        .expect_err("unknown repository");
    assert!(
        matches!(
            err,
            Error::UnknownRepository { .. } | Error::UnknownReference { .. }
        ),
        "{err}"
    );
    assert!(one_line(&err).contains("nobody/here"), "{err}");

    let wasm = module(4096, "tags");
    let r = reference(&reg, "team/tags", "1.0.0");
    rt.block_on(c.push(
        &r,
        &image(Format::Compat, &wasm, "1.0.0"),
        Format::Compat,
        Arc::new(Quiet),
    ))
    .expect("push");
    let err = rt
        .block_on(c.pull(&reference(&reg, "team/tags", "9.9.9"), Arc::new(Quiet)))
        .expect_err("unknown tag");
    assert!(matches!(err, Error::UnknownReference { .. }), "{err}");
    assert!(
        one_line(&err).contains("team/tags:9.9.9 not found"),
        "{err}"
    );
    // A plain-HTTP registry addressed over HTTPS says so.
    let tls = Client::new(ClientOptions::default());
    let err = rt
        .block_on(tls.pull(&r, Arc::new(Quiet)))
        .expect_err("https to http");
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    assert!(one_line(&err).contains("--insecure"), "{err}");
}

#[test]
fn a_corrupted_blob_or_manifest_is_a_digest_mismatch() {
    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    let wasm = module(8192, "corrupt");
    let img = image(Format::Oci, &wasm, "1.0.0");
    let r = reference(&reg, "team/corrupt", "1.0.0");
    rt.block_on(c.push(&r, &img, Format::Oci, Arc::new(Quiet)))
        .expect("push");

    // Flip one byte of the module as stored by the registry.
    let layer = &img.manifest.layers[1].digest;
    let path = reg.blob_path(layer);
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("tamper");
    let err = rt
        .block_on(c.pull(&r, Arc::new(Quiet)))
        .expect_err("tampered layer");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(one_line(&err).contains(layer.as_str()), "{err}");

    // The manifest too (pulled by tag and by digest).
    let manifest = reg.blob_path(&img.digest);
    let mut bytes = std::fs::read(&manifest).expect("manifest blob");
    bytes.push(b' ');
    std::fs::write(&manifest, &bytes).expect("tamper");
    for r in [r.clone(), r.at_digest(&img.digest)] {
        let err = rt
            .block_on(c.pull(&r, Arc::new(Quiet)))
            .expect_err("tampered manifest");
        assert!(matches!(err, Error::DigestMismatch { .. }), "{r}: {err}");
    }
}

#[test]
fn a_repush_uploads_nothing_and_tags_move() {
    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    let v1 = image(Format::Compat, &module(4096, "v1"), "1.0.0");
    let v2 = image(Format::Compat, &module(4096, "v2"), "2.0.0");
    let latest = reference(&reg, "team/moves", "latest");

    let first = rt
        .block_on(c.push(&latest, &v1, Format::Compat, Arc::new(Quiet)))
        .expect("push");
    assert_eq!(first.uploaded_blobs, 2);
    let again = rt
        .block_on(c.push(&latest, &v1, Format::Compat, Arc::new(Quiet)))
        .expect("re-push");
    assert_eq!((again.uploaded_blobs, again.existing_blobs), (0, 2));
    assert_eq!(again.uploaded_bytes, 0);
    assert_eq!(again.digest, first.digest);

    rt.block_on(c.push(&latest, &v2, Format::Compat, Arc::new(Quiet)))
        .expect("push v2");
    assert_eq!(
        rt.block_on(c.manifest(&latest)).expect("latest").1,
        v2.digest
    );

    // `tag`: point `stable` at v1 by digest, then move it to v2.
    let stable = reference(&reg, "team/moves", "stable");
    let d = rt
        .block_on(c.tag(&latest.at_digest(&v1.digest), &stable))
        .expect("tag");
    assert_eq!(d, v1.digest);
    assert_eq!(
        rt.block_on(c.manifest(&stable)).expect("stable").1,
        v1.digest
    );
    rt.block_on(c.tag(&latest, &stable)).expect("move");
    assert_eq!(
        rt.block_on(c.manifest(&stable)).expect("stable").1,
        v2.digest
    );
    // Into another repository of the same registry.
    let other = reference(&reg, "mirror/moves", "2.0.0");
    rt.block_on(c.tag(&latest, &other))
        .expect("cross-repository tag");
    let pulled = rt.block_on(c.pull(&other, Arc::new(Quiet))).expect("pull");
    assert_eq!(pulled.image.digest, v2.digest);
    let mut tags = rt.block_on(c.tags(&latest)).expect("tags");
    tags.sort();
    assert_eq!(tags, ["latest", "stable"]);
    assert_eq!(
        rt.block_on(c.repositories(&reg.host())).expect("catalog"),
        ["mirror/moves", "team/moves"]
    );
}

#[test]
fn a_failed_push_leaves_the_tag_untouched() {
    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    let r = reference(&reg, "team/safe", "1.0.0");
    let v1 = image(Format::Compat, &module(4096, "safe-v1"), "1.0.0");
    rt.block_on(c.push(&r, &v1, Format::Compat, Arc::new(Quiet)))
        .expect("push v1");

    // A layer whose bytes do not match its digest: the registry refuses the
    // upload and the manifest is never written.
    let mut broken = image(Format::Compat, &module(4096, "safe-v2"), "2.0.0");
    let mut data = broken.blobs[1].data.to_vec();
    data[0] ^= 0xff;
    broken.blobs[1].data = data.into();
    let err = rt
        .block_on(c.push(&r, &broken, Format::Compat, Arc::new(Quiet)))
        .expect_err("corrupt upload");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(rt.block_on(c.manifest(&r)).expect("tag").1, v1.digest);

    // An image that Istio would not load, pushed for Istio: it is uploaded
    // by digest, fails verification, and the tag stays on v1.
    let cncf = image(Format::Cncf, &module(4096, "safe-v3"), "3.0.0");
    let err = rt
        .block_on(c.push(&r, &cncf, Format::Compat, Arc::new(Quiet)))
        .expect_err("Istio would not load it");
    assert!(
        matches!(
            err,
            Error::WouldNotLoad {
                consumer: "Istio",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        one_line(&err).contains("invalid format as an OCI image"),
        "{err}"
    );
    assert_eq!(rt.block_on(c.manifest(&r)).expect("tag").1, v1.digest);
}

/// Push and pull times on loopback for a 100 KB and a 10 MiB module (the
/// 10 MiB one also proves large modules round-trip), in every format.
#[test]
fn push_and_pull_times_on_loopback() {
    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    for (label, size) in [("100 KB", 100 * 1000), ("10 MiB", 10 * 1024 * 1024)] {
        let wasm = module(size, label);
        assert!(wasm.len() >= size);
        for format in Format::ALL {
            let img = image(format, &wasm, "1.0.0");
            let r = reference(&reg, &format!("bench/{}-{format}", size), "1.0.0");
            let started = Instant::now();
            let report = rt
                .block_on(c.push(&r, &img, format, Arc::new(Quiet)))
                .unwrap_or_else(|e| panic!("{label} {format}: {e}"));
            let push = started.elapsed();
            let started = Instant::now();
            let pulled = rt.block_on(c.pull(&r, Arc::new(Quiet))).expect("pull");
            let pull = started.elapsed();
            let module = match format {
                Format::Cncf => rules::cncf(&pulled.image).expect("cncf").module,
                _ => rules::istio(&pulled.image).expect("istio").module,
            };
            assert_eq!(module.len(), wasm.len());
            println!(
                "timing: {label} module ({} bytes), {format}: push {} ms \
                 (upload {} ms + verify {} ms), pull {} ms",
                wasm.len(),
                push.as_millis(),
                report.push_ms,
                report.verify_ms,
                pull.as_millis()
            );
        }
    }
}

/// Images other tools write: a Docker-flavoured compat image (`docker build`
/// and `docker push`) and a WebAssembly-Hub image as `wasme push` wrote it (no
/// `mediaType` field in the manifest body, no weir annotations). Both round
/// trip through the registry and load where Istio (and Gloo) would load them.
#[test]
fn images_written_by_other_tools_round_trip() {
    use std::collections::BTreeMap;
    use std::io::Write as _;
    use weir_hub::image::{Blob, Descriptor, ImageManifest, media_type};

    fn desc(b: &Blob, title: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: b.media_type.clone(),
            digest: b.digest.clone(),
            size: b.data.len() as u64,
            annotations: title
                .map(|t| {
                    BTreeMap::from([("org.opencontainers.image.title".to_owned(), t.to_owned())])
                })
                .unwrap_or_default(),
            platform: None,
        }
    }

    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    let wasm = module(4096, "others");

    // docker build + docker push: Docker media types, plugin.wasm in a tar.gz.
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, "plugin.wasm", &wasm[..])
        .expect("tar");
    let tar = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let layer = Blob::new(media_type::DOCKER_LAYER, gz.finish().expect("gzip"));
    let config = Blob::new(
        media_type::DOCKER_CONFIG,
        format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            weir_hub::module::oci_digest(&tar)
        ),
    );
    let docker = Image::from_manifest(
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::DOCKER_MANIFEST.into()),
            config: Some(desc(&config, None)),
            layers: vec![desc(&layer, None)],
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        },
        vec![config, layer],
    );
    let r = reference(&reg, "others/docker", "1.0");
    rt.block_on(c.push(&r, &docker, Format::Compat, Arc::new(Quiet)))
        .unwrap_or_else(|e| panic!("docker compat: {e}\n{}", reg.log()));
    let pulled = rt.block_on(c.pull(&r, Arc::new(Quiet))).expect("pull");
    assert_eq!(pulled.image.layout(), Layout::CompatDocker);
    assert_eq!(
        rules::istio(&pulled.image).expect("Istio loads it").module,
        wasm
    );
    assert!(pulled.image.manifest.filter_manifest().is_none());

    // wasme push: the runtime config twice, no mediaType in the body.
    let runtime_config = Blob::new(
        media_type::HUB_CONFIG,
        r#"{"type":"envoy_proxy","abiVersions":["v0.2.1"],"config":{"rootIds":["add_header"]}}"#,
    );
    let content = Blob::new(media_type::HUB_CONTENT, wasm.clone());
    let hub = Image::from_manifest(
        ImageManifest {
            schema_version: 2,
            media_type: None,
            config: Some(desc(&runtime_config, Some("runtime-config.json"))),
            layers: vec![
                desc(&runtime_config, Some("runtime-config.json")),
                desc(&content, Some("filter.wasm")),
            ],
            manifests: Vec::new(),
            annotations: BTreeMap::from([
                ("module.wasm.runtime/abi_version".into(), "v0.2.1".into()),
                ("module.wasm.runtime/type".into(), "envoy_proxy".into()),
            ]),
        },
        vec![runtime_config, content],
    );
    let r = reference(&reg, "others/wasme", "v0.1");
    rt.block_on(c.push(&r, &hub, Format::Oci, Arc::new(Quiet)))
        .unwrap_or_else(|e| panic!("wasme layout: {e}\n{}", reg.log()));
    let pulled = rt.block_on(c.pull(&r, Arc::new(Quiet))).expect("pull");
    assert_eq!(pulled.image.layout(), Layout::Hub);
    assert_eq!(rules::istio(&pulled.image).expect("Istio").module, wasm);
    let (loaded, runtime) = rules::gloo(&pulled.image).expect("Gloo");
    assert_eq!(loaded.module, wasm);
    assert_eq!(runtime.config.root_ids, ["add_header"]);
}

/// Pushing to `repo@sha256:…` checks that digest before uploading anything.
#[test]
fn a_push_pinned_to_another_digest_uploads_nothing() {
    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    let img = image(Format::Compat, &module(4096, "pinned"), "1.0.0");
    let other = format!("sha256:{}", "ab".repeat(32));
    let r: ImageRef = format!("{}/team/pinned@{other}", reg.host())
        .parse()
        .expect("ref");
    let err = rt
        .block_on(c.push(&r, &img, Format::Compat, Arc::new(Quiet)))
        .expect_err("digest mismatch");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(one_line(&err).contains(&other), "{err}");
    let err = rt
        .block_on(c.pull(&reference(&reg, "team/pinned", "1.0.0"), Arc::new(Quiet)))
        .expect_err("nothing was pushed");
    assert!(matches!(err, Error::UnknownRepository { .. }), "{err}");
    // Pinned to the right digest: pushed without a tag.
    let r = r.at_digest(&img.digest);
    let report = rt
        .block_on(c.push(&r, &img, Format::Compat, Arc::new(Quiet)))
        .expect("push");
    assert_eq!(report.tag, None);
    assert_eq!(
        rt.block_on(c.manifest(&r)).expect("by digest").1,
        img.digest
    );
}

/// An image index (as multi-platform builders write) is resolved to its
/// linux/amd64 image, the one Istio's fetcher picks.
#[test]
fn an_index_resolves_to_its_linux_amd64_image() {
    use std::collections::BTreeMap;
    use weir_hub::image::{Descriptor, ImageManifest, Platform, media_type};

    let reg = registry();
    let rt = runtime();
    let c = client(Credentials::Anonymous);
    let wasm = module(4096, "index");
    let amd64 = image(Format::Compat, &wasm, "1.0.0");
    let other = image(Format::Compat, &module(4096, "index-arm"), "1.0.0");
    for (img, tag) in [(&amd64, "amd64"), (&other, "arm64")] {
        rt.block_on(c.push(
            &reference(&reg, "team/index", tag),
            img,
            Format::Compat,
            Arc::new(Quiet),
        ))
        .expect("push child");
    }
    let entry = |img: &Image, arch: &str| Descriptor {
        media_type: media_type::OCI_MANIFEST.into(),
        digest: img.digest.clone(),
        size: img.manifest_bytes.len() as u64,
        annotations: BTreeMap::new(),
        platform: Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
        }),
    };
    let index = Image::from_manifest(
        ImageManifest {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            config: None,
            layers: Vec::new(),
            manifests: vec![entry(&other, "arm64"), entry(&amd64, "amd64")],
            annotations: BTreeMap::new(),
        },
        Vec::new(),
    );
    let r = reference(&reg, "team/index", "1.0.0");
    rt.block_on(c.push(&r, &index, Format::Compat, Arc::new(Quiet)))
        .unwrap_or_else(|e| panic!("push index: {e}\n{}", reg.log()));
    let pulled = rt.block_on(c.pull(&r, Arc::new(Quiet))).expect("pull");
    assert_eq!(pulled.image.digest, amd64.digest);
    assert_eq!(rules::istio(&pulled.image).expect("loads").module, wasm);
}
