//! State Envoy keeps process-wide rather than per VM: shared data and shared
//! queues (keyed by `vm_id`) and stats. One [`Shared`] belongs to a chain (the emulated Envoy
//! process) and is seen by every plugin VM in it.

use std::collections::{BTreeMap, HashMap, VecDeque};
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

/// Where a queue's `on_queue_ready` goes: a VM (by [`Shared::next_vm_key`]) and
/// the root context that registered the queue last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QueueTarget {
    pub(crate) vm: u64,
    pub(crate) root_context: u32,
}

#[derive(Debug)]
struct Queue {
    target: QueueTarget,
    items: VecDeque<Vec<u8>>,
}

/// A notification Envoy posts to the target's thread when an item is enqueued;
/// it runs after the current event, not inside the enqueueing call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct QueueReady {
    pub(crate) target: QueueTarget,
    pub(crate) token: u32,
}

/// Shared queues, as Envoy's host keeps them: process-wide, keyed by
/// `(vm_id, name)`, with non-zero tokens from one counter.
#[derive(Debug, Default)]
pub(crate) struct SharedQueues {
    tokens: HashMap<(String, Vec<u8>), u32>,
    queues: HashMap<u32, Queue>,
    last_token: u32,
    posted: VecDeque<QueueReady>,
}

/// Why a queue call failed: the token names no queue, or the queue is empty.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum QueueError {
    NotFound,
    Empty,
}

impl SharedQueues {
    /// Creates or opens the queue `name` of `vm_id`; either way, `target` becomes
    /// the one `on_queue_ready` goes to (the most recent registrant wins).
    pub(crate) fn register(&mut self, vm_id: &str, name: &[u8], target: QueueTarget) -> u32 {
        let key = (vm_id.to_owned(), name.to_vec());
        let token = match self.tokens.get(&key) {
            Some(&token) => token,
            None => {
                self.last_token = self.last_token.wrapping_add(1).max(1);
                self.tokens.insert(key, self.last_token);
                self.last_token
            }
        };
        self.queues
            .entry(token)
            .and_modify(|q| q.target = target)
            .or_insert_with(|| Queue {
                target,
                items: VecDeque::new(),
            });
        token
    }

    /// The token of an existing queue.
    pub(crate) fn resolve(&self, vm_id: &str, name: &[u8]) -> Option<u32> {
        self.tokens.get(&(vm_id.to_owned(), name.to_vec())).copied()
    }

    /// Appends `item` and posts `on_queue_ready` to the queue's target.
    pub(crate) fn enqueue(&mut self, token: u32, item: Vec<u8>) -> Result<(), QueueError> {
        let queue = self.queues.get_mut(&token).ok_or(QueueError::NotFound)?;
        queue.items.push_back(item);
        self.posted.push_back(QueueReady {
            target: queue.target,
            token,
        });
        Ok(())
    }

    /// Pops the oldest item.
    pub(crate) fn dequeue(&mut self, token: u32) -> Result<Vec<u8>, QueueError> {
        let queue = self.queues.get_mut(&token).ok_or(QueueError::NotFound)?;
        queue.items.pop_front().ok_or(QueueError::Empty)
    }

    /// The oldest notification not delivered yet.
    pub(crate) fn next_posted(&mut self) -> Option<QueueReady> {
        self.posted.pop_front()
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
    queues: Mutex<SharedQueues>,
    stats: Mutex<Stats>,
    /// The last key given to a VM (see [`QueueTarget`]).
    last_vm_key: std::sync::atomic::AtomicU64,
    /// Every VM's log lines, in the order they were logged.
    logs: Mutex<Vec<LogRecord>>,
    /// Traps, as Envoy reports them (`<plugin>: Function: <name> failed: ...`).
    traps: Mutex<Vec<String>>,
    /// The node and the xDS metadata filters read (`xds.node`,
    /// `xds.*_metadata`); fixed when the chain is built.
    xds: crate::xds::Bootstrap,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Host functions never panic while holding these locks; a poisoned lock still
    // holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// The state of a chain whose bootstrap says `xds`.
    pub(crate) fn new(xds: crate::xds::Bootstrap) -> Self {
        Self {
            xds,
            ..Self::default()
        }
    }

    /// The node and the xDS metadata.
    pub(crate) fn xds(&self) -> &crate::xds::Bootstrap {
        &self.xds
    }

    pub(crate) fn data(&self) -> MutexGuard<'_, SharedData> {
        lock(&self.data)
    }

    pub(crate) fn queues(&self) -> MutexGuard<'_, SharedQueues> {
        lock(&self.queues)
    }

    /// A key naming one VM of this process.
    pub(crate) fn next_vm_key(&self) -> u64 {
        self.last_vm_key
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
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

    #[test]
    fn queues_follow_envoy() {
        let first = QueueTarget {
            vm: 1,
            root_context: 1,
        };
        let second = QueueTarget {
            vm: 2,
            root_context: 1,
        };
        let mut q = SharedQueues::default();
        let token = q.register("vm", b"q", first);
        assert_eq!(token, 1, "tokens start at 1");
        assert_eq!(q.resolve("vm", b"q"), Some(token));
        assert_eq!(q.resolve("other", b"q"), None, "namespaced by vm_id");
        assert_eq!(q.dequeue(token), Err(QueueError::Empty));
        assert_eq!(q.dequeue(token + 1), Err(QueueError::NotFound));
        assert!(q.enqueue(token, b"a".to_vec()).is_ok());
        assert_eq!(
            q.register("vm", b"q", second),
            token,
            "re-registering opens"
        );
        assert!(q.enqueue(token, b"b".to_vec()).is_ok());
        let targets: Vec<QueueTarget> = std::iter::from_fn(|| q.next_posted())
            .map(|p| p.target)
            .collect();
        assert_eq!(
            targets,
            [first, second],
            "the latest registrant is notified"
        );
        assert_eq!(
            q.dequeue(token),
            Ok(b"a".to_vec()),
            "items survive re-registration"
        );
        assert_eq!(q.dequeue(token), Ok(b"b".to_vec()));
        assert_eq!(q.register("vm", b"other", first), 2);
    }
}
