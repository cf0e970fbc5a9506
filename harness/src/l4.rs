//! Network (L4) filters: Envoy's `envoy.filters.network.wasm` in front of
//! `tcp_proxy`, with an in-process TCP upstream.
//!
//! A [`NetworkChain`] holds the plugins; [`NetworkChain::connect`] opens one
//! client connection through them to a [`TcpUpstream`], and the [`Connection`]
//! sends client bytes in the chunks the test chooses, half-closes, and shows what
//! the client and the upstream received; [`NetworkChain::connections`] does the
//! same for several connections open at once.
//!
//! # What is copied from Envoy
//!
//! * Filters are read filters in the order added and write filters in reverse
//!   (Envoy's `FilterManagerImpl::addFilter`). `tcp_proxy` is the last read
//!   filter.
//! * When a connection is accepted, each filter in turn gets
//!   `proxy_on_context_create` and `proxy_on_new_connection`; a filter that
//!   returns non-zero (`StopIteration`) stops the rest, `tcp_proxy` included, so
//!   the upstream is never connected. `tcp_proxy` disables reading until its
//!   upstream is connected, so client bytes wait in the socket meanwhile.
//! * Every read event runs the read filters from the first one with the whole
//!   connection read buffer (`onContinueReading`): bytes a filter held
//!   (`StopIteration`) stay in the buffer and are delivered again, with the new
//!   ones, to every filter from the first. `tcp_proxy` drains the buffer.
//!   `end_of_stream` is raised once, when the client half-closes.
//! * Upstream bytes accumulate in the upstream connection's buffer and are
//!   written through the write filters (`on_upstream_data`); a filter that stops
//!   keeps them there until the upstream sends more. After
//!   `on_upstream_data` with `end_of_stream`, each filter gets
//!   `proxy_on_upstream_connection_close` with `Unknown` (Envoy does not watch the
//!   upstream connection).
//! * The connection buffer a callback sees stays readable and writable
//!   (`proxy_get_buffer_bytes`/`proxy_set_buffer_bytes` with `DownstreamData` or
//!   `UpstreamData`) until the filter lets it go (returns Continue), as Envoy
//!   keeps its pointer.
//! * `proxy_continue_stream(Downstream)` resumes reading from the next filter
//!   once the callback returns; `proxy_continue_stream(Upstream)` is
//!   `Unimplemented`; `proxy_close_stream(Downstream | Upstream)` closes the
//!   client connection (`FlushWrite`) once the callback returns.
//! * The client connection closes `Local` when Envoy writes its end of stream
//!   after the client's, when the upstream connection has closed both ways
//!   (`tcp_proxy` closes the client's, even if a filter still holds the
//!   upstream's last bytes), or when a filter (or a failed VM) closes it; `Remote`
//!   when the client half-closes after Envoy did. Each filter then gets
//!   `proxy_on_downstream_connection_close(peer)` followed by `proxy_on_done`,
//!   `proxy_on_log`, `proxy_on_delete` (Envoy's `onCloseTCP`), filter by filter
//!   in chain order; then `tcp_proxy` closes the upstream connection.
//! * A trap fails the VM and closes the connection whose callback trapped,
//!   whatever the failure policy. Later, with `FAIL_CLOSED` a failed VM
//!   closes each connection as it is accepted (or at its next callback), with
//!   `FAIL_OPEN` it is left out of the chain (its filter passes everything).
//!   With `FAIL_RELOAD` a connection accepted once a jittered backoff in
//!   `[base, 1.5 × base)` has passed since the VM was loaded gets a fresh VM
//!   (start-up sequence included; a sibling plugin sharing the VM joins it);
//!   before that, the failed VM closes it as with `FAIL_CLOSED`. A
//!   connection left open in a VM that failed through another connection
//!   (see [`Connections`]) gets no more callbacks and is closed at its next
//!   read (bytes or half-close), whatever the policy, after a reload too (it
//!   stays with the failed VM): measured in Envoy 1.40,
//!   `l4-concurrent-fail-*.yaml`.
//!
//! * Several connections can be open at once ([`NetworkChain::connections`]),
//!   each event naming its connection. Each has its own context in every VM
//!   (ids from the VM's one counter, interleaved as connections are
//!   accepted), stream info, filter state, cluster and held buffers; a VM
//!   holds the maps of the connection whose context a callback acts on,
//!   the effective one included, so a tick or a callout answer that makes a
//!   connection effective reads that connection's properties and buffers
//!   and closes or resumes it while others stay open. Shared data, metrics
//!   and module globals are the VM's (measured in Envoy 1.40,
//!   `l4-concurrent.yaml`).
//!
//! * Timers, HTTP callouts and gRPC work as for HTTP filters, on one virtual
//!   clock ([`NetworkChain::advance`], or [`Connection::advance`] while a
//!   connection is open): a root context's `on_tick` fires when due, and
//!   callouts (`proxy_http_call` to a [`NetworkChainBuilder::callout_cluster`])
//!   are answered to the root context when their cluster answers (at once, or
//!   after an [`UpstreamFault::Delay`](crate::UpstreamFault::Delay); a call
//!   whose timeout comes first gets Envoy's `504`), in time order with ticks
//!   (an answer first at equal times) and the connection's events; an answer
//!   due at once arrives on a later event, before the upstream's pending
//!   reactions. gRPC calls (to a [`NetworkChainBuilder::grpc_service`]) are
//!   answered as soon as they are made (those of a VM FAIL_RELOAD replaced
//!   are reported with the next outcome). A failed VM's callouts are answered
//!   to nobody. A connection's filter that paused waiting for an answer is resumed
//!   by `proxy_continue_stream(Downstream)` with its connection as the effective
//!   context (`continueReading` after that filter); on a root context without
//!   one it does nothing, as in Envoy. `proxy_close_stream` likewise closes the
//!   connection whose context it acts on.
//!
//! * The connection has its own stream info, which every filter reads as
//!   properties (`abi/properties.rs` lists what Envoy answers):
//!   an id, the time it was accepted, the bytes received and sent, and once
//!   `tcp_proxy` connected its upstream host and cluster.
//!
//! Not emulated: TLS.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::chain::{
    Background, Clusters, Due, FailurePolicy, Filter, GrpcServices, answer_queued,
    check_reload_backoff, drain_grpc, fire_timer, grpc_step, next_due, reload_due, set_vm_clock,
    stamp_calls,
};
use crate::grpc::{GrpcCallout, GrpcService, GrpcStreamService};
use crate::outcome::{Callout, LogLevel, LogRecord};
use crate::shared::{MetricValue, Shared};
use crate::state::{Facts, FilterState, Phase, StreamFacts};
use crate::upstream::Upstream;
use crate::vm::{Cb, Trap, Vm, VmTemplate};
use crate::xds::{Bootstrap, Metadata, Node};
use crate::{Engine, Error, Result};

/// The network filter callbacks of a module, looked up once.
#[derive(Clone, Default)]
pub(crate) struct NetworkCallbacks {
    pub(crate) on_new_connection: Cb<i32, i32>,
    pub(crate) on_downstream_data: Cb<(i32, i32, i32), i32>,
    pub(crate) on_upstream_data: Cb<(i32, i32, i32), i32>,
    pub(crate) on_downstream_close: Cb<(i32, i32), ()>,
    pub(crate) on_upstream_close: Cb<(i32, i32), ()>,
}

/// What a [`TcpUpstream`] does after an event: bytes to send back, and whether to
/// end its side of the connection afterwards (send FIN and close).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct TcpReply {
    /// Bytes to send to Envoy.
    pub data: Vec<u8>,
    /// Close the connection after sending them.
    pub close: bool,
}

impl TcpReply {
    /// Nothing to send.
    pub fn none() -> Self {
        Self::default()
    }

    /// Sends `data`.
    pub fn data(data: impl Into<Vec<u8>>) -> Self {
        Self {
            data: data.into(),
            close: false,
        }
    }

    /// Closes the connection after sending this reply's data.
    pub fn and_close(mut self) -> Self {
        self.close = true;
        self
    }
}

/// An in-process TCP upstream: deterministic reactions to what Envoy sends. Any
/// `FnMut(&[u8]) -> TcpReply` is one (it replies to data and closes when the
/// client's end of stream arrives).
///
/// Each reply is one read for Envoy, and a reply's end of stream is a read of
/// its own after its data: what Envoy does when the upstream pauses between
/// them. (An upstream that writes and closes back to back is often, not always,
/// read by Envoy in one go, with the data and `end_of_stream` in one callback.)
pub trait TcpUpstream {
    /// `tcp_proxy` connected: a server-first protocol sends its greeting here.
    fn on_connect(&mut self) -> TcpReply {
        TcpReply::none()
    }

    /// Bytes arrived, in the pieces Envoy forwards them.
    fn on_data(&mut self, data: &[u8]) -> TcpReply;

    /// Envoy forwarded the client's half-close. By default the upstream closes
    /// too.
    fn on_end(&mut self) -> TcpReply {
        TcpReply::none().and_close()
    }
}

impl<F> TcpUpstream for F
where
    F: FnMut(&[u8]) -> TcpReply,
{
    fn on_data(&mut self, data: &[u8]) -> TcpReply {
        self(data)
    }
}

/// An upstream that sends back what it receives and closes after the client's
/// half-close.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl TcpUpstream for Echo {
    fn on_data(&mut self, data: &[u8]) -> TcpReply {
        TcpReply::data(data)
    }
}

/// Which side closed the client connection, as Envoy reports it to
/// `proxy_on_downstream_connection_close`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseType {
    /// Envoy closed it: it wrote its end of stream after the client's, or a
    /// filter or a failed VM closed the connection.
    Local,
    /// The client's half-close came after Envoy's.
    Remote,
}

impl CloseType {
    fn peer_type(self) -> i32 {
        match self {
            CloseType::Local => 1,
            CloseType::Remote => 2,
        }
    }
}

/// Builds a [`NetworkChain`].
#[derive(Debug)]
#[must_use]
pub struct NetworkChainBuilder {
    filters: Vec<Filter>,
    log_level: LogLevel,
    start: SystemTime,
    seed: u64,
    fuel_per_call: u64,
    source: SocketAddr,
    destination: SocketAddr,
    upstream: SocketAddr,
    upstream_local: SocketAddr,
    cluster: String,
    clusters: Clusters,
    grpc: GrpcServices,
    /// The node, the listener's, the cluster's and its endpoint's metadata
    /// (no route or virtual host: a network filter has none).
    xds: Box<Bootstrap>,
}

impl NetworkChainBuilder {
    /// Adds a network filter after the ones added so far (before `tcp_proxy`).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// The `wasm` logger's level (default info): lower guest log lines are dropped.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// The virtual wall clock's start.
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start = at;
        self
    }

    /// Seed for WASI `random_get` (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The fuel each callback may burn before it is stopped with a trap
    /// (as [`ChainBuilder::fuel_per_call`](crate::ChainBuilder::fuel_per_call);
    /// ignored by plugins whose engine bounds calls by a deadline).
    pub fn fuel_per_call(mut self, fuel: u64) -> Self {
        self.fuel_per_call = fuel;
        self
    }

    /// The client's address (`source.*`), default `127.0.0.1:50000`.
    pub fn source_address(mut self, address: SocketAddr) -> Self {
        self.source = address;
        self
    }

    /// The listener's address (`destination.*`), default `127.0.0.1:10000`.
    pub fn destination_address(mut self, address: SocketAddr) -> Self {
        self.destination = address;
        self
    }

    /// The upstream host's address (`upstream.*` once connected), default
    /// `127.0.0.1:8080`.
    pub fn upstream_address(mut self, address: SocketAddr) -> Self {
        self.upstream = address;
        self
    }

    /// The local address of `tcp_proxy`'s connection to the upstream
    /// (`upstream.local_address` once connected), default `127.0.0.1:40000`
    /// (a real one has an ephemeral port).
    pub fn upstream_local_address(mut self, address: SocketAddr) -> Self {
        self.upstream_local = address;
        self
    }

    /// `tcp_proxy`'s cluster (`xds.cluster_name` once connecting), default
    /// `upstream`.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// The bootstrap's `node`, which filters read as `xds.node` in every
    /// context (default: a bootstrap without one).
    pub fn node(mut self, node: Node) -> Self {
        self.xds.node = node;
        self
    }

    /// The listener's `metadata`, read as `xds.listener_metadata` by a
    /// connection's callbacks (default none).
    pub fn listener_metadata(mut self, metadata: Metadata) -> Self {
        self.xds.listener = metadata;
        self
    }

    /// The `metadata` of `tcp_proxy`'s cluster, read as
    /// `xds.cluster_metadata` once `tcp_proxy` connects (default none).
    pub fn cluster_metadata(mut self, metadata: Metadata) -> Self {
        self.xds.cluster = metadata;
        self
    }

    /// The `metadata` of the endpoint of `tcp_proxy`'s cluster (its
    /// `load_assignment.endpoints[0].lb_endpoints[0].metadata`), read as
    /// `xds.upstream_host_metadata` once `tcp_proxy` connects (default: a
    /// host without metadata, which Envoy cannot serialize and whose fields
    /// are not found, as the endpoint of a `STATIC` cluster whose bootstrap
    /// gives none; that of a `STRICT_DNS` or `LOGICAL_DNS` cluster has empty
    /// metadata, `Metadata::new()`).
    ///
    /// ```
    /// use serde_json::json;
    /// use weir_harness::{Metadata, NetworkChainBuilder};
    ///
    /// # fn host(builder: NetworkChainBuilder) -> Result<NetworkChainBuilder, weir_harness::Error> {
    /// let host = Metadata::new().filter("istio", json!({"workload": "db-0"}))?;
    /// Ok(builder.upstream_host_metadata(host))
    /// # }
    /// ```
    pub fn upstream_host_metadata(mut self, metadata: Metadata) -> Self {
        self.xds.host.endpoint = Some(metadata);
        self
    }

    /// The `metadata` of the locality of that endpoint (its cluster's
    /// `load_assignment.endpoints[0].metadata`), read as
    /// `xds.upstream_host_locality_metadata` once `tcp_proxy` connects
    /// (default: none, as [`NetworkChainBuilder::upstream_host_metadata`]).
    ///
    /// ```
    /// use serde_json::json;
    /// use weir_harness::{Metadata, NetworkChainBuilder};
    ///
    /// # fn locality(builder: NetworkChainBuilder) -> Result<NetworkChainBuilder, weir_harness::Error> {
    /// let locality = Metadata::new().filter("envoy.lb", json!({"zone": "eu-west1-c"}))?;
    /// Ok(builder.upstream_host_locality_metadata(locality))
    /// # }
    /// ```
    pub fn upstream_host_locality_metadata(mut self, metadata: Metadata) -> Self {
        self.xds.host.locality = Some(metadata);
        self
    }

    /// The locality of the endpoint of `tcp_proxy`'s cluster (its
    /// `load_assignment.endpoints[0].locality`: `region`, `zone`,
    /// `sub_zone`), read as `upstream.locality` once `tcp_proxy` connects
    /// (default: an empty locality, as an endpoint whose bootstrap gives
    /// none).
    ///
    /// ```
    /// use weir_harness::NetworkChainBuilder;
    ///
    /// fn locality(builder: NetworkChainBuilder) -> NetworkChainBuilder {
    ///     builder.upstream_locality("eu-west1", "eu-west1-c", "rack-2")
    /// }
    /// ```
    pub fn upstream_locality(
        mut self,
        region: impl Into<String>,
        zone: impl Into<String>,
        sub_zone: impl Into<String>,
    ) -> Self {
        self.xds.host.place = crate::xds::Locality::new(region, zone, sub_zone);
        self
    }

    /// Adds a cluster that filters can call with `proxy_http_call`, answered by
    /// `upstream` (as [`ChainBuilder::cluster`](crate::ChainBuilder::cluster)).
    /// Calls to other clusters are refused with `BadArgument`.
    pub fn callout_cluster(
        mut self,
        name: impl Into<String>,
        upstream: impl Upstream + 'static,
    ) -> Self {
        self.clusters.0.push((name.into(), Box::new(upstream)));
        self
    }

    /// Adds a cluster with a gRPC service that filters can call with
    /// `proxy_grpc_call` and `proxy_grpc_stream`, answered by `service` (as
    /// [`ChainBuilder::grpc_service`](crate::ChainBuilder::grpc_service)).
    pub fn grpc_service(
        mut self,
        cluster: impl Into<String>,
        service: impl GrpcService + 'static,
    ) -> Self {
        self.grpc.add(cluster.into(), Box::new(service));
        self
    }

    /// Adds a cluster with a gRPC service that answers streams while they are
    /// open (as
    /// [`ChainBuilder::grpc_stream_service`](crate::ChainBuilder::grpc_stream_service)).
    pub fn grpc_stream_service(
        mut self,
        cluster: impl Into<String>,
        service: impl GrpcStreamService + 'static,
    ) -> Self {
        self.grpc.add_streaming(cluster.into(), Box::new(service));
        self
    }

    /// Starts every plugin: Envoy's load checks, module initialization,
    /// `on_vm_start` and `on_configure`.
    ///
    /// # Errors
    /// The first plugin that fails to start, e.g. [`Error::ConfigureFailed`],
    /// or [`Error::WouldCrashEnvoy`] for a `FAIL_RELOAD` backoff below 2 ms.
    pub fn build(self) -> Result<NetworkChain> {
        let shared = Arc::new(Shared::new(*self.xds));
        let mut slots: Vec<Slot> = Vec::with_capacity(self.filters.len());
        let template = VmTemplate::new(
            self.log_level,
            self.fuel_per_call,
            &self.clusters,
            &self.grpc,
        );
        for (i, filter) in self.filters.iter().enumerate() {
            let (plugin, meta, policy) = filter.parts();
            check_reload_backoff(&meta.name, policy, filter.backoff())?;
            // Filters with Envoy's same VM key share a VM (slot j is filter j).
            let sibling = self.filters[..i]
                .iter()
                .position(|f| f.same_vm_key(filter))
                .map(|j| &slots[j].vm);
            let mut vm = template.join_or_start(
                sibling,
                plugin,
                meta.clone(),
                (self.start, Duration::ZERO, self.seed.wrapping_add(i as u64)),
                &shared,
            )?;
            {
                let mut state = vm.state();
                state.source_address = Some(self.source);
                state.destination_address = Some(self.destination);
            }
            vm.take_usage();
            let callbacks = vm.network_callbacks();
            slots.push(Slot {
                vm,
                policy,
                callbacks,
                filter: filter.clone(),
                seed: self.seed.wrapping_add(i as u64),
                loaded_at: Duration::ZERO,
            });
        }
        let startup_logs = std::mem::take(&mut *shared.logs());
        Ok(NetworkChain {
            slots,
            shared,
            startup_logs,
            upstream: self.upstream,
            upstream_local: self.upstream_local,
            cluster: self.cluster,
            clusters: self.clusters,
            grpc: self.grpc,
            vm_template: template,
            source: self.source,
            destination: self.destination,
            rng: self.seed ^ 0x5EED,
            seq: 0,
            retired: Vec::new(),
            connections: 0,
            replaced_grpc: Vec::new(),
        })
    }
}

struct Slot {
    vm: Vm,
    policy: FailurePolicy,
    callbacks: NetworkCallbacks,
    /// What the VM was started from, to start a fresh one (FAIL_RELOAD).
    filter: Filter,
    seed: u64,
    /// When the VM was loaded (virtual monotonic time), for the reload backoff.
    loaded_at: Duration,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("vm", &self.vm)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Network filters in front of `tcp_proxy`. Open connections through it with
/// [`NetworkChain::connect`].
///
/// ```no_run
/// use weir_harness::{Echo, Engine, Filter, NetworkChain};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::new()?;
/// let plugin = engine.load_file("target/wasm32-wasip1/filter/sdk_stream.wasm")?;
/// let mut chain = NetworkChain::builder(&engine)
///     .filter(Filter::new(plugin).configuration(r#"{"upstream_prefix": "< "}"#))
///     .build()?;
/// let mut connection = chain.connect(Echo)?;
/// connection.send(b"hello\n")?;
/// assert_eq!(connection.client_received(), b"< hello\n");
/// connection.close_write()?; // the echo upstream closes too
/// let outcome = connection.finish();
/// assert_eq!(outcome.upstream_received.as_deref(), Some(&b"hello\n"[..]));
/// assert!(outcome.closed.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NetworkChain {
    slots: Vec<Slot>,
    shared: Arc<Shared>,
    startup_logs: Vec<LogRecord>,
    upstream: SocketAddr,
    upstream_local: SocketAddr,
    cluster: String,
    clusters: Clusters,
    grpc: GrpcServices,
    /// What a VM FAIL_RELOAD starts has in common with the others.
    vm_template: VmTemplate,
    source: SocketAddr,
    destination: SocketAddr,
    /// Draws the FAIL_RELOAD backoff's jitter.
    rng: u64,
    /// The order callouts were made in, across VMs.
    seq: u64,
    /// Failed VMs FAIL_RELOAD replaced that still have callouts in flight:
    /// their cluster answers them, to nobody.
    retired: Vec<Vm>,
    /// Connections accepted so far: the last one's id (`connection.id`).
    connections: u64,
    /// The gRPC calls a VM FAIL_RELOAD replaced had made (their service was
    /// asked), or a connection dropped without its outcome, that nobody
    /// collected yet: the next drain reports them.
    replaced_grpc: Vec<GrpcCallout>,
}

impl NetworkChain {
    /// A [`NetworkChainBuilder`] on `engine` (the plugins carry it; it is taken
    /// to make the dependency plain).
    pub fn builder(_engine: &Engine) -> NetworkChainBuilder {
        NetworkChainBuilder {
            filters: Vec::new(),
            log_level: LogLevel::Info,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            seed: 0,
            fuel_per_call: crate::vm::DEFAULT_FUEL_PER_CALL,
            source: SocketAddr::from(([127, 0, 0, 1], 50000)),
            destination: SocketAddr::from(([127, 0, 0, 1], 10000)),
            upstream: SocketAddr::from(([127, 0, 0, 1], 8080)),
            upstream_local: SocketAddr::from(([127, 0, 0, 1], 40000)),
            cluster: "upstream".to_owned(),
            clusters: Clusters::default(),
            grpc: GrpcServices::default(),
            xds: Box::default(),
        }
    }

    /// Moves the virtual clock forward by `by` with no connection open: in
    /// time order across plugins, every `on_tick` that falls due on the way
    /// fires, gRPC calls time out, and callouts in flight (made while the
    /// plugins started, or by a tick) get their answer when their cluster
    /// gives it (at once, or after an
    /// [`UpstreamFault::Delay`](crate::UpstreamFault::Delay), capped by the
    /// call's timeout), at equal times before a tick. Returns what happened.
    pub fn advance(&mut self, by: Duration) -> Background {
        let mut callouts = Vec::new();
        let end = self.monotonic() + by;
        loop {
            // gRPC work is due as soon as it appears.
            for slot in &mut self.slots {
                while let Some(Ok(())) = grpc_step(&mut slot.vm, &mut self.grpc) {
                    slot.vm.state().deferred.clear();
                }
            }
            let Some((at, due)) = self.next_due(end, true) else {
                break;
            };
            if let Some((i, _)) = self.run_due(at, due, &mut callouts) {
                // A root context has no connection to act on.
                self.slots[i].vm.state().deferred.clear();
            }
        }
        self.set_monotonic(end);
        for slot in &mut self.slots {
            slot.vm.take_usage();
        }
        let grpc = self.drain_grpc();
        let logs = std::mem::take(&mut *self.shared.logs());
        let traps = std::mem::take(&mut *self.shared.traps());
        Background {
            logs,
            callouts,
            grpc,
            traps,
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
    }

    /// The next callout answer, or timer with `timers`, due by `end` across
    /// the plugins (and the failed VMs FAIL_RELOAD replaced), as the HTTP
    /// chain orders them.
    fn next_due(&mut self, end: Duration, timers: bool) -> Option<(Duration, Due)> {
        self.retired
            .retain_mut(|vm| !vm.state().root().pending_calls.is_empty());
        let NetworkChain {
            slots,
            retired,
            clusters,
            seq,
            ..
        } = self;
        let mut vms: Vec<&mut Vm> = slots
            .iter_mut()
            .map(|s| &mut s.vm)
            .chain(retired.iter_mut())
            .collect();
        stamp_calls(vms.iter_mut().map(|vm| &mut **vm), seq);
        next_due(&mut vms, clusters, end, timers)
    }

    /// Runs what is due at `at` (the clock moves there): a callout's answer,
    /// to its root context, or a timer. Returns the slot whose VM was called
    /// and the callback's result; `None` if no VM was called (a failed VM's
    /// answer reaches nobody).
    fn run_due(
        &mut self,
        at: Duration,
        due: Due,
        callouts: &mut Vec<Callout>,
    ) -> Option<(usize, Result<(), Trap>)> {
        if at > self.monotonic() {
            self.set_monotonic(at);
        }
        let n = self.slots.len();
        match due {
            Due::Call(i, index) => {
                let NetworkChain {
                    slots,
                    retired,
                    clusters,
                    ..
                } = self;
                let vm = match slots.get_mut(i) {
                    Some(slot) => &mut slot.vm,
                    None => retired.get_mut(i - n)?,
                };
                let result = answer_queued(vm, clusters, index, callouts)?;
                (i < n).then_some((i, result.map(drop)))
            }
            Due::Timer(timer, i) => {
                let slot = self.slots.get_mut(i)?;
                Some((i, fire_timer(&mut slot.vm, at, timer)))
            }
        }
    }

    /// FAIL_RELOAD, as Envoy applies it when a connection is accepted: a VM
    /// that trapped is replaced by a fresh one (start-up sequence included)
    /// once the jittered backoff has passed since it was loaded (see
    /// [`ChainBuilder`](crate::ChainBuilder)'s filters). A healthy VM with the
    /// same key (one a sibling plugin reloaded already) takes the plugin; a
    /// failed reload keeps the failed VM (the connection is closed) and the
    /// backoff starts again.
    fn reload_if_due(&mut self, i: usize) {
        if self.slots[i].policy != FailurePolicy::FailReload || !self.slots[i].vm.failed() {
            return;
        }
        let now = self.monotonic();
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let slot = &self.slots[i];
        if !reload_due(slot.filter.backoff(), slot.loaded_at, now, self.rng) {
            return;
        }
        self.slots[i].loaded_at = now;
        let wall = self.slots[i].vm.state().now;
        let healthy = self
            .slots
            .iter()
            .find(|s| s.filter.same_vm_key(&self.slots[i].filter) && !s.vm.failed());
        let slot = &self.slots[i];
        let (plugin, meta, _) = slot.filter.parts();
        let started = self.vm_template.join_or_start(
            healthy.map(|s| &s.vm),
            plugin,
            meta.clone(),
            (wall, now, slot.seed),
            &self.shared,
        );
        match started {
            Ok(mut vm) => {
                {
                    let mut state = vm.state();
                    state.source_address = Some(self.source);
                    state.destination_address = Some(self.destination);
                }
                vm.take_usage();
                let slot = &mut self.slots[i];
                slot.callbacks = vm.network_callbacks();
                let mut old = std::mem::replace(&mut slot.vm, vm);
                // Envoy sent them: they stay in what the test sees.
                self.replaced_grpc
                    .extend(drain_grpc(std::iter::once(&mut old)));
                self.retired.push(old);
            }
            Err(e) => tracing::warn!(plugin = %meta.name, "VM reload failed: {e}"),
        }
    }

    /// The gRPC calls the services answered since the last drain, from every
    /// VM (those FAIL_RELOAD replaced first).
    fn drain_grpc(&mut self) -> Vec<GrpcCallout> {
        let mut calls = std::mem::take(&mut self.replaced_grpc);
        calls.extend(drain_grpc(self.slots.iter_mut().map(|s| &mut s.vm)));
        calls
    }

    /// What the plugins logged while starting.
    pub fn startup_logs(&self) -> &[LogRecord] {
        &self.startup_logs
    }

    /// Every metric the plugins defined, by name, with its value.
    pub fn metrics(&self) -> BTreeMap<String, MetricValue> {
        self.shared.stats().all()
    }

    /// A shared-data entry (`value`, `cas`) in `vm_id`'s namespace.
    pub fn shared_data(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.shared.data().get(vm_id, key.as_bytes())
    }

    /// Accepts a client connection, as Envoy does: every filter gets
    /// `on_new_connection` in order, then `tcp_proxy` connects to `upstream`
    /// (unless a filter stopped the chain), which may greet.
    ///
    /// The connection borrows the chain: for several connections open at
    /// once, use [`NetworkChain::connections`].
    ///
    /// # Errors
    /// None yet; the connection's fate is in the returned value (a filter that
    /// closes it, a failed VM).
    pub fn connect<'a>(&'a mut self, upstream: impl TcpUpstream + 'a) -> Result<Connection<'a>> {
        let mut net = Net::new(self);
        net.connect(Box::new(upstream));
        Ok(Connection { net })
    }

    /// Starts a session of client connections open at once, as Envoy's
    /// worker (`--concurrency 1`) holds them: see [`Connections`].
    pub fn connections(&mut self) -> Connections<'_> {
        Connections {
            net: Net::new(self),
        }
    }

    /// A new connection's state, as Envoy's filter chain factory makes it:
    /// FAIL_RELOAD reloads that are due, the connection's stream info (one
    /// for every filter, whichever VM it runs in) and its context in each
    /// plugin's VM (a failed `FAIL_OPEN` VM is left out).
    fn accept<'a>(&mut self, upstream: Box<dyn TcpUpstream + 'a>) -> Conn<'a> {
        // As Envoy's filter chain factory, in chain order.
        for i in 0..self.slots.len() {
            self.reload_if_due(i);
        }
        self.connections += 1;
        let now = self
            .slots
            .first_mut()
            .map_or(SystemTime::UNIX_EPOCH, |s| s.vm.state().now);
        let mut fresh = StreamFacts::new(now, self.monotonic(), self.connections);
        fresh.network = true;
        let facts = Facts::new(fresh);
        let filter_state = FilterState::default();
        let mut filters: Vec<FilterConn> = self
            .slots
            .iter_mut()
            .enumerate()
            .filter(|(_, s)| !(s.vm.failed() && s.policy == FailurePolicy::FailOpen))
            .map(|(slot, s)| FilterConn {
                slot,
                vm: s.vm.key(),
                vm_contexts: Vec::new(),
                context: s.vm.new_context_id(),
                initialized: false,
                created: false,
                closed_tcp: false,
                downstream_closed: false,
            })
            .collect();
        for i in 0..filters.len() {
            let vm = filters[i].vm;
            filters[i].vm_contexts = filters
                .iter()
                .filter(|f| f.vm == vm)
                .map(|f| f.context)
                .collect();
        }
        // Each VM holds the new connection's maps (the other open
        // connections' are parked): its stream info, no cluster yet
        // (`tcp_proxy` picks it as it connects).
        for f in &filters {
            let mut state = self.slots[f.slot].vm.state();
            state.hold_maps_of(&f.vm_contexts);
            state.maps.info.filter_state = filter_state.clone();
            state.maps.info.facts = Some(facts.clone());
            state.cluster_name = None;
        }
        Conn {
            id: ConnectionId(self.connections),
            upstream,
            filters,
            facts,
            stream_failed: false,
            tcp_proxy: false,
            read_enabled: false,
            socket: Vec::new(),
            socket_end: false,
            read_buffer: Vec::new(),
            read_end_stream: false,
            read_end_raised: false,
            upstream_buffer: Vec::new(),
            upstream_end: false,
            upstream_events: VecDeque::new(),
            closed: None,
            client_received: Vec::new(),
            client_end: false,
            upstream_received: None,
            upstream_saw_end: false,
            upstream_closed: false,
            upstream_done: false,
            warnings: Vec::new(),
            callouts: Vec::new(),
            logs: Vec::new(),
            traps: Vec::new(),
            fuel: 0,
            host_calls: 0,
            grpc: Vec::new(),
        }
    }
}

/// One filter's part of a connection.
#[derive(Debug)]
struct FilterConn {
    /// Index into the chain's slots.
    slot: usize,
    /// The key of the VM the context was made in: a VM FAIL_RELOAD replaced
    /// later keeps the connection (it is failed, so the connection gets no
    /// more callbacks).
    vm: u64,
    /// The connection's contexts in that VM (one per plugin it runs).
    vm_contexts: Vec<u32>,
    /// The connection's context id in that VM.
    context: u32,
    /// The filter manager called its `onNewConnection`.
    initialized: bool,
    /// Envoy's `in_vm_context_created_`.
    created: bool,
    /// `onCloseTCP` ran.
    closed_tcp: bool,
    downstream_closed: bool,
}

/// Where a callback left the filter chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Continue,
    Stop,
}

fn status(action: Option<i32>) -> Status {
    // Envoy: 0 is Continue, anything else StopIteration; a missing callback continues.
    match action {
        None | Some(0) => Status::Continue,
        Some(_) => Status::Stop,
    }
}

/// Names a connection of [`Connections`]: Envoy's connection id
/// (`connection.id`), counted per chain from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The connection's id, as filters read it (`connection.id`).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection {}", self.0)
    }
}

/// One client connection's state.
struct Conn<'a> {
    id: ConnectionId,
    upstream: Box<dyn TcpUpstream + 'a>,
    filters: Vec<FilterConn>,
    /// The connection's stream info, shared with every VM's maps.
    facts: Facts,
    /// Envoy's `stream_failed_`: a failed VM closed the connection already.
    stream_failed: bool,
    /// `tcp_proxy`'s `onNewConnection` ran (it connected upstream).
    tcp_proxy: bool,
    /// Reads are enabled (`tcp_proxy` re-enables them once connected).
    read_enabled: bool,
    /// Bytes the client sent that Envoy has not read yet.
    socket: Vec<u8>,
    /// The client half-closed and Envoy has not read it yet.
    socket_end: bool,
    /// The connection's read buffer.
    read_buffer: Vec<u8>,
    read_end_stream: bool,
    read_end_raised: bool,
    /// The upstream connection's read buffer.
    upstream_buffer: Vec<u8>,
    upstream_end: bool,
    /// Upstream replies not delivered yet (they arrive after the current
    /// event), each with its place in the order across connections.
    upstream_events: VecDeque<(u64, TcpReply)>,
    closed: Option<CloseType>,
    client_received: Vec<u8>,
    client_end: bool,
    /// `None` until `tcp_proxy` connects.
    upstream_received: Option<Vec<u8>>,
    upstream_saw_end: bool,
    /// `tcp_proxy` closed the upstream connection.
    upstream_closed: bool,
    /// The upstream ended its side.
    upstream_done: bool,
    /// What happened during the events the test named on this connection.
    warnings: Vec<String>,
    callouts: Vec<Callout>,
    logs: Vec<LogRecord>,
    traps: Vec<String>,
    fuel: u64,
    host_calls: u64,
    grpc: Vec<GrpcCallout>,
}

impl Conn<'_> {
    fn outcome(self) -> ConnectionOutcome {
        ConnectionOutcome {
            client_received: self.client_received,
            client_saw_end: self.client_end,
            upstream_received: self.upstream_received,
            upstream_saw_end: self.upstream_saw_end,
            closed: self.closed,
            logs: self.logs,
            traps: self.traps,
            fuel: self.fuel,
            host_calls: self.host_calls,
            warnings: self.warnings,
            callouts: self.callouts,
            grpc: self.grpc,
        }
    }
}

/// Everything observable about a connection.
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectionOutcome {
    /// The bytes the client received.
    pub client_received: Vec<u8>,
    /// Envoy ended the client's read side (FIN or close).
    pub client_saw_end: bool,
    /// The bytes the upstream received, or `None` if `tcp_proxy` never connected.
    pub upstream_received: Option<Vec<u8>>,
    /// The upstream, while still reading, saw the client's half-close or
    /// `tcp_proxy` closing the connection.
    pub upstream_saw_end: bool,
    /// How the client connection closed, or `None` if it is still open.
    pub closed: Option<CloseType>,
    /// Everything the plugins logged since the connection was accepted (with
    /// [`Connections`], during the events the test named on it).
    pub logs: Vec<LogRecord>,
    /// Plugins that trapped, as Envoy reports it.
    pub traps: Vec<String>,
    /// Wasm fuel the plugins burned for this connection (deterministic).
    /// Only an engine bounding calls by fuel (the default) meters it: with
    /// [`CallLimit::Deadline`](crate::CallLimit::Deadline) this is 0, not a
    /// measurement.
    pub fuel: u64,
    /// `proxy_*` host calls the plugins made for this connection.
    pub host_calls: u64,
    /// Things that work in the harness but depend on timing in Envoy.
    pub warnings: Vec<String>,
    /// The HTTP callouts the plugins made, with their answers, in order.
    pub callouts: Vec<Callout>,
    /// The gRPC calls and streams that reached their service, in order.
    pub grpc: Vec<GrpcCallout>,
}

impl ConnectionOutcome {
    /// The messages logged at `level`.
    pub fn logs_at(&self, level: LogLevel) -> impl Iterator<Item = &str> {
        self.logs
            .iter()
            .filter(move |r| r.level == level)
            .map(|r| r.message.as_str())
    }
}

/// One client connection through a [`NetworkChain`]. Each method is one event
/// on the connection, handled to completion (the upstream's reactions included)
/// before it returns.
pub struct Connection<'a> {
    net: Net<'a>,
}

impl std::fmt::Debug for Connection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let conn = self.net.conns.first();
        f.debug_struct("Connection")
            .field("closed", &conn.and_then(|c| c.closed))
            .field(
                "client_received",
                &conn.map_or(0, |c| c.client_received.len()),
            )
            .finish_non_exhaustive()
    }
}

impl Connection<'_> {
    /// The client sends `bytes`, read by Envoy in one read event.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] once the client has half-closed.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) -> Result<()> {
        self.net.send(0, bytes.as_ref())
    }

    /// The client half-closes (sends FIN) and keeps reading.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] if it already did.
    pub fn close_write(&mut self) -> Result<()> {
        self.net.close_write(0)
    }

    /// The bytes the client has received so far.
    pub fn client_received(&self) -> &[u8] {
        self.net.conns.first().map_or(&[], |c| &c.client_received)
    }

    /// The bytes the upstream has received so far (`None` before `tcp_proxy`
    /// connected).
    pub fn upstream_received(&self) -> Option<&[u8]> {
        self.net.conns.first()?.upstream_received.as_deref()
    }

    /// How the client connection closed, if it did.
    pub fn closed(&self) -> Option<CloseType> {
        self.net.conns.first()?.closed
    }

    /// Everything observable, ending the test's view of the connection. A
    /// connection still open stays open (as in an Envoy that keeps running): no
    /// close callbacks are made for it.
    pub fn finish(self) -> ConnectionOutcome {
        let mut conns = self.net.finish();
        match conns.pop() {
            Some(conn) => conn.outcome(),
            // `connect` always makes the connection.
            None => ConnectionOutcome {
                client_received: Vec::new(),
                client_saw_end: false,
                upstream_received: None,
                upstream_saw_end: false,
                closed: None,
                logs: Vec::new(),
                traps: Vec::new(),
                fuel: 0,
                host_calls: 0,
                warnings: Vec::new(),
                callouts: Vec::new(),
                grpc: Vec::new(),
            },
        }
    }

    /// Moves the virtual clock forward by `by` while the connection is open:
    /// ticks, gRPC deadlines and callout answers that fall due on the way
    /// arrive in time order (see [`NetworkChain::advance`]). What each does to
    /// the connection (a filter resumed or the connection closed through its
    /// effective context, and what follows from it) happens before the next.
    pub fn advance(&mut self, by: Duration) {
        self.net.advance(0, by);
    }
}

/// Client connections open at once through a [`NetworkChain`], as Envoy's
/// one worker (`--concurrency 1`) holds them: [`Connections::connect`]
/// accepts one (in the order the test calls it), and every event names the
/// connection it happens on, in the order the test gives, so results are
/// deterministic. Each event is handled to completion before the method
/// returns: the upstream reactions it causes, on any connection, in the
/// order they were sent; callout answers due at once before them.
///
/// Each connection has its own state: bytes its filters hold, its stream
/// info and filter state (what its filters read as properties, through its
/// context or a root context that made it effective), its upstream and
/// cluster, its context id in every VM (one counter per VM, as in Envoy: ids
/// interleave as connections are accepted), its outcome. Shared data,
/// metrics, timers and the VMs themselves are the chain's: a root
/// callback's `proxy_set_effective_context` reaches whichever open
/// connection the context belongs to, and what it defers
/// (`proxy_continue_stream`, `proxy_close_stream`) acts on that one.
///
/// What happens during an event (logs, traps, fuel, host calls, callouts,
/// gRPC calls, warnings) goes to the outcome of the connection the event
/// names, whichever connection's callbacks ran; what happens in
/// [`Connections::finish`] goes to the first connection still open, else
/// the last one.
///
/// A VM that fails through one connection fails for every connection open
/// in it: they get no more callbacks, and Envoy closes each at its next
/// read, whatever the failure policy (as measured in Envoy 1.40).
///
/// An id that does not name a connection of this session is an error for
/// events, and reads as a connection that saw nothing.
///
/// ```no_run
/// use weir_harness::{Echo, Engine, Filter, NetworkChain};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::new()?;
/// let plugin = engine.load_file("target/wasm32-wasip1/filter/sdk_stream.wasm")?;
/// let mut chain = NetworkChain::builder(&engine)
///     .filter(Filter::new(plugin).configuration(r#"{"upstream_prefix": "< "}"#))
///     .build()?;
/// let mut net = chain.connections();
/// let a = net.connect(Echo)?;
/// let b = net.connect(Echo)?;
/// net.send(b, b"second\n")?;
/// net.send(a, b"first\n")?;
/// net.close_write(a)?;
/// assert_eq!(net.client_received(a), b"< first\n");
/// assert!(net.closed(a).is_some() && net.closed(b).is_none());
/// let outcomes = net.finish(); // in the order they were accepted
/// assert_eq!(outcomes[1].upstream_received.as_deref(), Some(&b"second\n"[..]));
/// # Ok(())
/// # }
/// ```
pub struct Connections<'a> {
    net: Net<'a>,
}

impl std::fmt::Debug for Connections<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u64> = self.net.conns.iter().map(|c| c.id.0).collect();
        f.debug_struct("Connections")
            .field("connections", &ids)
            .finish_non_exhaustive()
    }
}

impl<'a> Connections<'a> {
    /// Accepts a client connection to `upstream`, as
    /// [`NetworkChain::connect`] does, while the others stay open.
    ///
    /// # Errors
    /// None yet; the connection's fate shows in its outcome.
    pub fn connect(&mut self, upstream: impl TcpUpstream + 'a) -> Result<ConnectionId> {
        let k = self.net.connect(Box::new(upstream));
        Ok(self.net.conns[k].id)
    }

    fn index(&self, id: ConnectionId) -> Result<usize> {
        self.net
            .conns
            .iter()
            .position(|c| c.id == id)
            .ok_or_else(|| Error::InvalidRequest(format!("{id} is not one of these connections")))
    }

    fn conn(&self, id: ConnectionId) -> Option<&Conn<'a>> {
        self.net.conns.iter().find(|c| c.id == id)
    }

    /// The client of connection `on` sends `bytes`, read by Envoy in one
    /// read event.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for an unknown connection, or once its
    /// client has half-closed.
    pub fn send(&mut self, on: ConnectionId, bytes: impl AsRef<[u8]>) -> Result<()> {
        let k = self.index(on)?;
        self.net.send(k, bytes.as_ref())
    }

    /// The client of connection `on` half-closes (sends FIN) and keeps
    /// reading.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for an unknown connection, or if its client
    /// already half-closed.
    pub fn close_write(&mut self, on: ConnectionId) -> Result<()> {
        let k = self.index(on)?;
        self.net.close_write(k)
    }

    /// Moves the virtual clock forward by `by`, as
    /// [`Connection::advance`]: ticks, gRPC deadlines and callout answers
    /// fall due in time order, each acting on the connection its effective
    /// context names; what they log goes to connection `on`'s outcome.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for an unknown connection.
    pub fn advance(&mut self, on: ConnectionId, by: Duration) -> Result<()> {
        let k = self.index(on)?;
        self.net.advance(k, by);
        Ok(())
    }

    /// The connections, in the order they were accepted.
    pub fn ids(&self) -> Vec<ConnectionId> {
        self.net.conns.iter().map(|c| c.id).collect()
    }

    /// The bytes the client of `id` has received so far.
    pub fn client_received(&self, id: ConnectionId) -> &[u8] {
        self.conn(id).map_or(&[], |c| &c.client_received)
    }

    /// The bytes the upstream of `id` has received so far (`None` before
    /// `tcp_proxy` connected).
    pub fn upstream_received(&self, id: ConnectionId) -> Option<&[u8]> {
        self.conn(id)?.upstream_received.as_deref()
    }

    /// How connection `id` closed, if it did.
    pub fn closed(&self, id: ConnectionId) -> Option<CloseType> {
        self.conn(id)?.closed
    }

    /// What the plugins logged so far during the events named on `id`.
    pub fn logs(&self, id: ConnectionId) -> &[LogRecord] {
        self.conn(id).map_or(&[], |c| &c.logs)
    }

    /// Everything observable about each connection, in the order they were
    /// accepted, ending the session. Callout answers still in flight arrive
    /// first, when their cluster gives them (as [`Connection::finish`]).
    /// Connections still open stay open: no close callbacks are made for
    /// them.
    pub fn finish(self) -> Vec<ConnectionOutcome> {
        self.net.finish().into_iter().map(Conn::outcome).collect()
    }
}

/// The connections of a [`Connection`] or [`Connections`], and the event
/// handling they share: each callback runs for connection `k` (`me!`).
struct Net<'a> {
    chain: &'a mut NetworkChain,
    conns: Vec<Conn<'a>>,
    /// The connection whose callbacks run.
    k: usize,
    /// The connection the running event was named on: what happens goes to
    /// its outcome.
    named: usize,
    /// Orders the upstreams' reactions across connections.
    seq: u64,
    /// The callouts answered during the running event.
    callouts: Vec<Callout>,
    /// Which connection made each gRPC call or stream, by slot and token:
    /// its record goes to that connection's outcome.
    grpc_owners: Vec<((usize, u32), usize)>,
}

impl Drop for Net<'_> {
    /// A connection dropped without its outcome leaves its gRPC calls to
    /// the next outcome, as if they had not been collected.
    fn drop(&mut self) {
        for conn in &mut self.conns {
            self.chain.replaced_grpc.append(&mut conn.grpc);
        }
    }
}

/// The connection whose callbacks run.
macro_rules! me {
    ($net:ident) => {
        $net.conns[$net.k]
    };
}

impl<'a> Net<'a> {
    fn new(chain: &'a mut NetworkChain) -> Self {
        Self {
            chain,
            conns: Vec::new(),
            k: 0,
            named: 0,
            seq: 0,
            callouts: Vec::new(),
            grpc_owners: Vec::new(),
        }
    }

    /// Runs `f` with connection `k`'s callbacks, then goes back.
    fn on<R>(&mut self, k: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        let previous = std::mem::replace(&mut self.k, k);
        let result = f(self);
        self.k = previous;
        result
    }

    /// Starts an event the test named on connection `k`.
    fn begin(&mut self, k: usize) {
        self.k = k;
        self.named = k;
    }

    /// Notes which connection made each gRPC call or stream still open.
    /// Their records stay in the VMs' logs until the session ends: a stream
    /// (or a call's status) is still being written there.
    fn note_grpc_owners(&mut self) {
        for (i, slot) in self.chain.slots.iter_mut().enumerate() {
            let key = slot.vm.key();
            let mut state = slot.vm.state();
            let grpc = &state.root_mut().grpc;
            let made = grpc
                .calls
                .iter()
                .map(|(t, c)| (*t, c.context))
                .chain(grpc.streams.iter().map(|(t, s)| (*t, s.context)));
            for (token, context) in made {
                let owner = self.conns.iter().position(|c| {
                    c.filters
                        .iter()
                        .any(|f| f.slot == i && f.vm == key && f.context == context)
                });
                if let Some(k) = owner
                    && !self.grpc_owners.iter().any(|(at, _)| *at == (i, token))
                {
                    self.grpc_owners.push(((i, token), k));
                }
            }
        }
    }

    /// Gives every gRPC record to the connection that made it, else to the
    /// named one.
    fn collect_grpc(&mut self) {
        let mut records = std::mem::take(&mut self.chain.replaced_grpc)
            .into_iter()
            .map(|c| (None, c))
            .collect::<Vec<_>>();
        for (i, slot) in self.chain.slots.iter_mut().enumerate() {
            let log = std::mem::take(&mut slot.vm.state().root_mut().grpc.log);
            records.extend(log.into_iter().map(|(token, c)| (Some((i, token)), c)));
        }
        for (at, callout) in records {
            let owner = at
                .and_then(|at| self.grpc_owners.iter().find(|(a, _)| *a == at))
                .map_or(self.named, |(_, k)| *k);
            if let Some(conn) = self.conns.get_mut(owner) {
                conn.grpc.push(callout);
            }
        }
        self.grpc_owners.clear();
    }

    /// Gives what happened during the event to the named connection.
    fn collect(&mut self) {
        self.note_grpc_owners();
        let logs = std::mem::take(&mut *self.chain.shared.logs());
        let traps = std::mem::take(&mut *self.chain.shared.traps());
        let slots = &mut self.chain.slots;
        let (fuel, host_calls) = slots
            .iter_mut()
            .map(|s| s.vm.take_usage())
            .fold((0, 0), |(f, h), (df, dh)| (f + df, h + dh));
        let callouts = std::mem::take(&mut self.callouts);
        if let Some(conn) = self.conns.get_mut(self.named) {
            conn.logs.extend(logs);
            conn.traps.extend(traps);
            conn.fuel += fuel;
            conn.host_calls += host_calls;
            conn.callouts.extend(callouts);
        }
    }

    fn connect(&mut self, upstream: Box<dyn TcpUpstream + 'a>) -> usize {
        let conn = self.chain.accept(upstream);
        self.conns.push(conn);
        let k = self.conns.len() - 1;
        self.begin(k);
        // Answers still in flight from the plugins' start-up come first.
        self.pump();
        self.continue_reading(None);
        self.pump();
        self.collect();
        k
    }

    fn send(&mut self, k: usize, bytes: &[u8]) -> Result<()> {
        self.begin(k);
        if me!(self).socket_end || me!(self).read_end_stream {
            return Err(Error::InvalidRequest(
                "the client cannot send after half-closing".to_owned(),
            ));
        }
        if !self.open() {
            // Envoy no longer reads; the bytes are lost.
            return Ok(());
        }
        me!(self).socket.extend_from_slice(bytes);
        self.on_read();
        self.pump();
        self.collect();
        Ok(())
    }

    fn close_write(&mut self, k: usize) -> Result<()> {
        self.begin(k);
        if me!(self).socket_end || me!(self).read_end_stream {
            return Err(Error::InvalidRequest(
                "the client already half-closed".to_owned(),
            ));
        }
        me!(self).socket_end = true;
        if self.open() {
            self.on_read();
            self.pump();
        }
        self.collect();
        Ok(())
    }

    fn advance(&mut self, k: usize, by: Duration) {
        self.begin(k);
        let end = self.chain.monotonic() + by;
        loop {
            self.pump();
            let Some((at, due)) = self.chain.next_due(end, true) else {
                break;
            };
            if let Some((i, result)) = self.chain.run_due(at, due, &mut self.callouts) {
                self.after_root_call(i, result.is_ok());
            }
        }
        self.chain.set_monotonic(end);
        self.collect();
    }

    /// Ends the test's view: answers still in flight arrive when their
    /// cluster gives them (Envoy keeps running; timers wait for the next
    /// advance, as for HTTP streams).
    fn finish(mut self) -> Vec<Conn<'a>> {
        let bystander = self
            .conns
            .iter()
            .position(|c| c.closed.is_none())
            .unwrap_or(self.conns.len().saturating_sub(1));
        self.begin(bystander);
        self.pump();
        while let Some((at, due)) = self.chain.next_due(Duration::MAX, false) {
            if let Some((i, result)) = self.chain.run_due(at, due, &mut self.callouts) {
                self.after_root_call(i, result.is_ok());
            }
            self.pump();
        }
        self.collect();
        self.collect_grpc();
        std::mem::take(&mut self.conns)
    }

    fn open(&self) -> bool {
        me!(self).closed.is_none()
    }

    /// Delivers what arrives after the current event without the clock
    /// moving, each a later event: the answers to callouts due by now (in
    /// the order they were made), gRPC work, then the upstreams' reactions
    /// in the order they were sent.
    fn pump(&mut self) {
        loop {
            if self.answer_next() {
                continue;
            }
            let next = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(k, c)| c.upstream_events.front().map(|(seq, _)| (*seq, k)))
                .min();
            let Some((_, k)) = next else {
                return;
            };
            if let Some((_, reply)) = self.conns[k].upstream_events.pop_front() {
                self.on(k, |net| net.on_upstream_read(reply));
            }
        }
    }

    /// Queues a reaction of connection `k`'s upstream.
    fn upstream_reacts(&mut self, reply: TcpReply) {
        self.seq += 1;
        let seq = self.seq;
        me!(self).upstream_events.push_back((seq, reply));
    }

    /// Delivers the next callout answer due by now or gRPC event to its root
    /// context and applies what the callback deferred; `false` if nothing is
    /// due.
    fn answer_next(&mut self) -> bool {
        let now = self.chain.monotonic();
        if let Some((at, due)) = self.chain.next_due(now, false) {
            if let Some((i, result)) = self.chain.run_due(at, due, &mut self.callouts) {
                self.after_root_call(i, result.is_ok());
            }
            return true;
        }
        for i in 0..self.chain.slots.len() {
            let NetworkChain { slots, grpc, .. } = &mut *self.chain;
            if let Some(result) = grpc_step(&mut slots[i].vm, grpc) {
                self.after_root_call(i, result.is_ok());
                return true;
            }
        }
        false
    }

    /// After a root-context callback of slot `slot`'s VM (`on_tick`, a callout
    /// answer, a gRPC event): the stream actions it deferred apply to the
    /// connections whose contexts they acted on.
    fn after_root_call(&mut self, slot: usize, ok: bool) {
        self.apply_deferred(slot, ok);
    }

    /// A read event on the client connection (`ConnectionImpl::onRead`).
    fn on_read(&mut self) {
        if !self.open() || !me!(self).read_enabled {
            return;
        }
        let c = &mut me!(self);
        c.read_buffer.append(&mut c.socket);
        if c.socket_end {
            c.read_end_stream = true;
        }
        if c.read_buffer.is_empty() && !c.read_end_stream {
            return;
        }
        if c.read_end_stream {
            if c.read_end_raised {
                return;
            }
            c.read_end_raised = true;
        }
        // Envoy counts the whole read buffer as received at each read event,
        // held bytes again (measured in Envoy 1.40).
        c.facts.get().bytes_received += c.read_buffer.len() as u64;
        self.continue_reading(None);
        // Both directions ended and the client's half-close came last: Envoy
        // closes the socket as a remote close.
        if self.open() && me!(self).read_end_stream && me!(self).client_end {
            self.close(CloseType::Remote);
        }
    }

    /// `FilterManagerImpl::onContinueReading` from after filter `after` (from the
    /// first with `None`); `tcp_proxy` is last.
    fn continue_reading(&mut self, after: Option<usize>) {
        let start = after.map_or(0, |i| i + 1);
        for i in start..=me!(self).filters.len() {
            if !self.open() {
                return;
            }
            if i == me!(self).filters.len() {
                self.tcp_proxy();
                return;
            }
            if !me!(self).filters[i].initialized {
                me!(self).filters[i].initialized = true;
                if self.new_connection(i) == Status::Stop || !self.open() {
                    return;
                }
            }
            if (!me!(self).read_buffer.is_empty() || me!(self).read_end_stream)
                && (self.downstream_data(i) == Status::Stop || !self.open())
            {
                return;
            }
        }
    }

    /// `tcp_proxy`: connects upstream on its first call (and re-enables reading,
    /// which reads what the client sent meanwhile); forwards the read buffer.
    fn tcp_proxy(&mut self) {
        if !me!(self).tcp_proxy {
            me!(self).tcp_proxy = true;
            {
                let mut facts = me!(self).facts.get();
                facts.attempts = 1;
                facts.upstream_host = Some(self.chain.upstream);
                facts.upstream_local = Some(self.chain.upstream_local);
            }
            let cluster = self.chain.cluster.clone();
            for i in 0..me!(self).filters.len() {
                if !self.gone(i) {
                    self.hold(i);
                    let slot = me!(self).filters[i].slot;
                    self.chain.slots[slot].vm.state().cluster_name = Some(cluster.clone());
                }
            }
            me!(self).upstream_received = Some(Vec::new());
            let greeting = me!(self).upstream.on_connect();
            self.upstream_reacts(greeting);
            me!(self).read_enabled = true;
            if !me!(self).socket.is_empty() || me!(self).socket_end {
                self.on_read();
            }
            return;
        }
        let data = std::mem::take(&mut me!(self).read_buffer);
        let end = me!(self).read_end_stream;
        if me!(self).upstream_done {
            if !data.is_empty() {
                me!(self).warnings.push(format!(
                    "{} bytes forwarded to an upstream that had closed are lost",
                    data.len()
                ));
            }
            return;
        }
        if let Some(received) = me!(self).upstream_received.as_mut() {
            received.extend_from_slice(&data);
        }
        let mut closed = false;
        if !data.is_empty() {
            let reply = me!(self).upstream.on_data(&data);
            closed = reply.close;
            self.upstream_reacts(reply);
        }
        // An upstream that closed reads no more.
        if end && !me!(self).upstream_saw_end && !closed {
            me!(self).upstream_saw_end = true;
            let reply = me!(self).upstream.on_end();
            self.upstream_reacts(reply);
        }
    }

    /// A read event on the upstream connection: `tcp_proxy` writes its buffer to
    /// the client through the write filters.
    fn on_upstream_read(&mut self, reply: TcpReply) {
        if !self.open() || me!(self).upstream_closed || me!(self).upstream_done {
            return;
        }
        // Data and the end of the stream are read separately (see
        // `TcpUpstream`).
        if reply.close && !reply.data.is_empty() {
            self.on_upstream_read(TcpReply::data(reply.data));
            self.on_upstream_read(TcpReply::none().and_close());
            return;
        }
        let c = &mut me!(self);
        c.upstream_buffer.extend_from_slice(&reply.data);
        let newly_ended = reply.close && !c.upstream_end;
        if reply.close {
            c.upstream_end = true;
            c.upstream_done = true;
        }
        if reply.data.is_empty() && !newly_ended {
            return;
        }
        self.write(me!(self).upstream_end);
        // The upstream connection is now closed both ways: `tcp_proxy` closes
        // the client connection (`FlushWrite`), even when a write filter still
        // holds the upstream's last bytes (so the client never gets them).
        if me!(self).upstream_done && me!(self).upstream_saw_end && self.open() {
            self.close(CloseType::Local);
        }
    }

    /// `ConnectionImpl::write` through the write filters (last added first).
    fn write(&mut self, end_stream: bool) {
        for i in (0..me!(self).filters.len()).rev() {
            if !self.open() {
                return;
            }
            if self.upstream_data(i, end_stream) == Status::Stop || !self.open() {
                return;
            }
        }
        let c = &mut me!(self);
        c.facts.get().bytes_sent += c.upstream_buffer.len() as u64;
        c.client_received.append(&mut c.upstream_buffer);
        if end_stream {
            c.client_end = true;
            // Both directions ended and Envoy's end came last.
            if c.read_end_stream {
                self.close(CloseType::Local);
            }
        }
    }

    /// The client connection closes: every filter hears it (in order), then
    /// `tcp_proxy` closes the upstream connection.
    fn close(&mut self, how: CloseType) {
        if me!(self).closed.is_some() {
            return;
        }
        tracing::debug!(target: "weir_harness::l4", id = me!(self).id.0, ?how, "client connection closed");
        me!(self).closed = Some(how);
        me!(self).client_end = true;
        for i in 0..me!(self).filters.len() {
            self.downstream_closed(i, how);
        }
        let c = &mut me!(self);
        if c.tcp_proxy && !c.upstream_closed {
            c.upstream_closed = true;
            // An upstream still reading sees the connection end.
            if !c.upstream_done {
                c.upstream_saw_end = true;
            }
        }
        c.upstream_events.clear();
    }

    /// Whether filter `i`'s VM can no longer be called for this connection:
    /// it failed, or FAIL_RELOAD replaced it (the connection stays with the
    /// failed VM).
    fn gone(&mut self, i: usize) -> bool {
        let f = &me!(self).filters[i];
        let vm = &self.chain.slots[f.slot].vm;
        vm.failed() || vm.key() != f.vm
    }

    /// Makes filter `i`'s VM hold this connection's maps.
    fn hold(&mut self, i: usize) {
        let f = &me!(self).filters[i];
        self.chain.slots[f.slot]
            .vm
            .state()
            .hold_maps_of(&f.vm_contexts);
    }

    /// `Context::onNewConnection`.
    fn new_connection(&mut self, i: usize) -> Status {
        let (slot, context) = (me!(self).filters[i].slot, me!(self).filters[i].context);
        me!(self).filters[i].created = true;
        if self.gone(i) {
            return self.failed();
        }
        self.hold(i);
        let s = &mut self.chain.slots[slot];
        if s.vm.create_stream(context).is_err() {
            return self.trapped();
        }
        let cb = s.callbacks.on_new_connection.clone();
        let result = s.vm.call_network(
            Phase::Request,
            context,
            "proxy_on_new_connection",
            &cb,
            context as i32,
        );
        self.settle(i, result)
    }

    /// `Context::onData`.
    fn downstream_data(&mut self, i: usize) -> Status {
        if !me!(self).filters[i].created {
            return Status::Continue;
        }
        if self.gone(i) {
            return self.failed();
        }
        let (slot, context) = (me!(self).filters[i].slot, me!(self).filters[i].context);
        self.hold(i);
        let params = (
            context as i32,
            me!(self).read_buffer.len() as i32,
            i32::from(me!(self).read_end_stream),
        );
        let s = &mut self.chain.slots[slot];
        let cb = s.callbacks.on_downstream_data.clone();
        s.vm.state().maps.downstream_data = Some(Vec::new());
        self.sync_in(i);
        let result = self.chain.slots[slot].vm.call_network(
            Phase::Request,
            context,
            "proxy_on_downstream_data",
            &cb,
            params,
        );
        self.sync_out(i);
        let status = self.settle(i, result);
        if status == Status::Continue && !self.gone(i) {
            self.hold(i);
            self.chain.slots[slot].vm.state().maps.downstream_data = None;
        }
        status
    }

    /// `Context::onWrite`.
    fn upstream_data(&mut self, i: usize, end_stream: bool) -> Status {
        if !me!(self).filters[i].created {
            return Status::Continue;
        }
        let (slot, context) = (me!(self).filters[i].slot, me!(self).filters[i].context);
        let status = if self.gone(i) {
            self.failed()
        } else {
            self.hold(i);
            let params = (
                context as i32,
                me!(self).upstream_buffer.len() as i32,
                i32::from(end_stream),
            );
            let s = &mut self.chain.slots[slot];
            let cb = s.callbacks.on_upstream_data.clone();
            s.vm.state().maps.upstream_data = Some(Vec::new());
            self.sync_in(i);
            let result = self.chain.slots[slot].vm.call_network(
                Phase::Response,
                context,
                "proxy_on_upstream_data",
                &cb,
                params,
            );
            self.sync_out(i);
            let status = self.settle(i, result);
            if status == Status::Continue && !self.gone(i) {
                self.hold(i);
                self.chain.slots[slot].vm.state().maps.upstream_data = None;
            }
            status
        };
        if end_stream {
            self.upstream_closed_event(i);
        }
        status
    }

    /// `Context::onUpstreamConnectionClose(Unknown)`, after the upstream's end of
    /// stream.
    fn upstream_closed_event(&mut self, i: usize) {
        let (slot, context) = (me!(self).filters[i].slot, me!(self).filters[i].context);
        if !self.gone(i) {
            let cb = self.chain.slots[slot].callbacks.on_upstream_close.clone();
            self.sync_in(i);
            let result = self.chain.slots[slot].vm.call_network(
                Phase::Response,
                context,
                "proxy_on_upstream_connection_close",
                &cb,
                (context as i32, 0),
            );
            self.sync_out(i);
            self.after_call(i, result.is_ok());
        }
        if me!(self).filters[i].downstream_closed {
            self.close_tcp(i);
        }
    }

    /// `Context::onEvent(LocalClose | RemoteClose)`.
    fn downstream_closed(&mut self, i: usize, how: CloseType) {
        if !me!(self).filters[i].created {
            return;
        }
        let (slot, context) = (me!(self).filters[i].slot, me!(self).filters[i].context);
        if !self.gone(i) {
            let cb = self.chain.slots[slot].callbacks.on_downstream_close.clone();
            self.sync_in(i);
            let result = self.chain.slots[slot].vm.call_network(
                Phase::Request,
                context,
                "proxy_on_downstream_connection_close",
                &cb,
                (context as i32, how.peer_type()),
            );
            self.sync_out(i);
            self.after_call(i, result.is_ok());
        }
        me!(self).filters[i].downstream_closed = true;
        self.close_tcp(i);
    }

    /// `Context::onCloseTCP`: `on_done`, `on_log`, `on_delete` once.
    fn close_tcp(&mut self, i: usize) {
        let f = &mut me!(self).filters[i];
        if f.closed_tcp || !f.created {
            return;
        }
        f.closed_tcp = true;
        let (slot, context, vm) = (f.slot, f.context, f.vm);
        // A VM FAIL_RELOAD replaced is not called again.
        if self.chain.slots[slot].vm.key() != vm {
            return;
        }
        self.sync_in(i);
        // A trap fails the VM; there is nothing left to close.
        let _ = self.chain.slots[slot].vm.end_connection(context);
        // The VM forgets the connection's maps once its last context there
        // is deleted.
        let c = &me!(self);
        if c.filters.iter().all(|g| g.vm != vm || g.closed_tcp) {
            let contexts = c.filters[i].vm_contexts.clone();
            self.chain.slots[slot].vm.state().drop_maps_of(&contexts);
        }
    }

    /// The result of a data or connection callback: a trap fails the stream,
    /// deferred actions run, and the return value becomes Continue or Stop.
    fn settle(&mut self, i: usize, result: Result<Option<i32>, Trap>) -> Status {
        match result {
            Ok(action) => {
                self.after_call(i, true);
                status(action)
            }
            Err(_) => self.trapped(),
        }
    }

    /// The callback trapped: Envoy closes the connection whatever the
    /// policy (measured in Envoy 1.40, `l4-fail-open.yaml`); `FAIL_OPEN` only
    /// lets later callbacks and connections pass the failed VM.
    fn trapped(&mut self) -> Status {
        if !me!(self).stream_failed {
            me!(self).stream_failed = true;
            self.close(CloseType::Local);
        }
        Status::Stop
    }

    /// Runs what the callback deferred (Envoy's `DeferAfterCallActions`).
    fn after_call(&mut self, i: usize, ok: bool) {
        let slot = me!(self).filters[i].slot;
        self.apply_deferred(slot, ok);
    }

    /// Envoy's deferred `close` and `continueReading`, for each connection
    /// context they acted on in slot `slot`'s VM (in the order they were
    /// asked for), on whichever open connection it belongs to; on any other
    /// context (a root's) they do nothing. After a trap nothing runs.
    fn apply_deferred(&mut self, slot: usize, ok: bool) {
        let vm = &mut self.chain.slots[slot].vm;
        let (vm, actions) = (vm.key(), vm.take_all_deferred());
        if !ok {
            return;
        }
        for (context, deferred) in actions {
            let owner = self.conns.iter().enumerate().find_map(|(k, c)| {
                c.filters
                    .iter()
                    .position(|f| f.vm == vm && f.context == context && f.created)
                    .map(|i| (k, i))
            });
            let Some((k, i)) = owner else {
                continue;
            };
            self.on(k, |net| {
                // Envoy runs them in the order asked: a continue asked
                // before the close runs the rest of the chain first (one
                // asked after it is not kept, see `proxy_continue_stream`).
                if deferred.continue_downstream.is_some() && net.open() {
                    net.continue_reading(Some(i));
                    net.refresh_held();
                }
                if deferred.close_connection.is_some() {
                    net.close(CloseType::Local);
                }
            });
        }
    }

    /// After a root context resumed the connection (outside its filters'
    /// callbacks, so `tcp_proxy` took the bytes they held): the views of
    /// the connection's buffers that the VMs still hold (their filters
    /// paused on them) show the buffers as they are now. Envoy's contexts
    /// keep pointing at the connection's buffers, so a later root callback
    /// that makes the connection effective reads them drained (measured in
    /// Envoy 1.40, `l4-grpc-effects.yaml`).
    fn refresh_held(&mut self) {
        for j in 0..me!(self).filters.len() {
            if !self.open() {
                return;
            }
            if me!(self).filters[j].created && !self.gone(j) {
                self.sync_in(j);
            }
        }
    }

    /// `CHECK_FAIL_NET` for a connection whose context is in a VM that
    /// failed (through another connection, or FAIL_RELOAD replaced it): the
    /// connection is closed once, whatever the policy (measured in Envoy
    /// 1.40, `l4-concurrent-fail-open.yaml`: `FAIL_OPEN` only leaves the
    /// failed VM out of connections accepted later).
    fn failed(&mut self) -> Status {
        if !me!(self).stream_failed {
            me!(self).stream_failed = true;
            self.close(CloseType::Local);
        }
        Status::Stop
    }

    /// Before a callback of filter `i`: its VM holds this connection's maps,
    /// and a connection buffer the VM still points at (its filter held the
    /// data) shows the connection's bytes now.
    fn sync_in(&mut self, i: usize) {
        self.hold(i);
        let slot = me!(self).filters[i].slot;
        let c = &me!(self);
        let maps = &mut self.chain.slots[slot].vm.state().maps;
        if let Some(held) = maps.downstream_data.as_mut() {
            held.clone_from(&c.read_buffer);
        }
        if let Some(held) = maps.upstream_data.as_mut() {
            held.clone_from(&c.upstream_buffer);
        }
    }

    /// After a callback: the VM's view of the connection buffers (with its
    /// edits) is the connection's (the callback may have made another
    /// connection's maps the VM's, through its effective context).
    fn sync_out(&mut self, i: usize) {
        if self.chain.slots[me!(self).filters[i].slot].vm.key() != me!(self).filters[i].vm {
            return;
        }
        self.hold(i);
        let slot = me!(self).filters[i].slot;
        let maps = &self.chain.slots[slot].vm.state().maps;
        let c = &mut me!(self);
        if let Some(held) = maps.downstream_data.as_ref() {
            c.read_buffer.clone_from(held);
        }
        if let Some(held) = maps.upstream_data.as_ref() {
            c.upstream_buffer.clone_from(held);
        }
    }
}
