//! `cargo run --release -p weir-tests --bin harness-bench`: how fast the harness
//! runs filters in-process. Prints, from one run: requests per second through a
//! one-filter chain (header-append, request and response path), the marginal
//! cost of each extra trivial filter, the time to start a plugin (instantiate a
//! compiled module and run Envoy's start-up sequence), and cold start (compile
//! without cache, start, first request). The harness keeps one VM per plugin for
//! all streams, as Envoy does, so there is no per-stream instantiation.

use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use weir_harness::{Chain, Engine, EnvoyConfig, Filter, Plugin};
use weir_tests::{envoy_yaml, filter_wasm};

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

/// Mean time per request over `n` requests, after a warm-up.
fn per_request(chain: &mut Chain, n: u32) -> Result<Duration> {
    for _ in 0..100 {
        chain.send(request(), upstream)?;
    }
    let start = Instant::now();
    for _ in 0..n {
        chain.send(request(), upstream)?;
    }
    Ok(start.elapsed() / n)
}

fn chain_of(engine: &Engine, plugins: &[(&str, Plugin, String)]) -> Result<Chain> {
    let mut builder = Chain::builder(engine);
    for (name, plugin, config) in plugins {
        builder = builder.filter(
            Filter::new(plugin.clone())
                .name(*name)
                .configuration(config.as_str()),
        );
    }
    Ok(builder.build()?)
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its table")]
fn main() -> Result<()> {
    let engine = Engine::new()?;
    let wasm = std::fs::read(filter_wasm("header-append"))?;
    let config = EnvoyConfig::parse(&envoy_yaml("header-append.yaml"))?
        .filters
        .first()
        .map(|f| f.configuration.clone())
        .unwrap_or_default();

    // Cold start: compile (no cache), start the plugin, first request.
    let cold = Instant::now();
    let header_append = engine.load(&wasm)?;
    let mut chain = chain_of(
        &engine,
        &[("header-append", header_append.clone(), config.clone())],
    )?;
    chain.send(request(), upstream)?;
    let cold = cold.elapsed();

    let n = 20_000;
    let one = per_request(&mut chain, n)?;

    let trivial = engine.load(&wat::parse_str(TRIVIAL)?)?;
    let base = chain_of(
        &engine,
        &[("header-append", header_append.clone(), config.clone())],
    )?;
    drop(base);
    let mut marginal = Vec::new();
    let mut previous = None;
    for extra in [0usize, 1, 5, 10] {
        let mut plugins = vec![("header-append", header_append.clone(), config.clone())];
        plugins.extend((0..extra).map(|_| ("trivial", trivial.clone(), String::new())));
        let t = per_request(&mut chain_of(&engine, &plugins)?, n / 4)?;
        marginal.push((extra, t));
        previous.get_or_insert(t);
    }
    let base_t = marginal[0].1;
    let (last_extra, last_t) = marginal[marginal.len() - 1];
    let per_filter = last_t.saturating_sub(base_t) / last_extra as u32;

    let starts = 200;
    let start = Instant::now();
    for _ in 0..starts {
        drop(chain_of(
            &engine,
            &[("header-append", header_append.clone(), config.clone())],
        )?);
    }
    let plugin_start = start.elapsed() / starts;

    println!(
        "weir-harness, in-process, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "  header-append, 1 filter:  {:>10.0} requests/s  ({:?} per request, {n} requests)",
        1.0 / one.as_secs_f64(),
        one
    );
    for (extra, t) in &marginal {
        println!(
            "  + {extra:>2} trivial filters:    {:>10.0} requests/s  ({t:?} per request)",
            1.0 / t.as_secs_f64()
        );
    }
    println!("  marginal cost of a trivial filter: {per_filter:?}");
    println!(
        "  plugin start (instantiate + _initialize/on_vm_start/on_configure): {plugin_start:?}"
    );
    println!("  cold start (compile without cache + start + first request): {cold:?}");
    Ok(())
}
