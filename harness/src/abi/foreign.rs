//! `proxy_call_foreign_function`: the functions Envoy registers for Wasm
//! modules, by name. `compress` and `uncompress` (zlib) and `clear_route_cache`
//! are emulated; Envoy's other registered functions (`set_envoy_filter_state`,
//! `declare_property`, `sign`, `verify_signature`, `expr_*`) answer
//! `Unimplemented` with a warning, so a filter that depends on one fails its
//! test loudly. Unknown names answer `NotFound`, as in Envoy.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use wasmtime::{Caller, Linker};

use super::memory::{self, Fault};
use super::{Status, proxy_fn};
use crate::state::HostState;

/// Registered in Envoy 1.40 but not emulated here.
const NOT_EMULATED: &[&str] = &[
    "set_envoy_filter_state",
    "declare_property",
    "sign",
    "verify_signature",
    "expr_create",
    "expr_evaluate",
    "expr_delete",
];

/// zlib's `compress()`: default level, zlib framing.
fn compress(args: &[u8]) -> Result<Vec<u8>, Status> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(args)
        .and_then(|()| encoder.finish())
        .map_err(|_| Status::SerializationFailure)
}

/// zlib's `uncompress()`: anything but a complete zlib stream is a
/// `SerializationFailure`.
fn uncompress(args: &[u8]) -> Result<Vec<u8>, Status> {
    let mut out = Vec::new();
    let mut decoder = ZlibDecoder::new(args);
    decoder
        .read_to_end(&mut out)
        .map_err(|_| Status::SerializationFailure)?;
    Ok(out)
}

/// Runs the function `name`: `Ok(Some(result))` for one that returns data.
fn call(name: &[u8], args: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    match name {
        b"compress" => compress(args).map(Some),
        b"uncompress" => uncompress(args).map(Some),
        // One route table, no caching in the harness: nothing to clear.
        b"clear_route_cache" => Ok(None),
        _ => {
            let name = String::from_utf8_lossy(name);
            if NOT_EMULATED.contains(&&*name) {
                tracing::warn!(
                    target: "weir_harness::hostcall",
                    function = %name,
                    "foreign function not emulated by weir-harness; answering Unimplemented"
                );
                Err(Status::Unimplemented)
            } else {
                Err(Status::NotFound)
            }
        }
    }
}

/// Returns a foreign function's result as Envoy does: allocated in the guest and
/// its address written to `ret_ptr` unless that is 0, its size to `ret_len`
/// unless that is 0.
fn write_result(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> Result<(), Fault> {
    if ret_ptr != 0 {
        let address = if data.is_empty() {
            0
        } else {
            let ptr = memory::allocate(caller, data.len())?;
            memory::write(caller, ptr, data)?;
            ptr
        };
        memory::write_u32(caller, ret_ptr, address as u32)?;
    }
    if ret_len != 0 {
        memory::write_u32(caller, ret_len, data.len() as u32)?;
    }
    Ok(())
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_call_foreign_function",
        |caller,
         name_ptr: i32,
         name_len: i32,
         args_ptr: i32,
         args_len: i32,
         ret_ptr: i32,
         ret_len: i32| {
            let result = memory::read(&mut caller, name_ptr, name_len).and_then(|name| {
                let args = memory::read(&mut caller, args_ptr, args_len)?;
                match call(&name, &args).map_err(Fault::Status)? {
                    Some(data) => write_result(&mut caller, &data, ret_ptr, ret_len),
                    None => Ok(()),
                }
            });
            memory::status(result)?
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zlib_round_trip_and_errors() {
        let text = b"hello hello hello hello";
        let packed = call(b"compress", text).expect("compress").expect("data");
        assert_eq!(packed[0], 0x78, "zlib framing");
        let unpacked = call(b"uncompress", &packed).expect("uncompress");
        assert_eq!(unpacked.as_deref(), Some(&text[..]));
        assert_eq!(
            call(b"uncompress", b"not zlib"),
            Err(Status::SerializationFailure)
        );
        assert_eq!(
            call(b"uncompress", &packed[..packed.len() - 3]),
            Err(Status::SerializationFailure),
            "a truncated stream"
        );
        assert_eq!(call(b"no_such_function", b""), Err(Status::NotFound));
        assert_eq!(call(b"declare_property", b""), Err(Status::Unimplemented));
        assert_eq!(call(b"clear_route_cache", b""), Ok(None));
    }
}
