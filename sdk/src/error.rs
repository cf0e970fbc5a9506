//! The SDK's error type.

use crate::host::Status;

/// Everything that can go wrong in a weir filter, as a value instead of a panic.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host refused a call. `BadArgument` from a header call usually means the
    /// map is not available in the current callback (for example request headers
    /// after `on_request_headers` returned [`Flow::Continue`](crate::Flow)).
    #[error("{call} on {target} failed: {status}")]
    Host {
        /// The proxy-wasm host function that failed.
        call: &'static str,
        /// What it was called on, e.g. `request headers`.
        target: &'static str,
        /// The raw status code the host returned.
        status: HostStatus,
    },
    /// A header value was asked for as text but is not valid UTF-8; use the
    /// `*_bytes` accessor to read it.
    #[error("header `{name}` is not valid UTF-8")]
    NonUtf8Header {
        /// The header name.
        name: String,
    },
    /// A body was asked for as text but is not valid UTF-8.
    #[error("{target} is not valid UTF-8")]
    NonUtf8Body {
        /// Which body.
        target: &'static str,
    },
    /// A body is not the JSON the filter expects (or a value cannot be written
    /// as JSON).
    #[error("{target} is not valid JSON at `{path}`: {message}")]
    Json {
        /// Which body.
        target: &'static str,
        /// Where in the document (`.` for the root).
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// A callout was not sent: malformed, or refused by Envoy.
    #[error("callout to `{cluster}` not sent: {reason}")]
    InvalidCallout {
        /// The cluster.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// The host returned a serialized header map that could not be parsed.
    #[error("the host returned a malformed header map for {target}")]
    MalformedMap {
        /// Which map, e.g. `response headers`.
        target: &'static str,
    },
    /// The plugin configuration could not be parsed into the filter's config type.
    #[error("invalid configuration at `{path}`: {message}")]
    Config {
        /// Where in the JSON document the problem is (`.` for the root).
        path: String,
        /// What is wrong there.
        message: String,
    },
}

/// A status code returned by the proxy-wasm host, e.g. `BadArgument (2)`.
pub type HostStatus = Status;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
