//! `cargo run -p weir-tests --bin header-append-bench`: what header-append costs
//! per request in the harness (wasmtime fuel and host calls, request + response
//! path) with the literal configuration of envoy/header-append.yaml and with the
//! templates, rules, renames and carried values of
//! envoy/header-append-templates.yaml, and the size of the `.wasm` both run.
//! `sdk-bench` compares both with the same filter written on plain proxy-wasm.

use anyhow::{Context, Result};
use bytes::Bytes;
use weir_harness::EnvoyConfig;
use weir_tests::{engine, envoy_yaml, filter_wasm};

/// Requests measured after one warm-up request.
const REQUESTS: u64 = 100;

fn request() -> http::Request<Bytes> {
    http::Request::post("/api/items?page=2")
        .header("host", "bench.test")
        .header("x-user", "ann")
        .header("x-tenant", "acme")
        .header("x-internal-secret", "s")
        .header("x-env", "prod")
        .body(Bytes::new())
        .unwrap_or_default()
}

fn upstream(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::builder()
        .header("x-powered-by", "bench")
        .header("x-cache", "hit")
        .header("cache-control", "max-age=60")
        .body(Bytes::from_static(b"ok"))
        .unwrap_or_default()
}

struct Measured {
    fuel: (u64, u64, u64),
    host_calls: u64,
}

fn measure(config_file: &str) -> Result<Measured> {
    let config = EnvoyConfig::parse(&envoy_yaml(config_file))?;
    let mut chain = config
        .chain_builder(engine(), |_| {
            engine().load_file(filter_wasm("header-append"))
        })?
        .build()
        .with_context(|| format!("starting header-append with {config_file}"))?;
    chain.send(request(), upstream)?; // first request: lazy initialization
    let (mut total, mut min, mut max, mut host_calls) = (0, u64::MAX, 0, 0);
    for _ in 0..REQUESTS {
        let o = chain.send(request(), upstream)?;
        anyhow::ensure!(
            o.upstream_request.is_some() && o.traps.is_empty(),
            "{config_file}: the request did not pass"
        );
        total += o.fuel;
        min = min.min(o.fuel);
        max = max.max(o.fuel);
        host_calls += o.host_calls;
    }
    Ok(Measured {
        fuel: (total / REQUESTS, min, max),
        host_calls: host_calls / REQUESTS,
    })
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its table")]
fn main() -> Result<()> {
    let size = std::fs::metadata(filter_wasm("header-append"))?.len();
    println!(
        "header-append in the harness, {REQUESTS} requests each; header_append.wasm: {size} bytes"
    );
    println!(
        "{:<34} {:>14} {:>10} {:>10} {:>18}",
        "configuration", "fuel/request", "min", "max", "host calls/request"
    );
    for (label, file) in [
        ("literal (header-append.yaml)", "header-append.yaml"),
        (
            "templates (header-append-templates)",
            "header-append-templates.yaml",
        ),
    ] {
        let m = measure(file)?;
        println!(
            "{:<34} {:>14} {:>10} {:>10} {:>18}",
            label, m.fuel.0, m.fuel.1, m.fuel.2, m.host_calls
        );
    }
    Ok(())
}
