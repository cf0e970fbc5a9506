//! Views over the request and response header maps of the current stream.

use std::ops::{Deref, DerefMut};

use crate::host::{self, MapType};
use crate::{BufferBody, Error, Result};

/// A header map owned by the host: reads and writes go straight to Envoy.
///
/// Names are matched case-insensitively (Envoy lower-cases them). Values are bytes;
/// [`get`](Self::get) returns text and reports non-UTF-8 values as an error rather
/// than panicking, [`get_bytes`](Self::get_bytes) returns them untouched.
///
/// A view is only handed to a filter inside the callback where Envoy allows access;
/// a call the host still refuses comes back as [`Error::Host`].
#[derive(Debug)]
pub struct Headers {
    map: MapType,
    target: &'static str,
    end_of_stream: bool,
    buffer: Option<BufferBody>,
}

impl Headers {
    fn new(map: MapType, target: &'static str, end_of_stream: bool) -> Self {
        Self {
            map,
            target,
            end_of_stream,
            buffer: None,
        }
    }

    /// Asks for the whole body in one body callback (see [`BufferBody`]). With
    /// [`BufferBody::will_modify`], `content-length` is removed now.
    ///
    /// # Errors
    /// [`Error::Host`] if `content-length` cannot be removed.
    pub fn buffer_body(&mut self, spec: BufferBody) -> Result<()> {
        if spec.modifies() {
            self.remove("content-length")?;
        }
        self.buffer = Some(spec);
        Ok(())
    }

    pub(crate) fn take_buffer_body(&mut self) -> Option<BufferBody> {
        self.buffer.take()
    }

    #[inline]
    fn err(&self, call: &'static str) -> impl FnOnce(host::Status) -> Error + '_ {
        move |status| Error::Host {
            call,
            target: self.target,
            status,
        }
    }

    /// Whether this header block ends the stream (no body or trailers follow).
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// The first value of `name` as text, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::NonUtf8Header`] if the value is not UTF-8; [`Error::Host`] if the
    /// host refuses the call.
    pub fn get(&self, name: &str) -> Result<Option<String>> {
        match self.get_bytes(name)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::NonUtf8Header {
                    name: name.to_owned(),
                }),
        }
    }

    /// The first value of `name` as raw bytes, or `None` if absent.
    ///
    /// # Errors
    /// [`Error::Host`] if the host refuses the call.
    #[inline]
    pub fn get_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        host::get_map_value(self.map, name).map_err(self.err("proxy_get_header_map_value"))
    }

    /// Whether `name` is present.
    ///
    /// # Errors
    /// [`Error::Host`] if the host refuses the call.
    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.get_bytes(name)?.is_some())
    }

    /// Every entry in order, repeated names included. Names are text (Envoy only
    /// accepts valid header names); values are bytes.
    ///
    /// # Errors
    /// [`Error::Host`] if the host refuses the call, [`Error::MalformedMap`] if its
    /// answer cannot be parsed.
    pub fn all(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let raw = host::get_map_pairs(self.map).map_err(self.err("proxy_get_header_map_pairs"))?;
        let pairs = host::deserialize_pairs(&raw).ok_or(Error::MalformedMap {
            target: self.target,
        })?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }

    /// Sets `name` to `value`, replacing every existing value.
    ///
    /// # Errors
    /// [`Error::Host`] if the headers are no longer mutable.
    #[inline]
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<()> {
        host::replace_map_value(self.map, name, value.as_ref())
            .map_err(self.err("proxy_replace_header_map_value"))
    }

    /// Appends a value for `name`, keeping existing ones.
    ///
    /// # Errors
    /// [`Error::Host`] if the headers are no longer mutable.
    #[inline]
    pub fn add(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<()> {
        host::add_map_value(self.map, name, value.as_ref())
            .map_err(self.err("proxy_add_header_map_value"))
    }

    /// Removes every value of `name`. Removing an absent header is not an error.
    ///
    /// # Errors
    /// [`Error::Host`] if the headers are no longer mutable.
    #[inline]
    pub fn remove(&mut self, name: &str) -> Result<()> {
        host::remove_map_value(self.map, name).map_err(self.err("proxy_remove_header_map_value"))
    }
}

/// The request headers, in `on_request_headers`. Dereferences to [`Headers`].
#[derive(Debug)]
pub struct RequestHeaders(Headers);

impl RequestHeaders {
    pub(crate) fn new(end_of_stream: bool) -> Self {
        Self(Headers::new(
            MapType::RequestHeaders,
            "request headers",
            end_of_stream,
        ))
    }

    /// The `:method` pseudo-header.
    ///
    /// # Errors
    /// As for [`Headers::get`].
    pub fn method(&self) -> Result<Option<String>> {
        self.get(":method")
    }

    /// The `:path` pseudo-header, query string included.
    ///
    /// # Errors
    /// As for [`Headers::get`].
    pub fn path(&self) -> Result<Option<String>> {
        self.get(":path")
    }

    /// The `:authority` pseudo-header (HTTP/1 `Host`).
    ///
    /// # Errors
    /// As for [`Headers::get`].
    pub fn authority(&self) -> Result<Option<String>> {
        self.get(":authority")
    }
}

/// The response headers, in `on_response_headers`. Dereferences to [`Headers`].
#[derive(Debug)]
pub struct ResponseHeaders(Headers);

impl ResponseHeaders {
    pub(crate) fn new(end_of_stream: bool) -> Self {
        Self(Headers::new(
            MapType::ResponseHeaders,
            "response headers",
            end_of_stream,
        ))
    }

    /// The `:status` pseudo-header as a number, or `None` if absent or not numeric.
    ///
    /// # Errors
    /// As for [`Headers::get_bytes`].
    pub fn status(&self) -> Result<Option<u16>> {
        Ok(self
            .get_bytes(":status")?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }
}

macro_rules! deref_to_headers {
    ($($view:ty),*) => {$(
        impl Deref for $view {
            type Target = Headers;
            fn deref(&self) -> &Headers {
                &self.0
            }
        }
        impl DerefMut for $view {
            fn deref_mut(&mut self) -> &mut Headers {
                &mut self.0
            }
        }
    )*};
}
deref_to_headers!(RequestHeaders, ResponseHeaders);
