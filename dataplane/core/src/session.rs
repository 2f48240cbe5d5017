//! The per-core FULLNAT session table.
//!
//! A fixed array of [`Session`] entries (allocated at start, never grown) with two chained hash
//! indexes: inbound `(proto, CIP, cport, VIP, vport)` and outbound `(proto, RIP, rport, LIP,
//! lport)`. NAT, DR and TUN sessions use the same entries with `lip = CIP` and `lport = cport`,
//! so the outbound key of a NAT session is exactly the tuple of the real server's reply
//! `(proto, RIP, rport, CIP, cport)`. Bucket heads are `u32` arrays (one per index, a power of two ≥ capacity) and the chains
//! are threaded through the entries (`in_next`, `out_next`), so the whole index costs 8 bytes per
//! bucket pair plus 8 bytes in each entry. Lookups, inserts and removals are O(1) on average and
//! never allocate. The hash is keyed with a per-table random seed (from std's `RandomState`) so
//! clients cannot aim at one bucket.
//!
//! The table is generic over the address type ([`SessAddr`]): IPv4 ([`Ipv4Addr`], 56-byte
//! entries) now, IPv6 ([`Ipv6Addr`]) ready.

use crate::config::Fwd;
use crate::fixedmap::mix;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

/// End of a chain / no entry.
pub const NIL: u32 = u32::MAX;

/// Entry flag: slot in use.
pub const F_USED: u8 = 1;
/// Entry flag: the TOA option was inserted (or deliberately skipped) for this session.
pub const F_TOA_DONE: u8 = 2;
/// Entry flag: counted as active (ESTABLISHED) in the dest's stats.
pub const F_ACTIVE: u8 = 4;

/// An address type a session table can hold.
pub trait SessAddr: Copy + Eq + std::fmt::Debug {
    /// The all-zero address.
    const ZERO: Self;
    /// Bits to hash.
    fn hash_bits(&self) -> u64;
}

impl SessAddr for Ipv4Addr {
    const ZERO: Self = Ipv4Addr::UNSPECIFIED;
    #[inline(always)]
    fn hash_bits(&self) -> u64 {
        u32::from(*self) as u64
    }
}

impl SessAddr for Ipv6Addr {
    const ZERO: Self = Ipv6Addr::UNSPECIFIED;
    #[inline(always)]
    fn hash_bits(&self) -> u64 {
        let v = u128::from(*self);
        ((v >> 64) as u64).rotate_left(21) ^ v as u64
    }
}

/// One session: client CIP:cport ↔ VIP:vport on the client side, LIP:lport ↔ RIP:rport on the
/// real-server side (NAT, DR, TUN: LIP:lport = CIP:cport).
#[derive(Clone, Copy, Debug)]
pub struct Session<A> {
    /// Client address.
    pub cip: A,
    /// Virtual IP.
    pub vip: A,
    /// Local address (source toward the real server).
    pub lip: A,
    /// Real server address.
    pub rip: A,
    /// Client port.
    pub cport: u16,
    /// Virtual port.
    pub vport: u16,
    /// Local port.
    pub lport: u16,
    /// Real server port.
    pub rport: u16,
    /// Expiry time (ms); pushed forward on every packet.
    pub expires_ms: u64,
    /// Dest id (indexes the per-dest counters).
    pub dest: u32,
    in_next: u32,
    out_next: u32,
    /// Index of the LIP's lport pool.
    pub lip_pool: u16,
    /// IP protocol number.
    pub proto: u8,
    /// TCP state (`TcpState as u8`; 0 for UDP).
    pub state: u8,
    /// `F_*` flags.
    pub flags: u8,
    /// Forwarding method of the session's dest.
    pub fwd: Fwd,
    /// Persistence template the session holds a reference on ([`crate::persist::NO_TMPL`]: none).
    pub tmpl: u32,
}

impl<A: SessAddr> Session<A> {
    /// A session with the given endpoints; the rest zero.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        proto: u8,
        cip: A,
        cport: u16,
        vip: A,
        vport: u16,
        lip: A,
        lport: u16,
        rip: A,
        rport: u16,
    ) -> Self {
        Session {
            cip,
            vip,
            lip,
            rip,
            cport,
            vport,
            lport,
            rport,
            expires_ms: 0,
            dest: 0,
            in_next: NIL,
            out_next: NIL,
            lip_pool: 0,
            proto,
            state: 0,
            flags: 0,
            fwd: Fwd::FullNat,
            tmpl: crate::persist::NO_TMPL,
        }
    }

    fn empty() -> Self {
        Self::new(0, A::ZERO, 0, A::ZERO, 0, A::ZERO, 0, A::ZERO, 0)
    }
}

/// Why an insert failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Every entry is in use.
    Full,
}

/// The table.
pub struct SessionTable<A> {
    entries: Vec<Session<A>>,
    in_heads: Vec<u32>,
    out_heads: Vec<u32>,
    mask: u64,
    seed: u64,
    free: u32,
    len: u32,
}

/// Hint the CPU to bring `v`'s cache line in; never faults, changes nothing.
#[inline(always)]
fn prefetch<T>(v: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; the address is that of a live reference.
    unsafe {
        core::arch::x86_64::_mm_prefetch(
            v as *const T as *const i8,
            core::arch::x86_64::_MM_HINT_T0,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

#[inline(always)]
fn key_hash<A: SessAddr>(seed: u64, proto: u8, a: A, ap: u16, b: A, bp: u16) -> u64 {
    let x = a.hash_bits().rotate_left(32) ^ b.hash_bits() ^ seed;
    let y = ((ap as u64) << 32 | (bp as u64) << 8 | proto as u64) ^ seed.rotate_left(17);
    mix(mix(x) ^ y)
}

impl<A: SessAddr> SessionTable<A> {
    /// A table of `capacity` sessions (allocates everything now).
    pub fn new(capacity: u32) -> Self {
        let cap = capacity.min(NIL - 1);
        let buckets = (cap.max(1) as usize).next_power_of_two();
        let mut entries = vec![Session::empty(); cap as usize];
        for (i, e) in entries.iter_mut().enumerate() {
            e.in_next = if i + 1 < cap as usize {
                i as u32 + 1
            } else {
                NIL
            };
        }
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        SessionTable {
            entries,
            in_heads: vec![NIL; buckets],
            out_heads: vec![NIL; buckets],
            mask: buckets as u64 - 1,
            seed,
            free: if cap > 0 { 0 } else { NIL },
            len: 0,
        }
    }

    /// Sessions in use.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when no session is in use.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of sessions.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is free.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free == NIL
    }

    /// Bytes of memory per session: entry plus both indexes' bucket heads.
    pub fn bytes_per_session(&self) -> usize {
        let cap = self.entries.len().max(1);
        std::mem::size_of::<Session<A>>() + (self.in_heads.len() + self.out_heads.len()) * 4 / cap
    }

    /// The entry `idx`.
    #[inline]
    pub fn get(&self, idx: u32) -> &Session<A> {
        &self.entries[idx as usize]
    }

    /// The entry `idx`, writable (do not change key fields of a session in use).
    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Session<A> {
        &mut self.entries[idx as usize]
    }

    #[inline(always)]
    fn in_bucket(&self, proto: u8, cip: A, cport: u16, vip: A, vport: u16) -> usize {
        (key_hash(self.seed, proto, cip, cport, vip, vport) & self.mask) as usize
    }

    #[inline(always)]
    fn out_bucket(&self, proto: u8, rip: A, rport: u16, lip: A, lport: u16) -> usize {
        (key_hash(self.seed, proto, rip, rport, lip, lport) & self.mask) as usize
    }

    /// Batched lookups, stage 1: prefetch the index slots where a packet with this tuple (source,
    /// sport, destination, dport) would be found, as a client → VIP packet (inbound index) or as a
    /// real server → LIP packet (outbound index). Both keys hash the same fields in the same order,
    /// so they share the bucket number.
    #[inline(always)]
    pub fn prefetch_heads(&self, proto: u8, src: A, sport: u16, dst: A, dport: u16) {
        let b = self.in_bucket(proto, src, sport, dst, dport);
        prefetch(&self.in_heads[b]);
        prefetch(&self.out_heads[b]);
    }

    /// Batched lookups, stage 2 (after stage 1 for the whole burst): prefetch the first entry of
    /// both chains.
    #[inline(always)]
    pub fn prefetch_entries(&self, proto: u8, src: A, sport: u16, dst: A, dport: u16) {
        let b = self.in_bucket(proto, src, sport, dst, dport);
        for i in [self.in_heads[b], self.out_heads[b]] {
            if i != NIL {
                prefetch(&self.entries[i as usize]);
            }
        }
    }

    /// The session of a client → VIP packet.
    #[inline]
    pub fn lookup_in(&self, proto: u8, cip: A, cport: u16, vip: A, vport: u16) -> Option<u32> {
        let mut i = self.in_heads[self.in_bucket(proto, cip, cport, vip, vport)];
        while i != NIL {
            let e = &self.entries[i as usize];
            if e.cport == cport
                && e.vport == vport
                && e.proto == proto
                && e.cip == cip
                && e.vip == vip
            {
                return Some(i);
            }
            i = e.in_next;
        }
        None
    }

    /// The session of a real server → LIP packet.
    #[inline]
    pub fn lookup_out(&self, proto: u8, rip: A, rport: u16, lip: A, lport: u16) -> Option<u32> {
        let mut i = self.out_heads[self.out_bucket(proto, rip, rport, lip, lport)];
        while i != NIL {
            let e = &self.entries[i as usize];
            if e.lport == lport
                && e.rport == rport
                && e.proto == proto
                && e.lip == lip
                && e.rip == rip
            {
                return Some(i);
            }
            i = e.out_next;
        }
        None
    }

    /// Insert `s` (its keys must not be present). Returns its index.
    pub fn insert(&mut self, mut s: Session<A>) -> Result<u32, InsertError> {
        let idx = self.free;
        if idx == NIL {
            return Err(InsertError::Full);
        }
        self.free = self.entries[idx as usize].in_next;
        let ib = self.in_bucket(s.proto, s.cip, s.cport, s.vip, s.vport);
        let ob = self.out_bucket(s.proto, s.rip, s.rport, s.lip, s.lport);
        s.in_next = self.in_heads[ib];
        s.out_next = self.out_heads[ob];
        s.flags |= F_USED;
        self.entries[idx as usize] = s;
        self.in_heads[ib] = idx;
        self.out_heads[ob] = idx;
        self.len += 1;
        Ok(idx)
    }

    /// Remove session `idx` from both indexes and free its entry. Returns the removed session.
    pub fn remove(&mut self, idx: u32) -> Option<Session<A>> {
        let s = *self.entries.get(idx as usize)?;
        if s.flags & F_USED == 0 {
            return None;
        }
        let ib = self.in_bucket(s.proto, s.cip, s.cport, s.vip, s.vport);
        let ob = self.out_bucket(s.proto, s.rip, s.rport, s.lip, s.lport);
        // Unlink from the inbound chain.
        let mut p = self.in_heads[ib];
        if p == idx {
            self.in_heads[ib] = s.in_next;
        } else {
            while p != NIL {
                let n = self.entries[p as usize].in_next;
                if n == idx {
                    self.entries[p as usize].in_next = s.in_next;
                    break;
                }
                p = n;
            }
        }
        let mut p = self.out_heads[ob];
        if p == idx {
            self.out_heads[ob] = s.out_next;
        } else {
            while p != NIL {
                let n = self.entries[p as usize].out_next;
                if n == idx {
                    self.entries[p as usize].out_next = s.out_next;
                    break;
                }
                p = n;
            }
        }
        let e = &mut self.entries[idx as usize];
        e.flags = 0;
        e.out_next = NIL;
        e.in_next = self.free;
        self.free = idx;
        self.len -= 1;
        Some(s)
    }

    /// Every session in use (control path, tests).
    /// Sessions in use from slot `start` on (for paged listings).
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = (u32, &Session<A>)> {
        self.entries
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, e)| e.flags & F_USED != 0)
            .map(|(i, e)| (i as u32, e))
    }

    /// Sessions in use.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Session<A>)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.flags & F_USED != 0)
            .map(|(i, e)| (i as u32, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sizes() {
        assert!(std::mem::size_of::<Session<Ipv4Addr>>() <= 64);
        let t: SessionTable<Ipv4Addr> = SessionTable::new(65536);
        assert!(t.bytes_per_session() <= 72, "{}", t.bytes_per_session());
    }

    #[test]
    fn behaves_like_two_hashmaps() {
        let cap = 200;
        let mut t: SessionTable<Ipv4Addr> = SessionTable::new(cap);
        let mut r: HashMap<(u8, u32, u16), u32> = HashMap::new();
        let mut s = 12345u64;
        for _ in 0..50_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let cip = Ipv4Addr::from((s as u32) % 50);
            let cport = ((s >> 32) % 20) as u16;
            let key = (6u8, u32::from(cip), cport);
            let vip = Ipv4Addr::new(192, 0, 2, 1);
            let lport = 1000 + u32::from(cip) as u16 * 20 + cport;
            let lip = Ipv4Addr::new(10, 0, 0, 1);
            let rip = Ipv4Addr::new(10, 1, 0, 1);
            match t.lookup_in(6, cip, cport, vip, 80) {
                Some(i) => {
                    assert_eq!(r.get(&key), Some(&i));
                    assert_eq!(t.lookup_out(6, rip, 8080, lip, lport), Some(i));
                    if (s >> 50).is_multiple_of(2) {
                        let old = t.remove(i).unwrap();
                        assert_eq!(old.lport, lport);
                        r.remove(&key);
                        assert_eq!(t.lookup_out(6, rip, 8080, lip, lport), None);
                    }
                }
                None => {
                    assert!(!r.contains_key(&key));
                    let ss = Session::new(6, cip, cport, vip, 80, lip, lport, rip, 8080);
                    match t.insert(ss) {
                        Ok(i) => {
                            r.insert(key, i);
                        }
                        Err(InsertError::Full) => assert_eq!(r.len(), cap as usize),
                    }
                }
            }
            assert_eq!(t.len(), r.len());
        }
        assert_eq!(t.iter().count(), r.len());
    }
}
