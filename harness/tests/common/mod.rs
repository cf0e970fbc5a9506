//! What the harness's WAT-guest tests share: one engine per test binary, and
//! the parts every hand-written 0.2.1 guest has.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::sync::OnceLock;

use weir_harness::Engine;

/// The test binary's engine.
pub(crate) fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::new().expect("engine"))
}

/// A 0.2.1 module: `proxy_log` imported as `$log`, then `imports`, one page
/// of memory, a bump allocator exported as `malloc` (from 4096 up), the ABI
/// version export, `$say` (logs `len` bytes at `ptr` at info level), then
/// `rest` (functions and data).
pub(crate) fn guest(imports: &str, rest: &str) -> Vec<u8> {
    let src = format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  {imports}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_abi_version_0_2_1"))
  (func $say (param $ptr i32) (param $len i32)
    (drop (call $log (i32.const 2) (local.get $ptr) (local.get $len))))
  {rest}
)"#
    );
    wat::parse_str(&src).unwrap_or_else(|e| panic!("bad test module: {e}\n{src}"))
}
