//! Header maps with Envoy's semantics, and the proxy-wasm pairs codec.

/// An ordered header map as Envoy keeps it: lower-case names, repeated names
/// allowed, values as bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields(Vec<(Vec<u8>, Vec<u8>)>);

/// Envoy's host refuses serialized maps larger than this or with more pairs
/// (`PROXY_WASM_HOST_PAIRS_MAX_BYTES` / `_MAX_COUNT`).
const MAX_PAIRS_BYTES: usize = 1 << 20;
const MAX_PAIRS_COUNT: usize = 1024;

impl Fields {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Envoy's `HeaderMap::byteSize()`: the sum of name and value lengths.
    pub(crate) fn byte_size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    /// The first value of `key` (Envoy returns only the first of repeated headers).
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let key = key.to_ascii_lowercase();
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// `addCopy`: appends, keeping existing values.
    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) {
        self.0.push((key.to_ascii_lowercase(), value.to_vec()));
    }

    /// `setCopy`: removes every value of `key`, then appends the new one.
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        self.remove(key);
        self.add(key, value);
    }

    /// Removes every value of `key`.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        let key = key.to_ascii_lowercase();
        self.0.retain(|(k, _)| *k != key);
    }

    /// Serializes in the proxy-wasm pairs format.
    pub(crate) fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.0.len() * 10 + self.byte_size());
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in &self.0 {
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
    pub(crate) fn deserialize(bytes: &[u8]) -> Self {
        Self::try_deserialize(bytes).unwrap_or_default()
    }

    fn try_deserialize(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() || bytes == [0] {
            return Some(Self::new());
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
        let mut fields = Self::new();
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

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut f = Self::new();
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
        let f: Fields = [(":path", "/x"), ("x-a", ""), ("x-a", "2")].into_iter().collect();
        assert_eq!(Fields::deserialize(&f.serialize()), f);
    }

    #[test]
    fn malformed_maps_parse_as_empty() {
        let good: Fields = [("k", "v")].into_iter().collect();
        let bytes = good.serialize();
        // trailing byte
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(Fields::deserialize(&trailing).len(), 0);
        // missing NUL after the value
        let mut no_nul = bytes.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'x';
        assert_eq!(Fields::deserialize(&no_nul).len(), 0);
        // truncated
        assert_eq!(Fields::deserialize(&bytes[..bytes.len() - 2]).len(), 0);
        // absurd count
        assert_eq!(Fields::deserialize(&[0xff, 0xff, 0xff, 0xff]).len(), 0);
        // the two empty encodings
        assert_eq!(Fields::deserialize(&[]).len(), 0);
        assert_eq!(Fields::deserialize(&[0]).len(), 0);
    }

    #[test]
    fn envoy_map_semantics() {
        let mut f = Fields::new();
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
