//! Control commands to workers: immutable configuration snapshots and session listings, handed
//! over lockless SPSC rte_rings and answered on a second ring.
//!
//! The control thread sends a boxed [`Cmd`]; the worker takes it between two bursts (one ring
//! poll per loop), does the work and sends the same box back with the result. A new [`Snapshot`]
//! replaces the worker's services at that burst boundary, so a worker never sees a half-applied
//! change; the snapshot it replaced travels back inside the answer and is freed by the control
//! thread, never on the worker, and only once that worker has moved on.

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::sync::Arc;

use dpdk::{Consumer, Producer};
use rvs_core::config::{ServiceConf, Timeouts};
use rvs_core::fullnat::SessionInfo;
use rvs_core::io::PortIdx;
use rvs_core::sched::MhLookup;
use rvs_core::service::Services;

/// One immutable configuration generation.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub services: Vec<ServiceConf>,
    pub timeouts: Timeouts,
    /// Addresses (VIPs, LIPs) new in this generation, announced with a gratuitous ARP.
    pub announce: Vec<(PortIdx, IpAddr)>,
    /// The services' tables built once for every worker ([`Services::prepare`]), so that a
    /// worker's swap between two bursts stays short.
    pub prepared: Vec<Option<MhLookup>>,
}

impl Snapshot {
    /// A snapshot, its shared tables built here (on the control thread).
    pub fn new(
        generation: u64,
        services: Vec<ServiceConf>,
        timeouts: Timeouts,
        announce: Vec<(PortIdx, IpAddr)>,
    ) -> Snapshot {
        Snapshot {
            generation,
            prepared: Services::prepare(&services),
            services,
            timeouts,
            announce,
        }
    }
}

// A command crosses threads as a raw pointer through the rings, where the compiler cannot see
// it: it must be Send.
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<Cmd>();
};

/// A service set built for one worker off the worker (see [`Cmd::Apply`]).
pub struct Built(pub Box<Services>);

impl Built {
    /// The service set of `snap` for a worker of a stack with `n_ports` ports and `max_dests`
    /// dest ids (what the worker would build; errors are the worker's).
    pub fn for_worker(
        snap: &Snapshot,
        max_dests: u32,
        n_ports: usize,
    ) -> Result<Built, rvs_core::service::ServiceError> {
        Services::build_detached(&snap.services, max_dests, n_ports, &snap.prepared)
            .map(|s| Built(Box::new(s)))
    }
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Built({} services)", self.0.len())
    }
}

/// A command and, once the worker answered, its result.
#[derive(Debug)]
pub enum Cmd {
    /// Install `new`; the answer carries the snapshot it replaced (`old`) and the outcome.
    /// `built`: this worker's service set, built from `new` on the control thread
    /// ([`Built::for_worker`]); the worker then only attaches and swaps it, and the answer
    /// carries the set it replaced back in its place (freed on the control thread). Without
    /// one the worker builds the set itself.
    Apply {
        new: Arc<Snapshot>,
        old: Option<Arc<Snapshot>>,
        built: Option<Built>,
        result: Result<(), String>,
    },
    /// Copy sessions from table slot `start` into `out` (sized by the sender; the worker never
    /// grows it); `next` is where the following page starts, None at the end.
    Sessions {
        start: usize,
        out: Vec<SessionInfo>,
        next: Option<usize>,
    },
}

/// The control thread's end of one worker's mailbox.
pub struct CtlLink {
    // Private: the rings carry `Box<Cmd>` pointers as integers; only this module may put them
    // there or take them out (a stray integer would be turned into a box).
    to_worker: Producer<usize>,
    from_worker: Consumer<usize>,
    /// Commands that timed out, still with the worker: their late answers are freed when they
    /// come, never taken for the answer to a later command.
    late: Vec<usize>,
}

/// The worker's end of its mailbox.
pub struct WorkerCtl {
    // Private, as in `CtlLink`.
    from_ctl: Consumer<usize>,
    to_ctl: Producer<usize>,
}

/// Most commands a worker may leave unanswered (timed out) before it is sent no more: with the
/// one in flight, fewer than its answer ring holds.
const MAX_LATE: usize = 8;

/// A mailbox pair for one worker.
pub fn mailbox(worker: usize) -> dpdk::Result<(CtlLink, WorkerCtl)> {
    let (tx, rx) = dpdk::ring::spsc::<usize>(&format!("rvs_ctl_{worker}"), 16)?;
    let (atx, arx) = dpdk::ring::spsc::<usize>(&format!("rvs_ack_{worker}"), 16)?;
    Ok((
        CtlLink {
            to_worker: tx,
            from_worker: arx,
            late: Vec::new(),
        },
        WorkerCtl {
            from_ctl: rx,
            to_ctl: atx,
        },
    ))
}

impl CtlLink {
    /// Send `cmd` and wait (polling, `timeout`) for the worker's answer.
    pub fn call(
        &mut self,
        cmd: Box<Cmd>,
        timeout: std::time::Duration,
    ) -> Result<Box<Cmd>, String> {
        // Answers the worker may still owe must fit its answer ring (15 slots) with this one's:
        // a worker that does not answer gets no more commands.
        if self.reap() >= MAX_LATE {
            return Err(format!(
                "worker has {} commands unanswered; not sending more",
                self.late.len()
            ));
        }
        let p = Box::into_raw(cmd) as usize;
        if self.to_worker.send_burst(&[p]) != 1 {
            // SAFETY: the pointer was not handed over; take the box back.
            drop(unsafe { Box::from_raw(p as *mut Cmd) });
            return Err("worker mailbox full".into());
        }
        let t0 = std::time::Instant::now();
        let mut slot = [MaybeUninit::<usize>::uninit(); 1];
        loop {
            if let Some(&r) = self.from_worker.recv_burst(&mut slot).first() {
                if r == p {
                    // SAFETY: the worker hands back exactly the boxes we sent, each once.
                    return Ok(unsafe { Box::from_raw(r as *mut Cmd) });
                }
                self.take_late(r);
                continue;
            }
            if t0.elapsed() > timeout {
                // The box stays with the worker; its answer is dropped when it comes (it is
                // leaked if the worker never answers).
                self.late.push(p);
                return Err("worker did not answer in time".into());
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Commands sent and not answered in time, still with the worker.
    pub fn late(&self) -> usize {
        self.late.len()
    }

    /// Take back (and free, on this thread) the late commands the worker has answered since,
    /// without waiting; returns how many are still with it.
    pub fn reap(&mut self) -> usize {
        let mut slot = [MaybeUninit::<usize>::uninit(); 1];
        while let Some(&r) = self.from_worker.recv_burst(&mut slot).first() {
            self.take_late(r);
        }
        self.late.len()
    }

    /// Free answer `r` if it is one of the late commands (control thread).
    fn take_late(&mut self, r: usize) {
        if let Some(i) = self.late.iter().position(|&l| l == r) {
            self.late.swap_remove(i);
            // SAFETY: a box we sent earlier and gave up waiting for, answered now: ours
            // again (freed here, on the control thread, with the snapshot it carries).
            drop(unsafe { Box::from_raw(r as *mut Cmd) });
        }
    }
}

impl WorkerCtl {
    /// A command waiting for this worker, if any.
    #[inline]
    pub fn poll(&mut self) -> Option<Box<Cmd>> {
        let mut slot = [MaybeUninit::<usize>::uninit(); 1];
        let &p = self.from_ctl.recv_burst(&mut slot).first()?;
        // SAFETY: the control thread sent a Box<Cmd> it gave up; we own it until we answer.
        Some(unsafe { Box::from_raw(p as *mut Cmd) })
    }

    /// Hand the answered command back.
    pub fn answer(&mut self, cmd: Box<Cmd>) {
        let p = Box::into_raw(cmd) as usize;
        // With one command in flight per worker the ring cannot be full; if it were, the box is
        // leaked rather than freed on the worker.
        let _ = self.to_ctl.send_burst(&[p]);
    }
}
