//! The control plane's view of the running services: what `rvsadm` edits and `--reload` replaces.
//!
//! Operations are validated here, with ipvsadm's error wording, before anything reaches the
//! workers; a failed operation changes nothing. Every real server gets a dest id that stays the
//! same across edits and reloads (it indexes the per-core counters); ids of removed real servers
//! are reused only after every other id is taken.
#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::proto::{code, Fwd, Op, Proto, RealSpec, ServiceKey, ServiceSpec, TimeoutsView};
use crate::config::{
    self, CheckConfig, Config, Forward, PortConfig, RealConfig, Scheduler, ServiceConfig,
    TimeoutsConfig,
};

/// A failed operation: errno-like code and message.
pub type OpError = (i32, String);

fn err<T>(c: i32, m: impl Into<String>) -> Result<T, OpError> {
    Err((c, m.into()))
}

/// A test for dest ids still in use by the workers ([`Model::set_busy_ids`]).
#[derive(Clone, Default)]
struct BusyIds(Option<std::sync::Arc<dyn Fn(u32) -> bool + Send + Sync>>);

impl std::fmt::Debug for BusyIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BusyIds(set)"
        } else {
            "BusyIds(none)"
        })
    }
}

/// The running services and timeouts.
#[derive(Clone, Debug)]
pub struct Model {
    pub services: Vec<ServiceConfig>,
    pub timeouts: TimeoutsConfig,
    ports: Vec<PortConfig>,
    /// The routes rvs runs with (a reload that changes them is refused), for the reachability
    /// of real servers added by rvsadm.
    routes: Vec<config::RouteConfig>,
    ids: HashMap<(ServiceKey, IpAddr, u16), u32>,
    /// The dest ids of real servers removed since, as IPVS keeps a removed dest in its trash: one
    /// added again gets its id back while no other real server has taken it, and with it the
    /// sessions it still has and its persistence templates (its statistics start afresh: rvsd
    /// rebases them).
    retired: HashMap<(ServiceKey, IpAddr, u16), u32>,
    /// Which instance each real server is (bumped by every add: a real server removed and added
    /// again is another instance, whose health check starts afresh).
    epochs: HashMap<(ServiceKey, IpAddr, u16), u32>,
    next_epoch: u32,
    /// The last non-zero weight of each real server quiesced (weight 0) after it had one (IPVS
    /// `last_weight`, which `mh` builds its table from).
    last_weight: HashMap<(ServiceKey, IpAddr, u16), u32>,
    max_dests: u32,
    /// Where the search for a free dest id starts: ids are handed out round the ring, so a
    /// removed real server's id comes back only after every other one was taken since.
    next_id: u32,
    /// Whether a dest id still has sessions or persistence templates on some worker (set by
    /// rvsd; none in tests): such an id is handed out only when no other is free, so a new real
    /// server does not inherit a removed one's connections and their counts.
    busy: BusyIds,
    /// Bumped by every successful change.
    pub generation: u64,
    /// What the file defines that an ipvsadm command line cannot carry, by service and by real
    /// server: a service or real server that rvsadm deletes and adds again (`-D`/`-A`,
    /// `-d`/`-a`, `-C` then `-R` of a saved listing) gets it back instead of defaults.
    checks: FileChecks,
}

/// What a configuration file gives its services beyond ipvsadm's options: health checks
/// (`[service.check]`, `[service.real.check]`), and each service's shape: its ports (`port`,
/// `lip_port`), `mh_table_size` and, for a match service, its `[service.match]` (without which
/// `-A -f MARK`, as `-S` saves it, could not be restored).
#[derive(Clone, Debug, Default)]
struct FileChecks {
    real: HashMap<(ServiceKey, IpAddr, u16), CheckConfig>,
    /// The file's service, check included, without real servers (its LIPs tell which of them
    /// `lip_port` was given for).
    shape: HashMap<ServiceKey, ServiceConfig>,
}

impl FileChecks {
    fn of(cfg: &Config) -> FileChecks {
        let mut c = FileChecks::default();
        for s in &cfg.services {
            c.shape.insert(
                key_of(s),
                ServiceConfig {
                    reals: Vec::new(),
                    ..s.clone()
                },
            );
            for r in &s.reals {
                if let Some(ch) = &r.check {
                    c.real.insert((key_of(s), r.ip, r.port), ch.clone());
                }
            }
        }
        c
    }
}

pub fn key_of(s: &ServiceConfig) -> ServiceKey {
    if let Some(m) = &s.mark {
        return ServiceKey::of_mark(m.mark);
    }
    ServiceKey {
        proto: match s.proto {
            config::Proto::Tcp => Proto::Tcp,
            config::Proto::Udp => Proto::Udp,
        },
        vip: s.vip,
        vport: s.vport,
        mark: None,
    }
}

pub fn fwd_of(f: Forward) -> Fwd {
    match f {
        Forward::FullNat => Fwd::FullNat,
        Forward::Nat => Fwd::Nat,
        Forward::Dr => Fwd::Dr,
        Forward::Tun => Fwd::Tun,
    }
}

fn forward_of(f: Fwd) -> Forward {
    match f {
        Fwd::FullNat => Forward::FullNat,
        Fwd::Nat => Forward::Nat,
        Fwd::Dr => Forward::Dr,
        Fwd::Tun => Forward::Tun,
    }
}

fn scheduler(name: &str) -> Result<Scheduler, OpError> {
    match Scheduler::from_name(name) {
        Some(s) => Ok(s),
        // libipvs's wording (the name is the operator's own, on the same line).
        None => err(code::ENOENT, "Scheduler or persistence engine not found"),
    }
}

impl Model {
    /// The model of a loaded configuration. `max_dests` bounds dest ids (the per-core counter
    /// arrays are that long).
    pub fn from_config(cfg: &Config, max_dests: u32) -> Model {
        let mut m = Model {
            services: Vec::new(),
            timeouts: cfg.fullnat.timeouts.clone(),
            ports: cfg.ports.clone(),
            routes: cfg.routes.clone(),
            ids: HashMap::new(),
            retired: HashMap::new(),
            epochs: HashMap::new(),
            next_epoch: 0,
            last_weight: HashMap::new(),
            max_dests,
            next_id: 0,
            busy: BusyIds::default(),
            generation: 1,
            checks: FileChecks::of(cfg),
        };
        m.services = cfg.services.clone();
        for s in &cfg.services {
            for r in &s.reals {
                let id = m.free_id().unwrap_or(0);
                m.ids.insert((key_of(s), r.ip, r.port), id);
                m.born((key_of(s), r.ip, r.port));
            }
        }
        m
    }

    /// Real server `k` joined: a new instance.
    fn born(&mut self, k: (ServiceKey, IpAddr, u16)) {
        self.next_epoch = self.next_epoch.wrapping_add(1);
        self.epochs.insert(k, self.next_epoch);
    }

    /// Which instance real `r` of service `s` is (see [`crate::health::CheckId`]): another one
    /// after it was removed and added again.
    pub fn epoch(&self, s: &ServiceConfig, r: &RealConfig) -> u32 {
        self.epochs
            .get(&(key_of(s), r.ip, r.port))
            .copied()
            .unwrap_or(0)
    }

    /// Tell the model which dest ids the workers still use (sessions or templates of a removed
    /// real server): `busy(id)` is asked when a new real server needs an id.
    pub fn set_busy_ids(&mut self, busy: std::sync::Arc<dyn Fn(u32) -> bool + Send + Sync>) {
        self.busy = BusyIds(Some(busy));
    }

    /// The next free dest id round the ring from `next_id` (and the cursor moved past it): the
    /// first one no real server has and no worker still uses, else the first one no real server
    /// has.
    fn free_id(&mut self) -> Option<u32> {
        let used: std::collections::HashSet<u32> = self.ids.values().copied().collect();
        let n = self.max_dests;
        let free = || {
            (0..n)
                .map(|k| (self.next_id + k) % n)
                .filter(|i| !used.contains(i))
        };
        let id = match &self.busy.0 {
            Some(busy) => free().find(|&i| !busy(i)).or_else(|| free().next()),
            None => free().next(),
        }?;
        self.next_id = (id + 1) % n;
        // Another real server's now: no longer one a removed one gets back.
        self.retired.retain(|_, r| *r != id);
        Some(id)
    }

    /// The dest id for real server `k` joining: its own again when it was removed and no other
    /// has taken it since, else a free one.
    fn id_for(&mut self, k: (ServiceKey, IpAddr, u16)) -> Option<u32> {
        match self.retired.remove(&k) {
            Some(id) if !self.ids.values().any(|&x| x == id) => Some(id),
            _ => self.free_id(),
        }
    }

    /// Real servers `gone` (and their ids) left: remembered for [`Model::id_for`].
    fn retire(&mut self, gone: Vec<((ServiceKey, IpAddr, u16), u32)>) {
        self.retired.extend(gone);
    }

    /// Every real server's dest id: ((service, address, port), id).
    pub fn dest_ids(&self) -> impl Iterator<Item = ((ServiceKey, IpAddr, u16), u32)> + '_ {
        self.ids.iter().map(|(k, &id)| (*k, id))
    }

    /// The last non-zero weight of real `r` of service `s` while it is quiesced (0 when it never
    /// had one; ignored while its weight is above 0): [`rvs_core::DestConf::last_weight`].
    pub fn last_weight(&self, s: &ServiceConfig, r: &RealConfig) -> u32 {
        self.last_weight
            .get(&(key_of(s), r.ip, r.port))
            .copied()
            .unwrap_or(0)
    }

    /// The dest id of real `r` of service `s`.
    pub fn dest_id(&self, s: &ServiceConfig, r: &RealConfig) -> u32 {
        self.ids
            .get(&(key_of(s), r.ip, r.port))
            .copied()
            .unwrap_or(u32::MAX)
    }

    fn find(&self, key: &ServiceKey) -> Option<usize> {
        self.services.iter().position(|s| key_of(s) == *key)
    }

    /// The port whose connected subnet holds `ip` (longest prefix), else `fallback`.
    fn port_for(&self, ip: IpAddr, fallback: usize) -> usize {
        let mut best: Option<(u8, usize)> = None;
        for (i, p) in self.ports.iter().enumerate() {
            for &(a, len) in &p.addresses {
                if crate::config::same_subnet(a, ip, len) && best.is_none_or(|(l, _)| len > l) {
                    best = Some((len, i));
                }
            }
        }
        best.map(|(_, i)| i).unwrap_or(fallback)
    }

    /// Whether `ip` is a service's VIP (a match service's: its destination's network
    /// address), the configuration file's test.
    fn is_vip(&self, ip: IpAddr) -> bool {
        self.services.iter().any(|s| s.vip == ip)
    }

    /// Whether `ip` is a service's local address.
    fn is_lip(&self, ip: IpAddr) -> bool {
        self.services.iter().any(|s| s.lips.contains(&ip))
    }

    /// The first service with a real server at `ip`.
    fn real_of(&self, ip: IpAddr) -> Option<&ServiceConfig> {
        self.services
            .iter()
            .find(|s| s.reals.iter().any(|r| r.ip == ip))
    }

    /// Refuses `ips`, about to become addresses of rvs (a VIP, a LIP), when one is a real server.
    fn not_a_real(&self, ips: &[IpAddr]) -> Result<(), OpError> {
        for &ip in ips {
            if let Some(s) = self.real_of(ip) {
                return err(
                    code::EINVAL,
                    format!(
                        "Illegal address: {ip} is a real server of service {}; an address of rvs (a VIP or a local address) cannot be a real server",
                        match &s.mark {
                            Some(m) => format!("fwmark {}", m.mark),
                            None => format!("{}:{}", s.vip, s.vport),
                        }
                    ),
                );
            }
        }
        Ok(())
    }

    fn owned(&self, ip: IpAddr) -> bool {
        self.ports
            .iter()
            .any(|p| p.addresses.iter().any(|&(a, _)| a == ip))
    }

    /// Apply one editing operation. Returns the addresses (port, ip) that became owned (to be
    /// announced). Read-only operations are not handled here.
    pub fn apply(&mut self, op: &Op) -> Result<Vec<(usize, IpAddr)>, OpError> {
        let before: Vec<(usize, IpAddr)> = self.owned_addrs();
        let mut next = self.clone();
        next.apply_inner(&ipvs_flags(op))?;
        let ids = &next.ids;
        next.last_weight.retain(|k, _| ids.contains_key(k));
        next.epochs.retain(|k, _| ids.contains_key(k));
        next.generation += 1;
        let after = next.owned_addrs();
        *self = next;
        Ok(after.into_iter().filter(|a| !before.contains(a)).collect())
    }

    /// What the services own, (port, address), sorted: each VIP (every address of a match
    /// prefix of at most [`rvs_core::MATCH_OWN_MAX`] addresses) and each LIP, as the workers do.
    pub fn owned_addrs(&self) -> Vec<(usize, IpAddr)> {
        let mut v: Vec<(usize, IpAddr)> = Vec::new();
        for s in &self.services {
            match &s.mark {
                Some(m) => v.extend(m.core().owned_addrs().into_iter().map(|a| (s.port, a))),
                None => v.push((s.port, s.vip)),
            }
            v.extend(s.lips.iter().map(|&l| (s.lip_port, l)));
        }
        v.sort();
        v.dedup();
        v
    }

    fn check_real(&self, s: &ServiceConfig, r: &RealSpec) -> Result<(), OpError> {
        // As the configuration file: a real server is another host, not rvs (a port address, a
        // VIP or a local address of any service), which would loop packets through rvs.
        let ip = r.addr.ip();
        if self.owned(ip) || self.owned_addrs().iter().any(|&(_, a)| a == ip) {
            return err(
                code::EINVAL,
                format!("Illegal address: real server {ip} is an address of rvs itself (a port, VIP or local address); a real server must be another host"),
            );
        }
        if r.addr.ip().is_ipv4() != s.vip.is_ipv4() {
            return err(code::EINVAL, "Illegal address: real server and virtual service of different families (NAT64 is not supported yet)");
        }
        let (connected, routed) = config::reachability(&self.ports, &self.routes, ip);
        if !connected && !routed {
            return err(
                code::EINVAL,
                format!("Illegal address: real server {ip} is not reachable (no connected subnet of a port and no route covers it)"),
            );
        }
        if r.fwd == Fwd::Dr && !connected {
            return err(
                code::EINVAL,
                format!("Illegal address: real server {ip} is not on a connected subnet; direct routing needs it on the same link (-i tunnels through a router)"),
            );
        }
        if r.fwd == Fwd::Nat && s.persistent.is_some() {
            return err(
                code::EINVAL,
                "NAT (masquerading) real servers are not supported by rvs in a persistent service",
            );
        }
        if matches!(r.fwd, Fwd::Dr | Fwd::Tun) && r.addr.port() != s.vport {
            return err(
                code::EINVAL,
                format!(
                    "port mapping is impossible with DR/TUN (real port {} != vport {})",
                    r.addr.port(),
                    s.vport
                ),
            );
        }
        if r.weight > 65535 {
            return err(
                code::EINVAL,
                format!("Illegal weight specified: {}", r.weight),
            );
        }
        if r.upper > i32::MAX as u32 || r.lower > i32::MAX as u32 {
            return err(code::EINVAL, "Illegal threshold (0..=2147483647)");
        }
        // IPVS: ERANGE "lower threshold is higher than upper threshold".
        if r.lower > r.upper {
            return err(
                code::EINVAL,
                format!(
                    "Illegal threshold: lower {} is above upper {}",
                    r.lower, r.upper
                ),
            );
        }
        Ok(())
    }

    fn apply_inner(&mut self, op: &Op) -> Result<(), OpError> {
        match op {
            Op::AddService { spec } => {
                if self.find(&spec.key).is_some() {
                    return err(code::EEXIST, "Service already exists");
                }
                let file = self.checks.shape.get(&spec.key).cloned();
                if let (Some(mark), None) = (spec.key.mark, &file) {
                    return err(
                        code::ENOENT,
                        format!("mark {mark} has no match in the configuration (match services are defined in the TOML file)"),
                    );
                }
                self.check_spec(spec)?;
                // A match service's VIP is its destination's network address, as in the file.
                let vip = file.as_ref().map_or(spec.key.vip, |f| f.vip);
                if spec.key.mark.is_none() && self.owned(vip) {
                    return err(
                        code::EINVAL,
                        format!("Illegal address: {vip} is an address of a port"),
                    );
                }
                // Checked here too for a service the file defines: since the file was loaded,
                // its VIP may have become another service's local address.
                if self.is_lip(vip) {
                    return err(
                        code::EINVAL,
                        format!(
                            "Illegal address: {vip} is a local address; VIPs and local addresses must differ"
                        ),
                    );
                }
                match file.as_ref().and_then(|f| f.mark.as_ref()) {
                    Some(m) => self.not_a_real(&m.core().owned_addrs())?,
                    None => self.not_a_real(&[vip])?,
                }
                if let Some(f) = file {
                    // The file's service: its ports, table size, match and check come back;
                    // what the command line gives replaces the rest.
                    self.services.push(ServiceConfig {
                        scheduler: scheduler(&spec.scheduler)?,
                        sched_flags: spec.sched_flags.clone(),
                        persistent: spec.persistent,
                        netmask: spec.netmask,
                        forward: Forward::Dr,
                        lips: Vec::new(),
                        ..f
                    });
                    return Ok(());
                }
                let port = self.port_for(spec.key.vip, 0);
                self.services.push(ServiceConfig {
                    proto: match spec.key.proto {
                        Proto::Tcp => config::Proto::Tcp,
                        Proto::Udp => config::Proto::Udp,
                    },
                    vip: spec.key.vip,
                    vport: spec.key.vport,
                    scheduler: scheduler(&spec.scheduler)?,
                    sched_flags: spec.sched_flags.clone(),
                    mh_table_size: config::MH_TABLE_SIZE,
                    persistent: spec.persistent,
                    netmask: spec.netmask,
                    forward: Forward::Dr,
                    port,
                    lips: Vec::new(),
                    lip_port: port,
                    reals: Vec::new(),
                    check: None, // the file has no such service
                    mark: None,
                });
            }
            Op::EditService { spec } => {
                let i = self
                    .find(&spec.key)
                    .ok_or((code::ESRCH, "No such service".to_string()))?;
                self.check_spec(spec)?;
                if spec.persistent.is_some()
                    && self.services[i]
                        .reals
                        .iter()
                        .any(|r| r.forward == Forward::Nat)
                {
                    return err(
                        code::EINVAL,
                        "persistent services with NAT (masquerading) real servers are not supported by rvs",
                    );
                }
                self.services[i].scheduler = scheduler(&spec.scheduler)?;
                self.services[i].sched_flags = spec.sched_flags.clone();
                self.services[i].persistent = spec.persistent;
                self.services[i].netmask = spec.netmask;
            }
            Op::DelService { key } => {
                let i = self
                    .find(key)
                    .ok_or((code::ESRCH, "No such service".to_string()))?;
                let s = self.services.remove(i);
                let gone: Vec<_> = self
                    .ids
                    .iter()
                    .filter(|((k, _, _), _)| *k == key_of(&s))
                    .map(|(k, &id)| (*k, id))
                    .collect();
                self.ids.retain(|(k, _, _), _| *k != key_of(&s));
                self.retire(gone);
            }
            Op::Clear => {
                self.services.clear();
                let gone: Vec<_> = self.ids.drain().collect();
                self.retire(gone);
            }
            Op::AddReal { key, real } => {
                let i = self
                    .find(key)
                    .ok_or((code::ESRCH, "Service not defined".to_string()))?;
                self.check_real(&self.services[i], real)?;
                let s = &self.services[i];
                if s.reals
                    .iter()
                    .any(|r| r.ip == real.addr.ip() && r.port == real.addr.port())
                {
                    return err(code::EEXIST, "Destination already exists");
                }
                let check = self
                    .checks
                    .real
                    .get(&(*key, real.addr.ip(), real.addr.port()))
                    .cloned();
                // As the configuration file: a port-0 real server (it keeps the client's port)
                // under a service check without a port would be probed on port 0, fail, and be
                // quiesced.
                if check.is_none()
                    && real.addr.port() == 0
                    && self.services[i]
                        .check
                        .as_ref()
                        .is_some_and(CheckConfig::lacks_port_for_port_zero)
                {
                    return err(
                        code::EINVAL,
                        "the real server's port is 0 (it keeps the client's) and the service's health check has no port; give the check a port in the configuration file",
                    );
                }
                let k = (*key, real.addr.ip(), real.addr.port());
                let id = self
                    .id_for(k)
                    .ok_or((code::ENOMEM, "Memory allocation problem".to_string()))?;
                self.ids.insert(k, id);
                self.born(k);
                let s = &mut self.services[i];
                s.reals.push(RealConfig {
                    ip: real.addr.ip(),
                    port: real.addr.port(),
                    weight: real.weight,
                    forward: forward_of(real.fwd),
                    upper: real.upper,
                    lower: real.lower,
                    check,
                });
            }
            Op::EditReal {
                key,
                real,
                keep_fwd,
            } => {
                let i = self
                    .find(key)
                    .ok_or((code::ESRCH, "Service not defined".to_string()))?;
                // Looked up first (as `ip_vs_edit_dest`): a missing server is "No such
                // destination", whatever else is wrong with the request.
                let j = self.services[i]
                    .reals
                    .iter()
                    .position(|r| r.ip == real.addr.ip() && r.port == real.addr.port())
                    .ok_or((code::ENOENT, "No such destination".to_string()))?;
                let mut real = real.clone();
                if *keep_fwd {
                    real.fwd = fwd_of(self.services[i].reals[j].forward);
                }
                self.check_real(&self.services[i], &real)?;
                let r = &mut self.services[i].reals[j];
                let k = (*key, r.ip, r.port);
                if real.weight > 0 {
                    self.last_weight.remove(&k);
                } else if r.weight > 0 {
                    self.last_weight.insert(k, r.weight);
                }
                r.weight = real.weight;
                r.forward = forward_of(real.fwd);
                r.upper = real.upper;
                r.lower = real.lower;
            }
            Op::DelReal { key, addr } => {
                let i = self
                    .find(key)
                    .ok_or((code::ESRCH, "Service not defined".to_string()))?;
                let s = &mut self.services[i];
                let j = s
                    .reals
                    .iter()
                    .position(|r| r.ip == addr.ip() && r.port == addr.port())
                    .ok_or((code::ENOENT, "No such destination".to_string()))?;
                s.reals.remove(j);
                let k = (*key, addr.ip(), addr.port());
                if let Some(id) = self.ids.remove(&k) {
                    self.retire(vec![(k, id)]);
                }
            }
            Op::AddLaddr { key, lip } => {
                let i = self
                    .find(key)
                    .ok_or((code::ESRCH, "Service not defined".to_string()))?;
                if self.owned(*lip) {
                    return err(
                        code::EINVAL,
                        format!("Illegal address: {lip} is an address of a port"),
                    );
                }
                if self.is_vip(*lip) {
                    return err(
                        code::EINVAL,
                        format!(
                            "Illegal address: {lip} is a VIP; VIPs and local addresses must differ"
                        ),
                    );
                }
                self.not_a_real(&[*lip])?;
                let fallback = self.services[i]
                    .reals
                    .first()
                    .map(|r| self.port_for(r.ip, 0))
                    .unwrap_or(0);
                // The file's `lip_port` for a LIP the file gave this service.
                let lip_port = match self.checks.shape.get(key) {
                    Some(f) if f.lips.contains(lip) => f.lip_port,
                    _ => self.port_for(*lip, fallback),
                };
                let s = &mut self.services[i];
                if s.lips.contains(lip) {
                    return err(code::EEXIST, "Local address already exists");
                }
                if s.lips.is_empty() {
                    s.lip_port = lip_port;
                }
                s.lips.push(*lip);
            }
            Op::DelLaddr { key, lip } => {
                let i = self
                    .find(key)
                    .ok_or((code::ESRCH, "Service not defined".to_string()))?;
                let s = &mut self.services[i];
                let j = s
                    .lips
                    .iter()
                    .position(|l| l == lip)
                    .ok_or((code::ENOENT, "No such local address".to_string()))?;
                s.lips.remove(j);
            }
            Op::SetTimeouts { timeouts } => {
                let TimeoutsView { tcp, tcpfin, udp } = *timeouts;
                if let Some(t) = [tcp, tcpfin, udp]
                    .into_iter()
                    .find(|&t| t > config::MAX_TIMEOUT_S)
                {
                    return err(
                        code::EINVAL,
                        format!(
                            "Illegal timeout: {t} s is more than the {} s rvs keeps",
                            config::MAX_TIMEOUT_S
                        ),
                    );
                }
                // ipvsadm: 0 leaves a value unchanged.
                if tcp > 0 {
                    self.timeouts.tcp = tcp;
                }
                if tcpfin > 0 {
                    self.timeouts.tcpfin = tcpfin;
                }
                if udp > 0 {
                    self.timeouts.udp = udp;
                }
            }
            other => return err(code::EINVAL, format!("not an editing operation: {other:?}")),
        }
        Ok(())
    }

    fn check_spec(&self, spec: &ServiceSpec) -> Result<(), OpError> {
        if spec.netmask.is_some() && spec.persistent.is_none() {
            return err(code::EINVAL, "netmask applies to persistent services only");
        }
        // What rvsadm's parser and the file let through, checked again for a raw request.
        let width = match (spec.key.mark, spec.key.vip) {
            (None, IpAddr::V6(_)) => 128,
            _ => 32,
        };
        if let Some(len) = spec.netmask.filter(|&l| l > width) {
            return err(
                code::EINVAL,
                format!("Illegal persistent netmask /{len} (0..={width})"),
            );
        }
        if spec.key.mark.is_none() && spec.key.vport == 0 && spec.persistent.is_none() {
            return err(
                code::EINVAL,
                "Zero port specified for non-persistent service",
            );
        }
        if spec.persistent == Some(0) || spec.persistent.is_some_and(|p| p > 1 << 31) {
            return err(
                code::EINVAL,
                "Illegal persistence timeout (1..=2147483648 seconds)",
            );
        }
        let sched = scheduler(&spec.scheduler)?;
        // ipvsadm's generic flags (left by `ipvs_flags` only where the scheduler has no name
        // for them) are taken by every scheduler.
        let named: Vec<&String> = spec
            .sched_flags
            .iter()
            .filter(|f| !matches!(f.as_str(), "flag-1" | "flag-2" | "flag-3"))
            .collect();
        if let Err(m) = sched.check_flags(&named) {
            return err(code::EINVAL, format!("Invalid scheduler flags: {m}"));
        }
        Ok(())
    }

    /// Replace the services and timeouts with a reloaded configuration's, keeping the dest ids of
    /// real servers present in both. Returns a description of each change.
    pub fn replace(&mut self, cfg: &Config) -> Vec<String> {
        let old: BTreeMap<ServiceKey, &ServiceConfig> =
            self.services.iter().map(|s| (key_of(s), s)).collect();
        let new: BTreeMap<ServiceKey, &ServiceConfig> =
            cfg.services.iter().map(|s| (key_of(s), s)).collect();
        let mut changes = Vec::new();
        let name = |k: &ServiceKey| k.name();
        for (k, s) in &new {
            match old.get(k) {
                None => changes.push(format!("added service {}", name(k))),
                Some(o) if o != s => changes.push(format!("changed service {}", name(k))),
                _ => {}
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(k)) {
            changes.push(format!("removed service {}", name(k)));
        }
        if self.timeouts != cfg.fullnat.timeouts {
            changes.push("changed timeouts".into());
        }
        // A real server in both that the file quiesces keeps its last non-zero weight.
        let mut last_weight = HashMap::new();
        for s in &cfg.services {
            let Some(o) = old.get(&key_of(s)) else {
                continue;
            };
            for r in s.reals.iter().filter(|r| r.weight == 0) {
                let k = (key_of(s), r.ip, r.port);
                let lw = match o.reals.iter().find(|x| x.ip == r.ip && x.port == r.port) {
                    Some(x) if x.weight > 0 => x.weight,
                    Some(_) => self.last_weight.get(&k).copied().unwrap_or(0),
                    None => 0,
                };
                if lw > 0 {
                    last_weight.insert(k, lw);
                }
            }
        }
        self.last_weight = last_weight;
        let mut keep: HashMap<_, _> = std::mem::take(&mut self.ids);
        for s in &cfg.services {
            for r in &s.reals {
                let k = (key_of(s), r.ip, r.port);
                if let Some(id) = keep.remove(&k) {
                    self.ids.insert(k, id);
                }
            }
        }
        // Those the file leaves out are removed: remembered, as by `-d`.
        self.retire(keep.into_iter().collect());
        for s in &cfg.services {
            for r in &s.reals {
                let k = (key_of(s), r.ip, r.port);
                if !self.ids.contains_key(&k) {
                    let id = self.id_for(k).unwrap_or(0);
                    self.ids.insert(k, id);
                    self.born(k);
                }
            }
        }
        let ids = &self.ids;
        self.epochs.retain(|k, _| ids.contains_key(k));
        self.services = cfg.services.clone();
        self.timeouts = cfg.fullnat.timeouts.clone();
        self.checks = FileChecks::of(cfg);
        if !changes.is_empty() {
            self.generation += 1;
        }
        changes
    }

    /// The service spec as listed.
    pub fn spec_of(s: &ServiceConfig) -> ServiceSpec {
        ServiceSpec {
            key: key_of(s),
            scheduler: s.scheduler.as_str().to_string(),
            persistent: s.persistent,
            netmask: s.netmask,
            sched_flags: s.sched_flags.clone(),
        }
    }
}

/// ipvsadm's generic scheduler flags in `-A`/`-E`: `flag-1`, `flag-2`, `flag-3` are IPVS's
/// `IP_VS_SVC_F_SCHED1..3`, which sh and mh name `*-fallback` and `*-port` (so `-s sh -b flag-1`
/// is `-b sh-fallback`); any scheduler takes them (the others ignore them, as IPVS's do). The
/// flags are kept by name in bit order, each once, as ipvsadm prints them. A netmask without
/// persistence (`-M` without `-p`, which ipvsadm takes: IPVS keeps a mask only persistence
/// uses, and the next `-E` resets it) is dropped.
fn ipvs_flags(op: &Op) -> std::borrow::Cow<'_, Op> {
    let spec = match op {
        Op::AddService { spec } | Op::EditService { spec } => spec,
        _ => return std::borrow::Cow::Borrowed(op),
    };
    let stray_mask = spec.netmask.is_some() && spec.persistent.is_none();
    if spec.sched_flags.is_empty() && !stray_mask {
        return std::borrow::Cow::Borrowed(op);
    }
    // An unknown scheduler (refused later) takes the generic names only, as rr does.
    let sched = Scheduler::from_name(&spec.scheduler).unwrap_or(Scheduler::Rr);
    let named = sched.flag_names();
    let mut bits = [false; 3];
    let mut other = Vec::new();
    for f in &spec.sched_flags {
        match sched.flag_bit(f) {
            Some(b) => bits[b] = true,
            // Left for the scheduler's check to refuse with its message.
            None => other.push(f.clone()),
        }
    }
    let mut flags: Vec<String> = (0..3)
        .filter(|&b| bits[b])
        .map(|b| {
            named
                .get(b)
                .map_or(format!("flag-{}", b + 1), |n| n.to_string())
        })
        .collect();
    flags.extend(other);
    let mut spec = spec.clone();
    spec.sched_flags = flags;
    if stray_mask {
        spec.netmask = None;
    }
    std::borrow::Cow::Owned(match op {
        Op::AddService { .. } => Op::AddService { spec },
        _ => Op::EditService { spec },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The two ports of the test configurations: client 192.0.2.1/24, servers 198.51.100.1/24.
    const PORTS: &str = r#"
[[port]]
name = "client"
device = "net_null0"
addresses = ["192.0.2.1/24"]
[[port]]
name = "servers"
device = "net_null1"
addresses = ["198.51.100.1/24"]
"#;

    fn model() -> Model {
        let text = format!(
            "{PORTS}{}",
            r#"[[service]]
proto = "tcp"
vip = "192.0.2.10"
vport = 80
scheduler = "wrr"
lips = ["198.51.100.2"]
  [[service.real]]
  ip = "198.51.100.11"
"#
        );
        let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
        Model::from_config(&cfg, 16)
    }

    fn key(vip: &str, port: u16) -> ServiceKey {
        ServiceKey {
            proto: Proto::Tcp,
            vip: vip.parse().unwrap(),
            vport: port,
            mark: None,
        }
    }

    fn real(addr: &str, fwd: Fwd, weight: u32) -> RealSpec {
        RealSpec {
            addr: addr.parse().unwrap(),
            fwd,
            weight,
            upper: 0,
            lower: 0,
        }
    }

    #[test]
    fn edits_validate_with_ipvsadm_wording_and_change_nothing_on_error() {
        let mut m = model();
        let spec = |vip: &str, s: &str| ServiceSpec {
            key: key(vip, 80),
            scheduler: s.into(),
            persistent: None,
            netmask: None,
            sched_flags: vec![],
        };
        assert_eq!(
            m.apply(&Op::AddService {
                spec: spec("192.0.2.10", "rr")
            })
            .unwrap_err()
            .1,
            "Service already exists"
        );
        let g = m.generation;
        let announce = m
            .apply(&Op::AddService {
                spec: spec("192.0.2.20", "rr"),
            })
            .unwrap();
        assert_eq!(
            announce,
            vec![(0, "192.0.2.20".parse().unwrap())],
            "the new VIP is announced on the client port"
        );
        assert_eq!(m.generation, g + 1);
        assert!(m
            .apply(&Op::AddService {
                spec: spec("192.0.2.21", "foo")
            })
            .unwrap_err()
            .1
            .starts_with("Scheduler or persistence engine not found"));
        let k = key("192.0.2.20", 80);
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.12:80", Fwd::Nat, 1),
        })
        .unwrap();
        assert_eq!(
            m.apply(&Op::AddReal {
                key: k,
                real: real("198.51.100.12:80", Fwd::Nat, 1)
            })
            .unwrap_err()
            .1,
            "Destination already exists"
        );
        let e = m
            .apply(&Op::AddReal {
                key: k,
                real: real("198.51.100.13:8080", Fwd::Dr, 1),
            })
            .unwrap_err();
        assert!(
            e.1.contains("port mapping is impossible with DR/TUN"),
            "{e:?}"
        );
        assert_eq!(
            m.apply(&Op::EditReal {
                key: k,
                real: real("198.51.100.99:80", Fwd::Nat, 3),
                keep_fwd: false,
            })
            .unwrap_err()
            .1,
            "No such destination"
        );
        // Also when the request would be refused otherwise (a DR port mapping).
        assert_eq!(
            m.apply(&Op::EditReal {
                key: k,
                real: real("198.51.100.99:8080", Fwd::Dr, 0),
                keep_fwd: true,
            })
            .unwrap_err()
            .1,
            "No such destination"
        );
        assert_eq!(
            m.apply(&Op::DelService {
                key: key("192.0.2.99", 80)
            })
            .unwrap_err()
            .1,
            "No such service"
        );
        assert_eq!(
            m.apply(&Op::AddReal {
                key: key("192.0.2.99", 80),
                real: real("198.51.100.12:80", Fwd::Nat, 1)
            })
            .unwrap_err()
            .1,
            "Service not defined"
        );
        let before = m.services.clone();
        assert!(m
            .apply(&Op::AddReal {
                key: k,
                real: real("198.51.100.14:80", Fwd::Nat, 70000)
            })
            .is_err());
        assert_eq!(m.services, before, "a failed operation changes nothing");
        m.apply(&Op::EditReal {
            key: k,
            real: real("198.51.100.12:80", Fwd::Nat, 3),
            keep_fwd: false,
        })
        .unwrap();
        assert_eq!(m.services[1].reals[0].weight, 3);
        // `-e -w 0` without a forwarding option drains the server and keeps its method (the
        // spec's DR is ipvsadm's default, ignored).
        m.apply(&Op::EditReal {
            key: k,
            real: real("198.51.100.12:80", Fwd::Dr, 0),
            keep_fwd: true,
        })
        .unwrap();
        let r = &m.services[1].reals[0];
        assert_eq!((r.weight, r.forward), (0, Forward::Nat));
        // An address of rvs is no real server: neither a new VIP nor a new LIP may be one.
        let before = m.services.clone();
        assert_eq!(
            m.apply(&Op::AddService {
                spec: spec("198.51.100.11", "rr")
            })
            .unwrap_err()
            .1,
            "Illegal address: 198.51.100.11 is a real server of service 192.0.2.10:80; an address of rvs (a VIP or a local address) cannot be a real server"
        );
        assert_eq!(
            m.apply(&Op::AddLaddr {
                key: k,
                lip: "198.51.100.12".parse().unwrap()
            })
            .unwrap_err()
            .1,
            "Illegal address: 198.51.100.12 is a real server of service 192.0.2.20:80; an address of rvs (a VIP or a local address) cannot be a real server"
        );
        assert_eq!(m.services, before);
    }

    /// A new real server gets an id no worker still uses (a removed real server's sessions
    /// would count as its own), unless every free id is still in use.
    #[test]
    fn new_real_servers_skip_ids_still_in_use() {
        let mut m = model();
        let k = key("192.0.2.10", 80);
        let id_of = |m: &Model, a: &str| {
            m.dest_ids()
                .find(|((_, ip, _), _)| *ip == a.parse::<IpAddr>().unwrap())
                .map(|(_, id)| id)
        };
        assert_eq!(id_of(&m, "198.51.100.11"), Some(0));
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0b110));
        let b = busy.clone();
        m.set_busy_ids(std::sync::Arc::new(move |id| {
            b.load(std::sync::atomic::Ordering::Relaxed) & (1 << id) != 0
        }));
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.12:80", Fwd::FullNat, 1),
        })
        .unwrap();
        assert_eq!(
            id_of(&m, "198.51.100.12"),
            Some(3),
            "ids 1 and 2 are in use"
        );
        // Every id but 4 taken or in use: 4; then only in-use ones are left: the next of them.
        busy.store(
            0xffff & !(1 << 4) & !0b1001,
            std::sync::atomic::Ordering::Relaxed,
        );
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.13:80", Fwd::FullNat, 1),
        })
        .unwrap();
        assert_eq!(id_of(&m, "198.51.100.13"), Some(4));
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.14:80", Fwd::FullNat, 1),
        })
        .unwrap();
        assert_eq!(
            id_of(&m, "198.51.100.14"),
            Some(5),
            "all in use: round the ring"
        );
    }

    /// `-C` then the `-A` lines `-S` saved: a match service comes back with its
    /// `[service.match]`, and every service with the ports and Maglev table size its file
    /// gave it (no ipvsadm option carries them).
    #[test]
    fn re_added_services_get_their_file_shape_back() {
        let text = PORTS.to_string()
            + r#"[[service]]
proto = "tcp"
vip = "203.0.113.10"
vport = 80
port = "servers"
scheduler = "mh"
mh_table_size = 251
lips = ["198.51.100.2"]
lip_port = "servers"
  [[service.real]]
  ip = "198.51.100.11"
[[service]]
mark = 7
scheduler = "rr"
port = "client"
lips = ["198.51.100.3"]
  [service.match]
  proto = "udp"
  dst = "192.0.2.64/30"
  dport = "5000-5010"
  [[service.real]]
  ip = "198.51.100.12"
"#;
        let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
        let mut m = Model::from_config(&cfg, 16);
        let before = m.services.clone();
        let specs: Vec<ServiceSpec> = m.services.iter().map(Model::spec_of).collect();
        m.apply(&Op::Clear).unwrap();
        for spec in &specs {
            m.apply(&Op::AddService { spec: spec.clone() }).unwrap();
        }
        for (now, was) in m.services.iter().zip(&before) {
            assert_eq!(now.mark, was.mark);
            assert_eq!((now.port, now.lip_port), (was.port, was.lip_port));
            assert_eq!(now.mh_table_size, was.mh_table_size);
            assert_eq!(
                (now.vip, now.vport, now.proto),
                (was.vip, was.vport, was.proto)
            );
            assert_eq!(now.scheduler, was.scheduler);
            assert!(now.reals.is_empty() && now.lips.is_empty());
        }
        assert_eq!(m.services[0].port, 1, "the file's port, not port 0");
        assert_eq!(m.services[1].mark.as_ref().unwrap().mark, 7);
        // A LIP that is a VIP, and a VIP that is a LIP, are refused as in the file.
        m.apply(&Op::AddLaddr {
            key: specs[0].key,
            lip: "198.51.100.2".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(m.services[0].lip_port, 1);
        let e = m
            .apply(&Op::AddLaddr {
                key: specs[0].key,
                lip: "203.0.113.10".parse().unwrap(),
            })
            .unwrap_err();
        assert!(e.1.contains("must differ"), "{}", e.1);
        let mut lip_vip = specs[0].clone();
        lip_vip.key.vip = "198.51.100.2".parse().unwrap();
        let e = m.apply(&Op::AddService { spec: lip_vip }).unwrap_err();
        assert!(e.1.contains("must differ"), "{}", e.1);
        // A mark the file never defined is still refused.
        let mut other = specs[1].clone();
        other.key = ServiceKey::of_mark(8);
        let e = m.apply(&Op::AddService { spec: other }).unwrap_err();
        assert!(e.1.contains("mark 8 has no match"), "{}", e.1);
        // The file's service is checked against what changed since the file was loaded: once
        // its VIP became another service's local address, it cannot come back.
        m.apply(&Op::DelService { key: specs[0].key }).unwrap();
        m.apply(&Op::AddLaddr {
            key: specs[1].key,
            lip: "203.0.113.10".parse().unwrap(),
        })
        .unwrap();
        let e = m
            .apply(&Op::AddService {
                spec: specs[0].clone(),
            })
            .unwrap_err();
        assert!(e.1.contains("must differ"), "{}", e.1);
    }

    /// A port-0 real server (it keeps the client's port) added by rvsadm under a service check
    /// without a port is refused, as the file refuses it (it would be probed on port 0 and
    /// quiesced); an ICMP check has no port to need.
    #[test]
    fn a_port_zero_real_needs_a_check_port() {
        for (kind, ok) in [("tcp", false), ("icmp", true)] {
            let text = PORTS.to_string()
                + &format!(
                    r#"[[service]]
proto = "tcp"
vip = "192.0.2.10"
vport = 0
persistent = 300
scheduler = "wrr"
lips = ["198.51.100.2"]
  [service.check]
  type = "{kind}"
  [[service.real]]
  ip = "198.51.100.11"
  port = 80
  [service.real.check]
  type = "tcp"
"#
                );
            let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
            let mut m = Model::from_config(&cfg, 16);
            let r = m.apply(&Op::AddReal {
                key: key("192.0.2.10", 0),
                real: real("198.51.100.12:0", Fwd::FullNat, 1),
            });
            match r {
                Ok(_) => assert!(ok, "{kind}: a port-0 real server was taken"),
                Err(e) => {
                    assert!(!ok, "{kind}: {e:?}");
                    assert!(e.1.contains("health check has no port"), "{e:?}");
                }
            }
        }
    }

    /// A service or real server rvsadm deletes and adds again (or `-C` then `-R`) gets the
    /// health check the file gives it back; a reload takes the file's checks anew.
    #[test]
    fn file_checks_come_back_with_a_re_added_service_or_real() {
        let text = PORTS.to_string()
            + r#"[[service]]
proto = "tcp"
vip = "192.0.2.10"
vport = 80
scheduler = "wrr"
lips = ["198.51.100.2"]
  [service.check]
  type = "tcp"
  [[service.real]]
  ip = "198.51.100.11"
  [[service.real]]
  ip = "198.51.100.12"
    [service.real.check]
    type = "http"
"#;
        let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
        let mut m = Model::from_config(&cfg, 16);
        let svc_check = cfg.services[0].check.clone();
        let real_check = cfg.services[0].reals[1].check.clone();
        assert!(svc_check.is_some() && real_check.is_some());
        let k = key("192.0.2.10", 80);
        let spec = Model::spec_of(&m.services[0]);
        // -d / -a of the real server with its own check.
        m.apply(&Op::DelReal {
            key: k,
            addr: "198.51.100.12:80".parse().unwrap(),
        })
        .unwrap();
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.12:80", Fwd::FullNat, 1),
        })
        .unwrap();
        assert_eq!(m.services[0].reals[1].check, real_check);
        // -C, then what -S saved: the service check and the real server's check are back.
        for op in [
            Op::Clear,
            Op::AddService { spec: spec.clone() },
            Op::AddLaddr {
                key: k,
                lip: "198.51.100.2".parse().unwrap(),
            },
            Op::AddReal {
                key: k,
                real: real("198.51.100.11:80", Fwd::FullNat, 1),
            },
            Op::AddReal {
                key: k,
                real: real("198.51.100.12:80", Fwd::FullNat, 1),
            },
        ] {
            m.apply(&op).unwrap();
        }
        assert_eq!(m.services[0].check, svc_check);
        assert_eq!(m.services[0].reals[0].check, None, "the service's applies");
        assert_eq!(m.services[0].reals[1].check, real_check);
        // A real server the file never had gets none of its own; another service none.
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.13:80", Fwd::FullNat, 1),
        })
        .unwrap();
        assert_eq!(m.services[0].reals[2].check, None);
        let mut other = spec.clone();
        other.key = key("192.0.2.11", 80);
        m.apply(&Op::AddService { spec: other }).unwrap();
        assert_eq!(m.services[1].check, None);
        // A reload without checks: re-adding no longer brings them.
        let plain = Config::parse(
            &text
                .replace("  [service.check]\n  type = \"tcp\"\n", "")
                .replace("    [service.real.check]\n    type = \"http\"\n", ""),
            Path::new("t.toml"),
        )
        .unwrap();
        m.replace(&plain);
        m.apply(&Op::DelService { key: k }).unwrap();
        m.apply(&Op::AddService { spec }).unwrap();
        assert_eq!(m.services.last().unwrap().check, None);
    }

    /// As in the configuration file, a real server added by `rvsadm -a`/`-e` is another host:
    /// not a port address, VIP or local address of rvs.
    #[test]
    fn a_real_server_is_not_rvs_itself() {
        let mut m = model();
        let k = key("192.0.2.10", 80);
        for a in [
            "192.0.2.10:80",
            "198.51.100.2:80",
            "198.51.100.1:80",
            "192.0.2.1:80",
        ] {
            let e = m
                .apply(&Op::AddReal {
                    key: k,
                    real: real(a, Fwd::FullNat, 1),
                })
                .unwrap_err();
            assert_eq!(e.0, code::EINVAL, "{a}");
            assert!(e.1.contains("address of rvs itself"), "{a}: {}", e.1);
        }
        assert_eq!(m.services[0].reals.len(), 1, "nothing added");
        // Nor a host rvs has no way to: no connected subnet, no route covers it.
        let e = m
            .apply(&Op::AddReal {
                key: k,
                real: real("203.0.113.5:80", Fwd::FullNat, 1),
            })
            .unwrap_err();
        assert!(e.1.contains("not reachable"), "{}", e.1);
        assert_eq!(m.services[0].reals.len(), 1, "nothing added");
    }

    /// `--set` takes what the configuration file takes (at most 2^31 ms), nothing changes else.
    #[test]
    fn set_timeouts_bounded_as_the_file() {
        let mut m = model();
        let t = TimeoutsView {
            tcp: config::MAX_TIMEOUT_S + 1,
            tcpfin: 0,
            udp: 0,
        };
        let before = m.timeouts.clone();
        let e = m.apply(&Op::SetTimeouts { timeouts: t }).unwrap_err();
        assert!(e.1.contains("Illegal timeout"), "{}", e.1);
        assert_eq!(m.timeouts, before);
        let t = TimeoutsView {
            tcp: config::MAX_TIMEOUT_S,
            tcpfin: 0,
            udp: 0,
        };
        m.apply(&Op::SetTimeouts { timeouts: t }).unwrap();
        assert_eq!(m.timeouts.tcp, config::MAX_TIMEOUT_S);
    }

    #[test]
    fn dest_ids_are_stable_across_edits_and_reloads() {
        let mut m = model();
        let k = key("192.0.2.10", 80);
        let id0 = m.dest_id(&m.services[0].clone(), &m.services[0].reals[0].clone());
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.12:80", Fwd::FullNat, 1),
        })
        .unwrap();
        let s = m.services[0].clone();
        let id1 = m.dest_id(&s, &s.reals[1]);
        assert_ne!(id0, id1);
        m.apply(&Op::DelReal {
            key: k,
            addr: "198.51.100.11:80".parse().unwrap(),
        })
        .unwrap();
        let s = m.services[0].clone();
        assert_eq!(
            m.dest_id(&s, &s.reals[0]),
            id1,
            "the remaining real keeps its id"
        );
        // A removed real server's id (its counters, its sessions' load) comes back only after
        // every other id was handed out since: 16 ids in this model.
        let mut seen = vec![id0, id1];
        for i in 0..14 {
            let a = format!("198.51.100.{}:80", 20 + i);
            m.apply(&Op::AddReal {
                key: k,
                real: real(&a, Fwd::FullNat, 1),
            })
            .unwrap();
            let s = m.services[0].clone();
            let id = m.dest_id(&s, s.reals.last().unwrap());
            assert!(!seen.contains(&id), "id {id} handed out again too early");
            seen.push(id);
        }
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.99:80", Fwd::FullNat, 1),
        })
        .unwrap();
        let s = m.services[0].clone();
        assert_eq!(
            m.dest_id(&s, s.reals.last().unwrap()),
            id0,
            "then the oldest free one"
        );
    }

    /// A real server removed and added again gets its dest id back, as IPVS takes a dest back
    /// from its trash (its sessions, persistence templates and counters with it), by `-d`/`-a`,
    /// by a service deleted and added again, or by reloads; not once another real server has
    /// had the id since.
    #[test]
    fn a_real_server_added_again_gets_its_id_back() {
        let mut m = model();
        let k = key("192.0.2.10", 80);
        let id = |m: &Model, a: &str| {
            let s = &m.services[0];
            let r = s.reals.iter().find(|r| r.ip.to_string() == a).unwrap();
            m.dest_id(s, r)
        };
        let add = |m: &mut Model, a: &str| {
            m.apply(&Op::AddReal {
                key: k,
                real: real(&format!("{a}:80"), Fwd::FullNat, 1),
            })
            .unwrap();
        };
        let del = |m: &mut Model, a: &str| {
            m.apply(&Op::DelReal {
                key: k,
                addr: format!("{a}:80").parse().unwrap(),
            })
            .unwrap();
        };
        let epoch = |m: &Model, a: &str| {
            let s = &m.services[0];
            let r = s.reals.iter().find(|r| r.ip.to_string() == a).unwrap();
            m.epoch(s, r)
        };
        add(&mut m, "198.51.100.12");
        let (twelve, first) = (id(&m, "198.51.100.12"), epoch(&m, "198.51.100.12"));
        del(&mut m, "198.51.100.12");
        add(&mut m, "198.51.100.13");
        add(&mut m, "198.51.100.12");
        assert_eq!(id(&m, "198.51.100.12"), twelve, "-d then -a");
        // Another instance all the same: its health check starts afresh.
        assert_ne!(epoch(&m, "198.51.100.12"), first);
        // By a reload that leaves it out, then one that has it again.
        let file = |reals: &[&str]| {
            let mut t = format!(
                "{PORTS}[[service]]\nproto = \"tcp\"\nvip = \"192.0.2.10\"\nvport = 80\nscheduler = \"wrr\"\nlips = [\"198.51.100.2\"]\n"
            );
            for r in reals {
                t.push_str(&format!("  [[service.real]]\n  ip = \"{r}\"\n"));
            }
            Config::parse(&t, Path::new("t.toml")).unwrap()
        };
        let thirteen = id(&m, "198.51.100.13");
        m.replace(&file(&["198.51.100.11", "198.51.100.12"]));
        m.replace(&file(&["198.51.100.11", "198.51.100.12", "198.51.100.13"]));
        assert_eq!(id(&m, "198.51.100.13"), thirteen, "reloads");
        // Its id handed to another real server meanwhile: a fresh one.
        del(&mut m, "198.51.100.13");
        for i in 20..34 {
            add(&mut m, &format!("198.51.100.{i}"));
        }
        let holder = m.services[0]
            .reals
            .iter()
            .find(|r| m.dest_id(&m.services[0], r) == thirteen)
            .map(|r| r.ip);
        assert!(holder.is_some(), "16 ids: taken again");
        let h = holder.unwrap().to_string();
        del(&mut m, &h);
        del(&mut m, "198.51.100.11");
        // The id is the holder's to get back now, not .13's any more.
        add(&mut m, &h);
        assert_eq!(id(&m, &h), thirteen);
        add(&mut m, "198.51.100.13");
        assert_ne!(id(&m, "198.51.100.13"), thirteen);
    }

    /// A real server quiesced with weight 0 keeps its last non-zero weight (IPVS `last_weight`,
    /// from which mh builds its table) across edits and reloads that keep it at 0; a weight
    /// above 0, or removing it, forgets it; one added at 0 has none.
    #[test]
    fn quiesced_real_servers_keep_their_last_weight() {
        let mut m = model();
        let k = key("192.0.2.10", 80);
        let lw = |m: &Model| {
            let s = &m.services[0];
            m.last_weight(s, &s.reals[0])
        };
        let edit = |m: &mut Model, w: u32| {
            m.apply(&Op::EditReal {
                key: k,
                real: real("198.51.100.11:80", Fwd::FullNat, w),
                keep_fwd: true,
            })
            .unwrap();
        };
        edit(&mut m, 5);
        assert_eq!(lw(&m), 0, "not quiesced");
        edit(&mut m, 0);
        assert_eq!(lw(&m), 5);
        edit(&mut m, 0);
        assert_eq!(lw(&m), 5, "still the last non-zero one");
        // A failed change keeps it.
        assert!(m
            .apply(&Op::EditReal {
                key: k,
                real: real("198.51.100.11:80", Fwd::FullNat, 70_000),
                keep_fwd: true,
            })
            .is_err());
        assert_eq!(lw(&m), 5);
        // A reload that keeps it at 0 keeps it; one that gives it a weight forgets it.
        let file = |w: u32| {
            let text = format!(
                "{PORTS}[[service]]\nproto = \"tcp\"\nvip = \"192.0.2.10\"\nvport = 80\nscheduler = \"mh\"\nlips = [\"198.51.100.2\"]\n  [[service.real]]\n  ip = \"198.51.100.11\"\n  weight = {w}\n"
            );
            Config::parse(&text, Path::new("t.toml")).unwrap()
        };
        m.replace(&file(0));
        assert_eq!(lw(&m), 5);
        m.replace(&file(3));
        assert_eq!(lw(&m), 0);
        m.replace(&file(0));
        assert_eq!(lw(&m), 3, "quiesced by the file");
        // Removed and added again at 0: none.
        m.apply(&Op::DelReal {
            key: k,
            addr: "198.51.100.11:80".parse().unwrap(),
        })
        .unwrap();
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.11:80", Fwd::FullNat, 0),
        })
        .unwrap();
        assert_eq!(lw(&m), 0);
        // A file's first load has none either.
        assert_eq!(lw(&Model::from_config(&file(0), 16)), 0);
    }

    /// `-p`/`-M` are kept and listed (and so saved by `-S`); port 0 needs `-p`; NAT real
    /// servers and persistence exclude each other.
    #[test]
    fn persistence_and_port_zero() {
        let mut m = model();
        let spec = |port: u16, p: Option<u32>, mask: Option<u8>| ServiceSpec {
            key: key("192.0.2.20", port),
            scheduler: "rr".into(),
            persistent: p,
            netmask: mask,
            sched_flags: vec![],
        };
        m.apply(&Op::AddService {
            spec: spec(443, Some(300), Some(24)),
        })
        .unwrap();
        let i = m.find(&key("192.0.2.20", 443)).unwrap();
        assert_eq!(
            (m.services[i].persistent, m.services[i].netmask),
            (Some(300), Some(24))
        );
        let listed = Model::spec_of(&m.services[i]);
        assert_eq!((listed.persistent, listed.netmask), (Some(300), Some(24)));
        // Edit: another timeout, no mask; then not persistent any more.
        m.apply(&Op::EditService {
            spec: spec(443, Some(60), None),
        })
        .unwrap();
        assert_eq!(
            (m.services[i].persistent, m.services[i].netmask),
            (Some(60), None)
        );
        // A raw request with a netmask no parser lets through is refused, not widened to /32.
        for bad in [33, 99] {
            let e = m
                .apply(&Op::EditService {
                    spec: spec(443, Some(60), Some(bad)),
                })
                .unwrap_err();
            assert!(e.1.contains("Illegal persistent netmask"), "{e:?}");
        }
        m.apply(&Op::EditService {
            spec: spec(443, None, None),
        })
        .unwrap();
        assert_eq!(m.services[i].persistent, None);
        // -M without -p: taken and dropped, as ipvsadm and IPVS do (only persistence uses it).
        m.apply(&Op::EditService {
            spec: spec(443, None, Some(24)),
        })
        .unwrap();
        assert_eq!(
            (m.services[i].persistent, m.services[i].netmask),
            (None, None)
        );
        let e = m
            .apply(&Op::AddService {
                spec: spec(0, None, None),
            })
            .unwrap_err();
        assert_eq!(
            e,
            (
                code::EINVAL,
                "Zero port specified for non-persistent service".into()
            )
        );
        m.apply(&Op::AddService {
            spec: spec(0, Some(300), None),
        })
        .unwrap();
        // A port-0 service's real server may keep the client's port (0).
        m.apply(&Op::AddReal {
            key: key("192.0.2.20", 0),
            real: real("198.51.100.12:0", Fwd::Dr, 1),
        })
        .unwrap();
        let e = m
            .apply(&Op::AddReal {
                key: key("192.0.2.20", 0),
                real: real("198.51.100.13:0", Fwd::Nat, 1),
            })
            .unwrap_err();
        assert_eq!(e.0, code::EINVAL);
        // Making a service with a NAT real persistent is refused, changing nothing.
        m.apply(&Op::AddReal {
            key: key("192.0.2.20", 443),
            real: real("198.51.100.13:443", Fwd::Nat, 1),
        })
        .unwrap();
        let e = m
            .apply(&Op::EditService {
                spec: spec(443, Some(300), None),
            })
            .unwrap_err();
        assert_eq!(e.0, code::EINVAL);
        assert_eq!(m.services[i].persistent, None);
    }

    /// Every LVS scheduler is accepted; flags are kept when the scheduler takes them and refused
    /// otherwise; thresholds are kept and listed.
    #[test]
    fn schedulers_flags_and_thresholds() {
        let mut m = model();
        let spec = |s: &str, flags: &[&str]| ServiceSpec {
            key: key("192.0.2.10", 80),
            scheduler: s.into(),
            persistent: None,
            netmask: None,
            sched_flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        for &sched in Scheduler::ALL {
            m.apply(&Op::EditService {
                spec: spec(sched.as_str(), &[]),
            })
            .unwrap();
            assert_eq!(m.services[0].scheduler, sched);
        }
        m.apply(&Op::EditService {
            spec: spec("sh", &["sh-fallback", "sh-port"]),
        })
        .unwrap();
        assert_eq!(m.services[0].sched_flags, vec!["sh-fallback", "sh-port"]);
        assert_eq!(
            Model::spec_of(&m.services[0]).sched_flags,
            vec!["sh-fallback", "sh-port"]
        );
        let e = m
            .apply(&Op::EditService {
                spec: spec("wrr", &["sh-port"]),
            })
            .unwrap_err();
        assert_eq!(e.0, code::EINVAL);
        assert!(e.1.contains("takes no flags"), "{e:?}");
        let e = m
            .apply(&Op::EditService {
                spec: spec("mh", &["sh-port"]),
            })
            .unwrap_err();
        assert!(e.1.contains("mh-fallback, mh-port"), "{e:?}");
        // Unchanged by the refused edits.
        assert_eq!(m.services[0].scheduler, Scheduler::Sh);
        // ipvsadm's generic flags: sh and mh name flag-1 and flag-2; any scheduler takes them;
        // kept in bit order, each once.
        for (sched, given, kept) in [
            (
                "sh",
                &["flag-2", "flag-1"][..],
                &["sh-fallback", "sh-port"][..],
            ),
            (
                "sh",
                &["sh-port", "flag-2", "flag-3"][..],
                &["sh-port", "flag-3"][..],
            ),
            ("mh", &["flag-1"][..], &["mh-fallback"][..]),
            ("rr", &["flag-3", "flag-1"][..], &["flag-1", "flag-3"][..]),
            // Named flags too (ipvsadm lists them in bit order, a repeated one once).
            (
                "mh",
                &["mh-port", "mh-fallback", "mh-port"][..],
                &["mh-fallback", "mh-port"][..],
            ),
        ] {
            m.apply(&Op::EditService {
                spec: spec(sched, given),
            })
            .unwrap();
            assert_eq!(m.services[0].sched_flags, kept, "{sched} {given:?}");
        }
        assert!(m
            .apply(&Op::EditService {
                spec: spec("rr", &["flag-4"]),
            })
            .is_err());
        m.apply(&Op::EditService {
            spec: spec("sh", &[]),
        })
        .unwrap();
        m.apply(&Op::AddService {
            spec: ServiceSpec {
                key: key("192.0.2.20", 80),
                ..spec("mh", &["mh-port"])
            },
        })
        .unwrap();
        let s = m.find(&key("192.0.2.20", 80)).unwrap();
        assert_eq!(m.services[s].sched_flags, vec!["mh-port"]);
        assert_eq!(m.services[s].mh_table_size, 4093);

        let k = key("192.0.2.10", 80);
        let mut r = real("198.51.100.12:80", Fwd::FullNat, 2);
        r.upper = 100;
        r.lower = 10;
        m.apply(&Op::AddReal {
            key: k,
            real: r.clone(),
        })
        .unwrap();
        let got = m.services[0].reals.last().unwrap();
        assert_eq!((got.upper, got.lower), (100, 10));
        r.upper = 50;
        r.lower = 0;
        m.apply(&Op::EditReal {
            key: k,
            real: r.clone(),
            keep_fwd: false,
        })
        .unwrap();
        let got = m.services[0].reals.last().unwrap();
        assert_eq!((got.upper, got.lower), (50, 0));
        r.lower = 60;
        let e = m
            .apply(&Op::EditReal {
                key: k,
                real: r.clone(),
                keep_fwd: false,
            })
            .unwrap_err();
        assert!(e.1.starts_with("Illegal threshold"), "{e:?}");
        // Beyond ipvsadm's range (a raw request): refused too.
        r.lower = 0;
        r.upper = 4_000_000_000;
        let e = m
            .apply(&Op::EditReal {
                key: k,
                real: r,
                keep_fwd: false,
            })
            .unwrap_err();
        assert!(e.1.starts_with("Illegal threshold"), "{e:?}");
    }

    #[test]
    fn match_services_are_edited_by_mark() {
        let cfg = Config::parse(
            r#"
[[port]]
name = "client"
device = "net_null0"
addresses = ["192.0.2.1/24"]
[[port]]
name = "servers"
device = "net_null1"
addresses = ["198.51.100.1/24"]
[[service]]
mark = 7
scheduler = "rr"
port = "client"
  [service.match]
  proto = "tcp"
  dst = "203.0.113.0/28"
  dport = "8000-8100"
  [[service.real]]
  ip = "198.51.100.11"
  forward = "nat"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let mut m = Model::from_config(&cfg, 16);
        let k = ServiceKey::of_mark(7);
        assert_eq!(key_of(&m.services[0]), k);
        assert_eq!(Model::spec_of(&m.services[0]).key.mark, Some(7));
        let spec = |mark: u32| ServiceSpec {
            key: ServiceKey::of_mark(mark),
            scheduler: "rr".into(),
            persistent: None,
            netmask: None,
            sched_flags: vec![],
        };
        assert_eq!(
            m.apply(&Op::AddService { spec: spec(7) }).unwrap_err().1,
            "Service already exists"
        );
        assert_eq!(
            m.apply(&Op::AddService { spec: spec(8) }).unwrap_err().1,
            "mark 8 has no match in the configuration (match services are defined in the TOML file)"
        );
        // Edit the service (no zero-port refusal for a match service) and its reals by mark.
        let mut wrr = spec(7);
        wrr.scheduler = "wrr".into();
        m.apply(&Op::EditService { spec: wrr }).unwrap();
        assert_eq!(m.services[0].scheduler.as_str(), "wrr");
        m.apply(&Op::AddReal {
            key: k,
            real: real("198.51.100.12:0", Fwd::Nat, 3),
        })
        .unwrap();
        m.apply(&Op::EditReal {
            key: k,
            real: real("198.51.100.11:0", Fwd::Nat, 5),
            keep_fwd: false,
        })
        .unwrap();
        let s = &m.services[0];
        assert_eq!(s.reals.len(), 2);
        assert_eq!((s.reals[0].weight, s.reals[1].weight), (5, 3));
        assert_ne!(m.dest_id(s, &s.reals[0]), m.dest_id(s, &s.reals[1]));
        assert!(s.mark.is_some(), "still a match service");
        m.apply(&Op::DelReal {
            key: k,
            addr: "198.51.100.11:0".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(m.services[0].reals.len(), 1);
        // An address key does not reach the match service.
        let by_addr = key("203.0.113.0", 0);
        assert_eq!(
            m.apply(&Op::DelService { key: by_addr }).unwrap_err().1,
            "No such service"
        );
        m.apply(&Op::DelService { key: k }).unwrap();
        assert!(m.services.is_empty());
    }
}
