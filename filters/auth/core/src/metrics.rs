//! The filter's counters, defined once per VM when the plugin starts.
//!
//! Names follow weir's label scheme (`weir::metrics`):
//! `<prefix>_requests.result=allowed.reason=jwt`,
//! `<prefix>_requests.result=denied.reason=expired`,
//! `<prefix>_jwks_fetches.result=ok|failed`.

use weir::metrics::Counter;

use crate::reason::{Allowed, Reason};

/// Counter handles.
#[derive(Debug)]
pub(crate) struct Metrics {
    allowed: Vec<Counter>,
    denied: Vec<Counter>,
    fetch_ok: Counter,
    fetch_failed: Counter,
}

impl Metrics {
    /// Defines every counter.
    ///
    /// # Errors
    /// A host error.
    pub(crate) fn define(prefix: &str) -> weir::Result<Self> {
        let requests = format!("{prefix}_requests");
        let allowed = Allowed::ALL
            .iter()
            .map(|a| {
                Counter::with_labels(&requests, &[("result", "allowed"), ("reason", a.label())])
            })
            .collect::<weir::Result<_>>()?;
        let denied = Reason::ALL
            .iter()
            .map(|r| {
                Counter::with_labels(&requests, &[("result", "denied"), ("reason", r.label())])
            })
            .collect::<weir::Result<_>>()?;
        let fetches = format!("{prefix}_jwks_fetches");
        Ok(Self {
            allowed,
            denied,
            fetch_ok: Counter::with_labels(&fetches, &[("result", "ok")])?,
            fetch_failed: Counter::with_labels(&fetches, &[("result", "failed")])?,
        })
    }

    fn bump(counter: Option<&Counter>) {
        if let Some(c) = counter
            && let Err(e) = c.inc()
        {
            log::debug!("cannot update a metric: {e}");
        }
    }

    pub(crate) fn allowed(&self, how: Allowed) {
        let at = Allowed::ALL.iter().position(|a| *a == how);
        Self::bump(at.and_then(|i| self.allowed.get(i)));
    }

    pub(crate) fn denied(&self, reason: Reason) {
        let at = Reason::ALL.iter().position(|r| *r == reason);
        Self::bump(at.and_then(|i| self.denied.get(i)));
    }

    pub(crate) fn fetched(&self, ok: bool) {
        Self::bump(Some(if ok {
            &self.fetch_ok
        } else {
            &self.fetch_failed
        }));
    }
}
