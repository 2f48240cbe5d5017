//! LIP:lport allocation for FULLNAT sessions.
//!
//! Worker `w` of `n` owns the lports with `lport % n == w`, so the owner of a reply (to LIP:lport)
//! is computable from the packet alone. Each worker keeps, per LIP, a FIFO of its free lports with
//! the time each becomes reusable: a released lport goes to the tail and is not handed out before
//! `reuse_delay_ms` (the real server may hold RIP:rport ↔ LIP:lport in TIME_WAIT). Allocation
//! takes the head of the first LIP (rotating over the service's LIPs) whose head is ready.
//!
//! With [`RssConf`], allocation prefers (among the first [`RSS_TRIES`] ready ports of a LIP) an
//! lport whose reply tuple the NIC steers to this worker's queue, and falls back to the head (any
//! ready lport). Misfits are rotated to the tail only while every port of the FIFO is ready, so
//! a ready port never waits behind one in its reuse delay.
//!
//! Pools are created by the control path ([`LportAlloc::pool`]) and never removed, so sessions
//! keep a stable pool index across service updates. Once [`MAX_LIPS`] pools exist, a new LIP
//! takes over the pool of a LIP no service uses any more and none of whose lports is out (every
//! one back in its FIFO: no session refers to the pool), so LIP churn over a long run does not
//! wear the pools out ([`LportAlloc::pool_in`]).

use crate::config::RssConf;
use crate::fixedmap::FixedMap;
use crate::toeplitz::rss_ipv4_l4;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};

/// Ready lports examined per LIP for an RSS match.
pub const RSS_TRIES: usize = 8;
/// Most LIPs (pools) per worker.
pub const MAX_LIPS: usize = 1024;
/// FIFO entries ahead of the head whose cache line an allocation prefetches (4 entries of 16
/// bytes per line: the next line).
const PREFETCH_AHEAD: usize = 4;

/// The lports of `min..=max` worker `worker` of `n` owns (`lport % n == worker`).
fn owned_ports(min: u16, max: u16, worker: u16, n: u16) -> impl Iterator<Item = u16> {
    (min..=max).filter(move |p| p % n == worker)
}

/// Free lports of one LIP on one worker. One cache line (64-byte aligned): the worker writes the
/// FIFO's head and length on every allocation and release, and the pools are allocated by the
/// thread that builds the worker, which must not have objects on the same lines.
#[repr(align(64))]
pub struct LipPool {
    /// The LIP.
    pub lip: IpAddr,
    /// (lport, reusable from this time in ms), oldest release first.
    free: VecDeque<(u16, u64)>,
}

impl LipPool {
    /// Free lports (ready or not).
    pub fn free_len(&self) -> usize {
        self.free.len()
    }

    /// Take the head of the FIFO, and prefetch the line after it. The FIFO is walked in order,
    /// one line per 4 allocations from this LIP, and a line comes back to the head only after
    /// every other free lport of the LIP was handed out: long out of every cache (64K lports ×
    /// 16 bytes per LIP). Without the prefetch, that read is a memory miss every 4 allocations.
    #[inline]
    fn take(&mut self) -> Option<u16> {
        let (port, _) = self.free.pop_front()?;
        if let Some(e) = self.free.get(PREFETCH_AHEAD) {
            crate::session::prefetch(e);
        }
        Some(port)
    }
}

/// The lport allocator of one worker.
pub struct LportAlloc {
    pools: Vec<LipPool>,
    by_lip: FixedMap<IpAddr, u16>,
    worker: u16,
    n_workers: u16,
    /// `n_workers - 1` when it is a power of two (the owner is a mask), else `u16::MAX`.
    owner_mask: u16,
    min: u16,
    max: u16,
    reuse_delay_ms: u64,
    rss: Option<RssConf>,
    /// Lports each pool owns (its FIFO's length when none is out).
    per_pool: usize,
    /// The worker's time (ms) as of its last expiry step ([`LportAlloc::tick`]): a pool is taken
    /// over only once its last released lport's reuse delay is over by this clock.
    clock: u64,
}

impl LportAlloc {
    /// An allocator without pools.
    pub fn new(
        worker: u16,
        n_workers: u16,
        min: u16,
        max: u16,
        reuse_delay_ms: u64,
        rss: Option<RssConf>,
    ) -> Self {
        LportAlloc {
            pools: Vec::new(),
            by_lip: FixedMap::with_capacity(MAX_LIPS),
            worker,
            n_workers: n_workers.max(1),
            owner_mask: if n_workers.max(1).is_power_of_two() {
                n_workers.max(1) - 1
            } else {
                u16::MAX
            },
            min,
            max,
            reuse_delay_ms,
            rss: rss.filter(|r| !r.reta.is_empty()),
            per_pool: owned_ports(min, max, worker, n_workers.max(1)).count(),
            clock: 0,
        }
    }

    /// The worker whose RX queue RSS steers the IPv4 flow `src:sport → dst:dport` of IP protocol
    /// `proto` to (queue `q` is worker `q`, as rvsd sets ports up), when the port's RSS key and
    /// table are known; `None` otherwise (and always with one worker: every flow is its own).
    pub fn rss_owner(
        &self,
        proto: u8,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        sport: u16,
        dport: u16,
    ) -> Option<u16> {
        if self.n_workers == 1 {
            return Some(0);
        }
        let q = rss_queue(self.rss.as_ref()?, proto, src, dst, sport, dport);
        (q < self.n_workers).then_some(q)
    }

    /// The worker owning `lport` (`lport % n_workers`; a mask for 1, 2, 4, ... workers, so
    /// the usual case costs no division on every reply).
    #[inline(always)]
    pub fn owner(&self, lport: u16) -> u16 {
        if self.owner_mask != u16::MAX {
            lport & self.owner_mask
        } else {
            lport % self.n_workers
        }
    }

    /// True when `lport` is in the configured lport range.
    #[inline(always)]
    pub fn in_range(&self, lport: u16) -> bool {
        (self.min..=self.max).contains(&lport)
    }

    /// Pool index of `lip`, if it is a LIP.
    #[inline]
    pub fn pool_of(&self, lip: IpAddr) -> Option<u16> {
        self.by_lip.get(&lip).copied()
    }

    /// Whether pools for all of `lips` (a service set's LIPs) can exist: those without one yet
    /// fit under [`MAX_LIPS`], or take over pools that [`LportAlloc::pool_in`] may reclaim.
    /// Control path.
    pub fn fits<'a>(&self, lips: impl Iterator<Item = &'a IpAddr>) -> bool {
        let mut all: Vec<IpAddr> = lips.copied().collect();
        all.sort_unstable();
        let mut new: Vec<IpAddr> = all
            .iter()
            .filter(|l| self.pool_of(**l).is_none())
            .copied()
            .collect();
        new.dedup();
        let room = MAX_LIPS - self.pools.len().min(MAX_LIPS);
        new.len() <= room || new.len() <= room + self.reclaimable(&all).count()
    }

    /// Pools a new LIP may take over: their LIP is not in `keep` (sorted: the LIPs of the set
    /// being attached and of the one in force), none of their lports is out, and the last one
    /// released is past its reuse delay (so the LIP, should it come back on another pool, has
    /// no 4-tuple a real server may still hold in TIME_WAIT).
    fn reclaimable<'a>(&'a self, keep: &'a [IpAddr]) -> impl Iterator<Item = usize> + 'a {
        self.pools
            .iter()
            .enumerate()
            .filter(move |(_, p)| {
                keep.binary_search(&p.lip).is_err()
                    && p.free.len() == self.per_pool
                    && p.free.back().is_none_or(|&(_, ready)| ready <= self.clock)
            })
            .map(|(i, _)| i)
    }

    /// The pool of `lip`, created (allocating its FIFO) when new. Control path. None when
    /// [`MAX_LIPS`] pools exist (this one takes over no pool: see [`LportAlloc::pool_in`]).
    pub fn pool(&mut self, lip: IpAddr) -> Option<u16> {
        if self.pool_of(lip).is_none() && self.pools.len() >= MAX_LIPS {
            return None;
        }
        self.pool_in(lip, &[])
    }

    /// [`LportAlloc::pool`] for a LIP of the service set whose LIPs are `keep` (sorted): when
    /// [`MAX_LIPS`] pools exist, `lip` takes over a pool no LIP of `keep` has and none of whose
    /// lports is out (its lports start ready: the reuse delay guarded another LIP's 4-tuples).
    /// Control path.
    pub fn pool_in(&mut self, lip: IpAddr, keep: &[IpAddr]) -> Option<u16> {
        if let Some(i) = self.pool_of(lip) {
            return Some(i);
        }
        if self.pools.len() >= MAX_LIPS {
            let i = self.reclaimable(keep).next()?;
            let old = self.pools[i].lip;
            self.by_lip.remove(&old);
            let ports = owned_ports(self.min, self.max, self.worker, self.n_workers);
            let p = &mut self.pools[i];
            p.lip = lip;
            p.free.clear();
            p.free.extend(ports.map(|q| (q, 0)));
            self.by_lip.insert(lip, i as u16).ok()?;
            return Some(i as u16);
        }
        let idx = self.pools.len() as u16;
        let free: VecDeque<(u16, u64)> =
            owned_ports(self.min, self.max, self.worker, self.n_workers)
                .map(|p| (p, 0))
                .collect();
        self.pools.push(LipPool { lip, free });
        self.by_lip.insert(lip, idx).ok()?;
        Some(idx)
    }

    /// Pools made so far (their indices are `0..pool_count()`).
    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    /// Pool `i`.
    pub fn get(&self, i: u16) -> Option<&LipPool> {
        self.pools.get(i as usize)
    }

    /// Allocate an lport on one of `pools` (tried in order from `start`) for a session toward
    /// `rip:rport`. Returns (index into `pools`, lport), or None when every LIP's FIFO head is
    /// still in its reuse delay (or empty). Never allocates.
    pub fn alloc(
        &mut self,
        pools: &[u16],
        start: usize,
        proto: u8,
        rip: IpAddr,
        rport: u16,
        now_ms: u64,
    ) -> Option<(usize, u16)> {
        // Where the NIC hashes this protocol on addresses only, no port steers the reply.
        let rss = self.rss.as_ref().filter(|r| r.hashes_ports(proto));
        let n = pools.len();
        // A wrap instead of `% n`: no division per new connection.
        let start = if start < n { start } else { 0 };
        for k in 0..n {
            let pi = if start + k < n {
                start + k
            } else {
                start + k - n
            };
            let Some(pool) = self.pools.get_mut(pools[pi] as usize) else {
                continue;
            };
            let Some(&(_, ready)) = pool.free.front() else {
                continue;
            };
            if ready > now_ms {
                continue;
            }
            if let (Some(rss), IpAddr::V4(r4), IpAddr::V4(l4)) = (rss, rip, pool.lip) {
                // Invariant: the ready ports are a prefix of the FIFO (releases append ever
                // later times; a port is rotated to the tail only when the tail is ready too).
                let tries = RSS_TRIES.min(pool.free.len());
                if pool.free.back().is_some_and(|&(_, r)| r <= now_ms) {
                    // All ready: rotate the misfits to the tail, so the next allocations
                    // look at fresh ports.
                    for _ in 0..tries {
                        let (port, _) = pool.free[0];
                        if rss_queue(rss, proto, r4, l4, rport, port) == self.worker {
                            break;
                        }
                        let e = pool.free.pop_front()?;
                        pool.free.push_back(e);
                    }
                } else {
                    // Some still in their reuse delay: a misfit rotated behind them would wait
                    // there, and the head could become one of them (a LIP with ready ports
                    // refusing the connection). Take the first fit of the ready prefix out of
                    // the middle instead; the others stay where they are.
                    let fit = (0..tries)
                        .take_while(|&i| pool.free[i].1 <= now_ms)
                        .find(|&i| {
                            rss_queue(rss, proto, r4, l4, rport, pool.free[i].0) == self.worker
                        });
                    if let Some(i) = fit.filter(|&i| i > 0) {
                        return pool.free.remove(i).map(|(p, _)| (pi, p));
                    }
                }
                // The head: a fit, or any ready port (it is ready: all are, or see above).
            }
            return pool.take().map(|p| (pi, p));
        }
        None
    }

    /// Advance the clock pools' reuse delays are judged by (every poll's expiry step).
    #[inline(always)]
    pub fn tick(&mut self, now_ms: u64) {
        self.clock = self.clock.max(now_ms);
    }

    /// Give `lport` back to pool `pool`: reusable from `now_ms + reuse_delay_ms`.
    #[inline]
    pub fn release(&mut self, pool: u16, lport: u16, now_ms: u64) {
        if let Some(p) = self.pools.get_mut(pool as usize) {
            // The FIFO was created with room for every port it owns: never reallocates.
            if p.free.len() < p.free.capacity() {
                p.free
                    .push_back((lport, now_ms.saturating_add(self.reuse_delay_ms)));
            }
        }
    }

    /// Give back an lport that was allocated but never used (immediately reusable, at the head).
    #[inline]
    pub fn unalloc(&mut self, pool: u16, lport: u16) {
        if let Some(p) = self.pools.get_mut(pool as usize) {
            if p.free.len() < p.free.capacity() {
                p.free.push_front((lport, 0));
            }
        }
    }
}

/// RSS queue of the reply tuple RIP:rport → LIP:lport of IP protocol `proto` (its addresses
/// only where the NIC does not hash that protocol's ports).
#[inline]
pub fn rss_queue(
    rss: &RssConf,
    proto: u8,
    rip: Ipv4Addr,
    lip: Ipv4Addr,
    rport: u16,
    lport: u16,
) -> u16 {
    let h = if rss.hashes_ports(proto) {
        rss_ipv4_l4(&rss.key, rip, lip, rport, lport)
    } else {
        crate::toeplitz::rss_ipv4(&rss.key, rip, lip)
    };
    rss.reta[h as usize % rss.reta.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn owner_is_lport_mod_workers() {
        for n in 1..=6u16 {
            let a = LportAlloc::new(0, n, 1000, 1009, 0, None);
            for p in [0u16, 1, 2, 3, 1000, 4095, 65534, 65535] {
                assert_eq!(a.owner(p), p % n, "{p} % {n}");
            }
        }
    }

    /// Past MAX_LIPS, a new LIP takes over the pool of a LIP the new set does not keep, once
    /// none of its lports is out; a LIP with an lport out, or one the set keeps, is never taken.
    #[test]
    fn lip_churn_reuses_idle_pools() {
        let mut a = LportAlloc::new(0, 1, 1000, 1003, 5000, None);
        let lip = |i: usize| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32));
        for i in 0..MAX_LIPS {
            assert_eq!(a.pool(lip(i)), Some(i as u16));
        }
        let rip = ip("10.1.0.1");
        // Pool 0 has an lport out; pool 1's LIP is kept by the new set.
        let (_, out) = a.alloc(&[0], 0, 6, rip, 80, 0).unwrap();
        let new = lip(5000);
        let mut keep = vec![lip(1), new];
        keep.sort_unstable();
        assert!(a.fits([lip(1), new].iter()));
        assert_eq!(
            a.pool_in(new, &keep),
            Some(2),
            "the first idle pool not kept"
        );
        assert_eq!(a.pool_of(new), Some(2));
        assert_eq!(a.pool_of(lip(2)), None, "its old LIP is gone");
        assert_eq!(a.get(2).unwrap().lip, new);
        assert_eq!(a.get(2).unwrap().free_len(), 4, "all its lports, ready");
        assert!(a.alloc(&[2], 0, 6, rip, 80, 0).is_some());
        // Pool 0's lport back at 10 ms: idle, but in its reuse delay (to 5 010 ms) it is not
        // taken (its LIP, back on another pool, could meet a real server's TIME_WAIT); pool 1
        // (its LIP no longer kept) is.
        a.release(0, out, 10);
        assert_eq!(a.pool_in(lip(6000), &[lip(6000)]), Some(1));
        // Once the clock passes 5 010 ms, pool 0 can be taken.
        a.tick(6000);
        assert_eq!(a.pool_in(lip(6001), &[lip(6001)]), Some(0));
        // `pool` never takes a pool over.
        assert_eq!(a.pool(lip(6002)), None);
        // Nothing idle left outside what is kept: refused, and `fits` says so first.
        let all: Vec<IpAddr> = (0..MAX_LIPS).map(lip).collect();
        let mut keep: Vec<IpAddr> = a.pools.iter().map(|p| p.lip).chain([lip(7000)]).collect();
        keep.sort_unstable();
        assert!(!a.fits(keep.iter()));
        assert_eq!(a.pool_in(lip(7000), &keep), None);
        assert!(a.fits(all.iter().take(10)));
    }

    #[test]
    fn ownership_fifo_and_reuse_delay() {
        let mut a = LportAlloc::new(1, 2, 1000, 1009, 5000, None);
        let l1 = a.pool(ip("10.0.0.1")).unwrap();
        assert_eq!(a.pool(ip("10.0.0.1")), Some(l1));
        assert_eq!(a.get(l1).unwrap().free_len(), 5);
        let rip = ip("10.1.0.1");
        let mut got = Vec::new();
        for _ in 0..5 {
            let (_, p) = a.alloc(&[l1], 0, 6, rip, 80, 0).unwrap();
            assert_eq!(a.owner(p), 1);
            got.push(p);
        }
        assert_eq!(got, vec![1001, 1003, 1005, 1007, 1009]);
        assert!(a.alloc(&[l1], 0, 6, rip, 80, 0).is_none());
        a.release(l1, 1003, 100);
        assert!(a.alloc(&[l1], 0, 6, rip, 80, 5099).is_none());
        assert_eq!(a.alloc(&[l1], 0, 6, rip, 80, 5100), Some((0, 1003)));
        // A second LIP is used when the first one's head is too young.
        let l2 = a.pool(ip("10.0.0.2")).unwrap();
        a.release(l1, 1005, 6000);
        assert_eq!(a.alloc(&[l1, l2], 0, 6, rip, 80, 6001), Some((1, 1001)));
    }

    #[test]
    fn rss_preference() {
        let rss = RssConf::new(
            crate::toeplitz::MS_KEY.to_vec(),
            (0..128).map(|i| i % 4).collect(),
        );
        let mut a = LportAlloc::new(0, 1, 1025, 65535, 0, Some(rss.clone()));
        let lip = ip("192.0.2.100");
        let p = a.pool(lip).unwrap();
        let (IpAddr::V4(r4), IpAddr::V4(l4)) = (ip("10.1.0.5"), lip) else {
            unreachable!()
        };
        let mut hits = 0;
        for _ in 0..100 {
            let (_, port) = a.alloc(&[p], 0, 6, IpAddr::V4(r4), 8080, 0).unwrap();
            if rss_queue(&rss, 6, r4, l4, 8080, port) == 0 {
                hits += 1;
            }
        }
        // 1 in 4 at random; with 8 tries nearly always a match.
        assert!(hits > 80, "{hits}");
    }

    /// A NIC that hashes UDP on the addresses only: every lport of a (RIP, LIP) pair gives its
    /// replies the same queue, so none is searched for (the head is taken, the FIFO left in
    /// order); TCP still steers.
    #[test]
    fn rss_without_udp_ports_takes_the_head() {
        let mut rss = RssConf::new(
            crate::toeplitz::MS_KEY.to_vec(),
            (0..128).map(|i| i % 4).collect(),
        );
        rss.udp_ports = false;
        let lip = ip("192.0.2.100");
        let (IpAddr::V4(r4), IpAddr::V4(l4)) = (ip("10.1.0.5"), lip) else {
            unreachable!()
        };
        let q = rss_queue(&rss, 17, r4, l4, 53, 1025);
        assert!((1025..2000).all(|p| rss_queue(&rss, 17, r4, l4, 53, p) == q));
        assert_eq!(q, rss_queue(&rss, 17, r4, l4, 1, 1));
        assert_ne!(
            (1025..2000)
                .map(|p| rss_queue(&rss, 6, r4, l4, 53, p))
                .min(),
            (1025..2000)
                .map(|p| rss_queue(&rss, 6, r4, l4, 53, p))
                .max(),
            "TCP ports are hashed"
        );
        let mut a = LportAlloc::new(0, 1, 1025, 65535, 0, Some(rss));
        let p = a.pool(lip).unwrap();
        let got: Vec<u16> = (0..10)
            .map(|_| a.alloc(&[p], 0, 17, IpAddr::V4(r4), 53, 0).unwrap().1)
            .collect();
        assert_eq!(got, (1025..1035).collect::<Vec<u16>>());
        // The flow owner of a UDP flow is its addresses' queue.
        let mut two = LportAlloc::new(0, 4, 1025, 65535, 0, a.rss.clone());
        let _ = two.pool(lip);
        assert_eq!(two.rss_owner(17, r4, l4, 7, 9), Some(q));
    }

    /// Ports in their reuse delay behind the ready ones never make a LIP with ready ports refuse
    /// a connection, and the ports that did not fit stay ready at the head.
    #[test]
    fn rss_never_refuses_a_ready_port() {
        let rss = RssConf::new(
            crate::toeplitz::MS_KEY.to_vec(),
            (0..128).map(|i| i % 4).collect(),
        );
        let (rip, lip) = (ip("10.1.0.5"), ip("192.0.2.100"));
        let (IpAddr::V4(r4), IpAddr::V4(l4)) = (rip, lip) else {
            unreachable!()
        };
        let mut a = LportAlloc::new(0, 1, 1025, 1040, 120_000, Some(rss.clone()));
        let p = a.pool(lip).unwrap();
        // Hand every port out, then give back one that does not fit this worker's queue (at 0:
        // ready at 120 000) and the others later (at 60 000: ready at 180 000).
        let mut ports = Vec::new();
        while let Some((_, port)) = a.alloc(&[p], 0, 6, rip, 8080, 0) {
            ports.push(port);
        }
        let misfit = *ports
            .iter()
            .find(|&&q| rss_queue(&rss, 6, r4, l4, 8080, q) != 0)
            .expect("a port for another queue");
        a.release(p, misfit, 0);
        for &q in ports.iter().filter(|&&q| q != misfit) {
            a.release(p, q, 60_000);
        }
        // At 130 000 only the misfit is ready: it is handed out (the fallback), not refused.
        assert_eq!(a.alloc(&[p], 0, 6, rip, 8080, 130_000), Some((0, misfit)));
        assert_eq!(a.alloc(&[p], 0, 6, rip, 8080, 130_000), None);
        // Once the others are ready, a fitting one is preferred and the misfits stay in order.
        let (_, got) = a.alloc(&[p], 0, 6, rip, 8080, 180_000).unwrap();
        let fifo: Vec<u16> = ports.iter().copied().filter(|&q| q != misfit).collect();
        let first_fit = fifo
            .iter()
            .take(RSS_TRIES)
            .copied()
            .find(|&q| rss_queue(&rss, 6, r4, l4, 8080, q) == 0);
        // The first fit among the first RSS_TRIES, else (all of them rotated behind) the head.
        assert_eq!(
            got,
            first_fit.unwrap_or(fifo[RSS_TRIES.min(fifo.len()) % fifo.len()])
        );
        assert_eq!(a.get(p).unwrap().free_len(), ports.len() - 2);
    }
}
