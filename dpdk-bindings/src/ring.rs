//! Typed single-producer / single-consumer rte_rings for fixed-size messages between lcores.

use std::ffi::CString;
use std::marker::PhantomData;
use std::mem::{size_of, MaybeUninit};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::mbuf::Burst;
use crate::sys;

/// A line of its own: a worker reads the ring pointer on every burst, and the allocation must
/// not share a cache line with whatever another thread writes.
#[repr(align(64))]
struct RingInner(NonNull<sys::rte_ring>, RingOf);

/// What a ring carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RingOf {
    Values,
    /// Owned mbufs: those still in it when the ring goes are freed with it.
    Mbufs,
}

// SAFETY: the ring is created SP/SC; the Producer and Consumer halves are each owned by one thread.
unsafe impl Send for RingInner {}
// SAFETY: only count() is shared, which is a read of two indices.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        if self.1 == RingOf::Mbufs {
            // What the producer sent after the consumer's last look (workers stopping one after
            // the other): freed here, where nobody else can use the ring any more.
            let mut b = Burst::new();
            // SAFETY: both halves are gone, so this is the only consumer.
            while unsafe { self.dequeue_mbufs(&mut b, crate::mbuf::MAX_BURST as u16) } > 0 {
                b.clear();
            }
        }
        // SAFETY: both halves are gone; nobody uses the ring any more.
        unsafe { sys::rte_ring_free(self.0.as_ptr()) };
    }
}

impl RingInner {
    /// Dequeue up to `max` mbufs (at most the burst's room) behind those already in `burst`;
    /// returns how many.
    ///
    /// # Safety
    /// The ring carries owned mbufs, and the caller is its only consumer.
    #[inline]
    unsafe fn dequeue_mbufs(&self, burst: &mut Burst, max: u16) -> usize {
        let (ptr, len) = burst.raw_mut();
        let max = (max as usize).min(burst.room());
        if max == 0 {
            return 0;
        }
        // SAFETY: single consumer (the caller's promise); slots len..len+max of the burst are
        // free (max <= room); each dequeued pointer is an owned mbuf handed over by the producer.
        let n = unsafe {
            sys::rte_ring_sc_dequeue_burst_elem(
                self.0.as_ptr(),
                ptr.add(len) as *mut _,
                size_of::<usize>() as u32,
                max as u32,
                std::ptr::null_mut(),
            ) as usize
        };
        burst.set_filled(len + n);
        n
    }
}

/// Create an SPSC rte_ring of `size` slots rounded up to a power of two, of `esize`-byte
/// elements (a multiple of 4, as rte_ring_elem requires), carrying `kind`.
fn create(name: &str, size: u32, esize: usize, kind: RingOf) -> Result<Arc<RingInner>> {
    if esize == 0 || !esize.is_multiple_of(4) {
        return Err(Error::other(
            "rte_ring_create_elem",
            format!("element size {esize} is not a multiple of 4"),
        ));
    }
    let count = size.max(2).next_power_of_two();
    let cname = CString::new(name).map_err(|_| Error::other("rte_ring_create_elem", "bad name"))?;
    let flags = sys::RING_F_SP_ENQ | sys::RING_F_SC_DEQ;
    // SAFETY: name is a valid C string (DPDK copies it); sizes are checked above.
    let p = unsafe { sys::rte_ring_create_elem(cname.as_ptr(), esize as u32, count, -1, flags) };
    let p = NonNull::new(p)
        .ok_or_else(|| Error::from_errno(format!("rte_ring_create_elem({name})")))?;
    Ok(Arc::new(RingInner(p, kind)))
}

/// The sending half of an SPSC ring of `T`.
pub struct Producer<T: Copy> {
    ring: Arc<RingInner>,
    _t: PhantomData<T>,
}

/// The receiving half of an SPSC ring of `T`.
pub struct Consumer<T: Copy> {
    ring: Arc<RingInner>,
    _t: PhantomData<T>,
}

/// Create an SPSC ring of `size` slots rounded up to a power of two, holding one element less
/// (DPDK keeps a slot free; `RING_F_EXACT_SZ` would double the memory of power-of-two sizes), of
/// `T` (size_of::<T>() must be a multiple of 4, as rte_ring_elem requires). The ring is freed
/// when both halves are dropped.
pub fn spsc<T: Copy + Send>(name: &str, size: u32) -> Result<(Producer<T>, Consumer<T>)> {
    let ring = create(name, size, size_of::<T>(), RingOf::Values)?;
    Ok((
        Producer {
            ring: ring.clone(),
            _t: PhantomData,
        },
        Consumer {
            ring,
            _t: PhantomData,
        },
    ))
}

impl<T: Copy> Producer<T> {
    /// Enqueue as many of `items` as fit; returns how many were enqueued.
    #[inline]
    pub fn send_burst(&mut self, items: &[T]) -> usize {
        // SAFETY: single producer (we hold the only Producer, &mut self); items are Copy, esize matches.
        unsafe {
            sys::rte_ring_sp_enqueue_burst_elem(
                self.ring.0.as_ptr(),
                items.as_ptr() as *const _,
                size_of::<T>() as u32,
                items.len() as u32,
                std::ptr::null_mut(),
            ) as usize
        }
    }
}

impl<T: Copy> Consumer<T> {
    /// Dequeue up to `out.len()` items into `out`; returns the initialised prefix.
    #[inline]
    pub fn recv_burst<'a>(&mut self, out: &'a mut [MaybeUninit<T>]) -> &'a [T] {
        // SAFETY: single consumer; DPDK writes n whole elements of size_of::<T>() at the start of out.
        let n = unsafe {
            sys::rte_ring_sc_dequeue_burst_elem(
                self.ring.0.as_ptr(),
                out.as_mut_ptr() as *mut _,
                size_of::<T>() as u32,
                out.len() as u32,
                std::ptr::null_mut(),
            ) as usize
        };
        // SAFETY: the first n elements were initialised by the dequeue.
        unsafe { std::slice::from_raw_parts(out.as_ptr() as *const T, n) }
    }

    /// Elements waiting.
    pub fn len(&self) -> usize {
        // SAFETY: read-only on a valid ring.
        unsafe { sys::rte_ring_count(self.ring.0.as_ptr()) as usize }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sending half of an SPSC ring of mbufs (packets handed from one worker to another).
pub struct MbufProducer {
    ring: Arc<RingInner>,
}

/// The receiving half of an SPSC ring of mbufs.
pub struct MbufConsumer {
    ring: Arc<RingInner>,
}

/// Create an SPSC ring of at least `size` mbufs. Mbufs still in the ring when both halves are
/// dropped are freed with it.
pub fn spsc_mbuf(name: &str, size: u32) -> Result<(MbufProducer, MbufConsumer)> {
    let ring = create(name, size, size_of::<usize>(), RingOf::Mbufs)?;
    Ok((MbufProducer { ring: ring.clone() }, MbufConsumer { ring }))
}

impl MbufProducer {
    /// The raw ring, for handing its other end to a PMD (net_ring, see [`crate::Port::from_rings`]).
    pub(crate) fn raw_ring(&self) -> *mut sys::rte_ring {
        self.ring.0.as_ptr()
    }

    /// Keep the ring allocated for the rest of the process whatever happens to the halves: a
    /// port that polls it cannot be told when they are dropped.
    pub(crate) fn keep_for_process(&self) {
        std::mem::forget(self.ring.clone());
    }

    /// Enqueue what fits from the front of `burst`; the rest stays in it. Returns how many.
    #[inline]
    pub fn send_burst(&mut self, burst: &mut Burst) -> usize {
        let (ptr, len) = burst.raw_mut();
        if len == 0 {
            return 0;
        }
        // SAFETY: single producer (&mut self); the first len slots are owned mbuf pointers whose
        // ownership moves into the ring for the first `n` of them.
        let n = unsafe {
            sys::rte_ring_sp_enqueue_burst_elem(
                self.ring.0.as_ptr(),
                ptr as *const _,
                size_of::<usize>() as u32,
                len as u32,
                std::ptr::null_mut(),
            ) as usize
        };
        burst.consume_front(n);
        n
    }
}

impl MbufConsumer {
    /// Dequeue up to `max` mbufs (at most the burst's room) into `burst`, normally empty.
    /// Returns how many. Mbufs already in it stay in front (never overwritten).
    #[inline]
    pub fn recv_burst(&mut self, burst: &mut Burst, max: u16) -> usize {
        // SAFETY: an mbuf ring, and this is its only consumer (&mut self).
        unsafe { self.ring.dequeue_mbufs(burst, max) }
    }
}

impl Drop for MbufConsumer {
    fn drop(&mut self) {
        // Free whatever is still queued so no mbuf is lost with the ring.
        let mut b = Burst::new();
        while self.recv_burst(&mut b, crate::mbuf::MAX_BURST as u16) > 0 {
            b.clear();
        }
    }
}
