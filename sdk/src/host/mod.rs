//! The only place that talks to the proxy-wasm host.
//!
//! `proxy_wasm::hostcalls` panics on any status it does not expect (for example
//! `BadArgument` when headers are touched outside their callback), which traps the
//! VM in Envoy. The calls are therefore declared here (`wasm.rs`) and every status
//! is returned to the caller as a [`Status`]. The registration and dispatch plumbing
//! (`main!`, the context dispatcher, the allocator and the `log` backend) still come
//! from the `proxy-wasm` crate, and so do the calls whose tokens its dispatcher must
//! record (HTTP and gRPC callouts).
//!
//! Outside wasm (native unit tests) the same functions run against an in-process
//! mock host (`mock.rs`, driven through [`crate::testing`]).

use std::fmt;

/// A proxy-wasm status code as returned by the host (`proxy_status_t`).
///
/// Kept as a raw `u32` so that any value a host returns (including ones the
/// `proxy-wasm` crate has no variant for, such as 6 and 12) is representable.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub u32);

impl Status {
    pub(crate) const OK: Status = Status(0);
    pub(crate) const NOT_FOUND: Status = Status(1);
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) const BAD_ARGUMENT: Status = Status(2);
    pub(crate) const EMPTY: Status = Status(7);
    pub(crate) const CAS_MISMATCH: Status = Status(8);

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub(crate) enum MapType {
    RequestHeaders = 0,
    RequestTrailers = 1,
    ResponseHeaders = 2,
    ResponseTrailers = 3,
    GrpcInitialMetadata = 4,
    GrpcTrailingMetadata = 5,
    CallResponseHeaders = 6,
    CallResponseTrailers = 7,
}

impl MapType {
    /// What the map is, for error messages.
    pub(crate) fn target(self) -> &'static str {
        match self {
            MapType::RequestHeaders => "request headers",
            MapType::RequestTrailers => "request trailers",
            MapType::ResponseHeaders => "response headers",
            MapType::ResponseTrailers => "response trailers",
            MapType::GrpcInitialMetadata => "gRPC initial metadata",
            MapType::GrpcTrailingMetadata => "gRPC trailing metadata",
            MapType::CallResponseHeaders => "callout response headers",
            MapType::CallResponseTrailers => "callout response trailers",
        }
    }
}

/// Buffers (`proxy_buffer_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub(crate) enum BufferType {
    RequestBody = 0,
    ResponseBody = 1,
    DownstreamData = 2,
    UpstreamData = 3,
    CallResponseBody = 4,
    GrpcMessage = 5,
    VmConfiguration = 6,
    PluginConfiguration = 7,
}

/// Metric types (`proxy_metric_type_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub(crate) enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// `proxy_stream_type_t` of the request, for `proxy_continue_stream`.
pub(crate) const STREAM_REQUEST: u32 = 0;
/// `proxy_stream_type_t` of the response.
pub(crate) const STREAM_RESPONSE: u32 = 1;
/// `proxy_stream_type_t` of a network filter's downstream connection.
pub(crate) const STREAM_DOWNSTREAM: u32 = 2;

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

/// Walks the proxy-wasm map format, calling `f` with each key and value in
/// order, without copying them. Malformed input yields `None` instead of a
/// panic (`f` may have seen the pairs before the fault).
fn for_each_pair<'a>(bytes: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8])) -> Option<()> {
    if bytes.is_empty() {
        return Some(());
    }
    let read_u32 = |at: usize| -> Option<usize> {
        let raw = bytes.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    };
    let count = read_u32(0)?;
    // Every size must be there before anything is read.
    let data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut at = data;
    let mut field = |len: usize| -> Option<&'a [u8]> {
        let end = at.checked_add(len)?;
        let value = bytes.get(at..end)?;
        // each key and value is followed by a NUL byte
        (bytes.get(end) == Some(&0)).then_some(())?;
        at = end + 1;
        Some(value)
    };
    for i in 0..count {
        let sizes = 4 + i * 8;
        let (klen, vlen) = (read_u32(sizes)?, read_u32(sizes + 4)?);
        let key = field(klen)?;
        let value = field(vlen)?;
        f(key, value);
    }
    Some(())
}

/// Parses the proxy-wasm map format. Malformed input yields `None` instead of a panic.
pub(crate) fn deserialize_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut pairs = Vec::new();
    for_each_pair(bytes, |k, v| pairs.push((k.to_vec(), v.to_vec())))?;
    Some(pairs)
}

/// The values of `name` (ASCII case-insensitive) in a serialized map, in order,
/// copying only those. Malformed input yields `None`.
pub(crate) fn map_values(bytes: &[u8], name: &str) -> Option<Vec<Vec<u8>>> {
    let mut values = Vec::new();
    for_each_pair(bytes, |k, v| {
        if k.eq_ignore_ascii_case(name.as_bytes()) {
            values.push(v.to_vec());
        }
    })?;
    Some(values)
}

mod ffi;
pub(crate) use ffi::*;

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod mock;

/// Installs the `log` backend and the root context factory with the `proxy-wasm`
/// dispatcher. Called once from the module's `_initialize`.
pub(crate) fn register_root_context(factory: fn(u32) -> Box<dyn proxy_wasm::traits::RootContext>) {
    // Envoy filters the levels it prints itself (`proxy_get_log_level`).
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(factory);
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
        assert_eq!(map_values(&[0xff, 0xff, 0xff, 0xff], "x"), None);
        // a value without its NUL
        let mut bad = serialize_pairs(&[("x", b"1")]);
        bad.pop();
        assert_eq!(deserialize_pairs(&bad), None);
        assert_eq!(map_values(&bad, "x"), None);
    }

    #[test]
    fn values_of_one_name() {
        let pairs: Vec<(&str, &[u8])> = vec![
            ("x-a", b"1"),
            ("x-b", b"2"),
            ("X-A", &[0xff]),
            ("x-aa", b"3"),
            ("x-a", b""),
        ];
        let bytes = serialize_pairs(&pairs);
        assert_eq!(
            map_values(&bytes, "x-a"),
            Some(vec![b"1".to_vec(), vec![0xff], Vec::new()])
        );
        assert_eq!(map_values(&bytes, "X-B"), Some(vec![b"2".to_vec()]));
        assert_eq!(map_values(&bytes, "x-none"), Some(vec![]));
        assert_eq!(map_values(&[], "x-a"), Some(vec![]));
    }

    #[test]
    fn status_names() {
        assert_eq!(Status(2).to_string(), "BadArgument (2)");
        assert_eq!(format!("{:?}", Status(99)), "Unknown(99)");
    }
}
