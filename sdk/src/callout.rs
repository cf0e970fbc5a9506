//! HTTP callouts: requests a filter sends to another cluster while it holds the
//! stream.

use std::time::Duration;

use crate::host::{self, BufferType, MapType};
use crate::{Error, Result};

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
        let invalid = |reason: String| Error::InvalidCallout {
            cluster: self.cluster.clone(),
            reason,
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

    /// Sends the call. Its answer is delivered to the stream that sent it, in
    /// [`HttpFilter::on_callout_response`](crate::HttpFilter::on_callout_response);
    /// return [`Flow::Pause`](crate::Flow) to hold the stream until then.
    ///
    /// # Errors
    /// [`Error::InvalidCallout`] before sending for a malformed call, or when Envoy
    /// refuses it (an unknown cluster).
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
            .map_err(|status| Error::InvalidCallout {
                cluster: self.cluster.clone(),
                reason: format!("Envoy refused it ({status}): is the cluster defined?"),
            })
    }
}

/// The answer to a callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutResponse {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl CalloutResponse {
    /// Reads the answer the host is delivering (inside `on_http_call_response`).
    pub(crate) fn read(num_headers: usize, body_size: usize) -> Result<Self> {
        let headers = if num_headers == 0 {
            Vec::new()
        } else {
            let raw = host::get_map_pairs(MapType::CallResponseHeaders).map_err(|status| {
                Error::Host {
                    call: "proxy_get_header_map_pairs",
                    target: "the callout response",
                    status,
                }
            })?;
            host::deserialize_pairs(&raw)
                .ok_or(Error::MalformedMap {
                    target: "the callout response",
                })?
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect()
        };
        let body = if body_size == 0 {
            Vec::new()
        } else {
            host::get_buffer(BufferType::CallResponseBody, 0, body_size)
                .map_err(|status| Error::Host {
                    call: "proxy_get_buffer_bytes",
                    target: "the callout response",
                    status,
                })?
                .unwrap_or_default()
        };
        Ok(Self { headers, body })
    }

    /// The HTTP status, or `None` if the call failed without a response (reset).
    pub fn status(&self) -> Option<u16> {
        self.header(":status")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every header, in order.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}
