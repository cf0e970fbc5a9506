//! Views over the request and response header maps of the current stream.

use std::ops::{Deref, DerefMut};

use crate::host::{self, MapType};
use crate::{BufferBody, Error, ErrorKind, Result};

/// A header map owned by the host: reads and writes go straight to Envoy.
///
/// Names are matched case-insensitively (Envoy lower-cases them). Values are bytes;
/// [`get`](Self::get) returns text and reports non-UTF-8 values as an error rather
/// than panicking, [`get_bytes`](Self::get_bytes) returns them untouched.
///
/// A view is only handed to a filter inside the callback where Envoy allows access;
/// a call the host still refuses comes back as an error whose
/// [`host_status`](Error::host_status) is set.
#[derive(Debug)]
pub struct Headers {
    map: MapType,
    end_of_stream: bool,
    buffer: Option<BufferBody>,
}

impl Headers {
    #[inline]
    fn new(map: MapType, end_of_stream: bool) -> Self {
        Self {
            map,
            end_of_stream,
            buffer: None,
        }
    }

    /// Asks for the whole body in one body callback (see [`BufferBody`]). With
    /// [`BufferBody::will_modify`], `content-length` is removed now.
    ///
    /// Only the headers views of a stream honour it (not trailers).
    ///
    /// # Errors
    /// A host error if `content-length` cannot be removed.
    pub fn buffer_body(&mut self, spec: BufferBody) -> Result<()> {
        if spec.modifies() {
            self.remove("content-length")?;
        }
        self.buffer = Some(spec);
        Ok(())
    }

    #[inline]
    pub(crate) fn take_buffer_body(&mut self) -> Option<BufferBody> {
        self.buffer.take()
    }

    /// What the view is, for error messages (`request headers`, ...).
    fn target(&self) -> &'static str {
        self.map.target()
    }

    #[inline]
    fn err(&self, call: &'static str) -> impl FnOnce(host::Status) -> Error + '_ {
        move |status| Error::host(call, self.target(), status)
    }

    /// Whether this header block ends the stream (no body or trailers follow).
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// The first value of `name` as text, or `None` if absent.
    ///
    /// # Errors
    /// [`ErrorKind::NonUtf8Header`] if the value is not UTF-8; a host error if the
    /// host refuses the call.
    pub fn get(&self, name: &str) -> Result<Option<String>> {
        match self.get_bytes(name)? {
            None => Ok(None),
            Some(bytes) => utf8(name, bytes).map(Some),
        }
    }

    /// The first value of `name` as raw bytes, or `None` if absent.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    #[inline]
    pub fn get_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        host::get_map_value(self.map, name).map_err(self.err("proxy_get_header_map_value"))
    }

    /// Whether `name` is present.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.get_bytes(name)?.is_some())
    }

    /// Every value of `name`, in order, as text.
    ///
    /// # Errors
    /// As for [`Headers::all`], or [`ErrorKind::NonUtf8Header`].
    pub fn get_all(&self, name: &str) -> Result<Vec<String>> {
        self.get_all_bytes(name)?
            .into_iter()
            .map(|v| utf8(name, v))
            .collect()
    }

    /// Every value of `name`, in order, as bytes.
    ///
    /// # Errors
    /// As for [`Headers::all`].
    pub fn get_all_bytes(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        // Only the values of `name` are copied out of the host's answer.
        let raw = host::get_map_pairs(self.map).map_err(self.err("proxy_get_header_map_pairs"))?;
        host::map_values(&raw, name).ok_or_else(|| Error::malformed(self.target()))
    }

    /// Every entry in order, repeated names included. Names are text (Envoy only
    /// accepts valid header names); values are bytes.
    ///
    /// # Errors
    /// A host error if the host refuses the call, [`ErrorKind::Malformed`] if its
    /// answer cannot be parsed.
    pub fn all(&self) -> Result<Vec<(String, Vec<u8>)>> {
        read_pairs(self.map, self.target())
    }

    /// Replaces the whole map with `pairs`.
    ///
    /// # Errors
    /// A host error if the headers are no longer mutable.
    pub fn set_all<K: AsRef<str>, V: AsRef<[u8]>>(&mut self, pairs: &[(K, V)]) -> Result<()> {
        let pairs: Vec<(&str, &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        host::set_map_pairs(self.map, &host::serialize_pairs(&pairs))
            .map_err(self.err("proxy_set_header_map_pairs"))
    }

    /// Sets `name` to `value`, replacing every existing value.
    ///
    /// # Errors
    /// A host error if the headers are no longer mutable.
    #[inline]
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<()> {
        host::replace_map_value(self.map, name, value.as_ref())
            .map_err(self.err("proxy_replace_header_map_value"))
    }

    /// Appends a value for `name`, keeping existing ones.
    ///
    /// # Errors
    /// A host error if the headers are no longer mutable.
    #[inline]
    pub fn add(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<()> {
        host::add_map_value(self.map, name, value.as_ref())
            .map_err(self.err("proxy_add_header_map_value"))
    }

    /// Removes every value of `name`. Removing an absent header is not an error.
    ///
    /// # Errors
    /// A host error if the headers are no longer mutable.
    #[inline]
    pub fn remove(&mut self, name: &str) -> Result<()> {
        host::remove_map_value(self.map, name).map_err(self.err("proxy_remove_header_map_value"))
    }
}

/// The request headers, in `on_request_headers`. Dereferences to [`Headers`].
#[derive(Debug)]
pub struct RequestHeaders(Headers);

impl RequestHeaders {
    #[inline]
    pub(crate) fn new(end_of_stream: bool) -> Self {
        Self(Headers::new(MapType::RequestHeaders, end_of_stream))
    }

    /// A view of the same headers to move into a task ([`Flow::wait`](crate::Flow::wait)):
    /// after an `await` it reads and changes the headers Envoy still holds for
    /// the paused stream. Once the stream went on, the host refuses the calls
    /// (an error, as anywhere outside the headers' window).
    ///
    /// [`Headers::buffer_body`] on it has no effect: ask in the callback.
    pub fn for_task(&self) -> RequestHeaders {
        Self::new(self.end_of_stream())
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

    /// The `:scheme` pseudo-header (`http` or `https`).
    ///
    /// # Errors
    /// As for [`Headers::get`].
    pub fn scheme(&self) -> Result<Option<String>> {
        self.get(":scheme")
    }

    /// The path without its query string.
    ///
    /// # Errors
    /// As for [`Headers::get`].
    pub fn path_only(&self) -> Result<Option<String>> {
        Ok(self.path()?.map(|p| match p.split_once('?') {
            Some((path, _)) => path.to_owned(),
            None => p,
        }))
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is a space),
    /// or `None` if absent.
    ///
    /// # Errors
    /// As for [`Headers::get`].
    pub fn query_param(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .query_params()?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v))
    }

    /// Every query parameter in order, percent-decoded. Invalid escapes are kept
    /// as they are; invalid UTF-8 becomes U+FFFD.
    ///
    /// # Errors
    /// As for [`Headers::get`].
    pub fn query_params(&self) -> Result<Vec<(String, String)>> {
        let Some(path) = self.path()? else {
            return Ok(Vec::new());
        };
        Ok(path
            .split_once('?')
            .map(|(_, q)| q.split_once('#').map_or(q, |(q, _)| q))
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect())
    }
}

/// Decodes `%XX` escapes and `+` (as a space) in a query component.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn utf8(name: &str, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| {
        Error::from(ErrorKind::NonUtf8Header {
            name: name.to_owned(),
        })
    })
}

/// Reads and decodes a whole map.
pub(crate) fn read_pairs(map: MapType, target: &'static str) -> Result<Vec<(String, Vec<u8>)>> {
    let raw = host::get_map_pairs(map)
        .map_err(|status| Error::host("proxy_get_header_map_pairs", target, status))?;
    let pairs = host::deserialize_pairs(&raw).ok_or_else(|| Error::malformed(target))?;
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect())
}

/// The response headers, in `on_response_headers`. Dereferences to [`Headers`].
#[derive(Debug)]
pub struct ResponseHeaders(Headers);

impl ResponseHeaders {
    #[inline]
    pub(crate) fn new(end_of_stream: bool) -> Self {
        Self(Headers::new(MapType::ResponseHeaders, end_of_stream))
    }

    /// A view of the same headers to move into a task, as
    /// [`RequestHeaders::for_task`].
    pub fn for_task(&self) -> ResponseHeaders {
        Self::new(self.end_of_stream())
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

/// The request trailers, in `on_request_trailers`. Dereferences to [`Headers`].
#[derive(Debug)]
pub struct RequestTrailers(Headers);

impl RequestTrailers {
    pub(crate) fn new() -> Self {
        Self(Headers::new(MapType::RequestTrailers, true))
    }
}

/// The response trailers, in `on_response_trailers` (for example `grpc-status`).
/// Dereferences to [`Headers`].
#[derive(Debug)]
pub struct ResponseTrailers(Headers);

impl ResponseTrailers {
    pub(crate) fn new() -> Self {
        Self(Headers::new(MapType::ResponseTrailers, true))
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
deref_to_headers!(
    RequestHeaders,
    ResponseHeaders,
    RequestTrailers,
    ResponseTrailers
);

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_components_are_decoded() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }
}
