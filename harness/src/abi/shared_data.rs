//! `proxy_get_shared_data` and `proxy_set_shared_data`: one store per emulated
//! Envoy process, namespaced by `vm_id`, with Envoy's CAS rules.

use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{Status, proxy_fn};
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_get_shared_data",
        |caller, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_len: i32, ret_cas: i32| {
            let result = memory::read(&mut caller, key_ptr, key_len).and_then(|key| {
                let state = caller.data();
                let entry = state.shared.data().get(&state.root().meta.vm_id, &key);
                let (value, cas) = entry.ok_or(Fault::Status(Status::NotFound))?;
                memory::copy_out(&mut caller, &value, ret_ptr, ret_len)?;
                memory::write_u32(&mut caller, ret_cas, cas)
            });
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_set_shared_data",
        |caller, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32, cas: i32| {
            let result = memory::read(&mut caller, key_ptr, key_len).and_then(|key| {
                let value = memory::read(&mut caller, val_ptr, val_len)?;
                let state = caller.data();
                state
                    .shared
                    .data()
                    .set(&state.root().meta.vm_id, &key, value, cas as u32)
                    .map_err(|_| Fault::Status(Status::CasMismatch))
            });
            memory::status(result)?
        }
    );
    Ok(())
}
