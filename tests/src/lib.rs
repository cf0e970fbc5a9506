//! Support for weir's end-to-end tests: building the sample filters once,
//! running real Envoy on loopback with the configs in `envoy/`, a hyper upstream
//! and client, and comparing what Envoy and the harness did.

#![forbid(unsafe_code)]

pub mod conformance;
pub mod conformance_l4;
pub mod envoy;
pub mod grpc;
pub mod grpc_scenario;
pub mod load;
pub mod net;
pub mod observed;
pub mod scenarios;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use weir_cli::build::{self, BuiltFilter};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
}

/// Test-only filters in `tests/filters/`.
pub const TEST_FILTERS: &[&str] = &[
    "probe",
    "sdk-bodies",
    "header-append-raw",
    "sdk-callout",
    "sdk-families",
    "sdk-stream",
    "sdk-async",
];

/// The sample filters and the test filters, built for wasm32-wasip1 once per
/// test process.
///
/// # Panics
/// If they cannot be built: every test that needs them must fail, not skip.
pub fn built_filters() -> &'static [BuiltFilter] {
    static BUILT: OnceLock<Vec<BuiltFilter>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let all: Vec<&str> = build::SAMPLE_FILTERS
            .iter()
            .chain(TEST_FILTERS)
            .copied()
            .collect();
        build::build_filters(root(), &all)
            .unwrap_or_else(|e| panic!("cannot build the filters: {e:#}"))
    })
}

/// AssemblyScript test filters (`tests/as-filters/<name>`), built by
/// `scripts/setup` (`scripts/build-as-filters`) into `target/as-filters/`.
pub const AS_FILTERS: &[&str] = &["as-headers", "as-config", "as-config-direct"];

/// Hand-written test modules in `tests/wat-filters/<name>.wat`, for ABI details
/// no SDK produces (such as ABI 0.1.0), compiled on first use into
/// `target/wat-filters/`.
pub const WAT_FILTERS: &[&str] = &[
    "abi-0-1-0",
    "abi-0-1-0-continue-stream",
    "abi-0-1-0-headers-eos",
    "abi-0-2-0-log-level",
];

/// Compiles `tests/wat-filters/<name>.wat` (once per process and name).
fn wat_filter(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let source = root().join("tests/wat-filters").join(format!("{name}.wat"));
    let out_dir = build::target_dir(root()).join("wat-filters");
    let wasm = out_dir.join(format!("{name}.wasm"));
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let bytes = wat::parse_file(&source)
            .unwrap_or_else(|e| panic!("cannot compile {}: {e}", source.display()));
        std::fs::create_dir_all(&out_dir)
            .and_then(|()| std::fs::write(&wasm, bytes))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", wasm.display()));
        built.push(name.to_owned());
    }
    wasm
}

/// The built module of one sample, test, AssemblyScript or WAT filter.
///
/// # Panics
/// If `package` is not one of them, or an AssemblyScript module was not built.
pub fn filter_wasm(package: &str) -> PathBuf {
    if WAT_FILTERS.contains(&package) {
        return wat_filter(package);
    }
    if AS_FILTERS.contains(&package) {
        let wasm = build::target_dir(root())
            .join("as-filters")
            .join(format!("{package}.wasm"));
        assert!(
            wasm.is_file(),
            "{} is missing: run scripts/setup (it builds the AssemblyScript filters)",
            wasm.display()
        );
        return wasm;
    }
    built_filters()
        .iter()
        .find(|f| f.package == package)
        .map(|f| f.wasm.clone())
        .unwrap_or_else(|| panic!("{package} is not a sample or test filter"))
}

/// One harness engine per test process, with the on-disk compilation cache.
pub fn engine() -> &'static weir_harness::Engine {
    static ENGINE: OnceLock<weir_harness::Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        weir_harness::Engine::builder()
            .cache_dir(build::target_dir(root()).join("weir-cache"))
            .build()
            .unwrap_or_else(|e| panic!("cannot create the wasmtime engine: {e}"))
    })
}

/// The probe test filter (`tests/filters/probe`: host calls run on demand) as
/// plugin `p` in VM `p`, on [`engine`].
pub fn probe_filter() -> weir_harness::Filter {
    let plugin = engine()
        .load_file(filter_wasm("probe"))
        .unwrap_or_else(|e| panic!("the probe does not load: {e}"));
    weir_harness::Filter::new(plugin).name("p").vm_id("p")
}

/// The text of `envoy/<name>`.
///
/// # Panics
/// If the file cannot be read.
pub fn envoy_yaml(name: &str) -> String {
    let path = root().join("envoy").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
