//! What a proxy-wasm module says about itself: ABI versions and root ids, read
//! from the binary.

use sha2::{Digest as _, Sha256};
use wasmparser::{Encoding, Parser, Payload};

use crate::{Error, Result};

/// The custom section a module may carry to declare its root ids: a JSON array
/// of strings, e.g. `["add_header"]`.
///
/// proxy-wasm modules register root contexts at run time, so root ids are not
/// visible in the binary otherwise. A module without this section (every weir
/// filter) answers to any root id, which the manifest records as an empty list.
pub const ROOT_IDS_SECTION: &str = "weir.root_ids";

const ABI_PREFIX: &str = "proxy_abi_version_";

/// Facts read from a module's bytes; nothing here is typed by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// ABI versions from the `proxy_abi_version_*` exports, e.g. `v0.2.1`,
    /// in export order.
    pub abi_versions: Vec<String>,
    /// Root ids from the [`ROOT_IDS_SECTION`] custom section; empty when the
    /// module answers to any root id.
    pub root_ids: Vec<String>,
    /// Lower-case hex sha256 of the module.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl ModuleInfo {
    /// Reads a proxy-wasm module.
    ///
    /// # Errors
    /// [`Error::NotWasm`] if the bytes are not a core WebAssembly module, and
    /// [`Error::NoAbiMarker`] if it exports no `proxy_abi_version_*` function.
    pub fn read(bytes: &[u8]) -> Result<Self> {
        if !bytes.starts_with(b"\0asm") {
            return Err(Error::NotWasm(
                "it does not start with the WebAssembly magic number".into(),
            ));
        }
        let mut abi_versions = Vec::new();
        let mut root_ids = Vec::new();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(|e| Error::NotWasm(e.to_string()))? {
                Payload::Version {
                    encoding: Encoding::Component,
                    ..
                } => {
                    return Err(Error::NotWasm(
                        "it is a component; Envoy loads core modules".into(),
                    ));
                }
                Payload::ExportSection(exports) => {
                    for export in exports {
                        let export = export.map_err(|e| Error::NotWasm(e.to_string()))?;
                        if let Some(v) = export.name.strip_prefix(ABI_PREFIX) {
                            abi_versions.push(format!("v{}", v.replace('_', ".")));
                        }
                    }
                }
                Payload::CustomSection(section) if section.name() == ROOT_IDS_SECTION => {
                    root_ids = serde_json::from_slice(section.data()).map_err(|e| {
                        Error::NotWasm(format!(
                            "custom section {ROOT_IDS_SECTION} is not a JSON array of strings: {e}"
                        ))
                    })?;
                }
                _ => {}
            }
        }
        if abi_versions.is_empty() {
            return Err(Error::NoAbiMarker);
        }
        Ok(Self {
            abi_versions,
            root_ids,
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
        })
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The OCI digest (`sha256:<hex>`) of `bytes`.
pub fn oci_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(wat: &str) -> Vec<u8> {
        wat::parse_str(wat).expect("valid wat")
    }

    #[test]
    fn reads_abi_markers_and_root_ids() {
        let mut bytes = module(
            r#"(module (func (export "proxy_abi_version_0_2_1")) (func (export "proxy_on_memory_allocate")))"#,
        );
        // Custom section: id 0, size, name, payload.
        let name = ROOT_IDS_SECTION.as_bytes();
        let payload = br#"["add_header","other"]"#;
        bytes.push(0);
        bytes.push((1 + name.len() + payload.len()) as u8);
        bytes.push(name.len() as u8);
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(payload);
        let info = ModuleInfo::read(&bytes).expect("reads");
        assert_eq!(info.abi_versions, ["v0.2.1"]);
        assert_eq!(info.root_ids, ["add_header", "other"]);
        assert_eq!(info.size, bytes.len() as u64);
        assert_eq!(info.sha256, sha256_hex(&bytes));
    }

    #[test]
    fn a_module_without_marker_is_refused() {
        let err =
            ModuleInfo::read(&module(r#"(module (func (export "run")))"#)).expect_err("no marker");
        assert!(matches!(err, Error::NoAbiMarker), "{err}");
        assert!(err.to_string().contains("proxy_abi_version_"));
    }

    #[test]
    fn non_wasm_is_refused() {
        let err = ModuleInfo::read(b"PK\x03\x04zip").expect_err("not wasm");
        assert!(matches!(err, Error::NotWasm(_)), "{err}");
    }

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            oci_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
