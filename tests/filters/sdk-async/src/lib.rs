//! `sdk-async`: exercises the weir SDK's async tasks for the harness tests and
//! the conformance suite. Each request path picks a behaviour; every task
//! forwards `x-probe-id` to its callouts and logs what it saw:
//!
//! * `/one`: awaits `GET /authorize` on `cluster` with the request's `x-user`.
//!   A 200 answer lets the request through with `x-auth` set to the answer's
//!   body; anything else is answered 403 through the filter's own error type.
//! * `/sync`: a task that does not wait: the callback's own answer.
//! * `/join`: `GET /a` and `GET /b` in flight together (`try_join`), their
//!   bodies in `x-a` and `x-b`.
//! * `/select`: `GET /slow` against a `wait_ms` timer (`select`): the answer in
//!   `x-answer`, or 504 when the timer wins.
//! * `/late`: as `/select`, but when the timer wins the request goes on with
//!   `x-late: timer`; the call's answer arrives later and is ignored.
//! * `/timeout`: `GET /slow` within `wait_ms` (`timeout`): the answer in
//!   `x-answer`, or the timeout error as a 500.
//! * `/sleep`: waits `wait_ms`, then sets `x-slept`.
//! * `/grpc`: awaits `pkg.Authz/Check` on `grpc_cluster` with the user as the
//!   message: the reply in `x-grpc`; status 7 is answered 403, other errors 500.
//! * `/value`: `x-value` from shared data `value` (`none` before the first
//!   refresh), which a plugin task refreshes from `GET /value` every
//!   `refresh_ms` (0: no plugin task).
//!
//! A request with `x-audit` also awaits `POST /audit` in its response headers
//! and sets `x-audited` on the response.

use std::rc::Rc;
use std::time::Duration;

use serde::Deserialize;
use weir::task::{Either, select, sleep, timeout, try_join};
use weir::{
    Error, Flow, GrpcCall, HttpCall, HttpFilter, IntoLocalReply, LocalReply, Plugin, PluginContext,
    RequestHeaders, ResponseHeaders, Result, shared_data,
};

/// The plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster HTTP callouts go to.
    pub cluster: String,
    /// The cluster gRPC calls go to.
    #[serde(default = "default_grpc")]
    pub grpc_cluster: String,
    /// The timer of `/select`, `/late`, `/timeout` and `/sleep`, in ms.
    #[serde(default = "default_wait")]
    pub wait_ms: u64,
    /// How often the plugin task refreshes `value` (0: never).
    #[serde(default)]
    pub refresh_ms: u64,
}

fn default_grpc() -> String {
    "grpc".to_owned()
}

fn default_wait() -> u64 {
    200
}

/// The filter's own refusal, turned into a reply by `IntoLocalReply`.
enum Denied {
    Status(u16),
}

impl IntoLocalReply for Denied {
    fn into_local_reply(self) -> LocalReply {
        match self {
            Denied::Status(status) => LocalReply::new(403)
                .header("x-denied-by", status.to_string())
                .body("denied")
                .details("sdk_async_denied"),
        }
    }
}

/// Logs when a task's future is dropped: finished, or cancelled with its stream.
struct Over(String);

impl Drop for Over {
    fn drop(&mut self) {
        log::info!("task over: {}", self.0);
    }
}

/// The filter.
#[derive(Debug)]
pub struct SdkAsync {
    config: Rc<Config>,
    audit: bool,
    probe_id: Option<String>,
}

/// A callout on `cluster` carrying the scenario's `x-probe-id`.
fn call(cluster: &str, method: &str, path: &str, probe_id: Option<&str>) -> HttpCall {
    let call = HttpCall::new(cluster, method, path).authority("async.test");
    match probe_id {
        Some(id) => call.header("x-probe-id", id),
        None => call,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl HttpFilter for SdkAsync {
    type Config = Config;

    fn new(config: Rc<Config>) -> Self {
        Self {
            config,
            audit: false,
            probe_id: None,
        }
    }

    fn on_request_headers(&mut self, headers: &mut RequestHeaders) -> Result<Flow> {
        self.audit = headers.contains("x-audit")?;
        self.probe_id = headers.get("x-probe-id")?;
        let path = headers.path()?.unwrap_or_default();
        if path == "/value" {
            let value = shared_data::get("value")?.map(|v| text(&v.value));
            headers.set("x-value", value.as_deref().unwrap_or("none"))?;
            return Ok(Flow::Continue);
        }
        let user = headers.get("x-user")?.unwrap_or_default();
        let cluster = self.config.cluster.clone();
        let grpc_cluster = self.config.grpc_cluster.clone();
        let wait = Duration::from_millis(self.config.wait_ms);
        let mut held = headers.for_task();
        let probe_id = self.probe_id.clone();
        Ok(Flow::wait(async move {
            let id = probe_id.as_deref();
            let _over = Over(path.clone());
            match path.as_str() {
                "/one" => {
                    let answer = call(&cluster, "GET", "/authorize", id)
                        .header("x-user", &user)
                        .await?;
                    log::info!("one: answered {}", answer.status());
                    if answer.status() != 200 {
                        return Err(Error::respond(Denied::Status(answer.status())));
                    }
                    held.set("x-auth", answer.body())?;
                    Ok(Flow::Continue)
                }
                "/sync" => {
                    held.set("x-sync", "done")?;
                    Ok(Flow::Continue)
                }
                "/join" => {
                    let a = call(&cluster, "GET", "/a", id).into_future();
                    let b = call(&cluster, "GET", "/b", id).into_future();
                    let (a, b) = try_join(a, b).await?;
                    log::info!("join: answered {} and {}", a.status(), b.status());
                    held.set("x-a", a.body())?;
                    held.set("x-b", b.body())?;
                    Ok(Flow::Continue)
                }
                "/select" | "/late" => {
                    let slow = call(&cluster, "GET", "/slow", id).into_future();
                    match select(slow, sleep(wait)).await {
                        Either::Left((answer, _)) => {
                            let answer = answer?;
                            log::info!("select: the call won ({})", answer.status());
                            held.set("x-answer", answer.body())?;
                            Ok(Flow::Continue)
                        }
                        Either::Right(((), _)) if path == "/late" => {
                            log::info!("select: the timer won, going on");
                            held.set("x-late", "timer")?;
                            Ok(Flow::Continue)
                        }
                        Either::Right(((), _)) => {
                            log::info!("select: the timer won");
                            Ok(Flow::Respond(LocalReply::new(504).body("too slow")))
                        }
                    }
                }
                "/timeout" => {
                    let answer = timeout(wait, call(&cluster, "GET", "/slow", id)).await??;
                    log::info!("timeout: answered {}", answer.status());
                    held.set("x-answer", answer.body())?;
                    Ok(Flow::Continue)
                }
                "/sleep" => {
                    sleep(wait).await;
                    log::info!("sleep: woke up");
                    held.set("x-slept", wait.as_millis().to_string())?;
                    Ok(Flow::Continue)
                }
                "/grpc" => {
                    let mut grpc = GrpcCall::new(&grpc_cluster, "pkg.Authz", "Check")
                        .message(user.into_bytes())
                        .timeout(Duration::from_secs(5));
                    if let Some(id) = id {
                        grpc = grpc.metadata("x-probe-id", id);
                    }
                    match grpc.await {
                        Ok(reply) => {
                            log::info!("grpc: {} bytes", reply.len());
                            held.set("x-grpc", reply)?;
                            Ok(Flow::Continue)
                        }
                        Err(e) if e.grpc_status() == Some(7) => {
                            log::info!("grpc: {e}");
                            Ok(Flow::Respond(LocalReply::new(403).body("denied")))
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => Ok(Flow::Continue),
            }
        }))
    }

    fn on_response_headers(&mut self, headers: &mut ResponseHeaders) -> Result<Flow> {
        if !self.audit {
            return Ok(Flow::Continue);
        }
        let status = headers.status()?.unwrap_or_default();
        let audit = call(
            &self.config.cluster,
            "POST",
            "/audit",
            self.probe_id.as_deref(),
        )
        .body(status.to_string());
        let mut held = headers.for_task();
        Ok(Flow::wait(async move {
            let _over = Over("audit".to_owned());
            let answer = audit.await?;
            log::info!("audit: answered {}", answer.status());
            held.set("x-audited", answer.body())?;
            Ok(Flow::Continue)
        }))
    }
}

impl Drop for SdkAsync {
    fn drop(&mut self) {
        log::info!("stream done");
    }
}

/// Refreshes shared data `value` from `GET /value` on `cluster` every
/// `refresh_ms`, in a task (the first time after one period: clusters may not
/// be ready while the plugin starts).
#[derive(Debug)]
pub struct Refresher;

impl Plugin for Refresher {
    type Config = Config;

    fn start(config: &Rc<Config>, ctx: &mut PluginContext) -> Result<Self> {
        if config.refresh_ms == 0 {
            return Ok(Refresher);
        }
        let every = Duration::from_millis(config.refresh_ms);
        let cluster = config.cluster.clone();
        ctx.spawn(async move {
            let mut round = 0u32;
            loop {
                sleep(every).await;
                round += 1;
                match call(&cluster, "GET", "/value", None).await {
                    Ok(answer) if answer.is_success() => {
                        shared_data::set("value", answer.body(), None)?;
                        log::info!("refresh {round}: {}", text(answer.body()));
                    }
                    Ok(answer) => log::warn!("refresh {round}: status {}", answer.status()),
                    Err(e) => log::warn!("refresh {round}: {e}"),
                }
            }
        });
        Ok(Refresher)
    }
}

weir::export_http_filter!(SdkAsync, plugin = Refresher);
