//! The conformance suite's gRPC clusters, shared by the HTTP and the L4
//! runners: each scenario says how the `grpc` cluster answers ([`GrpcSpec`]),
//! and one service answers the same way in the harness and, through a real
//! HTTP/2 server on loopback ([`GrpcUpstream`]), in front of Envoy. A cluster
//! whose host refuses connections is a closed loopback port for Envoy
//! ([`closed_port`]) and [`GrpcRefusingHost`] in the harness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use serde::Deserialize;
use weir_harness::{
    GrpcRefusingHost, GrpcReply, GrpcRequest, GrpcService, GrpcStream, GrpcStreamReply,
    GrpcStreamService,
};

use crate::grpc::{GrpcHandler, GrpcStreamHandler, GrpcUpstream, SharedStreamService};
use crate::observed::UpstreamSaw;

/// A gRPC answer as data: every call and stream of the scenario gets it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSpec {
    /// `grpc-status` (default 0, OK).
    pub status: u32,
    /// `grpc-message`.
    pub message: String,
    /// Response messages, in order.
    pub messages: Vec<String>,
    /// Then each request message again, prefixed with `echo:`.
    pub echo: bool,
    /// Response headers (initial metadata).
    pub headers: Vec<(String, String)>,
    /// Trailers (trailing metadata) before `grpc-status`.
    pub trailers: Vec<(String, String)>,
    /// Never answer (the call times out or is cancelled).
    pub no_answer: bool,
    /// Answer streams while they are open, as scripted (the other fields
    /// are then unused). A suite with one such scenario serves its `grpc`
    /// cluster full duplex in the harness and for Envoy: its other
    /// scenarios' answers go out once the client half-closes, as they would.
    pub stream: Option<StreamSpec>,
}

/// How the `grpc` cluster answers a stream while it is open: what it sends
/// when the stream opens, in answer to each request message, and when the
/// client half-closes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Sent when the stream opens (default: nothing).
    #[serde(default)]
    pub open: StepSpec,
    /// Sent in answer to the `n`-th request message (nothing past the list).
    #[serde(default)]
    pub messages: Vec<StepSpec>,
    /// Sent when the client half-closes (default: close with status OK; `{}`
    /// sends nothing and leaves the stream open).
    #[serde(default = "StepSpec::close_ok")]
    pub half_close: StepSpec,
}

/// What the server sends at one point of a stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepSpec {
    /// Send the response headers now, even without metadata or a message.
    pub headers: bool,
    /// Initial metadata (sends the response headers).
    pub metadata: Vec<(String, String)>,
    /// Messages.
    pub messages: Vec<String>,
    /// Trailing metadata, with the close.
    pub trailers: Vec<(String, String)>,
    /// Close the stream with this `grpc-status`.
    pub status: Option<u32>,
    /// `grpc-message` of the close.
    pub message: String,
}

impl StepSpec {
    fn close_ok() -> Self {
        Self {
            status: Some(0),
            ..Self::default()
        }
    }

    fn reply(&self) -> GrpcStreamReply {
        let mut reply = GrpcStreamReply::new();
        if self.headers {
            reply = reply.headers();
        }
        for (k, v) in &self.metadata {
            reply = reply.initial_metadata(k, v);
        }
        for m in &self.messages {
            reply = reply.message(Bytes::from(m.clone()));
        }
        for (k, v) in &self.trailers {
            reply = reply.trailing_metadata(k, v);
        }
        if let Some(code) = self.status {
            reply = reply.close(code, self.message.clone());
        }
        reply
    }
}

impl GrpcSpec {
    /// The reply to `request`.
    pub fn reply(&self, request: &GrpcRequest) -> GrpcReply {
        if self.no_answer {
            return GrpcReply::no_answer();
        }
        let mut reply = GrpcReply::status(self.status, self.message.clone());
        for (k, v) in &self.headers {
            reply = reply.initial_metadata(k, v);
        }
        for m in &self.messages {
            reply = reply.message(Bytes::from(m.clone()));
        }
        if self.echo {
            for m in &request.messages {
                let mut echoed = b"echo:".to_vec();
                echoed.extend_from_slice(m);
                reply = reply.message(echoed);
            }
        }
        for (k, v) in &self.trailers {
            reply = reply.trailing_metadata(k, v);
        }
        reply
    }
}

/// A streaming gRPC service that answers each stream as its scenario
/// ([`Scenarios`]) scripts it; a scenario without a script answers in whole
/// once the client half-closes.
struct StreamsByScenario(Scenarios);

impl StreamsByScenario {
    fn spec(&self, stream: &GrpcStream) -> Option<&GrpcSpec> {
        self.0.spec(stream.metadata("x-probe-id"))
    }

    fn script(&self, stream: &GrpcStream) -> Option<&StreamSpec> {
        self.spec(stream).and_then(|s| s.stream.as_ref())
    }
}

impl GrpcStreamService for StreamsByScenario {
    fn on_open(&mut self, stream: &GrpcStream) -> GrpcStreamReply {
        match self.spec(stream) {
            Some(spec) => spec
                .stream
                .as_ref()
                .map(|s| s.open.reply())
                .unwrap_or_default(),
            None => GrpcStreamReply::new().close(5, "no such scenario"),
        }
    }

    fn on_message(&mut self, stream: &GrpcStream, _: &Bytes) -> GrpcStreamReply {
        let n = stream.messages().len();
        self.script(stream)
            .and_then(|s| s.messages.get(n.wrapping_sub(1)))
            .map(StepSpec::reply)
            .unwrap_or_default()
    }

    fn on_half_close(&mut self, stream: &GrpcStream) -> GrpcStreamReply {
        if let Some(script) = self.script(stream) {
            return script.half_close.reply();
        }
        let Some(spec) = self.spec(stream) else {
            return GrpcStreamReply::new();
        };
        let whole = spec.reply(&stream.request);
        if !whole.answers() {
            return GrpcStreamReply::new();
        }
        let mut reply = GrpcStreamReply::new().headers();
        for (k, v) in whole.headers() {
            reply = reply.initial_metadata(k, v);
        }
        for m in whole.messages() {
            reply = reply.message(m.clone());
        }
        for (k, v) in &spec.trailers {
            reply = reply.trailing_metadata(k, v);
        }
        reply.close(whole.code(), whole.status_message())
    }
}

/// A gRPC server that answers each request in whole as its scenario
/// ([`Scenarios`]) says.
fn whole_by_scenario(scenarios: Scenarios) -> GrpcHandler {
    Arc::new(move |req: &GrpcRequest| {
        let id = req
            .http
            .headers()
            .get("x-probe-id")
            .map(|v| v.to_str().unwrap_or_default());
        match scenarios.spec(id) {
            Some(spec) => spec.reply(req),
            None => GrpcReply::status(5, "no such scenario"),
        }
    })
}

/// What the gRPC server received for a scenario. A request can reach it after
/// the stream is done (a call nobody answers travels alongside the request),
/// so this waits up to a second for as many as the harness recorded.
pub fn grpc_seen(server: &GrpcUpstream, expected: usize) -> Vec<UpstreamSaw> {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut seen = server.take_seen();
    while seen.len() < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        seen.extend(server.take_seen());
    }
    seen.iter().map(|r| UpstreamSaw::of(&r.http)).collect()
}

/// A loopback address nothing listens on: a listener's, once it is closed.
pub fn closed_port() -> Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?)
}

/// Which scenario a call or stream belongs to.
#[derive(Clone)]
struct Scenarios {
    specs: Arc<Vec<GrpcSpec>>,
    /// The scenario running.
    current: Arc<AtomicUsize>,
    /// Whether the `x-probe-id` metadata names the scenario (HTTP streams
    /// carry their scenario's number); otherwise, and without one, it is the
    /// scenario running.
    by_probe_id: bool,
}

impl Scenarios {
    fn spec(&self, probe_id: Option<&str>) -> Option<&GrpcSpec> {
        let id = match probe_id {
            Some(v) if self.by_probe_id => v.parse::<usize>().ok(),
            _ => Some(self.current.load(Ordering::SeqCst)),
        };
        id.and_then(|i| self.specs.get(i))
    }
}

/// How the harness's side of a [`GrpcCluster`] answers: give it to the chain
/// builder's `grpc_service` or `grpc_stream_service`.
pub enum HarnessGrpc {
    /// Whole answers, once the request is complete.
    Whole(GrpcHandler),
    /// Full duplex, while streams are open.
    Streams(SharedStreamService),
    /// The host refuses every connection.
    Refusing(GrpcRefusingHost),
}

/// A chain builder that takes gRPC clusters: the HTTP and the network one.
pub trait GrpcClusters: Sized {
    /// `grpc_service`.
    fn with_grpc_service(self, cluster: &str, service: impl GrpcService + 'static) -> Self;
    /// `grpc_stream_service`.
    fn with_grpc_stream_service(
        self,
        cluster: &str,
        service: impl GrpcStreamService + 'static,
    ) -> Self;
}

impl GrpcClusters for weir_harness::ChainBuilder {
    fn with_grpc_service(self, cluster: &str, service: impl GrpcService + 'static) -> Self {
        self.grpc_service(cluster, service)
    }
    fn with_grpc_stream_service(
        self,
        cluster: &str,
        service: impl GrpcStreamService + 'static,
    ) -> Self {
        self.grpc_stream_service(cluster, service)
    }
}

impl GrpcClusters for weir_harness::NetworkChainBuilder {
    fn with_grpc_service(self, cluster: &str, service: impl GrpcService + 'static) -> Self {
        self.grpc_service(cluster, service)
    }
    fn with_grpc_stream_service(
        self,
        cluster: &str,
        service: impl GrpcStreamService + 'static,
    ) -> Self {
        self.grpc_stream_service(cluster, service)
    }
}

impl HarnessGrpc {
    /// Adds this answer to `builder` as cluster `cluster`.
    pub fn add_to<B: GrpcClusters>(self, builder: B, cluster: &str) -> B {
        match self {
            Self::Streams(service) => builder.with_grpc_stream_service(cluster, service),
            Self::Refusing(host) => builder.with_grpc_service(cluster, host),
            Self::Whole(handler) => {
                builder.with_grpc_service(cluster, move |req: &GrpcRequest| handler(req))
            }
        }
    }
}

impl std::fmt::Debug for HarnessGrpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Whole(_) => "HarnessGrpc::Whole",
            Self::Streams(_) => "HarnessGrpc::Streams",
            Self::Refusing(_) => "HarnessGrpc::Refusing",
        })
    }
}

/// A gRPC cluster answering each scenario as its [`GrpcSpec`] says: one
/// server in front of Envoy (or a closed port, for a refusing host) and the
/// same answers for the harness.
#[derive(Debug)]
pub struct GrpcCluster {
    upstream: GrpcUpstream,
    /// Where Envoy's cluster points.
    addr: std::net::SocketAddr,
    harness: Option<HarnessGrpc>,
}

impl GrpcCluster {
    /// Serves `specs` (one per scenario; `current` is the scenario running)
    /// as cluster `name`. A suite with one scenario that scripts a stream is
    /// served full duplex; its other scenarios' answers go out once the
    /// client half-closes. `by_probe_id`: the `x-probe-id` metadata names the
    /// scenario. `refused`: the host refuses connections instead.
    ///
    /// # Errors
    /// If the server cannot start.
    pub fn start(
        name: &str,
        specs: Vec<GrpcSpec>,
        current: Arc<AtomicUsize>,
        by_probe_id: bool,
        refused: bool,
    ) -> Result<Self> {
        let streaming = specs.iter().any(|s| s.stream.is_some());
        let scenarios = Scenarios {
            specs: Arc::new(specs),
            current,
            by_probe_id,
        };
        let (upstream, harness) = if streaming {
            let service: GrpcStreamHandler = Arc::new(Mutex::new(StreamsByScenario(scenarios)));
            (
                GrpcUpstream::start_streaming(name, Arc::clone(&service))?,
                HarnessGrpc::Streams(SharedStreamService(service)),
            )
        } else {
            let handler = whole_by_scenario(scenarios);
            (
                GrpcUpstream::start(name, Arc::clone(&handler))?,
                HarnessGrpc::Whole(handler),
            )
        };
        // Refused from the moment a call or stream opens, as Envoy's is.
        let (addr, harness) = if refused {
            (closed_port()?, HarnessGrpc::Refusing(GrpcRefusingHost))
        } else {
            (upstream.addr(), harness)
        };
        Ok(Self {
            upstream,
            addr,
            harness: Some(harness),
        })
    }

    /// Where Envoy's cluster points.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The harness's side (once).
    pub fn harness(&mut self) -> Option<HarnessGrpc> {
        self.harness.take()
    }

    /// The server in front of Envoy.
    pub fn upstream(&self) -> &GrpcUpstream {
        &self.upstream
    }
}
