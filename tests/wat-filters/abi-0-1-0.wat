;; A filter written against proxy-wasm ABI 0.1.0, which Envoy 1.40 still loads:
;; two-parameter headers callbacks, proxy_get_configuration,
;; proxy_continue_request and proxy_clear_route_cache, and a missing header
;; read as an empty value with status Ok. Hand-written, so no SDK hides what
;; the host answers. Every log line is compared with Envoy's.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value"
    (func $add_header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_configuration" (func $get_configuration (param i32 i32) (result i32)))
  (import "env" "proxy_continue_request" (func $continue_request (result i32)))
  (import "env" "proxy_clear_route_cache" (func $clear_route_cache (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective_context (param i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)
  ;; Values the host returns: pointer at 0, size at 4; a callout token at 8.
  ;; The stream paused for a callout at 12. Log lines are built at 1024.
  (global $heap (mut i32) (i32.const 8192))

  (data (i32.const 64) "configure: ")           ;; 11
  (data (i32.const 80) "request headers")       ;; 15
  (data (i32.const 96) "x-missing")             ;; 9
  (data (i32.const 112) "missing header: status=") ;; 23
  (data (i32.const 144) "x-probe-id")           ;; 10
  (data (i32.const 160) "configuration now: ")  ;; 19
  (data (i32.const 192) "x-abi")                ;; 5
  (data (i32.const 200) "0.1.0")                ;; 5
  (data (i32.const 208) "clear_route_cache: status=") ;; 26
  (data (i32.const 240) "x-pause")              ;; 7
  (data (i32.const 248) "callout")              ;; 7
  (data (i32.const 256) "paused, http_call: status=") ;; 26
  (data (i32.const 288) "call response: headers=") ;; 23
  (data (i32.const 320) "continue_request: status=") ;; 25
  (data (i32.const 352) "response headers")     ;; 16
  (data (i32.const 384) "in on_log, missing header: status=") ;; 34
  (data (i32.const 432) "done id=")             ;; 8
  (data (i32.const 448) "x-abi-response")       ;; 14
  (data (i32.const 464) " len=")                ;; 5
  ;; The callout's headers, serialized: 3 pairs (:method GET, :path /abi,
  ;; :authority callout).
  (data (i32.const 512)
    "\03\00\00\00"
    "\07\00\00\00\03\00\00\00" "\05\00\00\00\04\00\00\00" "\0a\00\00\00\07\00\00\00"
    ":method\00GET\00:path\00/abi\00:authority\00callout\00")

  (func (export "proxy_abi_version_0_1_0"))

  (func (export "malloc") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $at))

  ;; Logs prefix ++ bytes at info.
  (func $log2 (param $p i32) (param $pl i32) (param $v i32) (param $vl i32)
    (memory.copy (i32.const 1024) (local.get $p) (local.get $pl))
    (memory.copy (i32.add (i32.const 1024) (local.get $pl)) (local.get $v) (local.get $vl))
    (drop (call $log (i32.const 2) (i32.const 1024) (i32.add (local.get $pl) (local.get $vl)))))

  ;; Writes n (0..999) in decimal at $at; returns the number of digits.
  (func $digits (param $at i32) (param $n i32) (result i32)
    (if (i32.ge_u (local.get $n) (i32.const 100))
      (then
        (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 100))))
        (i32.store8 (i32.add (local.get $at) (i32.const 1))
          (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $n) (i32.const 10)) (i32.const 10))))
        (i32.store8 (i32.add (local.get $at) (i32.const 2))
          (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
        (return (i32.const 3))))
    (if (i32.ge_u (local.get $n) (i32.const 10))
      (then
        (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 10))))
        (i32.store8 (i32.add (local.get $at) (i32.const 1))
          (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
        (return (i32.const 2))))
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (local.get $n)))
    (i32.const 1))

  ;; Logs prefix ++ decimal n at info.
  (func $log_num (param $p i32) (param $pl i32) (param $n i32)
    (local $len i32)
    (local.set $len (call $digits (i32.const 2048) (local.get $n)))
    (call $log2 (local.get $p) (local.get $pl) (i32.const 2048) (local.get $len)))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))

  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (drop (call $get_configuration (i32.const 0) (i32.const 4)))
    (call $log2 (i32.const 64) (i32.const 11) (i32.load (i32.const 0)) (i32.load (i32.const 4)))
    (i32.const 1))

  (func (export "proxy_on_request_headers") (param $stream i32) (param $count i32) (result i32)
    (local $status i32)
    (drop (call $log (i32.const 2) (i32.const 80) (i32.const 15)))
    ;; A missing header: Ok with an empty value in 0.1.0 (NotFound in 0.2.x).
    (local.set $status
      (call $get_header (i32.const 0) (i32.const 96) (i32.const 9) (i32.const 0) (i32.const 4)))
    (local.set $status (i32.add (i32.mul (local.get $status) (i32.const 10)) (i32.load (i32.const 4))))
    ;; status * 10 + length: "0" means Ok and empty.
    (call $log_num (i32.const 112) (i32.const 23) (local.get $status))
    ;; Outside on_configure the configuration is the VM's.
    (drop (call $get_configuration (i32.const 0) (i32.const 4)))
    (call $log2 (i32.const 160) (i32.const 19) (i32.load (i32.const 0)) (i32.load (i32.const 4)))
    (drop (call $add_header (i32.const 0) (i32.const 192) (i32.const 5) (i32.const 200) (i32.const 5)))
    (call $log_num (i32.const 208) (i32.const 26) (call $clear_route_cache))
    ;; x-pause: ask the callout cluster, hold the request until it answers.
    (drop (call $get_header (i32.const 0) (i32.const 240) (i32.const 7) (i32.const 0) (i32.const 4)))
    (if (i32.gt_u (i32.load (i32.const 4)) (i32.const 0))
      (then
        (i32.store (i32.const 12) (local.get $stream))
        (call $log_num (i32.const 256) (i32.const 26)
          (call $http_call (i32.const 248) (i32.const 7) (i32.const 512) (i32.const 70)
            (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const 8)))
        (return (i32.const 1))))
    (i32.const 0))

  (func (export "proxy_on_http_call_response")
    (param $root i32) (param $token i32) (param $headers i32) (param $body i32) (param $trailers i32)
    (call $log_num (i32.const 288) (i32.const 23) (local.get $headers))
    (drop (call $set_effective_context (i32.load (i32.const 12))))
    (call $log_num (i32.const 320) (i32.const 25) (call $continue_request)))

  (func (export "proxy_on_response_headers") (param $stream i32) (param $count i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 352) (i32.const 16)))
    (drop (call $add_header (i32.const 2) (i32.const 448) (i32.const 14) (i32.const 200) (i32.const 5)))
    (i32.const 0))

  (func (export "proxy_on_log") (param $stream i32)
    (local $status i32)
    (local.set $status
      (call $get_header (i32.const 0) (i32.const 96) (i32.const 9) (i32.const 0) (i32.const 4)))
    (call $log_num (i32.const 384) (i32.const 34)
      (i32.add (i32.mul (local.get $status) (i32.const 10)) (i32.load (i32.const 4))))
    (drop (call $get_header (i32.const 0) (i32.const 144) (i32.const 10) (i32.const 0) (i32.const 4)))
    (call $log2 (i32.const 432) (i32.const 8) (i32.load (i32.const 0)) (i32.load (i32.const 4))))

  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
)
