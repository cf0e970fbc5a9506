//! Upstreams: where the chain sends requests that pass all filters.

use bytes::Bytes;

/// An in-process upstream. Any `FnMut(http::Request<Bytes>) -> http::Response<Bytes>`
/// is one, which keeps tests deterministic.
pub trait Upstream {
    /// Answers one request.
    fn call(&mut self, request: http::Request<Bytes>) -> http::Response<Bytes>;
}

impl<F> Upstream for F
where
    F: FnMut(http::Request<Bytes>) -> http::Response<Bytes>,
{
    fn call(&mut self, request: http::Request<Bytes>) -> http::Response<Bytes> {
        self(request)
    }
}

/// Makes an upstream slow or broken the way a real one can be: set it as an
/// extension of the response an [`Upstream`] returns.
///
/// ```
/// use std::time::Duration;
/// use weir_harness::UpstreamFault;
///
/// let slow = http::Response::builder()
///     .extension(UpstreamFault::Delay(Duration::from_secs(2)))
///     .body(bytes::Bytes::from_static(b"late"))?;
/// # Ok::<(), http::Error>(())
/// ```
///
/// The harness applies these to HTTP callouts as Envoy's async client does,
/// and to the chain's upstream as Envoy's router does (see each variant);
/// `weir-tests`' loopback upstream applies them on the wire, so the same
/// response drives the harness and real Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamFault {
    /// The response takes this long. A callout whose timeout expires first is
    /// answered `504` `upstream request timeout` by Envoy when it does, and
    /// so is a request whose route's timeout expires first (details
    /// `response_timeout`, response flag `UT`).
    Delay(std::time::Duration),
    /// The connection closes before any response: Envoy answers the callout,
    /// or the request, `503` with its "upstream connect error or
    /// disconnect/reset before headers" body (details
    /// `upstream_reset_before_response_started{connection_termination}`,
    /// response flag `UC`).
    CloseBeforeHeaders,
    /// The response headers arrive, then the connection closes before the body
    /// is complete: the callout fails (`on_http_call_response` with no headers,
    /// no body and no trailers); a request's stream is reset once the headers
    /// went through the filters (details
    /// `upstream_reset_after_response_started{protocol_error}`, response flag
    /// `UPE`).
    CloseAfterHeaders,
    /// The upstream host refuses the connection (nothing listens on its
    /// port): no request reaches it. Envoy answers the request `503` with its
    /// "upstream connect error or disconnect/reset before headers. reset
    /// reason: remote connection failure" body (details
    /// `upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}`,
    /// response flag `UF`, `upstream.transport_failure_reason` `delayed
    /// connect error: Connection refused`, no `upstream.local_address`), and
    /// a callout with the same `503` its async client makes up. The rest of
    /// the response carrying this fault is not used, and the upstream request
    /// of the [`Outcome`](crate::Outcome) is `None`: nothing reached the host.
    ConnectionRefused,
}
