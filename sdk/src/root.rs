//! The root context of a module, shared by HTTP filters (`export.rs`) and
//! network filters (`stream_export.rs`): it parses the configuration, starts
//! the [`Plugin`] and hands it the root-context callbacks (callout and gRPC
//! answers, gRPC stream events, timers, queues). Only what it creates for each
//! stream differs by [`FilterKind`].

use std::marker::PhantomData;
use std::rc::Rc;

use proxy_wasm::traits::Context;
use serde::de::DeserializeOwned;

use crate::export::type_name;
use crate::host::BufferType;
use crate::plugin::log_error;
use crate::runtime;
use crate::{
    CalloutResponse, CalloutToken, GrpcResponse, GrpcStream, GrpcStreamEvent, GrpcToken, Plugin,
    PluginContext, Result, SharedQueue, Timer,
};

/// What a root context creates streams for: an HTTP filter or a network
/// filter. The filter's configuration is the plugin's.
pub(crate) trait FilterKind: 'static {
    /// The filter's configuration.
    type Config: DeserializeOwned + 'static;
    /// The filter, named in log lines.
    type Filter;
}

/// A module's root context: its plugin `P` and the configuration the streams
/// of kind `K` share.
pub(crate) struct Root<K: FilterKind, P> {
    /// Parses the VM configuration, if the filter declared a type for it.
    vm_start: fn(usize) -> Result<()>,
    /// `None` until `on_configure` succeeded.
    pub(crate) config: Option<Rc<K::Config>>,
    plugin: Option<P>,
    pub(crate) ctx: PluginContext,
    _kind: PhantomData<K>,
}

impl<K: FilterKind, P: Plugin<Config = K::Config>> Root<K, P> {
    /// The root context `id`, before `on_vm_start`.
    pub(crate) fn new(id: u32, vm_start: fn(usize) -> Result<()>) -> Self {
        Self {
            vm_start,
            config: None,
            plugin: None,
            ctx: PluginContext::for_root(id),
            _kind: PhantomData,
        }
    }

    /// `on_vm_start`: parses the VM configuration, if the filter has a type for it.
    pub(crate) fn vm_started(&mut self, size: usize) -> bool {
        accepted::<K::Filter>("VM configuration: ", (self.vm_start)(size))
    }

    /// `on_configure`: parses the plugin configuration and starts the plugin.
    pub(crate) fn configured(&mut self, size: usize) -> bool {
        accepted::<K::Filter>("", self.configure(size))
    }

    fn configure(&mut self, size: usize) -> Result<()> {
        let config = Rc::new(crate::config::read_config::<K::Config>(
            BufferType::PluginConfiguration,
            size,
            "the plugin configuration",
        )?);
        self.plugin = Some(P::start(&config, &mut self.ctx)?);
        self.config = Some(config);
        run_tasks::<P>(self.ctx.root());
        Ok(())
    }

    /// `on_tick`: the sleeps of tasks that are due, then the plugin's timers.
    pub(crate) fn tick(&mut self) {
        for timer in root_tick(&mut self.ctx, P::ACTIVE && self.plugin.is_some()) {
            self.with_plugin("timer", |plugin, ctx| plugin.on_timer(timer, ctx));
        }
    }

    /// `on_queue_ready`.
    pub(crate) fn queue_ready(&mut self, queue: u32) {
        self.with_plugin("queue", |plugin, ctx| {
            plugin.on_queue_ready(SharedQueue(queue), ctx)
        });
    }

    /// Runs a plugin callback, if the filter has a plugin and it started; errors
    /// are logged (there is no request to answer). `P::ACTIVE` is a constant, so
    /// filters without a plugin carry none of this code.
    fn with_plugin(
        &mut self,
        what: &str,
        callback: impl FnOnce(&mut P, &mut PluginContext) -> Result<()>,
    ) {
        if !P::ACTIVE {
            return;
        }
        if let Some(plugin) = self.plugin.as_mut() {
            log_error::<P>(what, callback(plugin, &mut self.ctx));
            // Tasks the callback spawned start now.
            run_tasks::<P>(self.ctx.root());
        }
    }

    fn grpc_stream(&mut self, token: u32, event: GrpcStreamEvent) {
        self.with_plugin("gRPC stream", |plugin, ctx| {
            plugin.on_grpc_stream(GrpcStream(token), &event, ctx)
        });
    }
}

impl<K: FilterKind, P: Plugin<Config = K::Config>> Context for Root<K, P> {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        // Answers a task awaits go to the task executor first.
        let root = self.ctx.root();
        if runtime::hooks().is_some_and(|h| {
            (h.http_response)(root, token_id, num_headers, body_size, num_trailers)
        }) {
            return;
        }
        let response = CalloutResponse::new(num_headers, body_size, num_trailers);
        self.with_plugin("callout response", |plugin, ctx| {
            plugin.on_callout_response(CalloutToken(token_id), &response, ctx)
        });
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let root = self.ctx.root();
        if runtime::hooks()
            .is_some_and(|h| (h.grpc_response)(root, token_id, status_code, response_size))
        {
            return;
        }
        let response = GrpcResponse::new(status_code, response_size);
        self.with_plugin("gRPC response", |plugin, ctx| {
            plugin.on_grpc_response(GrpcToken(token_id), &response, ctx)
        });
    }

    /// The plugin is going away: its tasks and timers with it.
    fn on_done(&mut self) -> bool {
        if P::ACTIVE {
            crate::clock::remove(self.ctx.root());
        }
        if let Some(hooks) = runtime::hooks() {
            (hooks.end)(self.ctx.root());
        }
        true
    }

    fn on_grpc_stream_initial_metadata(&mut self, token_id: u32, num_elements: u32) {
        self.grpc_stream(
            token_id,
            GrpcStreamEvent::InitialMetadata(num_elements as usize),
        );
    }

    fn on_grpc_stream_message(&mut self, token_id: u32, message_size: usize) {
        self.grpc_stream(token_id, GrpcStreamEvent::Message(message_size));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, token_id: u32, num_elements: u32) {
        self.grpc_stream(
            token_id,
            GrpcStreamEvent::TrailingMetadata(num_elements as usize),
        );
    }

    fn on_grpc_stream_close(&mut self, token_id: u32, status_code: u32) {
        self.grpc_stream(token_id, GrpcStreamEvent::Closed(status_code));
    }
}

/// What `on_vm_start` / `on_configure` answer Envoy: true, or false with the
/// error logged after the filter's name and `what`.
fn accepted<F>(what: &str, result: Result<()>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) => {
            log::error!("{}: {what}{e}", type_name::<F>());
            false
        }
    }
}

/// After a callback of plugin `P` in root context `root`: polls the tasks it
/// spawned or woke, if the module has tasks at all.
#[inline]
fn run_tasks<P>(root: u32) {
    if let Some(hooks) = runtime::hooks() {
        // For the log lines of its tasks.
        (hooks.name)(root, type_name::<P>());
        (hooks.run)(root);
    }
}

/// The plugin's tick: wakes the sleeps that are due and runs their tasks, then
/// returns the plugin timers that are due (none unless `active`). Inlined so
/// that `active` is a constant: a module without plugin timers or tasks
/// carries no timer code.
#[inline(always)]
fn root_tick(ctx: &mut PluginContext, active: bool) -> Vec<Timer> {
    if active {
        let timers = ctx.due();
        if let Some(hooks) = runtime::hooks() {
            (hooks.run)(ctx.root());
        }
        timers
    } else {
        if let Some(hooks) = runtime::hooks() {
            (hooks.tick)(ctx.root());
        }
        Vec::new()
    }
}
