//! Per-worker schedulers (IPVS semantics): pick the real server for a new session.
//!
//! Every IPVS scheduler is here, each following its `ip_vs_*.c` step for step: `rr`, `wrr`, `lc`,
//! `wlc`, `sed`, `nq`, `sh`, `dh`, `lblc`, `lblcr`, `fo`, `ovf`, `mh` and `twos`. Each worker
//! runs its own scheduler state (no sharing between cores), so with `n` workers the global
//! sequence is the interleaving of `n` IPVS sequences. Weight 0 quiesces a dest: it gets no new
//! sessions while its existing ones continue. All tables (sh/dh buckets, the Maglev lookup table,
//! the lblc/lblcr locality caches) are sized when the service set is built; [`Scheduler::pick`]
//! never allocates, locks or logs.
//!
//! # Per-core connection counts
//!
//! The connection-count schedulers (`lc`, `wlc`, `sed`, `nq`, `lblc`, `lblcr`, `ovf`, `twos`)
//! and the connection thresholds (`upper`/`lower`, IPVS's `IP_VS_DEST_F_OVERLOAD`) read the
//! **worker's own** [`DestStats`] `active`/`inactive` gauges, not the global counts ipvsadm
//! shows. With RSS spreading flows evenly, a worker's count is about `global / n`, so:
//!
//! - least-connection decisions are taken on a sample of the load, which is what the worker can
//!   act on anyway (it only places its own new sessions);
//! - a threshold is enforced **per worker**: with `n` workers a dest may hold up to about
//!   `n * upper` sessions in total, and a worker whose share is skewed (one hot client, uneven
//!   RSS) overloads its view of a dest before the others do.
//!
//! Set thresholds to `global_limit / n` for a global effect. Merging the counts periodically (each
//! worker reading the others' gauges every few ms) would make these global; that is future work.
//!
//! # Overload flag
//!
//! IPVS sets `IP_VS_DEST_F_OVERLOAD` when a connection is bound and the dest's total
//! (active + inactive) reaches `u_threshold`, and clears it when a connection is unbound and the
//! total is below `l_threshold` (below 3/4 of `u_threshold` when `l_threshold` is 0). Here the
//! flag is per worker and evaluated lazily: when a scheduler looks at a dest, and right after a
//! pick (anticipating the bind of the new session). Counts only grow through picks, so this gives
//! the same flag as IPVS's bind/unbind hooks.
//!
//! # Hashing schedulers across workers
//!
//! `sh`, `dh` and `mh` are pure functions of the key and the dest list (same tables on every
//! worker, built from the same configuration), so a client maps to the same real server whichever
//! core receives it. `lblc`/`lblcr` keep per-worker locality caches, which converge separately on
//! each worker.

use crate::config::Sched;
use crate::counters::Counter;
use std::net::IpAddr;

/// A real server as the scheduler and the packet path see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dest {
    /// Control-plane id (indexes [`DestStats`]).
    pub id: u32,
    /// Real server address.
    pub rip: IpAddr,
    /// Real server port.
    pub rport: u16,
    /// Weight (0 = quiesced).
    pub weight: u32,
    /// Forwarding method.
    pub fwd: crate::config::Fwd,
    /// Upper connection threshold (0 = none), this worker's count.
    pub upper: u32,
    /// Lower connection threshold (0 = 3/4 of `upper`).
    pub lower: u32,
    /// Down by its health check ([`crate::DestConf::down`]).
    pub down: bool,
    /// Last non-zero weight while `weight` is 0 ([`crate::DestConf::last_weight`]).
    pub last_weight: u32,
}

/// Per-core counters of one dest (single writer: the worker). `active` and `inactive` are gauges
/// (TCP sessions in the handshake or ESTABLISHED / in any other state, UDP counting as inactive
/// as ipvsadm shows it; see [`crate::TcpState::is_active`]); the others are totals.
///
/// One cache line each (eight counters, 64-byte aligned): the worker writes a dest's line on
/// every packet, and no other object (another dest's, another thread's) may share it.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct DestStats {
    /// TCP sessions in SYN_RECV, SYN_SENT, SYNACK or ESTABLISHED.
    pub active: Counter,
    /// Sessions in any other state (UDP sessions included).
    pub inactive: Counter,
    /// Sessions created.
    pub conns: Counter,
    /// Packets client → real server.
    pub inpkts: Counter,
    /// Packets real server → client.
    pub outpkts: Counter,
    /// IP bytes client → real server (as received).
    pub inbytes: Counter,
    /// IP bytes real server → client (as received).
    pub outbytes: Counter,
    /// Persistence templates pointing at the dest (gauge, ipvsadm's `PersistConn`).
    pub persist: Counter,
}

/// IPVS's `ip_vs_wrr_mark`. `cl == dests.len()` stands for the list head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrrMark {
    cl: usize,
    cw: i64,
    mw: i64,
    di: i64,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl WrrMark {
    /// Fresh state for `dests` (IPVS `ip_vs_wrr_init_svc`): gcd of the positive weights (1 when
    /// none), `mw = max - (gcd - 1)`, current weight `mw`, position at the list head.
    pub fn new(dests: &[Dest]) -> Self {
        let g = dests
            .iter()
            .filter(|d| d.weight > 0)
            .fold(0u32, |g, d| gcd(d.weight, g));
        let di = if g == 0 { 1 } else { g as i64 };
        let max = dests.iter().map(|d| d.weight).max().unwrap_or(0) as i64;
        let mw = if max == 0 { 0 } else { max - (di - 1) };
        WrrMark {
            cl: dests.len(),
            cw: mw,
            mw,
            di,
        }
    }

    /// IPVS `ip_vs_wrr_schedule`, step for step.
    fn pick(&mut self, dests: &[Dest], mut ok: impl FnMut(usize) -> bool) -> Option<usize> {
        let n = dests.len();
        if self.mw == 0 || n == 0 {
            return None;
        }
        let head = n;
        let last = self.cl.min(head);
        let mut dest = last;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        loop {
            // list_for_each_entry_continue: the entries after `dest` up to the head.
            let mut i = if dest == head { 0 } else { dest + 1 };
            while i < n {
                if dests[i].weight as i64 >= self.cw && ok(i) {
                    self.cl = i;
                    return Some(i);
                }
                if stop == Some(i) {
                    return None;
                }
                i += 1;
            }
            dest = head;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last == head {
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last != head {
                stop = Some(last);
            }
        }
    }
}

/// What a scheduler may look at for a new session: the client (source) and the destination
/// address of the first packet, and the time (lblc/lblcr cache expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedKey {
    /// Source address (client).
    pub saddr: IpAddr,
    /// Source port (client), used by `sh-port` / `mh-port`.
    pub sport: u16,
    /// Destination address (the VIP): `dh`, `lblc`, `lblcr`.
    pub daddr: IpAddr,
    /// Now, in milliseconds.
    pub now_ms: u64,
}

impl SchedKey {
    /// A key from the first packet of a flow.
    pub const fn new(saddr: IpAddr, sport: u16, daddr: IpAddr, now_ms: u64) -> Self {
        SchedKey {
            saddr,
            sport,
            daddr,
            now_ms,
        }
    }
}

/// (active, inactive) of dest `id` on this worker (0, 0 when `id` has no counters).
#[inline]
fn counts(stats: &[DestStats], id: u32) -> (u64, u64) {
    match stats.get(id as usize) {
        Some(s) => (s.active.get(), s.inactive.get()),
        None => (0, 0),
    }
}

/// IPVS `ip_vs_dest_conn_overhead`: `(active << 8) + inactive`.
#[inline]
fn conn_overhead(stats: &[DestStats], id: u32) -> u64 {
    let (a, i) = counts(stats, id);
    (a << 8).wrapping_add(i)
}

/// `active + 1`: IPVS `ip_vs_sed_dest_overhead` / `ip_vs_nq_dest_overhead`.
#[inline]
fn sed_overhead(stats: &[DestStats], id: u32) -> u64 {
    counts(stats, id).0 + 1
}

/// `h1 / w1 > h2 / w2` by cross-multiplication (IPVS compares `(__s64)h1 * w2 > (__s64)h2 * w1`;
/// u128 here so no count can overflow).
#[inline]
fn heavier(h1: u64, w1: u32, h2: u64, w2: u32) -> bool {
    (h1 as u128) * (w2 as u128) > (h2 as u128) * (w1 as u128)
}

/// Per-worker `IP_VS_DEST_F_OVERLOAD` flags, indexed like the service's dests.
#[derive(Clone, Debug, Default)]
struct Overload(Vec<bool>);

impl Overload {
    /// The flag of dest `i`, updated from this worker's counts: set when the total reaches
    /// `upper`, cleared when it drops below `lower` (3/4 of `upper` when `lower` is 0).
    #[inline]
    fn check(&mut self, i: usize, d: &Dest, stats: &[DestStats]) -> bool {
        let Some(f) = self.0.get_mut(i) else {
            return false;
        };
        if d.upper == 0 {
            *f = false;
            return false;
        }
        let (a, ia) = counts(stats, d.id);
        let total = a + ia;
        if *f {
            let recovered = if d.lower != 0 {
                total < d.lower as u64
            } else {
                total * 4 < d.upper as u64 * 3
            };
            if recovered {
                *f = false;
            }
        } else if total >= d.upper as u64 {
            *f = true;
        }
        *f
    }

    /// IPVS `ip_vs_bind_dest` for the session about to be created on dest `i`: overloaded when
    /// the total with it reaches `upper`.
    #[inline]
    fn bind(&mut self, i: usize, d: &Dest, stats: &[DestStats]) {
        if d.upper == 0 {
            return;
        }
        let (a, ia) = counts(stats, d.id);
        if a + ia + 1 >= d.upper as u64 {
            if let Some(f) = self.0.get_mut(i) {
                *f = true;
            }
        }
    }

    /// IPVS `is_unavailable` (sh, mh): weight 0 or overloaded.
    #[inline]
    fn unavailable(&mut self, i: usize, d: &Dest, stats: &[DestStats]) -> bool {
        d.weight == 0 || self.check(i, d, stats)
    }
}

/// Scheduler state of one service on one worker.
#[derive(Clone, Debug)]
pub struct Scheduler {
    /// The scheduler (and its flags) this state is for.
    kind: Sched,
    algo: Algo,
    over: Overload,
    /// Where this worker's scans start (see [`Scheduler::offset`]); 0 = the list head, IPVS.
    start: usize,
}

#[derive(Clone, Debug)]
enum Algo {
    /// `next` is where the next search starts.
    Rr {
        next: usize,
    },
    Wrr(WrrMark),
    Lc,
    Wlc,
    Sed,
    Nq,
    Fo,
    Ovf,
    Twos {
        rng: u64,
    },
    Sh {
        table: Box<[u32; HASH_BUCKETS]>,
        fallback: bool,
        port: bool,
    },
    Dh {
        table: Box<[u32; HASH_BUCKETS]>,
    },
    Lblc(LocTable),
    Lblcr(LocTable),
    Mh(Maglev),
}

/// Buckets of the sh and dh tables (IPVS `IP_VS_SH_TAB_SIZE`, `IP_VS_DH_TAB_SIZE`).
pub const HASH_BUCKETS: usize = 256;
/// Empty table slot.
const NONE: u32 = u32::MAX;

/// A Maglev lookup table built ahead (on the control thread, once for every worker): the dest
/// index of each slot, `u32::MAX` = empty.
pub type MhLookup = std::sync::Arc<[u32]>;

/// The Maglev lookup table of an `mh` service over dests `(RIP, rport, slot weight)` (in the
/// service's dest order; the weight [`mh_slot_weight`]), `None` for other schedulers. Control
/// path: this is the costly part of building an `mh` service (milliseconds for the large
/// tables), done once per publication rather than on every worker between two bursts.
pub fn mh_lookup(
    kind: Sched,
    dests: impl Iterator<Item = (IpAddr, u16, u32)> + Clone,
) -> Option<MhLookup> {
    match kind {
        Sched::Mh { table_size, .. } => Some(maglev_populate(dests, table_size).into()),
        _ => None,
    }
}

/// The weight by which a real server takes slots in the lookup table of `mh` service `kind`
/// (see [`mh_lookup`]): its weight; while quiesced (weight 0), its last non-zero weight, as IPVS
/// builds from `last_weight`: it keeps its slots, so no other server's move, and a client
/// hashed to it falls back (`mh-fallback`) or finds no server. A server down by its health check
/// keeps its slots only under `mh-fallback`; without, they go to the others, as if it were
/// removed, so that its clients are not left without a server.
pub fn mh_slot_weight(kind: Sched, weight: u32, last_weight: u32, down: bool) -> u32 {
    let fallback = matches!(kind, Sched::Mh { fallback: true, .. });
    if down && !fallback {
        0
    } else if weight > 0 {
        weight
    } else {
        last_weight
    }
}

impl Dest {
    /// [`mh_slot_weight`] of this dest.
    pub fn mh_weight(&self, kind: Sched) -> u32 {
        mh_slot_weight(kind, self.weight, self.last_weight, self.down)
    }
}

impl Scheduler {
    /// Fresh state of `kind` for `dests` (allocates the tables; a control operation).
    pub fn new(kind: Sched, dests: &[Dest]) -> Self {
        Self::with_lookup(kind, dests, None)
    }

    /// [`Scheduler::new`] with the Maglev table built ahead by [`mh_lookup`] for these dests
    /// (used when it has the table's size; built here otherwise).
    pub fn with_lookup(kind: Sched, dests: &[Dest], mh: Option<&MhLookup>) -> Self {
        let algo = match kind {
            Sched::Rr => Algo::Rr { next: 0 },
            Sched::Wrr => Algo::Wrr(WrrMark::new(dests)),
            Sched::Lc => Algo::Lc,
            Sched::Wlc => Algo::Wlc,
            Sched::Sed => Algo::Sed,
            Sched::Nq => Algo::Nq,
            Sched::Fo => Algo::Fo,
            Sched::Ovf => Algo::Ovf,
            Sched::Twos => Algo::Twos {
                rng: 0x9E37_79B9_7F4A_7C15,
            },
            Sched::Sh { fallback, port } => Algo::Sh {
                table: sh_table(dests),
                fallback,
                port,
            },
            Sched::Dh => Algo::Dh {
                table: dh_table(dests),
            },
            Sched::Lblc => Algo::Lblc(LocTable::new()),
            Sched::Lblcr => Algo::Lblcr(LocTable::new()),
            Sched::Mh {
                fallback,
                port,
                table_size,
            } => Algo::Mh(Maglev {
                lookup: match mh {
                    Some(t) if t.len() == table_size.max(2) as usize => t.clone(),
                    _ => maglev_populate(
                        dests.iter().map(|d| (d.rip, d.rport, d.mh_weight(kind))),
                        table_size,
                    )
                    .into(),
                },
                fallback,
                port,
            }),
        };
        Scheduler {
            kind,
            algo,
            over: Overload(vec![false; dests.len()]),
            start: 0,
        }
    }

    /// Take over what `old` learnt on this worker for the same service under its previous list
    /// of real servers `old_dests`, now `dests` (a dest id names the same real server in both),
    /// as IPVS keeps a service's scheduler state when a real server is added, edited or removed
    /// (a weight edit, a health-check transition):
    ///
    /// - the overload flag of each real server still there, unless its upper threshold was
    ///   raised or removed (`__ip_vs_update_dest` clears it then);
    /// - rr's position, on the first real server from it on that is still there;
    /// - wrr's current weight, realigned to the new gcd (`ip_vs_wrr_dest_changed`; where it is
    ///   above the new maximum, IPVS's 0 would let the next scan take a quiesced server, so the
    ///   scan starts afresh at the maximum instead);
    /// - twos' random source;
    /// - the lblc/lblcr caches, an entry losing the real servers that are gone.
    ///
    /// The hash tables (sh, dh, mh) are the new list's. Nothing is taken when the scheduler or
    /// its flags changed. `index` maps a dest id to its index in `dests` (anything else, or
    /// beyond its end: not in `dests`). Allocates nothing and costs O(1) per entry carried: it
    /// runs on the worker, between two bursts.
    pub fn carry_from(
        &mut self,
        old: &Scheduler,
        old_dests: &[Dest],
        dests: &[Dest],
        index: &[u32],
    ) {
        if self.kind != old.kind {
            return;
        }
        let to_new = |i: usize| {
            let id = old_dests.get(i)?.id;
            let j = *index.get(id as usize)? as usize;
            dests.get(j).filter(|d| d.id == id).map(|_| j)
        };
        for (i, _) in old.over.0.iter().enumerate().filter(|(_, f)| **f) {
            if let Some(j) = to_new(i) {
                let (was, now) = (old_dests[i].upper, dests[j].upper);
                if now != 0 && now <= was {
                    self.over.0[j] = true;
                }
            }
        }
        match (&mut self.algo, &old.algo) {
            (Algo::Rr { next }, Algo::Rr { next: was }) => {
                let n = old_dests.len();
                if let Some(j) = (0..n).find_map(|k| to_new((was + k) % n)) {
                    *next = j;
                }
            }
            // `m` is fresh for `dests` (gcd, maximum, and this worker's scan position).
            (Algo::Wrr(m), Algo::Wrr(was)) if was.cw > 0 && was.cw <= m.mw => {
                m.cw = if m.di > 1 {
                    (was.cw / m.di) * m.di + 1
                } else {
                    was.cw
                };
            }
            (Algo::Twos { rng }, Algo::Twos { rng: was }) => *rng = *was,
            (Algo::Lblc(t), Algo::Lblc(was)) | (Algo::Lblcr(t), Algo::Lblcr(was)) => {
                for (e, w) in t.e.iter_mut().zip(&was.e).filter(|(_, w)| w.used) {
                    let mut n = 0;
                    let mut set = [0u16; LBLCR_SET_MAX];
                    for &i in &w.set[..w.n as usize] {
                        if let Some(j) = to_new(i as usize) {
                            set[n] = j as u16;
                            n += 1;
                        }
                    }
                    if n > 0 {
                        *e = LocEntry {
                            n: n as u8,
                            set,
                            ..*w
                        };
                    }
                }
            }
            _ => {}
        }
    }

    /// Start this worker's rr/wrr sequence, and the lc/wlc/sed/nq tie-breaking scan, at dest
    /// `worker % n` instead of the list head. IPVS has one scheduler state for the whole box;
    /// rvs has one per worker, and N workers all starting at the first dest would each send
    /// it their first connection, and every lc/wlc tie, so that a few long-lived connections
    /// per worker (a database pool) would all land on the first dests. Worker 0 keeps IPVS's
    /// order exactly. fo and ovf keep the list order on every worker (their ties are the
    /// operator's priority order), and so do lblc/lblcr (every worker choosing the same server
    /// for a new destination is their locality); the hash schedulers do not scan.
    pub fn offset(&mut self, worker: usize) {
        let n = self.over.0.len();
        if n == 0 {
            return;
        }
        let p = worker % n;
        self.start = p;
        match &mut self.algo {
            Algo::Rr { next } => *next = p,
            // `cl` is the dest picked last: the next pick scans on from `p`.
            Algo::Wrr(m) => m.cl = if p == 0 { n } else { p - 1 },
            _ => {}
        }
    }

    /// Seed the random source of `twos` (per worker; any value, 0 is replaced).
    pub fn seed(&mut self, seed: u64) {
        if let Algo::Twos { rng } = &mut self.algo {
            *rng = if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            };
        }
    }

    /// IPVS `ip_vs_bind_dest` for a new session created on dest `i` (picked, or the dest of a
    /// persistence template): its overload flag is set when the session brings it to `upper`.
    /// The caller binds once the session exists, not at the pick (a pick whose session is then
    /// refused, e.g. no free lport, must not leave the dest flagged).
    #[inline]
    pub fn bind(&mut self, i: usize, dests: &[Dest], stats: &[DestStats]) {
        if let Some(d) = dests.get(i) {
            self.over.bind(i, d, stats);
        }
    }

    /// Pick a dest for a new session: an index into `dests` (the list the scheduler was built
    /// for), or None when no dest is available; [`Scheduler::bind`] it once the session exists.
    /// `stats` (indexed by dest id) are this worker's counters; `key` describes the flow.
    #[inline]
    pub fn pick(&mut self, dests: &[Dest], stats: &[DestStats], key: &SchedKey) -> Option<usize> {
        let over = &mut self.over;
        match &mut self.algo {
            Algo::Rr { next } => {
                let n = dests.len();
                let mut r = None;
                for k in 0..n {
                    let i = (*next + k) % n;
                    if dests[i].weight > 0 && !over.check(i, &dests[i], stats) {
                        *next = (i + 1) % n;
                        r = Some(i);
                        break;
                    }
                }
                r
            }
            Algo::Wrr(m) => m.pick(dests, |i| !over.check(i, &dests[i], stats)),
            Algo::Lc => lc(dests, stats, over, self.start),
            Algo::Wlc => weighted_least(dests, stats, over, conn_overhead, self.start),
            Algo::Sed => weighted_least(dests, stats, over, sed_overhead, self.start),
            Algo::Nq => nq(dests, stats, over, self.start),
            Algo::Fo => fo(dests, stats, over),
            Algo::Ovf => ovf(dests, stats, over),
            Algo::Twos { rng } => twos(dests, stats, over, rng),
            Algo::Sh {
                table,
                fallback,
                port,
            } => {
                let port = if *port { key.sport } else { 0 };
                sh_get(table, dests, stats, over, key.saddr, port, *fallback)
            }
            Algo::Dh { table } => {
                let i = table[dh_hashkey(key.daddr)];
                let i = i as usize;
                if i < dests.len() && !over.unavailable(i, &dests[i], stats) {
                    Some(i)
                } else {
                    None
                }
            }
            Algo::Lblc(t) => t.lblc(dests, stats, over, key),
            Algo::Lblcr(t) => t.lblcr(dests, stats, over, key),
            Algo::Mh(m) => m.get(dests, stats, over, key),
        }
    }

    /// The Maglev lookup table (dest indices, `u32::MAX` = empty) when this is `mh`.
    pub fn mh_table(&self) -> Option<&[u32]> {
        match &self.algo {
            Algo::Mh(m) => Some(&m.lookup),
            _ => None,
        }
    }
}

/// Dest indices from `start` round to `start - 1` (the list order when `start` is 0).
#[inline]
fn rotated(n: usize, start: usize) -> impl Iterator<Item = usize> {
    let start = if start < n { start } else { 0 };
    (start..n).chain(0..start)
}

/// IPVS `ip_vs_lc_schedule`: least `conn_overhead`, ties to the first (from `start`).
fn lc(dests: &[Dest], stats: &[DestStats], over: &mut Overload, start: usize) -> Option<usize> {
    let mut least = None;
    let mut loh = 0;
    for i in rotated(dests.len(), start) {
        let d = &dests[i];
        if d.weight == 0 || over.check(i, d, stats) {
            continue;
        }
        let doh = conn_overhead(stats, d.id);
        if least.is_none() || doh < loh {
            least = Some(i);
            loh = doh;
        }
    }
    least
}

/// IPVS `ip_vs_wlc_schedule` / `ip_vs_sed_schedule` / `__ip_vs_lblc_schedule`: the first
/// available dest with weight > 0 (from `start`), then any later one with a strictly lower
/// `overhead / weight`.
fn weighted_least(
    dests: &[Dest],
    stats: &[DestStats],
    over: &mut Overload,
    overhead: fn(&[DestStats], u32) -> u64,
    start: usize,
) -> Option<usize> {
    let mut order = rotated(dests.len(), start);
    let first = order.find(|&i| dests[i].weight > 0 && !over.check(i, &dests[i], stats))?;
    let mut least = first;
    let mut loh = overhead(stats, dests[first].id);
    for i in order {
        let d = &dests[i];
        if over.check(i, d, stats) {
            continue;
        }
        let doh = overhead(stats, d.id);
        if heavier(loh, dests[least].weight, doh, d.weight) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// IPVS `ip_vs_nq_schedule`: the first idle dest (no active session; from `start`), else
/// least `(active + 1) / weight`.
fn nq(dests: &[Dest], stats: &[DestStats], over: &mut Overload, start: usize) -> Option<usize> {
    let mut least: Option<usize> = None;
    let mut loh = 0;
    for i in rotated(dests.len(), start) {
        let d = &dests[i];
        if d.weight == 0 || over.check(i, d, stats) {
            continue;
        }
        let doh = sed_overhead(stats, d.id);
        if doh == 1 {
            return Some(i);
        }
        match least {
            Some(l) if !heavier(loh, dests[l].weight, doh, d.weight) => {}
            _ => {
                least = Some(i);
                loh = doh;
            }
        }
    }
    least
}

/// IPVS `ip_vs_fo_schedule`: the available dest with the highest weight, ties to the first.
fn fo(dests: &[Dest], stats: &[DestStats], over: &mut Overload) -> Option<usize> {
    let mut best = None;
    let mut hw = 0;
    for (i, d) in dests.iter().enumerate() {
        if !over.check(i, d, stats) && d.weight > hw {
            best = Some(i);
            hw = d.weight;
        }
    }
    best
}

/// IPVS `ip_vs_ovf_schedule`: the highest weight among the dests whose active count does not
/// exceed their weight (`activeconns > weight` skips), ties to the first.
fn ovf(dests: &[Dest], stats: &[DestStats], over: &mut Overload) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, d) in dests.iter().enumerate() {
        let w = d.weight;
        if over.check(i, d, stats) || counts(stats, d.id).0 > w as u64 || w == 0 {
            continue;
        }
        if best.is_none_or(|b| w > dests[b].weight) {
            best = Some(i);
        }
    }
    best
}

/// xorshift64 (Marsaglia), the per-worker random source of `twos`.
#[inline]
fn xorshift(s: &mut u64) -> u32 {
    let mut x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    (x >> 32) as u32
}

/// IPVS `ip_vs_twos_schedule`: two random draws in `[0, total weight]` (inclusive, as IPVS),
/// each mapped to a dest by cumulative weight; the one with the lower `overhead / weight` wins
/// (the first draw on ties).
fn twos(dests: &[Dest], stats: &[DestStats], over: &mut Overload, rng: &mut u64) -> Option<usize> {
    let mut total: u64 = 0;
    for (i, d) in dests.iter().enumerate() {
        if !over.check(i, d, stats) && d.weight > 0 {
            total += d.weight as u64;
        }
    }
    if total == 0 {
        return None;
    }
    let total = total + 1;
    let mut r1 = (xorshift(rng) as u64 % total) as i64;
    let mut r2 = (xorshift(rng) as u64 % total) as i64;
    let (mut c1, mut c2) = (None::<usize>, None::<usize>);
    let (mut oh1, mut oh2) = (0u64, 0u64);
    for (i, d) in dests.iter().enumerate() {
        if d.weight == 0 || over.check(i, d, stats) {
            continue;
        }
        r1 -= d.weight as i64;
        r2 -= d.weight as i64;
        if r1 <= 0 && c1.is_none() {
            c1 = Some(i);
            oh1 = conn_overhead(stats, d.id);
        }
        if r2 <= 0 && c2.is_none() {
            c2 = Some(i);
            oh2 = conn_overhead(stats, d.id);
        }
        if c1.is_some() && c2.is_some() {
            break;
        }
    }
    let (c1, c2) = (c1?, c2?);
    // IPVS: weight2 * overhead1 > weight1 * overhead2 → choice2.
    if heavier(oh1, dests[c1].weight, oh2, dests[c2].weight) {
        Some(c2)
    } else {
        Some(c1)
    }
}

/// IPVS's address fold: the IPv4 address, or the XOR of an IPv6 address's four words (host
/// order).
#[inline]
fn addr_fold(a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(v) => u32::from(v),
        IpAddr::V6(v) => {
            let o = v.octets();
            (0..4).fold(0, |x, k| {
                x ^ u32::from_be_bytes([o[4 * k], o[4 * k + 1], o[4 * k + 2], o[4 * k + 3]])
            })
        }
    }
}

/// IPVS `ip_vs_sh_hashkey`: `(offset + hash_32(port + addr, 8)) % 256`.
#[inline]
fn sh_hashkey(addr: IpAddr, port: u16, offset: usize) -> usize {
    let v = (port as u32).wrapping_add(addr_fold(addr));
    let h = (v.wrapping_mul(0x61C8_8647) >> (32 - 8)) as usize;
    (offset + h) % HASH_BUCKETS
}

/// IPVS `ip_vs_dh_hashkey`: `(addr * 2654435761) & 255`.
#[inline]
fn dh_hashkey(addr: IpAddr) -> usize {
    (addr_fold(addr).wrapping_mul(2_654_435_761) as usize) & (HASH_BUCKETS - 1)
}

/// IPVS `ip_vs_sh_reassign`: the dests in order, each taking `weight` consecutive buckets (at
/// least one, weight 0 included), cycling until the 256 buckets are filled.
fn sh_table(dests: &[Dest]) -> Box<[u32; HASH_BUCKETS]> {
    let mut t = Box::new([NONE; HASH_BUCKETS]);
    if dests.is_empty() {
        return t;
    }
    let (mut p, mut count) = (0usize, 0u32);
    for b in t.iter_mut() {
        *b = p as u32;
        count += 1;
        if count >= dests[p].weight {
            p = (p + 1) % dests.len();
            count = 0;
        }
    }
    t
}

/// IPVS `ip_vs_dh_reassign`: the dests round robin over the 256 buckets, whatever their weight.
fn dh_table(dests: &[Dest]) -> Box<[u32; HASH_BUCKETS]> {
    let mut t = Box::new([NONE; HASH_BUCKETS]);
    if !dests.is_empty() {
        for (b, x) in t.iter_mut().enumerate() {
            *x = (b % dests.len()) as u32;
        }
    }
    t
}

/// IPVS `ip_vs_sh_get` / `ip_vs_sh_get_fallback`.
fn sh_get(
    table: &[u32; HASH_BUCKETS],
    dests: &[Dest],
    stats: &[DestStats],
    over: &mut Overload,
    addr: IpAddr,
    port: u16,
    fallback: bool,
) -> Option<usize> {
    let ihash = sh_hashkey(addr, port, 0);
    let i = table[ihash] as usize;
    if i >= dests.len() {
        return None;
    }
    if !over.unavailable(i, &dests[i], stats) {
        return Some(i);
    }
    if !fallback {
        return None;
    }
    for offset in 0..HASH_BUCKETS {
        let roffset = (offset + ihash) % HASH_BUCKETS;
        let j = table[sh_hashkey(addr, port, roffset)] as usize;
        if j < dests.len() && !over.unavailable(j, &dests[j], stats) {
            return Some(j);
        }
    }
    None
}

/// Buckets of the lblc/lblcr caches (IPVS `IP_VS_LBLC_TAB_SIZE`, `IP_VS_LBLCR_TAB_SIZE`).
pub const LOC_BUCKETS: usize = 1024;
/// Entries per bucket: 16 × 1024 = IPVS's `max_size` of the cache (`IP_VS_LBLC_TAB_SIZE * 16`).
pub const LOC_WAYS: usize = 16;
/// Most dests remembered per lblcr destination set (IPVS's set is unbounded; here a full set
/// replaces its most loaded member, as IPVS's shrinking does, so the cache's memory is fixed).
pub const LBLCR_SET_MAX: usize = 8;
/// IPVS `sysctl_lblc_expiration` default: an entry unused for 24 h is dropped.
pub const LBLC_EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;
/// IPVS `sysctl_lblcr_expiration` default: an entry unused for 24 h is dropped, and a set of
/// more than one dest unmodified for 24 h loses its most loaded member.
pub const LBLCR_EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;

/// One locality cache entry: destination address → dest (lblc) or dest set (lblcr, most recent
/// first as IPVS's list).
#[derive(Clone, Copy, Debug, Default)]
struct LocEntry {
    key: u128,
    lastuse: u64,
    lastmod: u64,
    used: bool,
    n: u8,
    set: [u16; LBLCR_SET_MAX],
}

/// The lblc/lblcr cache of one service on one worker: `LOC_BUCKETS` buckets (IPVS's hash) of
/// `LOC_WAYS` entries, allocated once.
#[derive(Clone, Debug)]
struct LocTable {
    e: Vec<LocEntry>,
}

fn ip_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(v.to_ipv6_mapped()),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// IPVS `ip_vs_lblc_is_overloaded` (lblc, lblcr): active > weight while some dest has
/// active * 2 < weight.
fn loc_overloaded(i: usize, dests: &[Dest], stats: &[DestStats]) -> bool {
    if counts(stats, dests[i].id).0 > dests[i].weight as u64 {
        return dests
            .iter()
            .any(|d| counts(stats, d.id).0 * 2 < d.weight as u64);
    }
    false
}

impl LocTable {
    fn new() -> Self {
        LocTable {
            e: vec![LocEntry::default(); LOC_BUCKETS * LOC_WAYS],
        }
    }

    /// Slot of `addr`'s live entry (an expired one is dropped).
    fn find(&mut self, addr: IpAddr, now: u64, expiration: u64) -> Option<usize> {
        let key = ip_key(addr);
        let b = (addr_fold(addr).wrapping_mul(2_654_435_761) as usize) & (LOC_BUCKETS - 1);
        for s in b * LOC_WAYS..(b + 1) * LOC_WAYS {
            let e = &mut self.e[s];
            if e.used && e.key == key {
                if now >= e.lastuse.saturating_add(expiration) {
                    e.used = false;
                    return None;
                }
                return Some(s);
            }
        }
        None
    }

    /// A slot for a new entry of `addr`: a free or expired one, else the least recently used of
    /// the bucket.
    fn claim(&mut self, addr: IpAddr, now: u64, expiration: u64) -> usize {
        let b = (addr_fold(addr).wrapping_mul(2_654_435_761) as usize) & (LOC_BUCKETS - 1);
        let mut lru = b * LOC_WAYS;
        for s in b * LOC_WAYS..(b + 1) * LOC_WAYS {
            let e = &self.e[s];
            if !e.used || now >= e.lastuse.saturating_add(expiration) {
                lru = s;
                break;
            }
            if e.lastuse < self.e[lru].lastuse {
                lru = s;
            }
        }
        self.e[lru] = LocEntry {
            key: ip_key(addr),
            lastuse: now,
            lastmod: now,
            used: true,
            n: 0,
            set: [0; LBLCR_SET_MAX],
        };
        lru
    }

    /// IPVS `ip_vs_lblc_schedule`.
    fn lblc(
        &mut self,
        dests: &[Dest],
        stats: &[DestStats],
        over: &mut Overload,
        key: &SchedKey,
    ) -> Option<usize> {
        let now = key.now_ms;
        let found = self.find(key.daddr, now, LBLC_EXPIRATION_MS);
        if let Some(s) = found {
            let e = &mut self.e[s];
            e.lastuse = now;
            let i = e.set[0] as usize;
            if e.n > 0 && i < dests.len() && dests[i].weight > 0 && !loc_overloaded(i, dests, stats)
            {
                return Some(i);
            }
        }
        let i = weighted_least(dests, stats, over, conn_overhead, 0)?;
        if i <= u16::MAX as usize {
            let s = match found {
                Some(s) => s,
                None => self.claim(key.daddr, now, LBLC_EXPIRATION_MS),
            };
            let e = &mut self.e[s];
            e.set[0] = i as u16;
            e.n = 1;
            e.lastuse = now;
        }
        Some(i)
    }

    /// IPVS `ip_vs_lblcr_schedule`.
    fn lblcr(
        &mut self,
        dests: &[Dest],
        stats: &[DestStats],
        over: &mut Overload,
        key: &SchedKey,
    ) -> Option<usize> {
        let now = key.now_ms;
        let Some(s) = self.find(key.daddr, now, LBLCR_EXPIRATION_MS) else {
            let i = weighted_least(dests, stats, over, conn_overhead, 0)?;
            if i <= u16::MAX as usize {
                let s = self.claim(key.daddr, now, LBLCR_EXPIRATION_MS);
                set_insert(&mut self.e[s], i, dests, stats, now);
            }
            return Some(i);
        };
        let e = &mut self.e[s];
        e.lastuse = now;
        let min = set_min(e, dests, stats, over);
        if e.n > 1 && now > e.lastmod.saturating_add(LBLCR_EXPIRATION_MS) {
            if let Some(m) = set_max(e, dests, stats) {
                set_erase(e, m, now);
            }
        }
        if let Some(i) = min {
            if !loc_overloaded(i, dests, stats) {
                return Some(i);
            }
        }
        let i = weighted_least(dests, stats, over, conn_overhead, 0)?;
        if i <= u16::MAX as usize && !e.set[..e.n as usize].contains(&(i as u16)) {
            set_insert(e, i, dests, stats, now);
        }
        Some(i)
    }
}

/// IPVS `ip_vs_dest_set_insert` (at the head). A full set first drops its most loaded member
/// (the oldest when none has weight > 0); IPVS's sets are unbounded.
fn set_insert(e: &mut LocEntry, i: usize, dests: &[Dest], stats: &[DestStats], now: u64) {
    if e.n as usize == LBLCR_SET_MAX {
        match set_max(e, dests, stats) {
            Some(m) => set_erase(e, m, now),
            None => e.n -= 1,
        }
    }
    let n = e.n as usize;
    e.set.copy_within(0..n, 1);
    e.set[0] = i as u16;
    e.n += 1;
    e.lastmod = now;
}

/// IPVS `ip_vs_dest_set_erase`.
fn set_erase(e: &mut LocEntry, i: usize, now: u64) {
    let n = e.n as usize;
    if let Some(p) = e.set[..n].iter().position(|&x| x as usize == i) {
        e.set.copy_within(p + 1..n, p);
        e.n -= 1;
        e.lastmod = now;
    }
}

/// IPVS `ip_vs_dest_set_min`: weighted least connection within the set.
fn set_min(
    e: &LocEntry,
    dests: &[Dest],
    stats: &[DestStats],
    over: &mut Overload,
) -> Option<usize> {
    let set = &e.set[..e.n as usize];
    let mut it = set.iter().map(|&x| x as usize).filter(|&x| x < dests.len());
    let mut least = loop {
        let i = it.next()?;
        if over.check(i, &dests[i], stats) {
            continue;
        }
        if dests[i].weight > 0 {
            break i;
        }
    };
    let mut loh = conn_overhead(stats, dests[least].id);
    for i in it {
        if over.check(i, &dests[i], stats) {
            continue;
        }
        let doh = conn_overhead(stats, dests[i].id);
        if heavier(loh, dests[least].weight, doh, dests[i].weight) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// IPVS `ip_vs_dest_set_max`: weighted most connection within the set.
fn set_max(e: &LocEntry, dests: &[Dest], stats: &[DestStats]) -> Option<usize> {
    let set = &e.set[..e.n as usize];
    let mut it = set.iter().map(|&x| x as usize).filter(|&x| x < dests.len());
    let mut most = it.find(|&i| dests[i].weight > 0)?;
    let mut moh = conn_overhead(stats, dests[most].id);
    for i in it {
        let doh = conn_overhead(stats, dests[i].id);
        // moh / mw < doh / dw
        if heavier(doh, dests[i].weight, moh, dests[most].weight) && dests[i].weight > 0 {
            most = i;
            moh = doh;
        }
    }
    Some(most)
}

/// IPVS's Maglev hash secrets (`generate_hash_secret`).
const MH_KEY1: (u64, u64) = (2_654_435_761, 2_654_435_761);
const MH_KEY2: (u64, u64) = (2_654_446_892, 2_654_446_892);

/// Linux `hsiphash` of a 4-byte value on 64-bit machines (SipHash-1-3, truncated to 32 bits), as
/// `ip_vs_mh_hashkey` computes it on x86-64.
fn hsiphash_u32(v: u32, key: (u64, u64)) -> u32 {
    let mut v0 = 0x736f_6d65_7073_6575u64 ^ key.0;
    let mut v1 = 0x646f_7261_6e64_6f6du64 ^ key.1;
    let mut v2 = 0x6c79_6765_6e65_7261u64 ^ key.0;
    let mut v3 = 0x7465_6462_7974_6573u64 ^ key.1;
    let b = (4u64 << 56) | v as u64;
    macro_rules! round {
        () => {
            v0 = v0.wrapping_add(v1);
            v1 = v1.rotate_left(13);
            v1 ^= v0;
            v0 = v0.rotate_left(32);
            v2 = v2.wrapping_add(v3);
            v3 = v3.rotate_left(16);
            v3 ^= v2;
            v0 = v0.wrapping_add(v3);
            v3 = v3.rotate_left(21);
            v3 ^= v0;
            v2 = v2.wrapping_add(v1);
            v1 = v1.rotate_left(17);
            v1 ^= v2;
            v2 = v2.rotate_left(32);
        };
    }
    v3 ^= b;
    round!();
    v0 ^= b;
    v2 ^= 0xff;
    round!();
    round!();
    round!();
    ((v0 ^ v1) ^ (v2 ^ v3)) as u32
}

/// IPVS `ip_vs_mh_hashkey`: `hsiphash(offset + port + addr)`.
#[inline]
fn mh_hashkey(addr: IpAddr, port: u16, key: (u64, u64), offset: u32) -> u32 {
    let v = offset
        .wrapping_add(port as u32)
        .wrapping_add(addr_fold(addr));
    hsiphash_u32(v, key)
}

/// Maglev hashing state (IPVS `ip_vs_mh`): the lookup table of dest indices.
#[derive(Clone, Debug)]
struct Maglev {
    lookup: MhLookup,
    fallback: bool,
    port: bool,
}

/// IPVS `ip_vs_mh_reassign`: permutation (offset, skip) of each dest from two hashes of
/// RIP:rport, `turns = (weight / gcd) >> rshift` (at least 1 for weight > 0), then the Maglev
/// population: in turn, each dest takes `turns` next free slots of its permutation until the
/// table is full. Dests with (slot) weight 0 get no slot.
fn maglev_populate(dests: impl Iterator<Item = (IpAddr, u16, u32)> + Clone, size: u32) -> Vec<u32> {
    let m = size.max(2) as usize;
    let mut lookup = vec![NONE; m];
    let g = dests
        .clone()
        .filter(|d| d.2 > 0)
        .fold(0u32, |g, d| if g > 0 { gcd(d.2, g) } else { d.2 });
    let max = dests.clone().map(|d| d.2).max().unwrap_or(0);
    if let Some(mw) = max.checked_div(g) {
        // IP_VS_MH_TAB_BITS = CONFIG_IP_VS_MH_TAB_INDEX / 2, the index being the bit
        // length of the prime (12 for 4093).
        let bits = (32 - (m as u32).leading_zeros()) / 2;
        let fls = 32 - mw.leading_zeros();
        let rshift = fls.saturating_sub(bits);
        // (offset, skip, perm, turns)
        let mut setup: Vec<(usize, usize, usize, u32)> = dests
            .map(|(rip, rport, weight)| {
                let offset = mh_hashkey(rip, rport, MH_KEY1, 0) as usize % m;
                let skip = mh_hashkey(rip, rport, MH_KEY2, 0) as usize % (m - 1) + 1;
                let t = (weight / g) >> rshift;
                let turns = if t != 0 { t } else { (weight != 0) as u32 };
                (offset, skip, offset, turns)
            })
            .collect();
        let mut taken = vec![false; m];
        let mut n = 0;
        'fill: loop {
            for (di, ds) in setup.iter_mut().enumerate() {
                for _ in 0..ds.3 {
                    let mut c = ds.2;
                    while taken[c] {
                        ds.2 += ds.1;
                        if ds.2 >= m {
                            ds.2 -= m;
                        }
                        c = ds.2;
                    }
                    taken[c] = true;
                    lookup[c] = di as u32;
                    n += 1;
                    if n == m {
                        break 'fill;
                    }
                }
            }
        }
    }
    lookup
}

impl Maglev {
    /// IPVS `ip_vs_mh_get` / `ip_vs_mh_get_fallback`.
    fn get(
        &self,
        dests: &[Dest],
        stats: &[DestStats],
        over: &mut Overload,
        key: &SchedKey,
    ) -> Option<usize> {
        let m = self.lookup.len() as u32;
        let port = if self.port { key.sport } else { 0 };
        let ihash = mh_hashkey(key.saddr, port, MH_KEY1, 0) % m;
        let i = self.lookup[ihash as usize] as usize;
        if i >= dests.len() {
            return None;
        }
        if !over.unavailable(i, &dests[i], stats) {
            return Some(i);
        }
        if !self.fallback {
            return None;
        }
        for offset in 0..m {
            let roffset = (offset + ihash) % m;
            let h = mh_hashkey(key.saddr, port, MH_KEY1, roffset) % m;
            let j = self.lookup[h as usize] as usize;
            if j >= dests.len() {
                break;
            }
            if !over.unavailable(j, &dests[j], stats) {
                return Some(j);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sched;

    fn dests(w: &[u32]) -> Vec<Dest> {
        w.iter()
            .enumerate()
            .map(|(i, &weight)| Dest {
                id: i as u32,
                rip: IpAddr::from([10, 0, 0, i as u8 + 1]),
                rport: 80,
                weight,
                fwd: crate::config::Fwd::FullNat,
                upper: 0,
                lower: 0,
                down: false,
                last_weight: 0,
            })
            .collect()
    }

    fn seq(kind: Sched, w: &[u32], n: usize) -> Vec<Option<usize>> {
        let d = dests(w);
        let mut s = Scheduler::new(kind, &d);
        (0..n).map(|_| s.pick(&d, &[], &key(1, 1))).collect()
    }

    fn key(c: u32, port: u16) -> SchedKey {
        SchedKey::new(
            IpAddr::from(c.to_be_bytes()),
            port,
            IpAddr::from([192, 0, 2, 10]),
            0,
        )
    }

    fn some(v: &[usize]) -> Vec<Option<usize>> {
        v.iter().map(|&x| Some(x)).collect()
    }

    #[test]
    fn rr_skips_quiesced() {
        assert_eq!(seq(Sched::Rr, &[1, 1, 1], 6), some(&[0, 1, 2, 0, 1, 2]));
        assert_eq!(seq(Sched::Rr, &[1, 0, 5], 4), some(&[0, 2, 0, 2]));
        assert_eq!(seq(Sched::Rr, &[0, 0], 2), vec![None, None]);
        assert_eq!(seq(Sched::Rr, &[], 1), vec![None]);
    }

    #[test]
    fn wrr_matches_ipvs() {
        // IPVS ip_vs_wrr with weights 3,2,1: A A B A B C, repeating.
        assert_eq!(
            seq(Sched::Wrr, &[3, 2, 1], 12),
            some(&[0, 0, 1, 0, 1, 2, 0, 0, 1, 0, 1, 2])
        );
        // gcd stepping: 4,2 → mw 3 (4 - (2-1)), di 2: A, then cw 1 → A B.
        assert_eq!(seq(Sched::Wrr, &[4, 2], 6), some(&[0, 0, 1, 0, 0, 1]));
        // Weight 0 gets nothing.
        let s = seq(Sched::Wrr, &[2, 0, 1], 9);
        assert!(!s.contains(&Some(1)));
        assert_eq!(s, some(&[0, 0, 2, 0, 0, 2, 0, 0, 2]));
        assert_eq!(seq(Sched::Wrr, &[0, 0], 2), vec![None, None]);
        assert_eq!(seq(Sched::Wrr, &[1, 1, 1], 4), some(&[0, 1, 2, 0]));
    }

    #[test]
    fn each_worker_starts_at_its_own_dest() {
        let pick_first = |kind, d: &[Dest], w| {
            let mut s = Scheduler::new(kind, d);
            s.offset(w);
            s.pick(d, &[], &key(1, 1))
        };
        let d = dests(&[1, 1, 1, 1]);
        for kind in [
            Sched::Rr,
            Sched::Wrr,
            Sched::Lc,
            Sched::Wlc,
            Sched::Sed,
            Sched::Nq,
        ] {
            let firsts: Vec<_> = (0..6).map(|w| pick_first(kind, &d, w)).collect();
            assert_eq!(firsts, some(&[0, 1, 2, 3, 0, 1]), "{kind:?}");
        }
        // fo keeps the operator's order on every worker.
        assert_eq!(pick_first(Sched::Fo, &d, 3), Some(0));
        // Worker 0 is IPVS's sequence; any start keeps wrr's proportions over whole periods.
        assert_eq!(seq(Sched::Wrr, &[3, 2, 1], 6), some(&[0, 0, 1, 0, 1, 2]));
        let d = dests(&[3, 2, 1]);
        for w in 0..3 {
            let mut s = Scheduler::new(Sched::Wrr, &d);
            s.offset(w);
            let mut n = [0; 3];
            for _ in 0..60 {
                n[s.pick(&d, &[], &key(1, 1)).unwrap()] += 1;
            }
            assert_eq!(n, [30, 20, 10], "worker {w}");
        }
        // A quiesced dest at the start is skipped.
        let d = dests(&[1, 0, 1]);
        assert_eq!(pick_first(Sched::Rr, &d, 1), Some(2));
        assert_eq!(pick_first(Sched::Wlc, &d, 1), Some(2));
    }

    /// The state a service's scheduler built for its old list of real servers, carried into a
    /// fresh one for `new`.
    fn carried(kind: Sched, old: &Scheduler, old_d: &[Dest], new: &[Dest]) -> Scheduler {
        let mut s = Scheduler::new(kind, new);
        let mut index = vec![u32::MAX; 16];
        for (j, d) in new.iter().enumerate() {
            index[d.id as usize] = j as u32;
        }
        s.carry_from(old, old_d, new, &index);
        s
    }

    #[test]
    fn rr_goes_on_across_a_dest_change() {
        let d = dests(&[1, 1, 1, 1]);
        let mut s = Scheduler::new(Sched::Rr, &d);
        for _ in 0..2 {
            s.pick(&d, &[], &key(1, 1));
        }
        // Next is dest 2. A weight edit elsewhere: it still is.
        let mut e = d.clone();
        e[0].weight = 3;
        let mut c = carried(Sched::Rr, &s, &d, &e);
        assert_eq!(c.pick(&e, &[], &key(1, 1)), Some(2));
        // Dest 2 removed: the next one still there (id 3, now index 2).
        let r: Vec<Dest> = d.iter().copied().filter(|x| x.id != 2).collect();
        let mut c = carried(Sched::Rr, &s, &d, &r);
        assert_eq!(c.pick(&r, &[], &key(1, 1)).map(|i| r[i].id), Some(3));
        // Another scheduler starts afresh.
        let mut c = carried(Sched::Wrr, &s, &d, &d);
        assert_eq!(c.pick(&d, &[], &key(1, 1)), Some(0));
    }

    #[test]
    fn wrr_keeps_its_current_weight_across_a_dest_change() {
        // 3,2,1: A A B A B C. After A A (cw 2), a weight edit of C (3,2,2; gcd 1, mw 3): IPVS
        // keeps cw 2 and rescans from the head: A B C, then cw 1: A B C, then cw 3: A A ...
        // (a fresh state would give A A B C A B).
        let d = dests(&[3, 2, 1]);
        let mut s = Scheduler::new(Sched::Wrr, &d);
        assert_eq!(s.pick(&d, &[], &key(1, 1)), Some(0));
        assert_eq!(s.pick(&d, &[], &key(1, 1)), Some(0));
        let e = dests(&[3, 2, 2]);
        let mut c = carried(Sched::Wrr, &s, &d, &e);
        let got: Vec<_> = (0..8).map(|_| c.pick(&e, &[], &key(1, 1))).collect();
        assert_eq!(got, some(&[0, 1, 2, 0, 1, 2, 0, 0]));
        // A current weight above the new maximum restarts at the maximum (never 0, which would
        // take a quiesced server): 3,2,1 fresh (cw 3) edited to 1,1,0.
        let s = Scheduler::new(Sched::Wrr, &d);
        let e = dests(&[1, 1, 0]);
        let mut c = carried(Sched::Wrr, &s, &d, &e);
        let got: Vec<_> = (0..4).map(|_| c.pick(&e, &[], &key(1, 1))).collect();
        assert_eq!(got, some(&[0, 1, 0, 1]));
    }

    #[test]
    fn overload_flags_and_lblc_caches_survive_a_dest_change() {
        let mut d = dests(&[1, 1, 1]);
        d[0].upper = 2;
        let st: Vec<DestStats> = (0..3).map(|_| DestStats::default()).collect();
        st[0].active.add(2);
        let mut s = Scheduler::new(Sched::Rr, &d);
        s.bind(0, &d, &st);
        assert!(s.over.0[0]);
        // Dest 0 now at 1 (between lower 3/4 and upper): still overloaded after another
        // server's edit, no more once its own upper threshold is raised.
        st[0].active.dec();
        let mut e = d.clone();
        e[2].weight = 4;
        assert!(carried(Sched::Rr, &s, &d, &e).over.0[0]);
        e[0].upper = 5;
        assert!(!carried(Sched::Rr, &s, &d, &e).over.0[0]);
        // lblc: the cache entry of a destination keeps its server, re-indexed when an earlier
        // one is removed; it is dropped with its server.
        let d = dests(&[1, 1, 1]);
        let st: Vec<DestStats> = (0..3).map(|_| DestStats::default()).collect();
        let mut s = Scheduler::new(Sched::Lblc, &d);
        st[0].active.add(5);
        st[1].active.add(5);
        assert_eq!(s.pick(&d, &st, &key(1, 1)), Some(2));
        let r: Vec<Dest> = d.iter().copied().filter(|x| x.id != 0).collect();
        let st2: Vec<DestStats> = (0..3).map(|_| DestStats::default()).collect();
        let mut c = carried(Sched::Lblc, &s, &d, &r);
        assert_eq!(c.pick(&r, &st2, &key(1, 1)).map(|i| r[i].id), Some(2));
        let r: Vec<Dest> = d.iter().copied().filter(|x| x.id != 2).collect();
        let mut c = carried(Sched::Lblc, &s, &d, &r);
        assert_eq!(c.pick(&r, &st2, &key(1, 1)).map(|i| r[i].id), Some(0));
    }
}

#[cfg(test)]
mod ipvs_tests {
    //! Every scheduler against IPVS's formulas on crafted per-core counts.
    use super::*;
    use crate::config::Fwd;

    fn dests(w: &[u32]) -> Vec<Dest> {
        w.iter()
            .enumerate()
            .map(|(i, &weight)| Dest {
                id: i as u32,
                rip: IpAddr::from([10, 0, (i >> 8) as u8, i as u8 + 1]),
                rport: 80,
                weight,
                fwd: Fwd::FullNat,
                upper: 0,
                lower: 0,
                down: false,
                last_weight: 0,
            })
            .collect()
    }

    /// Per-core stats with (active, inactive) per dest.
    fn stats(c: &[(u64, u64)]) -> Vec<DestStats> {
        c.iter()
            .map(|&(a, i)| {
                let s = DestStats::default();
                s.active.add(a);
                s.inactive.add(i);
                s
            })
            .collect()
    }

    fn key(c: u32) -> SchedKey {
        SchedKey::new(
            IpAddr::from(c.to_be_bytes()),
            1024 + (c % 50000) as u16,
            IpAddr::from([192, 0, 2, 10]),
            0,
        )
    }

    fn pick1(kind: Sched, w: &[u32], c: &[(u64, u64)]) -> Option<usize> {
        let d = dests(w);
        Scheduler::new(kind, &d).pick(&d, &stats(c), &key(1))
    }

    /// Pick `n` times, binding each new session as active on the chosen dest.
    fn bound_shares(kind: Sched, w: &[u32], n: usize) -> Vec<usize> {
        let d = dests(w);
        let st = stats(&vec![(0, 0); w.len()]);
        let mut s = Scheduler::new(kind, &d);
        let mut got = vec![0; w.len()];
        for k in 0..n {
            let i = s.pick(&d, &st, &key(k as u32)).unwrap();
            st[i].active.inc();
            got[i] += 1;
        }
        got
    }

    #[test]
    fn lc_least_overhead_ties_first() {
        // overheads 2*256 = 512, 256 + 300 = 556, 256 + 10 = 266.
        assert_eq!(
            pick1(Sched::Lc, &[1, 1, 1], &[(2, 0), (1, 300), (1, 10)]),
            Some(2)
        );
        // 256 + 0 vs 0 + 256: tie, the first wins.
        assert_eq!(pick1(Sched::Lc, &[1, 1], &[(1, 0), (0, 256)]), Some(0));
        // Weights do not matter to lc, except 0.
        assert_eq!(pick1(Sched::Lc, &[100, 1], &[(1, 0), (0, 5)]), Some(1));
        assert_eq!(pick1(Sched::Lc, &[0, 1], &[(0, 0), (9, 9)]), Some(1));
        assert_eq!(pick1(Sched::Lc, &[0, 0], &[(0, 0), (0, 0)]), None);
    }

    #[test]
    fn wlc_worked_example_and_formula() {
        // The seeds' example: weights 20 and 5, (60, 300) and (20, 100):
        // 15660 / 20 = 783 < 5220 / 5 = 1044 → the first.
        assert_eq!(
            pick1(Sched::Wlc, &[20, 5], &[(60, 300), (20, 100)]),
            Some(0)
        );
        // (10*256)/1 = 2560 > (30*256)/4 = 1920 → the second.
        assert_eq!(pick1(Sched::Wlc, &[1, 4], &[(10, 0), (30, 0)]), Some(1));
        // Equal ratios: the first stays (strict >).
        assert_eq!(pick1(Sched::Wlc, &[1, 2], &[(1, 0), (2, 0)]), Some(0));
        // Weight 0 skipped, also as the first candidate.
        assert_eq!(
            pick1(Sched::Wlc, &[0, 1, 1], &[(0, 0), (5, 0), (4, 0)]),
            Some(2)
        );
    }

    #[test]
    fn sed_and_nq() {
        // sed: (active + 1) / weight; inactive ignored. 1/1 vs 3/3: tie → first.
        assert_eq!(pick1(Sched::Sed, &[1, 3], &[(0, 0), (2, 999)]), Some(0));
        // 2/1 > 3/3 → second.
        assert_eq!(pick1(Sched::Sed, &[1, 3], &[(1, 0), (2, 0)]), Some(1));
        // sed prefers the heavy idle dest (1/10 < 1/1) ...
        assert_eq!(pick1(Sched::Sed, &[1, 10], &[(0, 0), (0, 0)]), Some(1));
        // ... nq takes the first idle one.
        assert_eq!(pick1(Sched::Nq, &[1, 10], &[(0, 0), (0, 0)]), Some(0));
        assert_eq!(pick1(Sched::Nq, &[1, 10], &[(1, 0), (0, 50)]), Some(1));
        // No idle dest: as sed. 3/1 vs 5/4 → second.
        assert_eq!(pick1(Sched::Nq, &[1, 4], &[(2, 0), (4, 0)]), Some(1));
        assert_eq!(pick1(Sched::Nq, &[0, 4], &[(0, 0), (4, 0)]), Some(1));
    }

    #[test]
    fn fo_and_ovf() {
        assert_eq!(pick1(Sched::Fo, &[2, 5, 5], &[(0, 0); 3]), Some(1));
        assert_eq!(pick1(Sched::Fo, &[0, 0], &[(0, 0); 2]), None);
        // fo ignores counts.
        assert_eq!(pick1(Sched::Fo, &[1, 5], &[(0, 0), (900, 0)]), Some(1));
        // ovf: active 5 does not exceed weight 5 → still the highest weight.
        assert_eq!(pick1(Sched::Ovf, &[3, 5], &[(0, 0), (5, 0)]), Some(1));
        // active 6 > 5 → overflow to the next highest weight.
        assert_eq!(pick1(Sched::Ovf, &[3, 5], &[(0, 0), (6, 0)]), Some(0));
        assert_eq!(pick1(Sched::Ovf, &[3, 5], &[(4, 0), (6, 0)]), None);
        // Inactive sessions do not count.
        assert_eq!(pick1(Sched::Ovf, &[3, 5], &[(0, 0), (0, 100)]), Some(1));
    }

    #[test]
    fn idle_servers_follow_weights() {
        // wrr: exact proportions over whole cycles.
        let d = dests(&[5, 3, 2]);
        let mut s = Scheduler::new(Sched::Wrr, &d);
        let mut got = [0; 3];
        for _ in 0..1000 {
            got[s.pick(&d, &[], &key(0)).unwrap()] += 1;
        }
        assert_eq!(got, [500, 300, 200]);
        // wlc with sessions staying active: within 1 % of the weight share.
        let got = bound_shares(Sched::Wlc, &[5, 3, 2], 10_000);
        for (g, w) in got.iter().zip([5, 3, 2]) {
            assert!((*g as i64 - w * 1000).abs() <= 100, "{got:?}");
        }
        // sed the same.
        let got = bound_shares(Sched::Sed, &[5, 3, 2], 10_000);
        for (g, w) in got.iter().zip([5, 3, 2]) {
            assert!((*g as i64 - w * 1000).abs() <= 100, "{got:?}");
        }
        // lc ignores weights: even split.
        let got = bound_shares(Sched::Lc, &[5, 3, 2], 9_000);
        assert_eq!(got, [3000, 3000, 3000]);
    }

    #[test]
    fn twos_weighted_draws_and_lower_load() {
        // Idle: the first draw wins, drawn in [0, total] as IPVS (r <= 0 picks the first dest):
        // weights 1, 3 → P = 2/5, 3/5. Tolerance ±1.5 % over 100k picks.
        let d = dests(&[1, 3]);
        let st = stats(&[(0, 0), (0, 0)]);
        let mut s = Scheduler::new(Sched::Twos, &d);
        let mut got = [0usize; 2];
        for _ in 0..100_000 {
            got[s.pick(&d, &st, &key(0)).unwrap()] += 1;
        }
        let p0 = got[0] as f64 / 100_000.0;
        assert!((p0 - 0.4).abs() < 0.015, "{got:?}");
        // Larger weights: close to the weight share (1 + w0) / (1 + total).
        let d = dests(&[30, 70]);
        let st = stats(&[(0, 0), (0, 0)]);
        let mut s = Scheduler::new(Sched::Twos, &d);
        let mut got = [0usize; 2];
        for _ in 0..100_000 {
            got[s.pick(&d, &st, &key(0)).unwrap()] += 1;
        }
        let p0 = got[0] as f64 / 100_000.0;
        assert!((p0 - 31.0 / 101.0).abs() < 0.015, "{got:?}");
        // Loaded first dest: it wins only when both draws hit it: P ≈ (31/101)².
        let st = stats(&[(10, 0), (0, 0)]);
        let mut got = [0usize; 2];
        for _ in 0..100_000 {
            got[s.pick(&d, &st, &key(0)).unwrap()] += 1;
        }
        let p0 = got[0] as f64 / 100_000.0;
        assert!((p0 - (31.0f64 / 101.0).powi(2)).abs() < 0.015, "{got:?}");
        // Seeded differently per worker → different sequences, same law.
        let mut a = Scheduler::new(Sched::Twos, &d);
        let mut b = Scheduler::new(Sched::Twos, &d);
        b.seed(42);
        let st = stats(&[(0, 0), (0, 0)]);
        let sa: Vec<_> = (0..64).map(|_| a.pick(&d, &st, &key(0))).collect();
        let sb: Vec<_> = (0..64).map(|_| b.pick(&d, &st, &key(0))).collect();
        assert_ne!(sa, sb);
        assert_eq!(pick1(Sched::Twos, &[0, 0], &[(0, 0); 2]), None);
    }

    #[test]
    fn sh_table_weights_and_hash() {
        // ip_vs_sh_reassign: weights 2, 1 (and 0 still one bucket): 0 0 1 2 0 0 1 2 ...
        let d = dests(&[2, 1, 0]);
        let t = sh_table(&d);
        assert_eq!(&t[..8], &[0, 0, 1, 2, 0, 0, 1, 2]);
        let d = dests(&[3, 1]);
        let t = sh_table(&d);
        assert_eq!(t.iter().filter(|&&x| x == 0).count(), 192);
        // hash_32(addr + port, 8): 10.0.0.1 = 0x0a000001, × 0x61c88647 >> 24.
        let a = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(
            sh_hashkey(a, 0, 0),
            (0x0a00_0001u32.wrapping_mul(0x61c8_8647) >> 24) as usize
        );
        // dh: (addr * 2654435761) & 255.
        assert_eq!(
            dh_hashkey(a),
            (0x0a00_0001u32.wrapping_mul(2_654_435_761) & 255) as usize
        );
    }

    /// Same key → same dest on independent schedulers (two workers), for the hashing ones.
    #[test]
    fn hashing_is_worker_independent() {
        let d = dests(&[1, 2, 3, 4, 5]);
        let st = stats(&[(0, 0); 5]);
        for kind in [
            Sched::sh(),
            Sched::Sh {
                fallback: true,
                port: true,
            },
            Sched::Dh,
            Sched::mh(),
            Sched::Mh {
                fallback: true,
                port: true,
                table_size: 65537,
            },
        ] {
            let mut w0 = Scheduler::new(kind, &d);
            let mut w1 = Scheduler::new(kind, &d);
            let mut seen = [false; 5];
            for c in 0..2000u32 {
                let k = key(c.wrapping_mul(0x9E37_79B9));
                let a = w0.pick(&d, &st, &k);
                // Repeated on worker 0, then on worker 1 after unrelated picks.
                assert_eq!(a, w0.pick(&d, &st, &k), "{kind:?}");
                let _ = w1.pick(&d, &st, &key(c + 7));
                assert_eq!(a, w1.pick(&d, &st, &k), "{kind:?}");
                seen[a.unwrap()] = true;
            }
            if kind != Sched::Dh {
                assert_eq!(seen, [true; 5], "{kind:?}");
            }
        }
        // dh hashes the destination (one VIP → one dest); sh-port spreads one client's ports.
        let mut s = Scheduler::new(Sched::Dh, &d);
        let first = s.pick(&d, &st, &key(1));
        assert!((2..500).all(|c| s.pick(&d, &st, &key(c)) == first));
        let mut s = Scheduler::new(
            Sched::Sh {
                fallback: false,
                port: true,
            },
            &d,
        );
        let mut got = [false; 5];
        for p in 0..200u16 {
            let k = SchedKey::new(IpAddr::from([1, 2, 3, 4]), 1000 + p, key(0).daddr, 0);
            got[s.pick(&d, &st, &k).unwrap()] = true;
        }
        assert_eq!(got, [true; 5]);
    }

    #[test]
    fn sh_mh_unavailable_and_fallback() {
        for (plain, fb) in [
            (
                Sched::sh(),
                Sched::Sh {
                    fallback: true,
                    port: false,
                },
            ),
            (
                Sched::mh(),
                Sched::Mh {
                    fallback: true,
                    port: false,
                    table_size: 4093,
                },
            ),
        ] {
            let mut d = dests(&[1, 1, 1]);
            let st = stats(&[(0, 0); 3]);
            // Build with all available, then quiesce dest 1 (the table keeps it, as IPVS does
            // until the next reassign).
            let mut p = Scheduler::new(plain, &d);
            let mut f = Scheduler::new(fb, &d);
            let before: Vec<_> = (0..3000).map(|c| p.pick(&d, &st, &key(c))).collect();
            d[1].weight = 0;
            let mut none = 0;
            for c in 0..3000u32 {
                let a = p.pick(&d, &st, &key(c));
                let b = f.pick(&d, &st, &key(c));
                if before[c as usize] == Some(1) {
                    assert_eq!(a, None, "{plain:?}");
                    assert!(matches!(b, Some(0 | 2)), "{fb:?}");
                    none += 1;
                } else {
                    assert_eq!(a, before[c as usize]);
                    assert_eq!(b, before[c as usize]);
                }
            }
            assert!(none > 500, "{plain:?} {none}");
        }
    }

    /// A quiesced real server (weight 0, last weight kept) keeps its mh slots when the table is
    /// built again, as IPVS builds from `last_weight`: no other server's clients move. One down
    /// by its health check keeps them only under mh-fallback; without, its slots go to the
    /// others, so that no client is left without a server.
    #[test]
    fn mh_builds_from_the_last_weight() {
        let plain = Sched::mh();
        let fb = Sched::Mh {
            fallback: true,
            port: false,
            table_size: 4093,
        };
        let d = dests(&[2, 1, 3]);
        let full = Scheduler::new(plain, &d).mh_table().unwrap().to_vec();
        let mut q = d.clone();
        q[1].weight = 0;
        q[1].last_weight = 1;
        for kind in [plain, fb] {
            assert_eq!(Scheduler::new(kind, &q).mh_table().unwrap(), &full[..]);
        }
        // Without a last weight (added at 0), it has no slot.
        q[1].last_weight = 0;
        let without = Scheduler::new(plain, &q).mh_table().unwrap().to_vec();
        assert!(!without.contains(&1));
        assert_eq!(
            without,
            Scheduler::new(plain, &dests(&[2, 0, 3]))
                .mh_table()
                .unwrap()
        );
        // Down by its health check (weight 0, last weight 1).
        let mut h = d.clone();
        h[1].weight = 0;
        h[1].last_weight = 1;
        h[1].down = true;
        assert_eq!(Scheduler::new(plain, &h).mh_table().unwrap(), &without[..]);
        assert_eq!(Scheduler::new(fb, &h).mh_table().unwrap(), &full[..]);
        // Built ahead (the control thread's way) alike.
        let slot =
            |kind| mh_lookup(kind, h.iter().map(|x| (x.rip, x.rport, x.mh_weight(kind)))).unwrap();
        assert_eq!(&slot(plain)[..], &without[..]);
        assert_eq!(&slot(fb)[..], &full[..]);
        // Picks: the clients of the quiesced server find none (plain) or fall back; the
        // others keep theirs.
        let st = stats(&[(0, 0); 3]);
        q[1].last_weight = 1;
        let mut p = Scheduler::new(plain, &q);
        let mut f = Scheduler::new(fb, &q);
        let mut all = Scheduler::new(plain, &d);
        for c in 0..3000u32 {
            let before = all.pick(&d, &st, &key(c));
            let (a, b) = (p.pick(&q, &st, &key(c)), f.pick(&q, &st, &key(c)));
            if before == Some(1) {
                assert_eq!(a, None);
                assert!(matches!(b, Some(0 | 2)));
            } else {
                assert_eq!((a, b), (before, before));
            }
        }
    }

    /// The table built ahead on the control thread is the one a worker would build, and it is
    /// shared (not copied); one of another size is not used.
    #[test]
    fn maglev_table_built_ahead_is_the_workers() {
        let d = dests(&[1, 2, 3, 4]);
        let kind = Sched::Mh {
            fallback: false,
            port: false,
            table_size: 4093,
        };
        let ahead = mh_lookup(kind, d.iter().map(|x| (x.rip, x.rport, x.weight))).unwrap();
        let own = Scheduler::new(kind, &d);
        assert_eq!(own.mh_table().unwrap(), &ahead[..]);
        let shared = Scheduler::with_lookup(kind, &d, Some(&ahead));
        assert!(std::ptr::eq(shared.mh_table().unwrap(), &ahead[..]));
        let small = mh_lookup(
            Sched::Mh {
                fallback: false,
                port: false,
                table_size: 251,
            },
            d.iter().map(|x| (x.rip, x.rport, x.weight)),
        )
        .unwrap();
        let rebuilt = Scheduler::with_lookup(kind, &d, Some(&small));
        assert_eq!(rebuilt.mh_table().unwrap(), &ahead[..]);
        assert!(mh_lookup(Sched::Rr, d.iter().map(|x| (x.rip, x.rport, x.weight))).is_none());
    }

    /// Maglev: every slot filled, shares per weight, at most ~1/N of the keys move when one of N
    /// dests is removed.
    #[test]
    fn maglev_population_and_disruption() {
        for m in [4093u32, 65537] {
            let w = [1u32, 2, 3, 4];
            let d = dests(&w);
            let s = Scheduler::new(
                Sched::Mh {
                    fallback: false,
                    port: false,
                    table_size: m,
                },
                &d,
            );
            let t = s.mh_table().unwrap();
            assert_eq!(t.len(), m as usize);
            assert!(
                t.iter().all(|&x| (x as usize) < d.len()),
                "every slot filled"
            );
            for (i, &wi) in w.iter().enumerate() {
                let share = t.iter().filter(|&&x| x as usize == i).count() as f64 / m as f64;
                let want = wi as f64 / 10.0;
                assert!(
                    (share - want).abs() < 0.01,
                    "m {m} dest {i}: {share} vs {want}"
                );
            }
        }
        // Disruption: 10 equal dests, remove the 5th; keys = 100k client addresses.
        let n = 10;
        let m = 65537;
        let kind = Sched::Mh {
            fallback: false,
            port: false,
            table_size: m,
        };
        let d = dests(&vec![1; n]);
        let mut fewer = d.clone();
        let gone = fewer.remove(4);
        let st = stats(&vec![(0, 0); n]);
        let mut a = Scheduler::new(kind, &d);
        let mut b = Scheduler::new(kind, &fewer);
        let keys = 100_000u32;
        let mut moved = 0;
        let mut on_gone = 0;
        for c in 0..keys {
            let k = key(c.wrapping_mul(2_654_435_761).wrapping_add(12345));
            let x = d[a.pick(&d, &st, &k).unwrap()];
            let y = fewer[b.pick(&fewer, &st, &k).unwrap()];
            if x.id == gone.id {
                on_gone += 1;
            }
            if x.id != y.id {
                moved += 1;
            }
        }
        let frac = moved as f64 / keys as f64;
        let gone_frac = on_gone as f64 / keys as f64;
        // The removed dest's keys must move (≈ 1/N); the others barely (Maglev is near-minimal).
        assert!((gone_frac - 0.1).abs() < 0.01, "{gone_frac}");
        assert!(frac <= 1.0 / n as f64 + 0.02, "moved {frac}");
        // Table-level: slots that changed owner, besides the removed dest's.
        let ta = a.mh_table().unwrap();
        let tb = b.mh_table().unwrap();
        let map = |i: u32, v: &[Dest]| v[i as usize].id;
        let changed = ta
            .iter()
            .zip(tb)
            .filter(|(&x, &y)| map(x, &d) != gone.id && map(x, &d) != map(y, &fewer))
            .count();
        assert!(
            (changed as f64) / (m as f64) < 0.02,
            "extra moves {changed}"
        );
        eprintln!(
            "maglev N={n} M={m}: keys moved {frac:.4} (on the removed dest {gone_frac:.4}), \
             other slots reassigned {:.4}",
            changed as f64 / m as f64
        );
    }

    #[test]
    fn mh_weights_shift_like_ipvs() {
        // Huge weights are scaled down (rshift) but shares stay.
        let d = dests(&[65_000, 130_000]);
        let s = Scheduler::new(Sched::mh(), &d);
        let t = s.mh_table().unwrap();
        let share1 = t.iter().filter(|&&x| x == 1).count() as f64 / t.len() as f64;
        assert!((share1 - 2.0 / 3.0).abs() < 0.02, "{share1}");
        // All weight 0: empty table, nothing picked.
        let d = dests(&[0, 0]);
        let mut s = Scheduler::new(Sched::mh(), &d);
        assert!(s.mh_table().unwrap().iter().all(|&x| x == NONE));
        assert_eq!(s.pick(&d, &[], &key(1)), None);
    }

    #[test]
    fn lblc_locality_overload_and_expiry() {
        let d = dests(&[1, 1]);
        let mut s = Scheduler::new(Sched::Lblc, &d);
        let at = |ms: u64| {
            SchedKey::new(
                IpAddr::from([1, 1, 1, 1]),
                1,
                IpAddr::from([9, 9, 9, 9]),
                ms,
            )
        };
        // Empty cache: wlc → dest 1 (less loaded); cached.
        let st = stats(&[(1, 0), (0, 0)]);
        assert_eq!(s.pick(&d, &st, &at(0)), Some(1));
        // Now dest 1 is more loaded, but the cache keeps the locality.
        let st = stats(&[(0, 0), (1, 5)]);
        assert_eq!(s.pick(&d, &st, &at(1000)), Some(1));
        // A different destination address is scheduled on its own.
        let other = SchedKey::new(IpAddr::from([1, 1, 1, 1]), 1, IpAddr::from([9, 9, 9, 8]), 0);
        assert_eq!(s.pick(&d, &st, &other), Some(0));
        // lblc overload: active 2 > weight 1 while dest 0 has 0*2 < 1 → reschedule to 0.
        let st = stats(&[(0, 0), (2, 0)]);
        assert_eq!(s.pick(&d, &st, &at(2000)), Some(0));
        // ... and the entry now points at 0, even when 1 is idle again.
        let st = stats(&[(0, 9), (0, 0)]);
        assert_eq!(s.pick(&d, &st, &at(3000)), Some(0));
        // Unused for 24 h: expired, rescheduled (wlc → 1).
        assert_eq!(s.pick(&d, &st, &at(3000 + LBLC_EXPIRATION_MS - 1)), Some(0));
        let t = 3000 + 2 * LBLC_EXPIRATION_MS;
        assert_eq!(s.pick(&d, &st, &at(t)), Some(1));
    }

    #[test]
    fn lblcr_replicates_and_shrinks() {
        let d = dests(&[1, 1, 1]);
        let mut s = Scheduler::new(Sched::Lblcr, &d);
        let at = |ms: u64| {
            SchedKey::new(
                IpAddr::from([1, 1, 1, 1]),
                1,
                IpAddr::from([9, 9, 9, 9]),
                ms,
            )
        };
        let st = stats(&[(0, 0), (0, 0), (0, 0)]);
        assert_eq!(s.pick(&d, &st, &at(0)), Some(0));
        // Dest 0 overloaded in lblc's sense (2 > 1, dest 1 idle): wlc adds 1 to the set.
        let st = stats(&[(2, 0), (0, 0), (1, 0)]);
        assert_eq!(s.pick(&d, &st, &at(1)), Some(1));
        // The set {1, 0}: least loaded member wins, not the global least (2).
        let st = stats(&[(1, 0), (1, 1), (0, 0)]);
        assert_eq!(s.pick(&d, &st, &at(2)), Some(0));
        // Used (no set change) half-way, so the entry itself does not expire.
        assert_eq!(s.pick(&d, &st, &at(LBLCR_EXPIRATION_MS / 2)), Some(0));
        // 24 h without a set change: the most loaded member (1) is dropped, set_min still
        // answers from the old set this time (as IPVS).
        let t = 2 + LBLCR_EXPIRATION_MS;
        let st = stats(&[(1, 0), (1, 9), (0, 0)]);
        assert_eq!(s.pick(&d, &st, &at(t)), Some(0));
        // Now only {0}: with 1 least loaded, 0 is still used.
        let st = stats(&[(1, 0), (0, 0), (0, 0)]);
        assert_eq!(s.pick(&d, &st, &at(t + 1)), Some(0));
    }

    #[test]
    fn thresholds_overload_and_recovery() {
        let mut d = dests(&[1, 1]);
        d[0].upper = 10;
        d[0].lower = 5;
        let mut s = Scheduler::new(Sched::Wlc, &d);
        let st = stats(&[(0, 8), (100, 0)]);
        // 8 sessions: available (wlc would pick it anyway: 8 < 25600).
        assert_eq!(s.pick(&d, &st, &key(0)), Some(0));
        st[0].inactive.inc(); // 9 → the 10th, bound: overloaded from then on.
        assert_eq!(s.pick(&d, &st, &key(0)), Some(0));
        s.bind(0, &d, &st);
        st[0].inactive.inc();
        assert_eq!(s.pick(&d, &st, &key(0)), Some(1));
        // Dropping to 5 is not below lower: still overloaded.
        st[0].inactive.sub(5);
        assert_eq!(s.pick(&d, &st, &key(0)), Some(1));
        // 4 < 5: recovered.
        st[0].inactive.dec();
        assert_eq!(s.pick(&d, &st, &key(0)), Some(0));
        // lower 0: recovery below 3/4 of upper (8 → total*4 < 24 → below 6).
        let mut d = dests(&[1, 1]);
        d[0].upper = 8;
        let mut s = Scheduler::new(Sched::Rr, &d);
        let st = stats(&[(4, 4), (0, 0)]);
        assert_eq!(s.pick(&d, &st, &key(0)), Some(1));
        assert_eq!(s.pick(&d, &st, &key(0)), Some(1));
        st[0].active.sub(2); // 6: not yet
        assert_eq!(s.pick(&d, &st, &key(0)), Some(1));
        st[0].active.dec(); // 5 < 6
        assert_eq!(s.pick(&d, &st, &key(0)), Some(0));
        // Every scheduler skips an overloaded dest (lblc's cache aside, it has its own rule).
        let mut d = dests(&[5, 1]);
        d[0].upper = 1;
        let st = stats(&[(1, 0), (1, 0)]);
        for kind in all_kinds() {
            if kind == Sched::Lblc {
                continue;
            }
            let mut s = Scheduler::new(kind, &d);
            for c in 0..50 {
                assert_ne!(s.pick(&d, &st, &key(c)), Some(0), "{kind:?}");
            }
        }
    }

    /// Thresholds and lc-family decisions use each worker's own counts: two workers with skewed
    /// counts decide differently for the same global load.
    #[test]
    fn per_worker_counts_two_workers() {
        let mut d = dests(&[1, 1]);
        d[0].upper = 8;
        // Global: dest 0 has 12 sessions (over 8), dest 1 has 12. Worker 0 holds 10 + 2,
        // worker 1 holds 2 + 10 (skewed RSS).
        let w0 = stats(&[(10, 0), (2, 0)]);
        let w1 = stats(&[(2, 0), (10, 0)]);
        let mut s0 = Scheduler::new(Sched::Wlc, &d);
        let mut s1 = Scheduler::new(Sched::Wlc, &d);
        // Worker 0 sees dest 0 overloaded (10 >= 8) and loaded: dest 1.
        assert_eq!(s0.pick(&d, &w0, &key(0)), Some(1));
        // Worker 1 sees 2 sessions on dest 0: not overloaded, and the least loaded.
        assert_eq!(s1.pick(&d, &w1, &key(0)), Some(0));
        // Even balanced per-core counts of 6 + 6 (12 globally, over 8) overload nothing: the
        // threshold is per worker (≈ n × upper globally).
        let even = stats(&[(6, 0), (0, 0)]);
        let mut s = Scheduler::new(Sched::Fo, &d);
        assert_eq!(s.pick(&d, &even, &key(0)), Some(0));
    }

    fn all_kinds() -> Vec<Sched> {
        vec![
            Sched::Rr,
            Sched::Wrr,
            Sched::Lc,
            Sched::Wlc,
            Sched::Sed,
            Sched::Nq,
            Sched::sh(),
            Sched::Sh {
                fallback: true,
                port: true,
            },
            Sched::Dh,
            Sched::Lblc,
            Sched::Lblcr,
            Sched::Fo,
            Sched::Ovf,
            Sched::mh(),
            Sched::Mh {
                fallback: true,
                port: true,
                table_size: 251,
            },
            Sched::Twos,
        ]
    }

    #[test]
    fn weight_zero_quiesces_everywhere() {
        let d = dests(&[0, 3, 0, 1]);
        let st = stats(&[(0, 0); 4]);
        for kind in all_kinds() {
            let mut s = Scheduler::new(kind, &d);
            let mut any = false;
            for c in 0..500u32 {
                // Vary the destination too (dh, lblc, lblcr hash it).
                let k = SchedKey::new(
                    IpAddr::from(c.to_be_bytes()),
                    c as u16,
                    IpAddr::from((c ^ 0x0a00_0000).to_be_bytes()),
                    0,
                );
                match s.pick(&d, &st, &k) {
                    Some(i) => {
                        assert!(d[i].weight > 0, "{kind:?} picked quiesced {i}");
                        any = true;
                    }
                    None => assert!(
                        matches!(
                            kind,
                            Sched::Sh {
                                fallback: false,
                                ..
                            } | Sched::Dh
                                | Sched::Mh {
                                    fallback: false,
                                    ..
                                }
                        ),
                        "{kind:?}"
                    ),
                }
            }
            assert!(any, "{kind:?}");
            let z = dests(&[0, 0]);
            let mut s = Scheduler::new(kind, &z);
            assert_eq!(s.pick(&z, &st, &key(1)), None, "{kind:?}");
            let mut s = Scheduler::new(kind, &[]);
            assert_eq!(s.pick(&[], &st, &key(1)), None, "{kind:?}");
        }
    }
}
