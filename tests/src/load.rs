//! Bounded, closed-loop HTTP/1 load on loopback, and the CPU time a process used.
//!
//! [`run`] opens a fixed number of keep-alive connections; each sends its next
//! request as soon as the previous answer has been read, until the run's request
//! count is reached or its time cap passes. Every answer's latency (request
//! written to body read) is kept, so percentiles are exact. [`cpu_time`] reads a
//! process's user + system time from `/proc/<pid>/stat`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Makes the `i`-th request of a run (origin-form URI, explicit `host`).
pub type MakeRequest = Arc<dyn Fn(u64) -> http::Request<Bytes> + Send + Sync>;

/// How much load one run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Keep-alive connections, each with one request in flight at a time.
    pub connections: usize,
    /// Requests to send in all.
    pub requests: u64,
    /// No new request is sent after this much time; those in flight are answered.
    pub max_time: Duration,
}

/// What one run measured.
#[derive(Debug)]
pub struct Run {
    /// The latency of every answered request in nanoseconds, ascending.
    pub latencies: Vec<u64>,
    /// From the first connection attempt to the last answer.
    pub elapsed: Duration,
    /// How many answers had each status.
    pub statuses: BTreeMap<u16, u64>,
    /// The answer to request 0, whole.
    pub first: Option<http::Response<Bytes>>,
}

impl Run {
    /// Requests answered.
    pub fn answered(&self) -> u64 {
        self.latencies.len() as u64
    }

    /// Answers per second of wall time.
    pub fn per_second(&self) -> f64 {
        self.answered() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The latency at quantile `q` (0 < q ≤ 1), nearest rank; `None` for an empty run.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.latencies, q).map(Duration::from_nanos)
    }
}

/// The value at quantile `q` (0 < q ≤ 1) of ascending `sorted`, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

struct Connection {
    latencies: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    first: Option<http::Response<Bytes>>,
}

async fn connection(
    addr: SocketAddr,
    make: MakeRequest,
    next: Arc<AtomicU64>,
    requests: u64,
    deadline: Instant,
) -> Result<Connection> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut out = Connection {
        latencies: Vec::new(),
        statuses: BTreeMap::new(),
        first: None,
    };
    while Instant::now() < deadline {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= requests {
            break;
        }
        let request = make(i).map(Full::new);
        sender
            .ready()
            .await
            .with_context(|| format!("{addr} closed the connection before request {i}"))?;
        let start = Instant::now();
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("request {i} to {addr}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .with_context(|| format!("reading the answer to request {i}"))?
            .to_bytes();
        out.latencies
            .push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        *out.statuses.entry(parts.status.as_u16()).or_default() += 1;
        if i == 0 {
            out.first = Some(http::Response::from_parts(parts, body));
        }
    }
    drop(sender);
    driver.abort();
    Ok(out)
}

/// Sends `load` to `addr` and waits for every answer.
///
/// # Errors
/// If a connection cannot be opened, or a request fails or is cut off (a
/// benchmark whose requests fail measures nothing).
pub fn run(addr: SocketAddr, load: Load, make: &MakeRequest) -> Result<Run> {
    ensure!(load.connections > 0, "a run needs at least one connection");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the load generator's runtime")?;
    runtime.block_on(async {
        let start = Instant::now();
        let deadline = start + load.max_time;
        let next = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..load.connections)
            .map(|_| {
                tokio::spawn(connection(
                    addr,
                    Arc::clone(make),
                    Arc::clone(&next),
                    load.requests,
                    deadline,
                ))
            })
            .collect();
        let mut run = Run {
            latencies: Vec::with_capacity(load.requests.min(1 << 20) as usize),
            elapsed: Duration::ZERO,
            statuses: BTreeMap::new(),
            first: None,
        };
        let mut failure = None;
        for task in tasks {
            match task.await.context("a load connection panicked")? {
                Ok(c) => {
                    run.latencies.extend(c.latencies);
                    for (status, n) in c.statuses {
                        *run.statuses.entry(status).or_default() += n;
                    }
                    run.first = run.first.take().or(c.first);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        run.elapsed = start.elapsed();
        run.latencies.sort_unstable();
        Ok(run)
    })
}

/// The CPU time (user + system, all threads) process `pid` has used so far.
///
/// # Errors
/// If `/proc/<pid>/stat` cannot be read or parsed, or the clock tick is unknown.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = stat_cpu_ticks(&text).with_context(|| format!("parsing {path}"))?;
    let per_second = clock_ticks_per_second()?;
    Ok(Duration::from_secs(ticks / per_second)
        + Duration::from_nanos((ticks % per_second) * 1_000_000_000 / per_second))
}

/// `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
/// The command name (field 2) may hold spaces and parentheses, so fields are
/// counted from its closing parenthesis.
fn stat_cpu_ticks(stat: &str) -> Result<u64> {
    let after_name = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no command name")?;
    // After the name: field 3 (state) is index 0, so utime (14) is index 11.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |i: usize, name: &str| -> Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("no {name} field"))?
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    Ok(field(11, "utime")? + field(12, "stime")?)
}

/// The kernel's clock tick for `/proc` times (`AT_CLKTCK` in this process's
/// auxiliary vector, what `sysconf(_SC_CLK_TCK)` answers).
fn clock_ticks_per_second() -> Result<u64> {
    static TICKS: OnceLock<Option<u64>> = OnceLock::new();
    let ticks = TICKS.get_or_init(|| {
        let auxv = std::fs::read("/proc/self/auxv").ok()?;
        auxv_value(&auxv, AT_CLKTCK)
    });
    match ticks {
        Some(t) if *t > 0 => Ok(*t),
        _ => bail!("the clock tick (AT_CLKTCK) is not in /proc/self/auxv"),
    }
}

const AT_CLKTCK: u64 = 17;

/// The value of entry `key` in an auxiliary vector (native-endian word pairs).
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    const WORD: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> Option<u64> {
        let bytes: [u8; WORD] = b.try_into().ok()?;
        u64::try_from(usize::from_ne_bytes(bytes)).ok()
    };
    auxv.chunks_exact(2 * WORD).find_map(|pair| {
        let (k, v) = pair.split_at(WORD);
        (word(k)? == key).then(|| word(v)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(50));
        assert_eq!(quantile(&sorted, 0.99), Some(99));
        assert_eq!(quantile(&sorted, 0.999), Some(100));
        assert_eq!(quantile(&sorted, 1.0), Some(100));
        assert_eq!(quantile(&sorted, 0.0), Some(1));
        assert_eq!(quantile(&[7], 0.5), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (wrk:worker (0) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 56 0 0 20 0 3 0 99 1000 50 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat).expect("parses"), 1234 + 56);
        assert!(stat_cpu_ticks("4242 (envoy) S 1 2").is_err());
        assert!(stat_cpu_ticks("no name").is_err());
    }

    #[test]
    fn the_clock_tick_is_read_from_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (k, v) in [(6usize, 4096usize), (17, 250), (0, 0)] {
            auxv.extend(k.to_ne_bytes());
            auxv.extend(v.to_ne_bytes());
        }
        assert_eq!(auxv_value(&auxv, AT_CLKTCK), Some(250));
        assert_eq!(auxv_value(&auxv, 99), None);
        assert!(clock_ticks_per_second().expect("Linux has AT_CLKTCK") > 0);
    }

    #[test]
    fn cpu_time_grows_while_this_process_works() {
        let pid = std::process::id();
        let before = cpu_time(pid).expect("own stat");
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let used = cpu_time(pid).expect("own stat") - before;
        assert!(used > Duration::ZERO, "200 ms of spinning used no CPU time");
        assert!(cpu_time(u32::MAX).is_err());
    }

    fn upstream() -> crate::net::Upstream {
        crate::net::Upstream::start(Arc::new(|r: http::Request<Bytes>| {
            let status = if r.uri().path() == "/teapot" {
                418
            } else {
                200
            };
            http::Response::builder()
                .status(status)
                .body(Bytes::from(r.uri().path().to_owned()))
                .unwrap_or_default()
        }))
        .expect("upstream starts")
    }

    fn make(path: &'static str) -> MakeRequest {
        Arc::new(move |i| {
            http::Request::get(format!("{path}?i={i}"))
                .header("host", "load.test")
                .body(Bytes::new())
                .unwrap_or_default()
        })
    }

    #[test]
    fn a_run_sends_exactly_its_requests_over_its_connections() {
        let upstream = upstream();
        let load = Load {
            connections: 4,
            requests: 300,
            max_time: Duration::from_secs(30),
        };
        let run = run(upstream.addr(), load, &make("/a")).expect("run");
        assert_eq!(run.answered(), 300);
        assert_eq!(run.statuses, BTreeMap::from([(200, 300)]));
        assert!(run.latencies.is_sorted());
        assert!(run.per_second() > 0.0);
        assert_eq!(
            run.first.expect("request 0 answered").body().as_ref(),
            b"/a"
        );
        let seen = upstream.take_seen();
        assert_eq!(seen.len(), 300);
        let mut indices: Vec<u64> = seen
            .iter()
            .filter_map(|r| r.uri().query()?.strip_prefix("i=")?.parse().ok())
            .collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..300).collect::<Vec<_>>(), "each request once");
    }

    #[test]
    fn statuses_are_counted_and_the_time_cap_stops_a_run() {
        let upstream = upstream();
        let load = Load {
            connections: 1,
            requests: 10,
            max_time: Duration::from_secs(30),
        };
        let run = run(upstream.addr(), load, &make("/teapot")).expect("run");
        assert_eq!(run.statuses, BTreeMap::from([(418, 10)]));

        let capped = Load {
            connections: 2,
            requests: u64::MAX,
            max_time: Duration::from_millis(200),
        };
        let run = super::run(upstream.addr(), capped, &make("/a")).expect("run");
        assert!(run.answered() > 0);
        assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    }

    #[test]
    fn a_refused_connection_is_an_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let load = Load {
            connections: 1,
            requests: 1,
            max_time: Duration::from_secs(5),
        };
        let err = run(closed, load, &make("/a")).expect_err("nothing listens");
        assert!(format!("{err:#}").contains("connecting to"), "{err:#}");
    }
}
