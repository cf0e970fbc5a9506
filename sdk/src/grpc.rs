//! gRPC to a cluster: unary calls, answered like HTTP callouts, and streams,
//! whose metadata, messages and close arrive as [`GrpcStreamEvent`]s.

use std::time::Duration;

use crate::host::{self, BufferType, MapType};
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

/// Opens a gRPC stream: messages both ways, for as long as both sides keep it
/// open.
///
/// The server's initial metadata, each message, its trailing metadata and the
/// close arrive in [`HttpFilter::on_grpc_stream`](crate::HttpFilter::on_grpc_stream)
/// or [`Plugin::on_grpc_stream`](crate::Plugin::on_grpc_stream). Envoy (like the
/// harness) answers once the stream is half-closed by the filter
/// ([`GrpcStream::send_last`] or [`GrpcStream::close`]) if the server waits for
/// the whole request; a server may also answer earlier.
///
/// # Examples
/// ```
/// use weir::GrpcStreamRequest;
/// let request = GrpcStreamRequest::new("events", "pkg.Events", "Watch").metadata("x-tenant", "a");
/// assert_eq!(request.cluster(), "events");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct GrpcStreamRequest {
    cluster: String,
    service: String,
    method: String,
    metadata: Vec<(String, Vec<u8>)>,
}

impl GrpcStreamRequest {
    /// A stream of `service`/`method` on `cluster` (an Envoy cluster with HTTP/2).
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
        }
    }

    /// The cluster the stream goes to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Adds initial metadata.
    pub fn metadata(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.metadata.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Opens the stream.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidCallout`] for an empty cluster, service or method, or
    /// when Envoy refuses the stream (`ParseFailure` for an unknown cluster).
    pub fn open(self) -> Result<GrpcStream> {
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
        host::grpc_stream(&self.cluster, &self.service, &self.method, metadata)
            .map(GrpcStream)
            .map_err(|status| {
                invalid(format!(
                    "Envoy refused it ({status}): is the cluster defined?"
                ))
            })
    }
}

/// An open gRPC stream. It is a handle (copy it freely); events for it carry an
/// equal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcStream(pub(crate) u32);

impl GrpcStream {
    /// Sends a message; the stream stays open.
    ///
    /// # Errors
    /// A host error if the stream is gone (cancelled, or closed at both ends).
    pub fn send(&self, message: &[u8]) -> Result<()> {
        host::grpc_send(self.0, message, false)
            .map_err(|s| Error::host("proxy_grpc_send", "a gRPC stream message", s))
    }

    /// Sends the last message and half-closes the stream: the server then has
    /// the whole request.
    ///
    /// # Errors
    /// A host error if the stream is gone.
    pub fn send_last(&self, message: &[u8]) -> Result<()> {
        host::grpc_send(self.0, message, true)
            .map_err(|s| Error::host("proxy_grpc_send", "a gRPC stream message", s))
    }

    /// Half-closes the stream (no more messages from this side); the server's
    /// answer still arrives. After the server closed its side, this forgets
    /// the stream.
    ///
    /// # Errors
    /// A host error if the stream is gone.
    pub fn close(&self) -> Result<()> {
        host::grpc_close(self.0).map_err(|s| Error::host("proxy_grpc_close", "a gRPC stream", s))
    }

    /// Resets the stream: nothing more arrives for it.
    ///
    /// # Errors
    /// A host error if the stream is gone.
    pub fn cancel(&self) -> Result<()> {
        host::grpc_cancel(self.0).map_err(|s| Error::host("proxy_grpc_cancel", "a gRPC stream", s))
    }
}

/// What arrived on a gRPC stream. The metadata and the message can be read
/// during the callback only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrpcStreamEvent {
    /// The server's initial metadata (its response headers, `:status`
    /// included), with this many entries.
    InitialMetadata(usize),
    /// A message of this many bytes.
    Message(usize),
    /// The server's trailing metadata (`grpc-status` included), with this many
    /// entries.
    TrailingMetadata(usize),
    /// The stream ended with this gRPC status (0 is OK). Envoy reports its own
    /// failures here too (14, unavailable, for an unreachable cluster).
    Closed(u32),
}

impl GrpcStreamEvent {
    /// The metadata of an `InitialMetadata` or `TrailingMetadata` event, in
    /// order (empty for other events).
    ///
    /// # Errors
    /// A host error if the host refuses the read, or returns a malformed map.
    pub fn metadata(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let map = match self {
            GrpcStreamEvent::InitialMetadata(_) => MapType::GrpcInitialMetadata,
            GrpcStreamEvent::TrailingMetadata(_) => MapType::GrpcTrailingMetadata,
            _ => return Ok(Vec::new()),
        };
        let bytes = host::get_map_pairs(map)
            .map_err(|s| Error::host("proxy_get_header_map_pairs", "gRPC metadata", s))?;
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        let pairs = host::deserialize_pairs(&bytes).ok_or_else(|| {
            Error::host(
                "proxy_get_header_map_pairs",
                "gRPC metadata",
                host::Status::BAD_ARGUMENT,
            )
        })?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }

    /// The bytes of a `Message` event (empty for other events).
    ///
    /// # Errors
    /// A host error if the host refuses the read.
    pub fn message(&self) -> Result<Vec<u8>> {
        let GrpcStreamEvent::Message(size) = *self else {
            return Ok(Vec::new());
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        host::get_buffer(BufferType::GrpcMessage, 0, size)
            .map(Option::unwrap_or_default)
            .map_err(|s| Error::host("proxy_get_buffer_bytes", "a gRPC stream message", s))
    }

    /// The status message of a `Closed` event (empty for other events).
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn status_message(&self) -> Result<String> {
        if !matches!(self, GrpcStreamEvent::Closed(_)) {
            return Ok(String::new());
        }
        host::grpc_status()
            .map(|(_, m)| String::from_utf8_lossy(&m).into_owned())
            .map_err(|s| Error::host("proxy_get_status", "the gRPC stream status", s))
    }
}

/// Awaiting a `GrpcCall` sends it (when first polled) and gives the serialized
/// response message. A status other than OK is [`ErrorKind::Grpc`] (see
/// [`Error::grpc_status`]); a call Envoy refused is
/// [`ErrorKind::InvalidCallout`].
///
/// ```
/// # async fn f() -> weir::Result<()> {
/// let reply = weir::GrpcCall::new("authz", "pkg.Authz", "Check").message(vec![0x0a, 0x00]).await?;
/// log::info!("{} bytes", reply.len());
/// # Ok(()) }
/// ```
impl std::future::IntoFuture for GrpcCall {
    type Output = Result<Vec<u8>>;
    type IntoFuture = PendingGrpcCall;

    fn into_future(self) -> PendingGrpcCall {
        crate::runtime::install();
        PendingGrpcCall {
            state: GrpcState::Unsent(Box::new(self)),
        }
    }
}

/// A gRPC call being awaited: the future of a [`GrpcCall`]. Dropping it before
/// the answer came cancels the call.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct PendingGrpcCall {
    state: GrpcState,
}

#[derive(Debug)]
enum GrpcState {
    Unsent(Box<GrpcCall>),
    Sent { token: u32, cluster: String },
    Done,
}

impl std::future::Future for PendingGrpcCall {
    type Output = Result<Vec<u8>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Vec<u8>>> {
        use crate::runtime::{Answer, CallKind};
        use std::task::Poll;
        let this = self.get_mut();
        match std::mem::replace(&mut this.state, GrpcState::Done) {
            GrpcState::Unsent(call) => {
                let cluster = call.cluster.clone();
                match call.send() {
                    Ok(GrpcToken(token)) => {
                        crate::runtime::await_call(CallKind::Grpc, token, cx.waker());
                        this.state = GrpcState::Sent { token, cluster };
                        Poll::Pending
                    }
                    Err(e) => Poll::Ready(Err(e)),
                }
            }
            GrpcState::Sent { token, cluster } => {
                match crate::runtime::take_answer(CallKind::Grpc, token, cx.waker()) {
                    Some(Answer::Grpc(Ok((0, message)))) => Poll::Ready(Ok(message)),
                    Some(Answer::Grpc(Ok((status, message)))) => {
                        Poll::Ready(Err(Error::from(ErrorKind::Grpc {
                            cluster,
                            status,
                            message: String::from_utf8_lossy(&message).into_owned(),
                        })))
                    }
                    Some(Answer::Grpc(Err(e))) => Poll::Ready(Err(e)),
                    Some(Answer::Http(_)) => {
                        Poll::Ready(Err(Error::malformed("the gRPC response")))
                    }
                    None => {
                        this.state = GrpcState::Sent { token, cluster };
                        Poll::Pending
                    }
                }
            }
            GrpcState::Done => Poll::Ready(Err(Error::invalid(
                "a gRPC call future was polled after it completed",
            ))),
        }
    }
}

impl Drop for PendingGrpcCall {
    fn drop(&mut self) {
        if let GrpcState::Sent { token, .. } = self.state {
            // Once cancelled, the host answers no more.
            let cancelled = host::grpc_cancel(token).is_ok();
            crate::runtime::abandon(crate::runtime::CallKind::Grpc, token, cancelled);
        }
    }
}

/// Reads a unary gRPC answer during its callback: the status and the message
/// (OK) or the status message (otherwise).
pub(crate) fn read_answer(status: u32, size: usize) -> Result<(u32, Vec<u8>)> {
    let response = GrpcResponse::new(status, size);
    if response.is_ok() {
        Ok((0, response.message()?))
    } else {
        Ok((status, response.status_message()?.into_bytes()))
    }
}
