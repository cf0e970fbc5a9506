//! An in-process proxy-wasm host for native unit tests.
//!
//! Outside wasm, the `proxy_*` host functions that `ffi.rs` (and the `proxy-wasm`
//! crate) import are defined here, over a per-thread [`MockState`]. The public face
//! is [`crate::testing::MockHost`], which also drives the module's callbacks
//! (`proxy_on_*`, exported by the `proxy-wasm` dispatcher) like a host would.
//! Statuses follow Envoy where the tests depend on them: maps that do not exist in
//! the current phase are `BadArgument`, absent keys `NotFound`, CAS conflicts
//! `CasMismatch`, empty queues `Empty`.

#![allow(
    unsafe_code,
    reason = "the mock implements the proxy-wasm C ABI over raw pointers"
)]
#![allow(
    unreachable_pub,
    reason = "the host functions are exported C symbols, not Rust API"
)]
#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    clippy::missing_safety_doc,
    reason = "host functions receive guest pointers by contract"
)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::Status;

/// A local reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockReply {
    /// The HTTP status.
    pub status: u32,
    /// Response-code details.
    pub details: String,
    /// The body.
    pub body: Vec<u8>,
    /// The headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The gRPC status (-1 for none).
    pub grpc_status: i32,
}

/// An HTTP or gRPC callout the filter dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockCall {
    /// The token the host returned.
    pub token: u32,
    /// The cluster (upstream) name.
    pub cluster: String,
    /// Request headers (HTTP) or initial metadata (gRPC).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (HTTP) or message (gRPC).
    pub body: Vec<u8>,
    /// The timeout in milliseconds.
    pub timeout_ms: u32,
    /// For gRPC: `service/method`; empty for HTTP.
    pub grpc_method: String,
}

/// A foreign function offered by the mock host; `None` means `BadArgument`.
pub type ForeignFn = fn(&[u8]) -> Option<Vec<u8>>;

/// A callout answer for the mock host: status, headers, body; `None` for a
/// failure without response.
pub type MockResponse<'a> = Option<(u16, &'a [(&'a str, &'a str)], &'a [u8])>;

/// Everything the mock host holds, per thread.
#[derive(Debug, Default)]
pub(crate) struct MockState {
    pub(crate) maps: HashMap<u32, Vec<(String, Vec<u8>)>>,
    pub(crate) buffers: HashMap<u32, Vec<u8>>,
    pub(crate) properties: HashMap<Vec<u8>, Vec<u8>>,
    pub(crate) shared: BTreeMap<String, (Vec<u8>, u32)>,
    pub(crate) queues: Vec<(String, VecDeque<Vec<u8>>)>,
    pub(crate) metrics: Vec<(u32, String, i64)>,
    pub(crate) log_level: u32,
    pub(crate) logs: Vec<(u32, String)>,
    pub(crate) now_nanos: u64,
    pub(crate) tick_period_ms: u32,
    pub(crate) local_reply: Option<MockReply>,
    /// `proxy_continue_stream` calls: (the context it acted on, the stream type).
    pub(crate) continued: Vec<(u32, u32)>,
    pub(crate) closed: Vec<u32>,
    pub(crate) calls: Vec<MockCall>,
    pub(crate) next_token: u32,
    pub(crate) grpc_status: (u32, Vec<u8>),
    pub(crate) grpc_sent: Vec<(u32, Vec<u8>, bool)>,
    pub(crate) foreign: HashMap<String, ForeignFn>,
    pub(crate) effective_context: u32,
    /// The context the running callback was delivered to.
    pub(crate) active_context: u32,
}

impl MockState {
    /// The context host calls act on: the effective one if set, else the one
    /// the callback was delivered to.
    pub(crate) fn current_context(&self) -> u32 {
        if self.effective_context != 0 {
            self.effective_context
        } else {
            self.active_context
        }
    }
}

thread_local! {
    static STATE: RefCell<MockState> = RefCell::new(MockState::default());
}

/// Runs `f` on this thread's mock state.
pub(crate) fn with<R>(f: impl FnOnce(&mut MockState) -> R) -> R {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// Reads `len` bytes at `ptr` (the guest's memory is this process's).
fn read<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: the caller passes a live slice of `len` bytes (ffi.rs always does).
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

fn text(ptr: *const u8, len: usize) -> String {
    String::from_utf8_lossy(read(ptr, len)).into_owned()
}

/// Hands bytes to the guest the way a host does: allocated by the guest's
/// allocator (a boxed slice, as `proxy_on_memory_allocate` does).
fn give(bytes: Vec<u8>, ptr_out: *mut *mut u8, len_out: *mut usize) {
    let len = bytes.len();
    let ptr = if len == 0 {
        std::ptr::null_mut()
    } else {
        Box::into_raw(bytes.into_boxed_slice()).cast::<u8>()
    };
    // SAFETY: the out-params are valid for writes (ffi.rs passes locals).
    unsafe {
        *ptr_out = ptr;
        *len_out = len;
    }
}

fn write<T>(out: *mut T, value: T) {
    // SAFETY: the out-param is valid for writes (ffi.rs passes locals).
    unsafe { *out = value }
}

fn status(s: Status) -> u32 {
    s.0
}

/// The status code of a call that returns nothing else.
fn code(result: Result<(), Status>) -> u32 {
    result.map_or_else(status, |()| 0)
}

// ---- logging, time, ticks

#[unsafe(no_mangle)]
pub extern "C" fn proxy_log(level: u32, message: *const u8, size: usize) -> u32 {
    let message = text(message, size);
    with(|s| s.logs.push((level, message)));
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_log_level(out: *mut u32) -> u32 {
    write(out, with(|s| s.log_level));
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32 {
    write(out, with(|s| s.now_nanos));
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_set_tick_period_milliseconds(period: u32) -> u32 {
    with(|s| s.tick_period_ms = period);
    0
}

// ---- header maps

fn with_map<R>(map: u32, f: impl FnOnce(&mut Vec<(String, Vec<u8>)>) -> R) -> Result<R, Status> {
    with(|s| s.maps.get_mut(&map).map(f).ok_or(Status::BAD_ARGUMENT))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_header_map_value(
    map: u32,
    key: *const u8,
    key_size: usize,
    out: *mut *mut u8,
    out_size: *mut usize,
) -> u32 {
    let key = text(key, key_size).to_ascii_lowercase();
    match with_map(map, |m| {
        m.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())
    }) {
        Ok(Some(v)) => {
            give(v, out, out_size);
            0
        }
        Ok(None) => status(Status::NOT_FOUND),
        Err(e) => status(e),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_header_map_pairs(
    map: u32,
    out: *mut *mut u8,
    out_size: *mut usize,
) -> u32 {
    let pairs = with_map(map, |m| {
        let pairs: Vec<(&str, &[u8])> = m.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        super::serialize_pairs(&pairs)
    });
    match pairs {
        Ok(bytes) => {
            give(bytes, out, out_size);
            0
        }
        Err(e) => status(e),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_set_header_map_pairs(map: u32, data: *const u8, size: usize) -> u32 {
    let Some(pairs) = super::deserialize_pairs(read(data, size)) else {
        return status(Status::BAD_ARGUMENT);
    };
    let pairs = pairs
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).to_ascii_lowercase(), v))
        .collect();
    code(with_map(map, |m| *m = pairs))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_add_header_map_value(
    map: u32,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> u32 {
    let key = text(key, key_size).to_ascii_lowercase();
    let value = read(value, value_size).to_vec();
    code(with_map(map, |m| m.push((key, value))))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_replace_header_map_value(
    map: u32,
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
) -> u32 {
    let key = text(key, key_size).to_ascii_lowercase();
    let value = read(value, value_size).to_vec();
    let result = with_map(map, |m| match m.iter().position(|(k, _)| *k == key) {
        Some(first) => {
            m[first].1 = value;
            let mut i = 0;
            m.retain(|(k, _)| {
                i += 1;
                i - 1 == first || *k != key
            });
        }
        None => m.push((key, value)),
    });
    code(result)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32 {
    let key = text(key, key_size).to_ascii_lowercase();
    code(with_map(map, |m| m.retain(|(k, _)| *k != key)))
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_header_map_size(map: u32, out: *mut usize) -> u32 {
    match with_map(map, |m| m.iter().map(|(k, v)| k.len() + v.len()).sum()) {
        Ok(size) => {
            write(out, size);
            0
        }
        Err(e) => status(e),
    }
}

// ---- buffers

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_buffer_bytes(
    buffer: u32,
    start: usize,
    max: usize,
    out: *mut *mut u8,
    out_size: *mut usize,
) -> u32 {
    let bytes = with(|s| {
        s.buffers.get(&buffer).map(|b| {
            let start = start.min(b.len());
            let end = start.saturating_add(max).min(b.len());
            b[start..end].to_vec()
        })
    });
    match bytes {
        Some(b) => {
            give(b, out, out_size);
            0
        }
        None => status(Status::NOT_FOUND),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_set_buffer_bytes(
    buffer: u32,
    start: usize,
    size: usize,
    data: *const u8,
    data_size: usize,
) -> u32 {
    let data = read(data, data_size).to_vec();
    with(|s| match s.buffers.get_mut(&buffer) {
        Some(b) => {
            // Envoy: start 0 with size >= the length replaces; start at the end
            // appends; start 0 size 0 prepends.
            let start = start.min(b.len());
            let end = start.saturating_add(size).min(b.len());
            b.splice(start..end, data);
            0
        }
        None => status(Status::NOT_FOUND),
    })
}

// ---- properties

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_property(
    path: *const u8,
    path_size: usize,
    out: *mut *mut u8,
    out_size: *mut usize,
) -> u32 {
    let path = read(path, path_size).to_vec();
    match with(|s| s.properties.get(&path).cloned()) {
        Some(v) => {
            give(v, out, out_size);
            0
        }
        None => status(Status::NOT_FOUND),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_set_property(
    path: *const u8,
    path_size: usize,
    value: *const u8,
    value_size: usize,
) -> u32 {
    let path = read(path, path_size).to_vec();
    let value = read(value, value_size).to_vec();
    with(|s| s.properties.insert(path, value));
    0
}

// ---- shared data and queues

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_shared_data(
    key: *const u8,
    key_size: usize,
    out: *mut *mut u8,
    out_size: *mut usize,
    cas: *mut u32,
) -> u32 {
    let key = text(key, key_size);
    match with(|s| s.shared.get(&key).cloned()) {
        Some((value, version)) => {
            give(value, out, out_size);
            write(cas, version);
            0
        }
        None => status(Status::NOT_FOUND),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_set_shared_data(
    key: *const u8,
    key_size: usize,
    value: *const u8,
    value_size: usize,
    cas: u32,
) -> u32 {
    let key = text(key, key_size);
    let value = read(value, value_size).to_vec();
    with(|s| {
        let entry = s.shared.entry(key).or_insert((Vec::new(), 0));
        if cas != 0 && cas != entry.1 {
            return status(Status::CAS_MISMATCH);
        }
        entry.0 = value;
        entry.1 += 1;
        0
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_register_shared_queue(
    name: *const u8,
    name_size: usize,
    out: *mut u32,
) -> u32 {
    let name = text(name, name_size);
    let id = with(|s| match s.queues.iter().position(|(n, _)| *n == name) {
        Some(i) => i,
        None => {
            s.queues.push((name, VecDeque::new()));
            s.queues.len() - 1
        }
    });
    write(out, id as u32 + 1);
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_resolve_shared_queue(
    _vm_id: *const u8,
    _vm_id_size: usize,
    name: *const u8,
    name_size: usize,
    out: *mut u32,
) -> u32 {
    let name = text(name, name_size);
    match with(|s| s.queues.iter().position(|(n, _)| *n == name)) {
        Some(i) => {
            write(out, i as u32 + 1);
            0
        }
        None => status(Status::NOT_FOUND),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_enqueue_shared_queue(queue: u32, value: *const u8, size: usize) -> u32 {
    let value = read(value, size).to_vec();
    with(
        |s| match s.queues.get_mut((queue as usize).wrapping_sub(1)) {
            Some((_, q)) => {
                q.push_back(value);
                0
            }
            None => status(Status::NOT_FOUND),
        },
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_dequeue_shared_queue(
    queue: u32,
    out: *mut *mut u8,
    out_size: *mut usize,
) -> u32 {
    let item = with(|s| {
        s.queues
            .get_mut((queue as usize).wrapping_sub(1))
            .map(|(_, q)| q.pop_front())
    });
    match item {
        Some(Some(v)) => {
            give(v, out, out_size);
            0
        }
        Some(None) => status(Status::EMPTY),
        None => status(Status::NOT_FOUND),
    }
}

// ---- stream control and local replies

#[unsafe(no_mangle)]
pub extern "C" fn proxy_continue_stream(stream: u32) -> u32 {
    with(|s| {
        let context = s.current_context();
        s.continued.push((context, stream));
    });
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_close_stream(stream: u32) -> u32 {
    with(|s| s.closed.push(stream));
    0
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
pub extern "C" fn proxy_send_local_response(
    status_code: u32,
    details: *const u8,
    details_size: usize,
    body: *const u8,
    body_size: usize,
    headers: *const u8,
    headers_size: usize,
    grpc_status: i32,
) -> u32 {
    let Some(headers) = super::deserialize_pairs(read(headers, headers_size)) else {
        return status(Status::BAD_ARGUMENT);
    };
    let reply = MockReply {
        status: status_code,
        details: text(details, details_size),
        body: read(body, body_size).to_vec(),
        headers: headers
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect(),
        grpc_status,
    };
    with(|s| s.local_reply = Some(reply));
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_set_effective_context(context: u32) -> u32 {
    with(|s| s.effective_context = context);
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_done() -> u32 {
    0
}

// ---- callouts

fn new_call(cluster: String, headers: &[u8], body: Vec<u8>, timeout_ms: u32, grpc: String) -> u32 {
    let headers = super::deserialize_pairs(headers)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect();
    with(|s| {
        s.next_token += 1;
        let token = s.next_token;
        s.calls.push(MockCall {
            token,
            cluster,
            headers,
            body,
            timeout_ms,
            grpc_method: grpc,
        });
        token
    })
}

fn known_cluster(cluster: &str) -> bool {
    !cluster.is_empty() && !cluster.starts_with("unknown")
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
pub extern "C" fn proxy_http_call(
    upstream: *const u8,
    upstream_size: usize,
    headers: *const u8,
    headers_size: usize,
    body: *const u8,
    body_size: usize,
    _trailers: *const u8,
    _trailers_size: usize,
    timeout_ms: u32,
    token: *mut u32,
) -> u32 {
    let cluster = text(upstream, upstream_size);
    let header_bytes = read(headers, headers_size);
    let pairs = super::deserialize_pairs(header_bytes).unwrap_or_default();
    let has = |name: &[u8]| pairs.iter().any(|(k, v)| k == name && !v.is_empty());
    // Envoy refuses calls to unknown clusters and without the three pseudo-headers.
    if !(known_cluster(&cluster) && has(b":method") && has(b":path") && has(b":authority")) {
        return status(Status::BAD_ARGUMENT);
    }
    let id = new_call(
        cluster,
        header_bytes,
        read(body, body_size).to_vec(),
        timeout_ms,
        String::new(),
    );
    write(token, id);
    0
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
pub extern "C" fn proxy_grpc_call(
    upstream: *const u8,
    upstream_size: usize,
    service: *const u8,
    service_size: usize,
    method: *const u8,
    method_size: usize,
    metadata: *const u8,
    metadata_size: usize,
    message: *const u8,
    message_size: usize,
    timeout_ms: u32,
    token: *mut u32,
) -> u32 {
    let cluster = text(upstream, upstream_size);
    if !known_cluster(&cluster) {
        return status(Status(4));
    }
    let grpc = format!(
        "{}/{}",
        text(service, service_size),
        text(method, method_size)
    );
    let id = new_call(
        cluster,
        read(metadata, metadata_size),
        read(message, message_size).to_vec(),
        timeout_ms,
        grpc,
    );
    write(token, id);
    0
}

#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments, reason = "the ABI's signature")]
pub extern "C" fn proxy_grpc_stream(
    upstream: *const u8,
    upstream_size: usize,
    service: *const u8,
    service_size: usize,
    method: *const u8,
    method_size: usize,
    metadata: *const u8,
    metadata_size: usize,
    token: *mut u32,
) -> u32 {
    let cluster = text(upstream, upstream_size);
    if !known_cluster(&cluster) {
        return status(Status(4));
    }
    let grpc = format!(
        "{}/{}",
        text(service, service_size),
        text(method, method_size)
    );
    let id = new_call(cluster, read(metadata, metadata_size), Vec::new(), 0, grpc);
    write(token, id);
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_grpc_send(token: u32, message: *const u8, size: usize, end: u32) -> u32 {
    let message = read(message, size).to_vec();
    with(|s| {
        if !s.calls.iter().any(|c| c.token == token) {
            return status(Status::NOT_FOUND);
        }
        s.grpc_sent.push((token, message, end != 0));
        0
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_grpc_cancel(token: u32) -> u32 {
    with(|s| {
        let before = s.calls.len();
        s.calls.retain(|c| c.token != token);
        if s.calls.len() == before {
            status(Status::NOT_FOUND)
        } else {
            0
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_grpc_close(token: u32) -> u32 {
    proxy_grpc_cancel(token)
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_status(code: *mut u32, out: *mut *mut u8, out_size: *mut usize) -> u32 {
    let (c, message) = with(|s| s.grpc_status.clone());
    write(code, c);
    give(message, out, out_size);
    0
}

// ---- foreign functions and metrics

#[unsafe(no_mangle)]
pub extern "C" fn proxy_call_foreign_function(
    name: *const u8,
    name_size: usize,
    argument: *const u8,
    argument_size: usize,
    out: *mut *mut u8,
    out_size: *mut usize,
) -> u32 {
    let name = text(name, name_size);
    let Some(function) = with(|s| s.foreign.get(&name).copied()) else {
        return status(Status::NOT_FOUND);
    };
    match function(read(argument, argument_size)) {
        Some(result) => {
            give(result, out, out_size);
            0
        }
        None => status(Status::BAD_ARGUMENT),
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_define_metric(
    kind: u32,
    name: *const u8,
    size: usize,
    out: *mut u32,
) -> u32 {
    if kind > 2 {
        return status(Status::BAD_ARGUMENT);
    }
    let name = text(name, size);
    let id = with(|s| {
        match s
            .metrics
            .iter()
            .position(|(k, n, _)| *k == kind && *n == name)
        {
            Some(i) => i,
            None => {
                s.metrics.push((kind, name, 0));
                s.metrics.len() - 1
            }
        }
    });
    write(out, id as u32);
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_increment_metric(id: u32, offset: i64) -> u32 {
    with(|s| match s.metrics.get_mut(id as usize) {
        // Counters only go up, as in Envoy, which refuses 0 too.
        Some((0, _, _)) if offset <= 0 => status(Status::BAD_ARGUMENT),
        Some((2, _, _)) => status(Status::BAD_ARGUMENT),
        Some((_, _, value)) => {
            *value = value.saturating_add(offset);
            0
        }
        None => status(Status::NOT_FOUND),
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_record_metric(id: u32, value: u64) -> u32 {
    with(|s| match s.metrics.get_mut(id as usize) {
        Some((_, _, v)) => {
            *v = i64::try_from(value).unwrap_or(i64::MAX);
            0
        }
        None => status(Status::NOT_FOUND),
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn proxy_get_metric(id: u32, out: *mut u64) -> u32 {
    match with(|s| s.metrics.get(id as usize).map(|m| (m.0, m.2))) {
        Some((2, _)) | None => status(Status::NOT_FOUND),
        Some((_, v)) => {
            write(out, u64::try_from(v).unwrap_or(0));
            0
        }
    }
}

// ---- driving the module's callbacks, as a host does

unsafe extern "C" {
    #[link_name = "proxy_on_context_create"]
    fn on_context_create_raw(context: u32, parent: u32);
    #[link_name = "proxy_on_vm_start"]
    fn on_vm_start_raw(context: u32, size: usize) -> bool;
    #[link_name = "proxy_on_configure"]
    fn on_configure_raw(context: u32, size: usize) -> bool;
    #[link_name = "proxy_on_tick"]
    fn on_tick_raw(context: u32);
    #[link_name = "proxy_on_queue_ready"]
    fn on_queue_ready_raw(context: u32, queue: u32);
    #[link_name = "proxy_on_request_headers"]
    fn on_request_headers_raw(context: u32, headers: usize, end_of_stream: bool) -> u32;
    #[link_name = "proxy_on_request_body"]
    fn on_request_body_raw(context: u32, size: usize, end_of_stream: bool) -> u32;
    #[link_name = "proxy_on_request_trailers"]
    fn on_request_trailers_raw(context: u32, trailers: usize) -> u32;
    #[link_name = "proxy_on_response_headers"]
    fn on_response_headers_raw(context: u32, headers: usize, end_of_stream: bool) -> u32;
    #[link_name = "proxy_on_response_body"]
    fn on_response_body_raw(context: u32, size: usize, end_of_stream: bool) -> u32;
    #[link_name = "proxy_on_response_trailers"]
    fn on_response_trailers_raw(context: u32, trailers: usize) -> u32;
    #[link_name = "proxy_on_http_call_response"]
    fn on_http_call_response_raw(
        context: u32,
        token: u32,
        headers: usize,
        body: usize,
        trailers: usize,
    );
    #[link_name = "proxy_on_grpc_receive"]
    fn on_grpc_receive_raw(context: u32, token: u32, size: usize);
    #[link_name = "proxy_on_grpc_close"]
    fn on_grpc_close_raw(context: u32, token: u32, status: u32);
    #[link_name = "proxy_on_new_connection"]
    fn on_new_connection_raw(context: u32) -> u32;
    #[link_name = "proxy_on_downstream_data"]
    fn on_downstream_data_raw(context: u32, size: usize, end_of_stream: bool) -> u32;
    #[link_name = "proxy_on_upstream_data"]
    fn on_upstream_data_raw(context: u32, size: usize, end_of_stream: bool) -> u32;
    #[link_name = "proxy_on_downstream_connection_close"]
    fn on_downstream_close_raw(context: u32, peer: proxy_wasm::types::PeerType);
    #[link_name = "proxy_on_upstream_connection_close"]
    fn on_upstream_close_raw(context: u32, peer: proxy_wasm::types::PeerType);
    #[link_name = "proxy_on_done"]
    fn on_done_raw(context: u32) -> bool;
    #[link_name = "proxy_on_log"]
    fn on_log_raw(context: u32);
    #[link_name = "proxy_on_delete"]
    fn on_delete_raw(context: u32);
}

/// Safe wrappers: the callbacks are the `proxy-wasm` dispatcher's exports, which
/// take plain integers.
pub(crate) mod drive {
    use super::*;

    /// A callback is delivered to `context`: host calls act on it until the
    /// guest sets another effective context.
    fn enter(context: u32) {
        with(|s| {
            s.active_context = context;
            s.effective_context = 0;
        });
    }

    pub(crate) fn context_create(context: u32, parent: u32) {
        // SAFETY: plain integers; the dispatcher is a Rust function.
        unsafe { on_context_create_raw(context, parent) }
    }
    pub(crate) fn vm_start(context: u32, size: usize) -> bool {
        enter(context);
        // SAFETY: as above.
        unsafe { on_vm_start_raw(context, size) }
    }
    pub(crate) fn configure(context: u32, size: usize) -> bool {
        enter(context);
        // SAFETY: as above.
        unsafe { on_configure_raw(context, size) }
    }
    pub(crate) fn tick(context: u32) {
        enter(context);
        // SAFETY: as above.
        unsafe { on_tick_raw(context) }
    }
    pub(crate) fn queue_ready(context: u32, queue: u32) {
        enter(context);
        // SAFETY: as above.
        unsafe { on_queue_ready_raw(context, queue) }
    }
    pub(crate) fn request_headers(context: u32, n: usize, eos: bool) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_request_headers_raw(context, n, eos) }
    }
    pub(crate) fn request_body(context: u32, size: usize, eos: bool) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_request_body_raw(context, size, eos) }
    }
    pub(crate) fn request_trailers(context: u32, n: usize) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_request_trailers_raw(context, n) }
    }
    pub(crate) fn response_headers(context: u32, n: usize, eos: bool) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_response_headers_raw(context, n, eos) }
    }
    pub(crate) fn response_body(context: u32, size: usize, eos: bool) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_response_body_raw(context, size, eos) }
    }
    pub(crate) fn response_trailers(context: u32, n: usize) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_response_trailers_raw(context, n) }
    }
    pub(crate) fn http_call_response(context: u32, token: u32, n: usize, body: usize, t: usize) {
        enter(context);
        // SAFETY: as above.
        unsafe { on_http_call_response_raw(context, token, n, body, t) }
    }
    pub(crate) fn grpc_receive(context: u32, token: u32, size: usize) {
        enter(context);
        // SAFETY: plain integers.
        unsafe { on_grpc_receive_raw(context, token, size) }
    }
    pub(crate) fn grpc_close(context: u32, token: u32, status: u32) {
        enter(context);
        // SAFETY: plain integers.
        unsafe { on_grpc_close_raw(context, token, status) }
    }
    pub(crate) fn new_connection(context: u32) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_new_connection_raw(context) }
    }
    pub(crate) fn downstream_data(context: u32, size: usize, eos: bool) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_downstream_data_raw(context, size, eos) }
    }
    pub(crate) fn upstream_data(context: u32, size: usize, eos: bool) -> u32 {
        enter(context);
        // SAFETY: as above.
        unsafe { on_upstream_data_raw(context, size, eos) }
    }
    pub(crate) fn downstream_close(context: u32, peer: proxy_wasm::types::PeerType) {
        enter(context);
        // SAFETY: as above; the peer type is a valid enum value.
        unsafe { on_downstream_close_raw(context, peer) }
    }
    pub(crate) fn upstream_close(context: u32, peer: proxy_wasm::types::PeerType) {
        enter(context);
        // SAFETY: as above.
        unsafe { on_upstream_close_raw(context, peer) }
    }
    /// Ends a connection as Envoy does (`onCloseTCP`): `on_done`, `on_log`,
    /// `on_delete`.
    pub(crate) fn finish_connection(context: u32) {
        enter(context);
        // SAFETY: as above.
        unsafe {
            on_done_raw(context);
            on_log_raw(context);
            on_delete_raw(context);
        }
    }
    pub(crate) fn finish(context: u32) {
        enter(context);
        // SAFETY: as above.
        unsafe {
            on_log_raw(context);
            on_done_raw(context);
            on_delete_raw(context);
        }
    }
}
