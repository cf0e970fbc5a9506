//! The filter manifest, its published JSON Schema and its JSON form.

use weir_hub::manifest::{FilterManifest, PUBLISHED_SCHEMA, Sdk};
use weir_hub::{Error, ModuleInfo};

fn info() -> ModuleInfo {
    let wasm =
        wat::parse_str(r#"(module (func (export "proxy_abi_version_0_2_0")))"#).expect("valid wat");
    ModuleInfo::read(&wasm).expect("proxy-wasm")
}

/// `hub-manifest/schema/filter-manifest.schema.json` is what the types say.
/// After changing the types, regenerate it with
/// `WEIR_BLESS=1 cargo test -p weir-hub --test manifest`.
#[test]
fn published_schema_is_current() {
    let current =
        serde_json::to_string_pretty(&FilterManifest::json_schema()).expect("json") + "\n";
    if std::env::var_os("WEIR_BLESS").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/filter-manifest.schema.json"
        );
        std::fs::write(path, &current).expect("write schema");
        return;
    }
    assert_eq!(
        PUBLISHED_SCHEMA, current,
        "the published schema is stale: run WEIR_BLESS=1 cargo test -p weir-hub --test manifest"
    );
}

#[test]
fn schema_describes_every_field() {
    let schema: serde_json::Value = serde_json::from_str(PUBLISHED_SCHEMA).expect("json");
    assert_eq!(schema["title"], "weir filter manifest");
    let props = schema["properties"].as_object().expect("properties");
    for field in [
        "manifestVersion",
        "name",
        "version",
        "description",
        "license",
        "source",
        "abiVersions",
        "rootIds",
        "configSchema",
        "sdk",
        "sha256",
        "size",
    ] {
        assert!(props.contains_key(field), "schema lacks {field}");
        assert!(
            props[field]["description"].is_string(),
            "{field} is undocumented in the schema"
        );
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for field in [
        "manifestVersion",
        "name",
        "version",
        "abiVersions",
        "sha256",
        "size",
    ] {
        assert!(required.contains(&field), "{field} should be required");
    }
}

#[test]
fn json_round_trip_in_camel_case() {
    let mut m = FilterManifest::new("header-append", "0.1.0", &info()).expect("valid");
    m.sdk = Some(Sdk {
        name: "weir".into(),
        version: "0.1.0".into(),
    });
    m.config_schema = Some(serde_json::json!({"type": "object"}));
    let json = m.to_json();
    for key in [
        "\"manifestVersion\":1",
        "\"abiVersions\":[\"v0.2.0\"]",
        "\"rootIds\":[]",
        "\"configSchema\"",
    ] {
        assert!(json.contains(key), "{key} missing in {json}");
    }
    assert_eq!(FilterManifest::from_json(&json).expect("parses"), m);
}

#[test]
fn invalid_manifests_name_the_field() {
    let bad_name = FilterManifest::new("Header Append", "0.1.0", &info()).expect_err("name");
    assert!(
        matches!(bad_name, Error::InvalidManifest(ref m) if m.contains("name")),
        "{bad_name}"
    );
    let bad_version = FilterManifest::new("x", "", &info()).expect_err("version");
    assert!(bad_version.to_string().contains("version"), "{bad_version}");
    let mut m = FilterManifest::new("x", "1", &info()).expect("valid");
    m.config_schema = Some(serde_json::json!(3));
    assert!(
        m.validate()
            .expect_err("schema")
            .to_string()
            .contains("configSchema")
    );
    assert!(FilterManifest::from_json(r#"{"name":"x"}"#).is_err());
}
