//! HTTP header maps: `proxy_{get,set}_header_map_pairs`, `proxy_get_header_map_size`,
//! `proxy_{get,add,replace,remove}_header_map_value`.
//!
//! Envoy hands a filter its request (response) headers only while it holds them:
//! in the headers callback and while that callback's pause lasts, and read-only in
//! `on_log`. Outside that window value calls answer `BadArgument` (`NotFound` in
//! `on_log`) and `get_header_map_pairs` answers an empty map.
//!
//! In `on_log`, `proxy_get_header_map_size` and changes answer `BadArgument`,
//! as Envoy's `getMap` does once a headers callback returned Continue, except
//! for the headers the filter's context still points at (measured in Envoy
//! 1.40): the request or response headers of the callback during which, or
//! during whose pause, the stream ended (a `proxy_close_stream`, a local
//! reply, a client that left), and the response headers of a callback that
//! paused. Those give their size and take changes, which later reads see.
//!
//! Trailers (map types 1 and 3) follow the same rules in their own callbacks
//! (`on_request_trailers`, `on_response_trailers`); in `on_log` the response
//! trailers are readable and the request trailers are not. The trailers of a
//! callback during which (or during whose pause) the stream ended are held
//! too; held request trailers give their size and take changes, but reads
//! still go to the access log's maps, which have none. Likewise a local
//! reply from `on_response_headers` leaves the context pointing at the
//! upstream's headers (size and changes) while reads see the reply's. In a
//! body callback
//! that ends its stream, any change to that direction's trailers (even
//! `proxy_get_header_map_size`) first creates an empty trailer map, as Envoy's
//! `getMap` calls `addDecodedTrailers`/`addEncodedTrailers` there; reading
//! does not.

use wasmtime::{Caller, Linker};

use super::memory::{self, Fault};
use super::{AbiVersion, Status, proxy_fn};
use crate::fields::{Fields, Kind};
use crate::state::{Held, HostState, Phase};

/// `proxy_map_type_t` values above this are `BadArgument`.
const MAX_MAP_TYPE: u32 = 7;
const REQUEST_HEADERS: u32 = 0;
const REQUEST_TRAILERS: u32 = 1;
const RESPONSE_HEADERS: u32 = 2;
const RESPONSE_TRAILERS: u32 = 3;
const GRPC_INITIAL_METADATA: u32 = 4;
const GRPC_TRAILING_METADATA: u32 = 5;
const CALL_RESPONSE_HEADERS: u32 = 6;

/// Resolves the map `kind` for the current context: `Ok(None)` if Envoy would not
/// expose it now, `Err(BadArgument)` for an unknown map type.
fn map(state: &mut HostState, kind: i32) -> Result<Option<&mut Fields>, Fault> {
    let kind = kind as u32;
    if kind > MAX_MAP_TYPE {
        return Err(Fault::Status(Status::BadArgument));
    }
    if kind == CALL_RESPONSE_HEADERS {
        // Read through the root context: available after set_effective_context too.
        return Ok(state.call_response.as_mut().map(|c| &mut c.headers));
    }
    // Read through the root context, during the matching gRPC callback.
    if kind == GRPC_INITIAL_METADATA {
        return Ok(state.root_mut().grpc.initial_metadata.as_mut());
    }
    if kind == GRPC_TRAILING_METADATA {
        return Ok(state.root_mut().grpc.trailing_metadata.as_mut());
    }
    if !state.in_stream() {
        return Ok(None);
    }
    Ok(match kind {
        REQUEST_HEADERS => state.maps.request_headers.as_mut(),
        // Envoy keeps no request trailers for the access log.
        REQUEST_TRAILERS if state.phase == Phase::Log => None,
        REQUEST_TRAILERS => state.maps.request_trailers.as_mut(),
        RESPONSE_HEADERS => state.maps.response_headers.as_mut(),
        RESPONSE_TRAILERS => state.maps.response_trailers.as_mut(),
        // Callout trailers: the emulated clusters speak HTTP/1 without
        // `enable_trailers`, so a callout response never has any.
        _ => None,
    })
}

/// In a body callback that ends the stream, a change to that direction's
/// trailers creates them first (Envoy's `addDecodedTrailers` /
/// `addEncodedTrailers`).
fn create_trailers(state: &mut HostState, kind: u32) {
    if !state.maps.trailers_addable || !state.in_stream() {
        return;
    }
    let maps = &mut state.maps;
    match (kind, state.phase) {
        (REQUEST_TRAILERS, Phase::Request) if maps.request_trailers.is_none() => {
            maps.request_trailers = Some(Fields::new(Kind::Plain));
        }
        (RESPONSE_TRAILERS, Phase::Response) if maps.response_trailers.is_none() => {
            maps.response_trailers = Some(Fields::new(Kind::ResponseTrailers));
        }
        _ => {}
    }
}

/// The map, if it is available and mutable now; else `BadArgument`.
fn mutable_map(state: &mut HostState, kind: i32) -> Result<&mut Fields, Fault> {
    // Callout response maps and gRPC metadata are never mutable; in `on_log`
    // only the maps the context still points at are (see `HeldMaps`).
    let in_log = state.phase == Phase::Log;
    let read_only = (in_log && !state.maps.held.holds(kind as u32))
        || matches!(
            kind as u32,
            CALL_RESPONSE_HEADERS | GRPC_INITIAL_METADATA | GRPC_TRAILING_METADATA
        );
    if !read_only {
        create_trailers(state, kind as u32);
    }
    // In `on_log`, a held map the access log does not read: the context's
    // own copy (the request trailers, or the upstream's response headers a
    // local reply replaced).
    let own =
        |state: &mut HostState| matches!(state.maps.held.get_mut(kind as u32), Some(Held::Own(_)));
    if in_log && !read_only && state.in_stream() && own(state) {
        return match state.maps.held.get_mut(kind as u32) {
            Some(Held::Own(fields)) => Ok(fields),
            _ => Err(Fault::Status(Status::BadArgument)),
        };
    }
    match map(state, kind)? {
        Some(fields) if !read_only => Ok(fields),
        _ => Err(Fault::Status(Status::BadArgument)),
    }
}

fn mutate(
    caller: &mut Caller<'_, HostState>,
    kind: i32,
    key: (i32, i32),
    value: Option<(i32, i32)>,
    apply: impl FnOnce(&mut Fields, &[u8], &[u8]),
) -> Result<(), Fault> {
    memory::with_two(caller, key, value.unwrap_or((0, 0)), |key, value, state| {
        let fields = mutable_map(state, kind)?;
        apply(fields, key, value);
        Ok(())
    })?
}

pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    abi: AbiVersion,
) -> wasmtime::Result<()> {
    // ABI 0.1.0 has no NotFound here: Envoy answers a missing key (or, in
    // `on_log`, a missing map) with an empty value.
    let missing = if abi == AbiVersion::V0_1_0 {
        Status::Ok
    } else {
        Status::NotFound
    };
    proxy_fn!(
        linker,
        "proxy_get_header_map_pairs",
        |caller, kind: i32, ret_ptr: i32, ret_len: i32| {
            let bytes = map(caller.data_mut(), kind).map(|fields| match fields {
                Some(f) if f.len() > 0 => f.serialize(),
                _ => Vec::new(),
            });
            let result = bytes.and_then(|b| memory::copy_out(&mut caller, &b, ret_ptr, ret_len));
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_set_header_map_pairs",
        |caller, kind: i32, ptr: i32, len: i32| {
            let result = memory::with_one(&mut caller, ptr, len, |bytes, state| {
                let fields = mutable_map(state, kind)?;
                // A malformed map parses as empty, so the call clears the map (as in Envoy).
                *fields = Fields::deserialize(bytes, fields.kind());
                Ok(())
            })
            .and_then(|r| r);
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_get_header_map_size",
        |caller, kind: i32, ret: i32| {
            let result = mutable_map(caller.data_mut(), kind)
                .map(|f| f.byte_size() as u32)
                .and_then(|size| memory::write_u32(&mut caller, ret, size));
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_get_header_map_value",
        |caller, kind: i32, key_ptr: i32, key_len: i32, ret_ptr: i32, ret_len: i32| {
            let value = memory::with_one(&mut caller, key_ptr, key_len, |key, state| {
                let in_log = state.phase == Phase::Log;
                let value = match map(state, kind)? {
                    None if in_log => None,
                    None => return Err(Fault::Status(Status::BadArgument)),
                    Some(fields) => fields.get(key).map(<[u8]>::to_vec),
                };
                match value {
                    Some(value) => Ok(value),
                    None if missing == Status::Ok => Ok(Vec::new()),
                    None => Err(Fault::Status(missing)),
                }
            });
            let result = value
                .and_then(|r| r)
                .and_then(|value| memory::copy_out(&mut caller, &value, ret_ptr, ret_len));
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_add_header_map_value",
        |caller, kind: i32, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32| {
            let result = mutate(
                &mut caller,
                kind,
                (key_ptr, key_len),
                Some((val_ptr, val_len)),
                Fields::add,
            );
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_replace_header_map_value",
        |caller, kind: i32, key_ptr: i32, key_len: i32, val_ptr: i32, val_len: i32| {
            let result = mutate(
                &mut caller,
                kind,
                (key_ptr, key_len),
                Some((val_ptr, val_len)),
                Fields::set,
            );
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_remove_header_map_value",
        |caller, kind: i32, key_ptr: i32, key_len: i32| {
            let result = mutate(&mut caller, kind, (key_ptr, key_len), None, |f, k, _| {
                f.remove(k)
            });
            memory::status(result)?
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::HeldMaps;

    /// A stream context in `on_log`, with request and response headers.
    fn in_log(held: HeldMaps) -> HostState {
        let mut state = HostState::for_tests();
        state.active_context = 2;
        state.phase = Phase::Log;
        let mut request = Fields::new(Kind::Request);
        request.add(b":path", b"/");
        let mut response = Fields::new(Kind::Response);
        response.add(b":status", b"200");
        state.maps.request_headers = Some(request);
        state.maps.response_headers = Some(response);
        state.maps.held = held;
        state
    }

    fn status(r: Result<&mut Fields, Fault>) -> Option<Status> {
        match r {
            Ok(_) => None,
            Err(Fault::Status(s)) => Some(s),
            Err(_) => Some(Status::InternalFailure),
        }
    }

    #[test]
    fn in_on_log_only_held_headers_are_mutable() {
        let mut state = in_log(HeldMaps::default());
        for kind in 0..4 {
            assert_eq!(
                status(mutable_map(&mut state, kind)),
                Some(Status::BadArgument)
            );
        }

        let mut state = in_log(HeldMaps {
            request_headers: Held::Logged,
            ..HeldMaps::default()
        });
        let Ok(request) = mutable_map(&mut state, REQUEST_HEADERS as i32) else {
            panic!("the request headers are held");
        };
        request.add(b"x-new", b"1");
        assert_eq!(request.byte_size(), ":path/x-new1".len());
        assert_eq!(
            status(mutable_map(&mut state, RESPONSE_HEADERS as i32)),
            Some(Status::BadArgument)
        );
        // Reads see the change.
        let Ok(read) = map(&mut state, REQUEST_HEADERS as i32) else {
            panic!("a known map type");
        };
        assert_eq!(read.and_then(|f| f.get(b"x-new")), Some(&b"1"[..]));

        let mut state = in_log(HeldMaps {
            response_headers: Held::Logged,
            ..HeldMaps::default()
        });
        assert!(mutable_map(&mut state, RESPONSE_HEADERS as i32).is_ok());
        assert_eq!(
            status(mutable_map(&mut state, REQUEST_HEADERS as i32)),
            Some(Status::BadArgument)
        );
        // Trailers are never held here, and a callout's map never mutable.
        for kind in [REQUEST_TRAILERS, RESPONSE_TRAILERS, CALL_RESPONSE_HEADERS] {
            assert_eq!(
                status(mutable_map(&mut state, kind as i32)),
                Some(Status::BadArgument)
            );
        }
    }

    #[test]
    fn in_on_log_held_request_trailers_take_changes_reads_do_not_see() {
        let mut trailers = Fields::new(Kind::Plain);
        trailers.add(b"x-t", b"1");
        let mut upstream = Fields::new(Kind::Response);
        upstream.add(b":status", b"502");
        upstream.add(b"x-up", b"1");
        let mut state = in_log(HeldMaps {
            request_trailers: Held::Own(trailers),
            response_headers: Held::Own(upstream),
            ..HeldMaps::default()
        });

        let Ok(kept) = mutable_map(&mut state, REQUEST_TRAILERS as i32) else {
            panic!("the request trailers are held");
        };
        assert_eq!(kept.byte_size(), "x-t1".len());
        kept.add(b"x-new", b"1");
        // Reads go to the access log's maps: no request trailers there.
        assert!(matches!(map(&mut state, REQUEST_TRAILERS as i32), Ok(None)));

        let Ok(upstream) = mutable_map(&mut state, RESPONSE_HEADERS as i32) else {
            panic!("the upstream's response headers are held");
        };
        assert_eq!(upstream.byte_size(), ":status502x-up1".len());
        upstream.add(b"x-new", b"1");
        let Ok(Some(read)) = map(&mut state, RESPONSE_HEADERS as i32) else {
            panic!("the access log's response headers");
        };
        assert_eq!(read.get(b":status"), Some(&b"200"[..]));
        assert_eq!(read.get(b"x-new"), None);
    }

    #[test]
    fn held_maps_name_map_types() {
        let mut held = HeldMaps::default();
        assert!((0..4).all(|kind| !held.holds(kind)));
        held.response_headers = Held::Logged;
        assert!(held.holds(2));
        assert!(!held.holds(0));
        held.request_trailers = Held::Own(Fields::new(Kind::Plain));
        assert!(held.holds(1));
        assert!(!held.holds(0) && !held.holds(3) && !held.holds(99));
    }

    #[test]
    fn held_response_trailers_are_the_access_logs() {
        let mut trailers = Fields::new(Kind::ResponseTrailers);
        trailers.add(b"x-rt", b"one");
        let mut state = in_log(HeldMaps {
            response_trailers: Held::Logged,
            ..HeldMaps::default()
        });
        state.maps.response_trailers = Some(trailers);
        let Ok(held) = mutable_map(&mut state, RESPONSE_TRAILERS as i32) else {
            panic!("the response trailers are held");
        };
        held.add(b"x-new", b"1");
        // Reads see the change: it is the access log's map.
        let Ok(Some(read)) = map(&mut state, RESPONSE_TRAILERS as i32) else {
            panic!("the access log's response trailers");
        };
        assert_eq!(read.get(b"x-new"), Some(&b"1"[..]));
    }
}
