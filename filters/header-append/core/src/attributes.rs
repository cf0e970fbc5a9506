//! The Envoy attributes a template may read with `{attr:NAME}`.
//!
//! Only the attributes listed here are accepted, so a typo is an error at
//! configure time rather than a header that silently never appears. Each one has
//! the type Envoy encodes it with and the phase in which Envoy can answer it.

use std::fmt;

/// How Envoy encodes an attribute's value (`proxy_get_property`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Raw bytes (strings), copied as they are.
    Text,
    /// A signed 64-bit integer, 8 bytes little-endian; rendered in decimal.
    Int,
    /// An unsigned 64-bit integer, 8 bytes little-endian; rendered in decimal.
    UInt,
    /// One byte, 0 or 1; rendered `false` or `true`.
    Bool,
}

/// When Envoy can answer an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Derived from the request headers: readable while Envoy holds them (the
    /// request phase). Response templates get the value captured in the request
    /// phase.
    RequestHeaders,
    /// Readable in both phases (connection, route, plugin facts).
    Stream,
    /// Exists only once there is a response or an upstream connection: response
    /// templates only.
    Response,
}

/// One attribute a template can read.
#[derive(Debug, PartialEq, Eq)]
pub struct Attribute {
    /// The dotted name used in templates, e.g. `source.address`.
    pub name: &'static str,
    /// The property path Envoy resolves (segments).
    pub path: &'static [&'static str],
    /// Its encoding.
    pub kind: Kind,
    /// When it can be read.
    pub availability: Availability,
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

macro_rules! table {
    ($($name:literal => [$($seg:literal),+], $kind:ident, $when:ident;)*) => {
        /// Every attribute templates accept.
        pub static ATTRIBUTES: &[Attribute] = &[$(
            Attribute {
                name: $name,
                path: &[$($seg),+],
                kind: Kind::$kind,
                availability: Availability::$when,
            },
        )*];
    };
}

table! {
    "request.path" => ["request", "path"], Text, RequestHeaders;
    "request.url_path" => ["request", "url_path"], Text, RequestHeaders;
    "request.query" => ["request", "query"], Text, RequestHeaders;
    "request.host" => ["request", "host"], Text, RequestHeaders;
    "request.scheme" => ["request", "scheme"], Text, RequestHeaders;
    "request.method" => ["request", "method"], Text, RequestHeaders;
    "request.referer" => ["request", "referer"], Text, RequestHeaders;
    "request.useragent" => ["request", "useragent"], Text, RequestHeaders;
    "request.id" => ["request", "id"], Text, RequestHeaders;
    "request.protocol" => ["request", "protocol"], Text, Stream;
    "source.address" => ["source", "address"], Text, Stream;
    "source.port" => ["source", "port"], Int, Stream;
    "destination.address" => ["destination", "address"], Text, Stream;
    "destination.port" => ["destination", "port"], Int, Stream;
    "connection.id" => ["connection", "id"], UInt, Stream;
    "connection.mtls" => ["connection", "mtls"], Bool, Stream;
    "connection.requested_server_name" => ["connection", "requested_server_name"], Text, Stream;
    "connection.tls_version" => ["connection", "tls_version"], Text, Stream;
    "connection.subject_peer_certificate" => ["connection", "subject_peer_certificate"], Text, Stream;
    "connection.uri_san_peer_certificate" => ["connection", "uri_san_peer_certificate"], Text, Stream;
    "connection.dns_san_peer_certificate" => ["connection", "dns_san_peer_certificate"], Text, Stream;
    "connection.sha256_peer_certificate_digest" => ["connection", "sha256_peer_certificate_digest"], Text, Stream;
    "xds.cluster_name" => ["xds", "cluster_name"], Text, Stream;
    "xds.route_name" => ["xds", "route_name"], Text, Stream;
    "xds.virtual_host_name" => ["xds", "virtual_host_name"], Text, Stream;
    "xds.node.id" => ["xds", "node", "id"], Text, Stream;
    "plugin_name" => ["plugin_name"], Text, Stream;
    "plugin_root_id" => ["plugin_root_id"], Text, Stream;
    "plugin_vm_id" => ["plugin_vm_id"], Text, Stream;
    "response.code" => ["response", "code"], Int, Response;
    "response.code_details" => ["response", "code_details"], Text, Response;
    "response.flags" => ["response", "flags"], Int, Response;
    "upstream.address" => ["upstream", "address"], Text, Response;
    "upstream.port" => ["upstream", "port"], Int, Response;
    "upstream.local_address" => ["upstream", "local_address"], Text, Response;
}

/// The attribute called `name`, if templates accept it.
pub fn find(name: &str) -> Option<&'static Attribute> {
    ATTRIBUTES.iter().find(|a| a.name == name)
}

impl Attribute {
    /// Turns the bytes Envoy returned into the header value bytes; `None` if they
    /// do not have the size the attribute's type needs.
    pub fn render(&self, raw: Vec<u8>) -> Option<Vec<u8>> {
        match self.kind {
            Kind::Text => Some(raw),
            Kind::Int => {
                let bytes = <[u8; 8]>::try_from(raw.as_slice()).ok()?;
                Some(i64::from_le_bytes(bytes).to_string().into_bytes())
            }
            Kind::UInt => {
                let bytes = <[u8; 8]>::try_from(raw.as_slice()).ok()?;
                Some(u64::from_le_bytes(bytes).to_string().into_bytes())
            }
            Kind::Bool => match raw.as_slice() {
                [0] => Some(b"false".to_vec()),
                [_] => Some(b"true".to_vec()),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_their_paths() {
        for (i, a) in ATTRIBUTES.iter().enumerate() {
            assert_eq!(a.name, a.path.join("."), "{a}");
            assert!(
                ATTRIBUTES[i + 1..].iter().all(|b| b.name != a.name),
                "{a} twice"
            );
        }
    }

    #[test]
    fn values_render_as_text() {
        let port = find("source.port").expect("known");
        assert_eq!(
            port.render(51234i64.to_le_bytes().to_vec()).as_deref(),
            Some(&b"51234"[..])
        );
        assert_eq!(port.render(vec![1, 2, 3]), None, "wrong size is missing");
        let id = find("connection.id").expect("known");
        assert_eq!(
            id.render(u64::MAX.to_le_bytes().to_vec()).as_deref(),
            Some(u64::MAX.to_string().as_bytes())
        );
        let mtls = find("connection.mtls").expect("known");
        assert_eq!(mtls.render(vec![0]).as_deref(), Some(&b"false"[..]));
        assert_eq!(mtls.render(vec![1]).as_deref(), Some(&b"true"[..]));
        assert_eq!(mtls.render(vec![]), None);
        let addr = find("source.address").expect("known");
        assert_eq!(
            addr.render(b"10.0.0.1:5".to_vec()).as_deref(),
            Some(&b"10.0.0.1:5"[..])
        );
        assert!(find("source.nonexistent").is_none());
    }
}
