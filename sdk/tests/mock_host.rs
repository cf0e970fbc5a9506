//! The SDK's logic, natively, against the in-process mock host: every feature
//! family through the same dispatcher Envoy drives.

use std::rc::Rc;
use std::time::Duration;

use weir::testing::{Action, MockHost};
use weir::{
    BufferBody, CalloutResponse, CalloutToken, Error, Flow, GrpcCall, GrpcResponse, GrpcToken,
    HttpCall, HttpFilter, IntoLocalReply, LocalReply, Plugin, PluginContext, RequestBody,
    RequestHeaders, RequestTrailers, ResponseBody, ResponseHeaders, ResponseTrailers, Result,
    SharedQueue, Timer, metrics::Counter, properties, shared_data,
};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    limit: usize,
    cluster: String,
}

/// Exercises headers, query parameters, trailers, buffering and errors.
struct Headers {
    config: Rc<Config>,
    id: Option<String>,
}

enum Denied {
    NoToken,
}

impl IntoLocalReply for Denied {
    fn into_local_reply(self) -> LocalReply {
        match self {
            Denied::NoToken => LocalReply::new(401)
                .header("www-authenticate", "Bearer")
                .body("token required"),
        }
    }
}

impl HttpFilter for Headers {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self { config, id: None }
    }

    fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
        if req.path_only()?.as_deref() == Some("/private") && req.get("authorization")?.is_none() {
            return Err(Error::respond(Denied::NoToken));
        }
        if req.path_only()?.as_deref() == Some("/broken") {
            // A host refusal deep in the filter: becomes a 500, never a panic.
            req.get_bytes("\u{0}")?;
            return Err(Error::respond(LocalReply::new(418)));
        }
        self.id = req.query_param("id")?;
        let tags = req.get_all("x-tag")?;
        req.set("x-tags", tags.join(","))?;
        req.remove("x-tag")?;
        if req.method()?.as_deref() == Some("POST") {
            req.buffer_body(BufferBody::up_to(self.config.limit).will_modify())?;
        }
        Ok(Flow::Continue)
    }

    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        let text = body.text()?;
        body.replace(text.to_uppercase())?;
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, res: &mut ResponseHeaders) -> Result<Flow> {
        if let Some(id) = &self.id {
            res.set("x-id", id)?;
        }
        let status = res.status()?.unwrap_or(0);
        res.set("x-status-seen", status.to_string())?;
        Ok(Flow::Continue)
    }

    fn on_response_trailers(&mut self, trailers: &mut ResponseTrailers) -> Result<Flow> {
        trailers.add("x-trailer-seen", "1")?;
        Ok(Flow::Continue)
    }
}

#[test]
fn headers_query_and_trailers() {
    let host = MockHost::new();
    let mut plugin = host.load::<Headers>(r#"{"limit": 8}"#).expect("loads");
    let stream = plugin.stream();
    host.set_request_headers(&[
        (":method", "GET"),
        (":path", "/items?id=a%20b&x=1"),
        ("x-tag", "one"),
        ("X-Tag", "two"),
    ]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header("x-tags").as_deref(), Some("one,two"));
    assert_eq!(host.request_header("x-tag"), None);
    host.set_response_headers(&[(":status", "204")]);
    assert_eq!(stream.response_headers(false), Action::Continue);
    assert_eq!(host.response_header("x-id").as_deref(), Some("a b"));
    assert_eq!(
        host.response_header("x-status-seen").as_deref(),
        Some("204")
    );
    host.set_response_trailers(&[("grpc-status", "0")]);
    assert_eq!(stream.response_trailers(), Action::Continue);
}

#[test]
fn errors_become_the_replies_they_carry() {
    let host = MockHost::new();
    let mut plugin = host.load::<Headers>("{}").expect("loads");
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET"), (":path", "/private")]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    let reply = host.take_local_reply().expect("a reply");
    assert_eq!(reply.status, 401);
    assert_eq!(reply.body, b"token required");
    assert_eq!(reply.headers[0].0, "www-authenticate");
    // A carried reply is not an error worth logging.
    assert!(host.logs().is_empty(), "{:?}", host.logs());
}

#[test]
fn whole_body_buffering_and_the_limit() {
    let host = MockHost::new();
    let mut plugin = host.load::<Headers>(r#"{"limit": 8}"#).expect("loads");
    let mut stream = plugin.stream();
    host.set_request_headers(&[(":method", "POST"), (":path", "/"), ("content-length", "6")]);
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(
        host.request_header("content-length"),
        None,
        "removed while mutable"
    );
    assert_eq!(stream.request_body(b"abc", false), Action::Pause);
    assert_eq!(stream.request_body(b"def", true), Action::Continue);
    assert_eq!(host.request_body(), b"ABCDEF");

    let mut big = plugin.stream();
    assert_eq!(big.request_headers(false), Action::Continue);
    assert_eq!(big.request_body(b"0123456789", false), Action::Pause);
    let reply = host.take_local_reply().expect("413");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (413, "weir_body_too_large")
    );
}

#[test]
fn invalid_config_names_the_field() {
    let host = MockHost::new();
    let err = host
        .load::<Headers>(r#"{"limit": "x"}"#)
        .expect_err("rejected");
    assert!(err.contains("invalid configuration at `limit`"), "{err}");
}

/// Sends a callout from the request and answers with what came back.
struct Authorizer(Rc<Config>);

impl HttpFilter for Authorizer {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self(config)
    }

    fn on_request_headers(&mut self, _: &mut RequestHeaders) -> Result<Flow> {
        HttpCall::get(self.0.cluster.as_str(), "/check")
            .header("x-from", "filter")
            .timeout(Duration::from_millis(250))
            .send()?;
        Ok(Flow::Pause)
    }

    fn on_callout_response(
        &mut self,
        _: CalloutToken,
        response: &CalloutResponse,
        req: &mut RequestHeaders,
    ) -> Result<Flow> {
        match response.status()? {
            Some(200) => {
                req.set("x-user", response.body()?)?;
                Ok(Flow::Continue)
            }
            None => Ok(Flow::Respond(LocalReply::new(503))),
            Some(_) => Ok(Flow::Respond(LocalReply::new(403))),
        }
    }
}

#[test]
fn callouts_pause_and_resume_the_stream() {
    let host = MockHost::new();
    let mut plugin = host
        .load::<Authorizer>(r#"{"cluster": "auth"}"#)
        .expect("loads");
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET"), (":path", "/")]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    assert_eq!((call.cluster.as_str(), call.timeout_ms), ("auth", 250));
    assert!(
        call.headers
            .contains(&(":authority".into(), b"auth".to_vec()))
    );
    stream.callout_response(call.token, Some((200, &[], b"alice")));
    assert_eq!(host.request_header("x-user").as_deref(), Some("alice"));
    assert_eq!(host.resumed_requests(), 1);

    let failed = plugin.stream();
    assert_eq!(failed.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a callout");
    failed.callout_response(call.token, None);
    assert_eq!(host.take_local_reply().map(|r| r.status), Some(503));
}

#[test]
fn refused_callouts_are_errors_not_panics() {
    let host = MockHost::new();
    let mut plugin = host
        .load::<Authorizer>(r#"{"cluster": "unknown-cluster"}"#)
        .expect("loads");
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET"), (":path", "/")]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    let reply = host.take_local_reply().expect("500");
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (500, "weir_filter_error")
    );
    let logs = host.logs();
    assert!(
        logs.iter()
            .any(|(_, l)| l.contains("is the cluster defined?")),
        "{logs:?}"
    );
}

/// A plugin with two timers, a plugin-level callout and a queue.
struct Refresher {
    fast: Timer,
    slow: Timer,
    ticks: Counter,
    queue: SharedQueue,
}

struct Passthrough;

impl HttpFilter for Passthrough {
    type Config = Config;
    fn new(_: Rc<Config>) -> Self {
        Self
    }
}

impl Plugin for Refresher {
    type Config = Config;

    fn start(_: &Rc<Config>, ctx: &mut PluginContext) -> Result<Self> {
        Ok(Self {
            fast: ctx.every(Duration::from_millis(100)),
            slow: ctx.every(Duration::from_millis(250)),
            ticks: Counter::with_labels("refresher_ticks", &[("timer", "fast")])?,
            queue: SharedQueue::register("work")?,
        })
    }

    fn on_timer(&mut self, timer: Timer, _: &mut PluginContext) -> Result<()> {
        if timer == self.fast {
            self.ticks.inc()?;
        }
        if timer == self.slow {
            HttpCall::get("keys", "/jwks").send()?;
        }
        Ok(())
    }

    fn on_callout_response(
        &mut self,
        _: CalloutToken,
        response: &CalloutResponse,
        _: &mut PluginContext,
    ) -> Result<()> {
        shared_data::set("jwks", &response.body()?, None)?;
        self.queue.enqueue(b"refreshed")?;
        Ok(())
    }
}

#[test]
fn plugin_timers_callouts_shared_data_and_queues() {
    let host = MockHost::new();
    let plugin = host
        .load_with_plugin::<Passthrough, Refresher>("{}")
        .expect("loads");
    assert_eq!(host.tick_period(), Some(Duration::from_millis(50)));
    for _ in 0..5 {
        host.advance(Duration::from_millis(50));
        plugin.tick();
    }
    assert_eq!(host.metric("refresher_ticks.timer=fast"), Some(2));
    let call = host.calls().pop().expect("the slow timer fetched keys");
    assert_eq!(call.cluster, "keys");
    plugin.callout_response(call.token, Some((200, &[], b"{\"keys\": []}")));
    assert_eq!(
        host.shared_data("jwks").as_deref(),
        Some(&b"{\"keys\": []}"[..])
    );
    assert_eq!(host.queue("work"), vec![b"refreshed".to_vec()]);
}

#[test]
fn shared_data_cas_and_json() {
    let _host = MockHost::new();
    assert_eq!(shared_data::get("k").expect("get"), None);
    assert!(shared_data::set("k", b"1", None).expect("set"));
    let v = shared_data::get("k").expect("get").expect("present");
    assert!(shared_data::set("k", b"2", Some(v.cas)).expect("set"));
    assert!(
        !shared_data::set("k", b"3", Some(v.cas)).expect("stale cas"),
        "CAS mismatch"
    );
    let n: u64 =
        shared_data::update_json("n", 3, |n: Option<u64>| n.unwrap_or(0) + 1).expect("update");
    let m: u64 =
        shared_data::update_json("n", 3, |n: Option<u64>| n.unwrap_or(0) + 1).expect("update");
    assert_eq!((n, m), (1, 2));
}

#[test]
fn properties_are_decoded_as_envoy_encodes_them() {
    let host = MockHost::new();
    host.set_property(&["source", "address"], b"10.0.0.1:5000");
    host.set_property(&["source", "port"], &5000i64.to_le_bytes());
    host.set_property(&["connection", "mtls"], &[1]);
    host.set_property(
        &["request", "time"],
        &1_700_000_000_000_000_000i64.to_le_bytes(),
    );
    assert_eq!(
        properties::source_address().expect("ok").as_deref(),
        Some("10.0.0.1:5000")
    );
    assert_eq!(properties::source_port().expect("ok"), Some(5000));
    assert_eq!(properties::connection_mtls().expect("ok"), Some(true));
    assert_eq!(
        properties::request_time().expect("ok"),
        Some(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert_eq!(properties::route_name().expect("ok"), None);
    host.set_property(&["source", "port"], b"short");
    assert!(
        properties::source_port().is_err(),
        "wrong width is an error"
    );
    properties::set("tenant", b"blue").expect("set");
    assert_eq!(host.property(&["tenant"]).as_deref(), Some(&b"blue"[..]));
}

#[test]
fn metrics_clock_log_level_and_foreign_functions() {
    let host = MockHost::new();
    let gauge = weir::metrics::Gauge::new("inflight").expect("define");
    gauge.add(3).expect("add");
    gauge.add(-1).expect("sub");
    assert_eq!(gauge.value().expect("get"), 2);
    let counter = Counter::new("requests").expect("define");
    counter.add(2).expect("add");
    assert_eq!(counter.value().expect("get"), 2);
    // Envoy refuses a counter increment of 0; the SDK makes it a no-op.
    counter.add(0).expect("adding nothing is fine");
    assert_eq!(counter.value().expect("get"), 2);
    assert!(counter.add(u64::MAX).is_ok(), "saturates");
    assert!(Counter::with_labels("x", &[("bad key", "v")]).is_err());
    let before = weir::now().expect("clock");
    host.advance(Duration::from_secs(2));
    assert_eq!(
        weir::now().expect("clock").duration_since(before).ok(),
        Some(Duration::from_secs(2))
    );
    host.set_log_level(3);
    assert_eq!(weir::log_level().expect("level"), log::Level::Warn);
    host.register_foreign("reverse", |arg| Some(arg.iter().rev().copied().collect()));
    assert_eq!(weir::call_foreign("reverse", b"abc").expect("call"), b"cba");
    let err = weir::call_foreign("missing", b"").expect_err("unknown");
    assert_eq!(err.host_status().map(|s| s.0), Some(1));
}

struct GrpcFilter;

impl HttpFilter for GrpcFilter {
    type Config = Config;
    fn new(_: Rc<Config>) -> Self {
        Self
    }
    fn on_request_headers(&mut self, _: &mut RequestHeaders) -> Result<Flow> {
        GrpcCall::new("authz", "pkg.Auth", "Check")
            .message(vec![1, 2])
            .send()?;
        Ok(Flow::Pause)
    }
    fn on_grpc_response(
        &mut self,
        _: GrpcToken,
        response: &GrpcResponse,
        _: &mut RequestHeaders,
    ) -> Result<Flow> {
        if response.is_ok() {
            Ok(Flow::Continue)
        } else {
            Ok(Flow::Respond(LocalReply::grpc(response.status(), "denied")))
        }
    }
}

#[test]
fn grpc_calls_are_dispatched() {
    let host = MockHost::new();
    let mut plugin = host.load::<GrpcFilter>("{}").expect("loads");
    let stream = plugin.stream();
    host.set_request_headers(&[(":method", "GET"), (":path", "/")]);
    assert_eq!(stream.request_headers(true), Action::Pause);
    let call = host.calls().pop().expect("a gRPC call");
    assert_eq!(
        (call.cluster.as_str(), call.grpc_method.as_str()),
        ("authz", "pkg.Auth/Check")
    );
    assert_eq!(call.body, vec![1, 2]);
}

/// Holds the request headers while it buffers the body, then sets headers from it.
struct HoldHeaders;

impl HttpFilter for HoldHeaders {
    type Config = Config;

    fn new(_: Rc<Config>) -> Self {
        Self
    }

    fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
        req.buffer_body(BufferBody::up_to(64))?;
        Ok(Flow::Pause)
    }

    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        let upper = body.text()?.to_uppercase() + "!";
        body.replace(&upper)?;
        let mut headers = body.held_headers();
        headers.set("content-length", upper.len().to_string())?;
        headers.set("x-first-byte", &upper[..1])?;
        Ok(Flow::Continue)
    }
}

#[test]
fn held_headers_are_the_streams_headers_in_the_body_callback() {
    let host = MockHost::new();
    let mut plugin = host.load::<HoldHeaders>("{}").expect("loads");
    let mut stream = plugin.stream();
    host.set_request_headers(&[(":method", "POST"), ("content-length", "5")]);
    assert_eq!(stream.request_headers(false), Action::Pause);
    assert_eq!(stream.request_body(b"ab", false), Action::Pause);
    assert_eq!(stream.request_body(b"cde", true), Action::Continue);
    assert_eq!(host.request_body(), b"ABCDE!");
    assert_eq!(host.request_header("content-length").as_deref(), Some("6"));
    assert_eq!(host.request_header("x-first-byte").as_deref(), Some("A"));
}

/// Asks for whole bodies and logs what it gets, in order.
struct WholeBodies;

impl HttpFilter for WholeBodies {
    type Config = Config;

    fn new(_: Rc<Config>) -> Self {
        Self
    }

    fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
        req.buffer_body(BufferBody::up_to(64).will_modify())?;
        Ok(Flow::Continue)
    }

    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        let text = body.text()?;
        log::info!("request body {text:?} end={}", body.end_of_stream());
        body.replace(text.to_uppercase())?;
        Ok(Flow::Continue)
    }

    fn on_request_trailers(&mut self, trailers: &mut RequestTrailers) -> Result<Flow> {
        log::info!("request trailers {:?}", trailers.get("x-t")?);
        Ok(Flow::Continue)
    }

    fn on_response_headers(&mut self, res: &mut ResponseHeaders) -> Result<Flow> {
        res.buffer_body(BufferBody::up_to(64))?;
        Ok(Flow::Continue)
    }

    fn on_response_body(&mut self, body: &mut ResponseBody) -> Result<Flow> {
        log::info!("response body {:?}", body.text()?);
        Ok(Flow::Pause)
    }

    fn on_response_trailers(&mut self, _: &mut ResponseTrailers) -> Result<Flow> {
        log::info!("response trailers");
        Ok(Flow::Continue)
    }
}

#[test]
fn a_whole_body_is_handed_over_before_the_trailers() {
    let host = MockHost::new();
    let mut plugin = host.load::<WholeBodies>("{}").expect("loads");
    let mut stream = plugin.stream();
    host.set_request_headers(&[(":method", "POST"), (":path", "/")]);
    assert_eq!(stream.request_headers(false), Action::Continue);
    // With trailers, no chunk ends the stream: each one is held.
    assert_eq!(stream.request_body(b"ab", false), Action::Pause);
    assert_eq!(stream.request_body(b"cd", false), Action::Pause);
    host.set_request_trailers(&[("x-t", "1")]);
    assert_eq!(stream.request_trailers(), Action::Continue);
    assert_eq!(host.request_body(), b"ABCD");
    // A body callback that pauses keeps the trailers callback from running.
    host.set_response_headers(&[(":status", "200")]);
    assert_eq!(stream.response_headers(false), Action::Continue);
    assert_eq!(stream.response_body(b"xyz", false), Action::Pause);
    host.set_response_trailers(&[("grpc-status", "0")]);
    assert_eq!(stream.response_trailers(), Action::Pause);
    let logs: Vec<String> = host.logs().into_iter().map(|(_, line)| line).collect();
    assert_eq!(
        logs,
        [
            "request body \"abcd\" end=true",
            "request trailers Some(\"1\")",
            "response body \"xyz\"",
        ]
    );
}

#[test]
fn without_trailers_a_whole_body_comes_once_at_the_end() {
    let host = MockHost::new();
    let mut plugin = host.load::<WholeBodies>("{}").expect("loads");
    let mut stream = plugin.stream();
    host.set_request_headers(&[(":method", "POST"), (":path", "/")]);
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(stream.request_body(b"ab", false), Action::Pause);
    assert_eq!(stream.request_body(b"", true), Action::Continue);
    // Trailers that never come: nothing more is handed over.
    let logs: Vec<String> = host.logs().into_iter().map(|(_, line)| line).collect();
    assert_eq!(logs, ["request body \"ab\" end=true"]);
}

/// Several plugins in one test (one thread): each gets its own contexts.
#[test]
fn several_plugins_load_in_one_test() {
    let host = MockHost::new();
    let mut first = host.load::<HoldHeaders>("{}").expect("loads");
    let stream = first.stream();
    host.set_request_headers(&[(":method", "POST")]);
    assert_eq!(stream.request_headers(false), Action::Pause);
    drop(stream);
    let host = MockHost::new();
    let mut second = host.load::<HoldHeaders>("{}").expect("loads again");
    let mut stream = second.stream();
    host.set_request_headers(&[(":method", "POST")]);
    assert_eq!(stream.request_headers(false), Action::Pause);
    assert_eq!(stream.request_body(b"x", true), Action::Continue);
    assert_eq!(host.request_body(), b"X!");
}

/// `vm_config.configuration`, typed.
#[derive(serde::Deserialize, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
struct VmSettings {
    region: String,
    #[serde(default)]
    zones: Vec<String>,
}

/// Reads the VM configuration per request; takes no plugin configuration.
struct Regional;

impl HttpFilter for Regional {
    type Config = ();
    fn new(_: Rc<()>) -> Self {
        Self
    }
    fn on_request_headers(&mut self, req: &mut RequestHeaders) -> Result<Flow> {
        let vm =
            weir::vm_config::<VmSettings>().ok_or_else(|| Error::respond(LocalReply::new(500)))?;
        req.set("x-region", &vm.region)?;
        req.set("x-zones", vm.zones.join(","))?;
        Ok(Flow::Continue)
    }
}

#[test]
fn a_typed_vm_config_is_parsed_at_vm_start() {
    let host = MockHost::new();
    let mut plugin = host
        .load_with_vm_config::<Regional, weir::NoPlugin<()>, VmSettings>(
            r#"{"region": "eu", "zones": ["a", "b"]}"#,
            "",
        )
        .expect("starts");
    assert!(
        weir::vm_config::<String>().is_none(),
        "not the declared type"
    );
    let stream = plugin.stream();
    host.set_request_headers(&[(":path", "/")]);
    assert_eq!(stream.request_headers(true), Action::Continue);
    assert_eq!(host.request_header("x-region").as_deref(), Some("eu"));
    assert_eq!(host.request_header("x-zones").as_deref(), Some("a,b"));

    // A bad VM configuration fails the VM start, the log naming the field.
    let host = MockHost::new();
    let err = host
        .load_with_vm_config::<Regional, weir::NoPlugin<()>, VmSettings>(
            r#"{"region": "eu", "zones": [1]}"#,
            "{}",
        )
        .expect_err("bad zones");
    assert!(err.contains("VM configuration"), "{err}");
    assert!(err.contains("zones[0]"), "{err}");
    assert!(weir::vm_config::<VmSettings>().is_none());

    // An empty VM configuration is `{}`: here a missing field.
    let host = MockHost::new();
    let err = host
        .load_with_vm_config::<Regional, weir::NoPlugin<()>, VmSettings>("", "")
        .expect_err("region is required");
    assert!(err.contains("missing field `region`"), "{err}");
}

/// `type Config = ()` takes an empty configuration, `{}`, and refuses others.
#[test]
fn a_filter_without_configuration() {
    let host = MockHost::new();
    for config in ["", "{}"] {
        host.load_with_vm_config::<Regional, weir::NoPlugin<()>, VmSettings>(
            r#"{"region": "eu"}"#,
            config,
        )
        .expect("no configuration");
    }
    let err = host
        .load_with_vm_config::<Regional, weir::NoPlugin<()>, VmSettings>(
            r#"{"region": "eu"}"#,
            r#"{"limit": 3}"#,
        )
        .expect_err("takes none");
    assert!(err.contains("invalid configuration"), "{err}");
}

/// Strips a 2-byte frame header from each request body chunk.
struct StripHeader;

impl HttpFilter for StripHeader {
    type Config = Config;

    fn new(_: Rc<Config>) -> Self {
        Self
    }

    fn on_request_body(&mut self, body: &mut RequestBody) -> Result<Flow> {
        body.drain(2)?;
        log::info!("left {} bytes", body.len());
        Ok(Flow::Continue)
    }
}

#[test]
fn drain_removes_the_front_of_a_body_chunk() {
    let host = MockHost::new();
    let mut plugin = host.load::<StripHeader>("{}").expect("loads");
    let mut stream = plugin.stream();
    host.set_request_headers(&[(":method", "POST")]);
    assert_eq!(stream.request_headers(false), Action::Continue);
    assert_eq!(stream.request_body(b"##data", false), Action::Continue);
    assert_eq!(host.request_body(), b"data");
    // Draining more than there is empties the chunk.
    assert_eq!(stream.request_body(b"#", true), Action::Continue);
    assert_eq!(host.request_body(), b"");
    let lines: Vec<String> = host.logs().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, ["left 4 bytes", "left 0 bytes"]);
}
