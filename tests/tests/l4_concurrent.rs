//! Several client connections open at once through one network chain
//! (`NetworkChain::connections`), with the probe (raw ABI): per-connection
//! state, timers and callout answers acting on one connection while another
//! is open, shared data across connections, and a VM failed through one
//! connection reaching the others, under each failure policy.

use std::time::Duration;

use weir_harness::{
    CloseType, Echo, Error, FailurePolicy, LogLevel, LogRecord, NetworkChain, TcpReply,
    UpstreamFault,
};
use weir_tests::{engine, probe_filter};

fn probe(policy: FailurePolicy) -> NetworkChain {
    NetworkChain::builder(engine())
        .filter(
            probe_filter()
                .failure_policy(policy)
                .reload_backoff(Duration::from_secs(2)),
        )
        .callout_cluster("slow", |_: http::Request<bytes::Bytes>| {
            http::Response::builder()
                .extension(UpstreamFault::Delay(Duration::from_millis(300)))
                .body(bytes::Bytes::from_static(b"ok"))
                .unwrap_or_default()
        })
        .log_level(LogLevel::Info)
        .build()
        .expect("probe starts")
}

fn silent(_: &[u8]) -> TcpReply {
    TcpReply::none()
}

fn infos(logs: &[LogRecord]) -> Vec<String> {
    logs.iter()
        .filter(|l| l.level >= LogLevel::Info)
        .map(|l| l.message.clone())
        .collect()
}

/// The lines logged by the probe's command `command` (`<callback> <command>
/// -> <result>`), results only.
fn results(logs: &[LogRecord], command: &str) -> Vec<String> {
    let marker = format!(" {command} -> ");
    infos(logs)
        .iter()
        .filter_map(|l| l.split_once(&marker).map(|(_, r)| r.to_owned()))
        .collect()
}

#[test]
fn connections_interleave_with_their_own_contexts_ids_and_held_bytes() {
    let mut chain = probe(FailurePolicy::FailClosed);
    let mut net = chain.connections();
    let a = net.connect(silent).expect("connects");
    let b = net.connect(silent).expect("connects");
    assert_ne!(a, b);
    assert_eq!(net.ids(), [a, b]);
    // `a` holds its bytes; `b`'s go through.
    net.send(a, "probe:hold;ids;propn:connection.id\n")
        .expect("sent");
    net.send(b, "probe:ids;propn:connection.id\n")
        .expect("sent");
    assert_eq!(net.upstream_received(a), Some(&b""[..]));
    assert_eq!(
        net.upstream_received(b),
        Some(&b"probe:ids;propn:connection.id\n"[..])
    );
    // The logs of each event go to the connection it names.
    assert_eq!(results(net.logs(a), "ids"), ["0 context=2 root=1"]);
    assert_eq!(results(net.logs(b), "ids"), ["0 context=3 root=1"]);
    assert_eq!(
        results(net.logs(a), "propn:connection.id"),
        [format!("0 {}", a.get())]
    );
    assert_eq!(
        results(net.logs(b), "propn:connection.id"),
        [format!("0 {}", b.get())]
    );
    // `a`'s half-close lets its held bytes go, `b` is untouched.
    net.close_write(a).expect("half-closed");
    assert_eq!(
        net.upstream_received(a),
        Some(&b"probe:hold;ids;propn:connection.id\n"[..])
    );
    // Its upstream closed in turn: `a` is over, `b` is not.
    assert_eq!(net.closed(a), Some(CloseType::Local));
    assert_eq!(net.closed(b), None);
    let outcomes = net.finish();
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes[0].client_saw_end && !outcomes[1].client_saw_end);
}

#[test]
fn upstream_reactions_of_each_connection_reach_its_own_client() {
    let mut chain = probe(FailurePolicy::FailClosed);
    let mut net = chain.connections();
    let a = net.connect(Echo).expect("connects");
    let b = net
        .connect(|data: &[u8]| TcpReply::data([b"b:", data].concat()))
        .expect("connects");
    net.send(b, "two").expect("sent");
    net.send(a, "one").expect("sent");
    assert_eq!(net.client_received(a), b"one");
    assert_eq!(net.client_received(b), b"b:two");
    net.close_write(a).expect("half-closed");
    assert_eq!(net.closed(a), Some(CloseType::Local));
    assert_eq!(net.closed(b), None);
    net.send(b, "three").expect("still open");
    assert_eq!(net.client_received(b), b"b:twob:three");
    let outcomes = net.finish();
    assert!(outcomes[0].client_saw_end && outcomes[0].upstream_saw_end);
    assert!(!outcomes[1].client_saw_end);
}

#[test]
fn a_tick_acts_on_its_connection_while_another_is_open() {
    let mut chain = probe(FailurePolicy::FailClosed);
    let mut net = chain.connections();
    let a = net.connect(silent).expect("connects");
    let script =
        "probe:ontick:propn:connection.id,bufstatus:2,close:2,period:0;period:100;return:1\n";
    net.send(a, script).expect("sent");
    let b = net.connect(silent).expect("connects");
    net.send(b, "probe:bufstatus:2\n").expect("sent");
    // The tick fires during `b`'s advance: it reads `a`'s stream info and
    // held bytes, and closes `a` alone.
    net.advance(b, Duration::from_millis(150))
        .expect("advances");
    assert_eq!(net.closed(a), Some(CloseType::Local));
    assert_eq!(net.closed(b), None);
    let logs = net.logs(b);
    assert_eq!(
        results(logs, "propn:connection.id"),
        [format!("0 {}", a.get())]
    );
    assert_eq!(
        results(logs, "bufstatus:2"),
        ["0 18 0".to_owned(), format!("0 {} 0", script.len())]
    );
    assert!(
        infos(logs)
            .iter()
            .any(|l| l.ends_with("on_downstream_connection_close 1")),
        "{logs:?}"
    );
    net.send(b, "probe:count\n").expect("sent");
    assert_eq!(results(net.logs(b), "count"), ["0 1"]);
}

#[test]
fn a_callout_answer_resumes_its_connection_while_another_is_open() {
    let mut chain = probe(FailurePolicy::FailClosed);
    let mut net = chain.connections();
    let a = net.connect(silent).expect("connects");
    let script = "probe:oncallout:propn:connection.id,continue:2;call:slow:GET:/:x;return:1\n";
    net.send(a, script).expect("sent");
    let b = net.connect(silent).expect("connects");
    net.send(b, "probe:count\n").expect("sent");
    assert_eq!(net.upstream_received(a), Some(&b""[..]));
    net.advance(b, Duration::from_millis(300))
        .expect("advances");
    // The answer resumed `a`: its held bytes went upstream.
    assert_eq!(net.upstream_received(a), Some(script.as_bytes()));
    assert_eq!(
        results(net.logs(b), "propn:connection.id"),
        [format!("0 {}", a.get())]
    );
    assert_eq!(net.closed(a), None);
    let outcomes = net.finish();
    assert_eq!(outcomes[1].callouts.len(), 1, "answered during b's advance");
}

#[test]
fn shared_data_and_module_globals_are_seen_across_connections() {
    let mut chain = probe(FailurePolicy::FailClosed);
    let mut net = chain.connections();
    let a = net.connect(silent).expect("connects");
    let b = net.connect(silent).expect("connects");
    net.send(a, "probe:sset:open:0:1;count\n").expect("sent");
    net.send(b, "probe:sget:open;count\n").expect("sent");
    assert_eq!(results(net.logs(b), "sget:open"), ["0 1 cas=1"]);
    assert_eq!(results(net.logs(b), "count"), ["0 2"]);
    net.finish();
    assert_eq!(chain.shared_data("p", "open"), Some((b"1".to_vec(), 1)));
}

#[test]
fn a_vm_failed_through_one_connection_closes_the_others_at_their_next_read() {
    for policy in [
        FailurePolicy::FailClosed,
        FailurePolicy::FailOpen,
        FailurePolicy::FailReload,
    ] {
        let mut chain = probe(policy);
        let mut net = chain.connections();
        let a = net.connect(Echo).expect("connects");
        let c = net.connect(Echo).expect("connects");
        net.send(a, "probe:count\n").expect("sent");
        let b = net.connect(Echo).expect("connects");
        net.send(b, "probe:trap\n").expect("sent");
        assert_eq!(net.closed(b), Some(CloseType::Local), "{policy:?}");
        assert_eq!(net.closed(a), None, "{policy:?}: open until it reads");
        // Its next read: no callback, closed, the bytes never go upstream.
        let before = net.logs(a).len();
        net.send(a, "more").expect("sent");
        assert_eq!(net.closed(a), Some(CloseType::Local), "{policy:?}");
        assert_eq!(net.logs(a).len(), before, "{policy:?}: {:?}", net.logs(a));
        assert_eq!(net.upstream_received(a), Some(&b"probe:count\n"[..]));
        // A half-close is a read too.
        let before = net.logs(c).len();
        net.close_write(c).expect("half-closed");
        assert_eq!(net.closed(c), Some(CloseType::Local), "{policy:?}");
        assert_eq!(net.logs(c).len(), before, "{policy:?}: {:?}", net.logs(c));
        let outcomes = net.finish();
        assert!(outcomes[0].upstream_saw_end, "{policy:?}");
        assert!(outcomes[1].client_saw_end, "{policy:?}");
    }
}

#[test]
fn after_a_reload_a_connection_of_the_failed_vm_is_still_closed_at_its_next_read() {
    let mut chain = probe(FailurePolicy::FailReload);
    let mut net = chain.connections();
    let a = net.connect(silent).expect("connects");
    net.send(a, "probe:count\n").expect("sent");
    let b = net.connect(silent).expect("connects");
    net.send(b, "probe:trap\n").expect("sent");
    net.advance(b, Duration::from_secs(4)).expect("advances");
    // Past the backoff: a fresh VM (module globals start again).
    let c = net.connect(silent).expect("connects");
    net.send(c, "probe:count;ids\n").expect("sent");
    assert_eq!(results(net.logs(c), "count"), ["0 1"]);
    assert_eq!(results(net.logs(c), "ids"), ["0 context=2 root=1"]);
    // `a` stays with the failed VM: closed, and the fresh VM never hears of it.
    let before = net.logs(a).len();
    net.send(a, "probe:count\n").expect("sent");
    assert_eq!(net.closed(a), Some(CloseType::Local));
    assert_eq!(net.logs(a).len(), before, "{:?}", net.logs(a));
    net.send(c, "probe:count\n").expect("sent");
    assert_eq!(results(net.logs(c), "count"), ["0 1", "0 2"]);
    assert_eq!(net.closed(c), None);
}

#[test]
fn events_on_an_unknown_connection_are_refused() {
    let mut chain = probe(FailurePolicy::FailClosed);
    let other = {
        let mut net = chain.connections();
        let id = net.connect(silent).expect("connects");
        net.finish();
        id
    };
    let mut net = chain.connections();
    let mine = net.connect(silent).expect("connects");
    assert_ne!(mine, other);
    assert!(matches!(
        net.send(other, "x"),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        net.close_write(other),
        Err(Error::InvalidRequest(_))
    ));
    assert!(matches!(
        net.advance(other, Duration::from_millis(1)),
        Err(Error::InvalidRequest(_))
    ));
    assert!(net.client_received(other).is_empty());
    assert_eq!(net.closed(other), None);
    net.close_write(mine).expect("half-closed");
    assert!(matches!(
        net.close_write(mine),
        Err(Error::InvalidRequest(_))
    ));
}
