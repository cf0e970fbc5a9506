//! `cargo build --release -p weir-tests --bin harness-profile`: the request loop
//! of `harness-bench` alone, for instruction-level profilers, e.g.
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='harness_profile::run' \
//!     target/release/harness-profile 2000
//! ```
//!
//! Sends the given number of requests (default 2000) through a chain of
//! header-append (`envoy/header-append.yaml`'s configuration) followed by the
//! given number of trivial filters (second argument, default 0), after a warm-up,
//! and prints the fuel and host calls of the last request.
//!
//! `harness-profile starts [N]` instead builds and drops N one-filter chains
//! (default 300) in `harness_profile::starts`, after a warm-up, and prints the
//! median instantiation time [`Chain::start_times`] reports:
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='harness_profile::starts' \
//!     target/release/harness-profile starts 300
//! ```
//!
//! `--epoch` (first) bounds each callback by an epoch deadline instead of
//! fuel metering (`EngineBuilder::deadline_per_call`, 1 s), to compare what
//! metering costs, e.g. `harness-profile --epoch 2000`. Fuel is not counted
//! then. The ticker thread that advances the epoch runs outside the measured
//! functions.

use anyhow::{Context, Result};
use bytes::Bytes;
use std::time::Duration;

use weir_harness::{CallLimit, Chain, Engine, EnvoyConfig, Filter, Plugin};
use weir_tests::{envoy_yaml, filter_wasm, root};

/// A filter that does nothing but return Continue from both header callbacks.
const TRIVIAL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#;

fn request() -> http::Request<Bytes> {
    http::Request::get("/bench")
        .header("host", "bench.test")
        .header("x-internal-secret", "s")
        .body(Bytes::new())
        .unwrap_or_default()
}

fn upstream(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::new(Bytes::from_static(b"ok"))
}

/// Checks what a test reads of a response, as `harness-bench` does.
fn check(outcome: &weir_harness::Outcome) -> Result<()> {
    let response = &outcome.response;
    anyhow::ensure!(
        response.status() == http::StatusCode::OK
            && response
                .headers()
                .get("x-filtered-by")
                .is_some_and(|v| v == "weir")
            && response.body() == "ok",
        "unexpected response: {response:?}"
    );
    Ok(())
}

/// The measured loop: `n` requests (clones of one, as in `harness-bench`), each
/// response checked; the outcome of the last.
#[inline(never)]
fn run(chain: &mut Chain, n: u32) -> Result<Option<weir_harness::Outcome>> {
    let request = request();
    let mut last = None;
    for _ in 0..n {
        let outcome = chain.send(request.clone(), upstream)?;
        check(&outcome)?;
        last = Some(outcome);
    }
    Ok(last)
}

/// The measured loop of `starts`: `n` one-filter chains built and dropped; the
/// instantiation time of each.
#[inline(never)]
fn starts(engine: &Engine, plugin: &Plugin, config: &str, n: u32) -> Result<Vec<Duration>> {
    (0..n)
        .map(|_| {
            let chain = Chain::builder(engine)
                .filter(
                    Filter::new(plugin.clone())
                        .name("header-append")
                        .configuration(config),
                )
                .build()?;
            Ok(chain.start_times()[0].instantiate)
        })
        .collect()
}

#[allow(clippy::print_stdout, reason = "a profiling loop prints what it ran")]
fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    let epoch = args.next_if(|a| a == "--epoch").is_some();
    let profile_starts = args.next_if(|a| a == "starts").is_some();
    let n: u32 = args
        .next()
        .map_or(Ok(if profile_starts { 300 } else { 2000 }), |a| a.parse())?;
    let extra: usize = args.next().map_or(Ok(0), |a| a.parse())?;
    let wasm = std::fs::read(filter_wasm("header-append"))?;
    let config = EnvoyConfig::parse(&envoy_yaml("header-append.yaml"))?
        .filters
        .first()
        .map(|f| f.configuration.clone())
        .context("envoy/header-append.yaml has no wasm filter")?;
    // A small pool: valgrind cannot reserve the default pool's address space.
    let mut engine = Engine::builder()
        .max_instances(u32::try_from(extra + 1)?)
        .cache_dir(weir_cli::build::target_dir(root()).join("weir-cache"));
    if epoch {
        engine = engine.deadline_per_call(Duration::from_secs(1));
    }
    let engine = &engine.build()?;
    if profile_starts {
        let plugin = engine.load(&wasm)?;
        starts(engine, &plugin, &config, 20)?;
        let mut times = starts(engine, &plugin, &config, n)?;
        times.sort();
        println!(
            "{n} one-filter chains built and dropped; median instantiation {:.2} µs",
            times
                .get(times.len() / 2)
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e6
        );
        return Ok(());
    }
    let mut builder = Chain::builder(engine).filter(
        Filter::new(engine.load(&wasm)?)
            .name("header-append")
            .configuration(config),
    );
    let trivial = engine.load(&wat::parse_str(TRIVIAL)?)?;
    for _ in 0..extra {
        builder = builder.filter(Filter::new(trivial.clone()).name("trivial"));
    }
    let mut chain = builder.build()?;
    for _ in 0..100 {
        chain.send(request(), upstream)?;
    }
    if let Some(outcome) = run(&mut chain, n)? {
        let fuel = match engine.call_limit() {
            CallLimit::Fuel => format!("fuel {}", outcome.fuel),
            limit => format!("fuel not metered ({limit:?})"),
        };
        println!(
            "{n} requests, {extra} extra filters; last: status {}, {fuel}, host calls {}",
            outcome.response.status(),
            outcome.host_calls
        );
    }
    Ok(())
}
