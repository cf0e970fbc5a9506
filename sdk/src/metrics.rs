//! Metrics: counters, gauges and histograms, defined once and updated cheaply.
//!
//! # Labels
//!
//! Envoy stats have no labels of their own; tags are extracted from the name by
//! regexes (`stats_config.stats_tags`). weir encodes labels into the name with one
//! scheme, `<name>.<label>=<value>` per label in the order given (values have `.`,
//! `=` and whitespace replaced by `_`), and [`stats_tag_regex`] gives the matching
//! Envoy tag regex. With it configured, `auth_requests.result=denied` is exported
//! to Prometheus as `auth_requests{result="denied"}`.
//!
//! ```no_run
//! use weir::metrics::Counter;
//! let denied = Counter::with_labels("auth_requests", &[("result", "denied")])?;
//! denied.inc()?;
//! assert_eq!(weir::metrics::stats_tag_regex("result"), r"(\.result=([^.]*))");
//! # Ok::<(), weir::Error>(())
//! ```

use crate::host::{self, MetricKind};
use crate::{Error, Result};

/// The Envoy `stats_tags` regex that extracts `label` from names built by
/// [`metric_name`]: the first group is removed from the name, the second is the tag
/// value.
pub fn stats_tag_regex(label: &str) -> String {
    format!(r"(\.{label}=([^.]*))")
}

/// The stat name for `name` with `labels`, as described in the module docs.
///
/// # Errors
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if `name` is
/// empty or a label key is not made of ASCII letters, digits and `_`.
pub fn metric_name(name: &str, labels: &[(&str, &str)]) -> Result<String> {
    if name.is_empty() {
        return Err(Error::invalid("a metric name must not be empty"));
    }
    let mut full = name.to_owned();
    for (key, value) in labels {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::invalid(format!(
                "metric `{name}`: label key {key:?} must be ASCII letters, digits or '_'"
            )));
        }
        full.push('.');
        full.push_str(key);
        full.push('=');
        full.extend(value.chars().map(|c| match c {
            '.' | '=' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        }));
    }
    Ok(full)
}

fn define(kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Result<u32> {
    let name = metric_name(name, labels)?;
    host::define_metric(kind, &name).map_err(|s| Error::host("proxy_define_metric", "a metric", s))
}

fn err(call: &'static str) -> impl FnOnce(host::Status) -> Error {
    move |s| Error::host(call, "a metric", s)
}

/// A counter: only goes up. Define it once (in [`Plugin::start`](crate::Plugin::start)
/// or lazily) and keep the handle; updates are one host call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(u32);

impl Counter {
    /// Defines (or finds) the counter `name`.
    ///
    /// # Errors
    /// A host error, or an invalid name.
    pub fn new(name: &str) -> Result<Self> {
        Self::with_labels(name, &[])
    }

    /// Defines the counter `name` with labels encoded into the stat name.
    ///
    /// # Errors
    /// A host error, or an invalid name or label.
    pub fn with_labels(name: &str, labels: &[(&str, &str)]) -> Result<Self> {
        define(MetricKind::Counter, name, labels).map(Self)
    }

    /// Adds one.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn inc(&self) -> Result<()> {
        self.add(1)
    }

    /// Adds `n`. Adding 0 changes nothing and makes no host call (Envoy would
    /// refuse it with `BadArgument`).
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn add(&self, n: u64) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        host::increment_metric(self.0, i64::try_from(n).unwrap_or(i64::MAX))
            .map_err(err("proxy_increment_metric"))
    }

    /// The current value (summed over workers in Envoy).
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn value(&self) -> Result<u64> {
        host::get_metric(self.0).map_err(err("proxy_get_metric"))
    }
}

/// A gauge: a value that goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(u32);

impl Gauge {
    /// Defines (or finds) the gauge `name`.
    ///
    /// # Errors
    /// A host error, or an invalid name.
    pub fn new(name: &str) -> Result<Self> {
        Self::with_labels(name, &[])
    }

    /// Defines the gauge `name` with labels encoded into the stat name.
    ///
    /// # Errors
    /// A host error, or an invalid name or label.
    pub fn with_labels(name: &str, labels: &[(&str, &str)]) -> Result<Self> {
        define(MetricKind::Gauge, name, labels).map(Self)
    }

    /// Sets the value.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn set(&self, value: u64) -> Result<()> {
        host::record_metric(self.0, value).map_err(err("proxy_record_metric"))
    }

    /// Adds `delta` (negative to subtract).
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn add(&self, delta: i64) -> Result<()> {
        host::increment_metric(self.0, delta).map_err(err("proxy_increment_metric"))
    }

    /// The current value.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn value(&self) -> Result<u64> {
        host::get_metric(self.0).map_err(err("proxy_get_metric"))
    }
}

/// A histogram of recorded values (for example latencies in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(u32);

impl Histogram {
    /// Defines (or finds) the histogram `name`.
    ///
    /// # Errors
    /// A host error, or an invalid name.
    pub fn new(name: &str) -> Result<Self> {
        Self::with_labels(name, &[])
    }

    /// Defines the histogram `name` with labels encoded into the stat name.
    ///
    /// # Errors
    /// A host error, or an invalid name or label.
    pub fn with_labels(name: &str, labels: &[(&str, &str)]) -> Result<Self> {
        define(MetricKind::Histogram, name, labels).map(Self)
    }

    /// Records a value.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn record(&self, value: u64) -> Result<()> {
        host::record_metric(self.0, value).map_err(err("proxy_record_metric"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_encoded_for_the_tag_regex() {
        assert_eq!(
            metric_name("auth", &[("result", "denied"), ("reason", "bad.sig =x")]).expect("valid"),
            "auth.result=denied.reason=bad_sig__x"
        );
        assert!(metric_name("", &[]).is_err());
        assert!(metric_name("a", &[("bad key", "v")]).is_err());
        assert_eq!(stats_tag_regex("reason"), r"(\.reason=([^.]*))");
    }
}
