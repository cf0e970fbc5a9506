//! The host's clock, log level and foreign functions.

use std::time::{Duration, SystemTime};

use crate::host;
use crate::{Error, Result};

/// The host's current time (Envoy's clock; the harness's virtual clock in tests).
///
/// # Errors
/// A host error if the host refuses the call.
pub fn now() -> Result<SystemTime> {
    host::current_time_nanos()
        .map(|ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns))
        .map_err(|s| Error::host("proxy_get_current_time_nanoseconds", "the clock", s))
}

/// The host's log level for this plugin, to skip building expensive log lines.
///
/// # Errors
/// A host error if the host refuses the call.
pub fn log_level() -> Result<log::Level> {
    host::log_level()
        .map(|level| match level {
            0 => log::Level::Trace,
            1 => log::Level::Debug,
            2 => log::Level::Info,
            3 => log::Level::Warn,
            // 4 error, 5 critical
            _ => log::Level::Error,
        })
        .map_err(|s| Error::host("proxy_get_log_level", "the log level", s))
}

/// Calls the host's foreign function `name` (Envoy offers, for example,
/// `compress`, `uncompress`, `declare_property`, `verify_signature`).
///
/// # Errors
/// A host error: `NotFound` for an unknown function, or what the function reports.
pub fn call_foreign(name: &str, argument: &[u8]) -> Result<Vec<u8>> {
    host::call_foreign(name, argument)
        .map_err(|s| Error::host("proxy_call_foreign_function", "a foreign function", s))
}
