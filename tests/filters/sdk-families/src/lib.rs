//! Test filter: the weir SDK's host-call families in Envoy and in the harness.
//!
//! The request's `x-op` header picks what the filter does; everything it observes
//! is logged at info level, so the conformance suite compares it line by line:
//! - `props`: typed properties (method, path, plugin name, route, cluster);
//! - `shared`: a CAS read-modify-write of shared data, and a raw read back;
//! - `metric`: a labelled counter incremented twice and read back;
//! - `deny`: an error carrying a 401 reply with `www-authenticate`;
//! - `fail`: a host refusal (reading the whole `request` map), which becomes a 500;
//! - `query`: the decoded query parameters;
//! - `reply`: a local reply with headers, details and a gRPC status;
//! - `queue`: resolves the plugin's shared queue, enqueues two jobs (the plugin
//!   logs them from `on_queue_ready`) and looks up a queue that does not exist;
//! - `vm`: the typed VM configuration (`vm_config.configuration`, parsed into
//!   [`VmSettings`] when the VM started);
//! - `zip`: the host's `compress` and `uncompress` foreign functions, and an
//!   unknown one;
//! - `grpc`: a unary gRPC call to cluster `grpc` (`pkg.Echo/Say`, the request
//!   path as the message, `x-op` as metadata, `x-timeout-ms` as the timeout,
//!   default 5 s) that holds the request: an OK answer logs the message and
//!   resumes, an error status answers 503 with the status message;
//! - `grpc-nowhere`: a gRPC call to a cluster that does not exist;
//! - `grpc-stream`: a gRPC stream to `pkg.Chat/Talk` that sends `one` and
//!   `two` (half-closing) and holds the request: every event is logged, the
//!   close resumes the request with the messages in `x-grpc-stream`, or answers
//!   503 on an error status;
//! - `trailers`: the request and response trailer views: every entry, one
//!   value, all values of a name, presence, then set, add, remove (and, for
//!   the response, replacing them all), logging the result;
//! - `trailers-body`: asks for the whole request and response bodies, which
//!   come just before the trailers; upper-cases the request body and appends
//!   to the response body.
//!
//! The plugin logs its start, defines a gauge, registers the shared queue
//! `sdk-families-jobs` and, with `{"tick_ms": N}`, runs two logical timers on the
//! one host tick. Each stream ends with `stream done`.

use std::rc::Rc;
use std::time::Duration;

use weir::metrics::{Counter, Gauge};
use weir::{
    BufferBody, Error, Flow, GrpcCall, GrpcResponse, GrpcStream, GrpcStreamEvent,
    GrpcStreamRequest, GrpcToken, Headers, HttpFilter, IntoLocalReply, LocalReply, Plugin,
    PluginContext, RequestBody, RequestHeaders, RequestTrailers, ResponseBody, ResponseHeaders,
    ResponseTrailers, Result, SharedQueue, Timer, properties, shared_data,
};

/// The queue streams hand jobs to the plugin through.
const JOBS: &str = "sdk-families-jobs";

/// The configuration.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Two plugin timers, every `tick_ms` and every `3 * tick_ms`, counted in
    /// `sdk_families_ticks.timer=fast|slow` (off when absent).
    pub tick_ms: Option<u64>,
}

/// The VM configuration: every field optional, so an empty one is valid.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmSettings {
    /// A label the `vm` op logs.
    pub label: Option<String>,
    /// A number the `vm` op logs.
    pub shards: Option<u32>,
}

/// The plugin: logs its start, runs the configured timers.
#[derive(Debug)]
pub struct Families {
    timers: Option<(Timer, Timer)>,
    jobs: SharedQueue,
}

impl Plugin for Families {
    type Config = Config;

    fn start(config: &Rc<Config>, ctx: &mut PluginContext) -> Result<Self> {
        let streams = Gauge::new("sdk_families_streams")?;
        streams.set(0)?;
        log::info!("plugin started, log level {:?}", weir::log_level()?);
        let timers = config.tick_ms.map(|ms| {
            (
                ctx.every(Duration::from_millis(ms)),
                ctx.every(Duration::from_millis(3 * ms)),
            )
        });
        let jobs = SharedQueue::register(JOBS)?;
        Ok(Self { timers, jobs })
    }

    fn on_queue_ready(&mut self, queue: SharedQueue, _: &mut PluginContext) -> Result<()> {
        let which = if queue == self.jobs {
            "jobs"
        } else {
            "another queue"
        };
        while let Some(item) = queue.dequeue()? {
            log::info!("queue ready ({which}): {}", String::from_utf8_lossy(&item));
        }
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, _: &mut PluginContext) -> Result<()> {
        let Some((fast, _)) = self.timers else {
            return Ok(());
        };
        let which = if timer == fast { "fast" } else { "slow" };
        Counter::with_labels("sdk_families_ticks", &[("timer", which)])?.inc()?;
        log::info!("tick {which} at {:?}", weir::now()?);
        Ok(())
    }
}

/// Errors this filter answers with.
#[derive(Debug)]
enum Denied {
    MissingToken,
}

impl IntoLocalReply for Denied {
    fn into_local_reply(self) -> LocalReply {
        match self {
            Denied::MissingToken => LocalReply::new(401)
                .header("www-authenticate", "Bearer error=\"invalid_request\"")
                .body("{\"error\":\"token required\"}")
                .details("sdk_families_denied"),
        }
    }
}

/// The filter.
#[derive(Debug)]
pub struct Filter {
    op: String,
    /// The messages received on the `grpc-stream` stream.
    received: Vec<String>,
}

impl Filter {
    fn props(&self) -> Result<()> {
        log::info!(
            "props: method={:?} url_path={:?} plugin={:?} route={:?} cluster={:?} missing={:?}",
            properties::request_method()?,
            properties::request_url_path()?,
            properties::plugin_name()?,
            properties::route_name()?,
            properties::cluster_name()?,
            properties::get(&["no_such_attribute"])?,
        );
        Ok(())
    }

    fn shared(&self) -> Result<()> {
        let n: u64 =
            shared_data::update_json("sdk-families-hits", 4, |n: Option<u64>| n.unwrap_or(0) + 1)?;
        let raw = shared_data::get("sdk-families-hits")?.map(|v| v.value);
        // Compare-and-swap: a write with a version that is no longer current fails.
        shared_data::set("sdk-families-cas", b"a", None)?;
        let first = shared_data::get("sdk-families-cas")?.map(|v| v.cas);
        let fresh = shared_data::set("sdk-families-cas", b"b", first)?;
        let stale = shared_data::set("sdk-families-cas", b"c", first)?;
        log::info!(
            "shared: hits={n} raw={:?} fresh_cas_written={fresh} stale_cas_written={stale}",
            raw.map(|r| String::from_utf8_lossy(&r).into_owned())
        );
        Ok(())
    }

    fn queue(&self, req: &RequestHeaders) -> Result<()> {
        let path = req.path()?.unwrap_or_default();
        match SharedQueue::resolve("", JOBS)? {
            Some(jobs) => {
                jobs.enqueue(format!("first job for {path}").as_bytes())?;
                jobs.enqueue(b"second job")?;
                log::info!("queue: enqueued two jobs");
            }
            None => log::info!("queue: {JOBS} not found"),
        }
        let missing = SharedQueue::resolve("", "no-such-queue")?;
        log::info!("queue: no-such-queue resolves to {missing:?}");
        Ok(())
    }

    fn zip(&self) -> Result<()> {
        let text = b"weir weir weir weir weir weir";
        let packed = weir::call_foreign("compress", text)?;
        let unpacked = weir::call_foreign("uncompress", &packed)?;
        let unknown = weir::call_foreign("no_such_function", b"")
            .map_err(|e| e.to_string())
            .map(|_| ());
        log::info!(
            "zip: {} bytes packed into {}, round trip {}, unknown function: {unknown:?}",
            text.len(),
            packed.len(),
            if unpacked == text {
                "exact"
            } else {
                "different"
            },
        );
        Ok(())
    }

    /// Reads a trailer map every way the view offers, then changes it.
    fn trailers(which: &str, trailers: &mut Headers) -> Result<()> {
        log::info!(
            "{which} trailers: {} x-t={:?} missing={:?} x-multi={:?} has x-u={}",
            entries(&trailers.all()?),
            trailers.get("X-T")?,
            trailers.get("missing")?,
            trailers.get_all("x-multi")?,
            trailers.contains("x-u")?,
        );
        trailers.set("x-t", "replaced")?;
        trailers.add("x-added", "1")?;
        trailers.add("x-added", b"2")?;
        trailers.remove("x-u")?;
        trailers.remove("not-there")?;
        log::info!("{which} trailers now: {}", entries(&trailers.all()?));
        Ok(())
    }

    fn metric(&self) -> Result<()> {
        let c = Counter::with_labels("sdk_families_ops", &[("op", "metric")])?;
        c.inc()?;
        c.add(2)?;
        // Envoy refuses an increment of 0; weir makes it a no-op.
        c.add(0)?;
        log::info!("metric: defined and incremented");
        Ok(())
    }
}

impl HttpFilter for Filter {
    type Config = Config;

    fn new(_: Rc<Config>) -> Self {
        Self {
            op: String::new(),
            received: Vec::new(),
        }
    }

    fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
        self.op = req.get("x-op")?.unwrap_or_default();
        match self.op.as_str() {
            "props" => self.props()?,
            "shared" => self.shared()?,
            "metric" => self.metric()?,
            "queue" => self.queue(req)?,
            "zip" => self.zip()?,
            "vm" => log::info!("vm: {:?}", weir::vm_config::<VmSettings>()),
            "deny" => return Err(Error::respond(Denied::MissingToken)),
            "fail" => {
                // A whole map cannot be serialized: Envoy refuses the call.
                properties::get(&["request"])?;
            }
            "query" => {
                let params = req.query_params()?;
                log::info!("query: {params:?} path_only={:?}", req.path_only()?);
            }
            "grpc" => {
                let timeout = req
                    .get("x-timeout-ms")?
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(5000);
                let path = req.path()?.unwrap_or_default();
                let token = GrpcCall::new("grpc", "pkg.Echo", "Say")
                    .metadata("x-op", "grpc")
                    .message(path.trim_start_matches('/').as_bytes())
                    .timeout(Duration::from_millis(timeout))
                    .send()?;
                log::info!("grpc: sent, token {token:?}");
                return Ok(Flow::Pause);
            }
            "grpc-stream" => {
                let stream = GrpcStreamRequest::new("grpc", "pkg.Chat", "Talk")
                    .metadata("x-op", "grpc-stream")
                    .open()?;
                stream.send(b"one")?;
                stream.send_last(b"two")?;
                log::info!("grpc-stream: opened {stream:?}");
                return Ok(Flow::Pause);
            }
            "trailers-body" => req.buffer_body(BufferBody::up_to(1024).will_modify())?,
            "grpc-nowhere" => {
                let refused = GrpcCall::new("nowhere", "pkg.Echo", "Say").send();
                log::info!("grpc: {:?}", refused.map_err(|e| e.to_string()));
            }
            "reply" => {
                return Ok(Flow::Respond(
                    LocalReply::new(429)
                        .header("retry-after", "1")
                        .body("slow down")
                        .details("sdk_families_rate_limited"),
                ));
            }
            _ => {}
        }
        req.set("x-op-seen", &self.op)?;
        Ok(Flow::Continue)
    }

    fn on_grpc_response(
        &mut self,
        token: GrpcToken,
        response: &GrpcResponse,
        headers: &mut RequestHeaders,
    ) -> Result<Flow> {
        let message = response.message()?;
        log::info!(
            "grpc: {token:?} status={} ok={} message={:?} status_message={:?}",
            response.status(),
            response.is_ok(),
            String::from_utf8_lossy(&message),
            response.status_message()?,
        );
        if !response.is_ok() {
            return Ok(Flow::Respond(
                LocalReply::new(503)
                    .body(response.status_message()?)
                    .details("sdk_families_grpc_failed"),
            ));
        }
        headers.set("x-grpc-answer", String::from_utf8_lossy(&message).as_ref())?;
        Ok(Flow::Continue)
    }

    fn on_grpc_stream(
        &mut self,
        stream: GrpcStream,
        event: &GrpcStreamEvent,
        headers: &mut RequestHeaders,
    ) -> Result<Flow> {
        match event {
            GrpcStreamEvent::InitialMetadata(n) | GrpcStreamEvent::TrailingMetadata(n) => {
                let names: Vec<String> = event
                    .metadata()?
                    .into_iter()
                    .filter(|(k, _)| k != "x-envoy-upstream-service-time")
                    .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v)))
                    .collect();
                log::info!("grpc-stream: {stream:?} metadata ({n}) {names:?}");
            }
            GrpcStreamEvent::Message(_) => {
                let message = String::from_utf8_lossy(&event.message()?).into_owned();
                log::info!("grpc-stream: message {message:?}");
                self.received.push(message);
            }
            GrpcStreamEvent::Closed(status) => {
                let message = event.status_message()?;
                log::info!("grpc-stream: closed {status} {message:?}");
                stream.close()?;
                if *status != 0 {
                    return Ok(Flow::Respond(
                        LocalReply::new(503)
                            .body(message)
                            .details("sdk_families_grpc_failed"),
                    ));
                }
                headers.set("x-grpc-stream", self.received.join(","))?;
                return Ok(Flow::Continue);
            }
            _ => {}
        }
        Ok(Flow::Pause)
    }

    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        if self.op == "trailers-body" {
            let text = body.text()?;
            log::info!(
                "request body: {text:?} end_of_stream={}",
                body.end_of_stream()
            );
            body.replace(text.to_uppercase())?;
        }
        Ok(Flow::Continue)
    }

    fn on_request_trailers(&mut self, trailers: &mut RequestTrailers) -> Result<Flow> {
        match self.op.as_str() {
            "trailers" => Self::trailers("request", trailers)?,
            "trailers-body" => log::info!("request trailers: {}", entries(&trailers.all()?)),
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, res: &mut ResponseHeaders) -> Result<Flow> {
        log::info!("response: status={:?} op={}", res.status()?, self.op);
        if self.op == "trailers-body" {
            res.buffer_body(BufferBody::up_to(1024).will_modify())?;
        }
        Ok(Flow::Continue)
    }

    fn on_response_body(&mut self, body: &mut ResponseBody) -> Result<Flow> {
        if self.op == "trailers-body" {
            log::info!(
                "response body: {:?} end_of_stream={}",
                body.text()?,
                body.end_of_stream()
            );
            body.append(" (seen)")?;
        }
        Ok(Flow::Continue)
    }

    fn on_response_trailers(&mut self, trailers: &mut ResponseTrailers) -> Result<Flow> {
        match self.op.as_str() {
            "trailers" => {
                Self::trailers("response", trailers)?;
                trailers.set_all(&[("grpc-status", "0"), ("x-final", "yes")])?;
                log::info!("response trailers replaced: {}", entries(&trailers.all()?));
            }
            "trailers-body" => log::info!("response trailers: {}", entries(&trailers.all()?)),
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn on_done(&mut self) {
        log::info!("stream done");
    }
}

/// `name=value` entries, in order, joined by `,`.
fn entries(pairs: &[(String, Vec<u8>)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        .collect::<Vec<_>>()
        .join(",")
}

weir::export_http_filter!(Filter, plugin = Families, vm_config = VmSettings);
