//! Request and response bodies.

use std::ops::{Deref, DerefMut};

use crate::host::{self, BufferType};
use crate::{Error, ErrorKind, LocalReply, RequestHeaders, ResponseHeaders, Result};

/// The data of the current body callback (or, for network filters, data
/// callback, see [`StreamData`](crate::StreamData)), owned by the host.
///
/// In streaming mode (the default) this is one chunk; after
/// [`Headers::buffer_body`](crate::Headers::buffer_body) it is the whole body,
/// delivered once at the end of the stream.
#[derive(Debug)]
pub struct Body {
    buffer: BufferType,
    target: &'static str,
    len: usize,
    end_of_stream: bool,
}

impl Body {
    pub(crate) fn new(
        buffer: BufferType,
        target: &'static str,
        len: usize,
        end_of_stream: bool,
    ) -> Self {
        Self {
            buffer,
            target,
            len,
            end_of_stream,
        }
    }

    fn err(&self, call: &'static str) -> impl FnOnce(host::Status) -> Error + '_ {
        move |status| Error::host(call, self.target, status)
    }

    /// The size of the data in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no data (the final callback of a stream often has none).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this is the last data of the stream.
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// The data.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        if self.len == 0 {
            return Ok(Vec::new());
        }
        host::get_buffer(self.buffer, 0, self.len)
            .map(Option::unwrap_or_default)
            .map_err(self.err("proxy_get_buffer_bytes"))
    }

    /// The data as text.
    ///
    /// # Errors
    /// [`ErrorKind::NonUtf8Body`] if it is not UTF-8, or as for [`Body::bytes`].
    pub fn text(&self) -> Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| {
            Error::from(ErrorKind::NonUtf8Body {
                target: self.target,
            })
        })
    }

    /// Replaces the data. Remove `content-length` in the headers callback if the
    /// size changes (see [`BufferBody::will_modify`]).
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn replace(&mut self, data: impl AsRef<[u8]>) -> Result<()> {
        let data = data.as_ref();
        host::set_buffer(self.buffer, 0, self.len, data)
            .map_err(self.err("proxy_set_buffer_bytes"))?;
        self.len = data.len();
        Ok(())
    }

    /// Inserts `data` before the current data.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn prepend(&mut self, data: impl AsRef<[u8]>) -> Result<()> {
        let data = data.as_ref();
        host::set_buffer(self.buffer, 0, 0, data).map_err(self.err("proxy_set_buffer_bytes"))?;
        self.len += data.len();
        Ok(())
    }

    /// Adds `data` after the current data.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn append(&mut self, data: impl AsRef<[u8]>) -> Result<()> {
        let data = data.as_ref();
        host::set_buffer(self.buffer, self.len, 0, data)
            .map_err(self.err("proxy_set_buffer_bytes"))?;
        self.len += data.len();
        Ok(())
    }

    /// Removes the first `n` bytes (all of them if `n` is larger), for a filter
    /// that consumes a frame header.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn drain(&mut self, n: usize) -> Result<()> {
        let n = n.min(self.len);
        if n == 0 {
            return Ok(());
        }
        host::set_buffer(self.buffer, 0, n, &[]).map_err(self.err("proxy_set_buffer_bytes"))?;
        self.len -= n;
        Ok(())
    }

    /// The data parsed as JSON.
    ///
    /// # Errors
    /// [`ErrorKind::Json`] naming the path of the problem, or as for [`Body::bytes`].
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let bytes = self.bytes()?;
        crate::json_path::from_slice(&bytes).map_err(|(path, message)| {
            Error::from(ErrorKind::Json {
                target: self.target,
                path,
                message,
            })
        })
    }

    /// Replaces the data with `value` as JSON.
    ///
    /// # Errors
    /// [`ErrorKind::Json`] if `value` cannot be serialized, or as for [`Body::replace`].
    #[cfg(feature = "json")]
    pub fn set_json<T: serde::Serialize>(&mut self, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            Error::from(ErrorKind::Json {
                target: self.target,
                path: ".".to_owned(),
                message: e.to_string(),
            })
        })?;
        self.replace(bytes)
    }
}

/// The request body, in `on_request_body`. Dereferences to [`Body`].
#[derive(Debug)]
pub struct RequestBody(Body);

impl RequestBody {
    pub(crate) fn new(len: usize, end_of_stream: bool) -> Self {
        Self(Body::new(
            BufferType::RequestBody,
            "the request body",
            len,
            end_of_stream,
        ))
    }
}

impl RequestBody {
    /// The request headers, for a filter that holds them while it reads the body.
    ///
    /// A filter holds the headers by returning [`Flow::Pause`](crate::Flow) from
    /// `on_request_headers` (usually with
    /// [`Headers::buffer_body`](crate::Headers::buffer_body)). Envoy then delivers
    /// the body while the headers wait, if the plugin's `PluginConfig` sets
    /// `allow_on_headers_stop_iteration: true` (Envoy 1.35 or later; without it
    /// Envoy delivers no body until the stream is resumed). The headers are
    /// mutable here, and [`Flow::Continue`](crate::Flow) from the body callback
    /// sends them on with the body: the way to set a header from the body, or
    /// `content-length` to the size of a rewritten body.
    ///
    /// If the headers were not held, they have been sent on already and every
    /// call on the view fails with a host error (`BadArgument`).
    pub fn held_headers(&self) -> RequestHeaders {
        RequestHeaders::new(false)
    }
}

impl ResponseBody {
    /// The response headers, for a filter that holds them while it reads the
    /// body: as for [`RequestBody::held_headers`], with `on_response_headers`.
    /// A status set here (`:status`) is the one the client gets.
    pub fn held_headers(&self) -> ResponseHeaders {
        ResponseHeaders::new(false)
    }
}

/// The response body, in `on_response_body`. Dereferences to [`Body`].
#[derive(Debug)]
pub struct ResponseBody(Body);

impl ResponseBody {
    pub(crate) fn new(len: usize, end_of_stream: bool) -> Self {
        Self(Body::new(
            BufferType::ResponseBody,
            "the response body",
            len,
            end_of_stream,
        ))
    }
}

macro_rules! deref_to_body {
    ($($view:ty),*) => {$(
        impl Deref for $view {
            type Target = Body;
            fn deref(&self) -> &Body {
                &self.0
            }
        }
        impl DerefMut for $view {
            fn deref_mut(&mut self) -> &mut Body {
                &mut self.0
            }
        }
    )*};
}
deref_to_body!(RequestBody, ResponseBody);

/// Asks for a whole body in one callback, from
/// [`Headers::buffer_body`](crate::Headers::buffer_body).
///
/// The SDK pauses each chunk (Envoy accumulates them) and calls the body callback
/// once, at the end of the stream, with everything (with trailers, just before the
/// trailers callback). A body larger than the limit
/// is answered with the `too_large` reply (`413 Payload Too Large` by default)
/// and the callback is not called.
///
/// # Examples
/// ```
/// use weir::{BufferBody, LocalReply};
/// let spec = BufferBody::up_to(64 * 1024)
///     .will_modify()
///     .too_large(LocalReply::new(413).body("body too large"));
/// assert_eq!(spec.limit(), 65536);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct BufferBody {
    limit: usize,
    modify: bool,
    too_large: LocalReply,
}

impl BufferBody {
    /// Buffers bodies of up to `limit` bytes.
    pub fn up_to(limit: usize) -> Self {
        Self {
            limit,
            modify: false,
            too_large: LocalReply::new(413)
                .body("Payload Too Large")
                .details("weir_body_too_large"),
        }
    }

    /// The filter will change the body's size: `content-length` is removed now,
    /// while the headers can still change (Envoy does not fix it up later).
    pub fn will_modify(mut self) -> Self {
        self.modify = true;
        self
    }

    /// The reply sent when the body exceeds the limit.
    pub fn too_large(mut self, reply: LocalReply) -> Self {
        self.too_large = reply;
        self
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    pub(crate) fn modifies(&self) -> bool {
        self.modify
    }

    pub(crate) fn too_large_reply(&self) -> &LocalReply {
        &self.too_large
    }
}
