//! `proxy_get_property` and `proxy_set_property`, for the attributes the harness
//! knows, encoded as Envoy encodes them (strings raw, integers 8-byte
//! little-endian, booleans one byte). A path is its segments joined by NUL.
//!
//! Known: `plugin_name`, `plugin_root_id`, `plugin_vm_id`; `request.{path,
//! url_path, host, scheme, method, query, useragent, referer, id, headers.<name>}`
//! (while Envoy holds the request headers, and in `on_log`), `request.protocol`;
//! `response.{code, code_details, headers.<name>}` once the response exists,
//! `response.trailers.<name>` while Envoy holds the response trailers and in
//! `on_log`;
//! `source.{address, port}` and `destination.{address, port}` (the emulated
//! connection's addresses); `upstream.{address, port}` once the router sent the
//! request upstream; `connection.mtls`; `xds.{cluster_name, route_name,
//! node.id}`; filter state (see [`filter_state`]): `filter_state.<key>`, and
//! a property written with `proxy_set_property` by its name. A whole wrapper
//! (`request`) cannot be serialized; anything else is `NotFound`, as is every
//! stream attribute in a root context.

use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{Status, filter_state, proxy_fn};
use crate::fields::Fields;
use crate::state::HostState;

/// A property value before serialization.
enum Value {
    Bytes(Vec<u8>),
    Int(i64),
    Bool(bool),
}

impl Value {
    fn text(s: impl Into<Vec<u8>>) -> Self {
        Value::Bytes(s.into())
    }

    fn encode(self) -> Vec<u8> {
        match self {
            Value::Bytes(b) => b,
            Value::Int(i) => i.to_le_bytes().to_vec(),
            Value::Bool(b) => vec![u8::from(b)],
        }
    }
}

const NOT_FOUND: Fault = Fault::Status(Status::NotFound);

/// Request attributes derived from the request headers.
fn request(headers: &Fields, field: &[u8], rest: &[&[u8]]) -> Result<Value, Fault> {
    let header = |name: &[u8]| headers.get(name).map(<[u8]>::to_vec).ok_or(NOT_FOUND);
    let path = || header(b":path");
    let value = match field {
        b"path" => Value::Bytes(path()?),
        b"url_path" => {
            let p = path()?;
            let end = p.iter().position(|&b| b == b'?').unwrap_or(p.len());
            Value::Bytes(p[..end].to_vec())
        }
        b"query" => {
            let p = path()?;
            let start = p.iter().position(|&b| b == b'?').map_or(p.len(), |i| i + 1);
            Value::Bytes(p[start..].to_vec())
        }
        b"host" => Value::Bytes(header(b":authority")?),
        b"scheme" => Value::Bytes(header(b":scheme")?),
        b"method" => Value::Bytes(header(b":method")?),
        b"useragent" => Value::Bytes(header(b"user-agent")?),
        b"referer" => Value::Bytes(header(b"referer")?),
        b"id" => Value::Bytes(header(b"x-request-id")?),
        b"headers" => return header_value(headers, rest),
        _ => return Err(NOT_FOUND),
    };
    scalar(value, rest)
}

/// `request.headers.<name>` / `response.headers.<name>` /
/// `response.trailers.<name>`: all values joined by `,`.
fn header_value(headers: &Fields, rest: &[&[u8]]) -> Result<Value, Fault> {
    let [name, tail @ ..] = rest else {
        // The whole map is serializable in Envoy, but its order is Envoy's
        // internal map order, which the harness does not reproduce.
        return Err(Fault::Status(Status::Unimplemented));
    };
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
    let address = address.ok_or(NOT_FOUND)?;
    match rest {
        [b"address", tail @ ..] => scalar(Value::text(address.to_string()), tail),
        [b"port", tail @ ..] => scalar(Value::Int(i64::from(address.port())), tail),
        [] => Err(Fault::Status(Status::SerializationFailure)),
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

fn lookup(state: &HostState, path: &[&[u8]]) -> Result<Value, Fault> {
    let Some((&top, rest)) = path.split_first() else {
        return Err(NOT_FOUND);
    };
    let meta = &state.root().meta;
    match top {
        b"plugin_name" => return scalar(Value::text(meta.name.clone()), rest),
        b"plugin_root_id" => return scalar(Value::text(meta.root_id.clone()), rest),
        b"plugin_vm_id" => return scalar(Value::text(meta.vm_id.clone()), rest),
        b"xds" => {
            return match rest {
                [b"route_name"] => Ok(Value::text("")),
                [b"node", b"id"] => Ok(Value::text("")),
                [b"cluster_name"] if state.in_stream() => {
                    state.cluster_name.clone().map(Value::text).ok_or(NOT_FOUND)
                }
                [] => Err(Fault::Status(Status::SerializationFailure)),
                _ => Err(NOT_FOUND),
            };
        }
        _ => {}
    }
    if !state.in_stream() {
        return Err(NOT_FOUND);
    }
    let maps = &state.maps;
    match top {
        b"request" => match rest {
            [] => Err(Fault::Status(Status::SerializationFailure)),
            [b"protocol", tail @ ..] => scalar(Value::text("HTTP/1.1"), tail),
            [field, tail @ ..] => {
                let headers = maps.request_headers.as_ref().ok_or(NOT_FOUND)?;
                request(headers, field, tail)
            }
        },
        b"response" => {
            let info = &maps.info;
            match rest {
                [] => Err(Fault::Status(Status::SerializationFailure)),
                [b"code", tail @ ..] => scalar(
                    Value::Int(i64::from(info.response_code.ok_or(NOT_FOUND)?)),
                    tail,
                ),
                [b"code_details", tail @ ..] => {
                    let details = info.response_details.clone().ok_or(NOT_FOUND)?.into_owned();
                    scalar(Value::text(details), tail)
                }
                [b"headers", tail @ ..] => {
                    let headers = maps.response_headers.as_ref().ok_or(NOT_FOUND)?;
                    header_value(headers, tail)
                }
                // While Envoy holds the response trailers, and in `on_log`.
                [b"trailers", tail @ ..] => {
                    let trailers = maps.response_trailers.as_ref().ok_or(NOT_FOUND)?;
                    header_value(trailers, tail)
                }
                _ => Err(NOT_FOUND),
            }
        }
        b"source" => socket(state.source_address, rest),
        b"destination" => socket(state.destination_address, rest),
        b"upstream" => socket(maps.info.upstream_address, rest),
        b"connection" => match rest {
            [b"mtls"] => Ok(Value::Bool(false)),
            _ => Err(NOT_FOUND),
        },
        b"filter_state" => filter_state::read_entry(&maps.info.filter_state, rest)
            .map(|read| Value::Bytes(read.encode()))
            .map_err(Fault::Status),
        name => filter_state::read_property(&maps.info.filter_state, name, rest)
            .map(|read| Value::Bytes(read.encode()))
            .map_err(Fault::Status),
    }
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_get_property",
        |caller, path_ptr: i32, path_len: i32, ret_ptr: i32, ret_len: i32| {
            let result = memory::read(&mut caller, path_ptr, path_len).and_then(|path| {
                let segments: Vec<&[u8]> = path.split(|&b| b == 0).collect();
                let value = lookup(caller.data(), &segments)?.encode();
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
                let filter_state = &mut state.maps.info.filter_state;
                filter_state::write_property(filter_state, &path, value, declared.as_ref())
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
        state.maps.info.upstream_address = Some(upstream);
        assert_eq!(
            get(&state, "upstream.address").as_deref(),
            Ok(&b"127.0.0.1:8080"[..])
        );
        assert_eq!(
            get(&state, "upstream.port"),
            Ok(8080i64.to_le_bytes().to_vec())
        );
    }
}
