//! gRPC services: what answers the calls and streams plugins open with
//! `proxy_grpc_call` and `proxy_grpc_stream`, and the per-VM bookkeeping of those
//! calls, as Envoy's gRPC async client keeps it.
//!
//! A service is in-process code, so tests stay deterministic. A
//! [`GrpcService`] gets the whole request (the metadata as the upstream
//! receives it and every message the plugin sent) and returns the whole answer
//! ([`GrpcReply`]). A unary call is answered when it is dispatched; a stream
//! once the plugin half-closes it (`proxy_grpc_send` with end of stream, or
//! `proxy_grpc_close`). A reply made with [`GrpcReply::no_answer`] never comes:
//! the call's timeout (virtual clock) or a cancel ends it. A
//! [`GrpcStreamService`] answers a stream while it is open instead: it is told
//! of each thing the plugin does, as it happens (see [`stream`]). A cluster
//! whose host refuses connections ([`GrpcRefusingHost`], or any service whose
//! [`GrpcService::refuses_connection`] says so) closes calls and streams right
//! after the callback that opened them, as Envoy does.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::fields::Fields;

pub(crate) mod stream;

pub use stream::{GrpcFrame, GrpcServerStream, GrpcStream, GrpcStreamReply, GrpcStreamService};
use stream::{Inbound, Live};

/// gRPC status codes (`grpc-status`) the harness itself produces.
pub(crate) mod code {
    /// `INTERNAL`
    pub(crate) const INTERNAL: u32 = 13;
    /// `UNAVAILABLE`
    pub(crate) const UNAVAILABLE: u32 = 14;
}

/// How Envoy ends a unary call whose timeout passes: the router's local reply
/// 504 "upstream request timeout", which the gRPC client reads as UNAVAILABLE.
pub(crate) const TIMEOUT_STATUS: u32 = code::UNAVAILABLE;
pub(crate) const TIMEOUT_MESSAGE: &str = "upstream request timeout{response_timeout}";

/// The status message of a call whose cluster's host refused the
/// connection: the router's local reply body, then its details.
const CONNECT_FAILURE_MESSAGE: &str = "upstream connect error or disconnect/reset before \
     headers. reset reason: remote connection failure";
const CONNECT_FAILURE_DETAILS: &str = "upstream_reset_before_response_started\
     {remote_connection_failure|delayed_connect_error:_Connection_refused}";

/// How Envoy's gRPC client closes a stream whose host refused the connection
/// when the plugin sends on it from its initial metadata callback: the HTTP
/// stream is reset, which the client reports as INTERNAL with the stream's
/// response code details (measured in Envoy 1.40).
const RESET_STATUS: u32 = code::INTERNAL;
const RESET_MESSAGE: &str = "upstream_reset_before_response_started";

/// Envoy's gRPC client appends the HTTP stream's response code details to the
/// status message it reports: `message{details}`, or just the details.
fn enhanced(message: &str, details: &str) -> String {
    if message.is_empty() {
        details.to_owned()
    } else {
        format!("{message}{{{details}}}")
    }
}

/// A gRPC request as the service receives it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GrpcRequest {
    /// The cluster it was sent to.
    pub cluster: String,
    /// The request as the upstream receives it: `POST /<service>/<method>`, the
    /// headers Envoy's gRPC client and router add (`content-type`, `te`,
    /// `grpc-timeout`, `x-envoy-*`) and the plugin's initial metadata; the body
    /// is the length-prefixed messages.
    pub http: http::Request<Bytes>,
    /// The messages the plugin sent, unframed.
    pub messages: Vec<Bytes>,
}

impl GrpcRequest {
    /// A request to `cluster` as received over HTTP (`http`'s body is the
    /// framed messages) with its `messages`.
    pub fn new(
        cluster: impl Into<String>,
        http: http::Request<Bytes>,
        messages: Vec<Bytes>,
    ) -> Self {
        Self {
            cluster: cluster.into(),
            http,
            messages,
        }
    }

    /// The gRPC service, e.g. `pkg.Service`.
    pub fn service(&self) -> &str {
        self.path_part(1)
    }

    /// The method, e.g. `Check`.
    pub fn method(&self) -> &str {
        self.path_part(2)
    }

    fn path_part(&self, i: usize) -> &str {
        self.http.uri().path().split('/').nth(i).unwrap_or_default()
    }

    /// The first message (a unary call's request), or empty.
    pub fn message(&self) -> &[u8] {
        self.messages.first().map_or(&[], |m| m.as_ref())
    }
}

/// A service's answer: response headers (initial metadata), messages, then
/// trailers (trailing metadata) with `grpc-status` and `grpc-message`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct GrpcReply {
    pub(crate) answer: bool,
    /// The cluster's host refused the connection: the request never reached
    /// a server.
    pub(crate) refused: bool,
    pub(crate) initial_metadata: Vec<(String, String)>,
    pub(crate) messages: Vec<Bytes>,
    pub(crate) trailing_metadata: Vec<(String, String)>,
    pub(crate) status: u32,
    pub(crate) message: String,
}

impl GrpcReply {
    /// Status OK with one message (a unary call's response).
    pub fn ok(message: impl Into<Bytes>) -> Self {
        Self::status(0, "").message(message)
    }

    /// Status `code` with `grpc-message` = `message` (omitted when empty), and
    /// no messages yet.
    pub fn status(code: u32, message: impl Into<String>) -> Self {
        Self {
            answer: true,
            refused: false,
            initial_metadata: Vec::new(),
            messages: Vec::new(),
            trailing_metadata: Vec::new(),
            status: code,
            message: message.into(),
        }
    }

    /// The server never answers: the call ends by its timeout, or when the
    /// plugin cancels it.
    pub fn no_answer() -> Self {
        Self {
            answer: false,
            ..Self::status(0, "")
        }
    }

    /// The cluster's host refuses the connection: nothing reaches a server.
    /// Envoy's gRPC client closes a unary call with UNAVAILABLE (14) and the
    /// router's connect-failure message and details; a stream gets empty
    /// initial metadata, then that reply's headers as trailing metadata, then
    /// the same close (measured in Envoy 1.40).
    ///
    /// Envoy learns of the refusal right after the callback that opened the
    /// call or stream, whether or not the plugin half-closed the stream, and
    /// delivers it to the root context at once: before the opening stream's
    /// next callback (its response, or a body read with its headers), calls
    /// and streams in the order they were made. A plugin that sends on the
    /// stream or closes it (`proxy_grpc_send`, `proxy_grpc_close`) from the
    /// refusal's metadata callbacks resets it: empty trailing metadata come
    /// (again), then a close with INTERNAL (13) and
    /// `upstream_reset_before_response_started`, and once the plugin closed
    /// it, the stream is gone for its host calls. Envoy delivers those
    /// trailing metadata inside that host call; the harness right after the
    /// callback.
    ///
    /// The harness knows a host refuses when a call or stream opens from
    /// the service's [`refuses_connection`](GrpcService::refuses_connection)
    /// (as [`GrpcRefusingHost`]'s). A service that only answers with this
    /// reply is asked once the plugin half-closes the stream, so that
    /// stream closes then, as if the plugin had half-closed it in the
    /// callback that opened it.
    pub fn connection_refused() -> Self {
        Self {
            refused: true,
            ..Self::status(code::UNAVAILABLE, CONNECT_FAILURE_MESSAGE)
        }
    }

    /// Whether this is [`GrpcReply::connection_refused`].
    pub fn refuses_connection(&self) -> bool {
        self.refused
    }

    /// Adds a response message (in order).
    pub fn message(mut self, message: impl Into<Bytes>) -> Self {
        self.messages.push(message.into());
        self
    }

    /// Adds a response header (initial metadata).
    pub fn initial_metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.initial_metadata.push((name.into(), value.into()));
        self
    }

    /// Adds a trailer (trailing metadata), sent before `grpc-status`.
    pub fn trailing_metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.trailing_metadata.push((name.into(), value.into()));
        self
    }

    /// Whether the server answers at all.
    pub fn answers(&self) -> bool {
        self.answer
    }

    /// The messages.
    pub fn messages(&self) -> &[Bytes] {
        &self.messages
    }

    /// The gRPC status code.
    pub fn code(&self) -> u32 {
        self.status
    }

    /// The status message.
    pub fn status_message(&self) -> &str {
        &self.message
    }

    /// The response headers as the server sends them (after `:status: 200`
    /// and `content-type: application/grpc`).
    pub fn headers(&self) -> &[(String, String)] {
        &self.initial_metadata
    }

    /// The trailers as the server sends them: the trailing metadata, then
    /// `grpc-status` and (if not empty) `grpc-message`.
    pub fn trailers(&self) -> Vec<(String, String)> {
        let mut out = self.trailing_metadata.clone();
        out.push(("grpc-status".to_owned(), self.status.to_string()));
        if !self.message.is_empty() {
            out.push(("grpc-message".to_owned(), self.message.clone()));
        }
        out
    }
}

/// A gRPC service: answers each call or stream in full. Any
/// `FnMut(&GrpcRequest) -> GrpcReply` is one.
pub trait GrpcService {
    /// Answers one call (or one stream, with all the messages the plugin sent).
    fn call(&mut self, request: &GrpcRequest) -> GrpcReply;

    /// Whether the cluster's host refuses the connection for `request` (its
    /// metadata, and the message of a unary call; a stream's messages come
    /// later). Asked right after the callback that opened the call or
    /// stream, as Envoy's connection attempt fails then; when it does,
    /// [`call`](Self::call) is not asked and the call or stream closes as
    /// [`GrpcReply::connection_refused`] describes. By default, no.
    fn refuses_connection(&mut self, request: &GrpcRequest) -> bool {
        let _ = request;
        false
    }
}

/// A gRPC cluster whose host refuses every connection, as a static cluster on
/// a loopback port nothing listens on: every call and stream to it closes
/// right after the callback that opened it (see
/// [`GrpcReply::connection_refused`]).
///
/// ```
/// use weir_harness::{GrpcRefusingHost, GrpcRequest, GrpcService};
///
/// let request = GrpcRequest::new(
///     "authz",
///     http::Request::post("http://authz/pkg.Authz/Check").body(Default::default())?,
///     Vec::new(),
/// );
/// assert!(GrpcRefusingHost.refuses_connection(&request));
/// assert!(GrpcRefusingHost.call(&request).refuses_connection());
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcRefusingHost;

impl GrpcService for GrpcRefusingHost {
    fn call(&mut self, _: &GrpcRequest) -> GrpcReply {
        GrpcReply::connection_refused()
    }

    fn refuses_connection(&mut self, _: &GrpcRequest) -> bool {
        true
    }
}

impl<F> GrpcService for F
where
    F: FnMut(&GrpcRequest) -> GrpcReply,
{
    fn call(&mut self, request: &GrpcRequest) -> GrpcReply {
        self(request)
    }
}

/// A cluster's gRPC service: whole answers, or answers while a stream is open.
pub(crate) enum Service {
    Whole(Box<dyn GrpcService>),
    Streaming(Box<dyn GrpcStreamService>),
}

/// The gRPC services plugins can call, by cluster.
#[derive(Default)]
pub(crate) struct GrpcServices {
    services: Vec<(String, Service)>,
    /// The last stream id given to a streaming service.
    last_id: u64,
}

impl GrpcServices {
    /// Adds a cluster answered in whole by `service`.
    pub(crate) fn add(&mut self, cluster: String, service: Box<dyn GrpcService>) {
        self.services.push((cluster, Service::Whole(service)));
    }

    /// Adds a cluster whose streams `service` answers while they are open.
    pub(crate) fn add_streaming(&mut self, cluster: String, service: Box<dyn GrpcStreamService>) {
        self.services.push((cluster, Service::Streaming(service)));
    }

    /// The clusters with a gRPC service.
    pub(crate) fn names(&self) -> Vec<String> {
        self.services.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The clusters whose service answers streams while they are open.
    pub(crate) fn streaming_names(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|(_, s)| matches!(s, Service::Streaming(_)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn find(&mut self, cluster: &str) -> Option<&mut Service> {
        self.services
            .iter_mut()
            .find(|(n, _)| n == cluster)
            .map(|(_, s)| s)
    }

    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Whether `request`'s cluster has a service whose host refuses its
    /// connection.
    fn refuses(&mut self, request: &GrpcRequest) -> bool {
        match self.find(&request.cluster) {
            Some(Service::Whole(service)) => service.refuses_connection(request),
            Some(Service::Streaming(_)) | None => false,
        }
    }

    /// The whole answer to a call, or to a stream the plugin half-closed. A
    /// streaming service sees it open, get its messages and half-close.
    fn ask(&mut self, request: &GrpcRequest) -> GrpcReply {
        if self.refuses(request) {
            return GrpcReply::connection_refused();
        }
        let streaming = matches!(self.find(&request.cluster), Some(Service::Streaming(_)));
        let id = if streaming { self.next_id() } else { 0 };
        match self.find(&request.cluster) {
            Some(Service::Whole(service)) => service.call(request),
            Some(Service::Streaming(service)) => {
                let mut opened = request.clone();
                opened.messages.clear();
                *opened.http.body_mut() = Bytes::new();
                let mut stream = GrpcStream::new(id, opened);
                let mut server = GrpcServerStream::new();
                let mut reply = stream::empty_reply();
                let frames = server.send(service.on_open(&stream));
                stream::record(&mut reply, &frames);
                for message in &request.messages {
                    if server.is_closed() {
                        break;
                    }
                    stream.push(message.clone());
                    let frames = server.send(service.on_message(&stream, message));
                    stream::record(&mut reply, &frames);
                }
                if !server.is_closed() {
                    let frames = server.send(service.on_half_close(&stream));
                    stream::record(&mut reply, &frames);
                }
                reply
            }
            None => {
                tracing::warn!(
                    cluster = %request.cluster,
                    "gRPC to a cluster without a gRPC service (ChainBuilder::grpc_service): \
                     not emulated, closed as UNAVAILABLE"
                );
                GrpcReply::status(code::UNAVAILABLE, "")
            }
        }
    }
}

impl std::fmt::Debug for GrpcServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.services.iter().map(|(n, _)| n))
            .finish()
    }
}

/// A gRPC call or stream a plugin opened that reached its service, and how it
/// ended.
///
/// A stream to a [`GrpcStreamService`] is recorded once it opens at the
/// service and describes the whole exchange so far: the messages the service
/// was told of (in `request`), everything it sent (in `reply`, which
/// [`answers`](GrpcReply::answers) once the service closed the stream). An
/// outcome has it when the stream had traffic during its request; a stream
/// that goes on is recorded again, whole, in the next outcome it has traffic in.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GrpcCallout {
    /// The request as the service received it.
    pub request: GrpcRequest,
    /// The service's answer.
    pub reply: GrpcReply,
    /// The status delivered to the plugin (`proxy_on_grpc_close`, or 0 for a
    /// unary success), if any was.
    pub status: Option<u32>,
    /// Whether the plugin reset the stream (`proxy_grpc_cancel`) and its
    /// streaming service was told.
    pub reset: bool,
}

/// What kind of gRPC token a number is (the low two bits, as Envoy's host
/// numbers callouts: 1 for calls, 2 for streams).
pub(crate) fn is_call(token: u32) -> bool {
    token & 3 == 1
}

pub(crate) fn is_stream(token: u32) -> bool {
    token & 3 == 2
}

/// A unary call in flight.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) request: GrpcRequest,
    /// When it times out (virtual monotonic time); `None`: no timeout.
    pub(crate) deadline: Option<Duration>,
    /// Whether the service was asked (it is, once, right after dispatch).
    pub(crate) asked: bool,
    /// The context that made it (a stream's, or the root's).
    pub(crate) context: u32,
    /// Whether the harness found out if the cluster's host accepts the
    /// connection (right after the callback that made the call).
    pub(crate) connected: bool,
    /// When it was made, among the root's calls and streams.
    pub(crate) seq: u64,
}

/// A stream in flight.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) request: GrpcRequest,
    /// The plugin half-closed it (its messages are complete).
    pub(crate) half_closed: bool,
    /// `proxy_grpc_close` was called.
    pub(crate) local_closed: bool,
    /// The service's answer was delivered up to the close.
    pub(crate) remote_closed: bool,
    pub(crate) asked: bool,
    /// Whether the harness found out if the cluster's host accepts the
    /// connection (it does right after the callback that opened the stream).
    pub(crate) connected: bool,
    /// The host refused the connection: its close is on the way.
    pub(crate) refused: bool,
    /// The plugin sent on it or closed it while the refusal was being
    /// delivered, which reset it (see [`GrpcState::send_on_refused`]).
    pub(crate) reset: bool,
    /// The plugin closed it after that reset: host calls on it answer
    /// `NotFound`, and only its close is still to come.
    pub(crate) dropped: bool,
    /// When it was opened, among the root's calls and streams.
    pub(crate) seq: u64,
    /// The context that opened it (a stream's, or the root's).
    pub(crate) context: u32,
}

/// One event Envoy delivers to the root context for a call or stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    InitialMetadata(u32, Fields),
    Message(u32, Bytes),
    TrailingMetadata(u32, Fields),
    Close(u32, u32, String),
}

impl Event {
    pub(crate) fn token(&self) -> u32 {
        match self {
            Event::InitialMetadata(t, _)
            | Event::Message(t, _)
            | Event::TrailingMetadata(t, _)
            | Event::Close(t, _, _) => *t,
        }
    }
}

/// A VM's gRPC token sequences: one per VM in Envoy, whichever plugin (root
/// context) of the VM opens the call or stream.
#[derive(Debug)]
pub(crate) struct GrpcTokens {
    last_call: u32,
    last_stream: u32,
}

impl Default for GrpcTokens {
    fn default() -> Self {
        Self {
            last_call: 1,
            last_stream: 2,
        }
    }
}

impl GrpcTokens {
    /// The next call token: 5, 9, 13, ...
    pub(crate) fn next_call_token(&mut self) -> u32 {
        self.last_call = self.last_call.wrapping_add(4);
        self.last_call
    }

    /// The next stream token: 6, 10, 14, ...
    pub(crate) fn next_stream_token(&mut self) -> u32 {
        self.last_stream = self.last_stream.wrapping_add(4);
        self.last_stream
    }
}

/// A root context's gRPC calls and streams (Envoy keeps them on the root
/// context).
#[derive(Debug, Default)]
pub(crate) struct GrpcState {
    pub(crate) calls: BTreeMap<u32, Call>,
    pub(crate) streams: BTreeMap<u32, Stream>,
    /// Events to deliver, in order.
    pub(crate) events: VecDeque<Event>,
    /// The message being delivered by `proxy_on_grpc_receive`.
    pub(crate) receive_buffer: Option<Vec<u8>>,
    /// The metadata being delivered by the metadata callbacks.
    pub(crate) initial_metadata: Option<Fields>,
    pub(crate) trailing_metadata: Option<Fields>,
    /// The root context's status (`proxy_get_status`): the code stays after
    /// `on_grpc_close` or a failed HTTP callout, the message is cleared when
    /// the callback returns (as in Envoy).
    pub(crate) status_code: u32,
    pub(crate) status_message: String,
    /// Every call and stream the services were asked, by token, for the outcome.
    pub(crate) log: Vec<(u32, GrpcCallout)>,
    /// The streams to streaming services, by token, while their service or
    /// the plugin still has something to do with them.
    pub(crate) live: BTreeMap<u32, Live>,
    /// The last sequence number given to a call or stream.
    last_seq: u64,
}

impl GrpcState {
    /// Numbers calls and streams in the order they are made.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// The call or stream made first whose connection was not attempted
    /// yet: a call whose service was not asked, or an open stream that
    /// neither connected nor was answered.
    fn next_unconnected(&self) -> Option<u32> {
        let calls = self
            .calls
            .iter()
            .filter(|(_, c)| !c.asked && !c.connected)
            .map(|(&t, c)| (c.seq, t));
        let streams = self
            .streams
            .iter()
            .filter(|(_, s)| !s.connected && !s.asked && !s.half_closed)
            .map(|(&t, s)| (s.seq, t));
        calls.chain(streams).min().map(|(_, t)| t)
    }

    /// The plugin sent on stream `token` (`proxy_grpc_send`, with or without
    /// end of stream) or closed it (`proxy_grpc_close`) while its host's
    /// refusal was being delivered: after its initial metadata, before its
    /// close. Envoy's gRPC client then resets the stream: it delivers empty
    /// trailing metadata (again, if the refusal's were delivered already),
    /// and the close comes with INTERNAL and
    /// `upstream_reset_before_response_started` (measured in Envoy 1.40,
    /// which delivers that trailing metadata inside the plugin's host call;
    /// the harness does after the callback). Returns whether the stream was
    /// reset, by this call or before.
    pub(crate) fn send_on_refused(&mut self, token: u32) -> bool {
        let Some(stream) = self.streams.get_mut(&token) else {
            return false;
        };
        if !stream.refused || stream.remote_closed {
            return false;
        }
        if stream.reset {
            return true;
        }
        let first = self.events.iter().position(|e| e.token() == token);
        let initial_pending =
            first.is_some_and(|at| matches!(self.events.get(at), Some(Event::InitialMetadata(..))));
        let Some(at) = first.filter(|_| !initial_pending) else {
            return false;
        };
        stream.reset = true;
        self.events.retain(|e| e.token() != token);
        for (i, event) in reset_events(token).into_iter().enumerate() {
            self.events.insert((at + i).min(self.events.len()), event);
        }
        if let Some((_, entry)) = self.log.iter_mut().rev().find(|(t, _)| *t == token) {
            entry.reset = true;
        }
        true
    }

    /// The earliest deadline of a call still waiting for its answer.
    pub(crate) fn next_deadline(&self) -> Option<Duration> {
        self.calls.values().filter_map(|c| c.deadline).min()
    }

    /// Records how a call or stream ended (for the outcome).
    pub(crate) fn record_status(&mut self, token: u32, status: u32) {
        if let Some(live) = self.live.get_mut(&token) {
            live.status.get_or_insert(status);
            self.sync(token);
        } else if let Some((_, entry)) = self.log.iter_mut().rev().find(|(t, _)| *t == token) {
            entry.status.get_or_insert(status);
        }
    }

    /// Forgets a call or stream: nothing more is delivered for it.
    pub(crate) fn forget(&mut self, token: u32) {
        self.calls.remove(&token);
        self.streams.remove(&token);
        self.events.retain(|e| e.token() != token);
        self.prune(token);
    }

    /// The plugin reset a stream (`proxy_grpc_cancel`): nothing more is
    /// delivered for it, and a streaming service hears of the reset after
    /// what the plugin sent before.
    pub(crate) fn reset(&mut self, token: u32) {
        if let Some(live) = self.live.get_mut(&token) {
            live.push(Inbound::Reset);
        }
        self.forget(token);
    }

    /// Queues what the plugin did to stream `token` for its streaming
    /// service, if it has one.
    pub(crate) fn tell(&mut self, token: u32, inbound: Inbound) {
        if let Some(live) = self.live.get_mut(&token) {
            live.push(inbound);
        }
    }

    /// Drops a streaming service's stream once neither side has anything
    /// left to do with it.
    fn prune(&mut self, token: u32) {
        let finished = self
            .live
            .get(&token)
            .is_some_and(|l| l.done && l.pending.is_empty() && !self.streams.contains_key(&token));
        if finished {
            self.live.remove(&token);
        }
    }

    /// Puts the exchange of streaming stream `token` in the log: over its
    /// entry if the log still has one, else as a new one.
    fn sync(&mut self, token: u32) {
        let Some(live) = self.live.get(&token) else {
            return;
        };
        let callout = live.callout();
        match self.log.iter_mut().rev().find(|(t, _)| *t == token) {
            Some((_, entry)) => *entry = callout,
            None => self.log.push((token, callout)),
        }
    }

    /// Whether the VM has no gRPC call or stream open and nothing to deliver.
    pub(crate) fn is_idle(&self) -> bool {
        self.events.is_empty()
            && self.calls.is_empty()
            && self.streams.is_empty()
            && self.live.is_empty()
    }

    /// Whether there is gRPC work to do without the clock moving: an event to
    /// deliver, a call (or half-closed stream) whose service was not asked, or
    /// something to tell a streaming service.
    pub(crate) fn has_work(&self) -> bool {
        if self.is_idle() {
            return false;
        }
        !self.events.is_empty()
            || self.calls.values().any(|c| !c.asked)
            || self
                .streams
                .values()
                .any(|s| !s.asked && (s.half_closed || !s.connected))
            || self.live.values().any(|l| !l.pending.is_empty())
    }

    /// Whether a call or stream that `context` made is still open: its answer
    /// (or more of it) may still come.
    pub(crate) fn open_for(&self, context: u32) -> bool {
        self.calls.values().any(|c| c.context == context)
            || self
                .streams
                .values()
                .any(|s| s.context == context && !s.remote_closed)
            || self.live.values().any(|l| l.context == context)
    }

    /// The context that made the call or stream the next unit of work is for.
    pub(crate) fn next_work_context(&self) -> Option<u32> {
        if let Some(event) = self.events.front() {
            let token = event.token();
            return self
                .calls
                .get(&token)
                .map(|c| c.context)
                .or_else(|| self.streams.get(&token).map(|s| s.context))
                .or_else(|| self.live.get(&token).map(|l| l.context));
        }
        self.calls
            .values()
            .find(|c| !c.asked)
            .map(|c| c.context)
            .or_else(|| {
                self.streams
                    .values()
                    .find(|s| !s.asked && (s.half_closed || !s.connected))
                    .map(|s| s.context)
            })
            .or_else(|| {
                self.live
                    .values()
                    .find(|l| !l.pending.is_empty())
                    .map(|l| l.context)
            })
    }

    /// One unit of service work, in Envoy's order: the next call (or
    /// half-closed stream) whose service has not been asked, else the next
    /// thing to tell a streaming service. Its answers are queued as events.
    /// `false` when there is nothing to do.
    ///
    /// A stream still open whose connection was not attempted yet is
    /// attempted first, with calls not asked yet, in the order they were
    /// made: if the host refuses one, that is the unit of work (it closes
    /// as [`GrpcReply::connection_refused`] describes); if not, a stream
    /// waits for its half-close, a call is asked in the usual order.
    pub(crate) fn work(&mut self, services: &mut GrpcServices) -> bool {
        while let Some(token) = self.next_unconnected() {
            let refused = if let Some(call) = self.calls.get_mut(&token) {
                call.connected = true;
                if !services.refuses(&call.request) {
                    // Asked below, in the usual order.
                    continue;
                }
                call.asked = true;
                call.deadline = None;
                call.request.clone()
            } else if let Some(stream) = self.streams.get_mut(&token) {
                stream.connected = true;
                if !services.refuses(&stream.request) {
                    continue;
                }
                stream.asked = true;
                stream.refused = true;
                *stream.request.http.body_mut() = frame(&stream.request.messages);
                stream.request.clone()
            } else {
                break;
            };
            let reply = GrpcReply::connection_refused();
            self.events.extend(events_for(token, &reply));
            self.log.push((
                token,
                GrpcCallout {
                    request: refused,
                    reply,
                    status: None,
                    reset: false,
                },
            ));
            return true;
        }
        let call = self.calls.iter_mut().find(|(_, c)| !c.asked);
        let (token, request) = if let Some((&token, call)) = call {
            call.asked = true;
            (token, call.request.clone())
        } else if let Some((&token, stream)) = self
            .streams
            .iter_mut()
            .find(|(_, s)| s.half_closed && !s.asked)
        {
            stream.asked = true;
            stream.connected = true;
            *stream.request.http.body_mut() = frame(&stream.request.messages);
            (token, stream.request.clone())
        } else {
            let Some((&token, _)) = self.live.iter().find(|(_, l)| !l.pending.is_empty()) else {
                return false;
            };
            self.step_live(token, services);
            return true;
        };
        let reply = services.ask(&request);
        if reply.answers() {
            self.events.extend(events_for(token, &reply));
            if let Some(call) = self.calls.get_mut(&token) {
                call.deadline = None;
            }
        }
        self.log.push((
            token,
            GrpcCallout {
                request,
                reply,
                status: None,
                reset: false,
            },
        ));
        true
    }

    /// One unit of [`work`](Self::work) for a VM that failed: Envoy sent
    /// the requests of the calls and streams the plugin made before the
    /// failure, so their services see them (a streaming service is told what
    /// the plugin did), but nothing reaches the plugin any more. `false` when
    /// there is nothing to do.
    pub(crate) fn work_after_failure(&mut self, services: &mut GrpcServices) -> bool {
        self.events.clear();
        let worked = self.work(services);
        self.events.clear();
        worked
    }

    /// Tells stream `token`'s streaming service the next thing the plugin
    /// did, and queues what it sends back (unless the plugin reset the stream).
    fn step_live(&mut self, token: u32, services: &mut GrpcServices) {
        let Some(live) = self.live.get_mut(&token) else {
            return;
        };
        let Some(inbound) = live.pending.pop_front() else {
            return;
        };
        if inbound == Inbound::Open {
            live.stream.id = services.next_id();
        }
        // Streams are only live to a streaming service's cluster.
        let Some(Service::Streaming(service)) = services.find(&live.stream.request.cluster) else {
            live.pending.clear();
            live.done = true;
            self.prune(token);
            return;
        };
        let reply = match inbound {
            Inbound::Open => service.on_open(&live.stream),
            Inbound::Message(message) => {
                live.stream.push(message.clone());
                service.on_message(&live.stream, &message)
            }
            Inbound::HalfClose => service.on_half_close(&live.stream),
            Inbound::Reset => {
                service.on_reset(&live.stream);
                live.reset = true;
                live.done = true;
                live.pending.clear();
                GrpcStreamReply::new()
            }
        };
        let frames = live.server.send(reply);
        stream::record(&mut live.reply, &frames);
        if live.server.is_closed() {
            // The service is done: what the plugin does next goes nowhere.
            live.done = true;
            live.pending.clear();
        }
        if let Some(plugin_side) = self.streams.get(&token) {
            let complete = plugin_side.half_closed;
            self.events.extend(stream::events(token, &frames, complete));
        }
        self.sync(token);
        self.prune(token);
    }
}

/// Frames gRPC messages as on the wire: a zero flag byte, a big-endian u32
/// length, the message.
pub(crate) fn frame(messages: &[Bytes]) -> Bytes {
    let mut out = Vec::new();
    for m in messages {
        out.push(0);
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    Bytes::from(out)
}

/// The response headers Envoy's gRPC client reports as a stream's initial
/// metadata: the server's, then the router's timing header when the request
/// was `complete` (half-closed) before them.
pub(crate) fn response_headers(metadata: &[(String, String)], complete: bool) -> Fields {
    let mut initial = Fields::new(crate::fields::Kind::Response);
    initial.add(b":status", b"200");
    initial.add(b"content-type", b"application/grpc");
    for (k, v) in metadata {
        initial.add(k.to_ascii_lowercase().as_bytes(), v.as_bytes());
    }
    if complete {
        initial.add(b"x-envoy-upstream-service-time", b"0");
    }
    initial
}

/// The rest of the events for stream `token` once Envoy's gRPC client reset
/// it while delivering a refusal (see [`GrpcState::send_on_refused`]): empty
/// trailing metadata and a close with INTERNAL and the stream's response code
/// details.
fn reset_events(token: u32) -> Vec<Event> {
    vec![
        Event::TrailingMetadata(token, Fields::new(crate::fields::Kind::Plain)),
        Event::Close(token, RESET_STATUS, RESET_MESSAGE.to_owned()),
    ]
}

/// Turns a service's reply into the events Envoy's gRPC client delivers: for a
/// stream, initial metadata, each message, trailing metadata, close; for a
/// unary call only the last message (on success) or the close (on failure).
pub(crate) fn events_for(token: u32, reply: &GrpcReply) -> Vec<Event> {
    let status = reply.status;
    // Nothing reached a server: the router's local reply, a gRPC
    // trailers-only response, closes the call. A stream is told of it as
    // empty initial metadata, then the reply's headers as trailing metadata
    // (measured in Envoy 1.40).
    if reply.refused {
        let close = Event::Close(
            token,
            status,
            enhanced(&reply.message, CONNECT_FAILURE_DETAILS),
        );
        if is_call(token) {
            return vec![close];
        }
        let mut trailing = Fields::new(crate::fields::Kind::Plain);
        trailing.add(b":status", b"200");
        trailing.add(b"content-type", b"application/grpc");
        trailing.add(b"grpc-status", status.to_string().as_bytes());
        trailing.add(b"grpc-message", reply.message.as_bytes());
        return vec![
            Event::InitialMetadata(token, Fields::new(crate::fields::Kind::Response)),
            Event::TrailingMetadata(token, trailing),
            close,
        ];
    }
    if is_call(token) {
        return match reply.messages.last() {
            _ if status != 0 => vec![Event::Close(
                token,
                status,
                enhanced(&reply.message, "via_upstream"),
            )],
            Some(m) => vec![Event::Message(token, m.clone())],
            // A unary call closed OK without a message fails as Internal.
            None => vec![Event::Close(token, code::INTERNAL, String::new())],
        };
    }
    // Answered in whole once the plugin half-closed: the request is complete.
    let initial = response_headers(&reply.initial_metadata, true);
    let mut trailing = Fields::new(crate::fields::Kind::Plain);
    for (k, v) in reply.trailers() {
        trailing.add(k.to_ascii_lowercase().as_bytes(), v.as_bytes());
    }
    let mut events = vec![Event::InitialMetadata(token, initial)];
    events.extend(
        reply
            .messages
            .iter()
            .map(|m| Event::Message(token, m.clone())),
    );
    events.push(Event::TrailingMetadata(token, trailing));
    events.push(Event::Close(
        token,
        status,
        enhanced(&reply.message, "via_upstream"),
    ));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_envoys_numbering() {
        let mut s = GrpcTokens::default();
        assert_eq!((s.next_call_token(), s.next_call_token()), (5, 9));
        assert_eq!((s.next_stream_token(), s.next_stream_token()), (6, 10));
        assert!(is_call(5) && !is_stream(5) && is_stream(6) && !is_call(4));
    }

    #[test]
    fn messages_are_length_prefixed() {
        let framed = frame(&[Bytes::from_static(b"ab"), Bytes::new()]);
        assert_eq!(&framed[..], &[0, 0, 0, 0, 2, b'a', b'b', 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_refused_connection_closes_with_the_routers_reply() {
        let refused = GrpcReply::connection_refused();
        assert!(refused.refuses_connection() && refused.answers());
        let message = "upstream connect error or disconnect/reset before headers. reset \
                       reason: remote connection failure{upstream_reset_before_response_started\
                       {remote_connection_failure|delayed_connect_error:_Connection_refused}}";
        assert_eq!(
            events_for(5, &refused),
            [Event::Close(5, code::UNAVAILABLE, message.to_owned())]
        );
        let stream = events_for(6, &refused);
        let [
            Event::InitialMetadata(6, initial),
            Event::TrailingMetadata(6, trailing),
            Event::Close(6, 14, _),
        ] = stream.as_slice()
        else {
            panic!("{stream:?}");
        };
        assert_eq!(initial.len(), 0);
        assert_eq!(trailing.get(b"grpc-status"), Some(&b"14"[..]));
        assert_eq!(trailing.len(), 4);
    }

    fn request(cluster: &str) -> GrpcRequest {
        let http = http::Request::post(format!("http://{cluster}/pkg.S/M"))
            .body(Bytes::new())
            .expect("request");
        GrpcRequest::new(cluster, http, Vec::new())
    }

    fn open_stream(state: &mut GrpcState, token: u32, cluster: &str) {
        let seq = state.next_seq();
        state.streams.insert(
            token,
            Stream {
                request: request(cluster),
                half_closed: false,
                local_closed: false,
                remote_closed: false,
                asked: false,
                connected: false,
                refused: false,
                reset: false,
                dropped: false,
                context: 2,
                seq,
            },
        );
    }

    fn make_call(state: &mut GrpcState, token: u32, cluster: &str) {
        let seq = state.next_seq();
        state.calls.insert(
            token,
            Call {
                request: request(cluster),
                deadline: None,
                asked: false,
                connected: false,
                context: 2,
                seq,
            },
        );
    }

    fn services() -> GrpcServices {
        let mut services = GrpcServices::default();
        services.add("down".to_owned(), Box::new(GrpcRefusingHost));
        services.add(
            "up".to_owned(),
            Box::new(|_: &GrpcRequest| GrpcReply::ok("fine")),
        );
        services
    }

    fn closes(state: &GrpcState) -> Vec<(u32, u32)> {
        state
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Close(t, s, _) => Some((*t, *s)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_open_stream_to_a_refusing_host_closes_without_a_half_close() {
        let mut state = GrpcState::default();
        let mut services = services();
        open_stream(&mut state, 6, "down");
        assert!(state.has_work());
        assert_eq!(state.next_work_context(), Some(2));
        assert!(state.work(&mut services));
        let events: Vec<_> = state.events.iter().cloned().collect();
        assert_eq!(events, events_for(6, &GrpcReply::connection_refused()));
        assert!(state.streams[&6].refused && state.streams[&6].asked);
        assert!(state.log[0].1.reply.refuses_connection());
        // Nothing more to do until the events are delivered.
        state.events.clear();
        assert!(!state.has_work());
    }

    #[test]
    fn an_open_stream_to_an_accepting_host_waits_for_its_half_close() {
        let mut state = GrpcState::default();
        let mut services = services();
        open_stream(&mut state, 6, "up");
        assert!(state.has_work());
        assert!(!state.work(&mut services));
        assert!(state.streams[&6].connected && !state.streams[&6].asked);
        assert!(!state.has_work() && state.events.is_empty() && state.log.is_empty());
    }

    #[test]
    fn refusals_come_in_the_order_calls_and_streams_were_made() {
        let mut state = GrpcState::default();
        let mut services = services();
        open_stream(&mut state, 6, "down");
        make_call(&mut state, 5, "down");
        open_stream(&mut state, 10, "up");
        open_stream(&mut state, 14, "down");
        while state.work(&mut services) {}
        assert_eq!(closes(&state), [(6, 14), (5, 14), (14, 14)]);
    }

    #[test]
    fn a_send_while_the_refusal_is_delivered_resets_the_stream() {
        let mut state = GrpcState::default();
        let mut services = services();
        open_stream(&mut state, 6, "down");
        state.work(&mut services);
        // Before the initial metadata is delivered, nothing changes.
        assert!(!state.send_on_refused(6));
        // Delivering it (the plugin's callback runs now).
        let initial = state.events.pop_front();
        assert!(matches!(initial, Some(Event::InitialMetadata(6, _))));
        assert!(state.send_on_refused(6));
        assert!(state.send_on_refused(6));
        let events: Vec<_> = state.events.iter().cloned().collect();
        assert_eq!(
            events,
            [
                Event::TrailingMetadata(6, Fields::new(crate::fields::Kind::Plain)),
                Event::Close(6, 13, "upstream_reset_before_response_started".to_owned()),
            ]
        );
        assert!(state.log[0].1.reset);
        // Once the close is delivered, sends go nowhere.
        state.streams.get_mut(&6).expect("open").remote_closed = true;
        assert!(!state.send_on_refused(6));
    }

    #[test]
    fn a_unary_call_sees_only_the_last_message_or_the_close() {
        let ok = GrpcReply::ok("a").message("b");
        assert_eq!(events_for(5, &ok), [Event::Message(5, Bytes::from("b"))]);
        let empty = GrpcReply::status(0, "");
        assert_eq!(
            events_for(5, &empty),
            [Event::Close(5, code::INTERNAL, String::new())]
        );
        let failed = GrpcReply::status(7, "no").message("ignored");
        assert_eq!(
            events_for(5, &failed),
            [Event::Close(5, 7, "no{via_upstream}".to_owned())]
        );
    }

    #[test]
    fn a_stream_sees_metadata_messages_and_the_close() {
        let reply = GrpcReply::status(0, "")
            .initial_metadata("X-A", "1")
            .message("m")
            .trailing_metadata("x-t", "2");
        let events = events_for(6, &reply);
        assert_eq!(events.len(), 4);
        assert!(matches!(&events[0], Event::InitialMetadata(6, f) if f.get(b"x-a") == Some(b"1")));
        assert!(
            matches!(&events[2], Event::TrailingMetadata(6, f) if f.get(b"grpc-status") == Some(b"0"))
        );
        assert_eq!(events[3], Event::Close(6, 0, "via_upstream".to_owned()));
    }
}
