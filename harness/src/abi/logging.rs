//! `proxy_log` and `proxy_get_log_level`.

use wasmtime::Linker;

use super::memory::{self, Fault};
use super::{AbiVersion, Status, proxy_fn};
use crate::outcome::LogLevel;
use crate::state::HostState;

pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    abi: AbiVersion,
) -> wasmtime::Result<()> {
    // proxy_log is the one proxy_* call allowed during module initialization.
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: wasmtime::Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            caller.data_mut().host_calls += 1;
            let Some(level) = LogLevel::from_raw(level as u32) else {
                return Ok(Status::BadArgument as i32);
            };
            let logged = memory::with_one(&mut caller, ptr, len, |message, state| {
                if level >= state.log_level {
                    state.log(level, String::from_utf8_lossy(message).into_owned());
                }
            });
            match logged {
                Ok(()) => Ok(Status::Ok as i32),
                Err(Fault::Status(s)) => Ok(s as i32),
                Err(Fault::Trap(e)) => Err(e),
            }
        },
    )?;
    if abi == AbiVersion::V0_2_1 {
        proxy_fn!(linker, "proxy_get_log_level", |caller, ret: i32| {
            let level = caller.data().log_level as u32;
            memory::status(memory::write_u32(&mut caller, ret, level))?
        });
    }
    Ok(())
}
