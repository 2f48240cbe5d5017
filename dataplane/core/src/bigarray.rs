//! Fixed-size arrays for the large per-core tables (session entries, index heads), mapped on
//! 2 MiB boundaries and marked for transparent huge pages.
//!
//! At a million sessions every packet touches two or three random cache lines of a ~70 MiB
//! table; with 4 KiB pages each is also a TLB miss (and a two-dimensional page walk under a
//! hypervisor). DPDK's own tables live in hugepage memory for that reason; these arrays get the
//! same effect from the kernel's transparent huge pages (`madvise(MADV_HUGEPAGE)`, honoured when
//! `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`) without needing
//! reserved hugepages. Where the kernel says no, they are ordinary anonymous memory.
//!
//! Allocated once at start-up (a control-path `mmap`), never resized, freed on drop. The bytes
//! mapped are counted in [`mapped_bytes`] so memory measurements that count heap allocations can
//! add them.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Huge page size the mappings are aligned to.
const HUGE: usize = 2 << 20;

static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Bytes currently mapped by every [`BigArray`] of the process.
pub fn mapped_bytes() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// A fixed-length array of `T` in its own huge-page-aligned anonymous mapping.
pub struct BigArray<T> {
    ptr: NonNull<T>,
    len: usize,
    /// The whole mapping (alignment slack included), for `munmap`.
    map: *mut libc::c_void,
    map_len: usize,
    /// Bytes of the mapping counted in [`mapped_bytes`] (all of it, but for
    /// [`BigArray::zeroed_reserve`]).
    counted: usize,
}

// SAFETY: the array owns its elements exclusively, like a `Box<[T]>`.
unsafe impl<T: Send> Send for BigArray<T> {}
// SAFETY: shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for BigArray<T> {}

impl<T> BigArray<T> {
    /// `len` elements, element `i` = `init(i)`. Panics when the mapping cannot be made (out of
    /// memory at start-up), like `Vec` does.
    pub fn new(len: usize, init: impl FnMut(usize) -> T) -> Self {
        Self::build(len, Some(init))
    }

    /// Map `len` elements, then initialise each with `init`. With none they are left as the
    /// mapping's zero bytes: only for a `T` of which all-zero bytes are a valid value (`u32`
    /// here), and mapped without reserving swap (`MAP_NORESERVE`: a reservation larger than what
    /// will be used must not count against a strict overcommit limit).
    fn build(len: usize, init: Option<impl FnMut(usize) -> T>) -> Self {
        let size = std::mem::size_of::<T>()
            .checked_mul(len)
            .expect("BigArray size overflows");
        assert!(std::mem::align_of::<T>() <= HUGE);
        let map_len = size.max(1) + HUGE;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | if init.is_none() {
                        libc::MAP_NORESERVE
                    } else {
                        0
                    },
                -1,
                0,
            )
        };
        assert!(
            map != libc::MAP_FAILED,
            "mmap of {map_len} bytes failed: {}",
            std::io::Error::last_os_error()
        );
        let start = (map as usize).next_multiple_of(HUGE);
        // SAFETY: advice only, on a range inside our mapping; failure (no THP) is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, size.max(1), libc::MADV_HUGEPAGE);
        }
        let ptr = start as *mut T;
        if let Some(mut init) = init {
            for i in 0..len {
                // SAFETY: slot i lies inside the mapping (start + size <= map + map_len), is
                // suitably aligned (start is 2 MiB-aligned, size_of is a multiple of align_of)
                // and uninitialised; each slot is written once.
                unsafe { ptr.add(i).write(init(i)) };
            }
        }
        MAPPED.fetch_add(map_len, Ordering::Relaxed);
        BigArray {
            // SAFETY: start is inside a successful mapping, never null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len,
            map,
            map_len,
            counted: map_len,
        }
    }
}

impl BigArray<u32> {
    /// `len` zeros, of which only the first `counted` elements are backed now (written, so no
    /// page fault is left for the packet path) and count in [`mapped_bytes`]: the rest costs
    /// address space only until [`BigArray::count_up_to`] brings it in use (e.g. the direct
    /// heads of LIP pools that do not exist yet).
    pub fn zeroed_reserve(len: usize, counted: usize) -> Self {
        let mut a = Self::build(len, None::<fn(usize) -> u32>);
        MAPPED.fetch_sub(a.map_len, Ordering::Relaxed);
        a.counted = 0;
        a.count_up_to(counted);
        a
    }

    /// Bring the first `elems` elements in use (control path; those not counted yet must still
    /// be zero): back their pages now, by writing a zero in each, and count them in
    /// [`mapped_bytes`], rounded up to whole huge pages as they are backed; never less than
    /// counted already.
    pub fn count_up_to(&mut self, elems: usize) {
        let bytes = (elems.min(self.len) * 4).next_multiple_of(HUGE);
        if bytes > self.counted {
            let (from, to) = (self.counted / 4, (bytes / 4).min(self.len));
            // One write per 4 KiB page backs it (a whole huge page where the kernel gives one).
            for i in (from..to).step_by(1024) {
                // SAFETY: i < len; a volatile write of the zero already there, so the compiler
                // keeps it.
                unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(i), 0) };
            }
            MAPPED.fetch_add(bytes - self.counted, Ordering::Relaxed);
            self.counted = bytes;
        }
    }
}

impl<T: Clone> BigArray<T> {
    /// `len` copies of `v`.
    pub fn filled(len: usize, v: T) -> Self {
        Self::new(len, |_| v.clone())
    }
}

impl<T> Deref for BigArray<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: ptr..ptr+len are initialised elements owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for BigArray<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref, and &mut self gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for BigArray<T> {
    fn drop(&mut self) {
        // SAFETY: the elements are initialised and dropped exactly once, then the mapping made in
        // new() is unmapped; nothing refers to it afterwards.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.ptr.as_ptr(),
                self.len,
            ));
            libc::munmap(self.map, self.map_len);
        }
        MAPPED.fetch_sub(self.counted, Ordering::Relaxed);
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for BigArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BigArray(len {})", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn holds_initialises_and_drops_its_elements() {
        let before = mapped_bytes();
        let a = BigArray::new(1000, |i| i as u64 * 3);
        assert_eq!(a.len(), 1000);
        assert_eq!(a[999], 2997);
        assert_eq!(a.as_ptr() as usize % HUGE, 0);
        assert!(mapped_bytes() >= before + 8000);
        drop(a);
        let rc = Rc::new(());
        let mut b = BigArray::filled(10, rc.clone());
        assert_eq!(Rc::strong_count(&rc), 11);
        b[3] = rc.clone();
        assert_eq!(Rc::strong_count(&rc), 11);
        drop(b);
        assert_eq!(Rc::strong_count(&rc), 1);
        let e: BigArray<u8> = BigArray::filled(0, 0);
        assert!(e.is_empty());
    }

    /// A reservation reads as zeros and counts only what was said to be in use, in whole huge
    /// pages, never more than its mapping and never less than before.
    #[test]
    fn a_reservation_counts_what_is_in_use() {
        let mut a = BigArray::zeroed_reserve(3 << 20, 1000);
        assert!(a.iter().step_by(4096).all(|&v| v == 0));
        assert_eq!(a.counted, HUGE);
        a.count_up_to(10);
        assert_eq!(a.counted, HUGE);
        a.count_up_to(HUGE / 4 + 1);
        assert_eq!(a.counted, 2 * HUGE);
        a.count_up_to(usize::MAX);
        assert_eq!(a[(3 << 20) - 1], 0);
        assert_eq!(a.counted, (3 << 20) * 4);
    }
}
