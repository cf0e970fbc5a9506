//! `cargo run -p weir-tests --bin sdk-bench`: the header-append filter written
//! with weir against the same behaviour written directly on `proxy-wasm`
//! (tests/filters/header-append-raw), in the harness. Prints, side by side from
//! one run, wasmtime fuel and host calls per request (request + response path;
//! both deterministic) and `.wasm` sizes from the same `filter` profile.
//!
//! Before measuring it checks that the two really behave the same: identical
//! upstream request and client response headers, and the same configurations
//! accepted, or rejected with the offending field named.

use std::process::ExitCode;

use anyhow::{Context, Result};
use bytes::Bytes;
use weir_harness::{Chain, EnvoyConfig};
use weir_tests::{engine, envoy_yaml, filter_wasm};

/// Requests measured after one warm-up request.
const REQUESTS: u64 = 100;

/// Invalid configurations and the field each must name.
const BAD_CONFIGS: &[(&str, &str)] = &[
    (
        r#"{"request": {"set": [{"name": "x env", "value": "1"}]}}"#,
        "request.set[0].name",
    ),
    (
        r#"{"response": {"add": [{"name": "x", "value": "a\r\nb"}]}}"#,
        "response.add[0].value",
    ),
    (r#"{"request": {"remove": ["ok", 7]}}"#, "request.remove[1]"),
    (r#"{"request": {"sett": []}}"#, "request.sett"),
    (
        r#"{"response": {"set": [{"name": "x"}]}}"#,
        "response.set[0]",
    ),
];

/// Whether `package` accepts `configuration`; on rejection, its error log.
fn configure(package: &str, configuration: &str) -> Result<Result<(), String>> {
    let plugin = engine().load_file(filter_wasm(package))?;
    let chain = Chain::builder(engine())
        .filter(
            weir_harness::Filter::new(plugin)
                .name(package)
                .configuration(configuration),
        )
        .build();
    Ok(match chain {
        Ok(_) => Ok(()),
        Err(weir_harness::Error::ConfigureFailed { logs, .. }) => Err(logs.join("\n")),
        Err(e) => return Err(e.into()),
    })
}

/// The two filters accept and reject the same configurations, naming the field.
fn same_config_behaviour() -> Result<()> {
    for (config, field) in BAD_CONFIGS {
        for package in ["header-append", "header-append-raw"] {
            match configure(package, config)? {
                Ok(()) => anyhow::bail!("{package} accepted {config}"),
                Err(log) => anyhow::ensure!(
                    log.contains(&format!("`{field}`")),
                    "{package} rejected {config} without naming `{field}`: {log}"
                ),
            }
        }
    }
    Ok(())
}

struct Measured {
    fuel: u64,
    host_calls: u64,
    size: u64,
    /// Upstream request and client response headers of the last request.
    headers: (http::HeaderMap, http::HeaderMap),
}

fn request() -> http::Request<Bytes> {
    http::Request::get("/bench")
        .header("host", "bench.test")
        .header("x-internal-secret", "s")
        .header("x-env", "prod")
        .body(Bytes::new())
        .unwrap_or_default()
}

fn upstream(_: http::Request<Bytes>) -> http::Response<Bytes> {
    http::Response::builder()
        .header("x-powered-by", "bench")
        .header("cache-control", "max-age=60")
        .body(Bytes::from_static(b"ok"))
        .unwrap_or_default()
}

fn measure(package: &str, configuration: &str) -> Result<Measured> {
    let wasm = filter_wasm(package);
    let plugin = engine().load_file(&wasm)?;
    let mut chain = Chain::builder(engine())
        .filter(
            weir_harness::Filter::new(plugin)
                .name(package)
                .configuration(configuration),
        )
        .build()
        .with_context(|| format!("starting {package}"))?;
    chain.send(request(), upstream)?; // first request: lazy initialization
    let (mut fuel, mut host_calls) = (0, 0);
    let mut per_request = None;
    let mut headers = Default::default();
    for _ in 0..REQUESTS {
        let o = chain.send(request(), upstream)?;
        anyhow::ensure!(
            o.upstream_request.is_some(),
            "{package}: request did not pass"
        );
        let this = (o.fuel, o.host_calls);
        anyhow::ensure!(
            per_request.is_none_or(|p| p == this),
            "{package}: fuel is not deterministic"
        );
        per_request = Some(this);
        headers = (
            o.upstream_request
                .as_ref()
                .map(|r| r.headers().clone())
                .unwrap_or_default(),
            o.response.headers().clone(),
        );
        fuel += o.fuel;
        host_calls += o.host_calls;
    }
    Ok(Measured {
        fuel: fuel / REQUESTS,
        host_calls: host_calls / REQUESTS,
        size: std::fs::metadata(&wasm)?.len(),
        headers,
    })
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its table")]
fn main() -> Result<ExitCode> {
    let config = EnvoyConfig::parse(&envoy_yaml("header-append.yaml"))?;
    let configuration = &config
        .filters
        .first()
        .context("envoy/header-append.yaml has no wasm filter")?
        .configuration;
    let weir = measure("header-append", configuration)?;
    let raw = measure("header-append-raw", configuration)?;
    anyhow::ensure!(
        weir.headers == raw.headers,
        "the two filters changed headers differently: {:?} vs {:?}",
        weir.headers,
        raw.headers
    );
    same_config_behaviour()?;
    let fuel_ratio = weir.fuel as f64 / raw.fuel as f64;
    let size_ratio = weir.size as f64 / raw.size as f64;
    println!("header-append, config from envoy/header-append.yaml, {REQUESTS} requests each");
    println!(
        "same behaviour: identical headers upstream and downstream; {} invalid configs rejected by both, naming the field",
        BAD_CONFIGS.len()
    );
    println!(
        "{:<28} {:>14} {:>18} {:>12}",
        "", "fuel/request", "host calls/request", ".wasm bytes"
    );
    println!(
        "{:<28} {:>14} {:>18} {:>12}",
        "weir (filters/header-append)", weir.fuel, weir.host_calls, weir.size
    );
    println!(
        "{:<28} {:>14} {:>18} {:>12}",
        "proxy-wasm (baseline)", raw.fuel, raw.host_calls, raw.size
    );
    println!(
        "{:<28} {:>13.3}x {:>18} {:>11.3}x",
        "weir / baseline",
        fuel_ratio,
        if weir.host_calls == raw.host_calls {
            "same"
        } else {
            "DIFFERENT"
        },
        size_ratio
    );
    let ok = fuel_ratio <= 1.05 && weir.host_calls == raw.host_calls && size_ratio <= 1.15;
    println!(
        "targets: fuel <= 1.05x, same host calls, size <= 1.15x: {}",
        if ok { "met" } else { "NOT met" }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
