//! HTTP trailers: what a test puts on a request or an upstream response, and
//! finds on what the upstream and the client received.
//!
//! Envoy 1.40 speaks HTTP/1.1 on both sides of the emulated chain, where
//! trailers travel after a chunked body and only when the codec is told to
//! carry them: the connection manager's `http_protocol_options.enable_trailers`
//! for the client side ([`ConnectionManager::enable_trailers`]) and the route
//! cluster's `http_protocol_options.enable_trailers` for the upstream side
//! ([`ConnectionManager::upstream_enable_trailers`]). Both are off by default,
//! as in Envoy: trailers that a disabled codec would drop are dropped, and
//! [`Outcome::warnings`] says so.
//!
//! [`ConnectionManager::enable_trailers`]: crate::ConnectionManager::enable_trailers
//! [`ConnectionManager::upstream_enable_trailers`]: crate::ConnectionManager::upstream_enable_trailers
//! [`Outcome::warnings`]: crate::Outcome::warnings

use std::ops::{Deref, DerefMut};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::fields::{Fields, Kind};
use crate::{Error, Result};

/// The trailers of a request or a response, as an extension of the
/// `http::Request` given to [`Chain::send`](crate::Chain::send) or of the
/// `http::Response` an [`Upstream`](crate::Upstream) returns. The harness puts
/// one on [`Outcome::upstream_request`](crate::Outcome::upstream_request) and
/// [`Outcome::response`](crate::Outcome::response) when the upstream or the
/// client received trailers (see [`Outcome::upstream_trailers`] and
/// [`Outcome::response_trailers`]).
///
/// A message with trailers is chunked in HTTP/1: give it no `content-length`
/// (a request with both is refused with [`Error::InvalidRequest`]; an
/// upstream response with both loses its trailers, as it would on the wire).
///
/// ```
/// use weir_harness::{ConnectionManager, Trailers};
///
/// let trailers = Trailers::from_pairs([("x-checksum", "abc123")])?;
/// let request = http::Request::post("/upload")
///     .header("host", "example.com")
///     .header("transfer-encoding", "chunked")
///     .extension(trailers)
///     .body(bytes::Bytes::from_static(b"data"))?;
/// // Chain::builder(..).connection_manager(
/// //     ConnectionManager::default().enable_trailers(true).upstream_enable_trailers(true))
/// # let _ = (request, ConnectionManager::default());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`Outcome::upstream_trailers`]: crate::Outcome::upstream_trailers
/// [`Outcome::response_trailers`]: crate::Outcome::response_trailers
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trailers(pub HeaderMap);

impl Trailers {
    /// No trailers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trailers from name/value pairs, in order (repeated names are kept).
    ///
    /// # Errors
    /// [`Error::InvalidHeader`] for a name or value HTTP cannot carry.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<Self>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let invalid = |message: String| Error::InvalidHeader {
                name: name.to_owned(),
                direction: "trailers",
                message,
            };
            let key =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?;
            let value = HeaderValue::from_bytes(value).map_err(|e| invalid(e.to_string()))?;
            map.append(key, value);
        }
        Ok(Self(map))
    }

    /// The trailers as Envoy keeps them for filters (`kind` picks the inline
    /// names).
    pub(crate) fn to_fields(&self, kind: Kind) -> Fields {
        let mut fields = Fields::with_capacity(kind, self.0.len());
        for (name, value) in &self.0 {
            fields.add(name.as_str().as_bytes(), value.as_bytes());
        }
        fields
    }

    /// Trailers as a peer receives them: the filters' map, in its order.
    pub(crate) fn from_fields(fields: &Fields, direction: &'static str) -> Result<Self> {
        let mut map = HeaderMap::with_capacity(fields.len());
        for (name, value) in fields.iter() {
            let invalid = |message: String| Error::InvalidHeader {
                name: String::from_utf8_lossy(name).into_owned(),
                direction,
                message,
            };
            let key = HeaderName::from_bytes(name).map_err(|e| invalid(e.to_string()))?;
            let value = HeaderValue::from_bytes(value).map_err(|e| invalid(e.to_string()))?;
            map.append(key, value);
        }
        Ok(Self(map))
    }
}

impl Deref for Trailers {
    type Target = HeaderMap;

    fn deref(&self) -> &HeaderMap {
        &self.0
    }
}

impl DerefMut for Trailers {
    fn deref_mut(&mut self) -> &mut HeaderMap {
        &mut self.0
    }
}

impl From<HeaderMap> for Trailers {
    fn from(map: HeaderMap) -> Self {
        Self(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_keep_order_and_repeats_and_lower_case() {
        let t = Trailers::from_pairs([("X-A", "1"), ("x-b", "2"), ("x-a", "3")]).expect("valid");
        let values: Vec<_> = t.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "3"]);
        let fields = t.to_fields(Kind::Plain);
        assert_eq!(fields.len(), 3);
        assert_eq!(fields.get(b"x-b"), Some(&b"2"[..]));
        let back = Trailers::from_fields(&fields, "request trailers").expect("valid");
        assert_eq!(back, t);
    }

    #[test]
    fn invalid_pairs_are_errors() {
        let err = Trailers::from_pairs([("bad name", "1")]).expect_err("space in name");
        assert!(matches!(err, Error::InvalidHeader { .. }), "{err}");
        let err = Trailers::from_pairs([("x-a", "line\nbreak")]).expect_err("newline");
        assert!(err.to_string().contains("x-a"), "{err}");
    }

    #[test]
    fn response_trailers_coalesce_grpc_status() {
        let t = Trailers::from_pairs([("grpc-status", "0"), ("grpc-status", "1")]).expect("valid");
        let fields = t.to_fields(Kind::ResponseTrailers);
        assert_eq!(fields.len(), 1);
        assert_eq!(fields.get(b"grpc-status"), Some(&b"0,1"[..]));
    }
}
