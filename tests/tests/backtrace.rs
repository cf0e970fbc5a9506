//! Trap backtraces: the probe built as `weir build --debug` builds it
//! (profile `filter-debug`, DWARF and names kept) traps in the harness with
//! each frame's function and file:line; the stripped build still reports the
//! trap and the callback.

use bytes::Bytes;
use weir_cli::build::{Build, build_filters_as};
use weir_harness::{Chain, Filter};
use weir_tests::{engine, root};

/// The trap of a probe built `as_built`, made to abort in its request headers.
fn trap(as_built: Build) -> String {
    let built = build_filters_as(root(), &["probe"], as_built).expect("probe builds");
    let plugin = engine().load_file(&built[0].wasm).expect("loads");
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(plugin).name("probe"))
        .build()
        .expect("starts");
    let request = http::Request::get("/")
        .header("host", "weir.test")
        .header("x-probe-request", "trap")
        .body(Bytes::new())
        .expect("request");
    let outcome = chain
        .send(request, |_: http::Request<Bytes>| {
            http::Response::new(Bytes::new())
        })
        .expect("answered");
    assert_eq!(outcome.response.status(), 503, "FAIL_CLOSED");
    let [trap] = outcome.traps.try_into().expect("one trap");
    trap
}

#[test]
fn a_debug_build_traps_with_functions_and_lines() {
    let trap = trap(Build::Debug);
    assert!(
        trap.starts_with("probe: Function: proxy_on_request_headers failed: "),
        "{trap}"
    );
    assert!(
        trap.contains("wasm `unreachable` instruction executed"),
        "{trap}"
    );
    // The probe's own frames, by name and by line.
    assert!(trap.contains("probe::run"), "{trap}");
    assert!(trap.contains("::process::abort"), "{trap}");
    assert!(trap.contains("tests/filters/probe/src/lib.rs:"), "{trap}");
}

#[test]
fn a_stripped_build_traps_with_the_callback_named() {
    let trap = trap(Build::Release);
    assert!(
        trap.starts_with("probe: Function: proxy_on_request_headers failed: "),
        "{trap}"
    );
    assert!(trap.contains("wasm backtrace"), "{trap}");
    assert!(!trap.contains("lib.rs:"), "no DWARF: {trap}");
}
