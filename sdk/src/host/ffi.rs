//! The proxy-wasm host functions, declared here so that every status reaches the
//! caller (the `proxy-wasm` crate's wrappers panic on statuses they do not expect).

#![allow(
    unsafe_code,
    reason = "the proxy-wasm ABI is a C ABI over raw guest pointers"
)]

use std::ptr::null_mut;

use super::{BufferType, MapType, MetricKind, Status};

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_set_header_map_pairs(map_type: u32, map_data: *const u8, map_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_register_shared_queue(
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_resolve_shared_queue(
        vm_id_data: *const u8,
        vm_id_size: usize,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_dequeue_shared_queue(
        queue_id: u32,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_enqueue_shared_queue(queue_id: u32, value_data: *const u8, value_size: usize) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_grpc_send(token: u32, message_data: *const u8, message_size: usize, end: u32) -> u32;
    fn proxy_grpc_close(token: u32) -> u32;
    fn proxy_grpc_cancel(token: u32) -> u32;
    fn proxy_get_status(
        return_code: *mut u32,
        return_message_data: *mut *mut u8,
        return_message_size: *mut usize,
    ) -> u32;
    fn proxy_call_foreign_function(
        function_name_data: *const u8,
        function_name_size: usize,
        arguments_data: *const u8,
        arguments_size: usize,
        results_data: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_get_metric(metric_id: u32, return_value: *mut u64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

#[inline]
fn check(status: u32) -> Result<(), Status> {
    match Status(status) {
        Status::OK => Ok(()),
        other => Err(other),
    }
}

/// Takes ownership of bytes the host allocated in guest memory.
fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated exactly `len` bytes at `ptr` through the guest
    // allocator (`proxy_on_memory_allocate`, a boxed `[u8]` of that size) and handed
    // ownership to us.
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

/// Runs a host call that returns bytes: `Ok` → `Some`, `NotFound` → `None`.
#[inline]
fn bytes_or_none(
    call: impl FnOnce(*mut *mut u8, *mut usize) -> u32,
) -> Result<Option<Vec<u8>>, Status> {
    let mut ptr = null_mut();
    let mut len = 0;
    match Status(call(&mut ptr, &mut len)) {
        Status::OK => Ok(Some(take(ptr, len))),
        Status::NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

pub(crate) fn log_level() -> Result<u32, Status> {
    let mut level = 0;
    // SAFETY: the out-param is valid for writes.
    check(unsafe { proxy_get_log_level(&mut level) })?;
    Ok(level)
}

pub(crate) fn current_time_nanos() -> Result<u64, Status> {
    let mut nanos = 0;
    // SAFETY: the out-param is valid for writes.
    check(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

pub(crate) fn set_tick_period(millis: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_tick_period_milliseconds(millis) })
}

#[inline]
pub(crate) fn get_map_value(map: MapType, key: &str) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: key points at `key.len()` readable bytes; the out-params are valid.
    bytes_or_none(|ptr, len| unsafe {
        proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), ptr, len)
    })
}

pub(crate) fn get_map_pairs(map: MapType) -> Result<Vec<u8>, Status> {
    let mut ptr = null_mut();
    let mut len = 0;
    // SAFETY: the out-params are valid for writes.
    check(unsafe { proxy_get_header_map_pairs(map as u32, &mut ptr, &mut len) })?;
    Ok(take(ptr, len))
}

pub(crate) fn set_map_pairs(map: MapType, serialized: &[u8]) -> Result<(), Status> {
    // SAFETY: the slice is valid for reads for its length.
    check(unsafe { proxy_set_header_map_pairs(map as u32, serialized.as_ptr(), serialized.len()) })
}

#[inline]
pub(crate) fn add_map_value(map: MapType, key: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for reads for their lengths.
    check(unsafe {
        proxy_add_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

#[inline]
pub(crate) fn replace_map_value(map: MapType, key: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for reads for their lengths.
    check(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

#[inline]
pub(crate) fn remove_map_value(map: MapType, key: &str) -> Result<(), Status> {
    // SAFETY: key is valid for reads for its length.
    check(unsafe { proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()) })
}

#[inline]
pub(crate) fn get_buffer(
    buffer: BufferType,
    start: usize,
    max: usize,
) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: the out-params are valid for writes.
    bytes_or_none(|ptr, len| unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, ptr, len) })
}

#[inline]
pub(crate) fn set_buffer(
    buffer: BufferType,
    start: usize,
    size: usize,
    data: &[u8],
) -> Result<(), Status> {
    // SAFETY: data is valid for reads for its length.
    check(unsafe { proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len()) })
}

pub(crate) fn get_property(path: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    // SAFETY: path is valid for reads; the out-params are valid for writes.
    bytes_or_none(|ptr, len| unsafe { proxy_get_property(path.as_ptr(), path.len(), ptr, len) })
}

pub(crate) fn set_property(path: &[u8], value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are valid for reads for their lengths.
    check(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

pub(crate) fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, u32), Status> {
    let mut cas = 0;
    // SAFETY: key is valid for reads; the out-params are valid for writes.
    let value = bytes_or_none(|ptr, len| unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), ptr, len, &mut cas)
    })?;
    Ok((value, cas))
}

pub(crate) fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: both slices are valid for reads for their lengths.
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

pub(crate) fn register_queue(name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: name is valid for reads; the out-param is valid for writes.
    check(unsafe { proxy_register_shared_queue(name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub(crate) fn resolve_queue(vm_id: &str, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: both slices are valid for reads; the out-param is valid for writes.
    check(unsafe {
        proxy_resolve_shared_queue(
            vm_id.as_ptr(),
            vm_id.len(),
            name.as_ptr(),
            name.len(),
            &mut id,
        )
    })?;
    Ok(id)
}

pub(crate) fn enqueue(queue: u32, value: &[u8]) -> Result<(), Status> {
    // SAFETY: value is valid for reads for its length.
    check(unsafe { proxy_enqueue_shared_queue(queue, value.as_ptr(), value.len()) })
}

/// `Ok(None)` when the queue is empty.
pub(crate) fn dequeue(queue: u32) -> Result<Option<Vec<u8>>, Status> {
    let mut ptr = null_mut();
    let mut len = 0;
    // SAFETY: the out-params are valid for writes.
    match Status(unsafe { proxy_dequeue_shared_queue(queue, &mut ptr, &mut len) }) {
        Status::OK => Ok(Some(take(ptr, len))),
        Status::EMPTY => Ok(None),
        other => Err(other),
    }
}

#[inline]
pub(crate) fn continue_stream(stream: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_continue_stream(stream) })
}

/// Makes `context` the one later host calls of this callback act on (a task of
/// another context runs).
pub(crate) fn set_effective_context(context: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_set_effective_context(context) })
}

pub(crate) fn close_stream(stream: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_close_stream(stream) })
}

pub(crate) fn send_local_response(
    status: u32,
    details: &str,
    body: &[u8],
    headers: &[u8],
    grpc_status: i32,
) -> Result<(), Status> {
    // SAFETY: all slices are valid for reads for their lengths.
    check(unsafe {
        proxy_send_local_response(
            status,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            grpc_status,
        )
    })
}

/// The gRPC status code and message of the call being answered.
pub(crate) fn grpc_status() -> Result<(u32, Vec<u8>), Status> {
    let mut code = 0;
    let mut ptr = null_mut();
    let mut len = 0;
    // SAFETY: the out-params are valid for writes.
    check(unsafe { proxy_get_status(&mut code, &mut ptr, &mut len) })?;
    Ok((code, take(ptr, len)))
}

pub(crate) fn call_foreign(name: &str, argument: &[u8]) -> Result<Vec<u8>, Status> {
    let mut ptr = null_mut();
    let mut len = 0;
    // SAFETY: both slices are valid for reads; the out-params are valid for writes.
    check(unsafe {
        proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            argument.as_ptr(),
            argument.len(),
            &mut ptr,
            &mut len,
        )
    })?;
    Ok(take(ptr, len))
}

pub(crate) fn define_metric(kind: MetricKind, name: &str) -> Result<u32, Status> {
    let mut id = 0;
    // SAFETY: name is valid for reads; the out-param is valid for writes.
    check(unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub(crate) fn get_metric(id: u32) -> Result<u64, Status> {
    let mut value = 0;
    // SAFETY: the out-param is valid for writes.
    check(unsafe { proxy_get_metric(id, &mut value) })?;
    Ok(value)
}

pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_record_metric(id, value) })
}

pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_increment_metric(id, offset) })
}

/// Dispatches an HTTP callout through `proxy-wasm`, which records which context
/// made it so that the answer reaches the same context. Envoy answers `Ok`,
/// `BadArgument` or `InternalFailure`, which `proxy-wasm` returns as errors.
pub(crate) fn dispatch_http_call(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<u32, Status> {
    proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, body, Vec::new(), timeout)
        .map_err(|s| Status(s as u32))
}

/// Starts a unary gRPC call through `proxy-wasm` (which records the token). Envoy
/// answers `ParseFailure` for an unknown cluster and `InternalFailure` when the
/// call cannot be sent.
pub(crate) fn grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    metadata: Vec<(&str, &[u8])>,
    message: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<u32, Status> {
    proxy_wasm::hostcalls::dispatch_grpc_call(cluster, service, method, metadata, message, timeout)
        .map_err(|s| Status(s as u32))
}

/// Opens a gRPC stream through `proxy-wasm` (which records the token). Envoy
/// answers `ParseFailure` for an unknown cluster.
pub(crate) fn grpc_stream(
    cluster: &str,
    service: &str,
    method: &str,
    metadata: Vec<(&str, &[u8])>,
) -> Result<u32, Status> {
    proxy_wasm::hostcalls::open_grpc_stream(cluster, service, method, metadata)
        .map_err(|s| Status(s as u32))
}

/// Sends a message on a gRPC stream (`end` half-closes it).
pub(crate) fn grpc_send(token: u32, message: &[u8], end: bool) -> Result<(), Status> {
    // SAFETY: the slice is valid for reads for its length.
    check(unsafe { proxy_grpc_send(token, message.as_ptr(), message.len(), u32::from(end)) })
}

/// Half-closes a gRPC stream (or cancels a call).
pub(crate) fn grpc_close(token: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_grpc_close(token) })
}

/// Resets a gRPC stream or cancels a call.
pub(crate) fn grpc_cancel(token: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    check(unsafe { proxy_grpc_cancel(token) })
}
