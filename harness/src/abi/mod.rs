//! The proxy-wasm ABI as Envoy implements it: one module per area, each with an
//! `add_to_linker`. Host functions copy Envoy's status codes; a bad guest pointer
//! gives `InvalidMemoryAccess`, never a host panic. Harness bugs and restricted
//! calls are traps (`Err`).

use wasmtime::{Caller, Linker};

use crate::state::HostState;

pub(crate) mod buffers;
pub(crate) mod context;
pub(crate) mod filter_state;
pub(crate) mod foreign;
pub(crate) mod grpc;
pub(crate) mod headers;
pub(crate) mod http_call;
pub(crate) mod logging;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod properties;
pub(crate) mod shared_data;
pub(crate) mod shared_queue;
pub(crate) mod signature;
pub(crate) mod streams;
pub(crate) mod time;
pub(crate) mod v0_1_0;
pub(crate) mod wasi;

/// `proxy_status_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(
    dead_code,
    reason = "the full status table; some are produced by later areas"
)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    BrokenConnection = 11,
    Unimplemented = 12,
}

/// The ABI version a module declares with its `proxy_abi_version_*` export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AbiVersion {
    /// `proxy_abi_version_0_1_0`: two-parameter headers callbacks,
    /// `proxy_get_configuration`, `proxy_continue_request`/`_response` and
    /// `proxy_clear_route_cache`; a missing header reads as an empty value.
    V0_1_0,
    /// `proxy_abi_version_0_2_0`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1`.
    V0_2_1,
}

impl AbiVersion {
    /// The export name that declares this version.
    pub fn marker(self) -> &'static str {
        match self {
            AbiVersion::V0_1_0 => "proxy_abi_version_0_1_0",
            AbiVersion::V0_2_0 => "proxy_abi_version_0_2_0",
            AbiVersion::V0_2_1 => "proxy_abi_version_0_2_1",
        }
    }
}

impl std::fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AbiVersion::V0_1_0 => "0.1.0",
            AbiVersion::V0_2_0 => "0.2.0",
            AbiVersion::V0_2_1 => "0.2.1",
        })
    }
}

/// Envoy traps any `proxy_*` call other than `proxy_log` while the module's
/// `_initialize`/`main`/`_start` runs ("restricted_callback").
pub(crate) fn check_not_in_init(
    caller: &Caller<'_, HostState>,
    name: &str,
) -> wasmtime::Result<()> {
    if caller.data().in_init {
        wasmtime::bail!("restricted_callback: {name} called during module initialization");
    }
    Ok(())
}

/// Registers a `proxy_*` host function returning a status. The body evaluates to
/// `wasmtime::Result<Status>`; the call is refused during module initialization
/// and traced with its status.
macro_rules! proxy_fn {
    ($linker:expr, $name:literal, |$caller:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {
        $linker.func_wrap(
            "env",
            $name,
            move |mut $caller: ::wasmtime::Caller<'_, $crate::state::HostState> $(, $arg: $ty)*|
                  -> ::wasmtime::Result<i32> {
                $crate::abi::check_not_in_init(&$caller, $name)?;
                $caller.data_mut().host_calls += 1;
                let status: $crate::abi::Status = $body;
                ::tracing::trace!(target: "weir_harness::hostcall", call = $name, ?status);
                Ok(status as i32)
            },
        )?
    };
}
pub(crate) use proxy_fn;

/// Adds every host function a module of version `abi` may import.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    abi: AbiVersion,
) -> wasmtime::Result<()> {
    logging::add_to_linker(linker, abi)?;
    time::add_to_linker(linker)?;
    buffers::add_to_linker(linker)?;
    headers::add_to_linker(linker, abi)?;
    streams::add_to_linker(linker, abi)?;
    if abi == AbiVersion::V0_1_0 {
        v0_1_0::add_to_linker(linker)?;
    }
    context::add_to_linker(linker)?;
    shared_data::add_to_linker(linker)?;
    shared_queue::add_to_linker(linker)?;
    foreign::add_to_linker(linker)?;
    metrics::add_to_linker(linker)?;
    properties::add_to_linker(linker)?;
    http_call::add_to_linker(linker)?;
    grpc::add_to_linker(linker)?;
    wasi::add_to_linker(linker)?;
    Ok(())
}
