//! The `filter-latency` command, run end to end with a tiny load so that it cannot
//! rot: its table has one row of numbers per sample filter, and `--json` every
//! figure. No figure is compared with a threshold: speed is printed, never asserted.

use std::collections::BTreeSet;
use std::process::Command;

use weir_cli::build::SAMPLE_FILTERS;

const COMMAND: &str = env!("CARGO_BIN_EXE_filter-latency");

/// Runs the command against real Envoy; fails loudly (with how to install it)
/// when Envoy is missing.
fn run(args: &[&str]) -> String {
    let envoy = weir_tests::envoy::binary();
    let out = Command::new(COMMAND)
        .args(args)
        .env("WEIR_ENVOY", envoy)
        .output()
        .expect("filter-latency runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "filter-latency {args:?} failed:\n{stderr}"
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn number(cell: &str, what: &str) -> f64 {
    cell.parse()
        .unwrap_or_else(|e| panic!("{what}: {cell:?} is not a number: {e}"))
}

#[test]
fn the_table_has_a_row_of_numbers_per_sample_filter() {
    let out = run(&["--requests", "200", "--rounds", "2", "--connections", "4"]);
    let machine = out
        .lines()
        .find(|l| l.starts_with("machine: "))
        .unwrap_or_else(|| panic!("no machine line:\n{out}"));
    assert!(machine.contains(" cores, "), "{machine}");

    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "filter",
            ".wasm bytes",
            "fuel/request",
            "host calls/request",
            "added CPU µs/request (Envoy)",
            "added p50 µs",
            "added p99 µs",
            "throughput ratio",
        ],
        "{out}"
    );
    assert!(
        rows[1]
            .iter()
            .all(|c| c.starts_with("--") || c.starts_with("-:"))
    );
    let filters: BTreeSet<&str> = rows[2..].iter().map(|r| r[0]).collect();
    assert_eq!(filters, SAMPLE_FILTERS.iter().copied().collect(), "{out}");
    for row in &rows[2..] {
        assert_eq!(row.len(), 8, "{row:?}");
        let bytes: u64 = row[1].parse().expect(".wasm bytes is an integer");
        assert!(bytes > 0);
        assert!(number(row[2], "fuel") > 0.0);
        assert!(number(row[3], "host calls") > 0.0);
        // "+6.1 (+5.2 to +7.0)"
        let cpu: Vec<&str> = row[4]
            .split([' ', '(', ')'])
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(cpu.len(), 4, "{}", row[4]);
        assert_eq!(cpu[2], "to", "{}", row[4]);
        let (mean, low, high) = (
            number(cpu[0], "added CPU"),
            number(cpu[1], "smallest round"),
            number(cpu[3], "largest round"),
        );
        assert!(low <= high, "{}", row[4]);
        assert!(mean.is_finite());
        number(row[5], "added p50");
        number(row[6], "added p99");
        assert!(number(row[7], "throughput ratio") > 0.0);
    }
}

#[test]
fn json_has_every_figure() {
    let out = run(&[
        "--json",
        "--filter",
        "header-append",
        "--requests",
        "100",
        "--rounds",
        "1",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert!(report["machine"]["cores"].as_u64().is_some_and(|c| c > 0));
    assert_eq!(report["settings"]["requests"], 100);
    let filters = report["filters"].as_array().expect("filters");
    assert_eq!(filters.len(), 1);
    let f = &filters[0];
    assert_eq!(f["filter"], "header-append");
    assert_eq!(
        f["wasm_bytes"].as_u64(),
        Some(
            std::fs::metadata(weir_tests::filter_wasm("header-append"))
                .expect("built")
                .len()
        )
    );
    for key in ["fuel_per_request", "host_calls_per_request"] {
        assert!(f[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {f}");
    }
    for key in [
        "cpu_us_per_request",
        "p50_us",
        "p99_us",
        "p999_us",
        "throughput_ratio",
    ] {
        assert!(f["added"][key].as_f64().is_some(), "added.{key}: {f}");
    }
    for variant in ["without", "with"] {
        let v = &f[variant];
        assert_eq!(v["latency_requests"], 100, "{v}");
        assert_eq!(v["saturation_requests"], 100, "{v}");
        for key in [
            "p50_us",
            "p99_us",
            "cpu_us_per_request",
            "requests_per_second",
        ] {
            assert!(
                v[key].as_f64().is_some_and(|x| x > 0.0),
                "{variant}.{key}: {v}"
            );
        }
    }
}

#[test]
fn an_unknown_filter_is_refused_naming_the_filters() {
    let out = Command::new(COMMAND)
        .args(["--filter", "no-such-filter"])
        .output()
        .expect("filter-latency runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no filter named \"no-such-filter\""),
        "{stderr}"
    );
    assert!(stderr.contains("header-append"), "{stderr}");
}

#[test]
fn a_missing_envoy_is_an_error_saying_how_to_install_it() {
    let out = Command::new(COMMAND)
        .args(["--requests", "1"])
        .env("WEIR_ENVOY", "/nonexistent/envoy")
        .output()
        .expect("filter-latency runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Envoy not found at /nonexistent/envoy") && stderr.contains("WEIR_ENVOY"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
