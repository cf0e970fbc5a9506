//! Publishing proxy-wasm filters to OCI registries in the layouts Envoy, Istio
//! and Gloo load, and proving that they would load.
//!
//! - [`ModuleInfo`] reads a module's ABI versions and root ids;
//! - [`FilterManifest`] describes a published filter (with a published JSON
//!   Schema, [`manifest::PUBLISHED_SCHEMA`]);
//! - [`RuntimeConfig`] is wasme's `runtime-config.json`;
//! - [`Image::build`] lays a module out as an Istio compat image, a
//!   WebAssembly-Hub two-layer image or a CNCF wasm artifact ([`Format`]);
//! - [`rules`] checks an image with Istio's, Gloo's and the CNCF rules;
//! - [`registry::Client`] pushes (verifying before it moves the tag), pulls
//!   (verifying every digest), tags and lists;
//! - [`deploy`] writes an Istio `WasmPlugin`, a Gloo `Gateway` and an Envoy
//!   `remote` source; [`catalog`] renders a registry as an HTML page.
//!
//! ```
//! use weir_hub::{FilterManifest, Format, Image, ModuleInfo, rules};
//!
//! let wasm = wat::parse_str(r#"(module (func (export "proxy_abi_version_0_2_1")))"#)?;
//! let info = ModuleInfo::read(&wasm)?;              // ABI and root ids from the module
//! assert_eq!(info.abi_versions, ["v0.2.1"]);
//!
//! let mut filter = FilterManifest::new("header-append", "0.1.0", &info)?;
//! filter.description = Some("Adds, sets and removes headers".into());
//!
//! let image = Image::build(Format::Compat, &filter, &wasm)?;
//! let loaded = rules::istio(&image).map_err(|e| anyhow::anyhow!(e))?; // Istio's rules
//! assert_eq!(loaded.module, wasm);
//! assert!(rules::cncf(&image).is_err());            // not a CNCF artifact
//! println!("manifest digest {}", image.digest);
//! # Ok::<(), anyhow::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod catalog;
pub mod credentials;
pub mod deploy;
mod error;
pub mod image;
pub mod manifest;
pub mod module;
pub mod progress;
pub mod registry;
pub mod rules;
pub mod runtime_config;
pub mod testing;

pub use credentials::{Credentials, DockerConfig};
pub use error::{Error, Result};
pub use image::{Format, Image, Layout};
pub use manifest::{FilterManifest, Sdk};
pub use module::ModuleInfo;
pub use registry::{Client, ClientOptions, ImageRef};
pub use runtime_config::RuntimeConfig;
