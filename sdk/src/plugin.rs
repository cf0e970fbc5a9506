//! Plugin-level behaviour (Envoy's root context): timers, callouts and queue
//! notifications that belong to no request.

use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::host;
use crate::{
    CalloutResponse, CalloutToken, Error, GrpcResponse, GrpcStream, GrpcStreamEvent, GrpcToken,
    Result,
};

/// What a plugin does outside requests: one value per plugin in each worker's VM,
/// created once the configuration is parsed.
///
/// Register it next to the filter with
/// `weir::export_http_filter!(MyFilter, plugin = MyPlugin)`; its `Config` must be
/// the filter's. A plugin that only needs a periodic job looks like this:
///
/// ```
/// use std::rc::Rc;
/// use std::time::Duration;
/// use weir::{HttpCall, Plugin, PluginContext, Timer};
///
/// #[derive(serde::Deserialize)]
/// struct Config { refresh_secs: u64 }
///
/// struct Refresher { timer: Timer }
///
/// impl Plugin for Refresher {
///     type Config = Config;
///
///     fn start(config: &Rc<Config>, ctx: &mut PluginContext) -> weir::Result<Self> {
///         let timer = ctx.every(Duration::from_secs(config.refresh_secs));
///         Ok(Refresher { timer })
///     }
///
///     fn on_timer(&mut self, timer: Timer, _ctx: &mut PluginContext) -> weir::Result<()> {
///         if timer == self.timer {
///             HttpCall::get("keys", "/jwks.json").send()?;
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Plugin: Sized + 'static {
    /// The plugin configuration (the same type as the filter's).
    type Config: DeserializeOwned + 'static;

    /// Whether the plugin has plugin-level callbacks at all; `false` only for
    /// [`NoPlugin`], so that filters without a plugin carry no timer code.
    #[doc(hidden)]
    const ACTIVE: bool = true;

    /// Called once the configuration is parsed. An error rejects the plugin: Envoy
    /// refuses the configuration and logs the error.
    ///
    /// # Errors
    /// Any error rejects the plugin.
    fn start(config: &Rc<Self::Config>, ctx: &mut PluginContext) -> Result<Self>;

    /// A timer set with [`PluginContext::every`] or [`PluginContext::after`] is due.
    ///
    /// # Errors
    /// Errors are logged.
    fn on_timer(&mut self, timer: Timer, ctx: &mut PluginContext) -> Result<()> {
        let _ = (timer, ctx);
        Ok(())
    }

    /// The answer to a callout the plugin sent (outside any request).
    ///
    /// # Errors
    /// Errors are logged.
    fn on_callout_response(
        &mut self,
        token: CalloutToken,
        response: &CalloutResponse,
        ctx: &mut PluginContext,
    ) -> Result<()> {
        let _ = (token, response, ctx);
        Ok(())
    }

    /// The answer to a gRPC call the plugin sent.
    ///
    /// # Errors
    /// Errors are logged.
    fn on_grpc_response(
        &mut self,
        token: GrpcToken,
        response: &GrpcResponse,
        ctx: &mut PluginContext,
    ) -> Result<()> {
        let _ = (token, response, ctx);
        Ok(())
    }

    /// Something arrived on a gRPC stream the plugin opened (see
    /// [`HttpFilter::on_grpc_stream`](crate::HttpFilter::on_grpc_stream)).
    ///
    /// # Errors
    /// Errors are logged.
    fn on_grpc_stream(
        &mut self,
        stream: GrpcStream,
        event: &GrpcStreamEvent,
        ctx: &mut PluginContext,
    ) -> Result<()> {
        let _ = (stream, event, ctx);
        Ok(())
    }

    /// A shared queue this plugin registered has items
    /// ([`SharedQueue::register`](crate::SharedQueue::register)).
    ///
    /// # Errors
    /// Errors are logged.
    fn on_queue_ready(&mut self, queue: crate::SharedQueue, ctx: &mut PluginContext) -> Result<()> {
        let _ = (queue, ctx);
        Ok(())
    }
}

/// The plugin of a filter that has no plugin-level behaviour.
#[derive(Debug)]
pub struct NoPlugin<C>(PhantomData<C>);

impl<C: DeserializeOwned + 'static> Plugin for NoPlugin<C> {
    type Config = C;
    const ACTIVE: bool = false;

    fn start(_: &Rc<C>, _: &mut PluginContext) -> Result<Self> {
        Ok(Self(PhantomData))
    }
}

/// A logical timer, from [`PluginContext::every`] or [`PluginContext::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer(u32);

#[derive(Debug)]
struct Entry {
    timer: Timer,
    due_ms: u64,
    period_ms: Option<u64>,
}

/// Several logical timers on the one host tick a plugin has.
///
/// Envoy gives each plugin a single periodic tick. The SDK sets its period to the
/// greatest common divisor of the active timers' intervals and, on every tick,
/// fires the timers that are due (by the host clock), in due order.
#[derive(Debug, Default)]
pub struct PluginContext {
    entries: Vec<Entry>,
    next: u32,
    tick_ms: u64,
}

fn now_ms() -> u64 {
    host::current_time_nanos().unwrap_or(0) / 1_000_000
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl PluginContext {
    /// A timer that fires every `period` (at least 1 ms), first after one period.
    pub fn every(&mut self, period: Duration) -> Timer {
        let ms = duration_ms(period);
        self.add(ms, Some(ms))
    }

    /// A timer that fires once, after `delay` (at least 1 ms).
    pub fn after(&mut self, delay: Duration) -> Timer {
        self.add(duration_ms(delay), None)
    }

    /// Stops a timer. Cancelling a timer that already fired is not an error.
    pub fn cancel(&mut self, timer: Timer) {
        self.entries.retain(|e| e.timer != timer);
        self.retick();
    }

    /// How many timers are active.
    pub fn active_timers(&self) -> usize {
        self.entries.len()
    }

    fn add(&mut self, delay_ms: u64, period_ms: Option<u64>) -> Timer {
        self.next += 1;
        let timer = Timer(self.next);
        self.entries.push(Entry {
            timer,
            due_ms: now_ms().saturating_add(delay_ms),
            period_ms,
        });
        self.retick();
        timer
    }

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

    /// Removes and returns the timers due now; periodic ones are re-armed.
    pub(crate) fn due(&mut self) -> Vec<Timer> {
        let now = now_ms();
        // Host ticks are not exact: half a tick early counts as due.
        let horizon = now.saturating_add(self.tick_ms / 2);
        // Few timers: keep them in due order by insertion (no sort machinery).
        let mut due: Vec<(u64, Timer)> = Vec::new();
        self.entries.retain_mut(|e| {
            if e.due_ms > horizon {
                return true;
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
        if !due.is_empty() {
            self.retick();
        }
        due.into_iter().map(|(_, t)| t).collect()
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Runs a plugin callback; errors are logged (there is no request to answer).
pub(crate) fn log_error<P>(what: &str, result: Result<()>) {
    if let Err(e) = result {
        log_plugin_error::<P>(what, &e);
    }
}

#[cold]
fn log_plugin_error<P>(what: &str, e: &Error) {
    log::error!("{}: {what}: {e}", crate::export::type_name::<P>());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MockHost;

    #[test]
    fn timers_share_one_tick_and_fire_in_order() {
        let host = MockHost::new();
        let mut ctx = PluginContext::default();
        let a = ctx.every(Duration::from_millis(300));
        let b = ctx.every(Duration::from_millis(200));
        assert_eq!(host.tick_period(), Some(Duration::from_millis(100)));
        host.advance(Duration::from_millis(200));
        assert_eq!(ctx.due(), vec![b]);
        host.advance(Duration::from_millis(100));
        assert_eq!(ctx.due(), vec![a]);
        host.advance(Duration::from_millis(300));
        assert_eq!(ctx.due(), vec![b, a]);
        ctx.cancel(b);
        assert_eq!(host.tick_period(), Some(Duration::from_millis(300)));
        let once = ctx.after(Duration::from_millis(50));
        host.advance(Duration::from_millis(50));
        assert_eq!(ctx.due(), vec![once]);
        assert_eq!(ctx.active_timers(), 1);
        ctx.cancel(a);
        assert_eq!(host.tick_period(), None);
    }
}
