//! `proxy_get_property` and `proxy_set_property`, for the attributes the harness
//! knows, encoded as Envoy 1.40 encodes them: strings and bytes raw, integers
//! (signed and unsigned) 8-byte little-endian, booleans one byte, timestamps
//! and durations as 8-byte little-endian nanoseconds, protobuf messages
//! serialized, maps (header maps, protobuf maps and `Struct`s) and lists
//! (repeated fields) in the pairs format (a list's entries as keys with empty
//! values). A path is its segments joined by NUL; a segment past a scalar is
//! `NotFound`, and a whole wrapper (`request`, `response`, `connection`,
//! `upstream`, `source`, `destination`, `xds`, `filter_state`) cannot be
//! serialized (`SerializationFailure`).
//!
//! Every context: `plugin_name`, `plugin_root_id`, `plugin_vm_id`, and
//! `xds.node`: the bootstrap's `id`, `cluster`, `metadata` and `locality`
//! (see [`crate::Node`]; none by default), `user_agent_name` `envoy`,
//! `user_agent_build_version.version` 1.40.0; serialized whole, those fields
//! in field order (an empty `metadata` or `locality` the bootstrap gives is
//! still written). Everything else is a stream attribute: `NotFound` in a
//! root context.
//!
//! Metadata (`xds.node.metadata`, each filter's struct in a `Metadata`'s
//! `filter_metadata`: the listener's, virtual host's, route's, cluster's,
//! upstream host's and its locality's) are `google.protobuf.Struct`s, read
//! as Envoy's expression context unwraps them (measured in Envoy 1.40,
//! `tests/conformance/node-metadata.yaml`): a struct is a map of its fields,
//! each value serialized as a property (a string raw, a number as an 8-byte
//! little-endian double, a bool one byte, a struct a map, a list its elements
//! as a list); a path names a field by its key or a list element by its
//! index (`absl::SimpleAtoi`: `01`, `+1` and ` 1` are 1); a null cannot be
//! serialized (`SerializationFailure`), nor a struct or list that holds one
//! anywhere; a missing key, an index out of range and a segment past a
//! scalar or a null are `NotFound`. A whole `Metadata` message
//! (`xds.route_metadata`) is serialized as protobuf's C++ runtime does (map
//! entries with key and value, oneof members even when default);
//! `typed_filter_metadata` is an empty map. Envoy lists a struct's fields in
//! its hash map's order, which changes from process to process; the harness
//! lists them by name.
//!
//! An HTTP stream, from the facts of the stream's info the chain keeps (see
//! [`crate::state::StreamFacts`]):
//! - `request.{path, url_path, host, scheme, method, query, useragent,
//!   referer, id, headers, headers.<name>, headers_bytes}` from the request
//!   headers while Envoy holds them (and in `on_log`; otherwise `headers` is
//!   an empty map and `headers_bytes` 0); `request.time` (the stream's start
//!   on the virtual clock), `request.protocol` (`HTTP/1.1`),
//!   `request.duration` (in `on_log`), `request.size` (the request's
//!   `content-length`, else the body bytes received so far) and
//!   `request.total_size` (bytes received plus the headers' bytes);
//! - `response.{code, code_details, flags, grpc_status, size, total_size,
//!   headers, headers.<name>, headers_bytes, trailers, trailers.<name>,
//!   backend_latency}`: the status and details of the response (or of whoever
//!   ended the stream: the router's `route_not_found`, `cluster_not_found`,
//!   `response_timeout`, `upstream_reset_*`, `downstream_remote_disconnect`,
//!   `wasm_close_stream`, a local reply's), Envoy's legacy response flags
//!   (`UT`, `UF`, `UC`, `NR`, `DC`, `UPE`, `NC`), the gRPC status (from the trailers,
//!   else the headers, else the HTTP status), body bytes sent to the client
//!   (plus the headers' and trailers' bytes for `total_size`), and the
//!   upstream's response time once its last byte arrived;
//! - `source.{address, port}`, `destination.{address, port}` (the emulated
//!   connection), `connection.{id, mtls, requested_server_name}` and
//!   `connection_id` (each stream has its own downstream connection, without
//!   TLS: the TLS attributes, `termination_details` and
//!   `transport_failure_reason` are `NotFound`);
//! - `upstream.{address, port, local_address, transport_failure_reason,
//!   cx_pool_ready_duration, locality}` once the router sent the request
//!   (`locality` is the route's cluster's endpoint's, the bootstrap's
//!   `load_assignment.endpoints[0].locality` or
//!   [`crate::ConnectionManager::upstream_locality`]: an
//!   `envoy.config.core.v3.Locality` serialized, empty fields left out, or
//!   one field's text; an empty message when none is given, for `STATIC` and
//!   DNS clusters alike; `tests/conformance/upstream-locality*.yaml`)
//!   (the harness's connection pool is ready at once: 0 ns; a connection the
//!   upstream refused has no `local_address` and its
//!   `transport_failure_reason` is Envoy's `delayed connect error:
//!   Connection refused`),
//!   `upstream.request_attempt_count` (0, then 1) and `upstream.num_endpoints`
//!   (the route's cluster has one);
//! - `xds.{cluster_name, cluster_metadata, route_name, route_metadata}` (not
//!   once the router found no route; the cluster's, and
//!   `upstream.num_endpoints`, never for a route whose cluster the bootstrap
//!   does not define), `xds.{virtual_host_name,
//!   virtual_host_metadata, listener_metadata, listener_direction,
//!   filter_chain_name}`; the route's, virtual host's, cluster's and
//!   listener's metadata are the bootstrap's (see
//!   [`crate::ConnectionManager::route_metadata`]);
//! - `xds.upstream_host_metadata` and `xds.upstream_host_locality_metadata`:
//!   the `metadata` of the route's cluster's endpoint and of its locality
//!   (see [`crate::ConnectionManager::upstream_host_metadata`]), once the
//!   router picked the host (it sent the headers: the request body
//!   callbacks, the response phase, `on_log`, a tick acting for the stream;
//!   also when the host then refused the connection), not before nor after
//!   a reply that never reached the router, nor for a route whose cluster
//!   the bootstrap does not define (measured in Envoy 1.40,
//!   `tests/conformance/upstream-host-metadata*.yaml`,
//!   `missing-cluster.yaml`). A host or locality of a `STATIC` cluster
//!   whose bootstrap gives no `metadata` has a null message:
//!   `SerializationFailure` whole, `NotFound` for a path; one given `{}`, or
//!   given none in a `STRICT_DNS` or `LOGICAL_DNS` cluster, has an empty one
//!   (serialized empty, `filter_metadata` an empty map);
//! - `metadata` (the stream's dynamic metadata, empty), filter state (see
//!   [`filter_state`]): `filter_state.<key>`, and a property written with
//!   `proxy_set_property` by its name; `upstream_filter_state` (once the
//!   router sent the request).
//!
//! A network filter's connection, from the connection's own stream info (as
//! measured in Envoy 1.40, `tests/conformance/l4-properties.yaml`), in the
//! connection's callbacks, its `on_log`, and a root context's callback that
//! makes it the effective context:
//! - `connection.{id, mtls, requested_server_name}` and `connection_id` (a
//!   new id for each connection), without TLS (the TLS attributes are
//!   `NotFound`); `connection.termination_details` is `NotFound` whoever
//!   closed the connection (a filter, the client, the upstream);
//! - `request.time` (when the connection was accepted), `request.size` and
//!   `request.total_size`: what Envoy counts as received, the read buffer's
//!   length at each read event (bytes a filter holds count again at the next
//!   read); `request.headers` (an empty map), `request.headers_bytes` (0);
//!   `request.protocol`, `request.duration` and every header attribute are
//!   `NotFound`;
//! - `response.{flags, size, total_size}`: 0, and the bytes written to the
//!   client (not those a write filter holds); `response.headers` and
//!   `response.trailers` are empty maps; the code, its details, the gRPC
//!   status and the backend latency are `NotFound`;
//! - `upstream.request_attempt_count` (0, then 1) and
//!   `upstream.transport_failure_reason` (empty) from the start; once
//!   `tcp_proxy` connected, `upstream.{address, port, local_address,
//!   cx_pool_ready_duration, locality, num_endpoints}` (`locality` as for
//!   HTTP, see [`crate::NetworkChainBuilder::upstream_locality`]),
//!   `upstream_filter_state`, `xds.{cluster_name, cluster_metadata,
//!   upstream_host_metadata, upstream_host_locality_metadata}` (the
//!   endpoint's and its locality's metadata as for HTTP, see
//!   [`crate::NetworkChainBuilder::upstream_host_metadata`];
//!   `tests/conformance/l4-upstream-host-metadata*.yaml`);
//! - `xds.{listener_metadata, listener_direction, filter_chain_name}` (there
//!   is no route or virtual host: `NotFound`; the listener's and the
//!   cluster's metadata are the bootstrap's, see
//!   [`crate::NetworkChainBuilder::listener_metadata`]), `metadata`, `source.*`,
//!   `destination.*` and filter state.
//!
//! What the harness cannot know, it answers as a plain Envoy would: no TLS,
//! no dynamic metadata, one endpoint per cluster, an instant connection pool, the
//! configured upstream local address (a real one has an ephemeral port),
//! connection ids counted from 1 (Envoy numbers every connection it makes,
//! upstream ones included, from one process-wide counter);
//! `xds.node.user_agent_build_version.metadata` and `xds.node.extensions`
//! are empty (Envoy lists its build's details and extensions there). Envoy
//! lists a whole header map's keys in its hash set's order, which changes
//! from process to process; the harness lists them in header order.

use std::time::{Duration, SystemTime};

use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{Status, filter_state, proxy_fn};
use crate::fields::Fields;
use crate::state::{HostState, StreamFacts};
use crate::xds::{Locality, Metadata, Node, Struct, StructValue};

/// A property value before serialization.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    Bytes(Vec<u8>),
    Int(i64),
    Uint(u64),
    Bool(bool),
    /// Key/value pairs.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
    /// A repeated field's elements.
    List(Vec<Vec<u8>>),
}

impl Value {
    fn text(s: impl Into<Vec<u8>>) -> Self {
        Value::Bytes(s.into())
    }

    /// A duration or a timestamp: nanoseconds.
    fn nanos(d: Duration) -> Self {
        Value::Int(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// A byte count.
    fn count(n: u64) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }

    fn encode(self) -> Vec<u8> {
        match self {
            Value::Bytes(b) => b,
            Value::Int(i) => i.to_le_bytes().to_vec(),
            Value::Uint(u) => u.to_le_bytes().to_vec(),
            Value::Bool(b) => vec![u8::from(b)],
            Value::Map(pairs) => pairs_format(&pairs),
            Value::List(items) => {
                let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                    items.into_iter().map(|k| (k, Vec::new())).collect();
                pairs_format(&pairs)
            }
        }
    }
}

/// The proxy-wasm pairs format: the count, each key's and value's length,
/// then each key and value followed by a NUL.
fn pairs_format(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
    let mut out = Vec::with_capacity(4 + bytes);
    out.extend_from_slice(&len32(pairs.len()));
    for (k, v) in pairs {
        out.extend_from_slice(&len32(k.len()));
        out.extend_from_slice(&len32(v.len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

const NOT_FOUND: Fault = Fault::Status(Status::NotFound);
const NOT_SERIALIZABLE: Fault = Fault::Status(Status::SerializationFailure);

/// Request attributes derived from the request headers.
fn request_header(headers: &Fields, field: &[u8], rest: &[&[u8]]) -> Result<Value, Fault> {
    let header = |name: &[u8]| headers.get(name).map(<[u8]>::to_vec).ok_or(NOT_FOUND);
    let path = || header(b":path");
    let value = match field {
        b"path" => Value::Bytes(path()?),
        b"url_path" => {
            let p = path()?;
            let end = p.iter().position(|&b| b == b'?').unwrap_or(p.len());
            Value::Bytes(p[..end].to_vec())
        }
        // Up to a fragment, as Envoy cuts it.
        b"query" => {
            let p = path()?;
            let start = p.iter().position(|&b| b == b'?').map_or(p.len(), |i| i + 1);
            let query = &p[start..];
            let end = query.iter().position(|&b| b == b'#').unwrap_or(query.len());
            Value::Bytes(query[..end].to_vec())
        }
        b"host" => Value::Bytes(header(b":authority")?),
        b"scheme" => Value::Bytes(header(b":scheme")?),
        b"method" => Value::Bytes(header(b":method")?),
        b"useragent" => Value::Bytes(header(b"user-agent")?),
        b"referer" => Value::Bytes(header(b"referer")?),
        b"id" => Value::Bytes(header(b"x-request-id")?),
        _ => return Err(NOT_FOUND),
    };
    scalar(value, rest)
}

/// `request.*` of an HTTP stream.
fn request(state: &HostState, facts: &StreamFacts, rest: &[&[u8]]) -> Result<Value, Fault> {
    let [field, tail @ ..] = rest else {
        return Err(NOT_SERIALIZABLE);
    };
    let headers = state.maps.request_headers.as_ref();
    let headers_bytes = headers.map_or(0, |h| h.byte_size() as u64);
    let value = match *field {
        b"headers" => return header_map(headers, tail),
        b"headers_bytes" => Value::count(headers_bytes),
        b"time" => Value::Int(unix_nanos(facts.start.ok_or(NOT_FOUND)?)),
        // A connection's stream info has no protocol, and Envoy never
        // completes it as a request.
        b"protocol" if !facts.network => Value::text("HTTP/1.1"),
        b"duration" if !facts.network => {
            let ended = facts.ended_at.ok_or(NOT_FOUND)?;
            Value::nanos(ended.saturating_sub(facts.started_at))
        }
        // The `content-length` the request declares (an invalid one is no
        // size), else the body bytes received so far.
        b"size" => match headers.and_then(|h| h.get(b"content-length")) {
            Some(length) => Value::Int(simple_atoi(length).ok_or(NOT_FOUND)?),
            None => Value::count(facts.bytes_received),
        },
        b"total_size" => Value::count(facts.bytes_received.saturating_add(headers_bytes)),
        b"protocol" | b"duration" => return Err(NOT_FOUND),
        _ => return request_header(headers.ok_or(NOT_FOUND)?, field, tail),
    };
    scalar(value, tail)
}

/// `response.*` of an HTTP stream.
fn response(state: &HostState, facts: &StreamFacts, rest: &[&[u8]]) -> Result<Value, Fault> {
    let [field, tail @ ..] = rest else {
        return Err(NOT_SERIALIZABLE);
    };
    let headers = state.maps.response_headers.as_ref();
    let trailers = state.maps.response_trailers.as_ref();
    let bytes = |map: Option<&Fields>| map.map_or(0, |m| m.byte_size() as u64);
    let value = match *field {
        b"code" => Value::Int(i64::from(facts.response_code.ok_or(NOT_FOUND)?)),
        b"code_details" => Value::text(facts.response_details.as_deref().ok_or(NOT_FOUND)?),
        b"flags" => Value::count(facts.flags),
        b"grpc_status" => Value::Int(grpc_status(headers, trailers, facts.response_code)?),
        b"size" => Value::count(facts.bytes_sent),
        b"total_size" => Value::count(
            facts
                .bytes_sent
                .saturating_add(bytes(headers))
                .saturating_add(bytes(trailers)),
        ),
        b"headers" => return header_map(headers, tail),
        b"headers_bytes" => Value::count(bytes(headers)),
        b"trailers" => return header_map(trailers, tail),
        b"backend_latency" => Value::nanos(facts.backend_latency.ok_or(NOT_FOUND)?),
        _ => return Err(NOT_FOUND),
    };
    scalar(value, tail)
}

/// Envoy's `Grpc::Common::getGrpcStatus`: the trailers' `grpc-status`, else
/// the headers', else the one the HTTP status maps to. A status that is not a
/// number up to 16 is -1 (`InvalidCode`).
fn grpc_status(
    headers: Option<&Fields>,
    trailers: Option<&Fields>,
    code: Option<u16>,
) -> Result<i64, Fault> {
    let declared = trailers
        .and_then(|t| t.get(b"grpc-status"))
        .or_else(|| headers.and_then(|h| h.get(b"grpc-status")));
    if let Some(status) = declared {
        return Ok(match simple_atou(status) {
            Some(n) if n <= 16 => n as i64,
            _ => -1,
        });
    }
    let code = code.ok_or(NOT_FOUND)?;
    Ok(i64::from(crate::hcm::http_to_grpc_status(u32::from(code))))
}

/// `absl::SimpleAtoi` into an `i64`: surrounding ASCII whitespace, an
/// optional sign, decimal digits.
fn simple_atoi(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text.trim_ascii()).ok()?;
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `absl::SimpleAtoi` into a `u64`: as [`simple_atoi`], without a `-`.
fn simple_atou(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text.trim_ascii()).ok()?;
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Nanoseconds since the Unix epoch.
fn unix_nanos(at: SystemTime) -> i64 {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => nanos(after),
        Err(before) => -nanos(before.duration()),
    }
}

/// A header map (`request.headers`, `response.headers`,
/// `response.trailers`): the whole map, each name once with all its values
/// joined by `,` (an empty map while Envoy holds none), or one name's values.
fn header_map(headers: Option<&Fields>, rest: &[&[u8]]) -> Result<Value, Fault> {
    let [name, tail @ ..] = rest else {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (k, v) in headers.into_iter().flat_map(Fields::iter) {
            match pairs.iter_mut().find(|(name, _)| name.as_slice() == k) {
                Some((_, values)) => {
                    values.push(b',');
                    values.extend_from_slice(v);
                }
                None => pairs.push((k.to_vec(), v.to_vec())),
            }
        }
        return Ok(Value::Map(pairs));
    };
    let headers = headers.ok_or(NOT_FOUND)?;
    let name = name.to_ascii_lowercase();
    let values: Vec<&[u8]> = headers
        .iter()
        .filter(|(k, _)| *k == name.as_slice())
        .map(|(_, v)| v)
        .collect();
    if values.is_empty() {
        return Err(NOT_FOUND);
    }
    scalar(Value::Bytes(values.join(&b","[..])), tail)
}

/// `address` (`ip:port`) and `port` of a socket address, as Envoy's
/// `source.*`, `destination.*` and `upstream.*`.
fn socket(address: Option<std::net::SocketAddr>, rest: &[&[u8]]) -> Result<Value, Fault> {
    match rest {
        [] => Err(NOT_SERIALIZABLE),
        [b"address", tail @ ..] => scalar(Value::text(address.ok_or(NOT_FOUND)?.to_string()), tail),
        [b"port", tail @ ..] => scalar(
            Value::Int(i64::from(address.ok_or(NOT_FOUND)?.port())),
            tail,
        ),
        _ => Err(NOT_FOUND),
    }
}

/// A scalar has no fields: a longer path is `NotFound`.
fn scalar(value: Value, rest: &[&[u8]]) -> Result<Value, Fault> {
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(NOT_FOUND)
    }
}

/// A `google.protobuf.Struct` at `rest`: the whole struct is a map of its
/// fields, each serialized as a property (a struct holding a null anywhere
/// cannot be serialized); a field is the value at its key.
fn struct_value(fields: &Struct, rest: &[&[u8]]) -> Result<Value, Fault> {
    match rest {
        [] => Ok(Value::Map(
            fields
                .fields
                .iter()
                .map(|(k, v)| Ok((k.as_bytes().to_vec(), struct_field(v, &[])?.encode())))
                .collect::<Result<_, Fault>>()?,
        )),
        [key, tail @ ..] => {
            let key = std::str::from_utf8(key).map_err(|_| NOT_FOUND)?;
            struct_field(fields.fields.get(key).ok_or(NOT_FOUND)?, tail)
        }
    }
}

/// A `google.protobuf.Value` at `rest`, as Envoy's expression context unwraps
/// it: a string, a number (a double: 8 bytes little-endian), a bool, a
/// struct (see [`struct_value`]) or a list, whose elements a path indexes
/// (`absl::SimpleAtoi`, from 0). A null is no value Envoy can serialize.
fn struct_field(value: &StructValue, rest: &[&[u8]]) -> Result<Value, Fault> {
    let scalar_value = match value {
        StructValue::Struct(fields) => return struct_value(fields, rest),
        StructValue::List(items) => {
            return match rest {
                [] => Ok(Value::List(
                    items
                        .iter()
                        .map(|v| Ok(struct_field(v, &[])?.encode()))
                        .collect::<Result<_, Fault>>()?,
                )),
                [index, tail @ ..] => {
                    let at = simple_atoi(index)
                        .filter(|i| i32::try_from(*i).is_ok())
                        .and_then(|i| usize::try_from(i).ok())
                        .ok_or(NOT_FOUND)?;
                    struct_field(items.get(at).ok_or(NOT_FOUND)?, tail)
                }
            };
        }
        StructValue::Null if rest.is_empty() => return Err(NOT_SERIALIZABLE),
        StructValue::Null => return Err(NOT_FOUND),
        StructValue::Number(n) => Value::Bytes(n.to_le_bytes().to_vec()),
        StructValue::String(s) => Value::text(s.as_bytes()),
        StructValue::Bool(b) => Value::Bool(*b),
    };
    scalar(scalar_value, rest)
}

/// An `envoy.config.core.v3.Metadata` message: serialized whole, its
/// `filter_metadata` a map of each filter's struct, `typed_filter_metadata`
/// an empty map.
fn metadata(metadata: &Metadata, rest: &[&[u8]]) -> Result<Value, Fault> {
    match rest {
        [] => Ok(Value::Bytes(encode_metadata(metadata))),
        [b"filter_metadata"] => Ok(Value::Map(
            metadata
                .filter_metadata
                .iter()
                .map(|(k, s)| Ok((k.as_bytes().to_vec(), struct_value(s, &[])?.encode())))
                .collect::<Result<_, Fault>>()?,
        )),
        [b"filter_metadata", name, tail @ ..] => {
            let name = std::str::from_utf8(name).map_err(|_| NOT_FOUND)?;
            struct_value(metadata.filter_metadata.get(name).ok_or(NOT_FOUND)?, tail)
        }
        [b"typed_filter_metadata"] => Ok(Value::Map(Vec::new())),
        _ => Err(NOT_FOUND),
    }
}

/// An `envoy.config.core.v3.Locality` (an empty one when absent).
fn locality(locality: Option<&Locality>, rest: &[&[u8]]) -> Result<Value, Fault> {
    let empty = Locality::default();
    let l = locality.unwrap_or(&empty);
    match rest {
        [] => Ok(Value::Bytes(encode_locality(l))),
        [b"region", tail @ ..] => scalar(Value::text(l.region.as_bytes()), tail),
        [b"zone", tail @ ..] => scalar(Value::text(l.zone.as_bytes()), tail),
        [b"sub_zone", tail @ ..] => scalar(Value::text(l.sub_zone.as_bytes()), tail),
        _ => Err(NOT_FOUND),
    }
}

/// The Envoy version the harness emulates (`SemanticVersion`).
const ENVOY_VERSION: (u64, u64, u64) = (1, 40, 0);

/// Appends a protobuf varint.
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Appends a protobuf length-delimited field.
fn bytes_field(out: &mut Vec<u8>, number: u64, value: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// Appends a proto3 string field, unless it is empty.
fn string_field(out: &mut Vec<u8>, number: u64, value: &str) {
    if !value.is_empty() {
        bytes_field(out, number, value.as_bytes());
    }
}

/// Appends a map entry (field `number`): its key (1) and value (2) are
/// always written, empty or not, as protobuf's C++ runtime writes them.
fn map_entry(out: &mut Vec<u8>, number: u64, key: &str, value: &[u8]) {
    let mut entry = Vec::with_capacity(key.len() + value.len() + 12);
    bytes_field(&mut entry, 1, key.as_bytes());
    bytes_field(&mut entry, 2, value);
    bytes_field(out, number, &entry);
}

/// `google.protobuf.Struct`, serialized: `fields` (1), a map.
fn encode_struct(fields: &Struct) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in &fields.fields {
        map_entry(&mut out, 1, key, &encode_struct_value(value));
    }
    out
}

/// `google.protobuf.Value`, serialized: one of `null_value` (1),
/// `number_value` (2, a fixed64 double), `string_value` (3), `bool_value`
/// (4), `struct_value` (5), `list_value` (6), written even when it is the
/// default (a oneof member is present).
fn encode_struct_value(value: &StructValue) -> Vec<u8> {
    let mut out = Vec::new();
    match value {
        StructValue::Null => out.extend_from_slice(&[1 << 3, 0]),
        StructValue::Number(n) => {
            varint(&mut out, 2 << 3 | 1);
            out.extend_from_slice(&n.to_le_bytes());
        }
        StructValue::String(s) => bytes_field(&mut out, 3, s.as_bytes()),
        StructValue::Bool(b) => out.extend_from_slice(&[4 << 3, u8::from(*b)]),
        StructValue::Struct(fields) => bytes_field(&mut out, 5, &encode_struct(fields)),
        StructValue::List(items) => {
            // `google.protobuf.ListValue`: `values` (1), repeated.
            let mut list = Vec::new();
            for item in items {
                bytes_field(&mut list, 1, &encode_struct_value(item));
            }
            bytes_field(&mut out, 6, &list);
        }
    }
    out
}

/// `envoy.config.core.v3.Metadata`, serialized: `filter_metadata` (1), a
/// map of structs.
fn encode_metadata(metadata: &Metadata) -> Vec<u8> {
    let mut out = Vec::new();
    for (filter, fields) in &metadata.filter_metadata {
        map_entry(&mut out, 1, filter, &encode_struct(fields));
    }
    out
}

/// `envoy.config.core.v3.Locality`, serialized.
fn encode_locality(locality: &Locality) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, &locality.region);
    string_field(&mut out, 2, &locality.zone);
    string_field(&mut out, 3, &locality.sub_zone);
    out
}

/// `SemanticVersion`, serialized (zero fields are left out).
fn semantic_version() -> Vec<u8> {
    let (major, minor, patch) = ENVOY_VERSION;
    let mut out = Vec::new();
    for (number, value) in [(1, major), (2, minor), (3, patch)] {
        if value != 0 {
            varint(&mut out, number << 3);
            varint(&mut out, value);
        }
    }
    out
}

/// `user_agent_build_version` (a `BuildVersion`), serialized: its version;
/// Envoy's also has its build's details in `metadata`.
fn build_version() -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(&mut out, 1, &semantic_version());
    out
}

/// `envoy.config.core.v3.Node`, serialized: the bootstrap's `id` (1),
/// `cluster` (2), `metadata` (3) and `locality` (4) as given, then what
/// Envoy fills in: `user_agent_name` (6) and `user_agent_build_version` (8).
fn encode_node(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    string_field(&mut out, 1, &node.id);
    string_field(&mut out, 2, &node.cluster);
    if let Some(fields) = &node.metadata {
        bytes_field(&mut out, 3, &encode_struct(fields));
    }
    if let Some(l) = &node.locality {
        bytes_field(&mut out, 4, &encode_locality(l));
    }
    bytes_field(&mut out, 6, b"envoy");
    bytes_field(&mut out, 8, &build_version());
    out
}

/// `xds.node`: the bootstrap's `Node` as Envoy fills it in.
fn node(node: &Node, rest: &[&[u8]]) -> Result<Value, Fault> {
    let (major, minor, patch) = ENVOY_VERSION;
    let empty = Struct::default();
    match rest {
        [] => Ok(Value::Bytes(encode_node(node))),
        [b"id", tail @ ..] => scalar(Value::text(node.id.as_bytes()), tail),
        [b"cluster", tail @ ..] => scalar(Value::text(node.cluster.as_bytes()), tail),
        [b"metadata", tail @ ..] => struct_value(node.metadata.as_ref().unwrap_or(&empty), tail),
        [b"locality", tail @ ..] => locality(node.locality.as_ref(), tail),
        [b"user_agent_version"] => Ok(Value::text("")),
        [b"user_agent_name"] => Ok(Value::text("envoy")),
        [b"dynamic_parameters"] => Ok(Value::Map(Vec::new())),
        [b"extensions" | b"client_features" | b"listening_addresses"] => {
            Ok(Value::List(Vec::new()))
        }
        [b"user_agent_build_version", build @ ..] => match build {
            [] => Ok(Value::Bytes(build_version())),
            [b"metadata"] => Ok(Value::Map(Vec::new())),
            [b"version"] => Ok(Value::Bytes(semantic_version())),
            [b"version", b"major_number"] => Ok(Value::Uint(major)),
            [b"version", b"minor_number"] => Ok(Value::Uint(minor)),
            [b"version", b"patch"] => Ok(Value::Uint(patch)),
            _ => Err(NOT_FOUND),
        },
        _ => Err(NOT_FOUND),
    }
}

/// `xds.*`: the node in any context; the rest for streams.
fn xds(state: &HostState, facts: Option<&StreamFacts>, rest: &[&[u8]]) -> Result<Value, Fault> {
    let [field, tail @ ..] = rest else {
        return Err(NOT_SERIALIZABLE);
    };
    let bootstrap = state.shared.xds();
    if *field == b"node" {
        return node(&bootstrap.node, tail);
    }
    if !state.in_stream() {
        return Err(NOT_FOUND);
    }
    let routed = !facts.is_some_and(|f| f.no_route);
    let value = match *field {
        b"cluster_name" if routed => Value::text(state.cluster_name.clone().ok_or(NOT_FOUND)?),
        b"cluster_metadata" if routed && state.cluster_name.is_some() => {
            return metadata(&bootstrap.cluster, tail);
        }
        b"route_name" if routed => Value::text(state.route_name.clone().ok_or(NOT_FOUND)?),
        b"route_metadata" if routed && state.route_name.is_some() => {
            return metadata(&bootstrap.route, tail);
        }
        b"virtual_host_name" => Value::text(state.virtual_host_name.clone().ok_or(NOT_FOUND)?),
        b"virtual_host_metadata" if state.virtual_host_name.is_some() => {
            return metadata(&bootstrap.virtual_host, tail);
        }
        // Once there is a host: its metadata, or its locality's. A host
        // without them has a null message, which Envoy cannot serialize and
        // which has no fields.
        b"upstream_host_metadata" | b"upstream_host_locality_metadata" => {
            facts.and_then(|f| f.upstream_host).ok_or(NOT_FOUND)?;
            let host = &bootstrap.host;
            let given = if *field == b"upstream_host_metadata" {
                host.endpoint.as_ref()
            } else {
                host.locality.as_ref()
            };
            return match given {
                Some(given) => metadata(given, tail),
                None if tail.is_empty() => Err(NOT_SERIALIZABLE),
                None => Err(NOT_FOUND),
            };
        }
        b"listener_metadata" if facts.is_some() => return metadata(&bootstrap.listener, tail),
        b"listener_direction" if facts.is_some() => Value::Int(0),
        b"filter_chain_name" if facts.is_some() => Value::text(""),
        _ => return Err(NOT_FOUND),
    };
    scalar(value, tail)
}

/// `upstream.*`.
fn upstream(
    state: &HostState,
    facts: Option<&StreamFacts>,
    rest: &[&[u8]],
) -> Result<Value, Fault> {
    let host = facts.and_then(|f| f.upstream_host);
    let [field, tail @ ..] = rest else {
        return Err(NOT_SERIALIZABLE);
    };
    let facts = match *field {
        b"address" | b"port" => return socket(host, rest),
        _ => facts.ok_or(NOT_FOUND)?,
    };
    let sent = facts.attempts > 0;
    let value = match *field {
        // A connection that failed has no local address.
        b"local_address" if facts.transport_failure.is_none() => {
            Value::text(facts.upstream_local.ok_or(NOT_FOUND)?.to_string())
        }
        // A connection's upstream info is there from the start.
        b"transport_failure_reason" if sent || facts.network => {
            Value::text(facts.transport_failure.unwrap_or_default())
        }
        b"cx_pool_ready_duration" if sent => Value::nanos(Duration::ZERO),
        b"locality" if host.is_some() => {
            return locality(Some(&state.shared.xds().host.place), tail);
        }
        b"request_attempt_count" => Value::Uint(facts.attempts),
        b"num_endpoints" if !facts.no_route && state.cluster_name.is_some() => Value::Uint(1),
        _ => return Err(NOT_FOUND),
    };
    scalar(value, tail)
}

/// `connection.*` (and the plain `connection_id`).
fn connection(facts: Option<&StreamFacts>, rest: &[&[u8]]) -> Result<Value, Fault> {
    let [field, tail @ ..] = rest else {
        return Err(NOT_SERIALIZABLE);
    };
    let value = match (*field, facts) {
        (b"mtls", _) => Value::Bool(false),
        (b"id", Some(facts)) => Value::Uint(facts.connection_id),
        (b"requested_server_name", Some(_)) => Value::text(""),
        _ => return Err(NOT_FOUND),
    };
    scalar(value, tail)
}

fn lookup(state: &HostState, path: &[&[u8]]) -> Result<Value, Fault> {
    let Some((&top, rest)) = path.split_first() else {
        return Err(NOT_FOUND);
    };
    let meta = &state.root().meta;
    match top {
        b"plugin_name" => return scalar(Value::text(meta.name.clone()), rest),
        b"plugin_root_id" => return scalar(Value::text(meta.root_id.clone()), rest),
        b"plugin_vm_id" => return scalar(Value::text(meta.vm_id.clone()), rest),
        _ => {}
    }
    let in_stream = state.in_stream();
    let facts_guard = in_stream
        .then_some(state.maps.info.facts.as_ref())
        .flatten()
        .map(crate::state::Facts::get);
    let facts = facts_guard.as_deref();
    if top == b"xds" {
        return xds(state, facts, rest);
    }
    if !in_stream {
        return Err(NOT_FOUND);
    }
    match top {
        b"request" | b"response" => match facts {
            Some(facts) if top == b"request" => request(state, facts, rest),
            Some(facts) => response(state, facts, rest),
            // A network filter's connection has no HTTP request.
            None if rest.is_empty() => Err(NOT_SERIALIZABLE),
            None => Err(NOT_FOUND),
        },
        b"source" => socket(state.source_address, rest),
        b"destination" => socket(state.destination_address, rest),
        b"upstream" => upstream(state, facts, rest),
        b"connection" => connection(facts, rest),
        b"connection_id" => scalar(Value::Uint(facts.ok_or(NOT_FOUND)?.connection_id), rest),
        b"metadata" if facts.is_some() => metadata(&Metadata::default(), rest),
        b"filter_state" => filter_state::read_entry(&state.maps.info.filter_state.get(), rest)
            .map(|read| Value::Bytes(read.encode()))
            .map_err(Fault::Status),
        b"upstream_filter_state" if facts.is_some_and(|f| f.attempts > 0) => {
            if rest.is_empty() {
                Err(NOT_SERIALIZABLE)
            } else {
                Err(NOT_FOUND)
            }
        }
        name => filter_state::read_property(&state.maps.info.filter_state.get(), name, rest)
            .map(|read| Value::Bytes(read.encode()))
            .map_err(Fault::Status),
    }
}

/// The property at a NUL-joined `path`. As Envoy reads a path, a final NUL
/// ends it (it starts no empty segment), and an empty path names no value
/// (which cannot be serialized).
fn resolve(state: &HostState, path: &[u8]) -> Result<Value, Fault> {
    if path.is_empty() {
        return Err(NOT_SERIALIZABLE);
    }
    let path = path.strip_suffix(&[0]).unwrap_or(path);
    let segments: Vec<&[u8]> = path.split(|&b| b == 0).collect();
    lookup(state, &segments)
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_get_property",
        |caller, path_ptr: i32, path_len: i32, ret_ptr: i32, ret_len: i32| {
            let result = memory::read(&mut caller, path_ptr, path_len).and_then(|path| {
                let value = resolve(caller.data(), &path)?.encode();
                memory::copy_out(&mut caller, &value, ret_ptr, ret_len)
            });
            memory::status(result)?
        }
    );
    // Envoy writes filter state "wasm.<raw path>"; without stream info (a root
    // context) there is none to write to.
    proxy_fn!(
        linker,
        "proxy_set_property",
        |caller, path_ptr: i32, path_len: i32, val_ptr: i32, val_len: i32| {
            let result = memory::read(&mut caller, path_ptr, path_len).and_then(|path| {
                let value = memory::read(&mut caller, val_ptr, val_len)?;
                let state = caller.data_mut();
                if !state.in_stream() {
                    return Err(NOT_FOUND);
                }
                let declared = state.root().declared.get(&path).cloned();
                let mut filter_state = state.maps.info.filter_state.get();
                filter_state::write_property(&mut filter_state, &path, value, declared.as_ref())
                    .map_err(Fault::Status)
            });
            memory::status(result)?
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn state() -> HostState {
        let mut state = HostState::for_tests();
        state.source_address = Some("10.0.0.1:51234".parse().expect("addr"));
        state.destination_address = Some("[::1]:10000".parse().expect("addr"));
        state
    }

    fn get(state: &HostState, path: &str) -> Result<Vec<u8>, Status> {
        let segments: Vec<&[u8]> = path.split('.').map(str::as_bytes).collect();
        lookup(state, &segments)
            .map(Value::encode)
            .map_err(|f| match f {
                Fault::Status(s) => s,
                Fault::Trap(_) => panic!("trap"),
            })
    }

    #[test]
    fn connection_addresses_are_stream_attributes() {
        let mut state = state();
        // A root context has no connection.
        state.active_context = 1;
        assert_eq!(get(&state, "source.address"), Err(Status::NotFound));
        state.active_context = 2;
        assert_eq!(
            get(&state, "source.address").as_deref(),
            Ok(&b"10.0.0.1:51234"[..])
        );
        assert_eq!(
            get(&state, "source.port"),
            Ok(51234i64.to_le_bytes().to_vec())
        );
        assert_eq!(
            get(&state, "destination.address").as_deref(),
            Ok(&b"[::1]:10000"[..])
        );
        assert_eq!(
            get(&state, "destination.port"),
            Ok(10000i64.to_le_bytes().to_vec())
        );
        assert_eq!(get(&state, "source"), Err(Status::SerializationFailure));
        assert_eq!(get(&state, "source.port.x"), Err(Status::NotFound));
        assert_eq!(get(&state, "source.nonexistent"), Err(Status::NotFound));
        // No upstream until the router sent the request.
        assert_eq!(get(&state, "upstream.address"), Err(Status::NotFound));
        let upstream: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let facts = StreamFacts {
            upstream_host: Some(upstream),
            ..StreamFacts::default()
        };
        state.maps.info.facts = Some(crate::state::Facts::new(facts));
        assert_eq!(
            get(&state, "upstream.address").as_deref(),
            Ok(&b"127.0.0.1:8080"[..])
        );
        assert_eq!(
            get(&state, "upstream.port"),
            Ok(8080i64.to_le_bytes().to_vec())
        );
    }

    /// `state` in a stream context whose stream info has `facts`.
    fn stream(facts: StreamFacts) -> HostState {
        let mut state = state();
        state.active_context = 2;
        state.cluster_name = Some("upstream".to_owned());
        state.route_name = Some(String::new());
        state.virtual_host_name = Some("all".to_owned());
        state.maps.info.facts = Some(crate::state::Facts::new(facts));
        state
    }

    fn int(n: i64) -> Result<Vec<u8>, Status> {
        Ok(n.to_le_bytes().to_vec())
    }

    fn text(s: &str) -> Result<Vec<u8>, Status> {
        Ok(s.as_bytes().to_vec())
    }

    const EMPTY_MAP: [u8; 4] = [0; 4];

    fn headers(kind: crate::fields::Kind, pairs: &[(&str, &str)]) -> Fields {
        let mut fields = Fields::new(kind);
        for (k, v) in pairs {
            fields.add(k.as_bytes(), v.as_bytes());
        }
        fields
    }

    #[test]
    fn maps_and_lists_serialize_in_the_pairs_format() {
        let map = Value::Map(vec![
            (b"a".to_vec(), b"xy".to_vec()),
            (b"bc".to_vec(), Vec::new()),
        ]);
        assert_eq!(
            map.encode(),
            b"\x02\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00a\x00xy\x00bc\x00\x00"
        );
        let list = Value::List(vec![b"e".to_vec()]);
        assert_eq!(
            list.encode(),
            b"\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00e\x00\x00"
        );
        assert_eq!(Value::Map(Vec::new()).encode(), EMPTY_MAP);
        assert_eq!(Value::Uint(7).encode(), 7u64.to_le_bytes());
        assert_eq!(Value::Bool(true).encode(), [1]);
    }

    #[test]
    fn a_root_context_sees_the_plugin_and_the_node_only() {
        let mut state = stream(StreamFacts::new(SystemTime::UNIX_EPOCH, Duration::ZERO, 3));
        state.active_context = 1;
        assert_eq!(get(&state, "plugin_name"), text("p"));
        assert_eq!(get(&state, "xds.node.user_agent_name"), text("envoy"));
        assert_eq!(get(&state, "xds.node.id"), text(""));
        for path in [
            "xds.route_name",
            "xds.cluster_name",
            "xds.listener_direction",
            "request.time",
            "response.flags",
            "connection.id",
            "connection_id",
            "upstream.request_attempt_count",
            "metadata",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        assert_eq!(get(&state, "xds"), Err(Status::SerializationFailure));
    }

    #[test]
    fn the_node_is_a_bootstrap_without_node() {
        let state = state();
        // user_agent_name (6) "envoy", user_agent_build_version (8) with its
        // version (1): major 1, minor 40.
        assert_eq!(
            get(&state, "xds.node"),
            Ok(b"\x32\x05envoy\x42\x06\x0a\x04\x08\x01\x10\x28".to_vec())
        );
        assert_eq!(
            get(&state, "xds.node.user_agent_build_version.version"),
            Ok(b"\x08\x01\x10\x28".to_vec())
        );
        let version = "xds.node.user_agent_build_version.version";
        assert_eq!(
            get(&state, &format!("{version}.major_number")),
            Ok(1u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            get(&state, &format!("{version}.minor_number")),
            Ok(40u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            get(&state, &format!("{version}.patch")),
            Ok(0u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            get(&state, "xds.node.metadata").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        assert_eq!(
            get(&state, "xds.node.extensions").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        assert_eq!(get(&state, "xds.node.locality"), text(""));
        assert_eq!(get(&state, "xds.node.metadata.x"), Err(Status::NotFound));
        assert_eq!(get(&state, "xds.node.id.x"), Err(Status::NotFound));
        assert_eq!(get(&state, "xds.node.nonexistent"), Err(Status::NotFound));
    }

    /// `state` with a bootstrap that says `xds`.
    fn with_xds(mut state: HostState, xds: crate::xds::Bootstrap) -> HostState {
        state.shared = std::sync::Arc::new(crate::shared::Shared::new(xds));
        state
    }

    fn double(n: f64) -> Result<Vec<u8>, Status> {
        Ok(n.to_le_bytes().to_vec())
    }

    fn pairs(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let owned: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        Value::Map(owned).encode()
    }

    fn node_bootstrap() -> crate::xds::Bootstrap {
        let node = Node::default()
            .id("node-1")
            .cluster("svc-a")
            .metadata(serde_json::json!({
                "s": "text",
                "i": 7,
                "half": 0.5,
                "t": true,
                "z": null,
                "l": ["a", 1, {"k": "v"}, ["x"]],
                "ln": ["a", null],
                "m": {"inner": {"deep": 1}},
                "e": {},
            }))
            .expect("metadata")
            .locality("r1", "z1", "sz1");
        crate::xds::Bootstrap {
            node,
            ..crate::xds::Bootstrap::default()
        }
    }

    #[test]
    fn the_node_is_the_bootstraps_in_every_context() {
        let mut state = with_xds(stream(StreamFacts::default()), node_bootstrap());
        for context in [1, 2] {
            state.active_context = context;
            assert_eq!(get(&state, "xds.node.id"), text("node-1"));
            assert_eq!(get(&state, "xds.node.cluster"), text("svc-a"));
            assert_eq!(get(&state, "xds.node.metadata.s"), text("text"));
            assert_eq!(get(&state, "xds.node.locality.zone"), text("z1"));
        }
        // As Envoy 1.40 serializes them (measured).
        assert_eq!(
            get(&state, "xds.node.locality"),
            Ok(b"\x0a\x02r1\x12\x02z1\x1a\x03sz1".to_vec())
        );
        assert_eq!(get(&state, "xds.node.locality.region"), text("r1"));
        assert_eq!(get(&state, "xds.node.locality.sub_zone"), text("sz1"));
        assert_eq!(
            get(&state, "xds.node.locality.zone.x"),
            Err(Status::NotFound)
        );
        assert_eq!(get(&state, "xds.node.id.x"), Err(Status::NotFound));
        // id (1), cluster (2), metadata (3), locality (4), then Envoy's own.
        let whole = get(&state, "xds.node").expect("node");
        let metadata = encode_struct(node_bootstrap().node.metadata.as_ref().expect("set"));
        let mut expected = b"\x0a\x06node-1\x12\x05svc-a".to_vec();
        bytes_field(&mut expected, 3, &metadata);
        expected.extend_from_slice(b"\x22\x0d\x0a\x02r1\x12\x02z1\x1a\x03sz1");
        expected.extend_from_slice(b"\x32\x05envoy\x42\x06\x0a\x04\x08\x01\x10\x28");
        assert_eq!(whole, expected);
    }

    #[test]
    fn node_metadata_values_are_read_as_envoys_expression_context_reads_them() {
        let state = with_xds(state(), node_bootstrap());
        // Numbers are doubles; bools one byte.
        assert_eq!(get(&state, "xds.node.metadata.i"), double(7.0));
        assert_eq!(get(&state, "xds.node.metadata.half"), double(0.5));
        assert_eq!(get(&state, "xds.node.metadata.t"), Ok(vec![1]));
        // A null is no value Envoy can serialize, nor any struct or list
        // that holds one; it has no fields.
        for path in [
            "xds.node.metadata.z",
            "xds.node.metadata.ln",
            "xds.node.metadata",
        ] {
            assert_eq!(
                get(&state, path),
                Err(Status::SerializationFailure),
                "{path}"
            );
        }
        assert_eq!(get(&state, "xds.node.metadata.z.x"), Err(Status::NotFound));
        assert_eq!(get(&state, "xds.node.metadata.ln.0"), text("a"));
        // Nested structs are maps whose values are serialized properties.
        let deep = pairs(&[(b"deep", &1f64.to_le_bytes())]);
        assert_eq!(get(&state, "xds.node.metadata.m.inner"), Ok(deep.clone()));
        assert_eq!(
            get(&state, "xds.node.metadata.m"),
            Ok(pairs(&[(b"inner", &deep)]))
        );
        assert_eq!(get(&state, "xds.node.metadata.m.inner.deep"), double(1.0));
        assert_eq!(
            get(&state, "xds.node.metadata.e").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        // Lists: the elements as keys; a path indexes them as absl::SimpleAtoi
        // reads a number.
        let list = Value::List(vec![
            b"a".to_vec(),
            1f64.to_le_bytes().to_vec(),
            pairs(&[(b"k", b"v")]),
            Value::List(vec![b"x".to_vec()]).encode(),
        ])
        .encode();
        assert_eq!(get(&state, "xds.node.metadata.l"), Ok(list));
        assert_eq!(get(&state, "xds.node.metadata.l.0"), text("a"));
        assert_eq!(get(&state, "xds.node.metadata.l.2.k"), text("v"));
        assert_eq!(get(&state, "xds.node.metadata.l.3.0"), text("x"));
        let at = |index: &str| {
            let path = format!("xds\0node\0metadata\0l\0{index}");
            resolve(&state, path.as_bytes()).map(Value::encode).ok()
        };
        for same in ["01", "+1", " 1", "1 "] {
            assert_eq!(at(same), Some(1f64.to_le_bytes().to_vec()), "{same:?}");
        }
        for missing in ["4", "-1", "x", "4294967297"] {
            assert_eq!(at(missing), None, "{missing:?}");
        }
        for path in [
            "xds.node.metadata.missing",
            "xds.node.metadata.s.x",
            "xds.node.metadata.i.x",
            "xds.node.metadata.t.x",
            "xds.node.metadata.e.x",
            "xds.node.metadata.l.0.x",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
    }

    #[test]
    fn structs_serialize_as_protobufs_cpp_runtime_does() {
        // What Envoy 1.40 returned for these (measured): every map entry has
        // its key and value, a oneof member is written even when default.
        let json = |v| Struct::from_json_for_tests(v);
        assert_eq!(
            encode_struct(&json(serde_json::json!({"a": [1, "b"]}))),
            b"\x0a\x17\x0a\x01a\x12\x122\x10\x0a\x09\x11\x00\x00\x00\x00\x00\x00\xf0?\x0a\x03\x1a\x01b"
        );
        assert_eq!(
            encode_struct(&json(serde_json::json!({
                "f": false, "z": null, "e": {}, "el": [], "": ""
            }))),
            [
                &b"\x0a\x06\x0a\x00\x12\x02\x1a\x00"[..],
                b"\x0a\x07\x0a\x01e\x12\x02*\x00",
                b"\x0a\x08\x0a\x02el\x12\x022\x00",
                b"\x0a\x07\x0a\x01f\x12\x02 \x00",
                b"\x0a\x07\x0a\x01z\x12\x02\x08\x00",
            ]
            .concat()
        );
        let metadata = Metadata::new()
            .filter("vf", serde_json::json!({"vk": "vv"}))
            .and_then(|m| m.filter("ef", serde_json::json!({})))
            .expect("metadata");
        assert_eq!(
            encode_metadata(&metadata),
            b"\x0a\x06\x0a\x02ef\x12\x00\x0a\x12\x0a\x02vf\x12\x0c\x0a\x0a\x0a\x02vk\x12\x04\x1a\x02vv"
        );
        // A node with empty metadata and locality given has both fields.
        let node = Node::default()
            .metadata(serde_json::json!({}))
            .expect("metadata")
            .locality("", "", "");
        assert!(encode_node(&node).starts_with(b"\x1a\x00\x22\x00\x32\x05envoy"));
    }

    #[test]
    fn the_four_metadata_are_stream_attributes() {
        let listener = Metadata::new()
            .filter("lf", serde_json::json!({"lk": "lv"}))
            .expect("listener");
        let route = Metadata::new()
            .filter("rf", serde_json::json!({"rk": "rv", "num": 3, "z": null}))
            .expect("route");
        let xds = crate::xds::Bootstrap {
            listener,
            route,
            virtual_host: Metadata::new()
                .filter("vf", serde_json::json!({"vk": "vv"}))
                .expect("vh"),
            cluster: Metadata::new()
                .filter("cf", serde_json::json!({"ck": "cv"}))
                .expect("cl"),
            ..crate::xds::Bootstrap::default()
        };
        let mut state = with_xds(stream(StreamFacts::default()), xds);
        assert_eq!(
            get(&state, "xds.virtual_host_metadata"),
            Ok(b"\x0a\x12\x0a\x02vf\x12\x0c\x0a\x0a\x0a\x02vk\x12\x04\x1a\x02vv".to_vec())
        );
        assert_eq!(
            get(&state, "xds.listener_metadata.filter_metadata"),
            Ok(pairs(&[(b"lf", &pairs(&[(b"lk", b"lv")]))]))
        );
        assert_eq!(
            get(&state, "xds.cluster_metadata.filter_metadata.cf"),
            Ok(pairs(&[(b"ck", b"cv")]))
        );
        assert_eq!(
            get(&state, "xds.route_metadata.filter_metadata.rf.rk"),
            text("rv")
        );
        assert_eq!(
            get(&state, "xds.route_metadata.filter_metadata.rf.num"),
            double(3.0)
        );
        // A struct with a null cannot be serialized, nor the map holding it;
        // the message as a whole can.
        for path in [
            "xds.route_metadata.filter_metadata.rf",
            "xds.route_metadata.filter_metadata",
            "xds.route_metadata.filter_metadata.rf.z",
        ] {
            assert_eq!(
                get(&state, path),
                Err(Status::SerializationFailure),
                "{path}"
            );
        }
        assert!(get(&state, "xds.route_metadata").is_ok());
        assert_eq!(
            get(&state, "xds.route_metadata.typed_filter_metadata").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        for path in [
            "xds.route_metadata.filter_metadata.missing",
            "xds.route_metadata.filter_metadata.missing.x",
            "xds.route_metadata.filter_metadata.rf.missing",
            "xds.route_metadata.typed_filter_metadata.x",
            "xds.route_metadata.x",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        // Not in a root context.
        state.active_context = 1;
        for path in [
            "xds.route_metadata",
            "xds.virtual_host_metadata",
            "xds.cluster_metadata",
            "xds.listener_metadata",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
    }

    #[test]
    fn request_time_duration_and_sizes_come_from_the_stream_info() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut facts = StreamFacts::new(start, Duration::from_secs(5), 9);
        facts.received(4);
        let mut state = stream(facts);
        assert_eq!(get(&state, "request.time"), int(1_700_000_000_000_000_000));
        // Until the stream is complete.
        assert_eq!(get(&state, "request.duration"), Err(Status::NotFound));
        assert_eq!(get(&state, "request.protocol"), text("HTTP/1.1"));
        // No headers held: what arrived of the body, no header bytes.
        assert_eq!(get(&state, "request.size"), int(4));
        assert_eq!(get(&state, "request.total_size"), int(4));
        assert_eq!(get(&state, "request.headers_bytes"), int(0));
        assert_eq!(
            get(&state, "request.headers").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        assert_eq!(get(&state, "request.path"), Err(Status::NotFound));
        // With the headers: the declared length.
        let kind = crate::fields::Kind::Request;
        state.maps.request_headers = Some(headers(
            kind,
            &[(":path", "/a?b#c"), ("content-length", " 10 ")],
        ));
        assert_eq!(get(&state, "request.size"), int(10));
        assert_eq!(get(&state, "request.headers_bytes"), int(29));
        assert_eq!(get(&state, "request.total_size"), int(33));
        assert_eq!(get(&state, "request.query"), text("b"));
        assert_eq!(get(&state, "request.url_path"), text("/a"));
        state.maps.request_headers = Some(headers(kind, &[("content-length", "ten")]));
        assert_eq!(get(&state, "request.size"), Err(Status::NotFound));
        state
            .maps
            .info
            .facts
            .as_ref()
            .expect("facts")
            .get()
            .ended_at = Some(Duration::from_millis(5250));
        assert_eq!(get(&state, "request.duration"), int(250_000_000));
        assert_eq!(get(&state, "request.time.x"), Err(Status::NotFound));
        assert_eq!(get(&state, "request"), Err(Status::SerializationFailure));
    }

    #[test]
    fn body_bytes_arrive_as_handed_over_or_with_the_headers() {
        let mut facts = StreamFacts {
            with_headers: 10,
            ..StreamFacts::default()
        };
        facts.received(4);
        assert_eq!(facts.bytes_received, 4);
        // A filter holds the headers: the rest arrives meanwhile.
        assert!(!facts.headers_waited);
        facts.received_with_headers();
        assert_eq!(facts.bytes_received, 10);
        assert!(facts.headers_waited);
        // Handing it over later counts nothing twice.
        facts.received(6);
        assert_eq!(facts.bytes_received, 10);
        facts.received(5);
        assert_eq!(facts.bytes_received, 15);
    }

    #[test]
    fn whole_header_maps_list_each_name_once() {
        let mut state = stream(StreamFacts::default());
        let kind = crate::fields::Kind::Request;
        state.maps.request_headers =
            Some(headers(kind, &[("x-a", "1"), ("x-b", "2"), ("x-a", "3")]));
        assert_eq!(
            get(&state, "request.headers"),
            Ok(Value::Map(vec![
                (b"x-a".to_vec(), b"1,3".to_vec()),
                (b"x-b".to_vec(), b"2".to_vec())
            ])
            .encode())
        );
        assert_eq!(get(&state, "request.headers.X-A"), text("1,3"));
        assert_eq!(
            get(&state, "response.headers").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        assert_eq!(
            get(&state, "response.trailers").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        assert_eq!(get(&state, "response.headers.x-a"), Err(Status::NotFound));
    }

    #[test]
    fn response_attributes_come_from_the_stream_info_and_the_maps() {
        let facts = StreamFacts {
            flags: crate::state::flags::UPSTREAM_REQUEST_TIMEOUT,
            bytes_sent: 24,
            ..StreamFacts::default()
        };
        let mut state = stream(facts);
        // Before a response: no code, no details, no gRPC status.
        for path in [
            "response.code",
            "response.code_details",
            "response.grpc_status",
            "response.backend_latency",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        assert_eq!(get(&state, "response.flags"), int(4));
        assert_eq!(get(&state, "response.size"), int(24));
        assert_eq!(get(&state, "response.total_size"), int(24));
        {
            let facts = state.maps.info.facts.as_ref().expect("facts");
            let mut facts = facts.get();
            facts.respond(Some(504), std::borrow::Cow::Borrowed("response_timeout"));
            facts.backend_latency = Some(Duration::from_millis(3));
        }
        assert_eq!(get(&state, "response.code"), int(504));
        assert_eq!(
            get(&state, "response.code_details"),
            text("response_timeout")
        );
        assert_eq!(get(&state, "response.backend_latency"), int(3_000_000));
        // Envoy maps the HTTP status to a gRPC one without a grpc-status.
        assert_eq!(get(&state, "response.grpc_status"), int(14));
        let response = crate::fields::Kind::Response;
        state.maps.response_headers = Some(headers(
            response,
            &[(":status", "504"), ("grpc-status", "7")],
        ));
        assert_eq!(get(&state, "response.grpc_status"), int(7));
        assert_eq!(get(&state, "response.headers_bytes"), int(22));
        state.maps.response_trailers = Some(headers(
            crate::fields::Kind::ResponseTrailers,
            &[("grpc-status", "+5")],
        ));
        assert_eq!(get(&state, "response.grpc_status"), int(5));
        assert_eq!(get(&state, "response.total_size"), int(24 + 22 + 13));
        for bad in ["17", "-1", "x", ""] {
            state.maps.response_trailers = Some(headers(
                crate::fields::Kind::ResponseTrailers,
                &[("grpc-status", bad)],
            ));
            assert_eq!(get(&state, "response.grpc_status"), int(-1), "{bad:?}");
        }
        assert_eq!(get(&state, "response"), Err(Status::SerializationFailure));
    }

    #[test]
    fn without_a_grpc_status_the_http_status_maps_as_envoys() {
        // The table itself is tested with the local replies that share it.
        assert_eq!(grpc_status(None, None, Some(404)).ok(), Some(12));
        assert_eq!(grpc_status(None, None, Some(200)).ok(), Some(2));
    }

    #[test]
    fn upstream_attributes_follow_the_router() {
        let mut state = stream(StreamFacts::default());
        for path in [
            "upstream.address",
            "upstream.local_address",
            "upstream.transport_failure_reason",
            "upstream.cx_pool_ready_duration",
            "upstream.locality",
            "xds.upstream_host_metadata",
            "upstream_filter_state",
            "upstream.tls_version",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        assert_eq!(
            get(&state, "upstream.request_attempt_count"),
            Ok(0u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            get(&state, "upstream.num_endpoints"),
            Ok(1u64.to_le_bytes().to_vec())
        );
        {
            let facts = state.maps.info.facts.as_ref().expect("facts");
            let mut facts = facts.get();
            facts.attempts = 1;
            facts.upstream_host = Some("127.0.0.1:8080".parse().expect("addr"));
            facts.upstream_local = Some("127.0.0.1:40000".parse().expect("addr"));
        }
        assert_eq!(get(&state, "upstream.address"), text("127.0.0.1:8080"));
        assert_eq!(get(&state, "upstream.port"), int(8080));
        assert_eq!(
            get(&state, "upstream.local_address"),
            text("127.0.0.1:40000")
        );
        assert_eq!(get(&state, "upstream.transport_failure_reason"), text(""));
        assert_eq!(get(&state, "upstream.cx_pool_ready_duration"), int(0));
        assert_eq!(
            get(&state, "upstream.request_attempt_count"),
            Ok(1u64.to_le_bytes().to_vec())
        );
        assert_eq!(get(&state, "upstream.locality"), text(""));
        // A host without metadata.
        assert_eq!(
            get(&state, "xds.upstream_host_metadata"),
            Err(Status::SerializationFailure)
        );
        assert_eq!(
            get(&state, "xds.upstream_host_metadata.filter_metadata"),
            Err(Status::NotFound)
        );
        assert_eq!(
            get(&state, "upstream_filter_state"),
            Err(Status::SerializationFailure)
        );
        assert_eq!(get(&state, "upstream"), Err(Status::SerializationFailure));
        state.maps.request_headers = None;
        assert_eq!(get(&state, "upstream.tls_version"), Err(Status::NotFound));
    }

    #[test]
    fn the_upstream_hosts_metadata_once_there_is_a_host() {
        let endpoint = Metadata::new()
            .filter(
                "istio",
                serde_json::json!({"workload": "w", "n": 2, "z": null}),
            )
            .expect("endpoint");
        let xds = crate::xds::Bootstrap {
            host: crate::xds::HostMetadata {
                endpoint: Some(endpoint),
                // Given empty: a message, if an empty one.
                locality: Some(Metadata::new()),
                ..crate::xds::HostMetadata::default()
            },
            ..crate::xds::Bootstrap::default()
        };
        let mut state = with_xds(stream(StreamFacts::default()), xds);
        // No host yet: neither, whatever the path.
        for path in [
            "xds.upstream_host_metadata",
            "xds.upstream_host_metadata.filter_metadata.istio.workload",
            "xds.upstream_host_locality_metadata",
            "xds.upstream_host_locality_metadata.filter_metadata",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        {
            let facts = state.maps.info.facts.as_ref().expect("facts");
            facts.get().upstream_host = Some("127.0.0.1:8080".parse().expect("addr"));
        }
        assert_eq!(
            get(
                &state,
                "xds.upstream_host_metadata.filter_metadata.istio.workload"
            ),
            text("w")
        );
        assert_eq!(
            get(&state, "xds.upstream_host_metadata.filter_metadata.istio.n"),
            double(2.0)
        );
        assert_eq!(
            get(&state, "xds.upstream_host_metadata.filter_metadata.istio.z"),
            Err(Status::SerializationFailure)
        );
        assert_eq!(
            get(&state, "xds.upstream_host_metadata.filter_metadata.istio"),
            Err(Status::SerializationFailure)
        );
        assert_eq!(
            get(&state, "xds.upstream_host_metadata.filter_metadata.x"),
            Err(Status::NotFound)
        );
        let whole = get(&state, "xds.upstream_host_metadata").expect("serialized");
        assert!(whole.starts_with(b"\x0a"), "{whole:?}");
        assert_eq!(get(&state, "xds.upstream_host_locality_metadata"), text(""));
        assert_eq!(
            get(
                &state,
                "xds.upstream_host_locality_metadata.filter_metadata"
            ),
            Ok(EMPTY_MAP.to_vec())
        );
        assert_eq!(
            get(
                &state,
                "xds.upstream_host_locality_metadata.filter_metadata.x"
            ),
            Err(Status::NotFound)
        );
        // A root context has no host.
        state.active_context = 1;
        assert_eq!(
            get(&state, "xds.upstream_host_metadata"),
            Err(Status::NotFound)
        );
    }

    #[test]
    fn a_refused_upstream_connection_has_a_reason_and_no_local_address() {
        let facts = StreamFacts {
            attempts: 1,
            upstream_host: Some("127.0.0.1:9".parse().expect("addr")),
            upstream_local: Some("127.0.0.1:40000".parse().expect("addr")),
            transport_failure: Some("delayed connect error: Connection refused"),
            ..StreamFacts::default()
        };
        let state = stream(facts);
        assert_eq!(
            get(&state, "upstream.transport_failure_reason"),
            text("delayed connect error: Connection refused")
        );
        assert_eq!(get(&state, "upstream.local_address"), Err(Status::NotFound));
        assert_eq!(get(&state, "upstream.address"), text("127.0.0.1:9"));
    }

    #[test]
    fn no_route_leaves_no_route_or_cluster() {
        let state = stream(StreamFacts::default());
        assert_eq!(get(&state, "xds.cluster_name"), text("upstream"));
        assert_eq!(get(&state, "xds.route_name"), text(""));
        assert_eq!(get(&state, "xds.route_metadata"), text(""));
        assert_eq!(get(&state, "xds.virtual_host_name"), text("all"));
        assert_eq!(get(&state, "xds.listener_direction"), int(0));
        assert_eq!(get(&state, "xds.filter_chain_name"), text(""));
        assert_eq!(
            get(&state, "xds.cluster_metadata.filter_metadata").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        state
            .maps
            .info
            .facts
            .as_ref()
            .expect("facts")
            .get()
            .no_route = true;
        for path in [
            "xds.cluster_name",
            "xds.route_name",
            "xds.cluster_metadata",
            "xds.route_metadata",
            "upstream.num_endpoints",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        // The virtual host matched.
        assert_eq!(get(&state, "xds.virtual_host_name"), text("all"));
    }

    #[test]
    fn a_missing_cluster_leaves_the_route_but_no_cluster() {
        let facts = StreamFacts {
            flags: crate::state::flags::NO_CLUSTER_FOUND,
            ..StreamFacts::default()
        };
        let mut state = stream(facts);
        // What the chain wires for a route whose cluster is missing.
        state.cluster_name = None;
        state.route_name = Some("to-missing".to_owned());
        for path in [
            "xds.cluster_name",
            "xds.cluster_metadata",
            "upstream.num_endpoints",
            "upstream.address",
            "upstream.transport_failure_reason",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        assert_eq!(get(&state, "xds.route_name"), text("to-missing"));
        assert_eq!(get(&state, "xds.route_metadata"), text(""));
        assert_eq!(
            get(&state, "upstream.request_attempt_count"),
            Ok(0u64.to_le_bytes().to_vec())
        );
        // Envoy's `NC` bit, as measured in Envoy 1.40.
        assert_eq!(
            get(&state, "response.flags"),
            Ok(0x100_0000u64.to_le_bytes().to_vec())
        );
    }

    #[test]
    fn connection_and_metadata_of_an_http_stream() {
        let state = stream(StreamFacts::new(SystemTime::UNIX_EPOCH, Duration::ZERO, 12));
        assert_eq!(
            get(&state, "connection.id"),
            Ok(12u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            get(&state, "connection_id"),
            Ok(12u64.to_le_bytes().to_vec())
        );
        assert_eq!(get(&state, "connection.requested_server_name"), text(""));
        assert_eq!(get(&state, "connection.mtls"), Ok(vec![0]));
        for path in [
            "connection.termination_details",
            "connection.tls_version",
            "connection.transport_failure_reason",
            "connection.peer_certificate",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        assert_eq!(get(&state, "connection"), Err(Status::SerializationFailure));
        assert_eq!(get(&state, "metadata"), text(""));
        assert_eq!(
            get(&state, "metadata.filter_metadata").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        assert_eq!(
            get(&state, "filter_state"),
            Err(Status::SerializationFailure)
        );
    }

    #[test]
    fn filter_state_is_also_read_by_its_wasm_key() {
        let state = stream(StreamFacts::default());
        filter_state::write_property(
            &mut state.maps.info.filter_state.get(),
            b"mine",
            b"v".to_vec(),
            None,
        )
        .expect("written");
        assert_eq!(get(&state, "mine"), text("v"));
        let path = b"filter_state\0wasm.mine";
        assert_eq!(
            resolve(&state, path).map(Value::encode).ok(),
            Some(b"v".to_vec())
        );
        let path = b"filter_state\0mine";
        assert!(matches!(
            resolve(&state, path),
            Err(Fault::Status(Status::NotFound))
        ));
    }

    #[test]
    fn a_final_nul_ends_a_path_and_an_empty_path_names_nothing() {
        let mut state = stream(StreamFacts::default());
        state.maps.request_headers =
            Some(headers(crate::fields::Kind::Request, &[(":path", "/p")]));
        assert_eq!(
            resolve(&state, b"request\0path\0").map(Value::encode).ok(),
            Some(b"/p".to_vec())
        );
        assert!(matches!(
            resolve(&state, b"request\0\0path"),
            Err(Fault::Status(Status::NotFound))
        ));
        assert!(matches!(
            resolve(&state, b""),
            Err(Fault::Status(Status::SerializationFailure))
        ));
    }

    /// `state` in a network filter's connection whose stream info has
    /// `facts` (no route, no virtual host: a listener's filter chain).
    fn connection(facts: StreamFacts) -> HostState {
        let mut state = state();
        state.active_context = 2;
        state.maps.info.facts = Some(crate::state::Facts::new(StreamFacts {
            network: true,
            ..facts
        }));
        state
    }

    #[test]
    fn a_network_connection_before_tcp_proxy_connects() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let state = connection(StreamFacts::new(start, Duration::ZERO, 4));
        assert_eq!(
            get(&state, "connection.id"),
            Ok(4u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            get(&state, "connection_id"),
            Ok(4u64.to_le_bytes().to_vec())
        );
        assert_eq!(get(&state, "connection.requested_server_name"), text(""));
        assert_eq!(get(&state, "connection.mtls"), Ok(vec![0]));
        assert_eq!(get(&state, "request.time"), int(1_700_000_000_000_000_000));
        assert_eq!(get(&state, "request.size"), int(0));
        assert_eq!(get(&state, "request.total_size"), int(0));
        assert_eq!(get(&state, "request.headers_bytes"), int(0));
        assert_eq!(
            get(&state, "request.headers").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        assert_eq!(get(&state, "response.flags"), int(0));
        assert_eq!(get(&state, "response.size"), int(0));
        assert_eq!(
            get(&state, "response.trailers").as_deref(),
            Ok(&EMPTY_MAP[..])
        );
        assert_eq!(
            get(&state, "upstream.request_attempt_count"),
            Ok(0u64.to_le_bytes().to_vec())
        );
        // A connection's upstream info is there from the start.
        assert_eq!(get(&state, "upstream.transport_failure_reason"), text(""));
        assert_eq!(get(&state, "xds.listener_direction"), int(0));
        assert_eq!(get(&state, "xds.filter_chain_name"), text(""));
        assert_eq!(get(&state, "xds.listener_metadata"), text(""));
        assert_eq!(get(&state, "metadata"), text(""));
        for path in [
            "connection.termination_details",
            "connection.tls_version",
            "request.protocol",
            "request.duration",
            "request.path",
            "request.id",
            "response.code",
            "response.code_details",
            "response.grpc_status",
            "response.backend_latency",
            "upstream.address",
            "upstream.port",
            "upstream.local_address",
            "upstream.cx_pool_ready_duration",
            "upstream.num_endpoints",
            "upstream.locality",
            "upstream_filter_state",
            "xds.cluster_name",
            "xds.cluster_metadata",
            "xds.upstream_host_metadata",
            "xds.route_name",
            "xds.virtual_host_name",
            "xds.virtual_host_metadata",
        ] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
        for path in ["request", "response", "connection", "upstream", "xds"] {
            assert_eq!(
                get(&state, path),
                Err(Status::SerializationFailure),
                "{path}"
            );
        }
    }

    #[test]
    fn a_network_connection_once_tcp_proxy_connected() {
        let mut state = connection(StreamFacts {
            attempts: 1,
            upstream_host: Some("127.0.0.1:9000".parse().expect("addr")),
            upstream_local: Some("127.0.0.1:40000".parse().expect("addr")),
            bytes_received: 12,
            bytes_sent: 5,
            ..StreamFacts::default()
        });
        state.cluster_name = Some("upstream".to_owned());
        assert_eq!(get(&state, "upstream.address"), text("127.0.0.1:9000"));
        assert_eq!(get(&state, "upstream.port"), int(9000));
        assert_eq!(
            get(&state, "upstream.local_address"),
            text("127.0.0.1:40000")
        );
        assert_eq!(get(&state, "upstream.cx_pool_ready_duration"), int(0));
        assert_eq!(
            get(&state, "upstream.request_attempt_count"),
            Ok(1u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            get(&state, "upstream.num_endpoints"),
            Ok(1u64.to_le_bytes().to_vec())
        );
        assert_eq!(get(&state, "upstream.locality"), text(""));
        assert_eq!(get(&state, "xds.cluster_name"), text("upstream"));
        assert_eq!(get(&state, "xds.cluster_metadata"), text(""));
        assert_eq!(
            get(&state, "upstream_filter_state"),
            Err(Status::SerializationFailure)
        );
        assert_eq!(
            get(&state, "xds.upstream_host_metadata"),
            Err(Status::SerializationFailure)
        );
        // No headers: the bytes the connection counted.
        assert_eq!(get(&state, "request.size"), int(12));
        assert_eq!(get(&state, "request.total_size"), int(12));
        assert_eq!(get(&state, "response.size"), int(5));
        assert_eq!(get(&state, "response.total_size"), int(5));
        for path in ["xds.route_name", "request.duration", "request.protocol"] {
            assert_eq!(get(&state, path), Err(Status::NotFound), "{path}");
        }
    }

    #[test]
    fn integers_parse_as_absl_simple_atoi() {
        assert_eq!(simple_atoi(b" 42\t"), Some(42));
        assert_eq!(simple_atoi(b"+7"), Some(7));
        assert_eq!(simple_atoi(b"-7"), Some(-7));
        for bad in [&b""[..], b"+", b"1 2", b"0x10", b"99999999999999999999"] {
            assert_eq!(simple_atoi(bad), None, "{bad:?}");
        }
        assert_eq!(simple_atou(b"-1"), None);
        assert_eq!(simple_atou(b"+16"), Some(16));
    }
}
