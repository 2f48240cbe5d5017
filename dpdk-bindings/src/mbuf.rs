//! Owned mbufs and bursts of them.

use std::ptr::NonNull;

use crate::sys;

/// Largest burst rvs moves in one call.
pub const MAX_BURST: usize = 512;

/// An owned, single-segment packet mbuf. Dropping it returns it to its pool.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one wrapper at a time; moving it to another lcore (rings)
// is how DPDK is meant to be used. Freeing from another lcore is safe (mempool is MT-safe).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `m` is null or a valid mbuf owned by nobody else.
    pub(crate) unsafe fn from_raw(m: *mut sys::rte_mbuf) -> Option<Mbuf> {
        NonNull::new(m).map(Mbuf)
    }

    /// Give up ownership (to a TX queue or a ring).
    pub(crate) fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }

    #[inline(always)]
    fn m(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for our whole lifetime.
        unsafe { self.0.as_ref() }
    }

    #[inline(always)]
    fn m_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: we own a valid mbuf exclusively.
        unsafe { self.0.as_mut() }
    }

    /// Frame length (single segment: data_len == pkt_len).
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.m().data_len as usize
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Largest frame this mbuf can hold from its current data offset.
    #[inline(always)]
    pub fn capacity(&self) -> usize {
        let m = self.m();
        (m.buf_len - m.data_off) as usize
    }

    /// The frame bytes.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's data buffer, which we own.
        unsafe {
            std::slice::from_raw_parts(
                (m.buf_addr as *const u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// Hint the CPU to bring the mbuf header's first cache line in (buffer address, data offset
    /// and lengths: what [`Mbuf::prefetch_data`] and [`Mbuf::data`] read). Reads nothing.
    #[inline(always)]
    pub fn prefetch_header(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint and never faults.
        unsafe {
            core::arch::x86_64::_mm_prefetch(
                self.0.as_ptr() as *const i8,
                core::arch::x86_64::_MM_HINT_T0,
            )
        };
    }

    /// Hint the CPU to bring the first cache line of the frame in (reads the mbuf header).
    #[inline(always)]
    pub fn prefetch_data(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint and never faults; the address is inside our buffer.
        unsafe {
            let m = self.m();
            core::arch::x86_64::_mm_prefetch(
                (m.buf_addr as *const i8).add(m.data_off as usize),
                core::arch::x86_64::_MM_HINT_T0,
            )
        };
    }

    /// The frame bytes, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m_mut();
        // SAFETY: as in `data`, and we hold the only reference to this mbuf.
        unsafe {
            std::slice::from_raw_parts_mut(
                (m.buf_addr as *mut u8).add(m.data_off as usize),
                m.data_len as usize,
            )
        }
    }

    /// Set the frame length within `capacity()`; false (and no change) if it does not fit or the
    /// mbuf is chained (rvs only builds single-segment frames).
    #[inline(always)]
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.capacity() || self.m().nb_segs != 1 {
            return false;
        }
        let m = self.m_mut();
        m.data_len = len as u16;
        m.pkt_len = len as u32;
        true
    }

    /// A 16-bit tag carried with the mbuf (DPDK's `port` field, set to the input port id by the
    /// PMD). rvs overwrites it with its own port index when handing a packet to another worker.
    #[inline(always)]
    pub fn tag(&self) -> u16 {
        self.m().port
    }

    #[inline(always)]
    pub fn set_tag(&mut self, tag: u16) {
        self.m_mut().port = tag;
    }

    /// The RSS hash the NIC computed, if any.
    #[inline(always)]
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: reading a plain u32 union member; meaningful only with RSS offload, harmless otherwise.
        unsafe { self.m().__bindgen_anon_2.hash.rss }
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf; it goes back to its pool exactly once.
        unsafe { sys::rte_pktmbuf_free(self.0.as_ptr()) };
    }
}

/// A fixed-capacity burst of owned mbufs, the unit of RX and TX. No allocation after creation.
///
/// Written on every burst, it and its pointer array own their cache lines (64-byte aligned,
/// sizes multiples of 64): a burst allocated beside another core's data (the control thread
/// builds every worker's) must not share a line with it. Measured: a 16-byte `Burst` next to
/// the benchmark generator's data made fnat-est/1K run 1.4x slower on the worker's core
/// (perf/README, fifth session).
#[repr(align(64))]
pub struct Burst {
    ptrs: Box<Slots>,
    len: usize,
}

/// The pointer array of a [`Burst`], on cache lines of its own.
#[repr(C, align(64))]
struct Slots([*mut sys::rte_mbuf; MAX_BURST]);

impl std::ops::Deref for Slots {
    type Target = [*mut sys::rte_mbuf; MAX_BURST];
    #[inline(always)]
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Slots {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

// SAFETY: the burst owns its mbufs (see Mbuf).
unsafe impl Send for Burst {}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl Burst {
    pub fn new() -> Self {
        Burst {
            ptrs: Box::new(Slots([std::ptr::null_mut(); MAX_BURST])),
            len: 0,
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.len == MAX_BURST
    }

    /// Append an mbuf; gives it back when the burst is full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == MAX_BURST {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// The mbufs in the burst, in order, without taking them out.
    #[inline(always)]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: Mbuf is a repr(transparent) NonNull<rte_mbuf>, the same layout as the raw
        // pointers stored here, and the first len slots hold valid, non-null, owned mbufs.
        unsafe { std::slice::from_raw_parts(self.ptrs.as_ptr() as *const Mbuf, self.len) }
    }

    /// Take every mbuf out, in order. Those the caller does not take (it stops early) are freed
    /// when the iterator is dropped.
    #[inline(always)]
    pub fn drain(&mut self) -> Drain<'_> {
        let n = std::mem::replace(&mut self.len, 0);
        Drain {
            ptrs: &self.ptrs[..n],
            next: 0,
        }
    }

    /// Take the first `k` mbufs out (at most all), in order, calling `f(i, mbuf, ahead)` where `i`
    /// is the mbuf's index and `ahead` lends every mbuf behind it, including those that stay. The
    /// ones that stay move to the front, so a later RX can append behind them
    /// ([`crate::RxQueue::rx_burst_append`]): a prefetch pipeline then runs across bursts.
    #[inline(always)]
    pub fn drain_front_ahead(&mut self, k: usize, mut f: impl FnMut(usize, Mbuf, &[Mbuf])) {
        let n = self.len;
        let k = k.min(n);
        // Taken mbufs no longer count as held, even if `f` panics.
        self.len = 0;
        for i in 0..k {
            // SAFETY: slots i..n hold owned, valid, non-null mbufs; slot i is taken exactly once
            // here and the later ones are only lent (Mbuf is a repr(transparent) pointer, the
            // layout of the stored raw pointers). The burst is borrowed mutably meanwhile.
            let (m, ahead) = unsafe {
                let base = self.ptrs.as_ptr();
                (
                    Mbuf::from_raw(*base.add(i)).unwrap_unchecked(),
                    std::slice::from_raw_parts(base.add(i + 1) as *const Mbuf, n - i - 1),
                )
            };
            f(i, m, ahead);
        }
        self.ptrs.copy_within(k..n, 0);
        self.len = n - k;
    }

    /// Take every mbuf out with its tag ([`Mbuf::tag`]), in order.
    #[inline(always)]
    pub fn drain_tagged(&mut self) -> impl Iterator<Item = (Mbuf, u16)> + '_ {
        self.drain().map(|m| {
            let t = m.tag();
            (m, t)
        })
    }

    /// Free every mbuf still in the burst.
    pub fn clear(&mut self) {
        self.drain().for_each(drop);
    }

    /// Room left for an RX append.
    #[inline(always)]
    pub fn room(&self) -> usize {
        MAX_BURST - self.len
    }

    pub(crate) fn raw_mut(&mut self) -> (*mut *mut sys::rte_mbuf, usize) {
        (self.ptrs.as_mut_ptr(), self.len)
    }

    /// After an RX call filled `n` slots from the start.
    pub(crate) fn set_filled(&mut self, n: usize) {
        debug_assert!(n <= MAX_BURST);
        self.len = n;
    }

    /// After a TX call consumed the first `sent` mbufs: keep the rest at the front.
    pub(crate) fn consume_front(&mut self, sent: usize) {
        self.ptrs.copy_within(sent..self.len, 0);
        self.len -= sent;
    }
}

/// The mbufs of a [`Burst::drain`]: each handed out once; the rest freed on drop.
pub struct Drain<'a> {
    ptrs: &'a [*mut sys::rte_mbuf],
    next: usize,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline(always)]
    fn next(&mut self) -> Option<Mbuf> {
        let p = *self.ptrs.get(self.next)?;
        self.next += 1;
        // SAFETY: the drained slots hold owned, valid, non-null mbufs (the burst no longer counts
        // them); `next` hands each out once.
        Some(unsafe { Mbuf::from_raw(p).unwrap_unchecked() })
    }

    #[inline(always)]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.ptrs.len() - self.next;
        (n, Some(n))
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        self.by_ref().for_each(drop);
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.clear();
    }
}
