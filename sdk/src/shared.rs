//! Shared data (a process-wide key-value store with compare-and-swap, shared by
//! every VM with the same `vm_id`) and shared queues.

use crate::host::{self, Status};
use crate::{Error, Result};

/// The version of a shared-data value, for compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cas(u32);

/// A value read from shared data with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version: pass it to [`shared_data::set`](crate::shared_data::set) to
    /// write only if nobody wrote in between.
    pub cas: Cas,
}

/// Shared data: a key-value store shared by every VM (every worker thread) with the
/// same `vm_id`, for caches such as fetched keys.
///
/// # Examples
/// ```no_run
/// use weir::shared_data;
/// // Count requests across workers, retrying when another worker wrote first.
/// let total: u64 = shared_data::update_json("requests", 8, |n: Option<u64>| n.unwrap_or(0) + 1)?;
/// # Ok::<(), weir::Error>(())
/// ```
pub mod shared_data {
    use super::*;

    /// The value of `key` and its version, or `None` if absent.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn get(key: &str) -> Result<Option<Versioned<Vec<u8>>>> {
        match host::get_shared_data(key) {
            Ok((Some(value), cas)) => Ok(Some(Versioned {
                value,
                cas: Cas(cas),
            })),
            Ok((None, _)) => Ok(None),
            Err(status) => Err(Error::host("proxy_get_shared_data", "shared data", status)),
        }
    }

    /// Writes `value`. With `Some(cas)`, only if the value still has that version:
    /// returns `false` (nothing written) if another writer got there first.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn set(key: &str, value: &[u8], cas: Option<Cas>) -> Result<bool> {
        match host::set_shared_data(key, value, cas.map_or(0, |c| c.0)) {
            Ok(()) => Ok(true),
            Err(Status::CAS_MISMATCH) => Ok(false),
            Err(status) => Err(Error::host("proxy_set_shared_data", "shared data", status)),
        }
    }

    /// Reads `key` as JSON.
    ///
    /// # Errors
    /// As for [`get`], or [`ErrorKind::Json`](crate::ErrorKind::Json).
    #[cfg(feature = "json")]
    pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<Versioned<T>>> {
        let Some(Versioned { value, cas }) = get(key)? else {
            return Ok(None);
        };
        let value = crate::json_path::from_slice(&value).map_err(|(path, message)| {
            Error::from(crate::ErrorKind::Json {
                target: "a shared-data value",
                path,
                message,
            })
        })?;
        Ok(Some(Versioned { value, cas }))
    }

    /// Writes `value` as JSON (see [`set`]).
    ///
    /// # Errors
    /// As for [`set`], or [`ErrorKind::Json`](crate::ErrorKind::Json).
    #[cfg(feature = "json")]
    pub fn set_json<T: serde::Serialize>(key: &str, value: &T, cas: Option<Cas>) -> Result<bool> {
        let bytes = serde_json::to_vec(value).map_err(|e| {
            Error::from(crate::ErrorKind::Json {
                target: "a shared-data value",
                path: ".".to_owned(),
                message: e.to_string(),
            })
        })?;
        set(key, &bytes, cas)
    }

    /// Read-modify-write with compare-and-swap: applies `f` to the current value
    /// (`None` if absent) and writes the result, retrying up to `attempts` times
    /// when another writer got there first. Returns the value written.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if every
    /// attempt lost the race, or as for [`get_json`] and [`set_json`].
    #[cfg(feature = "json")]
    pub fn update_json<T, F>(key: &str, attempts: u32, mut f: F) -> Result<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        for _ in 0..attempts.max(1) {
            let current = get_json::<T>(key)?;
            let cas = current.as_ref().map(|v| v.cas);
            let next = f(current.map(|v| v.value));
            if set_json(key, &next, cas)? {
                return Ok(next);
            }
        }
        Err(Error::invalid(format!(
            "shared data `{key}`: gave up after {attempts} conflicting writes"
        )))
    }
}

/// A shared queue: a FIFO of byte strings between VMs (for example workers
/// handing work to one VM). The registering plugin is told about new items in
/// [`Plugin::on_queue_ready`](crate::Plugin::on_queue_ready); in Envoy only the
/// most recent registrant is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SharedQueue(pub(crate) u32);

impl SharedQueue {
    /// Creates (or opens) the queue `name` of this VM and makes this plugin the one
    /// notified of new items.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn register(name: &str) -> Result<Self> {
        host::register_queue(name)
            .map(Self)
            .map_err(|s| Error::host("proxy_register_shared_queue", "a shared queue", s))
    }

    /// The existing queue `name` of the VM `vm_id` (`""` for this VM's), or `None`.
    ///
    /// # Errors
    /// A host error if the host refuses the call.
    pub fn resolve(vm_id: &str, name: &str) -> Result<Option<Self>> {
        match host::resolve_queue(vm_id, name) {
            Ok(id) => Ok(Some(Self(id))),
            Err(Status::NOT_FOUND) => Ok(None),
            Err(s) => Err(Error::host(
                "proxy_resolve_shared_queue",
                "a shared queue",
                s,
            )),
        }
    }

    /// Appends an item.
    ///
    /// # Errors
    /// A host error, for example if the queue no longer exists.
    pub fn enqueue(&self, item: &[u8]) -> Result<()> {
        host::enqueue(self.0, item)
            .map_err(|s| Error::host("proxy_enqueue_shared_queue", "a shared queue", s))
    }

    /// Takes the oldest item, or `None` if the queue is empty.
    ///
    /// # Errors
    /// A host error, for example if the queue no longer exists.
    pub fn dequeue(&self) -> Result<Option<Vec<u8>>> {
        host::dequeue(self.0)
            .map_err(|s| Error::host("proxy_dequeue_shared_queue", "a shared queue", s))
    }
}
