//! What the upstream and the client observed, normalized so that Envoy and the
//! harness can be compared exactly.
//!
//! Header lists are compared as multisets (sorted by name, the order of repeated
//! values kept): Envoy's HTTP/1 codec and hyper may serialize headers in a
//! different order than the filter chain produced them. The only value that is
//! masked is `date`, which is the wall clock in Envoy and the virtual clock in
//! the harness; its presence is still compared.

use bytes::Bytes;

/// Header lines, normalized.
pub type Headers = Vec<(String, String)>;

/// Trailers carried by a message (its [`weir_harness::Trailers`] extension),
/// normalized like headers; none and an empty map are the same.
fn trailers(extensions: &http::Extensions) -> Headers {
    extensions
        .get::<weir_harness::Trailers>()
        .map(|t| normalize(&t.0))
        .unwrap_or_default()
}

fn normalize(headers: &http::HeaderMap) -> Headers {
    let mut lines: Headers = headers
        .iter()
        .map(|(k, v)| {
            let value = if k == http::header::DATE {
                "<date>".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_owned(), value)
        })
        .collect();
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    lines
}

/// What the upstream received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSaw {
    /// Method.
    pub method: String,
    /// Origin-form URI.
    pub uri: String,
    /// Headers, normalized.
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
    /// Trailers, normalized (empty without).
    pub trailers: Headers,
}

impl UpstreamSaw {
    /// Normalizes a received request.
    pub fn of(request: &http::Request<Bytes>) -> Self {
        Self {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers: normalize(request.headers()),
            body: request.body().clone(),
            trailers: trailers(request.extensions()),
        }
    }
}

/// What the client received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSaw {
    /// Status code.
    pub status: u16,
    /// Headers, normalized.
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
    /// Trailers, normalized (empty without).
    pub trailers: Headers,
}

impl ClientSaw {
    /// Normalizes a received response.
    pub fn of(response: &http::Response<Bytes>) -> Self {
        Self {
            status: response.status().as_u16(),
            headers: normalize(response.headers()),
            body: response.body().clone(),
            trailers: trailers(response.extensions()),
        }
    }
}
