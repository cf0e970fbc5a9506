//! Robustness: guests call every host function with arbitrary pointers, lengths
//! and enum values (deterministically generated). The host must answer with a
//! status or a trap — never panic, never hang — and the request must end with an
//! outcome or a harness error.

use bytes::Bytes;
use weir_harness::{Chain, Filter};

mod common;
use common::engine;

/// Every `proxy_*` import of ABI 0.2.1 with its parameter types (`i` i32,
/// `l` i64); each returns an i32 status.
const PROXY: &[(&str, &str)] = &[
    ("proxy_log", "iii"),
    ("proxy_get_log_level", "i"),
    ("proxy_get_current_time_nanoseconds", "i"),
    ("proxy_set_tick_period_milliseconds", "i"),
    ("proxy_get_buffer_bytes", "iiiii"),
    ("proxy_set_buffer_bytes", "iiiii"),
    ("proxy_get_buffer_status", "iii"),
    ("proxy_get_header_map_pairs", "iii"),
    ("proxy_set_header_map_pairs", "iii"),
    ("proxy_get_header_map_size", "ii"),
    ("proxy_get_header_map_value", "iiiii"),
    ("proxy_add_header_map_value", "iiiii"),
    ("proxy_replace_header_map_value", "iiiii"),
    ("proxy_remove_header_map_value", "iii"),
    ("proxy_continue_stream", "i"),
    ("proxy_close_stream", "i"),
    ("proxy_send_local_response", "iiiiiiii"),
    ("proxy_get_status", "iii"),
    ("proxy_http_call", "iiiiiiiiii"),
    ("proxy_grpc_call", "iiiiiiiiiiii"),
    ("proxy_grpc_stream", "iiiiiiiii"),
    ("proxy_grpc_send", "iiii"),
    ("proxy_grpc_cancel", "i"),
    ("proxy_grpc_close", "i"),
    ("proxy_get_shared_data", "iiiii"),
    ("proxy_set_shared_data", "iiiii"),
    ("proxy_register_shared_queue", "iii"),
    ("proxy_resolve_shared_queue", "iiiii"),
    ("proxy_enqueue_shared_queue", "iii"),
    ("proxy_dequeue_shared_queue", "iii"),
    ("proxy_define_metric", "iiii"),
    ("proxy_increment_metric", "il"),
    ("proxy_record_metric", "il"),
    ("proxy_get_metric", "ii"),
    ("proxy_get_property", "iiii"),
    ("proxy_set_property", "iiii"),
    ("proxy_call_foreign_function", "iiiiii"),
    ("proxy_set_effective_context", "i"),
    ("proxy_done", ""),
];

/// WASI functions with their parameter types; each returns an i32 errno.
const WASI: &[(&str, &str)] = &[
    ("fd_write", "iiii"),
    ("fd_read", "iiii"),
    ("fd_seek", "ilii"),
    ("fd_close", "i"),
    ("fd_fdstat_get", "ii"),
    ("environ_sizes_get", "ii"),
    ("environ_get", "ii"),
    ("args_sizes_get", "ii"),
    ("clock_time_get", "ili"),
    ("clock_res_get", "ii"),
    ("random_get", "ii"),
    ("poll_oneoff", "iiii"),
];

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Values that hit edges: zero, small enum values, the memory boundary
    /// (one 64 KiB page), negatives, extremes, and random ones.
    fn arg(&mut self) -> i64 {
        const EDGES: &[i64] = &[
            0,
            1,
            2,
            3,
            4,
            6,
            7,
            8,
            9,
            100,
            4095,
            65_528,
            65_535,
            65_536,
            65_537,
            -1,
            -8,
            0x7fff_ffff,
            -0x8000_0000,
            0x1000,
        ];
        let r = self.next();
        if r.is_multiple_of(3) {
            (r >> 8) as u32 as i32 as i64
        } else {
            EDGES[(r >> 8) as usize % EDGES.len()]
        }
    }
}

/// One call of import number `i` (parameter types `params`) with generated
/// arguments, its result dropped.
fn call(rng: &mut Rng, i: usize, params: &str) -> String {
    let args: String = params
        .chars()
        .map(|c| {
            let v = rng.arg();
            if c == 'l' {
                format!("(i64.const {v}) ")
            } else {
                format!("(i32.const {}) ", v as i32)
            }
        })
        .collect();
    format!("(drop (call $f{i} {args}))\n")
}

/// A module whose `on_request_headers` and `on_response_headers` make `calls`.
fn module(imports: &[(&str, &str, &str)], calls: &str) -> Vec<u8> {
    let imports: String = imports
        .iter()
        .enumerate()
        .map(|(i, (module, name, params))| {
            let params: Vec<&str> = params
                .chars()
                .map(|c| if c == 'l' { "i64" } else { "i32" })
                .collect();
            format!(
                r#"(import "{module}" "{name}" (func $f{i} (param {}) (result i32)))"#,
                params.join(" ")
            )
        })
        .collect();
    let src = format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (local.get $n) (i32.const 0xfff))))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func $calls {calls})
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $calls) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $calls) (i32.const 0))
)"#
    );
    wat::parse_str(&src).unwrap_or_else(|e| panic!("bad generated module: {e}\n{src}"))
}

fn run(wasm: &[u8]) {
    let plugin = engine().load(wasm).expect("generated modules link");
    let mut chain = Chain::builder(engine())
        .filter(Filter::new(plugin).name("fuzz"))
        .cluster("c", |_: http::Request<Bytes>| {
            http::Response::new(Bytes::new())
        })
        .fuel_per_call(50_000_000)
        .build()
        .expect("starts");
    for _ in 0..2 {
        let request = http::Request::post("/fuzz")
            .header("host", "fuzz.test")
            .body(Bytes::from_static(b"body"))
            .expect("request");
        // An outcome or a harness error are both fine; a panic fails the test.
        let _ = chain.send(request, |_: http::Request<Bytes>| {
            http::Response::new(Bytes::from_static(b"up"))
        });
    }
}

#[test]
fn arbitrary_host_call_arguments_never_panic_the_host() {
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let all: Vec<(&str, &str, &str)> = PROXY
        .iter()
        .map(|(n, p)| ("env", *n, *p))
        .chain(WASI.iter().map(|(n, p)| ("wasi_snapshot_preview1", *n, *p)))
        .collect();
    let mut modules = 0;
    for (i, (_, _, params)) in all.iter().enumerate() {
        // Calls to this import only, each with fresh arguments.
        for _ in 0..6 {
            let mut calls = String::new();
            for _ in 0..8 {
                calls += &call(&mut rng, i, params);
            }
            run(&module(&all, &calls));
            modules += 1;
        }
    }
    assert_eq!(modules, all.len() * 6);
}

#[test]
fn mixed_sequences_of_host_calls_never_panic_the_host() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let all: Vec<(&str, &str, &str)> = PROXY.iter().map(|(n, p)| ("env", *n, *p)).collect();
    for _ in 0..40 {
        let mut calls = String::new();
        for _ in 0..24 {
            let i = rng.next() as usize % all.len();
            calls += &call(&mut rng, i, all[i].2);
        }
        run(&module(&all, &calls));
    }
}
