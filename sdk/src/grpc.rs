//! Unary gRPC calls to a cluster, answered like HTTP callouts.

use std::time::Duration;

use crate::host::{self, BufferType};
use crate::{Error, ErrorKind, Result};

/// A unary gRPC call: one request message, one response message.
///
/// The message bytes are the serialized protobuf (weir does not generate or
/// depend on protobuf code). The answer arrives in
/// [`HttpFilter::on_grpc_response`](crate::HttpFilter::on_grpc_response) or
/// [`Plugin::on_grpc_response`](crate::Plugin::on_grpc_response).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use weir::GrpcCall;
/// let call = GrpcCall::new("authz", "envoy.service.auth.v3.Authorization", "Check")
///     .metadata("x-tenant", "a")
///     .message(vec![0x0a, 0x00])
///     .timeout(Duration::from_millis(200));
/// assert_eq!(call.cluster(), "authz");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct GrpcCall {
    cluster: String,
    service: String,
    method: String,
    metadata: Vec<(String, Vec<u8>)>,
    message: Vec<u8>,
    timeout: Duration,
}

/// Identifies a gRPC call; its answer comes with the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcToken(pub(crate) u32);

impl GrpcCall {
    /// A call of `service`/`method` (e.g. `pkg.Service`, `Method`) on `cluster`
    /// (an Envoy cluster with HTTP/2). The timeout defaults to 5 s.
    pub fn new(
        cluster: impl Into<String>,
        service: impl Into<String>,
        method: impl Into<String>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            service: service.into(),
            method: method.into(),
            metadata: Vec::new(),
            message: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The cluster the call goes to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Adds initial metadata.
    pub fn metadata(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.metadata.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the serialized request message.
    pub fn message(mut self, message: impl Into<Vec<u8>>) -> Self {
        self.message = message.into();
        self
    }

    /// The timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the call.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidCallout`] for an empty cluster, service or method, or
    /// when Envoy refuses the call (`ParseFailure` for an unknown cluster).
    pub fn send(self) -> Result<GrpcToken> {
        let invalid = |reason: String| {
            Error::from(ErrorKind::InvalidCallout {
                cluster: self.cluster.clone(),
                reason,
            })
        };
        if self.cluster.is_empty() || self.service.is_empty() || self.method.is_empty() {
            return Err(invalid(
                "cluster, service and method must not be empty".to_owned(),
            ));
        }
        let metadata: Vec<(&str, &[u8])> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let message = (!self.message.is_empty()).then_some(self.message.as_slice());
        host::grpc_call(
            &self.cluster,
            &self.service,
            &self.method,
            metadata,
            message,
            self.timeout,
        )
        .map(GrpcToken)
        .map_err(|status| {
            invalid(format!(
                "Envoy refused it ({status}): is the cluster defined?"
            ))
        })
    }
}

/// The answer to a unary gRPC call, read on demand during the callback.
#[derive(Debug)]
pub struct GrpcResponse {
    status: u32,
    size: usize,
}

impl GrpcResponse {
    pub(crate) fn new(status: u32, size: usize) -> Self {
        Self { status, size }
    }

    /// The gRPC status code (0 is OK; 14 unavailable, 4 deadline exceeded, ...).
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the status is OK.
    pub fn is_ok(&self) -> bool {
        self.status == 0
    }

    /// The status message the server (or Envoy) gave.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn status_message(&self) -> Result<String> {
        host::grpc_status()
            .map(|(_, m)| String::from_utf8_lossy(&m).into_owned())
            .map_err(|s| Error::host("proxy_get_status", "the gRPC response", s))
    }

    /// The serialized response message (empty on error).
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn message(&self) -> Result<Vec<u8>> {
        if self.size == 0 {
            return Ok(Vec::new());
        }
        host::get_buffer(BufferType::GrpcMessage, 0, self.size)
            .map(Option::unwrap_or_default)
            .map_err(|s| Error::host("proxy_get_buffer_bytes", "the gRPC response", s))
    }
}
