//! The Environment Abstraction Layer: initialised once per process.

use std::ffi::CString;
use std::os::raw::c_char;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::sys;

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is initialised. Dropping it does nothing: DPDK objects (pools, rings, ports)
/// may outlive it safely until the process exits. [`Eal::cleanup`] releases the EAL explicitly.
pub struct Eal {
    tsc_hz: u64,
}

impl Eal {
    /// Initialise the EAL with `args` (argv, `args[0]` being the program name). DPDK allows this
    /// once per process; a second call returns an error.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(Error::other(
                "rte_eal_init",
                "EAL already initialised in this process",
            ));
        }
        let cargs: Vec<CString> = args
            .iter()
            .map(|a| {
                CString::new(a.as_ref())
                    .map_err(|_| Error::other("rte_eal_init", "argument holds a NUL byte"))
            })
            .collect::<Result<_>>()?;
        // rte_eal_init may permute argv; give it its own array of pointers into `cargs`, which
        // outlives the call. DPDK keeps no reference after returning except into strdup'ed copies.
        let mut argv: Vec<*mut c_char> = cargs.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that live across the call.
        let ret = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if ret < 0 {
            INITIALISED.store(false, Ordering::SeqCst);
            return Err(Error::from_errno("rte_eal_init"));
        }
        // Keep the strings alive for the life of the process: some PMDs keep pointers to devargs.
        std::mem::forget(cargs);
        // SAFETY: EAL is initialised.
        let tsc_hz = unsafe { sys::rte_get_tsc_hz() };
        Ok(Eal { tsc_hz })
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Number of lcores EAL was given.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is initialised; plain read.
        unsafe { sys::rte_lcore_count() }
    }

    /// The main lcore id.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: EAL is initialised; plain read.
        unsafe { sys::rte_get_main_lcore() }
    }

    /// Whether `lcore` is enabled in this EAL.
    pub fn lcore_enabled(&self, lcore: u32) -> bool {
        // SAFETY: EAL is initialised; bounds are checked by DPDK.
        unsafe { sys::rte_lcore_is_enabled(lcore) != 0 }
    }

    /// NUMA socket of `lcore`.
    pub fn lcore_socket(&self, lcore: u32) -> i32 {
        // SAFETY: EAL is initialised.
        unsafe { sys::rte_lcore_to_socket_id(lcore) as i32 }
    }
}

impl Eal {
    /// Release the EAL (`rte_eal_cleanup`).
    ///
    /// # Safety
    /// Every pool, ring and mbuf must have been dropped and every port closed, and no lcore may be
    /// running a job: DPDK frees the memory they live in.
    pub unsafe fn cleanup(self) {
        // SAFETY: the caller guarantees nothing uses EAL memory any more.
        unsafe { sys::rte_eal_cleanup() };
    }
}

/// The calling thread's lcore id (`u32::MAX` on a non-EAL thread).
pub fn lcore_id() -> u32 {
    // SAFETY: reads a thread-local through a C accessor.
    unsafe { sys::rvs_lcore_id() }
}

/// Current TSC value: cheap, monotonic on the platforms DPDK supports.
#[inline(always)]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions on x86_64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: the wrapper only reads the cycle counter.
        unsafe { sys::rte_get_tsc_cycles() }
    }
}
