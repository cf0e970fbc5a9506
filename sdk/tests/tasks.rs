//! async/await in filters (`Flow::wait`, `PluginContext::spawn`, `weir::task`)
//! against the mock host: the executor is woken by callout answers and ticks,
//! runs tasks as their stream, and drops them when the stream ends.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use weir::task::{Either, select, sleep, timeout, try_join};
use weir::testing::{Action, MockHost, MockStream};
use weir::{
    Error, ErrorKind, Flow, GrpcCall, HttpCall, HttpFilter, IntoLocalReply, LocalReply, Plugin,
    PluginContext, RequestBody, RequestHeaders, ResponseHeaders, Result, shared_data,
};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    cluster: String,
}

thread_local! {
    /// Tasks dropped (finished or cancelled) on this test thread.
    static DROPPED: Cell<usize> = const { Cell::new(0) };
    /// Old-style callout callbacks that ran.
    static CALLBACKS: Cell<usize> = const { Cell::new(0) };
}

/// Counts its own drop: tells when a task's future is gone.
struct DropGuard;

impl Drop for DropGuard {
    fn drop(&mut self) {
        let _ = DROPPED.try_with(|d| d.set(d.get() + 1));
    }
}

enum Refusal {
    NoUser,
}

impl IntoLocalReply for Refusal {
    fn into_local_reply(self) -> LocalReply {
        match self {
            Refusal::NoUser => LocalReply::new(401).body("who are you?"),
        }
    }
}

/// One behaviour per request path.
struct Tasks(Rc<Config>, bool);

impl HttpFilter for Tasks {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Tasks(config, false)
    }

    fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
        let cluster = self.0.cluster.clone();
        let user = req.get("x-user")?;
        let mut held = req.for_task();
        let path = req.path()?.unwrap_or_default();
        Ok(Flow::wait(async move {
            let _guard = DropGuard;
            match path.as_str() {
                "/one" => {
                    let answer = HttpCall::get(&cluster, "/check").await?;
                    if answer.status() != 200 {
                        return Ok(Flow::Respond(LocalReply::new(403).body("denied")));
                    }
                    held.set("x-auth", answer.body())?;
                    Ok(Flow::Continue)
                }
                "/sync" => {
                    // Nothing to wait for: the callback's own answer.
                    held.set("x-sync", "1")?;
                    Ok(Flow::Continue)
                }
                "/join" => {
                    let a = HttpCall::get(&cluster, "/a").into_future();
                    let b = HttpCall::get(&cluster, "/b").into_future();
                    let (a, b) = try_join(a, b).await?;
                    held.set("x-a", a.body())?;
                    held.set("x-b", b.body())?;
                    Ok(Flow::Continue)
                }
                "/select" => {
                    let call = HttpCall::get(&cluster, "/slow").into_future();
                    match select(call, sleep(Duration::from_millis(100))).await {
                        Either::Left((answer, _)) => {
                            held.set("x-answer", answer?.body())?;
                            Ok(Flow::Continue)
                        }
                        Either::Right(((), _)) => {
                            Ok(Flow::Respond(LocalReply::new(504).body("too slow")))
                        }
                    }
                }
                "/timeout" => {
                    let call = HttpCall::get(&cluster, "/slow");
                    let answer = timeout(Duration::from_millis(200), call).await??;
                    held.set("x-answer", answer.body())?;
                    Ok(Flow::Continue)
                }
                "/sleep" => {
                    sleep(Duration::from_millis(300)).await;
                    held.set("x-slept", "300")?;
                    Ok(Flow::Continue)
                }
                "/refuse" => {
                    let Some(user) = user else {
                        return Err(Error::respond(Refusal::NoUser));
                    };
                    Ok(Flow::Respond(LocalReply::new(200).body(user)))
                }
                "/fail" => {
                    // A failure without response is an error: a 500.
                    HttpCall::get(&cluster, "/down").await?;
                    Ok(Flow::Continue)
                }
                "/grpc" => {
                    let reply = GrpcCall::new("authz", "pkg.Auth", "Check")
                        .message(b"req".to_vec())
                        .await;
                    match reply {
                        Ok(message) => {
                            held.set("x-grpc", message)?;
                            Ok(Flow::Continue)
                        }
                        Err(e) if e.grpc_status() == Some(7) => {
                            Ok(Flow::Respond(LocalReply::new(403).body("denied")))
                        }
                        Err(e) => Err(e),
                    }
                }
                "/grpc-timeout" => {
                    let call = GrpcCall::new("authz", "pkg.Auth", "Check");
                    timeout(Duration::from_millis(50), call).await??;
                    Ok(Flow::Continue)
                }
                "/chain" => {
                    // A task can hand over to the next one.
                    let first = HttpCall::get(&cluster, "/first").await?;
                    held.set("x-first", first.body())?;
                    Ok(Flow::wait(async move {
                        let second = HttpCall::get(&cluster, "/second").await?;
                        held.set("x-second", second.body())?;
                        Ok(Flow::Continue)
                    }))
                }
                _ => Ok(Flow::Continue),
            }
        }))
    }

    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        if !self.1 && body.bytes()?.starts_with(b"check") {
            self.1 = true;
            let cluster = self.0.cluster.clone();
            return Ok(Flow::wait(async move {
                HttpCall::post(&cluster, "/scan").await?;
                Ok(Flow::Continue)
            }));
        }
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, res: &mut ResponseHeaders) -> Result<Flow> {
        if res.get("x-audit")?.is_none() {
            return Ok(Flow::Continue);
        }
        let cluster = self.0.cluster.clone();
        let mut res = res.for_task();
        Ok(Flow::wait(async move {
            let audit = HttpCall::post(&cluster, "/audit").await?;
            res.set("x-audited", audit.body())?;
            Ok(Flow::Continue)
        }))
    }

    fn on_callout_response(
        &mut self,
        _: weir::CalloutToken,
        _: &weir::CalloutResponse,
        _: &mut RequestHeaders,
    ) -> Result<Flow> {
        CALLBACKS.with(|c| c.set(c.get() + 1));
        Ok(Flow::Continue)
    }
}

fn start(host: &MockHost, plugin: &mut weir::testing::MockPlugin, path: &str) -> MockStream {
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET"), (":path", path), ("x-user", "alice")]);
    stream
}

fn load(host: &MockHost) -> weir::testing::MockPlugin {
    host.load::<Tasks>(r#"{"cluster": "auth"}"#).expect("loads")
}

fn dropped() -> usize {
    DROPPED.with(Cell::get)
}

#[test]
fn a_single_awaited_call_holds_and_resumes_the_stream() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let stream = start(&host, &mut plugin, "/one");
    assert_eq!(stream.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    assert_eq!(call.cluster, "auth");
    assert_eq!(stream.resumed_requests(), 0);

    stream.callout_response(call.token, Some((200, &[], b"alice-token")));
    assert_eq!(
        host.request_header("x-auth").as_deref(),
        Some("alice-token")
    );
    assert_eq!(stream.resumed_requests(), 1);
    assert!(host.take_local_reply().is_none());
    // The old-style callback is not involved.
    assert_eq!(CALLBACKS.with(Cell::get), 0);

    let denied = start(&host, &mut plugin, "/one");
    assert_eq!(denied.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    denied.callout_response(call.token, Some((403, &[], b"no")));
    let reply = host.take_local_reply().expect("a reply");
    assert_eq!((reply.status, reply.body.as_slice()), (403, &b"denied"[..]));
    assert_eq!(denied.resumed_requests(), 0);
}

#[test]
fn a_task_that_does_not_wait_answers_the_callback() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let stream = start(&host, &mut plugin, "/sync");
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header("x-sync").as_deref(), Some("1"));
    assert_eq!(stream.resumed_requests(), 0);
    assert!(host.calls().is_empty());
}

#[test]
fn joined_calls_are_in_flight_together() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let stream = start(&host, &mut plugin, "/join");
    assert_eq!(stream.request_headers(true), Action::Pause);
    let calls = host.calls();
    assert_eq!(calls.len(), 2, "both sent before any answer");
    let path = |c: &weir::testing::MockCall| {
        c.headers
            .iter()
            .find(|(k, _)| k == ":path")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(path(&calls[0]).as_deref(), Some("/a"));
    assert_eq!(path(&calls[1]).as_deref(), Some("/b"));

    // Answered in the other order: still waiting after the first.
    stream.callout_response(calls[1].token, Some((200, &[], b"B")));
    assert_eq!(stream.resumed_requests(), 0);
    stream.callout_response(calls[0].token, Some((200, &[], b"A")));
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(host.request_header("x-a").as_deref(), Some("A"));
    assert_eq!(host.request_header("x-b").as_deref(), Some("B"));
}

#[test]
fn select_takes_the_first_of_a_call_and_a_timer() {
    let host = MockHost::new();
    let mut plugin = load(&host);

    // The call wins: the timer is dropped and the tick stops.
    let fast = start(&host, &mut plugin, "/select");
    assert_eq!(fast.request_headers(true), Action::Pause);
    assert_eq!(host.tick_period(), Some(Duration::from_millis(100)));
    let call = host.calls().pop().expect("a callout");
    fast.callout_response(call.token, Some((200, &[], b"quick")));
    assert_eq!(host.request_header("x-answer").as_deref(), Some("quick"));
    assert_eq!(fast.resumed_requests(), 1);
    assert_eq!(host.tick_period(), None);

    // The timer wins on the plugin's tick; the late answer is ignored.
    let slow = start(&host, &mut plugin, "/select");
    assert_eq!(slow.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    host.advance(Duration::from_millis(40));
    plugin.tick();
    assert!(host.take_local_reply().is_none(), "not due yet");
    host.advance(Duration::from_millis(60));
    plugin.tick();
    let reply = host.take_local_reply().expect("the timer's reply");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (504, &b"too slow"[..])
    );
    plugin.callout_response(call.token, Some((200, &[], b"late")));
    assert!(host.take_local_reply().is_none());
    assert_eq!(slow.resumed_requests(), 0);
    assert_eq!(CALLBACKS.with(Cell::get), 0);
}

#[test]
fn a_timeout_that_fires_becomes_an_error_reply() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let stream = start(&host, &mut plugin, "/timeout");
    assert_eq!(stream.request_headers(true), Action::Pause);
    assert_eq!(host.tick_period(), Some(Duration::from_millis(200)));
    let call = host.calls().pop().expect("a callout");
    host.advance(Duration::from_millis(200));
    let before = dropped();
    plugin.tick();
    let reply = host.take_local_reply().expect("a reply");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (500, "weir_filter_error")
    );
    assert!(
        host.logs()
            .iter()
            .any(|(_, l)| l == "Tasks: timed out after 200ms"),
        "{:?}",
        host.logs()
    );
    assert_eq!(dropped(), before + 1, "the task is gone");
    assert_eq!(host.tick_period(), None);
    // Its callout's answer is ignored.
    stream.callout_response(call.token, Some((200, &[], b"late")));
    assert_eq!(stream.resumed_requests(), 0);
    assert!(host.take_local_reply().is_none());

    // In time: the answer.
    let quick = start(&host, &mut plugin, "/timeout");
    assert_eq!(quick.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    host.advance(Duration::from_millis(50));
    plugin.tick();
    quick.callout_response(call.token, Some((200, &[], b"ok")));
    assert_eq!(host.request_header("x-answer").as_deref(), Some("ok"));
    assert_eq!(quick.resumed_requests(), 1);
}

#[test]
fn a_sleeping_task_resumes_its_stream_from_the_tick() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let stream = start(&host, &mut plugin, "/sleep");
    assert_eq!(stream.request_headers(true), Action::Pause);
    assert_eq!(host.tick_period(), Some(Duration::from_millis(300)));
    host.advance(Duration::from_millis(300));
    plugin.tick();
    assert_eq!(host.request_header("x-slept").as_deref(), Some("300"));
    // Resumed as the stream (the effective context), from the root's tick.
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(host.tick_period(), None);
}

#[test]
fn a_stream_that_ends_drops_its_tasks_and_ignores_their_answers() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let before = dropped();
    let stream = start(&host, &mut plugin, "/join");
    assert_eq!(stream.request_headers(true), Action::Pause);
    let calls = host.calls();
    drop(stream);
    assert_eq!(dropped(), before + 1, "the task went with the stream");
    // The answers still arrive (Envoy delivers them to the root context).
    for call in &calls {
        plugin.callout_response(call.token, Some((200, &[], b"late")));
    }
    assert!(host.take_local_reply().is_none());
    assert_eq!(host.resumed_requests(), 0);
    assert_eq!(CALLBACKS.with(Cell::get), 0);

    // A sleeping task: its timer goes too.
    let sleeper = start(&host, &mut plugin, "/sleep");
    assert_eq!(sleeper.request_headers(true), Action::Pause);
    assert!(host.tick_period().is_some());
    drop(sleeper);
    assert_eq!(host.tick_period(), None);

    // A gRPC call in flight is cancelled.
    let grpc = start(&host, &mut plugin, "/grpc");
    assert_eq!(grpc.request_headers(true), Action::Pause);
    assert_eq!(host.calls().len(), calls.len() + 1);
    drop(grpc);
    assert_eq!(host.calls().len(), calls.len(), "cancelled");
}

#[test]
fn task_errors_become_local_replies() {
    let host = MockHost::new();
    let mut plugin = load(&host);

    // A filter's own error type, through IntoLocalReply.
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET"), (":path", "/refuse")]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    let reply = host.take_local_reply().expect("a reply");
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (401, &b"who are you?"[..])
    );

    // A failed callout: 500, logged.
    let stream = start(&host, &mut plugin, "/fail");
    assert_eq!(stream.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    stream.callout_response(call.token, None);
    let reply = host.take_local_reply().expect("a reply");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (500, "weir_filter_error")
    );
    let logs = host.logs();
    assert!(
        logs.iter()
            .any(|(_, l)| l == "Tasks: callout to `auth` failed without a response"),
        "{logs:?}"
    );

    // A call Envoy refuses fails at once, inside the callback.
    let mut refused = host
        .load::<Tasks>(r#"{"cluster": "unknown-auth"}"#)
        .expect("loads");
    let stream = start(&host, &mut refused, "/one");
    assert_eq!(stream.request_headers(true), Action::Pause);
    assert_eq!(host.take_local_reply().map(|r| r.status), Some(500));
}

#[test]
fn grpc_calls_are_awaited() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let stream = start(&host, &mut plugin, "/grpc");
    assert_eq!(stream.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a gRPC call");
    assert_eq!(call.grpc_method, "pkg.Auth/Check");
    assert_eq!(call.body, b"req");
    stream.grpc_response(call.token, Ok(b"granted"));
    assert_eq!(host.request_header("x-grpc").as_deref(), Some("granted"));
    assert_eq!(stream.resumed_requests(), 1);

    let denied = start(&host, &mut plugin, "/grpc");
    assert_eq!(denied.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a gRPC call");
    denied.grpc_response(call.token, Err((7, "permission denied")));
    assert_eq!(host.take_local_reply().map(|r| r.status), Some(403));

    let unavailable = start(&host, &mut plugin, "/grpc");
    assert_eq!(unavailable.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a gRPC call");
    unavailable.grpc_response(call.token, Err((14, "no healthy upstream")));
    assert_eq!(host.take_local_reply().map(|r| r.status), Some(500));
    assert!(
        host.logs()
            .iter()
            .any(|(_, l)| l
                == "Tasks: gRPC call to `authz` failed with status 14: no healthy upstream"),
        "{:?}",
        host.logs()
    );

    // A timeout cancels the call.
    let slow = start(&host, &mut plugin, "/grpc-timeout");
    assert_eq!(slow.request_headers(true), Action::Pause);
    let sent = host.calls().len();
    host.advance(Duration::from_millis(50));
    plugin.tick();
    assert_eq!(host.take_local_reply().map(|r| r.status), Some(500));
    assert_eq!(host.calls().len(), sent - 1, "cancelled");
}

#[test]
fn a_task_can_hand_over_to_the_next() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let stream = start(&host, &mut plugin, "/chain");
    assert_eq!(stream.request_headers(true), Action::Pause);
    let first = host.calls().pop().expect("first");
    stream.callout_response(first.token, Some((200, &[], b"1")));
    assert_eq!(stream.resumed_requests(), 0);
    let second = host.calls().pop().expect("second");
    assert_ne!(first.token, second.token);
    stream.callout_response(second.token, Some((200, &[], b"2")));
    assert_eq!(stream.resumed_requests(), 1);
    assert_eq!(host.request_header("x-first").as_deref(), Some("1"));
    assert_eq!(host.request_header("x-second").as_deref(), Some("2"));
}

#[test]
fn response_tasks_resume_the_response() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let stream = start(&host, &mut plugin, "/other");
    assert_eq!(stream.request_headers(true), Action::Continue);
    host.set_response_headers(&[(":status", "200"), ("x-audit", "1")]);
    assert_eq!(stream.response_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    stream.callout_response(call.token, Some((200, &[], b"done")));
    assert_eq!(host.response_header("x-audited").as_deref(), Some("done"));
    assert_eq!(stream.resumed_responses(), 1);
    assert_eq!(stream.resumed_requests(), 0);
}

#[test]
fn a_body_task_holds_the_rest_of_the_body() {
    let host = MockHost::new();
    let mut plugin = load(&host);
    let mut stream = start(&host, &mut plugin, "/upload");
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(stream.request_body(b"check me", false), Action::Pause);
    // The filter lets this chunk go, but the task still holds the request.
    assert_eq!(stream.request_body(b" and more", true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    stream.callout_response(call.token, Some((200, &[], b"")));
    assert_eq!(stream.resumed_requests(), 1);
}

/// A plugin that refreshes a value from a cluster on a timer, with a task.
struct Refresher;

impl Plugin for Refresher {
    type Config = Config;

    fn start(config: &Rc<Config>, ctx: &mut PluginContext) -> Result<Self> {
        let cluster = config.cluster.clone();
        ctx.spawn(async move {
            let _guard = DropGuard;
            loop {
                match HttpCall::get(&cluster, "/value").await {
                    Ok(answer) => {
                        shared_data::set("value", answer.body(), None)?;
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::CalloutFailed { .. }) => {
                        log::warn!("refresh failed");
                    }
                    Err(e) => return Err(e),
                }
                sleep(Duration::from_secs(1)).await;
            }
        });
        // A plugin timer shares the tick with the task's sleeps.
        ctx.every(Duration::from_millis(1500));
        Ok(Refresher)
    }
}

#[test]
fn a_plugin_task_refreshes_on_the_tick() {
    let host = MockHost::new();
    let before = dropped();
    let plugin = host
        .load_with_plugin::<Tasks, Refresher>(r#"{"cluster": "values"}"#)
        .expect("loads");
    // The task started after `start` and sent its first call.
    let call = host.calls().pop().expect("a callout");
    assert_eq!(call.cluster, "values");
    plugin.callout_response(call.token, Some((200, &[], b"v1")));
    assert_eq!(host.shared_data("value").as_deref(), Some(&b"v1"[..]));
    // Sleeping now: 1000 ms and the plugin's 1500 ms timer share a 500 ms tick.
    assert_eq!(host.tick_period(), Some(Duration::from_millis(500)));
    host.advance(Duration::from_millis(500));
    plugin.tick();
    assert_eq!(host.calls().len(), 1, "not yet");
    host.advance(Duration::from_millis(500));
    plugin.tick();
    let call = host.calls().pop().expect("the next refresh");
    plugin.callout_response(call.token, None);
    assert!(host.logs().iter().any(|(_, l)| l == "refresh failed"));
    host.advance(Duration::from_millis(1000));
    plugin.tick();
    let call = host.calls().pop().expect("the next refresh");
    plugin.callout_response(call.token, Some((200, &[], b"v3")));
    assert_eq!(host.shared_data("value").as_deref(), Some(&b"v3"[..]));
    assert_eq!(dropped(), before, "the task runs on");
}

/// A plugin whose task can be stopped.
struct Stoppable;

thread_local! {
    static HANDLE: Cell<Option<weir::task::TaskHandle>> = const { Cell::new(None) };
}

impl Plugin for Stoppable {
    type Config = Config;

    fn start(_: &Rc<Config>, ctx: &mut PluginContext) -> Result<Self> {
        let handle = ctx.spawn(async {
            let _guard = DropGuard;
            sleep(Duration::from_secs(60)).await;
            Ok(())
        });
        HANDLE.with(|h| h.set(Some(handle)));
        Ok(Stoppable)
    }
}

#[test]
fn plugin_tasks_can_be_aborted() {
    let host = MockHost::new();
    let before = dropped();
    let _plugin = host
        .load_with_plugin::<Tasks, Stoppable>("{}")
        .expect("loads");
    let handle = HANDLE.with(Cell::get).expect("spawned");
    assert!(!handle.is_finished());
    assert_eq!(host.tick_period(), Some(Duration::from_secs(60)));
    handle.abort();
    assert!(handle.is_finished());
    assert_eq!(dropped(), before + 1);
    assert_eq!(host.tick_period(), None);
    handle.abort();
}

/// A plugin whose task fails at once.
struct Failing;

impl Plugin for Failing {
    type Config = Config;

    fn start(_: &Rc<Config>, ctx: &mut PluginContext) -> Result<Self> {
        ctx.spawn(async {
            HttpCall::get("unknown-keys", "/").await?;
            Ok(())
        });
        Ok(Failing)
    }
}

#[test]
fn plugin_task_errors_are_logged_with_the_plugin_name() {
    let host = MockHost::new();
    let _plugin = host
        .load_with_plugin::<Tasks, Failing>("{}")
        .expect("the plugin starts: its task fails later");
    let logs = host.logs();
    assert!(
        logs.iter().any(|(level, l)| *level == log::Level::Error
            && l.starts_with("Failing: task: callout to `unknown-keys` not sent")),
        "{logs:?}"
    );
}
