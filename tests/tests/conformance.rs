//! Every scenario in tests/conformance/*.yaml, through the harness and through
//! real Envoy 1.40: the outcomes must be identical. `WEIR_CONFORMANCE=a,b` runs
//! only the files whose names contain `a` or `b`.

use weir_tests::{conformance, root};

/// `WEIR_CONFORMANCE=a,b` runs only the files whose names contain `a` or `b`
/// (while working on a few scenarios; CI runs them all).
fn selected(path: &std::path::Path) -> bool {
    let Ok(filter) = std::env::var("WEIR_CONFORMANCE") else {
        return true;
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    filter.split(',').any(|part| name.contains(part.trim()))
}

#[test]
#[allow(
    clippy::print_stdout,
    reason = "the run reports how many scenarios were identical"
)]
fn harness_matches_envoy_on_every_scenario() {
    let dir = root().join("tests/conformance");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/conformance exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| selected(p))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios in {}", dir.display());
    let mut reports = Vec::new();
    for file in &files {
        let suite = conformance::load(file).unwrap_or_else(|e| panic!("{e:#}"));
        let report =
            conformance::run(&suite).unwrap_or_else(|e| panic!("{}: {e:#}", file.display()));
        println!(
            "{}: {}/{} identical",
            file.file_name().unwrap_or_default().to_string_lossy(),
            report.total - report.differences.len(),
            report.total
        );
        reports.push(report);
    }
    match conformance::check(&reports) {
        Ok((same, total)) => println!("{same}/{total} scenarios identical"),
        Err(e) => panic!("{e:#}"),
    }
}
