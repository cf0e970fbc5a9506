//! The ABI area the harness does not emulate yet: gRPC callouts.
//!
//! They are linked with their exact signatures, so modules that import them load
//! (as in Envoy), and every call answers `Unimplemented` with a warning. A filter
//! that depends on one of them fails its test loudly instead of passing by luck.

use wasmtime::{FuncType, Linker, Val, ValType};

use super::{Status, check_not_in_init};
use crate::state::HostState;

const I: ValType = ValType::I32;

/// `(name, parameter types)`; every one returns an `i32` status.
const PENDING: &[(&str, &[ValType])] = &[
    ("proxy_grpc_call", &[I, I, I, I, I, I, I, I, I, I, I, I]),
    ("proxy_grpc_stream", &[I, I, I, I, I, I, I, I, I]),
    ("proxy_grpc_send", &[I, I, I, I]),
    ("proxy_grpc_cancel", &[I]),
    ("proxy_grpc_close", &[I]),
];

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for &(name, params) in PENDING {
        let ty = FuncType::new(linker.engine(), params.iter().cloned(), [I]);
        linker.func_new("env", name, ty, move |mut caller, _params, results| {
            check_not_in_init(&caller, name)?;
            caller.data_mut().host_calls += 1;
            tracing::warn!(
                target: "weir_harness::hostcall",
                call = name,
                plugin = %caller.data().meta.name,
                "not emulated by weir-harness yet; answering Unimplemented"
            );
            results[0] = Val::I32(Status::Unimplemented as i32);
            Ok(())
        })?;
    }
    Ok(())
}
