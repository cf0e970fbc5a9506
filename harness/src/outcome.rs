//! What a stream through the chain produced.

use std::time::Duration;

use bytes::Bytes;

/// A proxy-wasm log level (`proxy_log_level_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum LogLevel {
    /// `trace`
    Trace = 0,
    /// `debug`
    Debug = 1,
    /// `info`
    Info = 2,
    /// `warn`
    Warn = 3,
    /// `error`
    Error = 4,
    /// `critical`
    Critical = 5,
}

impl LogLevel {
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => LogLevel::Trace,
            1 => LogLevel::Debug,
            2 => LogLevel::Info,
            3 => LogLevel::Warn,
            4 => LogLevel::Error,
            5 => LogLevel::Critical,
            _ => return None,
        })
    }

    /// The lower-case name Envoy prints.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line a plugin logged (`proxy_log`, or WASI stdout/stderr), or a line the
/// host logged about the plugin (a trap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The plugin's name.
    pub plugin: String,
    /// The level.
    pub level: LogLevel,
    /// The message.
    pub message: String,
}

/// A local reply that ended the stream, and who sent it.
///
/// To a gRPC request (`content-type: application/grpc` or
/// `application/grpc+...` from the client) Envoy sends every local reply as a
/// gRPC trailers-only response: the client receives `:status: 200`,
/// `content-type: application/grpc`, `grpc-status`, the body as
/// `grpc-message` and no body. [`status`](Self::status) is then the status the
/// reply asked for, and [`grpc_status`](Self::grpc_status) is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// The plugin that sent it, `envoy.filters.http.router` when the
    /// router answered (no route, a route whose cluster is missing, an
    /// upstream that failed or timed out), or
    /// `envoy.filters.network.http_connection_manager` when the connection
    /// manager answered before any filter (a path it rejects or redirects).
    pub plugin: String,
    /// The HTTP status asked for (the client receives `200` when the request
    /// was a gRPC request).
    pub status: u16,
    /// For a gRPC request, the gRPC status Envoy gave the reply: the one
    /// asked for (`proxy_send_local_response`'s `grpc_status`) when it is 0
    /// to 16, else the one [`status`](Self::status) stands for (`403` →
    /// `7`, `404` → `12`, `503` → `14`, …). A `grpc-status` header the
    /// filter added itself is what the client receives instead. `None` for
    /// a request that is not gRPC.
    pub grpc_status: Option<u32>,
    /// Envoy's response-code details, e.g. `wasm_fail_stream`.
    pub details: String,
}

impl LocalReply {
    /// What the outcome says of `request`, sent by `plugin` (a gRPC request
    /// gets its `grpc-status`).
    pub(crate) fn of(plugin: String, request: crate::state::LocalReplyRequest, grpc: bool) -> Self {
        Self {
            plugin,
            status: request.status as u16,
            grpc_status: grpc.then(|| crate::hcm::local_reply_grpc_status(&request)),
            details: request.details,
        }
    }
}

/// An HTTP callout a plugin made (`proxy_http_call`) and its answer.
#[derive(Debug)]
#[non_exhaustive]
pub struct Callout {
    /// The cluster called.
    pub cluster: String,
    /// The request as the cluster's upstream received it.
    pub request: http::Request<Bytes>,
    /// The upstream's answer.
    pub response: http::Response<Bytes>,
}

/// What one request through the chain produced.
#[derive(Debug)]
#[non_exhaustive]
pub struct Outcome {
    /// The request as the upstream received it (`host` header included), or `None`
    /// if the chain answered locally.
    pub upstream_request: Option<http::Request<Bytes>>,
    /// The response as the client received it.
    pub response: http::Response<Bytes>,
    /// Set when a filter (or a failed VM) answered instead of the upstream.
    pub local_reply: Option<LocalReply>,
    /// Everything the plugins logged while handling the request.
    pub logs: Vec<LogRecord>,
    /// Wasm fuel consumed by all plugins for this request (deterministic).
    /// Only an engine bounding calls by fuel (the default) meters it: with
    /// [`CallLimit::Deadline`](crate::CallLimit::Deadline) this is 0, not a
    /// measurement (see [`Engine::call_limit`](crate::Engine::call_limit)).
    pub fuel: u64,
    /// `proxy_*` host calls the plugins made for this request.
    pub host_calls: u64,
    /// The callouts the plugins made, in order.
    pub callouts: Vec<Callout>,
    /// The gRPC calls and streams that reached their service, in order.
    pub grpc: Vec<crate::GrpcCallout>,
    /// Plugins that trapped during this request, as Envoy reports it:
    /// `<plugin>: Function: <callback> failed: <trap and wasm backtrace>`.
    pub traps: Vec<String>,
    /// Things that work in the harness but break in Envoy, e.g. a body whose size
    /// no longer matches its `content-length`.
    pub warnings: Vec<String>,
}

impl Outcome {
    /// The trailers the upstream received, if any (the
    /// [`Trailers`](crate::Trailers) extension of
    /// [`upstream_request`](Self::upstream_request)).
    pub fn upstream_trailers(&self) -> Option<&http::HeaderMap> {
        self.upstream_request
            .as_ref()?
            .extensions()
            .get::<crate::Trailers>()
            .map(|t| &t.0)
    }

    /// The trailers the client received, if any (the
    /// [`Trailers`](crate::Trailers) extension of [`response`](Self::response)).
    pub fn response_trailers(&self) -> Option<&http::HeaderMap> {
        self.response
            .extensions()
            .get::<crate::Trailers>()
            .map(|t| &t.0)
    }

    /// The messages logged at `level`.
    pub fn logs_at(&self, level: LogLevel) -> impl Iterator<Item = &str> {
        self.logs
            .iter()
            .filter(move |r| r.level == level)
            .map(|r| r.message.as_str())
    }
}

/// How long a plugin VM took to start, in wall-clock time (see
/// [`Chain::start_times`](crate::Chain::start_times)). Unlike fuel, these
/// figures depend on the machine and its load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartTime {
    /// Instantiation: a wasmtime store, an instance of the compiled module
    /// (memory, tables, globals, data segments), its memory and allocator
    /// found. No guest code runs. Each callback is typed when it is first
    /// called (in the start-up sequence or a stream), not here.
    pub instantiate: Duration,
    /// Envoy's start-up sequence in the guest: `_initialize` (+ `main`) or
    /// `_start`, then the root context's `on_context_create`, `on_vm_start` and
    /// `on_configure`.
    pub startup: Duration,
}
