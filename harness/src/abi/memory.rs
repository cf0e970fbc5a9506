//! Bounds-checked access to guest memory and returning data through the guest's
//! allocator, as Envoy's host does it.

use std::sync::Arc;

use wasmtime::{Caller, Extern, Memory};

use super::Status;
use crate::state::HostState;

/// A guest-side failure that the host reports as a status, or a trap.
pub(crate) enum Fault {
    /// Report this status to the guest.
    Status(Status),
    /// Trap the VM.
    Trap(wasmtime::Error),
}

impl From<wasmtime::Error> for Fault {
    fn from(e: wasmtime::Error) -> Self {
        Fault::Trap(e)
    }
}

/// Turns a result into the status the guest sees (or a trap).
pub(crate) fn status(result: Result<(), Fault>) -> wasmtime::Result<Status> {
    match result {
        Ok(()) => Ok(Status::Ok),
        Err(Fault::Status(s)) => Ok(s),
        Err(Fault::Trap(e)) => Err(e),
    }
}

fn memory(caller: &mut Caller<'_, HostState>) -> Result<Memory, Fault> {
    if let Some(memory) = caller.data().exports.memory {
        return Ok(memory);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(Fault::Trap(wasmtime::format_err!(
            "module does not export its memory as `memory`"
        ))),
    }
}

/// Copies `len` bytes at `ptr` out of guest memory.
pub(crate) fn read(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> Result<Vec<u8>, Fault> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len == 0 {
        return Ok(Vec::new());
    }
    let mem = memory(caller)?;
    mem.data(&*caller)
        .get(ptr..)
        .and_then(|tail| tail.get(..len))
        .map(<[u8]>::to_vec)
        .ok_or(Fault::Status(Status::InvalidMemoryAccess))
}

/// The checked range of `len` bytes at `ptr` in a memory of `size` bytes
/// (the checks [`read`] makes).
fn range(size: usize, ptr: i32, len: i32) -> Result<std::ops::Range<usize>, Fault> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    if len == 0 {
        return Ok(0..0);
    }
    match ptr.checked_add(len) {
        Some(end) if end <= size => Ok(ptr..end),
        _ => Err(Fault::Status(Status::InvalidMemoryAccess)),
    }
}

/// Runs `f` on two regions of guest memory (`(ptr, len)` each, checked in
/// order as [`read`] checks them) and the host state, without copying them.
pub(crate) fn with_two<R>(
    caller: &mut Caller<'_, HostState>,
    first: (i32, i32),
    second: (i32, i32),
    f: impl FnOnce(&[u8], &[u8], &mut HostState) -> R,
) -> Result<R, Fault> {
    if first.1 == 0 && second.1 == 0 {
        return Ok(f(&[], &[], caller.data_mut()));
    }
    let mem = memory(caller)?;
    let (data, state) = mem.data_and_store_mut(&mut *caller);
    let a = range(data.len(), first.0, first.1)?;
    let b = range(data.len(), second.0, second.1)?;
    let (a, b) = (&data[a], &data[b]);
    Ok(f(a, b, state))
}

/// Runs `f` on a region of guest memory and the host state, without copying.
pub(crate) fn with_one<R>(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
    f: impl FnOnce(&[u8], &mut HostState) -> R,
) -> Result<R, Fault> {
    with_two(caller, (ptr, len), (0, 0), |a, _, state| f(a, state))
}

/// Reads a guest string; invalid UTF-8 is replaced, as Envoy takes keys as bytes.
pub(crate) fn read_string(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> Result<String, Fault> {
    Ok(String::from_utf8_lossy(&read(caller, ptr, len)?).into_owned())
}

/// Writes `bytes` at `ptr`.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    bytes: &[u8],
) -> Result<(), Fault> {
    let ptr = ptr as u32 as usize;
    let mem = memory(caller)?;
    mem.data_mut(&mut *caller)
        .get_mut(ptr..)
        .and_then(|tail| tail.get_mut(..bytes.len()))
        .map(|dst| dst.copy_from_slice(bytes))
        .ok_or(Fault::Status(Status::InvalidMemoryAccess))
}

/// Writes a little-endian `u32`.
pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    value: u32,
) -> Result<(), Fault> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64`.
pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    value: u64,
) -> Result<(), Fault> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates `size` bytes in the guest through its allocator (`malloc` first,
/// then `proxy_on_memory_allocate`, as Envoy's host looks them up).
pub(crate) fn allocate(caller: &mut Caller<'_, HostState>, size: usize) -> Result<i32, Fault> {
    let alloc = match &caller.data().exports.allocator {
        Some(alloc) => Arc::clone(alloc),
        None => Arc::new(
            ["malloc", "proxy_on_memory_allocate"]
                .iter()
                .find_map(|name| caller.get_export(name).and_then(Extern::into_func))
                .ok_or_else(|| Fault::Trap(wasmtime::format_err!("module exports no allocator")))?
                .typed::<i32, i32>(&*caller)?,
        ),
    };
    let size = i32::try_from(size).map_err(|_| Fault::Status(Status::InvalidMemoryAccess))?;
    let ptr = alloc.call(&mut *caller, size)?;
    if ptr == 0 {
        return Err(Fault::Status(Status::InvalidMemoryAccess));
    }
    Ok(ptr)
}

/// Returns `data` to the guest: allocates a copy in guest memory and writes its
/// pointer and length to the two out-params. Empty data is written as `0, 0`
/// without allocating, like Envoy.
pub(crate) fn copy_out(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> Result<(), Fault> {
    if data.is_empty() {
        write_u32(caller, ret_ptr, 0)?;
        return write_u32(caller, ret_len, 0);
    }
    let ptr = allocate(caller, data.len())?;
    write(caller, ptr, data)?;
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_len, data.len() as u32)
}
