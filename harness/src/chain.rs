//! A filter chain of proxy-wasm plugins in front of an upstream.
//!
//! # Order
//! As in Envoy, the request goes through the filters in the order they were added
//! (0 → n) and the response comes back in reverse (n → 0). A filter that pauses
//! holds the rest of the chain; a local reply short-circuits it, and the response
//! path then runs through the filters whose request headers callback ran (from
//! a headers callback, the replying filter and those before it). A local reply
//! to a gRPC request is a gRPC trailers-only response (see
//! `ConnectionManager::local_reply`): the filters see headers that end the
//! stream.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::fields::{Fields, Kind};
pub(crate) use crate::grpc::GrpcServices;
use crate::grpc::{self, GrpcCallout, GrpcService, GrpcStreamService};
use crate::hcm::{ConnectionManager, HttpCache};
use crate::outcome::{Callout, LocalReply, LogLevel, Outcome, StartTime};
use crate::plugin::Plugin;
use crate::shared::{MetricValue, Shared};
use crate::state::{
    Facts, FilterState, Held, LocalReplyRequest, PendingCall, PluginMeta, StreamFacts, flags,
};
use crate::upstream::{Upstream, UpstreamFault};
use crate::vm::{Trap, Vm, VmTemplate};
use crate::xds::Node;
use crate::{Engine, Error, Result};

mod sched;
mod trailers;
pub use sched::{Arrival, Disconnect};
use sched::{Delivery, Io, Wait};
use trailers::PendingTrailers;

/// Envoy's `failure_policy`: what happens to requests once a plugin's VM has
/// failed (trapped). Whatever the policy, the stream (or connection) whose
/// callback trapped is answered 503 (closed), and a stream paused in the VM
/// meanwhile stays paused until its client leaves: Envoy calls a failed VM
/// no more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Answer 503 with details `wasm_fail_stream` (Envoy's default); a network
    /// filter closes the connection.
    #[default]
    FailClosed,
    /// Skip the filter.
    FailOpen,
    /// Start a fresh VM for new requests (connections) once the backoff since
    /// the VM was loaded has passed (see [`Filter::reload_backoff`]); until
    /// then, and if the reload fails, answer 503 (close) like
    /// [`FailurePolicy::FailClosed`].
    FailReload,
}

/// Envoy's default `reload_config.backoff.base_interval`.
const DEFAULT_RELOAD_BACKOFF: Duration = Duration::from_secs(1);

/// One filter of a chain: a plugin plus its Envoy `PluginConfig`/`VmConfig`.
#[derive(Clone, Debug)]
#[must_use]
pub struct Filter {
    plugin: Plugin,
    meta: PluginMeta,
    failure_policy: FailurePolicy,
    reload_backoff: Duration,
    allow_stop: bool,
}

impl Filter {
    /// A filter running `plugin` with an empty configuration, named `plugin`.
    pub fn new(plugin: Plugin) -> Self {
        Self {
            plugin,
            meta: PluginMeta {
                name: "plugin".to_owned(),
                root_id: String::new(),
                vm_id: String::new(),
                vm_configuration: Vec::new(),
                plugin_configuration: Vec::new(),
                environment: Vec::new(),
            },
            failure_policy: FailurePolicy::default(),
            reload_backoff: DEFAULT_RELOAD_BACKOFF,
            allow_stop: false,
        }
    }

    /// `PluginConfig.name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.meta.name = name.into();
        self
    }

    /// `PluginConfig.root_id`.
    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.meta.root_id = root_id.into();
        self
    }

    /// `VmConfig.vm_id`.
    ///
    /// As in Envoy, filters of a chain with equal vm_id, VM configuration
    /// ([`Filter::vm_configuration`]) and module (the same bytes loaded through
    /// one [`Engine`]) share one VM: the module is instantiated and initialized
    /// once, and each filter gets its own root context in it, started in chain
    /// order (`proxy_on_context_create(root, 0)`, `proxy_on_vm_start`,
    /// `proxy_on_configure`). Module globals are shared between those filters,
    /// context ids (root and stream contexts of all of them) come from one
    /// counter, and a trap in any of them fails the VM for all (each then
    /// applies its own [`FailurePolicy`]). Timers, callouts, queues and the
    /// `plugin_name` / `plugin_root_id` / `plugin_vm_id` properties stay each
    /// filter's own. Filters that differ in any of the three get separate VMs;
    /// the default vm_id is empty, so two filters of the same module and VM
    /// configuration share a VM unless given different vm_ids.
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.meta.vm_id = vm_id.into();
        self
    }

    /// `PluginConfig.configuration`, as the bytes Envoy passes (a
    /// `StringValue`'s text).
    pub fn configuration(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.meta.plugin_configuration = config.into();
        self
    }

    /// `VmConfig.configuration`.
    pub fn vm_configuration(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.meta.vm_configuration = config.into();
        self
    }

    /// `VmConfig.environment_variables.key_values`, visible through WASI `environ`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.environment.push((key.into(), value.into()));
        self
    }

    /// `PluginConfig.failure_policy`.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// `PluginConfig.reload_config.backoff.base_interval` for
    /// [`FailurePolicy::FailReload`] (default 1 s). As in Envoy, each reload
    /// attempt waits a jittered interval in `[base, 1.5 × base)` since the VM was
    /// last loaded; the jitter comes from the chain's seed.
    pub fn reload_backoff(mut self, base_interval: Duration) -> Self {
        self.reload_backoff = base_interval;
        self
    }

    /// `PluginConfig.allow_on_headers_stop_iteration` (Envoy 1.35+): a headers
    /// callback that returns Pause (1) holds the headers as Envoy's
    /// `StopIteration`, and the body is still delivered to the filter, which can
    /// change the held headers until a body callback continues. Off (Envoy's
    /// default), Pause holds headers and body until the filter resumes.
    pub fn allow_on_headers_stop_iteration(mut self, allow: bool) -> Self {
        self.allow_stop = allow;
        self
    }
}

impl Filter {
    /// Whether Envoy runs this filter and `other` in one VM: equal vm_id, VM
    /// configuration and code (Envoy's VM key).
    pub(crate) fn same_vm_key(&self, other: &Filter) -> bool {
        self.meta.vm_id == other.meta.vm_id
            && self.meta.vm_configuration == other.meta.vm_configuration
            && self.plugin.same_code(&other.plugin)
    }

    /// What a network chain needs to start this filter's VM.
    pub(crate) fn parts(&self) -> (&Plugin, &PluginMeta, FailurePolicy) {
        (&self.plugin, &self.meta, self.failure_policy)
    }

    /// `reload_config.backoff.base_interval`.
    pub(crate) fn backoff(&self) -> Duration {
        self.reload_backoff
    }
}

/// FAIL_RELOAD's backoff as Envoy applies it when a stream or a connection
/// starts on a failed VM: `base` plus a jitter in `[0, base / 2)` drawn from
/// `random` must have passed since the VM was loaded.
pub(crate) fn reload_due(base: Duration, loaded_at: Duration, now: Duration, random: u64) -> bool {
    let base = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
    let jitter = random % (base / 2).max(1);
    now.saturating_sub(loaded_at) >= Duration::from_millis(base.saturating_add(jitter))
}

/// Envoy's jittered backoff draws from `[base, 1.5 × base)` and needs
/// `base / 2 ≥ 1 ms`: a smaller base crashes it.
pub(crate) fn check_reload_backoff(
    plugin: &str,
    policy: FailurePolicy,
    base: Duration,
) -> Result<()> {
    if policy == FailurePolicy::FailReload && base.as_millis() < 2 {
        return Err(Error::WouldCrashEnvoy {
            plugin: plugin.to_owned(),
            reason: "reload backoff base_interval below 2 ms: Envoy's jittered backoff \
                     draws from [base, 1.5 × base) and needs base/2 ≥ 1 ms",
        });
    }
    Ok(())
}

/// The clusters plugins can call, with the upstream that answers each.
#[derive(Default)]
pub(crate) struct Clusters(pub(crate) Vec<(String, Box<dyn Upstream>)>);

impl Clusters {
    /// The cluster names, for the VMs' checks at dispatch.
    pub(crate) fn names(&self) -> Vec<String> {
        self.0.iter().map(|(n, _)| n.clone()).collect()
    }
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

/// Builds a [`Chain`].
#[derive(Debug)]
#[must_use]
pub struct ChainBuilder {
    filters: Vec<Filter>,
    clusters: Clusters,
    grpc: GrpcServices,
    hcm: ConnectionManager,
    node: Node,
    log_level: LogLevel,
    start: SystemTime,
    seed: u64,
    fuel_per_call: u64,
}

impl ChainBuilder {
    /// Adds a cluster that filters can call with `proxy_http_call`, answered by
    /// `upstream`. Calls to other clusters are refused with `BadArgument`.
    ///
    /// A plugin may call out while it starts (`on_vm_start`, `on_configure`),
    /// as in Envoy: the answer reaches its root context when it is due, before
    /// a request that arrives later (at the next [`Chain::send`] or
    /// [`Chain::advance`]), and is reported with that call's outcome.
    pub fn cluster(mut self, name: impl Into<String>, upstream: impl Upstream + 'static) -> Self {
        self.clusters.0.push((name.into(), Box::new(upstream)));
        self
    }

    /// Adds a cluster with a gRPC service that filters can call with
    /// `proxy_grpc_call` and `proxy_grpc_stream` (by cluster name or a
    /// serialized `GrpcService` naming it), answered by `service` (see
    /// [`GrpcService`]).
    pub fn grpc_service(
        mut self,
        cluster: impl Into<String>,
        service: impl GrpcService + 'static,
    ) -> Self {
        self.grpc.add(cluster.into(), Box::new(service));
        self
    }

    /// Adds a cluster with a gRPC service that answers streams while they are
    /// open: `service` is told when a stream opens, of each message, of the
    /// half-close and of a reset, and answers at each point (see
    /// [`GrpcStreamService`]). Unary calls to it are streams of one message.
    pub fn grpc_stream_service(
        mut self,
        cluster: impl Into<String>,
        service: impl GrpcStreamService + 'static,
    ) -> Self {
        self.grpc.add_streaming(cluster.into(), Box::new(service));
        self
    }

    /// Appends a filter (see the type docs for ordering).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// The emulated connection manager's settings.
    pub fn connection_manager(mut self, hcm: ConnectionManager) -> Self {
        self.hcm = hcm;
        self
    }

    /// The bootstrap's `node`, which filters read as `xds.node` in every
    /// context (default: a bootstrap without one).
    pub fn node(mut self, node: Node) -> Self {
        self.node = node;
        self
    }

    /// Envoy's `wasm` logger level (default `info`): what `proxy_get_log_level`
    /// answers; lower lines are dropped.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// The virtual wall clock's start (default 2026-01-01T00:00:00Z).
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start = at;
        self
    }

    /// Wasm fuel each callback may burn before it is stopped with a trap
    /// (default 1 000 000 000, about a second). Envoy has no such limit; this keeps
    /// a runaway filter from hanging a test. Plugins loaded by an engine built
    /// with [`EngineBuilder::deadline_per_call`](crate::EngineBuilder::deadline_per_call)
    /// are bounded by that deadline instead, and ignore this.
    pub fn fuel_per_call(mut self, fuel: u64) -> Self {
        self.fuel_per_call = fuel;
        self
    }

    /// Seed for WASI `random_get` and generated request ids (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Starts every plugin: Envoy's load checks, module initialization,
    /// `on_vm_start` and `on_configure`.
    ///
    /// # Errors
    /// The first plugin that fails to start, e.g. [`Error::ConfigureFailed`].
    pub fn build(self) -> Result<Chain> {
        let shared = Arc::new(Shared::new(self.hcm.bootstrap(self.node)));
        let mut slots = Vec::with_capacity(self.filters.len());
        let template = VmTemplate::new(
            self.log_level,
            self.fuel_per_call,
            &self.clusters,
            &self.grpc,
        );
        for (i, filter) in self.filters.into_iter().enumerate() {
            let seed = self.seed.wrapping_add(i as u64);
            let sibling = slots
                .iter()
                .find(|s: &&Slot| s.filter.same_vm_key(&filter) && !s.vm.failed());
            let vm = template.join_or_start(
                sibling.map(|s| &s.vm),
                &filter.plugin,
                filter.meta.clone(),
                (self.start, Duration::ZERO, seed),
                &shared,
            )?;
            let mut slot = Slot {
                vm,
                policy: filter.failure_policy,
                reload_backoff: filter.reload_backoff,
                allow_stop: filter.allow_stop,
                loaded_at: Duration::ZERO,
                filter,
                seed,
                generation: 0,
            };
            wire(&mut slot.vm, &self.hcm);
            check_reload_backoff(&slot.vm.name(), slot.policy, slot.reload_backoff)?;
            slots.push(slot);
        }
        let mut chain = Chain {
            slots,
            clusters: self.clusters,
            grpc: self.grpc,
            shared,
            vm_template: template,
            hcm: self.hcm,
            now: self.start,
            rng: self.seed ^ 0x5EED,
            startup_logs: Vec::new(),
            date: None,
            http_cache: HttpCache::default(),
            scratch: Scratch::default(),
            connections: 0,
            retired: Vec::new(),
        };
        // Queues enqueued during start-up notify their registrants now.
        chain.deliver_queue_ready(&mut Vec::new(), true);
        // Callouts made while the plugins started were sent before anything
        // that happens later.
        for slot in &mut chain.slots {
            for call in &mut slot.vm.state().root_mut().pending_calls {
                call.seq.get_or_insert(0);
            }
        }
        chain.startup_logs = chain.drain_logs();
        for slot in &mut chain.slots {
            slot.vm.take_usage();
        }
        Ok(chain)
    }
}

/// Gives a started VM what its streams will see of the connection manager:
/// the route (its cluster, name and virtual host) and the connection's
/// addresses (a root context has neither while it starts, as in Envoy).
fn wire(vm: &mut Vm, hcm: &ConnectionManager) {
    let mut state = vm.state();
    state.cluster_name = hcm.route_cluster_name().map(str::to_owned);
    state.route_name = Some(hcm.route_name_value().to_owned());
    state.virtual_host_name = hcm.virtual_host_name_value().map(str::to_owned);
    let addresses = hcm.addresses();
    state.source_address = Some(addresses.source);
    state.destination_address = Some(addresses.destination);
}

#[derive(Debug)]
struct Slot {
    vm: Vm,
    policy: FailurePolicy,
    reload_backoff: Duration,
    /// When the VM was loaded (virtual monotonic time), for the reload backoff.
    loaded_at: Duration,
    /// What the VM was started from, to start a fresh one (FAIL_RELOAD).
    filter: Filter,
    seed: u64,
    /// `allow_on_headers_stop_iteration`.
    allow_stop: bool,
    /// How many times FAIL_RELOAD replaced the VM: a stream whose filter was
    /// created on an earlier one keeps that VM, which has failed.
    generation: u32,
}

impl Slot {
    /// Whether the VM a stream's filter was created on (its `generation`)
    /// has failed: the slot's VM failed, or a reload replaced it since.
    fn failed_for(&self, generation: u32) -> bool {
        self.generation != generation || self.vm.failed()
    }
}

/// A running filter chain. Send requests through it with [`Chain::send`], or
/// several at once, as concurrent streams, with [`Chain::send_all`].
#[derive(Debug)]
pub struct Chain {
    slots: Vec<Slot>,
    clusters: Clusters,
    grpc: GrpcServices,
    shared: Arc<Shared>,
    /// What a VM FAIL_RELOAD starts has in common with the others.
    vm_template: VmTemplate,
    hcm: ConnectionManager,
    now: SystemTime,
    rng: u64,
    startup_logs: Vec<crate::LogRecord>,
    /// The last `date` header formatted, with the time it gives.
    date: Option<(SystemTime, String)>,
    /// What turning header maps into `http` ones keeps between streams.
    http_cache: HttpCache,
    /// Per-stream working vectors, kept for the next stream.
    scratch: Scratch,
    /// Downstream connections so far (each stream has its own): the last
    /// connection's id.
    connections: u64,
    /// Callouts in flight from VMs FAIL_RELOAD replaced, with the key of the
    /// VM that made them: their cluster still answers, to nobody.
    retired: Vec<(u64, PendingCall)>,
}

/// The per-filter vectors a stream works with, kept between streams so that
/// each request does not allocate them again.
#[derive(Debug, Default)]
struct Scratch {
    progress: Vec<Progress>,
    /// Body bytes each filter buffered.
    buffered: Vec<Option<Vec<u8>>>,
    /// Filters that buffered the end of the stream while a callout is in flight.
    waiting_at_end: Vec<bool>,
    /// The filters a body pass goes through, in order.
    order: Vec<usize>,
    /// Filters whose access log ran, with their stream context.
    logged: Vec<(usize, u32)>,
    /// The last stream's header maps, for their room.
    request_headers: Fields,
    response_headers: Fields,
    /// An earlier stream's stream info, for its room once nothing else
    /// holds it.
    facts: Option<Facts>,
    /// The scheduler's look at the VMs, for its room.
    scan: sched::Scan,
}

/// The largest header map buffer kept for the next stream; a larger one is
/// dropped with its stream.
const MAX_KEPT_FIELDS_BYTES: usize = 64 * 1024;

impl Scratch {
    /// Keeps the stream's header maps for their room, unless they grew large.
    fn keep(&mut self, request: Fields, response: Fields) {
        if request.capacity_bytes() <= MAX_KEPT_FIELDS_BYTES {
            self.request_headers = request;
        }
        if response.capacity_bytes() <= MAX_KEPT_FIELDS_BYTES {
            self.response_headers = response;
        }
    }
}

/// `v`, emptied and refilled with `len` copies of `value`.
fn refill<T: Clone>(mut v: Vec<T>, len: usize, value: T) -> Vec<T> {
    v.clear();
    v.resize(len, value);
    v
}

/// `order`, emptied and filled with `filters`.
fn fill(mut order: Vec<usize>, filters: impl Iterator<Item = usize>) -> Vec<usize> {
    order.clear();
    order.extend(filters);
    order
}

/// What happened outside any request, while [`Chain::advance`] moved the clock.
#[derive(Debug)]
#[non_exhaustive]
pub struct Background {
    /// What the plugins logged (in `on_tick` and callout responses).
    pub logs: Vec<crate::LogRecord>,
    /// Callouts made from `on_tick`, with their answers.
    pub callouts: Vec<Callout>,
    /// gRPC calls and streams answered meanwhile (made from `on_tick`, or
    /// earlier and timed out now).
    pub grpc: Vec<GrpcCallout>,
    /// Plugins that trapped meanwhile.
    pub traps: Vec<String>,
}

/// Per-filter progress of one stream.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// The stream context id Envoy gives the filter when the stream starts
    /// (`createFilter`, in chain order); the context itself is created later.
    reserved: Option<u32>,
    /// The stream context id in this filter's VM, once created.
    context: Option<u32>,
    /// Whether the filter's request callbacks ran (its encoder runs on the way back).
    decoded: bool,
    /// The filter's VM when the stream started ([`Slot::generation`]).
    generation: u32,
}

/// Who answers the client instead of the upstream.
struct Reply {
    /// The filter that sent it; `None` for the router (no route, no cluster).
    slot: Option<usize>,
    request: LocalReplyRequest,
}

/// Envoy's HTTP/1 codec closes the connection after a local reply sent
/// before the request was fully received, and after a local reply 400 (Envoy
/// takes it for a messaging error: `onLocalReply`): marks `response` so, and
/// says whether it did.
fn close_after_reply(
    response: &mut http::Response<Bytes>,
    reply: &LocalReplyRequest,
    request_complete: bool,
) -> bool {
    let close = !request_complete || reply.status == 400;
    if close {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    close
}

/// What [`LocalReply::plugin`] says when the router answered.
const ROUTER: &str = "envoy.filters.http.router";
/// [`LocalReply::plugin`] of a reply the connection manager sends before the
/// filters.
const CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";

/// Envoy's local reply to a stream whose VM failed: `503`, gRPC status 14
/// (`UNAVAILABLE`) to a gRPC request.
fn fail_stream() -> LocalReplyRequest {
    LocalReplyRequest {
        status: 503,
        details: "wasm_fail_stream".to_owned(),
        body: Vec::new(),
        headers: Fields::new(Kind::Plain),
        grpc_status: 14,
    }
}

/// Envoy's local reply when a filter buffers a body past the buffer limit.
fn too_large(direction: Direction) -> LocalReplyRequest {
    let (status, text, details) = match direction {
        Direction::Request => (413, "Payload Too Large", "request_payload_too_large"),
        Direction::Response => (500, "Internal Server Error", "response_payload_too_large"),
    };
    LocalReplyRequest {
        status,
        details: details.to_owned(),
        body: text.as_bytes().to_vec(),
        headers: Fields::new(Kind::Plain),
        grpc_status: -1,
    }
}

/// Which way a callback's headers travel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

impl Direction {
    /// Where a context's map of this direction's headers is lent to it.
    fn headers(self, maps: &mut crate::state::StreamMaps) -> &mut Option<Fields> {
        match self {
            Direction::Request => &mut maps.request_headers,
            Direction::Response => &mut maps.response_headers,
        }
    }
}

/// What a filter's callback left the stream with, once the actions it deferred
/// and its VM's failure policy are applied.
enum After {
    /// The filter sent a local reply.
    Reply(LocalReplyRequest),
    /// The VM trapped: the stream is answered 503 (`wasm_fail_stream`).
    Failed,
    /// The callback returned `action` (`None` if not exported); `resumed` if it
    /// also called `proxy_continue_stream` for this direction.
    Returned { action: Option<i32>, resumed: bool },
}

/// Applies Envoy's rules after a callback returned `result`: the actions the
/// filter deferred (a local reply wins, then a reset, then a resume) and the
/// failure policy for a trap.
fn after(
    slot: &mut Slot,
    context: u32,
    result: Result<Option<i32>, Trap>,
    direction: Direction,
    callback: &'static str,
) -> Result<After> {
    let deferred = !slot.vm.state().deferred.is_empty();
    after_deferred(slot, context, result, direction, callback, deferred)
}

/// [`after`], told whether the VM holds deferred actions (`deferred`).
fn after_deferred(
    slot: &mut Slot,
    context: u32,
    result: Result<Option<i32>, Trap>,
    direction: Direction,
    callback: &'static str,
    deferred: bool,
) -> Result<After> {
    if !deferred {
        // Nothing deferred: the result alone decides.
        return Ok(match result {
            Ok(action) => After::Returned {
                action,
                resumed: false,
            },
            Err(_) => After::Failed,
        });
    }
    let deferred = slot.vm.take_deferred(context);
    if let Some(reason) = deferred.would_crash {
        return Err(Error::WouldCrashEnvoy {
            plugin: slot.vm.name().to_owned(),
            reason,
        });
    }
    let action = match result {
        Ok(action) => action,
        // Measured in Envoy 1.40: the stream whose callback trapped is answered
        // 503 whatever the policy; FAIL_OPEN only lets later streams bypass the
        // failed VM.
        Err(_) => return Ok(After::Failed),
    };
    if let Some(request) = deferred.local_reply {
        return Ok(After::Reply(request));
    }
    if deferred.close_stream {
        // Measured in Envoy 1.40: a close of the HTTP request or response
        // stream from within `on_response_trailers` resets the stream, runs
        // access logging and teardown, then crashes Envoy, whether or not the
        // connection manager carries trailers to the client. A close from a
        // callout's answer while the trailers are paused does not (the
        // callback is then `on_http_call_response`), nor do the downstream
        // and upstream stream types.
        if callback == "on_response_trailers" {
            return Err(Error::WouldCrashEnvoy {
                plugin: slot.vm.name().to_owned(),
                reason: "proxy_close_stream(HttpRequest or HttpResponse) in on_response_trailers \
                         crashes Envoy 1.40 once the stream is torn down",
            });
        }
        // Envoy's `closeStream` gives the stream its details unless it has some.
        if let Some(facts) = slot.vm.state().maps.info.facts.clone() {
            facts.get().details_unless_set("wasm_close_stream");
        }
        return Err(reset_by(slot.vm.name().to_owned(), callback));
    }
    if direction == Direction::Request && deferred.continue_response {
        return Err(Error::WouldCrashEnvoy {
            plugin: slot.vm.name().to_owned(),
            reason: "proxy_continue_stream(HttpResponse) on the request path, before the \
                     response started, crashes Envoy 1.40 (segmentation fault)",
        });
    }
    let resumed = match direction {
        Direction::Request => deferred.continue_request,
        Direction::Response => deferred.continue_response,
    };
    Ok(After::Returned { action, resumed })
}

/// Whether a headers (or trailers) callback left the stream paused, with
/// nothing deferred to resume it: [`wait_paused`] then waits. Only a pause waits, so
/// the common step (the callback let the stream go) costs no future.
fn pauses(step: &After) -> bool {
    matches!(step, After::Returned { action, resumed: false } if !continues(*action))
}

/// While filter `i` holds the stream paused (`step` is what its callback
/// left), what the stream waits for, delivered one by one as the chain's
/// events come (with the headers still in place: Envoy holds them, and the
/// filter can use them from `on_http_call_response`): answers to the callouts
/// and gRPC calls of the stream's context there, or an action another
/// callback deferred for it (a tick or a queue notification that made the
/// stream effective). A resume, a reply or a trap ends it; callouts still in
/// flight are answered once the stream has gone as far as what has arrived
/// lets it ([`Chain::answer_in_flight`]).
async fn wait_paused(
    io: &mut Io<'_, '_>,
    i: usize,
    context: u32,
    step: After,
    direction: Direction,
    callback: &'static str,
    callouts: &mut Vec<Callout>,
) -> Result<After> {
    wait_paused_or_piece(
        io,
        i,
        context,
        step,
        direction,
        callback,
        callouts,
        false,
        &[],
    )
    .await
    .map(|(step, _)| step)
}

/// What ended a [`wait_paused_or_piece`] other than the paused filter's
/// own step.
enum Woke {
    /// The wait is over: the step says how.
    Done,
    /// The next piece of the body arrived.
    Piece,
    /// The answer to a callout of a filter before the paused one that holds
    /// buffered body: filter `.0`'s.
    Answer(usize, Box<PendingCall>),
}

/// [`wait_paused`], and with `pieces`, until the next piece of the body
/// (still in `Io::pieces`) arrives, or the answer to a callout of a filter
/// of `before` (filter, context: those before the paused one that hold
/// buffered body), too: then the step is returned as it is, with what came
/// (the stream still waits, once that went as far as it can).
#[allow(
    clippy::too_many_arguments,
    reason = "the state of one stream's pass, owned by `send`"
)]
async fn wait_paused_or_piece(
    io: &mut Io<'_, '_>,
    i: usize,
    context: u32,
    mut step: After,
    direction: Direction,
    callback: &'static str,
    callouts: &mut Vec<Callout>,
    pieces: bool,
    before: &[(usize, u32)],
) -> Result<(After, Woke)> {
    let (give_up, generation) = {
        let mut chain = io.chain();
        (chain.monotonic() + MAX_HELD, chain.slots[i].generation)
    };
    while let After::Returned {
        action,
        resumed: false,
    } = step
    {
        if continues(action) {
            break;
        }
        // Envoy's codec reads on while a filter holds the request headers:
        // the rest of the request arrives meanwhile.
        if direction == Direction::Request && callback == "on_request_headers" {
            io.facts.get().received_with_headers();
        }
        let piece = if pieces {
            io.pieces.front().map(|&(at, _, _)| at)
        } else {
            None
        };
        let delivery = io
            .wait(Wait::Held {
                slot: i,
                context,
                give_up,
                piece,
                before: before.to_vec(),
            })
            .await;
        let delivery = match delivery {
            Delivery::Piece => return Ok((step, Woke::Piece)),
            Delivery::Call(j, call) if j != i => return Ok((step, Woke::Answer(j, call))),
            other => other,
        };
        let mut chain = io.chain();
        let Chain {
            slots,
            clusters,
            grpc,
            ..
        } = &mut **chain;
        let slot = &mut slots[i];
        if slot.failed_for(generation) {
            // Another stream's callback failed the VM: Envoy calls it no
            // more, so nothing resumes the stream, whatever the policy; it
            // stays paused until its client leaves (measured in Envoy 1.40).
            match delivery {
                Delivery::Disconnected => return Err(disconnected(callback)),
                Delivery::Upstream | Delivery::Stalled => break,
                Delivery::Call(..) | Delivery::Grpc(_) | Delivery::Resumed | Delivery::Piece => {
                    continue;
                }
            }
        }
        let (result, callback) = match delivery {
            Delivery::Call(_, call) => (
                answer_call(&mut slot.vm, clusters, *call, callouts),
                "on_http_call_response",
            ),
            Delivery::Grpc(_) => (
                grpc_step(&mut slot.vm, grpc)
                    .unwrap_or(Ok(()))
                    .map(|()| None),
                "on_grpc_callback",
            ),
            Delivery::Resumed => (Ok(None), callback),
            Delivery::Disconnected => return Err(disconnected(callback)),
            Delivery::Upstream | Delivery::Stalled | Delivery::Piece => break,
        };
        step = match after(slot, context, result, direction, callback)? {
            After::Returned { resumed, .. } => After::Returned { action, resumed },
            other => other,
        };
    }
    Ok((step, Woke::Done))
}

/// How long the harness lets a filter hold a stream with nothing in flight
/// but ticks (Envoy's default `stream_idle_timeout`); past it the stream has
/// stalled.
const MAX_HELD: Duration = Duration::from_secs(300);

/// Delivers the tick due at `at` (the VM's clock moves there), as
/// [`Chain::advance`] does.
pub(crate) fn fire_tick(vm: &mut Vm, at: Duration) -> Result<(), Trap> {
    set_vm_clock(vm, at);
    {
        let mut state = vm.state();
        let root = state.root_mut();
        root.next_tick = Some(at + Duration::from_millis(u64::from(root.tick_period_ms)));
    }
    vm.on_tick()
}

/// A plugin timer the virtual clock can reach outside a stream. A tick
/// orders before a deadline due at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The plugin's `on_tick`.
    Tick,
    /// A gRPC call's deadline.
    GrpcDeadline,
}

/// The earliest timer due by `end` across the VMs that have not failed: when,
/// which, and the VM's index.
pub(crate) fn next_timer<'a>(
    vms: impl Iterator<Item = &'a mut Vm>,
    end: Duration,
) -> Option<(Duration, Timer, usize)> {
    vms.enumerate()
        .filter(|(_, vm)| !vm.failed())
        .flat_map(|(i, vm)| {
            let state = vm.state();
            let root = state.root();
            let tick = root.next_tick.map(|t| (t, Timer::Tick, i));
            let deadline = root
                .grpc
                .next_deadline()
                .map(|t| (t, Timer::GrpcDeadline, i));
            [tick, deadline]
        })
        .flatten()
        .filter(|(t, _, _)| *t <= end)
        .min()
}

/// The root-context callout answered first by `end`, across `vms` (by due
/// time, then the order they were made): when, the VM's index and the call's
/// place in its queue. A failed VM's callouts are answered too, to nobody.
fn next_root_call(
    vms: &mut [&mut Vm],
    clusters: &mut Clusters,
    end: Duration,
) -> Option<(Duration, usize, usize)> {
    let mut best: Option<((Duration, u64), usize, usize)> = None;
    for (i, vm) in vms.iter_mut().enumerate() {
        let mut state = vm.state();
        for (index, call) in state.root_mut().pending_calls.iter_mut().enumerate() {
            let key = (call_due(clusters, call), call.seq.unwrap_or(u64::MAX));
            if key.0 <= end && best.is_none_or(|(b, _, _)| key < b) {
                best = Some((key, i, index));
            }
        }
    }
    best.map(|((at, _), i, index)| (at, i, index))
}

/// What the virtual clock reaches next outside a stream or a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// A callout's answer: the VM's index and the call's place in its queue.
    Call(usize, usize),
    /// A timer of the VM at that index.
    Timer(Timer, usize),
}

/// The next callout answer or timer (unless `timers` is false) due by `end`
/// across `vms`, in Envoy's order: by time, and at equal times callouts (in
/// the order they were made) before timers. A failed VM's callouts still get
/// their answer at their time (to nobody); its timers never fire.
pub(crate) fn next_due(
    vms: &mut [&mut Vm],
    clusters: &mut Clusters,
    end: Duration,
    timers: bool,
) -> Option<(Duration, Due)> {
    let call = next_root_call(vms, clusters, end);
    let timer = if timers {
        next_timer(vms.iter_mut().map(|vm| &mut **vm), end)
    } else {
        None
    };
    match (call, timer) {
        (Some((at, i, index)), timer) if timer.is_none_or(|(t, _, _)| at <= t) => {
            Some((at, Due::Call(i, index)))
        }
        (_, Some((at, timer, i))) => Some((at, Due::Timer(timer, i))),
        (_, None) => None,
    }
}

/// Gives the callouts of `vms` made since the last call their place in the
/// order of events (`seq` counts on), so that answers due at the same time
/// arrive in the order the callouts were made.
pub(crate) fn stamp_calls<'a>(vms: impl Iterator<Item = &'a mut Vm>, seq: &mut u64) {
    for vm in vms {
        let mut state = vm.state();
        for call in &mut state.root_mut().pending_calls {
            if call.seq.is_none() {
                *seq += 1;
                call.seq = Some(*seq);
            }
        }
    }
}

/// Answers the callout at `index` of `vm`'s queue: to its root context, or,
/// if the VM failed, to nobody (Envoy calls a failed VM no more). `None` if
/// there is no such call or nobody was called.
pub(crate) fn answer_queued(
    vm: &mut Vm,
    clusters: &mut Clusters,
    index: usize,
    callouts: &mut Vec<Callout>,
) -> Option<Result<Option<i32>, Trap>> {
    let call = vm.state().root_mut().pending_calls.remove(index)?;
    if vm.failed() {
        answer_dropped(clusters, call, callouts);
        return None;
    }
    Some(answer_call(vm, clusters, call, callouts))
}

/// Records a callout whose answer reaches nobody (its VM failed): the
/// cluster saw it and answered.
pub(crate) fn answer_dropped(
    clusters: &mut Clusters,
    call: PendingCall,
    callouts: &mut Vec<Callout>,
) {
    let response = match call.answer {
        Some(response) => response,
        None => ask_cluster(clusters, &call.cluster, &call.request),
    };
    callouts.push(Callout {
        cluster: call.cluster,
        request: call.request,
        response,
    });
}

/// Fires `timer`, due at `at`, in `vm`: its `on_tick`, or the gRPC calls that
/// time out then.
pub(crate) fn fire_timer(vm: &mut Vm, at: Duration, timer: Timer) -> Result<(), Trap> {
    match timer {
        Timer::Tick => fire_tick(vm, at),
        Timer::GrpcDeadline => {
            expire_grpc(vm, at);
            Ok(())
        }
    }
}

/// The gRPC calls the services answered since the last drain, from `vms`.
pub(crate) fn drain_grpc<'a>(vms: impl Iterator<Item = &'a mut Vm>) -> Vec<GrpcCallout> {
    vms.flat_map(|vm| std::mem::take(&mut vm.state().root_mut().grpc.log))
        .map(|(_, c)| c)
        .collect()
}

/// When a callout in flight gets its answer: its cluster's delay (capped by
/// the call's timeout) after it was sent. Asks the cluster now if it was not
/// asked yet.
fn call_due(clusters: &mut Clusters, call: &mut PendingCall) -> Duration {
    let answer = call
        .answer
        .get_or_insert_with(|| ask_cluster(clusters, &call.cluster, &call.request));
    let delay = match answer.extensions().get::<UpstreamFault>() {
        Some(UpstreamFault::Delay(delay)) => *delay,
        _ => Duration::ZERO,
    };
    call.sent_at + call.timeout.map_or(delay, |t| delay.min(t))
}

/// The response of the cluster's upstream to a callout.
fn ask_cluster(
    clusters: &mut Clusters,
    cluster: &str,
    request: &http::Request<Bytes>,
) -> http::Response<Bytes> {
    match clusters.0.iter_mut().find(|(name, _)| *name == cluster) {
        Some((_, u)) => u.call(request.clone()),
        // Validated at dispatch, so this cannot happen.
        None => http::Response::builder()
            .status(503)
            .body(Bytes::from_static(b"no healthy upstream"))
            .unwrap_or_default(),
    }
}

/// What a data callback's return value does to the frame (Envoy's
/// `FilterDataStatus`): 0 passes it on, 1 and 2 buffer it, anything else stops
/// without buffering (the frame goes no further).
enum Data {
    Pass,
    Buffer,
    Drop,
}

fn data_status(action: Option<i32>) -> Data {
    match action {
        None | Some(0) => Data::Pass,
        Some(1 | 2) => Data::Buffer,
        Some(_) => Data::Drop,
    }
}

/// Whether filter `slot` may still get an answer that resumes its stream
/// (whose context there is `context`): a callout in flight, or a gRPC call or
/// stream that context opened.
fn waits_for_answers(slot: &mut Slot, context: Option<u32>) -> bool {
    let state = slot.vm.state();
    let root = state.root();
    !root.pending_calls.is_empty() || context.is_some_and(|c| root.grpc.open_for(c))
}

/// Delivers an answer (`f`: a callout's response or a gRPC event) to filter
/// `slot`, which waits with a buffered body in `context`, and tells what it
/// did to the stream. The body is in place meanwhile (Envoy still holds it:
/// the callback may read or replace it) and taken back after. A VM that
/// another stream's callback failed is not called: the stream stays paused.
fn answer_buffered(
    slot: &mut Slot,
    direction: Direction,
    buffered: &mut Option<Vec<u8>>,
    context: u32,
    callback: &'static str,
    f: impl FnOnce(&mut Vm) -> Result<Option<i32>, Trap>,
) -> Result<After> {
    if slot.vm.failed() {
        return Ok(After::Returned {
            action: None,
            resumed: false,
        });
    }
    let body = buffered.take();
    {
        let mut state = slot.vm.state();
        let maps = &mut state.maps;
        match direction {
            Direction::Request => maps.request_body = body,
            Direction::Response => maps.response_body = body,
        }
    }
    let result = f(&mut slot.vm);
    {
        let mut state = slot.vm.state();
        let maps = &mut state.maps;
        *buffered = match direction {
            Direction::Request => maps.request_body.take(),
            Direction::Response => maps.response_body.take(),
        };
    }
    after(slot, context, result, direction, callback)
}

/// Runs `f` on filter `i`'s slot with the headers it holds (`held`, when it
/// is that filter's) in its map, and takes them back after.
fn with_held<T>(
    slot: &mut Slot,
    direction: Direction,
    i: usize,
    held: &mut Option<(usize, &mut Fields)>,
    f: impl FnOnce(&mut Slot) -> T,
) -> T {
    let Some((_, headers)) = held.as_mut().filter(|(h, _)| *h == i) else {
        return f(slot);
    };
    *direction.headers(&mut slot.vm.state().maps) = Some(std::mem::take(&mut **headers));
    let out = f(slot);
    **headers = direction
        .headers(&mut slot.vm.state().maps)
        .take()
        .unwrap_or_default();
    out
}

/// `plugin` reset the stream in `phase`; the rest is filled in as the stream
/// is torn down.
fn reset_by(plugin: String, phase: &'static str) -> Error {
    Error::Reset {
        plugin,
        phase,
        upstream_request: None,
        logs: Vec::new(),
        callouts: Vec::new(),
    }
}

/// The client closed its connection while the stream waited in `phase`; the
/// rest is filled in as the stream is torn down.
fn disconnected(phase: &'static str) -> Error {
    Error::Disconnected {
        phase,
        upstream_request: None,
        logs: Vec::new(),
        callouts: Vec::new(),
    }
}

/// Which headers callback returned: filter `i`'s, for `stream`.
#[derive(Clone, Copy)]
struct Header {
    i: usize,
    stream: u32,
    direction: Direction,
    end_of_stream: bool,
}

impl Header {
    /// The callback's name.
    fn callback(&self) -> &'static str {
        match self.direction {
            Direction::Request => "on_request_headers",
            Direction::Response => "on_response_headers",
        }
    }

    /// While the callback's pause holds the stream: [`wait_paused`].
    /// With `pieces`, the next piece of the body ends the wait too, as does
    /// an answer for a filter of `before` ([`wait_paused_or_piece`]).
    async fn wait(
        &self,
        io: &mut Io<'_, '_>,
        step: After,
        callouts: &mut Vec<Callout>,
        pieces: bool,
        before: &[(usize, u32)],
    ) -> Result<(After, Woke)> {
        wait_paused_or_piece(
            io,
            self.i,
            self.stream,
            step,
            self.direction,
            self.callback(),
            callouts,
            pieces,
            before,
        )
        .await
    }
}

/// What a pause of the headers came to ([`Chain::pause`]).
enum Paused {
    /// The callback's step once the wait ended.
    Step(Result<After>),
    /// A filter before the paused one answered from a body callback.
    Reply(Reply),
}

/// How the chain goes on after a headers callback.
enum Headers {
    /// To the next filter.
    Next,
    /// The filter holds the headers until the body (or trailers) ends.
    Held,
    /// The filter sent a local reply.
    Reply(Reply),
    /// The filter's VM failed: Envoy's `wasm_fail_stream` reply.
    Failed(Reply),
}

fn stalled(slot: &Slot, phase: &'static str) -> Error {
    Error::Stalled {
        plugin: slot.vm.name().to_owned(),
        phase,
    }
}

/// After a root-context callback (`on_tick`, `on_queue_ready`): answers the
/// callouts it made, one by one, and drops the stream actions it deferred (a root
/// context has no stream to act on).
pub(crate) fn settle_root_callback(
    vm: &mut Vm,
    clusters: &mut Clusters,
    grpc: &mut GrpcServices,
    result: Result<(), Trap>,
    callouts: &mut Vec<Callout>,
) {
    // The deferred actions are dropped, and whether anything is in flight is
    // read under the same lock.
    let idle = {
        let mut state = vm.state();
        if !state.deferred.is_empty() {
            state.deferred.clear();
        }
        let root = state.root();
        root.pending_calls.is_empty()
            && root.grpc.events.is_empty()
            && root.grpc.calls.is_empty()
            && root.grpc.streams.is_empty()
            && root.grpc.live.is_empty()
    };
    if result.is_err() || idle {
        return;
    }
    loop {
        let next_call = vm.state().root_mut().pending_calls.pop_front();
        let step = match next_call {
            Some(call) => answer_call(vm, clusters, call, callouts).map(drop),
            None => match grpc_step(vm, grpc) {
                Some(r) => r,
                None => break,
            },
        };
        vm.state().deferred.clear();
        if step.is_err() {
            break;
        }
    }
}

/// One unit of gRPC work for a VM, in Envoy's order: the next event to
/// deliver, else the next call (or half-closed stream) whose service has not
/// been asked yet, else the next thing to tell a streaming service. `None`
/// when there is nothing to do without the clock moving.
pub(crate) fn grpc_step(vm: &mut Vm, services: &mut GrpcServices) -> Option<Result<(), Trap>> {
    if vm.failed() {
        // What the plugin sent before the failure reaches its services; the
        // answers reach nobody.
        let worked = vm.state().root_mut().grpc.work_after_failure(services);
        return worked.then_some(Ok(()));
    }
    let event = vm.state().root_mut().grpc.events.pop_front();
    if let Some(event) = event {
        return Some(vm.deliver_grpc(event));
    }
    vm.state().root_mut().grpc.work(services).then_some(Ok(()))
}

/// Times out the VM's calls whose deadline is `at` or earlier, as Envoy's
/// router does: the call closes UNAVAILABLE with "upstream request timeout"
/// (a local reply 504, turned into gRPC status by the async client).
pub(crate) fn expire_grpc(vm: &mut Vm, at: Duration) {
    let mut state = vm.state();
    let grpc = &mut state.root_mut().grpc;
    for (&token, call) in grpc.calls.iter_mut() {
        if call.deadline.is_some_and(|d| d <= at) {
            call.deadline = None;
            grpc.events.push_back(grpc::Event::Close(
                token,
                grpc::TIMEOUT_STATUS,
                grpc::TIMEOUT_MESSAGE.to_owned(),
            ));
        }
    }
}

/// Moves one VM's virtual clocks forward to monotonic time `at`.
pub(crate) fn set_vm_clock(vm: &mut Vm, at: Duration) {
    let mut state = vm.state();
    if let Some(delta) = at.checked_sub(state.monotonic) {
        state.now += delta;
        state.monotonic = at;
    }
}

/// Answers a callout from its cluster's upstream and delivers the response to the
/// root context, as Envoy's async client does.
pub(crate) fn answer_call(
    vm: &mut Vm,
    clusters: &mut Clusters,
    call: PendingCall,
    callouts: &mut Vec<Callout>,
) -> Result<Option<i32>, Trap> {
    let response = match call.answer {
        Some(response) => response,
        None => ask_cluster(clusters, &call.cluster, &call.request),
    };
    let fault = response.extensions().get::<UpstreamFault>().copied();
    let token = call.token;
    callouts.push(Callout {
        cluster: call.cluster,
        request: call.request,
        response: response.clone(),
    });
    // What Envoy's async client makes of a slow or broken upstream (measured in
    // Envoy 1.40): its own 504 or 503 response, or a failed call.
    let (headers, body) = match fault {
        Some(UpstreamFault::Delay(delay)) if call.timeout.is_some_and(|t| delay >= t) => {
            made_up_response(504, "upstream request timeout")
        }
        Some(UpstreamFault::CloseBeforeHeaders) => made_up_response(
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: \
             connection termination",
        ),
        Some(UpstreamFault::CloseAfterHeaders) => return vm.on_http_call_failure(token),
        Some(UpstreamFault::ConnectionRefused) => made_up_response(503, &connect_failure_body()),
        _ => {
            let mut headers = Fields::new(Kind::Response);
            headers.add(b":status", response.status().as_str().as_bytes());
            for (name, value) in response.headers() {
                headers.add(name.as_str().as_bytes(), value.as_bytes());
            }
            if headers.get(b"content-length").is_none() {
                headers.add(
                    b"content-length",
                    response.body().len().to_string().as_bytes(),
                );
            }
            // The async client's router adds its timing header.
            headers.add(b"x-envoy-upstream-service-time", b"0");
            (headers, response.body().to_vec())
        }
    };
    vm.on_http_call_response(token, headers, body)
}

/// A response Envoy's router makes up for a callout: plain text, no timing header.
fn made_up_response(status: u16, body: &str) -> (Fields, Vec<u8>) {
    let mut headers = Fields::new(Kind::Response);
    headers.add(b":status", status.to_string().as_bytes());
    headers.add(b"content-length", body.len().to_string().as_bytes());
    headers.add(b"content-type", b"text/plain");
    (headers, body.as_bytes().to_vec())
}

/// The `:status` of `response` as a number, if it is one.
fn response_code(response: &Fields) -> Option<u16> {
    response.get(b":status").and_then(crate::hcm::parse_u16)
}

/// How the router ends an upstream request that does not answer in full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpstreamFailure {
    /// No response within the route's timeout: `504`.
    Timeout,
    /// The connection closed before the response headers: `503`.
    ResetBeforeHeaders,
    /// The connection closed after the headers, before the body was complete:
    /// the stream is reset.
    ResetAfterHeaders,
    /// The upstream refused the connection: `503`.
    ConnectFailure,
}

/// Why Envoy 1.40's connection to an upstream that refuses it failed
/// (`upstream.transport_failure_reason`; the router's details carry it too,
/// spaces as `_`).
const REFUSED_REASON: &str = "delayed connect error: Connection refused";

/// The body of Envoy's 503 for an upstream that refused the connection (the
/// reason is in the details, not here).
fn connect_failure_body() -> String {
    "upstream connect error or disconnect/reset before headers. reset reason: remote \
     connection failure"
        .to_owned()
}

impl UpstreamFailure {
    /// How long the upstream's answer takes (or until the router gives up),
    /// and how it fails, as the router sees an upstream `fault` with the
    /// route's `timeout`.
    fn of(fault: Option<UpstreamFault>, timeout: Option<Duration>) -> (Duration, Option<Self>) {
        match fault {
            Some(UpstreamFault::Delay(delay)) => match timeout {
                Some(timeout) if delay >= timeout => (timeout, Some(Self::Timeout)),
                _ => (delay, None),
            },
            Some(UpstreamFault::CloseBeforeHeaders) => {
                (Duration::ZERO, Some(Self::ResetBeforeHeaders))
            }
            Some(UpstreamFault::CloseAfterHeaders) => {
                (Duration::ZERO, Some(Self::ResetAfterHeaders))
            }
            Some(UpstreamFault::ConnectionRefused) => (Duration::ZERO, Some(Self::ConnectFailure)),
            None => (Duration::ZERO, None),
        }
    }

    /// The router's local reply for a failure before the response started,
    /// with its response flag.
    fn reply(self) -> Option<(Reply, u64)> {
        let (status, details, body, flag) = match self {
            Self::Timeout => (
                504,
                "response_timeout",
                "upstream request timeout".to_owned(),
                flags::UPSTREAM_REQUEST_TIMEOUT,
            ),
            Self::ResetBeforeHeaders => (
                503,
                "upstream_reset_before_response_started{connection_termination}",
                "upstream connect error or disconnect/reset before headers. reset reason: \
                 connection termination"
                    .to_owned(),
                flags::UPSTREAM_CONNECTION_TERMINATION,
            ),
            Self::ConnectFailure => (
                503,
                "upstream_reset_before_response_started{remote_connection_failure|\
                 delayed_connect_error:_Connection_refused}",
                connect_failure_body(),
                flags::UPSTREAM_CONNECTION_FAILURE,
            ),
            Self::ResetAfterHeaders => return None,
        };
        let reply = Reply {
            slot: None,
            request: LocalReplyRequest {
                status,
                details: details.to_owned(),
                body: body.into_bytes(),
                headers: Fields::new(Kind::Plain),
                grpc_status: -1,
            },
        };
        Some((reply, flag))
    }
}

/// What came out of passing a body through the filters.
#[derive(Default)]
struct BodyPass {
    /// The bytes that came out of the last filter.
    out: Vec<u8>,
    /// A local reply that ended the stream.
    reply: Option<Reply>,
    /// Whether the final (end-of-stream) frame was dispatched.
    complete: bool,
    /// Whether the end of the stream came out of the last filter with
    /// [`BodyPass::out`].
    ended: bool,
    /// What the holding filter let go when it continued, and whether that
    /// ended the stream.
    released: Option<(Vec<u8>, bool)>,
    /// The callback that sent [`BodyPass::reply`] was a trailers callback.
    reply_in_trailers: bool,
}

fn no_route() -> Reply {
    router_reply(404, "route_not_found")
}

/// The router's answer to a route whose cluster the bootstrap does not define.
fn no_cluster() -> Reply {
    router_reply(503, "cluster_not_found")
}

/// A local reply of the router's, without a body.
fn router_reply(status: u32, details: &str) -> Reply {
    Reply {
        slot: None,
        request: LocalReplyRequest {
            status,
            details: details.to_owned(),
            body: Vec::new(),
            headers: Fields::new(Kind::Plain),
            grpc_status: -1,
        },
    }
}

/// How Envoy's HTTP/1 codec delivers a body: the data (in the pieces `chunks`
/// gives, if any), then an empty frame that ends the stream. No body, no frames
/// (the headers end the stream).
fn frames(body: impl Into<Vec<u8>>, chunks: Option<&BodyChunks>) -> Vec<(Vec<u8>, bool)> {
    let body = body.into();
    if body.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(2);
    let mut taken = 0;
    for &size in chunks.map(|c| c.0.as_slice()).unwrap_or_default() {
        let rest = body.get(taken..).unwrap_or_default();
        if size == 0 || rest.is_empty() {
            continue;
        }
        let chunk = rest.get(..size.min(rest.len())).unwrap_or_default();
        out.push((chunk.to_vec(), false));
        taken += chunk.len();
    }
    // A body that arrives in one piece is moved, not copied.
    if taken == 0 {
        out.push((body, false));
    } else if taken < body.len() {
        out.push((body.get(taken..).unwrap_or_default().to_vec(), false));
    }
    out.push((Vec::new(), true));
    out
}

/// A body (and trailers) on its way while a headers callback pauses the
/// stream, for [`Chain::arrive_while_paused`]: the frames still to pass (each
/// from the position in the direction's order it names), what each filter
/// buffered, the trailers still to come.
struct Arriving<'q> {
    frames: &'q mut VecDeque<(usize, Vec<u8>, bool)>,
    buffered: &'q mut [Option<Vec<u8>>],
    trailers: &'q mut Option<PendingTrailers>,
    /// A working vector for the pass's order.
    order: &'q mut Vec<usize>,
    /// The body comes in pieces ([`BodyChunks`]) without a [`ChunkGap`]:
    /// only its first piece has arrived while a callout is answered; the
    /// rest (and the trailers) arrive later. With a gap, `frames` has what
    /// arrived and `Io::pieces` the rest, each piece at its time.
    in_pieces: bool,
    /// Whether that first piece has gone into the chain.
    first_arrived: bool,
    /// Whether the frame that ends the stream was dispatched.
    complete: bool,
}

impl Arriving<'_> {
    /// The headers callback of the filter at `position` (in `direction`'s
    /// order of `filters`) stopped waiting: what the filters before it
    /// buffered meanwhile joins what waits at it (Envoy's stream has one body
    /// buffer), which it then gets as one frame. Measured in Envoy 1.40: a
    /// filter before it that buffers the pieces as they arrive sees them
    /// grow (it holds them until then); once the paused filter resumes, the
    /// whole buffer goes on from the paused filter
    /// (body-pieces-slow-callouts.yaml, body-while-paused.yaml).
    fn gather(&mut self, direction: Direction, position: usize, filters: usize) {
        if position == 0 {
            return;
        }
        let mut gathered = Vec::new();
        for k in 0..position.min(filters) {
            let i = match direction {
                Direction::Request => k,
                Direction::Response => filters - 1 - k,
            };
            if let Some(b) = self.buffered.get_mut(i).and_then(Option::take) {
                gathered.extend_from_slice(&b);
            }
        }
        if gathered.is_empty() {
            return;
        }
        match self.frames.front_mut() {
            Some((start, data, _)) if *start == position => data.extend_from_slice(&gathered),
            _ => self.frames.push_front((position, gathered, false)),
        }
    }
}

/// Frames to pass, each from the first filter on.
fn queued(frames: Vec<(Vec<u8>, bool)>) -> VecDeque<(usize, Vec<u8>, bool)> {
    frames.into_iter().map(|(d, eos)| (0, d, eos)).collect()
}

/// Splits a body into several data frames, as Envoy delivers a body that
/// arrives in pieces (HTTP/1 chunks read at different times). Put it in the
/// extensions of a request given to [`Chain::send`], or of a response an
/// [`Upstream`] returns: each size is one frame, the rest of the body is one more,
/// and an empty frame ends the stream.
///
/// Alone, it gives the pieces no virtual time between them: only the first
/// piece comes with the headers, the rest right after what is due at once (a
/// callout answered without delay comes before the second piece, a slower one
/// after the last). A [`ChunkGap`] next to it says how far apart they arrive
/// on the chain's virtual clock.
///
/// ```
/// let request = http::Request::post("/")
///     .header("host", "example.com")
///     .extension(weir_harness::BodyChunks(vec![3, 3]))
///     .body(bytes::Bytes::from_static(b"abcdefgh"))
///     .unwrap(); // frames "abc", "def", "gh", then the end of the stream
/// # let _ = request;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyChunks(pub Vec<usize>);

/// How far apart the pieces of a body sent in pieces ([`BodyChunks`]) arrive,
/// on the chain's virtual clock: piece `k` arrives `k` gaps after the headers
/// (the first one with them), and the end of the stream one gap after the
/// last piece, as from a client that waits a gap after each piece before it
/// sends the next one or ends the body (trailers, if any, come with the last
/// piece). Put it next to [`BodyChunks`] in the
/// extensions of a request given to [`Chain::send`] or [`Chain::send_all`],
/// or of a response an [`Upstream`] returns (its pieces count from the
/// response's headers). Without it (or with a zero gap) the pieces have no
/// time between them: only the first arrives with the headers, the rest
/// right after what is due at once. Without [`BodyChunks`] it changes
/// nothing (the body comes in one piece). A gap longer than Envoy's stream
/// idle timeout (5 minutes) is refused: [`Chain::send`] fails with
/// [`Error::InvalidRequest`].
///
/// Each arrival is one of the chain's events, ordered with callout answers,
/// gRPC messages, ticks and upstream responses by virtual time (a piece
/// first at equal times). While a filter's headers callback holds the stream
/// for a callout, the pieces that arrive before the answer go through the
/// filters before it, one by one, and wait at the paused filter, which gets
/// them as one frame once it resumes; while a body callback buffers
/// (`StopIterationAndBuffer`) waiting for its callout, each piece reaches it
/// with what it buffered. As Envoy 1.40 does (measured:
/// `tests/conformance/body-pieces-slow-callouts.yaml`).
///
/// A filter that calls out from its request headers and buffers the body
/// (`StopIterationAndBuffer`) until the answer, 100 ms later, while the
/// client sends a piece every 40 ms: the pieces at 0, 40 and 80 ms reach it
/// before the answer, the end of the stream (120 ms) after it.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use weir_harness::{BodyChunks, Chain, ChunkGap, Engine, Filter, UpstreamFault};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let wasm = wat::parse_str(r#"(module
///   (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
///   (import "env" "proxy_http_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
///   (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
///   (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
///   (memory (export "memory") 1)
///   (global $heap (mut i32) (i32.const 4096))
///   (global $stream (mut i32) (i32.const 0))
///   (global $answered (mut i32) (i32.const 0))
///   (data (i32.const 100) "piece")
///   (data (i32.const 110) "answer")
///   (data (i32.const 120) "auth")
///   ;; the callout's headers: :method GET, :path /, :authority a
///   (data (i32.const 200) "\03\00\00\00\07\00\00\00\03\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\01\00\00\00:method\00GET\00:path\00/\00:authority\00a\00")
///   (func (export "malloc") (param $n i32) (result i32)
///     (global.set $heap (i32.add (global.get $heap) (local.get $n)))
///     (i32.sub (global.get $heap) (local.get $n)))
///   (func (export "proxy_abi_version_0_2_1"))
///   (func (export "proxy_on_request_headers") (param $id i32) (param i32 i32) (result i32)
///     (global.set $stream (local.get $id))
///     (global.set $answered (i32.const 0))
///     (drop (call $call (i32.const 120) (i32.const 4) (i32.const 200) (i32.const 61)
///       (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 300)))
///     (i32.const 0))
///   (func (export "proxy_on_request_body") (param i32 i32 i32) (result i32)
///     (drop (call $log (i32.const 2) (i32.const 100) (i32.const 5)))
///     (i32.eqz (global.get $answered)))
///   (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
///     (drop (call $log (i32.const 2) (i32.const 110) (i32.const 6)))
///     (global.set $answered (i32.const 1))
///     (drop (call $effective (global.get $stream)))
///     (drop (call $continue (i32.const 0)))))"#)?;
/// let engine = Engine::new()?;
/// let mut chain = Chain::builder(&engine)
///     .filter(Filter::new(engine.load(&wasm)?))
///     .cluster("auth", |_: http::Request<Bytes>| {
///         http::Response::builder()
///             .extension(UpstreamFault::Delay(Duration::from_millis(100)))
///             .body(Bytes::new())
///             .unwrap()
///     })
///     .build()?;
/// let request = || {
///     http::Request::post("/")
///         .header("host", "example.com")
///         .header("transfer-encoding", "chunked")
///         .extension(BodyChunks(vec![3, 3])) // "abc", "def", "gh", then the end
///         .body(Bytes::from_static(b"abcdefgh"))
/// };
///
/// let mut gapped = request()?;
/// gapped.extensions_mut().insert(ChunkGap(Duration::from_millis(40)));
/// let outcome = chain.send(gapped, |_: http::Request<Bytes>| http::Response::new(Bytes::new()))?;
/// let logs: Vec<&str> = outcome.logs.iter().map(|l| l.message.as_str()).collect();
/// assert_eq!(logs, ["piece", "piece", "piece", "answer", "piece"]);
/// assert_eq!(outcome.upstream_request.unwrap().body().as_ref(), b"abcdefgh");
///
/// // Without a gap, the pieces after the first come after the answer.
/// let outcome = chain.send(request()?, |_: http::Request<Bytes>| http::Response::new(Bytes::new()))?;
/// let logs: Vec<&str> = outcome.logs.iter().map(|l| l.message.as_str()).collect();
/// assert_eq!(logs, ["piece", "answer", "piece", "piece", "piece"]);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkGap(pub Duration);

/// The [`ChunkGap`] of a request's or response's `extensions` (`what`), if
/// its body comes in pieces and the gap is not zero; a gap longer than
/// Envoy's stream idle timeout is refused (Envoy would time the stream out).
fn chunk_gap(
    extensions: &http::Extensions,
    in_pieces: bool,
    what: &str,
) -> Result<Option<ChunkGap>> {
    let Some(&gap) = extensions.get::<ChunkGap>() else {
        return Ok(None);
    };
    if gap.0 > MAX_HELD {
        return Err(Error::InvalidRequest(format!(
            "the {what}'s ChunkGap of {:?} is longer than Envoy's stream idle timeout ({:?})",
            gap.0, MAX_HELD
        )));
    }
    Ok((in_pieces && !gap.0.is_zero()).then_some(gap))
}

/// Splits `frames` of a body sent in pieces with a gap: the first stays (it
/// arrives with the headers), the others are returned with the virtual time
/// each arrives at, `start` + `k` × `gap` for frame `k` (the empty frame that
/// ends the stream is a frame too).
fn timed_pieces(
    frames: &mut Vec<(Vec<u8>, bool)>,
    start: Duration,
    gap: Duration,
) -> VecDeque<(Duration, Vec<u8>, bool)> {
    if frames.len() < 2 {
        return VecDeque::new();
    }
    frames
        .drain(1..)
        .zip(1u32..)
        .map(|((data, eos), k)| {
            let at = start
                .checked_add(gap.saturating_mul(k))
                .unwrap_or(Duration::MAX);
            (at, data, eos)
        })
        .collect()
}

/// Envoy does not fix `content-length` when a filter changes a body's size; the
/// peer then reads a truncated body or waits for bytes that never come.
fn check_length(headers: &Fields, actual: usize, what: &str, warnings: &mut Vec<String>) {
    let declared = headers
        .get(b"content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
    if let Some(declared) = declared
        && declared != actual
    {
        warnings.push(format!(
            "the {what} body is {actual} bytes but content-length says {declared}: remove \
             content-length in the headers callback when a filter changes the body"
        ));
    }
}

/// Whether a headers callback that returned `action` holds the headers while
/// the body still reaches it: Pause (1) becomes Envoy's StopIteration only with
/// `allow_on_headers_stop_iteration`, and only a body can follow.
fn holds(slot: &Slot, action: Option<i32>, end_of_stream: bool) -> bool {
    slot.allow_stop && action == Some(1) && !end_of_stream
}

/// Envoy's mapping of a headers callback's return value: 0 and 2 continue,
/// anything else stops iteration.
fn continues(action: Option<i32>) -> bool {
    matches!(action, None | Some(0) | Some(2))
}

impl Chain {
    /// A [`ChainBuilder`] on `engine`. The engine is only needed to make the
    /// plugins, which already carry it; it is taken to make the dependency plain.
    pub fn builder(_engine: &Engine) -> ChainBuilder {
        ChainBuilder {
            filters: Vec::new(),
            clusters: Clusters::default(),
            grpc: GrpcServices::default(),
            hcm: ConnectionManager::default(),
            node: Node::default(),
            log_level: LogLevel::Info,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            seed: 0,
            fuel_per_call: crate::vm::DEFAULT_FUEL_PER_CALL,
        }
    }

    /// Every metric the plugins defined, by name, with its value.
    pub fn metrics(&self) -> BTreeMap<String, MetricValue> {
        self.shared.stats().all()
    }

    /// A shared-data entry (`value`, `cas`) in `vm_id`'s namespace.
    pub fn shared_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared.data().get(vm_id, key.as_bytes())
    }

    /// How long each filter's plugin VM took to start, in chain order: pure
    /// instantiation and the guest's start-up callbacks, separately. A VM
    /// restarted by [`FailurePolicy::FailReload`] reports its latest start.
    pub fn start_times(&self) -> Vec<StartTime> {
        self.slots.iter().map(|s| s.vm.start_time).collect()
    }

    /// What the plugins logged while starting.
    pub fn startup_logs(&self) -> &[crate::LogRecord] {
        &self.startup_logs
    }

    /// Moves the virtual clock forward by `by`, firing every `on_tick` that falls
    /// due on the way, in time order across plugins (a plugin's first tick comes
    /// one period after it set the period). Root-context callouts (made from
    /// `on_tick`, or while the plugin started) are answered in the same order,
    /// when their cluster answers them (at once, or after an
    /// [`UpstreamFault::Delay`]), and gRPC calls as soon as they are made.
    /// Returns what happened meanwhile.
    pub fn advance(&mut self, by: Duration) -> Background {
        let end = self.monotonic() + by;
        let mut callouts = Vec::new();
        loop {
            let Chain {
                slots,
                clusters,
                grpc,
                ..
            } = self;
            // gRPC work is due as soon as it appears (start-up calls).
            for slot in slots.iter_mut() {
                while let Some(Ok(())) = grpc_step(&mut slot.vm, grpc) {}
            }
            // Callouts still in flight (made while the plugin started, or
            // by a VM FAIL_RELOAD replaced) are answered when due; at equal
            // times before a timer.
            let mut vms: Vec<&mut Vm> = slots.iter_mut().map(|s| &mut s.vm).collect();
            let due = next_due(&mut vms, clusters, end, true);
            let retired = self
                .retired
                .iter_mut()
                .enumerate()
                .map(|(index, (_, call))| (call_due(&mut self.clusters, call), index))
                .filter(|&(at, _)| at <= end)
                .min();
            match (retired, due) {
                (Some((at, index)), due) if due.is_none_or(|(d, _)| at <= d) => {
                    self.set_monotonic(at);
                    let (_, call) = self.retired.remove(index);
                    answer_dropped(&mut self.clusters, call, &mut callouts);
                }
                (_, Some((at, Due::Call(i, index)))) => {
                    self.set_monotonic(at);
                    let Chain {
                        slots, clusters, ..
                    } = self;
                    let vm = &mut slots[i].vm;
                    let _ = answer_queued(vm, clusters, index, &mut callouts);
                    // A root context has no stream to act on.
                    vm.state().deferred.clear();
                }
                (_, Some((at, Due::Timer(timer, i)))) => {
                    self.set_monotonic(at);
                    let vm = &mut self.slots[i].vm;
                    let _ = fire_timer(vm, at, timer);
                    vm.state().deferred.clear();
                }
                (_, None) => break,
            }
            self.deliver_queue_ready(&mut callouts, true);
        }
        self.set_monotonic(end);
        if self.slots.is_empty() {
            self.now += by;
        }
        for slot in &mut self.slots {
            slot.vm.take_usage();
        }
        Background {
            logs: self.drain_logs(),
            callouts,
            grpc: drain_grpc(self.slots.iter_mut().map(|s| &mut s.vm)),
            traps: std::mem::take(&mut *self.shared.traps()),
        }
    }

    /// Creates the stream's filters as Envoy's filter chain factory does, in
    /// chain order: each gets its plugin's VM (reloaded first if it failed
    /// under FAIL_RELOAD and its backoff has passed, see
    /// [`Chain::reload_if_due`]) and, from a VM that has not failed, its stream
    /// context id. With a shared VM, a plugin reloaded for one filter gets its
    /// root context before the next filter's plugin joins the VM.
    fn create_filters(&mut self, progress: &mut [Progress]) {
        for (i, p) in progress.iter_mut().enumerate().take(self.slots.len()) {
            self.reload_if_due(i);
            p.generation = self.slots[i].generation;
            let vm = &mut self.slots[i].vm;
            if !vm.failed() {
                p.reserved = Some(vm.new_context_id());
            }
        }
    }

    /// A stream starts: its stream info facts (start time, a new downstream
    /// connection, the request body bytes that come `with_headers`) and its
    /// empty filter state, given to every VM's maps for it.
    fn start_stream(&mut self, with_headers: usize) -> Facts {
        self.connections += 1;
        let mut fresh = StreamFacts::new(self.now, self.monotonic(), self.connections);
        fresh.with_headers = u64::try_from(with_headers).unwrap_or(u64::MAX);
        let facts = match self.scratch.facts.take() {
            // Nothing else holds it: its stream is over.
            Some(spare) if spare.unshared() => {
                *spare.get() = fresh;
                spare
            }
            _ => Facts::new(fresh),
        };
        let filter_state = FilterState::default();
        let mut previous = None;
        for slot in &mut self.slots {
            let info = &mut slot.vm.state().maps.info;
            info.filter_state = filter_state.clone();
            let theirs = info.facts.replace(facts.clone());
            previous = previous.or(theirs);
        }
        self.scratch.facts = previous;
        facts
    }

    /// FAIL_RELOAD, applied as Envoy applies it when a stream starts: a VM that
    /// trapped is replaced by a fresh one (start-up sequence included) once a
    /// jittered backoff in `[base, 1.5 × base)` has passed since it was loaded. A
    /// failed reload keeps the failed VM (the stream is answered 503) and the
    /// backoff starts again.
    fn reload_if_due(&mut self, i: usize) {
        if self.slots[i].policy != FailurePolicy::FailReload || !self.slots[i].vm.failed() {
            return;
        }
        let now = self.monotonic();
        let random = self.next_random();
        let slot = &mut self.slots[i];
        if !reload_due(slot.reload_backoff, slot.loaded_at, now, random) {
            return;
        }
        slot.loaded_at = now;
        // As Envoy's thread-local VM lookup: a healthy VM with the same key
        // (one a sibling plugin reloaded already) takes the plugin; a failed
        // one is never reused.
        let healthy = self
            .slots
            .iter()
            .find(|s| s.filter.same_vm_key(&self.slots[i].filter) && !s.vm.failed());
        let slot = &self.slots[i];
        let started = self.vm_template.join_or_start(
            healthy.map(|s| &s.vm),
            &slot.filter.plugin,
            slot.filter.meta.clone(),
            (self.now, now, slot.seed),
            &self.shared,
        );
        let slot = &mut self.slots[i];
        match started {
            Ok(mut vm) => {
                // A new VM started on the chain's clock; a joined
                // one is a sibling's, on the same clock.
                wire(&mut vm, &self.hcm);
                vm.take_usage();
                // The failed VM stays with the streams paused in it; what
                // its callouts get back reaches nobody.
                let key = slot.vm.key();
                let calls = std::mem::take(&mut slot.vm.state().root_mut().pending_calls);
                self.retired.extend(calls.into_iter().map(|c| (key, c)));
                slot.vm = vm;
                slot.generation = slot.generation.wrapping_add(1);
            }
            Err(e) => tracing::warn!(plugin = %slot.filter.meta.name, "VM reload failed: {e}"),
        }
    }

    /// The virtual monotonic clock.
    fn monotonic(&mut self) -> Duration {
        self.slots
            .first_mut()
            .map_or(Duration::ZERO, |s| s.vm.state().monotonic)
    }

    /// Sets every VM's virtual clocks to monotonic time `at` (wall time follows).
    fn set_monotonic(&mut self, at: Duration) {
        for slot in &mut self.slots {
            set_vm_clock(&mut slot.vm, at);
        }
        if let Some(first) = self.slots.first_mut() {
            self.now = first.vm.state().now;
        }
    }

    /// Delivers the `on_queue_ready` notifications enqueues posted, in order, as
    /// Envoy's dispatcher runs posted callbacks after the current event. With
    /// `inline`, callouts made meanwhile are answered at once and recorded in
    /// `callouts`; else (streams are running) they wait for their turn among
    /// the batch's events. Returns whether a notification was delivered.
    fn deliver_queue_ready(&mut self, callouts: &mut Vec<Callout>, inline: bool) -> bool {
        // A guest that enqueues from on_queue_ready feeds itself forever (Envoy
        // would spin too); later notifications wait for the next event.
        const MAX_PER_EVENT: usize = 10_000;
        for n in 0..MAX_PER_EVENT {
            let Some(ready) = self.shared.queues().next_posted() else {
                return n > 0;
            };
            let Chain {
                slots,
                clusters,
                grpc,
                ..
            } = self;
            // The plugin whose root context registered the queue (several
            // plugins may share the VM).
            let target = ready.target;
            let Some(slot) = slots
                .iter_mut()
                .find(|s| s.vm.key() == target.vm && s.vm.root_context() == target.root_context)
            else {
                continue;
            };
            let result = slot
                .vm
                .on_queue_ready(ready.target.root_context, ready.token);
            if inline {
                settle_root_callback(&mut slot.vm, clusters, grpc, result, callouts);
            }
        }
        tracing::warn!(
            "more than {MAX_PER_EVENT} on_queue_ready notifications in one event; the rest wait"
        );
        true
    }

    /// The `date` header for the virtual wall clock's current time, formatted
    /// again only when the clock moved.
    fn refresh_date(&mut self) {
        if self.date.as_ref().is_none_or(|(at, _)| *at != self.now) {
            self.date = Some((self.now, httpdate::fmt_http_date(self.now)));
        }
    }

    fn drain_logs(&mut self) -> Vec<crate::LogRecord> {
        std::mem::take(&mut *self.shared.logs())
    }

    fn next_random(&mut self) -> u64 {
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.rng
    }

    fn random16(&mut self) -> [u8; 16] {
        let mut out = [0; 16];
        for chunk in out.chunks_mut(8) {
            let r = self.next_random();
            chunk.copy_from_slice(&r.to_le_bytes());
        }
        out
    }

    /// Sends one request through the chain to `upstream` and returns what the
    /// upstream and the client saw: [`Chain::send_all`] with one request.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a request Envoy could not route (or one
    /// HTTP/1 cannot carry: [`Trailers`](crate::Trailers) with
    /// `content-length`),
    /// [`Error::Stalled`] if a filter paused and never resumed, [`Error::Reset`]
    /// if a filter reset the stream, [`Error::InvalidHeader`] if a filter produced
    /// a header that cannot be sent.
    pub fn send<B: Into<Bytes>>(
        &mut self,
        request: http::Request<B>,
        upstream: impl Upstream,
    ) -> Result<Outcome> {
        self.send_all([request], upstream)
            .pop()
            .unwrap_or_else(|| Err(Error::InvalidRequest("no request was sent".to_owned())))
    }

    /// One stream of a batch, from its arrival to its end: the request through
    /// the filters, the upstream, the response back, access logging
    /// ([`Chain::send`]'s whole path). It borrows the chain only between its wait
    /// points ([`wait_paused`], [`Chain::answer_in_flight`], the upstream's response).
    async fn run_stream<U: Upstream>(
        mut io: Io<'_, '_>,
        request: http::Request<Bytes>,
        upstream: &RefCell<U>,
    ) -> Result<Outcome> {
        let io = &mut io;
        let (
            mut fields,
            mut warnings,
            mut request_trailers,
            request_frames,
            (request_chunks, gapped),
            end_of_stream,
            filters,
            mut progress,
            mut order,
            buffered,
        ) = {
            let mut guard = io.chain();
            let chain: &mut Chain = &mut guard;
            let request_chunks = request.extensions().get::<BodyChunks>().cloned();
            let gap = chunk_gap(request.extensions(), request_chunks.is_some(), "request")?;
            let mut random = chain.random16();
            let mut fields = chain.hcm.request_fields(
                &request,
                || std::mem::take(&mut random),
                std::mem::take(&mut chain.scratch.request_headers),
            )?;
            // The path's normalization, or the connection manager's answer
            // before any filter exists.
            let head = crate::hcm::is_head_request(&fields);
            let early = chain.hcm.prepare_path(&mut fields);
            let mut warnings = Vec::new();
            let request_trailers = trailers::from_client(&request, &chain.hcm, &mut warnings)?;
            // The client's framing (the connection manager keeps it out of
            // the request's map).
            let chunked = request
                .headers()
                .get_all(http::header::TRANSFER_ENCODING)
                .iter()
                .any(|v| trailers::says_chunked(v.as_bytes()));
            let request_body = request.into_body();
            let mut request_frames = frames(request_body, request_chunks.as_ref());
            trailers::last_frames(&mut request_frames, request_trailers.is_some(), chunked);
            let end_of_stream = request_frames.is_empty() && request_trailers.is_none();
            io.pieces = match gap {
                Some(gap) => timed_pieces(&mut request_frames, chain.monotonic(), gap.0),
                None => VecDeque::new(),
            };
            let filters = chain.slots.len();
            let mut progress = refill(
                std::mem::take(&mut chain.scratch.progress),
                filters,
                Progress::default(),
            );
            if early.is_none() {
                chain.create_filters(&mut progress);
            }
            // What arrives with the headers: the whole body, or its first
            // piece when it is sent in pieces.
            let with_headers = match request_chunks {
                Some(_) => request_frames.first().map_or(0, |(data, _)| data.len()),
                None => request_frames.iter().map(|(data, _)| data.len()).sum(),
            };
            io.facts = chain.start_stream(with_headers);
            io.facts.get().grpc_request = crate::hcm::is_grpc_request(&fields);
            io.facts.get().head_request = head;
            let order = std::mem::take(&mut chain.scratch.order);
            let buffered = std::mem::take(&mut chain.scratch.buffered);
            if let Some(reply) = early {
                chain.scratch.progress = progress;
                chain.scratch.order = order;
                chain.scratch.buffered = buffered;
                return Self::answer_before_filters(
                    io,
                    chain,
                    fields,
                    reply,
                    end_of_stream,
                    warnings,
                );
            }
            (
                fields,
                warnings,
                request_trailers,
                request_frames,
                (request_chunks, gap.is_some()),
                end_of_stream,
                filters,
                progress,
                order,
                buffered,
            )
        };

        let mut callouts = Vec::new();
        let mut held = None;
        let mut queue = queued(request_frames);
        let mut buffered = refill(buffered, filters, None);
        let mut arriving = Arriving {
            frames: &mut queue,
            buffered: &mut buffered,
            trailers: &mut request_trailers,
            order: &mut order,
            // With a gap, what is queued has arrived; the rest waits in
            // `io.pieces`.
            in_pieces: request_chunks.is_some() && !gapped,
            first_arrived: false,
            complete: false,
        };
        let decoded = Self::decode(
            io,
            &mut fields,
            end_of_stream,
            &mut progress,
            &mut callouts,
            0,
            &mut held,
            Some(&mut arriving),
        )
        .await;
        let arrived_complete = arriving.complete;
        let mut reply = match decoded {
            Err(e @ (Error::Reset { .. } | Error::Disconnected { .. })) => {
                return Err(Self::reset(
                    io,
                    e,
                    &progress,
                    &mut fields,
                    &mut callouts,
                    None,
                    None,
                    None,
                ));
            }
            other => other?,
        };
        // A request sent in one piece arrived in full while a filter held its
        // headers and the stream waited (whether the wait ended in a resume
        // or a reply): a reply now does not close the connection.
        let mut request_complete = end_of_stream
            || arrived_complete
            || (request_chunks.is_none() && io.facts.get().headers_waited);
        // A filter that holds the headers (StopIteration with
        // allow_on_headers_stop_iteration) gets the body first; the filters after
        // it get the headers once a body callback lets them go.
        while reply.is_none()
            && let Some(h) = held.take()
        {
            order = fill(order, 0..=h);
            let pass = match Self::pass_body(
                io,
                Direction::Request,
                &mut queue,
                &order,
                &progress,
                &mut buffered,
                Some((h, &mut fields)),
                &mut request_trailers,
                &mut callouts,
            )
            .await
            {
                Err(e @ (Error::Reset { .. } | Error::Disconnected { .. })) => {
                    return Err(Self::reset(
                        io,
                        e,
                        &progress,
                        &mut fields,
                        &mut callouts,
                        None,
                        None,
                        None,
                    ));
                }
                other => other?,
            };
            request_complete |= pass.complete;
            if pass.reply.is_some() {
                reply = pass.reply;
                break;
            }
            let Some((data, eos)) = pass.released else {
                return Err(stalled(&io.chain().slots[h], "on_request_body"));
            };
            reply = match Self::decode(
                io,
                &mut fields,
                false,
                &mut progress,
                &mut callouts,
                h + 1,
                &mut held,
                None,
            )
            .await
            {
                Err(e @ (Error::Reset { .. } | Error::Disconnected { .. })) => {
                    return Err(Self::reset(
                        io,
                        e,
                        &progress,
                        &mut fields,
                        &mut callouts,
                        None,
                        None,
                        None,
                    ));
                }
                other => other?,
            };
            // Trailers can release the headers with no data buffered.
            if !data.is_empty() || eos {
                queue.push_front((h + 1, data, eos));
            }
        }
        // The router resolves the route when the request headers reach it. Envoy's
        // route table matches nothing once a filter removed x-forwarded-proto:
        // the router answers 404 route_not_found. A route to a cluster the
        // bootstrap does not define is answered 503 cluster_not_found.
        let reply = reply.or_else(|| {
            if fields.get(b"x-forwarded-proto").is_none() {
                let mut facts = io.facts.get();
                facts.no_route = true;
                facts.flags |= flags::NO_ROUTE_FOUND;
                Some(no_route())
            } else if io.chain().hcm.route_cluster_is_missing() {
                io.facts.get().flags |= flags::NO_CLUSTER_FOUND;
                Some(no_cluster())
            } else {
                None
            }
        });
        let (reply, request_body) = match reply {
            Some(reply) => (Some(reply), Vec::new()),
            None => {
                // The headers reached the router: it starts the upstream
                // request (the body follows it).
                {
                    let addresses = io.chain().hcm.addresses();
                    let mut facts = io.facts.get();
                    facts.attempts = 1;
                    facts.upstream_host = Some(addresses.upstream);
                    facts.upstream_local = Some(addresses.upstream_local);
                }
                order = fill(order, 0..filters);
                match Self::pass_body(
                    io,
                    Direction::Request,
                    &mut queue,
                    &order,
                    &progress,
                    &mut buffered,
                    None,
                    &mut request_trailers,
                    &mut callouts,
                )
                .await
                {
                    Err(e @ (Error::Reset { .. } | Error::Disconnected { .. })) => {
                        return Err(Self::reset(
                            io,
                            e,
                            &progress,
                            &mut fields,
                            &mut callouts,
                            None,
                            None,
                            None,
                        ));
                    }
                    Err(e) => return Err(e),
                    Ok(pass) => {
                        request_complete |= pass.complete;
                        (pass.reply, pass.out)
                    }
                }
            }
        };
        // Pieces of the request still to come when a reply ended it are not
        // read.
        io.pieces.clear();
        // The request goes upstream (unless a reply answered it); the response
        // arrives as an event: at once, or after the upstream's delay, and
        // meanwhile other streams run.
        let sent = {
            let mut guard = io.chain();
            let chain: &mut Chain = &mut guard;
            // Envoy's dispatcher runs what enqueues posted once the request event is
            // handled, before the upstream answers. (Callout responses still in
            // flight arrive as the batch's events, before the upstream's response
            // when they are due first.)
            chain.deliver_queue_ready(&mut Vec::new(), false);
            if let Some(trailers) = &request_trailers {
                trailers.keep_with_adder(&mut chain.slots);
            }
            let request_trailers = request_trailers.map(PendingTrailers::into_sent);
            match reply {
                None => {
                    check_length(&fields, request_body.len(), "request", &mut warnings);
                    let upstream_request = chain.hcm.upstream_request(
                        &fields,
                        Bytes::from(request_body),
                        !end_of_stream,
                        request_trailers.as_ref(),
                        &mut chain.http_cache,
                    )?;
                    let response = upstream.borrow_mut().call(upstream_request.clone());
                    let (delay, failure) = UpstreamFailure::of(
                        response.extensions().get::<UpstreamFault>().copied(),
                        chain.hcm.route_timeout_value(),
                    );
                    // The request phase's callouts still in flight are no longer
                    // waited for.
                    for (i, slot) in chain.slots.iter_mut().enumerate() {
                        let Some(context) = progress[i].context else {
                            continue;
                        };
                        let state = slot.vm.state();
                        let calls = state.root().pending_calls.iter();
                        io.leftovers
                            .extend(calls.filter(|c| c.context == context).map(|c| (i, c.token)));
                    }
                    let at = chain.monotonic() + delay;
                    Ok((upstream_request, response, (at, delay), failure))
                }
                Some(reply) => Err(reply),
            }
        };
        if let Ok((_, _, (at, _), _)) = &sent
            && let Delivery::Disconnected = io.wait(Wait::Upstream { at: *at, seq: None }).await
        {
            let upstream_request = sent.ok().map(|(request, _, _, _)| request);
            return Err(Self::reset(
                io,
                disconnected("the upstream's response"),
                &progress,
                &mut fields,
                &mut callouts,
                upstream_request,
                None,
                None,
            ));
        }
        let mut response_trailers = None;
        let mut reset_after_headers = false;
        let router_reply = match &sent {
            Ok((_, _, _, Some(failure))) => failure.reply(),
            _ => None,
        };
        let (upstream_request, mut response, response_frames, response_chunked, reply) =
            match (sent, router_reply) {
                // The router gave up on the upstream and answers itself.
                (Ok((upstream_request, _, _, failure)), Some((reply, flag))) => {
                    let refused = failure == Some(UpstreamFailure::ConnectFailure);
                    let (response, body) = {
                        let mut facts = io.facts.get();
                        facts.flags |= flag;
                        if refused {
                            facts.transport_failure = Some(REFUSED_REASON);
                        }
                        facts.reply_code = u16::try_from(reply.request.status).ok();
                        ConnectionManager::local_reply(
                            &reply.request,
                            facts.grpc_request,
                            facts.head_request,
                        )
                    };
                    // A local reply's body is one final frame.
                    let frames = if body.is_empty() {
                        Vec::new()
                    } else {
                        vec![(body, true)]
                    };
                    // A refused connection carried no request.
                    let upstream_request = (!refused).then_some(upstream_request);
                    (upstream_request, response, frames, false, Some(reply))
                }
                (Ok((upstream_request, mut response, (_, delay), failure)), None) => {
                    let mut guard = io.chain();
                    let chain: &mut Chain = &mut guard;
                    let head = io.facts.get().head_request;
                    if head {
                        crate::hcm::without_body(&mut response);
                    }
                    let chunks = response.extensions().get::<BodyChunks>().cloned();
                    let gap = chunk_gap(response.extensions(), chunks.is_some(), "response")?;
                    let response_fields = chain.hcm.response_fields(
                        &response,
                        std::mem::take(&mut chain.scratch.response_headers),
                        head,
                    );
                    let frames = if failure == Some(UpstreamFailure::ResetAfterHeaders) {
                        // The headers arrive; the connection closes before the
                        // body is complete (Envoy's codec never hands it on).
                        reset_after_headers = true;
                        Vec::new()
                    } else {
                        response_trailers =
                            trailers::from_upstream(&response, &chain.hcm, &mut warnings);
                        let body = Vec::from(response.into_body());
                        let mut frames = frames(body, chunks.as_ref());
                        let chunked = trailers::is_chunked(&response_fields);
                        trailers::last_frames(&mut frames, response_trailers.is_some(), chunked);
                        if let Some(gap) = gap {
                            io.pieces = timed_pieces(&mut frames, chain.monotonic(), gap.0);
                        }
                        let mut facts = io.facts.get();
                        facts.latency_pending = Some(delay);
                        // A response without a body has arrived in full.
                        if frames.is_empty() && response_trailers.is_none() {
                            facts.upstream_complete();
                        }
                        frames
                    };
                    (
                        Some(upstream_request),
                        response_fields,
                        frames,
                        chunks.is_some() && gap.is_none(),
                        None,
                    )
                }
                (Err(reply), _) => {
                    // A reply in the body phase resets the upstream request the router
                    // had started: the upstream never receives a complete request.
                    let (response, body) = {
                        let mut facts = io.facts.get();
                        facts.reply_code = u16::try_from(reply.request.status).ok();
                        ConnectionManager::local_reply(
                            &reply.request,
                            facts.grpc_request,
                            facts.head_request,
                        )
                    };
                    // A local reply's body is one final frame.
                    let frames = if body.is_empty() {
                        Vec::new()
                    } else {
                        vec![(body, true)]
                    };
                    (None, response, frames, false, Some(reply))
                }
            };
        // A local reply from the request path goes back through every filter
        // whose request headers callback ran (Envoy skips the encoders of
        // those that never decoded): from a headers callback, the replying
        // filter and those before it; from a body or trailers callback, the
        // whole chain. Measured in Envoy 1.40 (log-maps-chain.yaml).
        let last = filters;
        let details = reply.as_ref().map_or(Cow::Borrowed("via_upstream"), |r| {
            Cow::Owned(r.request.details.clone())
        });
        let mut held = None;
        let response_ends =
            response_frames.is_empty() && response_trailers.is_none() && !reset_after_headers;
        let mut queue = queued(response_frames);
        let mut buffered = refill(buffered, filters, None);
        let streamed = response_trailers.is_some();
        let mut arriving = Arriving {
            frames: &mut queue,
            buffered: &mut buffered,
            trailers: &mut response_trailers,
            order: &mut order,
            // An upstream that sends trailers streams its body after its
            // headers: it arrives after a callout's answer (measured).
            in_pieces: response_chunked || (streamed && io.pieces.is_empty()),
            first_arrived: streamed && io.pieces.is_empty(),
            complete: false,
        };
        let encoded = Self::encode(
            io,
            &mut response,
            response_ends,
            &details,
            &mut progress[..last],
            last,
            &mut held,
            &mut callouts,
            Some(&mut arriving),
        )
        .await;
        let mut late_reply = match encoded {
            Err(e @ (Error::Reset { .. } | Error::Disconnected { .. })) => {
                return Err(Self::reset(
                    io,
                    e,
                    &progress,
                    &mut fields,
                    &mut callouts,
                    upstream_request,
                    Some(&mut response),
                    None,
                ));
            }
            other => other?,
        };
        // The upstream's connection broke off after its headers: the response
        // has started, so the router resets the stream (the headers went to
        // the client as the connection manager sends them).
        if reset_after_headers && late_reply.is_none() {
            {
                let mut facts = io.facts.get();
                facts.flags |= flags::UPSTREAM_PROTOCOL_ERROR;
                facts.response_details = Some(Cow::Borrowed(
                    "upstream_reset_after_response_started{protocol_error}",
                ));
            }
            {
                let mut guard = io.chain();
                let chain: &mut Chain = &mut guard;
                chain.refresh_date();
                let date = chain.date.as_ref().map_or("", |(_, date)| date.as_str());
                chain.hcm.stamp(&mut response, date);
            }
            let error = reset_by(ROUTER.to_owned(), "the upstream's response body");
            return Err(Self::reset(
                io,
                error,
                &progress,
                &mut fields,
                &mut callouts,
                upstream_request,
                Some(&mut response),
                None,
            ));
        }
        // As for requests, in reverse: positions count from the last filter.
        while late_reply.is_none()
            && let Some(h) = held.take()
        {
            order = fill(order, (h..last).rev());
            let pass = match Self::pass_body(
                io,
                Direction::Response,
                &mut queue,
                &order,
                &progress,
                &mut buffered,
                Some((h, &mut response)),
                &mut response_trailers,
                &mut callouts,
            )
            .await
            {
                Err(e @ (Error::Reset { .. } | Error::Disconnected { .. })) => {
                    return Err(Self::reset(
                        io,
                        e,
                        &progress,
                        &mut fields,
                        &mut callouts,
                        upstream_request,
                        Some(&mut response),
                        response_trailers
                            .as_mut()
                            .and_then(PendingTrailers::for_log),
                    ));
                }
                other => other?,
            };
            if pass.reply.is_some() {
                late_reply = pass.reply;
                break;
            }
            let Some((data, eos)) = pass.released else {
                return Err(stalled(&io.chain().slots[h], "on_response_body"));
            };
            late_reply = match Self::encode(
                io,
                &mut response,
                false,
                &details,
                &mut progress[..last],
                h,
                &mut held,
                &mut callouts,
                None,
            )
            .await
            {
                Err(e @ (Error::Reset { .. } | Error::Disconnected { .. })) => {
                    return Err(Self::reset(
                        io,
                        e,
                        &progress,
                        &mut fields,
                        &mut callouts,
                        upstream_request,
                        Some(&mut response),
                        response_trailers
                            .as_mut()
                            .and_then(PendingTrailers::for_log),
                    ));
                }
                other => other?,
            };
            if !data.is_empty() || eos {
                queue.push_front((last - h, data, eos));
            }
        }
        order = fill(order, (0..last).rev());
        let late_reply = match late_reply {
            Some(r) => Err(r),
            None => match Self::pass_body(
                io,
                Direction::Response,
                &mut queue,
                &order,
                &progress,
                &mut buffered,
                None,
                &mut response_trailers,
                &mut callouts,
            )
            .await
            {
                Err(e @ (Error::Reset { .. } | Error::Disconnected { .. })) => {
                    return Err(Self::reset(
                        io,
                        e,
                        &progress,
                        &mut fields,
                        &mut callouts,
                        upstream_request,
                        Some(&mut response),
                        response_trailers
                            .as_mut()
                            .and_then(PendingTrailers::for_log),
                    ));
                }
                Err(e) => return Err(e),
                // The response headers have gone to the client: Envoy cannot
                // answer with a local reply any more and resets the stream.
                Ok(BodyPass {
                    reply: Some(r),
                    reply_in_trailers,
                    ..
                }) => {
                    let plugin = r.slot.map_or_else(
                        || ROUTER.to_owned(),
                        |i| io.chain().slots[i].vm.name().to_owned(),
                    );
                    let phase = if reply_in_trailers {
                        "on_response_trailers"
                    } else {
                        "on_response_body"
                    };
                    let reset_error = reset_by(plugin, phase);
                    // Envoy's `sendLocalReply` gives the stream the reply's
                    // details before it finds it can only reset; the access
                    // log reads the response headers as they went out.
                    {
                        let mut guard = io.chain();
                        let chain: &mut Chain = &mut guard;
                        chain.refresh_date();
                        let date = chain.date.as_ref().map_or("", |(_, date)| date.as_str());
                        chain.hcm.stamp(&mut response, date);
                        response.remove(b"transfer-encoding");
                    }
                    io.facts
                        .get()
                        .respond(response_code(&response), Cow::Owned(r.request.details));
                    return Err(Self::reset(
                        io,
                        reset_error,
                        &progress,
                        &mut fields,
                        &mut callouts,
                        upstream_request,
                        Some(&mut response),
                        response_trailers
                            .as_mut()
                            .and_then(PendingTrailers::for_log),
                    ));
                }
                Ok(pass) => Ok(pass.out),
            },
        };
        let (reply, mut response_fields, response_body) = match late_reply {
            Err(r) => {
                response_trailers = None;
                let mut facts = io.facts.get();
                let (fields, body) = ConnectionManager::local_reply(
                    &r.request,
                    facts.grpc_request,
                    facts.head_request,
                );
                let body = Bytes::from(body);
                // Straight to the client.
                let sent = u64::try_from(body.len()).unwrap_or(u64::MAX);
                facts.bytes_sent = facts.bytes_sent.saturating_add(sent);
                (Some(r), fields, body)
            }
            Ok(body) => {
                check_length(&response, body.len(), "response", &mut warnings);
                (reply, response, Bytes::from(body))
            }
        };
        let mut guard = io.chain();
        let chain: &mut Chain = &mut guard;
        chain.refresh_date();
        let date = chain.date.as_ref().map_or("", |(_, date)| date.as_str());
        let mut response_trailers = response_trailers.map(PendingTrailers::into_sent);
        let mut response = chain.hcm.client_response(
            &mut response_fields,
            response_body,
            date,
            response_trailers.as_ref(),
            io.facts.get().head_request,
            &mut chain.http_cache,
        )?;
        let close = reply
            .as_ref()
            .is_some_and(|r| close_after_reply(&mut response, &r.request, request_complete));
        // What the access log reads: `:status`, then the client response's
        // headers in `http::HeaderMap` order (repeated names grouped). Without
        // repeated names (the `http` map has a value per name) or an inserted
        // `connection`, those are the map's entries as they are.
        let mut final_response = if !close
            && response_fields.kind() == Kind::Response
            && response.headers().len() == response.headers().keys_len()
        {
            response_fields.with_status_first(response.status().as_str().as_bytes())
        } else {
            let mut fields = Fields::with_capacity(Kind::Response, response.headers().len() + 1);
            fields.add_new(b":status", response.status().as_str().as_bytes());
            // Not the codec's framing: the map has none of it.
            let framed_on_wire = |k: &http::HeaderName| {
                k == http::header::TRANSFER_ENCODING
                    || (k == http::header::CONTENT_LENGTH
                        && response_fields.get(b"content-length").is_none())
            };
            for (k, v) in response.headers() {
                if !framed_on_wire(k) {
                    fields.add_lowercase(k.as_str().as_bytes(), v.as_bytes());
                }
            }
            fields
        };
        let details = reply.as_ref().map_or(Cow::Borrowed("via_upstream"), |r| {
            Cow::Owned(r.request.details.clone())
        });
        {
            let mut facts = io.facts.get();
            facts.respond(response_code(&final_response), details);
            facts.ended_at = Some(chain.monotonic());
        }
        let created = chain.log_stream(
            &progress,
            &mut fields,
            Some(&mut final_response),
            response_trailers.as_mut(),
        );
        Self::own_contexts(io, chain, &created);
        // Responses that arrive after the stream ended find no stream to act
        // on: they come as the batch's events, as do the notifications the
        // response phase posted (the response usually arrives in one event
        // that also ends the stream, so they run after on_delete).
        chain.scratch.progress = progress;
        chain.scratch.buffered = buffered;
        chain.scratch.order = order;
        chain.scratch.keep(fields, final_response);
        let grpc = io.facts.get().grpc_request;
        let local_reply = reply.map(|r| {
            let plugin = r.slot.map_or_else(
                || ROUTER.to_owned(),
                |i| chain.slots[i].vm.name().to_owned(),
            );
            LocalReply::of(plugin, r.request, grpc)
        });
        Ok(Outcome {
            upstream_request,
            response,
            local_reply,
            // The batch fills in what the stream did over all its events.
            logs: Vec::new(),
            fuel: 0,
            host_calls: 0,
            callouts,
            grpc: Vec::new(),
            traps: Vec::new(),
            warnings,
        })
    }

    /// A stream the connection manager answers before it creates the filters
    /// (a path it rejects or redirects): no filter sees it, none logs it. The
    /// connection closes as after any local reply ([`close_after_reply`]).
    fn answer_before_filters(
        io: &Io<'_, '_>,
        chain: &mut Chain,
        fields: Fields,
        reply: LocalReplyRequest,
        request_complete: bool,
        warnings: Vec<String>,
    ) -> Result<Outcome> {
        // Read before a codec error emptied the request's map.
        let head = io.facts.get().head_request;
        let grpc = crate::hcm::is_grpc_request(&fields);
        let (mut response_fields, body) = ConnectionManager::local_reply(&reply, grpc, head);
        let body = Bytes::from(body);
        chain.refresh_date();
        let date = chain.date.as_ref().map_or("", |(_, date)| date.as_str());
        let mut response = chain.hcm.client_response(
            &mut response_fields,
            body.clone(),
            date,
            None,
            head,
            &mut chain.http_cache,
        )?;
        close_after_reply(&mut response, &reply, request_complete);
        {
            let mut facts = io.facts.get();
            facts.grpc_request = grpc;
            let sent = u64::try_from(body.len()).unwrap_or(u64::MAX);
            facts.bytes_sent = facts.bytes_sent.saturating_add(sent);
            facts.respond(
                response.status().as_u16().into(),
                Cow::Owned(reply.details.clone()),
            );
            facts.ended_at = Some(chain.monotonic());
        }
        chain.scratch.request_headers = fields;
        Ok(Outcome {
            upstream_request: None,
            response,
            local_reply: Some(LocalReply::of(CONNECTION_MANAGER.to_owned(), reply, grpc)),
            logs: Vec::new(),
            fuel: 0,
            host_calls: 0,
            callouts: Vec::new(),
            grpc: Vec::new(),
            traps: Vec::new(),
            warnings,
        })
    }

    /// Passes body frames through the filters in `order`, as Envoy does: each
    /// frame goes through every filter before the next frame (from the position
    /// in `order` it names); a filter that buffers (Pause) gets the accumulated
    /// body with the next frame. Returns the bytes that came out of the last
    /// filter, or the local reply that ended the stream.
    ///
    /// `hold` is a filter that holds its headers (and the headers): its body
    /// callbacks can change them, and the pass stops as soon as it continues,
    /// with the data it lets go in [`BodyPass::released`].
    #[allow(
        clippy::too_many_arguments,
        reason = "the state of one stream's pass, owned by `send`"
    )]
    async fn pass_body(
        io: &mut Io<'_, '_>,
        direction: Direction,
        frames: &mut VecDeque<(usize, Vec<u8>, bool)>,
        order: &[usize],
        progress: &[Progress],
        buffered: &mut [Option<Vec<u8>>],
        hold: Option<(usize, &mut Fields)>,
        trailers: &mut Option<PendingTrailers>,
        callouts: &mut Vec<Callout>,
    ) -> Result<BodyPass> {
        // Filters that buffered the end of the stream while a callout is in flight.
        let mut waiting_at_end = {
            let mut chain = io.chain();
            let filters = chain.slots.len();
            refill(
                std::mem::take(&mut chain.scratch.waiting_at_end),
                filters,
                false,
            )
        };
        let pass = Self::pass_frames(
            io,
            direction,
            frames,
            order,
            progress,
            buffered,
            hold,
            trailers,
            callouts,
            &mut waiting_at_end,
        )
        .await;
        io.chain().scratch.waiting_at_end = waiting_at_end;
        pass
    }

    /// [`Chain::pass_body`] with its working vector.
    #[allow(
        clippy::too_many_arguments,
        reason = "the state of one stream's pass, owned by `send`"
    )]
    async fn pass_frames(
        io: &mut Io<'_, '_>,
        direction: Direction,
        frames: &mut VecDeque<(usize, Vec<u8>, bool)>,
        order: &[usize],
        progress: &[Progress],
        buffered: &mut [Option<Vec<u8>>],
        mut hold: Option<(usize, &mut Fields)>,
        trailers: &mut Option<PendingTrailers>,
        callouts: &mut Vec<Callout>,
        waiting_at_end: &mut [bool],
    ) -> Result<BodyPass> {
        let callback = match direction {
            Direction::Request => "on_request_body",
            Direction::Response => "on_response_body",
        };
        let mut pass = BodyPass::default();
        // What leaves the last encoder filter is sent to the client (not
        // what a pass through the filters before a paused one lets go).
        let to_peer = direction == Direction::Response
            && hold.is_none()
            && order.len() == io.chain().slots.len();
        loop {
            if frames.is_empty() && !io.pieces.is_empty() {
                // The body has gone as far as it can until its next piece
                // arrives: the stream waits for it, and meanwhile for the
                // callouts of filters that hold the body.
                io.waits = true;
                if let Some(reply) = Self::answer_in_flight(
                    io,
                    direction,
                    order,
                    progress,
                    buffered,
                    waiting_at_end,
                    frames,
                    callouts,
                    &mut hold,
                )
                .await?
                {
                    pass.reply = Some(reply);
                    return Ok(pass);
                }
                if frames.is_empty()
                    && let Some(&(at, _, _)) = io.pieces.front()
                {
                    match io.wait(Wait::Piece { at }).await {
                        Delivery::Piece => Self::piece_arrives(io, frames),
                        Delivery::Disconnected => return Err(disconnected(callback)),
                        // Nothing else wakes this wait.
                        _ => {}
                    }
                }
                continue;
            }
            let Some((start, data, mut eos)) = frames.pop_front() else {
                // The upstream's response ends with its trailers.
                if direction == Direction::Response && trailers.is_some() {
                    io.facts.get().upstream_complete();
                }
                // The data has gone as far as it can: the trailers follow it.
                match Self::trailers_step(
                    io, direction, trailers, order, progress, buffered, &mut hold, frames,
                    callouts, &mut pass,
                )
                .await?
                {
                    trailers::Step::Data => continue,
                    trailers::Step::Stop => return Ok(pass),
                    trailers::Step::Done => break,
                }
            };
            // The filter that holds the headers was resumed by an answer
            // (`answer_in_flight`): the headers go on, with what it buffered.
            if start >= order.len() && matches!(hold, Some((h, _)) if order.last() == Some(&h)) {
                pass.released = Some((data, eos));
                return Ok(pass);
            }
            pass.complete |= eos;
            // A frame that enters the chain arrives: from the client (Envoy
            // counts the bytes it receives), or the upstream's last.
            if start == 0 {
                match direction {
                    Direction::Request => io.facts.get().received(data.len()),
                    Direction::Response if eos => io.facts.get().upstream_complete(),
                    Direction::Response => {}
                }
            }
            let mut carry = Some(data);
            for (position, &i) in order.iter().enumerate().skip(start) {
                let Some(data) = carry.take() else { break };
                let mut guard = io.chain();
                let chain: &mut Chain = &mut guard;
                let buffer_limit = chain.hcm.buffer_limit_bytes();
                let slot = &mut chain.slots[i];
                let (Some(stream), true) = (progress[i].context, progress[i].decoded) else {
                    carry = Some(data);
                    continue;
                };
                if slot.failed_for(progress[i].generation) {
                    if slot.policy == FailurePolicy::FailOpen {
                        carry = Some(data);
                        continue;
                    }
                    pass.reply = Some(Reply {
                        slot: Some(i),
                        request: fail_stream(),
                    });
                    return Ok(pass);
                }
                // Envoy's iteration state: the filter stopped on earlier data
                // or holds the headers.
                let was_stopped = buffered[i].is_some() || matches!(hold, Some((h, _)) if h == i);
                // A filter without the body callback (that does not hold the
                // headers) passes the frame on as if it returned Continue.
                if !was_stopped && slot.vm.passes_body(direction == Direction::Response) {
                    carry = Some(data);
                    continue;
                }
                let body = match buffered[i].take() {
                    Some(mut b) => {
                        b.extend_from_slice(&data);
                        b
                    }
                    None => data,
                };
                let size = body.len();
                let mut holding: Option<&mut Fields> = match &mut hold {
                    Some((h, headers)) if *h == i => Some(&mut **headers),
                    _ => None,
                };
                let (step, body, added) = {
                    let mut state = slot.vm.state();
                    state.maps.trailers_addable = eos;
                    match direction {
                        Direction::Request => state.maps.request_body = Some(body),
                        Direction::Response => state.maps.response_body = Some(body),
                    }
                    if let Some(headers) = holding.as_deref_mut() {
                        *direction.headers(&mut state.maps) = Some(std::mem::take(headers));
                    }
                    drop(state);
                    let r = match direction {
                        Direction::Request => slot.vm.on_request_body(stream, size, eos),
                        Direction::Response => slot.vm.on_response_body(stream, size, eos),
                    };
                    let step = after(slot, stream, r, direction, callback);
                    let mut state = slot.vm.state();
                    let maps = &mut state.maps;
                    maps.trailers_addable = false;
                    let (body, headers, added) = match direction {
                        Direction::Request => (
                            maps.request_body.take(),
                            maps.request_headers.take(),
                            maps.request_trailers.take(),
                        ),
                        Direction::Response => (
                            maps.response_body.take(),
                            maps.response_headers.take(),
                            maps.response_trailers.take(),
                        ),
                    };
                    if let Some(held) = holding {
                        *held = headers.unwrap_or_default();
                    }
                    (step, body.unwrap_or_default(), added)
                };
                let holding = matches!(hold, Some((h, _)) if h == i);
                // Trailers the filter added at the end of the stream: the
                // filters after it get this data without the end of the
                // stream, then the trailers.
                let next_eos = eos && added.is_none();
                // A local reply from the request body leaves Envoy's context
                // with its body buffer set, and the reply ends the stream:
                // in `on_log` its `getMap` adds request trailers (empty
                // unless the filter added some) that it then holds.
                if direction == Direction::Request && matches!(step, Ok(After::Reply(_))) {
                    slot.vm.state().hold(stream).request_trailers =
                        Held::Own(added.clone().unwrap_or_else(|| Fields::new(Kind::Plain)));
                }
                if let Some(fields) = added {
                    *trailers = Some(PendingTrailers::added(
                        direction,
                        (i, position + 1),
                        fields,
                        was_stopped,
                    ));
                }
                match step? {
                    After::Failed => {
                        pass.reply = Some(Reply {
                            slot: Some(i),
                            request: fail_stream(),
                        });
                        return Ok(pass);
                    }
                    After::Reply(request) => {
                        pass.reply = Some(Reply {
                            slot: Some(i),
                            request,
                        });
                        return Ok(pass);
                    }
                    After::Returned { resumed: true, .. } if holding => {
                        pass.released = Some((body, next_eos));
                        return Ok(pass);
                    }
                    After::Returned { resumed: true, .. } => carry = Some(body),
                    After::Returned {
                        action,
                        resumed: false,
                    } => match data_status(action) {
                        Data::Pass if holding => {
                            if direction == Direction::Request && !io.emptied.contains(&i) {
                                io.emptied.push(i);
                            }
                            pass.released = Some((body, next_eos));
                            return Ok(pass);
                        }
                        Data::Pass => carry = Some(body),
                        // Waiting for a callout or a gRPC answer: it may
                        // resume the filter.
                        Data::Buffer if eos && waits_for_answers(slot, progress[i].context) => {
                            buffered[i] = Some(body);
                            waiting_at_end[i] = true;
                        }
                        Data::Buffer if eos => return Err(stalled(slot, callback)),
                        // Envoy's filter manager refuses to buffer past the
                        // connection's limit: 413 for requests, 500 for responses.
                        Data::Buffer if body.len() > buffer_limit => {
                            pass.reply = Some(Reply {
                                slot: Some(i),
                                request: too_large(direction),
                            });
                            return Ok(pass);
                        }
                        Data::Buffer => buffered[i] = Some(body),
                        Data::Drop => {}
                    },
                }
                eos = next_eos;
            }
            if let Some(data) = carry {
                pass.ended |= eos;
                if to_peer {
                    let sent = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    let mut facts = io.facts.get();
                    facts.bytes_sent = facts.bytes_sent.saturating_add(sent);
                }
                if pass.out.is_empty() {
                    pass.out = data;
                } else {
                    pass.out.extend_from_slice(&data);
                }
            }
            // A frame and the empty end-of-stream frame after it arrive together
            // (Envoy's codec ends the message in the same read); callout responses
            // come in after what arrived together.
            // Trailers arrive with the last data frame, too.
            let trailers_follow = frames.is_empty()
                && io.pieces.is_empty()
                && trailers.as_ref().is_some_and(|t| t.at < order.len());
            let event_ends =
                !trailers_follow && !matches!(frames.front(), Some((_, d, true)) if d.is_empty());
            if event_ends
                && let Some(reply) = Self::answer_in_flight(
                    io,
                    direction,
                    order,
                    progress,
                    buffered,
                    waiting_at_end,
                    frames,
                    callouts,
                    &mut hold,
                )
                .await?
            {
                pass.reply = Some(reply);
                return Ok(pass);
            }
        }
        Ok(pass)
    }

    /// Filter `header.i`'s headers callback paused the stream (at `position`
    /// in the direction's order), leaving `step`: the body that arrived
    /// meanwhile goes through the filters before it
    /// ([`Chain::arrive_while_paused`]), then the stream waits
    /// ([`Header::wait`]): for the answer, and meanwhile for the next piece
    /// of a body sent with a [`ChunkGap`] (it goes the same way) and the
    /// answers to the callouts of the filters before it that buffered body
    /// ([`Chain::answer_before`]: resumed, they send it on towards the paused
    /// filter). A local reply from one of those filters' callbacks ends the
    /// stream there; the headers come back as they are.
    #[allow(
        clippy::too_many_arguments,
        reason = "the state of one stream's pass, owned by `send`"
    )]
    async fn pause(
        io: &mut Io<'_, '_>,
        header: Header,
        step: After,
        position: usize,
        arriving: &mut Option<&mut Arriving<'_>>,
        progress: &[Progress],
        callouts: &mut Vec<Callout>,
        fields: &mut Fields,
        held: &mut Option<usize>,
    ) -> Result<Paused> {
        let mut step = step;
        loop {
            let arrived = Self::arrive_while_paused(
                io, header, &step, position, arriving, progress, callouts,
            )
            .await;
            match arrived {
                Ok(None) => {}
                Ok(Some(reply)) => {
                    let step = After::Returned {
                        action: None,
                        resumed: false,
                    };
                    Self::headers_returned(io, header, Ok(step), fields, held)?;
                    return Ok(Paused::Reply(reply));
                }
                Err(e) => return Ok(Paused::Step(Err(e))),
            }
            // Pieces of the body still to come (a body sent with a gap)
            // arrive while the filter waits, unless it holds the headers
            // (it gets the body itself).
            let pieces = match arriving.as_deref() {
                Some(_) if !io.pieces.is_empty() => {
                    let chain = io.chain();
                    !matches!(&step, After::Returned { action, .. }
                        if holds(&chain.slots[header.i], *action, header.end_of_stream))
                }
                _ => false,
            };
            // The filters before it that hold buffered body: their callouts'
            // answers may send it on meanwhile.
            let before = match arriving.as_deref() {
                Some(a) => Self::buffering_before(header.direction, position, a, progress),
                None => Vec::new(),
            };
            match header.wait(io, step, callouts, pieces, &before).await {
                Ok((waited, Woke::Piece)) => {
                    step = waited;
                    if let (Some(a), Some((_, data, eos))) =
                        (arriving.as_deref_mut(), io.pieces.pop_front())
                    {
                        a.frames.push_back((0, data, eos));
                    }
                }
                Ok((waited, Woke::Answer(j, call))) => {
                    step = waited;
                    let Some(a) = arriving.as_deref_mut() else {
                        continue;
                    };
                    match Self::answer_before(io, header.direction, a, j, call, callouts) {
                        Ok(None) => {}
                        Ok(Some(reply)) => {
                            Self::leave_callouts(io, progress);
                            let step = After::Returned {
                                action: None,
                                resumed: false,
                            };
                            Self::headers_returned(io, header, Ok(step), fields, held)?;
                            return Ok(Paused::Reply(reply));
                        }
                        Err(e) => return Ok(Paused::Step(Err(e))),
                    }
                }
                Ok((waited, Woke::Done)) => {
                    if let Some(a) = arriving.as_deref_mut() {
                        let filters = io.chain().slots.len();
                        a.gather(header.direction, position, filters);
                    }
                    return Ok(Paused::Step(Ok(waited)));
                }
                Err(e) => return Ok(Paused::Step(Err(e))),
            }
        }
    }

    /// Filter `header.i`'s headers callback paused the stream (at `position`
    /// in the direction's order) and waits: what of the body has arrived
    /// meanwhile goes through the filters before it, frame by frame, as
    /// Envoy's filter manager iterates data that arrives while a later filter
    /// stopped all iteration, and the trailers after it; what comes out is
    /// buffered at the paused filter, which (once resumed) hands it to itself
    /// and the filters after it as one frame. Envoy's stream has one body
    /// buffer: what the filters before it buffered moves there too.
    /// Measured in Envoy 1.40 (body-while-paused.yaml). A filter that holds
    /// its headers (StopIteration with `allow_on_headers_stop_iteration`)
    /// gets the body itself: nothing to do. Callouts are not answered
    /// meanwhile; a local reply from a body callback ends the stream.
    async fn arrive_while_paused(
        io: &mut Io<'_, '_>,
        header: Header,
        step: &After,
        position: usize,
        arriving: &mut Option<&mut Arriving<'_>>,
        progress: &[Progress],
        callouts: &mut Vec<Callout>,
    ) -> Result<Option<Reply>> {
        let Some(a) = arriving.as_deref_mut() else {
            return Ok(None);
        };
        let direction = header.direction;
        let filters = {
            let chain = io.chain();
            if let After::Returned { action, .. } = step
                && holds(&chain.slots[header.i], *action, header.end_of_stream)
            {
                return Ok(None);
            }
            chain.slots.len()
        };
        // What has arrived: the whole body, or (in pieces) what earlier
        // pauses let through and the first piece.
        let mut arrived = VecDeque::new();
        if a.in_pieces {
            while let Some(&(start, _, _)) = a.frames.front()
                && start > 0
            {
                arrived.extend(a.frames.pop_front());
            }
            if !a.first_arrived {
                a.first_arrived = true;
                arrived.extend(a.frames.pop_front());
            }
        } else {
            arrived = std::mem::take(a.frames);
        }
        let mut no_trailers = None;
        // Trailers come with the last piece.
        let trailers = if a.in_pieces || !io.pieces.is_empty() {
            &mut no_trailers
        } else {
            &mut *a.trailers
        };
        let moving_trailers = trailers.as_ref().is_some_and(|t| t.at < position);
        if arrived.is_empty() && !moving_trailers {
            return Ok(None);
        }
        if position == 0 {
            // No filter before the paused one: what arrived waits there, in
            // one frame (it enters the chain, and counts as received, then).
            let ended = arrived.iter().any(|&(_, _, eos)| eos);
            let mut data = Vec::new();
            for (_, d, _) in arrived {
                if data.is_empty() {
                    data = d;
                } else {
                    data.extend_from_slice(&d);
                }
            }
            if !data.is_empty() || ended {
                a.frames.push_front((0, data, ended));
            }
            return Ok(None);
        }
        let order = std::mem::take(a.order);
        let order = match direction {
            Direction::Request => fill(order, 0..position),
            Direction::Response => fill(order, (filters - position..filters).rev()),
        };
        let waits = std::mem::replace(&mut io.waits, false);
        // What has not arrived yet is not this pass's.
        let pieces = std::mem::take(&mut io.pieces);
        let pass = Self::pass_body(
            io,
            direction,
            &mut arrived,
            &order,
            progress,
            a.buffered,
            None,
            trailers,
            callouts,
        )
        .await;
        io.waits = waits;
        io.pieces = pieces;
        let pass = pass?;
        a.complete |= pass.complete;
        if pass.reply.is_some() {
            *a.order = order;
            Self::leave_callouts(io, progress);
            return Ok(pass.reply);
        }
        *a.order = order;
        // What waits at the paused filter: what came before (the pass took
        // it along, as it starts at the paused filter) and what the filters
        // before it let through now. What they buffered joins it when the
        // filter resumes ([`Arriving::gather`]).
        // The end of the stream belongs to the stream, not to a filter: one
        // before the paused filter that stopped on it (waiting for its own
        // callout) does not keep it from the paused filter, which resumes
        // with the whole body and the end of the stream (Envoy 1.40). Trailers
        // that came as far as the paused filter end the stream after it.
        let ended = pass.ended || (pass.complete && trailers.is_none());
        if !pass.out.is_empty() || ended {
            a.frames.push_front((position, pass.out, ended));
        }
        Ok(None)
    }

    /// A local reply goes out at once while a filter's headers wait: the
    /// stream's callouts still in flight are answered after it ended (Envoy
    /// 1.40), not waited for by the reply's body pass.
    fn leave_callouts(io: &mut Io<'_, '_>, progress: &[Progress]) {
        let mut chain = io.chain();
        for (i, slot) in chain.slots.iter_mut().enumerate() {
            let Some(context) = progress.get(i).and_then(|p| p.context) else {
                continue;
            };
            let state = slot.vm.state();
            let calls = state.root().pending_calls.iter();
            io.leftovers
                .extend(calls.filter(|c| c.context == context).map(|c| (i, c.token)));
        }
    }

    /// The filters before the one at `position` (in `direction`'s order) that
    /// hold buffered body while it waits, each with its context in the
    /// stream.
    fn buffering_before(
        direction: Direction,
        position: usize,
        a: &Arriving<'_>,
        progress: &[Progress],
    ) -> Vec<(usize, u32)> {
        let filters = a.buffered.len();
        (0..position.min(filters))
            .map(|k| match direction {
                Direction::Request => k,
                Direction::Response => filters - 1 - k,
            })
            .filter(|&i| a.buffered[i].is_some())
            .filter_map(|i| Some((i, progress.get(i)?.context?)))
            .collect()
    }

    /// The answer to a callout of filter `j`, before the filter whose headers
    /// wait, which holds buffered body: `on_http_call_response` with that
    /// body, as Envoy runs it. If it resumes the filter, the body goes on
    /// from the filter after it (through those up to the paused filter, with
    /// what arrives next); a local reply ends the stream.
    fn answer_before(
        io: &mut Io<'_, '_>,
        direction: Direction,
        a: &mut Arriving<'_>,
        j: usize,
        call: Box<PendingCall>,
        callouts: &mut Vec<Callout>,
    ) -> Result<Option<Reply>> {
        let filters = a.buffered.len();
        let step = {
            let mut guard = io.chain();
            let Chain {
                slots, clusters, ..
            } = &mut **guard;
            let (Some(slot), Some(buffered)) = (slots.get_mut(j), a.buffered.get_mut(j)) else {
                return Ok(None);
            };
            let context = call.context;
            answer_buffered(
                slot,
                direction,
                buffered,
                context,
                "on_http_call_response",
                |vm| answer_call(vm, clusters, *call, callouts),
            )?
        };
        match step {
            After::Reply(request) => Ok(Some(Reply {
                slot: Some(j),
                request,
            })),
            After::Failed => Ok(Some(Reply {
                slot: Some(j),
                request: fail_stream(),
            })),
            After::Returned { resumed: true, .. } => {
                if let Some(body) = a.buffered.get_mut(j).and_then(Option::take) {
                    let position = match direction {
                        Direction::Request => j,
                        Direction::Response => filters - 1 - j,
                    };
                    // Before what has not arrived yet (pieces without a gap).
                    let at = a.frames.iter().take_while(|f| f.0 > 0).count();
                    a.frames.insert(at, (position + 1, body, a.complete));
                }
                Ok(None)
            }
            After::Returned { .. } => Ok(None),
        }
    }

    /// Delivers the responses of the stream's callouts in flight, one by one,
    /// as the chain's events after the body frames that arrived before them:
    /// those of filters that hold body frames whenever they come, those of
    /// the others only if they are due now (a later one does not hold the
    /// stream; it reaches its filter whenever it arrives).
    /// A response that resumes a filter holding a buffered body sends that body
    /// on (queued in `frames`) and ends this round: the stream goes as far as
    /// it can before the next response arrives. A filter that buffered the end
    /// of the stream and is not resumed once nothing is in flight has stalled.
    #[allow(
        clippy::too_many_arguments,
        reason = "the state of one stream's pass, owned by `send`"
    )]
    async fn answer_in_flight(
        io: &mut Io<'_, '_>,
        direction: Direction,
        order: &[usize],
        progress: &[Progress],
        buffered: &mut [Option<Vec<u8>>],
        waiting_at_end: &mut [bool],
        frames: &mut VecDeque<(usize, Vec<u8>, bool)>,
        callouts: &mut Vec<Callout>,
        hold: &mut Option<(usize, &mut Fields)>,
    ) -> Result<Option<Reply>> {
        let callback = match direction {
            Direction::Request => "on_request_body",
            Direction::Response => "on_response_body",
        };
        if !io.waits {
            return Ok(None);
        }
        let give_up = io.chain().monotonic() + MAX_HELD;
        loop {
            // The filters of the pass whose context in this stream has a
            // callout in flight.
            let filters: Vec<(usize, u32)> = {
                let mut guard = io.chain();
                let now = guard.monotonic();
                let chain: &mut Chain = &mut guard;
                let mut filters = Vec::new();
                for &i in order {
                    let Some(context) = progress[i].context else {
                        continue;
                    };
                    let slot = &mut chain.slots[i];
                    let leftovers = &io.leftovers;
                    let holds_body = buffered[i].is_some() || waiting_at_end[i];
                    // A failed VM never lets the body go: the stream stays
                    // paused until its client leaves (measured in Envoy 1.40).
                    if slot.failed_for(progress[i].generation) {
                        if holds_body {
                            filters.push((i, context));
                        }
                        continue;
                    }
                    // A filter that let the body go does not hold the
                    // stream: only an answer due now comes before what
                    // follows (the upstream, the next frame); a later one
                    // reaches it whenever it arrives, as in Envoy 1.40.
                    // One that let its held headers go with the body
                    // (`Io::emptied`) is answered in the stream while the
                    // body still arrives: a resume sends its empty buffer on.
                    let emptied = direction == Direction::Request
                        && !io.pieces.is_empty()
                        && io.emptied.contains(&i);
                    let in_flight = {
                        let mut state = slot.vm.state();
                        let root = state.root_mut();
                        root.pending_calls.iter_mut().any(|c| {
                            c.context == context
                                && !leftovers.contains(&(i, c.token))
                                && (holds_body
                                    || emptied
                                    || call_due(&mut chain.clusters, c) <= now)
                        }) || (holds_body && root.grpc.open_for(context))
                    };
                    if in_flight {
                        filters.push((i, context));
                    }
                }
                if filters.is_empty() {
                    if let Some(&i) = order.iter().find(|&&i| waiting_at_end[i]) {
                        return Err(stalled(&chain.slots[i], callback));
                    }
                    return Ok(None);
                }
                filters
            };
            let piece = io.pieces.front().map(|&(at, _, _)| at);
            let delivery = io
                .wait(Wait::Body {
                    filters: filters.clone(),
                    give_up,
                    piece,
                })
                .await;
            if let Delivery::Piece = delivery {
                // The next piece goes first; the answers come after it.
                Self::piece_arrives(io, frames);
                return Ok(None);
            }
            let mut guard = io.chain();
            let Chain {
                slots,
                clusters,
                grpc,
                ..
            } = &mut **guard;
            // The filter that holds the headers reads and changes them from
            // its answers.
            let mut held = hold.as_mut().map(|(h, headers)| (*h, &mut **headers));
            let (i, step) = match delivery {
                Delivery::Call(i, call) => {
                    let Some(slot) = slots.get_mut(i) else {
                        continue;
                    };
                    let context = call.context;
                    let step = with_held(slot, direction, i, &mut held, |slot| {
                        answer_buffered(
                            slot,
                            direction,
                            &mut buffered[i],
                            context,
                            "on_http_call_response",
                            |vm| answer_call(vm, clusters, *call, callouts),
                        )
                    })?;
                    (i, step)
                }
                Delivery::Resumed => {
                    // Another callback deferred an action for one of the
                    // waiting contexts.
                    let mut resumed = None;
                    for &(i, context) in &filters {
                        let Some(slot) = slots.get_mut(i) else {
                            continue;
                        };
                        if slot.vm.state().deferred.has(context) {
                            let step = with_held(slot, direction, i, &mut held, |slot| {
                                after(slot, context, Ok(None), direction, "on_http_call_response")
                            })?;
                            resumed = Some((i, step));
                            break;
                        }
                    }
                    match resumed {
                        Some(found) => found,
                        None => continue,
                    }
                }
                Delivery::Grpc(i) => {
                    let Some(&(_, context)) = filters.iter().find(|&&(s, _)| s == i) else {
                        continue;
                    };
                    let step = with_held(&mut slots[i], direction, i, &mut held, |slot| {
                        answer_buffered(
                            slot,
                            direction,
                            &mut buffered[i],
                            context,
                            "on_grpc_callback",
                            |vm| grpc_step(vm, grpc).unwrap_or(Ok(())).map(|()| None),
                        )
                    })?;
                    (i, step)
                }
                Delivery::Disconnected => return Err(disconnected(callback)),
                Delivery::Stalled | Delivery::Upstream | Delivery::Piece => {
                    let i = order
                        .iter()
                        .copied()
                        .find(|&i| waiting_at_end[i])
                        .or_else(|| filters.first().map(|&(i, _)| i))
                        .unwrap_or_default();
                    return Err(stalled(&slots[i], callback));
                }
            };
            if !matches!(step, After::Returned { resumed: false, .. }) {
                io.waits = false;
            }
            match step {
                After::Reply(request) => {
                    return Ok(Some(Reply {
                        slot: Some(i),
                        request,
                    }));
                }
                After::Failed => {
                    return Ok(Some(Reply {
                        slot: Some(i),
                        request: fail_stream(),
                    }));
                }
                After::Returned { resumed: true, .. } => {
                    let end = std::mem::take(&mut waiting_at_end[i]);
                    let position = order.iter().position(|&o| o == i).unwrap_or_default();
                    if let Some(body) = buffered[i].take() {
                        frames.push_front((position + 1, body, end));
                    } else if matches!(hold, Some((h, _)) if *h == i) {
                        // Resumed with nothing buffered: the held headers go on.
                        frames.push_front((position + 1, Vec::new(), end));
                    } else if direction == Direction::Request
                        && io.emptied.contains(&i)
                        && !io.pieces.is_empty()
                    {
                        // Envoy's emptied body buffer goes on to the filters
                        // after it while the body is still arriving.
                        frames.push_front((position + 1, Vec::new(), false));
                    }
                    return Ok(None);
                }
                After::Returned { .. } => {}
            }
        }
    }

    /// The next piece of the body arrived: it joins the frames to pass, from
    /// the first filter on. The stream has gone as far as it could before:
    /// it waits for its callouts again.
    fn piece_arrives(io: &mut Io<'_, '_>, frames: &mut VecDeque<(usize, Vec<u8>, bool)>) {
        if let Some((_, data, eos)) = io.pieces.pop_front() {
            frames.push_back((0, data, eos));
        }
        io.waits = true;
    }

    /// Finishes a stream a filter reset: access logging still runs (with no
    /// response), and the error carries what was observed.
    #[allow(
        clippy::too_many_arguments,
        reason = "the state of one stream's pass, owned by `send`"
    )]
    fn reset(
        io: &Io<'_, '_>,
        error: Error,
        progress: &[Progress],
        request: &mut Fields,
        callouts: &mut Vec<Callout>,
        upstream_request: Option<http::Request<Bytes>>,
        response: Option<&mut Fields>,
        trailers: Option<&mut Fields>,
    ) -> Error {
        {
            let mut guard = io.chain();
            let chain: &mut Chain = &mut guard;
            // A client that left while a filter held the upstream's response
            // headers: Envoy's access log still reads them and their status,
            // with the connection manager's details.
            let response = match &error {
                Error::Disconnected { .. } => {
                    let response = response.filter(|r| r.len() > 0);
                    let code = response.as_deref().and_then(response_code);
                    let mut facts = io.facts.get();
                    facts.respond(code, Cow::Borrowed("downstream_remote_disconnect"));
                    facts.flags |= flags::DOWNSTREAM_CONNECTION_TERMINATION;
                    response
                }
                // Reset in the response phase: the access log reads the
                // response headers as the filters left them.
                Error::Reset { .. } => response.filter(|r| r.len() > 0),
                _ => None,
            };
            io.facts.get().ended_at = Some(chain.monotonic());
            let created = chain.log_stream(progress, request, response, trailers);
            Self::own_contexts(io, chain, &created);
        }
        match error {
            Error::Reset { plugin, phase, .. } => Error::Reset {
                plugin,
                phase,
                upstream_request: upstream_request.map(Box::new),
                logs: io.take_logs(),
                callouts: std::mem::take(callouts),
            },
            Error::Disconnected { phase, .. } => Error::Disconnected {
                phase,
                upstream_request: upstream_request.map(Box::new),
                logs: io.take_logs(),
                callouts: std::mem::take(callouts),
            },
            other => other,
        }
    }

    /// Records the contexts log_stream created for filters whose request path
    /// never ran, as the stream's.
    fn own_contexts(io: &Io<'_, '_>, chain: &mut Chain, created: &[(usize, u32)]) {
        for &(i, context) in created {
            if let Some(slot) = chain.slots.get(i) {
                io.own_context(i, slot.vm.key(), context);
            }
        }
    }

    /// The request path: each filter's `on_request_headers` in order, from filter
    /// `from`. A filter that holds the headers (StopIteration with
    /// `allow_on_headers_stop_iteration`) ends it, with its index in `held`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the state of one stream's pass, owned by `send`"
    )]
    async fn decode(
        io: &mut Io<'_, '_>,
        fields: &mut Fields,
        end_of_stream: bool,
        progress: &mut [Progress],
        callouts: &mut Vec<Callout>,
        from: usize,
        held: &mut Option<usize>,
        mut arriving: Option<&mut Arriving<'_>>,
    ) -> Result<Option<Reply>> {
        let filters = io.chain().slots.len();
        #[allow(
            clippy::needless_range_loop,
            reason = "the chain is borrowed anew after each wait"
        )]
        for i in from..filters {
            let (stream, step) = {
                let mut chain = io.chain();
                let slot = &mut chain.slots[i];
                if slot.failed_for(progress[i].generation) {
                    match slot.policy {
                        FailurePolicy::FailOpen => continue,
                        FailurePolicy::FailClosed | FailurePolicy::FailReload => {
                            return Ok(Some(Reply {
                                slot: Some(i),
                                request: fail_stream(),
                            }));
                        }
                    }
                }
                let (stream, call) = slot.vm.open_stream(
                    progress[i].reserved,
                    std::mem::take(fields),
                    end_of_stream,
                    continues,
                );
                io.own_context(i, slot.vm.key(), stream);
                progress[i].context = Some(stream);
                progress[i].decoded = true;
                if let Some(headers) = call.headers {
                    // The filter let the stream go: on to the next.
                    *fields = headers;
                    continue;
                }
                let step = after_deferred(
                    slot,
                    stream,
                    call.result,
                    Direction::Request,
                    "on_request_headers",
                    call.deferred,
                );
                (stream, step)
            };
            let header = Header {
                i,
                stream,
                direction: Direction::Request,
                end_of_stream,
            };
            // A filter that holds its headers (StopIteration with
            // allow_on_headers_stop_iteration) gets the body at once, its
            // callouts still in flight (measured in Envoy 1.40,
            // held-headers-callouts.yaml).
            let holding = matches!(&step, Ok(After::Returned { action, resumed: false })
                if holds(&io.chain().slots[i], *action, end_of_stream));
            let step = match step {
                Ok(step) if pauses(&step) && !holding => {
                    let paused = Self::pause(
                        io,
                        header,
                        step,
                        i,
                        &mut arriving,
                        progress,
                        callouts,
                        fields,
                        held,
                    );
                    match paused.await? {
                        Paused::Step(step) => step,
                        Paused::Reply(reply) => return Ok(Some(reply)),
                    }
                }
                other => other,
            };
            match Self::headers_returned(io, header, step, fields, held)? {
                Headers::Next => {}
                Headers::Held => return Ok(None),
                Headers::Reply(reply) => return Ok(Some(reply)),
                Headers::Failed(reply) => {
                    // Envoy skips a failed VM's encoder callbacks.
                    progress[i].decoded = false;
                    return Ok(Some(reply));
                }
            }
        }
        Ok(None)
    }

    /// After a headers callback of filter `header.i` left `step` (and, if it
    /// paused, the stream waited: [`wait_paused`]): gives the headers back to
    /// `fields` (even when the stream ends here, a reset or a disconnect: the
    /// access log still reads them) and says how the chain goes on.
    fn headers_returned(
        io: &mut Io<'_, '_>,
        header: Header,
        step: Result<After>,
        fields: &mut Fields,
        held: &mut Option<usize>,
    ) -> Result<Headers> {
        let Header {
            i,
            stream,
            direction,
            end_of_stream,
        } = header;
        let callback = header.callback();
        let keeps = match &step {
            Err(Error::Reset { .. } | Error::Disconnected { .. }) | Ok(After::Reply(_)) => true,
            Ok(After::Returned { action, .. }) => {
                direction == Direction::Response && !continues(*action)
            }
            _ => false,
        };
        let mut chain = io.chain();
        let slot = &mut chain.slots[i];
        *fields = {
            let mut state = slot.vm.state();
            let taken = direction
                .headers(&mut state.maps)
                .take()
                .unwrap_or_default();
            // The context keeps the map (see `HeldMaps`). A local reply
            // replaces the upstream's response headers for the client and
            // the access log; the context still points at the upstream's.
            if keeps {
                let hold = state.hold(stream);
                match direction {
                    Direction::Request => hold.request_headers = Held::Logged,
                    Direction::Response if matches!(step, Ok(After::Reply(_))) => {
                        hold.response_headers = Held::Own(taken.clone());
                    }
                    Direction::Response => hold.response_headers = Held::Logged,
                }
            }
            taken
        };
        let reply = |request| Reply {
            slot: Some(i),
            request,
        };
        Ok(match step? {
            After::Returned { action, resumed } => {
                if holds(slot, action, end_of_stream) && !resumed {
                    *held = Some(i);
                    Headers::Held
                } else if !continues(action) && !resumed {
                    return Err(stalled(slot, callback));
                } else {
                    Headers::Next
                }
            }
            After::Reply(request) => Headers::Reply(reply(request)),
            After::Failed => Headers::Failed(reply(fail_stream())),
        })
    }

    /// The response path: `on_response_headers` in reverse order, for the filters
    /// whose request path ran. A local reply sent here replaces the response and
    /// goes straight to the client.
    #[allow(
        clippy::too_many_arguments,
        clippy::ptr_arg,
        reason = "the state of one stream's pass, owned by `send`; a clone of the Cow \
                      keeps the usual static details borrowed"
    )]
    async fn encode(
        io: &mut Io<'_, '_>,
        fields: &mut Fields,
        end_of_stream: bool,
        details: &Cow<'static, str>,
        progress: &mut [Progress],
        below: usize,
        held: &mut Option<usize>,
        callouts: &mut Vec<Callout>,
        mut arriving: Option<&mut Arriving<'_>>,
    ) -> Result<Option<Reply>> {
        let until = below.min(progress.len());
        let last = progress.len();
        for i in (0..until).rev() {
            let (Some(stream), true) = (progress[i].context, progress[i].decoded) else {
                continue;
            };
            let step = {
                let mut chain = io.chain();
                let slot = &mut chain.slots[i];
                if slot.failed_for(progress[i].generation) {
                    if slot.policy == FailurePolicy::FailOpen {
                        continue;
                    }
                    return Ok(Some(Reply {
                        slot: Some(i),
                        request: fail_stream(),
                    }));
                }
                {
                    let mut facts = io.facts.get();
                    let code = facts.reply_code.or_else(|| response_code(fields));
                    facts.respond(code, details.clone());
                }
                let call =
                    slot.vm
                        .respond(stream, std::mem::take(fields), end_of_stream, continues);
                if let Some(headers) = call.headers {
                    // The filter let the stream go: on to the next.
                    *fields = headers;
                    continue;
                }
                after_deferred(
                    slot,
                    stream,
                    call.result,
                    Direction::Response,
                    "on_response_headers",
                    call.deferred,
                )
            };
            let header = Header {
                i,
                stream,
                direction: Direction::Response,
                end_of_stream,
            };
            let step = match step {
                Ok(step) if pauses(&step) => {
                    let paused = Self::pause(
                        io,
                        header,
                        step,
                        last - 1 - i,
                        &mut arriving,
                        progress,
                        callouts,
                        fields,
                        held,
                    );
                    match paused.await? {
                        Paused::Step(step) => step,
                        Paused::Reply(reply) => return Ok(Some(reply)),
                    }
                }
                other => other,
            };
            match Self::headers_returned(io, header, step, fields, held)? {
                Headers::Next => {}
                Headers::Held => return Ok(None),
                Headers::Reply(reply) | Headers::Failed(reply) => return Ok(Some(reply)),
            }
        }
        Ok(None)
    }

    /// Access logging, then teardown, for every filter, in chain order. A filter
    /// whose request path never ran still gets its context created first, as
    /// Envoy's `log()` does; those contexts are returned, with their filters.
    fn log_stream(
        &mut self,
        progress: &[Progress],
        request: &mut Fields,
        mut response: Option<&mut Fields>,
        mut trailers: Option<&mut Fields>,
    ) -> Vec<(usize, u32)> {
        let mut created = Vec::new();
        let mut logged = std::mem::take(&mut self.scratch.logged);
        logged.clear();
        for (i, (slot, p)) in self.slots.iter_mut().zip(progress).enumerate() {
            if slot.failed_for(p.generation) {
                continue;
            }
            let stream = match p.context {
                Some(id) => id,
                None => {
                    let id = p.reserved.unwrap_or_else(|| slot.vm.new_context_id());
                    created.push((i, id));
                    if slot.vm.create_stream(id).is_err() {
                        continue;
                    }
                    id
                }
            };
            // A trap here fails the VM for later streams; this one is answered.
            if slot
                .vm
                .log_stream(
                    stream,
                    request,
                    response.as_deref_mut(),
                    trailers.as_deref_mut(),
                )
                .is_ok()
            {
                logged.push((i, stream));
            }
        }
        // Envoy runs every access log before it destroys the filters.
        for &(i, stream) in &logged {
            if let Some(slot) = self.slots.get_mut(i) {
                let _ = slot.vm.end_stream(stream);
            }
        }
        self.scratch.logged = logged;
        created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_answered_503_with_envoys_details_and_flag() {
        let fault = Some(UpstreamFault::ConnectionRefused);
        let (delay, failure) = UpstreamFailure::of(fault, Some(Duration::from_secs(15)));
        assert_eq!(delay, Duration::ZERO);
        assert_eq!(failure, Some(UpstreamFailure::ConnectFailure));
        let (reply, flag) = UpstreamFailure::ConnectFailure.reply().expect("a reply");
        assert_eq!(flag, flags::UPSTREAM_CONNECTION_FAILURE);
        assert_eq!(flag, 0x20);
        assert_eq!(reply.slot, None);
        assert_eq!(reply.request.status, 503);
        assert_eq!(
            reply.request.details,
            "upstream_reset_before_response_started{remote_connection_failure|\
             delayed_connect_error:_Connection_refused}"
        );
        assert_eq!(
            reply.request.body,
            b"upstream connect error or disconnect/reset before headers. reset reason: \
              remote connection failure"
        );
    }
}
