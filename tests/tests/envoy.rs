//! The shipped Envoy configs, in real Envoy 1.40 (V8).

use std::collections::HashMap;

use bytes::Bytes;
use weir_tests::envoy::{self, Envoy, Rebind};
use weir_tests::net::{self, Upstream};
use weir_tests::{built_filters, envoy_yaml, root, scenarios};

fn modules() -> HashMap<String, std::path::PathBuf> {
    built_filters()
        .iter()
        .map(|f| {
            (
                format!("{}.wasm", f.package.replace('-', "_")),
                f.wasm.clone(),
            )
        })
        .collect()
}

/// Every `envoy/*.yaml` with its text.
fn shipped_configs() -> Vec<(std::path::PathBuf, String)> {
    std::fs::read_dir(root().join("envoy"))
        .expect("envoy/ exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let yaml = std::fs::read_to_string(&path).expect("readable");
            (path, yaml)
        })
        .collect()
}

/// Every config in envoy/ is valid for Envoy 1.40 as shipped (only the module path
/// points at the local build, since validation loads the module).
#[test]
fn every_shipped_config_validates() {
    let mut checked = 0;
    for (path, yaml) in shipped_configs() {
        let how = Rebind {
            modules: modules(),
            ..Rebind::default()
        };
        let config = envoy::write_config(&yaml, &how).expect("rebinds");
        envoy::validate(&config).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        checked += 1;
    }
    assert!(checked > 0, "no configs found in envoy/");
}

/// Every config in envoy/ loads in the harness (`NetworkConfig` for the
/// network filter chain, `EnvoyConfig` for the others) with no field it
/// refuses and none it warns about (`auth.yaml`'s path normalization
/// included: the harness emulates it).
#[test]
fn every_shipped_config_loads_in_the_harness_without_warnings() {
    let mut checked = 0;
    for (path, yaml) in shipped_configs() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let warnings = if name == "conformance-l4.yaml" {
            weir_harness::NetworkConfig::parse(&yaml).map(|c| c.warnings)
        } else {
            weir_harness::EnvoyConfig::parse(&yaml).map(|c| c.warnings)
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let fields: Vec<&str> = warnings
            .iter()
            .filter_map(|w| w.split(' ').next())
            .map(|path| path.trim_end_matches(':'))
            .collect();
        assert!(fields.is_empty(), "{name}: {warnings:#?}");
        checked += 1;
    }
    assert!(checked > 0, "no configs found in envoy/");
}

fn start(yaml: &str, upstream: &Upstream) -> Envoy {
    let how = Rebind {
        clusters: HashMap::from([("upstream".to_owned(), upstream.addr())]),
        modules: modules(),
        loopback: true,
    };
    Envoy::start(yaml, &how).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn header_append_changes_headers_in_envoy() {
    let upstream = Upstream::start(scenarios::header_append_upstream()).expect("upstream");
    let envoy = start(&envoy_yaml("header-append.yaml"), &upstream);
    let req = http::Request::get("/admin")
        .header("host", "weir.test")
        .header("x-internal-secret", "let-me-in")
        .header("x-env", "prod")
        .body(Bytes::new())
        .expect("request");
    let res = net::send(envoy.listener, req).expect("envoy answers");

    let seen = upstream.take_seen();
    assert_eq!(seen.len(), 1, "{}", envoy.log());
    let up = &seen[0];
    assert!(up.headers().get("x-internal-secret").is_none());
    assert_eq!(
        up.headers().get_all("x-env").iter().collect::<Vec<_>>(),
        ["demo"]
    );
    assert_eq!(up.headers()["x-via-weir"], "header-append");

    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-powered-by").is_none());
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["x-filtered-by"], "weir");
    assert_eq!(res.headers()["server"], "envoy");
}

/// A config with a bad field is refused by Envoy itself (on_configure returns false
/// in the canary VM), and Envoy's log names the field.
#[test]
fn envoy_rejects_an_invalid_filter_config() {
    let yaml = envoy_yaml("header-append.yaml").replace(
        r#""set": [{"name": "x-env", "value": "demo"}]"#,
        r#""set": [{"name": "x env", "value": "demo"}]"#,
    );
    assert!(
        yaml.contains("x env"),
        "the shipped config changed; update this test"
    );
    let upstream = Upstream::start(scenarios::header_append_upstream()).expect("upstream");
    let how = Rebind {
        clusters: HashMap::from([("upstream".to_owned(), upstream.addr())]),
        modules: modules(),
        loopback: true,
    };
    let err = Envoy::start(&yaml, &how).expect_err("Envoy must refuse the plugin");
    let log = format!("{err:#}");
    assert!(log.contains("request.set[0].name"), "{log}");
}

/// envoy/header-append-templates.yaml in Envoy: templates from headers and
/// attributes, a rename, a conditional rule, and the request id Envoy generated
/// echoed in the response.
#[test]
fn header_append_templates_in_envoy() {
    let upstream = Upstream::start(scenarios::header_append_upstream()).expect("upstream");
    let envoy = start(&envoy_yaml("header-append-templates.yaml"), &upstream);
    let req = http::Request::put("/api/items?page=2")
        .header("host", "weir.test")
        .header("x-user", "ann")
        .header("x-tenant", "acme")
        .header("x-internal-secret", "s")
        .body(Bytes::new())
        .expect("request");
    let res = net::send(envoy.listener, req).expect("envoy answers");
    let seen = upstream.take_seen();
    assert_eq!(seen.len(), 1, "{}", envoy.log());
    let up = seen[0].headers();
    assert_eq!(up["x-forwarded-user"], "ann");
    assert!(up.get("x-user").is_none() && up.get("x-internal-secret").is_none());
    let client = up["x-client"].to_str().expect("ascii");
    assert!(client.starts_with("127.0.0.1:"), "{client}");
    assert_eq!(up["x-route"], "upstream/default");
    assert_eq!(up["x-api-write"], "acme");
    let id = up["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 36, "Envoy generated a UUID: {id}");
    assert_eq!(res.headers()["x-request-id"], id);
    assert_eq!(res.headers()["x-original-path"], "/api/items?page=2");
    assert_eq!(
        res.headers()["x-served-by"],
        upstream.addr().to_string().as_str()
    );
    assert!(res.headers().get("x-powered-by").is_none());
}

/// Envoy refuses invalid template configurations, its log naming the field and
/// the reason.
#[test]
fn envoy_rejects_invalid_template_configs() {
    let upstream = Upstream::start(scenarios::header_append_upstream()).expect("upstream");
    let shipped = envoy_yaml("header-append-templates.yaml");
    let original = r#"{"name": "x-client", "value": "{attr:source.address}"}"#;
    assert!(
        shipped.contains(original),
        "the shipped config changed; update this test"
    );
    let cases = [
        (
            r#"{"name": "x-client", "value": "{attr:source.address"}"#,
            "request.set[0].value",
            "unclosed `{`",
        ),
        (
            r#"{"name": "x-client", "value": "{attr:source.ip}"}"#,
            "request.set[0].value",
            "unknown attribute `source.ip`",
        ),
        (
            r#"{"name": "x client", "value": "{attr:source.address}"}"#,
            "request.set[0].name",
            "invalid header name",
        ),
        (
            r#"{"name": "x-client", "value": "{response.header.server}"}"#,
            "request.set[0].value",
            "does not exist in the request phase",
        ),
    ];
    for (replacement, field, reason) in cases {
        let yaml = shipped.replace(original, replacement);
        let how = Rebind {
            clusters: HashMap::from([("upstream".to_owned(), upstream.addr())]),
            modules: modules(),
            loopback: true,
        };
        let err = Envoy::start(&yaml, &how).expect_err("Envoy must refuse the plugin");
        let log = format!("{err:#}");
        assert!(
            log.contains(&format!("`{field}`")) && log.contains(reason),
            "{replacement}: {log}"
        );
    }
    // An invalid condition too.
    let yaml = shipped.replace(r#""path_prefix": "/api/""#, r#""path_prefix": "api""#);
    assert_ne!(yaml, shipped);
    let how = Rebind {
        clusters: HashMap::from([("upstream".to_owned(), upstream.addr())]),
        modules: modules(),
        loopback: true,
    };
    let log = format!("{:#}", Envoy::start(&yaml, &how).expect_err("refused"));
    assert!(
        log.contains("request.rules[0].when.path_prefix") && log.contains("must start with `/`"),
        "{log}"
    );
}

/// docker-compose.yml runs Envoy 1.40 on the same envoy/*.yaml the tests use, with
/// each module mounted where that config loads it from.
#[test]
fn docker_compose_uses_the_tested_configs() {
    let text =
        std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    let envoy = &compose["services"]["envoy"];
    assert_eq!(envoy["image"].as_str(), Some("envoyproxy/envoy:v1.40.0"));
    let mounts: Vec<(String, String)> = envoy["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(|v| {
            let mut parts = v.as_str()?.split(':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect();
    let (config_src, _) = mounts
        .iter()
        .find(|(_, dst)| dst == "/etc/envoy/envoy.yaml")
        .expect("a config mounted at /etc/envoy/envoy.yaml");
    let config_path = root().join(config_src.trim_start_matches("./"));
    assert!(
        config_path.starts_with(root().join("envoy")),
        "{config_src} is not in envoy/"
    );
    let config = weir_harness::EnvoyConfig::parse(
        &std::fs::read_to_string(&config_path).expect("mounted config exists"),
    )
    .expect("parses");
    for filter in &config.filters {
        let target = filter.filename.to_string_lossy();
        let (src, _) = mounts
            .iter()
            .find(|(_, dst)| *dst == target)
            .unwrap_or_else(|| panic!("{target} is not mounted"));
        let file = std::path::Path::new(src).file_name().expect("file name");
        assert!(
            built_filters()
                .iter()
                .any(|f| f.wasm.file_name() == Some(file)),
            "{src} is not a sample filter build output"
        );
    }
}

/// `envoy/conformance.yaml` without its wasm filter, its route pointing at a
/// cluster the bootstrap does not define (`validate_clusters` as given).
fn route_to_missing_cluster(validate_clusters: Option<bool>) -> String {
    let yaml = envoy::without_wasm_filters(&envoy_yaml("conformance.yaml")).expect("parses");
    let mut root: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("yaml");
    let hcm = &mut root["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0];
    let route_config = &mut hcm["typed_config"]["route_config"];
    if let Some(validate) = validate_clusters {
        route_config["validate_clusters"] = serde_yaml_ng::Value::from(validate);
    }
    let route = &mut route_config["virtual_hosts"][0]["routes"][0];
    route["name"] = serde_yaml_ng::Value::from("to-missing");
    route["route"]["cluster"] = serde_yaml_ng::Value::from("missing");
    serde_yaml_ng::to_string(&root).expect("serializes")
}

/// Envoy 1.40 refuses a static route to an undefined cluster unless the
/// route config sets `validate_clusters: false`; `EnvoyConfig::parse` refuses
/// it the same way, naming the route and the cluster. The unvalidated route
/// both accept: the harness then answers it as Envoy does (503
/// `cluster_not_found`, flag `NC`; `tests/conformance/missing-cluster.yaml`).
#[test]
fn a_route_to_an_undefined_cluster_is_refused_like_envoy() {
    for validate in [None, Some(true)] {
        let yaml = route_to_missing_cluster(validate);
        let err = weir_harness::EnvoyConfig::parse(&yaml).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("`to-missing`") && text.contains("`missing`"),
            "{text}"
        );
        assert!(text.contains("unknown cluster 'missing'"), "{text}");
        let config = envoy::write_config(&yaml, &Rebind::default()).expect("rebinds");
        let envoy_err = envoy::validate(&config).expect_err("Envoy refuses it too");
        assert!(
            format!("{envoy_err:#}").contains("route: unknown cluster 'missing'"),
            "{envoy_err:#}"
        );
    }

    let yaml = route_to_missing_cluster(Some(false));
    let config = envoy::write_config(&yaml, &Rebind::default()).expect("rebinds");
    envoy::validate(&config).unwrap_or_else(|e| panic!("Envoy accepts it: {e:#}"));
    let parsed = weir_harness::EnvoyConfig::parse(&yaml)
        .unwrap_or_else(|e| panic!("the harness accepts it too: {e}"));
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let mut chain = parsed
        .chain_builder(weir_tests::engine(), |_| {
            unreachable!("the config has no wasm filter")
        })
        .and_then(weir_harness::ChainBuilder::build)
        .expect("starts");
    let request = http::Request::get("/")
        .header("host", "envoy.test")
        .body(Bytes::new())
        .expect("request");
    let o = chain
        .send(request, |_| panic!("nothing goes upstream"))
        .expect("answered");
    assert_eq!(o.response.status(), 503);
    assert!(o.upstream_request.is_none());
    let reply = o.local_reply.expect("the router answered");
    assert_eq!(reply.details, "cluster_not_found");
}
