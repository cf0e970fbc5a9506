//! Local replies: answering the client from the filter.

use crate::host;
use crate::{Error, Result};

/// A response sent by the filter instead of forwarding the request (or the
/// upstream response). Envoy stops the filter chain and runs the response path
/// on it, so the filter's own `on_response_headers` sees the reply.
///
/// # Examples
/// ```
/// use weir::LocalReply;
/// let reply = LocalReply::new(403)
///     .header("content-type", "text/plain")
///     .body("denied")
///     .details("auth_denied");
/// assert_eq!(reply.status(), 403);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct LocalReply(Box<Reply>);

/// Boxed so that [`Flow`](crate::Flow) and `Result<Flow>` stay one word: they are
/// moved on every callback.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u32,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    details: String,
    grpc_status: Option<u32>,
}

impl LocalReply {
    /// A reply with this HTTP status, no extra headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self(Box::new(Reply {
            status: u32::from(status),
            headers: Vec::new(),
            body: Vec::new(),
            details: String::new(),
            grpc_status: None,
        }))
    }

    /// A gRPC error reply: HTTP 200 with `grpc-status` (and `grpc-message`) set
    /// by Envoy, as a gRPC client expects.
    pub fn grpc(status: u32, message: &str) -> Self {
        let mut reply = Self::new(200);
        reply.0.grpc_status = Some(status);
        reply.0.body = message.as_bytes().to_vec();
        reply
    }

    /// The HTTP status code.
    pub fn status(&self) -> u32 {
        self.0.status
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.0
            .headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the response body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.0.body = body.into();
        self
    }

    /// Sets the response-code details Envoy records (`%RESPONSE_CODE_DETAILS%`);
    /// Envoy replaces whitespace with `_`.
    pub fn details(mut self, details: impl Into<String>) -> Self {
        self.0.details = details.into();
        self
    }

    /// Sets the gRPC status Envoy sends in the reply (`grpc-status`); the body
    /// becomes the `grpc-message`.
    pub fn grpc_status(mut self, status: u32) -> Self {
        self.0.grpc_status = Some(status);
        self
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.0.body
    }

    /// The response-code details.
    pub fn details_str(&self) -> &str {
        &self.0.details
    }

    /// The headers.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.0.headers
    }

    /// Hands the reply to the host; it is sent once the current callback returns.
    pub(crate) fn send(&self) -> Result<()> {
        let reply = &self.0;
        let pairs: Vec<(&str, &[u8])> = reply
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let headers = host::serialize_pairs(&pairs);
        let grpc = reply
            .grpc_status
            .map_or(-1, |s| i32::try_from(s).unwrap_or(i32::MAX));
        host::send_local_response(reply.status, &reply.details, &reply.body, &headers, grpc)
            .map_err(|status| Error::host("proxy_send_local_response", "the stream", status))
    }
}
