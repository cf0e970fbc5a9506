//! `cargo run --release -p weir-tests --bin harness-bench`: how fast the harness
//! runs filters in-process, next to the targets it is held to.
//!
//! It prints, on one thread:
//! - requests per second through a one-filter chain (header-append, request and
//!   response path, `envoy/header-append.yaml`'s configuration);
//! - the marginal cost of each extra trivial filter: in each round, the slope
//!   of a least-squares fit over chains with 0, 5, 10 and 20 extra filters,
//!   measured one after the other (so that a change of load hits the whole
//!   fit); the median over rounds is reported;
//! - both of these again with each callback bounded by an epoch deadline
//!   instead of fuel metering (`EngineBuilder::deadline_per_call`), measured
//!   in the same rounds, interleaved with the fuel figures: what metering
//!   costs. The targets apply to the default, fuel;
//! - plugin start, split into pure instantiation (a store and an instance of the
//!   compiled module from the pooling allocator; no guest code runs) and the
//!   guest's start-up callbacks (`_initialize`, `on_vm_start`, `on_configure`),
//!   as [`Chain::start_times`] reports them, and a whole chain build + drop. The
//!   harness keeps one VM per plugin for all streams, as Envoy does, so there is
//!   no per-stream instantiation;
//! - cold start to the first request: engine, module compile (or load from the
//!   on-disk cache), plugin start and the first request;
//! - a calibration: wasmtime's own call benchmark (`sync/no-hook/core -
//!   host-to-wasm - typed - nop`: a typed call of an empty export on a default
//!   engine), timed in the same rounds as the one-filter chain, next to the
//!   figure wasmtime's maintainers published for it ([`ANCHOR_NOP_NS`]). Their
//!   ratio says how much slower this machine runs wasmtime's call path than
//!   theirs; the requests/s scaled by it is an estimate for that machine,
//!   printed as such, never as the measured figure.
//!
//! Each timed figure is the median of several rounds (the range in brackets):
//! the machine may be shared, so the load average is printed too.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use weir_harness::{CallLimit, Chain, Engine, EnvoyConfig, Filter, Plugin};
use weir_tests::{envoy_yaml, filter_wasm, root};

/// A filter that does nothing but return Continue from both header callbacks.
const TRIVIAL: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0)))"#;

/// Targets.
const TARGET_RPS: f64 = 250_000.0;
const TARGET_MARGINAL: Duration = Duration::from_micros(1);
const TARGET_INSTANTIATE: Duration = Duration::from_micros(10);

/// wasmtime's `sync/no-hook/core - host-to-wasm - typed - nop` benchmark as
/// its maintainers published it (bytecodealliance/wasmtime#10643, April 2025,
/// the run the call path's current inlining was measured with): 27.5 ns.
/// (criterion's estimate, 27.334–27.668 ns).
const ANCHOR_NOP_NS: f64 = 27.499;

/// Calls of the empty export per calibration round.
const NOP_CALLS: u32 = 500_000;

/// Rounds per timed figure; the median is reported.
const ROUNDS: usize = 7;

/// The epoch engine's deadline per callback: about what the default fuel
/// budget buys, so neither mode stops a request the other would let through.
const DEADLINE: Duration = Duration::from_secs(1);

/// The ways an engine bounds callbacks, default first.
const MODES: usize = 2;

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

/// Checks what a test reads of a response: its status, the header the filter
/// adds and the body.
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

/// Mean time per request over `n` requests. The request is built once and
/// cloned for each send, as a test that sends one request many times would.
fn per_request(chain: &mut Chain, n: u32) -> Result<Duration> {
    let request = request();
    let start = Instant::now();
    for _ in 0..n {
        check(&chain.send(request.clone(), upstream)?)?;
    }
    Ok(start.elapsed() / n)
}

/// wasmtime's call benchmark: a default engine (no fuel, no epochs, no
/// pooling), a store without data, an instance of a module with one empty
/// export, and its typed function, as wasmtime's `benches/call.rs` sets them up.
struct Nop {
    store: wasmtime::Store<()>,
    nop: wasmtime::TypedFunc<(), ()>,
}

impl Nop {
    fn new() -> Result<Self> {
        let engine = wasmtime::Engine::default();
        let wasm_bytes = wat::parse_str(r#"(module (func (export "nop")))"#)?;
        let module = wasmtime::Module::new(&engine, wasm_bytes).map_err(wasm)?;
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).map_err(wasm)?;
        let nop = instance
            .get_typed_func::<(), ()>(&mut store, "nop")
            .map_err(wasm)?;
        Ok(Self { store, nop })
    }

    /// The time of [`NOP_CALLS`] calls (a `Duration` per call would round
    /// to whole nanoseconds: [`per_call_ns`] divides).
    fn round(&mut self) -> Result<Duration> {
        let start = Instant::now();
        for _ in 0..NOP_CALLS {
            self.nop.call(&mut self.store, ()).map_err(wasm)?;
        }
        Ok(start.elapsed())
    }
}

/// Nanoseconds per call in a [`Nop::round`] that took `round`.
fn per_call_ns(round: Duration) -> f64 {
    round.as_secs_f64() * 1e9 / f64::from(NOP_CALLS)
}

/// A wasmtime error, with its chain of causes.
fn wasm(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}

/// The median and range of `samples`.
#[derive(Clone, Copy)]
struct Stat {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Stat {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Self {
            median: samples[samples.len() / 2],
            min: samples[0],
            max: samples[samples.len() - 1],
        }
    }

    fn range(&self) -> String {
        format!("[{} – {}]", us(self.min), us(self.max))
    }
}

/// The range of [`Nop::round`]s, per call, as `[27.1 ns – 30.2 ns]`.
fn ns_range(stat: &Stat) -> String {
    format!(
        "[{:.1} ns – {:.1} ns]",
        per_call_ns(stat.min),
        per_call_ns(stat.max)
    )
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

/// A difference in seconds as `+1.23 µs` or `-1.23 µs`.
fn signed_us(seconds: f64) -> String {
    format!("{:+.2} µs", seconds * 1e6)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
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

/// Least-squares slope of `(x, y)`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    num / den
}

/// Engine, compile (or cache load), plugin start, first request.
fn cold_start(engine: Engine, wasm: &[u8], config: &str) -> Result<()> {
    let plugin = engine.load(wasm)?;
    let mut chain = Chain::builder(&engine)
        .filter(
            Filter::new(plugin)
                .name("header-append")
                .configuration(config),
        )
        .build()?;
    chain.send(request(), upstream)?;
    Ok(())
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its table")]
fn row(figure: &str, measured: &str, target: &str, note: &str) {
    println!("  {figure:<44} {measured:>12}   {target:<14} {note}");
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its table")]
fn main() -> Result<()> {
    let wasm = std::fs::read(filter_wasm("header-append"))?;
    let config = EnvoyConfig::parse(&envoy_yaml("header-append.yaml"))?
        .filters
        .first()
        .map(|f| f.configuration.clone())
        .context("envoy/header-append.yaml has no wasm filter")?;

    // Cold start first, while the process is fresh: an engine without a cache
    // compiles; then an engine whose on-disk cache holds the module loads it.
    let cache = root().join("target").join("harness-bench-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let start = Instant::now();
    cold_start(Engine::new()?, &wasm, &config)?;
    let cold_compile = start.elapsed();
    cold_start(Engine::builder().cache_dir(&cache).build()?, &wasm, &config)?;
    let start = Instant::now();
    cold_start(Engine::builder().cache_dir(&cache).build()?, &wasm, &config)?;
    let cold_cached = start.elapsed();
    let _ = std::fs::remove_dir_all(&cache);

    let engine = weir_tests::engine();
    // The same module compiled with epoch checks instead of fuel metering (the
    // on-disk cache keeps the two apart).
    let epoch_engine = Engine::builder()
        .deadline_per_call(DEADLINE)
        .cache_dir(weir_cli::build::target_dir(root()).join("weir-cache"))
        .build()?;
    anyhow::ensure!(
        engine.call_limit() == CallLimit::Fuel,
        "the default is fuel"
    );
    let engines: [&Engine; MODES] = [engine, &epoch_engine];
    let bases = engines
        .iter()
        .map(|e| Ok([("header-append", e.load(&wasm)?, config.clone())]))
        .collect::<Result<Vec<_>>>()?;
    let trivial_wasm = wat::parse_str(TRIVIAL)?;
    let trivials = engines
        .iter()
        .map(|e| Ok(e.load(&trivial_wasm)?))
        .collect::<Result<Vec<_>>>()?;
    let base = &bases[0];

    // Throughput of the one-filter chain, each round once per mode.
    let n = 20_000;
    let mut chains = engines
        .iter()
        .zip(&bases)
        .map(|(e, b)| chain_of(e, b))
        .collect::<Result<Vec<_>>>()?;
    let mut samples = vec![Vec::new(); MODES];
    let mut nop = Nop::new()?;
    let mut nop_samples = Vec::new();
    for chain in &mut chains {
        per_request(chain, 1000)?;
    }
    nop.round()?;
    for _ in 0..ROUNDS {
        for (chain, s) in chains.iter_mut().zip(&mut samples) {
            s.push(per_request(chain, n)?);
        }
        nop_samples.push(nop.round()?);
    }
    drop(chains);
    let nop = Stat::of(nop_samples);
    let ones: Vec<Stat> = samples.into_iter().map(Stat::of).collect();
    let (one, one_epoch) = (ones[0], ones[1]);

    // Marginal cost of a trivial filter: chains with extra trivial filters,
    // measured round-robin (across modes too) so that load changes hit every
    // size and mode alike.
    let extras = [0usize, 5, 10, 20];
    let mut chains = Vec::new();
    for ((e, b), trivial) in engines.iter().zip(&bases).zip(&trivials) {
        for &extra in &extras {
            let mut plugins = b.to_vec();
            plugins.extend((0..extra).map(|_| ("trivial", trivial.clone(), String::new())));
            chains.push(chain_of(e, &plugins)?);
        }
    }
    let mut samples = vec![Vec::new(); chains.len()];
    for chain in &mut chains {
        per_request(chain, 500)?;
    }
    for _ in 0..ROUNDS {
        for (chain, s) in chains.iter_mut().zip(&mut samples) {
            s.push(per_request(chain, n / 4)?);
        }
    }
    drop(chains);
    let mut sized_by_mode = Vec::new();
    let mut marginal_by_mode = Vec::new();
    for of_mode in samples.chunks(extras.len()) {
        // One fit per round, over the sizes measured in that round.
        let slopes = (0..ROUNDS)
            .map(|round| {
                let points: Vec<(f64, f64)> = extras
                    .iter()
                    .zip(of_mode)
                    .map(|(x, s)| (*x as f64, s[round].as_secs_f64()))
                    .collect();
                Duration::from_secs_f64(slope(&points).max(0.0))
            })
            .collect();
        marginal_by_mode.push(Stat::of(slopes));
        let sized: Vec<(usize, Stat)> = extras
            .iter()
            .copied()
            .zip(of_mode.iter().cloned().map(Stat::of))
            .collect();
        sized_by_mode.push(sized);
    }
    let (marginal, marginal_epoch) = (marginal_by_mode[0], marginal_by_mode[1]);
    let sized = &sized_by_mode[0];
    let sized_epoch = &sized_by_mode[1];

    // Plugin start: many one-filter chains, built and dropped.
    let starts = 300;
    let mut instantiate = Vec::new();
    let mut startup = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..ROUNDS {
        let began = Instant::now();
        for _ in 0..starts {
            let chain = chain_of(engine, base)?;
            let times = chain.start_times();
            instantiate.push(times[0].instantiate);
            startup.push(times[0].startup);
        }
        whole.push(began.elapsed() / starts);
    }
    let instantiate = Stat::of(instantiate);
    let startup = Stat::of(startup);
    let whole = Stat::of(whole);

    let rps = 1.0 / one.median.as_secs_f64();
    let rps_epoch = 1.0 / one_epoch.median.as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "weir-harness, in-process, one thread ({} cores, load average {})",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if load.is_empty() {
            "unknown".to_owned()
        } else {
            load.join(" ")
        }
    );
    println!(
        "  medians of {ROUNDS} rounds, [min – max] over rounds (per-start figures: over every start)"
    );
    println!();
    row("figure", "measured", "target", "");
    row(
        "header-append, 1 filter: requests/s",
        &format!("{rps:.0}"),
        &format!(">= {TARGET_RPS:.0}"),
        &format!(
            "{}  ({} per request {}, {n} requests a round)",
            verdict(rps >= TARGET_RPS),
            us(one.median),
            one.range()
        ),
    );
    row(
        "  with epoch deadlines instead of fuel",
        &format!("{rps_epoch:.0}"),
        "",
        &format!(
            "{:.2}x fuel's  ({} per request {})",
            rps_epoch / rps,
            us(one_epoch.median),
            one_epoch.range()
        ),
    );
    row(
        "marginal cost of a trivial filter",
        &us(marginal.median),
        &format!("<= {}", us(TARGET_MARGINAL)),
        &format!(
            "{}  (slope over 0/5/10/20 extra filters, per round {})",
            verdict(marginal.median <= TARGET_MARGINAL),
            marginal.range()
        ),
    );
    row(
        "  with epoch deadlines instead of fuel",
        &us(marginal_epoch.median),
        "",
        &format!(
            "{} against fuel {}",
            signed_us(marginal_epoch.median.as_secs_f64() - marginal.median.as_secs_f64()),
            marginal_epoch.range()
        ),
    );
    row(
        "instantiation, per plugin (no guest code)",
        &us(instantiate.median),
        &format!("<= {}", us(TARGET_INSTANTIATE)),
        &format!(
            "{}  ({} starts {})",
            verdict(instantiate.median <= TARGET_INSTANTIATE),
            starts as usize * ROUNDS,
            instantiate.range()
        ),
    );
    row(
        "instantiation, per stream",
        "none",
        "",
        "one VM per plugin serves every stream, as in Envoy",
    );
    row(
        "guest start-up callbacks",
        &us(startup.median),
        "",
        &format!(
            "_initialize, on_context_create, on_vm_start, on_configure {}",
            startup.range()
        ),
    );
    row(
        "plugin start: build + drop a 1-filter chain",
        &us(whole.median),
        "",
        &whole.range(),
    );
    row(
        "cold start, compiling, to the 1st response",
        &format!("{:.1} ms", cold_compile.as_secs_f64() * 1e3),
        "",
        "engine + compile (no cache) + plugin start + first request",
    );
    row(
        "cold start, cached, to the 1st response",
        &format!("{:.1} ms", cold_cached.as_secs_f64() * 1e3),
        "",
        "engine + load from the on-disk cache + plugin start + first request",
    );
    let slower = per_call_ns(nop.median) / ANCHOR_NOP_NS;
    row(
        "calibration: wasmtime host-to-wasm typed nop",
        &format!("{:.1} ns", per_call_ns(nop.median)),
        &format!("{ANCHOR_NOP_NS} ns"),
        &format!(
            "{slower:.2}x the time wasmtime's maintainers published (wasmtime#10643) {}",
            ns_range(&nop)
        ),
    );
    row(
        "  header-append requests/s at their speed",
        &format!("{:.0}", rps * slower),
        &format!(">= {TARGET_RPS:.0}"),
        "an estimate: the measured figure times the calibration ratio, not a measurement",
    );
    println!();
    for (extra, t) in sized {
        println!(
            "  + {extra:>2} trivial filters: {:>8.0} requests/s  ({} per request {})",
            1.0 / t.median.as_secs_f64(),
            us(t.median),
            t.range()
        );
    }
    println!();
    println!(
        "  with epoch deadlines ({:?} per callback) instead of fuel metering:",
        DEADLINE
    );
    for (extra, t) in sized_epoch {
        println!(
            "  + {extra:>2} trivial filters: {:>8.0} requests/s  ({} per request {})",
            1.0 / t.median.as_secs_f64(),
            us(t.median),
            t.range()
        );
    }
    Ok(())
}
