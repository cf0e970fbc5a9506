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
