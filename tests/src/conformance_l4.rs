//! The conformance suite's network (L4) kind: a suite with `connections` runs
//! each connection through weir-harness's `NetworkChain` and through real Envoy
//! (`envoy/conformance-l4.yaml`: the network wasm filter, then `tcp_proxy` to an
//! in-process TCP upstream on loopback), and compares what the client received,
//! what the upstream received, whether each saw the end of the stream, and the
//! plugins' log lines.
//!
//! A scenario's steps may name the client connection they act on (`on`):
//! each connects when first named and stays open meanwhile, so several are
//! open at once (the harness's `Connections`); the clients' and the
//! upstream connections' observations are compared in order.
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
//!
//! The `grpc` cluster (HTTP/2) answers the filter's gRPC calls and streams as
//! the running scenario's `grpc` says ([`GrpcSpec`], as in the HTTP suites:
//! whole answers once the request is complete, or, in a suite with a
//! scripted stream, full duplex); the host of `grpc_refused` refuses every
//! connection (a closed loopback port in front of Envoy,
//! [`weir_harness::GrpcRefusingHost`] in the harness). What the `grpc`
//! server received is compared too.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use weir_harness::{GrpcRefusingHost, LogLevel, NetworkConfig, TcpReply, TcpUpstream};

use crate::conformance::{Report, Suite};
use crate::envoy::{Envoy, Rebind};
use crate::grpc_scenario::{GrpcCluster, GrpcSpec, closed_port, grpc_seen};
use crate::observed::UpstreamSaw;

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
    /// How the `grpc` cluster answers the filter's calls and streams.
    #[serde(default)]
    pub grpc: GrpcSpec,
    /// The client's steps, in order.
    pub steps: Vec<Step>,
}

/// One thing a client does: `send: "bytes"`, `close_write: true` or
/// `wait_ms: N`, on the connection `on` names (default: the scenario's
/// unnamed one). A connection connects when a step first names it, and
/// stays open while the next steps act on others: Envoy holds them at once.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawStep")]
pub struct Step {
    /// The client connection the step acts on (`""` when unnamed).
    pub on: String,
    /// What it does.
    pub action: Action,
}

/// What a [`Step`] does.
#[derive(Debug)]
pub enum Action {
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
    #[serde(default)]
    on: String,
    send: Option<String>,
    #[serde(default)]
    close_write: bool,
    wait_ms: Option<u64>,
}

impl TryFrom<RawStep> for Step {
    type Error = &'static str;

    fn try_from(raw: RawStep) -> Result<Self, Self::Error> {
        let action = match (raw.send, raw.close_write, raw.wait_ms) {
            (Some(data), false, None) => Action::Send(data),
            (None, true, None) => Action::CloseWrite,
            (None, false, Some(ms)) => Action::Wait(Duration::from_millis(ms)),
            _ => {
                return Err(
                    "a step is one of `send: <bytes>`, `close_write: true`, `wait_ms: <ms>`",
                );
            }
        };
        Ok(Step { on: raw.on, action })
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

/// Everything observable about a scenario's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    /// Per client connection, in the order the steps first name them: what
    /// it received and whether it saw the end.
    clients: Vec<(String, bool)>,
    /// Per upstream connection, in the order `tcp_proxy` opened them: what
    /// it received and whether it saw the end.
    upstreams: Vec<(String, bool)>,
    /// What the `grpc` cluster's server received, in order.
    grpc: Vec<UpstreamSaw>,
    logs: Vec<String>,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What the upstream received on each of its connections (in the order it
/// accepted them), and whether it saw the end.
type Seen = Mutex<Vec<(Vec<u8>, bool)>>;

/// The upstream in front of Envoy: each connection follows the scenario's
/// script; records what each received and whether it saw the end.
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
        let seen = Arc::new(Mutex::new(Vec::new()));
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
            s.clear();
        }
    }

    fn seen(&self) -> Vec<(Vec<u8>, bool)> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
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
    let index = match seen.lock() {
        Ok(mut s) => {
            s.push((Vec::new(), false));
            s.len() - 1
        }
        Err(_) => return,
    };
    let record = |data: &[u8], end: bool| {
        if let Ok(mut s) = seen.lock()
            && let Some(entry) = s.get_mut(index)
        {
            entry.0.extend_from_slice(data);
            entry.1 |= end;
        }
    };
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
    if suite.metadata.route.is_some() || suite.metadata.virtual_host.is_some() {
        bail!("metadata: a network filter chain has no route or virtual host");
    }
    crate::conformance::write_node_and_metadata(suite, &mut root, "upstream")?;
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
    if let Some(other) = suite.refused.iter().find(|r| r.as_str() != "grpc") {
        bail!("refused: {other:?} is not a cluster that can refuse here (grpc)");
    }
    let current = Arc::new(AtomicUsize::new(0));
    let mut grpc = GrpcCluster::start(
        "grpc",
        suite.connections.iter().map(|c| c.grpc.clone()).collect(),
        Arc::clone(&current),
        false,
        suite.refused.iter().any(|r| r == "grpc"),
    )?;
    let how = Rebind {
        clusters: HashMap::from([
            ("upstream".to_owned(), server.addr),
            ("callout".to_owned(), callout.addr()),
            ("grpc".to_owned(), grpc.addr()),
            ("grpc_refused".to_owned(), closed_port()?),
        ]),
        modules: HashMap::from([(module_name(&suite.filter), wasm.clone())]),
        loopback: true,
    };
    let envoy = Envoy::start_keeping_types(&yaml, &how, &suite.kept_types("upstream"))?;
    let config = NetworkConfig::parse(&yaml)?;
    // A field the harness accepts without emulating it fails the suite: what
    // Envoy does with it could differ.
    if !config.warnings.is_empty() {
        bail!(
            "the harness does not emulate fields of the suite's bootstrap:\n{}",
            config.warnings.join("\n")
        );
    }
    let engine = crate::engine();
    let builder = config
        .chain_builder(engine, |_| engine.load_file(&wasm))?
        .destination_address(envoy.listener)
        .upstream_address(server.addr)
        .callout_cluster("callout", callout_answer)
        .grpc_service("grpc_refused", GrpcRefusingHost);
    let mut chain = match grpc.harness() {
        Some(answer) => answer.add_to(builder, "grpc"),
        None => builder,
    }
    .build()?;

    let mut seen_lines = envoy_logs(&envoy.log()).len();
    let mut report = Report::default();
    for (i, scenario) in suite.connections.iter().enumerate() {
        report.total += 1;
        current.store(i, Ordering::SeqCst);
        let harness = in_harness(&mut chain, scenario)?;
        server.expect(&scenario.upstream);
        std::thread::sleep(Duration::from_millis(scenario.wait_ms));
        let clients = in_envoy(envoy.listener, &scenario.steps)?;
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
        let envoy_observed = Observed {
            clients: clients
                .into_iter()
                .map(|(bytes, end)| (text(&bytes), end))
                .collect(),
            upstreams: server
                .seen()
                .into_iter()
                .map(|(bytes, end)| (text(&bytes), end))
                .collect(),
            grpc: grpc_seen(grpc.upstream(), harness.grpc.len()),
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
    let mut net = chain.connections();
    let mut ids: Vec<(&str, weir_harness::ConnectionId)> = Vec::new();
    // How many of each connection's log lines are in `logs` already.
    let mut taken: HashMap<weir_harness::ConnectionId, usize> = HashMap::new();
    let mut take = |net: &weir_harness::Connections<'_>,
                    id: weir_harness::ConnectionId,
                    logs: &mut Vec<weir_harness::LogRecord>| {
        let all = net.logs(id);
        let from = taken.entry(id).or_insert(0);
        logs.extend(all[(*from).min(all.len())..].iter().cloned());
        *from = all.len();
    };
    // The upstream connections, in the order `tcp_proxy` opened them.
    let mut upstream_order: Vec<weir_harness::ConnectionId> = Vec::new();
    let mut note_upstreams =
        |net: &weir_harness::Connections<'_>, ids: &[(&str, weir_harness::ConnectionId)]| {
            for &(_, id) in ids {
                if net.upstream_received(id).is_some() && !upstream_order.contains(&id) {
                    upstream_order.push(id);
                }
            }
        };
    for step in &scenario.steps {
        let id = match ids.iter().find(|(name, _)| *name == step.on) {
            Some(&(_, id)) => id,
            None => {
                let id = net.connect(Script(scenario.upstream.clone()))?;
                ids.push((&step.on, id));
                // The pause the client makes in front of Envoy.
                net.advance(id, STEP_PAUSE)?;
                take(&net, id, &mut logs);
                note_upstreams(&net, &ids);
                id
            }
        };
        match &step.action {
            Action::Send(data) => net.send(id, data.as_bytes())?,
            Action::CloseWrite => net.close_write(id)?,
            Action::Wait(time) => net.advance(id, *time)?,
        }
        net.advance(id, STEP_PAUSE)?;
        take(&net, id, &mut logs);
        note_upstreams(&net, &ids);
    }
    let connected = net.ids();
    let outcomes = net.finish();
    // What arrived as the session ended.
    for (id, outcome) in connected.iter().zip(&outcomes) {
        let from = taken.get(id).copied().unwrap_or(0);
        logs.extend(outcome.logs[from.min(outcome.logs.len())..].iter().cloned());
        if outcome.upstream_received.is_some() && !upstream_order.contains(id) {
            upstream_order.push(*id);
        }
    }
    let upstreams = upstream_order
        .iter()
        .filter_map(|id| connected.iter().position(|c| c == id))
        .filter_map(|k| {
            let outcome = outcomes.get(k)?;
            let received = outcome.upstream_received.as_deref()?;
            Some((text(received), outcome.upstream_saw_end))
        })
        .collect();
    let grpc = outcomes
        .iter()
        .flat_map(|o| &o.grpc)
        .filter(|c| !c.reply.refuses_connection())
        .map(|c| UpstreamSaw::of(&c.request.http))
        .collect();
    Ok(Observed {
        clients: outcomes
            .iter()
            .map(|o| (text(&o.client_received), o.client_saw_end))
            .collect(),
        upstreams,
        grpc,
        logs: harness_logs(&logs),
    })
}

/// The clients' side against Envoy: each connects when a step first names
/// it; the steps, a pause after each, then everything each can read until
/// Envoy ends its stream (or a second passes).
fn in_envoy(listener: SocketAddr, steps: &[Step]) -> Result<Vec<(Vec<u8>, bool)>> {
    let mut clients: Vec<(&str, TcpStream)> = Vec::new();
    for step in steps {
        let at = match clients.iter().position(|(name, _)| *name == step.on) {
            Some(at) => at,
            None => {
                clients.push((&step.on, TcpStream::connect(listener)?));
                std::thread::sleep(STEP_PAUSE);
                clients.len() - 1
            }
        };
        let client = &mut clients[at].1;
        match &step.action {
            Action::Send(data) => {
                if let Err(e) = client.write_all(data.as_bytes()) {
                    bail!("client write: {e}");
                }
            }
            Action::CloseWrite => match client.shutdown(Shutdown::Write) {
                // Envoy closed the connection already: nothing to half-close.
                Err(e) if e.kind() == std::io::ErrorKind::NotConnected => {}
                result => result?,
            },
            Action::Wait(time) => std::thread::sleep(*time),
        }
        std::thread::sleep(STEP_PAUSE);
    }
    let mut seen = Vec::with_capacity(clients.len());
    for (_, mut client) in clients {
        seen.push(read_to_end(&mut client)?);
    }
    Ok(seen)
}

/// Everything a client can read until Envoy ends its stream (or a second
/// passes).
fn read_to_end(client: &mut TcpStream) -> Result<(Vec<u8>, bool)> {
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
    let connections = |all: &[(String, bool)]| -> String {
        all.iter()
            .map(|(bytes, end)| format!("{bytes:?} end={end}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    field(
        "clients received",
        connections(&harness.clients),
        connections(&envoy.clients),
    );
    field(
        "upstreams received",
        connections(&harness.upstreams),
        connections(&envoy.upstreams),
    );
    if harness.grpc != envoy.grpc {
        out += &format!(
            "  grpc\n    harness: {:?}\n    envoy:   {:?}\n",
            harness.grpc, envoy.grpc
        );
    }
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
