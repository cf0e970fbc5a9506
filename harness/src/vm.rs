//! One plugin VM: a wasmtime instance of a [`Plugin`] with the root context of
//! each plugin it runs, and the host side of calling its callbacks the way Envoy
//! does.
//!
//! Envoy runs plugins with equal vm_id, VM configuration and code in one VM: the
//! module is instantiated once, and each plugin gets its own root context in it
//! (`proxy_on_context_create(root, 0)`, `proxy_on_vm_start`, `proxy_on_configure`).
//! A [`Vm`] is one plugin's handle on such a VM; [`Vm::join`] adds a plugin to
//! the VM of another handle. A trap fails the VM for every plugin in it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::{Instance, ModuleExport, Store, TypedFunc, WasmParams, WasmResults};

use crate::abi::{AbiVersion, Status};
use crate::chain::Clusters;
use crate::engine::Budget;
use crate::fields::Fields;
use crate::grpc::{self, Event};
use crate::outcome::{LogLevel, StartTime};
use crate::plugin::{Plugin, callback_export};
use crate::shared::Shared;
use crate::state::{
    CallResponse, Deferred, GuestExports, HostState, Phase, PluginMeta, StreamMaps,
};
use crate::{Error, Result};

/// Fuel given to each callback by default (about a second of wasm); a guest that
/// burns through it is stopped with a trap instead of hanging the test.
pub(crate) const DEFAULT_FUEL_PER_CALL: u64 = 1_000_000_000;

/// A trap in a plugin callback, formatted with its wasm backtrace.
#[derive(Debug, Clone)]
pub(crate) struct Trap(pub(crate) String);

/// A callback the module may export: where it is among the instance's
/// exports, and the function, typed when first called. Typing a function
/// costs more than calling it, and a VM calls few of the callbacks a module
/// exports, so a VM starts without typing them. A clone shares nothing with
/// the original once made.
pub(crate) struct Cb<P, R> {
    export: Option<ModuleExport>,
    func: OnceLock<Option<TypedFunc<P, R>>>,
}

impl<P, R> Clone for Cb<P, R> {
    fn clone(&self) -> Self {
        Self {
            export: self.export,
            func: self.func.clone(),
        }
    }
}

impl<P, R> Default for Cb<P, R> {
    fn default() -> Self {
        Self {
            export: None,
            func: OnceLock::new(),
        }
    }
}

impl<P: WasmParams, R: WasmResults> Cb<P, R> {
    fn new(export: Option<ModuleExport>) -> Self {
        Self {
            export,
            func: OnceLock::new(),
        }
    }

    /// Whether the module exports this callback.
    pub(crate) fn is_some(&self) -> bool {
        self.export.is_some()
    }

    /// Whether the module does not export this callback.
    pub(crate) fn is_none(&self) -> bool {
        self.export.is_none()
    }

    /// The function, typed on first use; `None` if the module does not
    /// export it.
    fn get(&self, store: &mut Store<HostState>, instance: &Instance) -> Option<&TypedFunc<P, R>> {
        self.func
            .get_or_init(|| typed(store, instance, self.export))
            .as_ref()
    }
}

/// The callbacks the harness calls, located once. All are optional.
struct Callbacks {
    on_context_create: Cb<(i32, i32), ()>,
    on_vm_start: Cb<(i32, i32), i32>,
    on_configure: Cb<(i32, i32), i32>,
    on_request_headers: Cb<(i32, i32, i32), i32>,
    on_response_headers: Cb<(i32, i32, i32), i32>,
    /// ABI 0.1.0's headers callbacks, without `end_of_stream`.
    on_request_headers_0_1: Cb<(i32, i32), i32>,
    on_response_headers_0_1: Cb<(i32, i32), i32>,
    on_request_body: Cb<(i32, i32, i32), i32>,
    on_request_trailers: Cb<(i32, i32), i32>,
    on_response_trailers: Cb<(i32, i32), i32>,
    on_http_call_response: Cb<(i32, i32, i32, i32, i32), ()>,
    on_grpc_receive_initial_metadata: Cb<(i32, i32, i32), ()>,
    on_grpc_receive: Cb<(i32, i32, i32), ()>,
    on_grpc_receive_trailing_metadata: Cb<(i32, i32, i32), ()>,
    on_grpc_close: Cb<(i32, i32, i32), ()>,
    on_tick: Cb<i32, ()>,
    on_queue_ready: Cb<(i32, i32), ()>,
    on_response_body: Cb<(i32, i32, i32), i32>,
    on_log: Cb<i32, ()>,
    on_done: Cb<i32, i32>,
    on_delete: Cb<i32, ()>,
    /// Network (L4) filter callbacks.
    network: crate::l4::NetworkCallbacks,
}

/// What every VM a chain starts has in common, fixed when the chain is built.
#[derive(Debug, Clone)]
pub(crate) struct VmTemplate {
    pub(crate) log_level: LogLevel,
    /// The budget of each callback (on a fuel-metering engine).
    pub(crate) fuel_per_call: u64,
    /// The clusters `proxy_http_call` may name.
    clusters: Vec<String>,
    /// The clusters gRPC calls and streams may name.
    grpc_clusters: Vec<String>,
    /// Those whose service answers streams while they are open.
    grpc_stream_clusters: Vec<String>,
}

impl VmTemplate {
    pub(crate) fn new(
        log_level: LogLevel,
        fuel_per_call: u64,
        clusters: &Clusters,
        grpc: &grpc::GrpcServices,
    ) -> Self {
        Self {
            log_level,
            fuel_per_call,
            clusters: clusters.names(),
            grpc_clusters: grpc.names(),
            grpc_stream_clusters: grpc.streaming_names(),
        }
    }

    /// A VM's plugin `meta` joins `sibling` (a healthy VM with its VM key, as
    /// Envoy's thread-local VM lookup finds it), or a new VM starts at wall
    /// clock `now` and virtual monotonic time `monotonic`, its `random_get`
    /// seeded with `seed`.
    pub(crate) fn join_or_start(
        &self,
        sibling: Option<&Vm>,
        plugin: &Plugin,
        meta: PluginMeta,
        (now, monotonic, seed): (SystemTime, Duration, u64),
        shared: &Arc<Shared>,
    ) -> Result<Vm> {
        match sibling {
            Some(vm) => vm.join(meta),
            None => Vm::start(
                plugin,
                meta,
                &VmSetup {
                    template: self,
                    now,
                    monotonic,
                    seed,
                },
                Arc::clone(shared),
            ),
        }
    }
}

/// What a new VM starts with, besides its plugin and the process-wide state.
#[derive(Debug, Clone, Copy)]
struct VmSetup<'a> {
    template: &'a VmTemplate,
    /// The wall clock at start.
    now: SystemTime,
    /// The chain's virtual monotonic clock at start.
    monotonic: Duration,
    /// Seeds `random_get`.
    seed: u64,
}

/// One plugin's handle on a VM (which other plugins may share).
pub(crate) struct Vm {
    core: Arc<Mutex<VmCore>>,
    /// Whether the VM failed, readable without the lock (the chain asks for
    /// every filter at every step of a stream).
    failed: Arc<AtomicBool>,
    /// This plugin's index in the VM's [`HostState::roots`].
    plugin: usize,
    /// The VM's [`HostState::vm_key`], fixed for the store's life (the chain
    /// asks for it at every event).
    key: u64,
    /// How long this plugin took to start (for the plugin that created the VM,
    /// instantiation included).
    pub(crate) start_time: StartTime,
}

/// The VM itself: the store, shared by the handles of its plugins.
struct VmCore {
    store: Store<HostState>,
    /// The module's instance in `store`.
    instance: Instance,
    /// Shared so that a call can hold one while the store is borrowed (cloning
    /// a typed function handle costs more than the call).
    callbacks: Arc<Callbacks>,
    next_context_id: u32,
    /// Set once a callback trapped: Envoy fails the whole VM.
    pub(crate) failed: Option<Trap>,
    /// Set with `failed`, for [`Vm::failed`].
    failed_flag: Arc<AtomicBool>,
    /// Fuel consumed since the last [`Vm::take_usage`] (0 with a deadline).
    fuel: u64,
    /// The budget of each callback.
    budget: Budget,
    /// Keeps a deadline's ticker going while this VM may run guest code.
    _runtime: crate::engine::Runtime,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.lock();
        f.debug_struct("Vm")
            .field("plugin", &core.name())
            .field("failed", &core.failed)
            .finish_non_exhaustive()
    }
}

/// A plugin's view of its VM's host state, for as long as it is held.
pub(crate) struct StateGuard<'a>(MutexGuard<'a, VmCore>);

impl std::ops::Deref for StateGuard<'_> {
    type Target = HostState;
    fn deref(&self) -> &HostState {
        self.0.store.data()
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut HostState {
        self.0.store.data_mut()
    }
}

/// The function at `export`, typed; `None` if the module does not export it.
fn typed<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    instance: &Instance,
    export: Option<ModuleExport>,
) -> Option<TypedFunc<P, R>> {
    // Signatures were checked at load, so a present export always types.
    instance
        .get_module_export(&mut *store, &export?)?
        .into_func()?
        .typed::<P, R>(&*store)
        .ok()
}

/// What a headers callback left ([`Vm::open_stream`], [`Vm::respond`]).
pub(crate) struct HeadersCall {
    /// The callback's result.
    pub(crate) result: Result<Option<i32>, Trap>,
    /// Whether a callback deferred an action (see [`Vm::take_deferred`]).
    pub(crate) deferred: bool,
    /// The headers, back from the VM when the callback let the stream go with
    /// nothing deferred: the context no longer points at them (the common
    /// case, which then needs nothing more of the VM).
    pub(crate) headers: Option<Fields>,
}

impl HeadersCall {
    fn of(
        result: Result<Option<i32>, Trap>,
        state: &mut HostState,
        goes_on: fn(Option<i32>) -> bool,
        take: impl FnOnce(&mut StreamMaps) -> Option<Fields>,
    ) -> Self {
        let deferred = !state.deferred.is_empty();
        let headers = match &result {
            Ok(action) if !deferred && goes_on(*action) => take(&mut state.maps),
            _ => None,
        };
        Self {
            result,
            deferred,
            headers,
        }
    }
}

impl Vm {
    /// Instantiates the plugin in a new VM and runs Envoy's start-up sequence:
    /// `_initialize` (+ `main`/`__main_void`) or `_start`, then the root
    /// context's `on_context_create`, `on_vm_start` and `on_configure`.
    fn start(
        plugin: &Plugin,
        meta: PluginMeta,
        setup: &VmSetup<'_>,
        shared: Arc<Shared>,
    ) -> Result<Self> {
        let began = Instant::now();
        let name = meta.name.clone();
        let template = setup.template;
        let budget = plugin.runtime().budget(template.fuel_per_call);
        let mut state = HostState::new(meta, setup.now, setup.seed, shared);
        state.log_level = template.log_level;
        state.monotonic = setup.monotonic;
        // Known before the start-up callbacks: on_vm_start and on_configure may
        // call out, as in Envoy.
        state.clusters.clone_from(&template.clusters);
        state.grpc_clusters.clone_from(&template.grpc_clusters);
        state
            .grpc_stream_clusters
            .clone_from(&template.grpc_stream_clusters);
        let mut store = Store::new(plugin.runtime().wasmtime(), state);
        store.limiter(|s| &mut s.limits);
        // Bounded from the start: instantiation may run the module's start
        // function.
        match budget {
            Budget::Fuel(fuel) => store
                .set_fuel(fuel)
                .map_err(|e| Error::Wasm(format!("{e:#}")))?,
            Budget::Deadline { ticks, .. } => {
                store.epoch_deadline_trap();
                store.set_epoch_deadline(ticks);
            }
        }
        let instance = plugin
            .instance_pre()
            .instantiate(&mut store)
            .map_err(|e| Error::Trap {
                plugin: name.clone(),
                function: "instantiation",
                message: format!("{:?}", budget.name_deadline(e)),
            })?;
        let v0_1_0 = plugin.abi() == AbiVersion::V0_1_0;
        // ABI 0.1.0's headers callbacks have their own signature.
        let headers = |export: Option<ModuleExport>, for_0_1: bool| {
            if v0_1_0 == for_0_1 { export } else { None }
        };
        let memory = plugin
            .memory_export()
            .and_then(|export| instance.get_module_export(&mut store, &export))
            .and_then(wasmtime::Extern::into_memory);
        let allocator = [
            callback_export!(plugin, "malloc"),
            callback_export!(plugin, "proxy_on_memory_allocate"),
        ]
        .into_iter()
        .find_map(|export| typed::<i32, i32>(&mut store, &instance, export))
        .map(Arc::new);
        let exports = GuestExports { memory, allocator };
        store.data_mut().exports = exports;
        let callbacks = Arc::new(Callbacks {
            on_request_headers_0_1: Cb::new(headers(
                callback_export!(plugin, "proxy_on_request_headers"),
                true,
            )),
            on_response_headers_0_1: Cb::new(headers(
                callback_export!(plugin, "proxy_on_response_headers"),
                true,
            )),
            on_context_create: Cb::new(callback_export!(plugin, "proxy_on_context_create")),
            on_vm_start: Cb::new(callback_export!(plugin, "proxy_on_vm_start")),
            on_configure: Cb::new(callback_export!(plugin, "proxy_on_configure")),
            on_request_headers: Cb::new(headers(
                callback_export!(plugin, "proxy_on_request_headers"),
                false,
            )),
            on_response_headers: Cb::new(headers(
                callback_export!(plugin, "proxy_on_response_headers"),
                false,
            )),
            on_request_body: Cb::new(callback_export!(plugin, "proxy_on_request_body")),
            on_request_trailers: Cb::new(callback_export!(plugin, "proxy_on_request_trailers")),
            on_response_trailers: Cb::new(callback_export!(plugin, "proxy_on_response_trailers")),
            on_http_call_response: Cb::new(callback_export!(plugin, "proxy_on_http_call_response")),
            on_grpc_receive_initial_metadata: Cb::new(callback_export!(
                plugin,
                "proxy_on_grpc_receive_initial_metadata"
            )),
            on_grpc_receive: Cb::new(callback_export!(plugin, "proxy_on_grpc_receive")),
            on_grpc_receive_trailing_metadata: Cb::new(callback_export!(
                plugin,
                "proxy_on_grpc_receive_trailing_metadata"
            )),
            on_grpc_close: Cb::new(callback_export!(plugin, "proxy_on_grpc_close")),
            on_tick: Cb::new(callback_export!(plugin, "proxy_on_tick")),
            on_queue_ready: Cb::new(callback_export!(plugin, "proxy_on_queue_ready")),
            on_response_body: Cb::new(callback_export!(plugin, "proxy_on_response_body")),
            on_log: Cb::new(callback_export!(plugin, "proxy_on_log")),
            on_done: Cb::new(callback_export!(plugin, "proxy_on_done")),
            on_delete: Cb::new(callback_export!(plugin, "proxy_on_delete")),
            network: crate::l4::NetworkCallbacks {
                on_new_connection: Cb::new(callback_export!(plugin, "proxy_on_new_connection")),
                on_downstream_data: Cb::new(callback_export!(plugin, "proxy_on_downstream_data")),
                on_upstream_data: Cb::new(callback_export!(plugin, "proxy_on_upstream_data")),
                on_downstream_close: Cb::new(callback_export!(
                    plugin,
                    "proxy_on_downstream_connection_close"
                )),
                on_upstream_close: Cb::new(callback_export!(
                    plugin,
                    "proxy_on_upstream_connection_close"
                )),
            },
        });
        let mut core = VmCore {
            store,
            instance,
            callbacks,
            next_context_id: 1,
            failed: None,
            failed_flag: Arc::new(AtomicBool::new(false)),
            fuel: 0,
            budget,
            _runtime: plugin.runtime().clone(),
        };
        let instantiated = Instant::now();
        core.initialize(plugin)?;
        core.start_root()?;
        Ok(Vm {
            failed: Arc::clone(&core.failed_flag),
            key: core.store.data().vm_key,
            core: Arc::new(Mutex::new(core)),
            plugin: 0,
            start_time: StartTime {
                instantiate: instantiated - began,
                startup: instantiated.elapsed(),
            },
        })
    }

    /// Adds a plugin to this handle's VM, as Envoy does for a plugin whose
    /// vm_id, VM configuration and code equal those of a running VM: a new
    /// root context (its id comes from the VM's one counter), then its
    /// `on_context_create`, `on_vm_start` and `on_configure`. The module is not
    /// initialized again, so its globals are shared.
    ///
    /// A VM that already failed takes no plugin (the caller starts a new one).
    pub(crate) fn join(&self, meta: PluginMeta) -> Result<Vm> {
        let began = Instant::now();
        let mut core = self.lock();
        if let Some(trap) = &core.failed {
            return Err(Error::Trap {
                plugin: meta.name,
                function: "a shared VM's earlier callback",
                message: trap.0.clone(),
            });
        }
        let plugin = core.store.data_mut().add_root(meta);
        core.store.data_mut().current = plugin;
        core.start_root()?;
        drop(core);
        Ok(Vm {
            core: Arc::clone(&self.core),
            failed: Arc::clone(&self.failed),
            key: self.key,
            plugin,
            start_time: StartTime {
                instantiate: std::time::Duration::ZERO,
                startup: began.elapsed(),
            },
        })
    }

    /// Locks the VM for this plugin: the host state reached through the guard
    /// acts for this plugin (its root context, timers, callouts).
    fn lock(&self) -> MutexGuard<'_, VmCore> {
        // A panic while the lock was held leaves the state as consistent as
        // between two callbacks: carry on with it.
        let mut core = self.core.lock().unwrap_or_else(PoisonError::into_inner);
        core.store.data_mut().current = self.plugin;
        core
    }

    /// Whether the VM failed (a trap in a callback of any of its plugins).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The plugin's name.
    pub(crate) fn name(&self) -> String {
        self.lock().name().to_owned()
    }

    /// The key naming this VM in process-wide state.
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// This plugin's root context id.
    pub(crate) fn root_context(&self) -> u32 {
        self.lock().store.data().root().root_context_id
    }

    /// The VM's host state, acting for this plugin while the guard is held.
    pub(crate) fn state(&mut self) -> StateGuard<'_> {
        StateGuard(self.lock())
    }

    /// Allocates a context id (one counter per VM, as in Envoy).
    pub(crate) fn new_context_id(&mut self) -> u32 {
        self.lock().new_context_id()
    }

    /// The network filter callbacks, with what [`Vm::call_network`] needs.
    pub(crate) fn network_callbacks(&self) -> crate::l4::NetworkCallbacks {
        self.lock().callbacks.network.clone()
    }

    /// Calls a network filter callback (see `l4.rs`) with Envoy's context
    /// bookkeeping.
    pub(crate) fn call_network<P: WasmParams, R: WasmResults>(
        &mut self,
        phase: Phase,
        context: u32,
        name: &'static str,
        func: &Cb<P, R>,
        params: P,
    ) -> Result<Option<R>, Trap> {
        self.lock().call(phase, context, name, func, params)
    }

    /// The fuel used and the `proxy_*` host calls made since the last call to
    /// this, by every plugin of the VM.
    pub(crate) fn take_usage(&mut self) -> (u64, u64) {
        let mut core = self.lock();
        let fuel = std::mem::take(&mut core.fuel);
        (fuel, std::mem::take(&mut core.store.data_mut().host_calls))
    }

    /// What the last callbacks asked the host to do to `context` once they
    /// returned.
    pub(crate) fn take_deferred(&mut self, context: u32) -> Deferred {
        let mut core = self.lock();
        let deferred = &mut core.store.data_mut().deferred;
        if deferred.is_empty() {
            Deferred::default()
        } else {
            deferred.take(context)
        }
    }

    /// Everything the last callbacks deferred, by the context it acts on.
    pub(crate) fn take_all_deferred(&mut self) -> Vec<(u32, Deferred)> {
        self.lock().store.data_mut().deferred.take_all()
    }

    /// Whether a body frame of `response` (or request) bodies passes this
    /// plugin untouched: the module exports no callback for it, and no
    /// trailers of that direction are lent to the VM (which a body callback
    /// would take as trailers it added).
    pub(crate) fn passes_body(&self, response: bool) -> bool {
        let core = self.lock();
        let maps = &core.store.data().maps;
        if response {
            core.callbacks.on_response_body.is_none() && maps.response_trailers.is_none()
        } else {
            core.callbacks.on_request_body.is_none() && maps.request_trailers.is_none()
        }
    }

    /// A stream context of this plugin: `on_context_create(stream, root)`.
    pub(crate) fn create_stream(&mut self, stream: u32) -> Result<(), Trap> {
        self.lock().create_stream(stream)
    }

    /// A stream reaches this plugin's filter with its request `headers`, under
    /// one lock: its context (`reserved`, else a new id) is created with the
    /// new stream's maps, then `on_context_create` and `on_request_headers`
    /// run. The context, and what the callback left ([`HeadersCall`]; `goes_on`
    /// tells the results that let the stream go).
    pub(crate) fn open_stream(
        &mut self,
        reserved: Option<u32>,
        headers: Fields,
        eos: bool,
        goes_on: fn(Option<i32>) -> bool,
    ) -> (u32, HeadersCall) {
        let mut core = self.lock();
        let stream = reserved.unwrap_or_else(|| core.new_context_id());
        let count = headers.len();
        let maps = &mut core.store.data_mut().maps;
        maps.reset();
        maps.request_headers = Some(headers);
        let result = core
            .create_stream(stream)
            .and_then(|()| core.on_request_headers(stream, count, eos));
        let call = HeadersCall::of(result, core.store.data_mut(), goes_on, |maps| {
            maps.request_headers.take()
        });
        (stream, call)
    }

    /// The response `headers` reach this plugin's filter: `on_response_headers`
    /// with them in place, under one lock (see [`Vm::open_stream`]).
    pub(crate) fn respond(
        &mut self,
        stream: u32,
        headers: Fields,
        eos: bool,
        goes_on: fn(Option<i32>) -> bool,
    ) -> HeadersCall {
        let mut core = self.lock();
        let count = headers.len();
        core.store.data_mut().maps.response_headers = Some(headers);
        let result = core.on_response_headers(stream, count, eos);
        HeadersCall::of(result, core.store.data_mut(), goes_on, |maps| {
            maps.response_headers.take()
        })
    }

    /// This plugin's timer fired: `on_tick` on its root context.
    pub(crate) fn on_tick(&mut self) -> Result<(), Trap> {
        self.lock().on_tick()
    }

    /// A shared queue has data: `on_queue_ready` on the root context that
    /// registered it (any plugin's of this VM), if that context still exists.
    pub(crate) fn on_queue_ready(&mut self, root: u32, token: u32) -> Result<(), Trap> {
        self.lock().on_queue_ready(root, token)
    }

    /// Delivers a callout's answer to this plugin's root context.
    pub(crate) fn on_http_call_response(
        &mut self,
        token: u32,
        headers: Fields,
        body: Vec<u8>,
    ) -> Result<Option<i32>, Trap> {
        self.lock().on_http_call_response(token, headers, body)
    }

    /// One of this plugin's callouts failed after its response started.
    pub(crate) fn on_http_call_failure(&mut self, token: u32) -> Result<Option<i32>, Trap> {
        self.lock().on_http_call_failure(token)
    }

    /// Delivers one gRPC event to this plugin's root context.
    pub(crate) fn deliver_grpc(&mut self, event: Event) -> Result<(), Trap> {
        self.lock().deliver_grpc(event)
    }

    /// `on_request_body`.
    pub(crate) fn on_request_body(
        &mut self,
        stream: u32,
        size: usize,
        eos: bool,
    ) -> Result<Option<i32>, Trap> {
        self.lock().on_request_body(stream, size, eos)
    }

    /// `on_response_body`.
    pub(crate) fn on_response_body(
        &mut self,
        stream: u32,
        size: usize,
        eos: bool,
    ) -> Result<Option<i32>, Trap> {
        self.lock().on_response_body(stream, size, eos)
    }

    /// `on_request_trailers` with the number of trailers.
    pub(crate) fn on_request_trailers(
        &mut self,
        stream: u32,
        trailers: usize,
    ) -> Result<Option<i32>, Trap> {
        self.lock().on_request_trailers(stream, trailers)
    }

    /// `on_response_trailers` with the number of trailers.
    pub(crate) fn on_response_trailers(
        &mut self,
        stream: u32,
        trailers: usize,
    ) -> Result<Option<i32>, Trap> {
        self.lock().on_response_trailers(stream, trailers)
    }

    /// Envoy's access-log hook for a stream (see [`VmCore::log_stream`]).
    pub(crate) fn log_stream(
        &mut self,
        stream: u32,
        request_headers: &mut Fields,
        response_headers: Option<&mut Fields>,
        response_trailers: Option<&mut Fields>,
    ) -> Result<(), Trap> {
        self.lock()
            .log_stream(stream, request_headers, response_headers, response_trailers)
    }

    /// A network filter's connection is over (see [`VmCore::end_connection`]).
    pub(crate) fn end_connection(&mut self, connection: u32) -> Result<(), Trap> {
        self.lock().end_connection(connection)
    }

    /// The filter is destroyed: `on_done`, then `on_delete`.
    pub(crate) fn end_stream(&mut self, stream: u32) -> Result<(), Trap> {
        self.lock().end_stream(stream)
    }
}

impl VmCore {
    fn startup_trap(&self, function: &'static str, trap: Trap) -> Error {
        Error::Trap {
            plugin: self.name().to_owned(),
            function,
            message: trap.0,
        }
    }

    fn initialize(&mut self, plugin: &Plugin) -> Result<()> {
        let init = Cb::<(), ()>::new(callback_export!(plugin, "_initialize"));
        let main = Cb::<(i32, i32), i32>::new(callback_export!(plugin, "main"));
        let main_void = Cb::<(), i32>::new(callback_export!(plugin, "__main_void"));
        let start = Cb::<(), ()>::new(callback_export!(plugin, "_start"));
        self.store.data_mut().in_init = true;
        let result = if init.is_some() {
            self.call(Phase::Idle, 0, "_initialize", &init, ())
                .and_then(|_| {
                    if main.is_some() {
                        self.call(Phase::Idle, 0, "main", &main, (0, 0)).map(drop)
                    } else {
                        self.call(Phase::Idle, 0, "__main_void", &main_void, ())
                            .map(drop)
                    }
                })
        } else {
            self.call(Phase::Idle, 0, "_start", &start, ()).map(drop)
        };
        self.store.data_mut().in_init = false;
        result.map_err(|t| self.startup_trap("module initialization", t))
    }

    /// Creates the current plugin's root context and starts it.
    fn start_root(&mut self) -> Result<()> {
        let root = self.new_context_id();
        let state = self.store.data_mut();
        let plugin = state.current;
        state.roots[plugin].root_context_id = root;
        state.contexts.push((root, plugin));
        let cbs = Arc::clone(&self.callbacks);
        self.call(
            Phase::Root,
            root,
            "proxy_on_context_create",
            &cbs.on_context_create,
            (root as i32, 0),
        )
        .map_err(|t| self.startup_trap("proxy_on_context_create", t))?;
        let vm_config_len = self.store.data().root().meta.vm_configuration.len() as i32;
        let cbs = Arc::clone(&self.callbacks);
        let ok = self
            .call(
                Phase::Root,
                root,
                "proxy_on_vm_start",
                &cbs.on_vm_start,
                (root as i32, vm_config_len),
            )
            .map_err(|t| self.startup_trap("proxy_on_vm_start", t))?;
        if ok == Some(0) {
            return Err(Error::VmStartFailed {
                plugin: self.name().to_owned(),
                logs: self.warnings(),
            });
        }
        let config_len = self.store.data().root().meta.plugin_configuration.len() as i32;
        let cbs = Arc::clone(&self.callbacks);
        let ok = self
            .call(
                Phase::Configure,
                root,
                "proxy_on_configure",
                &cbs.on_configure,
                (root as i32, config_len),
            )
            .map_err(|t| self.startup_trap("proxy_on_configure", t))?;
        if ok == Some(0) {
            return Err(Error::ConfigureFailed {
                plugin: self.name().to_owned(),
                logs: self.warnings(),
            });
        }
        Ok(())
    }

    fn warnings(&self) -> Vec<String> {
        let state = self.store.data();
        state
            .shared
            .logs()
            .iter()
            .filter(|r| r.plugin == state.root().meta.name && r.level >= LogLevel::Warn)
            .map(|r| r.message.clone())
            .collect()
    }

    fn name(&self) -> &str {
        &self.store.data().root().meta.name
    }

    /// Allocates a context id (one counter per VM, as in Envoy).
    fn new_context_id(&mut self) -> u32 {
        let id = self.next_context_id;
        self.next_context_id += 1;
        id
    }

    /// Calls one callback with Envoy's context bookkeeping. `Ok(None)` if the module
    /// does not export it (every callback is optional). A trap fails the VM.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        phase: Phase,
        context: u32,
        name: &'static str,
        func: &Cb<P, R>,
        params: P,
    ) -> Result<Option<R>, Trap> {
        if let Some(trap) = &self.failed {
            return Err(trap.clone());
        }
        let Some(func) = func.get(&mut self.store, &self.instance) else {
            return Ok(None);
        };
        // Built only for a subscriber that wants it: even a disabled span
        // costs a good part of a short callback.
        let _span = tracing::enabled!(tracing::Level::DEBUG).then(|| self.span(name, context));
        self.call_traced(phase, context, name, func, params)
    }

    /// A `callback` span for callback `name` on `context`, entered. Out of
    /// line: the span's machinery would otherwise weigh on every call's frame.
    #[cold]
    #[inline(never)]
    fn span(&self, name: &'static str, context: u32) -> tracing::span::EnteredSpan {
        tracing::debug_span!("callback", plugin = %self.name(), name, context).entered()
    }

    /// [`VmCore::call`] inside its span, if any.
    fn call_traced<P: WasmParams, R: WasmResults>(
        &mut self,
        phase: Phase,
        context: u32,
        name: &'static str,
        func: &TypedFunc<P, R>,
        params: P,
    ) -> Result<Option<R>, Trap> {
        {
            let state = self.store.data_mut();
            state.phase = phase;
            state.active_context = context;
            state.effective_context = 0;
        }
        let result = match self.budget {
            Budget::Fuel(fuel_per_call) => {
                // Fuel was set to the budget; what is left tells what this
                // call cost.
                let result = func.call(&mut self.store, params);
                let left = self.store.get_fuel().unwrap_or(0);
                self.fuel += fuel_per_call - left;
                // The engine meters fuel, so this cannot fail.
                let _ = self.store.set_fuel(fuel_per_call);
                result
            }
            Budget::Deadline { ticks, .. } => {
                self.store.set_epoch_deadline(ticks);
                func.call(&mut self.store, params)
                    .map_err(|e| self.budget.name_deadline(e))
            }
        };
        let state = self.store.data_mut();
        state.phase = Phase::Idle;
        state.effective_context = 0;
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => Err(self.trapped(name, &e)),
        }
    }

    /// Callback `name` trapped with `error`: reports it and fails the VM.
    #[cold]
    #[inline(never)]
    fn trapped(&mut self, name: &'static str, error: &wasmtime::Error) -> Trap {
        let state = self.store.data_mut();
        let trap = Trap(format!("{error:?}"));
        let message = format!("Function: {name} failed: {}", trap.0);
        let plugin = &state.root().meta.name;
        tracing::warn!(plugin = %plugin, "{message}");
        let report = format!("{plugin}: {message}");
        state.shared.traps().push(report);
        self.failed = Some(trap.clone());
        self.failed_flag.store(true, Ordering::Release);
        trap
    }

    pub(crate) fn create_stream(&mut self, stream: u32) -> Result<(), Trap> {
        let state = self.store.data_mut();
        let root = state.root().root_context_id;
        let plugin = state.current;
        state.contexts.push((stream, plugin));
        let cbs = Arc::clone(&self.callbacks);
        self.call(
            Phase::Root,
            stream,
            "proxy_on_context_create",
            &cbs.on_context_create,
            (stream as i32, root as i32),
        )
        .map(drop)
    }

    pub(crate) fn on_request_headers(
        &mut self,
        stream: u32,
        headers: usize,
        eos: bool,
    ) -> Result<Option<i32>, Trap> {
        let cbs = Arc::clone(&self.callbacks);
        if cbs.on_request_headers_0_1.is_some() {
            let params = (stream as i32, headers as i32);
            return self.call(
                Phase::Request,
                stream,
                "proxy_on_request_headers",
                &cbs.on_request_headers_0_1,
                params,
            );
        }
        self.call(
            Phase::Request,
            stream,
            "proxy_on_request_headers",
            &cbs.on_request_headers,
            (stream as i32, headers as i32, eos as i32),
        )
    }

    pub(crate) fn on_response_headers(
        &mut self,
        stream: u32,
        headers: usize,
        eos: bool,
    ) -> Result<Option<i32>, Trap> {
        let cbs = Arc::clone(&self.callbacks);
        if cbs.on_response_headers_0_1.is_some() {
            let params = (stream as i32, headers as i32);
            return self.call(
                Phase::Response,
                stream,
                "proxy_on_response_headers",
                &cbs.on_response_headers_0_1,
                params,
            );
        }
        self.call(
            Phase::Response,
            stream,
            "proxy_on_response_headers",
            &cbs.on_response_headers,
            (stream as i32, headers as i32, eos as i32),
        )
    }

    /// The timer fired: `on_tick` on the root context.
    pub(crate) fn on_tick(&mut self) -> Result<(), Trap> {
        let root = self.store.data().root().root_context_id;
        let cbs = Arc::clone(&self.callbacks);
        self.call(
            Phase::Root,
            root,
            "proxy_on_tick",
            &cbs.on_tick,
            root as i32,
        )
        .map(drop)
    }

    /// A shared queue this VM registered has data: `on_queue_ready` on the root
    /// context that registered it, if that context still exists.
    pub(crate) fn on_queue_ready(&mut self, root: u32, token: u32) -> Result<(), Trap> {
        let state = self.store.data_mut();
        let Some(&(_, plugin)) = state.contexts.iter().find(|&&(c, _)| c == root) else {
            return Ok(());
        };
        state.current = plugin;
        let cbs = Arc::clone(&self.callbacks);
        self.call(
            Phase::Root,
            root,
            "proxy_on_queue_ready",
            &cbs.on_queue_ready,
            (root as i32, token as i32),
        )
        .map(drop)
    }

    /// Delivers a callout's answer to the root context; the response is readable
    /// only during the callback.
    pub(crate) fn on_http_call_response(
        &mut self,
        token: u32,
        headers: Fields,
        body: Vec<u8>,
    ) -> Result<Option<i32>, Trap> {
        let root = self.store.data().root().root_context_id;
        let params = (
            root as i32,
            token as i32,
            headers.len() as i32,
            body.len() as i32,
            0,
        );
        self.store.data_mut().call_response = Some(CallResponse { headers, body });
        let cbs = Arc::clone(&self.callbacks);
        let result = self.call(
            Phase::Root,
            root,
            "proxy_on_http_call_response",
            &cbs.on_http_call_response,
            params,
        );
        self.store.data_mut().call_response = None;
        result.map(|_| None)
    }

    /// A callout that failed after its response started (Envoy's `onFailure`):
    /// `on_http_call_response` with no headers, body or trailers, and
    /// `proxy_get_status` answering `BrokenConnection` / `reset` meanwhile. The
    /// code stays afterwards; the message does not (as in Envoy).
    pub(crate) fn on_http_call_failure(&mut self, token: u32) -> Result<Option<i32>, Trap> {
        let root = self.store.data().root().root_context_id;
        let grpc = &mut self.store.data_mut().root_mut().grpc;
        grpc.status_code = Status::BrokenConnection as u32;
        grpc.status_message = "reset".to_owned();
        let cbs = Arc::clone(&self.callbacks);
        let cb = &cbs.on_http_call_response;
        let result = self.call(
            Phase::Root,
            root,
            "proxy_on_http_call_response",
            cb,
            (root as i32, token as i32, 0, 0, 0),
        );
        self.store.data_mut().root_mut().grpc.status_message.clear();
        result.map(|_| None)
    }

    /// A gRPC metadata callback: the map is readable (in `map`) during the
    /// callback only.
    fn deliver_grpc_metadata(
        &mut self,
        name: &'static str,
        cb: &Cb<(i32, i32, i32), ()>,
        token: u32,
        fields: Fields,
        map: fn(&mut crate::grpc::GrpcState) -> &mut Option<Fields>,
    ) -> Result<Option<()>, Trap> {
        let root = self.store.data().root().root_context_id;
        let n = fields.len() as i32;
        *map(&mut self.store.data_mut().root_mut().grpc) = Some(fields);
        let r = self.call(Phase::Root, root, name, cb, (root as i32, token as i32, n));
        *map(&mut self.store.data_mut().root_mut().grpc) = None;
        r
    }

    /// Delivers one gRPC event to the root context, as Envoy's
    /// `onGrpc*Wrapper`s do: the metadata or message is readable during the
    /// callback only; a unary call is forgotten once its message or close was
    /// delivered, a stream once it is closed at both ends. An event whose
    /// callback the module does not export is skipped (the cleanup still runs).
    pub(crate) fn deliver_grpc(&mut self, event: Event) -> Result<(), Trap> {
        let root = self.store.data().root().root_context_id;
        let token = event.token();
        let result = match event {
            Event::InitialMetadata(_, fields) => {
                let cbs = Arc::clone(&self.callbacks);
                let cb = &cbs.on_grpc_receive_initial_metadata;
                self.deliver_grpc_metadata(
                    "proxy_on_grpc_receive_initial_metadata",
                    cb,
                    token,
                    fields,
                    |grpc| &mut grpc.initial_metadata,
                )
            }
            Event::TrailingMetadata(_, fields) => {
                let cbs = Arc::clone(&self.callbacks);
                let cb = &cbs.on_grpc_receive_trailing_metadata;
                self.deliver_grpc_metadata(
                    "proxy_on_grpc_receive_trailing_metadata",
                    cb,
                    token,
                    fields,
                    |grpc| &mut grpc.trailing_metadata,
                )
            }
            Event::Message(_, message) => {
                let cbs = Arc::clone(&self.callbacks);
                let cb = &cbs.on_grpc_receive;
                let grpc = &mut self.store.data_mut().root_mut().grpc;
                if grpc::is_call(token) {
                    grpc.record_status(token, 0);
                }
                let r = if cb.is_some() {
                    let size = message.len() as i32;
                    grpc.receive_buffer = Some(message.to_vec());
                    let r = self.call(
                        Phase::Root,
                        root,
                        "proxy_on_grpc_receive",
                        cb,
                        (root as i32, token as i32, size),
                    );
                    self.store.data_mut().root_mut().grpc.receive_buffer = None;
                    r
                } else {
                    Ok(None)
                };
                if grpc::is_call(token) {
                    self.store.data_mut().root_mut().grpc.forget(token);
                }
                r
            }
            Event::Close(_, status, message) => {
                let cbs = Arc::clone(&self.callbacks);
                let cb = &cbs.on_grpc_close;
                let grpc = &mut self.store.data_mut().root_mut().grpc;
                grpc.record_status(token, status);
                let local_closed = match grpc.streams.get_mut(&token) {
                    Some(stream) => {
                        stream.remote_closed = true;
                        stream.local_closed
                    }
                    None => false,
                };
                let r = if cb.is_some() {
                    grpc.status_code = status;
                    grpc.status_message = message;
                    let r = self.call(
                        Phase::Root,
                        root,
                        "proxy_on_grpc_close",
                        cb,
                        (root as i32, token as i32, status as i32),
                    );
                    self.store.data_mut().root_mut().grpc.status_message.clear();
                    r
                } else {
                    Ok(None)
                };
                let grpc = &mut self.store.data_mut().root_mut().grpc;
                if grpc::is_call(token) || local_closed {
                    grpc.forget(token);
                }
                r
            }
        };
        result.map(drop)
    }

    pub(crate) fn on_request_body(
        &mut self,
        stream: u32,
        size: usize,
        eos: bool,
    ) -> Result<Option<i32>, Trap> {
        let cbs = Arc::clone(&self.callbacks);
        let params = (stream as i32, size as i32, eos as i32);
        self.call(
            Phase::Request,
            stream,
            "proxy_on_request_body",
            &cbs.on_request_body,
            params,
        )
    }

    pub(crate) fn on_response_body(
        &mut self,
        stream: u32,
        size: usize,
        eos: bool,
    ) -> Result<Option<i32>, Trap> {
        let cbs = Arc::clone(&self.callbacks);
        let params = (stream as i32, size as i32, eos as i32);
        self.call(
            Phase::Response,
            stream,
            "proxy_on_response_body",
            &cbs.on_response_body,
            params,
        )
    }

    /// `on_request_trailers` with the number of trailers.
    pub(crate) fn on_request_trailers(
        &mut self,
        stream: u32,
        trailers: usize,
    ) -> Result<Option<i32>, Trap> {
        let cbs = Arc::clone(&self.callbacks);
        let params = (stream as i32, trailers as i32);
        self.call(
            Phase::Request,
            stream,
            "proxy_on_request_trailers",
            &cbs.on_request_trailers,
            params,
        )
    }

    /// `on_response_trailers` with the number of trailers.
    pub(crate) fn on_response_trailers(
        &mut self,
        stream: u32,
        trailers: usize,
    ) -> Result<Option<i32>, Trap> {
        let cbs = Arc::clone(&self.callbacks);
        let params = (stream as i32, trailers as i32);
        self.call(
            Phase::Response,
            stream,
            "proxy_on_response_trailers",
            &cbs.on_response_trailers,
            params,
        )
    }

    /// Envoy's access-log hook for a stream: `on_log`, with the final request
    /// and response headers and the response trailers readable; the maps the
    /// context still points at (its [`HeldMaps`](crate::state::HeldMaps))
    /// also take changes. The access log's maps are lent to the VM for the
    /// call and given back, with any change a held one took.
    pub(crate) fn log_stream(
        &mut self,
        stream: u32,
        request_headers: &mut Fields,
        mut response_headers: Option<&mut Fields>,
        mut response_trailers: Option<&mut Fields>,
    ) -> Result<(), Trap> {
        let state = self.store.data_mut();
        let held = state.take_held(stream);
        if self.failed.is_none() && self.callbacks.on_log.is_none() {
            // No `proxy_on_log`: nothing can read or change the maps.
            state.maps.reset();
            return Ok(());
        }
        let maps = &mut state.maps;
        maps.held = held;
        maps.request_headers = Some(std::mem::take(request_headers));
        maps.response_headers = response_headers.as_deref_mut().map(std::mem::take);
        maps.request_trailers = None;
        maps.response_trailers = response_trailers.as_deref_mut().map(std::mem::take);
        maps.trailers_addable = false;
        let cbs = Arc::clone(&self.callbacks);
        let logged = self.call(
            Phase::Log,
            stream,
            "proxy_on_log",
            &cbs.on_log,
            stream as i32,
        );
        let maps = &mut self.store.data_mut().maps;
        if let Some(request) = maps.request_headers.take() {
            *request_headers = request;
        }
        if let (Some(response), Some(out)) = (maps.response_headers.take(), response_headers) {
            *out = response;
        }
        if let (Some(trailers), Some(out)) = (maps.response_trailers.take(), response_trailers) {
            *out = trailers;
        }
        maps.reset();
        logged.map(drop)
    }

    /// A network filter's connection is over (Envoy's `onCloseTCP`): `on_done`,
    /// `on_log`, `on_delete`, each skipped once the VM has failed.
    pub(crate) fn end_connection(&mut self, connection: u32) -> Result<(), Trap> {
        let cbs = Arc::clone(&self.callbacks);
        let cb = &cbs.on_done;
        let id = connection as i32;
        self.call(Phase::Root, connection, "proxy_on_done", cb, id)?;
        let cbs = Arc::clone(&self.callbacks);
        let cb = &cbs.on_log;
        self.call(Phase::Log, connection, "proxy_on_log", cb, id)?;
        let cbs = Arc::clone(&self.callbacks);
        let cb = &cbs.on_delete;
        self.call(Phase::Root, connection, "proxy_on_delete", cb, id)?;
        self.store.data_mut().remove_context(connection);
        self.store.data_mut().maps = StreamMaps::default();
        Ok(())
    }

    /// The filter is destroyed: `on_done`, then `on_delete`.
    pub(crate) fn end_stream(&mut self, stream: u32) -> Result<(), Trap> {
        let cbs = Arc::clone(&self.callbacks);
        self.call(
            Phase::Root,
            stream,
            "proxy_on_done",
            &cbs.on_done,
            stream as i32,
        )?;
        self.call(
            Phase::Root,
            stream,
            "proxy_on_delete",
            &cbs.on_delete,
            stream as i32,
        )?;
        self.store.data_mut().remove_context(stream);
        Ok(())
    }
}
