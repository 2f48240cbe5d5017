//! The rvsd configuration file.
//!
//! rvsd reads one TOML file (see `configs/minimal.toml` in the repository,
//! which documents every key). [`Config::load`] reads, parses and validates
//! it into plain types; nothing here knows about DPDK beyond the EAL command
//! line ([`EalConfig::args`]).
//!
//! Every problem is reported as a [`ConfigError`] that names the file, the
//! line and column of the offending value and its dotted key path, e.g.
//! `rvs.toml:12:9: dataplane.burst: burst must be between 4 and 512, got 0`.
//! Unknown keys are errors everywhere.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod parse;
mod tree;

#[cfg(test)]
mod tests;

/// A parsed and validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file the configuration was read from (as given to
    /// [`Config::load`] or [`Config::parse`]).
    pub source: PathBuf,
    /// DPDK EAL settings (`[eal]`).
    pub eal: EalConfig,
    /// Worker and packet-path settings (`[dataplane]`).
    pub dataplane: DataplaneConfig,
    /// Neighbour (ARP / NDP) cache settings (`[neighbour]`).
    pub neighbour: NeighbourConfig,
    /// The ports (`[[port]]`), in file order; at least one.
    pub ports: Vec<PortConfig>,
    /// The static routes (`[[route]]`), in file order.
    pub routes: Vec<RouteConfig>,
    /// FULLNAT settings shared by all services (`[fullnat]`).
    pub fullnat: FullnatConfig,
    /// The virtual services (`[[service]]`), in file order; possibly none.
    pub services: Vec<ServiceConfig>,
    /// The control socket rvsadm talks to (`[control]`).
    pub control: ControlConfig,
    /// The Prometheus metrics endpoint (`[metrics]`).
    pub metrics: MetricsConfig,
    /// Real-server health checking (`[health]`); the checks themselves are
    /// per service (`[service.check]`) or per real server
    /// (`[service.real.check]`).
    pub health: HealthConfig,
}

/// Global health-check settings: the `[health]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthConfig {
    /// Local address the checks' sockets are bound to (`source`, default
    /// none: the kernel picks one). Checks go through the kernel's stack, not
    /// DPDK, so this is an address of the management interface. Used only for
    /// real servers of its family.
    pub source: Option<IpAddr>,
    /// What happens to a real server that is down (`down_action`).
    pub down_action: DownAction,
}

/// What rvsd does with a real server whose health check says it is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownAction {
    /// `"quiesce"` (the only one for now): its effective weight becomes 0,
    /// so it gets no new sessions; existing sessions are kept (they expire
    /// or end normally). The configured weight is kept and shown.
    #[default]
    Quiesce,
}

/// A health check (`[service.check]`, `[service.real.check]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// What is checked (`type`).
    pub kind: CheckKind,
    /// Port checked (`port`, 1..=65535, default the real server's port).
    pub port: Option<u16>,
    /// Time between the starts of two checks, in ms (`interval_ms`,
    /// 100..=3600000, default 2000).
    pub interval_ms: u32,
    /// How long one check may take, in ms (`timeout_ms`, 10..=60000, at most
    /// `interval_ms`, default 1000).
    pub timeout_ms: u32,
    /// Consecutive successes that bring a down real server up (`rise`,
    /// 1..=100, default 2).
    pub rise: u32,
    /// Consecutive failures that bring an up real server down (`fall`,
    /// 1..=100, default 3).
    pub fall: u32,
}

/// The kind of a health check (`type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `"none"`: not checked (always up); turns a service's check off for one
    /// real server.
    None,
    /// `"tcp"`: a TCP connection is accepted.
    Tcp,
    /// `"icmp"`: an ICMP echo request is answered (the system `ping`, run on the control side).
    Icmp,
    /// `"http"`: an HTTP/1.0 `GET path` answers `expect_status` (any 2xx when not given, as
    /// keepalived's `HTTP_GET`), with `expect_body` in the body when given.
    Http {
        /// `path` (default `"/"`): starts with `/`, no spaces or control
        /// characters.
        path: String,
        /// `expect_status` (100..=599; default: any 2xx).
        expect_status: Option<u16>,
        /// `expect_body` (default none): a substring the body must contain.
        expect_body: Option<String>,
    },
    /// `"udp"`: a datagram `send` is answered (by any reply, or by one
    /// containing `expect`); an ICMP port unreachable fails at once.
    Udp {
        /// `send` (required): the datagram's payload.
        send: String,
        /// `expect` (default none): a substring the reply must contain.
        expect: Option<String>,
    },
}

impl CheckConfig {
    /// The check with rvs's defaults: every 2 s, 1 s timeout, up after 2 successes, down after
    /// 3 failures (keepalived's are slower: a 60 s `delay_loop`, 5 s `connect_timeout`).
    pub fn new(kind: CheckKind) -> CheckConfig {
        CheckConfig {
            kind,
            port: None,
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        }
    }

    /// Whether this check, given to a real server of port 0 (it keeps the client's port),
    /// would probe port 0: it probes a port (not `none`, not ICMP) and names none of its own.
    pub fn lacks_port_for_port_zero(&self) -> bool {
        self.port.is_none() && !matches!(self.kind, CheckKind::None | CheckKind::Icmp)
    }
}

impl ServiceConfig {
    /// The health check in force for real server `r`: its own check, else
    /// the service's; `None` when neither is given or it is `type = "none"`.
    pub fn check_of<'a>(&'a self, r: &'a RealConfig) -> Option<&'a CheckConfig> {
        r.check
            .as_ref()
            .or(self.check.as_ref())
            .filter(|c| c.kind != CheckKind::None)
    }

    /// The addresses the service makes rvs's own on its ports: its VIP (every address of a match
    /// prefix of at most [`rvs_core::MATCH_OWN_MAX`] addresses) and its local addresses.
    pub fn owned_ips(&self) -> Vec<IpAddr> {
        let mut v = match &self.mark {
            Some(m) => m.core().owned_addrs(),
            None => vec![self.vip],
        };
        v.extend(self.lips.iter().copied());
        v
    }
}

/// The Prometheus metrics endpoint: the `[metrics]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsConfig {
    /// Address (`IP:PORT`) rvsd serves `GET /metrics` on over HTTP
    /// (`listen`, e.g. `"127.0.0.1:9400"`); `None` (absent) serves no metrics.
    pub listen: Option<std::net::SocketAddr>,
}

/// The control socket: the `[control]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// Path of the Unix socket rvsd listens on for rvsadm (`socket`, default
    /// [`DEFAULT_SOCKET`]): non-empty, at most 107 bytes (`sun_path`), not
    /// ending in `/`.
    pub socket: PathBuf,
    /// Permission bits of the socket file (`mode`, an octal string such as
    /// `"0600"`, default 0600): at most 0777, with the owner's write bit
    /// (connecting to a Unix socket needs write permission).
    pub mode: u32,
}

/// The default control socket path, `/run/rvsd.sock`.
pub const DEFAULT_SOCKET: &str = "/run/rvsd.sock";

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
            mode: 0o600,
        }
    }
}

/// DPDK EAL settings: the `[eal]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalConfig {
    /// The lcore of the main (control) thread (`main_lcore`, default 0).
    pub main_lcore: u32,
    /// Memory to preallocate in MiB, EAL `-m` (`memory_mb`, default 512).
    pub memory_mb: u32,
    /// Run without hugepages, EAL `--no-huge` (`no_huge`, default true).
    pub no_huge: bool,
    /// EAL `--file-prefix`, to run several DPDK processes side by side
    /// (`file_prefix`, default none).
    pub file_prefix: Option<String>,
    /// Extra raw EAL arguments appended to the generated ones (`args`,
    /// default none).
    pub args: Vec<String>,
    /// An explicit lcore-to-CPU map for EAL `--lcores`, e.g. `0@0,1@0,2@1`
    /// (`lcores`, default none). Comma-separated `LCORE` or `LCORE@CPU`
    /// entries, each lcore once; it names the main lcore and every worker.
    /// When set, [`args`](Self::args) passes `--lcores` instead of `-l`.
    pub lcores: Option<String>,
}

/// Worker and packet-path settings: the `[dataplane]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// The lcores of the worker threads (`workers`, default `[1]`): distinct,
    /// at least one, none equal to the main lcore. Worker `i` polls queue `i`
    /// of every port.
    pub workers: Vec<u32>,
    /// Route transit IPv4 packets (`ip_forward`, default false).
    pub ip_forward: bool,
    /// Packets per rx / tx burst (`burst`, 1..=512, default 32).
    pub burst: u16,
    /// Rx descriptors per queue (`rx_desc`, power of two 64..=16384, default 1024).
    pub rx_desc: u16,
    /// Tx descriptors per queue (`tx_desc`, power of two 64..=16384, default 1024).
    pub tx_desc: u16,
    /// Mbufs per port (`mbufs`): `mbufs * ports` in all, split into one pool per worker
    /// ([`DataplaneConfig::pool_per_worker`]), each of which must hold what may be parked of its
    /// mbufs (`check_mbufs`: every port's RX ring, every worker's TX rings, kernel-side queues,
    /// caches, redirect rings). Not given: 8191, or the least that fits when that is more.
    pub mbufs: u32,
    /// Per-lcore mbuf cache size (`mbuf_cache`, default 256); at most 512 and
    /// at most `mbufs / 1.5`.
    pub mbuf_cache: u32,
    /// ICMP error messages each worker may send per second
    /// (`icmp_ratelimit`, default 1000; 0 sends none).
    pub icmp_ratelimit: u32,
    /// Size of each worker-to-worker packet redirect ring, in packets
    /// (`redirect_ring`, power of two 128..=65536, default 1024; it holds one packet less).
    pub redirect_ring: u32,
}

impl DataplaneConfig {
    /// Mbufs in each worker's pool: `mbufs * ports / workers` (rvsd gives every worker a pool
    /// of its own; its RX queues fill from it).
    pub fn pool_per_worker(&self, ports: usize) -> u32 {
        let all = u64::from(self.mbufs) * ports as u64;
        (all / self.workers.len().max(1) as u64).min(u64::from(u32::MAX)) as u32
    }
}

/// Neighbour (ARP / NDP) cache settings: the `[neighbour]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// Entries per worker core (`capacity`, default 1024).
    pub capacity: u32,
    /// Packets held per unresolved next hop (`hold_packets`, default 8).
    pub hold_packets: u32,
    /// How long a confirmed entry stays reachable, in ms (`reachable_ms`,
    /// default 30000).
    pub reachable_ms: u32,
    /// How long an unused stale entry is kept, in ms (`gc_stale_ms`, default
    /// 600000); not less than `reachable_ms`.
    pub gc_stale_ms: u32,
    /// Interval between resolution probes, in ms (`retrans_ms`, default 1000).
    pub retrans_ms: u32,
    /// Probes sent before a next hop is declared unreachable (`max_probes`,
    /// default 3).
    pub max_probes: u32,
}

/// FULLNAT settings: the `[fullnat]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullnatConfig {
    /// Sessions (connections) per worker core (`sessions`, 1..=2^26,
    /// default 65536).
    pub sessions: u32,
    /// Insert the client's address as a TCP option (TOA) into the first
    /// packets sent to the real server (`toa`, default true).
    pub toa: bool,
    /// Clamp the MSS of SYNs passing through to this value (`mss_clamp`,
    /// 536..=9000, default none: leave it).
    pub mss_clamp: Option<u16>,
    /// Lowest local port used on a local address (`lport_min`, default 1025).
    pub lport_min: u16,
    /// Highest local port used on a local address (`lport_max`, default
    /// 65535); greater than `lport_min`.
    pub lport_max: u16,
    /// Seconds a freed local port rests before it is used again
    /// (`lport_reuse_delay_s`, 0..=86400, default 120).
    pub lport_reuse_delay_s: u32,
    /// IPVS's `expire_quiescent_template` (`expire_quiescent_template`, default false, as
    /// IPVS): whether a persistent client whose real server an operator quiesced (`-w 0`) is
    /// scheduled afresh rather than kept on it. A real server down by its health check always
    /// loses its persistent clients.
    pub expire_quiescent_template: bool,
    /// Session timeouts (`[fullnat.timeouts]`).
    pub timeouts: TimeoutsConfig,
}

/// Session timeouts in seconds, each 1..=2147483 (2^31 ms): the
/// `[fullnat.timeouts]` table. The defaults are IPVS's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutsConfig {
    /// An established TCP session (`tcp`, default 900).
    pub tcp: u32,
    /// A TCP session in FIN_WAIT (`tcpfin`, default 120).
    pub tcpfin: u32,
    /// A UDP session (`udp`, default 300).
    pub udp: u32,
    /// TCP SYN_SENT (`syn_sent`, default 120).
    pub syn_sent: u32,
    /// TCP SYN_RECV (`syn_recv`, default 60).
    pub syn_recv: u32,
    /// TCP CLOSE_WAIT (`close_wait`, default 60).
    pub close_wait: u32,
    /// TCP LAST_ACK (`last_ack`, default 30).
    pub last_ack: u32,
    /// TCP TIME_WAIT (`time_wait`, default 120).
    pub time_wait: u32,
    /// TCP CLOSE (`close`, default 10).
    pub close: u32,
}

/// The layer-4 protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP (`"tcp"`).
    Tcp,
    /// UDP (`"udp"`).
    Udp,
}

impl Proto {
    /// The name as written in the configuration: `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// The dataplane's protocol.
    pub fn core(self) -> rvs_core::Proto {
        match self {
            Proto::Tcp => rvs_core::Proto::Tcp,
            Proto::Udp => rvs_core::Proto::Udp,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a virtual service picks a real server for a new session: the LVS
/// schedulers, with IPVS's semantics (see `rvs_core::sched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Round robin (`"rr"`), ignoring weights other than 0 (which takes a
    /// real server out of rotation).
    Rr,
    /// Weighted round robin (`"wrr"`).
    Wrr,
    /// Least connection (`"lc"`).
    Lc,
    /// Weighted least connection (`"wlc"`).
    Wlc,
    /// Shortest expected delay (`"sed"`).
    Sed,
    /// Never queue (`"nq"`).
    Nq,
    /// Source hashing (`"sh"`; flags `sh-fallback`, `sh-port`).
    Sh,
    /// Destination hashing (`"dh"`).
    Dh,
    /// Locality-based least connection (`"lblc"`).
    Lblc,
    /// Locality-based least connection with replication (`"lblcr"`).
    Lblcr,
    /// Weighted failover (`"fo"`).
    Fo,
    /// Overflow connection (`"ovf"`).
    Ovf,
    /// Maglev hashing (`"mh"`; flags `mh-fallback`, `mh-port`).
    Mh,
    /// Weighted random two choices (`"twos"`).
    Twos,
}

impl Scheduler {
    /// Every scheduler, in ipvsadm's order.
    pub const ALL: &'static [Scheduler] = &[
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Sh,
        Scheduler::Dh,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Mh,
        Scheduler::Twos,
    ];

    /// The name as written in the configuration (`rr`, `wlc`, `mh`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Sh => "sh",
            Scheduler::Dh => "dh",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Mh => "mh",
            Scheduler::Twos => "twos",
        }
    }

    /// The scheduler named `name`.
    pub fn from_name(name: &str) -> Option<Scheduler> {
        Scheduler::ALL.iter().copied().find(|s| s.as_str() == name)
    }

    /// The bit (0, 1, 2) of scheduler flag `name` for this scheduler: ipvsadm's generic
    /// `flag-1`..`flag-3` (IPVS's `IP_VS_SVC_F_SCHED1..3`, any scheduler), or one of its
    /// [`Scheduler::flag_names`] (sh and mh name the first two `*-fallback` and `*-port`).
    pub fn flag_bit(self, name: &str) -> Option<usize> {
        match name {
            "flag-1" => Some(0),
            "flag-2" => Some(1),
            "flag-3" => Some(2),
            _ => self.flag_names().iter().position(|n| *n == name),
        }
    }

    /// The scheduler flags it takes (ipvsadm `-b`): `sh-fallback`,
    /// `sh-port` for sh, `mh-fallback`, `mh-port` for mh, none otherwise.
    pub fn flag_names(self) -> &'static [&'static str] {
        match self {
            Scheduler::Sh => &["sh-fallback", "sh-port"],
            Scheduler::Mh => &["mh-fallback", "mh-port"],
            _ => &[],
        }
    }

    /// Check scheduler flags: each one this scheduler takes, none twice.
    pub fn check_flags<S: AsRef<str>>(self, flags: &[S]) -> Result<(), String> {
        for (i, f) in flags.iter().enumerate() {
            let f = f.as_ref();
            if !self.flag_names().contains(&f) {
                return Err(if self.flag_names().is_empty() {
                    format!("scheduler {self} takes no flags, got {f:?}")
                } else {
                    format!(
                        "scheduler {self} takes the flags {}, got {f:?}",
                        self.flag_names().join(", ")
                    )
                });
            }
            if flags[..i].iter().any(|g| g.as_ref() == f) {
                return Err(format!("scheduler flag {f:?} is given twice"));
            }
        }
        Ok(())
    }
}

/// Default Maglev lookup table size (IPVS's 4093).
pub const MH_TABLE_SIZE: u32 = 4093;

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How packets reach a real server (LVS's forwarding methods, chosen per
/// real server as with ipvsadm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forward {
    /// FULLNAT (`"fullnat"`): source and destination translated; needs the
    /// service's `lips`.
    FullNat,
    /// NAT / masquerading (`"nat"`, ipvsadm `-m`): destination translated;
    /// the real server must route its replies through rvs.
    Nat,
    /// Direct routing (`"dr"`, ipvsadm `-g`): only the MAC changes; the real
    /// server is on-link, owns the VIP and answers the client directly.
    Dr,
    /// IP-in-IP tunnelling (`"tun"`, ipvsadm `-i`): the real server
    /// decapsulates and answers the client directly.
    Tun,
}

impl Forward {
    /// The name as written in the configuration: `fullnat`, `nat`, `dr` or
    /// `tun`.
    pub fn as_str(self) -> &'static str {
        match self {
            Forward::FullNat => "fullnat",
            Forward::Nat => "nat",
            Forward::Dr => "dr",
            Forward::Tun => "tun",
        }
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[service]]`: a virtual service. Clients connect to `vip:vport`;
/// rvs forwards each session to a real server with that real server's
/// forwarding method (FULLNAT ones from one of the local addresses, LIPs,
/// as source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The protocol (`proto`, required).
    pub proto: Proto,
    /// The virtual IP address (`vip`, required). Unique with `proto` and
    /// `vport`; not an address of a port, nor a local address.
    pub vip: IpAddr,
    /// The virtual port (`vport`, 1..=65535, required; 0 = every port of the VIP, which
    /// needs `persistent`).
    pub vport: u16,
    /// The scheduler (`scheduler`, required).
    pub scheduler: Scheduler,
    /// Scheduler flags (`sched_flags`, default none), ipvsadm's `-b`:
    /// `"sh-fallback"`, `"sh-port"` with sh, `"mh-fallback"`, `"mh-port"`
    /// with mh.
    pub sched_flags: Vec<String>,
    /// Maglev lookup table size (`mh_table_size`, mh only): a prime up to
    /// 131071, default 4093 (IPVS's); 65537 as in the Maglev paper.
    pub mh_table_size: u32,
    /// Persistence timeout in seconds (`persistent`, 1..=2^31, default none; ipvsadm `-p`):
    /// every connection of a client network goes to the same real server while its template
    /// lives. Required when `vport` is 0. Not with NAT real servers.
    pub persistent: Option<u32>,
    /// Persistence netmask as a prefix length (`netmask`: `"255.255.255.0"` or `24`, default
    /// the full length, one template per client address; ipvsadm `-M`). Only with `persistent`.
    pub netmask: Option<u8>,
    /// The default forwarding method of the service's real servers
    /// (`forward`, default `fullnat`).
    pub forward: Forward,
    /// Index into [`Config::ports`] of the port that owns the VIP (`port`;
    /// by default the port whose connected subnet holds the VIP).
    pub port: usize,
    /// The local addresses FULLNAT sessions to the real servers are sent
    /// from (`lips`, distinct): of the VIP's family, not port addresses nor
    /// VIPs. Services may share them. Required (at least one) when some real
    /// server is FULLNAT; may be absent otherwise.
    pub lips: Vec<IpAddr>,
    /// Index into [`Config::ports`] of the port that owns the local
    /// addresses (`lip_port`; by default the port whose connected subnet
    /// holds the first of them, and then all of them must be in that port's
    /// connected subnets; without local addresses, by default `port`).
    pub lip_port: usize,
    /// The real servers (`[[service.real]]`), in file order; at least one.
    pub reals: Vec<RealConfig>,
    /// The health check of its real servers (`[service.check]`, default
    /// none: real servers are always up).
    pub check: Option<CheckConfig>,
    /// Match service (`mark` with a `[service.match]` table instead of `vip`/`vport`; ipvsadm
    /// `-f MARK`). `vip` is then the match's network address and `vport` 0 (placeholders).
    pub mark: Option<MatchConfig>,
}

/// `mark = N` with `[service.match]`: the packets a match (fwmark-like) service balances.
/// Destination prefixes of at most 256 addresses are owned by rvs (ARP answered); the
/// addresses of a larger prefix must be routed to rvs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchConfig {
    /// The mark (`mark`, 1..=2^32-1, unique).
    pub mark: u32,
    /// The protocol (`match.proto`, required).
    pub proto: Proto,
    /// Destination prefix (`match.dst`, IPv4, required).
    pub dst: rvs_core::Prefix,
    /// Destination port range (`match.dport`: `"80"` or `"8000-8100"`, required).
    pub dport: (u16, u16),
    /// Source prefix (`match.src`, IPv4, default every client).
    pub src: Option<rvs_core::Prefix>,
}

impl MatchConfig {
    /// The dataplane's match (what the workers balance, and the addresses they own).
    pub fn core(&self) -> rvs_core::ServiceMatch {
        rvs_core::ServiceMatch {
            mark: self.mark,
            proto: self.proto.core(),
            dst: self.dst,
            dport: self.dport,
            src: self.src,
        }
    }
}

/// One `[[service.real]]`: a real server of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealConfig {
    /// The real server's address (`ip`, required): of the VIP's family and
    /// reachable, i.e. in a connected subnet of a port or covered by a route.
    pub ip: IpAddr,
    /// The real server's port (`port`, 1..=65535, default the service's
    /// `vport`). Unique with `ip` within the service.
    pub port: u16,
    /// The weight (`weight`, 0..=65535, default 1); 0 sends it no new
    /// sessions.
    pub weight: u32,
    /// The forwarding method (`forward`, default the service's). DR and TUN
    /// cannot map ports (`port` must be the vport); DR needs the real server
    /// in a connected subnet of a port.
    pub forward: Forward,
    /// Upper connection threshold (`upper`, 0..=65535, default 0 = none;
    /// ipvsadm `-x`): no new sessions once active + inactive reaches it.
    /// Counted per worker (core).
    pub upper: u32,
    /// Lower connection threshold (`lower`, 0..=65535, default 0; ipvsadm
    /// `-y`): an overloaded real server takes new sessions again below it
    /// (below 3/4 of `upper` when 0).
    pub lower: u32,
    /// This real server's health check (`[service.real.check]`, default
    /// none: the service's). Keys it leaves out are the service check's.
    pub check: Option<CheckConfig>,
}

impl PortConfig {
    /// DPDK name of the exception-path TAP of port `i` (`net_tap` vdev).
    pub fn kernel_dpdk_name(i: usize) -> String {
        format!("net_tap{i}")
    }
}

/// One `[[port]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Unique name, used by routes (`name`, required).
    pub name: String,
    /// The DPDK device (`device`, required).
    pub device: Device,
    /// MAC address to set on the port instead of its own (`mac`).
    pub mac: Option<[u8; 6]>,
    /// MTU (`mtu`, 68..=[`MAX_MTU`] (2030), default 1500).
    pub mtu: u16,
    /// Addresses rvs owns on this port with their prefix lengths, host bits
    /// kept (`addresses`, e.g. `["192.0.2.1/24"]`, default none). Each also
    /// gives the port a connected subnet.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Spread received packets over the workers by RSS when the port has
    /// several queues (`rss`, default true).
    pub rss: bool,
    /// Put the port in promiscuous mode (`promiscuous`, default false).
    pub promiscuous: bool,
    /// The exception path (`kernel`, optional): name of a kernel TAP interface (DPDK `net_tap`)
    /// that mirrors the port — same MAC and addresses — and receives what rvs does not serve
    /// itself (TCP/UDP to the port's addresses, other ICMP, fragments, ARP replies); what the
    /// kernel sends there leaves through the port.
    pub kernel: Option<String>,
}

/// A DPDK device a port is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Device {
    /// A PCI device, its address normalised to `0000:3b:00.0` form
    /// (lower-case hex, four-digit domain).
    Pci(String),
    /// A virtual device string as given to EAL `--vdev`, e.g.
    /// `net_af_xdp0,iface=eth0` or `net_null0`.
    Vdev(String),
}

impl Device {
    /// The name DPDK gives the port (for `rte_eth_dev_get_port_by_name`):
    /// for a vdev the part before the first comma (`net_af_xdp0`), for PCI
    /// the normalised address (`0000:3b:00.0`).
    pub fn dpdk_name(&self) -> &str {
        match self {
            Device::Pci(addr) => addr,
            Device::Vdev(s) => s.split(',').next().unwrap_or(s),
        }
    }

    /// The EAL arguments that make the device available: `["--vdev", s]` or
    /// `["-a", pci]`.
    pub fn eal_args(&self) -> [String; 2] {
        match self {
            Device::Pci(addr) => ["-a".to_owned(), addr.clone()],
            Device::Vdev(s) => ["--vdev".to_owned(), s.clone()],
        }
    }

    /// Whether this is a PCI device.
    pub fn is_pci(&self) -> bool {
        matches!(self, Device::Pci(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Pci(s) | Device::Vdev(s) => f.write_str(s),
        }
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The destination, normalised to its network address (host bits
    /// cleared), with its prefix length.
    pub prefix: (IpAddr, u8),
    /// The next hop; `None` for a connected route. Always in a connected
    /// subnet of [`port`](Self::port) and of the prefix's address family.
    pub via: Option<IpAddr>,
    /// Index into [`Config::ports`] of the port the route goes out of.
    pub port: usize,
}

impl EalConfig {
    /// The full EAL argv for `rte_eal_init`: `rvsd`, `-l main,workers...`
    /// (or `--lcores` [`lcores`](Self::lcores) when that is set),
    /// `--main-lcore`, `--no-huge` when set, `-m`, `--no-pci` when no port is
    /// PCI, `--file-prefix` when set, each port's device arguments, then the
    /// extra [`args`](Self::args).
    pub fn args(&self, cfg: &Config) -> Vec<String> {
        let mut argv = vec!["rvsd".to_owned()];
        match &self.lcores {
            Some(map) => {
                argv.push("--lcores".to_owned());
                argv.push(map.clone());
            }
            None => {
                let mut lcores = vec![self.main_lcore.to_string()];
                lcores.extend(cfg.dataplane.workers.iter().map(u32::to_string));
                argv.push("-l".to_owned());
                argv.push(lcores.join(","));
            }
        }
        argv.push("--main-lcore".to_owned());
        argv.push(self.main_lcore.to_string());
        if self.no_huge {
            argv.push("--no-huge".to_owned());
        }
        argv.push("-m".to_owned());
        argv.push(self.memory_mb.to_string());
        if !cfg.ports.iter().any(|p| p.device.is_pci()) {
            argv.push("--no-pci".to_owned());
        }
        if let Some(prefix) = &self.file_prefix {
            argv.push("--file-prefix".to_owned());
            argv.push(prefix.clone());
        }
        for port in &cfg.ports {
            argv.extend(port.device.eal_args());
        }
        for (i, port) in cfg.ports.iter().enumerate() {
            if let Some(k) = &port.kernel {
                argv.push("--vdev".to_owned());
                argv.push(format!("{},iface={k}", PortConfig::kernel_dpdk_name(i)));
            }
        }
        argv.extend(self.args.iter().cloned());
        argv
    }
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            main_lcore: 0,
            memory_mb: 512,
            no_huge: true,
            file_prefix: None,
            args: Vec::new(),
            lcores: None,
        }
    }
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            workers: vec![1],
            ip_forward: false,
            burst: 32,
            rx_desc: 1024,
            tx_desc: 1024,
            mbufs: 8191,
            mbuf_cache: 256,
            icmp_ratelimit: 1000,
            redirect_ring: 1024,
        }
    }
}

impl Default for FullnatConfig {
    fn default() -> Self {
        FullnatConfig {
            sessions: 65536,
            toa: true,
            mss_clamp: None,
            lport_min: 1025,
            lport_max: 65535,
            lport_reuse_delay_s: 120,
            expire_quiescent_template: false,
            timeouts: TimeoutsConfig::default(),
        }
    }
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            tcp: 900,
            tcpfin: 120,
            udp: 300,
            syn_sent: 120,
            syn_recv: 60,
            close_wait: 60,
            last_ack: 30,
            time_wait: 120,
            close: 10,
        }
    }
}

impl Default for NeighbourConfig {
    fn default() -> Self {
        NeighbourConfig {
            capacity: 1024,
            hold_packets: 8,
            reachable_ms: 30_000,
            gc_stale_ms: 600_000,
            retrans_ms: 1000,
            max_probes: 3,
        }
    }
}

/// Most real servers over all services (rvsd sizes every worker's per-real-server counters for
/// that many; `rvsadm -a` past it is refused with ENOMEM, as ipvsadm's).
pub const MAX_REALS: usize = 4096;

/// Descriptors of each kernel-side (TAP) queue of a port with `kernel`; the driver fills them
/// with mbufs at start.
pub const TAP_DESC: u16 = 512;

/// Largest port MTU: a frame must fit one mbuf's 2048-byte data room with its Ethernet header
/// and a VLAN tag (14 + 4 bytes); jumbo frames would need chained mbufs, which rvs does not
/// handle.
pub const MAX_MTU: u16 = 2048 - 18;

/// Longest session timeout in seconds (2^31 ms), in the file and by `rvsadm --set`.
pub const MAX_TIMEOUT_S: u32 = (1 << 31) / 1000;

pub(crate) use parse::reachability;

/// Largest configuration file [`Config::load`] reads (16 MiB: some 50 000 real servers' worth).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    ///
    /// A file that cannot be read gives an error with line and column 0.
    ///
    /// Only a regular file of at most [`MAX_CONFIG_BYTES`] is read: the path may come from a
    /// control-socket request (`rvsadm --validate FILE`), and a device, a FIFO or a huge file
    /// must not stall or exhaust the daemon.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read;
        let fail = |message: String| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message,
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
        if !meta.is_file() {
            return Err(fail(
                "cannot read the configuration file: not a regular file".into(),
            ));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(fail(format!(
                "the configuration file is {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
                meta.len()
            )));
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(fail(format!(
                "the configuration file is more than the {MAX_CONFIG_BYTES} bytes allowed"
            )));
        }
        Config::parse(&text, path)
    }

    /// Parses and validates configuration `text`; `source` is the file name
    /// errors and [`Config::source`] report.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
        parse::parse(text, source)
    }

    /// The index in [`ports`](Self::ports) of the port called `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// The EAL argv for this configuration; see [`EalConfig::args`].
    pub fn eal_args(&self) -> Vec<String> {
        self.eal.args(self)
    }
}

/// A configuration problem, located in the file.
///
/// Displays as `{file}:{line}:{column}: {key}: {message}`; without the
/// `{key}: ` part when the key is empty (a syntax error outside any key), and
/// as `{file}: {message}` when there is no position (the file could not be
/// read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line of the offending value (or of the table lacking a
    /// required key); 0 when the file could not be read.
    pub line: usize,
    /// 1-based column, in characters; 0 when the file could not be read.
    pub column: usize,
    /// Dotted key path of the offending value, e.g. `port[1].addresses[0]`,
    /// `dataplane.burst`, `route[0].via`; for a TOML syntax error, the
    /// best guess at the key being written; empty when there is none.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        if self.key.is_empty() {
            return write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            );
        }
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Whether `a` and `b` lie in the same `len`-bit subnet (false across families).
pub fn same_subnet(a: IpAddr, b: IpAddr, len: u8) -> bool {
    parse::contains(a, len, b)
}
