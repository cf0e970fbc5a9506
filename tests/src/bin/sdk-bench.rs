//! `cargo run -p weir-tests --bin sdk-bench`: the header-append filter written
//! with weir against the same filter written directly on `proxy-wasm`
//! (tests/filters/header-append-raw), in the harness. Both run the same
//! SDK-independent code (`header-append-core`: configuration, templates, rules),
//! so the difference is the SDK layer. Prints, side by side from one run, wasmtime
//! fuel and host calls per request (request + response path)
//! with the literal configuration of envoy/header-append.yaml and the templated
//! one of envoy/header-append-templates.yaml, and `.wasm` sizes from the same
//! `filter` profile.
//!
//! Before measuring it checks that the two really behave the same: for every
//! configuration and sample request, identical upstream request, client
//! response, local reply, log lines and number of host calls; and the same
//! configurations rejected, naming the same field with the same message.

use std::process::ExitCode;

use anyhow::{Context, Result};
use bytes::Bytes;
use weir_harness::{Chain, EnvoyConfig, LogLevel, Outcome};
use weir_tests::{engine, envoy_yaml, filter_wasm};

/// The filter written with weir, and the baseline.
const WEIR: &str = "header-append";
const RAW: &str = "header-append-raw";

/// Requests measured after one warm-up request.
const REQUESTS: u64 = 100;

/// A configuration with rules, renames, defaults and attributes of every kind
/// that the sample configurations in `envoy/` do not use.
const RULES_CONFIG: &str = r#"{
  "max_value_bytes": 16,
  "request": {
    "rename": [{"from": "x-user", "to": "x-forwarded-user"}, {"from": "x-absent", "to": "x-never"}],
    "set": [
      {"name": "x-peer", "value": "{attr:source.address|?}/{attr:source.port|?}"},
      {"name": "x-big-copy", "value": "{request.header.x-big}"},
      {"name": "x-missing", "value": "{request.header.x-nope}"},
      {"name": "x-braces", "value": "{{{request.method}}}"}
    ],
    "add": [{"name": "x-conn", "value": "{attr:connection.id|none}:{attr:connection.mtls|none}"}],
    "rules": [
      {"when": {"path_prefix": "/api/"}, "add": [{"name": "x-api", "value": "1"}]},
      {"when": {"methods": ["PUT", "DELETE"]}, "set": [{"name": "x-write", "value": "{request.method}"}]},
      {"when": {"request_headers": [{"name": "x-env", "equals": "prod"}, {"name": "x-debug", "present": false}]},
       "remove": ["x-env"], "add": [{"name": "x-prod", "value": "{request.header.x-env|gone}"}]},
      {"when": {"request_headers": [{"name": "x-debug"}]}, "rename": [{"from": "x-debug", "to": "x-dbg"}]}
    ]
  },
  "response": {
    "rename": [{"from": "server", "to": "x-upstream-server"}],
    "set": [{"name": "x-echo", "value": "{request.header.x-tenant|nobody} {response.header.x-cache|-}"}],
    "rules": [
      {"when": {"path_prefix": "/api/", "response_headers": [{"name": "x-cache", "equals": "hit"}]},
       "set": [{"name": "x-cached", "value": "{request.path}"}]},
      {"when": {"response_headers": [{"name": "x-cache", "present": false}]},
       "add": [{"name": "x-uncached", "value": "{attr:response.code|?}"}]}
    ]
  }
}"#;

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
    (
        r#"{"request": {"set": [{"name": "x", "value": "{attr:nope}"}]}}"#,
        "request.set[0].value",
    ),
    (
        r#"{"request": {"add": [{"name": "x", "value": "{response.header.server}"}]}}"#,
        "request.add[0].value",
    ),
    (
        r#"{"request": {"rules": [{"when": {"response_headers": [{"name": "x"}]}}]}}"#,
        "request.rules[0].when.response_headers",
    ),
    (
        r#"{"response": {"rules": [{"when": {"methods": ["GET", "P T"]}}]}}"#,
        "response.rules[0].when.methods[1]",
    ),
    (
        r#"{"request": {"rename": [{"from": ":path", "to": "x-path"}]}}"#,
        "request.rename[0]",
    ),
    (r#"{"max_value_bytes": 0}"#, "max_value_bytes"),
];

/// Sample requests: the literal and templated configurations' own, and ones
/// that take each rule's other branch.
fn requests() -> Vec<http::Request<Bytes>> {
    let build = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut r = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bench.test");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(Bytes::new()).unwrap_or_default()
    };
    vec![
        literal_request(),
        templated_request(),
        build(
            "PUT",
            "/api/v2/items",
            &[
                ("x-user", "bob"),
                ("x-user", "carol"),
                ("x-env", "prod"),
                ("x-big", "0123456789abcdefXYZ"),
                ("x-request-id", "r-7"),
            ],
        ),
        build(
            "DELETE",
            "/other?q=1",
            &[("x-debug", "1"), ("x-env", "prod"), ("x-tenant", "t")],
        ),
        build("GET", "/", &[]),
    ]
}

/// The request measured with envoy/header-append.yaml.
fn literal_request() -> http::Request<Bytes> {
    http::Request::get("/bench")
        .header("host", "bench.test")
        .header("x-internal-secret", "s")
        .header("x-env", "prod")
        .body(Bytes::new())
        .unwrap_or_default()
}

/// The request measured with envoy/header-append-templates.yaml.
fn templated_request() -> http::Request<Bytes> {
    http::Request::post("/api/items?page=2")
        .header("host", "bench.test")
        .header("x-user", "ann")
        .header("x-tenant", "acme")
        .header("x-internal-secret", "s")
        .header("x-env", "prod")
        .header("x-request-id", "req-1")
        .body(Bytes::new())
        .unwrap_or_default()
}

/// The upstream: API paths are cache hits, with a server header to rename.
fn upstream(request: http::Request<Bytes>) -> http::Response<Bytes> {
    let mut r = http::Response::builder()
        .header("x-powered-by", "bench")
        .header("server", "bench-server")
        .header("cache-control", "max-age=60");
    if request.uri().path().starts_with("/api/") {
        r = r.header("x-cache", "hit");
    }
    r.body(Bytes::from_static(b"ok")).unwrap_or_default()
}

/// The configuration of the first wasm filter in `envoy/<file>`.
fn envoy_configuration(file: &str) -> Result<String> {
    let config = EnvoyConfig::parse(&envoy_yaml(file))?;
    Ok(config
        .filters
        .first()
        .with_context(|| format!("envoy/{file} has no wasm filter"))?
        .configuration
        .clone())
}

fn chain(package: &str, configuration: &str, level: LogLevel) -> weir_harness::Result<Chain> {
    let plugin = engine().load_file(filter_wasm(package))?;
    Chain::builder(engine())
        .log_level(level)
        .filter(
            weir_harness::Filter::new(plugin)
                .name("header-append")
                .configuration(configuration),
        )
        .build()
}

/// Everything observable about one request, for comparison.
#[derive(Debug, PartialEq)]
struct Observed {
    upstream: Option<(String, String, http::HeaderMap)>,
    response: (u16, http::HeaderMap),
    local_reply: Option<weir_harness::LocalReply>,
    logs: Vec<(LogLevel, String)>,
    host_calls: u64,
    traps: Vec<String>,
}

fn observe(o: &Outcome) -> Observed {
    Observed {
        upstream: o.upstream_request.as_ref().map(|r| {
            (
                r.method().to_string(),
                r.uri().to_string(),
                r.headers().clone(),
            )
        }),
        response: (o.response.status().as_u16(), o.response.headers().clone()),
        local_reply: o.local_reply.clone(),
        logs: o
            .logs
            .iter()
            .map(|l| (l.level, l.message.clone()))
            .collect(),
        host_calls: o.host_calls,
        traps: o.traps.clone(),
    }
}

/// Both filters, with each configuration, treat every sample request the same,
/// and at least one request reaches the upstream with the header the
/// configuration is known to add. Returns how many (configuration, request) pairs were compared.
fn same_behaviour(configs: &[(&str, String, &str)]) -> Result<usize> {
    let mut compared = 0;
    for (label, config, shows) in configs {
        let mut weir = chain(WEIR, config, LogLevel::Trace)?;
        let mut raw = chain(RAW, config, LogLevel::Trace)?;
        let mut changed = 0;
        for request in requests() {
            let sent = request.headers().clone();
            let w = observe(&weir.send(request.clone(), upstream)?);
            let r = observe(&raw.send(request, upstream)?);
            anyhow::ensure!(
                w == r,
                "{label}: the filters differ on {sent:?}:\n  weir: {w:?}\n  raw:  {r:?}"
            );
            anyhow::ensure!(w.traps.is_empty(), "{label}: trapped: {:?}", w.traps);
            if w.upstream
                .as_ref()
                .is_some_and(|u| u.2.contains_key(*shows))
            {
                changed += 1;
            }
            compared += 1;
        }
        anyhow::ensure!(
            changed > 0,
            "{label}: no sample request reached the upstream with `{shows}`"
        );
    }
    Ok(compared)
}

/// The log line saying why `package` rejected `configuration`, from
/// "invalid configuration at" on, without serde_json's position suffix.
fn rejection(package: &str, configuration: &str) -> Result<String> {
    let logs = match chain(package, configuration, LogLevel::Info) {
        Ok(_) => anyhow::bail!("{package} accepted {configuration}"),
        Err(weir_harness::Error::ConfigureFailed { logs, .. }) => logs.join("\n"),
        Err(e) => return Err(e.into()),
    };
    let at = logs.find("invalid configuration at `").with_context(|| {
        format!("{package} rejected {configuration} without saying why: {logs}")
    })?;
    let line = logs[at..].lines().next().unwrap_or_default();
    // serde_json appends " at line L column C"; weir replaces it with the path.
    let trimmed = match line.rfind(" at line ") {
        Some(i) if line[i + 9..].split(" column ").count() == 2 => &line[..i],
        _ => line,
    };
    Ok(trimmed.to_owned())
}

/// Both filters reject the same configurations naming the same field, for the
/// same reason.
fn same_rejections() -> Result<()> {
    for (config, field) in BAD_CONFIGS {
        let weir = rejection(WEIR, config)?;
        let raw = rejection(RAW, config)?;
        anyhow::ensure!(
            weir.starts_with(&format!("invalid configuration at `{field}`: ")),
            "{WEIR} rejected {config} without naming `{field}`: {weir}"
        );
        anyhow::ensure!(
            weir == raw,
            "the filters reject {config} differently:\n  weir: {weir}\n  raw:  {raw}"
        );
    }
    Ok(())
}

struct Measured {
    /// Mean fuel per request.
    fuel: u64,
    /// The smallest and largest fuel of one request: the allocator's state can
    /// make consecutive requests differ by a few dozen instructions.
    range: (u64, u64),
    host_calls: u64,
}

fn measure(
    package: &str,
    configuration: &str,
    request: fn() -> http::Request<Bytes>,
) -> Result<Measured> {
    let mut chain = chain(package, configuration, LogLevel::Info)
        .with_context(|| format!("starting {package}"))?;
    chain.send(request(), upstream)?; // first request: lazy initialization
    let (mut fuel, mut range, mut host_calls) = (0, (u64::MAX, 0), None);
    for _ in 0..REQUESTS {
        let o = chain.send(request(), upstream)?;
        anyhow::ensure!(
            o.upstream_request.is_some() && o.traps.is_empty(),
            "{package}: request did not pass"
        );
        anyhow::ensure!(
            host_calls.is_none_or(|n| n == o.host_calls),
            "{package}: the number of host calls changed between requests"
        );
        host_calls = Some(o.host_calls);
        fuel += o.fuel;
        range = (range.0.min(o.fuel), range.1.max(o.fuel));
    }
    Ok(Measured {
        fuel: fuel / REQUESTS,
        range,
        host_calls: host_calls.unwrap_or_default(),
    })
}

/// `mean` or `mean (min-max)`.
fn fuel_cell(m: &Measured) -> String {
    if m.range.0 == m.range.1 {
        m.fuel.to_string()
    } else {
        format!("{} ({}-{})", m.fuel, m.range.0, m.range.1)
    }
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its table")]
fn main() -> Result<ExitCode> {
    let literal = envoy_configuration("header-append.yaml")?;
    let templated = envoy_configuration("header-append-templates.yaml")?;
    let configs = [
        ("header-append.yaml", literal.clone(), "x-via-weir"),
        (
            "header-append-templates.yaml",
            templated.clone(),
            "x-client",
        ),
        ("rules", RULES_CONFIG.to_owned(), "x-forwarded-user"),
    ];
    let compared = same_behaviour(&configs)?;
    same_rejections()?;

    let weir_size = std::fs::metadata(filter_wasm(WEIR))?.len();
    let raw_size = std::fs::metadata(filter_wasm(RAW))?.len();
    let size_ratio = weir_size as f64 / raw_size as f64;
    println!(
        "header-append with weir vs on proxy-wasm directly, same header-append-core; {REQUESTS} requests each"
    );
    println!(
        "same behaviour: {compared} requests over {} configurations gave identical requests, responses, logs and host calls; {} invalid configs rejected by both with the same field and message",
        configs.len(),
        BAD_CONFIGS.len()
    );
    println!(
        "{:<30} {:>20} {:>20} {:>8} {:>12}",
        "fuel/request (mean)", "weir", "baseline", "ratio", "host calls"
    );
    let mut ok = size_ratio <= 1.15;
    for (label, config, request) in [
        (
            "literal (header-append.yaml)",
            &literal,
            literal_request as fn() -> _,
        ),
        (
            "templates (…-templates.yaml)",
            &templated,
            templated_request,
        ),
    ] {
        let weir = measure(WEIR, config, request)?;
        let raw = measure(RAW, config, request)?;
        let ratio = weir.fuel as f64 / raw.fuel as f64;
        let calls = if weir.host_calls == raw.host_calls {
            format!("{} both", weir.host_calls)
        } else {
            format!("{} vs {}", weir.host_calls, raw.host_calls)
        };
        ok &= ratio <= 1.05 && weir.host_calls == raw.host_calls;
        println!(
            "{:<30} {:>20} {:>20} {:>7.3}x {:>12}",
            label,
            fuel_cell(&weir),
            fuel_cell(&raw),
            ratio,
            calls
        );
    }
    println!(
        "{:<30} {:>20} {:>20} {:>7.3}x",
        ".wasm bytes", weir_size, raw_size, size_ratio
    );
    println!(
        "targets: fuel <= 1.05x with the same host calls, size <= 1.15x: {}",
        if ok { "met" } else { "NOT met" }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
