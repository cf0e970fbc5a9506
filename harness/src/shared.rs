//! State Envoy keeps process-wide rather than per VM: shared data (keyed by
//! `vm_id`) and stats. One [`Shared`] belongs to a chain (the emulated Envoy
//! process) and is seen by every plugin VM in it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::outcome::LogRecord;

/// The value of a plugin-defined metric.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricValue {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(u64),
    /// A histogram: every recorded sample, in order.
    Histogram(Vec<u64>),
}

/// `proxy_metric_type_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricType {
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => MetricType::Counter,
            1 => MetricType::Gauge,
            2 => MetricType::Histogram,
            _ => return None,
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct SharedData {
    entries: HashMap<(String, Vec<u8>), (Vec<u8>, u32)>,
    last_cas: u32,
}

/// Why a shared-data write failed.
pub(crate) struct CasMismatch;

impl SharedData {
    /// `(value, cas)` of `key` in `vm_id`'s namespace.
    pub(crate) fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.entries.get(&(vm_id.to_owned(), key.to_vec())).cloned()
    }

    /// Envoy's rules: `cas == 0` writes unconditionally; a non-zero `cas` must
    /// match an existing entry's (a missing key accepts any); every write gets a
    /// fresh CAS from one counter that starts at 1 and skips 0.
    pub(crate) fn set(
        &mut self,
        vm_id: &str,
        key: &[u8],
        value: Vec<u8>,
        cas: u32,
    ) -> Result<(), CasMismatch> {
        let slot = (vm_id.to_owned(), key.to_vec());
        if let Some((_, stored)) = self.entries.get(&slot)
            && cas != 0
            && cas != *stored
        {
            return Err(CasMismatch);
        }
        self.last_cas = self.last_cas.wrapping_add(1).max(1);
        self.entries.insert(slot, (value, self.last_cas));
        Ok(())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    values: BTreeMap<String, MetricValue>,
}

impl Stats {
    /// Creates the stat `name` of `kind` if it does not exist yet.
    pub(crate) fn define(&mut self, name: &str, kind: MetricType) {
        self.values.entry(name.to_owned()).or_insert(match kind {
            MetricType::Counter => MetricValue::Counter(0),
            MetricType::Gauge => MetricValue::Gauge(0),
            MetricType::Histogram => MetricValue::Histogram(Vec::new()),
        });
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut MetricValue> {
        self.values.get_mut(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&MetricValue> {
        self.values.get(name)
    }

    pub(crate) fn all(&self) -> BTreeMap<String, MetricValue> {
        self.values.clone()
    }
}

/// Process-wide state shared by a chain's VMs.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    data: Mutex<SharedData>,
    stats: Mutex<Stats>,
    /// Every VM's log lines, in the order they were logged.
    logs: Mutex<Vec<LogRecord>>,
    /// Traps, as Envoy reports them (`<plugin>: Function: <name> failed: ...`).
    traps: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Host functions never panic while holding these locks; a poisoned lock still
    // holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn data(&self) -> MutexGuard<'_, SharedData> {
        lock(&self.data)
    }

    pub(crate) fn stats(&self) -> MutexGuard<'_, Stats> {
        lock(&self.stats)
    }

    pub(crate) fn logs(&self) -> MutexGuard<'_, Vec<LogRecord>> {
        lock(&self.logs)
    }

    pub(crate) fn traps(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.traps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_follows_envoy() {
        let mut d = SharedData::default();
        assert!(d.set("vm", b"k", b"1".to_vec(), 0).is_ok());
        let (_, cas) = d.get("vm", b"k").expect("set");
        assert_eq!(cas, 1);
        assert!(
            d.set("vm", b"k", b"2".to_vec(), cas + 7).is_err(),
            "stale cas"
        );
        assert!(d.set("vm", b"k", b"2".to_vec(), cas).is_ok());
        assert_eq!(d.get("vm", b"k"), Some((b"2".to_vec(), 2)));
        assert!(
            d.set("vm", b"new", b"x".to_vec(), 99).is_ok(),
            "any cas on a missing key"
        );
        assert_eq!(d.get("other-vm", b"k"), None, "namespaced by vm_id");
    }
}
