//! The `weir` command-line tool's building blocks, shared with the end-to-end
//! tests: building filters to wasm, running the demo and publishing filters to
//! OCI registries.
//!
//! ```no_run
//! let root = weir_cli::build::workspace_root(std::env::current_dir()?)?;
//! for filter in weir_cli::build::build_filters(&root, &["header-append"])? {
//!     println!("{} -> {}", filter.package, filter.wasm.display());
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod build;
pub mod demo;
pub mod publish;
