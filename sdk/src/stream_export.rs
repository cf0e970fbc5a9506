//! Glue between a [`StreamFilter`] (and its [`Plugin`]) and the `proxy-wasm`
//! dispatcher, as `export.rs` is for HTTP filters: the adapters implement its
//! root and stream context traits, so context ids stay in here.

use std::marker::PhantomData;
use std::rc::Rc;

use proxy_wasm::traits::{Context, RootContext, StreamContext};
use proxy_wasm::types::{Action, ContextType, PeerType as RawPeerType};

use crate::export::type_name;
use crate::host;
use crate::root::{FilterKind, Root};
use crate::stream::{Connection, DownstreamData, PeerType, StreamFilter, StreamFlow, UpstreamData};
use crate::{Error, Plugin, Result};

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
        Box::new(Root::<Network<F>, P>::new(id, V::vm_start))
    });
}

/// [`Root`] creates connections of network filter `F`.
struct Network<F>(PhantomData<F>);

impl<F: StreamFilter> FilterKind for Network<F> {
    type Config = F::Config;
    type Filter = F;
}

impl<F: StreamFilter, P: Plugin<Config = F::Config>> RootContext for Root<Network<F>, P> {
    fn on_vm_start(&mut self, vm_configuration_size: usize) -> bool {
        self.vm_started(vm_configuration_size)
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        self.configured(plugin_configuration_size)
    }

    fn on_tick(&mut self) {
        self.tick();
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        self.queue_ready(queue_id);
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
