//! A hyper upstream and client on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Channel, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use weir_harness::UpstreamFault;

/// The pause between the pieces of a body sent in pieces, so that the peer reads
/// each one separately (and after the last piece, before the end of the body).
/// The harness is given the same gap ([`weir_harness::ChunkGap`]).
pub const CHUNK_GAP: std::time::Duration = std::time::Duration::from_millis(40);

/// A body to send: whole, or in the pieces a [`weir_harness::BodyChunks`]
/// extension gives (then without `content-length`, so HTTP/1 chunked), one
/// piece at a time with a pause between them, as a slow peer sends it.
/// Trailers (a [`weir_harness::Trailers`] extension; the message must name
/// them in a `trailer` header for hyper to send them) make the body chunked
/// and follow the last piece at once.
fn outgoing(
    body: Bytes,
    chunks: Option<&weir_harness::BodyChunks>,
    trailers: Option<weir_harness::Trailers>,
) -> BoxBody<Bytes, Infallible> {
    if chunks.is_none() && trailers.is_none() {
        return Full::new(body).boxed();
    }
    let mut pieces = Vec::new();
    let mut rest = body;
    for &size in chunks.map(|c| c.0.as_slice()).unwrap_or_default() {
        if size > 0 && !rest.is_empty() {
            pieces.push(rest.split_to(size.min(rest.len())));
        }
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    let (mut tx, channel) = Channel::<Bytes, Infallible>::new(1);
    tokio::spawn(async move {
        let last = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            if tx.send_data(piece).await.is_err() {
                return;
            }
            if i + 1 < last || trailers.is_none() {
                tokio::time::sleep(CHUNK_GAP).await;
            }
        }
        if let Some(trailers) = trailers {
            let _ = tx.send_trailers(trailers.0).await;
        }
    });
    channel.boxed()
}

/// A received body's data, with its trailers (if any) as an extension.
fn received(
    collected: http_body_util::Collected<Bytes>,
) -> (Bytes, Option<weir_harness::Trailers>) {
    let trailers = collected
        .trailers()
        .filter(|t| !t.is_empty())
        .cloned()
        .map(weir_harness::Trailers);
    (collected.to_bytes(), trailers)
}

/// A connection the upstream closes on purpose ([`UpstreamFault`]).
#[derive(Debug)]
struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream closes the connection")
    }
}

impl std::error::Error for Closed {}

/// Answers upstream requests; the same function can serve the harness and Envoy.
/// A response can carry an [`UpstreamFault`] to be slow or close the connection.
pub type Handler = Arc<dyn Fn(http::Request<Bytes>) -> http::Response<Bytes> + Send + Sync>;

/// A server on `127.0.0.1` (ephemeral port) with its own runtime thread: every
/// accepted connection is handed to `serve` as a task. Stopped and joined on
/// drop.
pub(crate) struct LoopbackServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LoopbackServer {
    /// Binds `127.0.0.1:0` and accepts until dropped.
    ///
    /// # Errors
    /// If the socket or the runtime cannot be created.
    pub(crate) fn start<F, Fut>(serve: F) -> Result<Self>
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, mut rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let stream = tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    tokio::spawn(serve(stream));
                }
            });
        });
        Ok(Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An HTTP/1 upstream on `127.0.0.1` that records every request it receives.
/// Stopped and joined on drop.
pub struct Upstream {
    server: LoopbackServer,
    seen: Arc<Mutex<Vec<http::Request<Bytes>>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves `handler` on a background thread.
    ///
    /// # Errors
    /// If the socket or the runtime cannot be created.
    pub fn start(handler: Handler) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let server = LoopbackServer::start(move |stream| {
            let handler = Arc::clone(&handler);
            let recorded = Arc::clone(&recorded);
            let service = service_fn(move |req: http::Request<Incoming>| {
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                async move {
                    let (parts, body) = req.into_parts();
                    // A request cut short (the proxy reset it) was never
                    // received: it is not recorded.
                    let Ok((body, trailers)) = body.collect().await.map(received) else {
                        return Ok(http::Response::new(Full::new(Bytes::new()).boxed()));
                    };
                    let mut req = http::Request::from_parts(parts, body);
                    if let Some(trailers) = trailers {
                        req.extensions_mut().insert(trailers);
                    }
                    let response = handler(req.clone());
                    recorded.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                    let (mut parts, body) = response.into_parts();
                    let (chunks, trailers) = framing(&mut parts.extensions, &mut parts.headers);
                    let body = match parts.extensions.remove::<UpstreamFault>() {
                        Some(UpstreamFault::Delay(d)) => {
                            tokio::time::sleep(d).await;
                            outgoing(body, chunks.as_ref(), trailers)
                        }
                        // hyper closes the connection when the service fails.
                        Some(UpstreamFault::CloseBeforeHeaders) => {
                            return Err(Closed);
                        }
                        // A connection accepted can no longer be refused:
                        // closed at once instead (a test that needs a
                        // refusal points the proxy at a closed port).
                        Some(UpstreamFault::ConnectionRefused) => {
                            return Err(Closed);
                        }
                        // Announce more than is sent: hyper closes the
                        // connection once the body ends short.
                        Some(UpstreamFault::CloseAfterHeaders) => {
                            parts.headers.insert(
                                http::header::CONTENT_LENGTH,
                                http::HeaderValue::from(body.len() + 1),
                            );
                            let (mut tx, channel) = Channel::<Bytes, Infallible>::new(1);
                            tokio::spawn(async move {
                                let _ = tx.send_data(body).await;
                            });
                            channel.boxed()
                        }
                        _ => outgoing(body, chunks.as_ref(), trailers),
                    };
                    Ok(http::Response::from_parts(parts, body))
                }
            });
            async move {
                let _ = hyper::server::conn::http1::Builder::new()
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

    /// The requests received so far (and forgets them).
    pub fn take_seen(&self) -> Vec<http::Request<Bytes>> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn client_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the client runtime: {e}"))
    })
}

/// Sends one request over a fresh HTTP/1 connection to `addr` and reads the
/// whole response. The request's URI is sent as given (use origin form). With a
/// [`weir_harness::BodyChunks`] extension the body goes chunked, in those pieces;
/// a [`weir_harness::Trailers`] extension follows it (name them in a `trailer`
/// header). The response's trailers, if any, are its `Trailers` extension.
///
/// # Errors
/// On connection or protocol errors.
pub fn send(addr: SocketAddr, request: http::Request<Bytes>) -> Result<http::Response<Bytes>> {
    client_runtime().block_on(async move {
        let (mut sender, conn) = connect(addr).await?;
        tokio::spawn(conn);
        let response = sender.send_request(on_the_wire(request)).await?;
        let (parts, body) = response.into_parts();
        let (body, trailers) = received(body.collect().await?);
        let mut response = http::Response::from_parts(parts, body);
        if let Some(trailers) = trailers {
            response.extensions_mut().insert(trailers);
        }
        Ok(response)
    })
}

/// A new HTTP/1.1 client connection to `addr`: the sender, and the
/// connection's task to spawn.
async fn connect(
    addr: SocketAddr,
) -> Result<(
    hyper::client::conn::http1::SendRequest<BoxBody<Bytes, Infallible>>,
    hyper::client::conn::http1::Connection<
        TokioIo<tokio::net::TcpStream>,
        BoxBody<Bytes, Infallible>,
    >,
)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    Ok(hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?)
}

/// `request` as the client puts it on the wire: its body whole, or in the
/// pieces a [`weir_harness::BodyChunks`] extension gives (then without
/// `content-length`), with its [`weir_harness::Trailers`] ([`outgoing`]).
fn on_the_wire(request: http::Request<Bytes>) -> http::Request<BoxBody<Bytes, Infallible>> {
    let (mut parts, body) = request.into_parts();
    let (chunks, trailers) = framing(&mut parts.extensions, &mut parts.headers);
    http::Request::from_parts(parts, outgoing(body, chunks.as_ref(), trailers))
}

/// Takes the [`weir_harness::BodyChunks`] and [`weir_harness::Trailers`] of a
/// message to send; a body in pieces goes without `content-length`.
fn framing(
    extensions: &mut http::Extensions,
    headers: &mut http::HeaderMap,
) -> (
    Option<weir_harness::BodyChunks>,
    Option<weir_harness::Trailers>,
) {
    let chunks = extensions.remove::<weir_harness::BodyChunks>();
    let trailers = extensions.remove::<weir_harness::Trailers>();
    if chunks.is_some() {
        headers.remove(http::header::CONTENT_LENGTH);
    }
    (chunks, trailers)
}

/// Sends `request` over a new HTTP/1.1 connection like [`send`] (its body in
/// pieces and trailers too), but closes the connection `after` this long
/// unless the whole response came first: `None` if the client gave up.
///
/// # Errors
/// On connection errors or a malformed response.
pub fn send_then_disconnect(
    addr: SocketAddr,
    request: http::Request<Bytes>,
    after: Duration,
) -> Result<Option<http::Response<Bytes>>> {
    client_runtime().block_on(async move {
        let (mut sender, conn) = connect(addr).await?;
        let conn = tokio::spawn(conn);
        let exchange = async {
            let response = sender.send_request(on_the_wire(request)).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            anyhow::Ok(http::Response::from_parts(parts, body))
        };
        let outcome = tokio::time::timeout(after, exchange).await;
        // Dropping the connection's task closes the socket.
        conn.abort();
        match outcome {
            Ok(response) => response.map(Some),
            Err(_) => Ok(None),
        }
    })
}

/// GETs an Envoy admin path and returns the body.
///
/// # Errors
/// On connection errors or a non-2xx answer.
pub fn admin_get(admin: SocketAddr, path: &str) -> Result<String> {
    let request = http::Request::get(path)
        .header("host", admin.to_string())
        .body(Bytes::new())?;
    let response = send(admin, request)?;
    anyhow::ensure!(
        response.status().is_success(),
        "admin {path}: {}",
        response.status()
    );
    Ok(String::from_utf8_lossy(response.body()).into_owned())
}
