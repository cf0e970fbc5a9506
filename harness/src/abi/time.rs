//! `proxy_get_current_time_nanoseconds` and `proxy_set_tick_period_milliseconds`,
//! both on the harness's virtual clock.

use std::time::UNIX_EPOCH;

use wasmtime::Linker;

use super::{Status, memory, proxy_fn};
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    proxy_fn!(
        linker,
        "proxy_get_current_time_nanoseconds",
        |caller, ret: i32| {
            let nanos = caller
                .data()
                .now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            memory::status(memory::write_u64(&mut caller, ret, nanos))?
        }
    );
    // Envoy sets the period of the calling context's root and always answers OK.
    proxy_fn!(
        linker,
        "proxy_set_tick_period_milliseconds",
        |caller, period: i32| {
            let state = caller.data_mut();
            state.root_mut().tick_period_ms = period as u32;
            // The first tick comes one period from now; 0 stops the timer.
            state.root_mut().next_tick = (period != 0).then(|| {
                state.monotonic + std::time::Duration::from_millis(u64::from(period as u32))
            });
            Status::Ok
        }
    );
    Ok(())
}
