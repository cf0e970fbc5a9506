//! A gRPC upstream on loopback for real Envoy: HTTP/2 (hyper), gRPC
//! length-prefixed messages, `grpc-status` trailers. It answers with the same
//! [`weir_harness::GrpcService`] function the harness uses, so both sides get the same
//! answers.
//!
//! Like the harness, a [`GrpcHandler`] answers once the request is complete
//! (the client half-closed it); a reply made with
//! [`weir_harness::GrpcReply::no_answer`] is never sent (the stream stays open
//! until the client resets it). A [`GrpcStreamHandler`] (a
//! [`weir_harness::GrpcStreamService`]) answers full duplex instead: it is told
//! of the stream's headers, of each request message as it arrives and of the
//! end of the request (or its reset), and what it sends goes out at once, as
//! [`weir_harness::GrpcServerStream`] frames it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use bytes::{Buf, Bytes};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Channel, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use weir_harness::{
    GrpcFrame, GrpcReply, GrpcRequest, GrpcServerStream, GrpcStream, GrpcStreamReply,
    GrpcStreamService,
};

use crate::net::LoopbackServer;

/// Answers gRPC requests; the same function can serve the harness and Envoy.
pub type GrpcHandler = Arc<dyn Fn(&GrpcRequest) -> GrpcReply + Send + Sync>;

/// Answers gRPC streams while they are open; the same service can serve the
/// harness (through [`SharedStreamService`]) and Envoy.
pub type GrpcStreamHandler = Arc<Mutex<dyn GrpcStreamService + Send>>;

/// A [`GrpcStreamHandler`] as the harness takes it, so one service answers
/// both sides.
pub struct SharedStreamService(pub GrpcStreamHandler);

impl std::fmt::Debug for SharedStreamService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStreamService")
    }
}

impl SharedStreamService {
    fn with<T>(&self, f: impl FnOnce(&mut dyn GrpcStreamService) -> T) -> T {
        let mut service = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut *service)
    }
}

impl GrpcStreamService for SharedStreamService {
    fn on_open(&mut self, stream: &GrpcStream) -> GrpcStreamReply {
        self.with(|s| s.on_open(stream))
    }

    fn on_message(&mut self, stream: &GrpcStream, message: &Bytes) -> GrpcStreamReply {
        self.with(|s| s.on_message(stream, message))
    }

    fn on_half_close(&mut self, stream: &GrpcStream) -> GrpcStreamReply {
        self.with(|s| s.on_half_close(stream))
    }

    fn on_reset(&mut self, stream: &GrpcStream) {
        self.with(|s| s.on_reset(stream));
    }
}

/// How a [`GrpcUpstream`] answers.
#[derive(Clone)]
enum Answers {
    Whole(GrpcHandler),
    Streams(GrpcStreamHandler),
}

/// Splits a gRPC body into its messages; `None` if it is not well framed.
pub fn unframe(mut body: Bytes) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 {
            return None;
        }
        let flag = body.get_u8();
        let len = body.get_u32() as usize;
        if flag != 0 || body.len() < len {
            return None;
        }
        out.push(body.split_to(len));
    }
    Some(out)
}

fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// An HTTP/2 gRPC server on `127.0.0.1` that records every complete request.
/// Stopped and joined on drop.
pub struct GrpcUpstream {
    server: LoopbackServer,
    seen: Arc<Mutex<Vec<GrpcRequest>>>,
}

impl std::fmt::Debug for GrpcUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcUpstream")
            .field("addr", &self.server.addr())
            .finish()
    }
}

async fn answer(
    req: http::Request<Incoming>,
    cluster: &str,
    handler: &GrpcHandler,
    recorded: &Mutex<Vec<GrpcRequest>>,
) -> http::Response<BoxBody<Bytes, Infallible>> {
    let (parts, body) = req.into_parts();
    // A request the client reset before its end was never complete.
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return http::Response::new(Empty::new().boxed());
    };
    let messages = unframe(body.clone()).unwrap_or_default();
    let request = GrpcRequest::new(cluster, http::Request::from_parts(parts, body), messages);
    let reply = handler(&request);
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(request);
    if !reply.answers() {
        std::future::pending::<()>().await;
    }
    let mut response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    for (k, v) in reply.headers() {
        response = response.header(k, v);
    }
    let mut trailers = http::HeaderMap::new();
    for (k, v) in reply.trailers() {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            trailers.append(k, v);
        }
    }
    let (mut tx, channel) = Channel::<Bytes, Infallible>::new(1);
    let messages: Vec<Bytes> = reply.messages().iter().map(|m| frame(m)).collect();
    tokio::spawn(async move {
        for m in messages {
            if tx.send_data(m).await.is_err() {
                return;
            }
        }
        let _ = tx.send_trailers(trailers).await;
    });
    response
        .body(channel.boxed())
        .unwrap_or_else(|_| http::Response::new(Empty::new().boxed()))
}

/// The frames of a stream's answer, from the task that reads its request.
type Frames = mpsc::UnboundedReceiver<GrpcFrame>;

/// Tells `service` about stream `stream` as its request arrives: each
/// complete message, then the end of the request (or its reset); sends what
/// the service answers to `out` as it goes. Records the request (with the
/// messages the service was told of) once the service is done with it.
async fn read_stream(
    mut body: Incoming,
    mut stream: GrpcStream,
    service: GrpcStreamHandler,
    out: mpsc::UnboundedSender<GrpcFrame>,
    recorded: Arc<Mutex<Vec<GrpcRequest>>>,
) {
    let mut server = GrpcServerStream::new();
    let ask = |f: &mut dyn FnMut(&mut dyn GrpcStreamService) -> GrpcStreamReply| {
        let mut service = service.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut *service)
    };
    let send = |server: &mut GrpcServerStream, reply: GrpcStreamReply| {
        for frame in server.send(reply) {
            // The response side is gone only once the client reset.
            let _ = out.send(frame);
        }
    };
    let reply = ask(&mut |s| s.on_open(&stream));
    send(&mut server, reply);
    let mut pending = bytes::BytesMut::new();
    let (mut reset, mut ended) = (false, false);
    while !server.is_closed() {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while !server.is_closed() {
                    let Some(message) = next_message(&mut pending) else {
                        break;
                    };
                    push(&mut stream, message.clone());
                    let reply = ask(&mut |s| s.on_message(&stream, &message));
                    send(&mut server, reply);
                }
            }
            // The request ended: the client half-closed.
            None => {
                ended = true;
                let reply = ask(&mut |s| s.on_half_close(&stream));
                send(&mut server, reply);
                break;
            }
            Some(Err(_)) => {
                reset = true;
                break;
            }
        }
    }
    if reset {
        let mut service = service.lock().unwrap_or_else(|e| e.into_inner());
        service.on_reset(&stream);
    }
    let open = !server.is_closed() && !reset;
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(stream.request);
    if open {
        // The service may still send (it never closed): the response stays
        // open until the client resets the stream.
        std::future::pending::<()>().await;
    } else if !reset && !ended {
        // The service closed first: the rest of the request is read and
        // dropped (the service hears of nothing after its close), so the
        // stream ends after the response's trailers, not with a reset.
        while let Some(Ok(_)) = body.frame().await {}
    }
}

/// Adds a received message to the stream's request (the body is the
/// messages, framed).
fn push(stream: &mut GrpcStream, message: Bytes) {
    let mut body = stream.request.http.body().to_vec();
    body.extend_from_slice(&frame(&message));
    *stream.request.http.body_mut() = Bytes::from(body);
    stream.request.messages.push(message);
}

/// Takes the next complete message off the front of `pending`, if there is
/// one (a malformed frame is taken as it comes: flag and length are trusted).
fn next_message(pending: &mut bytes::BytesMut) -> Option<Bytes> {
    let header = pending.get(..5)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if pending.len() < 5 + len {
        return None;
    }
    let mut message = pending.split_to(5 + len);
    message.advance(5);
    Some(message.freeze())
}

/// Answers a stream full duplex: the response goes out with the service's
/// first frame (a trailers-only response when that is a close), then each
/// frame as the service sends it.
async fn answer_stream(
    req: http::Request<Incoming>,
    cluster: &str,
    service: &GrpcStreamHandler,
    next_id: &std::sync::atomic::AtomicU64,
    recorded: &Arc<Mutex<Vec<GrpcRequest>>>,
) -> http::Response<BoxBody<Bytes, Infallible>> {
    let (parts, body) = req.into_parts();
    let id = next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let request = GrpcRequest::new(
        cluster,
        http::Request::from_parts(parts, Bytes::new()),
        Vec::new(),
    );
    let (tx, mut frames): (_, Frames) = mpsc::unbounded_channel();
    tokio::spawn(read_stream(
        body,
        GrpcStream::new(id, request),
        Arc::clone(service),
        tx,
        Arc::clone(recorded),
    ));
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    let empty = || http::Response::new(Empty::new().boxed());
    match frames.recv().await {
        // Nothing was ever sent: the client reset the stream first.
        None => empty(),
        Some(GrpcFrame::TrailersOnly(trailers)) => {
            let mut response = response;
            for (k, v) in trailers {
                response = response.header(k, v);
            }
            response
                .body(Empty::new().boxed())
                .unwrap_or_else(|_| empty())
        }
        Some(GrpcFrame::Headers(metadata)) => {
            let mut response = response;
            for (k, v) in metadata {
                response = response.header(k, v);
            }
            let (mut tx, channel) = Channel::<Bytes, Infallible>::new(1);
            tokio::spawn(async move {
                while let Some(frame) = frames.recv().await {
                    let sent = match frame {
                        GrpcFrame::Message(m) => tx.send_data(self::frame(&m)).await.is_ok(),
                        GrpcFrame::Trailers(trailers) => {
                            let _ = tx.send_trailers(header_map(&trailers)).await;
                            return;
                        }
                        _ => true,
                    };
                    if !sent {
                        return;
                    }
                }
            });
            response.body(channel.boxed()).unwrap_or_else(|_| empty())
        }
        // The server stream sends its headers first.
        Some(_) => empty(),
    }
}

/// Trailers as a header map (pairs that are not valid HTTP are skipped).
fn header_map(pairs: &[(String, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    map
}

impl GrpcUpstream {
    /// Binds `127.0.0.1:0` and serves `handler` (as cluster `cluster`) on a
    /// background thread.
    ///
    /// # Errors
    /// If the socket or the runtime cannot be created.
    pub fn start(cluster: &str, handler: GrpcHandler) -> Result<Self> {
        Self::serve(cluster, Answers::Whole(handler))
    }

    /// Binds `127.0.0.1:0` and serves streams full duplex with `service` (as
    /// cluster `cluster`) on a background thread. A request is recorded once
    /// the service is done with it (the client half-closed or reset it, or
    /// the service closed the stream), with the messages it was told of.
    ///
    /// # Errors
    /// If the socket or the runtime cannot be created.
    pub fn start_streaming(cluster: &str, service: GrpcStreamHandler) -> Result<Self> {
        Self::serve(cluster, Answers::Streams(service))
    }

    fn serve(cluster: &str, answers: Answers) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let cluster: Arc<str> = Arc::from(cluster);
        let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let server = LoopbackServer::start(move |stream| {
            let answers = answers.clone();
            let recorded = Arc::clone(&recorded);
            let cluster = Arc::clone(&cluster);
            let next_id = Arc::clone(&next_id);
            let service = service_fn(move |req: http::Request<Incoming>| {
                let answers = answers.clone();
                let recorded = Arc::clone(&recorded);
                let cluster = Arc::clone(&cluster);
                let next_id = Arc::clone(&next_id);
                async move {
                    Ok::<_, Infallible>(match &answers {
                        Answers::Whole(handler) => answer(req, &cluster, handler, &recorded).await,
                        Answers::Streams(service) => {
                            answer_stream(req, &cluster, service, &next_id, &recorded).await
                        }
                    })
                }
            });
            async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .auto_date_header(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })?;
        Ok(Self { server, seen })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The complete requests received so far (and forgets them).
    pub fn take_seen(&self) -> Vec<GrpcRequest> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut body = frame(b"ab").to_vec();
        body.extend_from_slice(&frame(b""));
        let messages = unframe(Bytes::from(body)).expect("well framed");
        assert_eq!(messages, [Bytes::from_static(b"ab"), Bytes::new()]);
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_none());
        assert!(unframe(Bytes::from_static(&[1, 0, 0, 0, 0])).is_none());
    }

    #[test]
    fn messages_are_taken_off_a_stream_only_once_complete() {
        let mut pending = bytes::BytesMut::new();
        pending.extend_from_slice(&frame(b"one"));
        pending.extend_from_slice(&frame(b"two")[..4]);
        assert_eq!(next_message(&mut pending), Some(Bytes::from_static(b"one")));
        assert_eq!(next_message(&mut pending), None);
        pending.extend_from_slice(&frame(b"two")[4..]);
        assert_eq!(next_message(&mut pending), Some(Bytes::from_static(b"two")));
        assert!(pending.is_empty());
    }
}
