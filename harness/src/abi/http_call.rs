//! `proxy_http_call`: callouts to a named cluster. The call is validated as
//! Envoy validates it (known cluster, `:method`, `:path` and `:authority`
//! present, non-negative timeout) and queued; the chain answers it from the
//! cluster's upstream after the current callback returns, and delivers the
//! response to the root context with `proxy_on_http_call_response`.

use bytes::Bytes;
use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{Status, proxy_fn};
use crate::fields::{Fields, Kind};
use crate::state::{HostState, PendingCall};

const BAD: Fault = Fault::Status(Status::BadArgument);

fn build_request(
    headers: &Fields,
    body: Vec<u8>,
    timeout_ms: u32,
) -> Result<http::Request<Bytes>, Fault> {
    let method = http::Method::from_bytes(headers.get(b":method").ok_or(BAD)?).map_err(|_| BAD)?;
    let path = http::Uri::try_from(headers.get(b":path").ok_or(BAD)?).map_err(|_| BAD)?;
    let authority = headers.get(b":authority").ok_or(BAD)?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Bytes::from(body))
        .map_err(|_| BAD)?;
    let map = request.headers_mut();
    map.append(
        http::header::HOST,
        http::HeaderValue::from_bytes(authority).map_err(|_| BAD)?,
    );
    for (name, value) in headers.iter().filter(|(n, _)| !n.starts_with(b":")) {
        map.append(
            http::HeaderName::from_bytes(name).map_err(|_| BAD)?,
            http::HeaderValue::from_bytes(value).map_err(|_| BAD)?,
        );
    }
    // What Envoy's async client and router add to a callout.
    let len = request.body().len();
    let map = request.headers_mut();
    if len > 0 {
        map.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    }
    if timeout_ms > 0 {
        map.insert(
            "x-envoy-expected-rq-timeout-ms",
            http::HeaderValue::from(timeout_ms),
        );
    }
    map.insert("x-envoy-internal", http::HeaderValue::from_static("true"));
    crate::hcm::frame_request(&mut request);
    Ok(request)
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_http_call",
        |caller,
         up_ptr: i32,
         up_len: i32,
         hdr_ptr: i32,
         hdr_len: i32,
         body_ptr: i32,
         body_len: i32,
         trl_ptr: i32,
         trl_len: i32,
         timeout_ms: i32,
         ret_token: i32| {
            let result = (|| -> Result<(), Fault> {
                let cluster = memory::read_string(&mut caller, up_ptr, up_len)?;
                let headers = memory::read(&mut caller, hdr_ptr, hdr_len)?;
                let body = memory::read(&mut caller, body_ptr, body_len)?;
                let _trailers = memory::read(&mut caller, trl_ptr, trl_len)?;
                if timeout_ms < 0 || !caller.data().clusters.contains(&cluster) {
                    return Err(BAD);
                }
                let request = build_request(
                    &Fields::deserialize(&headers, Kind::Request),
                    body,
                    timeout_ms as u32,
                )?;
                // Envoy checks the token pointer before it sends anything.
                memory::write_u32(&mut caller, ret_token, 0)?;
                let state = caller.data_mut();
                let token = state.next_call_token();
                let sent_at = state.monotonic;
                let context = state.current_context();
                state.root_mut().pending_calls.push_back(PendingCall {
                    token,
                    cluster,
                    request,
                    timeout: (timeout_ms > 0)
                        .then(|| std::time::Duration::from_millis(u64::from(timeout_ms as u32))),
                    sent_at,
                    answer: None,
                    context,
                    seq: None,
                });
                memory::write_u32(&mut caller, ret_token, token)
            })();
            memory::status(result)?
        }
    );
    Ok(())
}
