//! `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`.
//!
//! Bodies are not streamed through filters yet, so body and connection buffers are
//! always "unavailable", which Envoy reports as an empty buffer on reads and
//! `BadArgument` on writes.

use wasmtime::Linker;

use super::{Status, memory, proxy_fn};
use crate::state::{HostState, Phase};

/// `proxy_buffer_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufferType {
    HttpRequestBody,
    HttpResponseBody,
    DownstreamData,
    UpstreamData,
    HttpCallResponseBody,
    GrpcReceiveBuffer,
    VmConfiguration,
    PluginConfiguration,
    CallData,
}

impl BufferType {
    fn from_raw(raw: u32) -> Option<Self> {
        use BufferType::*;
        Some(match raw {
            0 => HttpRequestBody,
            1 => HttpResponseBody,
            2 => DownstreamData,
            3 => UpstreamData,
            4 => HttpCallResponseBody,
            5 => GrpcReceiveBuffer,
            6 => VmConfiguration,
            7 => PluginConfiguration,
            8 => CallData,
            _ => return None,
        })
    }
}

/// What Envoy's `getBuffer` answers for `buffer` right now.
enum Lookup<'a> {
    Bytes(&'a [u8]),
    /// Reads give an empty result.
    Empty,
    NotFound,
}

fn lookup(state: &HostState, buffer: BufferType) -> Lookup<'_> {
    match buffer {
        BufferType::VmConfiguration => Lookup::Bytes(&state.meta.vm_configuration),
        BufferType::PluginConfiguration if state.phase == Phase::Configure => {
            Lookup::Bytes(&state.meta.plugin_configuration)
        }
        BufferType::PluginConfiguration | BufferType::HttpCallResponseBody => Lookup::NotFound,
        BufferType::HttpRequestBody
        | BufferType::HttpResponseBody
        | BufferType::DownstreamData
        | BufferType::UpstreamData
        | BufferType::GrpcReceiveBuffer
        | BufferType::CallData => Lookup::Empty,
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_get_buffer_bytes",
        |caller, kind: i32, start: i32, max: i32, ret_ptr: i32, ret_len: i32| {
            let (start, max) = (start as u32, max as u32);
            let Some(buffer) = BufferType::from_raw(kind as u32) else {
                return Ok(Status::BadArgument as i32);
            };
            let Some(end) = start.checked_add(max) else {
                return Ok(Status::BadArgument as i32);
            };
            let data = match lookup(caller.data(), buffer) {
                Lookup::NotFound => return Ok(Status::NotFound as i32),
                Lookup::Empty => Vec::new(),
                Lookup::Bytes(b) => {
                    let from = (start as usize).min(b.len());
                    let to = (end as usize).min(b.len());
                    b[from..to].to_vec()
                }
            };
            memory::status(memory::copy_out(&mut caller, &data, ret_ptr, ret_len))?
        }
    );
    proxy_fn!(
        linker,
        "proxy_set_buffer_bytes",
        |_caller, kind: i32, _start: i32, _size: i32, _ptr: i32, _len: i32| {
            // No buffer is mutable yet: bodies are unavailable and the others are
            // immutable, both BadArgument in Envoy.
            let _ = BufferType::from_raw(kind as u32);
            Status::BadArgument
        }
    );
    proxy_fn!(
        linker,
        "proxy_get_buffer_status",
        |caller, kind: i32, ret_size: i32, ret_flags: i32| {
            let Some(buffer) = BufferType::from_raw(kind as u32) else {
                return Ok(Status::BadArgument as i32);
            };
            let size = match lookup(caller.data(), buffer) {
                Lookup::Bytes(b) => b.len() as u32,
                Lookup::Empty => 0,
                Lookup::NotFound => return Ok(Status::NotFound as i32),
            };
            // Envoy never reports flags.
            let written = memory::write_u32(&mut caller, ret_size, size)
                .and_then(|()| memory::write_u32(&mut caller, ret_flags, 0));
            memory::status(written)?
        }
    );
    Ok(())
}
