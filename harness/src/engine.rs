//! The shared wasmtime engine and the compiled-module cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime::{
    Cache, CacheConfig, Config, InstanceAllocationStrategy, PoolingAllocationConfig,
    WasmBacktraceDetails,
};

use crate::plugin::Plugin;
use crate::{Error, Result};

/// Compiles modules and caches them. Cheap to clone; share one per test binary.
///
/// Fuel metering is always on: every call into a plugin is budgeted (so a runaway
/// guest traps instead of hanging a test) and [`Outcome::fuel`](crate::Outcome)
/// reports what a request cost, deterministically.
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

struct Inner {
    engine: wasmtime::Engine,
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
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            cache_dir: None,
            pool: Some(DEFAULT_MAX_INSTANCES),
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

    /// Creates the engine.
    ///
    /// # Errors
    /// [`Error::Wasm`] if the engine or its cache cannot be set up.
    pub fn build(self) -> Result<Engine> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .wasm_backtrace_details(WasmBacktraceDetails::Enable);
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
        Ok(Engine {
            inner: Arc::new(Inner {
                engine,
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

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
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
