//! Publishing the real header-append filter: round trips through Debian's
//! docker-registry in every format, real Envoy 1.40 serving traffic through a
//! filter pulled back from the registry (as a file, and fetched by Envoy itself
//! from the registry with a sha256), a registry without OCI artifact support,
//! and the catalog page in headless Chromium. Every test fails, never skips,
//! when docker-registry, Envoy or Chromium is missing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde_yaml_ng::Value;
use weir_hub::deploy::Published;
use weir_hub::progress::Quiet;
use weir_hub::testing::LocalRegistry;
use weir_hub::{
    Client, ClientOptions, Credentials, Error, FilterManifest, Format, Image, ImageRef, ModuleInfo,
    rules,
};
use weir_tests::envoy::{Envoy, Rebind};
use weir_tests::net::{self, Upstream};
use weir_tests::{envoy_yaml, filter_wasm, scenarios};

fn registry() -> LocalRegistry {
    LocalRegistry::start().unwrap_or_else(|e| panic!("cannot start docker-registry: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn client() -> Client {
    Client::new(ClientOptions {
        insecure: true,
        credentials: Credentials::Anonymous,
    })
}

fn header_append() -> (Vec<u8>, FilterManifest) {
    let wasm = std::fs::read(filter_wasm("header-append")).expect("built module");
    let info = ModuleInfo::read(&wasm).expect("header-append is a proxy-wasm module");
    let mut filter = FilterManifest::new("header-append", "0.1.0", &info).expect("manifest");
    filter.description = Some("Adds, sets and removes headers".into());
    (wasm, filter)
}

fn push(reg: &LocalRegistry, format: Format, repo: &str) -> (ImageRef, Image, FilterManifest) {
    let (wasm, filter) = header_append();
    let image = Image::build(format, &filter, &wasm).expect("image");
    let reference: ImageRef = format!("{}/{repo}:0.1.0", reg.host()).parse().expect("ref");
    runtime()
        .block_on(client().push(&reference, &image, format, Arc::new(Quiet)))
        .unwrap_or_else(|e| panic!("push {format}: {e}\n{}", reg.log()));
    (reference, image, filter)
}

fn send_through(envoy: &Envoy) -> http::Response<Bytes> {
    let req = http::Request::get("/hello")
        .header("host", "weir.test")
        .header("x-internal-secret", "s")
        .body(Bytes::new())
        .expect("request");
    net::send(envoy.listener, req).expect("envoy answers")
}

fn assert_header_append_ran(upstream: &Upstream, res: &http::Response<Bytes>, envoy: &Envoy) {
    let seen = upstream.take_seen();
    assert_eq!(seen.len(), 1, "{}", envoy.log());
    assert!(seen[0].headers().get("x-internal-secret").is_none());
    assert_eq!(seen[0].headers()["x-via-weir"], "header-append");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-filtered-by"], "weir");
}

#[test]
fn header_append_round_trips_in_every_format() {
    let reg = registry();
    let (wasm, _) = header_append();
    for format in Format::ALL {
        let (reference, image, _) = push(&reg, format, &format!("filters/ha-{format}"));
        let pulled = runtime()
            .block_on(client().pull(&reference, Arc::new(Quiet)))
            .expect("pull");
        assert_eq!(pulled.image.digest, image.digest);
        let module = match format {
            Format::Compat => {
                rules::istio(&pulled.image)
                    .expect("Istio loads compat")
                    .module
            }
            Format::Oci => {
                let istio = rules::istio(&pulled.image).expect("Istio loads oci").module;
                assert_eq!(
                    rules::gloo(&pulled.image).expect("Gloo loads oci").0.module,
                    istio
                );
                istio
            }
            Format::Cncf => rules::cncf(&pulled.image).expect("CNCF artifact").module,
        };
        assert_eq!(module, wasm, "{format}");
    }
}

/// A filter pushed in the compat format, pulled back to a file, loaded by
/// Envoy 1.40 from that file, serving traffic.
#[test]
fn envoy_serves_traffic_through_a_pulled_filter() {
    let reg = registry();
    let (reference, _, filter) = push(&reg, Format::Compat, "filters/header-append");
    let pulled = runtime()
        .block_on(client().pull(&reference, Arc::new(Quiet)))
        .expect("pull");
    let module = rules::istio(&pulled.image).expect("loads").module;
    assert_eq!(weir_hub::module::sha256_hex(&module), filter.sha256);
    let dir = std::env::temp_dir().join(format!("weir-hub-pulled-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file: PathBuf = dir.join("header_append.wasm");
    std::fs::write(&file, &module).expect("write");

    let upstream = Upstream::start(scenarios::header_append_upstream()).expect("upstream");
    let how = Rebind {
        clusters: HashMap::from([("upstream".to_owned(), upstream.addr())]),
        modules: HashMap::from([("header_append.wasm".to_owned(), file)]),
        loopback: true,
    };
    let envoy =
        Envoy::start(&envoy_yaml("header-append.yaml"), &how).unwrap_or_else(|e| panic!("{e:#}"));
    let res = send_through(&envoy);
    assert_header_append_ran(&upstream, &res, &envoy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Envoy snippet `weir push` prints for the oci format: Envoy 1.40 fetches
/// the module blob straight from the registry over `http_uri`, checks its
/// sha256, and serves traffic through it.
#[test]
fn envoy_fetches_the_filter_from_the_registry_with_its_sha256() {
    let reg = registry();
    let (reference, image, filter) = push(&reg, Format::Oci, "filters/header-append");
    let published = Published {
        reference: &reference,
        image: &image,
        filter: &filter,
        insecure: true,
    };
    let snippet: Value = serde_yaml_ng::from_str(&published.envoy_remote()).expect("snippet YAML");
    let remote_code =
        snippet["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"].clone();
    assert_eq!(
        remote_code["remote"]["sha256"].as_str(),
        Some(filter.sha256.as_str())
    );
    let fetch_cluster = snippet["clusters"][0].clone();

    // header-append.yaml with the module coming from the snippet's remote source.
    let mut config: Value =
        serde_yaml_ng::from_str(&envoy_yaml("header-append.yaml")).expect("yaml");
    let filters = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    filters[0]["typed_config"]["config"]["vm_config"]["code"] = remote_code;
    config["static_resources"]["clusters"]
        .as_sequence_mut()
        .expect("clusters")
        .push(fetch_cluster);
    let yaml = serde_yaml_ng::to_string(&config).expect("yaml");

    let upstream = Upstream::start(scenarios::header_append_upstream()).expect("upstream");
    let how = Rebind {
        clusters: HashMap::from([
            ("upstream".to_owned(), upstream.addr()),
            ("weir_wasm_fetch".to_owned(), reg.addr()),
        ]),
        modules: HashMap::new(),
        loopback: true,
    };
    let envoy = Envoy::start(&yaml, &how).unwrap_or_else(|e| panic!("{e:#}"));
    let res = send_through(&envoy);
    assert_header_append_ran(&upstream, &res, &envoy);
    let stats = net::admin_get(envoy.admin, "/stats?filter=remote_load").expect("stats");
    assert!(
        stats.contains("wasm.remote_load_fetch_successes: 1"),
        "Envoy did not fetch the module remotely:\n{stats}"
    );
}

/// A registry that refuses manifests with custom media types (as quay and
/// older ECR did) gets a one-line error naming the cause and the fix, and no
/// tag is written.
#[test]
fn a_registry_without_artifact_support_is_named() {
    use std::sync::Mutex;
    let manifests = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&manifests);
    let handler: weir_tests::net::Handler = Arc::new(move |req: http::Request<Bytes>| {
        let path = req.uri().path().to_owned();
        let reply = |status: u16| http::Response::builder().status(status);
        let response = match (req.method().as_str(), path.as_str()) {
            ("GET", "/v2/") => reply(200).body(Bytes::new()),
            ("HEAD", p) if p.contains("/blobs/") => reply(404).body(Bytes::new()),
            ("POST", p) if p.ends_with("/blobs/uploads/") => reply(202)
                .header("location", format!("{p}session"))
                .body(Bytes::new()),
            ("PATCH", p) => reply(202).header("location", p).body(Bytes::new()),
            ("PUT", p) if p.contains("/blobs/uploads/") => {
                reply(201).header("location", p).body(Bytes::new())
            }
            ("PUT", p) if p.contains("/manifests/") => {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(p.to_owned());
                let body = String::from_utf8_lossy(req.body());
                if body.contains("application/vnd.module.wasm") {
                    reply(415).header("content-type", "application/json").body(Bytes::from_static(
                        br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid","detail":"unsupported config media type"}]}"#,
                    ))
                } else {
                    reply(201).body(Bytes::new())
                }
            }
            _ => reply(404).body(Bytes::new()),
        };
        response.expect("response")
    });
    let fake = Upstream::start(handler).expect("fake registry");
    let (wasm, filter) = header_append();
    let image = Image::build(Format::Oci, &filter, &wasm).expect("image");
    let reference: ImageRef = format!("{}/filters/header-append:0.1.0", fake.addr())
        .parse()
        .expect("ref");
    let err = runtime()
        .block_on(client().push(&reference, &image, Format::Oci, Arc::new(Quiet)))
        .expect_err("the registry refuses WebAssembly-Hub manifests");
    assert!(matches!(err, Error::ArtifactsUnsupported { .. }), "{err}");
    let text = err.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("does not accept oci images"), "{text}");
    assert!(text.contains("--format compat"), "{text}");
    let puts = manifests.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(
        puts,
        [format!(
            "/v2/filters/header-append/manifests/{}",
            image.digest
        )]
    );
}

/// Chromium: `$WEIR_CHROMIUM`, else Debian's `chromium` (installed by
/// scripts/setup).
fn chromium() -> PathBuf {
    let path = std::env::var_os("WEIR_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium not found at {}: run scripts/setup (apt-get install chromium) or set WEIR_CHROMIUM",
        path.display()
    );
    path
}

/// The DOM of `page` after its scripts ran, from headless Chromium.
fn rendered_dom(page: &std::path::Path) -> String {
    let profile = page.with_extension("profile");
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

/// `weir hub catalog`'s page, loaded in headless Chromium: every filter, its
/// versions, description, config schema, sizes, digests and a copy-paste
/// WasmPlugin are on the page, and its script ran.
#[test]
fn catalog_page_in_headless_chromium() {
    let reg = registry();
    let rt = runtime();
    let c = client();
    let (wasm, mut filter) = header_append();
    let schema_path = weir_tests::root().join("filters/header-append/config.schema.json");
    filter.config_schema = Some(
        serde_json::from_str(&std::fs::read_to_string(&schema_path).expect("schema file"))
            .expect("schema JSON"),
    );
    let mut digests = Vec::new();
    for (format, version) in [(Format::Compat, "0.1.0"), (Format::Oci, "0.2.0")] {
        filter.version = version.into();
        let image = Image::build(format, &filter, &wasm).expect("image");
        let reference: ImageRef = format!("{}/filters/header-append:{version}", reg.host())
            .parse()
            .expect("ref");
        rt.block_on(c.push(&reference, &image, format, Arc::new(Quiet)))
            .expect("push");
        digests.push(image.digest);
    }
    let probe =
        wat::parse_str(r#"(module (func (export "proxy_abi_version_0_2_1")))"#).expect("wat");
    let info = ModuleInfo::read(&probe).expect("module");
    let mut other = FilterManifest::new("tiny-probe", "1.0.0", &info).expect("manifest");
    other.description = Some("A <tiny> filter & nothing else".into());
    let image = Image::build(Format::Cncf, &other, &probe).expect("image");
    let reference: ImageRef = format!("{}/filters/tiny-probe:1.0.0", reg.host())
        .parse()
        .expect("ref");
    rt.block_on(c.push(&reference, &image, Format::Cncf, Arc::new(Quiet)))
        .expect("push");

    let entries = rt
        .block_on(weir_hub::catalog::collect(&c, &reg.host(), true))
        .expect("catalog");
    assert_eq!(entries.len(), 2);
    let html = weir_hub::catalog::render_html(&reg.host(), &entries);
    let dir = std::env::temp_dir().join(format!("weir-catalog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let page = dir.join("catalog.html");
    std::fs::write(&page, &html).expect("write page");

    let dom = rendered_dom(&page);
    assert!(
        dom.contains(r#"data-ready="1""#),
        "the page script did not run:\n{dom}"
    );
    assert!(dom.contains("2 filters, 3 versions"), "{dom}");
    for text in [
        r#"data-name="header-append""#,
        r#"data-name="tiny-probe""#,
        "Adds, sets and removes headers",
        "A &lt;tiny&gt; filter &amp; nothing else",
        "Configuration schema",
        "header-append configuration",
        "0.1.0",
        "0.2.0",
        "kind: WasmPlugin",
        "failStrategy: FAIL_CLOSE",
        "KiB",
        r#"title="cncf (CNCF wasm artifact)">cncf<"#,
    ] {
        assert!(dom.contains(text), "{text:?} missing from the page:\n{dom}");
    }
    for digest in &digests {
        assert!(dom.contains(digest.as_str()), "digest {digest} missing");
    }
    // The copy-paste WasmPlugin pins the newest Istio-loadable version.
    let newest = digests[1].trim_start_matches("sha256:");
    assert!(dom.contains(&format!("sha256: {newest}")), "{dom}");
    assert!(dom.contains(&format!(
        "url: oci://{}/filters/header-append:0.2.0",
        reg.host()
    )));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small in-memory OCI registry with token authentication, the flow GHCR
/// and Docker Hub use (docker-registry has no token server of its own):
/// `/v2/` answers 401 with a Bearer challenge naming `/token`, `/token` trades
/// basic credentials for a bearer token, and every registry request needs
/// that token. It can also break uploads off after a number of chunks.
mod token_registry {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use base64::Engine as _;
    use bytes::Bytes;
    use weir_tests::net::{Handler, Upstream};

    pub(crate) const TOKEN: &str = "weir-test-token";

    #[derive(Default)]
    pub(crate) struct State {
        blobs: HashMap<String, Bytes>,
        manifests: HashMap<String, (Bytes, String, String)>,
        uploads: HashMap<String, Vec<u8>>,
        next_upload: u32,
        /// Token requests answered.
        pub(crate) tokens_issued: u32,
        /// Answer 500 to every upload chunk after this many.
        pub(crate) fail_chunks_after: Option<u32>,
        /// Refuse every write with 403 DENIED (a read-only token).
        pub(crate) read_only: bool,
        chunks: u32,
    }

    pub(crate) struct TokenRegistry {
        pub(crate) upstream: Upstream,
        pub(crate) state: Arc<Mutex<State>>,
    }

    fn reply(status: u16) -> http::response::Builder {
        http::Response::builder().status(status)
    }

    fn error(status: u16, code: &str) -> http::Response<Bytes> {
        reply(status)
            .header("content-type", "application/json")
            .body(Bytes::from(format!(
                r#"{{"errors":[{{"code":"{code}","message":"{code}"}}]}}"#
            )))
            .expect("response")
    }

    impl TokenRegistry {
        pub(crate) fn start(user: &str, password: &str) -> Self {
            let state = Arc::new(Mutex::new(State::default()));
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            let shared = Arc::clone(&state);
            let handler: Handler = Arc::new(move |req: http::Request<Bytes>| {
                let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
                handle(&mut st, &basic, &req).expect("response")
            });
            let upstream = Upstream::start(handler).expect("token registry");
            Self { upstream, state }
        }

        pub(crate) fn host(&self) -> String {
            self.upstream.addr().to_string()
        }

        pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    fn handle(
        st: &mut State,
        basic: &str,
        req: &http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, http::Error> {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let host = req
            .headers()
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let path = req.uri().path().to_owned();
        if path == "/token" {
            if auth != basic {
                return Ok(error(401, "UNAUTHORIZED"));
            }
            st.tokens_issued += 1;
            return reply(200)
                .header("content-type", "application/json")
                .body(Bytes::from(format!(
                    r#"{{"token":"{TOKEN}","expires_in":300}}"#
                )));
        }
        if auth != format!("Bearer {TOKEN}") {
            let mut r = error(401, "UNAUTHORIZED");
            r.headers_mut().insert(
                "www-authenticate",
                format!(r#"Bearer realm="http://{host}/token",service="weir-test""#)
                    .parse()
                    .expect("header"),
            );
            return Ok(r);
        }
        let method = req.method().as_str();
        if st.read_only && matches!(method, "POST" | "PATCH" | "PUT" | "DELETE") {
            return Ok(error(403, "DENIED"));
        }
        if path == "/v2/" {
            return reply(200).body(Bytes::new());
        }
        let rest = path.strip_prefix("/v2/").unwrap_or_default();
        let split = |marker: &str| {
            rest.split_once(marker)
                .map(|(n, r)| (n.to_owned(), r.to_owned()))
        };
        if let Some((name, id)) = split("/blobs/uploads/") {
            match method {
                "POST" => {
                    st.next_upload += 1;
                    let id = st.next_upload.to_string();
                    st.uploads.insert(id.clone(), Vec::new());
                    return reply(202)
                        .header("location", format!("/v2/{name}/blobs/uploads/{id}"))
                        .body(Bytes::new());
                }
                "PATCH" => {
                    st.chunks += 1;
                    if st.fail_chunks_after.is_some_and(|n| st.chunks > n) {
                        return Ok(error(500, "UNKNOWN"));
                    }
                    let Some(buf) = st.uploads.get_mut(&id) else {
                        return Ok(error(404, "BLOB_UPLOAD_UNKNOWN"));
                    };
                    buf.extend_from_slice(req.body());
                    let end = buf.len().saturating_sub(1);
                    return reply(202)
                        .header("location", path.clone())
                        .header("range", format!("0-{end}"))
                        .body(Bytes::new());
                }
                "PUT" => {
                    let digest = req
                        .uri()
                        .query()
                        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("digest=")))
                        .unwrap_or_default()
                        .replace("%3A", ":");
                    let mut data = st.uploads.remove(&id).unwrap_or_default();
                    data.extend_from_slice(req.body());
                    if weir_hub::module::oci_digest(&data) != digest {
                        return Ok(error(400, "DIGEST_INVALID"));
                    }
                    st.blobs.insert(digest.clone(), Bytes::from(data));
                    return reply(201)
                        .header("location", format!("/v2/{name}/blobs/{digest}"))
                        .body(Bytes::new());
                }
                _ => return Ok(error(405, "UNSUPPORTED")),
            }
        }
        if let Some((_, digest)) = split("/blobs/") {
            return Ok(match st.blobs.get(&digest) {
                Some(data) if method == "HEAD" => reply(200)
                    .header("content-length", data.len())
                    .body(Bytes::new())?,
                Some(data) => reply(200)
                    .header("docker-content-digest", digest)
                    .body(data.clone())?,
                None => error(404, "BLOB_UNKNOWN"),
            });
        }
        if let Some((name, reference)) = split("/manifests/") {
            let key = format!("{name}:{reference}");
            if method == "PUT" {
                let digest = weir_hub::module::oci_digest(req.body());
                let media = req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let entry = (req.body().clone(), media, digest.clone());
                st.manifests.insert(key, entry.clone());
                st.manifests.insert(format!("{name}:{digest}"), entry);
                return reply(201)
                    .header("location", format!("/v2/{name}/manifests/{digest}"))
                    .header("docker-content-digest", digest)
                    .body(Bytes::new());
            }
            return Ok(match st.manifests.get(&key) {
                Some((body, media, digest)) => reply(200)
                    .header("content-type", media.as_str())
                    .header("docker-content-digest", digest.as_str())
                    .body(body.clone())?,
                None => error(404, "MANIFEST_UNKNOWN"),
            });
        }
        if let Some((name, _)) = split("/tags/list") {
            let prefix = format!("{name}:");
            let tags: Vec<String> = st
                .manifests
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|t| !t.starts_with("sha256:"))
                .map(str::to_owned)
                .collect();
            return reply(200)
                .header("content-type", "application/json")
                .body(Bytes::from(
                    serde_json::json!({"name": name, "tags": tags}).to_string(),
                ));
        }
        Ok(error(404, "NAME_UNKNOWN"))
    }
}

/// Token authentication: basic credentials are traded for a bearer token at
/// the realm the registry names; a bearer token can also be given directly;
/// wrong ones are named.
#[test]
fn bearer_token_authentication() {
    use token_registry::{TOKEN, TokenRegistry};
    let password =
        weir_hub::module::sha256_hex(format!("{:?}", std::time::Instant::now()).as_bytes());
    let reg = TokenRegistry::start("carol", &password);
    let rt = runtime();
    let (wasm, filter) = header_append();
    let image = Image::build(Format::Oci, &filter, &wasm).expect("image");
    let reference: ImageRef = format!("{}/team/tokens:0.1.0", reg.host())
        .parse()
        .expect("ref");
    let with = |credentials: Credentials| {
        Client::new(ClientOptions {
            insecure: true,
            credentials,
        })
    };
    let basic = with(Credentials::Basic {
        username: "carol".into(),
        password: password.clone(),
    });
    let report = rt
        .block_on(basic.push(&reference, &image, Format::Oci, Arc::new(Quiet)))
        .unwrap_or_else(|e| panic!("push through the token flow: {e}"));
    assert!(report.verified.istio.loads() && report.verified.gloo.loads());
    assert!(reg.state().tokens_issued >= 1);

    let bearer = with(Credentials::Bearer(TOKEN.into()));
    let pulled = rt
        .block_on(bearer.pull(&reference, Arc::new(Quiet)))
        .expect("pull with a bearer token");
    assert_eq!(pulled.image.digest, image.digest);

    let wrong = with(Credentials::Bearer("not-the-token".into()));
    let err = rt
        .block_on(wrong.pull(&reference, Arc::new(Quiet)))
        .expect_err("wrong token");
    assert!(matches!(err, Error::WrongCredentials { .. }), "{err}");
    let wrong = with(Credentials::Basic {
        username: "carol".into(),
        password: "nope".into(),
    });
    let err = rt
        .block_on(wrong.pull(&reference, Arc::new(Quiet)))
        .expect_err("wrong password");
    assert!(matches!(err, Error::WrongCredentials { .. }), "{err}");
    assert!(!err.to_string().contains('\n'));
    rt.block_on(weir_hub::registry::check_login(
        &reg.host(),
        &Credentials::Basic {
            username: "carol".into(),
            password: password.clone(),
        },
        true,
    ))
    .expect("login through the token realm");
    let err = rt
        .block_on(weir_hub::registry::check_login(
            &reg.host(),
            &Credentials::Basic {
                username: "carol".into(),
                password: "nope".into(),
            },
            true,
        ))
        .expect_err("refused");
    assert!(matches!(err, Error::WrongCredentials { .. }), "{err}");
}

/// An upload broken off half way (the registry stops answering chunks) fails
/// the push and leaves the tag on the previous image.
#[test]
fn an_interrupted_upload_leaves_the_tag_untouched() {
    use token_registry::{TOKEN, TokenRegistry};
    let reg = TokenRegistry::start("dave", "unused");
    let rt = runtime();
    let c = Client::new(ClientOptions {
        insecure: true,
        credentials: Credentials::Bearer(TOKEN.into()),
    });
    let (wasm, filter) = header_append();
    let reference: ImageRef = format!("{}/team/interrupted:stable", reg.host())
        .parse()
        .expect("ref");
    let v1 = Image::build(Format::Oci, &filter, &wasm).expect("image");
    rt.block_on(c.push(&reference, &v1, Format::Oci, Arc::new(Quiet)))
        .expect("push v1");

    // v2: a 3 MiB module, uploaded in 1 MiB chunks; the second chunk fails.
    let mut big = wasm.clone();
    big.push(0);
    let payload = vec![7u8; 3 << 20];
    let name = b"pad";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut len = section.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        big.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    big.extend_from_slice(&section);
    let info = ModuleInfo::read(&big).expect("padded module");
    let mut f2 = FilterManifest::new("header-append", "0.2.0", &info).expect("manifest");
    f2.description = filter.description.clone();
    let v2 = Image::build(Format::Oci, &f2, &big).expect("image");
    {
        let mut st = reg.state();
        st.fail_chunks_after = Some(1);
    }
    let err = rt
        .block_on(c.push(&reference, &v2, Format::Oci, Arc::new(Quiet)))
        .expect_err("the upload breaks off");
    assert!(!err.to_string().contains('\n'), "{err}");
    reg.state().fail_chunks_after = None;
    let (_, digest) = rt
        .block_on(c.manifest(&reference))
        .expect("tag still there");
    assert_eq!(digest, v1.digest, "the tag moved after a failed push");
}

/// `weir push -p header-append` (through the CLI's library): the manifest is
/// filled from the package (description, license, source, SDK and its
/// config.schema.json) and the module (ABI), and the tag is the version.
#[test]
fn push_from_the_package_fills_the_manifest() {
    use weir_cli::publish::{Emit, FormatArg, PushArgs, RegistryArgs};
    let reg = registry();
    let dir = std::env::temp_dir().join(format!("weir-hub-package-{}", std::process::id()));
    let args = PushArgs {
        reference: format!("{}/filters/header-append", reg.host()),
        package: Some("header-append".into()),
        wasm: None,
        format: FormatArg::Oci,
        name: None,
        filter_version: None,
        description: None,
        license: None,
        source: None,
        config_schema: None,
        emit: Emit::All,
        registry: RegistryArgs {
            insecure: true,
            username: None,
            password_stdin: false,
            docker_config: Some(dir.join("config.json")),
            json: true,
        },
    };
    let mut out = Vec::new();
    weir_cli::publish::push(args, &mut out).unwrap_or_else(|e| panic!("{e:#}"));
    let report: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
    let filter = &report["filter"];
    assert_eq!(
        report["reference"],
        format!("{}/filters/header-append:0.1.0", reg.host())
    );
    assert_eq!(filter["name"], "header-append");
    assert_eq!(filter["version"], "0.1.0");
    assert_eq!(filter["license"], "Apache-2.0");
    assert!(
        filter["description"]
            .as_str()
            .is_some_and(|d| d.contains("headers"))
    );
    assert!(filter["source"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(filter["sdk"]["name"], "weir");
    assert_eq!(filter["abiVersions"][0], "v0.2.1");
    assert_eq!(
        filter["configSchema"]["title"],
        "header-append configuration"
    );
    assert_eq!(report["verified"]["gloo"]["result"], "loads");
    let gloo = report["snippets"]["glooGateway"].as_str().expect("gloo");
    assert!(
        gloo.contains(&format!(
            "image: {}/filters/header-append:0.1.0",
            reg.host()
        )),
        "{gloo}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Credentials that may read but not write are named as such.
#[test]
fn a_read_only_token_is_denied_push() {
    use token_registry::{TOKEN, TokenRegistry};
    let reg = TokenRegistry::start("erin", "unused");
    reg.state().read_only = true;
    let c = Client::new(ClientOptions {
        insecure: true,
        credentials: Credentials::Bearer(TOKEN.into()),
    });
    let (wasm, filter) = header_append();
    let image = Image::build(Format::Compat, &filter, &wasm).expect("image");
    let reference: ImageRef = format!("{}/team/readonly:0.1.0", reg.host())
        .parse()
        .expect("ref");
    let err = runtime()
        .block_on(c.push(&reference, &image, Format::Compat, Arc::new(Quiet)))
        .expect_err("read-only");
    assert!(
        matches!(
            err,
            Error::Denied {
                operation: "push",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("denied push on team/readonly"),
        "{err}"
    );
}
