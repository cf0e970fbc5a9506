//! `weir demo`: the sample filters, built and run through the harness with the
//! same configuration as the shipped Envoy configs.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use bytes::Bytes;
use weir_harness::{Chain, Engine, EnvoyConfig, LogLevel, Outcome};

use crate::build::{self, BuiltFilter};

/// One sample request and how the demo upstream answers it.
struct Sample {
    title: &'static str,
    request: fn() -> http::Request<Bytes>,
}

fn upstream(request: http::Request<Bytes>) -> http::Response<Bytes> {
    let builder = http::Response::builder()
        .status(200)
        .header("x-powered-by", "demo-upstream")
        .header("cache-control", "max-age=60");
    let json = request
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json {
        // A JSON API: answers in its own envelope, echoing what it received.
        let received = String::from_utf8_lossy(request.body());
        let body =
            format!(r#"{{"payload":{{"version":1,"received":{received}}},"debug":"internal"}}"#);
        return builder
            .header("content-type", "application/json")
            .body(Bytes::from(body))
            .unwrap_or_default();
    }
    let body = format!("upstream saw {} {}\n", request.method(), request.uri());
    builder
        .header("content-type", "text/plain")
        .body(Bytes::from(body))
        .unwrap_or_default()
}

fn json_request(path: &str, headers: &[(&str, &str)], body: &'static str) -> http::Request<Bytes> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "demo.local")
        .header("content-type", "application/json")
        .header("content-length", body.len());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(Bytes::from_static(body.as_bytes()))
        .unwrap_or_default()
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<Bytes> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "demo.local")
        .header("user-agent", "weir-demo");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Bytes::new()).unwrap_or_default()
}

const SAMPLES: &[Sample] = &[
    Sample {
        title: "a plain GET",
        request: || request("GET", "/hello", &[]),
    },
    Sample {
        title: "a client trying to smuggle an internal header",
        request: || request("GET", "/admin", &[("x-internal-secret", "let-me-in")]),
    },
    Sample {
        title: "a client that already sent x-env and x-via-weir",
        request: || {
            request(
                "DELETE",
                "/items/7",
                &[("x-env", "prod"), ("x-via-weir", "client")],
            )
        },
    },
];

/// Requests for the transform filter (JSON bodies).
const TRANSFORM_SAMPLES: &[Sample] = &[
    Sample {
        title: "a JSON request reshaped for the upstream, the response put in an envelope",
        request: || {
            json_request(
                "/users",
                &[("x-tenant", "acme")],
                r#"{"id":"u-7","userName":"ann","password":"hunter2","tags":["admin","ops"]}"#,
            )
        },
    },
    Sample {
        title: "a request body that is not valid JSON",
        request: || json_request("/users", &[], r#"{"id": "#),
    },
];

/// Requests for the auth filter with `envoy/auth.yaml` (its demo API key).
const AUTH_SAMPLES: &[Sample] = &[
    Sample {
        title: "a request without credentials",
        request: || request("GET", "/items", &[]),
    },
    Sample {
        title: "the demo API key, and a client claiming to be someone",
        request: || {
            request(
                "GET",
                "/items",
                &[("x-api-key", "weir-demo-key"), ("x-user", "admin")],
            )
        },
    },
    Sample {
        title: "a public health check",
        request: || request("GET", "/healthz", &[]),
    },
    Sample {
        title: "a denied prefix, even with a valid key",
        request: || request("GET", "/internal/debug", &[("x-api-key", "weir-demo-key")]),
    },
];

/// The sample requests and an invalid configuration for one sample filter.
fn samples(package: &str) -> (&'static [Sample], &'static str) {
    match package {
        "transform" => (
            TRANSFORM_SAMPLES,
            r#"{"request": {"ops": [{"op": "remove", "path": "password"}]}}"#,
        ),
        "auth" => (
            AUTH_SAMPLES,
            r#"{"api_keys": {"keys": [{"name": "k", "sha256": "abc"}]}}"#,
        ),
        _ => (
            SAMPLES,
            r#"{"request": {"set": [{"name": "x env", "value": "1"}]}}"#,
        ),
    }
}

/// Header lines in `after` but not in `before` (`+`) and the reverse (`-`).
fn diff(before: &http::HeaderMap, after: &http::HeaderMap) -> Vec<String> {
    let lines = |m: &http::HeaderMap| -> Vec<String> {
        m.iter()
            .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect()
    };
    let (before, after) = (lines(before), lines(after));
    let removed = before
        .iter()
        .filter(|l| !after.contains(l))
        .map(|l| format!("- {l}"));
    let added = after
        .iter()
        .filter(|l| !before.contains(l))
        .map(|l| format!("+ {l}"));
    removed.chain(added).collect()
}

fn describe(title: &str, with: &Outcome, without: &Outcome) -> String {
    let mut out = String::new();
    let empty = http::HeaderMap::new();
    fn upstream_headers<'a>(o: &'a Outcome, empty: &'a http::HeaderMap) -> &'a http::HeaderMap {
        o.upstream_request.as_ref().map_or(empty, |r| r.headers())
    }
    let req = with.upstream_request.as_ref();
    let _ = writeln!(
        out,
        "▶ {title}: {} {}",
        req.map_or("-".to_owned(), |r| r.method().to_string()),
        req.map_or("-".to_owned(), |r| r.uri().to_string())
    );
    if with.upstream_request.is_none() {
        let _ = writeln!(out, "  the request did not reach the upstream");
    } else {
        let _ = writeln!(
            out,
            "  request headers changed by the filter (as the upstream saw them):"
        );
        for line in diff(
            upstream_headers(without, &empty),
            upstream_headers(with, &empty),
        ) {
            let _ = writeln!(out, "      {line}");
        }
    }
    let body = |o: &Outcome| o.upstream_request.as_ref().map(|r| r.body().clone());
    if let Some(sent) = body(with).filter(|b| !b.is_empty() && Some(b) != body(without).as_ref()) {
        let _ = writeln!(
            out,
            "  request body, as the client sent it and as the upstream saw it:\n      {}\n      {}",
            String::from_utf8_lossy(body(without).unwrap_or_default().as_ref()),
            String::from_utf8_lossy(&sent)
        );
    }
    let _ = writeln!(
        out,
        "  response {} — headers changed by the filter (as the client saw them):",
        with.response.status()
    );
    for line in diff(without.response.headers(), with.response.headers()) {
        let _ = writeln!(out, "      {line}");
    }
    if with.response.body() != without.response.body() {
        let _ = writeln!(
            out,
            "  response body, as the upstream sent it and as the client saw it:\n      {}\n      {}",
            String::from_utf8_lossy(without.response.body()).trim_end(),
            String::from_utf8_lossy(with.response.body()).trim_end()
        );
    }
    if let Some(reply) = &with.local_reply {
        let _ = writeln!(
            out,
            "  local reply from {}: {} {}",
            reply.plugin, reply.status, reply.details
        );
    }
    for log in &with.logs {
        let _ = writeln!(out, "  log [{}] {}: {}", log.level, log.plugin, log.message);
    }
    let _ = writeln!(out, "  wasm fuel used: {}", with.fuel);
    out
}

/// Builds the sample filters, runs sample requests through the harness with the
/// configuration from `envoy/<filter>.yaml`, and returns the report.
///
/// # Errors
/// If a filter cannot be built or loaded, or a request fails in the harness.
pub fn run(root: &Path) -> Result<String> {
    let filters = build::build_filters(root, build::SAMPLE_FILTERS)?;
    let engine = Engine::builder()
        .cache_dir(build::target_dir(root).join("weir-cache"))
        .build()?;
    let mut report = String::new();
    for filter in &filters {
        report.push_str(&demo_filter(root, &engine, filter)?);
    }
    Ok(report)
}

fn demo_filter(root: &Path, engine: &Engine, filter: &BuiltFilter) -> Result<String> {
    let yaml_path = root.join("envoy").join(format!("{}.yaml", filter.package));
    let yaml = std::fs::read_to_string(&yaml_path)
        .with_context(|| format!("cannot read {}", yaml_path.display()))?;
    let config =
        EnvoyConfig::parse(&yaml).with_context(|| format!("in {}", yaml_path.display()))?;
    // Fields the harness accepts without emulating them: the user should know
    // where its answers may differ from Envoy's.
    let mut stderr = std::io::stderr().lock();
    for warning in &config.warnings {
        // Best effort: a closed stderr must not stop the demo.
        let _ = writeln!(
            stderr,
            "warning: {}: not emulated by the harness: {warning}",
            yaml_path.display()
        );
    }
    drop(stderr);
    let mut chain = config
        .chain_builder(engine, |_| engine.load_file(&filter.wasm))?
        .log_level(LogLevel::Debug)
        .build()
        .with_context(|| {
            format!(
                "starting {} as configured in {}",
                filter.package,
                yaml_path.display()
            )
        })?;
    // The same Envoy, minus the wasm filters: what the filter changed is the difference.
    let mut bare = Chain::builder(engine)
        .connection_manager(config.connection_manager.clone())
        .build()?;

    let mut report = format!(
        "━━ {} ({}, {} KiB) with the config from {}\n\n",
        filter.package,
        filter.wasm.display(),
        std::fs::metadata(&filter.wasm)
            .map(|m| m.len() / 1024)
            .unwrap_or(0),
        yaml_path.strip_prefix(root).unwrap_or(&yaml_path).display()
    );
    let (samples, bad) = samples(&filter.package);
    for sample in samples {
        let with = chain.send((sample.request)(), upstream)?;
        let without = bare.send((sample.request)(), upstream)?;
        report.push_str(&describe(sample.title, &with, &without));
        report.push('\n');
    }

    let rejected = Chain::builder(engine)
        .filter(
            weir_harness::Filter::new(engine.load_file(&filter.wasm)?)
                .name(&filter.package)
                .configuration(bad),
        )
        .build();
    match rejected {
        Err(e) => {
            let _ = writeln!(
                report,
                "▶ an invalid configuration {bad}\n  rejected at on_configure: {e}\n"
            );
        }
        Ok(_) => anyhow::bail!("{} accepted an invalid configuration", filter.package),
    }
    Ok(report)
}
