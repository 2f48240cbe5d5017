//! The per-core polling loop.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dpdk::{Burst, Consumer, MbufConsumer, RxQueue};
use rvs_core::counters::CoreCounters;
use rvs_core::io::{Io, PortIdx};
use rvs_core::Stack;

use crate::ctl::{Cmd, Snapshot, WorkerCtl};
use crate::io::{MbufPacket, NeighMsg, WorkerIo};

/// Prefetch distances of the RX pipeline, in packets ahead of the one handled: frame data, then
/// the session bucket head (needs the frame), then the first session entry of the chain (needs
/// the head), then the second when the first is not the packet's (needs the first). Four packets
/// between stages is ~400 ns of work at 1M sessions, about one DRAM miss under virtualisation;
/// measured here at 1M sessions: no prefetch ~700 ns/pkt, 12/8/4 ~330, 16/12/8/4 ~250–360.
const PF_DATA: usize = 16;
const PF_HEAD: usize = 12;
const PF_ENTRY: usize = 8;
const PF_NEXT: usize = 4;

/// The queues a worker owns: RX queue `w` of every port (index = PortIdx). Its TX queues live in
/// its [`WorkerIo`].
pub struct WorkerPorts {
    pub rx: Vec<RxQueue>,
}

/// Rings from the other workers to this one.
pub struct PeerLinks {
    /// Neighbour updates.
    pub neigh: Vec<Consumer<NeighMsg>>,
    /// Packets whose session this worker owns, each tagged with the port it came in on.
    pub redirect: Vec<MbufConsumer>,
}

/// One worker: everything it touches on the packet path is its own.
pub struct Worker {
    pub id: usize,
    rx: Vec<RxQueue>,
    io: WorkerIo,
    stack: Stack<MbufPacket>,
    peers: PeerLinks,
    counters: Arc<CoreCounters>,
    burst: u16,
    tsc_per_ms: u64,
    rxb: Burst,
    /// Session-index bucket of each frame of the burst being handled (prefetch pipeline).
    buckets: Box<[u32; dpdk::mbuf::MAX_BURST]>,
    last_timer_ms: u64,
    polls_since_timer: u32,
    ctl: Option<WorkerCtl>,
    snapshot: Option<Arc<Snapshot>>,
    /// Exception path: per port, this worker's RX queue on the kernel interface mirroring it.
    kernel_rx: Vec<Option<RxQueue>>,
}

/// Timers run once per this many polls (and at least once per millisecond of TSC time).
const TIMER_EVERY_POLLS: u32 = 1024;

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        ports: WorkerPorts,
        io: WorkerIo,
        stack: Stack<MbufPacket>,
        peers: PeerLinks,
        counters: Arc<CoreCounters>,
        burst: u16,
        tsc_hz: u64,
    ) -> Self {
        Worker {
            id,
            rx: ports.rx,
            io,
            stack,
            peers,
            counters,
            burst,
            tsc_per_ms: (tsc_hz / 1000).max(1),
            rxb: Burst::new(),
            buckets: Box::new([0; dpdk::mbuf::MAX_BURST]),
            last_timer_ms: 0,
            polls_since_timer: 0,
            ctl: None,
            snapshot: None,
            kernel_rx: Vec::new(),
        }
    }

    /// Attach the control mailbox (configuration snapshots, session listings).
    pub fn with_ctl(mut self, ctl: WorkerCtl) -> Self {
        self.ctl = Some(ctl);
        self
    }

    /// Attach the exception path: per port, the RX queue of its kernel interface. What the kernel
    /// sends there leaves through the port unchanged.
    pub fn with_kernel(mut self, queues: Vec<Option<RxQueue>>) -> Self {
        self.kernel_rx = queues;
        self
    }

    /// Serve a control command, between two bursts.
    #[cold]
    fn control(&mut self, mut cmd: Box<Cmd>, now: u64) {
        match &mut *cmd {
            Cmd::Apply { new, old, result } => {
                *result = self
                    .stack
                    .set_services(&new.services)
                    .map_err(|e| e.to_string());
                if result.is_ok() {
                    self.stack.set_timeouts(new.timeouts);
                    for &(port, ip) in &new.announce {
                        let _ = self.stack.add_owned(&mut self.io, port, ip, now);
                    }
                    *old = self.snapshot.replace(new.clone());
                }
            }
            Cmd::Sessions { start, out, next } => {
                *next = self.stack.sessions_page(*start, out);
            }
        }
        if let Some(c) = self.ctl.as_mut() {
            c.answer(cmd);
        }
    }

    #[inline(always)]
    fn now_ms(&self) -> u64 {
        dpdk::eal::tsc() / self.tsc_per_ms
    }

    /// Announce the worker's addresses (gratuitous ARP) before the first poll.
    pub fn start(&mut self) {
        let now = self.now_ms();
        self.stack.on_start(&mut self.io, now);
        self.io.flush();
        self.last_timer_ms = now;
    }

    /// One iteration of the loop: RX a burst on every port and handle it, take packets and
    /// neighbour updates from peers, run bounded timer work, flush TX. Returns packets received.
    #[inline]
    pub fn poll_once(&mut self) -> usize {
        let now = self.now_ms();
        let mut got = 0usize;
        for (p, q) in self.rx.iter_mut().enumerate() {
            let n = q.rx_burst(&mut self.rxb, self.burst);
            if n == 0 {
                continue;
            }
            got += n;
            self.counters.rx_packets.add(n as u64);
            // Software pipeline over the burst: frame data PF_DATA packets ahead of the one
            // handled, session bucket head PF_HEAD ahead, chain entries PF_ENTRY / PF_NEXT ahead.
            let (stack, io, bk) = (&mut self.stack, &mut self.io, &mut self.buckets);
            let first = self.rxb.as_slice();
            for m in first.iter().take(PF_DATA) {
                m.prefetch_data();
            }
            for (i, m) in first.iter().take(PF_HEAD).enumerate() {
                bk[i] = stack.prefetch_bucket(m.data());
            }
            for &b in bk.iter().take(PF_ENTRY.min(n)) {
                stack.prefetch_entry(b);
            }
            for (i, m) in first.iter().take(PF_NEXT).enumerate() {
                stack.prefetch_next(bk[i], m.data());
            }
            let mut i = 0;
            self.rxb.drain_ahead(|m, ahead| {
                if let Some(a) = ahead.get(PF_DATA - 1) {
                    a.prefetch_data();
                }
                if let Some(a) = ahead.get(PF_HEAD - 1) {
                    bk[i + PF_HEAD] = stack.prefetch_bucket(a.data());
                }
                if ahead.len() >= PF_ENTRY {
                    stack.prefetch_entry(bk[i + PF_ENTRY]);
                }
                if let Some(a) = ahead.get(PF_NEXT - 1) {
                    stack.prefetch_next(bk[i + PF_NEXT], a.data());
                }
                i += 1;
                stack.handle(io, p as PortIdx, MbufPacket(m), now);
            });
        }
        for (p, q) in self.kernel_rx.iter_mut().enumerate() {
            let Some(q) = q else { continue };
            let n = q.rx_burst(&mut self.rxb, self.burst);
            if n == 0 {
                continue;
            }
            self.counters.from_kernel.add(n as u64);
            for m in self.rxb.drain() {
                self.io.send(p as PortIdx, MbufPacket(m));
            }
        }
        for c in &mut self.peers.redirect {
            let n = c.recv_burst(&mut self.rxb, self.burst);
            if n == 0 {
                continue;
            }
            got += n;
            self.counters.redirected_in.add(n as u64);
            for (m, port) in self.rxb.drain_tagged() {
                self.stack.handle(&mut self.io, port, MbufPacket(m), now);
            }
        }
        let mut msgs = [MaybeUninit::<NeighMsg>::uninit(); 16];
        for c in &mut self.peers.neigh {
            for m in c.recv_burst(&mut msgs) {
                self.stack.neigh_update(
                    &mut self.io,
                    m.port,
                    m.ip(),
                    rvs_core::MacAddr(m.mac),
                    now,
                );
            }
        }
        // Sessions expire on every poll (bounded), not only once per millisecond with the other
        // timers: releasing must keep up with the connection rate.
        self.stack.expire_sessions(now);
        if let Some(cmd) = self.ctl.as_mut().and_then(|c| c.poll()) {
            self.control(cmd, now);
        }
        self.polls_since_timer += 1;
        if self.polls_since_timer >= TIMER_EVERY_POLLS || now != self.last_timer_ms {
            self.stack.poll_timers(&mut self.io, now);
            self.polls_since_timer = 0;
            self.last_timer_ms = now;
        }
        self.io.flush();
        self.counters.polls.inc();
        if got > 0 {
            self.counters.busy_polls.inc();
        }
        got
    }

    /// Poll until `stop` is raised. Returns 0.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> i32 {
        self.start();
        while !stop.load(Ordering::Relaxed) {
            self.poll_once();
        }
        self.io.flush();
        0
    }
}
