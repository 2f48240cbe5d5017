//! rvsd: the rvs daemon. Reads the TOML config, initialises DPDK, starts one pinned polling worker
//! per configured lcore, and runs until SIGINT/SIGTERM, then prints final per-port statistics.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rvs_core::addr::{MacAddr, Prefix};
use rvs_core::config::{DestConf, FullnatConf, Fwd, RssConf, Sched, ServiceConf, Timeouts};
use rvs_core::counters::{CoreCounters, CounterSnapshot, DropReason};
use rvs_core::io::PortIdx;
use rvs_core::{NeighConf, PortConf, RouteConf, Stack, StackConfig};
use rvs_ctrlplane::config::{self, Config};
use rvs_ctrlplane::ctl::model::Model;
use rvs_ctrlplane::metrics;

/// `println!` that never panics: rvsd's log goes to stdout, which may be a closed pipe (a
/// `| logger` that died, a hung-up terminal); a lost log line must not take the daemon down.
macro_rules! say {
    ($($t:tt)*) => {{
        crate::log::line(format!($($t)*));
    }};
}

/// rvsd's log on stdout, written by a thread of its own from a bounded queue: a reader of
/// stdout that stalls (a hung pipe or journal, a paused terminal) never blocks the thread that
/// logs, which may hold the daemon's lock (health transitions, publications) or be the one
/// that acts on signals. A line that finds the queue full is dropped and counted
/// (`rvs_log_lines_dropped_total`, and a line saying how many once the writer catches up).
mod log {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// Lines the queue holds.
    const QUEUE: usize = 4096;

    /// Lines dropped because the queue was full.
    pub static DROPPED: AtomicU64 = AtomicU64::new(0);

    enum Msg {
        Line(String),
        /// Everything queued before it is written: say so.
        Flush(SyncSender<()>),
    }

    fn queue() -> &'static SyncSender<Msg> {
        static TX: OnceLock<SyncSender<Msg>> = OnceLock::new();
        TX.get_or_init(|| {
            let (tx, rx) = sync_channel::<Msg>(QUEUE);
            // Without the thread, the receiver is gone and `line` writes itself.
            let _ = std::thread::Builder::new()
                .name("rvsd-log".into())
                .spawn(move || {
                    let mut told = 0;
                    for m in rx {
                        let mut out = std::io::stdout().lock();
                        match m {
                            Msg::Line(l) => {
                                let _ = writeln!(out, "{l}");
                            }
                            Msg::Flush(done) => {
                                let _ = out.flush();
                                let _ = done.send(());
                            }
                        }
                        let lost = DROPPED.load(Ordering::Relaxed);
                        if lost != told {
                            let _ = writeln!(
                                out,
                                "rvsd: {} log lines dropped (stdout was not read fast enough)",
                                lost - told
                            );
                            told = lost;
                        }
                    }
                });
            tx
        })
    }

    /// Log one line (never blocks).
    pub fn line(l: String) {
        match queue().try_send(Msg::Line(l)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(Msg::Line(l))) => {
                let _ = writeln!(std::io::stdout(), "{l}");
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Wait, at most `max`, until every line logged so far is written (before exiting).
    pub fn flush(max: Duration) {
        let until = Instant::now() + max;
        let (done, wait) = sync_channel(1);
        let mut m = Msg::Flush(done);
        loop {
            match queue().try_send(m) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < until => {
                    m = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = wait.recv_timeout(until.saturating_duration_since(Instant::now()));
    }
}

/// `eprintln!` that never panics (see [`say!`]).
macro_rules! say_err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

#[path = "rvsd/daemon.rs"]
mod daemon;
use rvs_dataplane::{NeighMsg, PeerLinks, PeerSenders, Worker, WorkerIo, WorkerPorts};

/// rvs — Rust Virtual Server, a DPDK layer-4 load-balancing gateway.
#[derive(Parser, Debug)]
#[command(name = "rvsd", version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration and exit (0 when valid, 2 with the error otherwise).
    #[arg(long)]
    check: bool,
}

/// The Toeplitz key rvs programs where the port lets it (Microsoft's default key), so that FULLNAT
/// can pick local ports whose replies hash to the owning worker's queue.
const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

static STOP: AtomicBool = AtomicBool::new(false);
static HUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        HUP.store(true, Ordering::SeqCst);
    } else if STOP.swap(true, Ordering::SeqCst) {
        // A second SIGINT/SIGTERM while the clean stop is under way (a worker that does not
        // stop, a port that does not close): the operator insists, rvsd exits at once.
        // SAFETY: _exit is async-signal-safe; nothing else runs in the handler.
        unsafe { libc::_exit(128 + sig) };
    }
}

fn install_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // First: a SIGHUP (or SIGTERM) while DPDK and the ports start must not kill rvsd with the
    // default action; a stop asked for during start-up is honoured once the loop runs.
    install_signals();
    let cfg = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            say_err!("rvsd: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // What was logged is written before rvsd exits (and before a last error on stderr).
    let flush = || log::flush(Duration::from_secs(2));
    if args.check {
        say!(
            "{}: configuration OK ({} port(s), {} route(s), {} worker(s))",
            args.config.display(),
            cfg.ports.len(),
            cfg.routes.len(),
            cfg.dataplane.workers.len()
        );
        flush();
        return ExitCode::SUCCESS;
    }
    let r = run(&cfg);
    flush();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say_err!("rvsd: {e}");
            ExitCode::from(1)
        }
    }
}

/// FULLNAT settings for the core; `rss` describes the LIP port's RSS when it has one.
/// Session timeouts for the core, from the configuration's seconds.
fn core_timeouts(t: &config::TimeoutsConfig) -> Timeouts {
    let ms = |s: u32| s as u64 * 1000;
    Timeouts {
        tcp_established: ms(t.tcp),
        tcp_syn_sent: ms(t.syn_sent),
        tcp_syn_recv: ms(t.syn_recv),
        tcp_fin_wait: ms(t.tcpfin),
        tcp_time_wait: ms(t.time_wait),
        tcp_close: ms(t.close),
        tcp_close_wait: ms(t.close_wait),
        tcp_last_ack: ms(t.last_ack),
        udp: ms(t.udp),
        ..Timeouts::default()
    }
}

fn fullnat_config(cfg: &Config, rss: Option<RssConf>) -> FullnatConf {
    let f = &cfg.fullnat;
    FullnatConf {
        sessions: f.sessions,
        max_dests: daemon::MAX_DESTS,
        timeouts: core_timeouts(&f.timeouts),
        toa: f.toa,
        mss_clamp: f.mss_clamp,
        lport_min: f.lport_min,
        lport_max: f.lport_max,
        lport_reuse_delay_ms: f.lport_reuse_delay_s as u64 * 1000,
        rss,
        expire_quiescent_template: f.expire_quiescent_template,
    }
}

/// The core scheduler of a service, with its flags and Maglev table size.
fn core_sched(s: &config::ServiceConfig) -> Sched {
    use config::Scheduler as S;
    let flag = |f: &str| s.sched_flags.iter().any(|x| x == f);
    match s.scheduler {
        S::Rr => Sched::Rr,
        S::Wrr => Sched::Wrr,
        S::Lc => Sched::Lc,
        S::Wlc => Sched::Wlc,
        S::Sed => Sched::Sed,
        S::Nq => Sched::Nq,
        S::Sh => Sched::Sh {
            fallback: flag("sh-fallback"),
            port: flag("sh-port"),
        },
        S::Dh => Sched::Dh,
        S::Lblc => Sched::Lblc,
        S::Lblcr => Sched::Lblcr,
        S::Fo => Sched::Fo,
        S::Ovf => Sched::Ovf,
        S::Mh => Sched::Mh {
            fallback: flag("mh-fallback"),
            port: flag("mh-port"),
            table_size: s.mh_table_size,
        },
        S::Twos => Sched::Twos,
    }
}

/// Virtual services for the core, with the model's stable dest ids (they index the per-core
/// per-real-server counters).
fn core_services(model: &Model) -> Vec<ServiceConf> {
    model
        .services
        .iter()
        .map(|s| ServiceConf {
            proto: s.proto.core(),
            vip: s.vip,
            vport: s.vport,
            vip_port: s.port as PortIdx,
            sched: core_sched(s),
            dests: s
                .reals
                .iter()
                .map(|r| DestConf {
                    id: model.dest_id(s, r),
                    rip: r.ip,
                    rport: r.port,
                    weight: r.weight,
                    fwd: match r.forward {
                        config::Forward::FullNat => Fwd::FullNat,
                        config::Forward::Nat => Fwd::Nat,
                        config::Forward::Dr => Fwd::Dr,
                        config::Forward::Tun => Fwd::Tun,
                    },
                    upper: r.upper,
                    lower: r.lower,
                    down: false,
                    last_weight: model.last_weight(s, r),
                })
                .collect(),
            lips: s.lips.clone(),
            lip_port: s.lip_port as PortIdx,
            mark: s.mark.as_ref().map(config::MatchConfig::core),
            persist: s.persistent.map(|secs| rvs_core::Persist {
                timeout_ms: u64::from(secs) * 1000,
                netmask: match s.netmask {
                    Some(len) if len < 32 => !(u32::MAX >> len),
                    _ => u32::MAX,
                },
            }),
        })
        .collect()
}

fn stack_config(
    cfg: &Config,
    model: &Model,
    macs: &[[u8; 6]],
    worker: u16,
    rss: Option<RssConf>,
) -> StackConfig {
    let n = &cfg.neighbour;
    StackConfig {
        worker,
        n_workers: cfg.dataplane.workers.len() as u16,
        services: core_services(model),
        fullnat: fullnat_config(cfg, rss),
        ports: cfg
            .ports
            .iter()
            .zip(macs)
            .map(|(p, mac)| PortConf {
                mac: MacAddr(*mac),
                mtu: p.mtu,
                addrs: p
                    .addresses
                    .iter()
                    .map(|&(addr, len)| Prefix { addr, len })
                    .collect(),
            })
            .collect(),
        routes: cfg
            .routes
            .iter()
            .map(|r| RouteConf {
                prefix: Prefix {
                    addr: r.prefix.0,
                    len: r.prefix.1,
                },
                via: r.via,
                port: r.port as PortIdx,
            })
            .collect(),
        ip_forward: cfg.dataplane.ip_forward,
        icmp_ratelimit_per_s: cfg.dataplane.icmp_ratelimit,
        neigh: NeighConf {
            capacity: n.capacity,
            hold_packets: n.hold_packets.min(u16::MAX as u32) as u16,
            reachable_ms: n.reachable_ms as u64,
            gc_stale_ms: n.gc_stale_ms as u64,
            retrans_ms: n.retrans_ms as u64,
            max_probes: n.max_probes.min(u8::MAX as u32) as u8,
        },
    }
}

fn run(cfg: &Config) -> Result<(), String> {
    // The control socket and the metrics address are claimed first, before DPDK and the ports
    // start: a second rvsd (with another file prefix) stops here, before it could announce the
    // running one's addresses or take its vdevs.
    let (listener, socket_file) =
        rvs_ctrlplane::ctl::server::bind(&cfg.control.socket, cfg.control.mode)
            .map_err(|e| format!("control socket {}: {e}", cfg.control.socket.display()))?;
    let socket_file = RemoveOnDrop(socket_file);
    let metrics_listener = match cfg.metrics.listen {
        None => None,
        Some(addr) => Some(
            std::net::TcpListener::bind(addr).map_err(|e| format!("metrics listen {addr}: {e}"))?,
        ),
    };
    let eal_args = cfg.eal.args(cfg);
    let eal = dpdk::Eal::init(&eal_args)
        .map_err(|e| format!("EAL init failed ({}): {e}", eal_args.join(" ")))?;
    let workers = &cfg.dataplane.workers;
    let nq = workers.len() as u16;

    // One mbuf pool per worker (mbufs * ports in all, split evenly): worker w's RX queues fill
    // from pool w and its own allocations come from it, so workers share no pool (in the
    // benchmark, 2 workers on one shared pool ran 1.71-1.86 x one worker, on a pool each
    // 1.82-2.00 x: perf/README.md). An mbuf goes back to its own pool wherever it is freed.
    let pool_size = cfg.dataplane.pool_per_worker(cfg.ports.len());
    let pools = (0..workers.len())
        .map(|w| {
            dpdk::Mempool::new_pktmbuf(
                &format!("rvs_mbufs_{w}"),
                pool_size,
                cfg.dataplane.mbuf_cache,
                -1,
            )
            .map(Arc::new)
            .map_err(|e| format!("mbuf pool of worker {w}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Every way out of here (an error included) stops the workers launched so far, then stops
    // and closes the ports configured so far (af_xdp detaches its XDP program, pcap flushes).
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Running {
        stop: stop.clone(),
        launched: Vec::new(),
        ports: Vec::new(),
    };
    let mut ports = Vec::new();
    let mut macs = Vec::new();
    for pc in &cfg.ports {
        let name = pc.device.dpdk_name();
        let port = dpdk::Port::by_name(name).map_err(|e| format!("port {:?}: {e}", pc.name))?;
        let conf = dpdk::PortConf {
            rx_queues: nq,
            tx_queues: nq,
            rx_desc: cfg.dataplane.rx_desc,
            tx_desc: cfg.dataplane.tx_desc,
            rss: pc.rss,
            mtu: Some(pc.mtu),
            promiscuous: pc.promiscuous,
            rss_key: Some(RSS_KEY.to_vec()),
        };
        // Closed on the way out even when its configuration fails part-way (queues set up
        // before the failure hold mbufs of the pools, af_xdp sockets their memory).
        running.ports.push(port);
        port.configure_pools(&conf, &pools)
            .map_err(|e| format!("port {:?}: {e}", pc.name))?;
        if let Some(mac) = pc.mac {
            port.set_mac(mac)
                .map_err(|e| format!("port {:?}: set MAC: {e}", pc.name))?;
        }
        port.start()
            .map_err(|e| format!("port {:?}: {e}", pc.name))?;
        let mac = port.mac().map_err(|e| format!("port {:?}: {e}", pc.name))?;
        let info = port
            .info()
            .map_err(|e| format!("port {:?}: {e}", pc.name))?;
        let link = port
            .link()
            .map_err(|e| format!("port {:?}: {e}", pc.name))?;
        say!(
            "rvsd: port {} {:?} ({}, driver {}) mac {} link {} {} Mbps, {} queue(s), addresses {}",
            port.id(),
            pc.name,
            name,
            info.driver,
            MacAddr(mac),
            if link.up { "up" } else { "down" },
            link.speed_mbps,
            nq,
            pc.addresses
                .iter()
                .map(|(a, l)| format!("{a}/{l}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        ports.push(port);
        macs.push(mac);
    }

    // Exception path: a TAP per port that asks for one, with the port's MAC and addresses, one
    // queue pair per worker.
    let mut taps: Vec<Option<dpdk::Port>> = Vec::new();
    for (i, pc) in cfg.ports.iter().enumerate() {
        let Some(k) = &pc.kernel else {
            taps.push(None);
            continue;
        };
        let name = config::PortConfig::kernel_dpdk_name(i);
        let tap = dpdk::Port::by_name(&name)
            .map_err(|e| format!("port {:?}: kernel interface {k}: {e}", pc.name))?;
        let conf = dpdk::PortConf {
            mtu: Some(pc.mtu),
            ..dpdk::PortConf::plain(nq, config::TAP_DESC)
        };
        running.ports.push(tap);
        tap.configure_pools(&conf, &pools)
            .map_err(|e| format!("kernel interface {k}: {e}"))?;
        tap.set_mac(macs[i])
            .map_err(|e| format!("kernel interface {k}: set MAC: {e}"))?;
        tap.start()
            .map_err(|e| format!("kernel interface {k}: {e}"))?;
        let mut cmds = vec![format!("ip link set {k} up")];
        cmds.extend(
            pc.addresses
                .iter()
                .map(|(a, l)| format!("ip addr replace {a}/{l} dev {k}")),
        );
        for c in cmds {
            let ok = std::process::Command::new("sh")
                .arg("-c")
                .arg(&c)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(format!("kernel interface {k}: `{c}` failed"));
            }
        }
        say!(
            "rvsd: port {i} {:?}: exception path through kernel interface {k}",
            pc.name
        );
        taps.push(Some(tap));
    }

    // RSS of the port that receives real servers' replies (the LIP port), when it reports one:
    // FULLNAT then picks lports whose replies hash to the owning worker's queue. It is read
    // once, here: the LIP port of the first FULLNAT service, else that of the first service
    // (where rvsadm puts LIPs by default); with no service yet (services added later by rvsadm
    // or a reload), the RSS every port shares when they all report the same.
    let lip_port = cfg
        .services
        .iter()
        .find(|s| !s.lips.is_empty())
        .or(cfg.services.first())
        .map(|s| s.lip_port);
    let rss_of = |r: dpdk::port::RssInfo| RssConf {
        tcp_ports: r.tcp_ports(),
        udp_ports: r.udp_ports(),
        key: r.key,
        reta: r.reta,
    };
    let rss = match lip_port {
        Some(p) => ports[p].rss_info().map(rss_of),
        None => {
            let all: Vec<_> = ports.iter().map(|p| p.rss_info()).collect();
            match all.first() {
                Some(Some(first)) if all.iter().all(|r| r.as_ref() == Some(first)) => {
                    Some(rss_of(first.clone()))
                }
                _ => None,
            }
        }
    };
    match (&rss, lip_port) {
        (Some(_), Some(p)) => {
            say!("rvsd: port {p}: RSS known; lports chosen so replies hash to their worker")
        }
        (Some(_), None) => {
            say!("rvsd: RSS known (the same on every port); lports chosen so replies hash to their worker")
        }
        (None, Some(p)) if nq > 1 => {
            say!("rvsd: port {p}: RSS not reported by the PMD; replies on the wrong worker are redirected")
        }
        (None, None) if nq > 1 => {
            say!("rvsd: no service at start and no RSS shared by every port; replies on the wrong worker are redirected")
        }
        _ => {}
    }

    // Worker-to-worker SPSC rings, one for every ordered pair: neighbour updates and packets
    // redirected to the worker that owns their session.
    let nw = workers.len();
    let mut senders: Vec<PeerSenders> = (0..nw)
        .map(|_| PeerSenders {
            neigh: Vec::new(),
            redirect: (0..nw).map(|_| None).collect(),
        })
        .collect();
    let mut links: Vec<PeerLinks> = (0..nw)
        .map(|_| PeerLinks {
            neigh: Vec::new(),
            redirect: Vec::new(),
        })
        .collect();
    for (from, tx) in senders.iter_mut().enumerate() {
        for (to, rx) in links.iter_mut().enumerate().filter(|(to, _)| *to != from) {
            let (p, c) = dpdk::ring::spsc::<NeighMsg>(&format!("rvs_neigh_{from}_{to}"), 1024)
                .map_err(|e| format!("ring: {e}"))?;
            tx.neigh.push(p);
            rx.neigh.push(c);
            let (p, c) = dpdk::ring::spsc_mbuf(
                &format!("rvs_redir_{from}_{to}"),
                cfg.dataplane.redirect_ring,
            )
            .map_err(|e| format!("ring: {e}"))?;
            tx.redirect[to] = Some(p);
            rx.redirect.push(c);
        }
    }

    let mut model = Model::from_config(cfg, daemon::MAX_DESTS);
    let mut counters = Vec::new();
    let mut ctl_links = Vec::new();
    let mut dest_stats = Vec::new();
    for (w, (&lcore, (tx, links))) in workers
        .iter()
        .zip(senders.into_iter().zip(links))
        .enumerate()
    {
        let c = Arc::new(CoreCounters::default());
        counters.push((lcore, c.clone()));
        let rxq = ports.iter().map(|p| p.rx_queue(w as u16)).collect();
        let txq = ports.iter().map(|p| p.tx_queue(w as u16)).collect();
        let io = WorkerIo::new(pools[w].clone(), txq, tx, c.clone()).with_kernel(
            taps.iter()
                .map(|t| t.map(|t| t.tx_queue(w as u16)))
                .collect(),
        );
        let stack = Stack::try_new(
            &stack_config(cfg, &model, &macs, w as u16, rss.clone()),
            c.clone(),
        )
        .map_err(|e| format!("dataplane configuration: {e}"))?;
        dest_stats.push(stack.dest_stats_shared());
        let (link, wctl) = rvs_dataplane::ctl::mailbox(w).map_err(|e| format!("ring: {e}"))?;
        ctl_links.push(link);
        let worker = Worker::new(
            w,
            WorkerPorts { rx: rxq },
            io,
            stack,
            links,
            c,
            cfg.dataplane.burst,
            eal.tsc_hz(),
        )
        .with_ctl(wctl)
        .with_kernel(
            taps.iter()
                .map(|t| t.map(|t| t.rx_queue(w as u16)))
                .collect(),
        );
        let stop = stop.clone();
        let h = dpdk::lcore::launch(lcore, move || worker.run(stop))
            .map_err(|e| format!("worker {w}: {e}"))?;
        running.launched.push(h);
    }
    // A removed real server's id comes back to a new one only when no worker still holds its
    // sessions or templates (their packets and counts would be the new real server's).
    let stats = dest_stats.clone();
    model.set_busy_ids(Arc::new(move |id: u32| {
        stats.iter().any(|w| {
            w.get(id as usize).is_some_and(|d| {
                d.active.get() != 0 || d.inactive.get() != 0 || d.persist.get() != 0
            })
        })
    }));
    // The control plane: socket, model, snapshots to the workers, rate estimator.
    let d = daemon::Daemon::new(
        model,
        ctl_links,
        cfg.clone(),
        dest_stats,
        eal.tsc_hz(),
        cfg.fullnat.sessions as u64 * nw as u64,
        core_services,
        core_timeouts,
    );
    let ctl_stop = Arc::new(AtomicBool::new(false));
    let server = rvs_ctrlplane::ctl::server::serve(listener, d.clone(), ctl_stop.clone());
    // The metrics endpoint: a control-side thread; a scrape only reads counters.
    let metrics_server = metrics_listener.map(|l| {
        let source = Arc::new(MetricsSource {
            daemon: d.clone(),
            cores: counters.clone(),
            ports: cfg
                .ports
                .iter()
                .zip(&ports)
                .map(|(pc, p)| (pc.name.clone(), *p))
                .collect(),
        });
        metrics::serve(l, Arc::new(metrics::registry(source)), ctl_stop.clone())
    });
    let est = d.clone().run_estimator(ctl_stop.clone());
    // Real-server health checks: control-side threads through the kernel's stack.
    let checker =
        rvs_ctrlplane::health::spawn(d.clone(), HEALTH_PROBES, connect_from, ctl_stop.clone())
            .map_err(|e| say_err!("rvsd: health checker not started: {e}"))
            .ok();
    say!(
        "rvsd: running with {} worker(s) on lcore(s) {:?}; control socket {}; SIGHUP reloads, SIGINT/SIGTERM stop",
        nw,
        workers,
        cfg.control.socket.display()
    );
    if let Some(addr) = cfg.metrics.listen {
        say!("rvsd: metrics on http://{addr}/metrics");
    }

    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        if HUP.swap(false, Ordering::SeqCst) {
            say!("rvsd: SIGHUP: {:?}", d.reload());
        }
    }
    ctl_stop.store(true, Ordering::SeqCst);
    let _ = server.join();
    let _ = est.join();
    if let Some(c) = checker {
        c.join();
    }
    if let Some(m) = metrics_server {
        // Joined before the ports are closed: a scrape reads their statistics.
        let _ = m.join();
    }
    drop(socket_file);
    running.stop_workers();

    say!("rvsd: stopping; final statistics");
    for (pc, port) in cfg.ports.iter().zip(&ports) {
        match port.stats() {
            Ok(s) => say!(
                "port {} {:?}: rx {} pkts {} bytes, tx {} pkts {} bytes, imissed {}, ierrors {}, oerrors {}, rx_nombuf {}",
                port.id(),
                pc.name,
                s.ipackets,
                s.ibytes,
                s.opackets,
                s.obytes,
                s.imissed,
                s.ierrors,
                s.oerrors,
                s.rx_nombuf
            ),
            Err(e) => say!("port {} {:?}: stats unavailable: {e}", port.id(), pc.name),
        }
    }
    let mut total = CounterSnapshot::default();
    for (lcore, c) in &counters {
        let s = c.snapshot();
        say!("{}", format_core(&format!("core {lcore}"), &s));
        total.add(&s);
    }
    say!("{}", format_core("total", &total));
    drop(running); // the ports: stopped and closed
    drop(counters);
    drop(pools);
    // The EAL itself is released by process exit (see dpdk::Eal::cleanup).
    let _ = eal;
    Ok(())
}

/// The control socket's file, removed on every way out of `run` (unless another daemon's
/// replaced it).
struct RemoveOnDrop(rvs_ctrlplane::ctl::server::SocketFile);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// What `run` started: workers, then ports; undone in reverse on drop, on every way out.
struct Running {
    stop: Arc<AtomicBool>,
    launched: Vec<dpdk::lcore::Launched>,
    ports: Vec<dpdk::Port>,
}

impl Running {
    /// Ask every worker to stop and wait for each.
    fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.launched.drain(..) {
            h.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_workers();
        // Closed even when stop fails: close releases the queues and the mbufs they hold,
        // which must be done before the pools are freed.
        for port in &self.ports {
            if let Err(e) = port.stop() {
                say_err!("rvsd: {e}");
            }
            if let Err(e) = port.close() {
                say_err!("rvsd: {e}");
            }
        }
    }
}

/// Probe threads of the health checker (checks of different real servers run in parallel, each
/// bounded by its timeout).
const HEALTH_PROBES: usize = 4;

/// The health checker's TCP connector: like `TcpStream::connect_timeout`, but bound to `source`
/// (`[health] source`) first when given.
fn connect_from(
    addr: std::net::SocketAddr,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    use std::net::SocketAddr;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let Some(src) = source else {
        return std::net::TcpStream::connect_timeout(&addr, timeout);
    };
    let last = std::io::Error::last_os_error;
    /// A sockaddr for `a` and its length.
    fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match a {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
                let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above.
                let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr.s6_addr = v6.ip().octets();
                sin6.sin6_scope_id = v6.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (ss, len) = sockaddr(SocketAddr::new(src, 0));
    // SAFETY: `ss` holds a sockaddr of `len` bytes.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &ss as *const _ as *const libc::sockaddr,
            len,
        )
    } < 0
    {
        return Err(last());
    }
    let (ss, len) = sockaddr(addr);
    // SAFETY: as above.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &ss as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if r < 0 {
        let e = last();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // A signal (SIGHUP: a reload) may interrupt the wait: wait again for what is left, or
        // the check would fail for it.
        let deadline = std::time::Instant::now() + timeout;
        let n = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = last();
                if e.raw_os_error() == Some(libc::EINTR) && !left.is_zero() {
                    continue;
                }
                return Err(e);
            }
            break n;
        };
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        let mut err: libc::c_int = 0;
        let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one c_int into `err`.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut _ as *mut libc::c_void,
                &mut elen,
            )
        };
        if r < 0 {
            return Err(last());
        }
        if err != 0 {
            return Err(std::io::Error::from_raw_os_error(err));
        }
    }
    let s = std::net::TcpStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

/// The metrics [`metrics::Source`] of a running rvsd: the control side's services and rates,
/// the workers' per-core counters, and the ports' DPDK statistics (ports are `Copy` ids; reading
/// their statistics from a control thread is what DPDK's own telemetry does).
struct MetricsSource {
    daemon: Arc<daemon::Daemon>,
    cores: Vec<(u32, Arc<CoreCounters>)>,
    ports: Vec<(String, dpdk::Port)>,
}

impl metrics::Source for MetricsSource {
    fn sample(&self) -> metrics::Sample {
        let mut s = self.daemon.metrics_sample();
        s.cores = self
            .cores
            .iter()
            .map(|(lcore, c)| (*lcore, c.snapshot()))
            .collect();
        s.ports = self
            .ports
            .iter()
            .map(|(name, p)| metrics::PortSample {
                name: name.clone(),
                link_up: p.link().is_ok_and(|l| l.up),
                stats: p.stats().ok(),
            })
            .collect();
        s
    }
}

fn format_core(label: &str, s: &CounterSnapshot) -> String {
    let mut out = format!("{label}:");
    for (name, v) in s.events() {
        out.push_str(&format!(" {name} {v}"));
    }
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| s.dropped(**r) > 0)
        .map(|r| format!("{} {}", r.name(), s.dropped(*r)))
        .collect();
    out.push_str(&format!("; drops {}", s.total_drops()));
    if !drops.is_empty() {
        out.push_str(&format!(" ({})", drops.join(", ")));
    }
    out
}
