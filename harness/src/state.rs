//! Per-VM host state: the data of each plugin's wasmtime `Store`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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
    /// In `on_log`: what the filter's context still points at (see
    /// [`HeldMaps`]), which `proxy_get_header_map_size` and changes reach.
    pub(crate) held: HeldMaps,
}

/// What a stream context in Envoy still points at once its callbacks
/// returned: the maps its `getMap` (used by `proxy_get_header_map_size` and
/// every change) reaches in `on_log`, where every other map answers
/// `BadArgument`. Reads (`proxy_get_header_map_value`, `_pairs`) go to the
/// access log's maps whatever the context holds. One record per stream
/// context, in its VM's [`HostState`], set where Envoy's context keeps a map
/// and read by `on_log`. Measured in Envoy 1.40 (`close-stream-log.yaml` for
/// one filter, `log-maps-chain.yaml` for a chain of three):
///
/// - A headers callback that returns Continue forgets its map.
/// - The stream ended during a callback, or during its pause (a
///   `proxy_close_stream`, a local reply, a client that left, a reset): the
///   context keeps that callback's map. Only the filter whose callback it was:
///   the other filters of a chain hold nothing, wherever the stream ended.
/// - A response headers callback that paused (even if resumed later) keeps
///   the response headers.
/// - A local reply from `on_response_headers`: the context keeps the
///   upstream's response headers, its own copy (the access log reads the
///   reply's).
/// - `on_request_trailers` during which the stream ended: the context keeps
///   the request trailers, its own copy (the access log has no request
///   trailers).
/// - A local reply from a request body callback: Envoy's `getMap` adds
///   request trailers in `on_log` (the body buffer is still set and the reply
///   ended the stream), empty unless the filter added some; a close does not.
/// - `on_response_trailers` during which (or during whose pause, a close from
///   a callout's answer) the stream ended: the context keeps the response
///   trailers, which the access log reads.
#[derive(Debug, Default)]
pub(crate) struct HeldMaps {
    /// The request headers (the access log's).
    pub(crate) request_headers: Held,
    /// The request trailers: only ever the context's own.
    pub(crate) request_trailers: Held,
    /// The response headers: the access log's, or the upstream's that a
    /// local reply replaced.
    pub(crate) response_headers: Held,
    /// The response trailers (the access log's).
    pub(crate) response_trailers: Held,
}

/// Whether a context still points at one map, and at which.
#[derive(Debug, Default)]
pub(crate) enum Held {
    /// It forgot the map: size and changes answer `BadArgument`.
    #[default]
    No,
    /// The map the access log reads: size and changes reach it (and the
    /// access logs of the filters after this one see the changes).
    Logged,
    /// A map the access log does not read: size and changes reach this copy.
    Own(Fields),
}

impl Held {
    /// Whether the context still points at the map.
    pub(crate) fn holds(&self) -> bool {
        !matches!(self, Held::No)
    }
}

impl HeldMaps {
    /// What the context holds of map type `kind` (none for other types).
    pub(crate) fn get_mut(&mut self, kind: u32) -> Option<&mut Held> {
        Some(match kind {
            0 => &mut self.request_headers,
            1 => &mut self.request_trailers,
            2 => &mut self.response_headers,
            3 => &mut self.response_trailers,
            _ => return None,
        })
    }

    /// Whether the context still points at map type `kind`.
    pub(crate) fn holds(&mut self, kind: u32) -> bool {
        self.get_mut(kind).is_some_and(|held| held.holds())
    }
}

impl StreamMaps {
    /// Back to a new stream's maps, as [`StreamMaps::default`] makes them.
    pub(crate) fn reset(&mut self) {
        let Self {
            request_headers,
            response_headers,
            request_trailers,
            response_trailers,
            trailers_addable,
            request_body,
            response_body,
            downstream_data,
            upstream_data,
            held,
            info:
                StreamInfo {
                    // The stream's facts and filter state stay: a new stream
                    // brings its own (the chain gives every VM a stream's as
                    // it starts).
                    filter_state: _,
                    facts: _,
                },
        } = self;
        *request_headers = None;
        *response_headers = None;
        *request_trailers = None;
        *response_trailers = None;
        *trailers_addable = false;
        *request_body = None;
        *response_body = None;
        *downstream_data = None;
        *upstream_data = None;
        *held = HeldMaps::default();
    }
}

/// A network connection's maps and cluster while another connection's are
/// in the VM (see [`HostState::hold_maps_of`]).
#[derive(Debug, Default)]
pub(crate) struct ParkedMaps {
    /// The connection's contexts in the VM (one per plugin the VM runs).
    pub(crate) contexts: Vec<u32>,
    pub(crate) maps: StreamMaps,
    pub(crate) cluster_name: Option<String>,
}

/// Stream attributes that are not headers.
#[derive(Debug, Default)]
pub(crate) struct StreamInfo {
    /// The stream's (or connection's) filter state, shared with the maps
    /// of the chain's other VMs.
    pub(crate) filter_state: FilterState,
    /// What Envoy's stream info knows of the HTTP stream (or a network
    /// filter's connection) as a whole.
    pub(crate) facts: Option<Facts>,
}

/// Envoy's legacy response flags (`StreamInfo::legacyResponseFlags`), the
/// bits `response.flags` carries.
pub(crate) mod flags {
    /// `UT`: the upstream did not answer within the route's timeout.
    pub(crate) const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    /// `UF`: the connection to the upstream failed.
    pub(crate) const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    /// `UC`: the upstream connection closed before the response.
    pub(crate) const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// `NR`: no route matched the request.
    pub(crate) const NO_ROUTE_FOUND: u64 = 0x100;
    /// `DC`: the client closed its connection before the stream ended.
    pub(crate) const DOWNSTREAM_CONNECTION_TERMINATION: u64 = 0x4000;
    /// `UPE`: the upstream's response broke off (an HTTP/1 protocol error).
    pub(crate) const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;
    /// `NC`: the route's cluster is not one the bootstrap defines.
    pub(crate) const NO_CLUSTER_FOUND: u64 = 0x100_0000;
}

/// What Envoy's stream info knows of an HTTP stream as a whole: its timing,
/// byte counts, response, fate and upstream. One stream's facts are shared by
/// its maps in every VM of the chain, and the chain updates them as the
/// stream goes (Envoy has one stream info per stream, whichever filter reads
/// it).
#[derive(Debug, Default)]
pub(crate) struct StreamFacts {
    /// When the stream started, on the virtual wall clock (`request.time`).
    pub(crate) start: Option<SystemTime>,
    /// When it started and when it ended (access logging), on the virtual
    /// monotonic clock (`request.duration`).
    pub(crate) started_at: Duration,
    pub(crate) ended_at: Option<Duration>,
    /// The downstream connection's id (`connection.id`).
    pub(crate) connection_id: u64,
    /// The request body bytes that arrive with the headers, those the
    /// filters were handed so far, and those the connection manager has
    /// received (`request.size` without a `content-length`,
    /// `request.total_size`).
    pub(crate) with_headers: u64,
    pub(crate) handed_over: u64,
    pub(crate) bytes_received: u64,
    /// A filter held the request headers while the stream waited (for a
    /// callout, a timer...): the codec read the rest of the request meanwhile.
    pub(crate) headers_waited: bool,
    /// Response body bytes sent to the client (`response.size`).
    pub(crate) bytes_sent: u64,
    /// The response status, once there is a response (`response.code`).
    pub(crate) response_code: Option<u16>,
    /// `via_upstream`, or the details of whoever answered or ended the
    /// stream (`response.code_details`).
    pub(crate) response_details: Option<std::borrow::Cow<'static, str>>,
    /// The status of a local reply on its way through the encoder filters:
    /// Envoy's stream info has it as the response code until the connection
    /// manager encodes the headers (for a gRPC request, whose reply goes out
    /// as `200`, the filters' response callbacks still read the reply's).
    pub(crate) reply_code: Option<u16>,
    /// Envoy's legacy response flags ([`flags`]).
    pub(crate) flags: u64,
    /// The router found no route: no cluster, route or endpoints.
    pub(crate) no_route: bool,
    /// Envoy's `is_grpc_request`: the client's request headers had a gRPC
    /// `content-type` ([`crate::hcm::is_grpc_request`]), so local replies
    /// to the stream are gRPC trailers-only responses.
    pub(crate) grpc_request: bool,
    /// The client's request is a `HEAD` ([`crate::hcm::is_head_request`]):
    /// its response, the upstream's or a local reply, has no body.
    pub(crate) head_request: bool,
    /// The facts of a network filter's connection (the connection's own
    /// stream info), not of an HTTP stream: bytes are counted as the
    /// connection reads and writes them, and there is no protocol.
    pub(crate) network: bool,
    /// Upstream attempts: 1 once the router sent the request.
    pub(crate) attempts: u64,
    /// The upstream host and the local address of the connection to it,
    /// once the router sent the request.
    pub(crate) upstream_host: Option<std::net::SocketAddr>,
    pub(crate) upstream_local: Option<std::net::SocketAddr>,
    /// Why the connection to the upstream failed, if it did
    /// (`upstream.transport_failure_reason`; empty otherwise).
    pub(crate) transport_failure: Option<&'static str>,
    /// The upstream's response time, once its last byte arrived
    /// (`response.backend_latency`), and until then, once the response is
    /// on its way.
    pub(crate) backend_latency: Option<Duration>,
    pub(crate) latency_pending: Option<Duration>,
}

impl StreamFacts {
    /// Facts for a stream that starts now.
    pub(crate) fn new(start: SystemTime, started_at: Duration, connection_id: u64) -> Self {
        Self {
            start: Some(start),
            started_at,
            connection_id,
            ..Self::default()
        }
    }

    /// `bytes` more of the request body are handed to the filters: they
    /// have arrived (if they had not already).
    pub(crate) fn received(&mut self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.handed_over = self.handed_over.saturating_add(bytes);
        self.bytes_received = self.bytes_received.max(self.handed_over);
    }

    /// What came with the request headers has arrived: Envoy's codec reads
    /// on while a filter holds the headers.
    pub(crate) fn received_with_headers(&mut self) {
        self.headers_waited = true;
        self.bytes_received = self.bytes_received.max(self.with_headers);
    }

    /// The upstream's response arrived in full: its latency becomes known.
    pub(crate) fn upstream_complete(&mut self) {
        if let Some(latency) = self.latency_pending.take() {
            self.backend_latency = Some(latency);
        }
    }

    /// Sets the response status and details.
    pub(crate) fn respond(&mut self, code: Option<u16>, details: std::borrow::Cow<'static, str>) {
        self.response_code = code;
        self.response_details = Some(details);
    }

    /// Details for a stream ended without any yet (Envoy's
    /// `setResponseCodeDetails` when none are set).
    pub(crate) fn details_unless_set(&mut self, details: &'static str) {
        if self.response_details.is_none() {
            self.response_details = Some(std::borrow::Cow::Borrowed(details));
        }
    }
}

/// A stream's [`StreamFacts`], shared by its maps in the chain's VMs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts(Arc<Mutex<StreamFacts>>);

impl Facts {
    /// Facts for a stream that starts now.
    pub(crate) fn new(facts: StreamFacts) -> Self {
        Self(Arc::new(Mutex::new(facts)))
    }

    /// Whether this is the only handle on these facts.
    pub(crate) fn unshared(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// The facts, to read or update.
    pub(crate) fn get(&self) -> MutexGuard<'_, StreamFacts> {
        // A panic while the lock was held leaves plain data: carry on with it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A stream's (or a network filter's connection's) filter state, by key:
/// properties written with `proxy_set_property` (under `wasm.<path>`) and
/// objects stored with `set_envoy_filter_state`. Envoy keeps one per stream,
/// which every filter of the chain reads and writes, whichever VM it runs in:
/// the chain gives each VM's maps the same handle as the stream starts.
#[derive(Clone, Debug, Default)]
pub(crate) struct FilterState(Arc<Mutex<HashMap<Vec<u8>, crate::abi::filter_state::Entry>>>);

impl FilterState {
    /// The entries, to read or update.
    pub(crate) fn get(&self) -> MutexGuard<'_, HashMap<Vec<u8>, crate::abi::filter_state::Entry>> {
        // A panic while the lock was held leaves plain data: carry on with it.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A callout waiting for its answer.
#[derive(Debug)]
pub(crate) struct PendingCall {
    pub(crate) token: u32,
    pub(crate) cluster: String,
    pub(crate) request: http::Request<bytes::Bytes>,
    /// `None`: no timeout (`timeout_ms` 0).
    pub(crate) timeout: Option<std::time::Duration>,
    /// When it was sent (virtual monotonic time).
    pub(crate) sent_at: Duration,
    /// The cluster's response, once asked (to know when it arrives).
    pub(crate) answer: Option<http::Response<bytes::Bytes>>,
    /// The context that made it (a stream's, or the root's): its answer
    /// resumes that stream.
    pub(crate) context: u32,
    /// Its place in the chain's event order, once the chain has seen it.
    pub(crate) seq: Option<u64>,
}

/// The answer to a callout, readable during `on_http_call_response`.
#[derive(Debug)]
pub(crate) struct CallResponse {
    pub(crate) headers: Fields,
    pub(crate) body: Vec<u8>,
}

/// A local reply: one a filter requested with `proxy_send_local_response`, or
/// one of Envoy's own. [`ConnectionManager::local_reply`] makes the response
/// (a gRPC trailers-only one to a gRPC request).
///
/// [`ConnectionManager::local_reply`]: crate::hcm::ConnectionManager::local_reply
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalReplyRequest {
    /// The HTTP status asked for (a gRPC reply is sent `200`).
    pub(crate) status: u32,
    /// Envoy's response-code details.
    pub(crate) details: String,
    /// The body (a gRPC reply's `grpc-message`).
    pub(crate) body: Vec<u8>,
    /// Headers added to the reply.
    pub(crate) headers: Fields,
    /// The gRPC status asked for; -1 (or any value past 16) for the one the
    /// HTTP status stands for.
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
    /// `proxy_continue_stream(Downstream)`: Envoy's `continueReading`, for the
    /// context the call acted on (a connection's, or a root's: a no-op).
    pub(crate) continue_downstream: Option<u32>,
    /// `proxy_close_stream(Downstream | Upstream)`: both close the downstream
    /// connection (`FlushWrite`) in Envoy; the context the call acted on.
    pub(crate) close_connection: Option<u32>,
}

impl Deferred {
    /// Whether no action was deferred.
    pub(crate) fn is_empty(&self) -> bool {
        !self.continue_request
            && !self.continue_response
            && !self.close_stream
            && self.local_reply.is_none()
            && self.would_crash.is_none()
            && self.continue_downstream.is_none()
            && self.close_connection.is_none()
    }
}

/// Deferred actions by the context they act on (the effective context of the
/// host call that asked for them, as in Envoy: a callout response delivered to
/// the root context acts on the stream the guest made effective).
#[derive(Debug, Default)]
pub(crate) struct DeferredActions(Vec<(u32, Deferred)>);

impl DeferredActions {
    /// Whether no context has an action deferred.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The actions deferred for `context`, created empty if there are none.
    pub(crate) fn entry(&mut self, context: u32) -> &mut Deferred {
        let at = match self.0.iter().position(|(c, _)| *c == context) {
            Some(at) => at,
            None => {
                self.0.push((context, Deferred::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    /// Takes the actions deferred for `context`.
    pub(crate) fn take(&mut self, context: u32) -> Deferred {
        match self.0.iter().position(|(c, _)| *c == context) {
            Some(at) => self.0.swap_remove(at).1,
            None => Deferred::default(),
        }
    }

    /// Whether `context` has an action deferred.
    pub(crate) fn has(&self, context: u32) -> bool {
        self.0.iter().any(|(c, d)| *c == context && !d.is_empty())
    }

    /// The contexts with actions deferred.
    pub(crate) fn contexts(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().map(|(c, _)| *c)
    }

    /// Takes every context's actions, in the order the contexts first had
    /// one (a root callback can act on several connections).
    pub(crate) fn take_all(&mut self) -> Vec<(u32, Deferred)> {
        std::mem::take(&mut self.0)
    }

    /// Drops every deferred action.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
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

/// What a VM keeps for each plugin it runs: Envoy gives every plugin of a
/// shared VM its own root context, and timers, callouts and gRPC calls belong
/// to the root context that made them.
#[derive(Debug)]
pub(crate) struct RootState {
    pub(crate) meta: PluginMeta,
    /// The plugin's root context id.
    pub(crate) root_context_id: u32,
    pub(crate) tick_period_ms: u32,
    /// When the next `on_tick` is due (virtual monotonic time), if a period is set.
    pub(crate) next_tick: Option<Duration>,
    /// The root context's gRPC calls and streams.
    pub(crate) grpc: crate::grpc::GrpcState,
    /// Callouts made and not answered yet, in order.
    pub(crate) pending_calls: std::collections::VecDeque<PendingCall>,
    /// Properties the root context declared with `declare_property`: how
    /// `proxy_set_property` creates them in a stream.
    pub(crate) declared: HashMap<Vec<u8>, crate::abi::filter_state::Prototype>,
}

impl RootState {
    fn new(meta: PluginMeta) -> Self {
        Self {
            meta,
            root_context_id: 0,
            tick_period_ms: 0,
            next_tick: None,
            grpc: crate::grpc::GrpcState::default(),
            pending_calls: std::collections::VecDeque::new(),
            declared: HashMap::new(),
        }
    }
}

/// The store data of one VM, which runs one or more plugins (Envoy shares a
/// VM between plugins with equal vm_id, VM configuration and code).
pub(crate) struct HostState {
    /// The plugins of this VM, in the order they were started; the first one
    /// created the VM (its VM configuration and environment are the VM's).
    pub(crate) roots: Vec<RootState>,
    /// The plugin whose callback runs (or whose slot last took the state).
    pub(crate) current: usize,
    pub(crate) exports: GuestExports,
    pub(crate) limits: StoreLimits,
    /// True while `_initialize`/`main`/`_start` run.
    pub(crate) in_init: bool,
    pub(crate) phase: Phase,
    /// The context the running callback was delivered to.
    pub(crate) active_context: u32,
    /// Set by `proxy_set_effective_context` for the rest of the callback.
    pub(crate) effective_context: u32,
    /// Live context ids (roots and streams), each with the index of its plugin
    /// in `roots`.
    pub(crate) contexts: Vec<(u32, usize)>,
    pub(crate) maps: StreamMaps,
    pub(crate) deferred: DeferredActions,
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
    /// Network connections open at once: the contexts of the connection
    /// whose `maps` and `cluster_name` the VM holds, and those of the VM's
    /// other open connections, parked (empty for HTTP chains).
    pub(crate) maps_owner: Vec<u32>,
    pub(crate) parked: Vec<ParkedMaps>,
    /// The route's name and its virtual host's (`xds.route_name`,
    /// `xds.virtual_host_name`), for an HTTP filter's streams.
    pub(crate) route_name: Option<String>,
    pub(crate) virtual_host_name: Option<String>,
    /// The downstream connection's addresses (`source.*`, `destination.*`).
    pub(crate) source_address: Option<std::net::SocketAddr>,
    pub(crate) destination_address: Option<std::net::SocketAddr>,
    /// Clusters `proxy_http_call` may call.
    pub(crate) clusters: Vec<String>,
    /// Clusters with a gRPC service (`proxy_grpc_call`, `proxy_grpc_stream`).
    pub(crate) grpc_clusters: Vec<String>,
    /// Those whose service answers streams while they are open.
    pub(crate) grpc_stream_clusters: Vec<String>,
    /// The VM's gRPC call and stream tokens.
    pub(crate) grpc_tokens: crate::grpc::GrpcTokens,
    /// The answer being delivered by `on_http_call_response`.
    pub(crate) call_response: Option<CallResponse>,
    /// The last HTTP callout token (Envoy's: 4, 8, 12, ..., one sequence per VM).
    last_call_token: u32,
    /// Names a stream context declared with `declare_property` (Envoy keeps
    /// them in that context, where nothing reads them), by context.
    pub(crate) stream_declared: Vec<(u32, Vec<u8>)>,
    /// What stream contexts still point at ([`HeldMaps`]), by context, until
    /// their `on_log`.
    held: Vec<(u32, HeldMaps)>,
    /// This VM's metric ids: id → (type, stat name).
    metrics: HashMap<u32, (MetricType, String)>,
    /// The next id per metric type (Envoy starts each at type + 4).
    next_metric_id: [u32; 3],
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("plugin", &self.root().meta.name)
            .field("phase", &self.phase)
            .field("active_context", &self.active_context)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
impl HostState {
    /// A VM's state with one plugin `p` whose root context is 1, for unit
    /// tests of host calls.
    pub(crate) fn for_tests() -> Self {
        let meta = PluginMeta {
            name: "p".to_owned(),
            root_id: String::new(),
            vm_id: String::new(),
            vm_configuration: Vec::new(),
            plugin_configuration: Vec::new(),
            environment: Vec::new(),
        };
        let mut state = Self::new(meta, SystemTime::UNIX_EPOCH, 0, Arc::default());
        state.roots[0].root_context_id = 1;
        state
    }
}

impl HostState {
    pub(crate) fn new(meta: PluginMeta, now: SystemTime, seed: u64, shared: Arc<Shared>) -> Self {
        Self {
            roots: vec![RootState::new(meta)],
            current: 0,
            exports: GuestExports::default(),
            limits: StoreLimitsBuilder::new()
                .memory_size(MAX_MEMORY_BYTES)
                .build(),
            in_init: false,
            phase: Phase::Idle,
            active_context: 0,
            effective_context: 0,
            contexts: Vec::new(),
            maps: StreamMaps::default(),
            deferred: DeferredActions::default(),
            now,
            monotonic: Duration::ZERO,
            rng: seed,
            log_level: LogLevel::Trace,
            host_calls: 0,
            vm_key: shared.next_vm_key(),
            shared,
            cluster_name: None,
            maps_owner: Vec::new(),
            parked: Vec::new(),
            route_name: None,
            virtual_host_name: None,
            source_address: None,
            destination_address: None,
            clusters: Vec::new(),
            grpc_clusters: Vec::new(),
            grpc_stream_clusters: Vec::new(),
            grpc_tokens: crate::grpc::GrpcTokens::default(),
            call_response: None,
            stream_declared: Vec::new(),
            held: Vec::new(),
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

    /// The actions deferred for the current context (see
    /// [`HostState::current_context`]).
    pub(crate) fn defer(&mut self) -> &mut Deferred {
        let context = self.current_context();
        self.deferred.entry(context)
    }

    /// Whether the current context is a stream (not a root) context.
    pub(crate) fn in_stream(&self) -> bool {
        let current = self.current_context();
        current != 0 && !self.roots.iter().any(|r| r.root_context_id == current)
    }

    /// Makes the VM hold the maps (and cluster) of the network connection
    /// whose contexts in this VM are `contexts`, parking those of the
    /// connection that held them; a connection the VM has not seen gets new
    /// maps. Envoy reads a connection's buffers and stream info through the
    /// context a host call acts on, so the maps follow it.
    pub(crate) fn hold_maps_of(&mut self, contexts: &[u32]) {
        if self.maps_owner == contexts {
            return;
        }
        let theirs = self
            .parked
            .iter()
            .position(|p| p.contexts == contexts)
            .map(|at| self.parked.swap_remove(at))
            .unwrap_or_else(|| ParkedMaps {
                contexts: contexts.to_vec(),
                ..ParkedMaps::default()
            });
        let mine = ParkedMaps {
            contexts: std::mem::replace(&mut self.maps_owner, theirs.contexts),
            maps: std::mem::replace(&mut self.maps, theirs.maps),
            cluster_name: std::mem::replace(&mut self.cluster_name, theirs.cluster_name),
        };
        if !mine.contexts.is_empty() {
            self.parked.push(mine);
        }
    }

    /// `proxy_set_effective_context(context)`: the maps of the connection
    /// `context` belongs to, if another connection's are held.
    pub(crate) fn hold_maps_of_context(&mut self, context: u32) {
        if self.maps_owner.contains(&context) {
            return;
        }
        if let Some(contexts) = self
            .parked
            .iter()
            .find(|p| p.contexts.contains(&context))
            .map(|p| p.contexts.clone())
        {
            self.hold_maps_of(&contexts);
        }
    }

    /// Forgets the maps of a network connection that ended.
    pub(crate) fn drop_maps_of(&mut self, contexts: &[u32]) {
        self.parked.retain(|p| p.contexts != contexts);
        if self.maps_owner == contexts {
            self.maps_owner.clear();
        }
    }

    /// Adds a plugin to this VM; returns its index in `roots`.
    pub(crate) fn add_root(&mut self, meta: PluginMeta) -> usize {
        self.roots.push(RootState::new(meta));
        self.roots.len() - 1
    }

    /// Whether `context` is a live context of this VM.
    pub(crate) fn has_context(&self, context: u32) -> bool {
        self.contexts.iter().any(|&(c, _)| c == context)
    }

    /// Forgets a context that was deleted.
    pub(crate) fn remove_context(&mut self, context: u32) {
        // Ids are unique; a stream's context is among the latest.
        if let Some(at) = self.contexts.iter().rposition(|&(c, _)| c == context) {
            self.contexts.remove(at);
        }
        self.stream_declared.retain(|&(c, _)| c != context);
        self.held.retain(|(c, _)| *c != context);
    }

    /// What stream `context` still points at (created holding nothing).
    pub(crate) fn hold(&mut self, context: u32) -> &mut HeldMaps {
        let at = match self.held.iter().position(|(c, _)| *c == context) {
            Some(at) => at,
            None => {
                self.held.push((context, HeldMaps::default()));
                self.held.len() - 1
            }
        };
        &mut self.held[at].1
    }

    /// Takes what stream `context` still points at, for its `on_log`.
    pub(crate) fn take_held(&mut self, context: u32) -> HeldMaps {
        match self.held.iter().position(|(c, _)| *c == context) {
            Some(at) => self.held.swap_remove(at).1,
            None => HeldMaps::default(),
        }
    }

    /// The index of the plugin host calls act for: the plugin of the
    /// effective context if the guest set one, else the running callback's.
    fn root_index(&self) -> usize {
        if self.effective_context != 0
            && let Some(&(_, plugin)) = self
                .contexts
                .iter()
                .find(|&&(c, _)| c == self.effective_context)
        {
            return plugin;
        }
        self.current
    }

    /// The plugin host calls act for (see [`HostState::root_index`]): its
    /// name, root context, timers and callouts.
    pub(crate) fn root(&self) -> &RootState {
        let i = self.root_index();
        &self.roots[i.min(self.roots.len() - 1)]
    }

    /// Mutable [`HostState::root`].
    pub(crate) fn root_mut(&mut self) -> &mut RootState {
        let i = self.root_index().min(self.roots.len() - 1);
        &mut self.roots[i]
    }

    /// The plugin that created the VM: its VM configuration and environment
    /// are the VM's.
    pub(crate) fn first_root(&self) -> &RootState {
        &self.roots[0]
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
            plugin = %self.root().meta.name,
            ?level,
            "{message}"
        );
        self.shared.logs().push(LogRecord {
            plugin: self.root().meta.name.clone(),
            level,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::HostState;

    #[test]
    fn a_vm_holds_the_maps_of_the_connection_a_context_belongs_to() {
        let mut state = HostState::for_tests();
        state.hold_maps_of(&[2]);
        state.maps.downstream_data = Some(b"first".to_vec());
        state.cluster_name = Some("one".to_owned());
        // A new connection gets fresh maps; the first one's are parked.
        state.hold_maps_of(&[3, 4]);
        assert_eq!(state.maps.downstream_data, None);
        assert_eq!(state.cluster_name, None);
        state.maps.downstream_data = Some(b"second".to_vec());
        // Making a context effective brings its connection's maps back.
        state.hold_maps_of_context(2);
        assert_eq!(state.maps.downstream_data.as_deref(), Some(&b"first"[..]));
        assert_eq!(state.cluster_name.as_deref(), Some("one"));
        state.hold_maps_of_context(4);
        assert_eq!(state.maps.downstream_data.as_deref(), Some(&b"second"[..]));
        // A root context (or one no connection owns) changes nothing.
        state.hold_maps_of_context(1);
        assert_eq!(state.maps_owner, [3, 4]);
        // A connection that ended is forgotten.
        state.drop_maps_of(&[2]);
        state.hold_maps_of_context(2);
        assert_eq!(state.maps_owner, [3, 4]);
        state.drop_maps_of(&[3, 4]);
        assert!(state.maps_owner.is_empty() && state.parked.is_empty());
    }
}
