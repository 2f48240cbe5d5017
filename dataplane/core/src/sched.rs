//! Per-worker schedulers (IPVS semantics): pick the real server for a new session.
//!
//! Each worker runs its own scheduler state (no sharing between cores), so with `n` workers the
//! global sequence is the interleaving of `n` IPVS sequences. Weight 0 quiesces a dest: it gets no
//! new sessions while its existing ones continue. [`Scheduler::pick`] receives the per-core
//! [`DestStats`] so connection-count schedulers (lc, wlc, ...) can be added as new variants.

use crate::counters::Counter;
use std::net::IpAddr;

/// A real server as the scheduler and the packet path see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// Per-core counters of one dest (single writer: the worker). `active` and `inactive` are gauges
/// (sessions currently ESTABLISHED / in any other state, UDP counting as inactive as ipvsadm shows
/// it); the others are totals.
#[derive(Default, Debug)]
pub struct DestStats {
    /// Sessions in ESTABLISHED.
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
}

/// Scheduler state of one service on one worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// Round robin: `next` is where the next search starts.
    Rr {
        /// Index of the dest after the last one picked.
        next: usize,
    },
    /// Weighted round robin, IPVS's `ip_vs_wrr` (not smooth WRR).
    Wrr(WrrMark),
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
    fn pick(&mut self, dests: &[Dest]) -> Option<usize> {
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
                if dests[i].weight as i64 >= self.cw {
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

impl Scheduler {
    /// Fresh state of `kind` for `dests`.
    pub fn new(kind: crate::config::Sched, dests: &[Dest]) -> Self {
        match kind {
            crate::config::Sched::Rr => Scheduler::Rr { next: 0 },
            crate::config::Sched::Wrr => Scheduler::Wrr(WrrMark::new(dests)),
        }
    }

    /// Pick a dest for a new session: an index into `dests`, or None when every dest has weight
    /// 0 (or there is none). `_stats` (indexed by dest id) is for connection-count schedulers.
    #[inline]
    pub fn pick(&mut self, dests: &[Dest], _stats: &[DestStats]) -> Option<usize> {
        match self {
            Scheduler::Rr { next } => {
                let n = dests.len();
                for k in 0..n {
                    let i = (*next + k) % n;
                    if dests[i].weight > 0 {
                        *next = (i + 1) % n;
                        return Some(i);
                    }
                }
                None
            }
            Scheduler::Wrr(m) => m.pick(dests),
        }
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
            })
            .collect()
    }

    fn seq(kind: Sched, w: &[u32], n: usize) -> Vec<Option<usize>> {
        let d = dests(w);
        let mut s = Scheduler::new(kind, &d);
        (0..n).map(|_| s.pick(&d, &[])).collect()
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
}
