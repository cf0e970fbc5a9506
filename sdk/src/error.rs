//! The SDK's error type.

use std::fmt;

use crate::LocalReply;
use crate::host::Status;

/// Everything that can go wrong in a weir filter, as a value instead of a panic.
///
/// One pointer wide, so `Result<T>` costs nothing extra on the success path that
/// every callback takes. [`Error::kind`] tells what happened.
///
/// A callback that returns an error answers the client with a local reply: the
/// reply the error carries ([`Error::reply`], or any [`IntoLocalReply`] type
/// through [`Error::respond`]), otherwise `500` with details `weir_filter_error`.
pub struct Error(Box<ErrorKind>);

/// What went wrong; see [`Error::kind`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
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
    /// A body (or a stored value) is not the JSON expected, or a value cannot be
    /// written as JSON.
    #[error("{target} is not valid JSON at `{path}`: {message}")]
    Json {
        /// What was parsed, e.g. `the request body`.
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
    /// A callout a task awaited failed without a response: it timed out, the
    /// connection failed or was reset, or the cluster had no healthy host.
    #[error("callout to `{cluster}` failed without a response")]
    CalloutFailed {
        /// The cluster.
        cluster: String,
    },
    /// A gRPC call a task awaited ended with a status other than OK (Envoy
    /// reports its own failures this way too: 14, unavailable, for an
    /// unreachable cluster).
    #[error("gRPC call to `{cluster}` failed with status {status}: {message}")]
    Grpc {
        /// The cluster.
        cluster: String,
        /// The gRPC status code.
        status: u32,
        /// The status message.
        message: String,
    },
    /// A [`timeout`](crate::task::timeout) ran out.
    #[error("timed out after {}ms", whole_ms(after))]
    TimedOut {
        /// The timeout.
        after: std::time::Duration,
    },
    /// The host returned data that could not be decoded (a serialized header map,
    /// a property of an unexpected size).
    #[error("the host returned malformed data for {target}")]
    Malformed {
        /// What it was, e.g. `response headers`.
        target: String,
    },
    /// The plugin configuration could not be parsed into the filter's config type.
    #[error("invalid configuration at `{path}`: {message}")]
    Config {
        /// Where in the JSON document the problem is (`.` for the root).
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// A value given to the SDK is not acceptable (a metric name with a reserved
    /// character, a shared-data value that does not fit, ...).
    #[error("{message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// The filter answers the client with this reply (see [`Error::respond`]).
    #[error("answered with a local {} reply", .0.status())]
    Reply(LocalReply),
}

/// Whole milliseconds, for messages (`Duration`'s `Debug` would add its
/// formatting code to every module that displays an error).
pub(crate) fn whole_ms(d: &std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A status code returned by the proxy-wasm host, e.g. `BadArgument (2)`.
pub type HostStatus = Status;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// The host status, if the host refused a call.
    pub fn host_status(&self) -> Option<HostStatus> {
        match *self.0 {
            ErrorKind::Host { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The gRPC status, if a gRPC call a task awaited failed.
    pub fn grpc_status(&self) -> Option<u32> {
        match *self.0 {
            ErrorKind::Grpc { status, .. } => Some(status),
            _ => None,
        }
    }

    /// An error that answers the client with `reply`: return it from a callback
    /// (`Err(Error::respond(...))?`) to stop the request with a specific status.
    ///
    /// # Examples
    /// ```
    /// use weir::{Error, IntoLocalReply, LocalReply};
    ///
    /// enum AuthError { Missing, Forbidden }
    ///
    /// impl IntoLocalReply for AuthError {
    ///     fn into_local_reply(self) -> LocalReply {
    ///         match self {
    ///             AuthError::Missing => LocalReply::new(401).body("token required"),
    ///             AuthError::Forbidden => LocalReply::new(403),
    ///         }
    ///     }
    /// }
    ///
    /// let err = Error::respond(AuthError::Missing);
    /// assert_eq!(err.reply().map(|r| r.status()), Some(401));
    /// ```
    #[cold]
    pub fn respond(reply: impl IntoLocalReply) -> Self {
        Self::from(ErrorKind::Reply(reply.into_local_reply()))
    }

    /// The reply this error answers with, if it carries one.
    pub fn reply(&self) -> Option<&LocalReply> {
        match &*self.0 {
            ErrorKind::Reply(reply) => Some(reply),
            _ => None,
        }
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn host(call: &'static str, target: &'static str, status: Status) -> Self {
        Self::from(ErrorKind::Host {
            call,
            target,
            status,
        })
    }

    #[cold]
    pub(crate) fn malformed(target: impl Into<String>) -> Self {
        Self::from(ErrorKind::Malformed {
            target: target.into(),
        })
    }

    #[cold]
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::from(ErrorKind::InvalidArgument {
            message: message.into(),
        })
    }
}

impl From<ErrorKind> for Error {
    #[cold]
    fn from(kind: ErrorKind) -> Self {
        Self(Box::new(kind))
    }
}

impl From<LocalReply> for Error {
    #[cold]
    fn from(reply: LocalReply) -> Self {
        Self::from(ErrorKind::Reply(reply))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// Turns a filter's own error type into the reply the client gets.
///
/// Implement it for an error enum and return [`Error::respond`] from a callback;
/// weir's own errors become `500` with details `weir_filter_error`.
pub trait IntoLocalReply {
    /// The reply for this error.
    fn into_local_reply(self) -> LocalReply;
}

impl IntoLocalReply for LocalReply {
    fn into_local_reply(self) -> LocalReply {
        self
    }
}

impl IntoLocalReply for Error {
    fn into_local_reply(self) -> LocalReply {
        match *self.0 {
            ErrorKind::Reply(reply) => reply,
            _ => LocalReply::new(500).details("weir_filter_error"),
        }
    }
}
