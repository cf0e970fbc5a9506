//! The `weir` binary as users run it.

use std::path::Path;
use std::process::Command;

fn weir(args: &[&str]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("weir runs")
}

#[test]
fn help_lists_the_commands() {
    let out = weir(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("demo") && help.contains("build"), "{help}");
}

#[test]
fn building_an_unknown_filter_fails_with_a_clear_error() {
    let out = weir(&["build", "-p", "no-such-filter"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: building no-such-filter for wasm32-wasip1 failed"),
        "{stderr}"
    );
}

#[test]
fn outside_a_workspace_it_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("demo")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("weir runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no weir workspace"));
}
