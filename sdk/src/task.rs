//! async/await for filters: tasks that await callouts, gRPC calls and timers.
//!
//! A stream's callback returns [`Flow::wait`] with a future: the stream is held
//! (as with [`Flow::Pause`]) while the future runs, and its result decides
//! what happens next, as a callback's would: [`Flow::Continue`] resumes the
//! stream, [`Flow::Respond`] answers it, an error becomes a local reply (see
//! [`IntoLocalReply`](crate::IntoLocalReply)). A plugin starts tasks outside any
//! request with [`PluginContext::spawn`](crate::PluginContext::spawn).
//!
//! Inside a task, [`HttpCall`](crate::HttpCall) and [`GrpcCall`](crate::GrpcCall)
//! are awaited directly, [`sleep`] and [`timeout`] run on the plugin's tick, and
//! [`join`], [`try_join`] and [`select`] (from `futures-util`) keep several in
//! flight. Futures are lazy: a call is sent when its future is first polled.
//! `select` takes futures that are `Unpin`: the futures of calls, [`sleep`] and
//! [`timeout`] are; pin an `async` block first (`std::pin::pin!`).
//!
//! ```
//! use std::rc::Rc;
//! use std::time::Duration;
//! use weir::task::{timeout, try_join};
//! use weir::{Flow, HttpCall, HttpFilter, LocalReply, RequestHeaders, Result};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { cluster: String }
//!
//! struct Authorize(Rc<Config>);
//!
//! impl HttpFilter for Authorize {
//!     type Config = Config;
//!
//!     fn new(config: Rc<Config>) -> Self {
//!         Authorize(config)
//!     }
//!
//!     fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
//!         let Some(user) = req.get("x-user")? else {
//!             return Ok(Flow::Respond(LocalReply::new(401)));
//!         };
//!         let cluster = self.0.cluster.clone();
//!         // The headers stay readable and writable while the task holds them.
//!         let mut req = req.for_task();
//!         Ok(Flow::wait(async move {
//!             // Two callouts in flight at once, both within 200 ms.
//!             let check = HttpCall::get(&cluster, "/check").header("x-user", &user);
//!             let roles = HttpCall::get(&cluster, "/roles").header("x-user", &user);
//!             let (check, roles) =
//!                 timeout(Duration::from_millis(200), try_join(check.into_future(), roles.into_future()))
//!                     .await??;
//!             if check.status() != 200 {
//!                 return Ok(Flow::Respond(LocalReply::new(403).body("denied")));
//!             }
//!             req.set("x-roles", roles.body())?;
//!             Ok(Flow::Continue)
//!         }))
//!     }
//! }
//!
//! weir::export_http_filter!(Authorize);
//! # fn main() {}
//! ```
//!
//! # How it runs
//!
//! The executor is single-threaded and polls only tasks that were woken: when
//! a task starts (its first poll runs inside the callback: a task that finishes
//! without waiting answers the callback directly), when a callout or gRPC call
//! it awaits is answered, and on the plugin's tick for its sleeps and timeouts
//! (the SDK sets the tick as it does for [`PluginContext`](crate::PluginContext)
//! timers). Each task runs with its own stream as Envoy's effective context,
//! whichever callback woke it, so header changes, local replies and the resume
//! apply to its stream.
//!
//! A task runs in the VM of one worker thread, like the rest of the filter:
//! what it shares with other contexts lives in `Rc`s, shared data or queues. A
//! task should not wake a task of another stream (through a channel of its
//! own): the callouts the woken task sends then belong to the waking stream's
//! callback, and fail with [`ErrorKind::CalloutFailed`] if that stream ends
//! first.
//!
//! A stream that ends drops its tasks: callouts they were waiting for are
//! forgotten (their answers are ignored; gRPC calls are cancelled). A task
//! started from a body or trailers callback holds that direction: later body
//! callbacks of that direction still run, and a [`Flow::Continue`] they return
//! waits until the task finishes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::runtime;
use crate::{Error, ErrorKind, Flow, Result};

pub use futures_util::future::{
    Either, join, join_all, join3, join4, select, select_all, try_join, try_join_all, try_join3,
    try_join4,
};

/// A stream's task, made by [`Flow::wait`].
pub struct Task(Box<Pin<Box<dyn Future<Output = Result<Flow>>>>>);

impl Task {
    pub(crate) fn new(future: impl Future<Output = Result<Flow>> + 'static) -> Self {
        runtime::install();
        Self(Box::new(Box::pin(future)))
    }

    pub(crate) fn into_future(self) -> Pin<Box<dyn Future<Output = Result<Flow>>>> {
        *self.0
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Task")
    }
}

/// A plugin task started with [`PluginContext::spawn`](crate::PluginContext::spawn).
/// Dropping the handle leaves the task running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskHandle {
    key: (u32, u64),
}

impl TaskHandle {
    pub(crate) fn new(key: (u32, u64)) -> Self {
        Self { key }
    }

    /// Stops the task: it is dropped with whatever it awaits. Aborting a task
    /// that finished is not an error; a task cannot abort itself (it returns).
    pub fn abort(&self) {
        runtime::abort(self.key);
    }

    /// Whether the task is over (finished, aborted, or its plugin is gone).
    pub fn is_finished(&self) -> bool {
        runtime::is_finished(self.key)
    }
}

/// Waits until `duration` has passed on the host clock, at the resolution of the
/// plugin's tick. A zero duration is ready at once.
///
/// The sleep ends on the plugin's first tick at its deadline; host ticks are
/// not exact, so as for plugin timers, a tick up to half a tick period early
/// counts.
///
/// Only tasks run by weir can sleep: polled elsewhere, it logs an error and is
/// ready at once.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        duration,
        armed: None,
    }
}

/// The future of [`sleep`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    duration: Duration,
    /// The root context and the timer, once polled.
    armed: Option<(u32, crate::Timer)>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        match this.armed {
            Some((root, timer)) => {
                if crate::clock::pending(root, timer, cx.waker()) {
                    Poll::Pending
                } else {
                    this.armed = None;
                    this.duration = Duration::ZERO;
                    Poll::Ready(())
                }
            }
            None if this.duration.is_zero() => Poll::Ready(()),
            None => {
                let Some(root) = runtime::current_root() else {
                    log::error!("weir::task::sleep polled outside a weir task: not waiting");
                    this.duration = Duration::ZERO;
                    return Poll::Ready(());
                };
                let ms = crate::plugin::duration_ms(this.duration);
                let timer = crate::clock::add(root, ms, None, Some(cx.waker().clone()));
                this.armed = Some((root, timer));
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((root, timer)) = self.armed.take() {
            crate::clock::cancel(root, timer);
        }
    }
}

/// Runs `future` for at most `duration`: `Err(Elapsed)` if the time ran out
/// first (the future is then dropped, and with it any callout it awaits).
/// `Elapsed` converts into [`Error`], so `timeout(d, call).await??` works.
pub fn timeout<F: IntoFuture>(duration: Duration, future: F) -> Timeout<F::IntoFuture> {
    Timeout {
        future: Box::pin(future.into_future()),
        sleep: sleep(duration),
        duration,
    }
}

/// The future of [`timeout`].
#[must_use = "futures do nothing unless awaited"]
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    sleep: Sleep,
    duration: Duration,
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = std::result::Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(value) = this.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(value));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(this.duration))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A [`timeout`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(Duration);

impl Elapsed {
    /// The timeout that ran out.
    pub fn duration(&self) -> Duration {
        self.0
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {}ms", crate::error::whole_ms(&self.0))
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for Error {
    #[cold]
    fn from(e: Elapsed) -> Self {
        Error::from(ErrorKind::TimedOut { after: e.0 })
    }
}
