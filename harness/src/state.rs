//! Per-VM host state: the data of each plugin's wasmtime `Store`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wasmtime::{Memory, StoreLimits, StoreLimitsBuilder, TypedFunc};

use crate::fields::Fields;
use crate::outcome::{LogLevel, LogRecord};
use crate::shared::{MetricType, Shared};

/// Envoy caps guest linear memory at 1 GiB.
pub(crate) const MAX_MEMORY_BYTES: usize = 1 << 30;

/// Which callback is running; decides which maps and buffers Envoy exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No callback is running.
    Idle,
    /// A root-context callback (`on_vm_start`, `on_configure`, …).
    Root,
    /// `on_configure`: the plugin configuration buffer is readable.
    Configure,
    /// A request-path stream callback.
    Request,
    /// A response-path stream callback.
    Response,
    /// `on_log`: headers readable, nothing mutable.
    Log,
}

/// The header maps of the stream the VM is working on, with Envoy's
/// availability rules: a map is `Some` while Envoy holds a pointer to it.
#[derive(Debug, Default)]
pub(crate) struct StreamMaps {
    pub(crate) request_headers: Option<Fields>,
    pub(crate) response_headers: Option<Fields>,
    /// The request trailers, while Envoy holds them (`on_request_trailers` and
    /// its pause).
    pub(crate) request_trailers: Option<Fields>,
    /// Likewise for the response trailers (also readable in `on_log`).
    pub(crate) response_trailers: Option<Fields>,
    /// Set while a body callback that ends its direction's stream runs: a
    /// change to that direction's trailers creates them, as Envoy's
    /// `addDecodedTrailers`/`addEncodedTrailers`.
    pub(crate) trailers_addable: bool,
    /// The request body Envoy hands the running `on_request_body` (accumulated
    /// while the filter buffers).
    pub(crate) request_body: Option<Vec<u8>>,
    /// Likewise for `on_response_body`.
    pub(crate) response_body: Option<Vec<u8>>,
    /// A network filter's downstream connection buffer, while Envoy points the
    /// context at it (from `on_downstream_data` until it returns Continue).
    pub(crate) downstream_data: Option<Vec<u8>>,
    /// Likewise for the upstream data of `on_upstream_data`.
    pub(crate) upstream_data: Option<Vec<u8>>,
    /// What Envoy's stream info knows about the stream.
    pub(crate) info: StreamInfo,
}

/// Stream attributes that are not headers.
#[derive(Debug, Default)]
pub(crate) struct StreamInfo {
    /// The response status, once the response exists.
    pub(crate) response_code: Option<u16>,
    /// `via_upstream`, or a local reply's details.
    pub(crate) response_details: Option<std::borrow::Cow<'static, str>>,
    /// Filter state written with `proxy_set_property`, by raw path.
    pub(crate) filter_state: HashMap<Vec<u8>, Vec<u8>>,
    /// The upstream host, once the router sent the request to it.
    pub(crate) upstream_address: Option<std::net::SocketAddr>,
}

/// A callout waiting for its answer.
#[derive(Debug)]
pub(crate) struct PendingCall {
    pub(crate) token: u32,
    pub(crate) cluster: String,
    pub(crate) request: http::Request<bytes::Bytes>,
    /// `None`: no timeout (`timeout_ms` 0).
    pub(crate) timeout: Option<std::time::Duration>,
}

/// The answer to a callout, readable during `on_http_call_response`.
#[derive(Debug)]
pub(crate) struct CallResponse {
    pub(crate) headers: Fields,
    pub(crate) body: Vec<u8>,
}

/// A local reply requested with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalReplyRequest {
    pub(crate) status: u32,
    pub(crate) details: String,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Fields,
    pub(crate) grpc_status: i32,
}

/// Actions Envoy defers until the current VM call returns.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    pub(crate) continue_request: bool,
    pub(crate) continue_response: bool,
    pub(crate) close_stream: bool,
    pub(crate) local_reply: Option<LocalReplyRequest>,
    /// The callback made a host call Envoy would not survive (it trapped here).
    pub(crate) would_crash: Option<&'static str>,
    /// `proxy_continue_stream(Downstream)`: Envoy's `continueReading`.
    pub(crate) continue_downstream: bool,
    /// `proxy_close_stream(Downstream | Upstream)`: both close the downstream
    /// connection (`FlushWrite`) in Envoy.
    pub(crate) close_connection: bool,
}

/// Static facts about the plugin, as in Envoy's `PluginConfig`.
#[derive(Clone, Debug)]
pub(crate) struct PluginMeta {
    pub(crate) name: String,
    pub(crate) root_id: String,
    pub(crate) vm_id: String,
    pub(crate) vm_configuration: Vec<u8>,
    pub(crate) plugin_configuration: Vec<u8>,
    pub(crate) environment: Vec<(String, String)>,
}

/// The guest exports host calls use, looked up once after instantiation
/// (until then host calls look them up by name).
#[derive(Default)]
pub(crate) struct GuestExports {
    /// The `memory` export.
    pub(crate) memory: Option<Memory>,
    /// `malloc`, else `proxy_on_memory_allocate` (shared, as cloning a typed
    /// function handle costs more than the call).
    pub(crate) allocator: Option<Arc<TypedFunc<i32, i32>>>,
}

/// The store data of one plugin VM.
pub(crate) struct HostState {
    pub(crate) meta: PluginMeta,
    pub(crate) exports: GuestExports,
    pub(crate) limits: StoreLimits,
    /// True while `_initialize`/`main`/`_start` run.
    pub(crate) in_init: bool,
    pub(crate) phase: Phase,
    pub(crate) root_context_id: u32,
    /// The context the running callback was delivered to.
    pub(crate) active_context: u32,
    /// Set by `proxy_set_effective_context` for the rest of the callback.
    pub(crate) effective_context: u32,
    /// Live context ids (roots and streams).
    pub(crate) contexts: Vec<u32>,
    pub(crate) maps: StreamMaps,
    pub(crate) deferred: Deferred,
    pub(crate) tick_period_ms: u32,
    /// When the next `on_tick` is due (virtual monotonic time), if a period is set.
    pub(crate) next_tick: Option<Duration>,
    /// The virtual wall clock, shared by every VM of a chain.
    pub(crate) now: SystemTime,
    /// The virtual monotonic clock.
    pub(crate) monotonic: Duration,
    pub(crate) rng: u64,
    pub(crate) log_level: LogLevel,
    /// `proxy_*` host calls the guest made (WASI calls are not counted).
    pub(crate) host_calls: u64,
    /// Process-wide state shared with the chain's other VMs.
    pub(crate) shared: Arc<Shared>,
    /// Names this VM in process-wide state (shared-queue targets).
    pub(crate) vm_key: u64,
    /// The route's cluster (`xds.cluster_name`), if known.
    pub(crate) cluster_name: Option<String>,
    /// The downstream connection's addresses (`source.*`, `destination.*`).
    pub(crate) source_address: Option<std::net::SocketAddr>,
    pub(crate) destination_address: Option<std::net::SocketAddr>,
    /// Clusters `proxy_http_call` may call.
    pub(crate) clusters: Vec<String>,
    /// Clusters with a gRPC service (`proxy_grpc_call`, `proxy_grpc_stream`).
    pub(crate) grpc_clusters: Vec<String>,
    /// The root context's gRPC calls and streams.
    pub(crate) grpc: crate::grpc::GrpcState,
    /// Callouts made and not answered yet, in order.
    pub(crate) pending_calls: std::collections::VecDeque<PendingCall>,
    /// The answer being delivered by `on_http_call_response`.
    pub(crate) call_response: Option<CallResponse>,
    /// The last HTTP callout token (Envoy's: 4, 8, 12, ...).
    last_call_token: u32,
    /// This VM's metric ids: id → (type, stat name).
    metrics: HashMap<u32, (MetricType, String)>,
    /// The next id per metric type (Envoy starts each at type + 4).
    next_metric_id: [u32; 3],
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("plugin", &self.meta.name)
            .field("phase", &self.phase)
            .field("active_context", &self.active_context)
            .finish_non_exhaustive()
    }
}

impl HostState {
    pub(crate) fn new(meta: PluginMeta, now: SystemTime, seed: u64, shared: Arc<Shared>) -> Self {
        Self {
            meta,
            exports: GuestExports::default(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MAX_MEMORY_BYTES)
                .build(),
            in_init: false,
            phase: Phase::Idle,
            root_context_id: 0,
            active_context: 0,
            effective_context: 0,
            contexts: Vec::new(),
            maps: StreamMaps::default(),
            deferred: Deferred::default(),
            tick_period_ms: 0,
            next_tick: None,
            now,
            monotonic: Duration::ZERO,
            rng: seed,
            log_level: LogLevel::Trace,
            host_calls: 0,
            vm_key: shared.next_vm_key(),
            shared,
            cluster_name: None,
            source_address: None,
            destination_address: None,
            clusters: Vec::new(),
            grpc_clusters: Vec::new(),
            grpc: crate::grpc::GrpcState::default(),
            pending_calls: std::collections::VecDeque::new(),
            call_response: None,
            last_call_token: 0,
            metrics: HashMap::new(),
            next_metric_id: [4, 5, 6],
        }
    }

    /// The next HTTP callout token: the low two bits are the call type (0 for
    /// HTTP) and each call adds 4, as in Envoy's host.
    pub(crate) fn next_call_token(&mut self) -> u32 {
        self.last_call_token += 4;
        self.last_call_token
    }

    /// Gives a new id to a metric, as Envoy does: per VM, the low two bits are the
    /// type and each id adds 4; defining a name again gives a new id for it.
    pub(crate) fn define_metric(&mut self, kind: MetricType, name: String) -> u32 {
        let next = &mut self.next_metric_id[kind as usize];
        let id = *next;
        *next += 4;
        self.metrics.insert(id, (kind, name));
        id
    }

    /// The type and stat name behind a metric id.
    pub(crate) fn metric(&self, id: u32) -> Option<(MetricType, &str)> {
        self.metrics.get(&id).map(|(k, n)| (*k, n.as_str()))
    }

    /// The context host calls act on: the effective one if set, else the active one.
    pub(crate) fn current_context(&self) -> u32 {
        if self.effective_context != 0 {
            self.effective_context
        } else {
            self.active_context
        }
    }

    /// Whether the current context is a stream (not a root) context.
    pub(crate) fn in_stream(&self) -> bool {
        let current = self.current_context();
        current != 0 && current != self.root_context_id
    }

    /// A deterministic pseudo-random byte stream (splitmix64), seeded per chain.
    pub(crate) fn fill_random(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }

    /// Records a guest log line (and re-emits it through `tracing`).
    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        tracing::event!(
            target: "weir_harness::guest",
            tracing::Level::DEBUG,
            plugin = %self.meta.name,
            ?level,
            "{message}"
        );
        self.shared.logs().push(LogRecord {
            plugin: self.meta.name.clone(),
            level,
            message,
        });
    }
}
