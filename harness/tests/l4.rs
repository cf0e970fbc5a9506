//! The network (L4) chain with a hand-written WAT guest: Envoy's callback order
//! and arguments, pausing with accumulation, stream-control statuses, the end of
//! a connection, and failures.

use weir_harness::{
    CloseType, Echo, Error, FailurePolicy, Filter, LogLevel, NetworkChain, TcpReply,
};

mod common;
use common::engine;

/// A network filter that logs each callback as a word and two-digit numbers:
/// `new`, `down <size> <eos>` (Pause while fewer than 3 bytes are held; a
/// 4-byte chunk traps), `up <size> <eos> <status of continue_stream(Upstream)>`,
/// `dclose <peer>`, `uclose <peer>`, `done`, `log`, `delete`.
fn network_module() -> Vec<u8> {
    common::guest(
        r#"(import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))"#,
        r#"  (data (i32.const 0) "new")
  (data (i32.const 8) "down")
  (data (i32.const 16) "up")
  (data (i32.const 24) "dclose")
  (data (i32.const 32) "uclose")
  (data (i32.const 40) "done")
  (data (i32.const 48) "log")
  (data (i32.const 56) "delete")
  (func $num (param $n i32)
    (i32.store8 (i32.const 100) (i32.add (i32.const 48) (i32.div_u (local.get $n) (i32.const 10))))
    (i32.store8 (i32.const 101) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
    (drop (call $log (i32.const 2) (i32.const 100) (i32.const 2))))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_new_connection") (param i32) (result i32)
    (call $say (i32.const 0) (i32.const 3))
    (i32.const 0))
  (func (export "proxy_on_downstream_data") (param $c i32) (param $size i32) (param $eos i32) (result i32)
    (if (i32.eq (local.get $size) (i32.const 4)) (then unreachable))
    (call $say (i32.const 8) (i32.const 4))
    (call $num (local.get $size))
    (call $num (local.get $eos))
    (i32.and (i32.lt_u (local.get $size) (i32.const 3)) (i32.eqz (local.get $eos))))
  (func (export "proxy_on_upstream_data") (param $c i32) (param $size i32) (param $eos i32) (result i32)
    (call $say (i32.const 16) (i32.const 2))
    (call $num (local.get $size))
    (call $num (local.get $eos))
    (call $num (call $continue (i32.const 3)))
    (i32.const 0))
  (func (export "proxy_on_downstream_connection_close") (param $c i32) (param $peer i32)
    (call $say (i32.const 24) (i32.const 6))
    (call $num (local.get $peer)))
  (func (export "proxy_on_upstream_connection_close") (param $c i32) (param $peer i32)
    (call $say (i32.const 32) (i32.const 6))
    (call $num (local.get $peer)))
  (func (export "proxy_on_done") (param i32) (result i32)
    (call $say (i32.const 40) (i32.const 4))
    (i32.const 1))
  (func (export "proxy_on_log") (param i32)
    (call $say (i32.const 48) (i32.const 3)))
  (func (export "proxy_on_delete") (param i32)
    (call $say (i32.const 56) (i32.const 6)))"#,
    )
}

fn chain(policy: FailurePolicy) -> NetworkChain {
    let plugin = engine().load(&network_module()).expect("loads");
    NetworkChain::builder(engine())
        .filter(Filter::new(plugin).name("n").failure_policy(policy))
        .log_level(LogLevel::Trace)
        .fuel_per_call(10_000_000)
        .build()
        .expect("starts")
}

fn lines(logs: &[weir_harness::LogRecord]) -> Vec<&str> {
    logs.iter().map(|l| l.message.as_str()).collect()
}

#[test]
fn callbacks_run_in_envoys_order_with_held_bytes_accumulating() {
    let mut chain = chain(FailurePolicy::FailClosed);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"a").expect("sent");
    conn.send(b"b").expect("sent");
    assert_eq!(
        conn.upstream_received(),
        Some(&b""[..]),
        "held while < 3 bytes"
    );
    conn.send(b"c").expect("sent");
    assert_eq!(conn.upstream_received(), Some(&b"abc"[..]));
    assert_eq!(conn.client_received(), b"abc");
    conn.close_write().expect("half-closed");
    let outcome = conn.finish();
    assert_eq!(outcome.closed, Some(CloseType::Local));
    assert_eq!(
        lines(&outcome.logs),
        [
            "new", //
            "down", "01", "00", // paused
            "down", "02", "00", // paused, the held byte delivered again
            "down", "03", "00", // passes
            "up", "03", "00", "12", // continue_stream(Upstream) is Unimplemented
            "down", "00", "01", // the client's half-close
            "up", "00", "01", "12", // the upstream's
            "uclose", "00", // Unknown, right after the upstream's end of stream
            "dclose", "01", // Local: Envoy's end came last
            "done", "log", "delete", // onCloseTCP's order
        ]
    );
}

#[test]
fn the_client_half_closing_last_closes_remotely() {
    let mut chain = chain(FailurePolicy::FailClosed);
    let mut conn = chain
        .connect(|data: &[u8]| TcpReply::data(data).and_close())
        .expect("connects");
    conn.send(b"xyz").expect("sent");
    assert_eq!(conn.closed(), None);
    conn.close_write().expect("half-closed");
    let outcome = conn.finish();
    assert_eq!(outcome.closed, Some(CloseType::Remote));
    let logs = lines(&outcome.logs);
    assert_eq!(
        logs[logs.len() - 5..],
        ["dclose", "02", "done", "log", "delete"]
    );
}

#[test]
fn a_trap_closes_the_connection_when_failing_closed() {
    let mut chain = chain(FailurePolicy::FailClosed);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"four").expect("sent");
    let outcome = conn.finish();
    assert_eq!(outcome.closed, Some(CloseType::Local));
    assert_eq!(outcome.upstream_received.as_deref(), Some(&b""[..]));
    assert_eq!(outcome.traps.len(), 1);
    assert!(outcome.traps[0].contains("proxy_on_downstream_data"));
    // The failed VM gets no more callbacks.
    assert_eq!(lines(&outcome.logs), ["new"]);

    // Later connections on the failed VM are closed at once.
    let conn = chain.connect(Echo).expect("connects");
    let outcome = conn.finish();
    assert_eq!(outcome.closed, Some(CloseType::Local));
    assert_eq!(outcome.upstream_received, None);
}

#[test]
fn failing_open_a_trap_still_closes_its_connection_and_later_ones_skip_the_vm() {
    let mut chain = chain(FailurePolicy::FailOpen);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"four").expect("sent");
    // As in Envoy 1.40 (l4-fail-open.yaml): the connection whose callback
    // trapped is closed whatever the policy.
    assert_eq!(conn.client_received(), b"");
    let outcome = conn.finish();
    assert_eq!(outcome.closed, Some(CloseType::Local));
    assert_eq!(outcome.upstream_received.as_deref(), Some(&b""[..]));
    assert_eq!(outcome.traps.len(), 1);

    // The failed VM is left out of later connections.
    let mut conn = chain.connect(Echo).expect("connects");
    conn.send(b"xy").expect("sent");
    assert_eq!(conn.client_received(), b"xy");
    assert!(conn.finish().logs.is_empty());
}

#[test]
fn the_client_cannot_send_after_half_closing() {
    let mut chain = chain(FailurePolicy::FailClosed);
    let mut conn = chain.connect(Echo).expect("connects");
    conn.close_write().expect("half-closed");
    assert!(matches!(conn.send(b"x"), Err(Error::InvalidRequest(_))));
    assert!(matches!(conn.close_write(), Err(Error::InvalidRequest(_))));
}
