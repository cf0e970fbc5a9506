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

    /// Sends the call. In a task, `.await` the call instead (see
    /// [`weir::task`](crate::task)). Its answer is delivered to the context that sent it: a
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

/// Awaiting an `HttpCall` sends it (when first polled) and gives its answer.
///
/// Any HTTP status is `Ok`; a call that failed without a response (timeout,
/// reset, no upstream) is [`ErrorKind::CalloutFailed`], and a call Envoy
/// refused [`ErrorKind::InvalidCallout`]. To have several in flight, pass
/// their futures (`call.into_future()`) to [`join`](crate::task::join) or
/// [`select`](crate::task::select).
///
/// ```
/// # async fn f() -> weir::Result<()> {
/// let answer = weir::HttpCall::get("auth", "/check").await?;
/// if answer.status() == 200 {
///     log::info!("allowed: {}", String::from_utf8_lossy(answer.body()));
/// }
/// # Ok(()) }
/// ```
impl std::future::IntoFuture for HttpCall {
    type Output = Result<HttpResponse>;
    type IntoFuture = PendingCall;

    fn into_future(self) -> PendingCall {
        crate::runtime::install();
        PendingCall {
            state: CallState::Unsent(Box::new(self)),
        }
    }
}

/// A callout being awaited: the future of an [`HttpCall`]. Dropping it before
/// the answer came forgets the call (its answer is ignored).
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct PendingCall {
    state: CallState,
}

#[derive(Debug)]
enum CallState {
    Unsent(Box<HttpCall>),
    Sent { token: u32, cluster: String },
    Done,
}

impl std::future::Future for PendingCall {
    type Output = Result<HttpResponse>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<HttpResponse>> {
        use crate::runtime::{Answer, CallKind};
        use std::task::Poll;
        let this = self.get_mut();
        match std::mem::replace(&mut this.state, CallState::Done) {
            CallState::Unsent(call) => {
                let cluster = call.cluster.clone();
                match call.send() {
                    Ok(CalloutToken(token)) => {
                        crate::runtime::await_call(CallKind::Http, token, cx.waker());
                        this.state = CallState::Sent { token, cluster };
                        Poll::Pending
                    }
                    Err(e) => Poll::Ready(Err(e)),
                }
            }
            CallState::Sent { token, cluster } => {
                match crate::runtime::take_answer(CallKind::Http, token, cx.waker()) {
                    Some(Answer::Http(Ok(Some(response)))) => Poll::Ready(Ok(response)),
                    Some(Answer::Http(Ok(None))) => {
                        Poll::Ready(Err(Error::from(ErrorKind::CalloutFailed { cluster })))
                    }
                    Some(Answer::Http(Err(e))) => Poll::Ready(Err(e)),
                    Some(Answer::Grpc(_)) => Poll::Ready(Err(Error::malformed(TARGET))),
                    None => {
                        this.state = CallState::Sent { token, cluster };
                        Poll::Pending
                    }
                }
            }
            CallState::Done => Poll::Ready(Err(Error::invalid(
                "a callout future was polled after it completed",
            ))),
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if let CallState::Sent { token, .. } = self.state {
            crate::runtime::abandon(crate::runtime::CallKind::Http, token, false);
        }
    }
}

/// The answer to an awaited [`HttpCall`], read in full when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    trailers: Vec<(String, Vec<u8>)>,
}

impl HttpResponse {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header (names match case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Every header, in order (`:status` included).
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// Every trailer, in order.
    pub fn trailers(&self) -> &[(String, Vec<u8>)] {
        &self.trailers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taken.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as text.
    ///
    /// # Errors
    /// [`ErrorKind::NonUtf8Body`] if it is not UTF-8.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.body)
            .map_err(|_| Error::from(ErrorKind::NonUtf8Body { target: TARGET }))
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// [`ErrorKind::Json`] naming the path of the problem.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        crate::json_path::from_slice(&self.body).map_err(|(path, message)| {
            Error::from(ErrorKind::Json {
                target: TARGET,
                path,
                message,
            })
        })
    }
}

/// Reads a callout answer in full during `on_http_call_response`: `None` for a
/// call that failed without a response.
pub(crate) fn read_response(
    num_headers: usize,
    body_size: usize,
    num_trailers: usize,
) -> Result<Option<HttpResponse>> {
    let view = CalloutResponse::new(num_headers, body_size, num_trailers);
    if view.is_failure() {
        return Ok(None);
    }
    let headers = view.headers()?;
    let status = headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok())
        .ok_or_else(|| Error::malformed("the callout response status"))?;
    Ok(Some(HttpResponse {
        status,
        headers,
        body: view.body()?,
        trailers: view.trailers()?,
    }))
}
