//! Logical timers on the one host tick each plugin (root context) has, shared
//! by the plugin's timers ([`PluginContext::every`](crate::PluginContext::every),
//! [`PluginContext::after`](crate::PluginContext::after)) and the sleeps of tasks
//! ([`crate::task::sleep`]).
//!
//! Envoy gives each root context a single periodic tick. The host tick period is
//! the greatest common divisor of the intervals still to come; on every tick the
//! entries that are due (by the host clock) fire, in due order: plugin timers are
//! handed back to the plugin, sleeps wake their task. The tables live per root
//! context in a thread-local registry, so that a task of any stream can sleep on
//! its plugin's tick.

use std::cell::RefCell;
use std::task::Waker;

use crate::host;
use crate::plugin::Timer;

#[derive(Debug)]
struct Entry {
    timer: Timer,
    due_ms: u64,
    period_ms: Option<u64>,
    /// A task's sleep: woken instead of handed to the plugin.
    waker: Option<Waker>,
}

#[derive(Debug)]
struct Clock {
    root: u32,
    entries: Vec<Entry>,
    next: u32,
    tick_ms: u64,
}

thread_local! {
    static CLOCKS: RefCell<Vec<Clock>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the clock of `root` (created on first use).
fn with_clock<R>(root: u32, f: impl FnOnce(&mut Clock) -> R) -> R {
    CLOCKS.with(|clocks| {
        let mut clocks = clocks.borrow_mut();
        let at = match clocks.iter().position(|c| c.root == root) {
            Some(at) => at,
            None => {
                clocks.push(Clock {
                    root,
                    entries: Vec::new(),
                    next: 0,
                    tick_ms: 0,
                });
                clocks.len() - 1
            }
        };
        f(&mut clocks[at])
    })
}

pub(crate) fn now_ms() -> u64 {
    host::current_time_nanos().unwrap_or(0) / 1_000_000
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Adds an entry due in `delay_ms` (then every `period_ms`, if given).
pub(crate) fn add(root: u32, delay_ms: u64, period_ms: Option<u64>, waker: Option<Waker>) -> Timer {
    with_clock(root, |clock| {
        clock.next = clock.next.wrapping_add(1);
        let timer = Timer(clock.next);
        clock.entries.push(Entry {
            timer,
            due_ms: now_ms().saturating_add(delay_ms),
            period_ms,
            waker,
        });
        clock.retick();
        timer
    })
}

/// Removes an entry; one that already fired is not an error.
pub(crate) fn cancel(root: u32, timer: Timer) {
    with_clock(root, |clock| {
        let before = clock.entries.len();
        clock.entries.retain(|e| e.timer != timer);
        if clock.entries.len() != before {
            clock.retick();
        }
    });
}

/// Whether a sleep has not fired yet; if so, `waker` is the one it wakes.
pub(crate) fn pending(root: u32, timer: Timer, waker: &Waker) -> bool {
    with_clock(root, |clock| {
        match clock.entries.iter_mut().find(|e| e.timer == timer) {
            Some(entry) => {
                match &mut entry.waker {
                    Some(w) if w.will_wake(waker) => {}
                    slot => *slot = Some(waker.clone()),
                }
                true
            }
            None => false,
        }
    })
}

/// How many plugin timers (not sleeps) are active.
pub(crate) fn plugin_timers(root: u32) -> usize {
    with_clock(root, |clock| {
        clock.entries.iter().filter(|e| e.waker.is_none()).count()
    })
}

/// Removes the entries due now: wakes the sleeps and returns the plugin timers,
/// in due order. Periodic timers are re-armed.
pub(crate) fn due(root: u32) -> Vec<Timer> {
    let (timers, wakers) = with_clock(root, Clock::due);
    for waker in wakers {
        waker.wake();
    }
    timers
}

/// Forgets a root context's clock (the plugin is gone).
pub(crate) fn remove(root: u32) {
    let gone = CLOCKS.with(|clocks| {
        let mut clocks = clocks.borrow_mut();
        clocks
            .iter()
            .position(|c| c.root == root)
            .map(|at| clocks.swap_remove(at))
    });
    // Wakers are dropped outside the borrow.
    drop(gone);
}

/// Forgets every clock (a test host reset).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn reset() {
    let all = CLOCKS.with(|clocks| std::mem::take(&mut *clocks.borrow_mut()));
    drop(all);
}

impl Clock {
    /// Sets the host tick to the GCD of the intervals still to come.
    fn retick(&mut self) {
        let now = now_ms();
        let tick = self
            .entries
            .iter()
            .flat_map(|e| [e.period_ms.unwrap_or(0), e.due_ms.saturating_sub(now)])
            .filter(|&ms| ms > 0)
            .fold(0, gcd)
            .clamp(
                if self.entries.is_empty() { 0 } else { 1 },
                u64::from(u32::MAX),
            );
        if tick != self.tick_ms {
            self.tick_ms = tick;
            if let Err(status) = host::set_tick_period(u32::try_from(tick).unwrap_or(u32::MAX)) {
                log::error!("cannot set the tick period to {tick} ms: {status}");
            }
        }
    }

    fn due(&mut self) -> (Vec<Timer>, Vec<Waker>) {
        let now = now_ms();
        // Host ticks are not exact: half a tick early counts as due.
        let horizon = now.saturating_add(self.tick_ms / 2);
        // Few timers: keep them in due order by insertion (no sort machinery).
        let mut due: Vec<(u64, Timer)> = Vec::new();
        let mut wakers = Vec::new();
        self.entries.retain_mut(|e| {
            if e.due_ms > horizon {
                return true;
            }
            if let Some(waker) = e.waker.take() {
                wakers.push(waker);
                return false;
            }
            let at = due
                .iter()
                .position(|d| *d > (e.due_ms, e.timer))
                .unwrap_or(due.len());
            due.insert(at, (e.due_ms, e.timer));
            match e.period_ms {
                Some(period) => {
                    while e.due_ms <= horizon {
                        e.due_ms = e.due_ms.saturating_add(period);
                    }
                    true
                }
                None => false,
            }
        });
        if !due.is_empty() || !wakers.is_empty() {
            self.retick();
        }
        (due.into_iter().map(|(_, t)| t).collect(), wakers)
    }
}
