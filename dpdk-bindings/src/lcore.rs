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

/// Run `f` on `lcore` (a worker lcore given to EAL, currently idle). The EAL pins the lcore's
/// thread to its CPU.
pub fn launch<F>(lcore: u32, f: F) -> Result<Launched>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let job: Box<Job> = Box::new(Box::new(f));
    let arg = Box::into_raw(job) as *mut c_void;
    // SAFETY: trampoline takes ownership of `arg` when the launch succeeds.
    let ret = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if ret < 0 {
        // SAFETY: the launch failed, so the job was not handed over; reclaim it.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
    }
    check(&format!("rte_eal_remote_launch(lcore {lcore})"), ret)?;
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
