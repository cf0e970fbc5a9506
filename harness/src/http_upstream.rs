//! A real HTTP/1.1 server as the chain's upstream or a callout cluster.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Channel, Full};
use hyper_util::rt::TokioIo;

use crate::trailers::Trailers;
use crate::upstream::{Upstream, UpstreamFault};

/// Envoy's default route timeout, the default wait for a response.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// An [`Upstream`] that is a real HTTP/1.1 server: each request goes to it
/// over a new TCP connection, as Envoy's router sends it (headers, body,
/// trailers), and its whole response comes back, trailers included. Give it to
/// [`Chain::send`] or [`ChainBuilder::cluster`] when a filter is tested
/// against a service that runs on its own (on loopback, in the test).
///
/// ```no_run
/// use bytes::Bytes;
/// use weir_harness::{Chain, Engine, Filter, HttpUpstream};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::new()?;
/// let plugin = engine.load_file("target/wasm32-wasip1/filter/auth.wasm")?;
/// let mut chain = Chain::builder(&engine)
///     .filter(Filter::new(plugin).name("auth"))
///     // The filter's callouts to `jwks` reach a server the test started.
///     .cluster("jwks", HttpUpstream::new("127.0.0.1:8081".parse()?)?)
///     .build()?;
/// let request = http::Request::get("/").header("host", "example.com").body(Bytes::new())?;
/// let outcome = chain.send(request, HttpUpstream::new("127.0.0.1:8080".parse()?)?)?;
/// # let _ = outcome;
/// # Ok(())
/// # }
/// ```
///
/// What goes wrong on the network reaches the chain as the [`UpstreamFault`]
/// Envoy answers it for, so the filters see what they would see in Envoy:
/// - the connection is refused (nothing listens): [`UpstreamFault::ConnectionRefused`];
/// - the connection closes, or the server answers something that is not
///   HTTP/1.1, before the response headers: [`UpstreamFault::CloseBeforeHeaders`];
/// - the connection closes before the body is complete:
///   [`UpstreamFault::CloseAfterHeaders`];
/// - no complete response within the timeout ([`HttpUpstream::timeout`],
///   15 s by default as Envoy's route timeout): [`UpstreamFault::Delay`] of
///   that timeout, which the chain answers `504` if the route's (or the
///   callout's) timeout is not longer.
///
/// The virtual clock does not move while the server answers: its real
/// latency is not part of the test. The exchange runs on a thread of its own,
/// so a test that is itself async (`#[tokio::test]`) can use it.
///
/// [`Chain::send`]: crate::Chain::send
/// [`ChainBuilder::cluster`]: crate::ChainBuilder::cluster
pub struct HttpUpstream {
    addr: SocketAddr,
    timeout: Duration,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for HttpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpUpstream")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpUpstream {
    /// The server at `addr`.
    ///
    /// # Errors
    /// If the runtime that runs its connections cannot be created.
    pub fn new(addr: SocketAddr) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Self {
            addr,
            timeout: DEFAULT_TIMEOUT,
            runtime,
        })
    }

    /// How long to wait for a complete response (default 15 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Where the server listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Upstream for HttpUpstream {
    fn call(&mut self, request: http::Request<Bytes>) -> http::Response<Bytes> {
        let (addr, timeout, runtime) = (self.addr, self.timeout, &self.runtime);
        let exchange = async move {
            tokio::time::timeout(timeout, exchange(addr, request))
                .await
                .unwrap_or_else(|_| {
                    tracing::debug!(%addr, ?timeout, "no response in time");
                    fault(UpstreamFault::Delay(timeout))
                })
        };
        // A thread of its own: the caller may be running inside a runtime.
        std::thread::scope(|s| s.spawn(|| runtime.block_on(exchange)).join())
            .unwrap_or_else(|_| fault(UpstreamFault::CloseBeforeHeaders))
    }
}

/// A response that stands for what happened on the network.
fn fault(fault: UpstreamFault) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::new());
    response.extensions_mut().insert(fault);
    response
}

/// One request over a new connection to `addr`, and its whole response.
async fn exchange(addr: SocketAddr, request: http::Request<Bytes>) -> http::Response<Bytes> {
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(%addr, "cannot connect: {e}");
            return fault(UpstreamFault::ConnectionRefused);
        }
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(handshake) => handshake,
            Err(e) => {
                tracing::debug!(%addr, "handshake failed: {e}");
                return fault(UpstreamFault::CloseBeforeHeaders);
            }
        };
    let connection = tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    let body = match parts.extensions.remove::<Trailers>() {
        None => Full::new(body).map_err(|never| match never {}).boxed(),
        Some(trailers) => with_trailers(body, trailers).await,
    };
    let response = match sender
        .send_request(http::Request::from_parts(parts, body))
        .await
    {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(%addr, "no response: {e}");
            connection.abort();
            return fault(UpstreamFault::CloseBeforeHeaders);
        }
    };
    let (parts, body) = response.into_parts();
    let response = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().filter(|t| !t.is_empty()).cloned();
            let mut response = http::Response::from_parts(parts, collected.to_bytes());
            if let Some(trailers) = trailers {
                response.extensions_mut().insert(Trailers(trailers));
            }
            response
        }
        Err(e) => {
            tracing::debug!(%addr, "the response body ended short: {e}");
            let mut response = http::Response::from_parts(parts, Bytes::new());
            response
                .extensions_mut()
                .insert(UpstreamFault::CloseAfterHeaders);
            response
        }
    };
    connection.abort();
    response
}

/// The body followed by its trailers (sent chunked, as the request's headers
/// say).
async fn with_trailers(body: Bytes, trailers: Trailers) -> BoxBody<Bytes, Infallible> {
    let (mut tx, channel) = Channel::<Bytes, Infallible>::new(2);
    // Room for both frames: neither send waits for the connection.
    if !body.is_empty() {
        let _ = tx.send_data(body).await;
    }
    let _ = tx.send_trailers(trailers.0).await;
    channel.boxed()
}
