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
}

// SAFETY: the array owns its elements exclusively, like a `Box<[T]>`.
unsafe impl<T: Send> Send for BigArray<T> {}
// SAFETY: shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for BigArray<T> {}

impl<T> BigArray<T> {
    /// `len` elements, element `i` = `init(i)`. Panics when the mapping cannot be made (out of
    /// memory at start-up), like `Vec` does.
    pub fn new(len: usize, mut init: impl FnMut(usize) -> T) -> Self {
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
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
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
        for i in 0..len {
            // SAFETY: slot i lies inside the mapping (start + size <= map + map_len), is
            // suitably aligned (start is 2 MiB-aligned, size_of is a multiple of align_of) and
            // uninitialised; each slot is written once.
            unsafe { ptr.add(i).write(init(i)) };
        }
        MAPPED.fetch_add(map_len, Ordering::Relaxed);
        BigArray {
            // SAFETY: start is inside a successful mapping, never null.
            ptr: unsafe { NonNull::new_unchecked(ptr) },
            len,
            map,
            map_len,
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
        MAPPED.fetch_sub(self.map_len, Ordering::Relaxed);
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
}
