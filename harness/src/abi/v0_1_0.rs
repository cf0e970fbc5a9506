//! The host functions Envoy links only for ABI 0.1.0 modules:
//! `proxy_get_configuration`, `proxy_continue_request`, `proxy_continue_response`
//! and `proxy_clear_route_cache`. (0.2.x modules read their configuration as a
//! buffer and use `proxy_continue_stream`; a 0.1.0 module importing those fails
//! to link, as in Envoy.)

use wasmtime::Linker;

use super::memory;
use super::{Status, proxy_fn};
use crate::state::{HostState, Phase};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    // Envoy answers the plugin configuration while the plugin is being
    // configured, and the VM configuration at any other time.
    proxy_fn!(
        linker,
        "proxy_get_configuration",
        |caller, ret_ptr: i32, ret_len: i32| {
            let state = caller.data();
            let config = if state.phase == Phase::Configure {
                state.root().meta.plugin_configuration.clone()
            } else {
                state.root().meta.vm_configuration.clone()
            };
            memory::status(memory::copy_out(&mut caller, &config, ret_ptr, ret_len))?
        }
    );
    // What `proxy_continue_stream(HttpRequest | HttpResponse)` does in 0.2.x:
    // resume once the current callback returns.
    proxy_fn!(linker, "proxy_continue_request", |caller| {
        caller.data_mut().defer().continue_request = true;
        Status::Ok
    });
    proxy_fn!(linker, "proxy_continue_response", |caller| {
        caller.data_mut().defer().continue_response = true;
        Status::Ok
    });
    // The harness has one route per chain, so there is no cache to clear.
    proxy_fn!(linker, "proxy_clear_route_cache", |_caller| Status::Ok);
    Ok(())
}
