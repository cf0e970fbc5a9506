//! The shared wasmtime engine and the compiled-module cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime::{Cache, CacheConfig, Config, WasmBacktraceDetails};

use crate::plugin::Plugin;
use crate::{Error, Result};

/// Compiles modules and caches them. Cheap to clone; share one per test binary.
///
/// Fuel metering is always on: every call into a plugin is budgeted (so a runaway
/// guest traps instead of hanging a test) and [`Outcome::fuel`](crate::Outcome)
/// reports what a request cost, deterministically.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

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
#[derive(Debug, Default)]
#[must_use]
pub struct EngineBuilder {
    cache_dir: Option<PathBuf>,
}

impl EngineBuilder {
    /// Also caches compiled code on disk in `dir`, across processes.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
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
