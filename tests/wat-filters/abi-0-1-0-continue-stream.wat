;; An ABI 0.1.0 module importing proxy_continue_stream, which Envoy links only
;; for 0.2.x: Envoy 1.40 refuses to load it ("missing import").
(module
  (import "env" "proxy_continue_stream" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
)
