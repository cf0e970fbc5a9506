//! Stream control: `proxy_continue_stream`, `proxy_close_stream` (ABI 0.2.x;
//! 0.1.0 modules get `proxy_continue_request`/`_response` from
//! [`super::v0_1_0`]), `proxy_send_local_response`, `proxy_get_status`. Like
//! Envoy, every action is deferred until the current callback returns.

use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{AbiVersion, Status, proxy_fn};
use crate::fields::{Fields, Kind};
use crate::state::{HostState, LocalReplyRequest};

const STREAM_REQUEST: u32 = 0;
const STREAM_RESPONSE: u32 = 1;
const STREAM_DOWNSTREAM: u32 = 2;
const STREAM_UPSTREAM: u32 = 3;

/// `proxy_continue_stream` and `proxy_close_stream`, which Envoy links for ABI
/// 0.2.x only.
fn add_stream_control(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(linker, "proxy_continue_stream", |caller, kind: i32| {
        let state = caller.data_mut();
        match kind as u32 {
            STREAM_REQUEST => {
                state.defer().continue_request = true;
                Status::Ok
            }
            STREAM_RESPONSE => {
                state.defer().continue_response = true;
                Status::Ok
            }
            // Envoy defers continueReading (a no-op outside network filters)
            // with the other after-call actions, in order: one asked after
            // a close finds the connection closed and does nothing.
            STREAM_DOWNSTREAM => {
                let context = state.current_context();
                let deferred = state.defer();
                if deferred.close_connection.is_none() {
                    deferred.continue_downstream = Some(context);
                }
                Status::Ok
            }
            STREAM_UPSTREAM => Status::Unimplemented,
            _ => Status::BadArgument,
        }
    });
    // Request/Response reset the HTTP stream. Downstream/Upstream answer OK and,
    // measured in Envoy 1.40, leave an HTTP stream's response untouched; in a
    // network filter both close the downstream connection (the write filter
    // callbacks' connection is the downstream one too).
    proxy_fn!(linker, "proxy_close_stream", |caller, kind: i32| {
        match kind as u32 {
            STREAM_REQUEST | STREAM_RESPONSE => {
                caller.data_mut().defer().close_stream = true;
                Status::Ok
            }
            STREAM_DOWNSTREAM | STREAM_UPSTREAM => {
                let state = caller.data_mut();
                let context = state.current_context();
                state.defer().close_connection = Some(context);
                Status::Ok
            }
            _ => Status::BadArgument,
        }
    });
    Ok(())
}

pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    abi: AbiVersion,
) -> wasmtime::Result<()> {
    if abi != AbiVersion::V0_1_0 {
        add_stream_control(linker)?;
    }
    proxy_fn!(
        linker,
        "proxy_send_local_response",
        |caller,
         status_code: i32,
         details_ptr: i32,
         details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         grpc_status: i32| {
            let result = (|| -> Result<(), Fault> {
                let details = memory::read_string(&mut caller, details_ptr, details_len)?;
                let body = memory::read(&mut caller, body_ptr, body_len)?;
                let headers = memory::read(&mut caller, headers_ptr, headers_len)?;
                let state = caller.data_mut();
                // Without a stream (a root context) Envoy has no decoder callbacks: a no-op.
                if state.in_stream() {
                    state.defer().local_reply = Some(LocalReplyRequest {
                        status: status_code as u32,
                        details: details.replace(char::is_whitespace, "_"),
                        body,
                        headers: Fields::deserialize(&headers, Kind::Plain),
                        grpc_status,
                    });
                }
                Ok(())
            })();
            memory::status(result)?
        }
    );
    // The root context's status: set by on_grpc_close and by a failed HTTP
    // callout (the code stays, the message lasts for the callback).
    proxy_fn!(
        linker,
        "proxy_get_status",
        |caller, code_ptr: i32, msg_ptr: i32, msg_len: i32| {
            let grpc = &caller.data().root().grpc;
            let (code, message) = (grpc.status_code, grpc.status_message.clone().into_bytes());
            let result = memory::write_u32(&mut caller, code_ptr, code)
                .and_then(|()| memory::copy_out(&mut caller, &message, msg_ptr, msg_len));
            memory::status(result)?
        }
    );
    Ok(())
}
