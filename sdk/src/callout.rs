//! HTTP callouts: requests a filter sends to another cluster while it holds the
//! stream.

use std::time::Duration;

use crate::host::{self, BufferType, MapType};
use crate::{Error, ErrorKind, Result};

/// An HTTP request to a cluster, checked before it is sent.
///
/// Envoy needs a known cluster name (not a URL) and the `:method`, `:path` and
/// `:authority` pseudo-headers; the builder always sets them, so a refused call
/// means the cluster is unknown.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use weir::HttpCall;
/// let call = HttpCall::get("auth", "/check")
///     .authority("auth.internal")
///     .header("x-token", "t")
///     .timeout(Duration::from_millis(500));
/// assert_eq!(call.cluster(), "auth");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpCall {
    cluster: String,
    method: String,
    path: String,
    authority: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// Identifies a callout; its answer comes with the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CalloutToken(pub(crate) u32);

impl HttpCall {
    /// A request with `method` to `path` on `cluster`. The authority defaults to
    /// the cluster name, the timeout to 5 s.
    pub fn new(
        cluster: impl Into<String>,
        method: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        let cluster = cluster.into();
        Self {
            authority: cluster.clone(),
            cluster,
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(5),
        }
    }

    /// A `GET`.
    pub fn get(cluster: impl Into<String>, path: impl Into<String>) -> Self {
        Self::new(cluster, "GET", path)
    }

    /// A `POST`.
    pub fn post(cluster: impl Into<String>, path: impl Into<String>) -> Self {
        Self::new(cluster, "POST", path)
    }

    /// The cluster the call goes to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The `:authority` (the `Host` the cluster sees).
    pub fn authority(mut self, authority: impl Into<String>) -> Self {
        self.authority = authority.into();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The timeout; zero means none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn check(&self) -> Result<()> {
        let invalid = |reason: String| {
            Error::from(ErrorKind::InvalidCallout {
                cluster: self.cluster.clone(),
                reason,
            })
        };
        if self.cluster.is_empty() || self.cluster.contains("://") {
            return Err(invalid(
                "the cluster must be an Envoy cluster name, not a URL".to_owned(),
            ));
        }
        if self.method.is_empty() || !self.method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(format!("invalid method {:?}", self.method)));
        }
        if !self.path.starts_with('/') {
            return Err(invalid(format!(
                "the path {:?} must start with '/'",
                self.path
            )));
        }
        if self.authority.is_empty() {
            return Err(invalid("the authority is empty".to_owned()));
        }
        Ok(())
    }

    /// Sends the call. Its answer is delivered to the context that sent it: a
    /// stream's [`HttpFilter::on_callout_response`](crate::HttpFilter::on_callout_response)
    /// (return [`Flow::Pause`](crate::Flow) to hold the stream until then), or the
    /// plugin's [`Plugin::on_callout_response`](crate::Plugin::on_callout_response).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidCallout`] before sending for a malformed call, or when
    /// Envoy refuses it (an unknown cluster).
    pub fn send(self) -> Result<CalloutToken> {
        self.check()?;
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", &self.method),
            (":path", &self.path),
            (":authority", &self.authority),
        ];
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let body = (!self.body.is_empty()).then_some(self.body.as_slice());
        host::dispatch_http_call(&self.cluster, headers, body, self.timeout)
            .map(CalloutToken)
            .map_err(|status| {
                Error::from(ErrorKind::InvalidCallout {
                    cluster: self.cluster.clone(),
                    reason: format!("Envoy refused it ({status}): is the cluster defined?"),
                })
            })
    }
}

/// The answer to a callout, read from the host on demand (only while the
/// callback that received it runs).
///
/// A call that failed without a response (timeout, reset, connection failure)
/// has no headers: [`CalloutResponse::is_failure`] is true and
/// [`CalloutResponse::status`] is `None`.
#[derive(Debug)]
pub struct CalloutResponse {
    num_headers: usize,
    body_size: usize,
    num_trailers: usize,
}

const TARGET: &str = "the callout response";

impl CalloutResponse {
    pub(crate) fn new(num_headers: usize, body_size: usize, num_trailers: usize) -> Self {
        Self {
            num_headers,
            body_size,
            num_trailers,
        }
    }

    /// Whether the call failed without a response (timeout, reset, no upstream).
    pub fn is_failure(&self) -> bool {
        self.num_headers == 0
    }

    /// The HTTP status, or `None` if the call failed without a response.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn status(&self) -> Result<Option<u16>> {
        Ok(self
            .header(":status")?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }

    /// The first value of a header.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn header(&self, name: &str) -> Result<Option<Vec<u8>>> {
        if self.num_headers == 0 {
            return Ok(None);
        }
        host::get_map_value(MapType::CallResponseHeaders, name)
            .map_err(|status| Error::host("proxy_get_header_map_value", TARGET, status))
    }

    /// Every header, in order.
    ///
    /// # Errors
    /// A host error, or [`ErrorKind::Malformed`] if the map cannot be decoded.
    pub fn headers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        if self.num_headers == 0 {
            return Ok(Vec::new());
        }
        crate::headers::read_pairs(MapType::CallResponseHeaders, TARGET)
    }

    /// Every trailer, in order.
    ///
    /// # Errors
    /// As for [`CalloutResponse::headers`].
    pub fn trailers(&self) -> Result<Vec<(String, Vec<u8>)>> {
        if self.num_trailers == 0 {
            return Ok(Vec::new());
        }
        crate::headers::read_pairs(MapType::CallResponseTrailers, TARGET)
    }

    /// The size of the body in bytes.
    pub fn body_len(&self) -> usize {
        self.body_size
    }

    /// The body.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn body(&self) -> Result<Vec<u8>> {
        if self.body_size == 0 {
            return Ok(Vec::new());
        }
        host::get_buffer(BufferType::CallResponseBody, 0, self.body_size)
            .map(Option::unwrap_or_default)
            .map_err(|status| Error::host("proxy_get_buffer_bytes", TARGET, status))
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`ErrorKind::Json`] naming the path of the problem, or as for
    /// [`CalloutResponse::body`].
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let body = self.body()?;
        crate::json_path::from_slice(&body).map_err(|(path, message)| {
            Error::from(ErrorKind::Json {
                target: TARGET,
                path,
                message,
            })
        })
    }
}
