//! The WASI preview1 subset Envoy provides, under both `wasi_snapshot_preview1`
//! and `wasi_unstable`: stdout/stderr go to the plugin log, clocks read the
//! virtual clock, randomness is seeded, the environment comes from the VM config,
//! and the file system does not exist.

use std::time::UNIX_EPOCH;

use wasmtime::{Caller, Linker};

use super::memory::{self, Fault};
use crate::outcome::LogLevel;
use crate::state::HostState;

const SUCCESS: i32 = 0;
const BADF: i32 = 8;
const FAULT: i32 = 21;
const INVAL: i32 = 28;
const NOENT: i32 = 44;
const NOSYS: i32 = 52;
const NOTSUP: i32 = 58;

const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC: i32 = 1;
const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const RIGHT_FD_WRITE: u64 = 1 << 6;
/// Envoy refuses `random_get` for more than 64 KiB.
const MAX_RANDOM: u32 = 64 * 1024;

/// Maps a memory fault to `FAULT`; traps stay traps.
fn errno(result: Result<(), Fault>) -> wasmtime::Result<i32> {
    match result {
        Ok(()) => Ok(SUCCESS),
        Err(Fault::Status(_)) => Ok(FAULT),
        Err(Fault::Trap(e)) => Err(e),
    }
}

fn fd_write(
    caller: &mut Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    ret: i32,
) -> Result<i32, Fault> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(BADF),
    };
    let mut text = Vec::new();
    for i in 0..iovs_len as u32 {
        let iov = memory::read(caller, iovs.wrapping_add((i * 8) as i32), 8)?;
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        text.extend(memory::read(caller, ptr, len)?);
    }
    memory::write_u32(caller, ret, text.len() as u32)?;
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    let state = caller.data_mut();
    if level >= state.log_level {
        state.log(level, String::from_utf8_lossy(&text).into_owned());
    }
    Ok(SUCCESS)
}

/// The VM's environment: that of the plugin that created it (Envoy's VM key
/// leaves environment variables out, so a shared VM keeps the first one's).
fn environ(state: &HostState) -> Vec<Vec<u8>> {
    state
        .first_root()
        .meta
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}\0").into_bytes())
        .collect()
}

fn add_module(linker: &mut Linker<HostState>, module: &str) -> wasmtime::Result<()> {
    type C<'a> = Caller<'a, HostState>;
    linker.func_wrap(
        module,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, n: i32, ret: i32| match fd_write(
            &mut c, fd, iovs, n, ret,
        ) {
            Ok(errno) => Ok(errno),
            Err(Fault::Status(_)) => Ok(FAULT),
            Err(Fault::Trap(e)) => Err(e),
        },
    )?;
    linker.func_wrap(
        module,
        "fd_read",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32| NOSYS,
    )?;
    linker.func_wrap(
        module,
        "fd_seek",
        |mut c: C<'_>, fd: i32, _: i64, _: i32, _: i32| {
            c.data_mut().log(
                LogLevel::Error,
                format!("wasi fd_seek({fd}) is not supported"),
            );
            SUCCESS
        },
    )?;
    linker.func_wrap(module, "fd_close", |mut c: C<'_>, fd: i32| {
        c.data_mut().log(
            LogLevel::Error,
            format!("wasi fd_close({fd}) is not supported"),
        );
        SUCCESS
    })?;
    linker.func_wrap(
        module,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: i32, buf: i32| {
            if fd != 1 && fd != 2 {
                return Ok(BADF);
            }
            let mut stat = [0u8; 24];
            stat[0] = FILETYPE_CHARACTER_DEVICE;
            stat[8..16].copy_from_slice(&RIGHT_FD_WRITE.to_le_bytes());
            errno(memory::write(&mut c, buf, &stat))
        },
    )?;
    linker.func_wrap(module, "fd_fdstat_set_flags", |_: C<'_>, _: i32, _: i32| {
        NOSYS
    })?;
    linker.func_wrap(module, "fd_prestat_get", |_: C<'_>, _: i32, _: i32| BADF)?;
    linker.func_wrap(
        module,
        "fd_prestat_dir_name",
        |_: C<'_>, _: i32, _: i32, _: i32| NOSYS,
    )?;
    linker.func_wrap(
        module,
        "path_open",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| NOENT,
    )?;
    linker.func_wrap(module, "fd_filestat_get", |_: C<'_>, _: i32, _: i32| BADF)?;
    linker.func_wrap(
        module,
        "path_filestat_get",
        |_: C<'_>, _: i32, _: i32, _: i32, _: i32, _: i32| NOTSUP,
    )?;
    linker.func_wrap(
        module,
        "environ_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| {
            let env = environ(c.data());
            let total: usize = env.iter().map(Vec::len).sum();
            errno(
                memory::write_u32(&mut c, count, env.len() as u32)
                    .and_then(|()| memory::write_u32(&mut c, size, total as u32)),
            )
        },
    )?;
    linker.func_wrap(
        module,
        "environ_get",
        |mut c: C<'_>, ptrs: i32, buf: i32| {
            let env = environ(c.data());
            let result = (|| {
                let mut at = buf as u32;
                for (i, entry) in env.iter().enumerate() {
                    memory::write_u32(&mut c, ptrs.wrapping_add(4 * i as i32), at)?;
                    memory::write(&mut c, at as i32, entry)?;
                    at += entry.len() as u32;
                }
                Ok(())
            })();
            errno(result)
        },
    )?;
    linker.func_wrap(
        module,
        "args_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| {
            errno(
                memory::write_u32(&mut c, count, 0)
                    .and_then(|()| memory::write_u32(&mut c, size, 0)),
            )
        },
    )?;
    linker.func_wrap(module, "args_get", |_: C<'_>, _: i32, _: i32| SUCCESS)?;
    linker.func_wrap(
        module,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _: i64, ret: i32| {
            let nanos = match id {
                CLOCK_REALTIME => c
                    .data()
                    .now
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                CLOCK_MONOTONIC => c.data().monotonic.as_nanos() as u64,
                _ => return Ok(NOTSUP),
            };
            errno(memory::write_u64(&mut c, ret, nanos))
        },
    )?;
    linker.func_wrap(module, "clock_res_get", |mut c: C<'_>, _: i32, ret: i32| {
        errno(memory::write_u64(&mut c, ret, 1))
    })?;
    linker.func_wrap(module, "random_get", |mut c: C<'_>, buf: i32, len: i32| {
        if len as u32 > MAX_RANDOM {
            return Ok(INVAL);
        }
        let mut bytes = vec![0; len as u32 as usize];
        c.data_mut().fill_random(&mut bytes);
        errno(memory::write(&mut c, buf, &bytes))
    })?;
    linker.func_wrap(module, "sched_yield", |_: C<'_>| SUCCESS)?;
    linker.func_wrap(
        module,
        "poll_oneoff",
        |mut c: C<'_>, _: i32, _: i32, _: i32, nevents: i32| {
            errno(memory::write_u32(&mut c, nevents, 0))
        },
    )?;
    // Envoy only notes the exit and returns; the module usually traps right after
    // (AssemblyScript's abort handler runs `unreachable`). No plugin log line.
    linker.func_wrap(module, "proc_exit", |_: C<'_>, code: i32| {
        tracing::warn!("wasi proc_exit({code})");
    })?;
    Ok(())
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    add_module(linker, "wasi_snapshot_preview1")?;
    add_module(linker, "wasi_unstable")
}
