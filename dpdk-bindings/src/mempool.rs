//! Packet mbuf pools.

use std::ffi::CString;
use std::ptr::NonNull;

use crate::error::{Error, Result};
use crate::mbuf::Mbuf;
use crate::sys;

/// A pktmbuf pool. Freed on drop: drop it only after every mbuf from it is freed and every port
/// using it is stopped (rvsd orders its teardown that way).
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
}

// SAFETY: rte_mempool is designed for concurrent use by many lcores (per-lcore caches plus a
// lock-free common pool); the pointer stays valid until drop.
unsafe impl Send for Mempool {}
// SAFETY: as above; every operation exposed here is multi-thread safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `n` mbufs with a per-lcore cache of `cache` and the default data room
    /// (2048 bytes + headroom), on NUMA `socket` (-1: any).
    pub fn new_pktmbuf(name: &str, n: u32, cache: u32, socket: i32) -> Result<Mempool> {
        let cname =
            CString::new(name).map_err(|_| Error::other("rte_pktmbuf_pool_create", "bad name"))?;
        let room = (sys::RTE_MBUF_DEFAULT_BUF_SIZE) as u16;
        // SAFETY: the name is a valid C string; DPDK copies it.
        let p = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, room, socket) };
        NonNull::new(p)
            .map(|ptr| Mempool { ptr })
            .ok_or_else(|| Error::from_errno(format!("rte_pktmbuf_pool_create({name}, n={n})")))
    }

    /// One mbuf, or None when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool pointer is valid; a non-null result is a fresh mbuf we now own.
        let m = unsafe { sys::rte_pktmbuf_alloc(self.ptr.as_ptr()) };
        // SAFETY: ownership of the fresh mbuf moves into the wrapper.
        unsafe { Mbuf::from_raw(m) }
    }

    /// Free mbufs in the pool.
    pub fn avail(&self) -> u32 {
        // SAFETY: valid pool pointer; read-only.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs currently allocated from the pool (held by rings, NICs, workers).
    pub fn in_use(&self) -> u32 {
        // SAFETY: valid pool pointer; read-only.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool is no longer used by any port or mbuf (see the type's contract).
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}
