//! Plain configuration types of the L2/L3 stack (the daemon fills them in from its TOML).

use crate::addr::{MacAddr, Prefix};
use crate::io::PortIdx;
use std::net::IpAddr;

/// Configuration of one worker's [`crate::stack::Stack`]. Every worker gets the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackConfig {
    /// Dataplane ports, indexed by [`PortIdx`].
    pub ports: Vec<PortConf>,
    /// Static routes (connected routes are derived from the port addresses).
    pub routes: Vec<RouteConf>,
    /// Forward transit IPv4 packets (off: they are dropped as `forwarding_disabled`).
    pub ip_forward: bool,
    /// Neighbour (ARP) table settings.
    pub neigh: NeighConf,
    /// ICMP errors per second per core (token bucket, burst = one second's worth); 0 disables them.
    pub icmp_ratelimit_per_s: u32,
    /// Index of the worker running this stack (0..n_workers). Worker `w` owns the lports with
    /// `lport % n_workers == w`, and the NAT sessions of the clients with
    /// [`crate::fwd::nat_owner`]`(CIP, cport, n_workers) == w`.
    pub worker: u16,
    /// Number of workers (at least 1).
    pub n_workers: u16,
    /// Virtual services (FULLNAT, NAT, DR, TUN per real server).
    pub services: Vec<ServiceConf>,
    /// FULLNAT settings (session table, timeouts, TOA, lports).
    pub fullnat: FullnatConf,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            ports: Vec::new(),
            routes: Vec::new(),
            ip_forward: false,
            neigh: NeighConf::default(),
            icmp_ratelimit_per_s: 1000,
            worker: 0,
            n_workers: 1,
            services: Vec::new(),
            fullnat: FullnatConf::default(),
        }
    }
}

/// One dataplane port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConf {
    /// The port's MAC address.
    pub mac: MacAddr,
    /// IP MTU in bytes (largest IPv4 total length sent on the port), e.g. 1500.
    pub mtu: u16,
    /// Interface addresses with their prefix length, host bits kept (e.g. 192.0.2.1/24). Each is
    /// owned by rvs and gives a connected route.
    pub addrs: Vec<Prefix>,
}

/// A static route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConf {
    /// Destination prefix (host bits are ignored).
    pub prefix: Prefix,
    /// Gateway; `None` for a route to directly reachable hosts. A gateway must be on a connected
    /// subnet of `port`.
    pub via: Option<IpAddr>,
    /// Egress port.
    pub port: PortIdx,
}

/// Neighbour table settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighConf {
    /// Maximum number of entries (all ports together).
    pub capacity: u32,
    /// Packets held per unresolved entry.
    pub hold_packets: u16,
    /// An entry is Reachable this long after its last confirmation, Stale after.
    pub reachable_ms: u64,
    /// An entry not confirmed for this long is removed.
    pub gc_stale_ms: u64,
    /// Interval between ARP requests for an unresolved (or in-use stale) entry.
    pub retrans_ms: u64,
    /// ARP requests sent for an unresolved entry before it fails.
    pub max_probes: u8,
}

impl Default for NeighConf {
    fn default() -> Self {
        NeighConf {
            capacity: 1024,
            hold_packets: 8,
            reachable_ms: 30_000,
            gc_stale_ms: 600_000,
            retrans_ms: 1_000,
            max_probes: 3,
        }
    }
}

/// Transport protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
    /// The protocol with IP protocol number `n`, if rvs balances it.
    pub const fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// Scheduler of a virtual service (IPVS names and semantics, see [`crate::sched`]). The
/// hash-based ones carry their IPVS scheduler flags (`sh-fallback`, `sh-port`, `mh-fallback`,
/// `mh-port`) and, for `mh`, the lookup table size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Sched {
    /// Round robin (`rr`): every dest with weight > 0 in turn.
    #[default]
    Rr,
    /// Weighted round robin (`wrr`), IPVS's gcd/max-weight stepping.
    Wrr,
    /// Least connection (`lc`): least `active*256 + inactive`.
    Lc,
    /// Weighted least connection (`wlc`): least `(active*256 + inactive) / weight`.
    Wlc,
    /// Shortest expected delay (`sed`): least `(active + 1) / weight`.
    Sed,
    /// Never queue (`nq`): an idle dest (no active session) first, else as `sed`.
    Nq,
    /// Source hashing (`sh`) over IPVS's weighted 256-bucket table.
    Sh {
        /// `sh-fallback`: an unavailable bucket falls back to the next available dest.
        fallback: bool,
        /// `sh-port`: hash the source port too.
        port: bool,
    },
    /// Destination hashing (`dh`), 256 buckets.
    Dh,
    /// Locality-based least connection (`lblc`).
    Lblc,
    /// Locality-based least connection with replication (`lblcr`).
    Lblcr,
    /// Weighted failover (`fo`): the available dest with the highest weight.
    Fo,
    /// Overflow (`ovf`): the highest weight whose active count does not exceed its weight.
    Ovf,
    /// Maglev hashing (`mh`).
    Mh {
        /// `mh-fallback`: an unavailable slot falls back to another available dest.
        fallback: bool,
        /// `mh-port`: hash the source port too.
        port: bool,
        /// Lookup table size, a prime ([`MH_TABLE_SIZE`] by default, 65537 in the paper).
        table_size: u32,
    },
    /// Weighted random two choices (`twos`).
    Twos,
}

/// IPVS's default Maglev lookup table size (`CONFIG_IP_VS_MH_TAB_INDEX` 12).
pub const MH_TABLE_SIZE: u32 = 4093;
/// Largest accepted Maglev table size (IPVS's largest prime, 131071).
pub const MH_TABLE_SIZE_MAX: u32 = 131_071;

impl Sched {
    /// IPVS name (`rr`, `wlc`, `mh`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Sched::Rr => "rr",
            Sched::Wrr => "wrr",
            Sched::Lc => "lc",
            Sched::Wlc => "wlc",
            Sched::Sed => "sed",
            Sched::Nq => "nq",
            Sched::Sh { .. } => "sh",
            Sched::Dh => "dh",
            Sched::Lblc => "lblc",
            Sched::Lblcr => "lblcr",
            Sched::Fo => "fo",
            Sched::Ovf => "ovf",
            Sched::Mh { .. } => "mh",
            Sched::Twos => "twos",
        }
    }

    /// `mh` with IPVS's defaults (no flags, table size [`MH_TABLE_SIZE`]).
    pub const fn mh() -> Sched {
        Sched::Mh {
            fallback: false,
            port: false,
            table_size: MH_TABLE_SIZE,
        }
    }

    /// `sh` without flags.
    pub const fn sh() -> Sched {
        Sched::Sh {
            fallback: false,
            port: false,
        }
    }
}

/// True when `n` is prime (trial division; control-plane use).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// One virtual service VIP:vport balanced over `dests`, each with its own forwarding method
/// ([`Fwd`]); FULLNAT dests re-source client connections from `lips`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConf {
    /// Transport protocol.
    pub proto: Proto,
    /// Virtual IP (owned by rvs on `vip_port`).
    pub vip: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Port on which the VIP is owned (ARP answered, announced).
    pub vip_port: PortIdx,
    /// Scheduler.
    pub sched: Sched,
    /// Real servers.
    pub dests: Vec<DestConf>,
    /// Local addresses (FULLNAT sources toward the real servers), owned on `lip_port`. Required
    /// (non-empty) only when some dest is [`Fwd::FullNat`].
    pub lips: Vec<IpAddr>,
    /// Port on which the LIPs are owned.
    pub lip_port: PortIdx,
    /// Persistence (ipvsadm `-p`/`-M`): None for a plain service. Required when `vport` is 0
    /// (a port-0 service matches every port of the VIP).
    pub persist: Option<Persist>,
    /// Match service (ipvsadm `-f MARK`): the service has no single VIP:vport and balances the
    /// packets the [`ServiceMatch`] selects; `vip`, `vport` and `proto` are then ignored by the
    /// lookup (conventionally the match's network address, 0 and the match's protocol).
    /// Addresses of the match's `dst` are owned on `vip_port` when the prefix holds at most
    /// [`MATCH_OWN_MAX`] addresses (ARP answered); larger prefixes must be routed to rvs.
    pub mark: Option<ServiceMatch>,
}

/// Most addresses a match's `dst` prefix may hold for rvs to own (answer ARP for) each of them
/// (a /24); the addresses of a larger prefix must be routed to rvs by the network.
pub const MATCH_OWN_MAX: u32 = 256;

/// Most match services (marks) per service set; packets to owned addresses not matching an
/// exact or port-0 service are checked against them linearly.
pub const MAX_MATCH_SERVICES: usize = 64;

/// The packets a match (fwmark-like) service balances: `proto` to an address in `dst` on a
/// destination port in `dport` (inclusive), from an address in `src` when set. Checked after
/// exact VIP:vport services and port-0 services; the first match service (in configuration
/// order) that matches wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceMatch {
    /// The mark naming the service (ipvsadm `-f`), non-zero.
    pub mark: u32,
    /// Transport protocol.
    pub proto: Proto,
    /// Destination prefix (IPv4).
    pub dst: Prefix,
    /// Destination port range, inclusive (`(80, 80)` for one port).
    pub dport: (u16, u16),
    /// Source prefix (IPv4); None matches every client.
    pub src: Option<Prefix>,
}

impl ServiceMatch {
    /// True when a packet `proto` `src` → `dst`:`dport` is selected by the match.
    #[inline]
    pub fn matches(&self, proto: u8, src: IpAddr, dst: IpAddr, dport: u16) -> bool {
        proto == self.proto.number()
            && dport >= self.dport.0
            && dport <= self.dport.1
            && self.dst.contains(dst)
            && self.src.is_none_or(|p| p.contains(src))
    }

    /// Number of addresses of `dst` (saturating at `u32::MAX`; IPv4 only).
    pub fn dst_size(&self) -> u32 {
        match self.dst.len {
            0 => u32::MAX,
            l => 1u32 << (32 - l.min(32)),
        }
    }

    /// The addresses rvs owns for the match: every address of `dst` when it holds at most
    /// [`MATCH_OWN_MAX`] addresses, none otherwise (control path).
    pub fn owned_addrs(&self) -> Vec<IpAddr> {
        let IpAddr::V4(a) = self.dst.addr else {
            return Vec::new();
        };
        let n = self.dst_size();
        if n > MATCH_OWN_MAX {
            return Vec::new();
        }
        let base = u32::from(a) & crate::addr::mask_v4(self.dst.len);
        (0..n)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(base + i)))
            .collect()
    }
}

/// Persistence of a service (ipvsadm `-p [timeout] -M netmask`): every connection of a client
/// network (`CIP & netmask`) to the service goes to the same real server while the template
/// lives ([`crate::persist`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persist {
    /// Template timeout in milliseconds, restarted by each new connection using the template.
    pub timeout_ms: u64,
    /// IPv4 client netmask, host order (`0xffff_ffff` = one template per client address).
    pub netmask: u32,
}

impl Default for Persist {
    /// IPVS's defaults: 300 s, /32.
    fn default() -> Self {
        Persist {
            timeout_ms: 300_000,
            netmask: u32::MAX,
        }
    }
}

/// Forwarding method of a real server (ipvsadm's `-g`/`-i`/`-m`, plus FULLNAT), chosen per real
/// server as in IPVS: one service may mix methods.
///
/// - `FullNat`: client CIP:cport → VIP:vport becomes LIP:lport → RIP:rport; replies come back to
///   the LIP (the service needs `lips`).
/// - `Nat` (masquerading, `-m`): the destination becomes RIP:rport (port mapping allowed), the
///   source CIP:cport stays; the real server routes its replies through rvs, which restores
///   VIP:vport as their source.
/// - `Dr` (direct routing, `-g`): only the Ethernet header changes (the real server's MAC); the
///   real server owns the VIP on a non-ARPing interface and answers the client directly.
/// - `Tun` (IP-in-IP, `-i`): the packet is encapsulated in IPv4 DIP → RIP (protocol 4); the real
///   server decapsulates and answers the client directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Fwd {
    /// FULLNAT (source and destination translated).
    #[default]
    FullNat = 0,
    /// NAT / masquerading (destination translated, replies through rvs).
    Nat = 1,
    /// Direct routing (MAC rewrite only, replies bypass rvs).
    Dr = 2,
    /// IP-in-IP tunnelling (replies bypass rvs).
    Tun = 3,
}

impl Fwd {
    /// ipvsadm's name of the method (`FullNat`, `Masq`, `Route`, `Tunnel`).
    pub const fn ipvs_name(self) -> &'static str {
        match self {
            Fwd::FullNat => "FullNat",
            Fwd::Nat => "Masq",
            Fwd::Dr => "Route",
            Fwd::Tun => "Tunnel",
        }
    }

    /// True for the methods where rvs sees only the client → real server direction (DR, TUN).
    #[inline]
    pub const fn input_only(self) -> bool {
        matches!(self, Fwd::Dr | Fwd::Tun)
    }
}

/// One real server RIP:rport of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestConf {
    /// Stable id assigned by the control plane, `< FullnatConf::max_dests`; it indexes the per-core
    /// per-dest counters ([`crate::Stack::dest_stats`]).
    pub id: u32,
    /// Real server address.
    pub rip: IpAddr,
    /// Real server port.
    pub rport: u16,
    /// Weight; 0 = quiesced (no new sessions, existing ones continue).
    pub weight: u32,
    /// Forwarding method. DR and TUN cannot map ports (`rport` must equal the service's vport;
    /// the control plane validates it, the core sends to `rport` as given).
    pub fwd: Fwd,
    /// Upper connection threshold (ipvsadm `-x`, 0 = none): the dest is overloaded (gets no new
    /// sessions) once its active + inactive count reaches it. Counts are this worker's
    /// ([`crate::sched`]).
    pub upper: u32,
    /// Lower connection threshold (ipvsadm `-y`, 0 = none): an overloaded dest recovers when its
    /// count drops below it (below 3/4 of `upper` when 0).
    pub lower: u32,
    /// Down by its health check (the control plane also gives it weight 0): besides getting no
    /// new sessions, persistence templates to it expire whatever
    /// [`FullnatConf::expire_quiescent_template`] says (IPVS: a dest no longer available).
    pub down: bool,
    /// While `weight` is 0: the real server's last non-zero weight (IPVS `last_weight`; 0 for
    /// one never given any), from which `mh` still builds its lookup table, so that quiescing a
    /// real server moves no other server's slots. Ignored while `weight` is above 0.
    pub last_weight: u32,
}

/// Session timeouts in milliseconds, per TCP state (IPVS's defaults) and for UDP.
/// `ipvsadm --set tcp tcpfin udp` maps to `tcp_established`, `tcp_fin_wait`, `udp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// ESTABLISHED (900 s).
    pub tcp_established: u64,
    /// SYN_SENT (120 s).
    pub tcp_syn_sent: u64,
    /// SYN_RECV (60 s).
    pub tcp_syn_recv: u64,
    /// FIN_WAIT (120 s).
    pub tcp_fin_wait: u64,
    /// TIME_WAIT (120 s).
    pub tcp_time_wait: u64,
    /// CLOSE (10 s).
    pub tcp_close: u64,
    /// CLOSE_WAIT (60 s).
    pub tcp_close_wait: u64,
    /// LAST_ACK (30 s).
    pub tcp_last_ack: u64,
    /// LISTEN (120 s).
    pub tcp_listen: u64,
    /// SYNACK (120 s).
    pub tcp_synack: u64,
    /// NONE (2 s).
    pub tcp_none: u64,
    /// UDP (300 s).
    pub udp: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: 900_000,
            tcp_syn_sent: 120_000,
            tcp_syn_recv: 60_000,
            tcp_fin_wait: 120_000,
            tcp_time_wait: 120_000,
            tcp_close: 10_000,
            tcp_close_wait: 60_000,
            tcp_last_ack: 30_000,
            tcp_listen: 120_000,
            tcp_synack: 120_000,
            tcp_none: 2_000,
            udp: 300_000,
        }
    }
}

/// NIC receive-side-scaling parameters of the LIP ports, used to prefer lports whose replies the
/// NIC steers to the owning worker's queue (queue index == worker index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RssConf {
    /// Toeplitz key (40 bytes for IPv4 TCP/UDP).
    pub key: Vec<u8>,
    /// Redirection table: queue per bucket (bucket = hash % len).
    pub reta: Vec<u16>,
    /// Whether TCP and UDP flows hash on their ports too; a NIC that does not hash a
    /// protocol's ports (`rss_hf` without `NONFRAG_IPV4_TCP`/`_UDP`) hashes its flows on the
    /// addresses only, where no choice of local port steers a reply.
    pub tcp_ports: bool,
    /// See `tcp_ports`.
    pub udp_ports: bool,
}

impl RssConf {
    /// Key and table, hashing TCP and UDP ports (most NICs' setting).
    pub fn new(key: Vec<u8>, reta: Vec<u16>) -> Self {
        RssConf {
            key,
            reta,
            tcp_ports: true,
            udp_ports: true,
        }
    }

    /// Whether flows of IP protocol `proto` hash on their ports.
    #[inline]
    pub fn hashes_ports(&self, proto: u8) -> bool {
        match proto {
            crate::fullnat::PROTO_TCP => self.tcp_ports,
            crate::fullnat::PROTO_UDP => self.udp_ports,
            _ => false,
        }
    }
}

/// FULLNAT settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullnatConf {
    /// Session table capacity per core.
    pub sessions: u32,
    /// Size of the per-dest counter array (dest ids must be below it).
    pub max_dests: u32,
    /// Session timeouts.
    pub timeouts: Timeouts,
    /// Insert the TOA option (client address) into the handshake-completing ACK.
    pub toa: bool,
    /// Clamp the MSS option of SYN and SYN-ACK to this value.
    pub mss_clamp: Option<u16>,
    /// Lowest lport.
    pub lport_min: u16,
    /// Highest lport.
    pub lport_max: u16,
    /// A released lport is not reused before this delay (protects the real server's TIME_WAIT).
    pub lport_reuse_delay_ms: u64,
    /// RSS parameters of the LIP ports (None: lports are handed out in FIFO order only).
    pub rss: Option<RssConf>,
    /// IPVS's `expire_quiescent_template` sysctl: when false (IPVS's default), a persistent
    /// client whose template names a dest an operator quiesced (weight 0, not down) keeps going
    /// to it, as a drain of a persistent service expects; when true, it is scheduled afresh.
    pub expire_quiescent_template: bool,
}

impl Default for FullnatConf {
    fn default() -> Self {
        FullnatConf {
            sessions: 65536,
            max_dests: 4096,
            timeouts: Timeouts::default(),
            toa: true,
            mss_clamp: None,
            lport_min: 1025,
            lport_max: 65535,
            lport_reuse_delay_ms: 120_000,
            rss: None,
            expire_quiescent_template: false,
        }
    }
}
