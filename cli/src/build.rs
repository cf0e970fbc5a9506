//! Building filter crates to `wasm32-wasip1` with cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The wasm target filters are built for.
pub const TARGET: &str = "wasm32-wasip1";
/// The cargo profile filters are built with (see the root manifest).
pub const PROFILE: &str = "filter";
/// The same profile with DWARF and function names kept ([`Build::Debug`]).
pub const DEBUG_PROFILE: &str = "filter-debug";

/// How a filter is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Build {
    /// Optimized and stripped, for Envoy ([`PROFILE`]).
    #[default]
    Release,
    /// Optimized, with its DWARF and function names ([`DEBUG_PROFILE`]): a trap
    /// in the harness names each frame's function and file:line. Larger.
    Debug,
}

impl Build {
    /// The cargo profile, which is also the folder under the target's.
    #[must_use]
    pub fn profile(self) -> &'static str {
        match self {
            Build::Release => PROFILE,
            Build::Debug => DEBUG_PROFILE,
        }
    }
}
/// The sample filters shipped in `filters/`.
pub const SAMPLE_FILTERS: &[&str] = &["header-append", "auth", "transform"];

/// A filter module on disk.
#[derive(Debug, Clone)]
pub struct BuiltFilter {
    /// The cargo package name, e.g. `header-append`.
    pub package: String,
    /// The `.wasm` file.
    pub wasm: PathBuf,
}

/// Finds the weir workspace root at or above `start`: the directory whose
/// `Cargo.toml` declares a workspace and which has a `filters/` directory.
///
/// # Errors
/// If no such directory exists above `start`.
pub fn workspace_root(start: impl AsRef<Path>) -> Result<PathBuf> {
    let start = start.as_ref();
    for dir in start.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if dir.join("filters").is_dir()
            && std::fs::read_to_string(&manifest).is_ok_and(|m| m.contains("[workspace]"))
        {
            return Ok(dir.to_owned());
        }
    }
    bail!(
        "no weir workspace (a Cargo.toml with [workspace] next to filters/) at or above {}",
        start.display()
    )
}

/// The cargo target directory of the workspace (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Builds `packages` for `wasm32-wasip1` with the `filter` profile and returns
/// their modules. Cargo only rebuilds what changed.
///
/// # Errors
/// If cargo cannot be run, the build fails, or a module is missing afterwards.
pub fn build_filters(root: &Path, packages: &[&str]) -> Result<Vec<BuiltFilter>> {
    build_filters_as(root, packages, Build::Release)
}

/// [`build_filters`] as `build` says.
///
/// # Errors
/// If cargo cannot be run, the build fails, or a module is missing afterwards.
pub fn build_filters_as(root: &Path, packages: &[&str], build: Build) -> Result<Vec<BuiltFilter>> {
    let profile = build.profile();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--quiet", "--target", TARGET, "--profile", profile]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run cargo in {}", root.display()))?;
    if !status.success() {
        bail!(
            "building {} for {TARGET} failed ({status}); is the target installed? \
             run `rustup target add {TARGET}`",
            packages.join(", ")
        );
    }
    let out = target_dir(root).join(TARGET).join(profile);
    packages
        .iter()
        .map(|p| {
            let wasm = out.join(format!("{}.wasm", p.replace('-', "_")));
            if !wasm.is_file() {
                bail!("cargo built {p} but {} is missing", wasm.display());
            }
            Ok(BuiltFilter {
                package: (*p).to_owned(),
                wasm,
            })
        })
        .collect()
}
