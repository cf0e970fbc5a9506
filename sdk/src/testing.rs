//! Native unit tests for filters, against an in-process mock host.
//!
//! Outside wasm, weir's host calls (and the `proxy-wasm` crate's) go to a mock
//! host kept per test thread. [`MockHost`] sets what the filter will see, drives
//! its callbacks through the same dispatcher Envoy drives, and shows what the
//! filter did: headers after the callback, local replies, callouts, shared data,
//! metrics, logs. It checks the SDK's logic and the filter's; for Envoy's own
//! behaviour (header windows, buffering, the filter chain) use `weir-harness`.
//!
//! Tasks ([`Flow::wait`](crate::Flow::wait), [`PluginContext::spawn`](crate::PluginContext::spawn))
//! run as in Envoy: [`MockStream::callout_response`], [`MockStream::grpc_response`]
//! (or the plugin's) wake the task awaiting the token, [`MockPlugin::tick`] after
//! [`MockHost::advance`] wakes sleeps and timeouts, dropping the [`MockStream`]
//! drops its tasks, and [`MockStream::resumed_requests`] tells whether a task
//! resumed its own stream.
//!
//! Network filters ([`StreamFilter`]) load with
//! [`MockHost::load_stream_filter`] and run on a [`MockConnection`]: client and
//! upstream data (accumulated after a pause, as in Envoy), the close callbacks,
//! and `on_done` when it is dropped.
//!
//! ```
//! use std::rc::Rc;
//! use weir::testing::{Action, MockHost};
//! use weir::{Flow, HttpFilter, RequestHeaders, Result};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { header: String }
//!
//! struct Tag(Rc<Config>);
//!
//! impl HttpFilter for Tag {
//!     type Config = Config;
//!     fn new(config: Rc<Config>) -> Self { Tag(config) }
//!     fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
//!         req.set(&self.0.header, "1")?;
//!         Ok(Flow::Continue)
//!     }
//! }
//!
//! let host = MockHost::new();
//! let mut plugin = host.load::<Tag>(r#"{"header": "x-tagged"}"#).unwrap();
//! let stream = plugin.stream();
//! host.set_request_headers(&[(":path", "/"), (":method", "GET")]);
//! assert_eq!(stream.request_headers(true), Action::Continue);
//! assert_eq!(host.request_header("x-tagged").as_deref(), Some("1"));
//! ```

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

use crate::host::mock::{self, drive, with};
use crate::host::{BufferType, MapType};
use crate::{HttpFilter, NoPlugin, PeerType, Plugin, StreamFilter};

pub use crate::host::mock::{ForeignFn, MockCall, MockReply, MockResponse};

/// A unary gRPC answer for the mock host: the response message, or a status
/// other than OK with its message.
pub type MockGrpcResponse<'a> = std::result::Result<&'a [u8], (u32, &'a str)>;

/// What a callback told the host to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on with the stream.
    Continue,
    /// Hold the stream (or, after a local reply, stop it).
    Pause,
}

fn action(raw: u32) -> Action {
    if raw == 0 {
        Action::Continue
    } else {
        Action::Pause
    }
}

/// The mock host of the current test thread. Creating one resets it.
#[derive(Debug)]
pub struct MockHost {
    /// The mock state is per thread.
    _thread_bound: PhantomData<*const ()>,
}

impl Default for MockHost {
    fn default() -> Self {
        Self::new()
    }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    items
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect()
}

impl MockHost {
    /// Resets this thread's mock host: empty maps, clock at the Unix epoch plus
    /// one day, log level trace, clusters named `unknown*` refused.
    pub fn new() -> Self {
        crate::vm_config::reset();
        with(|s| {
            *s = mock::MockState {
                now_nanos: 86_400_000_000_000,
                ..Default::default()
            };
        });
        // Tasks and timers of earlier tests on this thread go too.
        crate::runtime::reset();
        crate::clock::reset();
        Self {
            _thread_bound: PhantomData,
        }
    }

    /// Loads filter `F` (without plugin-level behaviour) with this JSON plugin
    /// configuration, as Envoy does: creates the root context and configures it.
    ///
    /// # Errors
    /// The log lines the filter wrote if it rejected the configuration.
    pub fn load<F: HttpFilter>(&self, config: &str) -> Result<MockPlugin, String> {
        self.load_with_plugin::<F, NoPlugin<F::Config>>(config)
    }

    /// Loads filter `F` with plugin `P` (see [`MockHost::load`]).
    ///
    /// # Errors
    /// The log lines the filter wrote if it rejected the configuration.
    pub fn load_with_plugin<F, P>(&self, config: &str) -> Result<MockPlugin, String>
    where
        F: HttpFilter,
        P: Plugin<Config = F::Config>,
    {
        self.start(
            crate::export::register_http_filter::<F, P, crate::vm_config::NoVmConfig>,
            "",
            config,
        )
    }

    /// Loads network filter `F` (without plugin-level behaviour) with this JSON
    /// plugin configuration; drive it with [`MockPlugin::connection`].
    ///
    /// # Errors
    /// The log lines the filter wrote if it rejected the configuration.
    pub fn load_stream_filter<F: StreamFilter>(&self, config: &str) -> Result<MockPlugin, String> {
        self.load_stream_filter_with_plugin::<F, NoPlugin<F::Config>>(config)
    }

    /// Loads network filter `F` with plugin `P` (see [`MockHost::load_stream_filter`]).
    ///
    /// # Errors
    /// The log lines the filter wrote if it rejected the configuration.
    pub fn load_stream_filter_with_plugin<F, P>(&self, config: &str) -> Result<MockPlugin, String>
    where
        F: StreamFilter,
        P: Plugin<Config = F::Config>,
    {
        self.start(
            crate::stream_export::register_stream_filter::<F, P, crate::vm_config::NoVmConfig>,
            "",
            config,
        )
    }

    /// Loads filter `F` with plugin `P` and a typed VM configuration `V`, as
    /// `export_http_filter!(F, plugin = P, vm_config = V)` exports it: the VM
    /// starts with `vm_config` (JSON), then the plugin is configured with
    /// `config`. Use [`NoPlugin`] for a filter without plugin.
    ///
    /// # Errors
    /// The log lines the filter wrote if it rejected either configuration.
    pub fn load_with_vm_config<F, P, V>(
        &self,
        vm_config: &str,
        config: &str,
    ) -> Result<MockPlugin, String>
    where
        F: HttpFilter,
        P: Plugin<Config = F::Config>,
        V: serde::de::DeserializeOwned + 'static,
    {
        self.start(
            crate::export::register_http_filter::<F, P, crate::vm_config::Typed<V>>,
            vm_config,
            config,
        )
    }

    /// Registers a filter with `register` and starts its root context.
    fn start(&self, register: fn(), vm_config: &str, config: &str) -> Result<MockPlugin, String> {
        // The `log` backend is process-wide: install it once, before any thread
        // registers a filter.
        static LOGGER: std::sync::Once = std::sync::Once::new();
        LOGGER.call_once(|| proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace));
        register();
        // proxy-wasm's panic hook logs to the host only; keep test failures visible.
        std::panic::set_hook(Box::new(|info| {
            #[allow(clippy::print_stderr, reason = "test diagnostics")]
            {
                eprintln!("{info}");
            }
        }));
        let root = next_context_id();
        drive::context_create(root, 0);
        with(|s| {
            s.buffers.insert(
                BufferType::VmConfiguration as u32,
                vm_config.as_bytes().to_vec(),
            );
            s.buffers.insert(
                BufferType::PluginConfiguration as u32,
                config.as_bytes().to_vec(),
            );
        });
        let started =
            drive::vm_start(root, vm_config.len()) && drive::configure(root, config.len());
        if !started {
            return Err(self
                .logs()
                .into_iter()
                .map(|(_, line)| line)
                .collect::<Vec<_>>()
                .join("\n"));
        }
        Ok(MockPlugin { root })
    }

    /// The downstream data buffer now (after the filter's edits).
    pub fn downstream_data(&self) -> Vec<u8> {
        with(|s| s.buffers.get(&(BufferType::DownstreamData as u32)).cloned()).unwrap_or_default()
    }

    /// The upstream data buffer now (after the filter's edits).
    pub fn upstream_data(&self) -> Vec<u8> {
        with(|s| s.buffers.get(&(BufferType::UpstreamData as u32)).cloned()).unwrap_or_default()
    }

    /// How many times a network filter asked to close the connection
    /// (`proxy_close_stream` on the downstream or upstream side).
    pub fn closed_connections(&self) -> usize {
        with(|s| s.closed.iter().filter(|&&t| t == 2 || t == 3).count())
    }

    fn set_map(&self, map: MapType, items: &[(&str, &str)]) {
        with(|s| s.maps.insert(map as u32, pairs(items)));
    }

    fn map(&self, map: MapType) -> Vec<(String, String)> {
        with(|s| {
            s.maps
                .get(&(map as u32))
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                        .collect()
                })
                .unwrap_or_default()
        })
    }

    /// Makes the request headers available with these entries.
    pub fn set_request_headers(&self, headers: &[(&str, &str)]) {
        self.set_map(MapType::RequestHeaders, headers);
    }

    /// Makes the response headers available with these entries.
    pub fn set_response_headers(&self, headers: &[(&str, &str)]) {
        self.set_map(MapType::ResponseHeaders, headers);
    }

    /// Makes the request trailers available with these entries.
    pub fn set_request_trailers(&self, trailers: &[(&str, &str)]) {
        self.set_map(MapType::RequestTrailers, trailers);
    }

    /// Makes the response trailers available with these entries.
    pub fn set_response_trailers(&self, trailers: &[(&str, &str)]) {
        self.set_map(MapType::ResponseTrailers, trailers);
    }

    /// The request headers now (after the filter's changes).
    pub fn request_headers(&self) -> Vec<(String, String)> {
        self.map(MapType::RequestHeaders)
    }

    /// The response headers now.
    pub fn response_headers(&self) -> Vec<(String, String)> {
        self.map(MapType::ResponseHeaders)
    }

    /// The first value of a request header now.
    pub fn request_header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.request_headers()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The first value of a response header now.
    pub fn response_header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        self.response_headers()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// The request body buffer now.
    pub fn request_body(&self) -> Vec<u8> {
        with(|s| s.buffers.get(&(BufferType::RequestBody as u32)).cloned()).unwrap_or_default()
    }

    /// The response body buffer now.
    pub fn response_body(&self) -> Vec<u8> {
        with(|s| s.buffers.get(&(BufferType::ResponseBody as u32)).cloned()).unwrap_or_default()
    }

    /// Sets an attribute (`proxy_get_property`), e.g. `(&["source", "address"], b"10.0.0.1:5")`.
    pub fn set_property(&self, path: &[&str], value: &[u8]) {
        let key = path.join("\0").into_bytes();
        with(|s| s.properties.insert(key, value.to_vec()));
    }

    /// A property as the filter left it (for `weir::properties::set`).
    pub fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join("\0").into_bytes();
        with(|s| s.properties.get(&key).cloned())
    }

    /// The local reply the filter sent, if any (taking it).
    pub fn take_local_reply(&self) -> Option<MockReply> {
        with(|s| s.local_reply.take())
    }

    /// Every callout dispatched so far.
    pub fn calls(&self) -> Vec<MockCall> {
        with(|s| s.calls.clone())
    }

    /// A shared-data value.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        with(|s| s.shared.get(key).map(|(v, _)| v.clone()))
    }

    /// Sets a shared-data value (as another VM would).
    pub fn set_shared_data(&self, key: &str, value: &[u8]) {
        with(|s| {
            let entry = s.shared.entry(key.to_owned()).or_insert((Vec::new(), 0));
            entry.0 = value.to_vec();
            entry.1 += 1;
        });
    }

    /// The value of the metric with this full name (labels encoded).
    pub fn metric(&self, name: &str) -> Option<i64> {
        with(|s| s.metrics.iter().find(|(_, n, _)| n == name).map(|m| m.2))
    }

    /// Log lines written through `log` (level as `log::Level`, message).
    pub fn logs(&self) -> Vec<(log::Level, String)> {
        with(|s| {
            s.logs
                .iter()
                .map(|(level, line)| {
                    let level = match level {
                        0 => log::Level::Trace,
                        1 => log::Level::Debug,
                        2 => log::Level::Info,
                        3 => log::Level::Warn,
                        _ => log::Level::Error,
                    };
                    (level, line.clone())
                })
                .collect()
        })
    }

    /// Sets the level `proxy_get_log_level` reports (0 trace ... 5 critical).
    pub fn set_log_level(&self, level: u32) {
        with(|s| s.log_level = level);
    }

    /// The host clock.
    pub fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(with(|s| s.now_nanos))
    }

    /// Moves the host clock forward (ticks are delivered with [`MockPlugin::tick`]).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        with(|s| s.now_nanos = s.now_nanos.saturating_add(nanos));
    }

    /// The tick period the plugin asked for, or `None` if ticks are off.
    pub fn tick_period(&self) -> Option<Duration> {
        let ms = with(|s| s.tick_period_ms);
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// Offers a foreign function (`proxy_call_foreign_function`); `None` from it
    /// means `BadArgument`.
    pub fn register_foreign(&self, name: &str, function: ForeignFn) {
        with(|s| s.foreign.insert(name.to_owned(), function));
    }

    /// Items waiting in the shared queue `name`.
    pub fn queue(&self, name: &str) -> Vec<Vec<u8>> {
        with(|s| {
            s.queues
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, q)| q.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    /// How many times the filter resumed the request (`proxy_continue_stream`).
    pub fn resumed_requests(&self) -> usize {
        with(|s| s.continued.iter().filter(|&&(_, t)| t == 0).count())
    }
}

/// A fresh context id. The `proxy-wasm` dispatcher keeps every context of the
/// thread, across mock host resets, so ids are never reused: a test can load
/// several plugins.
fn next_context_id() -> u32 {
    thread_local! {
        static NEXT: Cell<u32> = const { Cell::new(0) };
    }
    NEXT.with(|n| {
        let id = n.get() + 1;
        n.set(id);
        id
    })
}

/// A loaded plugin (Envoy's root context).
#[derive(Debug)]
pub struct MockPlugin {
    root: u32,
}

impl MockPlugin {
    /// Starts a new HTTP stream.
    pub fn stream(&mut self) -> MockStream {
        let id = next_context_id();
        drive::context_create(id, self.root);
        MockStream {
            id,
            buffered: [0, 0],
        }
    }

    /// Opens a connection through a network filter loaded with
    /// [`MockHost::load_stream_filter`]. Nothing is delivered yet: start with
    /// [`MockConnection::new_connection`].
    ///
    /// ```
    /// use std::rc::Rc;
    /// use weir::testing::{Action, MockHost};
    /// use weir::{DownstreamData, Result, StreamFilter, StreamFlow};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct NoConfig {}
    ///
    /// /// Waits for a whole line.
    /// struct Lines;
    ///
    /// impl StreamFilter for Lines {
    ///     type Config = NoConfig;
    ///     fn new(_: Rc<NoConfig>) -> Self { Lines }
    ///     fn on_downstream_data(&mut self, data: &mut DownstreamData) -> Result<StreamFlow> {
    ///         if data.bytes()?.ends_with(b"\n") {
    ///             Ok(StreamFlow::Continue)
    ///         } else {
    ///             Ok(StreamFlow::Pause)
    ///         }
    ///     }
    /// }
    ///
    /// let host = MockHost::new();
    /// let mut plugin = host.load_stream_filter::<Lines>("").unwrap();
    /// let mut conn = plugin.connection();
    /// assert_eq!(conn.new_connection(), Action::Continue);
    /// assert_eq!(conn.downstream_data(b"hel", false), Action::Pause);
    /// assert_eq!(conn.downstream_data(b"lo\n", false), Action::Continue);
    /// assert_eq!(host.downstream_data(), b"hello\n");
    /// ```
    pub fn connection(&mut self) -> MockConnection {
        let id = next_context_id();
        drive::context_create(id, self.root);
        MockConnection { id, held: [0, 0] }
    }

    /// Delivers one host tick (timers that are due fire).
    pub fn tick(&self) {
        drive::tick(self.root);
    }

    /// Tells the plugin its shared queue has items.
    pub fn queue_ready(&self, queue: u32) {
        drive::queue_ready(self.root, queue);
    }

    /// Answers callout `token` (see [`MockHost::calls`]); `None` for a failure
    /// without response (timeout, reset). The dispatcher routes it to the context
    /// that sent it.
    pub fn callout_response(&self, token: u32, response: MockResponse<'_>) {
        callout_response(self.root, token, response);
    }

    /// Answers gRPC call `token` (see [`MockHost::calls`]), as Envoy does: the
    /// message with status OK, or the close with a status. The dispatcher routes
    /// it to the context that sent it.
    pub fn grpc_response(&self, token: u32, response: MockGrpcResponse<'_>) {
        grpc_response(self.root, token, response);
    }
}

fn grpc_response(context: u32, token: u32, response: MockGrpcResponse<'_>) {
    match response {
        Ok(message) => {
            with(|s| {
                s.buffers
                    .insert(BufferType::GrpcMessage as u32, message.to_vec());
                s.grpc_status = (0, Vec::new());
            });
            drive::grpc_receive(context, token, message.len());
        }
        Err((status, text)) => {
            with(|s| s.grpc_status = (status, text.as_bytes().to_vec()));
            drive::grpc_close(context, token, status);
        }
    }
    with(|s| {
        s.buffers.remove(&(BufferType::GrpcMessage as u32));
        s.grpc_status = (0, Vec::new());
    });
}

fn callout_response(context: u32, token: u32, response: MockResponse<'_>) {
    let (headers, body) = match response {
        Some((status, headers, body)) => {
            let status = status.to_string();
            let mut all = vec![(":status", status.as_str())];
            all.extend_from_slice(headers);
            (pairs(&all), body.to_vec())
        }
        None => (Vec::new(), Vec::new()),
    };
    let (n, size) = (headers.len(), body.len());
    with(|s| {
        s.maps.insert(MapType::CallResponseHeaders as u32, headers);
        s.buffers.insert(BufferType::CallResponseBody as u32, body);
    });
    drive::http_call_response(context, token, n, size, 0);
    with(|s| {
        s.maps.remove(&(MapType::CallResponseHeaders as u32));
        s.buffers.remove(&(BufferType::CallResponseBody as u32));
    });
}

/// One HTTP stream of a [`MockPlugin`].
#[derive(Debug)]
pub struct MockStream {
    id: u32,
    /// Bytes Envoy holds for a paused body (request, response).
    buffered: [usize; 2],
}

impl MockStream {
    fn headers_len(map: MapType) -> usize {
        with(|s| s.maps.get(&(map as u32)).map_or(0, Vec::len))
    }

    /// Delivers the request headers set with [`MockHost::set_request_headers`].
    pub fn request_headers(&self, end_of_stream: bool) -> Action {
        action(drive::request_headers(
            self.id,
            Self::headers_len(MapType::RequestHeaders),
            end_of_stream,
        ))
    }

    /// Delivers a request body chunk. After a paused chunk, Envoy delivers the
    /// accumulated body, and so does this.
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        self.body(0, BufferType::RequestBody, chunk, end_of_stream)
    }

    /// Delivers the request trailers set with [`MockHost::set_request_trailers`].
    pub fn request_trailers(&self) -> Action {
        action(drive::request_trailers(
            self.id,
            Self::headers_len(MapType::RequestTrailers),
        ))
    }

    /// Delivers the response headers set with [`MockHost::set_response_headers`].
    pub fn response_headers(&self, end_of_stream: bool) -> Action {
        action(drive::response_headers(
            self.id,
            Self::headers_len(MapType::ResponseHeaders),
            end_of_stream,
        ))
    }

    /// Delivers a response body chunk (accumulated after a pause, as in Envoy).
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        self.body(1, BufferType::ResponseBody, chunk, end_of_stream)
    }

    /// Delivers the response trailers set with [`MockHost::set_response_trailers`].
    pub fn response_trailers(&self) -> Action {
        action(drive::response_trailers(
            self.id,
            Self::headers_len(MapType::ResponseTrailers),
        ))
    }

    /// Answers callout `token` sent by this stream (see [`MockPlugin::callout_response`]).
    pub fn callout_response(&self, token: u32, response: MockResponse<'_>) {
        callout_response(self.id, token, response);
    }

    /// Answers gRPC call `token` sent by this stream (see
    /// [`MockPlugin::grpc_response`]).
    pub fn grpc_response(&self, token: u32, response: MockGrpcResponse<'_>) {
        grpc_response(self.id, token, response);
    }

    /// How many times the request of this stream was resumed
    /// (`proxy_continue_stream` with this stream as the effective context).
    pub fn resumed_requests(&self) -> usize {
        self.resumes(0)
    }

    /// How many times the response of this stream was resumed.
    pub fn resumed_responses(&self) -> usize {
        self.resumes(1)
    }

    fn resumes(&self, stream: u32) -> usize {
        with(|s| {
            s.continued
                .iter()
                .filter(|&&(context, t)| context == self.id && t == stream)
                .count()
        })
    }

    fn body(&mut self, slot: usize, buffer: BufferType, chunk: &[u8], eos: bool) -> Action {
        let held = self.buffered[slot];
        let size = with(|s| {
            let b = s.buffers.entry(buffer as u32).or_default();
            if held == 0 {
                b.clear();
            }
            b.extend_from_slice(chunk);
            b.len()
        });
        let raw = match slot {
            0 => drive::request_body(self.id, size, eos),
            _ => drive::response_body(self.id, size, eos),
        };
        let result = action(raw);
        self.buffered[slot] = if result == Action::Pause { size } else { 0 };
        result
    }
}

impl Drop for MockStream {
    /// Ends the stream: `on_log`, `on_done`, `on_delete`.
    fn drop(&mut self) {
        drive::finish(self.id);
    }
}

/// One connection through a network filter (see [`MockPlugin::connection`]).
/// Dropping it ends the connection as Envoy does: `on_done`, `on_log`,
/// `on_delete`.
#[derive(Debug)]
pub struct MockConnection {
    id: u32,
    /// Bytes Envoy holds for paused data (downstream, upstream).
    held: [usize; 2],
}

fn raw_peer(peer: PeerType) -> proxy_wasm::types::PeerType {
    match peer {
        PeerType::Local => proxy_wasm::types::PeerType::Local,
        PeerType::Remote => proxy_wasm::types::PeerType::Remote,
        PeerType::Unknown => proxy_wasm::types::PeerType::Unknown,
    }
}

impl MockConnection {
    /// Delivers `on_new_connection`.
    pub fn new_connection(&self) -> Action {
        action(drive::new_connection(self.id))
    }

    /// Delivers bytes from the client. After a paused call, Envoy delivers the
    /// held bytes followed by these, and so does this.
    pub fn downstream_data(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        self.data(0, BufferType::DownstreamData, chunk, end_of_stream)
    }

    /// Delivers bytes from the upstream (accumulated after a pause, as in Envoy).
    pub fn upstream_data(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        self.data(1, BufferType::UpstreamData, chunk, end_of_stream)
    }

    /// Delivers `on_downstream_connection_close`.
    pub fn downstream_close(&self, peer: PeerType) {
        drive::downstream_close(self.id, raw_peer(peer));
    }

    /// Delivers `on_upstream_connection_close` (Envoy reports
    /// [`PeerType::Unknown`]).
    pub fn upstream_close(&self, peer: PeerType) {
        drive::upstream_close(self.id, raw_peer(peer));
    }

    fn data(&mut self, slot: usize, buffer: BufferType, chunk: &[u8], eos: bool) -> Action {
        let held = self.held[slot];
        let size = with(|s| {
            let b = s.buffers.entry(buffer as u32).or_default();
            if held == 0 {
                b.clear();
            }
            b.extend_from_slice(chunk);
            b.len()
        });
        let raw = match slot {
            0 => drive::downstream_data(self.id, size, eos),
            _ => drive::upstream_data(self.id, size, eos),
        };
        let result = action(raw);
        self.held[slot] = if result == Action::Pause { size } else { 0 };
        result
    }
}

impl Drop for MockConnection {
    /// Ends the connection: `on_done`, `on_log`, `on_delete`.
    fn drop(&mut self) {
        drive::finish_connection(self.id);
    }
}
