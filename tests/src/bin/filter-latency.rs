//! `cargo run --release -p weir-tests --bin filter-latency`: what each sample
//! filter costs in real Envoy.
//!
//! For every filter it starts Envoy (one worker, `127.0.0.1`, ephemeral ports)
//! twice: with the filter's shipped config from `envoy/`, and with the same config
//! minus its wasm filter, both in front of the same in-process upstream. After a
//! warm-up it sends bounded closed-loop load to each in alternating order (ABBA),
//! a number of rounds: one connection for latency (p50/p99/p99.9), then several
//! connections at saturation, where Envoy's CPU time per request (user + system
//! from `/proc/<pid>/stat`) and the throughput are read. The harness runs the same
//! request for wasm fuel and host calls per request. One table: the `.wasm` size,
//! fuel, host calls, and what the filter adds in Envoy.
//!
//! On a shared, noisy machine the CPU time per request is the robust figure;
//! latency differences of a few tens of microseconds are noise.
//!
//! To measure another sample filter, add a [`Bench`] to [`BENCHES`].

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use serde::Serialize;
use serde_yaml_ng::Value;
use weir_cli::build::{self, BuiltFilter};
use weir_harness::EnvoyConfig;
use weir_tests::envoy::{self, Envoy, Rebind};
use weir_tests::load::{self, Load, MakeRequest};
use weir_tests::net::{self, Handler, Upstream};
use weir_tests::{engine, envoy_yaml, root, scenarios};

/// One sample filter to measure: a small table entry.
struct Bench {
    /// The filter's cargo package (for a sample filter, as in `SAMPLE_FILTERS`).
    filter: &'static str,
    /// Its Envoy config in `envoy/`; the baseline is this config without the
    /// wasm filter.
    config: &'static str,
    /// The `i`-th request of a run; it exercises the filter's main path.
    request: fn(u64) -> http::Request<Bytes>,
    /// The upstream that answers each cluster of the config, by cluster name.
    upstream: fn(&str) -> Handler,
    /// Whether an exchange (the request the route's upstream received, if any, and
    /// the client's response) shows the filter's work: it must with the filter
    /// and must not without it, which proves both configs are what they claim.
    filtered: fn(Option<&http::Request<Bytes>>, &http::Response<Bytes>) -> bool,
}

/// The sample filters, measured by default, in order.
const BENCHES: &[Bench] = &[
    Bench {
        filter: "header-append",
        config: "header-append.yaml",
        request: header_append_request,
        upstream: |_| scenarios::header_append_upstream(),
        filtered: header_append_filtered,
    },
    Bench {
        filter: "auth",
        config: "auth.yaml",
        request: auth_request,
        upstream: auth_upstream,
        // claims_to_headers copies the token's `sub` into x-user.
        filtered: |upstream, _| {
            upstream.is_some_and(|r| r.headers().get("x-user").is_some_and(|v| v == AUTH_SUBJECT))
        },
    },
    Bench {
        filter: "transform",
        config: "transform.yaml",
        request: transform_request,
        upstream: |_| transform_upstream(),
        filtered: |upstream, response| {
            upstream.is_some_and(|r| {
                let body = String::from_utf8_lossy(r.body());
                body.contains("\"user_name\"") && !body.contains("password")
            }) && response.headers().get("x-api-version").is_some()
        },
    },
];

/// The subject of the auth bench's token.
const AUTH_SUBJECT: &str = "bench-user";

/// TEST-ONLY Ed25519 signing key seed for the auth bench's token: it protects
/// nothing, the key set the bench's identity provider serves is its public half.
const AUTH_TEST_ONLY_SEED: [u8; 32] = *b"weir filter-latency test-only k!";

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT the shipped envoy/auth.yaml accepts: EdDSA, its issuer and audience,
/// expiring in 2100. Clients reuse tokens, so every request carries the same one
/// (the filter caches a verified token's claims by its digest).
fn auth_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&AUTH_TEST_ONLY_SEED);
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "bench"});
        let claims = serde_json::json!({
            "iss": "https://idp.example.com", "aud": "api", "sub": AUTH_SUBJECT,
            "scope": "read", "iat": 1_767_225_600u64, "exp": 4_102_444_800u64,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = key.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    })
}

fn auth_request(_: u64) -> http::Request<Bytes> {
    http::Request::get("/orders/42")
        .header("host", "api.test")
        .header("authorization", format!("Bearer {}", auth_token()))
        .body(Bytes::new())
        .unwrap_or_default()
}

/// The `idp` cluster serves the token's key set; the upstream answers 200.
fn auth_upstream(cluster: &str) -> Handler {
    if cluster == "idp" {
        let key = ed25519_dalek::SigningKey::from_bytes(&AUTH_TEST_ONLY_SEED);
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "bench", "use": "sig",
            "x": b64(key.verifying_key().as_bytes()),
        }]})
        .to_string();
        return Arc::new(move |_| {
            http::Response::builder()
                .header("content-type", "application/json")
                .body(Bytes::from(jwks.clone()))
                .unwrap_or_default()
        });
    }
    Arc::new(|_| {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(Bytes::from_static(br#"{"order":42}"#))
            .unwrap_or_default()
    })
}

/// A JSON body for every request operation of envoy/transform.yaml (rename,
/// remove, set, move, header_to_body, body_to_header).
fn transform_request(_: u64) -> http::Request<Bytes> {
    let body: &[u8] =
        br#"{"id":"u-7","userName":"ann","password":"hunter2","tags":["admin","ops"],"meta":{}}"#;
    http::Request::post("/users")
        .header("host", "bench.test")
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("x-tenant", "acme")
        .body(Bytes::from_static(body))
        .unwrap_or_default()
}

/// Answers with the request's JSON wrapped as `{"payload": {"version", "received"}}`,
/// which the response operations unwrap, wrap and copy into a header.
fn transform_upstream() -> Handler {
    Arc::new(|request: http::Request<Bytes>| {
        let received =
            serde_json::from_slice::<serde_json::Value>(request.body()).unwrap_or_default();
        let body = serde_json::json!({"payload": {"version": 3, "received": received}});
        http::Response::builder()
            .header("content-type", "application/json")
            .body(Bytes::from(body.to_string()))
            .unwrap_or_default()
    })
}

/// Comparisons measured only when named with `--filter`.
const COMPARISONS: &[Bench] = &[
    // header-append written directly on `proxy-wasm` (see sdk-bench), with the same
    // config: what the SDK itself costs in Envoy.
    Bench {
        filter: "header-append-raw",
        config: "header-append.yaml",
        request: header_append_request,
        upstream: |_| scenarios::header_append_upstream(),
        filtered: header_append_filtered,
    },
];

/// header-append's config removes, sets and adds headers both ways.
fn header_append_filtered(
    upstream: Option<&http::Request<Bytes>>,
    response: &http::Response<Bytes>,
) -> bool {
    upstream.is_some_and(|r| {
        r.headers().get("x-via-weir").is_some() && r.headers().get("x-internal-secret").is_none()
    }) && response.headers().get("x-filtered-by").is_some()
        && response.headers().get("x-powered-by").is_none()
}

/// A request for every rule in envoy/header-append.yaml: a header to remove, one
/// to replace and one added; the upstream's answer has its own to change.
fn header_append_request(_: u64) -> http::Request<Bytes> {
    http::Request::get("/bench")
        .header("host", "bench.test")
        .header("user-agent", "filter-latency")
        .header("x-internal-secret", "s")
        .header("x-env", "prod")
        .body(Bytes::new())
        .unwrap_or_default()
}

/// Measures the added cost of each sample filter in real Envoy.
#[derive(Debug, Parser)]
#[command(name = "filter-latency")]
struct Args {
    /// Requests in each measured run (per round, per variant, per phase).
    #[arg(long, default_value_t = 4000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// Measured rounds per filter; the with/without order alternates (ABBA).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Keep-alive connections in the saturation phase.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    connections: u16,
    /// Time cap of each run, in seconds; a capped run reports what it answered.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    max_seconds: u64,
    /// Measure only this filter (repeatable); also `header-append-raw`, header-append
    /// written directly on `proxy-wasm`, for comparison.
    #[arg(long = "filter", value_name = "NAME")]
    filters: Vec<String>,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

impl Args {
    fn warmup(&self) -> u64 {
        (self.requests / 4).max(100)
    }

    fn load(&self, connections: u16, requests: u64) -> Load {
        Load {
            connections: usize::from(connections),
            requests,
            max_time: Duration::from_secs(self.max_seconds),
        }
    }
}

/// What one variant (with or without the filter) measured over every round.
#[derive(Debug, Default)]
struct Samples {
    /// Latencies of the one-connection runs, ns.
    latencies: Vec<u64>,
    latency_cpu: Duration,
    latency_requests: u64,
    saturation_cpu: Duration,
    saturation_requests: u64,
    saturation_elapsed: Duration,
    /// CPU µs per request at saturation, each round.
    rounds_cpu: Vec<f64>,
    capped: bool,
}

/// Figures of one variant.
#[derive(Debug, Serialize)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    /// Envoy's CPU time per request at saturation.
    cpu_us_per_request: f64,
    /// Envoy's CPU time per request with one connection (low load).
    cpu_us_per_request_one_connection: f64,
    requests_per_second: f64,
    /// Envoy's CPU time per request at saturation, each round.
    cpu_us_per_request_rounds: Vec<f64>,
    latency_requests: u64,
    saturation_requests: u64,
}

/// What the filter adds: with minus without (ratio for throughput).
#[derive(Debug, Serialize)]
struct Added {
    cpu_us_per_request: f64,
    /// Smallest and largest difference over the rounds.
    cpu_us_per_request_rounds: (f64, f64),
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    throughput_ratio: f64,
}

#[derive(Debug, Serialize)]
struct FilterReport {
    filter: String,
    config: String,
    wasm_bytes: u64,
    fuel_per_request: f64,
    host_calls_per_request: f64,
    added: Added,
    without: Figures,
    with: Figures,
    /// Whether any run hit its time cap.
    capped: bool,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    cpu_model: String,
    kernel: String,
    envoy_version: String,
    load_average_at_start: String,
}

#[derive(Debug, Serialize)]
struct Settings {
    requests: u64,
    rounds: u32,
    connections: u16,
    warmup: u64,
    max_seconds: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Machine,
    settings: Settings,
    filters: Vec<FilterReport>,
}

fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn per_request_us(cpu: Duration, requests: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
}

impl Samples {
    fn figures(&mut self) -> Result<Figures> {
        self.latencies.sort_unstable();
        let q = |q| load::quantile(&self.latencies, q).map(micros);
        Ok(Figures {
            p50_us: q(0.5).context("no latency samples")?,
            p99_us: q(0.99).context("no latency samples")?,
            p999_us: q(0.999).context("no latency samples")?,
            cpu_us_per_request: per_request_us(self.saturation_cpu, self.saturation_requests),
            cpu_us_per_request_one_connection: per_request_us(
                self.latency_cpu,
                self.latency_requests,
            ),
            requests_per_second: self.saturation_requests as f64
                / self.saturation_elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
            cpu_us_per_request_rounds: self.rounds_cpu.clone(),
            latency_requests: self.latency_requests,
            saturation_requests: self.saturation_requests,
        })
    }
}

/// The cluster of the first route: where the client's requests go.
fn route_cluster(yaml: &str) -> Result<String> {
    fn find(v: &Value) -> Option<&str> {
        if let Some(c) = v
            .get("route")
            .and_then(|r| r.get("cluster"))
            .and_then(Value::as_str)
        {
            return Some(c);
        }
        match v {
            Value::Mapping(m) => m.iter().find_map(|(_, v)| find(v)),
            Value::Sequence(s) => s.iter().find_map(find),
            _ => None,
        }
    }
    let root: Value = serde_yaml_ng::from_str(yaml)?;
    find(&root)
        .map(str::to_owned)
        .context("the config has no route to a cluster")
}

/// Fuel and host calls per request in the harness, after one warm-up request.
fn harness_cost(bench: &Bench, yaml: &str, wasm: &Path) -> Result<(f64, f64)> {
    const REQUESTS: u64 = 200;
    let config = EnvoyConfig::parse(yaml)?;
    let mut builder = config.chain_builder(engine(), |_| engine().load_file(wasm))?;
    for name in envoy::cluster_names(yaml)? {
        let handler = (bench.upstream)(&name);
        builder = builder.cluster(name, move |r| handler(r));
    }
    let mut chain = builder
        .build()
        .with_context(|| format!("starting {} in the harness", bench.filter))?;
    let route = (bench.upstream)(&route_cluster(yaml)?);
    let first = chain.send((bench.request)(0), |r| route(r))?;
    ensure!(
        (bench.filtered)(first.upstream_request.as_ref(), &first.response),
        "in the harness, the exchange does not show {}'s work: {:?}",
        bench.filter,
        first.response
    );
    let (mut fuel, mut host_calls) = (0, 0);
    for i in 1..=REQUESTS {
        let o = chain.send((bench.request)(i), |r| route(r))?;
        fuel += o.fuel;
        host_calls += o.host_calls;
    }
    Ok((
        fuel as f64 / REQUESTS as f64,
        host_calls as f64 / REQUESTS as f64,
    ))
}

/// A running pair: Envoy without and with the filter, and their upstreams.
struct Pair {
    envoys: [Envoy; 2],
    upstreams: Vec<(String, Upstream)>,
    route: String,
}

const WITHOUT: usize = 0;
const WITH: usize = 1;
const VARIANT: [&str; 2] = ["without", "with"];

impl Pair {
    fn start(bench: &Bench, yaml: &str, built: &BuiltFilter) -> Result<Self> {
        let mut upstreams = Vec::new();
        for name in envoy::cluster_names(yaml)? {
            let upstream = Upstream::start((bench.upstream)(&name))?;
            upstreams.push((name, upstream));
        }
        let how = Rebind {
            clusters: upstreams
                .iter()
                .map(|(n, u)| (n.clone(), u.addr()))
                .collect(),
            // Every wasm module the config names is the filter's build.
            modules: EnvoyConfig::parse(yaml)?
                .filters
                .iter()
                .filter_map(|f| f.filename.file_name())
                .map(|name| (name.to_string_lossy().into_owned(), built.wasm.clone()))
                .collect(),
            loopback: true,
        };
        let baseline = envoy::without_wasm_filters(yaml)?;
        let without = Envoy::start(&baseline, &how).context("starting Envoy without the filter")?;
        let with = Envoy::start(yaml, &how).context("starting Envoy with the filter")?;
        Ok(Self {
            envoys: [without, with],
            upstreams,
            route: route_cluster(yaml)?,
        })
    }

    /// Forgets what the upstreams recorded (they keep every request).
    fn drain(&self) -> Option<http::Request<Bytes>> {
        let mut route = None;
        for (name, upstream) in &self.upstreams {
            let seen = upstream.take_seen();
            if *name == self.route {
                route = seen.into_iter().next();
            }
        }
        route
    }

    /// Sends request 0 to a variant; returns its status after checking that the
    /// filter's work shows exactly when the filter is there.
    /// Envoy's `/ready` does not wait for a plugin's own start-up work (auth
    /// fetches its key set with a callout), so the filtered variant gets a few
    /// seconds to show its work.
    fn probe(&self, bench: &Bench, variant: usize) -> Result<http::StatusCode> {
        let envoy = &self.envoys[variant];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let (response, shows) = loop {
            self.drain();
            let response = net::send(envoy.listener, (bench.request)(0))
                .with_context(|| format!("probing Envoy {} {}", VARIANT[variant], bench.filter))?;
            let upstream = self.drain();
            let shows = (bench.filtered)(upstream.as_ref(), &response);
            if shows || variant != WITH || std::time::Instant::now() > deadline {
                break (response, shows);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        match (variant, shows) {
            (WITH, false) => bail!(
                "with {}, the exchange does not show the filter's work: {response:?}\n{}",
                bench.filter,
                envoy.log()
            ),
            (WITHOUT, true) => bail!(
                "without {}, the exchange still shows the filter's work: {response:?}",
                bench.filter
            ),
            _ => Ok(response.status()),
        }
    }
}

enum Phase {
    Latency,
    Saturation,
}

/// One run against one variant, adding to its samples.
fn measure(
    pair: &Pair,
    variant: usize,
    load: Load,
    phase: &Phase,
    make: &MakeRequest,
    status: http::StatusCode,
    samples: &mut Samples,
) -> Result<()> {
    let envoy = &pair.envoys[variant];
    let before = load::cpu_time(envoy.pid())?;
    let run = load::run(envoy.listener, load, make)
        .with_context(|| format!("load on Envoy {}", VARIANT[variant]))?;
    let cpu = load::cpu_time(envoy.pid())?.saturating_sub(before);
    pair.drain();
    let expected = [(status.as_u16(), run.answered())];
    ensure!(
        run.statuses.iter().map(|(s, n)| (*s, *n)).eq(expected),
        "Envoy {} answered {:?}, expected every answer to be {status}",
        VARIANT[variant],
        run.statuses
    );
    samples.capped |= run.answered() < load.requests;
    match phase {
        Phase::Latency => {
            samples.latencies.extend(&run.latencies);
            samples.latency_cpu += cpu;
            samples.latency_requests += run.answered();
        }
        Phase::Saturation => {
            samples.saturation_cpu += cpu;
            samples.saturation_requests += run.answered();
            samples.saturation_elapsed += run.elapsed;
            samples.rounds_cpu.push(per_request_us(cpu, run.answered()));
        }
    }
    Ok(())
}

#[allow(clippy::print_stderr, reason = "progress goes to stderr")]
fn envoy_cost(args: &Args, bench: &Bench, yaml: &str, built: &BuiltFilter) -> Result<[Samples; 2]> {
    let pair = Pair::start(bench, yaml, built)?;
    let status = pair.probe(bench, WITH)?;
    let baseline_status = pair.probe(bench, WITHOUT)?;
    ensure!(
        status == baseline_status,
        "with {} Envoy answers {status}, without it {baseline_status}",
        bench.filter
    );
    let make: MakeRequest = Arc::new(bench.request);
    let mut samples = [Samples::default(), Samples::default()];
    for variant in [WITHOUT, WITH] {
        let run = load::run(
            pair.envoys[variant].listener,
            args.load(args.connections, args.warmup()),
            &make,
        )
        .with_context(|| format!("warming up Envoy {}", VARIANT[variant]))?;
        pair.drain();
        ensure!(run.answered() > 0, "the warm-up got no answer");
    }
    for round in 0..args.rounds {
        if !args.json {
            eprintln!("{}: round {}/{}", bench.filter, round + 1, args.rounds);
        }
        let order = if round % 2 == 0 {
            [WITHOUT, WITH]
        } else {
            [WITH, WITHOUT]
        };
        for (phase, connections) in [(Phase::Latency, 1), (Phase::Saturation, args.connections)] {
            for variant in order {
                let load = args.load(connections, args.requests);
                measure(
                    &pair,
                    variant,
                    load,
                    &phase,
                    &make,
                    status,
                    &mut samples[variant],
                )?;
            }
        }
    }
    Ok(samples)
}

#[allow(clippy::print_stderr, reason = "progress goes to stderr")]
fn measure_filter(args: &Args, bench: &Bench, built: &BuiltFilter) -> Result<FilterReport> {
    let yaml = envoy_yaml(bench.config);
    if !args.json {
        eprintln!("{}: harness", bench.filter);
    }
    let (fuel, host_calls) = harness_cost(bench, &yaml, &built.wasm)?;
    let [mut without, mut with] = envoy_cost(args, bench, &yaml, built)?;
    let capped = without.capped || with.capped;
    let rounds: Vec<f64> = with
        .rounds_cpu
        .iter()
        .zip(&without.rounds_cpu)
        .map(|(w, o)| w - o)
        .collect();
    let (without, with) = (without.figures()?, with.figures()?);
    Ok(FilterReport {
        filter: bench.filter.to_owned(),
        config: format!("envoy/{}", bench.config),
        wasm_bytes: std::fs::metadata(&built.wasm)?.len(),
        fuel_per_request: fuel,
        host_calls_per_request: host_calls,
        added: Added {
            cpu_us_per_request: with.cpu_us_per_request - without.cpu_us_per_request,
            cpu_us_per_request_rounds: (
                rounds.iter().copied().fold(f64::INFINITY, f64::min),
                rounds.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            ),
            p50_us: with.p50_us - without.p50_us,
            p99_us: with.p99_us - without.p99_us,
            p999_us: with.p999_us - without.p999_us,
            throughput_ratio: with.requests_per_second
                / without.requests_per_second.max(f64::MIN_POSITIVE),
        },
        without,
        with,
        capped,
    })
}

fn first_line_value(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn machine(envoy: &Path) -> Machine {
    let envoy_version = Command::new(envoy)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            // "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
            let (_, v) = text.split_once("version:")?;
            v.trim().split('/').nth(1).map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: first_line_value("/proc/cpuinfo", "model name")
            .unwrap_or_else(|| "unknown".to_owned()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned()),
        envoy_version,
        load_average_at_start: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned()),
    }
}

fn signed(x: f64, decimals: usize) -> String {
    if x >= 0.0 {
        format!("+{x:.decimals$}")
    } else {
        format!("{x:.decimals$}")
    }
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its table")]
fn print_table(report: &Report) {
    let (m, s) = (&report.machine, &report.settings);
    println!(
        "filter-latency: each filter in Envoy {} (--concurrency 1, 127.0.0.1) against the same config without it",
        m.envoy_version
    );
    println!(
        "machine: {} cores, {}, Linux {}, load average {} at start",
        m.cores, m.cpu_model, m.kernel, m.load_average_at_start
    );
    println!(
        "load: {} warm-up requests, then {} rounds alternating without/with; each round and variant: \
         {} requests on 1 connection (latency), {} on {} connections (CPU time, throughput)",
        s.warmup, s.rounds, s.requests, s.requests, s.connections
    );
    println!();
    println!(
        "| filter | .wasm bytes | fuel/request | host calls/request | added CPU µs/request (Envoy) | added p50 µs | added p99 µs | throughput ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in &report.filters {
        let a = &f.added;
        println!(
            "| {} | {} | {:.0} | {:.0} | {} ({} to {}) | {} | {} | {:.3} |",
            f.filter,
            f.wasm_bytes,
            f.fuel_per_request,
            f.host_calls_per_request,
            signed(a.cpu_us_per_request, 1),
            signed(a.cpu_us_per_request_rounds.0, 1),
            signed(a.cpu_us_per_request_rounds.1, 1),
            signed(a.p50_us, 0),
            signed(a.p99_us, 0),
            a.throughput_ratio
        );
    }
    println!();
    println!("without → with the filter:");
    for f in &report.filters {
        let (o, w) = (&f.without, &f.with);
        println!(
            "  {}: CPU {:.1} → {:.1} µs/request at saturation ({:.1} → {:.1} on 1 connection); \
             p50 {:.0} → {:.0} µs, p99 {:.0} → {:.0} µs, p99.9 {:.0} → {:.0} µs; {:.0} → {:.0} requests/s{}",
            f.filter,
            o.cpu_us_per_request,
            w.cpu_us_per_request,
            o.cpu_us_per_request_one_connection,
            w.cpu_us_per_request_one_connection,
            o.p50_us,
            w.p50_us,
            o.p99_us,
            w.p99_us,
            o.p999_us,
            w.p999_us,
            o.requests_per_second,
            w.requests_per_second,
            if f.capped {
                " (a run hit its time cap)"
            } else {
                ""
            }
        );
    }
    println!();
    println!(
        "Added CPU is Envoy's user+system time per request at saturation with the filter minus without \
         (in brackets: the smallest and largest difference in one round); on a noisy machine it holds \
         best, though a load average well above the core count inflates it. Latency differences within \
         a few tens of µs are noise. Fuel (wasm instructions) and host calls per request come from the \
         harness and are deterministic."
    );
}

fn selected(args: &Args) -> Result<Vec<&'static Bench>> {
    if args.filters.is_empty() {
        return Ok(BENCHES.iter().collect());
    }
    let all = || BENCHES.iter().chain(COMPARISONS);
    args.filters
        .iter()
        .map(|name| {
            all().find(|b| b.filter == name).with_context(|| {
                let known: Vec<&str> = all().map(|b| b.filter).collect();
                format!(
                    "no filter named {name:?}; the filters are: {}",
                    known.join(", ")
                )
            })
        })
        .collect()
}

#[allow(clippy::print_stdout, reason = "--json prints the report")]
fn main() -> Result<()> {
    let args = Args::parse();
    let benches = selected(&args)?;
    // Envoy is required: without it the command fails, saying how to install it.
    let machine = machine(&envoy::find_binary()?);
    let packages: Vec<&str> = benches.iter().map(|b| b.filter).collect();
    let built = build::build_filters(root(), &packages)?;
    let mut filters = Vec::new();
    for (bench, built) in benches.iter().zip(&built) {
        filters.push(
            measure_filter(&args, bench, built)
                .with_context(|| format!("measuring {}", bench.filter))?,
        );
    }
    let report = Report {
        machine,
        settings: Settings {
            requests: args.requests,
            rounds: args.rounds,
            connections: args.connections,
            warmup: args.warmup(),
            max_seconds: args.max_seconds,
        },
        filters,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_filter_has_a_bench() {
        for filter in build::SAMPLE_FILTERS {
            assert!(
                BENCHES.iter().any(|b| b.filter == *filter),
                "{filter} is a sample filter without an entry in BENCHES"
            );
        }
        for bench in BENCHES.iter().chain(COMPARISONS) {
            assert!(
                root().join("envoy").join(bench.config).is_file(),
                "envoy/{} is missing",
                bench.config
            );
        }
    }

    #[test]
    fn the_route_cluster_is_found() {
        let yaml = envoy_yaml("header-append.yaml");
        assert_eq!(route_cluster(&yaml).expect("has a route"), "upstream");
        assert!(route_cluster("a: 1").is_err());
    }
}
