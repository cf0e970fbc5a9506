//! Shared queues: `proxy_register_shared_queue`, `proxy_resolve_shared_queue`,
//! `proxy_enqueue_shared_queue` and `proxy_dequeue_shared_queue`. Queues are
//! process-wide and keyed by `vm_id`; an enqueue posts `on_queue_ready` to the
//! root context that registered the queue last, delivered by the chain after the
//! current event, as Envoy posts it to that worker's dispatcher.

use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{Status, proxy_fn};
use crate::shared::{QueueError, QueueTarget};
use crate::state::HostState;

fn fault(e: QueueError) -> Fault {
    Fault::Status(match e {
        QueueError::NotFound => Status::NotFound,
        QueueError::Empty => Status::Empty,
    })
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_register_shared_queue",
        |caller, name_ptr: i32, name_len: i32, ret_token: i32| {
            let result = memory::read(&mut caller, name_ptr, name_len).and_then(|name| {
                let state = caller.data();
                // A stream context registers on behalf of its root: on_queue_ready
                // always goes to a root context.
                let target = QueueTarget {
                    vm: state.vm_key,
                    root_context: state.root().root_context_id,
                };
                let token = state
                    .shared
                    .queues()
                    .register(&state.root().meta.vm_id, &name, target);
                memory::write_u32(&mut caller, ret_token, token)
            });
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_resolve_shared_queue",
        |caller, vm_ptr: i32, vm_len: i32, name_ptr: i32, name_len: i32, ret_token: i32| {
            let result = memory::read(&mut caller, vm_ptr, vm_len).and_then(|vm_id| {
                let name = memory::read(&mut caller, name_ptr, name_len)?;
                let state = caller.data();
                // An empty vm_id means the caller's own.
                let vm_id = if vm_id.is_empty() {
                    state.root().meta.vm_id.clone()
                } else {
                    String::from_utf8_lossy(&vm_id).into_owned()
                };
                let token = state.shared.queues().resolve(&vm_id, &name);
                let token = token.ok_or(Fault::Status(Status::NotFound))?;
                memory::write_u32(&mut caller, ret_token, token)
            });
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_enqueue_shared_queue",
        |caller, token: i32, data_ptr: i32, data_len: i32| {
            let result = memory::read(&mut caller, data_ptr, data_len).and_then(|data| {
                let state = caller.data();
                let mut queues = state.shared.queues();
                queues.enqueue(token as u32, data).map_err(fault)
            });
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_dequeue_shared_queue",
        |caller, token: i32, ret_ptr: i32, ret_len: i32| {
            let item = caller.data().shared.queues().dequeue(token as u32);
            let result = item
                .map_err(fault)
                .and_then(|item| memory::copy_out(&mut caller, &item, ret_ptr, ret_len));
            memory::status(result)?
        }
    );
    Ok(())
}
