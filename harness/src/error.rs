//! The harness's error type.

use std::path::PathBuf;

/// Why loading a plugin, building a chain or running a request failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A module file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly module, or the engine is misconfigured.
    #[error("invalid wasm module: {0}")]
    Wasm(String),
    /// The module exports no `proxy_abi_version_*` marker Envoy knows.
    #[error(
        "missing or unknown proxy-wasm ABI version: the module must export \
         proxy_abi_version_0_1_0, proxy_abi_version_0_2_0 or proxy_abi_version_0_2_1{}",
        found_markers(.found)
    )]
    UnknownAbi {
        /// `proxy_abi_version_*` exports that were found but are not known.
        found: Vec<String>,
    },
    /// The module exports neither `malloc` nor `proxy_on_memory_allocate`.
    #[error("wasm module is missing malloc function (or proxy_on_memory_allocate)")]
    MissingAllocator,
    /// An exported callback has the wrong signature (Envoy's V8 refuses the module).
    #[error("bad function signature for export `{name}`: expected {expected}, found {found}")]
    BadExport {
        /// The export.
        name: String,
        /// The signature Envoy expects.
        expected: String,
        /// The module's signature.
        found: String,
    },
    /// The module imports something the host does not provide.
    #[error("cannot link module: {0}")]
    Link(String),
    /// The plugin trapped during start-up (initialization, `on_vm_start`, `on_configure`).
    #[error("plugin `{plugin}` failed in {function}: {message}")]
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The callback that trapped.
        function: &'static str,
        /// The trap, with its wasm backtrace.
        message: String,
    },
    /// `on_vm_start` returned false: Envoy rejects the plugin.
    #[error("plugin `{plugin}` rejected its VM configuration (on_vm_start returned false){}", last_log(.logs))]
    VmStartFailed {
        /// The plugin's name.
        plugin: String,
        /// What the plugin logged at warn level or above.
        logs: Vec<String>,
    },
    /// `on_configure` returned false: Envoy rejects the plugin.
    #[error("plugin `{plugin}` rejected its configuration (on_configure returned false){}", last_log(.logs))]
    ConfigureFailed {
        /// The plugin's name.
        plugin: String,
        /// What the plugin logged at warn level or above.
        logs: Vec<String>,
    },
    /// A filter paused the stream and nothing resumed it: in Envoy the request
    /// would hang until a timeout.
    #[error("plugin `{plugin}` paused the stream in {phase} and never resumed it")]
    Stalled {
        /// The plugin's name.
        plugin: String,
        /// Where it paused.
        phase: &'static str,
    },
    /// The stream was reset: a filter called `proxy_close_stream`, or sent a
    /// local reply after the response headers had gone to the client (Envoy
    /// can no longer answer and resets). The client's connection is closed
    /// without a (complete) response.
    #[error("plugin `{plugin}` reset the stream in {phase}")]
    Reset {
        /// The plugin's name.
        plugin: String,
        /// Where it reset.
        phase: &'static str,
        /// What the upstream received before the reset, if it was reached.
        upstream_request: Option<Box<http::Request<bytes::Bytes>>>,
        /// What the plugins logged for the stream (access logging still runs).
        logs: Vec<crate::LogRecord>,
        /// The stream's callouts (answered after it ended, if still in flight).
        callouts: Vec<crate::Callout>,
    },
    /// The client closed its connection before the stream ended (a
    /// [`Disconnect`](crate::Disconnect) on its request): Envoy resets the
    /// stream; the filters' access logging and teardown still run.
    #[error("the client disconnected while the stream waited for {phase}")]
    Disconnected {
        /// What the stream waited for (the callback that held it, or the
        /// upstream's response).
        phase: &'static str,
        /// What the upstream received before the reset, if it was reached.
        upstream_request: Option<Box<http::Request<bytes::Bytes>>>,
        /// What the plugins logged for the stream, access logging included.
        logs: Vec<crate::LogRecord>,
        /// The stream's callouts (answered after it ended, if still in flight).
        callouts: Vec<crate::Callout>,
    },
    /// The filter did something that crashes Envoy 1.40 itself.
    #[error("plugin `{plugin}`: {reason}")]
    WouldCrashEnvoy {
        /// The plugin's name.
        plugin: String,
        /// What it did.
        reason: &'static str,
    },
    /// An Envoy config could not be read, or uses something the harness cannot emulate.
    #[error("envoy config: {0}")]
    EnvoyConfig(String),
    /// Node or xDS metadata given to the harness that a protobuf `Struct`
    /// cannot hold.
    #[error("invalid metadata: {0}")]
    InvalidMetadata(String),
    /// The request given to the harness cannot be sent (e.g. no host).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A header a filter produced cannot be put on the wire.
    #[error("invalid header `{name}` in the {direction}: {message}")]
    InvalidHeader {
        /// The header name, lossily decoded.
        name: String,
        /// `request` or `response`.
        direction: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

fn found_markers(found: &[String]) -> String {
    if found.is_empty() {
        String::new()
    } else {
        format!(" (found {})", found.join(", "))
    }
}

fn last_log(logs: &[String]) -> String {
    logs.last().map(|l| format!(": {l}")).unwrap_or_default()
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
