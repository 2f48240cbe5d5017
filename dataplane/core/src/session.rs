//! The per-core FULLNAT session table.
//!
//! A fixed array of [`Session`] entries (allocated at start, never grown, each aligned to a cache
//! line) with one chained hash index holding two keys per session: inbound `(proto, CIP, cport,
//! VIP, vport)` and outbound `(proto, RIP, rport, LIP, lport)`. NAT, DR and TUN sessions use the
//! same entries with `lip = CIP` and `lport = cport`, so the outbound key of a NAT session is
//! exactly the tuple of the real server's reply `(proto, RIP, rport, CIP, cport)`.
//!
//! Both keys are the `(proto, source, sport, destination, dport)` of a packet as it arrives, so
//! the batched lookup prefetches one bucket head and then one entry per packet. Hashed bucket
//! heads are one `u32` array (a power of two ≥ three times the capacity: with both keys of
//! every session hashed, as for NAT, it is loaded to 0.33–0.67 and a quarter to a third of
//! lookups walk past a first entry; FULLNAT hashes only the inbound key, below); a head or
//! chain link is `index << 1 | direction` (kept inverted in the array, so that zero memory is
//! an empty head), and the chains are threaded through the entries (`next[direction]`), so the
//! index costs 12–24 bytes per session plus 8 bytes in each entry. Lookups, inserts and
//! removals are O(1) on average and never allocate. The hash is keyed with per-table random multipliers (from std's
//! `RandomState`) so clients cannot aim at one bucket.
//!
//! The outbound key of a FULLNAT session needs no hash: its LIP:lport was handed out by this
//! worker, so (LIP pool, lport) names it alone. Such keys are linked on *direct heads*, one per
//! lport the worker owns in each LIP pool ([`SessionTable::with_lports`], added per pool on the
//! control path by [`SessionTable::grow_direct`]). A reply then finds its chain without hashing,
//! the chain holds one entry (never another session's), and the hashed buckets carry only the
//! inbound keys, so a client packet walks past a first entry half as often. Bucket ids below
//! the hashed bucket count are hashed buckets, those from it on direct heads (in the same
//! array, whose address space is reserved for every pool there may be and backed per pool as
//! it comes); every lookup, insert and removal walks either kind alike. NAT, DR and TUN
//! sessions (and any table built without lports) keep both keys hashed. On this VM the direct
//! heads gave fnat-est/1M 4-7 % and 100K ~5 % more in paired runs, 1K the same.
//!
//! The table is generic over the address type ([`SessAddr`]): IPv4 ([`Ipv4Addr`], 64-byte
//! entries, one cache line) now, IPv6 ([`Ipv6Addr`]) ready.

use crate::bigarray::BigArray;
use crate::config::Fwd;
use crate::fixedmap::mix;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};

/// End of a chain / no entry.
pub const NIL: u32 = u32::MAX;

/// Largest capacity: links are `index << 1 | direction` and must stay below [`NIL`].
pub const MAX_SESSIONS: u32 = (1 << 31) - 2;

/// Link direction of the inbound key (client → VIP).
const DIR_IN: u32 = 0;
/// Link direction of the outbound key (real server → LIP).
const DIR_OUT: u32 = 1;

/// Entry flag: slot in use.
pub const F_USED: u8 = 1;
/// Entry flag: no more TOA for this session (the real server was seen sending after the
/// handshake: it holds the client's address).
pub const F_TOA_DONE: u8 = 2;
/// Entry flag: counted as active (ESTABLISHED) in the dest's stats.
pub const F_ACTIVE: u8 = 4;
/// Entry flag: a packet of this session carried TOA, or one without room for it was counted
/// (`toa_skipped` counts a session once).
pub const F_TOA_TRIED: u8 = 8;

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
/// real-server side (NAT, DR, TUN: LIP:lport = CIP:cport). Aligned to a cache line, so a lookup
/// touches one line per entry.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
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
    /// Next link of the chain of the inbound key (`[0]`) and of the outbound key (`[1]`); `[0]`
    /// links the free list while unused.
    next: [u32; 2],
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
    /// Neighbour entry the replies to the client went to (route and neighbour lookups skipped
    /// while the neighbour table's generation is still `nh_gen`; 0: none).
    pub nh_out: u32,
    /// Neighbour table generation `nh_out` was learnt in.
    pub nh_gen: u32,
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
            next: [NIL; 2],
            lip_pool: 0,
            proto,
            state: 0,
            flags: 0,
            fwd: Fwd::FullNat,
            tmpl: crate::persist::NO_TMPL,
            nh_out: 0,
            nh_gen: 0,
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
    entries: BigArray<Session<A>>,
    heads: BigArray<u32>,
    mask: u64,
    key: HashKey,
    free: u32,
    len: u32,
    /// The newest session, whose outbound key is not linked yet ([`NIL`]: none), and that
    /// key's bucket: see [`SessionTable::insert`].
    pending: u32,
    pending_ob: u32,
    /// LIP pools with direct heads (`0..direct_pools`; see the module doc): pool `p`'s head of
    /// lport `l` is bucket `direct_base + (p << direct_shift) + l / stride`.
    direct_pools: usize,
    /// Bucket id of pool 0's first direct head (the hashed bucket count); [`u32::MAX`] when the
    /// table has no direct heads.
    direct_base: u32,
    /// Direct heads per pool: `1 << direct_shift`.
    direct_shift: u32,
    /// The workers sharing each LIP's lports (a worker owns those with `lport % stride` its
    /// own), and `log2(stride)` when it is a power of two (else `u32::MAX`: divide).
    stride: u16,
    stride_shift: u32,
}

/// Hint the CPU to bring `v`'s cache line in; never faults, changes nothing.
#[inline(always)]
pub(crate) fn prefetch<T>(v: &T) {
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

/// The key of a table's hash: random 64-bit multipliers and offset, drawn per table, and the
/// shift that keeps the bucket bits.
#[derive(Clone, Copy, Debug)]
struct HashKey {
    m: [u64; 6],
    add: u64,
    /// Odd multiplier of the final xor-shift-multiply.
    fin: u64,
    shift: u32,
}

impl HashKey {
    fn new(buckets: usize) -> HashKey {
        let rs = std::collections::hash_map::RandomState::new();
        let draw = |i: u64| {
            let mut h = rs.build_hasher();
            h.write_u64(i);
            mix(h.finish())
        };
        HashKey {
            m: [draw(0), draw(1), draw(2), draw(3), draw(4), draw(5)],
            add: draw(6),
            fin: draw(7) | 1,
            shift: 64 - buckets.trailing_zeros(),
        }
    }
}

/// The bucket of a tuple: multiply-add over its 32-bit words (Dietzfelbinger's vector scheme,
/// `(add + Σ m_i·x_i) mod 2^64`: universal, so clients who do not know the random key cannot aim
/// many tuples at one bucket; four independent multiplies for IPv4), then one xor-shift-multiply
/// round before the top bits are taken: alone, a key whose multiplier is close to a fraction
/// with a small denominator would crowd structured tuples (one client walking its ports) into
/// a few buckets.
#[inline(always)]
fn key_hash<A: SessAddr>(k: &HashKey, proto: u8, a: A, ap: u16, b: A, bp: u16) -> u64 {
    let (x, y) = (a.hash_bits(), b.hash_bits());
    let h = k
        .add
        .wrapping_add((x & 0xffff_ffff).wrapping_mul(k.m[0]))
        .wrapping_add((x >> 32).wrapping_mul(k.m[1]))
        .wrapping_add((y & 0xffff_ffff).wrapping_mul(k.m[2]))
        .wrapping_add((y >> 32).wrapping_mul(k.m[3]))
        .wrapping_add(((ap as u64) << 16 | bp as u64).wrapping_mul(k.m[4]))
        .wrapping_add((proto as u64).wrapping_mul(k.m[5]));
    (h ^ h >> 32).wrapping_mul(k.fin) >> k.shift
}

/// Hashed bucket heads of a table of `capacity` sessions: three per session, rounded up to a
/// power of two.
fn hashed_buckets(capacity: u32) -> usize {
    (capacity.clamp(1, MAX_SESSIONS) as usize * 3).next_power_of_two()
}

impl<A: SessAddr> SessionTable<A> {
    /// A table of `capacity` sessions (allocates everything now).
    pub fn new(capacity: u32) -> Self {
        Self::build(capacity, 0)
    }

    /// A table of `capacity` sessions whose heads array also reserves `extra` heads after the
    /// hashed ones (not backed until [`BigArray::count_up_to`] brings them in use).
    fn build(capacity: u32, extra: usize) -> Self {
        let cap = capacity.min(MAX_SESSIONS);
        let buckets = hashed_buckets(capacity);
        let entries = BigArray::new(cap as usize, |i| {
            let mut e = Session::empty();
            e.next[0] = if i + 1 < cap as usize {
                i as u32 + 1
            } else {
                NIL
            };
            e
        });
        SessionTable {
            entries,
            heads: BigArray::zeroed_reserve(buckets + extra, buckets),
            mask: buckets as u64 - 1,
            key: HashKey::new(buckets),
            free: if cap > 0 { 0 } else { NIL },
            len: 0,
            pending: NIL,
            pending_ob: 0,
            direct_pools: 0,
            direct_base: u32::MAX,
            direct_shift: 0,
            stride: 1,
            stride_shift: 0,
        }
    }

    /// A table of `capacity` sessions whose FULLNAT outbound keys go on direct heads, for a
    /// worker that owns every `stride`-th lport of each LIP (`stride`: the number of workers).
    /// The heads of a pool are allocated by [`SessionTable::grow_direct`].
    pub fn with_lports(capacity: u32, stride: u16) -> Self {
        let stride = stride.max(1);
        let per_pool = (65536usize.div_ceil(stride as usize)).next_power_of_two();
        let shift = per_pool.trailing_zeros();
        let direct = crate::lport::MAX_LIPS << shift;
        let hashed = hashed_buckets(capacity);
        // Bucket ids are u32, below NO_BUCKET (u32::MAX) of the stack: the direct ids of every
        // pool must fit above the hashed ones.
        if (hashed + direct) as u64 >= u32::MAX as u64 {
            return Self::new(capacity);
        }
        // Address space for every pool there may be; a pool's heads are backed (and counted)
        // once it exists.
        let mut t = Self::build(capacity, direct);
        debug_assert_eq!(t.mask as usize + 1, hashed);
        t.direct_base = hashed as u32;
        t.direct_shift = shift;
        t.stride = stride;
        t.stride_shift = if stride.is_power_of_two() {
            stride.trailing_zeros()
        } else {
            u32::MAX
        };
        t
    }

    /// Give LIP pools `0..pools` their direct heads (control path; `4 << direct_shift` bytes a
    /// pool, 256 KiB with one worker, backed here). A table without direct heads
    /// ([`SessionTable::new`]) keeps hashing every key. Called before any session takes an
    /// lport of a new pool: a pool's keys never move between the hash and direct heads.
    pub fn grow_direct(&mut self, pools: usize) {
        if self.direct_base == u32::MAX {
            return;
        }
        self.direct_pools = self.direct_pools.max(pools.min(crate::lport::MAX_LIPS));
        self.heads
            .count_up_to(self.direct_base as usize + (self.direct_pools << self.direct_shift));
    }

    /// The direct head of lport `lport` of LIP pool `pool`, when that pool has direct heads.
    #[inline(always)]
    fn direct_bucket(&self, pool: u16, lport: u16) -> Option<u32> {
        if pool as usize >= self.direct_pools {
            return None;
        }
        let slot = if self.stride_shift != u32::MAX {
            lport >> self.stride_shift
        } else {
            lport / self.stride
        };
        Some(self.direct_base + ((pool as u32) << self.direct_shift) + slot as u32)
    }

    /// The bucket of the outbound key of a reply from `rip`:`rport` to `lip`:`lport`, a LIP of
    /// pool `pool` (`u16::MAX`: not a LIP's lport, e.g. a NAT session's client).
    #[inline(always)]
    pub fn out_bucket_of(
        &self,
        pool: u16,
        proto: u8,
        rip: A,
        rport: u16,
        lip: A,
        lport: u16,
    ) -> u32 {
        match self.direct_bucket(pool, lport) {
            Some(b) => b,
            None => self.bucket(proto, rip, rport, lip, lport) as u32,
        }
    }

    /// The bucket of session `s`'s outbound key.
    #[inline(always)]
    fn session_out_bucket(&self, s: &Session<A>) -> u32 {
        let pool = if s.fwd == Fwd::FullNat {
            s.lip_pool
        } else {
            u16::MAX
        };
        self.out_bucket_of(pool, s.proto, s.rip, s.rport, s.lip, s.lport)
    }

    /// `b` when it is a hashed bucket (a bucket a prefetch stage computed for a client packet),
    /// else the hashed bucket of this tuple: a frame held across a configuration change may have
    /// been taken for a reply to a LIP then.
    #[inline(always)]
    pub fn in_bucket_hint(&self, b: u32, proto: u8, cip: A, cport: u16, vip: A, vport: u16) -> u32 {
        if (b as u64) <= self.mask {
            b
        } else {
            self.bucket(proto, cip, cport, vip, vport) as u32
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

    /// Bytes of memory per session: entry plus hashed bucket heads (the direct heads are a cost
    /// per LIP: [`SessionTable::direct_bytes`]).
    pub fn bytes_per_session(&self) -> usize {
        let cap = self.entries.len().max(1);
        std::mem::size_of::<Session<A>>() + (self.mask as usize + 1) * 4 / cap
    }

    /// Bytes of the direct heads of the LIP pools that have them (a cost per LIP, not per
    /// session: 256 KiB a LIP with one worker, shared out among more).
    pub fn direct_bytes(&self) -> usize {
        self.direct_pools * (4 << self.direct_shift)
    }

    /// The entry `idx`.
    #[inline(always)]
    pub fn get(&self, idx: u32) -> &Session<A> {
        &self.entries[idx as usize]
    }

    /// The entry `idx`, writable (do not change key fields of a session in use).
    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Session<A> {
        &mut self.entries[idx as usize]
    }

    /// Prefetch entry `idx` (nothing for an index out of range).
    #[inline(always)]
    pub fn prefetch_slot(&self, idx: u32) {
        if let Some(e) = self.entries.get(idx as usize) {
            prefetch(e);
        }
    }

    /// The entry chain link `l` (not [`NIL`]) points at.
    #[inline(always)]
    fn linked(&self, l: u32) -> &Session<A> {
        let i = (l >> 1) as usize;
        debug_assert!(i < self.entries.len());
        // SAFETY: every link in `heads` (kept as `!link`, read through `head`) or in an entry's
        // `next` is `idx << 1 | direction` of an entry index below `entries.len()` (only
        // `insert` makes links, from `free`, which holds indices below the capacity), and
        // callers never follow NIL.
        unsafe { self.entries.get_unchecked(i) }
    }

    /// Where bucket `b`'s head is kept: a hashed bucket, a direct head, or none for an id that
    /// is neither (e.g. the stack's `NO_BUCKET`). Heads are kept inverted (`!link`), so that
    /// untouched, zero memory reads as [`NIL`]: only [`SessionTable::head`] and
    /// [`SessionTable::set_head`] read or write them.
    #[inline(always)]
    fn head_slot(&self, b: u32) -> Option<&u32> {
        self.heads.get(b as usize)
    }

    /// The first link of bucket `b`'s chain ([`NIL`] for an id that is no bucket).
    #[inline(always)]
    fn head(&self, b: u32) -> u32 {
        self.head_slot(b).map_or(NIL, |&h| !h)
    }

    /// Set bucket `b`'s first link (`b` is the bucket of a key: hashed, or the direct head of a
    /// pool that has them, whose memory is backed).
    #[inline(always)]
    fn set_head(&mut self, b: u32, l: u32) {
        debug_assert!(
            b as u64 <= self.mask
                || (b as usize)
                    < self.direct_base as usize + (self.direct_pools << self.direct_shift)
        );
        self.heads[b as usize] = !l;
    }

    /// The bucket of a packet tuple (either direction's key).
    #[inline(always)]
    fn bucket(&self, proto: u8, src: A, sport: u16, dst: A, dport: u16) -> usize {
        (key_hash(&self.key, proto, src, sport, dst, dport) & self.mask) as usize
    }

    /// Batched lookups, stage 1: the bucket of a packet with this tuple (source, sport,
    /// destination, dport), whichever direction it is; its head is prefetched.
    #[inline(always)]
    pub fn prefetch_head(&self, proto: u8, src: A, sport: u16, dst: A, dport: u16) -> u32 {
        let b = self.bucket(proto, src, sport, dst, dport);
        prefetch(&self.heads[b]);
        b as u32
    }

    /// Batched lookups, stage 1 for a bucket already known (a reply's
    /// [`SessionTable::out_bucket_of`]): prefetch its head.
    #[inline(always)]
    pub fn prefetch_bucket(&self, b: u32) {
        if let Some(h) = self.head_slot(b) {
            prefetch(h);
        }
    }

    /// Batched lookups, stage 2 (a few packets after stage 1): prefetch the first entry of
    /// bucket `b`'s chain.
    #[inline(always)]
    pub fn prefetch_entry(&self, b: u32) {
        let l = self.head(b);
        if l != NIL {
            prefetch(self.linked(l));
        }
    }

    /// Batched lookups, stage 3 (a few packets after stage 2): when the first entry of bucket
    /// `b`'s chain (now in cache) is not the session of the packet with this tuple in either
    /// direction, prefetch the next one.
    #[inline(always)]
    pub fn prefetch_next(&self, b: u32, src: A, sport: u16, dst: A, dport: u16) {
        let l = self.head(b);
        if l == NIL {
            return;
        }
        let e = self.linked(l);
        let hit = if l & 1 == DIR_IN {
            e.cport == sport && e.vport == dport && e.cip == src && e.vip == dst
        } else {
            e.lport == dport && e.rport == sport && e.lip == dst && e.rip == src
        };
        let n = e.next[(l & 1) as usize];
        if !hit && n != NIL {
            prefetch(self.linked(n));
        }
    }

    /// The bucket of a packet with this tuple, whichever direction it is (as
    /// [`SessionTable::prefetch_head`] returns it).
    #[inline]
    pub fn bucket_of(&self, proto: u8, src: A, sport: u16, dst: A, dport: u16) -> u32 {
        self.bucket(proto, src, sport, dst, dport) as u32
    }

    /// The session of a client → VIP packet.
    #[inline]
    pub fn lookup_in(&self, proto: u8, cip: A, cport: u16, vip: A, vport: u16) -> Option<u32> {
        self.lookup_in_at(
            self.bucket_of(proto, cip, cport, vip, vport),
            proto,
            cip,
            cport,
            vip,
            vport,
        )
    }

    /// [`SessionTable::lookup_in`] in bucket `b` of this tuple ([`SessionTable::bucket_of`]).
    #[inline(always)]
    pub fn lookup_in_at(
        &self,
        b: u32,
        proto: u8,
        cip: A,
        cport: u16,
        vip: A,
        vport: u16,
    ) -> Option<u32> {
        let mut l = self.head(b);
        while l != NIL {
            let e = self.linked(l);
            if l & 1 == DIR_IN
                && e.cport == cport
                && e.vport == vport
                && e.proto == proto
                && e.cip == cip
                && e.vip == vip
            {
                return Some(l >> 1);
            }
            l = e.next[(l & 1) as usize];
        }
        None
    }

    /// The session of a real server → LIP packet (`pool`: the LIP's pool, `u16::MAX` when `lip`
    /// is not a LIP or `lport` not in the LIPs' range, as for a NAT session's reply to a client).
    #[inline]
    pub fn lookup_out(
        &self,
        pool: u16,
        proto: u8,
        rip: A,
        rport: u16,
        lip: A,
        lport: u16,
    ) -> Option<u32> {
        self.lookup_out_at(
            self.out_bucket_of(pool, proto, rip, rport, lip, lport),
            proto,
            rip,
            rport,
            lip,
            lport,
        )
    }

    /// [`SessionTable::lookup_out`] in bucket `b` of this tuple ([`SessionTable::out_bucket_of`]).
    #[inline(always)]
    pub fn lookup_out_at(
        &self,
        b: u32,
        proto: u8,
        rip: A,
        rport: u16,
        lip: A,
        lport: u16,
    ) -> Option<u32> {
        let mut l = self.head(b);
        while l != NIL {
            let e = self.linked(l);
            if l & 1 == DIR_OUT
                && e.lport == lport
                && e.rport == rport
                && e.proto == proto
                && e.lip == lip
                && e.rip == rip
            {
                return Some(l >> 1);
            }
            l = e.next[(l & 1) as usize];
        }
        self.lookup_pending_out(proto, rip, rport, lip, lport)
    }

    /// [`SessionTable::lookup_out_at`] past the chain: the newest session, whose outbound key
    /// is not linked yet, when it is that one. Out of line (replies find their session in the
    /// chain; this is only reached by a miss).
    #[inline(never)]
    fn lookup_pending_out(&self, proto: u8, rip: A, rport: u16, lip: A, lport: u16) -> Option<u32> {
        let e = self.entries.get(self.pending as usize)?;
        (e.lport == lport && e.rport == rport && e.proto == proto && e.lip == lip && e.rip == rip)
            .then_some(self.pending)
    }

    /// Link the pending session's outbound key (see [`SessionTable::insert`]); by then its
    /// bucket head, prefetched at the insert, is in cache.
    #[inline]
    fn link_pending(&mut self) {
        let idx = self.pending;
        if idx == NIL {
            return;
        }
        self.pending = NIL;
        let ob = self.pending_ob;
        self.entries[idx as usize].next[DIR_OUT as usize] = self.head(ob);
        self.set_head(ob, idx << 1 | DIR_OUT);
    }

    /// Insert `s` (its keys must not be present). Returns its index.
    ///
    /// The outbound key's bucket head is a random line of a large array that nothing has
    /// touched yet (the inbound one was just looked up), so it is prefetched now and linked at
    /// the next insert or removal, when it has arrived; until then
    /// [`SessionTable::lookup_out_at`] finds the session past the chain. Linked later, the
    /// outbound link still precedes the inbound one when both keys share a bucket.
    pub fn insert(&mut self, mut s: Session<A>) -> Result<u32, InsertError> {
        self.link_pending();
        let idx = self.free;
        if idx == NIL {
            return Err(InsertError::Full);
        }
        self.free = self.entries[idx as usize].next[0];
        let ib = self.bucket(s.proto, s.cip, s.cport, s.vip, s.vport);
        let ob = self.session_out_bucket(&s);
        prefetch(&self.heads[ob as usize]);
        s.next[DIR_IN as usize] = self.head(ib as u32);
        self.set_head(ib as u32, idx << 1 | DIR_IN);
        s.next[DIR_OUT as usize] = NIL;
        s.flags |= F_USED;
        self.entries[idx as usize] = s;
        (self.pending, self.pending_ob) = (idx, ob);
        self.len += 1;
        Ok(idx)
    }

    /// Unlink `link` (whose successor is `after`) from the chain of bucket `b`.
    fn unlink(&mut self, b: u32, link: u32, after: u32) {
        let mut p = self.head(b);
        if p == link {
            self.set_head(b, after);
            return;
        }
        while p != NIL {
            let e = &mut self.entries[(p >> 1) as usize];
            let n = e.next[(p & 1) as usize];
            if n == link {
                e.next[(p & 1) as usize] = after;
                return;
            }
            p = n;
        }
    }

    /// Remove session `idx` from both indexes and free its entry. Returns the removed session.
    pub fn remove(&mut self, idx: u32) -> Option<Session<A>> {
        let keys = self.prefetch_keys(idx)?;
        self.remove_at(idx, keys)
    }

    /// Batched removal, stage 1: the buckets of both keys of session `idx` (`None` when the
    /// slot is not in use), their heads prefetched (two random lines of a large array: the
    /// cost of a removal); hand them to [`SessionTable::remove_at`] a few sessions later.
    #[inline]
    pub fn prefetch_keys(&self, idx: u32) -> Option<(u32, u32)> {
        let s = self.entries.get(idx as usize)?;
        if s.flags & F_USED == 0 {
            return None;
        }
        let ib = self.bucket(s.proto, s.cip, s.cport, s.vip, s.vport);
        let ob = self.session_out_bucket(s);
        prefetch(&self.heads[ib]);
        prefetch(&self.heads[ob as usize]);
        Some((ib as u32, ob))
    }

    /// Batched removal, stage 2: [`SessionTable::remove`] of session `idx`, whose buckets
    /// `keys` [`SessionTable::prefetch_keys`] gave (nothing changed the session since).
    pub fn remove_at(&mut self, idx: u32, keys: (u32, u32)) -> Option<Session<A>> {
        self.link_pending();
        let s = *self.entries.get(idx as usize)?;
        if s.flags & F_USED == 0 {
            return None;
        }
        let (ib, ob) = keys;
        debug_assert_eq!(
            ib as usize,
            self.bucket(s.proto, s.cip, s.cport, s.vip, s.vport)
        );
        debug_assert_eq!(ob, self.session_out_bucket(&s));
        // The outbound link was made after the inbound one (at the insert, or later when it
        // was pending): when both keys share a bucket it comes first in the chain (links are
        // made at the head), so it is unlinked first, which never rewrites the inbound link's
        // successor that `s` holds.
        self.unlink(ob, idx << 1 | DIR_OUT, s.next[DIR_OUT as usize]);
        self.unlink(ib, idx << 1 | DIR_IN, s.next[DIR_IN as usize]);
        let e = &mut self.entries[idx as usize];
        e.flags = 0;
        e.next = [self.free, NIL];
        self.free = idx;
        self.len -= 1;
        Some(s)
    }

    /// Sessions in use from slot `start` on (for paged listings).
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = (u32, &Session<A>)> {
        self.iter_range(start, usize::MAX)
    }

    /// Sessions in use in slots `start..end` (clamped to the table).
    pub fn iter_range(&self, start: usize, end: usize) -> impl Iterator<Item = (u32, &Session<A>)> {
        let end = end.min(self.entries.len());
        let start = start.min(end);
        self.entries[start..end]
            .iter()
            .enumerate()
            .filter(|(_, e)| e.flags & F_USED != 0)
            .map(move |(i, e)| ((start + i) as u32, e))
    }

    /// Sessions in use.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Session<A>)> {
        self.iter_range(0, usize::MAX)
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
        // The entry and 3 × 65 536 heads rounded up to 2^18.
        assert_eq!(t.bytes_per_session(), 64 + 16);
    }

    /// Structured tuples (one client walking its ports, a /16 of clients on one port, replies to
    /// consecutive lports of a few LIPs) spread over the buckets at least as well as random ones:
    /// no more empty buckets than e^-load (clustered tuples leave more) and no long chain.
    #[test]
    fn structured_tuples_spread_like_random_ones() {
        for table in 0..4 {
            let t: SessionTable<Ipv4Addr> = SessionTable::new(1 << 16); // 2^18 buckets
            let vip = Ipv4Addr::new(192, 0, 2, 1);
            let keys: Vec<(Ipv4Addr, u16, Ipv4Addr, u16)> = match table {
                0 => (0..1u32 << 16)
                    .map(|p| (Ipv4Addr::new(203, 0, 113, 7), p as u16, vip, 443))
                    .collect(),
                1 => (0..1u32 << 16)
                    .map(|i| (Ipv4Addr::from(0x6440_0000 | i), 40000, vip, 80))
                    .collect(),
                2 => (0..1u32 << 16)
                    .map(|i| {
                        let lip = Ipv4Addr::new(10, 0, 0, (i % 4) as u8);
                        (Ipv4Addr::new(10, 1, 0, 9), 8080, lip, (i / 4) as u16)
                    })
                    .collect(),
                _ => (0..1u32 << 16)
                    .map(|i| (Ipv4Addr::from(0x0a00_0000 | i), 53, Ipv4Addr::from(i), 53))
                    .collect(),
            };
            let mut load = vec![0u32; 1 << 18];
            for &(a, ap, b, bp) in &keys {
                load[t.bucket_of(6, a, ap, b, bp) as usize] += 1;
            }
            let empty = load.iter().filter(|&&n| n == 0).count() as f64 / load.len() as f64;
            let max = *load.iter().max().unwrap();
            // 2^16 keys, load 0.25: e^-0.25 = 0.779 of the buckets empty; the longest chain of
            // 2^18 random buckets is about 6.
            assert!(empty < 0.779 + 0.01, "table {table}: {empty} empty");
            assert!(max <= 9, "table {table}: a chain of {max}");
        }
    }

    /// The newest session's outbound key is linked at the next insert or removal: until then
    /// it is found all the same, also when it shares its bucket with the inbound key.
    #[test]
    fn the_newest_sessions_reply_key_is_found_before_it_is_linked() {
        for (cap, direct) in [
            (1, false),
            (3, false),
            (1000, false),
            (3, true),
            (1000, true),
        ] {
            let mut t: SessionTable<Ipv4Addr> = if direct {
                let mut t = SessionTable::with_lports(cap, 1);
                t.grow_direct(1);
                t
            } else {
                SessionTable::new(cap)
            };
            let (vip, lip, rip) = (
                Ipv4Addr::new(192, 0, 2, 1),
                Ipv4Addr::new(10, 0, 0, 1),
                Ipv4Addr::new(10, 1, 0, 1),
            );
            let conn = |k: u16| {
                Session::new(
                    6,
                    Ipv4Addr::new(203, 0, 113, 9),
                    k,
                    vip,
                    80,
                    lip,
                    5000 + k,
                    rip,
                    8080,
                )
            };
            let mut live = Vec::new();
            for k in 0..200u16 {
                if t.is_full() {
                    let (old, idx) = live.remove(0);
                    assert!(t.remove(idx).is_some());
                    assert_eq!(t.lookup_out(0, 6, rip, 8080, lip, 5000 + old), None);
                }
                let idx = t.insert(conn(k)).unwrap();
                live.push((k, idx));
                for &(j, i) in &live {
                    assert_eq!(
                        t.lookup_out(0, 6, rip, 8080, lip, 5000 + j),
                        Some(i),
                        "cap {cap}, {j} after {k}"
                    );
                    assert_eq!(
                        t.lookup_in(6, Ipv4Addr::new(203, 0, 113, 9), j, vip, 80),
                        Some(i)
                    );
                }
            }
        }
    }

    #[test]
    fn behaves_like_two_hashmaps() {
        check_against_hashmaps(200, 12345, None);
    }

    /// Tiny tables: the two keys of a session often share one of the few buckets, and chains
    /// mix both directions.
    #[test]
    fn tiny_tables_with_shared_buckets() {
        for (cap, seed) in [(1, 1), (2, 7), (3, 99), (5, 4242)] {
            check_against_hashmaps(cap, seed, None);
        }
    }

    /// FULLNAT replies on direct heads: one worker (each lport its own head), and one of three
    /// workers whose heads, `lport / 3`, are here shared by up to three of the lports used (a
    /// session whose lport another worker owns is still found: its head is a chain).
    #[test]
    fn direct_heads_behave_like_two_hashmaps() {
        for (cap, seed, stride) in [(200, 12345, 1), (200, 777, 3), (3, 99, 1), (1, 5, 2)] {
            check_against_hashmaps(cap, seed, Some(stride));
        }
    }

    /// A reply's bucket is its direct head when its pool has them, and the hash otherwise (a
    /// pool beyond those grown, a NAT session's client, a table without lports); the direct
    /// heads are counted per pool, not in the memory per session.
    #[test]
    fn direct_heads_only_for_grown_pools() {
        let (rip, lip) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 0, 0, 1));
        let mut t: SessionTable<Ipv4Addr> = SessionTable::with_lports(1 << 16, 2);
        let hashed = t.bucket_of(6, rip, 80, lip, 4000);
        assert_eq!(t.out_bucket_of(0, 6, rip, 80, lip, 4000), hashed);
        let before = t.bytes_per_session();
        t.grow_direct(2);
        // 65 536 lports over 2 workers: 32 768 heads per pool, after the 2^18 hashed buckets.
        assert_eq!(t.out_bucket_of(0, 6, rip, 80, lip, 4000), (1 << 18) + 2000);
        assert_eq!(
            t.out_bucket_of(1, 6, rip, 80, lip, 4001),
            (1 << 18) + 32768 + 2000
        );
        assert_eq!(t.out_bucket_of(2, 6, rip, 80, lip, 4000), hashed);
        assert_eq!(t.out_bucket_of(u16::MAX, 6, rip, 80, lip, 4000), hashed);
        assert_eq!(t.bytes_per_session(), before);
        assert_eq!(t.direct_bytes(), 2 * 32768 * 4);
        let plain: SessionTable<Ipv4Addr> = SessionTable::new(16);
        assert_eq!(
            plain.out_bucket_of(0, 6, rip, 80, lip, 4000),
            plain.bucket_of(6, rip, 80, lip, 4000)
        );
        // A NAT session's outbound key stays hashed whatever its pool field says.
        let mut nat = Session::new(
            6,
            Ipv4Addr::new(203, 0, 113, 9),
            4000,
            lip,
            80,
            lip,
            4000,
            rip,
            80,
        );
        nat.fwd = Fwd::Nat;
        nat.lip_pool = 0;
        let idx = t.insert(nat).unwrap();
        assert_eq!(t.lookup_out(u16::MAX, 6, rip, 80, lip, 4000), Some(idx));
        assert!(t.remove(idx).is_some());
        assert_eq!(t.lookup_out(u16::MAX, 6, rip, 80, lip, 4000), None);
    }

    fn check_against_hashmaps(cap: u32, seed: u64, direct: Option<u16>) {
        let mut t: SessionTable<Ipv4Addr> = match direct {
            Some(stride) => {
                let mut t = SessionTable::with_lports(cap, stride);
                t.grow_direct(1);
                t
            }
            None => SessionTable::new(cap),
        };
        let pool = if direct.is_some() { 0 } else { u16::MAX };
        let mut r: HashMap<(u8, u32, u16), u32> = HashMap::new();
        let mut s = seed;
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
                    assert_eq!(t.lookup_out(pool, 6, rip, 8080, lip, lport), Some(i));
                    if (s >> 50).is_multiple_of(2) {
                        let old = t.remove(i).unwrap();
                        assert_eq!(old.lport, lport);
                        r.remove(&key);
                        assert_eq!(t.lookup_out(pool, 6, rip, 8080, lip, lport), None);
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
