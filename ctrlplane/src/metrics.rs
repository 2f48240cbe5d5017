//! Prometheus metrics: a [`Collector`] that builds every metric family at scrape time from a
//! [`Sample`] of rvsd's counters, and a minimal HTTP/1.1 server for `GET /metrics`.
//!
//! Nothing here touches the packet path: a scrape asks a [`Source`] (rvsd's control side) for a
//! [`Sample`], which only reads the workers' single-writer counters. Cardinality is bounded by the
//! configuration: one series set per service, per real server, per worker core (times the fixed
//! list of drop reasons) and per port.
//!
//! Series (all prefixed `rvs_`):
//! - per service (`proto`, `vip`, `vport`) and per real server (also `rip`, `rport`):
//!   `rvs_{service,real}_connections_total`, `_active_connections`, `_inactive_connections`,
//!   `_in_packets_total`, `_out_packets_total`, `_in_bytes_total`, `_out_bytes_total`, and the
//!   estimator's rates `_cps`, `_inpps`, `_outpps`, `_inbps`, `_outbps` (bytes per second);
//! - per health-checked real server: `rvs_real_up` (1 up, 0 down),
//!   `rvs_real_health_transitions_total` and `rvs_real_check_failures_total` (real servers
//!   without a check have none);
//! - per core (`core`, the lcore): `rvs_core_rx_packets_total`, `rvs_core_tx_packets_total`,
//!   `rvs_core_drops_total{reason}`, `rvs_core_redirected_{in,out}_total`,
//!   `rvs_core_sessions_{created,expired}_total`, `rvs_core_polls_total`,
//!   `rvs_core_busy_polls_total` and `rvs_core_busy_ratio` (busy polls / polls since start);
//! - per port (`port`, the configured name): `rvs_port_link_up`, `rvs_port_{rx,tx}_packets_total`,
//!   `rvs_port_{rx,tx}_bytes_total`, `rvs_port_imissed_total`, `rvs_port_rx_nombuf_total`,
//!   `rvs_port_ierrors_total`, `rvs_port_oerrors_total`;
//! - control plane: `rvs_config_generation`, `rvs_reloads_total{result="ok|failed"}`,
//!   `rvs_build_info{version}`.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, Registry, TextEncoder};
use rvs_core::counters::{CounterSnapshot, DropReason};

use crate::ctl::proto::{Rates, ServiceView, Stats};

/// A port's state for the metrics.
#[derive(Debug, Clone, Default)]
pub struct PortSample {
    /// The port's configured name (label `port`).
    pub name: String,
    /// Link up.
    pub link_up: bool,
    /// DPDK basic statistics; `None` when the PMD could not report them (no series then).
    pub stats: Option<dpdk::PortStats>,
}

/// One reading of everything rvsd exports, taken at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Services with their real servers, counters (monotonic: not reset by `rvsadm -Z`) and rates.
    pub services: Vec<ServiceView>,
    /// Per worker core: (lcore, counters).
    pub cores: Vec<(u32, CounterSnapshot)>,
    /// Per port.
    pub ports: Vec<PortSample>,
    /// The configuration generation (bumped by every applied change).
    pub generation: u64,
    /// Reloads that applied (`result="ok"`).
    pub reloads_ok: u64,
    /// Reloads refused or rolled back (`result="failed"`).
    pub reloads_failed: u64,
    /// Control-socket requests answered with an error, by reason
    /// ([`crate::ctl::server::RequestError::ALL`] order).
    pub control_errors: [u64; crate::ctl::server::RequestError::ALL.len()],
    /// Publications of health-check state changes that failed (each retry counts).
    pub health_publish_failures: u64,
    /// Log lines dropped because stdout was not read fast enough.
    pub log_lines_dropped: u64,
}

/// Where the collector gets its [`Sample`] from (rvsd's control side, or a test fake).
pub trait Source: Send + Sync {
    /// Read the counters now.
    fn sample(&self) -> Sample;
}

/// The metric type of a family.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// `mark`: the firewall mark of an fwmark service (`-f`, whose `vip`/`vport` are 0), else empty.
const SVC: &[&str] = &["proto", "vip", "vport", "mark"];
const REAL: &[&str] = &["proto", "vip", "vport", "mark", "rip", "rport"];
const CORE: &[&str] = &["core"];
const CORE_DROP: &[&str] = &["core", "reason"];
const PORT: &[&str] = &["port"];

/// Per-service / per-real families: (suffix, help, kind).
const VS_FAMILIES: &[(&str, &str, Kind)] = &[
    ("connections_total", "Connections scheduled", Kind::Counter),
    (
        "active_connections",
        "Active (established TCP) connections",
        Kind::Gauge,
    ),
    (
        "inactive_connections",
        "Inactive (non-established TCP, and UDP) connections",
        Kind::Gauge,
    ),
    (
        "in_packets_total",
        "Packets from clients (inbound)",
        Kind::Counter,
    ),
    (
        "out_packets_total",
        "Packets from real servers (outbound)",
        Kind::Counter,
    ),
    (
        "in_bytes_total",
        "Bytes from clients (inbound)",
        Kind::Counter,
    ),
    (
        "out_bytes_total",
        "Bytes from real servers (outbound)",
        Kind::Counter,
    ),
    (
        "cps",
        "Connections per second (2 s EWMA estimator)",
        Kind::Gauge,
    ),
    (
        "inpps",
        "Inbound packets per second (2 s EWMA estimator)",
        Kind::Gauge,
    ),
    (
        "outpps",
        "Outbound packets per second (2 s EWMA estimator)",
        Kind::Gauge,
    ),
    (
        "inbps",
        "Inbound bytes per second (2 s EWMA estimator)",
        Kind::Gauge,
    ),
    (
        "outbps",
        "Outbound bytes per second (2 s EWMA estimator)",
        Kind::Gauge,
    ),
];

/// Per-core families: (name, help, kind, labels).
const CORE_FAMILIES: &[(&str, &str, Kind, &[&str])] = &[
    (
        "rvs_core_rx_packets_total",
        "Packets received by the core",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_tx_packets_total",
        "Packets sent by the core",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_drops_total",
        "Packets dropped by the core, by reason",
        Kind::Counter,
        CORE_DROP,
    ),
    (
        "rvs_core_redirected_in_total",
        "Packets received from other cores (session owned here)",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_redirected_out_total",
        "Packets handed over to the core owning their session, counted once its ring took them (those a full ring refused are in rvs_core_drops_total{reason=\"redirect_full\"})",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_sessions_created_total",
        "Sessions created",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_sessions_expired_total",
        "Sessions expired",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_sessions_rescheduled_total",
        "TCP SYNs that found their session in TIME_WAIT or CLOSE: the old session ended, the connection was scheduled anew",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_fast_path_total",
        "Packets of established FULLNAT sessions forwarded by the established fast path (the other packets take the general path)",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_polls_total",
        "Poll loop iterations",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_busy_polls_total",
        "Poll loop iterations that found work",
        Kind::Counter,
        CORE,
    ),
    (
        "rvs_core_busy_ratio",
        "Busy polls / polls since start (0..1)",
        Kind::Gauge,
        CORE,
    ),
    (
        "rvs_core_neigh_sync_lost_total",
        "Neighbour updates this core could not pass to another core (its ring full); that core resolves the neighbour by ARP itself when it needs it",
        Kind::Counter,
        CORE,
    ),
];

/// Per-port families: (name, help, kind).
const PORT_FAMILIES: &[(&str, &str, Kind)] = &[
    ("rvs_port_link_up", "Link up (1) or down (0)", Kind::Gauge),
    (
        "rvs_port_rx_packets_total",
        "Packets received",
        Kind::Counter,
    ),
    ("rvs_port_tx_packets_total", "Packets sent", Kind::Counter),
    ("rvs_port_rx_bytes_total", "Bytes received", Kind::Counter),
    ("rvs_port_tx_bytes_total", "Bytes sent", Kind::Counter),
    (
        "rvs_port_imissed_total",
        "Packets dropped by the NIC (RX queues full)",
        Kind::Counter,
    ),
    (
        "rvs_port_rx_nombuf_total",
        "RX mbuf allocation failures",
        Kind::Counter,
    ),
    (
        "rvs_port_ierrors_total",
        "Erroneous received packets",
        Kind::Counter,
    ),
    (
        "rvs_port_oerrors_total",
        "Failed transmissions",
        Kind::Counter,
    ),
];

/// Control-plane families: (name, help, kind, labels).
const CTL_FAMILIES: &[(&str, &str, Kind, &[&str])] = &[
    (
        "rvs_config_generation",
        "Configuration generation (bumped by every applied change)",
        Kind::Gauge,
        &[],
    ),
    (
        "rvs_reloads_total",
        "Configuration reloads, by result",
        Kind::Counter,
        &["result"],
    ),
    (
        "rvs_build_info",
        "rvsd build information (always 1)",
        Kind::Gauge,
        &["version"],
    ),
    (
        "rvs_control_errors_total",
        "Control-socket requests answered with an error or cut off, by reason (malformed, too_large, version, refused, timeout, busy, truncated)",
        Kind::Counter,
        &["reason"],
    ),
    (
        "rvs_health_publish_failures_total",
        "Health-check state changes whose publication to the workers failed (retried after 1 s, then up to every 30 s, until one succeeds)",
        Kind::Counter,
        &[],
    ),
    (
        "rvs_log_lines_dropped_total",
        "rvsd log lines dropped because stdout was not read fast enough (its log queue was full)",
        Kind::Counter,
        &[],
    ),
];

/// Per health-checked real server families: (name, help, kind).
const HEALTH_FAMILIES: &[(&str, &str, Kind)] = &[
    (
        "rvs_real_up",
        "Health-check state (1 up, 0 down), per health-checked real server",
        Kind::Gauge,
    ),
    (
        "rvs_real_health_transitions_total",
        "Health-check state changes, per health-checked real server",
        Kind::Counter,
    ),
    (
        "rvs_real_check_failures_total",
        "Failed health checks, each one (those below `fall` too), per health-checked real server",
        Kind::Counter,
    ),
];

/// A family being filled at scrape time.
struct Fam(MetricFamily);

impl Fam {
    fn new(name: &str, help: &str, kind: Kind) -> Fam {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_string());
        mf.set_help(help.to_string());
        mf.set_field_type(match kind {
            Kind::Counter => MetricType::COUNTER,
            Kind::Gauge => MetricType::GAUGE,
        });
        Fam(mf)
    }

    /// Add one series with `labels` (names and values in order).
    fn push(&mut self, names: &[&str], values: &[&str], v: f64) {
        let labels = names
            .iter()
            .zip(values)
            .map(|(n, val)| {
                let mut l = proto::LabelPair::default();
                l.set_name(n.to_string());
                l.set_value(val.to_string());
                l
            })
            .collect();
        let mut m = proto::Metric::from_label(labels);
        match self.0.get_field_type() {
            MetricType::COUNTER => {
                let mut c = proto::Counter::default();
                c.set_value(v);
                m.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(v);
                m.set_gauge(g);
            }
        }
        self.0.mut_metric().push(m);
    }
}

/// The help text of a per-service (`labels` = [`SVC`]) or per-real family.
fn vs_help(h: &str, labels: &[&str]) -> String {
    if labels.len() == SVC.len() {
        format!("{h}, per virtual service")
    } else {
        format!("{h}, per real server")
    }
}

/// The twelve per-service / per-real values, in [`VS_FAMILIES`] order.
fn vs_values(st: &Stats, active: u64, inactive: u64, r: &Rates) -> [f64; 12] {
    [
        st.conns as f64,
        active as f64,
        inactive as f64,
        st.inpkts as f64,
        st.outpkts as f64,
        st.inbytes as f64,
        st.outbytes as f64,
        r.cps as f64,
        r.inpps as f64,
        r.outpps as f64,
        r.inbps as f64,
        r.outbps as f64,
    ]
}

/// Build every metric family from `s`.
pub fn families(s: &Sample) -> Vec<MetricFamily> {
    let mut svc: Vec<Fam> = VS_FAMILIES
        .iter()
        .map(|(n, h, k)| Fam::new(&format!("rvs_service_{n}"), &vs_help(h, SVC), *k))
        .collect();
    let mut real: Vec<Fam> = VS_FAMILIES
        .iter()
        .map(|(n, h, k)| Fam::new(&format!("rvs_real_{n}"), &vs_help(h, REAL), *k))
        .collect();
    let mut health: Vec<Fam> = HEALTH_FAMILIES
        .iter()
        .map(|(n, h, k)| Fam::new(n, h, *k))
        .collect();
    for sv in &s.services {
        let k = &sv.spec.key;
        let (proto, vip, vport) = (
            k.proto.upper().to_string(),
            k.vip.to_string(),
            k.vport.to_string(),
        );
        let mark = k.mark.map(|m| m.to_string()).unwrap_or_default();
        let active = sv.reals.iter().map(|r| r.active).sum();
        let inactive = sv.reals.iter().map(|r| r.inactive).sum();
        let labels = [proto.as_str(), vip.as_str(), vport.as_str(), mark.as_str()];
        for (f, v) in svc
            .iter_mut()
            .zip(vs_values(&sv.stats, active, inactive, &sv.rates))
        {
            f.push(SVC, &labels, v);
        }
        for r in &sv.reals {
            let (rip, rport) = (r.spec.addr.ip().to_string(), r.spec.addr.port().to_string());
            let labels = [
                proto.as_str(),
                vip.as_str(),
                vport.as_str(),
                mark.as_str(),
                rip.as_str(),
                rport.as_str(),
            ];
            for (f, v) in real
                .iter_mut()
                .zip(vs_values(&r.stats, r.active, r.inactive, &r.rates))
            {
                f.push(REAL, &labels, v);
            }
            if let Some(h) = &r.health {
                health[0].push(REAL, &labels, if h == "DOWN" { 0.0 } else { 1.0 });
                health[1].push(REAL, &labels, r.health_transitions as f64);
                health[2].push(REAL, &labels, r.health_failures as f64);
            }
        }
    }

    let mut core: Vec<Fam> = CORE_FAMILIES
        .iter()
        .map(|(n, h, k, _)| Fam::new(n, h, *k))
        .collect();
    for (lcore, c) in &s.cores {
        let id = lcore.to_string();
        let l = [id.as_str()];
        core[0].push(CORE, &l, c.rx_packets as f64);
        core[1].push(CORE, &l, c.tx_packets as f64);
        for r in DropReason::ALL {
            core[2].push(CORE_DROP, &[id.as_str(), r.name()], c.dropped(*r) as f64);
        }
        core[3].push(CORE, &l, c.redirected_in as f64);
        core[4].push(CORE, &l, c.redirected_out as f64);
        core[5].push(CORE, &l, c.sessions_created as f64);
        core[6].push(CORE, &l, c.sessions_expired as f64);
        core[7].push(CORE, &l, c.sessions_rescheduled as f64);
        core[8].push(CORE, &l, c.fast_path as f64);
        core[9].push(CORE, &l, c.polls as f64);
        core[10].push(CORE, &l, c.busy_polls as f64);
        let ratio = if c.polls == 0 {
            0.0
        } else {
            c.busy_polls as f64 / c.polls as f64
        };
        core[11].push(CORE, &l, ratio);
        core[12].push(CORE, &l, c.neigh_sync_lost as f64);
    }

    let mut port: Vec<Fam> = PORT_FAMILIES
        .iter()
        .map(|(n, h, k)| Fam::new(n, h, *k))
        .collect();
    for p in &s.ports {
        let l = [p.name.as_str()];
        port[0].push(PORT, &l, if p.link_up { 1.0 } else { 0.0 });
        if let Some(st) = &p.stats {
            let vals = [
                st.ipackets,
                st.opackets,
                st.ibytes,
                st.obytes,
                st.imissed,
                st.rx_nombuf,
                st.ierrors,
                st.oerrors,
            ];
            for (f, v) in port[1..].iter_mut().zip(vals) {
                f.push(PORT, &l, v as f64);
            }
        }
    }

    let mut ctl: Vec<Fam> = CTL_FAMILIES
        .iter()
        .map(|(n, h, k, _)| Fam::new(n, h, *k))
        .collect();
    ctl[0].push(&[], &[], s.generation as f64);
    ctl[1].push(&["result"], &["ok"], s.reloads_ok as f64);
    ctl[1].push(&["result"], &["failed"], s.reloads_failed as f64);
    ctl[2].push(&["version"], &[env!("CARGO_PKG_VERSION")], 1.0);
    for (why, n) in crate::ctl::server::RequestError::ALL
        .iter()
        .zip(s.control_errors)
    {
        ctl[3].push(&["reason"], &[why.name()], n as f64);
    }
    ctl[4].push(&[], &[], s.health_publish_failures as f64);
    ctl[5].push(&[], &[], s.log_lines_dropped as f64);

    svc.into_iter()
        .chain(real)
        .chain(health)
        .chain(core)
        .chain(port)
        .chain(ctl)
        .map(|f| f.0)
        .filter(|mf| !mf.get_metric().is_empty())
        .collect()
}

/// The [`Collector`] over a [`Source`]: builds every family at scrape time.
pub struct RvsCollector {
    source: Arc<dyn Source>,
    descs: Vec<Desc>,
}

impl RvsCollector {
    /// A collector reading `source` at every scrape.
    pub fn new(source: Arc<dyn Source>) -> RvsCollector {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut descs = Vec::new();
        for (n, h, _) in VS_FAMILIES {
            for (prefix, labels) in [("rvs_service_", SVC), ("rvs_real_", REAL)] {
                descs.push(
                    Desc::new(
                        format!("{prefix}{n}"),
                        vs_help(h, labels),
                        own(labels),
                        Default::default(),
                    )
                    .expect("valid metric description"),
                );
            }
        }
        for (n, h, _) in HEALTH_FAMILIES {
            descs.push(
                Desc::new(n.to_string(), h.to_string(), own(REAL), Default::default())
                    .expect("valid metric description"),
            );
        }
        for (n, h, _, labels) in CORE_FAMILIES.iter().chain(CTL_FAMILIES) {
            descs.push(
                Desc::new(
                    n.to_string(),
                    h.to_string(),
                    own(labels),
                    Default::default(),
                )
                .expect("valid metric description"),
            );
        }
        for (n, h, _) in PORT_FAMILIES {
            descs.push(
                Desc::new(n.to_string(), h.to_string(), own(PORT), Default::default())
                    .expect("valid metric description"),
            );
        }
        RvsCollector { source, descs }
    }
}

impl Collector for RvsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.source.sample())
    }
}

/// A registry holding one [`RvsCollector`] over `source`.
pub fn registry(source: Arc<dyn Source>) -> Registry {
    let r = Registry::new();
    r.register(Box::new(RvsCollector::new(source)))
        .expect("register the rvs collector");
    r
}

/// Render `registry` in the Prometheus text exposition format (version 0.0.4).
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding families we built ourselves into memory cannot fail.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Largest request head accepted (bytes); larger ones get 431.
pub const MAX_REQUEST: usize = 8192;
/// Concurrent scrape connections; more get 503.
pub const MAX_CONNS: usize = 8;
/// Time a scrape connection has to send its request, and then to take the whole reply.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `GET /metrics` on `listener` from a thread (one more thread per connection, at most
/// [`MAX_CONNS`]) until `stop`; the thread ends once the scrapes under way are done too. The
/// listener is switched to non-blocking to poll `stop`.
pub fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let _ = listener.set_nonblocking(true);
    std::thread::Builder::new()
        .name("rvs-metrics".into())
        .spawn(move || {
            let conns = Arc::new(AtomicUsize::new(0));
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        if conns.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
                            conns.fetch_sub(1, Ordering::SeqCst);
                            // What of the request already came is read first: closing with
                            // unread data would reset the connection, and the 503 with it.
                            let mut head = [0u8; MAX_REQUEST];
                            let _ = s.set_nonblocking(true);
                            let _ = s.read(&mut head);
                            let _ = s.set_nonblocking(false);
                            let _ = respond(
                                &s,
                                Duration::from_millis(200),
                                "503 Service Unavailable",
                                "text/plain",
                                b"busy\n",
                            );
                            let _ = s.shutdown(std::net::Shutdown::Write);
                            continue;
                        }
                        let _ = s.set_nonblocking(false);
                        let (r, c) = (registry.clone(), conns.clone());
                        let spawned = std::thread::Builder::new()
                            .name("rvs-metrics-conn".into())
                            .spawn(move || {
                                handle(s, &r);
                                c.fetch_sub(1, Ordering::SeqCst);
                            });
                        if spawned.is_err() {
                            conns.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            // Scrapes under way finish first (each within its deadlines): whoever joins this
            // thread may then free what they read (rvsd closes the ports after it).
            let until = std::time::Instant::now() + 2 * IO_TIMEOUT + Duration::from_secs(1);
            while conns.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .expect("spawn the metrics server")
}

/// Send a response, all of it within `limit`.
fn respond(
    s: &TcpStream,
    limit: Duration,
    status: &str,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut w = crate::deadline::Deadline::new(s, limit);
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics` (query string ignored).
    Metrics,
    /// Anything else with a well-formed request line.
    NotFound,
    /// A malformed request line.
    Bad,
}

/// Route a request head (the bytes up to the blank line).
pub fn route(head: &[u8]) -> Route {
    let Ok(text) = std::str::from_utf8(head) else {
        return Route::Bad;
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    let path = target.split('?').next().unwrap_or("");
    if method == "GET" && path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// One connection: read one request head (bounded in size, and in time as a whole: a client
/// sending a byte now and then must not hold one of the few scrape slots), answer, close.
fn handle(mut s: TcpStream, registry: &Registry) {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let end = loop {
        if let Some(i) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(i);
        }
        if len == buf.len() {
            break None;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match s.read(&mut buf[len..]) {
            Ok(0) => return,
            Ok(n) => len += n,
            // A signal (SIGHUP: a reload) is no reason to drop the scrape.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    };
    // The reply has as long again as the request had.
    let limit = IO_TIMEOUT;
    let _ = match end.map(|i| route(&buf[..i])) {
        None => respond(
            &s,
            limit,
            "431 Request Header Fields Too Large",
            "text/plain",
            b"request too large\n",
        ),
        Some(Route::Metrics) => {
            let body = render(registry);
            respond(&s, limit, "200 OK", CONTENT_TYPE, body.as_bytes())
        }
        Some(Route::NotFound) => respond(
            &s,
            limit,
            "404 Not Found",
            "text/plain",
            b"not found; try /metrics\n",
        ),
        Some(Route::Bad) => respond(&s, limit, "400 Bad Request", "text/plain", b"bad request\n"),
    };
}

#[cfg(test)]
mod tests;
