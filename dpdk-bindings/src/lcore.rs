//! Running closures on worker lcores.

use std::os::raw::{c_int, c_void};

use crate::error::{check, Result};
use crate::sys;

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch`, handed over exactly once.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    job()
}

/// A job running on a worker lcore.
#[must_use = "wait() for the lcore, or it keeps running"]
pub struct Launched {
    lcore: u32,
}

/// Launches are made one at a time: DPDK's check that the lcore is idle and its hand-over are
/// not one atomic step.
static LAUNCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run `f` on `lcore` (a worker lcore given to EAL, currently idle). The EAL pins the lcore's
/// thread to its CPU. Refused (EINVAL) for an lcore EAL does not run, or its main lcore.
pub fn launch<F>(lcore: u32, f: F) -> Result<Launched>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let op = format!("rte_eal_remote_launch(lcore {lcore})");
    // DPDK indexes its lcore table with `lcore` unchecked.
    // SAFETY: plain queries, after EAL init (the only way to have lcores to launch on).
    let usable = lcore < sys::RTE_MAX_LCORE
        && unsafe { sys::rte_lcore_is_enabled(lcore) } != 0
        && lcore != unsafe { sys::rte_get_main_lcore() };
    if !usable {
        return Err(crate::error::Error::from_code(op, libc::EINVAL));
    }
    let _one = LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
    let job: Box<Job> = Box::new(Box::new(f));
    let arg = Box::into_raw(job) as *mut c_void;
    // SAFETY: trampoline takes ownership of `arg` when the launch succeeds.
    let ret = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if ret < 0 {
        // SAFETY: the launch failed, so the job was not handed over; reclaim it.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
    }
    check(&op, ret)?;
    Ok(Launched { lcore })
}

impl Launched {
    /// Block until the job returns; its return value.
    pub fn wait(self) -> i32 {
        // SAFETY: waits on an lcore we launched.
        unsafe { sys::rte_eal_wait_lcore(self.lcore) }
    }

    pub fn lcore(&self) -> u32 {
        self.lcore
    }
}
