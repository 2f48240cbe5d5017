//! The per-core L2/L3 stack: Ethernet, ARP, IPv4 validation, ICMP echo and errors, forwarding,
//! neighbour resolution.
//!
//! Every received frame ends in exactly one of: sent (`Io::send`), redirected to the worker that
//! owns its FULLNAT or NAT session (`Io::redirect`), held (waiting for its next hop to resolve),
//! consumed (ARP replies, counted in `arp_replies_rx`) or dropped (counted once under a
//! [`DropReason`]). Generated frames (ARP requests, GARPs, ICMP errors) come from `Io::alloc`.
//!
//! Allocation policy: [`Stack::try_new`] allocates everything (neighbour pool, hold slots, index,
//! owned set of [`OWNED_CAPACITY`] addresses, routes, FULLNAT session table, timer wheel, lport
//! FIFOs, per-dest counters). After it, `handle`, `poll_timers`, `neigh_update`, `add_owned` and
//! `remove_owned` never allocate; only `on_start` (it collects the owned addresses once) and
//! `set_services` (a control operation) do.
//!
//! Semantics follow Linux where the brief is silent: the route lookup happens before the TTL check
//! (no route wins over TTL exceeded); transit packets received as link-layer broadcast are not
//! forwarded; fragments are forwarded but never reassembled (a fragment for rvs itself is
//! dropped); rvs never fragments (too big with DF clear is dropped as `mtu_exceeded`); a stale
//! neighbour in use is refreshed with a unicast ARP request (like Linux's PROBE state).

use crate::addr::{MacAddr, Prefix};
use crate::checksum::{checksum, ip_header_checksum, update_u16};
use crate::config::{ServiceConf, StackConfig};
use crate::counters::{CoreCounters, DropReason};
use crate::fixedmap::FixedMap;
use crate::fullnat::Fullnat;
use crate::io::{Io, PortIdx};
use crate::neigh::{NeighState, NeighTable};
use crate::packet::PacketBuf;
use crate::route::{Route, RouteError, RouteTable};
use crate::service::ServiceError;
use crate::wire::*;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// Size of the owned-address set (config addresses, VIPs, LIPs), allocated up front.
pub const OWNED_CAPACITY: usize = 4096;
/// Most ports a stack handles (owned addresses keep a 64-bit port mask).
pub const MAX_PORTS: usize = 64;
/// Neighbour entries examined per `poll_timers` call.
pub const TIMER_SCAN: usize = 64;
/// Entries examined when looking for a stale entry to evict (table full).
const EVICT_SCAN: usize = 64;

/// Invalid stack configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// More than [`MAX_PORTS`] ports.
    TooManyPorts(usize),
    /// More port addresses than [`OWNED_CAPACITY`].
    TooManyAddrs,
    /// A static route is invalid.
    Route(RouteError),
    /// A virtual service is invalid.
    Service(ServiceError),
    /// `n_workers` is 0 or `worker >= n_workers`.
    Workers {
        /// This worker.
        worker: u16,
        /// Number of workers.
        n_workers: u16,
    },
    /// `lport_min > lport_max`.
    LportRange,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::TooManyPorts(n) => {
                write!(f, "{n} ports configured, at most {MAX_PORTS} supported")
            }
            ConfigError::TooManyAddrs => write!(f, "more than {OWNED_CAPACITY} port addresses"),
            ConfigError::Route(e) => e.fmt(f),
            ConfigError::Service(e) => e.fmt(f),
            ConfigError::Workers { worker, n_workers } => {
                write!(f, "worker {worker} of {n_workers} workers")
            }
            ConfigError::LportRange => write!(f, "lport_min > lport_max"),
        }
    }
}
impl std::error::Error for ConfigError {}

/// What `services` own: each VIP (or each address of a match prefix) on its VIP port, each LIP on
/// its LIP port; sorted, without duplicates.
pub(crate) fn service_addrs(services: &[ServiceConf]) -> Vec<(PortIdx, IpAddr)> {
    let mut v = Vec::new();
    for s in services {
        match s.mark {
            Some(m) => v.extend(m.owned_addrs().into_iter().map(|a| (s.vip_port, a))),
            None => v.push((s.vip_port, s.vip)),
        }
        v.extend(s.lips.iter().map(|&l| (s.lip_port, l)));
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Error of [`Stack::add_owned`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnedError {
    /// The port does not exist.
    BadPort,
    /// The owned set holds [`OWNED_CAPACITY`] addresses already.
    Full,
}

impl fmt::Display for OwnedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OwnedError::BadPort => write!(f, "no such port"),
            OwnedError::Full => write!(f, "owned address set full ({OWNED_CAPACITY})"),
        }
    }
}
impl std::error::Error for OwnedError {}

pub(crate) struct PortState {
    pub(crate) mac: MacAddr,
    pub(crate) mtu: u16,
    addrs: Vec<Prefix>,
    /// Source of ICMP errors about packets received on this port (its first IPv4 address).
    icmp_src: Option<Ipv4Addr>,
}

/// Token bucket in thousandths of a token.
struct TokenBucket {
    rate: u64,
    milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    fn new(rate_per_s: u32) -> Self {
        TokenBucket {
            rate: rate_per_s as u64,
            milli: rate_per_s as u64 * 1000,
            last_ms: 0,
        }
    }
    fn take(&mut self, now_ms: u64) -> bool {
        if self.rate == 0 {
            return false;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.rate * 1000);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// An owned address: the ports it is owned on and its FULLNAT role, looked up once per packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owned {
    /// Mask of the ports it is owned on (0 for a match-service destination that is not owned).
    pub ports: u64,
    /// Its LIP pool ([`Owned::NO_POOL`]: not a LIP).
    pub pool: u16,
    /// The VIP of a service.
    pub vip: bool,
}

impl Owned {
    /// Not a LIP.
    pub const NO_POOL: u16 = u16::MAX;
    /// Nothing.
    pub const NONE: Owned = Owned {
        ports: 0,
        pool: Owned::NO_POOL,
        vip: false,
    };
}

/// Decrement the TTL of the IPv4 frame `d` (checked > 1 before) and update its header checksum.
#[inline(always)]
fn dec_ttl(d: &mut [u8]) {
    let old = be16(d, ip4::TTL);
    d[ip4::TTL] -= 1;
    let c = update_u16(be16(d, ip4::CSUM), old, be16(d, ip4::TTL));
    put16(d, ip4::CSUM, c);
}

/// Lines of the next-hop cache (a power of two).
const NH_CACHE: usize = 4096;

/// A next-hop cache line: IPv4 destination → resolved neighbour entry (and so its port and MAC),
/// valid while the neighbour table's generation is `gen` (0: empty). Routes never change after
/// start, so only a freed (reusable) neighbour entry voids lines.
#[derive(Clone, Copy, Default)]
struct NhLine {
    dst: u32,
    gen: u32,
    neigh: u32,
}

/// [`Stack::prefetch_bucket`] of a frame that is not IPv4 TCP/UDP.
pub const NO_BUCKET: u32 = u32::MAX;

/// Slots of [`Stack::prefetch_bucket`]'s LIP hint (a power of two).
const LIP_HINT_SLOTS: usize = 64;

/// The LIP hint slot of IPv4 address `a`: its low bits (LIPs are usually consecutive
/// addresses, which then all have slots of their own).
#[inline(always)]
fn lip_hint_slot(a: u32) -> usize {
    a as usize & (LIP_HINT_SLOTS - 1)
}

/// The addresses and ports of a frame, as a prefetch stage keeps them for a later one
/// ([`Stack::prefetch_bucket_keep`]).
#[derive(Clone, Copy, Debug)]
pub struct FlowTuple {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
}

impl Default for FlowTuple {
    fn default() -> Self {
        FlowTuple {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            sport: 0,
            dport: 0,
        }
    }
}

/// How a packet leaves ([`Stack::nh_via`]): `Ok` a resolved neighbour entry, `Err` the route (and
/// its index) to resolve the next hop through.
pub(crate) type Via = Result<u32, (u32, Route)>;

/// Set in the port a packet is handed over with ([`Io::redirect`], [`Stack::handle_redirected`])
/// when the worker handing it over had itself received it from another: it took its one extra
/// hop (to a service's previous placement rule) and is handed on no more.
pub const REDIRECTED_AGAIN: PortIdx = 0x8000;

/// The L2/L3 stack of one worker core. `Send` when `P` is.
pub struct Stack<P: PacketBuf> {
    pub(crate) counters: Arc<CoreCounters>,
    /// The packet being handled was handed over by another worker: it is not handed on again
    /// (but for one hop to a service's previous placement rule, see `fnat_in_or_new`).
    pub(crate) redirected: bool,
    /// ... and it already took that hop: it goes nowhere else.
    pub(crate) redirected_again: bool,
    pub(crate) ports: Vec<PortState>,
    pub(crate) routes: RouteTable,
    ip_forward: bool,
    neigh: NeighTable<P>,
    /// Owned address → the ports it is owned on and what it is to FULLNAT (one lookup per
    /// packet classifies the destination).
    owned: FixedMap<IpAddr, Owned>,
    /// The IPv4 members of `owned`, keyed by the address's `u32` (the per-packet lookup; a
    /// copy kept in step wherever `owned` changes: `own`, `remove_owned`, reclassification).
    pub(crate) owned_v4: FixedMap<u32, Owned>,
    /// The LIPs among `owned_v4`, direct-mapped by [`lip_hint_slot`] (address, pool; a slot two
    /// LIPs share keeps one): lets the prefetch stage tell a reply to a LIP's lport from a
    /// client packet with one load. Only a hint: the lookup decides with `owned_v4`.
    lip_hint: Box<[(u32, u16); LIP_HINT_SLOTS]>,
    /// The addresses the services own (VIPs, match prefixes, LIPs) on their ports, sorted: what
    /// a new service set releases when it no longer uses them.
    pub(crate) svc_owned: Vec<(PortIdx, IpAddr)>,
    /// Directed broadcast addresses of the connected IPv4 subnets.
    bcast: Vec<Ipv4Addr>,
    icmp_bucket: TokenBucket,
    /// IPv4 ID of the next generated packet (ICMP errors, TUN outer headers).
    pub(crate) ip_id: u16,
    /// FULLNAT services, sessions, lports, timers.
    pub(crate) fnat: Fullnat,
    /// Destination → neighbour cache of the forwarding paths: skips the route lookup and the
    /// neighbour hash lookup for destinations seen recently (real servers, busy clients).
    nh_cache: Box<[NhLine]>,
    /// Per route (index in `routes`): the resolved neighbour entry of its gateway, for routes
    /// with one (every destination behind them shares it: new clients' first replies hit here).
    gw_cache: Box<[NhLine]>,
    /// The established fast path ([`crate::fastpath`]) is on (always, but for the tests that
    /// compare it with the general path).
    fast: bool,
}

impl<P: PacketBuf> Stack<P> {
    /// Build a stack, allocating everything it will ever need.
    pub fn try_new(cfg: &StackConfig, counters: Arc<CoreCounters>) -> Result<Self, ConfigError> {
        if cfg.ports.len() > MAX_PORTS {
            return Err(ConfigError::TooManyPorts(cfg.ports.len()));
        }
        if cfg.n_workers == 0 || cfg.worker >= cfg.n_workers {
            return Err(ConfigError::Workers {
                worker: cfg.worker,
                n_workers: cfg.n_workers,
            });
        }
        if cfg.fullnat.lport_min > cfg.fullnat.lport_max {
            return Err(ConfigError::LportRange);
        }
        let routes = RouteTable::build(&cfg.ports, &cfg.routes).map_err(ConfigError::Route)?;
        let n_routes = routes.routes().len();
        let fnat = Fullnat::new(cfg).map_err(ConfigError::Service)?;
        let mut owned = FixedMap::with_capacity(OWNED_CAPACITY);
        let mut bcast = Vec::new();
        let mut ports = Vec::with_capacity(cfg.ports.len());
        for (i, p) in cfg.ports.iter().enumerate() {
            for a in &p.addrs {
                let mut o = owned.get(&a.addr).copied().unwrap_or(Owned::NONE);
                o.ports |= 1u64 << i;
                owned
                    .insert(a.addr, o)
                    .map_err(|_| ConfigError::TooManyAddrs)?;
                if let Some(b) = a.broadcast_v4() {
                    if !bcast.contains(&b) {
                        bcast.push(b);
                    }
                }
            }
            let icmp_src = p.addrs.iter().find_map(|a| match a.addr {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            });
            ports.push(PortState {
                mac: p.mac,
                mtu: p.mtu,
                addrs: p.addrs.clone(),
                icmp_src,
            });
        }
        let mut st = Stack {
            counters,
            redirected: false,
            redirected_again: false,
            ports,
            routes,
            ip_forward: cfg.ip_forward,
            neigh: NeighTable::new(&cfg.neigh),
            owned,
            owned_v4: FixedMap::with_capacity(OWNED_CAPACITY),
            lip_hint: Box::new([(0, Owned::NO_POOL); LIP_HINT_SLOTS]),
            svc_owned: Vec::new(),
            bcast,
            icmp_bucket: TokenBucket::new(cfg.icmp_ratelimit_per_s),
            // Workers start their IPv4 IDs apart (TUN outer headers toward one real server
            // from several workers, fragmented on the way, must not collide at once).
            ip_id: cfg.worker.wrapping_mul(0x9E37),
            fnat,
            nh_cache: vec![NhLine::default(); NH_CACHE].into_boxed_slice(),
            gw_cache: vec![NhLine::default(); n_routes].into_boxed_slice(),
            fast: true,
        };
        st.mirror_owned_v4();
        // VIPs and LIPs are owned (ARP answered, announced by on_start) on their ports.
        let want = service_addrs(&cfg.services);
        for &(port, ip) in &want {
            if st.own(port, ip).is_err() {
                return Err(ConfigError::TooManyAddrs);
            }
        }
        st.svc_owned = want;
        st.reclassify_owned();
        Ok(st)
    }

    /// Whether `ip` is one of `port`'s own addresses (never released with a service).
    fn is_port_addr(&self, port: PortIdx, ip: IpAddr) -> bool {
        self.ports
            .get(port as usize)
            .is_some_and(|p| p.addrs.iter().any(|a| a.addr == ip))
    }

    /// Whether [`Stack::own_services`] of `want` (a service set's [`service_addrs`]) would fit
    /// the owned set (checked before anything is built, so that a refused service set leaves
    /// no trace).
    pub(crate) fn services_fit(&self, want: &[(PortIdx, IpAddr)]) -> bool {
        if self.owned.len() + want.len() <= OWNED_CAPACITY {
            return true; // whatever is released, it fits
        }
        let mut ips: std::collections::HashSet<IpAddr> = want.iter().map(|a| a.1).collect();
        for (ip, o) in self.owned.iter() {
            // Owned on a port where the new set does not release it?
            let kept = (0..self.ports.len().min(MAX_PORTS)).any(|p| {
                let pair = (p as PortIdx, *ip);
                o.ports & (1u64 << p) != 0
                    && (self.svc_owned.binary_search(&pair).is_err()
                        || want.binary_search(&pair).is_ok()
                        || self.is_port_addr(pair.0, pair.1))
            });
            if kept {
                ips.insert(*ip);
            }
        }
        ips.len() <= OWNED_CAPACITY
    }

    /// Own what `services` use and release what the services before them used and these do not
    /// (never a port's own address): a VIP or LIP no longer configured is no longer answered for
    /// (ARP, ICMP, its sessions' packets), as an LVS box whose VIP is taken down. All or nothing:
    /// when the owned set cannot hold the new addresses, nothing changes. Control path.
    pub(crate) fn own_services(&mut self, want: Vec<(PortIdx, IpAddr)>) -> Result<(), OwnedError> {
        let old = std::mem::take(&mut self.svc_owned);
        let gone: Vec<(PortIdx, IpAddr)> = old
            .iter()
            .copied()
            .filter(|a| want.binary_search(a).is_err() && !self.is_port_addr(a.0, a.1))
            .collect();
        let mut released = Vec::with_capacity(gone.len());
        for (port, ip) in gone {
            if self.remove_owned(port, ip) {
                released.push((port, ip));
            }
        }
        let mut added = Vec::new();
        for &(port, ip) in &want {
            match self.own(port, ip) {
                Ok(true) => added.push((port, ip)),
                Ok(false) => {}
                Err(e) => {
                    // Back to what was: the released addresses fit again once the added ones
                    // are gone.
                    for &(p, a) in &added {
                        self.remove_owned(p, a);
                    }
                    for &(p, a) in &released {
                        let _ = self.own(p, a);
                    }
                    self.svc_owned = old;
                    return Err(e);
                }
            }
        }
        self.svc_owned = want;
        Ok(())
    }

    /// Own `ip` on `port`, classified for FULLNAT when new. `Ok(false)` when it already was.
    fn own(&mut self, port: PortIdx, ip: IpAddr) -> Result<bool, OwnedError> {
        if port as usize >= self.ports.len() {
            return Err(OwnedError::BadPort);
        }
        let bit = 1u64 << port;
        let class = self.fnat.classify(ip);
        match self.owned.get_mut(&ip) {
            Some(o) if o.ports & bit != 0 => return Ok(false),
            Some(o) => o.ports |= bit,
            None => {
                let o = Owned {
                    ports: bit,
                    ..class
                };
                self.owned.insert(ip, o).map_err(|_| OwnedError::Full)?;
            }
        }
        self.mirror_owned_one(ip);
        Ok(true)
    }

    /// Bring `ip`'s entry of `owned_v4` in line with `owned` (control path; same capacity as
    /// `owned`, so the insert cannot fail).
    fn mirror_owned_one(&mut self, ip: IpAddr) {
        let IpAddr::V4(v4) = ip else { return };
        let a = u32::from(v4);
        let slot = &mut self.lip_hint[lip_hint_slot(a)];
        match self.owned.get(&ip) {
            Some(&o) => {
                let _ = self.owned_v4.insert(a, o);
                if o.pool != Owned::NO_POOL {
                    *slot = (a, o.pool);
                } else if slot.0 == a {
                    *slot = (0, Owned::NO_POOL);
                }
            }
            None => {
                self.owned_v4.remove(&a);
                if slot.0 == a {
                    *slot = (0, Owned::NO_POOL);
                }
            }
        }
    }

    /// Rebuild the LIP hint from `owned_v4` (control path, after a change of many entries;
    /// [`Stack::mirror_owned_one`] keeps it for one).
    fn rebuild_lip_hint(&mut self) {
        self.lip_hint.fill((0, Owned::NO_POOL));
        for (&ip, o) in self.owned_v4.iter() {
            if o.pool != Owned::NO_POOL {
                self.lip_hint[lip_hint_slot(ip)] = (ip, o.pool);
            }
        }
    }

    /// Build `owned_v4` from `owned` (at construction, where the ports' addresses go straight
    /// into `owned`).
    fn mirror_owned_v4(&mut self) {
        self.owned_v4.clear();
        for (ip, o) in self.owned.iter() {
            if let IpAddr::V4(v4) = ip {
                let _ = self.owned_v4.insert(u32::from(*v4), *o);
            }
        }
        self.rebuild_lip_hint();
    }

    /// Recompute what every owned address is to FULLNAT (after the services changed), in place
    /// in both maps (`owned_v4` already holds the same addresses: `own` and `remove_owned` keep
    /// it in step).
    pub(crate) fn reclassify_owned(&mut self) {
        let fnat = &self.fnat;
        self.owned.for_each_mut(|ip, o| {
            *o = Owned {
                ports: o.ports,
                ..fnat.classify(*ip)
            }
        });
        self.owned_v4.for_each_mut(|ip, o| {
            *o = Owned {
                ports: o.ports,
                ..fnat.classify(IpAddr::V4(Ipv4Addr::from(*ip)))
            }
        });
        self.rebuild_lip_hint();
    }

    /// Build a stack; panics on an invalid configuration (see [`Stack::try_new`]).
    pub fn new(cfg: &StackConfig, counters: Arc<CoreCounters>) -> Self {
        match Self::try_new(cfg, counters) {
            Ok(s) => s,
            Err(e) => panic!("invalid stack configuration: {e}"),
        }
    }

    /// Turn the established fast path off (`false`) or on: for the tests and benchmarks that
    /// compare it with the general path; it changes no behaviour, only the cost.
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = on;
    }

    /// The counters this stack writes.
    pub fn counters(&self) -> &Arc<CoreCounters> {
        &self.counters
    }

    /// Send a gratuitous ARP for every owned IPv4 address on every port.
    pub fn on_start<I: Io<Pkt = P>>(&mut self, io: &mut I, _now_ms: u64) {
        let mut list: Vec<(PortIdx, Ipv4Addr)> = Vec::new();
        for (ip, o) in self.owned.iter() {
            let mask = o.ports;
            if let IpAddr::V4(v4) = ip {
                for p in 0..self.ports.len() {
                    if mask & (1u64 << p) != 0 {
                        list.push((p as PortIdx, *v4));
                    }
                }
            }
        }
        list.sort_unstable();
        for (p, ip) in list {
            self.send_garp(io, p, ip);
        }
    }

    /// Announce `ip` on `port` with a gratuitous ARP when it is an IPv4 address owned there (a
    /// VIP or LIP a new service set brought). Returns whether it was sent.
    pub fn announce<I: Io<Pkt = P>>(&self, io: &mut I, port: PortIdx, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) if self.is_owned_on(port, ip) => {
                self.send_garp(io, port, v4);
                true
            }
            _ => false,
        }
    }

    /// Own `ip` on `port` (VIP, LIP, ...). An IPv4 address is announced with a gratuitous ARP.
    /// Returns `Ok(false)` when it was already owned on that port. Never allocates (the set is
    /// pre-sized to [`OWNED_CAPACITY`]).
    pub fn add_owned<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        ip: IpAddr,
        _now_ms: u64,
    ) -> Result<bool, OwnedError> {
        if !self.own(port, ip)? {
            return Ok(false);
        }
        if let IpAddr::V4(v4) = ip {
            self.send_garp(io, port, v4);
        }
        Ok(true)
    }

    /// Stop owning `ip` on `port`. Returns whether it was owned there.
    pub fn remove_owned(&mut self, port: PortIdx, ip: IpAddr) -> bool {
        let bit = 1u64 << (port as u32 % 64);
        let Some(o) = self.owned.get_mut(&ip) else {
            return false;
        };
        if port as usize >= MAX_PORTS || o.ports & bit == 0 {
            return false;
        }
        o.ports &= !bit;
        if o.ports == 0 {
            self.owned.remove(&ip);
        }
        self.mirror_owned_one(ip);
        // A service address taken away here is owned again by the next publication (which
        // then differs from what the services own: see `swap_services_built`).
        if let Ok(i) = self.svc_owned.binary_search(&(port, ip)) {
            self.svc_owned.remove(i);
        }
        true
    }

    /// True when `ip` is owned on any port.
    pub fn is_owned(&self, ip: IpAddr) -> bool {
        self.owned.get(&ip).is_some()
    }

    /// True when `ip` is owned on `port`.
    pub fn is_owned_on(&self, port: PortIdx, ip: IpAddr) -> bool {
        (port as usize) < MAX_PORTS
            && self
                .owned
                .get(&ip)
                .is_some_and(|o| o.ports & (1u64 << port) != 0)
    }

    /// Number of owned addresses.
    pub fn owned_count(&self) -> usize {
        self.owned.len()
    }

    /// Longest-prefix-match route for `dst`.
    pub fn route_lookup(&self, dst: IpAddr) -> Option<&Route> {
        self.routes.lookup(dst)
    }

    /// Every route (connected ones first).
    pub fn routes(&self) -> &[Route] {
        self.routes.routes()
    }

    /// The MAC of a resolved (reachable or stale) neighbour.
    pub fn neigh_lookup(&self, port: PortIdx, ip: IpAddr) -> Option<MacAddr> {
        let e = &self.neigh.entries[self.neigh.find(port, ip)?];
        e.resolved.then_some(e.mac)
    }

    /// State of the neighbour entry for (port, ip) at `now_ms`.
    pub fn neigh_state(&self, port: PortIdx, ip: IpAddr, now_ms: u64) -> Option<NeighState> {
        let e = &self.neigh.entries[self.neigh.find(port, ip)?];
        Some(e.state(now_ms, &self.neigh.conf))
    }

    /// Packets held for the neighbour (port, ip).
    pub fn neigh_held(&self, port: PortIdx, ip: IpAddr) -> usize {
        self.neigh
            .find(port, ip)
            .map_or(0, |i| self.neigh.entries[i].held as usize)
    }

    /// Number of neighbour entries in use.
    pub fn neigh_len(&self) -> usize {
        self.neigh.len()
    }

    /// Packets held over all neighbours (scans the table: tests and stats only).
    pub fn held_packets(&self) -> usize {
        self.neigh.entries.iter().map(|e| e.held as usize).sum()
    }

    #[inline]
    pub(crate) fn count_drop(&self, reason: DropReason) {
        self.counters.count_drop(reason);
    }

    #[inline]
    pub(crate) fn drop_pkt(&self, pkt: P, reason: DropReason) {
        drop(pkt);
        self.count_drop(reason);
    }

    /// Batched session lookups, as a software pipeline over a burst. Stage 1, some packets
    /// ahead of `handle` (e.g. 12): the session-index bucket of the frame's IPv4 TCP/UDP tuple
    /// (prefetched), or [`NO_BUCKET`] for anything else. Then [`Stack::prefetch_entry`] fewer
    /// ahead (e.g. 8) and [`Stack::prefetch_next_kept`] fewer still (e.g. 4), so the lookup in
    /// `handle` finds the bucket and its chain in cache (they matter from ~100K sessions up).
    #[inline]
    pub fn prefetch_bucket(&self, frame: &[u8]) -> u32 {
        self.prefetch_bucket_keep(frame, &mut FlowTuple::default())
    }

    /// [`Stack::prefetch_bucket`], keeping the frame's tuple in `t` for
    /// [`Stack::prefetch_next_kept`] (which then need not parse the frame again).
    #[inline(always)]
    pub fn prefetch_bucket_keep(&self, frame: &[u8], t: &mut FlowTuple) -> u32 {
        match crate::wire::ipv4_l4_tuple(frame) {
            Some((proto, src, sport, dst, dport)) => {
                *t = FlowTuple {
                    src,
                    dst,
                    sport,
                    dport,
                };
                let f = &self.fnat;
                // A reply to a LIP's lport (as the fast path and `fnat_input` decide) is found
                // on its direct head, without hashing; anything else by the hash.
                let d = u32::from(dst);
                let (lip, pool) = self.lip_hint[lip_hint_slot(d)];
                if lip == d && f.lports.in_range(dport) {
                    let b = f
                        .sessions
                        .out_bucket_of(pool, proto, src, sport, dst, dport);
                    f.sessions.prefetch_bucket(b);
                    b
                } else {
                    f.sessions.prefetch_head(proto, src, sport, dst, dport)
                }
            }
            None => NO_BUCKET,
        }
    }

    /// Stage 3: prefetch the second session entry of bucket `b` when the first is not the
    /// session of the frame whose tuple [`Stack::prefetch_bucket_keep`] kept in `t`.
    #[inline(always)]
    pub fn prefetch_next_kept(&self, b: u32, t: &FlowTuple) {
        if b != NO_BUCKET {
            self.fnat
                .sessions
                .prefetch_next(b, t.src, t.sport, t.dst, t.dport);
        }
    }

    /// Stage 2: prefetch the first session entry of bucket `b` (from [`Stack::prefetch_bucket`]).
    #[inline]
    pub fn prefetch_entry(&self, b: u32) {
        self.fnat.sessions.prefetch_entry(b);
    }

    /// Handle one received frame (its session bucket computed here: [`Stack::handle_at`] for
    /// frames whose bucket a prefetch stage found).
    pub fn handle<I: Io<Pkt = P>>(&mut self, io: &mut I, port: PortIdx, pkt: P, now_ms: u64) {
        let bucket = self.prefetch_bucket(pkt.data());
        self.handle_at(io, port, pkt, bucket, now_ms)
    }

    /// [`Stack::handle`] for a frame another worker handed over (received on `port` there, with
    /// [`REDIRECTED_AGAIN`] when it was handed on once more): if this worker would hand it on
    /// again (the two disagree on its owner while a new configuration reaches them one after
    /// the other), it is dropped (`redirect_loop`) instead of bouncing between them.
    pub fn handle_redirected<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        now_ms: u64,
    ) {
        self.redirected = true;
        self.redirected_again = port & REDIRECTED_AGAIN != 0;
        self.handle(io, port & !REDIRECTED_AGAIN, pkt, now_ms);
        self.redirected = false;
        self.redirected_again = false;
    }

    /// [`Stack::handle`] for a frame whose session bucket [`Stack::prefetch_bucket`] computed
    /// (`bucket`, or [`NO_BUCKET`]): the session lookup starts there instead of hashing the
    /// tuple again.
    #[inline]
    pub fn handle_at<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        bucket: u32,
        now_ms: u64,
    ) {
        let pkt = if bucket != NO_BUCKET && self.fast {
            match self.fast_path(io, port, pkt, bucket, now_ms) {
                Some(pkt) => pkt,
                None => return,
            }
        } else {
            pkt
        };
        self.handle_general(io, port, pkt, bucket, now_ms);
    }

    /// [`Stack::handle_at`] past the established fast path: every kind of frame.
    #[inline(never)]
    fn handle_general<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        bucket: u32,
        now_ms: u64,
    ) {
        let Some(ps) = self.ports.get(port as usize) else {
            return self.drop_pkt(pkt, DropReason::NotForUs);
        };
        let d = pkt.data();
        if d.len() < ETH_LEN {
            return self.drop_pkt(pkt, DropReason::EthTruncated);
        }
        let dst = mac_at(d, 0);
        let l2_bcast = dst.is_broadcast();
        if !l2_bcast && dst != ps.mac {
            return self.drop_pkt(pkt, DropReason::NotForUs);
        }
        match be16(d, 12) {
            ETHERTYPE_IPV4 => self.ipv4_input(io, port, pkt, l2_bcast, bucket, now_ms),
            ETHERTYPE_ARP => self.arp_input(io, port, pkt, now_ms),
            ETHERTYPE_IPV6 => self.drop_pkt(pkt, DropReason::Ipv6Unsupported),
            _ => self.drop_pkt(pkt, DropReason::UnknownEthertype),
        }
    }

    // ---------------------------------------------------------------- ARP

    /// Our address on a connected subnet of `port` holding `ip`.
    fn connected_src(&self, port: PortIdx, ip: IpAddr) -> Option<IpAddr> {
        self.ports[port as usize]
            .addrs
            .iter()
            .find(|a| a.contains(ip))
            .map(|a| a.addr)
    }

    fn arp_input<I: Io<Pkt = P>>(&mut self, io: &mut I, port: PortIdx, mut pkt: P, now_ms: u64) {
        let d = pkt.data();
        if d.len() < ETH_LEN + ARP_LEN
            || be16(d, arp::HTYPE) != 1
            || be16(d, arp::PTYPE) != ETHERTYPE_IPV4
            || d[arp::HLEN] != 6
            || d[arp::PLEN] != 4
        {
            return self.drop_pkt(pkt, DropReason::ArpMalformed);
        }
        let op = be16(d, arp::OP);
        if op != ARP_OP_REQUEST && op != ARP_OP_REPLY {
            return self.drop_pkt(pkt, DropReason::ArpMalformed);
        }
        let sha = mac_at(d, arp::SHA);
        let spa = IpAddr::V4(ipv4_at(d, arp::SPA));
        let tpa = ipv4_at(d, arp::TPA);
        let request = op == ARP_OP_REQUEST;
        if request {
            self.counters.arp_requests_rx.inc();
        }
        let to_us = self.is_owned_on(port, IpAddr::V4(tpa));
        let for_us = request && to_us;

        // Learning: only senders on a connected subnet of this port, never one of our own
        // addresses, never a group MAC. As Linux with `arp_accept=0`, a new entry comes only
        // from a frame addressed to us (a request for one of our addresses, a reply to one of
        // ours); an unsolicited one (gratuitous, or for another host) only refreshes an entry
        // that exists, so a noisy segment cannot fill the table.
        if !spa.is_unspecified() && !sha.is_multicast() && !sha.is_zero() && !self.is_owned(spa) {
            if let Some(src) = self.connected_src(port, spa) {
                self.learn(io, port, spa, sha, src, to_us, now_ms, true);
            }
        }

        if !request {
            self.counters.arp_replies_rx.inc();
            // The kernel side of the exception path resolves its own next hops: it gets the replies.
            if io.to_kernel(port, pkt).is_ok() {
                self.counters.to_kernel.inc();
            }
            return;
        }
        if !for_us {
            return self.drop_pkt(pkt, DropReason::ArpNotForUs);
        }
        // Reply in place.
        let my_mac = self.ports[port as usize].mac;
        let spa4 = ipv4_at(d, arp::SPA);
        pkt.set_len(ETH_LEN + ARP_LEN);
        let d = pkt.data_mut();
        write_eth(d, sha, my_mac, ETHERTYPE_ARP);
        put16(d, arp::OP, ARP_OP_REPLY);
        d[arp::SHA..arp::SHA + 6].copy_from_slice(&my_mac.0);
        d[arp::SPA..arp::SPA + 4].copy_from_slice(&tpa.octets());
        d[arp::THA..arp::THA + 6].copy_from_slice(&sha.0);
        d[arp::TPA..arp::TPA + 4].copy_from_slice(&spa4.octets());
        io.send(port, pkt);
        self.counters.arp_replies_sent.inc();
    }

    /// Create (if `create`) or refresh the entry (port, ip) as resolved to `mac`; releases held
    /// packets when it was incomplete. `wire`: learned from a received frame (tell `Io`, also
    /// when this core has no entry for it: another core may have one).
    #[allow(clippy::too_many_arguments)]
    fn learn<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        ip: IpAddr,
        mac: MacAddr,
        src: IpAddr,
        create: bool,
        now_ms: u64,
        wire: bool,
    ) {
        if wire {
            io.neigh_learned(port, ip, mac.0, create);
        }
        let idx = match self.neigh.find(port, ip) {
            Some(i) => i,
            None if create => match self.neigh_create(port, ip, src, now_ms) {
                Some(i) => i,
                None => return,
            },
            None => return,
        };
        let e = &mut self.neigh.entries[idx];
        let was_resolved = e.resolved;
        let changed = !was_resolved || e.mac != mac;
        e.mac = mac;
        e.resolved = true;
        e.confirmed_ms = now_ms;
        e.probes = 0;
        if changed {
            self.counters.neigh_learned.inc();
        }
        if !was_resolved {
            self.release_held(io, idx);
        }
    }

    /// Apply a neighbour learned by another core: create or refresh, release held packets.
    pub fn neigh_update<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        ip: IpAddr,
        mac: MacAddr,
        now_ms: u64,
    ) {
        self.neigh_sync(io, port, ip, mac, true, now_ms);
    }

    /// Apply what another core learned from the wire ([`Io::neigh_learned`]): create (when
    /// `create`) or refresh the entry, release held packets.
    pub fn neigh_sync<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        ip: IpAddr,
        mac: MacAddr,
        create: bool,
        now_ms: u64,
    ) {
        if port as usize >= self.ports.len() || mac.is_multicast() || mac.is_zero() {
            return;
        }
        let Some(src) = self.connected_src(port, ip) else {
            return;
        };
        self.learn(io, port, ip, mac, src, create, now_ms, false);
    }

    fn neigh_create(
        &mut self,
        port: PortIdx,
        ip: IpAddr,
        src: IpAddr,
        now_ms: u64,
    ) -> Option<usize> {
        if let Some(i) = self.neigh.create(port, ip, src, now_ms) {
            return Some(i);
        }
        // Full: evict a stale entry if one is found within a bounded scan.
        let n = self.neigh.entries.len();
        for _ in 0..EVICT_SCAN.min(n) {
            let i = self.neigh.evict_cursor;
            self.neigh.evict_cursor = (i + 1) % n;
            let e = &self.neigh.entries[i];
            if e.in_use && e.state(now_ms, &self.neigh.conf) == NeighState::Stale {
                self.neigh.free(i);
                self.counters.neigh_evicted.inc();
                return self.neigh.create(port, ip, src, now_ms);
            }
        }
        None
    }

    fn release_held<I: Io<Pkt = P>>(&mut self, io: &mut I, idx: usize) {
        let e = self.neigh.entries[idx];
        let my_mac = self.ports[e.port as usize].mac;
        for k in 0..e.held as usize {
            if let Some(mut p) = self.neigh.take_held(idx, k) {
                write_eth(p.data_mut(), e.mac, my_mac, ETHERTYPE_IPV4);
                io.send(e.port, p);
                self.counters.neigh_released.inc();
            }
        }
        self.neigh.entries[idx].held = 0;
    }

    fn fill_arp(
        p: &mut P,
        op: u16,
        eth_dst: MacAddr,
        my_mac: MacAddr,
        spa: Ipv4Addr,
        tpa: Ipv4Addr,
    ) -> bool {
        if !p.set_len(ETH_LEN + ARP_LEN) {
            return false;
        }
        let d = p.data_mut();
        write_eth(d, eth_dst, my_mac, ETHERTYPE_ARP);
        put16(d, arp::HTYPE, 1);
        put16(d, arp::PTYPE, ETHERTYPE_IPV4);
        d[arp::HLEN] = 6;
        d[arp::PLEN] = 4;
        put16(d, arp::OP, op);
        d[arp::SHA..arp::SHA + 6].copy_from_slice(&my_mac.0);
        d[arp::SPA..arp::SPA + 4].copy_from_slice(&spa.octets());
        d[arp::THA..arp::THA + 6].fill(0);
        d[arp::TPA..arp::TPA + 4].copy_from_slice(&tpa.octets());
        true
    }

    /// Send an ARP request for `target` (broadcast, or unicast to `unicast` for a refresh).
    fn send_arp_request<I: Io<Pkt = P>>(
        &self,
        io: &mut I,
        port: PortIdx,
        src: IpAddr,
        target: IpAddr,
        unicast: Option<MacAddr>,
    ) {
        let (IpAddr::V4(spa), IpAddr::V4(tpa)) = (src, target) else {
            return;
        };
        let Some(mut p) = io.alloc() else {
            return self.count_drop(DropReason::AllocFailed);
        };
        let my_mac = self.ports[port as usize].mac;
        if !Self::fill_arp(
            &mut p,
            ARP_OP_REQUEST,
            unicast.unwrap_or(MacAddr::BROADCAST),
            my_mac,
            spa,
            tpa,
        ) {
            return self.drop_pkt(p, DropReason::AllocFailed);
        }
        io.send(port, p);
        self.counters.arp_requests_sent.inc();
    }

    fn send_garp<I: Io<Pkt = P>>(&self, io: &mut I, port: PortIdx, ip: Ipv4Addr) {
        let Some(mut p) = io.alloc() else {
            return self.count_drop(DropReason::AllocFailed);
        };
        let my_mac = self.ports[port as usize].mac;
        if !Self::fill_arp(&mut p, ARP_OP_REQUEST, MacAddr::BROADCAST, my_mac, ip, ip) {
            return self.drop_pkt(p, DropReason::AllocFailed);
        }
        io.send(port, p);
        self.counters.garp_sent.inc();
    }

    /// Session expiry only (bounded like `poll_timers`): cheap when nothing is due, so workers call
    /// it on every poll. Freeing at most [`crate::fullnat::EXPIRE_BUDGET`] per call once per
    /// millisecond would cap a core at 256 k released sessions per second.
    #[inline]
    pub fn expire_sessions(&mut self, now_ms: u64) {
        self.fnat_expire(now_ms);
    }

    /// Neighbour aging, ARP retransmits and failures (examines at most [`TIMER_SCAN`] entries),
    /// then FULLNAT session expiry (at most [`crate::fullnat::EXPIRE_BUDGET`] sessions).
    pub fn poll_timers<I: Io<Pkt = P>>(&mut self, io: &mut I, now_ms: u64) {
        self.fnat_expire(now_ms);
        let n = self.neigh.entries.len();
        for _ in 0..TIMER_SCAN.min(n) {
            let idx = self.neigh.scan_cursor;
            self.neigh.scan_cursor = (idx + 1) % n;
            let e = self.neigh.entries[idx];
            if !e.in_use {
                continue;
            }
            if !e.resolved {
                if now_ms.saturating_sub(e.probe_ms) < self.neigh.conf.retrans_ms {
                    continue;
                }
                if e.probes >= self.neigh.conf.max_probes {
                    for k in 0..e.held as usize {
                        if let Some(p) = self.neigh.take_held(idx, k) {
                            self.drop_pkt(p, DropReason::NeighFailed);
                        }
                    }
                    self.neigh.entries[idx].held = 0;
                    self.neigh.free(idx);
                } else {
                    let em = &mut self.neigh.entries[idx];
                    em.probes += 1;
                    em.probe_ms = now_ms;
                    self.send_arp_request(io, e.port, e.src, e.ip, None);
                }
            } else if now_ms.saturating_sub(e.confirmed_ms) >= self.neigh.conf.gc_stale_ms {
                self.neigh.free(idx);
            }
        }
    }

    // ---------------------------------------------------------------- IPv4

    /// Source 0.0.0.0/8, 127.0.0.0/8, multicast, the limited broadcast or a connected subnet's
    /// directed broadcast.
    #[inline(always)]
    pub(crate) fn is_martian_src(&self, src: Ipv4Addr) -> bool {
        let a = u32::from(src);
        let top = a >> 24;
        top == 0
            || top == 127
            || top & 0xf0 == 0xe0
            || a == u32::MAX
            || (!self.bcast.is_empty() && self.bcast.contains(&src))
    }

    #[inline(always)]
    fn ipv4_input<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        mut pkt: P,
        l2_bcast: bool,
        bucket: u32,
        now_ms: u64,
    ) {
        let d = pkt.data();
        if d.len() < ETH_LEN + ip4::MIN_HDR || d[ip4::VIHL] >> 4 != 4 {
            return self.drop_pkt(pkt, DropReason::Ipv4Malformed);
        }
        let ihl = (d[ip4::VIHL] & 0xf) as usize * 4;
        let total = be16(d, ip4::TOTAL_LEN) as usize;
        if ihl < ip4::MIN_HDR || total < ihl || ETH_LEN + total > d.len() {
            return self.drop_pkt(pkt, DropReason::Ipv4Malformed);
        }
        if ip_header_checksum(&d[ETH_LEN..ETH_LEN + ihl]) != 0 {
            return self.drop_pkt(pkt, DropReason::Ipv4BadChecksum);
        }
        let src = ipv4_at(d, ip4::SRC);
        let dst = ipv4_at(d, ip4::DST);
        if self.is_martian_src(src) {
            return self.drop_pkt(pkt, DropReason::Martian);
        }
        if d.len() > ETH_LEN + total {
            pkt.set_len(ETH_LEN + total); // strip Ethernet padding
        }
        // Destinations of match services are served like owned addresses, also those of a
        // prefix too large to own (routed to rvs).
        if let Some(&o) = self.owned_v4.get(&u32::from(dst)) {
            return self.local_input(io, port, pkt, ihl, o, bucket, now_ms);
        }
        if self.fnat.services.in_match_dst(IpAddr::V4(dst)) {
            let o = Owned {
                vip: true,
                ..Owned::NONE
            };
            return self.local_input(io, port, pkt, ihl, o, bucket, now_ms);
        }
        if dst.is_broadcast() || self.bcast.contains(&dst) {
            return self.drop_pkt(pkt, DropReason::DstBroadcast);
        }
        if dst.is_multicast() {
            return self.drop_pkt(pkt, DropReason::DstMulticast);
        }
        // NAT replies (and ICMP errors about NAT sessions) are transit packets.
        let Some(pkt) = self.nat_transit(io, port, pkt, ihl, now_ms) else {
            return;
        };
        self.forward(io, port, pkt, l2_bcast, ihl, now_ms)
    }

    /// A frame for rvs's own addresses that the dataplane does not serve: the kernel gets it when
    /// the port has an exception path, else it is dropped under `reason`.
    fn kernel_or_drop<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        reason: DropReason,
    ) {
        match io.to_kernel(port, pkt) {
            Ok(()) => self.counters.to_kernel.inc(),
            Err(pkt) => self.drop_pkt(pkt, reason),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn local_input<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        ihl: usize,
        dst: Owned,
        bucket: u32,
        now_ms: u64,
    ) {
        let Some(mut pkt) = self.fnat_input(io, port, pkt, ihl, dst, bucket, now_ms) else {
            return;
        };
        let d = pkt.data();
        if be16(d, ip4::FRAG) & ip4::MF_OFFSET != 0 {
            return self.kernel_or_drop(io, port, pkt, DropReason::Ipv4Fragment);
        }
        if d[ip4::PROTO] != PROTO_ICMP {
            return self.kernel_or_drop(io, port, pkt, DropReason::LocalL4);
        }
        let ic = ETH_LEN + ihl;
        let icmp = &d[ic..];
        if icmp.len() < 8 || checksum(icmp) != 0 {
            return self.drop_pkt(pkt, DropReason::IcmpMalformed);
        }
        if icmp[0] != ICMP_ECHO_REQUEST {
            return self.kernel_or_drop(io, port, pkt, DropReason::IcmpUnhandled);
        }
        let src = ipv4_at(d, ip4::SRC);
        let dst = ipv4_at(d, ip4::DST);
        // Echo reply in place: type 0 (incremental ICMP checksum), swapped addresses, TTL 64.
        let d = pkt.data_mut();
        let old = be16(d, ic);
        d[ic] = ICMP_ECHO_REPLY;
        let c = update_u16(be16(d, ic + 2), old, be16(d, ic));
        put16(d, ic + 2, c);
        d[ip4::SRC..ip4::SRC + 4].copy_from_slice(&dst.octets());
        d[ip4::DST..ip4::DST + 4].copy_from_slice(&src.octets());
        d[ip4::TTL] = 64;
        put16(d, ip4::CSUM, 0);
        let c = checksum(&d[ETH_LEN..ETH_LEN + ihl]);
        put16(d, ip4::CSUM, c);
        if self.ip_output(io, pkt, src, now_ms) {
            self.counters.icmp_echo_replies.inc();
        }
    }

    /// TTL and MTU checks of `pkt` (IPv4 total length `total`) before it is forwarded out of
    /// `out_port`: when the TTL would reach zero or it is larger than the port's MTU, answers ICMP
    /// time exceeded or fragmentation needed (DF set), drops it and returns `None`; else gives it
    /// back. The ICMP error comes from the packet's destination when `from_dst` (a packet to a
    /// VIP or a LIP: the address its sender knows, as Linux's `icmp_send` answers for a local
    /// destination; a port address may be private and filtered on the way), else from
    /// `in_port`'s address (a router's error).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn ttl_mtu_check<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        pkt: P,
        ihl: usize,
        total: u16,
        out_port: PortIdx,
        from_dst: bool,
        now_ms: u64,
    ) -> Option<P> {
        if pkt.data()[ip4::TTL] > 1 && total <= self.ports[out_port as usize].mtu {
            return Some(pkt);
        }
        self.ttl_mtu_fail(io, in_port, pkt, ihl, total, out_port, from_dst, now_ms)
    }

    /// The failing side of [`Stack::ttl_mtu_check`], out of line.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    #[inline(never)]
    fn ttl_mtu_fail<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        pkt: P,
        ihl: usize,
        total: u16,
        out_port: PortIdx,
        from_dst: bool,
        now_ms: u64,
    ) -> Option<P> {
        let d = pkt.data();
        let src = from_dst.then(|| ipv4_at(d, ip4::DST));
        if d[ip4::TTL] <= 1 {
            self.icmp_error_from(io, in_port, src, d, ihl, ICMP_TIME_EXCEEDED, 0, 0, now_ms);
            self.drop_pkt(pkt, DropReason::TtlExceeded);
            return None;
        }
        let mtu = self.ports[out_port as usize].mtu;
        if total > mtu {
            if be16(d, ip4::FRAG) & ip4::DF != 0 {
                self.icmp_error_from(
                    io,
                    in_port,
                    src,
                    d,
                    ihl,
                    ICMP_DEST_UNREACH,
                    ICMP_FRAG_NEEDED,
                    mtu,
                    now_ms,
                );
            }
            self.drop_pkt(pkt, DropReason::MtuExceeded);
            return None;
        }
        Some(pkt)
    }

    fn forward<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        pkt: P,
        l2_bcast: bool,
        ihl: usize,
        now_ms: u64,
    ) {
        if !self.ip_forward {
            return self.drop_pkt(pkt, DropReason::ForwardingDisabled);
        }
        if l2_bcast {
            // Linux does not forward frames received as link-layer broadcast.
            return self.drop_pkt(pkt, DropReason::NotForUs);
        }
        let d = pkt.data();
        let dst = ipv4_at(d, ip4::DST);
        let Some((port, via)) = self.nh_via(dst, None) else {
            self.icmp_error(
                io,
                in_port,
                d,
                ihl,
                ICMP_DEST_UNREACH,
                ICMP_NET_UNREACH,
                0,
                now_ms,
            );
            return self.drop_pkt(pkt, DropReason::NoRoute);
        };
        let total = be16(d, ip4::TOTAL_LEN);
        let Some(mut pkt) = self.ttl_mtu_check(io, in_port, pkt, ihl, total, port, false, now_ms)
        else {
            return;
        };
        dec_ttl(pkt.data_mut());
        if self.nh_send(io, dst, via, pkt, now_ms).0 {
            self.counters.forwarded.inc();
        }
    }

    /// Route and send a locally generated IPv4 packet (Ethernet header space included). Returns
    /// true when it was sent or held.
    fn ip_output<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        pkt: P,
        dst: Ipv4Addr,
        now_ms: u64,
    ) -> bool {
        let Some(route) = self.routes.lookup(IpAddr::V4(dst)).copied() else {
            self.drop_pkt(pkt, DropReason::NoRoute);
            return false;
        };
        if pkt.len() - ETH_LEN > self.ports[route.port as usize].mtu as usize {
            self.drop_pkt(pkt, DropReason::MtuExceeded);
            return false;
        }
        self.neigh_output(
            io,
            route.port,
            route.next_hop(IpAddr::V4(dst)),
            route.src,
            pkt,
            now_ms,
        )
    }

    #[inline(always)]
    fn nh_slot(dst: Ipv4Addr) -> usize {
        (u32::from(dst).wrapping_mul(0x9e37_79b1) >> (32 - NH_CACHE.trailing_zeros())) as usize
    }

    /// The output port and resolved neighbour entry of IPv4 destination `dst`, when cached.
    #[inline(always)]
    pub(crate) fn nh_cached(&self, dst: Ipv4Addr) -> Option<(PortIdx, u32)> {
        let l = self.nh_cache[Self::nh_slot(dst)];
        if l.dst != u32::from(dst) {
            return None;
        }
        self.neigh_valid(l.neigh, l.gen).map(|port| (port, l.neigh))
    }

    /// Remember that `dst` goes out of `port` through next hop `nh`, when `nh` is resolved, and
    /// when `nh` is the gateway of route `gw_route`, that route's gateway entry too. Returns the
    /// neighbour entry and the generation it is valid in.
    #[inline]
    pub(crate) fn nh_learn(
        &mut self,
        dst: Ipv4Addr,
        port: PortIdx,
        nh: IpAddr,
        gw_route: Option<u32>,
    ) -> Option<(u32, u32)> {
        let idx = self.neigh.find(port, nh)?;
        if !self.neigh.entries[idx].resolved {
            return None;
        }
        let gen = self.neigh.gen;
        let line = NhLine {
            dst: u32::from(dst),
            gen,
            neigh: idx as u32,
        };
        self.nh_cache[Self::nh_slot(dst)] = line;
        if let Some(l) = gw_route.and_then(|r| self.gw_cache.get_mut(r as usize)) {
            *l = line;
        }
        Some((idx as u32, gen))
    }

    /// The current neighbour-table generation (entries cached elsewhere are valid in it).
    #[inline]
    pub(crate) fn neigh_gen(&self) -> u32 {
        self.neigh.gen
    }

    /// The resolved neighbour entry of route `route`'s gateway, cached by [`Stack::nh_learn`]
    /// in the current neighbour generation: (port, entry).
    #[inline]
    fn gw_cached(&self, route: u32) -> Option<(PortIdx, u32)> {
        // An empty line (generation 0) never matches: generations start at 1.
        let l = self.gw_cache.get(route as usize)?;
        self.neigh_valid(l.neigh, l.gen).map(|port| (port, l.neigh))
    }

    /// Where a packet to `dst` leaves: its output port and either a resolved neighbour entry
    /// (`known`, e.g. kept in a session, else the next-hop cache, else the cached gateway entry
    /// of its route) or the route and its index to resolve the next hop through. None: no route.
    #[inline(always)]
    pub(crate) fn nh_via(
        &self,
        dst: Ipv4Addr,
        known: Option<(PortIdx, u32)>,
    ) -> Option<(PortIdx, Via)> {
        if let Some((port, idx)) = known.or_else(|| self.nh_cached(dst)) {
            return Some((port, Ok(idx)));
        }
        self.nh_via_route(dst)
    }

    /// [`Stack::nh_via`] past the caches, out of line.
    #[inline(never)]
    fn nh_via_route(&self, dst: Ipv4Addr) -> Option<(PortIdx, Via)> {
        let (ri, &r) = self.routes.lookup_index(IpAddr::V4(dst))?;
        if r.via.is_some() {
            if let Some((port, idx)) = self.gw_cached(ri) {
                return Some((port, Ok(idx)));
            }
        }
        Some((r.port, Err((ri, r))))
    }

    /// Send a packet to `dst` through the cached neighbour entry (`Ok`), or through
    /// `route` (`Err`: resolve the next hop, then cache it). Returns whether it was sent or held,
    /// and the neighbour entry (and its generation) learnt for `dst` on the way, if any.
    #[inline(always)]
    pub(crate) fn nh_send<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        dst: Ipv4Addr,
        via: Via,
        pkt: P,
        now_ms: u64,
    ) -> (bool, Option<(u32, u32)>) {
        match via {
            Ok(idx) => {
                self.neigh_send(io, idx, pkt, now_ms);
                (true, None)
            }
            Err((ri, route)) => self.nh_send_routed(io, dst, ri, route, pkt, now_ms),
        }
    }

    /// [`Stack::nh_send`] through `route` (next hop not cached), out of line.
    #[inline(never)]
    fn nh_send_routed<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        dst: Ipv4Addr,
        ri: u32,
        route: Route,
        pkt: P,
        now_ms: u64,
    ) -> (bool, Option<(u32, u32)>) {
        let nh = route.next_hop(IpAddr::V4(dst));
        let sent = self.neigh_output(io, route.port, nh, route.src, pkt, now_ms);
        let learnt = if sent {
            self.nh_learn(dst, route.port, nh, route.via.map(|_| ri))
        } else {
            None
        };
        (sent, learnt)
    }

    /// The port of neighbour entry `idx` when it was learnt in generation `gen`, which is still
    /// current, and it is resolved (a next hop cached elsewhere, e.g. in a session).
    #[inline(always)]
    pub(crate) fn neigh_valid(&self, idx: u32, gen: u32) -> Option<PortIdx> {
        if gen != self.neigh.gen {
            return None;
        }
        let e = self.neigh.entries.get(idx as usize)?;
        (e.resolved && e.in_use).then_some(e.port)
    }

    /// Send `pkt` (an IPv4 frame) to resolved neighbour entry `idx` (from [`Stack::nh_cached`]),
    /// probing it first when it is stale.
    #[inline(always)]
    pub(crate) fn neigh_send<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        idx: u32,
        mut pkt: P,
        now_ms: u64,
    ) {
        let (port, mac, my_mac) = self.neigh_macs(io, idx, now_ms);
        write_eth(pkt.data_mut(), mac, my_mac, ETHERTYPE_IPV4);
        io.send(port, pkt);
    }

    /// The port, neighbour MAC and own MAC to send to resolved neighbour entry `idx` (from
    /// [`Stack::nh_cached`]) with, probing it first when it is stale.
    #[inline(always)]
    pub(crate) fn neigh_macs<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        idx: u32,
        now_ms: u64,
    ) -> (PortIdx, MacAddr, MacAddr) {
        let e = &self.neigh.entries[idx as usize];
        let (port, mac) = (e.port, e.mac);
        if now_ms.saturating_sub(e.confirmed_ms) >= self.neigh.conf.reachable_ms {
            self.neigh_probe_stale(io, idx, now_ms);
        }
        (port, mac, self.ports[port as usize].mac)
    }

    /// Entry `idx` is stale (not confirmed for `reachable_ms`): probe it by unicast ARP (by
    /// broadcast after `max_probes` unanswered ones), at most once per `retrans_ms`. Out of
    /// line: only the packets of a stale window get here.
    #[cold]
    #[inline(never)]
    fn neigh_probe_stale<I: Io<Pkt = P>>(&mut self, io: &mut I, idx: u32, now_ms: u64) {
        let e = &self.neigh.entries[idx as usize];
        if now_ms.saturating_sub(e.probe_ms) < self.neigh.conf.retrans_ms {
            return;
        }
        let (port, mac, src, nh, probes) = (e.port, e.mac, e.src, e.ip, e.probes);
        let em = &mut self.neigh.entries[idx as usize];
        em.probe_ms = now_ms;
        em.probes = probes.saturating_add(1);
        // After `max_probes` unanswered unicast probes, ask by broadcast: the address may have
        // moved to another MAC (a replaced host that sent no gratuitous ARP); its answer
        // updates the entry. Until then traffic keeps the MAC it has.
        let to = (probes < self.neigh.conf.max_probes).then_some(mac);
        self.send_arp_request(io, port, src, nh, to);
    }

    /// Resolve `nh` on `port` and send `pkt` (an IPv4 frame) or hold it. Returns true when it was
    /// sent or held.
    pub(crate) fn neigh_output<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        nh: IpAddr,
        src: IpAddr,
        pkt: P,
        now_ms: u64,
    ) -> bool {
        if nh.is_ipv6() {
            self.drop_pkt(pkt, DropReason::Ipv6Unsupported);
            return false;
        }
        let idx = match self.neigh.find(port, nh) {
            Some(idx) => {
                if self.neigh.entries[idx].resolved {
                    self.neigh_send(io, idx as u32, pkt, now_ms);
                    return true;
                }
                idx
            }
            None => {
                let Some(idx) = self.neigh_create(port, nh, src, now_ms) else {
                    self.drop_pkt(pkt, DropReason::NeighTableFull);
                    return false;
                };
                let e = &mut self.neigh.entries[idx];
                e.probes = 1;
                e.probe_ms = now_ms;
                self.send_arp_request(io, port, src, nh, None);
                idx
            }
        };
        match self.neigh.hold(idx, pkt) {
            Ok(()) => {
                self.counters.neigh_held.inc();
                true
            }
            Err(p) => {
                self.drop_pkt(p, DropReason::NeighHoldFull);
                false
            }
        }
    }

    /// Send an ICMP error about `orig` (a validated IPv4 frame received on `in_port`) unless
    /// forbidden (about an ICMP error, a non-first fragment) or rate-limited. Its source is the
    /// first IPv4 address of `in_port`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn icmp_error<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        orig: &[u8],
        ihl: usize,
        typ: u8,
        code: u8,
        mtu: u16,
        now_ms: u64,
    ) {
        self.icmp_error_from(io, in_port, None, orig, ihl, typ, code, mtu, now_ms)
    }

    /// [`Self::icmp_error`] with source `src` (`None`: the first IPv4 address of `in_port`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn icmp_error_from<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        src: Option<Ipv4Addr>,
        orig: &[u8],
        ihl: usize,
        typ: u8,
        code: u8,
        mtu: u16,
        now_ms: u64,
    ) {
        let total = be16(orig, ip4::TOTAL_LEN) as usize;
        if be16(orig, ip4::FRAG) & ip4::OFFSET != 0 {
            return;
        }
        if orig[ip4::PROTO] == PROTO_ICMP
            && (total <= ihl || icmp_type_is_error(orig[ETH_LEN + ihl]))
        {
            return;
        }
        let Some(src) = src.or(self.ports[in_port as usize].icmp_src) else {
            return;
        };
        if !self.icmp_bucket.take(now_ms) {
            return;
        }
        let Some(mut p) = io.alloc() else {
            return self.count_drop(DropReason::AllocFailed);
        };
        let quote = (ihl + 8).min(total);
        let ip_total = ip4::MIN_HDR + 8 + quote;
        if !p.set_len(ETH_LEN + ip_total) {
            return self.drop_pkt(p, DropReason::AllocFailed);
        }
        let orig_src = ipv4_at(orig, ip4::SRC);
        self.ip_id = self.ip_id.wrapping_add(1);
        let d = p.data_mut();
        d[..ETH_LEN].fill(0);
        d[ip4::VIHL] = 0x45;
        d[ip4::TOS] = 0xc0; // internetwork control, as Linux
        put16(d, ip4::TOTAL_LEN, ip_total as u16);
        put16(d, ip4::ID, self.ip_id);
        put16(d, ip4::FRAG, 0);
        d[ip4::TTL] = 64;
        d[ip4::PROTO] = PROTO_ICMP;
        put16(d, ip4::CSUM, 0);
        d[ip4::SRC..ip4::SRC + 4].copy_from_slice(&src.octets());
        d[ip4::DST..ip4::DST + 4].copy_from_slice(&orig_src.octets());
        let c = checksum(&d[ETH_LEN..ETH_LEN + ip4::MIN_HDR]);
        put16(d, ip4::CSUM, c);
        let ic = ETH_LEN + ip4::MIN_HDR;
        d[ic] = typ;
        d[ic + 1] = code;
        d[ic + 2..ic + 8].fill(0);
        put16(d, ic + 6, mtu);
        d[ic + 8..ic + 8 + quote].copy_from_slice(&orig[ETH_LEN..ETH_LEN + quote]);
        let c = checksum(&d[ic..ic + 8 + quote]);
        put16(d, ic + 2, c);
        if self.ip_output(io, p, orig_src, now_ms) {
            self.counters.icmp_errors_sent.inc();
        }
    }
}
