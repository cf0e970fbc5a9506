//! The stream's filter state as Envoy keeps it for Wasm: `proxy_set_property`
//! writes a typed value under `wasm.<path>` (a `CelState` whose type,
//! read-only flag and life span come from a `declare_property` of the plugin's
//! root context), and `set_envoy_filter_state` stores an object built by one of
//! Envoy 1.40's registered filter state object factories under the factory's
//! name. Both are readable as `filter_state.<key>` (and properties written with
//! `proxy_set_property` by their path).
//!
//! The harness runs every stream on a connection of its own, as the
//! conformance suite does with Envoy, so the three life spans (`FilterChain`,
//! `DownstreamRequest`, `DownstreamConnection`) all end with the stream; they
//! are kept with each value.

use std::net::{IpAddr, SocketAddr};

use super::Status;

/// `WasmType` of `declare_property`: how a property's value reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ValueType {
    /// Raw bytes (the default, and what an unknown type number means).
    #[default]
    Bytes,
    /// A string.
    String,
    /// A FlatBuffers table described by the schema (a reflection schema).
    FlatBuffers,
    /// A protobuf message whose type URL is the schema.
    Protobuf,
}

impl ValueType {
    /// The `WasmType` enum number; an unknown one reads as `Bytes`, as Envoy's
    /// `switch` leaves it.
    pub(crate) fn from_wire(n: i32) -> Self {
        match n {
            1 => ValueType::String,
            2 => ValueType::FlatBuffers,
            3 => ValueType::Protobuf,
            _ => ValueType::Bytes,
        }
    }
}

/// `LifeSpan` of `declare_property` and `set_envoy_filter_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum LifeSpan {
    /// The filter chain (the default, and what an unknown number means).
    #[default]
    FilterChain,
    /// The downstream request.
    Request,
    /// The downstream connection.
    Connection,
}

impl LifeSpan {
    /// The `LifeSpan` enum number; an unknown one is `FilterChain`, as in
    /// Envoy's `toFilterStateLifeSpan`.
    pub(crate) fn from_wire(n: i32) -> Self {
        match n {
            1 => LifeSpan::Request,
            2 => LifeSpan::Connection,
            _ => LifeSpan::FilterChain,
        }
    }
}

/// A property declared with `declare_property` (Envoy's `CelStatePrototype`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Prototype {
    pub(crate) readonly: bool,
    pub(crate) value_type: ValueType,
    pub(crate) schema: Vec<u8>,
    pub(crate) span: LifeSpan,
}

/// A value written with `proxy_set_property` (Envoy's `CelState`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Property {
    pub(crate) prototype: Prototype,
    pub(crate) value: Vec<u8>,
}

/// What an object stored by `set_envoy_filter_state` serializes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Object {
    /// An object serializing as these bytes (a string, a number's or a
    /// boolean's text, an IP address as `ip:0`).
    Text(Vec<u8>),
    /// An address object with fields `ip` and `port`.
    Address(SocketAddr),
    /// An object that has no serialized form (reads are `NotFound`).
    Opaque,
}

/// One filter state entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Written with `proxy_set_property`, under `wasm.<path>`.
    Property(Property),
    /// Stored with `set_envoy_filter_state`.
    Object { object: Object, span: LifeSpan },
}

/// The key `proxy_set_property` writes for `path`.
pub(crate) fn property_key(path: &[u8]) -> Vec<u8> {
    let mut key = b"wasm.".to_vec();
    key.extend_from_slice(path);
    key
}

/// A filter state value as a property read sees it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes (a string or bytes value).
    Bytes(Vec<u8>),
    /// A 64-bit integer.
    Int(i64),
    /// A map whose keys Envoy does not list: serialized as zero pairs.
    EmptyMap,
}

const NOT_FOUND: Status = Status::NotFound;

/// A typed property that is a message (protobuf or FlatBuffers): Envoy decodes
/// it with the declared schema, which the harness does not do.
fn not_emulated_message(value_type: ValueType) -> Status {
    tracing::warn!(
        target: "weir_harness::hostcall",
        ?value_type,
        "reading into a property declared as a message is not emulated by weir-harness; answering Unimplemented"
    );
    Status::Unimplemented
}

impl Read {
    /// The bytes `proxy_get_property` returns: integers 8-byte little-endian,
    /// a map as proxy-wasm pairs.
    pub(crate) fn encode(self) -> Vec<u8> {
        match self {
            Read::Bytes(b) => b,
            Read::Int(i) => i.to_le_bytes().to_vec(),
            Read::EmptyMap => 0u32.to_le_bytes().to_vec(),
        }
    }
}

impl Property {
    /// The value as Envoy's `CelState::exprValue` gives it: `last` when the
    /// path ends here (a message-typed value then reads as its bytes).
    fn read(&self, last: bool, rest: &[&[u8]]) -> Result<Read, Status> {
        match self.prototype.value_type {
            ValueType::Bytes | ValueType::String => {}
            ValueType::Protobuf | ValueType::FlatBuffers if last => {}
            other => return Err(not_emulated_message(other)),
        }
        if rest.is_empty() {
            Ok(Read::Bytes(self.value.clone()))
        } else {
            Err(NOT_FOUND)
        }
    }
}

/// `proxy_get_property` of a name that is no attribute: the property written
/// with `proxy_set_property` under that name, then the rest of the path.
pub(crate) fn read_property(
    state: &std::collections::HashMap<Vec<u8>, Entry>,
    name: &[u8],
    rest: &[&[u8]],
) -> Result<Read, Status> {
    match state.get(&property_key(name)) {
        Some(Entry::Property(p)) => p.read(rest.is_empty(), rest),
        _ => Err(NOT_FOUND),
    }
}

/// `filter_state.<key>...`: any entry by its full key.
pub(crate) fn read_entry(
    state: &std::collections::HashMap<Vec<u8>, Entry>,
    path: &[&[u8]],
) -> Result<Read, Status> {
    let Some((key, rest)) = path.split_first() else {
        // The wrapper itself is a map Envoy cannot list.
        return Err(Status::SerializationFailure);
    };
    match state.get(*key).ok_or(NOT_FOUND)? {
        // Always read as an intermediate value (messages decoded).
        Entry::Property(p) => p.read(false, rest),
        Entry::Object { object, .. } => match (object, rest) {
            (Object::Text(text), []) => Ok(Read::Bytes(text.clone())),
            (Object::Address(_), []) => Ok(Read::EmptyMap),
            (Object::Address(a), [b"ip"]) => Ok(Read::Bytes(a.ip().to_string().into_bytes())),
            (Object::Address(a), [b"port"]) => Ok(Read::Int(i64::from(a.port()))),
            _ => Err(NOT_FOUND),
        },
    }
}

/// `proxy_set_property`: the first write creates the value from the
/// declaration of the plugin's root context (`declared`, else bytes, writable,
/// filter chain); a read-only value cannot be written again (`BadArgument`).
pub(crate) fn write_property(
    state: &mut std::collections::HashMap<Vec<u8>, Entry>,
    path: &[u8],
    value: Vec<u8>,
    declared: Option<&Prototype>,
) -> Result<(), Status> {
    match state.entry(property_key(path)) {
        std::collections::hash_map::Entry::Occupied(mut e) => match e.get_mut() {
            Entry::Property(p) if p.prototype.readonly => Err(Status::BadArgument),
            Entry::Property(p) => {
                p.value = value;
                Ok(())
            }
            // Only properties are stored under `wasm.`.
            Entry::Object { .. } => Err(Status::BadArgument),
        },
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(Entry::Property(Property {
                prototype: declared.cloned().unwrap_or_default(),
                value,
            }));
            Ok(())
        }
    }
}

/// absl's `SimpleAtoi` for an unsigned type of `max`: ASCII whitespace around,
/// an optional `+`, decimal digits; no `-`, no overflow.
fn simple_atou(text: &[u8], max: u64) -> Option<u64> {
    let s = std::str::from_utf8(text).ok()?;
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b');
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|&n| n <= max)
}

/// absl's `SimpleAtob`: `true`/`t`/`yes`/`y`/`1` and `false`/`f`/`no`/`n`/`0`,
/// in any case.
fn simple_atob(text: &[u8]) -> Option<bool> {
    let is = |words: &[&str]| {
        words
            .iter()
            .any(|w| text.eq_ignore_ascii_case(w.as_bytes()))
    };
    if is(&["true", "t", "yes", "y", "1"]) {
        Some(true)
    } else if is(&["false", "f", "no", "n", "0"]) {
        Some(false)
    } else {
        None
    }
}

/// An `IP:PORT` (`[v6]:PORT`) address as Envoy parses it for its address
/// objects: a numeric IP, a port of at most 65535.
fn ip_and_port(text: &[u8]) -> Option<SocketAddr> {
    let s = std::str::from_utf8(text).ok()?;
    let (ip, port) = s.rsplit_once(':')?;
    let ip: IpAddr = match ip.strip_prefix('[') {
        Some(v6) => IpAddr::V6(v6.strip_suffix(']')?.parse().ok()?),
        None => IpAddr::V4(ip.parse().ok()?),
    };
    let port = u16::try_from(simple_atou(port.as_bytes(), u64::from(u16::MAX))?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Registered in Envoy 1.40 but not emulated: their accepted input or their
/// effect on the stream is not modelled here.
const NOT_EMULATED_FACTORIES: &[&str] = &[
    "envoy.ai.llm_protocol.request",
    "envoy.network.transport_socket.http_11_proxy.info",
    "envoy.router.debug_config",
];

/// Builds the object Envoy 1.40's factory `name` makes of `value`
/// (`createFromBytes`): `NotFound` for a name no factory has, `BadArgument`
/// for a value the factory refuses.
pub(crate) fn create_object(name: &[u8], value: &[u8]) -> Result<Object, Status> {
    let text = || Ok(Object::Text(value.to_vec()));
    let number = |max: u64| {
        simple_atou(value, max)
            .map(|n| Object::Text(n.to_string().into_bytes()))
            .ok_or(Status::BadArgument)
    };
    let boolean = |b: bool| {
        Object::Text(if b {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        })
    };
    match name {
        // String objects: any bytes, read back as they are.
        b"envoy.string"
        | b"envoy.hashable_string"
        | b"envoy.network.upstream_server_name"
        | b"envoy.network.upstream_subject_alt_names"
        | b"envoy.network.network_namespace"
        | b"envoy.tcp_proxy.cluster"
        | b"envoy.upstream.dynamic_host" => text(),
        b"envoy.ai.model.request" if value.is_empty() => Err(Status::BadArgument),
        b"envoy.ai.model.request" => text(),
        // A protocol list with no serialized form.
        b"envoy.network.application_protocols" => Ok(Object::Opaque),
        b"envoy.network.transport_socket.original_dst_address"
        | b"envoy.filters.listener.original_dst.local_ip"
        | b"envoy.filters.listener.original_dst.remote_ip" => ip_and_port(value)
            .map(Object::Address)
            .ok_or(Status::BadArgument),
        // An IP without a port, serialized as an address with port 0.
        b"envoy.network.ip" => {
            let ip: IpAddr = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(Status::BadArgument)?;
            Ok(Object::Text(
                SocketAddr::new(ip, 0).to_string().into_bytes(),
            ))
        }
        b"envoy.upstream.dynamic_port" | b"envoy.ratelimit.hits_addend" => {
            number(u64::from(u32::MAX))
        }
        b"envoy.tcp_proxy.per_connection_idle_timeout_ms" => number(u64::MAX),
        b"envoy.bool" => simple_atob(value).map(boolean).ok_or(Status::BadArgument),
        // Only `true` disables tunneling; anything else is false.
        b"envoy.tcp_proxy.disable_tunneling" => Ok(boolean(value == b"true")),
        _ => {
            let name = String::from_utf8_lossy(name);
            if NOT_EMULATED_FACTORIES.contains(&&*name) {
                tracing::warn!(
                    target: "weir_harness::hostcall",
                    key = %name,
                    "set_envoy_filter_state of this object is not emulated by weir-harness; answering Unimplemented"
                );
                Err(Status::Unimplemented)
            } else {
                Err(NOT_FOUND)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn numbers_and_booleans_parse_as_absl_does() {
        assert_eq!(simple_atou(b" +080 ", 65535), Some(80));
        assert_eq!(simple_atou(b"65536", u64::from(u32::MAX)), Some(65536));
        assert_eq!(simple_atou(b"4294967296", u64::from(u32::MAX)), None);
        assert_eq!(simple_atou(b"-0", 10), None);
        assert_eq!(simple_atou(b"", 10), None);
        assert_eq!(simple_atou(b"0x10", 100), None);
        assert_eq!(simple_atou(b"18446744073709551616", u64::MAX), None);
        assert_eq!(simple_atob(b"TRUE"), Some(true));
        assert_eq!(simple_atob(b"n"), Some(false));
        assert_eq!(simple_atob(b" true"), None);
    }

    #[test]
    fn objects_are_built_and_read_as_envoy_does() {
        let create = |name: &str, value: &str| create_object(name.as_bytes(), value.as_bytes());
        assert_eq!(create("unknown.key", "x"), Err(Status::NotFound));
        assert_eq!(
            create("envoy.router.debug_config", "x"),
            Err(Status::Unimplemented)
        );
        assert_eq!(create("envoy.string", ""), Ok(Object::Text(Vec::new())));
        assert_eq!(
            create("envoy.ai.model.request", ""),
            Err(Status::BadArgument)
        );
        assert_eq!(
            create("envoy.network.ip", "::1"),
            Ok(Object::Text(b"[::1]:0".to_vec()))
        );
        assert_eq!(
            create("envoy.network.ip", "1.2.3.4:80"),
            Err(Status::BadArgument)
        );
        assert_eq!(
            create("envoy.upstream.dynamic_port", "+80"),
            Ok(Object::Text(b"80".to_vec()))
        );
        assert_eq!(create("envoy.bool", "x"), Err(Status::BadArgument));
        assert_eq!(
            create("envoy.tcp_proxy.disable_tunneling", "x"),
            Ok(Object::Text(b"false".to_vec()))
        );
        let odst = "envoy.network.transport_socket.original_dst_address";
        for bad in [
            "1.2.3.4",
            "::1",
            "",
            "1.2.3.4:99999",
            " 1.2.3.4:80",
            "01.2.3.4:80",
        ] {
            assert_eq!(create(odst, bad), Err(Status::BadArgument), "{bad:?}");
        }
        let address = create(odst, "[::1]:8080").expect("address");
        let mut state = HashMap::new();
        state.insert(
            odst.as_bytes().to_vec(),
            Entry::Object {
                object: address,
                span: LifeSpan::Connection,
            },
        );
        let read = |path: &[&[u8]]| read_entry(&state, path);
        assert_eq!(read(&[odst.as_bytes()]), Ok(Read::EmptyMap));
        assert_eq!(
            read(&[odst.as_bytes(), b"ip"]),
            Ok(Read::Bytes(b"::1".to_vec()))
        );
        assert_eq!(read(&[odst.as_bytes(), b"port"]), Ok(Read::Int(8080)));
        assert_eq!(read(&[odst.as_bytes(), b"x"]), Err(Status::NotFound));
        assert_eq!(read(&[]), Err(Status::SerializationFailure));
    }

    #[test]
    fn declared_properties_are_typed_and_read_only_after_the_first_write() {
        let mut state = HashMap::new();
        let readonly = Prototype {
            readonly: true,
            value_type: ValueType::String,
            ..Prototype::default()
        };
        assert_eq!(
            write_property(&mut state, b"p", b"a".to_vec(), Some(&readonly)),
            Ok(())
        );
        assert_eq!(
            write_property(&mut state, b"p", b"b".to_vec(), Some(&readonly)),
            Err(Status::BadArgument)
        );
        assert_eq!(
            read_property(&state, b"p", &[]),
            Ok(Read::Bytes(b"a".to_vec()))
        );
        assert_eq!(read_property(&state, b"p", &[b"x"]), Err(Status::NotFound));
        assert_eq!(
            read_entry(&state, &[b"wasm.p"]),
            Ok(Read::Bytes(b"a".to_vec()))
        );
        // Undeclared: bytes, writable.
        assert_eq!(
            write_property(&mut state, b"q", b"1".to_vec(), None),
            Ok(())
        );
        assert_eq!(
            write_property(&mut state, b"q", b"2".to_vec(), None),
            Ok(())
        );
        assert_eq!(
            read_property(&state, b"q", &[]),
            Ok(Read::Bytes(b"2".to_vec()))
        );
        // A message reads as bytes at the end of the path only.
        let message = Prototype {
            value_type: ValueType::Protobuf,
            ..Prototype::default()
        };
        assert_eq!(
            write_property(&mut state, b"m", vec![8, 1], Some(&message)),
            Ok(())
        );
        assert_eq!(
            read_property(&state, b"m", &[]),
            Ok(Read::Bytes(vec![8, 1]))
        );
        assert_eq!(
            read_property(&state, b"m", &[b"f"]),
            Err(Status::Unimplemented)
        );
        assert_eq!(read_entry(&state, &[b"wasm.m"]), Err(Status::Unimplemented));
    }
}
