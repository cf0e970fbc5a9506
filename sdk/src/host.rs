//! The only place that talks to the proxy-wasm host.
//!
//! `proxy_wasm::hostcalls` panics on any status it does not expect (for example
//! `BadArgument` when headers are touched outside their callback), which traps the
//! VM in Envoy. The calls below are therefore declared here and every status is
//! returned to the caller as a [`Status`]. The registration and dispatch plumbing
//! (`main!`, the context dispatcher, the allocator and the `log` backend) still come
//! from the `proxy-wasm` crate.
//!
//! Memory returned by the host was allocated through the guest allocator exported by
//! `proxy-wasm` (`proxy_on_memory_allocate`, a boxed `[u8]`), so it is taken back
//! with `Vec::from_raw_parts(ptr, len, len)`.

use std::fmt;

/// A proxy-wasm status code as returned by the host (`proxy_status_t`).
///
/// Kept as a raw `u32` so that any value a host returns (including ones the
/// `proxy-wasm` crate has no variant for, such as 6 and 12) is representable.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) const OK: Status = Status(0);
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) const NOT_FOUND: Status = Status(1);
    /// Returned by these stubs when not running inside a proxy-wasm host.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) const UNIMPLEMENTED: Status = Status(12);

    /// The spec name of the status.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "Ok",
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            5 => "BadExpression",
            6 => "InvalidMemoryAccess",
            7 => "Empty",
            8 => "CasMismatch",
            9 => "ResultMismatch",
            10 => "InternalFailure",
            11 => "BrokenConnection",
            12 => "Unimplemented",
            _ => "Unknown",
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Header and trailer maps (`proxy_map_type_t`), named as in the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
#[allow(clippy::enum_variant_names, reason = "the spec's names")]
pub(crate) enum MapType {
    RequestHeaders = 0,
    ResponseHeaders = 2,
    CallResponseHeaders = 6,
}

/// Buffers (`proxy_buffer_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum BufferType {
    RequestBody = 0,
    ResponseBody = 1,
    CallResponseBody = 4,
    PluginConfiguration = 7,
}

/// Serializes header pairs in the proxy-wasm map format:
/// `u32 count`, then `count × (u32 key_len, u32 value_len)`, then each key and value
/// followed by a NUL byte. All integers are little-endian.
pub(crate) fn serialize_pairs(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses the proxy-wasm map format. Malformed input yields `None` instead of a panic.
pub(crate) fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let raw = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    };
    let count = read_u32(0)?;
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let at = 4 + i * 8;
        sizes.push((read_u32(at)?, read_u32(at + 4)?));
    }
    // Every size was read, so `4 + count * 8` is within `bytes`.
    let mut at = 4 + count * 8;
    let mut pairs = Vec::with_capacity(sizes.len());
    let field = |at: &mut usize, len: usize| -> Option<Vec<u8>> {
        let end = at.checked_add(len)?;
        let value = bytes.get(*at..end)?.to_vec();
        // each key and value is followed by a NUL byte
        (bytes.get(end) == Some(&0)).then_some(())?;
        *at = end + 1;
        Some(value)
    };
    for (klen, vlen) in sizes {
        let key = field(&mut at, klen)?;
        let value = field(&mut at, vlen)?;
        pairs.push((key, value));
    }
    Some(pairs)
}

#[cfg(target_arch = "wasm32")]
#[allow(
    unsafe_code,
    reason = "the proxy-wasm ABI is a C ABI over raw guest pointers"
)]
mod ffi {
    use super::{BufferType, MapType, Status};
    use std::ptr::null_mut;

    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
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
        fn proxy_remove_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
        ) -> u32;
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            return_buffer_data: *mut *mut u8,
            return_buffer_size: *mut usize,
        ) -> u32;
        fn proxy_continue_stream(stream_type: u32) -> u32;
        fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            data: *const u8,
            data_size: usize,
        ) -> u32;
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
        // SAFETY: the host allocated exactly `len` bytes at `ptr` through the
        // guest allocator (`proxy_on_memory_allocate`, a boxed `[u8]` of that size)
        // and handed ownership to us.
        unsafe { Vec::from_raw_parts(ptr, len, len) }
    }

    #[inline]
    pub(crate) fn get_map_value(map: MapType, key: &str) -> Result<Option<Vec<u8>>, Status> {
        let mut ptr = null_mut();
        let mut len = 0;
        // SAFETY: key points at `key.len()` readable bytes; the out-params are valid.
        let status = unsafe {
            proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut ptr, &mut len)
        };
        match Status(status) {
            Status::OK => Ok(Some(take(ptr, len))),
            Status::NOT_FOUND => Ok(None),
            other => Err(other),
        }
    }

    pub(crate) fn get_map_pairs(map: MapType) -> Result<Vec<u8>, Status> {
        let mut ptr = null_mut();
        let mut len = 0;
        // SAFETY: the out-params are valid for writes.
        check(unsafe { proxy_get_header_map_pairs(map as u32, &mut ptr, &mut len) })?;
        Ok(take(ptr, len))
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
        let mut ptr = null_mut();
        let mut len = 0;
        // SAFETY: the out-params are valid for writes.
        let status =
            unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &mut ptr, &mut len) };
        match Status(status) {
            Status::OK => Ok(Some(take(ptr, len))),
            Status::NOT_FOUND => Ok(None),
            other => Err(other),
        }
    }

    #[inline]
    pub(crate) fn set_buffer(
        buffer: BufferType,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), Status> {
        // SAFETY: data is valid for reads for its length.
        check(unsafe {
            proxy_set_buffer_bytes(buffer as u32, start, size, data.as_ptr(), data.len())
        })
    }

    /// Resumes the request (stream type 0) of the effective context.
    #[inline]
    pub(crate) fn continue_request() -> Result<(), Status> {
        // SAFETY: no pointers.
        check(unsafe { proxy_continue_stream(0) })
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
}

/// Outside a proxy-wasm host (native unit tests, doctests) every call reports
/// `Unimplemented`.
#[cfg(not(target_arch = "wasm32"))]
mod ffi {
    use super::{BufferType, MapType, Status};

    pub(crate) fn get_map_value(_: MapType, _: &str) -> Result<Option<Vec<u8>>, Status> {
        Err(Status::UNIMPLEMENTED)
    }
    pub(crate) fn get_map_pairs(_: MapType) -> Result<Vec<u8>, Status> {
        Err(Status::UNIMPLEMENTED)
    }
    pub(crate) fn add_map_value(_: MapType, _: &str, _: &[u8]) -> Result<(), Status> {
        Err(Status::UNIMPLEMENTED)
    }
    pub(crate) fn replace_map_value(_: MapType, _: &str, _: &[u8]) -> Result<(), Status> {
        Err(Status::UNIMPLEMENTED)
    }
    pub(crate) fn remove_map_value(_: MapType, _: &str) -> Result<(), Status> {
        Err(Status::UNIMPLEMENTED)
    }
    pub(crate) fn get_buffer(_: BufferType, _: usize, _: usize) -> Result<Option<Vec<u8>>, Status> {
        Err(Status::UNIMPLEMENTED)
    }
    pub(crate) fn set_buffer(_: BufferType, _: usize, _: usize, _: &[u8]) -> Result<(), Status> {
        Err(Status::UNIMPLEMENTED)
    }
    pub(crate) fn continue_request() -> Result<(), Status> {
        Err(Status::UNIMPLEMENTED)
    }
    pub(crate) fn send_local_response(
        _: u32,
        _: &str,
        _: &[u8],
        _: &[u8],
        _: i32,
    ) -> Result<(), Status> {
        Err(Status::UNIMPLEMENTED)
    }
}

/// Installs the `log` backend and the root context factory with the `proxy-wasm`
/// dispatcher. Called once from the module's `_initialize`.
pub(crate) fn register_root_context(factory: fn(u32) -> Box<dyn proxy_wasm::traits::RootContext>) {
    // Envoy filters the levels it prints itself (`proxy_get_log_level`).
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(factory);
}

pub(crate) use ffi::{
    add_map_value, continue_request, get_buffer, get_map_pairs, get_map_value, remove_map_value,
    replace_map_value, send_local_response, set_buffer,
};

/// Dispatches an HTTP callout through `proxy-wasm`, which records which context
/// made it so that the answer reaches the same stream. It answers `Ok`,
/// `BadArgument` or `InternalFailure` as statuses.
pub(crate) fn dispatch_http_call(
    cluster: &str,
    headers: Vec<(&str, &str)>,
    body: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<u32, Status> {
    #[cfg(target_arch = "wasm32")]
    {
        proxy_wasm::hostcalls::dispatch_http_call(cluster, headers, body, Vec::new(), timeout)
            .map_err(|s| Status(s as u32))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (cluster, headers, body, timeout);
        Err(Status::UNIMPLEMENTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let pairs: Vec<(&str, &[u8])> = vec![(":path", b"/a"), ("x-bin", &[0xff, 0x00, 0x41])];
        let bytes = serialize_pairs(&pairs);
        let back = deserialize_pairs(&bytes).expect("well-formed");
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], (b":path".to_vec(), b"/a".to_vec()));
        assert_eq!(back[1], (b"x-bin".to_vec(), vec![0xff, 0x00, 0x41]));
    }

    #[test]
    fn empty_and_malformed_maps() {
        assert_eq!(deserialize_pairs(&[]), Some(vec![]));
        assert_eq!(deserialize_pairs(&[0, 0, 0, 0]), Some(vec![]));
        // count says one pair but there are no sizes
        assert_eq!(deserialize_pairs(&[1, 0, 0, 0]), None);
        // sizes run past the end
        assert_eq!(
            deserialize_pairs(&[1, 0, 0, 0, 9, 0, 0, 0, 9, 0, 0, 0]),
            None
        );
        // absurd count must not allocate or panic
        assert_eq!(deserialize_pairs(&[0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn status_names() {
        assert_eq!(Status(2).to_string(), "BadArgument (2)");
        assert_eq!(format!("{:?}", Status(99)), "Unknown(99)");
    }
}
