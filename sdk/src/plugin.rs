//! Plugin-level behaviour (Envoy's root context): timers, callouts and queue
//! notifications that belong to no request.

use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::clock;
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
pub struct Timer(pub(crate) u32);

/// What a plugin callback can do besides its own work: timers and tasks.
///
/// Several logical timers share the one host tick a plugin has: the SDK sets
/// its period to the greatest common divisor of the active timers' intervals
/// (and of the sleeps of running tasks) and, on every tick, fires the timers
/// that are due (by the host clock), in due order.
#[derive(Debug, Default)]
pub struct PluginContext {
    /// The root context the plugin runs in.
    root: u32,
}

impl PluginContext {
    /// The context of the plugin in root context `root`.
    pub(crate) fn for_root(root: u32) -> Self {
        Self { root }
    }

    /// A timer that fires every `period` (at least 1 ms), first after one period.
    pub fn every(&mut self, period: Duration) -> Timer {
        let ms = duration_ms(period);
        clock::add(self.root, ms, Some(ms), None)
    }

    /// A timer that fires once, after `delay` (at least 1 ms).
    pub fn after(&mut self, delay: Duration) -> Timer {
        clock::add(self.root, duration_ms(delay), None, None)
    }

    /// Stops a timer. Cancelling a timer that already fired is not an error.
    pub fn cancel(&mut self, timer: Timer) {
        clock::cancel(self.root, timer);
    }

    /// How many timers are active.
    pub fn active_timers(&self) -> usize {
        clock::plugin_timers(self.root)
    }

    /// Runs `task` in the plugin, outside any request: a periodic refresh, a
    /// fetch at start-up. It starts once the current callback returns and runs
    /// whenever what it awaits is ready (callout answers, sleeps on the
    /// plugin's tick); an error it returns is logged (as `<Plugin>: task:
    /// <error>`). It ends with the plugin,
    /// or earlier with [`TaskHandle::abort`](crate::task::TaskHandle::abort).
    ///
    /// ```
    /// use std::rc::Rc;
    /// use std::time::Duration;
    /// use weir::{HttpCall, Plugin, PluginContext};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Config { refresh_secs: u64 }
    ///
    /// struct Keys;
    ///
    /// impl Plugin for Keys {
    ///     type Config = Config;
    ///
    ///     fn start(config: &Rc<Config>, ctx: &mut PluginContext) -> weir::Result<Self> {
    ///         let every = Duration::from_secs(config.refresh_secs);
    ///         ctx.spawn(async move {
    ///             loop {
    ///                 match HttpCall::get("keys", "/jwks.json").await {
    ///                     Ok(answer) => {
    ///                         weir::shared_data::set("jwks", answer.body(), None)?;
    ///                     }
    ///                     Err(e) => log::warn!("key refresh failed: {e}"),
    ///                 }
    ///                 weir::task::sleep(every).await;
    ///             }
    ///         });
    ///         Ok(Keys)
    ///     }
    /// }
    /// ```
    pub fn spawn(
        &mut self,
        task: impl Future<Output = Result<()>> + 'static,
    ) -> crate::task::TaskHandle {
        crate::runtime::spawn_root(self.root, task)
    }

    /// Removes and returns the timers due now; periodic ones are re-armed. Sleeps
    /// that are due wake their tasks.
    pub(crate) fn due(&mut self) -> Vec<Timer> {
        clock::due(self.root)
    }

    /// The root context id.
    pub(crate) fn root(&self) -> u32 {
        self.root
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
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
