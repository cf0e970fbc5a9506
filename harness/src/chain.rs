//! A filter chain of proxy-wasm plugins in front of an upstream.
//!
//! # Order
//! As in Envoy, the request goes through the filters in the order they were added
//! (0 → n) and the response comes back in reverse (n → 0). A filter that pauses
//! holds the rest of the chain; a local reply short-circuits it, and the response
//! path then runs through the replying filter and those before it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::fields::{Fields, Kind};
use crate::hcm::ConnectionManager;
use crate::outcome::{LocalReply, LogLevel, Outcome};
use crate::plugin::Plugin;
use crate::state::{LocalReplyRequest, PluginMeta};
use crate::upstream::Upstream;
use crate::vm::{Trap, Vm};
use crate::{Engine, Error, Result};

/// Envoy's `failure_policy`: what happens to requests once a plugin's VM has
/// failed (trapped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Answer 503 with details `wasm_fail_stream` (Envoy's default).
    #[default]
    FailClosed,
    /// Skip the filter.
    FailOpen,
}

/// One filter of a chain: a plugin plus its Envoy `PluginConfig`/`VmConfig`.
#[derive(Clone, Debug)]
#[must_use]
pub struct Filter {
    plugin: Plugin,
    meta: PluginMeta,
    failure_policy: FailurePolicy,
}

impl Filter {
    /// A filter running `plugin` with an empty configuration, named `plugin`.
    pub fn new(plugin: Plugin) -> Self {
        Self {
            plugin,
            meta: PluginMeta {
                name: "plugin".to_owned(),
                root_id: String::new(),
                vm_id: String::new(),
                vm_configuration: Vec::new(),
                plugin_configuration: Vec::new(),
                environment: Vec::new(),
            },
            failure_policy: FailurePolicy::default(),
        }
    }

    /// `PluginConfig.name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.meta.name = name.into();
        self
    }

    /// `PluginConfig.root_id`.
    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.meta.root_id = root_id.into();
        self
    }

    /// `VmConfig.vm_id`.
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.meta.vm_id = vm_id.into();
        self
    }

    /// `PluginConfig.configuration`, as the bytes Envoy passes (a
    /// `StringValue`'s text).
    pub fn configuration(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.meta.plugin_configuration = config.into();
        self
    }

    /// `VmConfig.configuration`.
    pub fn vm_configuration(mut self, config: impl Into<Vec<u8>>) -> Self {
        self.meta.vm_configuration = config.into();
        self
    }

    /// `VmConfig.environment_variables.key_values`, visible through WASI `environ`.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.environment.push((key.into(), value.into()));
        self
    }

    /// `PluginConfig.failure_policy`.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }
}

/// Builds a [`Chain`].
#[derive(Debug)]
#[must_use]
pub struct ChainBuilder {
    filters: Vec<Filter>,
    hcm: ConnectionManager,
    log_level: LogLevel,
    start: SystemTime,
    seed: u64,
    fuel_per_call: u64,
}

impl ChainBuilder {
    /// Appends a filter (see the type docs for ordering).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// The emulated connection manager's settings.
    pub fn connection_manager(mut self, hcm: ConnectionManager) -> Self {
        self.hcm = hcm;
        self
    }

    /// Envoy's `wasm` logger level (default `info`): what `proxy_get_log_level`
    /// answers; lower lines are dropped.
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = level;
        self
    }

    /// The virtual wall clock's start (default 2026-01-01T00:00:00Z).
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start = at;
        self
    }

    /// Wasm fuel each callback may burn before it is stopped with a trap
    /// (default 1 000 000 000, about a second). Envoy has no such limit; this keeps
    /// a runaway filter from hanging a test.
    pub fn fuel_per_call(mut self, fuel: u64) -> Self {
        self.fuel_per_call = fuel;
        self
    }

    /// Seed for WASI `random_get` and generated request ids (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Starts every plugin: Envoy's load checks, module initialization,
    /// `on_vm_start` and `on_configure`.
    ///
    /// # Errors
    /// The first plugin that fails to start, e.g. [`Error::ConfigureFailed`].
    pub fn build(self) -> Result<Chain> {
        let mut slots = Vec::with_capacity(self.filters.len());
        for (i, filter) in self.filters.into_iter().enumerate() {
            let seed = self.seed.wrapping_add(i as u64);
            let vm = Vm::start(
                &filter.plugin,
                filter.meta,
                self.start,
                seed,
                self.log_level,
                self.fuel_per_call,
            )?;
            slots.push(Slot {
                vm,
                policy: filter.failure_policy,
            });
        }
        let mut chain = Chain {
            slots,
            hcm: self.hcm,
            now: self.start,
            rng: self.seed ^ 0x5EED,
            startup_logs: Vec::new(),
        };
        chain.startup_logs = chain.drain_logs();
        Ok(chain)
    }
}

#[derive(Debug)]
struct Slot {
    vm: Vm,
    policy: FailurePolicy,
}

/// A running filter chain. Send requests through it with [`Chain::send`].
#[derive(Debug)]
pub struct Chain {
    slots: Vec<Slot>,
    hcm: ConnectionManager,
    now: SystemTime,
    rng: u64,
    startup_logs: Vec<crate::LogRecord>,
}

/// Per-filter progress of one stream.
#[derive(Clone, Copy, Default)]
struct Progress {
    /// The stream context id in this filter's VM, once created.
    context: Option<u32>,
    /// Whether the filter's request callbacks ran (its encoder runs on the way back).
    decoded: bool,
}

/// Who answers the client instead of the upstream.
struct Reply {
    /// The filter that sent it; `None` for the router (no route).
    slot: Option<usize>,
    request: LocalReplyRequest,
}

/// What [`LocalReply::plugin`] says when the router answered.
const ROUTER: &str = "envoy.filters.http.router";

fn fail_stream() -> LocalReplyRequest {
    LocalReplyRequest {
        status: 503,
        details: "wasm_fail_stream".to_owned(),
        body: Vec::new(),
        headers: Fields::new(Kind::Plain),
        grpc_status: 14,
    }
}

/// Which way a callback's headers travel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

impl Direction {
    fn callback(self) -> &'static str {
        match self {
            Direction::Request => "on_request_headers",
            Direction::Response => "on_response_headers",
        }
    }
}

/// What the chain does after a filter's callback returned.
enum Step {
    /// Go on to the next filter.
    Next,
    /// The filter sent a local reply.
    Reply(LocalReplyRequest),
    /// The filter's VM trapped and its failure policy is fail-closed.
    Failed,
}

/// Applies Envoy's rules after a headers callback returned `result`: run the
/// actions the filter deferred (a local reply wins, then a reset, then a resume),
/// map the return value, and apply the failure policy to a trap.
fn settle(
    slot: &mut Slot,
    result: Result<Option<i32>, Trap>,
    direction: Direction,
) -> Result<Step> {
    let callback = direction.callback();
    let deferred = slot.vm.take_deferred();
    let action = match result {
        Ok(action) => action,
        Err(_) if slot.policy == FailurePolicy::FailOpen => return Ok(Step::Next),
        Err(_) => return Ok(Step::Failed),
    };
    if let Some(request) = deferred.local_reply {
        return Ok(Step::Reply(request));
    }
    if deferred.close_stream {
        return Err(Error::Reset {
            plugin: slot.vm.name().to_owned(),
            phase: callback,
            upstream_request: None,
            logs: Vec::new(),
        });
    }
    if direction == Direction::Request && deferred.continue_response {
        return Err(Error::WouldCrashEnvoy {
            plugin: slot.vm.name().to_owned(),
            reason: "proxy_continue_stream(HttpResponse) in on_request_headers, before the \
                     response started, crashes Envoy 1.40 (segmentation fault)",
        });
    }
    let resumed = match direction {
        Direction::Request => deferred.continue_request,
        Direction::Response => deferred.continue_response,
    };
    if !continues(action) && !resumed {
        return Err(Error::Stalled {
            plugin: slot.vm.name().to_owned(),
            phase: callback,
        });
    }
    Ok(Step::Next)
}

/// Envoy's mapping of a headers callback's return value: 0 and 2 continue,
/// anything else stops iteration.
fn continues(action: Option<i32>) -> bool {
    matches!(action, None | Some(0) | Some(2))
}

impl Chain {
    /// A [`ChainBuilder`] on `engine`. The engine is only needed to make the
    /// plugins, which already carry it; it is taken to make the dependency plain.
    pub fn builder(_engine: &Engine) -> ChainBuilder {
        ChainBuilder {
            filters: Vec::new(),
            hcm: ConnectionManager::default(),
            log_level: LogLevel::Info,
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            seed: 0,
            fuel_per_call: crate::vm::DEFAULT_FUEL_PER_CALL,
        }
    }

    /// What the plugins logged while starting.
    pub fn startup_logs(&self) -> &[crate::LogRecord] {
        &self.startup_logs
    }

    /// Moves the virtual clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        for slot in &mut self.slots {
            let state = slot.vm.state();
            state.now += by;
            state.monotonic += by;
        }
    }

    fn drain_logs(&mut self) -> Vec<crate::LogRecord> {
        self.slots
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.vm.state().logs))
            .collect()
    }

    fn random16(&mut self) -> [u8; 16] {
        let mut out = [0; 16];
        for chunk in out.chunks_mut(8) {
            self.rng = self
                .rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            chunk.copy_from_slice(&self.rng.to_le_bytes());
        }
        out
    }

    /// Sends one request through the chain to `upstream` and returns what the
    /// upstream and the client saw.
    ///
    /// # Errors
    /// [`Error::InvalidRequest`] for a request Envoy could not route,
    /// [`Error::Stalled`] if a filter paused and never resumed, [`Error::Reset`]
    /// if a filter reset the stream, [`Error::InvalidHeader`] if a filter produced
    /// a header that cannot be sent.
    pub fn send<B: Into<Bytes>>(
        &mut self,
        request: http::Request<B>,
        mut upstream: impl Upstream,
    ) -> Result<Outcome> {
        let request = request.map(Into::into);
        let mut random = self.random16();
        let mut fields = self
            .hcm
            .request_fields(&request, || std::mem::take(&mut random))?;
        let request_body = request.into_body();
        let mut progress = vec![Progress::default(); self.slots.len()];

        let reply = match self.decode(&mut fields, request_body.is_empty(), &mut progress) {
            Err(e @ Error::Reset { .. }) => return Err(self.reset(e, &progress, &fields, None)),
            other => other?,
        };
        // Envoy's route table matches nothing when a filter removed
        // x-forwarded-proto: the router answers 404 route_not_found.
        let reply = reply.or_else(|| {
            fields.get(b"x-forwarded-proto").is_none().then(|| Reply {
                slot: None,
                request: LocalReplyRequest {
                    status: 404,
                    details: "route_not_found".to_owned(),
                    body: Vec::new(),
                    headers: Fields::new(Kind::Plain),
                    grpc_status: -1,
                },
            })
        });
        let (upstream_request, mut response, response_body, reply) = match reply {
            None => {
                let upstream_request = self.hcm.upstream_request(&fields, request_body)?;
                let response = upstream.call(upstream_request.clone());
                let response_fields = self.hcm.response_fields(&response);
                (
                    Some(upstream_request),
                    response_fields,
                    response.into_body(),
                    None,
                )
            }
            Some(reply) => {
                let response = ConnectionManager::local_reply_fields(&reply.request);
                let body = Bytes::from(reply.request.body.clone());
                (None, response, body, Some(reply))
            }
        };
        let last = reply
            .as_ref()
            .and_then(|r| r.slot)
            .map_or(self.slots.len(), |slot| slot + 1);
        let late_reply =
            match self.encode(&mut response, response_body.is_empty(), &progress[..last]) {
                Err(e @ Error::Reset { .. }) => {
                    return Err(self.reset(e, &progress, &fields, upstream_request));
                }
                other => other?,
            };
        let (reply, response, response_body) = match late_reply {
            Some(r) => {
                let fields = ConnectionManager::local_reply_fields(&r.request);
                let body = Bytes::from(r.request.body.clone());
                (Some(r), fields, body)
            }
            None => (reply, response, response_body),
        };
        let response = self
            .hcm
            .client_response(response, response_body, self.now)?;
        let mut final_response = Fields::new(Kind::Response);
        final_response.add(b":status", response.status().as_str().as_bytes());
        for (k, v) in response.headers() {
            final_response.add(k.as_str().as_bytes(), v.as_bytes());
        }
        self.log_stream(&progress, &fields, Some(&final_response));

        let fuel = self.slots.iter_mut().map(|s| s.vm.take_fuel()).sum();
        let local_reply = reply.map(|r| LocalReply {
            plugin: r
                .slot
                .map_or_else(|| ROUTER.to_owned(), |i| self.slots[i].vm.name().to_owned()),
            status: r.request.status as u16,
            details: r.request.details,
        });
        Ok(Outcome {
            upstream_request,
            response,
            local_reply,
            logs: self.drain_logs(),
            fuel,
        })
    }

    /// Finishes a stream a filter reset: access logging still runs (with no
    /// response), and the error carries what was observed.
    fn reset(
        &mut self,
        error: Error,
        progress: &[Progress],
        request: &Fields,
        upstream_request: Option<http::Request<Bytes>>,
    ) -> Error {
        self.log_stream(progress, request, None);
        for slot in &mut self.slots {
            slot.vm.take_fuel();
        }
        match error {
            Error::Reset { plugin, phase, .. } => Error::Reset {
                plugin,
                phase,
                upstream_request: upstream_request.map(Box::new),
                logs: self.drain_logs(),
            },
            other => other,
        }
    }

    /// The request path: each filter's `on_request_headers` in order.
    fn decode(
        &mut self,
        fields: &mut Fields,
        end_of_stream: bool,
        progress: &mut [Progress],
    ) -> Result<Option<Reply>> {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.vm.failed.is_some() {
                match slot.policy {
                    FailurePolicy::FailOpen => continue,
                    FailurePolicy::FailClosed => {
                        return Ok(Some(Reply {
                            slot: Some(i),
                            request: fail_stream(),
                        }));
                    }
                }
            }
            let stream = slot.vm.new_context_id();
            progress[i].context = Some(stream);
            progress[i].decoded = true;
            let num_headers = fields.len();
            slot.vm.state().maps.request_headers = Some(std::mem::take(fields));
            let result = slot.vm.create_stream(stream).and_then(|()| {
                slot.vm
                    .on_request_headers(stream, num_headers, end_of_stream)
            });
            *fields = slot
                .vm
                .state()
                .maps
                .request_headers
                .take()
                .unwrap_or_default();
            match settle(slot, result, Direction::Request)? {
                Step::Next => {}
                Step::Reply(request) => {
                    return Ok(Some(Reply {
                        slot: Some(i),
                        request,
                    }));
                }
                Step::Failed => {
                    // Envoy skips a failed VM's encoder callbacks.
                    progress[i].decoded = false;
                    return Ok(Some(Reply {
                        slot: Some(i),
                        request: fail_stream(),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The response path: `on_response_headers` in reverse order, for the filters
    /// whose request path ran. A local reply sent here replaces the response and
    /// goes straight to the client.
    fn encode(
        &mut self,
        fields: &mut Fields,
        end_of_stream: bool,
        progress: &[Progress],
    ) -> Result<Option<Reply>> {
        for (i, slot) in self.slots.iter_mut().enumerate().take(progress.len()).rev() {
            let (Some(stream), true) = (progress[i].context, progress[i].decoded) else {
                continue;
            };
            if slot.vm.failed.is_some() {
                if slot.policy == FailurePolicy::FailOpen {
                    continue;
                }
                return Ok(Some(Reply {
                    slot: Some(i),
                    request: fail_stream(),
                }));
            }
            let num_headers = fields.len();
            slot.vm.state().maps.response_headers = Some(std::mem::take(fields));
            let result = slot
                .vm
                .on_response_headers(stream, num_headers, end_of_stream);
            *fields = slot
                .vm
                .state()
                .maps
                .response_headers
                .take()
                .unwrap_or_default();
            match settle(slot, result, Direction::Response)? {
                Step::Next => {}
                Step::Reply(request) => {
                    return Ok(Some(Reply {
                        slot: Some(i),
                        request,
                    }));
                }
                Step::Failed => {
                    return Ok(Some(Reply {
                        slot: Some(i),
                        request: fail_stream(),
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Access logging, then teardown, for every filter, in chain order. A filter
    /// whose request path never ran still gets its context created first, as
    /// Envoy's `log()` does.
    fn log_stream(&mut self, progress: &[Progress], request: &Fields, response: Option<&Fields>) {
        for (slot, p) in self.slots.iter_mut().zip(progress) {
            if slot.vm.failed.is_some() {
                continue;
            }
            let stream = match p.context {
                Some(id) => id,
                None => {
                    let id = slot.vm.new_context_id();
                    if slot.vm.create_stream(id).is_err() {
                        continue;
                    }
                    id
                }
            };
            // A trap here fails the VM for later streams; this one is answered.
            let _ = slot
                .vm
                .finish_stream(stream, Some(request.clone()), response.cloned());
        }
    }
}
