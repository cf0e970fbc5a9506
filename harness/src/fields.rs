//! Header maps with Envoy's semantics, and the proxy-wasm pairs codec.

use bytes::Bytes;

/// An ordered header map as Envoy keeps it: lower-case names, repeated names
/// allowed, values as bytes.
///
/// Names and values live in one byte buffer, so that building, cloning and
/// dropping a map costs two allocations whatever its size. Removing or
/// growing an entry leaves its old bytes unused in the buffer until the map
/// is dropped (a map lives for one stream).
#[derive(Clone, Default)]
pub(crate) struct Fields {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    kind: Kind,
}

/// Where an entry's name and value are in [`Fields::bytes`]: the name at
/// `start`, the value right after it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    name_len: usize,
    value_len: usize,
}

impl Entry {
    fn name<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        bytes
            .get(self.start..self.start + self.name_len)
            .unwrap_or_default()
    }

    fn value<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        let from = self.start + self.name_len;
        bytes.get(from..from + self.value_len).unwrap_or_default()
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Fields {}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fields")
            .field(
                "entries",
                &self
                    .iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v)))
                    .collect::<Vec<_>>(),
            )
            .field("kind", &self.kind)
            .finish()
    }
}

/// Which of Envoy's header map types this is. Envoy keeps some headers "inline"
/// (registered O(1) slots) per map type; adding a value to an inline header that is
/// already present appends `,value` to it instead of adding an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No inline headers (e.g. callout or local-reply extra headers before merging).
    #[default]
    Plain,
    /// A request header map.
    Request,
    /// A response header map.
    Response,
    /// A response trailer map (`grpc-status` and `grpc-message` are inline).
    ResponseTrailers,
}

/// Request headers Envoy 1.40 (official build) coalesces with `,`, as measured by
/// sending each name twice through it (`tests/tests/differential.rs` keeps
/// checking a sample of them).
const INLINE_REQUEST: &[&str] = &[
    "accept",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "authorization",
    "cache-control",
    "cdn-loop",
    "content-encoding",
    "content-type",
    "grpc-accept-encoding",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "origin",
    "pragma",
    "proxy-status",
    "referer",
    "user-agent",
    "via",
    "x-client-trace-id",
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-external-address",
    "x-envoy-is-timeout-retry",
    "x-envoy-original-path",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-request-id",
];

/// Response headers Envoy 1.40 (official build) coalesces with `,`, measured the
/// same way.
const INLINE_RESPONSE: &[&str] = &[
    "access-control-allow-credentials",
    "access-control-allow-headers",
    "access-control-allow-methods",
    "access-control-allow-origin",
    "access-control-expose-headers",
    "access-control-max-age",
    "age",
    "content-encoding",
    "content-type",
    "etag",
    "expires",
    "grpc-message",
    "grpc-status",
    "last-modified",
    "location",
    "proxy-status",
    "vary",
    "via",
    "x-envoy-attempt-count",
    "x-envoy-decorator-operation",
    "x-envoy-degraded",
    "x-envoy-immediate-health-check-fail",
    "x-envoy-ratelimited",
    "x-envoy-upstream-canary",
    "x-envoy-upstream-healthchecked-cluster",
    "x-envoy-upstream-service-time",
    "x-request-id",
];

/// Response trailers Envoy keeps inline (`INLINE_RESP_HEADERS_TRAILERS`); request
/// trailers have none.
const INLINE_RESPONSE_TRAILERS: &[&str] = &["grpc-message", "grpc-status"];

/// The longest inline header name (`x-envoy-upstream-healthchecked-cluster`).
const MAX_INLINE_NAME: usize = 38;

/// The most inline names of one length in a list.
const MAX_SAME_LENGTH: usize = 4;

/// A list of inline names grouped by length, so that a lookup compares a name
/// with the few of its length only.
struct ByLength {
    names: [[&'static [u8]; MAX_SAME_LENGTH]; MAX_INLINE_NAME + 1],
    counts: [usize; MAX_INLINE_NAME + 1],
}

impl ByLength {
    /// Groups `list` (lower-case names of at most [`MAX_INLINE_NAME`] bytes, at
    /// most [`MAX_SAME_LENGTH`] of a length; checked at compile time).
    const fn new(list: &[&'static str]) -> Self {
        let mut table = Self {
            names: [[b""; MAX_SAME_LENGTH]; MAX_INLINE_NAME + 1],
            counts: [0; MAX_INLINE_NAME + 1],
        };
        let mut i = 0;
        while i < list.len() {
            let name = list[i].as_bytes();
            assert!(name.len() <= MAX_INLINE_NAME, "inline name too long");
            let n = table.counts[name.len()];
            assert!(n < MAX_SAME_LENGTH, "too many inline names of one length");
            table.names[name.len()][n] = name;
            table.counts[name.len()] = n + 1;
            i += 1;
        }
        table
    }

    /// Whether `key` (in any case) is in the list.
    fn contains(&self, key: &[u8]) -> bool {
        let (Some(names), Some(&count)) = (self.names.get(key.len()), self.counts.get(key.len()))
        else {
            return false;
        };
        // Most candidates differ within a few bytes: fold and compare byte by
        // byte rather than compare whole names first.
        names.iter().take(count).any(|name| {
            name.iter()
                .zip(key)
                .all(|(n, k)| *n == k.to_ascii_lowercase())
        })
    }
}

static INLINE_REQUEST_BY_LENGTH: ByLength = ByLength::new(INLINE_REQUEST);
static INLINE_RESPONSE_BY_LENGTH: ByLength = ByLength::new(INLINE_RESPONSE);
static INLINE_RESPONSE_TRAILERS_BY_LENGTH: ByLength = ByLength::new(INLINE_RESPONSE_TRAILERS);

impl Kind {
    /// Whether `key` (in any case) is one of this map type's inline headers.
    fn is_inline(self, key: &[u8]) -> bool {
        match self {
            Kind::Plain => false,
            Kind::Request => INLINE_REQUEST_BY_LENGTH.contains(key),
            Kind::Response => INLINE_RESPONSE_BY_LENGTH.contains(key),
            Kind::ResponseTrailers => INLINE_RESPONSE_TRAILERS_BY_LENGTH.contains(key),
        }
    }
}

/// Whether `key` (in any case) is the lower-case `name`: usually the bytes
/// are equal, which is checked first.
fn same_name(name: &[u8], key: &[u8]) -> bool {
    name == key
        || (name.len() == key.len()
            && name
                .iter()
                .zip(key)
                .all(|(n, k)| *n == k.to_ascii_lowercase()))
}

/// Envoy's host refuses serialized maps larger than this or with more pairs
/// (`PROXY_WASM_HOST_PAIRS_MAX_BYTES` / `_MAX_COUNT`).
const MAX_PAIRS_BYTES: usize = 1 << 20;
const MAX_PAIRS_COUNT: usize = 1024;

impl Fields {
    pub(crate) fn new(kind: Kind) -> Self {
        Self {
            bytes: Vec::new(),
            entries: Vec::new(),
            kind,
        }
    }

    /// An empty map with room for `capacity` entries.
    pub(crate) fn with_capacity(kind: Kind, capacity: usize) -> Self {
        Self {
            // Names and values average a few dozen bytes.
            bytes: Vec::with_capacity(capacity * 32),
            entries: Vec::with_capacity(capacity),
            kind,
        }
    }

    /// This map emptied, as a map of `kind` with room for `capacity` entries:
    /// its buffers are reused.
    pub(crate) fn emptied(mut self, kind: Kind, capacity: usize) -> Self {
        self.bytes.clear();
        self.entries.clear();
        self.bytes.reserve(capacity * 32);
        self.entries.reserve(capacity);
        self.kind = kind;
        self
    }

    /// The bytes the map's buffer holds room for.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.bytes.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }

    /// Drops the pseudo-headers and puts `:status` first with `status`.
    pub(crate) fn with_status_first(mut self, status: &[u8]) -> Self {
        let bytes = &self.bytes;
        self.entries.retain(|e| !e.name(bytes).starts_with(b":"));
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b":status");
        self.bytes.extend_from_slice(status);
        self.entries.insert(
            0,
            Entry {
                start,
                name_len: b":status".len(),
                value_len: status.len(),
            },
        );
        self
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.entries
            .iter()
            .map(|e| (e.name(&self.bytes), e.value(&self.bytes)))
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Envoy's `HeaderMap::byteSize()`: the sum of name and value lengths.
    pub(crate) fn byte_size(&self) -> usize {
        self.entries.iter().map(|e| e.name_len + e.value_len).sum()
    }

    /// The index of the first entry named `key`. Stored names are lower-case,
    /// so a case-insensitive match is a match with the lower-cased key.
    fn position(&self, key: &[u8]) -> Option<usize> {
        // Lengths first: most entries differ in length.
        self.entries
            .iter()
            .position(|e| e.name_len == key.len() && same_name(e.name(&self.bytes), key))
    }

    /// The first value of `key` (Envoy returns only the first of repeated headers).
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let entry = self.entries.get(self.position(key)?)?;
        Some(entry.value(&self.bytes))
    }

    /// `addCopy`: appends, keeping existing values; an inline header that is
    /// already present gets `,value` appended instead.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        self.append(key, value, true);
    }

    /// [`Fields::add`] for a name known to be lower-case already (a constant
    /// or an `http::HeaderName`): the copy skips lower-casing it.
    pub(crate) fn add_lowercase(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(!key.iter().any(u8::is_ascii_uppercase), "{key:?}");
        self.append(key, value, false);
    }

    /// [`Fields::add`] for a lower-case name known to be absent from the map
    /// (so no inline coalescing can apply): a plain append.
    #[inline]
    pub(crate) fn add_new(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(!key.iter().any(u8::is_ascii_uppercase), "{key:?}");
        debug_assert!(self.position(key).is_none(), "{key:?}");
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.entries.push(Entry {
            start,
            name_len: key.len(),
            value_len: value.len(),
        });
    }

    fn append(&mut self, key: &[u8], value: &[u8], lowercase: bool) {
        if self.kind.is_inline(key)
            && let Some(i) = self.position(key)
        {
            // Move the entry to the end of the buffer with the value appended.
            let old = self.entries[i];
            let start = self.bytes.len();
            self.bytes
                .extend_from_within(old.start..old.start + old.name_len + old.value_len);
            let mut value_len = old.value_len;
            if value_len > 0 {
                self.bytes.push(b',');
                value_len += 1;
            }
            self.bytes.extend_from_slice(value);
            self.entries[i] = Entry {
                start,
                name_len: old.name_len,
                value_len: value_len + value.len(),
            };
            return;
        }
        self.push(key, value, lowercase);
    }

    /// Appends an entry, lower-casing `key` if `lowercase`.
    fn push(&mut self, key: &[u8], value: &[u8], lowercase: bool) {
        let start = self.bytes.len();
        self.bytes.reserve(key.len() + value.len());
        self.bytes.extend_from_slice(key);
        if lowercase && let Some(name) = self.bytes.get_mut(start..) {
            name.make_ascii_lowercase();
        }
        self.bytes.extend_from_slice(value);
        self.entries.push(Entry {
            start,
            name_len: key.len(),
            value_len: value.len(),
        });
    }

    /// `setCopy`: removes every value of `key`, then appends the new one (no
    /// longer present, so an inline header has nothing to coalesce with).
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        self.remove(key);
        self.push(key, value, true);
    }

    /// [`Fields::set`] for a name known to be lower-case already.
    pub(crate) fn set_lowercase(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(!key.iter().any(u8::is_ascii_uppercase), "{key:?}");
        self.remove(key);
        self.push(key, value, false);
    }

    /// Envoy's setter of an inline header (`setGrpcStatus`,
    /// `setReferenceContentType`): the first entry of `key` (lower-case) gets
    /// `value` where it stands; absent, it is appended.
    pub(crate) fn set_in_place(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(!key.iter().any(u8::is_ascii_uppercase), "{key:?}");
        let Some(i) = self.position(key) else {
            self.push(key, value, false);
            return;
        };
        // The entry's name and the new value, at the end of the buffer.
        let old = self.entries[i];
        let start = self.bytes.len();
        self.bytes
            .extend_from_within(old.start..old.start + old.name_len);
        self.bytes.extend_from_slice(value);
        self.entries[i] = Entry {
            start,
            name_len: old.name_len,
            value_len: value.len(),
        };
    }

    /// Removes every value of `key`.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        let bytes = &self.bytes;
        self.entries
            .retain(|e| e.name_len != key.len() || !same_name(e.name(bytes), key));
    }

    /// The map's values as [`Bytes`] that share one copy of the map's bytes,
    /// made when the first value is asked for: turning the map into `http`
    /// header values then costs at most one allocation instead of one per
    /// value.
    pub(crate) fn shared_values(&self) -> SharedValues<'_> {
        SharedValues {
            fields: self,
            buffer: None,
        }
    }

    /// Serializes in the proxy-wasm pairs format.
    pub(crate) fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.entries.len() * 10 + self.byte_size());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&(e.name_len as u32).to_le_bytes());
            out.extend_from_slice(&(e.value_len as u32).to_le_bytes());
        }
        for (k, v) in self.iter() {
            out.extend_from_slice(k);
            out.push(0);
            out.extend_from_slice(v);
            out.push(0);
        }
        out
    }

    /// Parses the proxy-wasm pairs format the way Envoy's host does: strictly,
    /// and any format error (including NULs missing or trailing bytes) yields an
    /// empty map. Names are lower-cased.
    pub(crate) fn deserialize(bytes: &[u8], kind: Kind) -> Self {
        Self::try_deserialize(bytes, kind).unwrap_or(Self::new(kind))
    }

    fn try_deserialize(bytes: &[u8], kind: Kind) -> Option<Self> {
        if bytes.is_empty() || bytes == [0] {
            return Some(Self::new(kind));
        }
        if bytes.len() > MAX_PAIRS_BYTES {
            return None;
        }
        let u32_at = |at: usize| -> Option<usize> {
            let b = bytes.get(at..at.checked_add(4)?)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let count = u32_at(0)?;
        if count > MAX_PAIRS_COUNT {
            return None;
        }
        let mut at = 4 + count * 8;
        let mut fields = Self::new(kind);
        for i in 0..count {
            let klen = u32_at(4 + i * 8)?;
            let vlen = u32_at(8 + i * 8)?;
            let key = bytes.get(at..at.checked_add(klen)?)?;
            at += klen;
            (bytes.get(at) == Some(&0)).then_some(())?;
            at += 1;
            let value = bytes.get(at..at.checked_add(vlen)?)?;
            at += vlen;
            (bytes.get(at) == Some(&0)).then_some(())?;
            at += 1;
            fields.add(key, value);
        }
        (at == bytes.len()).then_some(fields)
    }
}

/// A map's values over one shared copy of its bytes (see
/// [`Fields::shared_values`]).
pub(crate) struct SharedValues<'a> {
    fields: &'a Fields,
    buffer: Option<Bytes>,
}

impl SharedValues<'_> {
    /// The value of the entry at `index` (in [`Fields::iter`] order), sharing
    /// the copy; empty for an index past the end.
    pub(crate) fn value(&mut self, index: usize) -> Bytes {
        let Some(entry) = self.fields.entries.get(index) else {
            return Bytes::new();
        };
        let buffer = self
            .buffer
            .get_or_insert_with(|| Bytes::copy_from_slice(&self.fields.bytes));
        let from = entry.start + entry.name_len;
        let to = from + entry.value_len;
        if to <= buffer.len() {
            buffer.slice(from..to)
        } else {
            Bytes::new()
        }
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut f = Self::new(Kind::Plain);
        for (k, v) in iter {
            f.add(k.as_ref(), v.as_ref());
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_round_trips() {
        let f: Fields = [(":path", "/x"), ("x-a", ""), ("x-a", "2")]
            .into_iter()
            .collect();
        assert_eq!(Fields::deserialize(&f.serialize(), Kind::Plain), f);
    }

    #[test]
    fn malformed_maps_parse_as_empty() {
        let good: Fields = [("k", "v")].into_iter().collect();
        let bytes = good.serialize();
        // trailing byte
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(Fields::deserialize(&trailing, Kind::Plain).len(), 0);
        // missing NUL after the value
        let mut no_nul = bytes.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert_eq!(Fields::deserialize(&no_nul, Kind::Plain).len(), 0);
        // truncated
        assert_eq!(
            Fields::deserialize(&bytes[..bytes.len() - 2], Kind::Plain).len(),
            0
        );
        // absurd count
        assert_eq!(
            Fields::deserialize(&[0xff, 0xff, 0xff, 0xff], Kind::Plain).len(),
            0
        );
        // the two empty encodings
        assert_eq!(Fields::deserialize(&[], Kind::Plain).len(), 0);
        assert_eq!(Fields::deserialize(&[0], Kind::Plain).len(), 0);
    }

    #[test]
    fn inline_lists_are_sorted_lower_case_and_short() {
        for list in [INLINE_REQUEST, INLINE_RESPONSE, INLINE_RESPONSE_TRAILERS] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?}");
            for name in list {
                assert_eq!(name.to_ascii_lowercase(), *name);
                assert!(name.len() <= MAX_INLINE_NAME, "{name}");
            }
        }
        assert!(
            INLINE_REQUEST.contains(&"x-envoy-upstream-healthchecked-cluster")
                || INLINE_RESPONSE.contains(&"x-envoy-upstream-healthchecked-cluster")
        );
        for (kind, list) in [
            (Kind::Request, INLINE_REQUEST),
            (Kind::Response, INLINE_RESPONSE),
            (Kind::ResponseTrailers, INLINE_RESPONSE_TRAILERS),
        ] {
            for name in list {
                assert!(kind.is_inline(name.as_bytes()), "{name}");
                assert!(
                    kind.is_inline(name.to_ascii_uppercase().as_bytes()),
                    "{name}"
                );
                let mut other = name.as_bytes().to_vec();
                other[0] = b'_';
                assert!(!kind.is_inline(&other), "{name}");
            }
        }
        assert!(!Kind::Request.is_inline(b""));
        assert!(!Kind::Response.is_inline(b"cookie"));
        assert!(Kind::Request.is_inline(b"User-Agent"));
        assert!(!Kind::Request.is_inline(b"x-envoy-upstream-healthchecked-cluster-and-more"));
        assert!(!Kind::Plain.is_inline(b"accept"));
    }

    #[test]
    fn inline_headers_coalesce() {
        let mut f = Fields::new(Kind::Request);
        f.add(b"Accept", b"a/b");
        f.add(b"accept", b"c/d");
        f.add(b"cookie", b"a=1");
        f.add(b"cookie", b"b=2");
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            vec![
                (&b"accept"[..], &b"a/b,c/d"[..]),
                (&b"cookie"[..], &b"a=1"[..]),
                (&b"cookie"[..], &b"b=2"[..]),
            ]
        );
        let mut r = Fields::new(Kind::Response);
        r.add(b"accept", b"1");
        r.add(b"accept", b"2");
        assert_eq!(r.len(), 2, "accept is inline only in requests");
    }

    #[test]
    fn coalesced_and_removed_entries_serialize_as_they_read() {
        let mut f = Fields::new(Kind::Request);
        f.add(b"Accept", b"a");
        f.add(b"x-a", b"1");
        f.add(b"ACCEPT", b"b");
        f.add(b"accept", b"");
        f.remove(b"X-A");
        f.add(b"x-b", b"2");
        assert_eq!(f.get(b"accept"), Some(&b"a,b,"[..]));
        assert_eq!(f.byte_size(), "accept".len() + 4 + 3 + 1);
        let copy = Fields::deserialize(&f.serialize(), Kind::Request);
        assert_eq!(copy, f);
        assert_eq!(
            copy.iter().collect::<Vec<_>>(),
            vec![(&b"accept"[..], &b"a,b,"[..]), (&b"x-b"[..], &b"2"[..])]
        );
        assert_ne!(copy, Fields::new(Kind::Request));
    }

    #[test]
    fn inline_setters_replace_in_place() {
        let mut fields = Fields::new(Kind::Response);
        fields.add(b":status", b"200");
        fields.add(b"content-type", b"text/html");
        fields.add(b"x-a", b"1");
        fields.set_in_place(b"content-type", b"application/grpc");
        fields.set_in_place(b"grpc-status", b"14");
        let pairs: Vec<_> = fields.iter().collect();
        assert_eq!(
            pairs,
            [
                (&b":status"[..], &b"200"[..]),
                (b"content-type", b"application/grpc"),
                (b"x-a", b"1"),
                (b"grpc-status", b"14"),
            ]
        );
        assert_eq!(
            Fields::deserialize(&fields.serialize(), Kind::Response)
                .iter()
                .collect::<Vec<_>>(),
            pairs
        );
    }

    #[test]
    fn status_first() {
        let mut f = Fields::new(Kind::Response);
        f.add(b"x-a", b"1");
        f.add(b":status", b"0200");
        f.add(b"x-b", b"2");
        f.add(b":other", b"o");
        let logged = f.clone().with_status_first(b"200");
        assert_eq!(
            logged.iter().collect::<Vec<_>>(),
            vec![
                (&b":status"[..], &b"200"[..]),
                (&b"x-a"[..], &b"1"[..]),
                (&b"x-b"[..], &b"2"[..]),
            ]
        );
        assert_eq!(logged.kind(), Kind::Response);
    }

    #[test]
    fn envoy_map_semantics() {
        let mut f = Fields::new(Kind::Plain);
        f.add(b"X-A", b"1");
        f.add(b"x-b", b"2");
        f.add(b"x-a", b"3");
        assert_eq!(f.get(b"x-A"), Some(&b"1"[..]), "first value wins");
        f.set(b"x-a", b"4");
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            vec![(&b"x-b"[..], &b"2"[..]), (&b"x-a"[..], &b"4"[..])]
        );
        assert_eq!(f.byte_size(), 3 + 1 + 3 + 1);
        f.remove(b"X-B");
        assert_eq!(f.len(), 1);
    }
}
