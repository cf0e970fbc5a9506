//! Remote key sets: fetched with an HTTP callout, shared by every VM through
//! shared data, and re-read by each VM when their version changes.
//!
//! Two shared-data entries per key-set source (cluster, authority, path):
//! `…|keys`, the last fetched JWKS document, and `…|state`, a small JSON record
//! (version, when it was fetched, when a fetch was last started, until when one
//! is in flight, failures since the last success). A VM starts a fetch only after
//! winning a compare-and-swap on the state, so workers do not fetch the same set
//! at once, and request-driven fetches are rate-limited across all of them.

use std::rc::Rc;

use serde::{Deserialize, Serialize};
use weir::{CalloutResponse, HttpCall, shared_data};

use crate::config::{RemoteJwks, Runtime};
use crate::jwk::{self, Key, Strictness};

/// The largest key-set document accepted.
pub(crate) const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The key set a VM last read from shared data.
#[derive(Debug)]
pub(crate) struct Cached {
    version: u64,
    keys: Rc<Vec<Key>>,
}

/// The shared fetch state of one source.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct State {
    /// Bumped by every successful fetch; 0 until the first.
    version: u64,
    /// When the current key set was fetched (Unix ms).
    fetched_ms: u64,
    /// When the last fetch started.
    attempt_ms: u64,
    /// A fetch is in flight until then (a VM that dies mid-fetch frees it).
    inflight_until_ms: u64,
    /// Failed fetches since the last success.
    failures: u32,
}

/// Why a fetch is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// A token names a key the set does not have (or there is no set yet):
    /// rate-limited by `min_refresh_interval_seconds`.
    Request,
    /// The plugin's refresh timer (or a retry after a failure): only if the set is
    /// older than 90% of `refresh_interval_seconds`.
    Timer,
}

impl RemoteJwks {
    fn shared_key(&self, what: &str) -> String {
        format!(
            "weir.auth.jwks|{}|{}|{}|{what}",
            self.cluster,
            self.authority(),
            self.path
        )
    }

    fn state(&self) -> weir::Result<(State, Option<weir::Cas>)> {
        match shared_data::get_json::<State>(&self.shared_key("state")) {
            Ok(Some(v)) => Ok((v.value, Some(v.cas))),
            Ok(None) => Ok((State::default(), None)),
            // Unreadable (say, written by an incompatible version): start over.
            Err(e) if e.host_status().is_none() => {
                log::warn!("shared key-set state unreadable, starting over: {e}");
                let cas = shared_data::get(&self.shared_key("state"))?.map(|v| v.cas);
                Ok((State::default(), cas))
            }
            Err(e) => Err(e),
        }
    }

    /// The fetched key set and its version, from this VM's cache or (when another
    /// VM fetched a newer one) from shared data; `None` before the first
    /// successful fetch.
    ///
    /// # Errors
    /// A host error.
    pub(crate) fn keys(&self, runtime: &Runtime) -> weir::Result<Option<(u64, Rc<Vec<Key>>)>> {
        let (state, _) = self.state()?;
        if state.version == 0 {
            return Ok(None);
        }
        if let Some(cached) = runtime.remote.borrow().as_ref()
            && cached.version == state.version
        {
            return Ok(Some((cached.version, Rc::clone(&cached.keys))));
        }
        let Some(doc) = shared_data::get(&self.shared_key("keys"))? else {
            return Ok(None);
        };
        let parsed = serde_json::from_slice::<serde_json::Value>(&doc.value)
            .map_err(|e| e.to_string())
            .and_then(|v| jwk::parse_set(&v, Strictness::Remote));
        match parsed {
            Ok(keys) => {
                let keys = Rc::new(keys);
                *runtime.remote.borrow_mut() = Some(Cached {
                    version: state.version,
                    keys: Rc::clone(&keys),
                });
                Ok(Some((state.version, keys)))
            }
            Err(e) => {
                log::warn!("the shared key set is unusable: {e}");
                Ok(None)
            }
        }
    }

    /// Claims the right to fetch now, for `why`. `false` if a fetch is in flight,
    /// if the rate limit or the refresh interval says not yet, or if another VM
    /// claimed it first.
    ///
    /// # Errors
    /// A host error.
    pub(crate) fn claim(&self, now_ms: u64, why: Why) -> weir::Result<bool> {
        let (state, cas) = self.state()?;
        if state.inflight_until_ms > now_ms {
            return Ok(false);
        }
        let wait = match why {
            Why::Request if state.attempt_ms > 0 => state
                .attempt_ms
                .saturating_add(self.min_refresh_interval_seconds.saturating_mul(1000)),
            Why::Timer if state.version > 0 => state
                .fetched_ms
                .saturating_add(self.refresh_interval_seconds.saturating_mul(900)),
            _ => 0,
        };
        if now_ms < wait {
            return Ok(false);
        }
        let next = State {
            attempt_ms: now_ms,
            inflight_until_ms: now_ms.saturating_add(self.timeout_ms + 1000),
            ..state
        };
        shared_data::set_json(&self.shared_key("state"), &next, cas)
    }

    /// The fetch request.
    pub(crate) fn call(&self) -> HttpCall {
        HttpCall::get(&self.cluster, &self.path)
            .authority(self.authority())
            .header("accept", "application/json")
            .timeout(std::time::Duration::from_millis(self.timeout_ms))
    }

    /// Takes a fetch's answer: a valid key set is stored for every VM (and this
    /// one's cache) and returns how many usable keys it has; anything else is
    /// recorded as a failure.
    ///
    /// # Errors
    /// Why the answer was not taken, for the log.
    pub(crate) fn complete(
        &self,
        response: &CalloutResponse,
        now_ms: u64,
        runtime: &Runtime,
    ) -> Result<usize, String> {
        match self.accept(response) {
            Ok((doc, keys)) => {
                let count = keys.len();
                self.store(&doc, keys, now_ms, runtime)
                    .map_err(|e| format!("cannot store the key set: {e}"))?;
                Ok(count)
            }
            Err(e) => {
                if let Err(e) = self.failed() {
                    log::warn!("cannot record the failed fetch: {e}");
                }
                Err(e)
            }
        }
    }

    fn accept(&self, response: &CalloutResponse) -> Result<(Vec<u8>, Vec<Key>), String> {
        if response.is_failure() {
            return Err("no response (timeout, reset or no healthy upstream)".to_owned());
        }
        let status = response.status().map_err(|e| e.to_string())?;
        if status != Some(200) {
            return Err(format!(
                "status {}",
                status.map_or("?".to_owned(), |s| s.to_string())
            ));
        }
        if response.body_len() > MAX_JWKS_BYTES {
            return Err(format!(
                "the key set has {} bytes: at most {MAX_JWKS_BYTES} are accepted",
                response.body_len()
            ));
        }
        let doc = response.body().map_err(|e| e.to_string())?;
        let value: serde_json::Value =
            serde_json::from_slice(&doc).map_err(|e| format!("not JSON: {e}"))?;
        let keys = jwk::parse_set(&value, Strictness::Remote)?;
        Ok((doc, keys))
    }

    fn store(
        &self,
        doc: &[u8],
        keys: Vec<Key>,
        now_ms: u64,
        runtime: &Runtime,
    ) -> weir::Result<()> {
        shared_data::set(&self.shared_key("keys"), doc, None)?;
        let state = shared_data::update_json(&self.shared_key("state"), 16, |s: Option<State>| {
            let s = s.unwrap_or_default();
            State {
                version: s.version + 1,
                fetched_ms: now_ms,
                inflight_until_ms: 0,
                failures: 0,
                ..s
            }
        })?;
        *runtime.remote.borrow_mut() = Some(Cached {
            version: state.version,
            keys: Rc::new(keys),
        });
        Ok(())
    }

    /// Records a failed fetch (or one that could not be sent): frees the
    /// in-flight mark so that the next attempt can go.
    ///
    /// # Errors
    /// A host error.
    pub(crate) fn failed(&self) -> weir::Result<()> {
        shared_data::update_json(&self.shared_key("state"), 16, |s: Option<State>| {
            let s = s.unwrap_or_default();
            State {
                inflight_until_ms: 0,
                failures: s.failures.saturating_add(1),
                ..s
            }
        })
        .map(|_| ())
    }
}
