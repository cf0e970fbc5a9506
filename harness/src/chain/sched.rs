//! Several streams at once, interleaved as Envoy's worker thread interleaves
//! them.
//!
//! Each stream of a [`Chain::send_all`] batch runs as a future (the code in
//! `chain.rs`) that borrows the chain only between its wait points. A wait
//! point registers what the stream waits for ([`Wait`]) and yields; this
//! module's scheduler, a small deterministic single-threaded executor, keeps
//! one order of events for the whole chain, by (virtual time, sequence):
//! arrivals, pieces of bodies sent with a [`ChunkGap`](super::ChunkGap),
//! callout answers, gRPC work, ticks, gRPC deadlines and upstream responses.
//! An event that belongs to a waiting stream (its callout, its gRPC call, its
//! next piece of body, its upstream's response) is handed to that stream,
//! which runs until it waits again or ends; anything else (ticks, the root context's
//! callouts, answers that arrive after their stream stopped waiting) runs in
//! the root context. After every event, what enqueues posted is delivered
//! (`on_queue_ready`), and a stream that another callback resumed, through
//! the effective context, is woken.

use std::cell::{RefCell, RefMut};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::{Chain, answer_call, answer_dropped, call_due, expire_grpc, fire_tick, grpc_step};
use crate::grpc::GrpcCallout;
use crate::outcome::{Callout, LogRecord, Outcome};
use crate::state::{PendingCall, StreamMaps};
use crate::upstream::Upstream;
use crate::{Error, Result};

/// When a request given to [`Chain::send_all`] arrives: this long after the
/// batch starts (default: at once). Put it in the request's extensions.
///
/// ```
/// use std::time::Duration;
///
/// let request = http::Request::get("/")
///     .header("host", "example.com")
///     .extension(weir_harness::Arrival(Duration::from_millis(100)))
///     .body(bytes::Bytes::new())
///     .unwrap(); // arrives 100 ms after the batch's first requests
/// # let _ = request;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Arrival(pub Duration);

/// When the client of a request given to [`Chain::send`] or
/// [`Chain::send_all`] closes its connection: this long after the request
/// arrived, unless the stream ended first. Put it in the request's
/// extensions. The stream then fails with [`Error::Disconnected`], as Envoy
/// resets it: the filters' `on_log` (with `response.code_details`
/// `downstream_remote_disconnect` and no response), `on_done` and `on_delete`
/// run, an upstream request in flight is reset, and callouts still in flight
/// are answered to the root context later.
///
/// ```
/// use std::time::Duration;
///
/// let request = http::Request::get("/")
///     .header("host", "example.com")
///     .extension(weir_harness::Disconnect(Duration::from_millis(200)))
///     .body(bytes::Bytes::new())
///     .unwrap(); // the client gives up after 200 ms
/// # let _ = request;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Disconnect(pub Duration);

/// What a stream waits for at a wait point.
#[derive(Debug)]
pub(super) enum Wait {
    /// A headers or trailers callback of filter `slot` holds the stream
    /// (its context there is `context`): its callouts, its gRPC calls and a
    /// resume from any callback wake it. Past `give_up` it has stalled.
    /// The next piece of a body sent in pieces with a [`ChunkGap`](super::ChunkGap)
    /// arrives at `piece`, if any: that wakes it too.
    /// The answers to the callouts of the filters before it that buffered
    /// body meanwhile, each (filter, context) of `before`, wake it too.
    Held {
        slot: usize,
        context: u32,
        give_up: Duration,
        piece: Option<Duration>,
        before: Vec<(usize, u32)>,
    },
    /// Filters holding buffered body frames wait for their callouts, each
    /// (filter, context) of `filters`; the next piece of the body, if any,
    /// arrives at `piece`.
    Body {
        filters: Vec<(usize, u32)>,
        give_up: Duration,
        piece: Option<Duration>,
    },
    /// The next piece of the body arrives at `at` (nothing else is awaited).
    Piece { at: Duration },
    /// The request went upstream; its response arrives at `at`.
    Upstream { at: Duration, seq: Option<u64> },
}

/// What wakes a waiting stream.
#[derive(Debug)]
pub(super) enum Delivery {
    /// The answer to a callout the stream's context in filter `.0` made.
    Call(usize, Box<PendingCall>),
    /// gRPC work for the context of filter `.0` (an event, or asking a
    /// service).
    Grpc(usize),
    /// Another callback deferred an action for the stream's context.
    Resumed,
    /// The upstream's response arrived.
    Upstream,
    /// The next piece of the body arrived.
    Piece,
    /// Nothing can resume the stream any more.
    Stalled,
    /// The client closed its connection.
    Disconnected,
}

/// The scheduler's view of one stream of the batch.
#[derive(Debug, Default)]
struct Entry {
    /// When it arrives (virtual monotonic time).
    arrival: Duration,
    /// When its client disconnects, unless it ended first.
    disconnect: Option<Duration>,
    seq: u64,
    started: bool,
    done: bool,
    wait: Option<Wait>,
    delivery: Option<Delivery>,
    /// Its contexts: (filter, VM key, context id).
    contexts: Vec<(usize, u64, u32)>,
    /// Its gRPC calls and streams: (filter, token).
    grpc_tokens: Vec<(usize, u32)>,
    logs: Vec<LogRecord>,
    callouts: Vec<Callout>,
    grpc: Vec<GrpcCallout>,
    traps: Vec<String>,
    fuel: u64,
    host_calls: u64,
}

impl Entry {
    fn owns(&self, vm: u64, context: u32) -> bool {
        self.contexts
            .iter()
            .any(|&(_, v, c)| v == vm && c == context)
    }

    /// Whether the stream waits for the answer to a callout its `context`
    /// made in filter `slot`.
    fn takes_call(&self, slot: usize, context: u32) -> bool {
        match &self.wait {
            Some(Wait::Held {
                slot: s,
                context: c,
                before,
                ..
            }) => (*s == slot && *c == context) || before.contains(&(slot, context)),
            Some(Wait::Body { filters, .. }) => filters.contains(&(slot, context)),
            _ => false,
        }
    }

    fn give_up(&self) -> Option<Duration> {
        match &self.wait {
            Some(Wait::Held { give_up, .. } | Wait::Body { give_up, .. }) => Some(*give_up),
            _ => None,
        }
    }

    /// When the piece of a body the stream waits for arrives, if it waits
    /// for one.
    fn piece(&self) -> Option<Duration> {
        match &self.wait {
            Some(Wait::Held { piece, .. } | Wait::Body { piece, .. }) => *piece,
            Some(Wait::Piece { at }) => Some(*at),
            _ => None,
        }
    }
}

/// The scheduler's state for one batch.
#[derive(Debug, Default)]
pub(super) struct Sched {
    streams: Vec<Entry>,
    seq: u64,
    /// Which stream's maps each VM holds (by VM key); the others' are parked.
    owners: Vec<(u64, usize)>,
    parked: Vec<(u64, usize, StreamMaps)>,
    /// Filters with gRPC work to do, with its place in the order (work
    /// appears as a callback sends a call, and is done as a zero-delay event).
    grpc_work: Vec<(usize, u64)>,
    /// What the last [`scan`] saw (its room is kept).
    scan: Scan,
}

impl Sched {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The stream whose context `context` is in the VM `vm`.
    fn owner(&self, vm: u64, context: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.owns(vm, context))
    }

    /// Who gets what happens outside any stream: the first stream of the
    /// batch that has not ended, else the last one.
    fn bystander(&self) -> usize {
        self.streams
            .iter()
            .position(|s| !s.done)
            .unwrap_or(self.streams.len().saturating_sub(1))
    }

    fn deliver(&mut self, stream: usize, delivery: Delivery) {
        if let Some(entry) = self.streams.get_mut(stream) {
            entry.wait = None;
            entry.delivery = Some(delivery);
        }
    }
}

/// What a batch's stream futures share: the chain and the scheduler, each
/// borrowed only between wait points.
pub(super) struct Cx<'c> {
    chain: RefCell<&'c mut Chain>,
    sched: RefCell<Sched>,
}

/// One stream's handle on the batch.
pub(super) struct Io<'a, 'c> {
    cx: &'a Cx<'c>,
    /// The stream's index in the batch.
    pub(super) id: usize,
    /// Whether callout responses may still reach the stream: once one resumed
    /// or answered it, the stream goes as far as it can first, and the rest
    /// arrive as events it does not wait for.
    pub(super) waits: bool,
    /// The stream's callouts still in flight when its request went upstream,
    /// by (filter, token): body passes of the response do not wait for them
    /// (they arrive as events, whenever they are due).
    pub(super) leftovers: Vec<(usize, u32)>,
    /// Filters that held their headers (StopIteration with
    /// `allow_on_headers_stop_iteration`) and let them go from a body
    /// callback that continued: Envoy keeps the stream's body buffer (empty
    /// now), so when such a filter is resumed later, while the body is still
    /// arriving, the filters after it get an empty frame (measured in Envoy
    /// 1.40).
    pub(super) emptied: Vec<usize>,
    /// The pieces of the body of the direction under way that have not
    /// arrived yet (a body sent in pieces with a [`ChunkGap`](super::ChunkGap)):
    /// each frame with the virtual time it arrives at.
    pub(super) pieces: VecDeque<(Duration, Vec<u8>, bool)>,
    /// What Envoy's stream info knows of the stream (given to every VM's
    /// maps for it when it starts).
    pub(super) facts: crate::state::Facts,
}

impl<'a, 'c> Io<'a, 'c> {
    /// The chain, until the guard is dropped (never across a wait point).
    pub(super) fn chain(&self) -> RefMut<'a, &'c mut Chain> {
        self.cx.chain.borrow_mut()
    }

    /// Waits for what `wait` names; the scheduler says what came.
    pub(super) fn wait(&self, wait: Wait) -> WaitFor<'a, 'c> {
        WaitFor {
            cx: self.cx,
            stream: self.id,
            wait: Some(wait),
        }
    }

    /// Records a context the stream created in filter `slot` (VM `vm`).
    pub(super) fn own_context(&self, slot: usize, vm: u64, context: u32) {
        let mut sched = self.cx.sched.borrow_mut();
        if let Some(entry) = sched.streams.get_mut(self.id)
            && !entry.owns(vm, context)
        {
            entry.contexts.push((slot, vm, context));
        }
    }

    /// The stream's logs so far, taken (what a reset carries).
    pub(super) fn take_logs(&self) -> Vec<LogRecord> {
        let mut chain = self.cx.chain.borrow_mut();
        let mut sched = self.cx.sched.borrow_mut();
        collect(&mut chain, &mut sched, self.id);
        sched.streams.get_mut(self.id).map_or_else(Vec::new, |e| {
            e.traps.clear();
            std::mem::take(&mut e.logs)
        })
    }
}

/// The future of one wait point.
pub(super) struct WaitFor<'a, 'c> {
    cx: &'a Cx<'c>,
    stream: usize,
    wait: Option<Wait>,
}

impl Future for WaitFor<'_, '_> {
    type Output = Delivery;

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Delivery> {
        let stream = self.stream;
        let wait = self.wait.take();
        let mut sched = self.cx.sched.borrow_mut();
        let Some(entry) = sched.streams.get_mut(stream) else {
            return Poll::Ready(Delivery::Stalled);
        };
        if let Some(wait) = wait {
            entry.delivery = None;
            entry.wait = Some(wait);
            return Poll::Pending;
        }
        match entry.delivery.take() {
            Some(delivery) => Poll::Ready(delivery),
            None => Poll::Pending,
        }
    }
}

/// The next thing to happen, by (time, class, sequence): at equal times,
/// arrivals, pieces of bodies (before what was sent after the stream
/// arrived), callout answers, gRPC work (due as soon as it appears) and
/// upstream responses in the order they were sent (class 0), then client
/// disconnects (1), ticks (2), gRPC deadlines (3) and stalls (4).
#[derive(Clone, Copy, Debug)]
enum Event {
    Arrive(usize),
    /// The next piece of stream `.0`'s body.
    Piece(usize),
    Upstream(usize),
    Call(usize, usize),
    /// A callout of a VM FAIL_RELOAD replaced (its place in `Chain::retired`).
    Retired(usize),
    Grpc(usize),
    Tick(usize),
    Deadline(usize),
    Stall(usize),
    Disconnect(usize),
}

type Key = (Duration, u8, u64);

/// Far more events than a test makes; a guest that feeds itself callouts
/// forever (Envoy would spin too) is stopped here.
const MAX_EVENTS: usize = 1_000_000;

/// The future of one stream.
type StreamFuture<'a> = Pin<Box<dyn Future<Output = Result<Outcome>> + 'a>>;

impl Chain {
    /// Sends several requests through the chain concurrently, as Envoy's
    /// worker (`--concurrency 1`) interleaves their streams, to one shared
    /// `upstream` (called once per stream that reaches it), and returns each
    /// one's outcome, in request order.
    ///
    /// Every stream has its own context id in every plugin VM. The requests
    /// arrive at the chain's current virtual time, in order, unless one
    /// carries an [`Arrival`] (it arrives that long after the batch starts).
    /// A stream runs until it waits: for a callout, a gRPC answer or a tick
    /// while a filter holds it, for its upstream's response (at once, or
    /// after an [`UpstreamFault::Delay`](crate::UpstreamFault::Delay) on the
    /// response), for the next piece of a body sent with a
    /// [`ChunkGap`](crate::ChunkGap). Requests that arrive together are each
    /// decoded until they wait; then pieces of bodies, callout answers, gRPC
    /// messages, ticks and upstream responses arrive in virtual-time order
    /// (at equal times, in the order they were
    /// sent), each resuming the stream it belongs to, which runs until it
    /// waits again or ends. The virtual clock is the chain's one clock: it
    /// moves to each event's time.
    ///
    /// Each outcome has what its own stream did: its logs, callouts, gRPC
    /// calls, traps, fuel and host calls. What happens outside any stream
    /// meanwhile (ticks, the root context's callouts and queue notifications)
    /// goes to the first stream of the batch that has not ended yet, else to
    /// the last one, as [`Chain::send`] puts it in its one outcome. Callout
    /// answers that arrive after their stream stopped waiting for them go to
    /// that stream's outcome.
    ///
    /// # Errors
    /// Each outcome fails as [`Chain::send`] does.
    pub fn send_all<B, I>(&mut self, requests: I, upstream: impl Upstream) -> Vec<Result<Outcome>>
    where
        B: Into<Bytes>,
        I: IntoIterator<Item = http::Request<B>>,
    {
        let requests: Vec<http::Request<Bytes>> =
            requests.into_iter().map(|r| r.map(Into::into)).collect();
        let start = self.monotonic();
        let mut sched = Sched {
            scan: std::mem::take(&mut self.scratch.scan),
            ..Sched::default()
        };
        for request in &requests {
            let arrival = start
                + request
                    .extensions()
                    .get::<Arrival>()
                    .map_or(Duration::ZERO, |a| a.0);
            let seq = sched.next_seq();
            let disconnect = request
                .extensions()
                .get::<Disconnect>()
                .map(|d| arrival + d.0);
            sched.streams.push(Entry {
                arrival,
                disconnect,
                seq,
                ..Entry::default()
            });
        }
        let upstream = RefCell::new(upstream);
        let cx = Cx {
            chain: RefCell::new(self),
            sched: RefCell::new(sched),
        };
        let mut futures: Vec<Option<StreamFuture<'_>>> = requests
            .into_iter()
            .enumerate()
            .map(|(id, request)| {
                let io = Io {
                    cx: &cx,
                    id,
                    waits: true,
                    leftovers: Vec::new(),
                    emptied: Vec::new(),
                    pieces: VecDeque::new(),
                    facts: crate::state::Facts::default(),
                };
                let future: StreamFuture<'_> = Box::pin(Chain::run_stream(io, request, &upstream));
                Some(future)
            })
            .collect();
        let mut results: Vec<Option<Result<Outcome>>> = futures.iter().map(|_| None).collect();
        Runner {
            cx: &cx,
            futures: &mut futures,
            results: &mut results,
        }
        .all();
        drop(futures);
        let Cx { chain, sched } = cx;
        let chain = chain.into_inner();
        let sched = sched.into_inner();
        chain.finish_batch(sched, results)
    }

    /// The outcomes of a batch, with what the scheduler attributed to each
    /// stream; the VMs keep the maps they hold, and nothing stays parked.
    fn finish_batch(
        &mut self,
        mut sched: Sched,
        results: Vec<Option<Result<Outcome>>>,
    ) -> Vec<Result<Outcome>> {
        self.scratch.scan = std::mem::take(&mut sched.scan);
        let last = sched.bystander();
        collect(self, &mut sched, last);
        // gRPC calls go to the stream that made them.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let log = std::mem::take(&mut slot.vm.state().root_mut().grpc.log);
            for (token, callout) in log {
                let owner = sched
                    .streams
                    .iter()
                    .position(|s| s.grpc_tokens.contains(&(i, token)))
                    .unwrap_or(last);
                if let Some(entry) = sched.streams.get_mut(owner) {
                    entry.grpc.push(callout);
                }
            }
        }
        let mut outcomes = Vec::with_capacity(results.len());
        for (result, entry) in results.into_iter().zip(sched.streams) {
            let mut result = result.unwrap_or_else(|| {
                Err(Error::Stalled {
                    plugin: String::new(),
                    phase: "send_all",
                })
            });
            outcomes.push(match result {
                Ok(mut outcome) => {
                    outcome.logs = entry.logs;
                    outcome.callouts.extend(entry.callouts);
                    outcome.grpc = entry.grpc;
                    outcome.traps = entry.traps;
                    outcome.fuel = entry.fuel;
                    outcome.host_calls = entry.host_calls;
                    Ok(outcome)
                }
                Err(
                    Error::Reset {
                        ref mut logs,
                        ref mut callouts,
                        ..
                    }
                    | Error::Disconnected {
                        ref mut logs,
                        ref mut callouts,
                        ..
                    },
                ) => {
                    logs.extend(entry.logs);
                    callouts.extend(entry.callouts);
                    result
                }
                Err(e) => Err(e),
            });
        }
        outcomes
    }
}

/// Moves what the shared state gathered since the last event (logs, traps,
/// fuel, host calls) to stream `to`.
fn collect(chain: &mut Chain, sched: &mut Sched, to: usize) {
    let logs = std::mem::take(&mut *chain.shared.logs());
    let traps = std::mem::take(&mut *chain.shared.traps());
    let (mut fuel, mut host_calls) = (0, 0);
    for slot in &mut chain.slots {
        let (f, h) = slot.vm.take_usage();
        fuel += f;
        host_calls += h;
    }
    if let Some(entry) = sched.streams.get_mut(to) {
        entry.logs.extend(logs);
        entry.traps.extend(traps);
        entry.fuel += fuel;
        entry.host_calls += host_calls;
    }
}

/// Gives each VM stream `stream`'s maps (headers a filter holds, filter
/// state, response code), parking those of the stream that had them.
fn activate(chain: &mut Chain, sched: &mut Sched, stream: usize) {
    for slot in &mut chain.slots {
        let vm = slot.vm.key();
        let owner = sched.owners.iter().position(|&(v, _)| v == vm);
        match owner {
            Some(at) if sched.owners[at].1 == stream => continue,
            Some(at) => {
                let previous = sched.owners[at].1;
                sched.owners[at].1 = stream;
                let mine = sched
                    .parked
                    .iter()
                    .position(|&(v, s, _)| v == vm && s == stream)
                    .map(|p| sched.parked.swap_remove(p).2)
                    .unwrap_or_default();
                let theirs = std::mem::replace(&mut slot.vm.state().maps, mine);
                sched.parked.push((vm, previous, theirs));
            }
            // The first stream to use the VM in the batch takes its maps as
            // they are (a new stream resets them).
            None => sched.owners.push((vm, stream)),
        }
    }
}

/// Drives a batch's streams.
struct Runner<'r, 'f, 'c> {
    cx: &'r Cx<'c>,
    futures: &'r mut Vec<Option<StreamFuture<'f>>>,
    results: &'r mut Vec<Option<Result<Outcome>>>,
}

impl Runner<'_, '_, '_> {
    fn all(&mut self) {
        for _ in 0..MAX_EVENTS {
            match self.next() {
                Some((at, event)) => self.dispatch(at, event),
                None => {
                    // Nothing can happen any more: the streams still waiting
                    // have stalled.
                    let waiting = self
                        .cx
                        .sched
                        .borrow()
                        .streams
                        .iter()
                        .position(|s| !s.done && s.started && s.give_up().is_some());
                    match waiting {
                        Some(k) => {
                            self.cx.sched.borrow_mut().deliver(k, Delivery::Stalled);
                            self.poll(k);
                        }
                        None => return,
                    }
                }
            }
        }
        tracing::warn!(
            "more than {MAX_EVENTS} events in one batch: the plugins keep calling out; \
             the streams still waiting have stalled"
        );
        let waiting: Vec<usize> = (0..self.futures.len())
            .filter(|&k| self.futures[k].is_some())
            .collect();
        for k in waiting {
            self.cx.sched.borrow_mut().deliver(k, Delivery::Stalled);
            self.poll(k);
        }
    }

    /// Polls stream `k` with its maps in place, then gives it what it did.
    fn poll(&mut self, k: usize) {
        {
            let mut chain = self.cx.chain.borrow_mut();
            let mut sched = self.cx.sched.borrow_mut();
            activate(&mut chain, &mut sched, k);
        }
        let Some(Some(future)) = self.futures.get_mut(k) else {
            return;
        };
        let mut context = Context::from_waker(Waker::noop());
        if let Poll::Ready(result) = future.as_mut().poll(&mut context) {
            self.futures[k] = None;
            self.results[k] = Some(result);
            if let Some(entry) = self.cx.sched.borrow_mut().streams.get_mut(k) {
                entry.done = true;
                entry.wait = None;
            }
        }
        let mut chain = self.cx.chain.borrow_mut();
        let mut sched = self.cx.sched.borrow_mut();
        collect(&mut chain, &mut sched, k);
    }

    /// What follows every event: new callouts get their place in the order,
    /// queue notifications are delivered, and streams another callback
    /// resumed run; then the next event, if any.
    fn next(&mut self) -> Option<(Duration, Event)> {
        loop {
            let woken = {
                let mut chain = self.cx.chain.borrow_mut();
                let mut sched = self.cx.sched.borrow_mut();
                let chain: &mut Chain = &mut chain;
                scan(chain, &mut sched);
                let bystander = sched.bystander();
                if chain.deliver_queue_ready(&mut Vec::new(), false) {
                    collect(chain, &mut sched, bystander);
                    scan(chain, &mut sched);
                }
                if sched.scan.deferred {
                    wake_resumed(chain, &mut sched)
                } else {
                    None
                }
            };
            match woken {
                Some(k) => self.poll(k),
                None => {
                    let mut chain = self.cx.chain.borrow_mut();
                    let sched = self.cx.sched.borrow();
                    return next_event(&mut chain, &sched);
                }
            }
        }
    }

    fn dispatch(&mut self, at: Duration, event: Event) {
        let woken = {
            let mut chain = self.cx.chain.borrow_mut();
            let mut sched = self.cx.sched.borrow_mut();
            run_event(&mut chain, &mut sched, at, event)
        };
        if let Some(k) = woken {
            self.poll(k);
        }
    }
}

/// Runs one event: hands it to the stream it wakes (returned), or runs it in
/// the root context.
fn run_event(chain: &mut Chain, sched: &mut Sched, at: Duration, event: Event) -> Option<usize> {
    if !matches!(event, Event::Stall(_)) && at > chain.monotonic() {
        chain.set_monotonic(at);
    }
    match event {
        Event::Arrive(k) => {
            if let Some(entry) = sched.streams.get_mut(k) {
                entry.started = true;
            }
            Some(k)
        }
        Event::Upstream(k) => {
            sched.deliver(k, Delivery::Upstream);
            Some(k)
        }
        Event::Piece(k) => {
            sched.deliver(k, Delivery::Piece);
            Some(k)
        }
        Event::Stall(k) => {
            sched.deliver(k, Delivery::Stalled);
            Some(k)
        }
        Event::Disconnect(k) => {
            sched.streams[k].disconnect = None;
            sched.deliver(k, Delivery::Disconnected);
            Some(k)
        }
        Event::Call(i, index) => {
            let slot = chain.slots.get_mut(i)?;
            let vm = slot.vm.key();
            let failed = slot.vm.failed();
            let call = slot.vm.state().root_mut().pending_calls.remove(index)?;
            let owner = sched.owner(vm, call.context);
            // A failed VM is called no more: the answer reaches nobody (a
            // stream waiting for it stays paused).
            if let Some(k) = owner
                && !failed
                && sched.streams[k].takes_call(i, call.context)
            {
                sched.deliver(k, Delivery::Call(i, Box::new(call)));
                return Some(k);
            }
            // Nobody waits for it: the root context gets it, and what it
            // defers for a stream that no longer waits is dropped.
            let to = owner.unwrap_or_else(|| sched.bystander());
            activate(chain, sched, to);
            let mut callouts = Vec::new();
            let Chain {
                slots, clusters, ..
            } = &mut *chain;
            let _ = answer_call(&mut slots[i].vm, clusters, call, &mut callouts);
            if let Some(entry) = sched.streams.get_mut(to) {
                entry.callouts.extend(callouts);
            }
            collect(chain, sched, to);
            None
        }
        Event::Retired(index) => {
            if index >= chain.retired.len() {
                return None;
            }
            let (vm, call) = chain.retired.remove(index);
            let to = sched
                .owner(vm, call.context)
                .unwrap_or_else(|| sched.bystander());
            let mut callouts = Vec::new();
            answer_dropped(&mut chain.clusters, call, &mut callouts);
            if let Some(entry) = sched.streams.get_mut(to) {
                entry.callouts.extend(callouts);
            }
            None
        }
        Event::Grpc(i) => {
            let owner = grpc_owner(chain, sched, i);
            // A stream held in the filter, or whose buffered body waits in
            // it, gets the work; otherwise the root context does.
            if let Some(k) = owner
                && match &sched.streams[k].wait {
                    Some(Wait::Held { slot, .. }) => *slot == i,
                    Some(Wait::Body { filters, .. }) => filters.iter().any(|&(s, _)| s == i),
                    _ => false,
                }
            {
                sched.deliver(k, Delivery::Grpc(i));
                return Some(k);
            }
            let to = owner.unwrap_or_else(|| sched.bystander());
            activate(chain, sched, to);
            let Chain { slots, grpc, .. } = &mut *chain;
            let _ = grpc_step(&mut slots[i].vm, grpc);
            collect(chain, sched, to);
            None
        }
        Event::Tick(i) => {
            if let Some(slot) = chain.slots.get_mut(i) {
                let _ = fire_tick(&mut slot.vm, at);
            }
            let to = sched.bystander();
            collect(chain, sched, to);
            None
        }
        Event::Deadline(i) => {
            if let Some(slot) = chain.slots.get_mut(i) {
                expire_grpc(&mut slot.vm, at);
            }
            None
        }
    }
}

/// What [`scan`] saw of each VM, for [`next_event`].
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Per filter: whether its root context has callouts in flight, and the
    /// earliest of its gRPC work, tick and gRPC deadline (in [`next_event`]'s
    /// order), if any.
    slots: Vec<(bool, Option<(Key, Event)>)>,
    /// Whether any VM holds an action a callback deferred.
    deferred: bool,
}

/// One look at every VM, under one lock each. Gives every callout and gRPC
/// call made since the last event its place: callouts in the order they were
/// made, then the upstream requests sent meanwhile; gRPC calls are recorded
/// with the stream that made them. Notes what [`next_event`] and
/// [`wake_resumed`] need: which VMs have callouts in flight or deferred
/// actions, and each VM's next gRPC work or timer.
fn scan(chain: &mut Chain, sched: &mut Sched) {
    let now = chain.monotonic();
    let live = sched.streams.iter().any(|s| !s.done);
    let mut scan = std::mem::take(&mut sched.scan);
    scan.slots.clear();
    scan.deferred = false;
    for (i, slot) in chain.slots.iter_mut().enumerate() {
        let vm = slot.vm.key();
        let failed = slot.vm.failed();
        let mut state = slot.vm.state();
        scan.deferred |= !state.deferred.is_empty();
        let root = state.root_mut();
        let known = sched.grpc_work.iter().position(|&(s, _)| s == i);
        let calls = !root.pending_calls.is_empty();
        if !calls && root.grpc.is_idle() {
            // Nothing in flight (the common case): nothing to stamp.
            if let Some(at) = known {
                sched.grpc_work.swap_remove(at);
            }
        } else {
            stamp(i, vm, root, known, sched);
        }
        let mut best: Option<(Key, Event)> = None;
        let mut consider = |key: Key, event: Event| {
            if best.as_ref().is_none_or(|(b, _)| key < *b) {
                best = Some((key, event));
            }
        };
        if !failed {
            let grpc = &root.grpc;
            if has_grpc_work(grpc) {
                let seq = sched
                    .grpc_work
                    .iter()
                    .find(|&&(s, _)| s == i)
                    .map_or(u64::MAX, |&(_, seq)| seq);
                consider((now, 0, seq), Event::Grpc(i));
            }
            if live {
                if root.tick_period_ms != 0
                    && let Some(t) = root.next_tick
                {
                    consider((t, 2, i as u64), Event::Tick(i));
                }
                if let Some(at) = grpc.next_deadline() {
                    consider((at, 3, i as u64), Event::Deadline(i));
                }
            }
        }
        scan.slots.push((calls, best));
    }
    for k in 0..sched.streams.len() {
        if let Some(Wait::Upstream {
            seq: seq @ None, ..
        }) = &mut sched.streams[k].wait
        {
            sched.seq += 1;
            *seq = Some(sched.seq);
        }
    }
    sched.scan = scan;
}

/// [`scan`]'s stamping of filter `i`'s VM (key `vm`), whose root context is
/// `root`; `known` is its place in `sched.grpc_work`.
fn stamp(
    i: usize,
    vm: u64,
    root: &mut crate::state::RootState,
    known: Option<usize>,
    sched: &mut Sched,
) {
    for call in root.pending_calls.iter_mut().filter(|c| c.seq.is_none()) {
        sched.seq += 1;
        call.seq = Some(sched.seq);
    }
    match (has_grpc_work(&root.grpc), known) {
        (true, None) => {
            sched.seq += 1;
            sched.grpc_work.push((i, sched.seq));
        }
        (false, Some(at)) => {
            sched.grpc_work.swap_remove(at);
        }
        _ => {}
    }
    let tokens = root
        .grpc
        .calls
        .iter()
        .map(|(t, c)| (*t, c.context))
        .chain(root.grpc.streams.iter().map(|(t, s)| (*t, s.context)));
    for (token, context) in tokens {
        if let Some(k) = sched.owner(vm, context)
            && !sched.streams[k].grpc_tokens.contains(&(i, token))
        {
            sched.streams[k].grpc_tokens.push((i, token));
        }
    }
}

/// Whether a VM has gRPC work to do without the clock moving: an event to
/// deliver, a call (or half-closed stream) whose service was not asked, or
/// something to tell a streaming service.
fn has_grpc_work(grpc: &crate::grpc::GrpcState) -> bool {
    grpc.has_work()
}

/// The stream whose gRPC call the next gRPC work of filter `i` is for.
fn grpc_owner(chain: &mut Chain, sched: &Sched, i: usize) -> Option<usize> {
    let slot = chain.slots.get_mut(i)?;
    let vm = slot.vm.key();
    let context = slot.vm.state().root().grpc.next_work_context()?;
    sched.owner(vm, context)
}

/// The first waiting stream another callback resumed (it deferred an action
/// for the stream's context); actions deferred for contexts nobody waits on
/// are dropped, as Envoy drops a root context's.
fn wake_resumed(chain: &mut Chain, sched: &mut Sched) -> Option<usize> {
    for (i, slot) in chain.slots.iter_mut().enumerate() {
        let vm = slot.vm.key();
        for k in 0..sched.streams.len() {
            let entry = &sched.streams[k];
            if entry.delivery.is_some() {
                continue;
            }
            let context = match &entry.wait {
                Some(Wait::Held { slot, context, .. }) if *slot == i => *context,
                Some(Wait::Body { filters, .. }) => match filters.iter().find(|(s, _)| *s == i) {
                    Some(&(_, context)) => context,
                    None => continue,
                },
                _ => continue,
            };
            // A stream paused in a VM FAIL_RELOAD replaced has no context in
            // this one.
            if entry.owns(vm, context) && slot.vm.state().deferred.has(context) {
                sched.deliver(k, Delivery::Resumed);
                return Some(k);
            }
        }
        let mut state = slot.vm.state();
        if state.deferred.is_empty() {
            continue;
        }
        let stale: Vec<u32> = state
            .deferred
            .contexts()
            .filter(|&c| {
                !sched.streams.iter().any(|s| {
                    s.owns(vm, c)
                        && match &s.wait {
                            Some(Wait::Held { slot, context, .. }) => *slot == i && *context == c,
                            Some(Wait::Body { filters, .. }) => filters.contains(&(i, c)),
                            _ => false,
                        }
                })
            })
            .collect();
        for c in stale {
            state.deferred.take(c);
        }
    }
    None
}

/// The next event of the batch, if any. While every stream has ended, only
/// callouts and gRPC work still in flight are answered (ticks and gRPC
/// deadlines wait for [`Chain::advance`]).
fn next_event(chain: &mut Chain, sched: &Sched) -> Option<(Duration, Event)> {
    let mut best: Option<(Key, Event)> = None;
    let mut consider = |key: Key, event: Event| {
        if best.as_ref().is_none_or(|(b, _)| key < *b) {
            best = Some((key, event));
        }
    };
    for (k, s) in sched.streams.iter().enumerate() {
        if !s.started {
            consider((s.arrival, 0, s.seq), Event::Arrive(k));
        }
        if let Some(Wait::Upstream { at, seq }) = &s.wait {
            consider((*at, 0, seq.unwrap_or(u64::MAX)), Event::Upstream(k));
        }
        // A piece of a body comes before what else is due at the same time
        // (the client sent it first).
        if s.delivery.is_none()
            && let Some(at) = s.piece()
        {
            consider((at, 0, s.seq), Event::Piece(k));
        }
        if s.delivery.is_none()
            && let Some(give_up) = s.give_up()
        {
            consider((give_up, 4, k as u64), Event::Stall(k));
        }
        if s.started
            && !s.done
            && s.delivery.is_none()
            && let Some(at) = s.disconnect
        {
            consider((at, 1, s.seq), Event::Disconnect(k));
        }
    }
    let Chain {
        slots,
        clusters,
        retired,
        ..
    } = chain;
    // The cluster answers a failed VM's callouts too (nobody gets them).
    for (index, (_, call)) in retired.iter_mut().enumerate() {
        let due = call_due(clusters, call);
        consider(
            (due, 0, call.seq.unwrap_or(u64::MAX)),
            Event::Retired(index),
        );
    }
    for (i, slot) in slots.iter_mut().enumerate() {
        let Some(&(calls, other)) = sched.scan.slots.get(i) else {
            break;
        };
        if calls {
            let mut state = slot.vm.state();
            for (index, call) in state.root_mut().pending_calls.iter_mut().enumerate() {
                let due = call_due(clusters, call);
                consider(
                    (due, 0, call.seq.unwrap_or(u64::MAX)),
                    Event::Call(i, index),
                );
            }
        }
        if let Some((key, event)) = other {
            consider(key, event);
        }
    }
    best.map(|((at, _, _), event)| (at, event))
}
