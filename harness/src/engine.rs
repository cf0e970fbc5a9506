//! The shared wasmtime engine and the compiled-module cache, and how it bounds
//! each call into a plugin: wasm fuel or a wall-clock deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{
    Cache, CacheConfig, Config, InstanceAllocationStrategy, PoolingAllocationConfig,
    WasmBacktraceDetails,
};

use crate::plugin::Plugin;
use crate::{Error, Result};

/// Compiles modules and caches them. Cheap to clone; share one per test binary.
///
/// Every call into a plugin is bounded, so that a runaway guest traps instead
/// of hanging a test (see [`CallLimit`]). By default the bound is wasm fuel:
/// each callback may burn [`ChainBuilder::fuel_per_call`](crate::ChainBuilder::fuel_per_call),
/// and [`Outcome::fuel`](crate::Outcome::fuel) reports what a request cost,
/// deterministically. [`EngineBuilder::deadline_per_call`] bounds each callback
/// by wall-clock time instead (wasmtime's epoch interruption): guest code runs
/// faster, but nothing counts fuel.
///
/// Plugin VMs are allocated from a pool reserved when the engine is built
/// (wasmtime's pooling allocator), which makes starting a VM a matter of
/// microseconds: linear memories are mapped copy-on-write from the module's
/// image and recycled when a VM is dropped. The pool holds
/// [`EngineBuilder::max_instances`] VMs at once (default
/// [`DEFAULT_MAX_INSTANCES`]); each VM's memory is still capped at Envoy's
/// 1 GiB. The pool only reserves address space (about 6 GiB per slot, none of it
/// committed until used); [`EngineBuilder::on_demand`] allocates each VM
/// separately instead.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// How many plugin VMs an engine's pool holds by default.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;

/// Table elements a pooled instance may have (wasmtime's default is 20 000; a
/// large module's function table can exceed it).
const POOL_TABLE_ELEMENTS: usize = 1 << 20;

/// Tables a pooled instance may define.
const POOL_TABLES_PER_MODULE: u32 = 8;

/// The largest `VMContext` of a pooled instance (wasmtime's default is 1 MiB,
/// which a module with very many functions or globals can exceed).
const POOL_MAX_INSTANCE_SIZE: usize = 16 << 20;

/// The finest step of the deadline ticker: a shorter deadline is rounded up
/// to it.
const MIN_TICK: Duration = Duration::from_millis(1);

/// Ticks of the deadline ticker in one deadline: a callback is stopped between
/// one deadline and a tenth of one more after it started.
const TICKS_PER_DEADLINE: u32 = 10;

/// How an engine bounds each call into a plugin (see
/// [`Engine::call_limit`]). Both stop a runaway guest with a trap, handled
/// like any other trap: the plugin's [`FailurePolicy`](crate::FailurePolicy)
/// applies, and the trap is reported with its wasm backtrace in
/// [`Outcome::traps`](crate::Outcome::traps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallLimit {
    /// Wasm fuel (the default): each callback may burn the chain's
    /// [`fuel_per_call`](crate::ChainBuilder::fuel_per_call) (about one unit
    /// per wasm instruction). The fuel a request or connection burned is
    /// counted, deterministically, in [`Outcome::fuel`](crate::Outcome::fuel)
    /// and [`ConnectionOutcome::fuel`](crate::ConnectionOutcome::fuel).
    Fuel,
    /// A wall-clock deadline per callback (wasmtime's epoch interruption, see
    /// [`EngineBuilder::deadline_per_call`]). Nothing is metered: the fuel
    /// figures of outcomes are always 0, which measures nothing, and
    /// `fuel_per_call` is ignored.
    Deadline(Duration),
}

/// What a plugin VM needs of the engine that compiled its module. The engine,
/// each [`Plugin`] and each VM hold one, so a deadline's ticker lives as long
/// as anything that may still run guest code, and no further.
#[derive(Clone)]
pub(crate) struct Runtime {
    engine: wasmtime::Engine,
    /// `None` for [`CallLimit::Fuel`].
    deadline: Option<Deadline>,
}

/// An epoch-interrupting engine's deadline.
#[derive(Clone)]
struct Deadline {
    /// As configured (at least [`MIN_TICK`]).
    per_call: Duration,
    /// The epochs a callback may run into.
    ticks: u64,
    /// Shared by the engine, its plugins and VMs; the ticker stops when the last
    /// goes.
    _ticker: Arc<Ticker>,
}

/// How each callback of a VM is bounded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Budget {
    /// This much fuel per callback.
    Fuel(u64),
    /// An epoch deadline `ticks` epochs ahead, which is `per_call` of wall
    /// clock.
    Deadline { ticks: u64, per_call: Duration },
}

impl Budget {
    /// `error`, with the deadline named above the trap and its backtrace if
    /// it is the deadline passing (an epoch interruption).
    pub(crate) fn name_deadline(self, error: wasmtime::Error) -> wasmtime::Error {
        match self {
            Budget::Deadline { per_call, .. }
                if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) =>
            {
                error.context(format!(
                    "the call ran past its deadline of {per_call:?} (wall clock)"
                ))
            }
            _ => error,
        }
    }
}

impl Runtime {
    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.engine
    }

    /// How each callback is bounded, given the chain's fuel per call (ignored
    /// with a deadline).
    pub(crate) fn budget(&self, fuel_per_call: u64) -> Budget {
        match &self.deadline {
            None => Budget::Fuel(fuel_per_call),
            Some(d) => Budget::Deadline {
                ticks: d.ticks,
                per_call: d.per_call,
            },
        }
    }

    fn call_limit(&self) -> CallLimit {
        match &self.deadline {
            None => CallLimit::Fuel,
            Some(d) => CallLimit::Deadline(d.per_call),
        }
    }
}

/// A thread that advances an engine's epoch every `period`, until dropped.
struct Ticker {
    /// Dropping it tells the thread to stop.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: wasmtime::Engine, period: Duration) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weir-epoch-ticker".to_owned())
            .spawn(move || {
                // Ends when the sender is dropped (or sends, which it never does).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread cannot panic; there is nothing to do if it did.
            let _ = thread.join();
        }
    }
}

/// The ticker's period and the ticks of one deadline: a tenth of the deadline
/// (at least [`MIN_TICK`]), and one tick more than fit in it, since the epoch
/// the deadline is counted from may be about to end.
fn ticks(per_call: Duration) -> (Duration, u64) {
    let period = (per_call / TICKS_PER_DEADLINE).max(MIN_TICK);
    let whole = per_call.as_nanos().div_ceil(period.as_nanos());
    (
        period,
        u64::try_from(whole).unwrap_or(u64::MAX).saturating_add(1),
    )
}

struct Inner {
    runtime: Runtime,
    /// Modules compiled by this engine, by their bytes. Each engine has its
    /// own map, so engines with different settings never share code (nor
    /// does wasmtime's on-disk cache, whose key covers the settings).
    modules: Mutex<HashMap<Vec<u8>, Plugin>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Builds an [`Engine`].
#[derive(Debug)]
#[must_use]
pub struct EngineBuilder {
    cache_dir: Option<PathBuf>,
    /// `None`: on-demand allocation; `Some(n)`: a pool of `n` instances.
    pool: Option<u32>,
    limit: CallLimit,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            cache_dir: None,
            pool: Some(DEFAULT_MAX_INSTANCES),
            limit: CallLimit::Fuel,
        }
    }
}

impl EngineBuilder {
    /// Also caches compiled code on disk in `dir`, across processes.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// How many plugin VMs may be alive at once (default
    /// [`DEFAULT_MAX_INSTANCES`]); each [`Filter`](crate::Filter) of each live
    /// [`Chain`](crate::Chain) is one. Starting one more fails with
    /// [`Error::Trap`] (function `instantiation`) until another is dropped.
    /// Each slot reserves about 6 GiB of address space (not memory).
    pub fn max_instances(mut self, count: u32) -> Self {
        self.pool = Some(count);
        self
    }

    /// Allocates each plugin VM on its own when it starts instead of from a
    /// pool: no limit on live VMs and no reservation up front, but starting a
    /// VM takes longer (its memory is mapped and unmapped each time).
    pub fn on_demand(mut self) -> Self {
        self.pool = None;
        self
    }

    /// Bounds each callback by wall-clock time instead of fuel: a callback
    /// still running `per_call` after it was entered traps (wasmtime's epoch
    /// interruption), with the deadline named in the trap message. Guest code
    /// runs faster than with fuel metering, but the bound depends on the
    /// machine and its load, and nothing is metered:
    /// [`Outcome::fuel`](crate::Outcome::fuel) is always 0 and
    /// [`ChainBuilder::fuel_per_call`](crate::ChainBuilder::fuel_per_call) is
    /// ignored (see [`CallLimit::Deadline`]).
    ///
    /// The deadline holds for every plugin VM of the engine, rather than being
    /// set per chain like `fuel_per_call`: the compiled code checks for it, so
    /// it is an engine setting like any that changes code, and one deadline
    /// fixes the ticker's period. Engines with different limits never share
    /// compiled code: each has its own in-memory cache, and the on-disk
    /// cache's key covers the setting. A VM is bounded as the engine that
    /// loaded its plugin says, whatever engine its chain was built on.
    /// A thread owned by the engine advances wasmtime's epoch ten times per
    /// deadline (every millisecond at most often; a shorter deadline counts as
    /// 1 ms), so a callback is stopped between one deadline and about a tenth
    /// more after it started, plus the time the OS takes to schedule the thread.
    /// The thread stops once the engine, its clones, and every plugin and chain
    /// made with it are dropped. Time spent in host calls counts, but a guest is
    /// only stopped while it runs wasm.
    pub fn deadline_per_call(mut self, per_call: Duration) -> Self {
        self.limit = CallLimit::Deadline(per_call.max(MIN_TICK));
        self
    }

    /// Creates the engine.
    ///
    /// # Errors
    /// [`Error::Wasm`] if the engine or its cache cannot be set up, or the
    /// deadline's ticker thread cannot be started.
    pub fn build(self) -> Result<Engine> {
        let mut config = Config::new();
        match self.limit {
            CallLimit::Fuel => config.consume_fuel(true),
            CallLimit::Deadline(_) => config.epoch_interruption(true),
        };
        config.wasm_backtrace_details(WasmBacktraceDetails::Enable);
        if let Some(count) = self.pool {
            let mut pool = PoolingAllocationConfig::new();
            pool.total_core_instances(count)
                .total_memories(count)
                .total_tables(count.saturating_mul(POOL_TABLES_PER_MODULE))
                .max_tables_per_module(POOL_TABLES_PER_MODULE)
                .table_elements(POOL_TABLE_ELEMENTS)
                .max_core_instance_size(POOL_MAX_INSTANCE_SIZE);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        if let Some(dir) = self.cache_dir {
            let mut cache = CacheConfig::new();
            cache.with_directory(dir);
            let cache = Cache::new(cache).map_err(|e| Error::Wasm(format!("{e:#}")))?;
            config.cache(Some(cache));
        }
        let engine = wasmtime::Engine::new(&config).map_err(|e| Error::Wasm(format!("{e:#}")))?;
        let deadline = match self.limit {
            CallLimit::Fuel => None,
            CallLimit::Deadline(per_call) => {
                let (period, ticks) = ticks(per_call);
                let ticker = Ticker::start(engine.clone(), period).map_err(|e| {
                    Error::Wasm(format!("cannot start the epoch deadline's ticker: {e}"))
                })?;
                Some(Deadline {
                    per_call,
                    ticks,
                    _ticker: Arc::new(ticker),
                })
            }
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                runtime: Runtime { engine, deadline },
                modules: Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Engine {
    /// An engine with default settings (no on-disk cache).
    ///
    /// # Errors
    /// [`Error::Wasm`] if wasmtime cannot be set up on this machine.
    pub fn new() -> Result<Self> {
        Self::builder().build()
    }

    /// An [`EngineBuilder`].
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// How this engine bounds each call into a plugin: [`CallLimit::Fuel`]
    /// unless built with [`EngineBuilder::deadline_per_call`].
    pub fn call_limit(&self) -> CallLimit {
        self.inner.runtime.call_limit()
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// Compiles (or fetches from the cache) a proxy-wasm module and checks it the
    /// way Envoy does at load: ABI marker, allocator, callback signatures, imports.
    ///
    /// # Errors
    /// See [`Plugin`] loading errors: [`Error::UnknownAbi`], [`Error::Link`], …
    pub fn load(&self, bytes: &[u8]) -> Result<Plugin> {
        if let Some(p) = self.modules().get(bytes) {
            return Ok(p.clone());
        }
        let plugin = Plugin::compile(self, bytes)?;
        self.modules().insert(bytes.to_vec(), plugin.clone());
        Ok(plugin)
    }

    /// Reads and loads a `.wasm` file.
    ///
    /// # Errors
    /// [`Error::Read`] if the file cannot be read, then as for [`Engine::load`].
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Plugin> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load(&bytes)
    }

    fn modules(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Plugin>> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.inner
            .modules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use bytes::Bytes;

    use super::*;
    use crate::{Chain, Echo, FailurePolicy, Filter, NetworkChain};

    /// Short enough for a quick test; the tests assert the trap, never a time.
    const DEADLINE: Duration = Duration::from_millis(50);

    /// A module whose `loops` callback never returns; the others return at once.
    fn module(loops: &str) -> Vec<u8> {
        let body = |name: &str, params: &str, result: &str, value: &str| {
            if name == loops {
                format!(r#"(func (export "{name}") {params} {result} (loop $l (br $l)) {value})"#)
            } else {
                format!(r#"(func (export "{name}") {params} {result} {value})"#)
            }
        };
        let src = format!(
            r#"(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  {}
  {}
  {}
  {})"#,
            body(
                "proxy_on_configure",
                "(param i32 i32)",
                "(result i32)",
                "(i32.const 1)"
            ),
            body(
                "proxy_on_request_headers",
                "(param i32 i32 i32)",
                "(result i32)",
                "(i32.const 0)"
            ),
            body(
                "proxy_on_new_connection",
                "(param i32)",
                "(result i32)",
                "(i32.const 0)"
            ),
            body(
                "proxy_on_downstream_data",
                "(param i32 i32 i32)",
                "(result i32)",
                "(i32.const 0)"
            ),
        );
        wat::parse_str(&src).unwrap_or_else(|e| panic!("bad test module: {e}\n{src}"))
    }

    fn deadline_engine() -> Engine {
        Engine::builder()
            .on_demand()
            .deadline_per_call(DEADLINE)
            .build()
            .expect("engine")
    }

    fn get() -> http::Request<Bytes> {
        http::Request::get("/")
            .header("host", "t.test")
            .body(Bytes::new())
            .expect("request")
    }

    fn ok(_: http::Request<Bytes>) -> http::Response<Bytes> {
        http::Response::new(Bytes::from_static(b"up"))
    }

    fn ticker(engine: &Engine) -> Weak<Ticker> {
        let deadline = engine.inner.runtime.deadline.as_ref().expect("a deadline");
        Arc::downgrade(&deadline._ticker)
    }

    #[test]
    fn a_deadline_is_ten_ticks_and_one_more() {
        assert_eq!(
            ticks(Duration::from_millis(50)),
            (Duration::from_millis(5), 11)
        );
        assert_eq!(
            ticks(Duration::from_secs(1)),
            (Duration::from_millis(100), 11)
        );
        // The finest tick is 1 ms.
        assert_eq!(ticks(Duration::from_millis(5)), (MIN_TICK, 6));
        assert_eq!(ticks(MIN_TICK), (MIN_TICK, 2));
        assert_eq!(ticks(Duration::from_micros(1_500)), (MIN_TICK, 3));
        // No overflow (the period is rounded down, so one tick more fits).
        assert_eq!(ticks(Duration::MAX), (Duration::MAX / 10, 12));
    }

    #[test]
    fn the_limit_is_fuel_unless_a_deadline_is_set() {
        let fuel = Engine::builder().on_demand().build().expect("engine");
        assert_eq!(fuel.call_limit(), CallLimit::Fuel);
        assert!(fuel.inner.runtime.deadline.is_none(), "no ticker");
        assert_eq!(
            deadline_engine().call_limit(),
            CallLimit::Deadline(DEADLINE)
        );
        let tiny = Engine::builder()
            .on_demand()
            .deadline_per_call(Duration::ZERO)
            .build()
            .expect("engine");
        assert_eq!(tiny.call_limit(), CallLimit::Deadline(MIN_TICK));
    }

    #[test]
    fn the_ticker_stops_when_the_engine_its_plugins_and_vms_are_gone() {
        let engine = deadline_engine();
        let ticker = ticker(&engine);
        let clone = engine.clone();
        let plugin = engine.load(&module("")).expect("loads");
        drop(engine);
        drop(clone);
        // The plugin may still run guest code: its deadlines must still come.
        assert!(ticker.upgrade().is_some());
        let mut chain = Chain::builder(&deadline_engine())
            .filter(Filter::new(plugin))
            .build()
            .expect("starts");
        assert!(ticker.upgrade().is_some(), "the chain's VM");
        assert_eq!(chain.send(get(), ok).expect("send").response.status(), 200);
        drop(chain);
        // Dropping the last owner joined the thread.
        assert!(ticker.upgrade().is_none());
    }

    #[test]
    fn a_runaway_callback_traps_at_its_deadline_with_a_backtrace() {
        let engine = deadline_engine();
        let plugin = engine
            .load(&module("proxy_on_request_headers"))
            .expect("loads");
        let mut chain = Chain::builder(&engine)
            .filter(Filter::new(plugin).name("runaway"))
            .build()
            .expect("starts");
        let outcome = chain.send(get(), ok).expect("answered");
        assert_eq!(outcome.response.status(), 503);
        assert_eq!(outcome.traps.len(), 1, "{:?}", outcome.traps);
        let trap = &outcome.traps[0];
        assert!(
            trap.starts_with("runaway: Function: proxy_on_request_headers failed: "),
            "{trap}"
        );
        assert!(
            trap.contains("the call ran past its deadline of 50ms"),
            "{trap}"
        );
        assert!(trap.contains("wasm backtrace"), "{trap}");
        assert!(trap.contains("interrupt"), "{trap}");
        assert_eq!(outcome.fuel, 0, "not metered");
    }

    #[test]
    fn a_runaway_start_up_callback_fails_the_build() {
        let engine = deadline_engine();
        let plugin = engine.load(&module("proxy_on_configure")).expect("loads");
        let err = Chain::builder(&engine)
            .filter(Filter::new(plugin).name("runaway"))
            .build()
            .expect_err("on_configure never returns");
        assert!(
            matches!(
                err,
                Error::Trap { ref plugin, function: "proxy_on_configure", ref message }
                    if plugin == "runaway" && message.contains("deadline of 50ms")
            ),
            "{err}"
        );
    }

    #[test]
    fn a_runaway_start_function_fails_instantiation() {
        let wasm = wat::parse_str(
            r#"(module
              (memory (export "memory") 1)
              (func (export "malloc") (param i32) (result i32) (i32.const 1024))
              (func (export "proxy_abi_version_0_2_1"))
              (func $spin (loop $l (br $l)))
              (start $spin))"#,
        )
        .expect("module");
        let engine = deadline_engine();
        let plugin = engine.load(&wasm).expect("loads");
        let err = Chain::builder(&engine)
            .filter(Filter::new(plugin))
            .build()
            .expect_err("the start function never returns");
        assert!(
            matches!(
                err,
                Error::Trap { function: "instantiation", ref message, .. }
                    if message.contains("deadline of 50ms")
            ),
            "{err}"
        );
    }

    #[test]
    fn each_callback_gets_a_fresh_deadline() {
        // Many quick callbacks, together much longer than one deadline.
        let engine = deadline_engine();
        let plugin = engine.load(&module("")).expect("loads");
        let mut chain = Chain::builder(&engine)
            .filter(Filter::new(plugin))
            .build()
            .expect("starts");
        let began = std::time::Instant::now();
        while began.elapsed() < DEADLINE * 3 {
            let outcome = chain.send(get(), ok).expect("send");
            assert_eq!(outcome.response.status(), 200, "{:?}", outcome.traps);
        }
    }

    #[test]
    fn a_runaway_network_callback_closes_its_connection() {
        let engine = deadline_engine();
        let plugin = engine
            .load(&module("proxy_on_downstream_data"))
            .expect("loads");
        let mut chain = NetworkChain::builder(&engine)
            .filter(Filter::new(plugin).failure_policy(FailurePolicy::FailOpen))
            .build()
            .expect("starts");
        let mut conn = chain.connect(Echo).expect("connects");
        conn.send(b"data").expect("sent");
        let outcome = conn.finish();
        assert_eq!(outcome.closed, Some(crate::CloseType::Local));
        assert_eq!(outcome.traps.len(), 1);
        assert!(
            outcome.traps[0].contains("proxy_on_downstream_data")
                && outcome.traps[0].contains("deadline of 50ms"),
            "{:?}",
            outcome.traps
        );
        assert_eq!(outcome.fuel, 0);
        // Failing open, later connections skip the failed VM.
        let mut conn = chain.connect(Echo).expect("connects");
        conn.send(b"xy").expect("sent");
        assert_eq!(conn.client_received(), b"xy");
    }

    #[test]
    fn fuel_and_deadline_engines_sharing_a_cache_dir_keep_their_code_apart() {
        let dir =
            std::env::temp_dir().join(format!("weir-harness-limit-cache-{}", std::process::id()));
        let wasm = module("proxy_on_request_headers");
        let run = |engine: &Engine| {
            let plugin = engine.load(&wasm).expect("loads");
            let mut chain = Chain::builder(engine)
                .filter(Filter::new(plugin).name("runaway"))
                .fuel_per_call(1_000_000)
                .build()
                .expect("starts");
            let outcome = chain.send(get(), ok).expect("answered");
            assert_eq!(outcome.traps.len(), 1, "{:?}", outcome.traps);
            outcome.traps[0].clone()
        };
        let cached = || Engine::builder().on_demand().cache_dir(&dir);
        let fuel = run(&cached().build().expect("engine"));
        let deadline = run(&cached()
            .deadline_per_call(DEADLINE)
            .build()
            .expect("engine"));
        // Each in a fresh engine again, which may read the other's code if
        // the cache mixed them up.
        let fuel_again = run(&cached().build().expect("engine"));
        let deadline_again = run(&cached()
            .deadline_per_call(DEADLINE)
            .build()
            .expect("engine"));
        let _ = std::fs::remove_dir_all(&dir);
        for trap in [fuel, fuel_again] {
            assert!(trap.contains("all fuel consumed"), "{trap}");
            assert!(!trap.contains("deadline"), "{trap}");
        }
        for trap in [deadline, deadline_again] {
            assert!(trap.contains("deadline of 50ms"), "{trap}");
            assert!(!trap.contains("fuel"), "{trap}");
        }
    }
}
