//! `proxy_set_effective_context` and `proxy_done`.

use wasmtime::Linker;

use super::{Status, proxy_fn};
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(linker, "proxy_set_effective_context", |caller, id: i32| {
        let state = caller.data_mut();
        if state.has_context(id as u32) {
            state.effective_context = id as u32;
            // A network connection's buffers and stream info come with it.
            state.hold_maps_of_context(id as u32);
            Status::Ok
        } else {
            Status::BadArgument
        }
    });
    // Only a root context that returned false from on_done at shutdown may call
    // proxy_done; VM shutdown is not emulated yet, so nothing is pending.
    proxy_fn!(linker, "proxy_done", |_caller| Status::NotFound);
    Ok(())
}
