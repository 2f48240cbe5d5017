//! The virtual-service set of one worker: O(1) lookup by (proto, VIP, vport) and per-service
//! scheduler state.
//!
//! Built from `&[ServiceConf]` at start and rebuilt by `Stack::set_services` (a control
//! operation, which may allocate). Rebuilding never touches sessions: an existing session keeps
//! its RIP:rport and LIP:lport (and its dest id for the counters) until it expires, even when its
//! service or dest was removed; only new sessions see the new set.

use crate::config::{
    is_prime, DestConf, Fwd, Persist, Proto, Sched, ServiceConf, ServiceMatch, MAX_MATCH_SERVICES,
    MH_TABLE_SIZE_MAX,
};
use crate::fixedmap::{ip_bits, mix, FixedKey, FixedMap};
use crate::io::PortIdx;
use crate::lport::LportAlloc;
use crate::sched::{mh_lookup, mh_slot_weight, Dest, MhLookup, Scheduler};
use std::net::{IpAddr, Ipv4Addr};

/// Lookup key of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvcKey {
    /// IP protocol number.
    pub proto: u8,
    /// VIP.
    pub vip: IpAddr,
    /// vport.
    pub vport: u16,
}

impl FixedKey for SvcKey {
    fn hash64(&self) -> u64 {
        mix(ip_bits(&self.vip) ^ ((self.vport as u64) << 40) ^ ((self.proto as u64) << 56))
    }
}

/// One service at run time. Cache-line aligned: the worker writes its scheduler state and LIP
/// cursor on every new connection, and the list is allocated by the thread that builds the set
/// (rvsd's control thread), which must not have objects on the same lines.
#[repr(align(64))]
pub struct Service {
    /// Protocol.
    pub proto: Proto,
    /// VIP.
    pub vip: IpAddr,
    /// vport.
    pub vport: u16,
    /// Port the VIP is owned on.
    pub vip_port: PortIdx,
    /// Real servers.
    pub dests: Vec<Dest>,
    /// Scheduler state (this worker's).
    pub sched: Scheduler,
    /// Hash of what its scheduler state depends on (scheduler, real servers, LIPs), computed
    /// where the set is built (see [`Services::carry_state`]).
    pub fingerprint: u64,
    /// Lport pools of the service's LIPs (this worker's; see [`Services::attach_lips`]).
    pub lips: Vec<u16>,
    /// The service's LIPs, in configuration order (`lips` are their pools).
    pub lip_addrs: Vec<IpAddr>,
    /// Next LIP to try first (rotates per new session).
    pub lip_cursor: usize,
    /// Some dest is NAT: every session of the service lives on the worker owning the client
    /// ([`crate::fwd::nat_owner`]), whatever its dest's method.
    pub has_nat: bool,
    /// Persistence ([`crate::persist`]): every session of the service lives on the worker owning
    /// the client network.
    pub persist: Option<Persist>,
    /// The match of a match service (ipvsadm `-f MARK`); `vip`/`vport` are then meaningless.
    pub mark: Option<ServiceMatch>,
    /// The rule by which the service placed its connections on workers before the last change
    /// of [`Service::owner_rule`] (an edit that removed persistence or its last NAT real
    /// server, or changed the netmask): connections made then still live where it put them.
    pub prev_owner: Option<OwnerRule>,
}

/// Which worker schedules and holds a new connection of a service (see
/// `Fullnat::new_conn_owner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerRule {
    /// The worker RSS steers the client's packets to.
    Rss,
    /// The worker owning the client network (persistence, this netmask):
    /// [`crate::persist::persist_owner`].
    Persist {
        /// The client netmask (host order).
        netmask: u32,
    },
    /// The worker owning the client (a NAT real server): [`crate::fwd::nat_owner`].
    Nat,
}

impl Service {
    /// How the service places new connections now.
    pub fn owner_rule(&self) -> OwnerRule {
        match (self.persist, self.has_nat) {
            (Some(p), _) => OwnerRule::Persist { netmask: p.netmask },
            (None, true) => OwnerRule::Nat,
            (None, false) => OwnerRule::Rss,
        }
    }

    /// The (proto, VIP, vport) naming the service in persistence templates and
    /// [`crate::persist::persist_owner`] for a packet to `dst`: (proto, `dst`, vport) for a
    /// VIP service, (0, the mark as an address, 0) for a match service (as IPVS keys fwmark
    /// templates by the mark; protocol 0 never collides with a TCP/UDP service).
    #[inline]
    pub fn tmpl_id(&self, proto: u8, dst: Ipv4Addr) -> (u8, Ipv4Addr, u16) {
        match self.mark {
            Some(m) => (0, Ipv4Addr::from(m.mark), 0),
            None => (proto, dst, self.vport),
        }
    }
}

/// Invalid service configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceError {
    /// The same (proto, VIP, vport) twice.
    Duplicate(SvcKey),
    /// A dest id is not below `max_dests`.
    DestId(u32),
    /// VIP, LIP or RIP is IPv6 (not supported yet).
    Ipv6,
    /// A service with a FULLNAT dest has no LIP.
    NoLip(SvcKey),
    /// Too many LIPs over all services.
    TooManyLips,
    /// `vip_port` or `lip_port` is not a configured port.
    BadPort(PortIdx),
    /// The Maglev table size is not a prime in `2..=MH_TABLE_SIZE_MAX`.
    MhTableSize(u32),
    /// A port-0 service (vport 0) without persistence.
    Port0NotPersistent(SvcKey),
    /// A persistent service with a NAT dest (not supported: NAT replies are owned by
    /// `nat_owner(CIP, cport)`, not by the persistence owner).
    PersistentNat(SvcKey),
    /// The same mark twice.
    DuplicateMark(u32),
    /// More than [`MAX_MATCH_SERVICES`] match services.
    TooManyMarks,
    /// A match service with mark 0, an IPv6 prefix or an empty port range.
    BadMatch(u32),
    /// The VIPs and LIPs do not fit the owned address set (with the ports' addresses).
    TooManyAddrs,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::Duplicate(k) => {
                write!(
                    f,
                    "duplicate service {}:{} (proto {})",
                    k.vip, k.vport, k.proto
                )
            }
            ServiceError::DestId(id) => write!(f, "dest id {id} not below max_dests"),
            ServiceError::Ipv6 => write!(f, "IPv6 services are not supported yet"),
            ServiceError::NoLip(k) => write!(f, "service {}:{} has no LIP", k.vip, k.vport),
            ServiceError::TooManyLips => write!(
                f,
                "too many LIPs: {} lport pools per worker, and no idle one that neither the set in force nor the new one uses (remove old LIPs in one change, add new ones in the next)",
                crate::lport::MAX_LIPS
            ),
            ServiceError::BadPort(p) => write!(f, "no port {p}"),
            ServiceError::MhTableSize(n) => write!(
                f,
                "mh table size {n} is not a prime in 2..={MH_TABLE_SIZE_MAX}"
            ),
            ServiceError::Port0NotPersistent(k) => write!(
                f,
                "service {}:0 (proto {}) matches every port: it must be persistent",
                k.vip, k.proto
            ),
            ServiceError::PersistentNat(k) => write!(
                f,
                "persistent service {}:{} has a NAT dest (not supported)",
                k.vip, k.vport
            ),
            ServiceError::DuplicateMark(m) => write!(f, "duplicate match service mark {m}"),
            ServiceError::TooManyMarks => {
                write!(f, "more than {MAX_MATCH_SERVICES} match services")
            }
            ServiceError::TooManyAddrs => write!(
                f,
                "more than {} addresses to own (VIPs, match prefixes, LIPs, port addresses)",
                crate::stack::OWNED_CAPACITY
            ),
            ServiceError::BadMatch(m) => write!(
                f,
                "match service mark {m}: mark 0, IPv6 prefix or empty port range"
            ),
        }
    }
}
impl std::error::Error for ServiceError {}

/// The service set.
pub struct Services {
    map: FixedMap<SvcKey, u32>,
    /// Services, indexed by the map's values.
    pub list: Vec<Service>,
    vips: FixedMap<IpAddr, ()>,
    /// Addresses of the NAT real servers (their replies' fragments cannot be translated).
    nat_rips: FixedMap<IpAddr, ()>,
    /// Some service has vport 0 (a lookup miss then tries port 0).
    any_port0: bool,
    /// Match services: (match, index in `list`), in configuration order, at most
    /// [`MAX_MATCH_SERVICES`] (checked linearly after the exact and port-0 lookups).
    matches: Vec<(ServiceMatch, u32)>,
    /// What the set owns: `stack::service_addrs` of its configuration (sorted, without
    /// duplicates), computed where the set is built so that a worker swapping it in only
    /// compares it with what it owns.
    pub(crate) addrs: Vec<(PortIdx, IpAddr)>,
    /// Every service's VIP (match services aside), sorted, without duplicates.
    vip_set: Vec<IpAddr>,
    /// Every service's LIPs, sorted, without duplicates.
    pub(crate) lip_set: Vec<IpAddr>,
    /// Scratch of [`Services::carry_state`], indexed by dest id (up to the set's largest):
    /// the index of that dest in the service being carried over, [`NO_INDEX`] elsewhere.
    /// Allocated where the set is built, so a worker carrying state over allocates nothing.
    id_index: Vec<u32>,
}

/// An [`Services::id_index`] slot of no dest.
const NO_INDEX: u32 = u32::MAX;

impl Services {
    /// An empty set.
    pub fn empty() -> Self {
        Services {
            map: FixedMap::with_capacity(1),
            list: Vec::new(),
            vips: FixedMap::with_capacity(1),
            nat_rips: FixedMap::with_capacity(1),
            any_port0: false,
            matches: Vec::new(),
            addrs: Vec::new(),
            vip_set: Vec::new(),
            lip_set: Vec::new(),
            id_index: Vec::new(),
        }
    }

    /// Whether every address is to FULLNAT what it was under `other` (VIP or not, which LIP
    /// pool) once this set's LIPs are attached: the same VIPs, LIPs and match prefixes, and
    /// every LIP already with a pool in `lports` (attaching then makes none). Then a worker
    /// swapping this set in for `other` need not reclassify what it owns: a health-check
    /// transition or a weight change, most publications, costs it no walk of the owned set.
    pub(crate) fn classifies_as(&self, other: &Services, lports: &LportAlloc) -> bool {
        self.list.is_empty() == other.list.is_empty()
            && self.vip_set == other.vip_set
            && self.lip_set == other.lip_set
            && self
                .matches
                .iter()
                .map(|(m, _)| m.dst)
                .eq(other.matches.iter().map(|(m, _)| m.dst))
            && self.lip_set.iter().all(|l| lports.pool_of(*l).is_some())
    }

    /// Build from configuration, registering LIPs with `lports` (pools are kept across rebuilds).
    pub fn build(
        confs: &[ServiceConf],
        max_dests: u32,
        n_ports: usize,
        lports: &mut LportAlloc,
    ) -> Result<Services, ServiceError> {
        let mut s = Self::build_detached(confs, max_dests, n_ports, &[])?;
        s.attach_lips(lports, &[])?;
        Ok(s)
    }

    /// The tables of `confs` that can be built once for every worker, ahead, on the control
    /// thread (the Maglev lookup tables of `mh` services), by service index.
    pub fn prepare(confs: &[ServiceConf]) -> Vec<Option<MhLookup>> {
        confs
            .iter()
            .map(|c| {
                let w = |d: &DestConf| mh_slot_weight(c.sched, d.weight, d.last_weight, d.down);
                mh_lookup(c.sched, c.dests.iter().map(|d| (d.rip, d.rport, w(d))))
            })
            .collect()
    }

    /// Give every service its LIPs' lport pools in `lports` (registering new LIPs): the one
    /// step of a build that needs the worker's own state. Cheap for known LIPs (one map lookup
    /// each); a new LIP allocates its pool.
    ///
    /// `in_force`: the LIPs of the set this one replaces (sorted), whose pools stay theirs until
    /// the swap (a set refused after this keeps working): with this set's, the pools a new LIP
    /// may not take over.
    pub fn attach_lips(
        &mut self,
        lports: &mut LportAlloc,
        in_force: &[IpAddr],
    ) -> Result<(), ServiceError> {
        let mut keep: Vec<IpAddr> = self.lip_set.iter().chain(in_force).copied().collect();
        keep.sort_unstable();
        keep.dedup();
        for s in &mut self.list {
            s.lips.clear();
            for l in &s.lip_addrs {
                s.lips
                    .push(lports.pool_in(*l, &keep).ok_or(ServiceError::TooManyLips)?);
            }
        }
        Ok(())
    }

    /// Build everything but the LIPs' pools (see [`Services::attach_lips`]), with the tables
    /// [`Services::prepare`] built for these `confs` (a missing or mis-sized one is built here):
    /// what the control thread can do for a worker ahead of a publication, so that the worker
    /// only attaches and swaps between two bursts.
    pub fn build_detached(
        confs: &[ServiceConf],
        max_dests: u32,
        n_ports: usize,
        prepared: &[Option<MhLookup>],
    ) -> Result<Services, ServiceError> {
        let mut map = FixedMap::with_capacity(confs.len());
        let mut vips = FixedMap::with_capacity(confs.len());
        let mut list = Vec::with_capacity(confs.len());
        let mut matches: Vec<(ServiceMatch, u32)> = Vec::new();
        for (ci, c) in confs.iter().enumerate() {
            let key = match c.mark {
                // A match service is named by its mark in errors.
                Some(m) => SvcKey {
                    proto: m.proto.number(),
                    vip: IpAddr::V4(Ipv4Addr::from(m.mark)),
                    vport: 0,
                },
                None => SvcKey {
                    proto: c.proto.number(),
                    vip: c.vip,
                    vport: c.vport,
                },
            };
            if let Some(m) = c.mark {
                if m.mark == 0
                    || !m.dst.addr.is_ipv4()
                    || m.src.is_some_and(|p| !p.addr.is_ipv4())
                    || m.dport.0 > m.dport.1
                {
                    return Err(ServiceError::BadMatch(m.mark));
                }
                if matches.iter().any(|(o, _)| o.mark == m.mark) {
                    return Err(ServiceError::DuplicateMark(m.mark));
                }
                if matches.len() >= MAX_MATCH_SERVICES {
                    return Err(ServiceError::TooManyMarks);
                }
            } else if map.get(&key).is_some() {
                return Err(ServiceError::Duplicate(key));
            }
            for p in [c.vip_port, c.lip_port] {
                if p as usize >= n_ports {
                    return Err(ServiceError::BadPort(p));
                }
            }
            if c.vip.is_ipv6()
                || c.lips.iter().any(|l| l.is_ipv6())
                || c.dests.iter().any(|d| d.rip.is_ipv6())
            {
                return Err(ServiceError::Ipv6);
            }
            if c.lips.is_empty() && c.dests.iter().any(|d| d.fwd == Fwd::FullNat) {
                return Err(ServiceError::NoLip(key));
            }
            if c.mark.is_none() && c.vport == 0 && c.persist.is_none() {
                return Err(ServiceError::Port0NotPersistent(key));
            }
            if c.persist.is_some() && c.dests.iter().any(|d| d.fwd == Fwd::Nat) {
                return Err(ServiceError::PersistentNat(key));
            }
            if let Sched::Mh { table_size, .. } = c.sched {
                if table_size > MH_TABLE_SIZE_MAX || !is_prime(table_size) {
                    return Err(ServiceError::MhTableSize(table_size));
                }
            }
            let mut dests = Vec::with_capacity(c.dests.len());
            for d in &c.dests {
                if d.id >= max_dests {
                    return Err(ServiceError::DestId(d.id));
                }
                dests.push(Dest {
                    id: d.id,
                    rip: d.rip,
                    rport: d.rport,
                    weight: d.weight,
                    fwd: d.fwd,
                    upper: d.upper,
                    lower: d.lower,
                    down: d.down,
                    last_weight: d.last_weight,
                });
            }
            let lips = Vec::with_capacity(c.lips.len());
            match c.mark {
                Some(m) => matches.push((m, list.len() as u32)),
                None => {
                    let _ = map.insert(key, list.len() as u32);
                    let _ = vips.insert(c.vip, ());
                }
            }
            let fingerprint = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (c.sched, &dests, &c.lips).hash(&mut h);
                h.finish()
            };
            list.push(Service {
                fingerprint,
                proto: c.proto,
                vip: c.vip,
                vport: c.vport,
                vip_port: c.vip_port,
                sched: Scheduler::with_lookup(
                    c.sched,
                    &dests,
                    prepared.get(ci).and_then(Option::as_ref),
                ),
                dests,
                lips,
                lip_addrs: c.lips.clone(),
                lip_cursor: 0,
                has_nat: c.dests.iter().any(|d| d.fwd == Fwd::Nat),
                persist: c.persist,
                mark: c.mark,
                prev_owner: None,
            });
        }
        let any_port0 = confs.iter().any(|c| c.mark.is_none() && c.vport == 0);
        let nat_dests = || {
            confs
                .iter()
                .flat_map(|c| &c.dests)
                .filter(|d| d.fwd == Fwd::Nat)
        };
        let mut nat_rips = FixedMap::with_capacity(nat_dests().count().max(1));
        for d in nat_dests() {
            let _ = nat_rips.insert(d.rip, ());
        }
        let mut vip_set: Vec<IpAddr> = confs
            .iter()
            .filter(|c| c.mark.is_none())
            .map(|c| c.vip)
            .collect();
        vip_set.sort_unstable();
        vip_set.dedup();
        let mut lip_set: Vec<IpAddr> = confs.iter().flat_map(|c| c.lips.iter().copied()).collect();
        lip_set.sort_unstable();
        lip_set.dedup();
        let ids = list
            .iter()
            .flat_map(|s| &s.dests)
            .map(|d| d.id as usize + 1);
        let id_index = vec![NO_INDEX; ids.max().unwrap_or(0)];
        Ok(Services {
            map,
            list,
            vips,
            nat_rips,
            any_port0,
            matches,
            addrs: crate::stack::service_addrs(confs),
            vip_set,
            lip_set,
            id_index,
        })
    }

    /// The service index of (proto, VIP, vport).
    #[inline]
    pub fn lookup(&self, proto: u8, vip: IpAddr, vport: u16) -> Option<u32> {
        if self.list.is_empty() {
            return None;
        }
        self.map.get(&SvcKey { proto, vip, vport }).copied()
    }

    /// The service a packet to (proto, VIP, `dport`) belongs to: the exact service, else the
    /// VIP's port-0 service.
    #[inline]
    pub fn lookup_port(&self, proto: u8, vip: IpAddr, dport: u16) -> Option<u32> {
        match self.lookup(proto, vip, dport) {
            None if self.any_port0 => self.lookup(proto, vip, 0),
            r => r,
        }
    }

    /// The service a packet `proto` `src` → `dst`:`dport` belongs to: the exact service, else
    /// the VIP's port-0 service, else the first match service selecting it (a linear scan of at
    /// most [`MAX_MATCH_SERVICES`] entries, no allocation).
    #[inline]
    pub fn lookup_packet(&self, proto: u8, src: IpAddr, dst: IpAddr, dport: u16) -> Option<u32> {
        match self.lookup_port(proto, dst, dport) {
            None => self
                .matches
                .iter()
                .find(|(m, _)| m.matches(proto, src, dst, dport))
                .map(|(_, i)| *i),
            r => r,
        }
    }

    /// Take over, from the set this one replaces, the scheduler state (rr/wrr position,
    /// overload flags, lblc/lblcr caches, twos's random source) and the LIP cursor of every
    /// service that is unchanged there: same key, scheduler and real servers (ids, addresses,
    /// weights, thresholds, methods, in the same order) and LIPs. A publication about other
    /// services — a health-check transition elsewhere, an edit — then leaves them as they
    /// were. A service whose real servers changed takes over what still applies
    /// ([`Scheduler::carry_from`], as IPVS keeps its state across a dest edit); one whose
    /// scheduler changed starts afresh. After this, `old` holds the states it got instead
    /// (freed with it).
    ///
    /// Cheap on the worker: a service at the same index with the same key is tried first (a
    /// configuration keeps its order), else a map lookup; then the fingerprints compare.
    pub fn carry_state(&mut self, old: &mut Services) {
        for (i, s) in self.list.iter_mut().enumerate() {
            let same_key = |o: &Service| match (s.mark, o.mark) {
                (Some(a), Some(b)) => a.mark == b.mark,
                (None, None) => (o.proto, o.vip, o.vport) == (s.proto, s.vip, s.vport),
                _ => false,
            };
            let j = match old.list.get(i) {
                Some(o) if same_key(o) => Some(i as u32),
                _ => match s.mark {
                    Some(m) => old.lookup_mark(m.mark),
                    None => old.lookup(s.proto.number(), s.vip, s.vport),
                },
            };
            let Some(o) = j.and_then(|j| old.list.get_mut(j as usize)) else {
                continue;
            };
            let was = o.owner_rule();
            s.prev_owner = if was != s.owner_rule() {
                Some(was)
            } else {
                o.prev_owner
            };
            // The dest count guards the state's arrays against a hash collision.
            if o.fingerprint == s.fingerprint && o.dests.len() == s.dests.len() {
                std::mem::swap(&mut s.sched, &mut o.sched);
                s.lip_cursor = o.lip_cursor;
            } else {
                // Real servers added, edited or removed: what still applies carries over, each
                // old dest found by its id in O(1).
                for (j, d) in s.dests.iter().enumerate() {
                    if let Some(x) = self.id_index.get_mut(d.id as usize) {
                        *x = j as u32;
                    }
                }
                s.sched
                    .carry_from(&o.sched, &o.dests, &s.dests, &self.id_index);
                for d in &s.dests {
                    if let Some(x) = self.id_index.get_mut(d.id as usize) {
                        *x = NO_INDEX;
                    }
                }
                if s.lip_addrs == o.lip_addrs {
                    s.lip_cursor = o.lip_cursor;
                }
            }
        }
    }

    /// The service index of match service `mark`.
    pub fn lookup_mark(&self, mark: u32) -> Option<u32> {
        self.matches
            .iter()
            .find(|(m, _)| m.mark == mark)
            .map(|(_, i)| *i)
    }

    /// True when `ip` lies in the destination prefix of some match service.
    #[inline]
    pub fn in_match_dst(&self, ip: IpAddr) -> bool {
        self.matches.iter().any(|(m, _)| m.dst.contains(ip))
    }

    /// True when `ip` is the VIP of some service or in the destination of a match service.
    #[inline]
    pub fn is_vip(&self, ip: IpAddr) -> bool {
        !self.list.is_empty() && (self.vips.get(&ip).is_some() || self.in_match_dst(ip))
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when there is no service.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// True when `ip` is the address of a NAT real server.
    #[inline]
    pub fn is_nat_rip(&self, ip: IpAddr) -> bool {
        self.nat_rips.get(&ip).is_some()
    }

    /// True when some service has a NAT dest.
    pub fn any_nat(&self) -> bool {
        self.list.iter().any(|s| s.has_nat)
    }

    /// Seed the random schedulers (`twos`) of worker `worker`'s `build`-th service set: each
    /// worker, service and set draws its own sequence (IPVS draws independently on every call;
    /// one fixed seed made every worker draw alike, from the start again at every publish).
    pub fn seed(&mut self, worker: u16, build: u64) {
        for (i, s) in self.list.iter_mut().enumerate() {
            // splitmix64 of (worker, build, service).
            let mut z = (worker as u64) << 48 ^ build << 16 ^ i as u64;
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ z >> 30).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ z >> 27).wrapping_mul(0x94D0_49BB_1331_11EB);
            s.sched.seed(z ^ z >> 31);
            s.sched.offset(worker as usize);
        }
    }
}
