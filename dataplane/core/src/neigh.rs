//! Neighbour table storage: a fixed pool of entries with stable indices, a fixed open-addressing
//! index keyed by (port, IP), and a fixed array of hold slots (`hold_packets` per entry).
//!
//! Only storage lives here; the protocol (ARP, timers, hold/release) is in [`crate::stack`].

use crate::addr::MacAddr;
use crate::config::NeighConf;
use crate::fixedmap::FixedMap;
use crate::io::PortIdx;
use std::net::{IpAddr, Ipv4Addr};

/// State of a neighbour entry as seen at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighState {
    /// ARP request sent, no answer yet; packets are held.
    Incomplete,
    /// Confirmed within `reachable_ms`.
    Reachable,
    /// Confirmed longer ago: still used, refreshed by an ARP request on use.
    Stale,
}

/// One entry of the pool.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub in_use: bool,
    pub port: PortIdx,
    pub ip: IpAddr,
    /// Our address used as ARP sender address for this neighbour.
    pub src: IpAddr,
    pub mac: MacAddr,
    pub resolved: bool,
    /// Last confirmation (resolved entries) or creation (incomplete ones).
    pub confirmed_ms: u64,
    /// Last ARP request sent for this entry.
    pub probe_ms: u64,
    /// ARP requests sent while incomplete.
    pub probes: u8,
    /// Packets in this entry's hold slots.
    pub held: u16,
}

const UNSPEC: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Entry {
    const FREE: Entry = Entry {
        in_use: false,
        port: 0,
        ip: UNSPEC,
        src: UNSPEC,
        mac: MacAddr::ZERO,
        resolved: false,
        confirmed_ms: 0,
        probe_ms: 0,
        probes: 0,
        held: 0,
    };

    pub fn state(&self, now_ms: u64, conf: &NeighConf) -> NeighState {
        if !self.resolved {
            NeighState::Incomplete
        } else if now_ms.saturating_sub(self.confirmed_ms) < conf.reachable_ms {
            NeighState::Reachable
        } else {
            NeighState::Stale
        }
    }
}

/// The neighbour table of one worker.
pub(crate) struct NeighTable<P> {
    pub conf: NeighConf,
    pub entries: Vec<Entry>,
    free: Vec<u32>,
    index: FixedMap<(PortIdx, IpAddr), u32>,
    hold: Vec<Option<P>>,
    /// Next entry the timer scan looks at.
    pub scan_cursor: usize,
    /// Next entry the eviction scan looks at.
    pub evict_cursor: usize,
    /// Bumped whenever an entry is freed (its index may then name another neighbour): next-hop
    /// cache lines of an older generation are void.
    pub gen: u32,
}

impl<P> NeighTable<P> {
    /// Allocates everything: `capacity` entries and `capacity * hold_packets` hold slots.
    pub fn new(conf: &NeighConf) -> Self {
        let cap = conf.capacity as usize;
        let mut hold = Vec::with_capacity(cap * conf.hold_packets as usize);
        hold.resize_with(cap * conf.hold_packets as usize, || None);
        NeighTable {
            conf: conf.clone(),
            entries: vec![Entry::FREE; cap],
            free: (0..cap as u32).rev().collect(),
            index: FixedMap::with_capacity(cap),
            hold,
            scan_cursor: 0,
            evict_cursor: 0,
            gen: 1,
        }
    }

    /// Number of entries in use.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Index of the entry for (port, ip).
    #[inline]
    pub fn find(&self, port: PortIdx, ip: IpAddr) -> Option<usize> {
        self.index.get(&(port, ip)).map(|&i| i as usize)
    }

    /// A new incomplete entry; None when the pool is full.
    pub fn create(&mut self, port: PortIdx, ip: IpAddr, src: IpAddr, now_ms: u64) -> Option<usize> {
        let idx = self.free.pop()?;
        if self.index.insert((port, ip), idx).is_err() {
            // Cannot happen: the index holds as many entries as the pool.
            self.free.push(idx);
            return None;
        }
        self.entries[idx as usize] = Entry {
            in_use: true,
            port,
            ip,
            src,
            confirmed_ms: now_ms,
            ..Entry::FREE
        };
        Some(idx as usize)
    }

    /// Free entry `idx`. Its hold slots must have been emptied.
    pub fn free(&mut self, idx: usize) {
        let e = &mut self.entries[idx];
        debug_assert!(e.in_use && e.held == 0);
        self.index.remove(&(e.port, e.ip));
        *e = Entry::FREE;
        self.free.push(idx as u32);
        self.gen = self.gen.wrapping_add(1).max(1);
    }

    /// Hold `pkt` on entry `idx`; gives it back when the entry's slots are full.
    pub fn hold(&mut self, idx: usize, pkt: P) -> Result<(), P> {
        let per = self.conf.hold_packets as usize;
        let e = &mut self.entries[idx];
        if e.held as usize >= per {
            return Err(pkt);
        }
        self.hold[idx * per + e.held as usize] = Some(pkt);
        e.held += 1;
        Ok(())
    }

    /// Take the `k`-th held packet of entry `idx` (in arrival order). The caller sets `held = 0`
    /// once it took them all.
    pub fn take_held(&mut self, idx: usize, k: usize) -> Option<P> {
        let per = self.conf.hold_packets as usize;
        self.hold[idx * per + k].take()
    }
}
