//! gRPC callouts: `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`,
//! `proxy_grpc_cancel`, `proxy_grpc_close`, as Envoy's `Context::grpcCall` and
//! friends handle them.
//!
//! The service argument is first parsed as a serialized
//! `envoy.config.core.v3.GrpcService`; bytes that are not one are a cluster
//! name, and an unknown name is `ParseFailure`. A parsed service that names no
//! target crashes Envoy (`PANIC_DUE_TO_PROTO_UNSET`); one whose cluster does not
//! exist fails inside Envoy's gRPC client: the call answers `InternalFailure`
//! and, after the current callback, `proxy_on_grpc_close(token, 14)` arrives
//! for a token the plugin never saw ("Cluster not available"). Calls and streams
//! belong to the root context; the chain asks the services and delivers the
//! answers (see `crate::grpc`).

use bytes::Bytes;
use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{Status, proxy_fn};
use crate::fields::{Fields, Kind};
use crate::grpc::stream::{Inbound, Live};
use crate::grpc::{self as g, Call, Event, GrpcRequest, GrpcTokens, Stream};
use crate::state::HostState;

/// What the service argument names.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// `envoy_grpc`: a cluster, with the proto's `authority` and
    /// `initial_metadata` (empty for a plain cluster name).
    Envoy {
        cluster: String,
        authority: String,
        metadata: Vec<(String, String)>,
    },
    /// `google_grpc`: not emulated.
    Google,
    /// A proto with no target.
    Unset,
}

/// A field: its number and, if length-delimited, its bytes.
type Field<'a> = (u64, Option<&'a [u8]>);

/// A minimal protobuf wire-format reader: what `ParseFromString` accepts.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// The next field: number and, for length-delimited fields, the bytes.
    /// `Err` on malformed input; `Ok(None)` at the end.
    fn field(&mut self) -> Result<Option<Field<'a>>, ()> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint().ok_or(())?;
        self.value(key, 0).map(Some)
    }

    /// The value of the field `key` introduces. Groups are skipped, nested up
    /// to protobuf's recursion limit (100).
    fn value(&mut self, key: u64, depth: u32) -> Result<Field<'a>, ()> {
        let number = key >> 3;
        if number == 0 || depth > 100 {
            return Err(());
        }
        let bytes = match key & 7 {
            0 => {
                self.varint().ok_or(())?;
                None
            }
            1 => {
                self.take(8).ok_or(())?;
                None
            }
            2 => {
                let len = usize::try_from(self.varint().ok_or(())?).map_err(|_| ())?;
                Some(self.take(len).ok_or(())?)
            }
            3 => loop {
                let inner = self.varint().ok_or(())?;
                if inner & 7 == 4 {
                    if inner >> 3 == number {
                        break None;
                    }
                    return Err(());
                }
                self.value(inner, depth + 1)?;
            },
            5 => {
                self.take(4).ok_or(())?;
                None
            }
            // End-group without a start, and the undefined wire types 6 and 7.
            _ => return Err(()),
        };
        Ok((number, bytes))
    }
}

/// A proto3 `string` field: invalid UTF-8 fails the parse, as in protobuf C++.
fn string(bytes: &[u8]) -> Result<String, ()> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ())
}

/// Parses the message and every nested message Envoy reads; unknown fields
/// are skipped (but must be well-formed).
fn parse_grpc_service(bytes: &[u8]) -> Result<Target, ()> {
    let mut target = Target::Unset;
    let mut metadata = Vec::new();
    let mut wire = Wire(bytes);
    while let Some((number, value)) = wire.field()? {
        match (number, value) {
            (1, Some(envoy)) => {
                let (mut cluster, mut authority) = (String::new(), String::new());
                let mut inner = Wire(envoy);
                while let Some((n, v)) = inner.field()? {
                    match (n, v) {
                        (1, Some(v)) => cluster = string(v)?,
                        (2, Some(v)) => authority = string(v)?,
                        _ => {}
                    }
                }
                target = Target::Envoy {
                    cluster,
                    authority,
                    metadata: Vec::new(),
                };
            }
            (2, Some(google)) => {
                let mut inner = Wire(google);
                while inner.field()?.is_some() {}
                target = Target::Google;
            }
            (5, Some(header)) => {
                let (mut key, mut val) = (String::new(), String::new());
                let mut inner = Wire(header);
                while let Some((n, v)) = inner.field()? {
                    match (n, v) {
                        (1, Some(v)) => key = string(v)?,
                        (2, Some(v)) => val = string(v)?,
                        _ => {}
                    }
                }
                metadata.push((key, val));
            }
            _ => {}
        }
    }
    if let Target::Envoy { metadata: m, .. } = &mut target {
        *m = metadata;
    }
    Ok(target)
}

/// Resolves the service argument as Envoy does (see the module docs).
fn resolve(state: &mut HostState, service: &[u8]) -> Result<Target, Fault> {
    match parse_grpc_service(service) {
        Ok(Target::Unset) => Err(Fault::Trap(would_crash(
            state,
            "a GrpcService with neither envoy_grpc nor google_grpc (an empty service \
             argument parses as one) makes Envoy 1.40 abort: PANIC_DUE_TO_PROTO_UNSET",
        ))),
        Ok(target) => Ok(target),
        Err(()) => {
            let cluster = String::from_utf8_lossy(service).into_owned();
            if state.clusters.contains(&cluster) || state.grpc_clusters.contains(&cluster) {
                Ok(Target::Envoy {
                    cluster,
                    authority: String::new(),
                    metadata: Vec::new(),
                })
            } else {
                Err(Fault::Status(Status::ParseFailure))
            }
        }
    }
}

/// Marks the callback as one Envoy would not survive and stops the guest.
fn would_crash(state: &mut HostState, reason: &'static str) -> wasmtime::Error {
    state.defer().would_crash = Some(reason);
    tracing::error!(plugin = %state.root().meta.name, "{reason}");
    wasmtime::format_err!("would crash Envoy: {reason}")
}

/// The request headers Envoy's gRPC client and router send.
fn build_request(
    cluster: &str,
    authority: &str,
    service_metadata: &[(String, String)],
    service: &str,
    method: &str,
    metadata: &Fields,
    timeout_ms: Option<u64>,
) -> Result<http::Request<Bytes>, Fault> {
    let bad = || Fault::Status(Status::BadArgument);
    let host = if authority.is_empty() {
        cluster
    } else {
        authority
    };
    let uri = format!("http://{host}/{service}/{method}");
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(http::Uri::try_from(uri).map_err(|_| bad())?)
        .version(http::Version::HTTP_2)
        .body(Bytes::new())
        .map_err(|_| bad())?;
    let map = request.headers_mut();
    map.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    if let Some(ms) = timeout_ms {
        map.insert(
            "grpc-timeout",
            http::HeaderValue::from_str(&format!("{ms}m")).map_err(|_| bad())?,
        );
    }
    map.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    // The service's initial_metadata overwrites, the plugin's is added.
    for (k, v) in service_metadata {
        map.insert(
            http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).map_err(|_| bad())?,
            http::HeaderValue::from_str(v).map_err(|_| bad())?,
        );
    }
    for (k, v) in metadata.iter() {
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&k.to_ascii_lowercase()),
            http::HeaderValue::from_bytes(v),
        ) else {
            tracing::warn!(
                "gRPC metadata {:?} cannot be sent; dropped",
                String::from_utf8_lossy(k)
            );
            continue;
        };
        map.append(name, value);
    }
    if let Some(ms) = timeout_ms.filter(|&ms| ms > 0) {
        map.insert(
            "x-envoy-expected-rq-timeout-ms",
            http::HeaderValue::from(ms),
        );
    }
    map.insert("x-envoy-internal", http::HeaderValue::from_static("true"));
    Ok(request)
}

/// Envoy's `HeaderParser` refuses pseudo-headers and `host` in a service's
/// `initial_metadata`: the client cannot be created (`BadArgument`).
fn metadata_ok(metadata: &[(String, String)]) -> bool {
    metadata.iter().all(|(k, _)| {
        let k = k.to_ascii_lowercase();
        !k.is_empty() && !k.starts_with(':') && k != "host"
    })
}

/// A call or stream Envoy's client started.
struct Open {
    cluster: String,
    request: http::Request<Bytes>,
}

/// The common part of `proxy_grpc_call` and `proxy_grpc_stream`: resolves the
/// service and takes the token; no [`Open`] when Envoy's client fails at once
/// (the close is posted, the call answers `InternalFailure`).
fn open(
    state: &mut HostState,
    service_arg: &[u8],
    service: &str,
    method: &str,
    metadata: &[u8],
    timeout_ms: Option<u64>,
    next_token: fn(&mut GrpcTokens) -> u32,
) -> Result<(u32, Option<Open>), Fault> {
    let target = resolve(state, service_arg)?;
    // Envoy takes the token once the service resolved, before it creates the
    // client: a refused client still uses one up.
    let token = next_token(&mut state.grpc_tokens);
    let Target::Envoy {
        cluster,
        authority,
        metadata: service_metadata,
    } = target
    else {
        tracing::warn!(
            plugin = %state.root().meta.name,
            "google_grpc services are not emulated by weir-harness; answering Unimplemented"
        );
        return Err(Fault::Status(Status::Unimplemented));
    };
    if !metadata_ok(&service_metadata) {
        return Err(Fault::Status(Status::BadArgument));
    }
    if !state.clusters.contains(&cluster) && !state.grpc_clusters.contains(&cluster) {
        state.root_mut().grpc.events.push_back(Event::Close(
            token,
            g::code::UNAVAILABLE,
            "Cluster not available".to_owned(),
        ));
        return Ok((token, None));
    }
    let metadata = Fields::deserialize(metadata, Kind::Plain);
    let request = build_request(
        &cluster,
        &authority,
        &service_metadata,
        service,
        method,
        &metadata,
        timeout_ms,
    )?;
    Ok((token, Some(Open { cluster, request })))
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_grpc_call",
        |caller,
         svc_ptr: i32,
         svc_len: i32,
         name_ptr: i32,
         name_len: i32,
         method_ptr: i32,
         method_len: i32,
         md_ptr: i32,
         md_len: i32,
         msg_ptr: i32,
         msg_len: i32,
         timeout_ms: i32,
         ret_token: i32| {
            let result = (|| -> Result<(), Fault> {
                let service_arg = memory::read(&mut caller, svc_ptr, svc_len)?;
                let service = memory::read_string(&mut caller, name_ptr, name_len)?;
                let method = memory::read_string(&mut caller, method_ptr, method_len)?;
                let metadata = memory::read(&mut caller, md_ptr, md_len)?;
                let message = Bytes::from(memory::read(&mut caller, msg_ptr, msg_len)?);
                // The host widens the u32 to milliseconds: "negative" is long.
                let timeout = u64::from(timeout_ms as u32);
                let state = caller.data_mut();
                let (token, opened) = open(
                    state,
                    &service_arg,
                    &service,
                    &method,
                    &metadata,
                    Some(timeout),
                    GrpcTokens::next_call_token,
                )?;
                let opened = opened.ok_or(Fault::Status(Status::InternalFailure))?;
                let mut http = opened.request;
                *http.body_mut() = g::frame(std::slice::from_ref(&message));
                let deadline = (timeout > 0)
                    .then(|| state.monotonic + std::time::Duration::from_millis(timeout));
                let context = state.current_context();
                let seq = state.root_mut().grpc.next_seq();
                state.root_mut().grpc.calls.insert(
                    token,
                    Call {
                        request: GrpcRequest {
                            cluster: opened.cluster,
                            http,
                            messages: vec![message],
                        },
                        deadline,
                        asked: false,
                        connected: false,
                        context,
                        seq,
                    },
                );
                // The token is written after the call is sent: a bad pointer
                // leaves a live call the plugin cannot name.
                memory::write_u32(&mut caller, ret_token, token)
            })();
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_grpc_stream",
        |caller,
         svc_ptr: i32,
         svc_len: i32,
         name_ptr: i32,
         name_len: i32,
         method_ptr: i32,
         method_len: i32,
         md_ptr: i32,
         md_len: i32,
         ret_token: i32| {
            let result = (|| -> Result<(), Fault> {
                let service_arg = memory::read(&mut caller, svc_ptr, svc_len)?;
                let service = memory::read_string(&mut caller, name_ptr, name_len)?;
                let method = memory::read_string(&mut caller, method_ptr, method_len)?;
                let metadata = memory::read(&mut caller, md_ptr, md_len)?;
                let state = caller.data_mut();
                let (token, opened) = open(
                    state,
                    &service_arg,
                    &service,
                    &method,
                    &metadata,
                    None,
                    GrpcTokens::next_stream_token,
                )?;
                let opened = opened.ok_or(Fault::Status(Status::InternalFailure))?;
                let context = state.current_context();
                let request = GrpcRequest {
                    cluster: opened.cluster,
                    http: opened.request,
                    messages: Vec::new(),
                };
                // A streaming service hears of the stream as it goes; a whole
                // one is asked once the plugin half-closes it.
                let streaming = state.grpc_stream_clusters.contains(&request.cluster);
                let grpc = &mut state.root_mut().grpc;
                if streaming {
                    grpc.live.insert(token, Live::new(context, request.clone()));
                }
                let seq = grpc.next_seq();
                grpc.streams.insert(
                    token,
                    Stream {
                        request,
                        half_closed: false,
                        local_closed: false,
                        remote_closed: false,
                        asked: streaming,
                        connected: streaming,
                        refused: false,
                        reset: false,
                        dropped: false,
                        context,
                        seq,
                    },
                );
                memory::write_u32(&mut caller, ret_token, token)
            })();
            memory::status(result)?
        }
    );
    proxy_fn!(
        linker,
        "proxy_grpc_send",
        |caller, token: i32, msg_ptr: i32, msg_len: i32, end_stream: i32| {
            let result = memory::read(&mut caller, msg_ptr, msg_len).and_then(|message| {
                let token = token as u32;
                if !g::is_stream(token) {
                    return Err(Fault::Status(Status::BadArgument));
                }
                let grpc = &mut caller.data_mut().root_mut().grpc;
                if grpc.streams.get(&token).is_none_or(|s| s.dropped) {
                    return Err(Fault::Status(Status::NotFound));
                }
                grpc.send_on_refused(token);
                let stream = grpc
                    .streams
                    .get_mut(&token)
                    .ok_or(Fault::Status(Status::NotFound))?;
                // Envoy's stream is gone once the server closed it, and nothing
                // can follow a half-close: such messages go nowhere.
                if stream.half_closed || stream.remote_closed {
                    tracing::debug!(token, "gRPC message after the stream closed; goes nowhere");
                    return Ok(());
                }
                let message = Bytes::from(message);
                stream.request.messages.push(message.clone());
                stream.half_closed = end_stream != 0;
                grpc.tell(token, Inbound::Message(message));
                if end_stream != 0 {
                    grpc.tell(token, Inbound::HalfClose);
                }
                Ok(())
            });
            memory::status(result)?
        }
    );
    proxy_fn!(linker, "proxy_grpc_cancel", |caller, token: i32| {
        let token = token as u32;
        let grpc = &mut caller.data_mut().root_mut().grpc;
        if g::is_call(token) || g::is_stream(token) {
            let live = grpc.calls.contains_key(&token)
                || grpc.streams.get(&token).is_some_and(|s| !s.dropped);
            if live {
                // Envoy resets the call or stream: nothing more is delivered.
                grpc.reset(token);
                Status::Ok
            } else {
                Status::NotFound
            }
        } else {
            Status::BadArgument
        }
    });
    proxy_fn!(linker, "proxy_grpc_close", |caller, token: i32| {
        let token = token as u32;
        let grpc = &mut caller.data_mut().root_mut().grpc;
        if g::is_call(token) {
            // Closing a call cancels it.
            if grpc.calls.contains_key(&token) {
                grpc.forget(token);
                Status::Ok
            } else {
                Status::NotFound
            }
        } else if g::is_stream(token) {
            // Closing a stream reset while its refusal was delivered drops it
            // from the plugin's view; its close still comes.
            let reset = grpc.send_on_refused(token);
            match grpc.streams.get_mut(&token) {
                None => Status::NotFound,
                Some(stream) if stream.dropped => Status::NotFound,
                Some(stream) if reset => {
                    stream.dropped = true;
                    stream.half_closed = true;
                    stream.local_closed = true;
                    Status::Ok
                }
                Some(stream) if stream.remote_closed => {
                    grpc.forget(token);
                    Status::Ok
                }
                Some(stream) => {
                    // A local half-close: the server still answers.
                    let was_half_closed = std::mem::replace(&mut stream.half_closed, true);
                    stream.local_closed = true;
                    if !was_half_closed {
                        grpc.tell(token, Inbound::HalfClose);
                    }
                    Status::Ok
                }
            }
        } else {
            Status::BadArgument
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envoy_grpc(cluster: &str) -> Vec<u8> {
        let mut inner = vec![0x0a, cluster.len() as u8];
        inner.extend_from_slice(cluster.as_bytes());
        let mut out = vec![0x0a, inner.len() as u8];
        out.extend(inner);
        out
    }

    #[test]
    fn a_serialized_grpc_service_names_its_cluster() {
        assert_eq!(
            parse_grpc_service(&envoy_grpc("grpc")),
            Ok(Target::Envoy {
                cluster: "grpc".to_owned(),
                authority: String::new(),
                metadata: Vec::new()
            })
        );
    }

    #[test]
    fn initial_metadata_comes_with_the_target() {
        let mut bytes = envoy_grpc("c");
        bytes.extend([0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']);
        let Ok(Target::Envoy { metadata, .. }) = parse_grpc_service(&bytes) else {
            panic!("parses");
        };
        assert_eq!(metadata, [("k".to_owned(), "v".to_owned())]);
    }

    #[test]
    fn cluster_names_usually_do_not_parse_as_protos() {
        // 'g' is field 12 with the undefined wire type 7.
        assert_eq!(parse_grpc_service(b"grpc"), Err(()));
        assert_eq!(parse_grpc_service(b"\x0a\x05ab"), Err(()));
        // Empty bytes are an empty message: no target.
        assert_eq!(parse_grpc_service(b""), Ok(Target::Unset));
        // 'a' is field 12, fixed64: eight more bytes make a valid unknown field.
        assert_eq!(parse_grpc_service(b"abcdefghi"), Ok(Target::Unset));
        assert_eq!(parse_grpc_service(&[0x12, 0]), Ok(Target::Google));
    }

    #[test]
    fn groups_are_skipped_and_must_be_closed() {
        // field 3 start-group, a varint field 1 inside, end-group 3.
        assert_eq!(
            parse_grpc_service(&[0x1b, 0x08, 0x01, 0x1c]),
            Ok(Target::Unset)
        );
        assert_eq!(parse_grpc_service(&[0x1b, 0x08, 0x01]), Err(()));
        assert_eq!(parse_grpc_service(&[0x1c]), Err(()));
    }

    #[test]
    fn invalid_utf8_in_a_cluster_name_fails_the_parse() {
        assert_eq!(parse_grpc_service(&[0x0a, 3, 0x0a, 1, 0xff]), Err(()));
    }
}
