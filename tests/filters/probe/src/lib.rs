//! `probe`: a conformance test filter written directly on the proxy-wasm ABI (no
//! SDK), so that every status the host returns is reported, never panicked on.
//!
//! A request carries scripts in headers, one per callback (and an `x-probe-id`,
//! logged as `on_delete <id>` when the stream ends). A plugin named other than
//! `probe` reads `x-<name>-request` etc. instead and prefixes its log lines with
//! `[<name>]`, so several probes can share a chain:
//! `x-probe-request` (run in `on_request_headers`), `x-probe-request-body`
//! (`on_request_body`, which first logs its size and end-of-stream arguments),
//! `x-probe-request-trailers` (`on_request_trailers`, which first logs the
//! number of trailers), `x-probe-response` (`on_response_headers`),
//! `x-probe-response-body`, `x-probe-response-trailers` and
//! `x-probe-log` (`on_log`). A script is a list of
//! commands separated by `;`; each command is logged at info level as
//! `<callback> <command> -> <status> [<result>]`, so the harness and Envoy can be
//! compared line by line.
//!
//! Commands (`M` is a map type number, `B` a buffer type number):
//! - `get:M:key`, `pairs:M`, `size:M`, `add:M:key=value`, `set:M:key=value`,
//!   `del:M:key`, `setpairs:M:k=v,k=v` — header maps;
//! - `buf:B:start:max`, `bufstatus:B`, `setbuf:B:start:size:data` — buffers;
//! - `reply:status:details:body` — a local reply (header `x-probe: 1` added);
//!   `greply:status:grpc:k=v,k=v:details:body` — a local reply with this
//!   `grpc_status` argument (a signed number) and exactly these headers;
//! - `eos` — the callback's end-of-stream argument (`true` or `false`);
//! - `continue:S`, `close:S` — stream control (`S` a stream type number);
//! - `call:cluster:method:path:authority` — an HTTP callout (5 s timeout); its
//!   answer runs `x-probe-callout` with the calling stream as effective context;
//!   `callt:timeout_ms:cluster:method:path:authority` gives the timeout;
//! - `prop:a.b.c` (segments joined by NUL on the wire), `setprop:name:value`
//!   (a value argument, see `var`) — properties; `propv:a/b` separates
//!   segments with `/` (for keys that contain `.`); `propn:path` prints an
//!   integer property in decimal, `propmap:path` a map's entries sorted by
//!   key, `proptree:path` a struct's maps (sorted by key) and lists (in
//!   order) at every depth, `proptime:path:min_ms` and `propdur:path:min_ms` check a
//!   timestamp's age (by the host's clock) or a duration against `min_ms` (up
//!   to 2 s more), `propid:path` compares an id with the last one read
//!   (`same`, `larger`, `smaller`), `propaddr:path` masks the port of an
//!   address, `propfields:path:1,2` prints the named top-level fields of a
//!   serialized protobuf message;
//! - `sget:key`, `sset:key:cas:value` — shared data;
//! - `mdef:type:name`, `minc:id:delta`, `mrec:id:value`, `mget:id` — metrics;
//! - `qreg:name`, `qres:vm_id:name`, `qenq:id:data`, `qdeq:id` — shared queues
//!   (`on_queue_ready` logs the token and dequeues until the queue is empty; an
//!   item `run:<command>` is run there, in the root context);
//! - `ffi:name:args` — a foreign function; args `hex:...` are hex-decoded, and
//!   `zip:text` passes the result of `compress(text)`;
//! - `var:name:value` remembers a value (module-global, so the plugin
//!   configuration can set one for every stream; `show:name` prints it in hex):
//!   a value argument is `$name`, `0x<hex>`, `pem:LABEL:value` (the PEM text
//!   of a value's bytes) or as `ffi` arguments;
//! - `declare:name:type:span:readonly:schema` — `declare_property` (type,
//!   span and readonly are numbers, schema a value);
//!   `fstate:span:path:value` — `set_envoy_filter_state`;
//!   `sign:hash:key:text` and `verify:hash:key:signature:text` — `sign` and
//!   `verify_signature`, `key` being `der=value`, `pem=value`, both joined by
//!   `,` or empty; the results are decoded (`sign` remembers the signature as
//!   `$sig`); `expr:text` — `expr_create` (remembers the token for `$`),
//!   `eval:token`, `edel:token` — `expr_evaluate`, `expr_delete`, `token`
//!   being `$` or a value;
//! - `propv:a/b/c` — a property whose segments are separated by `/` (for
//!   keys that contain `.`);
//! - `gcall:svc:service:method:timeout:message:k=v,k=v` — a unary gRPC call;
//!   `gstream:svc:service:method:k=v,k=v` — a gRPC stream; `svc` is a cluster
//!   name, `proto=<cluster>` (a serialized `GrpcService` with `envoy_grpc`) or
//!   `hex=<bytes>`; `gsend:token:message:eos`, `gcancel:token`, `gclose:token`
//!   (`token` `$` is the last one this VM opened); `status` — `proxy_get_status`.
//!   The gRPC callbacks log their arguments and what they can read, make the
//!   stream that opened the call the effective context and run its
//!   `x-probe-grpc-metadata`, `x-probe-grpc-message`, `x-probe-grpc-trailers` or
//!   `x-probe-grpc-close` script; the `n`-th message of a stream (1 to 9) runs
//!   `x-probe-grpc-message-<n>` instead when the request has it;
//! - `period:ms` — `proxy_set_tick_period_milliseconds`; `ontick:c1,c2` — the
//!   commands (`,` for `;`) `on_tick` runs with the current stream as the
//!   effective context; `oncallout:c1,c2` — the current stream's callout script
//!   (for a connection, whose scripts are not in headers); `onlog:c1,c2`
//!   and `onclose:c1,c2` — the current connection's `on_log` script and the
//!   one its close callbacks run; `ongrpc:which:c1,c2` — the current
//!   connection's gRPC callback script `which` (`metadata`, `message`,
//!   `message-<n>`, `trailers`, `close`: what `x-probe-grpc-<which>` holds
//!   for a request); `onconnect:c1,c2` — what
//!   `on_new_connection` runs for every connection of the plugin (set in the
//!   plugin configuration; its return value is the callback's);
//! - `startup` — the answers to the callouts `on_configure` made (those are
//!   recorded instead of logged: Envoy starts a plugin in several VMs);
//! - `loglevel`, `time`, `effective:id` (`effective:$`: the running stream, or
//!   the one `on_tick` acts for) — misc host calls; `trap` — trap the VM;
//! - `count` — bump a module-global counter (shared by the plugins of one VM)
//!   and report it; `ids` — the callback's context id and its plugin's root id;
//! - `return:N` — what the callback returns (default 0, Continue); `hold` —
//!   Pause unless the callback's end-of-stream flag is set; `atend` — until the
//!   end of the stream, Pause without running (or logging) the rest.
//!
//! As a network (L4) filter, the probe logs every callback with its arguments
//! (`on_new_connection`, `on_downstream_data <size> <eos>`, `on_upstream_data
//! <size> <eos>`, `on_downstream_connection_close <peer>`,
//! `on_upstream_connection_close <peer>`, `on_delete tcp`), and a data callback
//! runs the script it finds in the data itself: the text after `probe:` up to the
//! end of that line (an echoing upstream sends it back, so the upstream
//! callback runs it too).
#![allow(unsafe_code, reason = "a raw ABI filter: FFI to the host is the point")]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

#[allow(missing_docs, reason = "raw proxy-wasm ABI imports")]
mod ffi {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        pub(crate) fn proxy_log(level: u32, ptr: *const u8, len: usize) -> u32;
        pub(crate) fn proxy_get_log_level(ret: *mut u32) -> u32;
        pub(crate) fn proxy_get_current_time_nanoseconds(ret: *mut u64) -> u32;
        pub(crate) fn proxy_get_header_map_value(
            map: u32,
            kp: *const u8,
            kl: usize,
            rp: *mut *mut u8,
            rl: *mut usize,
        ) -> u32;
        pub(crate) fn proxy_get_header_map_pairs(map: u32, rp: *mut *mut u8, rl: *mut usize)
        -> u32;
        pub(crate) fn proxy_set_header_map_pairs(map: u32, p: *const u8, l: usize) -> u32;
        pub(crate) fn proxy_get_header_map_size(map: u32, ret: *mut u32) -> u32;
        pub(crate) fn proxy_add_header_map_value(
            map: u32,
            kp: *const u8,
            kl: usize,
            vp: *const u8,
            vl: usize,
        ) -> u32;
        pub(crate) fn proxy_replace_header_map_value(
            map: u32,
            kp: *const u8,
            kl: usize,
            vp: *const u8,
            vl: usize,
        ) -> u32;
        pub(crate) fn proxy_remove_header_map_value(map: u32, kp: *const u8, kl: usize) -> u32;
        pub(crate) fn proxy_get_buffer_bytes(
            kind: u32,
            start: usize,
            max: usize,
            rp: *mut *mut u8,
            rl: *mut usize,
        ) -> u32;
        pub(crate) fn proxy_get_buffer_status(kind: u32, size: *mut usize, flags: *mut u32) -> u32;
        pub(crate) fn proxy_set_buffer_bytes(
            kind: u32,
            start: usize,
            size: usize,
            p: *const u8,
            l: usize,
        ) -> u32;
        pub(crate) fn proxy_send_local_response(
            status: u32,
            dp: *const u8,
            dl: usize,
            bp: *const u8,
            bl: usize,
            hp: *const u8,
            hl: usize,
            grpc: i32,
        ) -> u32;
        pub(crate) fn proxy_continue_stream(kind: u32) -> u32;
        pub(crate) fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
        pub(crate) fn proxy_close_stream(kind: u32) -> u32;
        pub(crate) fn proxy_set_effective_context(id: u32) -> u32;
        pub(crate) fn proxy_get_shared_data(
            kp: *const u8,
            kl: usize,
            rp: *mut *mut u8,
            rl: *mut usize,
            cas: *mut u32,
        ) -> u32;
        pub(crate) fn proxy_set_shared_data(
            kp: *const u8,
            kl: usize,
            vp: *const u8,
            vl: usize,
            cas: u32,
        ) -> u32;
        pub(crate) fn proxy_define_metric(
            kind: u32,
            np: *const u8,
            nl: usize,
            ret: *mut u32,
        ) -> u32;
        pub(crate) fn proxy_increment_metric(id: u32, delta: i64) -> u32;
        pub(crate) fn proxy_record_metric(id: u32, value: u64) -> u32;
        pub(crate) fn proxy_get_metric(id: u32, ret: *mut u64) -> u32;
        pub(crate) fn proxy_http_call(
            up: *const u8,
            ul: usize,
            hp: *const u8,
            hl: usize,
            bp: *const u8,
            bl: usize,
            tp: *const u8,
            tl: usize,
            timeout: u32,
            token: *mut u32,
        ) -> u32;
        pub(crate) fn proxy_get_property(
            pp: *const u8,
            pl: usize,
            rp: *mut *mut u8,
            rl: *mut usize,
        ) -> u32;
        pub(crate) fn proxy_set_property(pp: *const u8, pl: usize, vp: *const u8, vl: usize)
        -> u32;
        pub(crate) fn proxy_register_shared_queue(np: *const u8, nl: usize, ret: *mut u32) -> u32;
        pub(crate) fn proxy_resolve_shared_queue(
            vp: *const u8,
            vl: usize,
            np: *const u8,
            nl: usize,
            ret: *mut u32,
        ) -> u32;
        pub(crate) fn proxy_enqueue_shared_queue(id: u32, p: *const u8, l: usize) -> u32;
        pub(crate) fn proxy_dequeue_shared_queue(id: u32, rp: *mut *mut u8, rl: *mut usize) -> u32;
        pub(crate) fn proxy_grpc_call(
            sp: *const u8,
            sl: usize,
            np: *const u8,
            nl: usize,
            mp: *const u8,
            ml: usize,
            hp: *const u8,
            hl: usize,
            bp: *const u8,
            bl: usize,
            timeout: u32,
            token: *mut u32,
        ) -> u32;
        pub(crate) fn proxy_grpc_stream(
            sp: *const u8,
            sl: usize,
            np: *const u8,
            nl: usize,
            mp: *const u8,
            ml: usize,
            hp: *const u8,
            hl: usize,
            token: *mut u32,
        ) -> u32;
        pub(crate) fn proxy_grpc_send(token: u32, p: *const u8, l: usize, eos: u32) -> u32;
        pub(crate) fn proxy_grpc_cancel(token: u32) -> u32;
        pub(crate) fn proxy_grpc_close(token: u32) -> u32;
        pub(crate) fn proxy_get_status(code: *mut u32, rp: *mut *mut u8, rl: *mut usize) -> u32;
        pub(crate) fn proxy_call_foreign_function(
            np: *const u8,
            nl: usize,
            ap: *const u8,
            al: usize,
            rp: *mut *mut u8,
            rl: *mut usize,
        ) -> u32;
    }
}

/// Declares the ABI version.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The allocator the host uses to return data.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v = std::mem::ManuallyDrop::new(Vec::<u8>::with_capacity(size));
    v.as_mut_ptr()
}

fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: the host allocated `len` bytes with proxy_on_memory_allocate (a Vec
    // with capacity `len`) and gave them to us.
    unsafe { Vec::from_raw_parts(ptr, len, len) }
}

/// The name of the plugin whose callback runs (plugins sharing the VM each
/// have their own root context and name).
fn plugin_name() -> String {
    let root = ACTIVE.with(|a| a.get().1);
    NAMES.with(|n| n.borrow().get(&root).cloned().unwrap_or_default())
}

/// A callback for `context` starts: remembers it and its plugin's root.
fn enter(context: u32) {
    let root = ROOT_OF.with(|r| r.borrow().get(&context).copied().unwrap_or(context));
    ACTIVE.with(|a| a.set((context, root)));
}

fn log(message: &str) {
    let message = {
        let n = plugin_name();
        if n.is_empty() || n == "probe" {
            message.to_owned()
        } else {
            format!("[{n}] {message}")
        }
    };
    // SAFETY: message is valid for reads.
    unsafe { ffi::proxy_log(2, message.as_ptr(), message.len()) };
}

/// The request header that carries this plugin's `what` script:
/// `x-probe-<what>` for the plugin named `probe`, `x-<name>-<what>` otherwise.
fn script_header(what: &str) -> String {
    let n = plugin_name();
    if n.is_empty() || n == "probe" {
        format!("x-probe-{what}")
    } else {
        format!("x-{n}-{what}")
    }
}

fn escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(char::from(b));
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    s
}

fn pairs_text(bytes: &[u8]) -> String {
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(n) = u32_at(0) else {
        return "(none)".to_owned();
    };
    let mut at = 4 + n * 8;
    let mut out = Vec::new();
    for i in 0..n {
        let (Some(kl), Some(vl)) = (u32_at(4 + i * 8), u32_at(8 + i * 8)) else {
            return "(malformed)".to_owned();
        };
        let (Some(k), Some(v)) = (
            bytes.get(at..at + kl),
            bytes.get(at + kl + 1..at + kl + 1 + vl),
        ) else {
            return "(malformed)".to_owned();
        };
        // Envoy's router times the upstream in real milliseconds.
        let v = if k == b"x-envoy-upstream-service-time" && v.iter().all(u8::is_ascii_digit) {
            "<ms>".to_owned()
        } else {
            escape(v)
        };
        out.push(format!("{}={v}", escape(k)));
        at += kl + vl + 2;
    }
    out.join(",")
}

fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend((k.len() as u32).to_le_bytes());
        out.extend((v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend(k.as_bytes());
        out.push(0);
        out.extend(v.as_bytes());
        out.push(0);
    }
    out
}

fn num(s: &str) -> u32 {
    s.parse().unwrap_or(u32::MAX)
}

/// Runs one command; returns the status and a printable result.
fn run(command: &str, ret: &mut u32, eos: bool) -> (u32, String) {
    let (op, args) = command.split_once(':').unwrap_or((command, ""));
    // Header commands take the rest as the key (keys may start with ':').
    let fields = match op {
        "buf" | "reply" | "sset" => 3,
        "greply" => 5,
        "call" => 4,
        "callt" => 5,
        "setbuf" => 4,
        "gcall" => 6,
        "gstream" | "gsend" => 4,
        "declare" => 5,
        "fstate" | "sign" => 3,
        "verify" => 4,
        "expr" => 1,
        _ => 2,
    };
    let mut parts = args.splitn(fields, ':');
    let a = parts.next().unwrap_or_default();
    let b = parts.next().unwrap_or_default();
    let c = parts.next().unwrap_or_default();
    let d = parts.next().unwrap_or_default();
    let e = parts.next().unwrap_or_default();
    let f = parts.next().unwrap_or_default();
    let mut ptr = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: every pointer passed below is to a live local or slice.
    unsafe {
        match op {
            "get" => {
                let s = ffi::proxy_get_header_map_value(
                    num(a),
                    b.as_ptr(),
                    b.len(),
                    &mut ptr,
                    &mut len,
                );
                (s, escape(&take(ptr, len)))
            }
            "pairs" => {
                let s = ffi::proxy_get_header_map_pairs(num(a), &mut ptr, &mut len);
                let bytes = take(ptr, len);
                (s, format!("[{}] {}", len, pairs_text(&bytes)))
            }
            "size" => {
                let mut size = 0;
                let s = ffi::proxy_get_header_map_size(num(a), &mut size);
                (s, size.to_string())
            }
            "add" | "set" => {
                let (k, v) = b.split_once('=').unwrap_or((b, ""));
                let f = if op == "add" {
                    ffi::proxy_add_header_map_value
                } else {
                    ffi::proxy_replace_header_map_value
                };
                (
                    f(num(a), k.as_ptr(), k.len(), v.as_ptr(), v.len()),
                    String::new(),
                )
            }
            "del" => (
                ffi::proxy_remove_header_map_value(num(a), b.as_ptr(), b.len()),
                String::new(),
            ),
            "setpairs" => {
                let pairs: Vec<(&str, &str)> = b
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.split_once('=').unwrap_or((p, "")))
                    .collect();
                let bytes = serialize(&pairs);
                (
                    ffi::proxy_set_header_map_pairs(num(a), bytes.as_ptr(), bytes.len()),
                    String::new(),
                )
            }
            "buf" => {
                let s = ffi::proxy_get_buffer_bytes(
                    num(a),
                    num(b) as usize,
                    num(c) as usize,
                    &mut ptr,
                    &mut len,
                );
                (s, escape(&take(ptr, len)))
            }
            // call:cluster:method:path:authority (an empty part is left out);
            // callt:timeout_ms:cluster:method:path:authority.
            "call" | "callt" => {
                let (timeout, a, b, c, d) = if op == "callt" {
                    (num(a), b, c, d, e)
                } else {
                    (5000, a, b, c, d)
                };
                let probe_id = stream_script(CURRENT.with(std::cell::Cell::get), |s| &s.id);
                let mut headers = Vec::new();
                for (k, v) in [(":method", b), (":path", c), (":authority", d)] {
                    if !v.is_empty() {
                        headers.push((k, v));
                    }
                }
                // A call made outside any stream (in on_configure) has no id:
                // the cluster answers it as the scenario running.
                if !probe_id.is_empty() {
                    headers.push(("x-probe-id", probe_id.as_str()));
                }
                let headers = serialize(&headers);
                let mut token = 0;
                let s = ffi::proxy_http_call(
                    a.as_ptr(),
                    a.len(),
                    headers.as_ptr(),
                    headers.len(),
                    std::ptr::null(),
                    0,
                    std::ptr::null(),
                    0,
                    timeout,
                    &mut token,
                );
                if s == 0 && CONFIGURING.with(std::cell::Cell::get) {
                    STARTUP_CALLS.with(|c| c.borrow_mut().push(token));
                } else if s == 0 {
                    CALLS.with(|c| {
                        c.borrow_mut()
                            .insert(token, CURRENT.with(std::cell::Cell::get))
                    });
                }
                (s, format!("token={token}"))
            }
            "gcall" => {
                let svc = grpc_service_arg(a);
                let metadata = metadata_arg(f);
                let mut token = 0;
                let s = ffi::proxy_grpc_call(
                    svc.as_ptr(),
                    svc.len(),
                    b.as_ptr(),
                    b.len(),
                    c.as_ptr(),
                    c.len(),
                    metadata.as_ptr(),
                    metadata.len(),
                    e.as_ptr(),
                    e.len(),
                    num(d),
                    &mut token,
                );
                opened(s, token)
            }
            "gstream" => {
                let svc = grpc_service_arg(a);
                let metadata = metadata_arg(d);
                let mut token = 0;
                let s = ffi::proxy_grpc_stream(
                    svc.as_ptr(),
                    svc.len(),
                    b.as_ptr(),
                    b.len(),
                    c.as_ptr(),
                    c.len(),
                    metadata.as_ptr(),
                    metadata.len(),
                    &mut token,
                );
                opened(s, token)
            }
            "gsend" => (
                ffi::proxy_grpc_send(grpc_token(a), b.as_ptr(), b.len(), num(c)),
                String::new(),
            ),
            "gcancel" => (ffi::proxy_grpc_cancel(grpc_token(a)), String::new()),
            "gclose" => (ffi::proxy_grpc_close(grpc_token(a)), String::new()),
            "status" => {
                let mut code = 99;
                let s = ffi::proxy_get_status(&mut code, &mut ptr, &mut len);
                (s, format!("{code} {}", escape(&take(ptr, len))))
            }
            // Path segments are separated by '.' here and by NUL on the wire.
            "prop" => {
                let path = a.replace('.', "\0");
                let s = ffi::proxy_get_property(path.as_ptr(), path.len(), &mut ptr, &mut len);
                (s, escape(&take(ptr, len)))
            }
            "propn" => {
                let (s, value) = property(a);
                (s, number_text(&value))
            }
            "propmap" => {
                let (s, value) = property(a);
                (s, map_text(&value))
            }
            "proptree" => {
                let (s, value) = property(a);
                (s, tree_text(&value, 0))
            }
            "proptime" => {
                let (s, value) = property(a);
                (s, timestamp_text(&value, num(b)))
            }
            "propdur" => {
                let (s, value) = property(a);
                (s, duration_text(&value, num(b)))
            }
            "propid" => {
                let (s, value) = property(a);
                (s, id_text(&value))
            }
            "propfields" => {
                let (s, value) = property(a);
                (s, proto_fields_text(&value, b))
            }
            "propaddr" => {
                let (s, value) = property(a);
                (s, address_text(&value))
            }
            // Segments separated by '/' (for keys that contain '.').
            "propv" => {
                let path = a.replace('/', "\0");
                let s = ffi::proxy_get_property(path.as_ptr(), path.len(), &mut ptr, &mut len);
                (s, escape(&take(ptr, len)))
            }
            "setprop" => {
                let path = a.replace('.', "\0");
                let value = value_arg(b);
                (
                    ffi::proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()),
                    String::new(),
                )
            }
            "sget" => {
                let mut cas = 0;
                let s =
                    ffi::proxy_get_shared_data(a.as_ptr(), a.len(), &mut ptr, &mut len, &mut cas);
                (s, format!("{} cas={cas}", escape(&take(ptr, len))))
            }
            "sset" => (
                ffi::proxy_set_shared_data(a.as_ptr(), a.len(), c.as_ptr(), c.len(), num(b)),
                String::new(),
            ),
            "mdef" => {
                let mut id = 0;
                let s = ffi::proxy_define_metric(num(a), b.as_ptr(), b.len(), &mut id);
                (s, id.to_string())
            }
            "minc" => (
                ffi::proxy_increment_metric(num(a), b.parse().unwrap_or(i64::MIN)),
                String::new(),
            ),
            "mrec" => (
                ffi::proxy_record_metric(num(a), b.parse().unwrap_or(u64::MAX)),
                String::new(),
            ),
            "mget" => {
                let mut v = 0u64;
                let s = ffi::proxy_get_metric(num(a), &mut v);
                (s, v.to_string())
            }
            "qreg" => {
                let mut id = 0;
                let s = ffi::proxy_register_shared_queue(a.as_ptr(), a.len(), &mut id);
                (s, id.to_string())
            }
            "qres" => {
                let mut id = 0;
                let s = ffi::proxy_resolve_shared_queue(
                    a.as_ptr(),
                    a.len(),
                    b.as_ptr(),
                    b.len(),
                    &mut id,
                );
                (s, id.to_string())
            }
            "qenq" => (
                ffi::proxy_enqueue_shared_queue(num(a), b.as_ptr(), b.len()),
                String::new(),
            ),
            "qdeq" => {
                let s = ffi::proxy_dequeue_shared_queue(num(a), &mut ptr, &mut len);
                (s, escape(&take(ptr, len)))
            }
            "ffi" => {
                let args = foreign_args(b);
                let s = ffi::proxy_call_foreign_function(
                    a.as_ptr(),
                    a.len(),
                    args.as_ptr(),
                    args.len(),
                    &mut ptr,
                    &mut len,
                );
                (s, escape(&take(ptr, len)))
            }
            "var" => {
                let value = value_arg(b);
                let n = value.len();
                VARS.with(|v| v.borrow_mut().insert(a.to_owned(), value));
                (0, format!("{n} bytes"))
            }
            "show" => (
                0,
                hex(&VARS.with(|v| v.borrow().get(a).cloned().unwrap_or_default())),
            ),
            "declare" | "fstate" | "sign" | "verify" => {
                let (name, args) = match op {
                    "declare" => ("declare_property", declare_args(a, b, c, d, e)),
                    "fstate" => ("set_envoy_filter_state", filter_state_args(a, b, c)),
                    "sign" => ("sign", sign_args(a, b, c)),
                    _ => ("verify_signature", verify_args(a, b, c, d)),
                };
                let s = ffi::proxy_call_foreign_function(
                    name.as_ptr(),
                    name.len(),
                    args.as_ptr(),
                    args.len(),
                    &mut ptr,
                    &mut len,
                );
                let result = take(ptr, len);
                let text = match op {
                    "sign" if s == 0 => sign_result(&result),
                    "verify" if s == 0 => verify_result(&result),
                    _ => escape(&result),
                };
                (s, text)
            }
            "expr" => {
                let name = "expr_create";
                let s = ffi::proxy_call_foreign_function(
                    name.as_ptr(),
                    name.len(),
                    a.as_ptr(),
                    a.len(),
                    &mut ptr,
                    &mut len,
                );
                let result = take(ptr, len);
                match <[u8; 4]>::try_from(result.as_slice()) {
                    Ok(token) if s == 0 => {
                        let token = u32::from_le_bytes(token);
                        LAST_EXPR.with(|t| t.set(token));
                        (s, format!("token={token}"))
                    }
                    _ => (s, escape(&result)),
                }
            }
            "eval" | "edel" => {
                let name = if op == "eval" {
                    "expr_evaluate"
                } else {
                    "expr_delete"
                };
                let token = if a == "$" {
                    LAST_EXPR.with(std::cell::Cell::get).to_le_bytes().to_vec()
                } else {
                    value_arg(a)
                };
                let s = ffi::proxy_call_foreign_function(
                    name.as_ptr(),
                    name.len(),
                    token.as_ptr(),
                    token.len(),
                    &mut ptr,
                    &mut len,
                );
                (s, escape(&take(ptr, len)))
            }
            "setbuf" => {
                let s = ffi::proxy_set_buffer_bytes(
                    num(a),
                    num(b) as usize,
                    num(c) as usize,
                    d.as_ptr(),
                    d.len(),
                );
                (s, String::new())
            }
            "bufstatus" => {
                let mut flags = 0;
                let s = ffi::proxy_get_buffer_status(num(a), &mut len, &mut flags);
                (s, format!("{len} {flags}"))
            }
            "reply" => {
                let headers = serialize(&[("x-probe", "1")]);
                let s = ffi::proxy_send_local_response(
                    num(a),
                    b.as_ptr(),
                    b.len(),
                    c.as_ptr(),
                    c.len(),
                    headers.as_ptr(),
                    headers.len(),
                    -1,
                );
                (s, String::new())
            }
            "eos" => (0, eos.to_string()),
            "greply" => {
                let pairs: Vec<(&str, &str)> = c
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.split_once('=').unwrap_or((p, "")))
                    .collect();
                let headers = serialize(&pairs);
                let s = ffi::proxy_send_local_response(
                    num(a),
                    d.as_ptr(),
                    d.len(),
                    e.as_ptr(),
                    e.len(),
                    headers.as_ptr(),
                    headers.len(),
                    b.parse().unwrap_or(-1),
                );
                (s, String::new())
            }
            "continue" => (ffi::proxy_continue_stream(num(a)), String::new()),
            "close" => (ffi::proxy_close_stream(num(a)), String::new()),
            // `effective:$`: the stream whose callback (or timer) is running.
            "effective" => {
                let id = if a == "$" {
                    CURRENT.with(std::cell::Cell::get)
                } else {
                    num(a)
                };
                (ffi::proxy_set_effective_context(id), String::new())
            }
            "period" => (
                ffi::proxy_set_tick_period_milliseconds(num(a)),
                String::new(),
            ),
            // What on_tick runs, for the stream running now.
            "ontick" => {
                let root = ACTIVE.with(|a| a.get().1);
                let stream = CURRENT.with(std::cell::Cell::get);
                let commands = args.replace(',', ";");
                TICKS.with(|t| t.borrow_mut().insert(root, (stream, commands)));
                (0, String::new())
            }
            // The current stream's callout script.
            "oncallout" => {
                let stream = CURRENT.with(std::cell::Cell::get);
                let commands = args.replace(',', ";");
                STREAMS.with(|s| {
                    if let Some(scripts) = s.borrow_mut().get_mut(&stream) {
                        scripts.callout = commands;
                    }
                });
                (0, String::new())
            }
            // The current connection's gRPC callback scripts (a
            // connection's scripts are not in headers).
            "ongrpc" => {
                let stream = CURRENT.with(std::cell::Cell::get);
                let commands = b.replace(',', ";");
                let set = STREAMS.with(|s| {
                    let mut streams = s.borrow_mut();
                    let Some(scripts) = streams.get_mut(&stream) else {
                        return false;
                    };
                    let slot = match a {
                        "metadata" => &mut scripts.grpc_metadata,
                        "message" => &mut scripts.grpc_message,
                        "trailers" => &mut scripts.grpc_trailers,
                        "close" => &mut scripts.grpc_close,
                        nth => {
                            let n = nth
                                .strip_prefix("message-")
                                .and_then(|n| n.parse::<usize>().ok())
                                .filter(|n| (1..=9).contains(n));
                            let Some(n) = n else { return false };
                            if scripts.grpc_message_nth.len() < n {
                                scripts.grpc_message_nth.resize(n, String::new());
                            }
                            &mut scripts.grpc_message_nth[n - 1]
                        }
                    };
                    *slot = commands;
                    true
                });
                (if set { 0 } else { 2 }, String::new())
            }
            // The current connection's `on_log` and close-callback scripts
            // (a connection's scripts are not in headers).
            "onlog" | "onclose" => {
                let stream = CURRENT.with(std::cell::Cell::get);
                let commands = args.replace(',', ";");
                STREAMS.with(|s| {
                    if let Some(scripts) = s.borrow_mut().get_mut(&stream) {
                        if op == "onlog" {
                            scripts.log = commands;
                        } else {
                            scripts.close = commands;
                        }
                    }
                });
                (0, String::new())
            }
            // What `on_new_connection` runs for every connection of this
            // plugin (module-global: set in the plugin configuration).
            "onconnect" => {
                let root = ACTIVE.with(|a| a.get().1);
                let commands = args.replace(',', ";");
                ON_CONNECT.with(|c| c.borrow_mut().insert(root, commands));
                (0, String::new())
            }
            // The module-global counter, incremented: shows which plugins
            // share a module instance.
            // What the answers to on_configure's callouts were.
            "startup" => STARTUP_ANSWERS.with(|a| {
                let answers = a.borrow();
                if answers.is_empty() {
                    (0, "none".to_owned())
                } else {
                    (0, answers.join(" | "))
                }
            }),
            "count" => {
                let n = COUNTER.with(|c| {
                    c.set(c.get() + 1);
                    c.get()
                });
                (0, n.to_string())
            }
            // The running callback's context id and its plugin's root id.
            "ids" => {
                let (context, root) = ACTIVE.with(std::cell::Cell::get);
                (0, format!("context={context} root={root}"))
            }
            "loglevel" => {
                let mut level = 99;
                let s = ffi::proxy_get_log_level(&mut level);
                (s, level.to_string())
            }
            "time" => {
                let mut t = 0u64;
                let s = ffi::proxy_get_current_time_nanoseconds(&mut t);
                (
                    s,
                    if t > 0 {
                        "nonzero".to_owned()
                    } else {
                        "zero".to_owned()
                    },
                )
            }
            "return" => {
                *ret = num(a);
                (0, String::new())
            }
            // A trap, as a Rust panic with panic=abort ends.
            "trap" => std::process::abort(),
            // Pause (buffer) until the end of the stream, then continue.
            "hold" => {
                *ret = u32::from(!eos);
                (0, String::new())
            }
            _ => (u32::MAX, format!("unknown command {op:?}")),
        }
    }
}

/// `proxy_get_property` of a `.`-separated path: its status and value.
fn property(path: &str) -> (u32, Vec<u8>) {
    let path = path.replace('.', "\0");
    let mut ptr = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: path and the out-params are valid.
    let status = unsafe { ffi::proxy_get_property(path.as_ptr(), path.len(), &mut ptr, &mut len) };
    (status, take(ptr, len))
}

/// Eight little-endian bytes as a signed integer.
fn int64(value: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(value.try_into().ok()?))
}

/// An integer property (8 bytes, little-endian) in decimal; anything else
/// escaped, with its length.
fn number_text(value: &[u8]) -> String {
    match int64(value) {
        Some(n) => n.to_string(),
        None => format!("not 8 bytes ({}): {}", value.len(), escape(value)),
    }
}

/// A serialized map (the header-pairs format) as `key=value` entries sorted
/// by key: Envoy lists a header map's keys in its hash set's order, which
/// changes from process to process.
fn map_text(value: &[u8]) -> String {
    let u32_at = |at: usize| -> Option<usize> {
        let b = value.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(n) = u32_at(0) else {
        return format!("not a map: {}", escape(value));
    };
    let mut at = 4 + n * 8;
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let (Some(kl), Some(vl)) = (u32_at(4 + i * 8), u32_at(8 + i * 8)) else {
            return format!("not a map: {}", escape(value));
        };
        let (Some(k), Some(v)) = (
            value.get(at..at + kl),
            value.get(at + kl + 1..at + kl + 1 + vl),
        ) else {
            return format!("not a map: {}", escape(value));
        };
        entries.push(format!("{}={}", escape(k), escape(v)));
        at += kl + vl + 2;
    }
    if at != value.len() {
        return format!("not a map: {}", escape(value));
    }
    entries.sort();
    format!("{n} [{}]", entries.join(", "))
}

/// The entries of a serialized map (the pairs format), if `value` is one.
fn pairs_of(value: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = value.get(at..at.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = u32_at(0)?;
    let mut at = n.checked_mul(8)?.checked_add(4)?;
    let mut entries = Vec::new();
    for i in 0..n {
        let (kl, vl) = (u32_at(4 + i * 8)?, u32_at(8 + i * 8)?);
        let k = value.get(at..at.checked_add(kl)?)?;
        let v_at = at.checked_add(kl)?.checked_add(1)?;
        let v = value.get(v_at..v_at.checked_add(vl)?)?;
        if value.get(v_at - 1) != Some(&0) || value.get(v_at + vl) != Some(&0) {
            return None;
        }
        entries.push((k, v));
        at = v_at + vl + 1;
    }
    (at == value.len()).then_some(entries)
}

/// A structured property (a protobuf `Struct` as Envoy serializes it: maps
/// of serialized values, lists as maps of keys without values), its parts
/// parsed wherever they are well-formed pairs: a map as `{k=v, ...}` sorted
/// by key (Envoy lists a struct's fields in its hash map's order, which
/// changes from process to process), a list (every value empty) as `[e, ...]`
/// in order, anything else escaped. Test data must not hold strings that
/// look like pairs.
fn tree_text(value: &[u8], depth: usize) -> String {
    let Some(entries) = pairs_of(value).filter(|_| depth < 16) else {
        return escape(value);
    };
    if !entries.is_empty() && entries.iter().all(|(_, v)| v.is_empty()) {
        let items: Vec<String> = entries
            .iter()
            .map(|(k, _)| tree_text(k, depth + 1))
            .collect();
        return format!("[{}]", items.join(", "));
    }
    let mut items: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), tree_text(v, depth + 1)))
        .collect();
    items.sort();
    format!("{{{}}}", items.join(", "))
}

/// How much later than the least expected a real proxy may be, in
/// milliseconds: time and durations are compared within this window.
const SLACK_MS: i128 = 2000;

/// A timestamp property (8-byte nanoseconds since the epoch), checked against
/// the host's clock: `age >= min_ms ms` when it is that much (but less than
/// [`SLACK_MS`] more) in the past, else what it is.
fn timestamp_text(value: &[u8], min_ms: u32) -> String {
    let Some(at) = int64(value) else {
        return format!("not 8 bytes ({}): {}", value.len(), escape(value));
    };
    let mut now = 0u64;
    // SAFETY: the out-param is valid.
    unsafe { ffi::proxy_get_current_time_nanoseconds(&mut now) };
    let age_ns = i128::from(now) - i128::from(at);
    let min_ns = i128::from(min_ms) * 1_000_000;
    if age_ns >= min_ns && age_ns < min_ns + SLACK_MS * 1_000_000 {
        format!("timestamp, age >= {min_ms} ms")
    } else {
        format!("timestamp {at}, age {age_ns} ns")
    }
}

/// A duration property (8-byte nanoseconds): `>= min_ms ms` when it is at
/// least that (but less than [`SLACK_MS`] more), else what it is.
fn duration_text(value: &[u8], min_ms: u32) -> String {
    let Some(ns) = int64(value) else {
        return format!("not 8 bytes ({}): {}", value.len(), escape(value));
    };
    let (ns, min_ns) = (i128::from(ns), i128::from(min_ms) * 1_000_000);
    if ns >= min_ns && ns < min_ns + SLACK_MS * 1_000_000 {
        format!("duration >= {min_ms} ms")
    } else {
        format!("duration {ns} ns")
    }
}

thread_local! {
    /// The last id `propid` read.
    static LAST_ID: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// An id property (8-byte unsigned): compared with the last one `propid`
/// read, as `same`, `larger` or `smaller` (`first` for the first).
fn id_text(value: &[u8]) -> String {
    let Ok(bytes) = <[u8; 8]>::try_from(value) else {
        return format!("not 8 bytes ({}): {}", value.len(), escape(value));
    };
    let id = u64::from_le_bytes(bytes);
    let relation = match LAST_ID.with(|l| l.replace(Some(id))) {
        None => "first",
        Some(last) if last == id => "same",
        Some(last) if last < id => "larger",
        Some(_) => "smaller",
    };
    format!("id, {relation}")
}

/// A protobuf varint at `*at`, which moves past it.
fn proto_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The first occurrence of each top-level field of a serialized protobuf
/// message named in `numbers` (`1,2,6`): a varint in decimal, anything else
/// escaped, `-` when absent.
fn proto_fields_text(bytes: &[u8], numbers: &str) -> String {
    let mut found: Vec<(u64, String)> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(key) = proto_varint(bytes, &mut at) else {
            return format!("not a message: {}", escape(bytes));
        };
        let value = match key & 7 {
            0 => proto_varint(bytes, &mut at).map(|v| v.to_string()),
            1 | 5 => {
                let n = if key & 7 == 1 { 8 } else { 4 };
                let v = bytes.get(at..at + n).map(escape);
                at += n;
                v
            }
            2 => proto_varint(bytes, &mut at).and_then(|n| {
                let n = usize::try_from(n).ok()?;
                let v = bytes.get(at..at.checked_add(n)?).map(escape);
                at += n;
                v
            }),
            _ => None,
        };
        let Some(value) = value else {
            return format!("not a message: {}", escape(bytes));
        };
        if !found.iter().any(|(n, _)| *n == key >> 3) {
            found.push((key >> 3, value));
        }
    }
    numbers
        .split(',')
        .map(|n| {
            let value = n
                .parse::<u64>()
                .ok()
                .and_then(|n| found.iter().find(|(f, _)| *f == n))
                .map_or("-", |(_, v)| v.as_str());
            format!("{n}={value}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An `ip:port` property with the port masked (an ephemeral port differs
/// from run to run).
fn address_text(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    match text.rsplit_once(':') {
        Some((ip, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{ip}:<port>")
        }
        _ => format!("not ip:port: {}", escape(value)),
    }
}

/// The service argument of `gcall`/`gstream`: `proto=<cluster>` serializes an
/// `envoy.config.core.v3.GrpcService` with `envoy_grpc.cluster_name`,
/// `hex=<hex>` is raw bytes, anything else a cluster name.
fn grpc_service_arg(arg: &str) -> Vec<u8> {
    if let Some(cluster) = arg.strip_prefix("proto=") {
        let mut inner = vec![0x0a, cluster.len() as u8];
        inner.extend_from_slice(cluster.as_bytes());
        let mut out = vec![0x0a, inner.len() as u8];
        out.extend(inner);
        return out;
    }
    if let Some(hex) = arg.strip_prefix("hex=") {
        return foreign_args(&format!("hex:{hex}"));
    }
    arg.as_bytes().to_vec()
}

/// `k=v,k=v` as a serialized header map, after the stream's `x-probe-id` (so
/// the test's gRPC server knows the scenario).
fn metadata_arg(arg: &str) -> Vec<u8> {
    let probe_id = stream_script(CURRENT.with(std::cell::Cell::get), |s| &s.id);
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if !probe_id.is_empty() {
        pairs.push(("x-probe-id", probe_id.as_str()));
    }
    pairs.extend(
        arg.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, ""))),
    );
    serialize(&pairs)
}

/// A gRPC token argument: a number, or `$` for the last one opened.
fn grpc_token(arg: &str) -> u32 {
    if arg == "$" {
        LAST_GRPC.with(std::cell::Cell::get)
    } else {
        num(arg)
    }
}

/// Remembers a gRPC call or stream the running stream opened.
fn opened(status: u32, token: u32) -> (u32, String) {
    if status == 0 {
        LAST_GRPC.with(|t| t.set(token));
        GRPC.with(|g| {
            g.borrow_mut()
                .insert(token, CURRENT.with(std::cell::Cell::get))
        });
    }
    (status, format!("token={token}"))
}

/// The argument bytes of an `ffi` command: `hex:<hex>` decoded, `zip:<text>`
/// the host's `compress` of the text, anything else as is.
fn foreign_args(arg: &str) -> Vec<u8> {
    if let Some(hex) = arg.strip_prefix("hex:") {
        return (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
    }
    if let Some(text) = arg.strip_prefix("zip:") {
        let name = "compress";
        let mut ptr = std::ptr::null_mut();
        let mut len = 0;
        // SAFETY: name, text and the out-params are valid.
        let status = unsafe {
            ffi::proxy_call_foreign_function(
                name.as_ptr(),
                name.len(),
                text.as_ptr(),
                text.len(),
                &mut ptr,
                &mut len,
            )
        };
        return if status == 0 {
            take(ptr, len)
        } else {
            Vec::new()
        };
    }
    arg.as_bytes().to_vec()
}

/// A value argument: `$name` is a remembered `var`, `0x<hex>` hex-decoded
/// (usable where a `:` would end the argument), `pem:LABEL:value` the PEM text
/// of a value's bytes, anything else as `ffi` arguments.
fn value_arg(arg: &str) -> Vec<u8> {
    if let Some(name) = arg.strip_prefix('$') {
        return VARS.with(|v| v.borrow().get(name).cloned().unwrap_or_default());
    }
    if let Some(hex) = arg.strip_prefix("0x") {
        return foreign_args(&format!("hex:{hex}"));
    }
    if let Some(rest) = arg.strip_prefix("pem:") {
        let (label, value) = rest.split_once(':').unwrap_or((rest, ""));
        return pem(label, &value_arg(value)).into_bytes();
    }
    foreign_args(arg)
}

/// `bytes` as PEM text with `label`, in 64-column lines.
fn pem(label: &str, bytes: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Appends a protobuf varint.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited protobuf field (left out when empty, as proto3
/// serializes).
fn pb_bytes(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    if !data.is_empty() {
        varint(out, field << 3 | 2);
        varint(out, data.len() as u64);
        out.extend_from_slice(data);
    }
}

/// Appends a varint protobuf field (left out when 0).
fn pb_varint(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        varint(out, field << 3);
        varint(out, v);
    }
}

/// A number argument for a protobuf field (`u32::MAX` if it does not parse).
fn num64(s: &str) -> u64 {
    s.parse().unwrap_or(u64::from(u32::MAX))
}

/// `DeclarePropertyArguments`: name, type and span numbers, readonly 0/1, a
/// schema value.
fn declare_args(name: &str, kind: &str, span: &str, readonly: &str, schema: &str) -> Vec<u8> {
    let mut out = Vec::new();
    pb_bytes(&mut out, 1, name.as_bytes());
    pb_varint(&mut out, 2, num64(readonly));
    pb_varint(&mut out, 3, num64(kind));
    pb_bytes(&mut out, 4, &value_arg(schema));
    pb_varint(&mut out, 5, num64(span));
    out
}

/// `SetEnvoyFilterStateArguments`: a span number, the key, a value.
fn filter_state_args(span: &str, path: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    pb_bytes(&mut out, 1, path.as_bytes());
    pb_bytes(&mut out, 2, &value_arg(value));
    pb_varint(&mut out, 3, num64(span));
    out
}

/// A key argument of `sign`/`verify`: `der=value`, `pem=value`, both joined
/// by `,`, or empty; the fields are DER then PEM.
fn key_fields(spec: &str) -> (Vec<u8>, Vec<u8>) {
    let (mut der, mut pem) = (Vec::new(), Vec::new());
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some(("der", v)) => der = value_arg(v),
            Some(("pem", v)) => pem = value_arg(v),
            _ => {}
        }
    }
    (der, pem)
}

/// `SignArguments`: hash function, key, text.
fn sign_args(hash: &str, key: &str, text: &str) -> Vec<u8> {
    let (der, pem) = key_fields(key);
    let mut out = Vec::new();
    pb_bytes(&mut out, 1, hash.as_bytes());
    pb_bytes(&mut out, 2, &der);
    pb_bytes(&mut out, 3, &value_arg(text));
    pb_bytes(&mut out, 4, &pem);
    out
}

/// `VerifySignatureArguments`: hash function, key, signature, text.
fn verify_args(hash: &str, key: &str, signature: &str, text: &str) -> Vec<u8> {
    let (der, pem) = key_fields(key);
    let mut out = Vec::new();
    pb_bytes(&mut out, 1, hash.as_bytes());
    pb_bytes(&mut out, 2, &der);
    pb_bytes(&mut out, 3, &value_arg(signature));
    pb_bytes(&mut out, 4, &value_arg(text));
    pb_bytes(&mut out, 5, &pem);
    out
}

/// A protobuf field's value: a varint (`Ok`) or length-delimited bytes.
type PbValue = Result<u64, Vec<u8>>;

/// The fields of a protobuf message: (number, value).
fn pb_fields(mut data: &[u8]) -> Option<Vec<(u64, PbValue)>> {
    fn read_varint(data: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = data.split_first()?;
            *data = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut fields = Vec::new();
    while !data.is_empty() {
        let tag = read_varint(&mut data)?;
        match tag & 7 {
            0 => fields.push((tag >> 3, Ok(read_varint(&mut data)?))),
            2 => {
                let n = usize::try_from(read_varint(&mut data)?).ok()?;
                let bytes = data.get(..n)?.to_vec();
                data = &data[n..];
                fields.push((tag >> 3, Err(bytes)));
            }
            _ => return None,
        }
    }
    Some(fields)
}

/// A `SignResult`: `result=<0|1> error=<text>`; the signature is remembered
/// as `$sig` (ECDSA signatures differ from run to run: `show:sig` prints
/// deterministic ones).
fn sign_result(data: &[u8]) -> String {
    let Some(fields) = pb_fields(data) else {
        return format!("(malformed) {}", escape(data));
    };
    let (mut result, mut signature, mut error) = (0, Vec::new(), Vec::new());
    for (field, value) in fields {
        match (field, value) {
            (1, Ok(v)) => result = v,
            (2, Err(b)) => signature = b,
            (3, Err(b)) => error = b,
            _ => {}
        }
    }
    VARS.with(|v| v.borrow_mut().insert("sig".to_owned(), signature));
    format!("result={result} error={}", escape(&error))
}

/// A `VerifySignatureResult`: `result=<0|1> error=<text>`.
fn verify_result(data: &[u8]) -> String {
    let Some(fields) = pb_fields(data) else {
        return format!("(malformed) {}", escape(data));
    };
    let (mut result, mut error) = (0, Vec::new());
    for (field, value) in fields {
        match (field, value) {
            (1, Ok(v)) => result = v,
            (2, Err(b)) => error = b,
            _ => {}
        }
    }
    format!("result={result} error={}", escape(&error))
}

/// Runs a script and returns what the callback should return.
fn script(callback: &str, text: &str, eos: bool) -> u32 {
    let mut ret = 0;
    for command in text.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        // Buffer quietly until the end of the stream; run the rest there.
        if command == "atend" {
            if eos {
                continue;
            }
            return 1;
        }
        let (status, result) = run(command, &mut ret, eos);
        if op_is_return(command) {
            continue;
        }
        let line = if result.is_empty() {
            format!("{callback} {command} -> {status}")
        } else {
            format!("{callback} {command} -> {status} {result}")
        };
        log(&line);
    }
    ret
}

fn op_is_return(command: &str) -> bool {
    command.starts_with("return:") || command == "hold"
}

#[derive(Default)]
struct Scripts {
    id: String,
    callout: String,
    request_body: String,
    request_trailers: String,
    response: String,
    response_body: String,
    response_trailers: String,
    log: String,
    grpc_metadata: String,
    grpc_message: String,
    /// `x-probe-grpc-message-<n>`: for a stream's `n`-th message (from 1).
    grpc_message_nth: Vec<String>,
    grpc_trailers: String,
    grpc_close: String,
    /// A connection's close callbacks' script (`onclose`).
    close: String,
}

thread_local! {
    static STREAMS: RefCell<HashMap<u32, Scripts>> = RefCell::new(HashMap::new());
    /// Callout token → the stream that made the call.
    static CALLS: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
    /// gRPC token → the stream that opened the call or stream.
    static GRPC: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
    /// gRPC stream token → the messages it delivered so far.
    static GRPC_RECEIVED: RefCell<HashMap<u32, usize>> = RefCell::new(HashMap::new());
    /// The last gRPC token this VM got.
    static LAST_GRPC: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// The stream whose callback is running.
    static CURRENT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Each plugin's name (`plugin_name`, read in `on_configure`) by root
    /// context id: plugins with the same VM key share this module instance.
    static NAMES: RefCell<HashMap<u32, String>> = RefCell::new(HashMap::new());
    /// Context id → the root context it was created under (itself for roots).
    static ROOT_OF: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
    /// The running callback's context and its root.
    static ACTIVE: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
    /// Root context → what `on_new_connection` runs (`onconnect`).
    static ON_CONNECT: RefCell<HashMap<u32, String>> = RefCell::new(HashMap::new());
    /// Root context → the stream `ontick` named and the commands to run.
    static TICKS: RefCell<HashMap<u32, (u32, String)>> = RefCell::new(HashMap::new());
    /// Set while `on_configure` runs its script.
    static CONFIGURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Callouts made in `on_configure`: their answers are recorded, not
    /// logged (Envoy runs a plugin's start-up in several VMs, and their
    /// answers arrive in any order), and `startup` reports them.
    static STARTUP_CALLS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static STARTUP_ANSWERS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Values remembered with `var` (module-global: the plugin configuration
    /// can set them for every stream).
    static VARS: RefCell<HashMap<String, Vec<u8>>> = RefCell::new(HashMap::new());
    /// The last token `expr` got.
    static LAST_EXPR: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// A module-global counter (`count`), shared by every plugin of the VM.
    static COUNTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// One of a stream's scripts (empty for an unknown stream).
fn stream_script(id: u32, pick: fn(&Scripts) -> &String) -> String {
    STREAMS.with(|s| {
        s.borrow()
            .get(&id)
            .map(|s| pick(s).clone())
            .unwrap_or_default()
    })
}

fn request_header(name: &str) -> String {
    read_value(0, name)
}

/// A value of header map `map` (empty if it has none).
fn read_value(map: u32, name: &str) -> String {
    let mut ptr = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: name and the out-params are valid.
    let status = unsafe {
        ffi::proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut ptr, &mut len)
    };
    if status == 0 {
        String::from_utf8_lossy(&take(ptr, len)).into_owned()
    } else {
        String::new()
    }
}

/// Root and stream creation: remembers which plugin (root) a context belongs to.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(id: u32, parent: u32) {
    let root = if parent == 0 { id } else { parent };
    ROOT_OF.with(|r| r.borrow_mut().insert(id, root));
}

/// Accepts any VM configuration.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(root: u32, _size: usize) -> u32 {
    enter(root);
    1
}

/// Runs the plugin configuration as a script (callback name `on_configure`);
/// `return:0` in it rejects the configuration.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(root: u32, size: usize) -> u32 {
    enter(root);
    let mut ptr = std::ptr::null_mut();
    let mut len = 0;
    let path = "plugin_name";
    // SAFETY: path and the out-params are valid.
    if unsafe { ffi::proxy_get_property(path.as_ptr(), path.len(), &mut ptr, &mut len) } == 0 {
        let name = String::from_utf8_lossy(&take(ptr, len)).into_owned();
        NAMES.with(|n| n.borrow_mut().insert(root, name));
    }
    // SAFETY: the out-params are valid.
    let status = unsafe { ffi::proxy_get_buffer_bytes(7, 0, size, &mut ptr, &mut len) };
    let config = String::from_utf8_lossy(&take(ptr, len)).into_owned();
    if status != 0 {
        log(&format!("on_configure cannot read configuration: {status}"));
        return 0;
    }
    let text = config.trim();
    if text.is_empty() {
        return 1;
    }
    let mut ret = 1;
    CONFIGURING.with(|c| c.set(true));
    for command in text.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        let (status, result) = run(command, &mut ret, true);
        if !op_is_return(command) {
            log(format!("on_configure {command} -> {status} {result}").trim_end());
        }
    }
    CONFIGURING.with(|c| c.set(false));
    ret
}

/// Runs `x-probe-request`, remembers the other scripts.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(id: u32, _n: usize, eos: u32) -> u32 {
    enter(id);
    let scripts = Scripts {
        id: request_header("x-probe-id"),
        callout: request_header(&script_header("callout")),
        request_body: request_header(&script_header("request-body")),
        request_trailers: request_header(&script_header("request-trailers")),
        response: request_header(&script_header("response")),
        response_body: request_header(&script_header("response-body")),
        response_trailers: request_header(&script_header("response-trailers")),
        log: request_header(&script_header("log")),
        grpc_metadata: request_header(&script_header("grpc-metadata")),
        grpc_message: request_header(&script_header("grpc-message")),
        grpc_message_nth: (1..=9)
            .map(|n| request_header(&script_header(&format!("grpc-message-{n}"))))
            .collect(),
        grpc_trailers: request_header(&script_header("grpc-trailers")),
        grpc_close: request_header(&script_header("grpc-close")),
        close: String::new(),
    };
    let request = request_header(&script_header("request"));
    STREAMS.with(|s| s.borrow_mut().insert(id, scripts));
    CURRENT.with(|c| c.set(id));
    script("on_request_headers", &request, eos != 0)
}

/// Runs `x-probe-response`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(id: u32, _n: usize, eos: u32) -> u32 {
    enter(id);
    let text = stream_script(id, |s| &s.response);
    script("on_response_headers", &text, eos != 0)
}

/// Logs its arguments, then runs `x-probe-request-body`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_body(id: u32, size: usize, eos: u32) -> u32 {
    enter(id);
    log(&format!("on_request_body {size} {eos}"));
    let text = stream_script(id, |s| &s.request_body);
    script("on_request_body", &text, eos != 0)
}

/// Logs its arguments, then runs `x-probe-response-body`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_body(id: u32, size: usize, eos: u32) -> u32 {
    enter(id);
    log(&format!("on_response_body {size} {eos}"));
    let text = stream_script(id, |s| &s.response_body);
    script("on_response_body", &text, eos != 0)
}

/// Logs the number of trailers, then runs `x-probe-request-trailers` (the
/// trailers end the stream: `hold` continues).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_trailers(id: u32, n: usize) -> u32 {
    log(&format!("on_request_trailers {n}"));
    let text = stream_script(id, |s| &s.request_trailers);
    script("on_request_trailers", &text, true)
}

/// Logs the number of trailers, then runs `x-probe-response-trailers`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_trailers(id: u32, n: usize) -> u32 {
    log(&format!("on_response_trailers {n}"));
    let text = stream_script(id, |s| &s.response_trailers);
    script("on_response_trailers", &text, true)
}

/// A callout answered (on the root context): logs the arguments, makes the
/// calling stream the effective context and runs its `x-probe-callout` script.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_http_call_response(
    root: u32,
    token: u32,
    headers: usize,
    body: usize,
    trailers: usize,
) {
    enter(root);
    let startup = STARTUP_CALLS.with(|c| {
        let mut calls = c.borrow_mut();
        let at = calls.iter().position(|&t| t == token);
        at.map(|at| calls.remove(at)).is_some()
    });
    if startup {
        let status = read_value(6, ":status");
        let mut ptr = std::ptr::null_mut();
        let mut len = 0;
        // SAFETY: the out-params are valid.
        let s = unsafe { ffi::proxy_get_buffer_bytes(4, 0, body, &mut ptr, &mut len) };
        let answer = format!(
            "token={token} headers={headers} :status={status} body={s} {}",
            escape(&take(ptr, len))
        );
        STARTUP_ANSWERS.with(|a| a.borrow_mut().push(answer));
        return;
    }
    log(&format!(
        "on_http_call_response token={token} headers={headers} body={body} trailers={trailers}"
    ));
    let Some(stream) = CALLS.with(|c| c.borrow_mut().remove(&token)) else {
        log("on_http_call_response for an unknown token");
        return;
    };
    // SAFETY: no pointers.
    let status = unsafe { ffi::proxy_set_effective_context(stream) };
    log(&format!(
        "on_http_call_response effective:{stream} -> {status}"
    ));
    let text = stream_script(stream, |s| &s.callout);
    script("on_http_call_response", &text, true);
}

/// Runs a gRPC callback's script: with the stream that opened the call as the
/// effective context, if it still exists.
fn grpc_script(callback: &str, token: u32, pick: impl Fn(&Scripts) -> String, done: bool) {
    if done {
        GRPC_RECEIVED.with(|r| r.borrow_mut().remove(&token));
    }
    let stream = GRPC.with(|g| {
        let mut g = g.borrow_mut();
        if done {
            g.remove(&token)
        } else {
            g.get(&token).copied()
        }
    });
    let Some(stream) = stream else {
        return;
    };
    let text = STREAMS.with(|s| s.borrow().get(&stream).map(&pick).unwrap_or_default());
    if text.is_empty() {
        return;
    }
    // SAFETY: no pointers.
    let status = unsafe { ffi::proxy_set_effective_context(stream) };
    log(&format!("{callback} effective:{stream} -> {status}"));
    script(callback, &text, true);
}

fn read_map(map: u32) -> String {
    let mut ptr = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: the out-params are valid.
    let status = unsafe { ffi::proxy_get_header_map_pairs(map, &mut ptr, &mut len) };
    format!("{status} {}", pairs_text(&take(ptr, len)))
}

/// gRPC initial metadata arrived: logs it, runs `x-probe-grpc-metadata`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(root: u32, token: u32, n: usize) {
    enter(root);
    log(&format!(
        "on_grpc_receive_initial_metadata token={token} n={n} pairs:4 -> {}",
        read_map(4)
    ));
    grpc_script(
        "on_grpc_receive_initial_metadata",
        token,
        |s| s.grpc_metadata.clone(),
        false,
    );
}

/// A gRPC message arrived: logs it, runs `x-probe-grpc-message`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive(root: u32, token: u32, size: usize) {
    enter(root);
    let mut ptr = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: the out-params are valid.
    let status = unsafe { ffi::proxy_get_buffer_bytes(5, 0, size, &mut ptr, &mut len) };
    log(&format!(
        "on_grpc_receive token={token} size={size} buf:5 -> {status} {}",
        escape(&take(ptr, len))
    ));
    // A unary call ends with its message.
    let done = token & 3 == 1;
    let n = GRPC_RECEIVED.with(|r| {
        let mut r = r.borrow_mut();
        let n = r.entry(token).or_insert(0);
        *n += 1;
        *n
    });
    let pick = move |s: &Scripts| match s.grpc_message_nth.get(n - 1) {
        Some(nth) if !nth.is_empty() => nth.clone(),
        _ => s.grpc_message.clone(),
    };
    grpc_script("on_grpc_receive", token, pick, done);
}

/// gRPC trailing metadata arrived: logs it, runs `x-probe-grpc-trailers`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(root: u32, token: u32, n: usize) {
    enter(root);
    log(&format!(
        "on_grpc_receive_trailing_metadata token={token} n={n} pairs:5 -> {}",
        read_map(5)
    ));
    grpc_script(
        "on_grpc_receive_trailing_metadata",
        token,
        |s| s.grpc_trailers.clone(),
        false,
    );
}

/// A gRPC call or stream closed: logs the status and `proxy_get_status`, runs
/// `x-probe-grpc-close`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_grpc_close(root: u32, token: u32, status: u32) {
    enter(root);
    let mut code = 99;
    let mut ptr = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: the out-params are valid.
    let s = unsafe { ffi::proxy_get_status(&mut code, &mut ptr, &mut len) };
    log(&format!(
        "on_grpc_close token={token} status={status} status -> {s} {code} {}",
        escape(&take(ptr, len))
    ));
    grpc_script("on_grpc_close", token, |s| s.grpc_close.clone(), true);
}

/// A shared queue has data: logs the token, then dequeues until the queue is
/// empty, logging each item.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_queue_ready(root: u32, token: u32) {
    enter(root);
    log(&format!("on_queue_ready {token}"));
    loop {
        let mut ptr = std::ptr::null_mut();
        let mut len = 0;
        // SAFETY: the out-params are valid.
        let status = unsafe { ffi::proxy_dequeue_shared_queue(token, &mut ptr, &mut len) };
        let item = take(ptr, len);
        log(format!("on_queue_ready qdeq:{token} -> {status} {}", escape(&item)).trim_end());
        if status != 0 {
            break;
        }
        // An item `run:<command>` is run here, in the root context.
        if let Some(command) = item.strip_prefix(b"run:") {
            let command = String::from_utf8_lossy(command);
            let (status, result) = run(&command, &mut 0, true);
            log(format!("on_queue_ready {command} -> {status} {result}").trim_end());
        }
    }
}

/// The plugin's timer: logs, then runs the `ontick` commands with their stream
/// as the effective context.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(root: u32) {
    enter(root);
    log("on_tick");
    let Some((stream, text)) = TICKS.with(|t| t.borrow().get(&root).cloned()) else {
        return;
    };
    CURRENT.with(|c| c.set(stream));
    // SAFETY: no pointers.
    let status = unsafe { ffi::proxy_set_effective_context(stream) };
    log(&format!("on_tick effective:{stream} -> {status}"));
    script("on_tick", &text, true);
}

/// A network connection: remembered (so that `on_delete tcp` ends it in the log).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_new_connection(id: u32) -> u32 {
    enter(id);
    STREAMS.with(|s| {
        s.borrow_mut().insert(
            id,
            Scripts {
                id: "tcp".to_owned(),
                ..Scripts::default()
            },
        )
    });
    CURRENT.with(|c| c.set(id));
    log("on_new_connection");
    let root = ACTIVE.with(|a| a.get().1);
    let text = ON_CONNECT.with(|c| c.borrow().get(&root).cloned().unwrap_or_default());
    script("on_new_connection", &text, false)
}

/// The script a network data callback runs: after `probe:` up to the end of
/// that line of the data in `buffer`.
fn data_script(buffer: u32, size: usize) -> String {
    let mut ptr = std::ptr::null_mut();
    let mut len = 0;
    // SAFETY: the out-params are valid.
    let status = unsafe { ffi::proxy_get_buffer_bytes(buffer, 0, size, &mut ptr, &mut len) };
    let data = String::from_utf8_lossy(&take(ptr, len)).into_owned();
    if status != 0 {
        return String::new();
    }
    data.split_once("probe:")
        .map(|(_, rest)| rest.split('\n').next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Logs its arguments, then runs the script in the client's data.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_downstream_data(id: u32, size: usize, eos: u32) -> u32 {
    enter(id);
    log(&format!("on_downstream_data {size} {eos}"));
    script("on_downstream_data", &data_script(2, size), eos != 0)
}

/// Logs its arguments, then runs the script in the upstream's data.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_upstream_data(id: u32, size: usize, eos: u32) -> u32 {
    enter(id);
    log(&format!("on_upstream_data {size} {eos}"));
    script("on_upstream_data", &data_script(3, size), eos != 0)
}

/// Logs the peer type.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_downstream_connection_close(id: u32, peer: u32) {
    enter(id);
    log(&format!("on_downstream_connection_close {peer}"));
    let text = stream_script(id, |s| &s.close);
    script("on_downstream_connection_close", &text, true);
}

/// Logs the peer type.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_upstream_connection_close(id: u32, peer: u32) {
    enter(id);
    log(&format!("on_upstream_connection_close {peer}"));
    let text = stream_script(id, |s| &s.close);
    script("on_upstream_connection_close", &text, true);
}

/// Runs `x-probe-log`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_log(id: u32) {
    enter(id);
    let text = stream_script(id, |s| &s.log);
    script("on_log", &text, true);
}

/// Streams are finished at once.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_done(id: u32) -> u32 {
    enter(id);
    1
}

/// Forgets the stream's scripts; logs `on_delete <x-probe-id>` as the stream's
/// last line.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(id: u32) {
    enter(id);
    if let Some(scripts) = STREAMS.with(|s| s.borrow_mut().remove(&id)) {
        log(&format!("on_delete {}", scripts.id));
    }
    ROOT_OF.with(|r| r.borrow_mut().remove(&id));
}
