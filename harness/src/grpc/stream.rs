//! gRPC streams answered while they are open: a [`GrpcStreamService`] is told
//! when a stream opens, of each message the plugin sends, of the half-close
//! and of a reset, and may answer at each of these points with a
//! [`GrpcStreamReply`] (initial metadata, messages, and the trailing metadata
//! with the status that closes the stream). [`GrpcServerStream`] turns those
//! replies into what goes on the wire, in order, as a gRPC server sends it;
//! the harness delivers each frame to the plugin as Envoy's gRPC client does.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{GrpcReply, GrpcRequest, enhanced};
use crate::fields::{Fields, Kind};

/// One stream as its [`GrpcStreamService`] sees it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GrpcStream {
    /// Numbers the streams of a chain's services, from 1, in the order they
    /// open (a unary call to a streaming service is a stream too).
    pub id: u64,
    /// The request so far: the metadata as the upstream receives it and the
    /// messages the service was told of (the body is those messages, framed).
    pub request: GrpcRequest,
}

impl GrpcStream {
    /// Stream `id` with `request` (the messages received so far).
    pub fn new(id: u64, request: GrpcRequest) -> Self {
        Self { id, request }
    }

    /// The messages received so far, unframed.
    pub fn messages(&self) -> &[Bytes] {
        &self.request.messages
    }

    /// A request metadata value (a request header), if present and text.
    pub fn metadata(&self, name: &str) -> Option<&str> {
        self.request.http.headers().get(name)?.to_str().ok()
    }

    /// Adds a message the plugin sent (the body follows).
    pub(crate) fn push(&mut self, message: Bytes) {
        self.request.messages.push(message);
        *self.request.http.body_mut() = super::frame(&self.request.messages);
    }
}

/// What a streaming service sends at one point of a stream: any of the
/// response headers (initial metadata), messages, and the close (trailing
/// metadata, `grpc-status` and `grpc-message`), in that order. An empty reply
/// sends nothing.
///
/// The response headers go out once, before the first message or with
/// [`GrpcStreamReply::headers`]; a close before any header is sent as a
/// trailers-only response (one header block with the status), as gRPC
/// servers answer a call they refuse.
///
/// ```
/// use weir_harness::GrpcStreamReply;
///
/// let reply = GrpcStreamReply::new()
///     .initial_metadata("x-served-by", "a")
///     .message("first update")
///     .close(0, "");
/// assert_eq!(reply.messages().len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct GrpcStreamReply {
    headers: bool,
    initial_metadata: Vec<(String, String)>,
    messages: Vec<Bytes>,
    trailing_metadata: Vec<(String, String)>,
    close: Option<(u32, String)>,
}

impl GrpcStreamReply {
    /// Sends nothing (yet): add to it with the other methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends the response headers now, even without metadata or a message
    /// (they are sent once; later replies need not ask again).
    pub fn headers(mut self) -> Self {
        self.headers = true;
        self
    }

    /// Adds a response header (initial metadata); sends the headers. Only the
    /// stream's first headers carry metadata: added once they were sent, it is
    /// dropped with a warning.
    pub fn initial_metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.initial_metadata.push((name.into(), value.into()));
        self
    }

    /// Adds a message (in order), after the headers.
    pub fn message(mut self, message: impl Into<Bytes>) -> Self {
        self.messages.push(message.into());
        self
    }

    /// Adds trailing metadata, sent with the close (without a close it is
    /// dropped with a warning).
    pub fn trailing_metadata(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.trailing_metadata.push((name.into(), value.into()));
        self
    }

    /// Closes the stream with status `code` and `grpc-message` = `message`
    /// (omitted when empty), after this reply's messages. Nothing is sent
    /// after it.
    pub fn close(mut self, code: u32, message: impl Into<String>) -> Self {
        self.close = Some((code, message.into()));
        self
    }

    /// Whether it sends nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The messages.
    pub fn messages(&self) -> &[Bytes] {
        &self.messages
    }

    /// The status and status message it closes the stream with, if it does.
    pub fn closes(&self) -> Option<(u32, &str)> {
        self.close.as_ref().map(|(c, m)| (*c, m.as_str()))
    }
}

/// A gRPC service that answers streams while they are open, given with
/// [`ChainBuilder::grpc_stream_service`](crate::ChainBuilder::grpc_stream_service).
/// Each method is told one thing the plugin did, in the order it did them,
/// and returns what the server sends then; the harness delivers it to the
/// plugin's root context as Envoy's gRPC client does, each frame as its own
/// event after the plugin's callback that caused it.
///
/// Any `FnMut(&GrpcStream, &Bytes) -> GrpcStreamReply` is one (it answers each
/// message; the defaults do the rest). A unary call (`proxy_grpc_call`) to a
/// streaming service is a stream that opens, sends its one message and
/// half-closes; Envoy delivers only its last message, or the status when it
/// is not OK.
///
/// ```
/// use bytes::Bytes;
/// use weir_harness::{GrpcStream, GrpcStreamReply, GrpcStreamService};
///
/// /// Answers every message with a count, and says goodbye once the plugin
/// /// half-closes.
/// #[derive(Default)]
/// struct Counter(u32);
///
/// impl GrpcStreamService for Counter {
///     fn on_open(&mut self, _: &GrpcStream) -> GrpcStreamReply {
///         GrpcStreamReply::new().initial_metadata("x-counter", "1")
///     }
///     fn on_message(&mut self, _: &GrpcStream, _: &Bytes) -> GrpcStreamReply {
///         self.0 += 1;
///         GrpcStreamReply::new().message(self.0.to_string())
///     }
///     fn on_half_close(&mut self, _: &GrpcStream) -> GrpcStreamReply {
///         GrpcStreamReply::new().message("bye").close(0, "")
///     }
/// }
/// ```
pub trait GrpcStreamService {
    /// The plugin opened `stream` (its request metadata is there, no message
    /// yet). By default, nothing is sent.
    fn on_open(&mut self, stream: &GrpcStream) -> GrpcStreamReply {
        let _ = stream;
        GrpcStreamReply::new()
    }

    /// The plugin sent `message` (already the last of `stream.messages()`).
    fn on_message(&mut self, stream: &GrpcStream, message: &Bytes) -> GrpcStreamReply;

    /// The plugin half-closed the stream (`proxy_grpc_send` with end of
    /// stream, or `proxy_grpc_close`): no more messages come. By default the
    /// stream closes with status OK, as a handler that returns.
    fn on_half_close(&mut self, stream: &GrpcStream) -> GrpcStreamReply {
        let _ = stream;
        GrpcStreamReply::new().close(0, "")
    }

    /// The plugin reset the stream (`proxy_grpc_cancel`): nothing more can be
    /// sent. Not called once the service closed the stream.
    fn on_reset(&mut self, stream: &GrpcStream) {
        let _ = stream;
    }
}

impl<F> GrpcStreamService for F
where
    F: FnMut(&GrpcStream, &Bytes) -> GrpcStreamReply,
{
    fn on_message(&mut self, stream: &GrpcStream, message: &Bytes) -> GrpcStreamReply {
        self(stream, message)
    }
}

/// One thing a gRPC server puts on the wire for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GrpcFrame {
    /// The response headers (`:status: 200`, `content-type:
    /// application/grpc`, then this initial metadata).
    Headers(Vec<(String, String)>),
    /// A length-prefixed message.
    Message(Bytes),
    /// The trailers that close the stream: the trailing metadata, then
    /// `grpc-status` and (if not empty) `grpc-message`.
    Trailers(Vec<(String, String)>),
    /// A trailers-only response: one header block, with end of stream,
    /// carrying `:status: 200`, `content-type: application/grpc` and these
    /// trailers.
    TrailersOnly(Vec<(String, String)>),
}

/// The server's side of one stream: turns each [`GrpcStreamReply`] into the
/// frames a gRPC server sends, in order (the response headers once, before the
/// first message; a close before any header as a trailers-only response;
/// nothing after the close). The harness and a real server can share it.
#[derive(Debug, Clone, Default)]
pub struct GrpcServerStream {
    headers_sent: bool,
    closed: bool,
}

impl GrpcServerStream {
    /// A stream nothing was sent on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the server closed the stream.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The frames `reply` puts on the wire. What does not fit (anything after
    /// the close, initial metadata after the headers, trailing metadata
    /// without a close) is dropped with a warning.
    pub fn send(&mut self, reply: GrpcStreamReply) -> Vec<GrpcFrame> {
        if self.closed {
            if !reply.is_empty() {
                tracing::warn!("a gRPC stream's service answered after closing it; dropped");
            }
            return Vec::new();
        }
        let mut frames = Vec::new();
        let wants_headers =
            reply.headers || !reply.initial_metadata.is_empty() || !reply.messages.is_empty();
        if wants_headers && !self.headers_sent {
            self.headers_sent = true;
            frames.push(GrpcFrame::Headers(reply.initial_metadata));
        } else if !reply.initial_metadata.is_empty() {
            tracing::warn!(
                "initial metadata after a gRPC stream's response headers were sent; dropped"
            );
        }
        frames.extend(reply.messages.into_iter().map(GrpcFrame::Message));
        match reply.close {
            Some((code, message)) => {
                let mut trailers = reply.trailing_metadata;
                trailers.push(("grpc-status".to_owned(), code.to_string()));
                if !message.is_empty() {
                    trailers.push(("grpc-message".to_owned(), message));
                }
                self.closed = true;
                frames.push(if self.headers_sent {
                    GrpcFrame::Trailers(trailers)
                } else {
                    GrpcFrame::TrailersOnly(trailers)
                });
            }
            None if !reply.trailing_metadata.is_empty() => {
                tracing::warn!("trailing metadata without a close of the gRPC stream; dropped");
            }
            None => {}
        }
        frames
    }
}

/// Adds what `frames` sent to `reply`, the record of a whole exchange.
pub(crate) fn record(reply: &mut GrpcReply, frames: &[GrpcFrame]) {
    for frame in frames {
        match frame {
            GrpcFrame::Headers(metadata) => reply.initial_metadata.extend(metadata.iter().cloned()),
            GrpcFrame::Message(m) => reply.messages.push(m.clone()),
            GrpcFrame::Trailers(trailers) | GrpcFrame::TrailersOnly(trailers) => {
                reply.answer = true;
                for (k, v) in trailers {
                    match k.as_str() {
                        "grpc-status" => reply.status = v.parse().unwrap_or(2),
                        "grpc-message" => reply.message.clone_from(v),
                        _ => reply.trailing_metadata.push((k.clone(), v.clone())),
                    }
                }
            }
        }
    }
}

/// The record of an exchange that has not answered yet.
pub(crate) fn empty_reply() -> GrpcReply {
    GrpcReply::no_answer()
}

/// The events Envoy's gRPC client delivers to the plugin for `frames` of
/// stream `token`. `complete`: the plugin had half-closed the stream, so the
/// router adds its timing header to the response headers (it measures from
/// the end of the request, and adds nothing before it).
pub(crate) fn events(token: u32, frames: &[GrpcFrame], complete: bool) -> Vec<super::Event> {
    use super::Event;
    let mut out = Vec::new();
    let close = |out: &mut Vec<Event>, trailers: &[(String, String)], fields: Fields| {
        let status = trailers
            .iter()
            .find(|(k, _)| k == "grpc-status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(2);
        let message = trailers
            .iter()
            .find(|(k, _)| k == "grpc-message")
            .map_or("", |(_, v)| v.as_str());
        out.push(Event::TrailingMetadata(token, fields));
        out.push(Event::Close(
            token,
            status,
            enhanced(message, "via_upstream"),
        ));
    };
    for frame in frames {
        match frame {
            GrpcFrame::Headers(metadata) => {
                out.push(Event::InitialMetadata(
                    token,
                    super::response_headers(metadata, complete),
                ));
            }
            GrpcFrame::Message(m) => out.push(Event::Message(token, m.clone())),
            GrpcFrame::Trailers(trailers) => {
                let mut fields = Fields::new(Kind::Plain);
                for (k, v) in trailers {
                    fields.add(k.to_ascii_lowercase().as_bytes(), v.as_bytes());
                }
                close(&mut out, trailers, fields);
            }
            GrpcFrame::TrailersOnly(trailers) => {
                // Envoy's client reports empty initial metadata, then the one
                // header block (with the router's additions) as the trailers.
                out.push(Event::InitialMetadata(token, Fields::new(Kind::Response)));
                let mut fields = Fields::new(Kind::Plain);
                fields.add(b":status", b"200");
                fields.add(b"content-type", b"application/grpc");
                for (k, v) in trailers {
                    fields.add(k.to_ascii_lowercase().as_bytes(), v.as_bytes());
                }
                if complete {
                    fields.add(b"x-envoy-upstream-service-time", b"0");
                }
                close(&mut out, trailers, fields);
            }
        }
    }
    out
}

/// What the plugin did to a stream, not yet told to its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    Open,
    Message(Bytes),
    HalfClose,
    Reset,
}

/// A stream to a streaming service: what its service was told and sent.
#[derive(Debug)]
pub(crate) struct Live {
    /// The context that opened it (a stream's, or the root's).
    pub(crate) context: u32,
    /// What the plugin did that the service was not told yet, in order.
    pub(crate) pending: VecDeque<Inbound>,
    pub(crate) stream: GrpcStream,
    pub(crate) server: GrpcServerStream,
    /// The exchange so far, for the outcome.
    pub(crate) reply: GrpcReply,
    pub(crate) status: Option<u32>,
    pub(crate) reset: bool,
    /// The service will not be told anything more (it closed the stream, or
    /// heard of the reset).
    pub(crate) done: bool,
}

impl Live {
    pub(crate) fn new(context: u32, request: GrpcRequest) -> Self {
        Self {
            context,
            pending: VecDeque::from([Inbound::Open]),
            stream: GrpcStream::new(0, request),
            server: GrpcServerStream::new(),
            reply: empty_reply(),
            status: None,
            reset: false,
            done: false,
        }
    }

    /// Queues what the plugin did, unless the service is done with the stream.
    pub(crate) fn push(&mut self, inbound: Inbound) {
        if self.done {
            tracing::debug!(
                id = self.stream.id,
                "the gRPC stream's service closed it; {inbound:?} goes nowhere"
            );
        } else {
            self.pending.push_back(inbound);
        }
    }

    /// The record of the exchange so far.
    pub(crate) fn callout(&self) -> super::GrpcCallout {
        super::GrpcCallout {
            request: self.stream.request.clone(),
            reply: self.reply.clone(),
            status: self.status,
            reset: self.reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Event;

    #[test]
    fn headers_go_once_before_the_first_message() {
        let mut s = GrpcServerStream::new();
        assert_eq!(s.send(GrpcStreamReply::new()), []);
        let first = s.send(
            GrpcStreamReply::new()
                .initial_metadata("a", "1")
                .message("m"),
        );
        assert_eq!(
            first,
            [
                GrpcFrame::Headers(vec![("a".into(), "1".into())]),
                GrpcFrame::Message(Bytes::from("m"))
            ]
        );
        let second = s.send(
            GrpcStreamReply::new()
                .initial_metadata("late", "x")
                .message("n"),
        );
        assert_eq!(second, [GrpcFrame::Message(Bytes::from("n"))]);
        let close = s.send(
            GrpcStreamReply::new()
                .trailing_metadata("t", "2")
                .close(5, "gone"),
        );
        assert_eq!(
            close,
            [GrpcFrame::Trailers(vec![
                ("t".into(), "2".into()),
                ("grpc-status".into(), "5".into()),
                ("grpc-message".into(), "gone".into())
            ])]
        );
        assert!(s.is_closed());
        assert_eq!(s.send(GrpcStreamReply::new().message("after")), []);
    }

    #[test]
    fn a_close_before_any_header_is_trailers_only() {
        let mut s = GrpcServerStream::new();
        let frames = s.send(GrpcStreamReply::new().close(7, "no"));
        assert_eq!(
            frames,
            [GrpcFrame::TrailersOnly(vec![
                ("grpc-status".into(), "7".into()),
                ("grpc-message".into(), "no".into())
            ])]
        );
        let events = events(6, &frames, true);
        assert!(matches!(&events[0], Event::InitialMetadata(6, f) if f.len() == 0));
        assert!(
            matches!(&events[1], Event::TrailingMetadata(6, f) if f.get(b":status") == Some(b"200") && f.get(b"grpc-status") == Some(b"7"))
        );
        assert_eq!(events[2], Event::Close(6, 7, "no{via_upstream}".to_owned()));
        // The router's timing header comes only after a complete request.
        let timed = |complete| {
            super::events(6, &frames, complete)
                .iter()
                .any(|e| matches!(e, Event::TrailingMetadata(_, f) if f.get(b"x-envoy-upstream-service-time").is_some()))
        };
        assert!(timed(true) && !timed(false));
    }

    #[test]
    fn explicit_headers_then_a_close_is_not_trailers_only() {
        let mut s = GrpcServerStream::new();
        assert_eq!(
            s.send(GrpcStreamReply::new().headers()),
            [GrpcFrame::Headers(Vec::new())]
        );
        let frames = s.send(GrpcStreamReply::new().close(0, ""));
        assert_eq!(
            frames,
            [GrpcFrame::Trailers(vec![(
                "grpc-status".into(),
                "0".into()
            )])]
        );
        let mut reply = empty_reply();
        record(&mut reply, &frames);
        assert!(reply.answers());
        assert_eq!(reply.code(), 0);
    }
}
