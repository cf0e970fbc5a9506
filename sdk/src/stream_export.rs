//! Glue between a [`StreamFilter`] (and its [`Plugin`]) and the `proxy-wasm`
//! dispatcher, as `export.rs` is for HTTP filters: the adapters implement its
//! root and stream context traits, so context ids stay in here.

use std::marker::PhantomData;
use std::rc::Rc;

use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, PeerType as RawPeerType};

use crate::export::{
    accepted, root_done, root_grpc_response, root_http_response, root_tick, run_tasks, type_name,
};
use crate::host::{self, BufferType};
use crate::plugin::log_error;
use crate::stream::{Connection, DownstreamData, PeerType, StreamFilter, StreamFlow, UpstreamData};
use crate::{
    CalloutResponse, CalloutToken, Error, GrpcResponse, GrpcToken, Plugin, PluginContext, Result,
    SharedQueue,
};

/// Registers `F` (with plugin `P`) as the module's network filter. Called from
/// the module's `_initialize` by [`export_stream_filter!`](crate::export_stream_filter).
#[doc(hidden)]
pub fn register_stream_filter<F, P, V>()
where
    F: StreamFilter,
    P: Plugin<Config = F::Config>,
    V: crate::vm_config::VmStart,
{
    host::register_root_context(|id| -> Box<dyn RootContext> {
        Box::new(StreamRoot::<F, P> {
            vm_start: V::vm_start,
            config: None,
            plugin: None,
            ctx: PluginContext::for_root(id),
            _filter: PhantomData,
        })
    });
}

struct StreamRoot<F: StreamFilter, P> {
    /// Parses the VM configuration, if the filter declared a type for it.
    vm_start: fn(usize) -> Result<()>,
    config: Option<Rc<F::Config>>,
    plugin: Option<P>,
    ctx: PluginContext,
    _filter: PhantomData<F>,
}

impl<F: StreamFilter, P: Plugin<Config = F::Config>> StreamRoot<F, P> {
    fn configure(&mut self, size: usize) -> Result<()> {
        let config = Rc::new(crate::config::read_config::<F::Config>(
            BufferType::PluginConfiguration,
            size,
            "the plugin configuration",
        )?);
        self.plugin = Some(P::start(&config, &mut self.ctx)?);
        self.config = Some(config);
        run_tasks::<P>(self.ctx.root());
        Ok(())
    }

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
            run_tasks::<P>(self.ctx.root());
        }
    }
}

impl<F: StreamFilter, P: Plugin<Config = F::Config>> Context for StreamRoot<F, P> {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        num_trailers: usize,
    ) {
        if root_http_response(
            self.ctx.root(),
            token_id,
            num_headers,
            body_size,
            num_trailers,
        ) {
            return;
        }
        let response = CalloutResponse::new(num_headers, body_size, num_trailers);
        self.with_plugin("callout response", |plugin, ctx| {
            plugin.on_callout_response(CalloutToken(token_id), &response, ctx)
        });
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if root_grpc_response(self.ctx.root(), token_id, status_code, response_size) {
            return;
        }
        let response = GrpcResponse::new(status_code, response_size);
        self.with_plugin("gRPC response", |plugin, ctx| {
            plugin.on_grpc_response(GrpcToken(token_id), &response, ctx)
        });
    }

    fn on_done(&mut self) -> bool {
        root_done(&self.ctx, P::ACTIVE);
        true
    }
}

impl<F: StreamFilter, P: Plugin<Config = F::Config>> RootContext for StreamRoot<F, P> {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        accepted::<F>("VM configuration: ", (self.vm_start)(vm_configuration_size))
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        accepted::<F>("", self.configure(plugin_configuration_size))
    }

    fn on_tick(&mut self) {
        for timer in root_tick(&mut self.ctx, P::ACTIVE && self.plugin.is_some()) {
            self.with_plugin("timer", |plugin, ctx| plugin.on_timer(timer, ctx));
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        self.with_plugin("queue", |plugin, ctx| {
            plugin.on_queue_ready(SharedQueue(queue_id), ctx)
        });
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Conn {
            filter: self.config.as_ref().map(|c| F::new(Rc::clone(c))),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::StreamContext)
    }
}

struct Conn<F> {
    /// `None` if the plugin was never configured successfully.
    filter: Option<F>,
}

/// Turns a callback's result into the dispatcher's action. An error is logged
/// and closes the connection; the data goes no further.
#[inline]
fn finish<F>(result: Result<StreamFlow>) -> Action {
    match result {
        Ok(StreamFlow::Continue) => Action::Continue,
        Ok(StreamFlow::Pause) => Action::Pause,
        Err(e) => failed::<F>(&e),
    }
}

#[cold]
#[inline(never)]
fn failed<F>(e: &Error) -> Action {
    log::error!("{}: {e}", type_name::<F>());
    close();
    Action::Pause
}

#[cold]
#[inline(never)]
fn unconfigured<F>() -> Action {
    log::error!(
        "{}: connection started without a valid configuration",
        type_name::<F>()
    );
    close();
    Action::Pause
}

fn close() {
    if let Err(e) = Connection::new().close() {
        log::error!("cannot close the connection: {e}");
    }
}

impl<F: StreamFilter> Context for Conn<F> {}

impl<F: StreamFilter> StreamContext for Conn<F> {
    fn on_new_connection(&mut self) -> Action {
        let Some(filter) = self.filter.as_mut() else {
            return unconfigured::<F>();
        };
        finish::<F>(filter.on_new_connection(&mut Connection::new()))
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.as_mut() else {
            return Action::Pause;
        };
        finish::<F>(filter.on_downstream_data(&mut DownstreamData::new(data_size, end_of_stream)))
    }

    fn on_downstream_close(&mut self, peer_type: RawPeerType) {
        if let Some(filter) = self.filter.as_mut() {
            filter.on_downstream_close(PeerType::from_raw(peer_type));
        }
    }

    fn on_upstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.as_mut() else {
            return Action::Pause;
        };
        finish::<F>(filter.on_upstream_data(&mut UpstreamData::new(data_size, end_of_stream)))
    }

    fn on_upstream_close(&mut self, peer_type: RawPeerType) {
        if let Some(filter) = self.filter.as_mut() {
            filter.on_upstream_close(PeerType::from_raw(peer_type));
        }
    }

    /// Envoy ends a connection with `on_done`, `on_log`, `on_delete`; as for
    /// HTTP streams, the filter's `on_done` runs in the access-log hook.
    fn on_log(&mut self) {
        if let Some(filter) = self.filter.as_mut() {
            filter.on_done();
        }
    }
}
