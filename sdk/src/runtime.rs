//! The single-threaded executor behind [`Flow::wait`](crate::Flow::wait) and
//! [`PluginContext::spawn`](crate::PluginContext::spawn).
//!
//! A task belongs to a context: the stream whose callback returned it, or the
//! plugin's root context. Nothing polls in a loop: a task is polled when it
//! starts and then only after something woke it: the answer to a callout it
//! awaits (`on_http_call_response`, `on_grpc_call_response`, delivered to
//! whichever context the `proxy-wasm` dispatcher recorded for the token), or its
//! plugin's tick for a sleep. Every task is polled with its own context as
//! Envoy's effective context, so host calls (headers, local replies, resuming)
//! act on its stream, whichever callback woke it.
//!
//! The glue in `export.rs` reaches the executor only through [`hooks`], which
//! is `None` until a module first creates a task: filters that never do carry
//! none of this code (the hook table is only referenced from here).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use proxy_wasm::types::Action;

use crate::host;
use crate::task::{Task, TaskHandle};
use crate::{Error, Flow, IntoLocalReply, Result};

/// Where a stream's task came from: which stream, the direction its callback
/// paused (`host::STREAM_REQUEST` or `STREAM_RESPONSE`) and the filter's name
/// for log lines.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamRef {
    pub(crate) id: u32,
    pub(crate) root: u32,
    pub(crate) direction: u32,
    pub(crate) name: &'static str,
}

/// The executor's entry points for the glue.
pub(crate) struct Hooks {
    /// Starts a stream's task (its first poll runs now); what the callback
    /// returns to the host.
    pub(crate) start: fn(Task, StreamRef) -> Action,
    /// An HTTP callout answer arrived in `context`; `false` if no task awaits it.
    pub(crate) http_response: fn(context: u32, token: u32, usize, usize, usize) -> bool,
    /// A gRPC call answer arrived in `context`; `false` if no task awaits it.
    pub(crate) grpc_response: fn(context: u32, token: u32, status: u32, size: usize) -> bool,
    /// Polls the tasks woken meanwhile (after a root callback).
    pub(crate) run: fn(context: u32),
    /// The plugin's tick in root context `root`: wakes the sleeps that are due
    /// and polls their tasks (for plugins without timers of their own).
    pub(crate) tick: fn(root: u32),
    /// Context `context` ended: its tasks are dropped.
    pub(crate) end: fn(context: u32),
    /// Whether a task of stream `context` holds `direction` paused.
    pub(crate) holds: fn(context: u32, direction: u32) -> bool,
    /// The plugin in root context `root` is named `name` (for log lines).
    pub(crate) name: fn(root: u32, name: &'static str),
}

static HOOKS: Hooks = Hooks {
    start,
    http_response,
    grpc_response,
    run,
    tick,
    end,
    holds,
    name,
};

/// Set once a module creates its first task. Only `install` sets it and
/// only the hook table reaches the executor, so a module that never creates a
/// task links none of the executor. Native tests share it across threads; the
/// executor's state is per thread.
static INSTALLED: OnceLock<&'static Hooks> = OnceLock::new();

thread_local! {
    static TASKS: RefCell<Tasks> = RefCell::new(Tasks::default());
    static READY: RefCell<VecDeque<Key>> = const { RefCell::new(VecDeque::new()) };
    static CALLS: RefCell<Calls> = RefCell::new(Calls::default());
    /// The root context of the task being polled (for sleeps).
    static CURRENT_ROOT: Cell<Option<u32>> = const { Cell::new(None) };
    /// The context whose callback is polling tasks: the `proxy-wasm`
    /// dispatcher delivers the answers of the callouts they send to it.
    static CALLBACK: Cell<u32> = const { Cell::new(0) };
    /// The plugins' names, per root context.
    static NAMES: RefCell<Vec<(u32, &'static str)>> = const { RefCell::new(Vec::new()) };
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// The executor, if any task was ever created in this module.
#[inline]
pub(crate) fn hooks() -> Option<&'static Hooks> {
    INSTALLED.get().copied()
}

/// Makes the glue route callbacks through the executor.
pub(crate) fn install() {
    let _ = INSTALLED.set(&HOOKS);
}

/// The root context of the task being polled, if a task is being polled.
pub(crate) fn current_root() -> Option<u32> {
    CURRENT_ROOT.with(Cell::get)
}

/// A task: its owner context and a per-thread sequence number.
type Key = (u32, u64);

type BoxedTask = Pin<Box<dyn Future<Output = Result<Flow>>>>;

/// What a finished task does to its context.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// A stream's task: resume `direction` or answer the stream.
    Stream { direction: u32, name: &'static str },
    /// The plugin's task: errors are logged with the plugin's name.
    Root,
}

struct Slot {
    future: BoxedTask,
    signal: Arc<Signal>,
    waker: Waker,
    root: u32,
    kind: Kind,
}

#[derive(Default)]
struct Tasks {
    slots: BTreeMap<Key, Slot>,
    next: u64,
    /// Stream tasks not finished, per (stream, direction).
    holding: HashMap<(u32, u32), u32>,
    /// The task being polled (out of `slots` meanwhile).
    polling: Option<Key>,
}

impl Drop for Tasks {
    fn drop(&mut self) {
        // Only at thread exit (native tests): the registries the futures touch
        // when dropped may be gone already, so what is left is leaked.
        for (_, slot) in std::mem::take(&mut self.slots) {
            std::mem::forget(slot);
        }
    }
}

/// Wakes a task: queues its key once until it is polled.
struct Signal {
    key: Key,
    queued: AtomicBool,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::Relaxed) {
            READY.with(|r| r.borrow_mut().push_back(self.key));
        }
    }
}

fn new_slot(owner: u32, root: u32, kind: Kind, future: BoxedTask) -> (Key, Slot) {
    let key = TASKS.with(|t| {
        let mut tasks = t.borrow_mut();
        tasks.next += 1;
        (owner, tasks.next)
    });
    let signal = Arc::new(Signal {
        key,
        queued: AtomicBool::new(false),
    });
    let waker = Waker::from(Arc::clone(&signal));
    (
        key,
        Slot {
            future,
            signal,
            waker,
            root,
            kind,
        },
    )
}

fn insert(key: Key, slot: Slot) {
    TASKS.with(|t| {
        let mut tasks = t.borrow_mut();
        if let Kind::Stream { direction, .. } = slot.kind {
            *tasks.holding.entry((key.0, direction)).or_default() += 1;
        }
        tasks.slots.insert(key, slot);
    });
}

/// Polls one task with its root as the current one.
fn poll(key: Key, slot: &mut Slot) -> Poll<Result<Flow>> {
    slot.signal.queued.store(false, Ordering::Relaxed);
    TASKS.with(|t| t.borrow_mut().polling = Some(key));
    CURRENT_ROOT.with(|c| c.set(Some(slot.root)));
    let mut cx = Context::from_waker(&slot.waker);
    let poll = slot.future.as_mut().poll(&mut cx);
    CURRENT_ROOT.with(|c| c.set(None));
    TASKS.with(|t| t.borrow_mut().polling = None);
    poll
}

/// Starts a plugin task: queued, polled after the current callback.
pub(crate) fn spawn_root(
    root: u32,
    task: impl Future<Output = Result<()>> + 'static,
) -> TaskHandle {
    install();
    let future: BoxedTask = Box::pin(async move { task.await.map(|()| Flow::Continue) });
    let (key, slot) = new_slot(root, root, Kind::Root, future);
    slot.waker.wake_by_ref();
    insert(key, slot);
    TaskHandle::new(key)
}

/// Whether the task is done (finished, aborted, or its context ended).
pub(crate) fn is_finished(key: Key) -> bool {
    TASKS.with(|t| {
        let tasks = t.borrow();
        tasks.polling != Some(key) && !tasks.slots.contains_key(&key)
    })
}

/// Drops a task. A task cannot abort itself while it runs (it finishes by
/// returning).
pub(crate) fn abort(key: Key) {
    let slot = TASKS.with(|t| remove(&mut t.borrow_mut(), key));
    // Its futures are dropped outside the borrow: they touch the registries.
    drop(slot);
}

fn remove(tasks: &mut Tasks, key: Key) -> Option<Slot> {
    let slot = tasks.slots.remove(&key)?;
    if let Kind::Stream { direction, .. } = slot.kind {
        release(tasks, key.0, direction);
    }
    Some(slot)
}

/// One task of `stream` in `direction` is gone; how many are left.
fn release(tasks: &mut Tasks, stream: u32, direction: u32) -> u32 {
    match tasks.holding.get_mut(&(stream, direction)) {
        Some(n) if *n > 1 => {
            *n -= 1;
            *n
        }
        _ => {
            tasks.holding.remove(&(stream, direction));
            0
        }
    }
}

fn start(task: Task, stream: StreamRef) -> Action {
    let kind = Kind::Stream {
        direction: stream.direction,
        name: stream.name,
    };
    let (key, mut slot) = new_slot(stream.id, stream.root, kind, task.into_future());
    CALLBACK.with(|c| c.set(stream.id));
    let action = match poll(key, &mut slot) {
        // Done at once: the callback's own result, without pausing.
        Poll::Ready(result) => {
            drop(slot);
            outcome(result, stream)
        }
        Poll::Pending => {
            insert(key, slot);
            Action::Pause
        }
    };
    // Tasks it woke run now.
    run(stream.id);
    action
}

/// What a task's result does when it is the callback's result.
fn outcome(result: Result<Flow>, stream: StreamRef) -> Action {
    match result {
        Ok(Flow::Continue) => Action::Continue,
        Ok(Flow::Pause) => Action::Pause,
        Ok(Flow::Respond(reply)) => respond(&reply),
        Ok(Flow::Wait(task)) => start(task, stream),
        Err(e) => failed(stream.name, e),
    }
}

#[cold]
fn failed(name: &str, e: Error) -> Action {
    if e.reply().is_none() {
        log::error!("{name}: {e}");
    }
    respond(&e.into_local_reply())
}

fn respond(reply: &crate::LocalReply) -> Action {
    if let Err(e) = reply.send() {
        log::error!("cannot send local reply: {e}");
    }
    Action::Pause
}

/// Polls the woken tasks until none is left, then restores `current` as the
/// effective context.
fn run(current: u32) {
    if RUNNING.with(|r| r.replace(true)) {
        // Already running further up this callback: it will get to them.
        return;
    }
    CALLBACK.with(|c| c.set(current));
    let mut effective = current;
    while let Some(key) = READY.with(|r| r.borrow_mut().pop_front()) {
        let Some(mut slot) = TASKS.with(|t| t.borrow_mut().slots.remove(&key)) else {
            // Finished or dropped since it was woken.
            continue;
        };
        if key.0 != effective {
            match host::set_effective_context(key.0) {
                Ok(()) => effective = key.0,
                Err(status) => {
                    // The context is gone without ending (a host error): drop it.
                    log::error!("cannot run a task of context {}: {status}", key.0);
                    TASKS.with(|t| {
                        let mut tasks = t.borrow_mut();
                        if let Kind::Stream { direction, .. } = slot.kind {
                            release(&mut tasks, key.0, direction);
                        }
                    });
                    drop(slot);
                    continue;
                }
            }
        }
        match poll(key, &mut slot) {
            Poll::Pending => TASKS.with(|t| {
                t.borrow_mut().slots.insert(key, slot);
            }),
            Poll::Ready(result) => finished(key, slot, result),
        }
    }
    if effective != current
        && let Err(status) = host::set_effective_context(current)
    {
        log::error!("cannot return to context {current}: {status}");
    }
    RUNNING.with(|r| r.set(false));
}

/// A task that was paused on finished: apply its result to its context (the
/// effective one now).
fn finished(key: Key, slot: Slot, result: Result<Flow>) {
    let Slot { root, kind, .. } = slot;
    drop(slot.future);
    let (direction, name) = match kind {
        Kind::Root => {
            if let Err(e) = result {
                let name = NAMES.with(|n| {
                    n.borrow()
                        .iter()
                        .find(|(r, _)| *r == root)
                        .map_or("plugin", |(_, name)| *name)
                });
                log::error!("{name}: task: {e}");
            }
            return;
        }
        Kind::Stream { direction, name } => (direction, name),
    };
    let left = TASKS.with(|t| release(&mut t.borrow_mut(), key.0, direction));
    match result {
        Ok(Flow::Continue) => {
            if left == 0
                && let Err(status) = host::continue_stream(direction)
            {
                log::error!("{name}: cannot resume the stream after a task: {status}");
            }
        }
        Ok(Flow::Pause) => {}
        Ok(Flow::Respond(reply)) => {
            respond(&reply);
        }
        Ok(Flow::Wait(task)) => {
            // The next step holds the stream in its turn.
            let (key, slot) = new_slot(key.0, root, kind, task.into_future());
            slot.waker.wake_by_ref();
            insert(key, slot);
        }
        Err(e) => {
            failed(name, e);
        }
    }
}

fn tick(root: u32) {
    // A plugin without timers of its own: only sleeps are due.
    drop(crate::clock::due(root));
    run(root);
}

/// Drops every task of `context` (and its clock, for a root context); the
/// answers their callouts still get are ignored.
fn end(context: u32) {
    let gone: Vec<Slot> = TASKS.with(|t| {
        let mut tasks = t.borrow_mut();
        let keys: Vec<Key> = tasks
            .slots
            .range((context, 0)..=(context, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        tasks.holding.retain(|(stream, _), _| *stream != context);
        keys.into_iter()
            .filter_map(|k| tasks.slots.remove(&k))
            .collect()
    });
    drop(gone);
    // Answers to callouts sent from this context's callbacks will not come
    // back (the dispatcher delivers them to this context, which is gone).
    let orphans = CALLS.with(|c| {
        let mut borrowed = c.borrow_mut();
        let calls = &mut *borrowed;
        let mut wakers = Vec::new();
        for (kind, map) in [
            (CallKind::Http, &mut calls.http),
            (CallKind::Grpc, &mut calls.grpc),
        ] {
            map.retain(|_, entry| {
                if entry.context != context {
                    return true;
                }
                match std::mem::replace(&mut entry.call, Call::Abandoned) {
                    Call::Abandoned => false,
                    // A task of another context awaits it: it fails instead
                    // of waiting forever.
                    Call::Waiting(waker) => {
                        entry.call = Call::Answered(lost(kind));
                        wakers.push(waker);
                        true
                    }
                    answered @ Call::Answered(_) => {
                        entry.call = answered;
                        true
                    }
                }
            });
        }
        wakers
    });
    for waker in orphans {
        waker.wake();
    }
    NAMES.with(|n| n.borrow_mut().retain(|(root, _)| *root != context));
    crate::clock::remove(context);
    run(context);
}

/// The answer to a callout whose answer cannot arrive any more.
fn lost(kind: CallKind) -> Answer {
    match kind {
        CallKind::Http => Answer::Http(Ok(None)),
        CallKind::Grpc => Answer::Grpc(Ok((
            UNAVAILABLE,
            b"the context that sent the call ended".to_vec(),
        ))),
    }
}

/// gRPC's UNAVAILABLE status.
const UNAVAILABLE: u32 = 14;

fn name(root: u32, name: &'static str) {
    NAMES.with(|n| {
        let mut names = n.borrow_mut();
        if !names.iter().any(|(r, _)| *r == root) {
            names.push((root, name));
        }
    });
}

fn holds(context: u32, direction: u32) -> bool {
    TASKS.with(|t| t.borrow().holding.contains_key(&(context, direction)))
}

// ---- callouts awaited by tasks

/// What a task awaits from a callout.
enum Call {
    /// Sent, not answered: wake this task.
    Waiting(Waker),
    /// Answered, not read yet.
    Answered(Answer),
    /// Its future was dropped: ignore the answer.
    Abandoned,
}

/// A callout's answer, read while its callback ran.
pub(crate) enum Answer {
    /// `None` if the call failed without a response.
    Http(Result<Option<crate::HttpResponse>>),
    /// The status, then the message (OK) or the status message.
    Grpc(Result<(u32, Vec<u8>)>),
}

/// A callout and the context whose callback sent it.
struct Entry {
    context: u32,
    call: Call,
}

#[derive(Default)]
struct Calls {
    http: HashMap<u32, Entry>,
    grpc: HashMap<u32, Entry>,
}

/// Which callouts a token names.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CallKind {
    Http,
    Grpc,
}

fn with_calls<R>(kind: CallKind, f: impl FnOnce(&mut HashMap<u32, Entry>) -> R) -> R {
    CALLS.with(|c| {
        let mut calls = c.borrow_mut();
        match kind {
            CallKind::Http => f(&mut calls.http),
            CallKind::Grpc => f(&mut calls.grpc),
        }
    })
}

/// A task sent callout `token` and awaits it.
pub(crate) fn await_call(kind: CallKind, token: u32, waker: &Waker) {
    let context = CALLBACK.with(Cell::get);
    with_calls(kind, |calls| {
        calls.insert(
            token,
            Entry {
                context,
                call: Call::Waiting(waker.clone()),
            },
        );
    });
}

/// The answer to `token` if it arrived (forgetting the call); else `waker` is
/// the one to wake.
pub(crate) fn take_answer(kind: CallKind, token: u32, waker: &Waker) -> Option<Answer> {
    with_calls(kind, |calls| {
        let entry = calls.get_mut(&token)?;
        match &mut entry.call {
            Call::Answered(_) => match calls.remove(&token).map(|e| e.call) {
                Some(Call::Answered(answer)) => Some(answer),
                _ => None,
            },
            Call::Waiting(old) => {
                if !old.will_wake(waker) {
                    *old = waker.clone();
                }
                None
            }
            call @ Call::Abandoned => {
                *call = Call::Waiting(waker.clone());
                None
            }
        }
    })
}

/// The future awaiting `token` was dropped. `forget` when the host will not
/// answer any more (a cancelled gRPC call).
pub(crate) fn abandon(kind: CallKind, token: u32, forget: bool) {
    let old = with_calls(kind, |calls| {
        if forget {
            calls.remove(&token).map(|e| e.call)
        } else {
            calls
                .get_mut(&token)
                .map(|e| std::mem::replace(&mut e.call, Call::Abandoned))
        }
    });
    drop(old);
}

/// Stores an answer for `token` and wakes its task; `false` if no task awaits
/// it. `read` runs only for awaited tokens (the host's buffers are readable
/// now).
fn deliver(kind: CallKind, token: u32, read: impl FnOnce() -> Answer) -> bool {
    let waiting = with_calls(kind, |calls| match calls.get(&token).map(|e| &e.call) {
        Some(Call::Waiting(waker)) => Some(Some(waker.clone())),
        Some(Call::Abandoned) => {
            calls.remove(&token);
            Some(None)
        }
        Some(Call::Answered(_)) | None => None,
    });
    match waiting {
        None => false,
        Some(None) => true,
        Some(Some(waker)) => {
            let answer = read();
            with_calls(kind, |calls| {
                if let Some(entry) = calls.get_mut(&token) {
                    entry.call = Call::Answered(answer);
                }
            });
            waker.wake();
            true
        }
    }
}

fn http_response(context: u32, token: u32, headers: usize, body: usize, trailers: usize) -> bool {
    let handled = deliver(CallKind::Http, token, || {
        Answer::Http(crate::callout::read_response(headers, body, trailers))
    });
    if handled {
        run(context);
    }
    handled
}

fn grpc_response(context: u32, token: u32, status: u32, size: usize) -> bool {
    let handled = deliver(CallKind::Grpc, token, || {
        Answer::Grpc(crate::grpc::read_answer(status, size))
    });
    if handled {
        run(context);
    }
    handled
}

/// Forgets every task and call (a test host reset).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn reset() {
    let slots = TASKS.with(|t| std::mem::take(&mut t.borrow_mut().slots));
    drop(slots);
    TASKS.with(|t| *t.borrow_mut() = Tasks::default());
    let calls = CALLS.with(|c| std::mem::take(&mut *c.borrow_mut()));
    drop(calls);
    READY.with(|r| r.borrow_mut().clear());
    RUNNING.with(|r| r.set(false));
    CURRENT_ROOT.with(|c| c.set(None));
    CALLBACK.with(|c| c.set(0));
    NAMES.with(|n| n.borrow_mut().clear());
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::testing::{Action as MockAction, MockHost};
    use crate::{HttpCall, HttpFilter, NoPlugin, Plugin, PluginContext, RequestHeaders};

    fn http_calls() -> usize {
        CALLS.with(|c| c.borrow().http.len())
    }

    thread_local! {
        /// The plugin task's waker, and whether a stream let it go on.
        static GATE: RefCell<(bool, Option<Waker>)> = const { RefCell::new((false, None)) };
        static OUTCOME: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    #[derive(serde::Deserialize)]
    struct NoConfig {}

    /// `/wait`: awaits a callout. `/open`: lets the plugin task go on.
    struct Filter;

    impl HttpFilter for Filter {
        type Config = NoConfig;
        fn new(_: Rc<NoConfig>) -> Self {
            Filter
        }
        fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
            let open = req.path()?.as_deref() == Some("/open");
            Ok(Flow::wait(async move {
                if open {
                    let waker = GATE.with(|g| {
                        let mut g = g.borrow_mut();
                        g.0 = true;
                        g.1.take()
                    });
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return Ok(Flow::Pause);
                }
                HttpCall::get("c", "/").await?;
                Ok(Flow::Continue)
            }))
        }
    }

    /// A plugin task that waits for a stream to let it go on, then awaits a
    /// callout (sent from that stream's callback).
    struct Gated;

    impl Plugin for Gated {
        type Config = NoConfig;
        fn start(_: &Rc<NoConfig>, ctx: &mut PluginContext) -> Result<Self> {
            ctx.spawn(async {
                std::future::poll_fn(|cx| {
                    GATE.with(|g| {
                        let mut g = g.borrow_mut();
                        if g.0 {
                            Poll::Ready(())
                        } else {
                            g.1 = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    })
                })
                .await;
                let result = HttpCall::get("c", "/").await.map(|_| ());
                OUTCOME.with(|o| *o.borrow_mut() = Some(format!("{result:?}")));
                Ok(())
            });
            Ok(Gated)
        }
    }

    #[test]
    fn abandoned_callouts_of_an_ended_stream_are_forgotten() {
        let host = MockHost::new();
        let mut plugin = host
            .load_with_plugin::<Filter, NoPlugin<NoConfig>>("{}")
            .expect("loads");
        let stream = plugin.stream();
        host.set_request_headers(&[(":path", "/wait")]);
        assert_eq!(stream.request_headers(true), MockAction::Pause);
        assert_eq!(http_calls(), 1);
        // Its answer would go to the stream, which is gone: nothing is kept.
        drop(stream);
        assert_eq!(http_calls(), 0);
    }

    #[test]
    fn a_call_sent_from_an_ended_stream_fails_for_the_task_that_awaits_it() {
        let host = MockHost::new();
        GATE.with(|g| *g.borrow_mut() = (false, None));
        let mut plugin = host.load_with_plugin::<Filter, Gated>("{}").expect("loads");
        let stream = plugin.stream();
        host.set_request_headers(&[(":path", "/open")]);
        // The plugin task ran in this stream's callback and sent its call.
        assert_eq!(stream.request_headers(true), MockAction::Pause);
        assert_eq!(host.calls().len(), 1);
        assert_eq!(OUTCOME.with(|o| o.borrow().clone()), None);
        drop(stream);
        let outcome = OUTCOME.with(|o| o.borrow().clone()).expect("finished");
        assert!(outcome.contains("CalloutFailed"), "{outcome}");
        assert_eq!(http_calls(), 0);
    }
}
