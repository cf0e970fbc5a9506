//! README command 1 keeps working: `weir demo` builds the sample filters and
//! shows them changing headers and JSON bodies through the harness.

use weir_tests::root;

#[test]
fn demo_shows_the_filter_at_work() {
    let report = weir_cli::demo::run(root()).unwrap_or_else(|e| panic!("weir demo failed: {e:#}"));
    for expected in [
        "header-append",
        "envoy/header-append.yaml",
        "- x-internal-secret: let-me-in",
        "+ x-env: demo",
        "- x-env: prod",
        "+ x-filtered-by: weir",
        "+ cache-control: no-store",
        "- x-powered-by: demo-upstream",
        "request: removed 1, set 1, added 1 header(s)",
        "rejected at on_configure",
        "request.set[0].name",
        "envoy/transform.yaml",
        r#""user_name":"ann""#,
        "+ x-item-id: u-7",
        r#"{"data":{"received":"#,
        "+ x-api-version: 1",
        "local reply from transform: 400 transform_invalid_json",
        "request.ops[0].path",
        "envoy/auth.yaml",
        "local reply from auth: 401 auth_missing",
        "+ x-api-key-name: demo",
        "- x-api-key: weir-demo-key",
        "- x-user: admin",
        "local reply from auth: 403 auth_denied_by_rule",
        "api_keys.keys[0].sha256",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
}
