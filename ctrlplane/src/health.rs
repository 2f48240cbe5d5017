//! Real-server health checks, run by the control plane through the kernel's network stack.
//!
//! One scheduler thread (`rvs-health`) and a pool of probe threads (`rvs-health-N`, growing with
//! the checks in flight), all control-side threads: never on a worker core and never touching the
//! packet path. Each real server with a check (see [`crate::config::CheckConfig`]) is probed every
//! `interval_ms`; at most one probe per real server is in flight and a probe never blocks longer
//! than its `timeout_ms` (every socket operation gets the time left before the probe's deadline).
//!
//! A real server starts up; it goes down after `fall` consecutive failures and comes back after
//! `rise` consecutive successes ([`HealthState`]). What a transition does is the [`Sink`]'s
//! business (rvsd logs it and republishes its snapshot with the real server's effective weight
//! 0: `down_action = "quiesce"`).
//!
//! Probes: `tcp` connects; `http` sends an HTTP/1.0 `GET` and matches the status code and
//! optionally a body substring; `udp` sends a datagram and waits for a reply (containing `expect`
//! when given), an ICMP port unreachable failing it at once.

use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{CheckConfig, CheckKind};
use crate::ctl::proto::ServiceKey;

/// A real server of a service: (service, real IP, real port).
pub type RealId = (ServiceKey, IpAddr, u16);

/// One instance of a checked real server: its [`RealId`] and [`Target::epoch`]. A real server
/// removed and added again is another instance: it starts up, and what was found of the old one
/// (its state, a probe still in flight) is not its own.
pub type CheckId = (RealId, u32);

/// Most body bytes an HTTP check reads.
const MAX_HTTP_RESPONSE: usize = 64 * 1024;
/// How often the scheduler looks for due checks and new targets.
const TICK: Duration = Duration::from_millis(50);

/// One real server to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Which real server.
    pub id: RealId,
    /// The address checked (the real server's IP, the check's port or the real's).
    pub addr: SocketAddr,
    /// The check.
    pub check: CheckConfig,
    /// Local address to bind the probe's socket to (`[health] source`), when of the real
    /// server's family.
    pub source: Option<IpAddr>,
    /// Which instance of the real server (rvsd: a number its model gives each real server as
    /// it is added); 0 from [`Target::new`].
    pub epoch: u32,
}

impl Target {
    /// The target for real `ip:port` of service `key` with `check`; `source` is kept only when
    /// it is of the real server's family.
    pub fn new(
        key: ServiceKey,
        ip: IpAddr,
        port: u16,
        check: &CheckConfig,
        source: Option<IpAddr>,
    ) -> Target {
        Target {
            id: (key, ip, port),
            addr: SocketAddr::new(ip, check.port.unwrap_or(port)),
            check: check.clone(),
            source: source.filter(|s| s.is_ipv4() == ip.is_ipv4()),
            epoch: 0,
        }
    }

    /// This target as instance `epoch` of its real server.
    pub fn with_epoch(mut self, epoch: u32) -> Target {
        self.epoch = epoch;
        self
    }

    /// Its instance's key.
    pub fn key(&self) -> CheckId {
        (self.id, self.epoch)
    }
}

/// What the checker reports to and asks from its owner (rvsd's control side).
pub trait Sink: Send + Sync {
    /// The real servers to check now (asked every scheduler tick).
    fn targets(&self) -> Vec<Target>;
    /// `t` changed state: `up` is the new state; `detail` says why, like
    /// `connect refused, 3 failures` or `2 successes`.
    fn transition(&self, t: &Target, up: bool, detail: &str);
    /// One check of `t` ended, `ok` or not (before any transition it causes).
    fn checked(&self, _t: &Target, _ok: bool) {}
}

/// Connects a TCP socket to `addr` within `timeout`, from `source` when given. The library
/// cannot bind a socket before connecting without `unsafe` (std has no such call), so rvsd passes
/// one that can; [`connect_plain`] ignores `source`.
pub type Connector = fn(SocketAddr, Option<IpAddr>, Duration) -> io::Result<TcpStream>;

/// A [`Connector`] that lets the kernel pick the source address.
pub fn connect_plain(
    addr: SocketAddr,
    _source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&addr, timeout)
}

/// The rise/fall state machine of one real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    /// Whether it is up (the start state).
    pub up: bool,
    /// Consecutive successes.
    pub successes: u32,
    /// Consecutive failures.
    pub failures: u32,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            up: true,
            successes: 0,
            failures: 0,
        }
    }
}

impl HealthState {
    /// Record one check's outcome; returns the new state when it changed (down after `fall`
    /// consecutive failures, up after `rise` consecutive successes).
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if !self.up && self.successes >= rise.max(1) {
                self.up = true;
                return Some(true);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.up && self.failures >= fall.max(1) {
                self.up = false;
                return Some(false);
            }
        }
        None
    }
}

/// The log line of a transition: `health: TCP 203.0.113.10:80 -> 198.51.100.11:80 DOWN (connect
/// refused, 3 failures)`.
pub fn transition_line(t: &Target, up: bool, detail: &str) -> String {
    let (key, ip, port) = t.id;
    format!(
        "health: {} -> {} {} ({detail})",
        key.name(),
        SocketAddr::new(ip, port),
        if up { "UP" } else { "DOWN" }
    )
}

/// A short reason for a failed I/O step.
fn reason(what: &str, e: &io::Error) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused if what == "connect" => "connect refused".into(),
        ErrorKind::ConnectionRefused => format!("{what}: refused (port unreachable)"),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => format!("{what} timeout"),
        _ => format!("{what}: {e}"),
    }
}

/// Time left before `deadline`, or a timeout error naming `what`.
fn left(deadline: Instant, what: &str) -> Result<Duration, String> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(format!("{what} timeout"))
    } else {
        Ok(d)
    }
}

/// Whether `needle` occurs in `hay` (an empty needle always does).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Run one check of `t` now; `Err` says why it failed. Never blocks longer than the check's
/// timeout (plus scheduling noise).
pub fn probe(t: &Target, connect: Connector) -> Result<(), String> {
    let timeout = Duration::from_millis(u64::from(t.check.timeout_ms.max(1)));
    let deadline = Instant::now() + timeout;
    match &t.check.kind {
        CheckKind::None => Ok(()),
        CheckKind::Tcp => connect(t.addr, t.source, timeout)
            .map(drop)
            .map_err(|e| reason("connect", &e)),
        CheckKind::Http {
            path,
            expect_status,
            expect_body,
        } => http(
            t,
            connect,
            deadline,
            path,
            *expect_status,
            expect_body.as_deref(),
        ),
        CheckKind::Udp { send, expect } => udp(t, deadline, send, expect.as_deref()),
        CheckKind::Icmp => icmp(t, timeout),
    }
}

/// One ICMP echo through the system `ping`: raw ICMP sockets need privileges this crate does not
/// take, and the check runs on the control side where a short-lived process is fine. `-W` is
/// given in whole seconds (rounded up: busybox's `ping` takes no fraction), and the check's own
/// timeout is kept here: a `ping` still waiting then is killed and the check fails.
fn icmp(t: &Target, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let secs = timeout.as_millis().div_ceil(1000).max(1);
    let mut cmd = std::process::Command::new("ping");
    cmd.args(["-n", "-q", "-c", "1", "-W"])
        .arg(secs.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(src) = t.source {
        cmd.arg("-I").arg(src.to_string());
    }
    cmd.arg(t.addr.ip().to_string());
    let mut child = cmd.spawn().map_err(|e| format!("cannot run ping: {e}"))?;
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(_)) => return Err("no echo reply".into()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            other => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match other {
                    Err(e) => format!("waiting for ping: {e}"),
                    _ => "no echo reply within the timeout".into(),
                });
            }
        }
    }
}

fn http(
    t: &Target,
    connect: Connector,
    deadline: Instant,
    path: &str,
    expect_status: Option<u16>,
    expect_body: Option<&str>,
) -> Result<(), String> {
    let mut s =
        connect(t.addr, t.source, left(deadline, "connect")?).map_err(|e| reason("connect", &e))?;
    let mut host = match t.addr.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    if t.addr.port() != 80 {
        host = format!("{host}:{}", t.addr.port());
    }
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: rvs-health\r\nConnection: close\r\n\r\n"
    );
    s.set_write_timeout(Some(left(deadline, "send")?))
        .map_err(|e| reason("send", &e))?;
    s.write_all(req.as_bytes())
        .map_err(|e| reason("send", &e))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        s.set_read_timeout(Some(left(deadline, "read")?))
            .map_err(|e| reason("read", &e))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                // Enough to judge (a server keeping the connection open despite `Connection:
                // close` still passes): the status line, and the expected text if any.
                if buf.len() >= MAX_HTTP_RESPONSE || http_answered(&buf, expect_body) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset after a complete answer still counts as the answer.
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !buf.is_empty() => break,
            Err(e) => return Err(reason("read", &e)),
        }
    }
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(buf.len());
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let mut parts = line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    };
    let Some(status) = status else {
        return Err(if buf.is_empty() {
            "empty HTTP response".into()
        } else {
            "not an HTTP response".into()
        });
    };
    match expect_status {
        Some(want) if status != want => {
            return Err(format!("HTTP status {status}, expected {want}"))
        }
        None if !(200..300).contains(&status) => {
            return Err(format!("HTTP status {status}, expected 2xx"))
        }
        _ => {}
    }
    if let Some(want) = expect_body {
        let body = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(&[][..], |i| &buf[i + 4..]);
        if !contains(body, want.as_bytes()) {
            return Err(format!("HTTP body lacks {want:?}"));
        }
    }
    Ok(())
}

/// Whether `buf` already holds what an HTTP check judges: the status line and, when a body text
/// is expected, that text after the headers.
fn http_answered(buf: &[u8], expect_body: Option<&str>) -> bool {
    match expect_body {
        None => buf.windows(2).any(|w| w == b"\r\n"),
        Some(want) => buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|i| contains(&buf[i + 4..], want.as_bytes())),
    }
}

fn udp(t: &Target, deadline: Instant, send: &str, expect: Option<&str>) -> Result<(), String> {
    let local = t.source.unwrap_or(match t.addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let s = UdpSocket::bind(SocketAddr::new(local, 0)).map_err(|e| reason("bind", &e))?;
    s.connect(t.addr).map_err(|e| reason("connect", &e))?;
    s.send(send.as_bytes()).map_err(|e| reason("send", &e))?;
    let mut buf = [0u8; 2048];
    loop {
        s.set_read_timeout(Some(left(deadline, "reply")?))
            .map_err(|e| reason("reply", &e))?;
        match s.recv(&mut buf) {
            Ok(n) => {
                return match expect {
                    Some(want) if !contains(&buf[..n], want.as_bytes()) => {
                        Err(format!("UDP reply lacks {want:?}"))
                    }
                    _ => Ok(()),
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(reason("reply", &e)),
        }
    }
}

/// A running checker; [`Checker::join`] waits for its threads after `stop` is set.
pub struct Checker {
    scheduler: JoinHandle<()>,
}

impl Checker {
    /// Wait for the scheduler and probe threads (after `stop` was set; at most about one check
    /// timeout).
    pub fn join(self) {
        let _ = self.scheduler.join();
    }
}

/// A probe's answer: the target as probed, and the outcome.
type Done = (Target, Result<(), String>);

/// Most probe threads: the pool grows to the number of checks in flight up to this, so real
/// servers that time out (each holding a thread for its `timeout_ms`) do not delay the others'
/// checks until more than this many hang at once (a whole rack unreachable).
pub const MAX_PROBES: usize = 256;

/// Stack of a probe thread: a probe keeps its buffers on the heap.
const PROBE_STACK: usize = 256 * 1024;

/// The probe threads: they take checks from one queue and answer on another.
struct Pool {
    jobs: Arc<Mutex<mpsc::Receiver<Target>>>,
    done: mpsc::Sender<Done>,
    connect: Connector,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Grow to `n` threads (at most [`MAX_PROBES`]). A thread that cannot be started leaves the
    /// pool as it is (the checks wait longer).
    fn grow(&mut self, n: usize) {
        while self.threads.len() < n.min(MAX_PROBES) {
            let (rx, tx, connect, stop) = (
                self.jobs.clone(),
                self.done.clone(),
                self.connect,
                self.stop.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("rvs-health-{}", self.threads.len()))
                .stack_size(PROBE_STACK)
                .spawn(move || loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(t) = job else { break };
                    // Stopping: the checks still queued are dropped, not run.
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = probe(&t, connect);
                    if tx.send((t, r)).is_err() {
                        break;
                    }
                });
            match spawned {
                Ok(h) => self.threads.push(h),
                Err(_) => break,
            }
        }
    }
}

/// Start the checker: a scheduler thread and `probes` probe threads (at least 1, growing with
/// the checks in flight up to [`MAX_PROBES`]), until `stop`.
pub fn spawn(
    sink: Arc<dyn Sink>,
    probes: usize,
    connect: Connector,
    stop: Arc<AtomicBool>,
) -> io::Result<Checker> {
    let (job_tx, job_rx) = mpsc::channel::<Target>();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let mut pool = Pool {
        jobs: Arc::new(Mutex::new(job_rx)),
        done: done_tx,
        connect,
        stop: stop.clone(),
        threads: Vec::new(),
    };
    pool.grow(probes.max(1));
    if pool.threads.is_empty() {
        return Err(io::Error::other("cannot start a health probe thread"));
    }
    let scheduler = std::thread::Builder::new()
        .name("rvs-health".into())
        .spawn(move || {
            schedule(&*sink, &job_tx, &done_rx, &stop, &mut |n| pool.grow(n));
            drop(job_tx);
            for h in std::mem::take(&mut pool.threads) {
                let _ = h.join();
            }
        })?;
    Ok(Checker { scheduler })
}

/// The scheduler loop: hands due checks to the pool (grown by `grow` to the checks in flight),
/// one in flight per real server, and feeds the outcomes to each real server's [`HealthState`].
fn schedule(
    sink: &dyn Sink,
    jobs: &mpsc::Sender<Target>,
    done: &mpsc::Receiver<Done>,
    stop: &AtomicBool,
    grow: &mut dyn FnMut(usize),
) {
    let mut state: HashMap<CheckId, HealthState> = HashMap::new();
    // When each real server's next check is due, and the interval that date came from.
    let mut next: HashMap<CheckId, (Instant, u32)> = HashMap::new();
    let mut in_flight: HashSet<CheckId> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let targets = sink.targets();
        let ids: HashSet<CheckId> = targets.iter().map(|t| t.key()).collect();
        state.retain(|id, _| ids.contains(id));
        next.retain(|id, _| ids.contains(id));
        for t in targets {
            if in_flight.contains(&t.key()) {
                continue;
            }
            let interval = t.check.interval_ms;
            let due = next.entry(t.key()).or_insert((now, interval));
            // A changed interval (a reload) counts from now, not from the old one's date.
            if due.1 != interval {
                *due = (now, interval);
            }
            if due.0 > now {
                continue;
            }
            due.0 = now + Duration::from_millis(u64::from(interval));
            in_flight.insert(t.key());
            if jobs.send(t).is_err() {
                return;
            }
        }
        grow(in_flight.len());
        // Outcomes, until the next tick.
        let until = now + TICK;
        loop {
            let wait = until.saturating_duration_since(Instant::now());
            match done.recv_timeout(wait) {
                Ok((t, r)) => {
                    in_flight.remove(&t.key());
                    if !ids.contains(&t.key()) {
                        continue;
                    }
                    let st = state.entry(t.key()).or_default();
                    let ok = r.is_ok();
                    sink.checked(&t, ok);
                    if let Some(up) = st.record(ok, t.check.rise, t.check.fall) {
                        let detail = match &r {
                            Ok(()) => plural(st.successes, "success", "successes"),
                            Err(why) => {
                                format!("{why}, {}", plural(st.failures, "failure", "failures"))
                            }
                        };
                        sink.transition(&t, up, &detail);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests;
