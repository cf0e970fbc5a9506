//! Engine configuration: the instance pool and Envoy's memory cap, with either
//! allocation strategy.

use bytes::Bytes;
use weir_harness::{Chain, Engine, Error, Filter, LogLevel};

/// A module whose `on_vm_start` grows its memory by `first` pages, then by
/// `second`, and logs `ok` or `no` for each (whether `memory.grow` succeeded).
fn grower(initial: u32, first: u32, second: u32) -> Vec<u8> {
    let src = format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") {initial})
  (data (i32.const 16) "okno")
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_abi_version_0_2_1"))
  (func $report (param $grown i32)
    (drop (call $log (i32.const 2)
      (select (i32.const 18) (i32.const 16) (i32.eq (local.get $grown) (i32.const -1)))
      (i32.const 2))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $report (memory.grow (i32.const {first})))
    (call $report (memory.grow (i32.const {second})))
    (i32.const 1)))"#
    );
    wat::parse_str(&src).unwrap_or_else(|e| panic!("bad test module: {e}\n{src}"))
}

/// Envoy's 1 GiB cap in 64 KiB pages.
const MAX_PAGES: u32 = 16384;

fn start(engine: &Engine, wasm: &[u8]) -> Result<Chain, Error> {
    let plugin = engine.load(wasm)?;
    Chain::builder(engine)
        .filter(Filter::new(plugin).name("g"))
        .log_level(LogLevel::Trace)
        .build()
}

fn startup_lines(chain: &Chain) -> Vec<&str> {
    chain
        .startup_logs()
        .iter()
        .map(|r| r.message.as_str())
        .collect()
}

fn engines() -> [(&'static str, Engine); 2] {
    [
        (
            "pooled",
            Engine::builder().max_instances(4).build().expect("engine"),
        ),
        (
            "on demand",
            Engine::builder().on_demand().build().expect("engine"),
        ),
    ]
}

#[test]
fn memory_grows_to_envoys_cap_and_no_further() {
    for (name, engine) in engines() {
        // From one page to exactly 1 GiB, then one page more.
        let chain = start(&engine, &grower(1, MAX_PAGES - 1, 1)).expect(name);
        assert_eq!(startup_lines(&chain), ["ok", "no"], "{name}");
        // A single grow past the cap fails and leaves the memory usable.
        let chain = start(&engine, &grower(2, MAX_PAGES, 1)).expect(name);
        assert_eq!(startup_lines(&chain), ["no", "ok"], "{name}");
    }
}

#[test]
fn a_module_declaring_more_than_the_cap_does_not_start() {
    for (name, engine) in engines() {
        let err = start(&engine, &grower(MAX_PAGES + 1, 0, 0)).expect_err(name);
        assert!(
            matches!(
                err,
                Error::Trap {
                    function: "instantiation",
                    ..
                }
            ),
            "{name}: {err}"
        );
    }
}

#[test]
fn a_full_pool_refuses_new_vms_until_one_is_dropped() {
    let engine = Engine::builder().max_instances(2).build().expect("engine");
    let wasm = grower(1, 0, 0);
    let first = start(&engine, &wasm).expect("first");
    let second = start(&engine, &wasm).expect("second");
    let err = start(&engine, &wasm).expect_err("the pool is full");
    assert!(
        matches!(
            err,
            Error::Trap {
                function: "instantiation",
                ..
            }
        ),
        "{err}"
    );
    drop(first);
    let mut third = start(&engine, &wasm).expect("a slot was freed");
    drop(second);
    let outcome = third
        .send(
            http::Request::get("/")
                .header("host", "t.test")
                .body(Bytes::new())
                .expect("request"),
            |_| http::Response::new(Bytes::new()),
        )
        .expect("send");
    assert_eq!(outcome.response.status(), 200);
}

#[test]
fn start_times_cover_every_filter() {
    let engine = Engine::new().expect("engine");
    let plugin = engine.load(&grower(1, 0, 0)).expect("load");
    let chain = Chain::builder(&engine)
        .filter(Filter::new(plugin.clone()).name("a"))
        .filter(Filter::new(plugin).name("b"))
        .build()
        .expect("chain");
    assert_eq!(chain.start_times().len(), 2);
}
