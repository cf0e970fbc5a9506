//! A gRPC upstream on loopback for real Envoy: HTTP/2 (hyper), gRPC
//! length-prefixed messages, `grpc-status` trailers. It answers with the same
//! [`weir_harness::GrpcService`] function the harness uses, so both sides get the same
//! answers.
//!
//! Like the harness, it answers once the request is complete (the client
//! half-closed it); a reply made with [`weir_harness::GrpcReply::no_answer`] is never sent
//! (the stream stays open until the client resets it).

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
use weir_harness::{GrpcReply, GrpcRequest};

use crate::net::LoopbackServer;

/// Answers gRPC requests; the same function can serve the harness and Envoy.
pub type GrpcHandler = Arc<dyn Fn(&GrpcRequest) -> GrpcReply + Send + Sync>;

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

impl GrpcUpstream {
    /// Binds `127.0.0.1:0` and serves `handler` (as cluster `cluster`) on a
    /// background thread.
    ///
    /// # Errors
    /// If the socket or the runtime cannot be created.
    pub fn start(cluster: &str, handler: GrpcHandler) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let cluster: Arc<str> = Arc::from(cluster);
        let server = LoopbackServer::start(move |stream| {
            let handler = Arc::clone(&handler);
            let recorded = Arc::clone(&recorded);
            let cluster = Arc::clone(&cluster);
            let service = service_fn(move |req: http::Request<Incoming>| {
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                let cluster = Arc::clone(&cluster);
                async move { Ok::<_, Infallible>(answer(req, &cluster, &handler, &recorded).await) }
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
}
