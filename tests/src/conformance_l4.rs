//! The conformance suite's network (L4) kind: a suite with `connections` runs
//! each connection through weir-harness's `NetworkChain` and through real Envoy
//! (`envoy/conformance-l4.yaml`: the network wasm filter, then `tcp_proxy` to an
//! in-process TCP upstream on loopback), and compares what the client received,
//! what the upstream received, whether each saw the end of the stream, and the
//! plugins' log lines.
//!
//! The upstream follows the same script on both sides ([`UpstreamSpec`]). On the
//! Envoy side the client pauses after connecting and after each step so that
//! Envoy reads each chunk on its own, as the harness delivers it; the
//! harness's virtual clock advances by the same pauses, so that timers and
//! slow callouts fall between the same steps.
//!
//! The `callout` cluster answers every HTTP callout `200` with the body
//! `callout ok`; a callout whose path starts `/delay/<ms>` is answered that
//! many milliseconds late (a probe's `callt:` timeout shorter than that gets
//! Envoy's `504`).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use weir_harness::{LogLevel, NetworkConfig, TcpReply, TcpUpstream};

use crate::conformance::{Report, Suite};
use crate::envoy::{Envoy, Rebind};

/// How long Envoy gets to handle one client step.
const STEP_PAUSE: Duration = Duration::from_millis(150);
/// How long the upstream waits between its last data and closing, so that
/// Envoy reads them separately.
const CLOSE_PAUSE: Duration = Duration::from_millis(100);

/// One connection: what the client does, and how the upstream answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionScenario {
    /// What it checks.
    pub name: String,
    /// The upstream's script.
    #[serde(default)]
    pub upstream: UpstreamSpec,
    /// Time that passes before the client connects (the harness's virtual
    /// clock advances; the client sleeps in front of Envoy).
    #[serde(default)]
    pub wait_ms: u64,
    /// The client's steps, in order.
    pub steps: Vec<Step>,
}

/// One thing the client does: `send: "bytes"`, `close_write: true` or
/// `wait_ms: N`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawStep")]
pub enum Step {
    /// Writes these bytes (one read for Envoy).
    Send(String),
    /// Half-closes (FIN) and keeps reading.
    CloseWrite,
    /// Lets time pass: the harness's virtual clock moves (plugin timers
    /// fire), and the client sleeps in front of Envoy.
    Wait(Duration),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    send: Option<String>,
    #[serde(default)]
    close_write: bool,
    wait_ms: Option<u64>,
}

impl TryFrom<RawStep> for Step {
    type Error = &'static str;

    fn try_from(raw: RawStep) -> Result<Self, Self::Error> {
        match (raw.send, raw.close_write, raw.wait_ms) {
            (Some(data), false, None) => Ok(Step::Send(data)),
            (None, true, None) => Ok(Step::CloseWrite),
            (None, false, Some(ms)) => Ok(Step::Wait(Duration::from_millis(ms))),
            _ => Err("a step is one of `send: <bytes>`, `close_write: true`, `wait_ms: <ms>`"),
        }
    }
}

/// How the `callout` cluster answers every HTTP callout, in the harness and
/// in front of Envoy: at once, or after the delay a `/delay/<ms>` path asks
/// for.
fn callout_answer(request: http::Request<bytes::Bytes>) -> http::Response<bytes::Bytes> {
    let delay = request
        .uri()
        .path()
        .strip_prefix("/delay/")
        .and_then(|rest| rest.split('/').next())
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis);
    // A fixed `date`, so that the server in front of Envoy sends the same
    // headers as the harness's cluster.
    let mut response = http::Response::builder()
        .header("date", "Thu, 01 Jan 2026 00:00:00 GMT")
        .header("x-callout", "l4");
    if let Some(delay) = delay {
        response = response.extension(weir_harness::UpstreamFault::Delay(delay));
    }
    response
        .body(bytes::Bytes::from_static(b"callout ok"))
        .unwrap_or_default()
}

/// What the upstream does, in the harness and in front of Envoy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSpec {
    /// Sent as soon as the connection is accepted.
    pub greeting: String,
    /// Sends back what it receives, after `reply_prefix`.
    pub echo: bool,
    /// Put before each echoed chunk.
    pub reply_prefix: String,
    /// Closes right after its first reply.
    pub close_after_reply: bool,
    /// Closes when the client's half-close arrives (default true).
    pub close_on_end: bool,
}

impl Default for UpstreamSpec {
    fn default() -> Self {
        Self {
            greeting: String::new(),
            echo: true,
            reply_prefix: String::new(),
            close_after_reply: false,
            close_on_end: true,
        }
    }
}

/// The upstream's script, driven by the harness directly and by a TCP server
/// in front of Envoy.
#[derive(Debug, Clone)]
struct Script(UpstreamSpec);

impl TcpUpstream for Script {
    fn on_connect(&mut self) -> TcpReply {
        TcpReply::data(self.0.greeting.as_bytes())
    }

    fn on_data(&mut self, data: &[u8]) -> TcpReply {
        if !self.0.echo {
            return TcpReply::none();
        }
        let reply = TcpReply::data([self.0.reply_prefix.as_bytes(), data].concat());
        if self.0.close_after_reply {
            reply.and_close()
        } else {
            reply
        }
    }

    fn on_end(&mut self) -> TcpReply {
        if self.0.close_on_end {
            TcpReply::none().and_close()
        } else {
            TcpReply::none()
        }
    }
}

/// Everything observable about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    client_received: String,
    client_saw_end: bool,
    upstream_received: Option<String>,
    upstream_saw_end: bool,
    logs: Vec<String>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the upstream received on its connection, and whether it saw the end;
/// `None` until a connection is accepted.
type Seen = Mutex<Option<(Vec<u8>, bool)>>;

/// The upstream in front of Envoy: one connection at a time, following the
/// scenario's script; records what it received and whether it saw the end.
struct TcpServer {
    addr: SocketAddr,
    spec: Arc<Mutex<UpstreamSpec>>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    /// Connections the upstream keeps open after the client's half-close, until
    /// the suite ends (closing them would end the stream in Envoy).
    kept: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpServer {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let spec = Arc::new(Mutex::new(UpstreamSpec::default()));
        let seen = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let (spec2, seen2, stop2) = (Arc::clone(&spec), Arc::clone(&seen), Arc::clone(&stop));
        let kept2 = Arc::clone(&kept);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let script = Script(spec2.lock().map(|s| s.clone()).unwrap_or_default());
                let seen = Arc::clone(&seen2);
                let kept = Arc::clone(&kept2);
                std::thread::spawn(move || serve(stream, script, &seen, &kept));
            }
        });
        Ok(Self {
            addr,
            spec,
            seen,
            stop,
            kept,
        })
    }

    fn expect(&self, spec: &UpstreamSpec) {
        if let Ok(mut s) = self.spec.lock() {
            *s = spec.clone();
        }
        if let Ok(mut s) = self.seen.lock() {
            *s = None;
        }
    }

    fn seen(&self) -> Option<(Vec<u8>, bool)> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.clear();
        }
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(mut stream: TcpStream, mut script: Script, seen: &Seen, kept: &Mutex<Vec<TcpStream>>) {
    let record = |data: &[u8], end: bool| {
        if let Ok(mut s) = seen.lock() {
            let entry = s.get_or_insert_with(|| (Vec::new(), false));
            entry.0.extend_from_slice(data);
            entry.1 |= end;
        }
    };
    record(&[], false);
    // When the upstream last wrote: it closes no sooner than CLOSE_PAUSE after,
    // so that Envoy reads the data and the end of the stream separately, as the
    // harness delivers them.
    let mut wrote_at: Option<Instant> = None;
    let mut act = |stream: &mut TcpStream, reply: TcpReply| -> bool {
        if !reply.data.is_empty() {
            if stream.write_all(&reply.data).is_err() {
                return false;
            }
            wrote_at = Some(Instant::now());
        }
        if reply.close {
            if let Some(at) = wrote_at {
                std::thread::sleep(CLOSE_PAUSE.saturating_sub(at.elapsed()));
            }
            let _ = stream.shutdown(Shutdown::Both);
            return false;
        }
        true
    };
    if !act(&mut stream, script.on_connect()) {
        return;
    }
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                record(&[], true);
                let reply = script.on_end();
                if act(&mut stream, reply)
                    && let Ok(mut kept) = kept.lock()
                {
                    kept.push(stream);
                }
                return;
            }
            Ok(n) => {
                record(&buf[..n], false);
                if !act(&mut stream, script.on_data(&buf[..n])) {
                    return;
                }
            }
        }
    }
}

/// The suite's Envoy config: `envoy/conformance-l4.yaml` with the filter, its
/// configuration and failure policy, once per name in `chain`.
fn envoy_yaml(suite: &Suite) -> Result<String> {
    let mut root: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&crate::envoy_yaml("conformance-l4.yaml"))?;
    let filters = root["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
        .as_sequence_mut()
        .context("conformance-l4.yaml has no filters")?;
    let template = filters.remove(0);
    let names = if suite.chain.is_empty() {
        vec!["stream".to_owned()]
    } else {
        suite.chain.clone()
    };
    for (i, name) in names.iter().enumerate() {
        let mut f = template.clone();
        let plugin = &mut f["typed_config"]["config"];
        plugin["name"] = serde_yaml_ng::Value::from(name.as_str());
        let vm_id = suite.vm_ids.get(i).unwrap_or(name);
        plugin["vm_config"]["vm_id"] = serde_yaml_ng::Value::from(vm_id.as_str());
        plugin["configuration"]["value"] = serde_yaml_ng::Value::from(suite.config.as_str());
        if let Some(policy) = &suite.failure_policy {
            plugin["failure_policy"] = serde_yaml_ng::Value::from(policy.as_str());
        }
        if let Some(base) = &suite.reload_backoff {
            plugin["reload_config"]["backoff"]["base_interval"] =
                serde_yaml_ng::Value::from(base.as_str());
        }
        plugin["vm_config"]["code"]["local"]["filename"] = serde_yaml_ng::Value::from(format!(
            "/etc/envoy/filters/{}",
            module_name(&suite.filter)
        ));
        filters.insert(i, f);
    }
    Ok(serde_yaml_ng::to_string(&root)?)
}

fn module_name(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

/// `plugin: message` for Envoy's `wasm log <plugin> ...: <message>` lines at
/// info level and above.
fn envoy_logs(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|line| {
            let level = line.split("][").nth(2)?;
            if matches!(level, "trace" | "debug") {
                return None;
            }
            let rest = line.split_once("wasm log ")?.1;
            // A root context's prefix ends `<plugin>::`, a connection's `<plugin>:`.
            let plugin = rest.split_whitespace().next()?.trim_end_matches(':');
            let message = rest.split_once(": ")?.1;
            Some(format!("{plugin}: {message}"))
        })
        .collect()
}

fn harness_logs(logs: &[weir_harness::LogRecord]) -> Vec<String> {
    logs.iter()
        .filter(|l| l.level >= LogLevel::Info)
        .map(|l| format!("{}: {}", l.plugin, l.message))
        .collect()
}

/// Runs every connection of an L4 suite in the harness and in Envoy.
///
/// # Errors
/// If Envoy, the upstream or the harness cannot be set up.
pub fn run(suite: &Suite) -> Result<Report> {
    let wasm = crate::filter_wasm(&suite.filter);
    let yaml = envoy_yaml(suite)?;
    let server = TcpServer::start()?;
    let callout = crate::net::Upstream::start(Arc::new(callout_answer))?;
    let how = Rebind {
        clusters: HashMap::from([
            ("upstream".to_owned(), server.addr),
            ("callout".to_owned(), callout.addr()),
        ]),
        modules: HashMap::from([(module_name(&suite.filter), wasm.clone())]),
        loopback: true,
    };
    let envoy = Envoy::start(&yaml, &how)?;
    let config = NetworkConfig::parse(&yaml)?;
    let engine = crate::engine();
    let mut chain = config
        .chain_builder(engine, |_| engine.load_file(&wasm))?
        .destination_address(envoy.listener)
        .upstream_address(server.addr)
        .callout_cluster("callout", callout_answer)
        .build()?;

    let mut seen_lines = envoy_logs(&envoy.log()).len();
    let mut report = Report::default();
    for scenario in &suite.connections {
        report.total += 1;
        let harness = in_harness(&mut chain, scenario)?;
        server.expect(&scenario.upstream);
        std::thread::sleep(Duration::from_millis(scenario.wait_ms));
        let (client_received, client_saw_end) = in_envoy(envoy.listener, &scenario.steps)?;
        // Envoy's log lags: wait for as many lines as the harness logged.
        let deadline = Instant::now() + Duration::from_secs(3);
        let lines = loop {
            let all = envoy_logs(&envoy.log());
            let new = all.len().saturating_sub(seen_lines);
            if new >= harness.logs.len() || Instant::now() > deadline {
                std::thread::sleep(Duration::from_millis(50));
                break envoy_logs(&envoy.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let (upstream_received, upstream_saw_end) = match server.seen() {
            Some((bytes, end)) => (Some(text(&bytes)), end),
            None => (None, false),
        };
        let envoy_observed = Observed {
            client_received: text(&client_received),
            client_saw_end,
            upstream_received,
            upstream_saw_end,
            logs: lines[seen_lines.min(lines.len())..].to_vec(),
        };
        seen_lines = lines.len();
        if harness != envoy_observed {
            report
                .differences
                .push(describe(&scenario.name, &harness, &envoy_observed));
        }
    }
    Ok(report)
}

fn in_harness(
    chain: &mut weir_harness::NetworkChain,
    scenario: &ConnectionScenario,
) -> Result<Observed> {
    // What the plugins log while the client waits is this scenario's too.
    let mut logs = Vec::new();
    if scenario.wait_ms > 0 {
        logs = chain.advance(Duration::from_millis(scenario.wait_ms)).logs;
    }
    let mut connection = chain.connect(Script(scenario.upstream.clone()))?;
    // The pauses the client makes in front of Envoy.
    connection.advance(STEP_PAUSE);
    for step in &scenario.steps {
        match step {
            Step::Send(data) => connection.send(data.as_bytes())?,
            Step::CloseWrite => connection.close_write()?,
            Step::Wait(time) => connection.advance(*time),
        }
        connection.advance(STEP_PAUSE);
    }
    let outcome = connection.finish();
    logs.extend(outcome.logs.iter().cloned());
    Ok(Observed {
        client_received: text(&outcome.client_received),
        client_saw_end: outcome.client_saw_end,
        upstream_received: outcome.upstream_received.as_deref().map(text),
        upstream_saw_end: outcome.upstream_saw_end,
        logs: harness_logs(&logs),
    })
}

/// The client's side against Envoy: the steps, a pause after each, then
/// everything it can read until Envoy ends the stream (or a second passes).
fn in_envoy(listener: SocketAddr, steps: &[Step]) -> Result<(Vec<u8>, bool)> {
    let mut client = TcpStream::connect(listener)?;
    std::thread::sleep(STEP_PAUSE);
    for step in steps {
        match step {
            Step::Send(data) => {
                if let Err(e) = client.write_all(data.as_bytes()) {
                    bail!("client write: {e}");
                }
            }
            Step::CloseWrite => client.shutdown(Shutdown::Write)?,
            Step::Wait(time) => std::thread::sleep(*time),
        }
        std::thread::sleep(STEP_PAUSE);
    }
    client.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut received = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match client.read(&mut buf) {
            Ok(0) => return Ok((received, true)),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            // A reset after Envoy closed ends the stream too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok((received, true));
            }
            Err(_) if Instant::now() > deadline => return Ok((received, false)),
            Err(_) => {}
        }
    }
}

fn describe(name: &str, harness: &Observed, envoy: &Observed) -> String {
    let mut out = format!("── {name}\n");
    let mut field = |what: &str, h: String, e: String| {
        if h != e {
            out += &format!("  {what}\n    harness: {h}\n    envoy:   {e}\n");
        }
    };
    field(
        "client received",
        format!(
            "{:?} end={}",
            harness.client_received, harness.client_saw_end
        ),
        format!("{:?} end={}", envoy.client_received, envoy.client_saw_end),
    );
    field(
        "upstream received",
        format!(
            "{:?} end={}",
            harness.upstream_received, harness.upstream_saw_end
        ),
        format!(
            "{:?} end={}",
            envoy.upstream_received, envoy.upstream_saw_end
        ),
    );
    if harness.logs != envoy.logs {
        out += "  logs\n";
        let n = harness.logs.len().max(envoy.logs.len());
        for i in 0..n {
            let h = harness.logs.get(i).map_or("", String::as_str);
            let e = envoy.logs.get(i).map_or("", String::as_str);
            let mark = if h == e { " " } else { "≠" };
            out += &format!("   {mark} harness: {h}\n     envoy:   {e}\n");
        }
    }
    out
}
