//! A wasmtime host that runs proxy-wasm filters the way Envoy 1.40 does, so filters
//! are tested with `cargo test`: fast, deterministic, no cluster.
//!
//! ```no_run
//! use bytes::Bytes;
//! use weir_harness::{Chain, Engine, Filter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::new()?;
//! let plugin = engine.load_file("target/wasm32-wasip1/filter/header_append.wasm")?;
//! let mut chain = Chain::builder(&engine)
//!     .filter(
//!         Filter::new(plugin)
//!             .name("header-append")
//!             .configuration(r#"{"request": {"set": [{"name": "x-env", "value": "test"}]}}"#),
//!     )
//!     .build()?; // runs _initialize, on_vm_start and on_configure like Envoy
//!
//! let request = http::Request::get("/hello").header("host", "example.com").body(Bytes::new())?;
//! let outcome = chain.send(request, |req: http::Request<Bytes>| {
//!     assert_eq!(req.headers()["x-env"], "test"); // what the upstream received
//!     http::Response::new(Bytes::from_static(b"hi"))
//! })?;
//!
//! assert_eq!(outcome.response.status(), 200); // what the client received
//! assert_eq!(outcome.response.headers()["server"], "envoy");
//! assert!(outcome.local_reply.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! What is emulated, as Envoy does it: ABI detection and load checks (marker,
//! allocator, export signatures, imports; ABI 0.1.0, 0.2.0 and 0.2.1 each get
//! exactly the host functions and callback signatures Envoy gives them), start-up order, context ids, header maps
//! with their availability windows and status codes, request and response bodies
//! (delivered as data then an empty end-of-stream frame, or in the pieces a
//! [`BodyChunks`] extension gives, arriving over virtual time with a [`ChunkGap`]
//! while callouts are in flight; buffering on Pause, `proxy_set_buffer_bytes`
//! edits; headers held by `allow_on_headers_stop_iteration` while the body is
//! delivered), HTTP/1.1 trailers (a [`Trailers`] extension on requests and
//! upstream responses, carried when the connection manager and the cluster
//! enable them: `on_request_trailers`/`on_response_trailers` end the stream,
//! maps 1 and 3 in Envoy's windows, trailers added at the end of a body, a
//! buffered body handed over with them, `response.trailers`, and what the
//! upstream and the client receive), deferred local replies (gRPC trailers-only
//! responses to gRPC requests, as Envoy sends them; see [`LocalReply`]) and stream control, the
//! connection manager's, router's and HTTP/1 codec's header changes (including
//! `transfer-encoding` and `connection: close`), `on_log` → `on_done` →
//! `on_delete`, shared data (per `vm_id`, Envoy's CAS rules), metrics (per-VM ids,
//! process-wide values; see [`Chain::metrics`]), properties (plugin, request,
//! response, connection, upstream and xds attributes from Envoy's stream info:
//! time and durations on the virtual clock, body and header sizes, response
//! flags and details from the stream's fate, gRPC status; the bootstrap's
//! node and the listener's, virtual host's, route's and cluster's metadata
//! and the upstream host's and its locality's, see [`Node`] and
//! [`Metadata`]; filter state), HTTP
//! callouts to clusters given with [`ChainBuilder::cluster`] (validation, what the cluster
//! receives, the response delivered to the root context, resuming or answering the
//! stream from it), gRPC calls and streams to services given with
//! [`ChainBuilder::grpc_service`] (Envoy's parsing of the service argument,
//! token numbering, status codes, callbacks with metadata and messages, cancel
//! and close, timeouts on the virtual clock; see [`GrpcService`]) or, answered
//! while the stream is open, [`ChainBuilder::grpc_stream_service`] (told of the
//! open, each message, the half-close and a reset; see [`GrpcStreamService`]),
//! timers on a virtual clock ([`Chain::advance`] fires `on_tick` and gRPC timeouts),
//! shared queues (per `vm_id`; `on_queue_ready` goes to the latest registrant after
//! the current event, as Envoy posts it), the foreign functions `compress`,
//! `uncompress`, `clear_route_cache`, `declare_property` (typed, read-only,
//! life-spanned properties for `proxy_set_property`), `set_envoy_filter_state`
//! (Envoy's registered filter state objects, read as `filter_state.<key>`),
//! `sign` and `verify_signature` (RSA PKCS#1 v1.5 and ECDSA on the NIST curves,
//! DER or PEM keys, Envoy's error texts), fail-closed/fail-open/fail-reload after a
//! trap (a stream paused in a VM another stream failed stays paused, as Envoy
//! calls a failed VM no more), WASI stdio/clock/random/environ. The conformance suite in
//! `tests/conformance/` compares the stream, header, body, trailer, shared-data,
//! shared-queue, foreign-function, metrics, property, callout, chain and failure
//! behaviours with Envoy 1.40, gRPC, and the ABI 0.1.0 differences and load
//! refusals. The load checks and timers are tested in
//! the harness only (Envoy's timers run on the wall clock). The CEL foreign
//! functions (`expr_create`, `expr_evaluate`, `expr_delete`) answer
//! `Unimplemented` (why: see `abi/foreign.rs`), as do `google_grpc` services.
//! A body buffered past the listener's `per_connection_buffer_limit_bytes` (default 1 MiB) is
//! answered `413` (request) or `500` (response), as Envoy's filter manager does.
//! Callouts can be made from any stream callback or from the root context. Their
//! responses arrive as Envoy's do, as events on the chain's one virtual clock:
//! after the body frames that arrived with the request (a body that arrived
//! while the headers waited for a callout is handed over in one piece), each
//! once its cluster's delay has passed, to the stream that waits for it, or
//! else to the root context (before the upstream's response when due first, or
//! after the stream ended). An [`UpstreamFault`] on a cluster's response makes
//! it slow (past the call's timeout: Envoy's `504`) or close the connection
//! (before the headers: Envoy's `503`; mid-body: a failed call,
//! `proxy_get_status` = `BrokenConnection`/`reset`). On the upstream's own
//! response, as Envoy's router has it: a `Delay` delays it, past the route's
//! timeout the router answers `504` (`response_timeout`), a close before the
//! headers is answered `503` (`upstream_reset_before_response_started`), and
//! a close after them resets the stream once the headers went through the
//! filters. While a filter holds a stream, the
//! plugin's ticks due before a delayed answer (or while nothing else is
//! pending, up to Envoy's 5 min stream idle timeout) are delivered first: a
//! filter can resume or answer the stream from `on_tick` by making the stream
//! the effective context, as in Envoy (stream actions are deferred per
//! context). gRPC work (asking the service, delivering its answer) is an event
//! with no delay after the callback that made the call; a gRPC stream is
//! answered once the plugin half-closes it, or, by a streaming service, after
//! each callback that sent on it, one frame (headers, message, trailers) per
//! event.
//!
//! Several streams at once: [`Chain::send_all`] sends a batch of requests
//! (each arriving at once, or after an [`Arrival`] offset) and interleaves
//! their streams as Envoy's worker does: each stream runs until it waits (for
//! a callout, a gRPC answer, a tick or its upstream's response), then events
//! arrive in time order, each resuming the stream it belongs to. Every stream
//! has its own context ids, header maps and outcome; [`Chain::send`] is a
//! batch of one.
//!
//! The upstream of a stream, and each callout cluster, is an [`Upstream`]:
//! a closure (in-process and deterministic), or a real HTTP/1.1 server
//! reached over TCP ([`HttpUpstream`]: a service the test runs on loopback),
//! whose network failures reach the chain as the [`UpstreamFault`] Envoy
//! answers them for.
//!
//! Network (L4) filters (`envoy.filters.network.wasm` in front of `tcp_proxy`)
//! run in a [`NetworkChain`]: a test opens a [`Connection`] to an in-process
//! [`TcpUpstream`], sends client bytes in chosen chunks, half-closes, and reads
//! what the client and the upstream received ([`ConnectionOutcome`]); see
//! the `l4` module documentation on [`NetworkChain`] for Envoy's rules it copies.

#![forbid(unsafe_code)]

mod abi;
mod bootstrap;
mod chain;
mod engine;
mod envoy_config;
mod error;
mod fields;
mod grpc;
mod hcm;
mod http_upstream;
mod l4;
mod l4_config;
mod outcome;
mod plugin;
mod shared;
mod state;
mod trailers;
mod upstream;
mod vm;
mod xds;

pub use abi::AbiVersion;
pub use chain::{
    Arrival, Background, BodyChunks, Chain, ChainBuilder, ChunkGap, Disconnect, FailurePolicy,
    Filter,
};
pub use engine::{CallLimit, DEFAULT_MAX_INSTANCES, Engine, EngineBuilder};
pub use envoy_config::{EnvoyConfig, WasmFilterConfig};
pub use error::{Error, Result};
pub use grpc::{
    GrpcCallout, GrpcFrame, GrpcRefusingHost, GrpcReply, GrpcRequest, GrpcServerStream,
    GrpcService, GrpcStream, GrpcStreamReply, GrpcStreamService,
};
pub use hcm::{ConnectionManager, EscapedSlashesAction};
pub use http_upstream::HttpUpstream;
pub use l4::{
    CloseType, Connection, ConnectionId, ConnectionOutcome, Connections, Echo, NetworkChain,
    NetworkChainBuilder, TcpReply, TcpUpstream,
};
pub use l4_config::NetworkConfig;
pub use outcome::{Callout, LocalReply, LogLevel, LogRecord, Outcome, StartTime};
pub use plugin::Plugin;
pub use shared::MetricValue;
pub use trailers::Trailers;
pub use upstream::{Upstream, UpstreamFault};
pub use xds::{Metadata, Node};
