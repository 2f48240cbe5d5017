//! Typed single-producer / single-consumer rte_rings for fixed-size messages between lcores.

use std::ffi::CString;
use std::marker::PhantomData;
use std::mem::{size_of, MaybeUninit};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::sys;

struct RingInner(NonNull<sys::rte_ring>);

// SAFETY: the ring is created SP/SC; the Producer and Consumer halves are each owned by one thread.
unsafe impl Send for RingInner {}
// SAFETY: only count() is shared, which is a read of two indices.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        // SAFETY: both halves are gone; nobody uses the ring any more.
        unsafe { sys::rte_ring_free(self.0.as_ptr()) };
    }
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

/// Create an SPSC ring of at least `size` elements of `T` (size_of::<T>() must be a multiple of 4,
/// as rte_ring_elem requires). The ring is freed when both halves are dropped.
pub fn spsc<T: Copy + Send>(name: &str, size: u32) -> Result<(Producer<T>, Consumer<T>)> {
    let esize = size_of::<T>();
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
    let ring = Arc::new(RingInner(NonNull::new(p).ok_or_else(|| {
        Error::from_errno(format!("rte_ring_create_elem({name})"))
    })?));
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
