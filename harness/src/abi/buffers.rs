//! `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`.
//!
//! A body buffer is available inside its body callback (the accumulated body
//! while the filter buffers), the gRPC receive buffer inside
//! `proxy_on_grpc_receive` (and, as in Envoy, it can be edited there), and a
//! network filter's connection buffer from its data callback until the filter
//! lets the data go. Elsewhere Envoy reports body, connection and gRPC buffers as
//! empty on reads and refuses writes with `BadArgument`.

use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{Status, proxy_fn};
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
        BufferType::HttpRequestBody if state.maps.request_body.is_some() => {
            Lookup::Bytes(state.maps.request_body.as_deref().unwrap_or_default())
        }
        BufferType::HttpResponseBody if state.maps.response_body.is_some() => {
            Lookup::Bytes(state.maps.response_body.as_deref().unwrap_or_default())
        }
        BufferType::DownstreamData if state.maps.downstream_data.is_some() => {
            Lookup::Bytes(state.maps.downstream_data.as_deref().unwrap_or_default())
        }
        BufferType::UpstreamData if state.maps.upstream_data.is_some() => {
            Lookup::Bytes(state.maps.upstream_data.as_deref().unwrap_or_default())
        }
        BufferType::HttpCallResponseBody if state.call_response.is_some() => Lookup::Bytes(
            state
                .call_response
                .as_ref()
                .map(|c| c.body.as_slice())
                .unwrap_or_default(),
        ),
        // Read through the root context: set only during on_grpc_receive.
        BufferType::GrpcReceiveBuffer if state.root().grpc.receive_buffer.is_some() => {
            Lookup::Bytes(
                state
                    .root()
                    .grpc
                    .receive_buffer
                    .as_deref()
                    .unwrap_or_default(),
            )
        }
        BufferType::VmConfiguration => Lookup::Bytes(&state.root().meta.vm_configuration),
        BufferType::PluginConfiguration if state.phase == Phase::Configure => {
            Lookup::Bytes(&state.root().meta.plugin_configuration)
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

/// Envoy's `Buffer::copyFrom` semantics: at 0, drain `size` bytes and prepend;
/// at or past the end, append; anything in between is `BadArgument`.
fn edit(body: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) -> Result<(), Fault> {
    if start == 0 {
        body.drain(..size.min(body.len()));
        body.splice(0..0, data.iter().copied());
        Ok(())
    } else if start >= body.len() {
        body.extend_from_slice(data);
        Ok(())
    } else {
        Err(Fault::Status(Status::BadArgument))
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
        |caller, kind: i32, start: i32, size: i32, ptr: i32, len: i32| {
            let result = memory::read(&mut caller, ptr, len).and_then(|data| {
                let kind = BufferType::from_raw(kind as u32);
                let state = caller.data_mut();
                if let Some(kind) = kind
                    && matches!(lookup(state, kind), Lookup::NotFound)
                {
                    return Err(Fault::Status(Status::NotFound));
                }
                let maps = &mut state.maps;
                let body = match kind {
                    Some(BufferType::HttpRequestBody) => maps.request_body.as_mut(),
                    Some(BufferType::HttpResponseBody) => maps.response_body.as_mut(),
                    // Envoy hands the received message over as a mutable buffer.
                    Some(BufferType::GrpcReceiveBuffer) => {
                        state.root_mut().grpc.receive_buffer.as_mut()
                    }
                    Some(BufferType::DownstreamData) => maps.downstream_data.as_mut(),
                    Some(BufferType::UpstreamData) => maps.upstream_data.as_mut(),
                    // Unavailable bodies, immutable buffers, unknown types.
                    _ => None,
                };
                let body = body.ok_or(Fault::Status(Status::BadArgument))?;
                edit(body, start as u32 as usize, size as u32 as usize, &data)
            });
            memory::status(result)?
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
