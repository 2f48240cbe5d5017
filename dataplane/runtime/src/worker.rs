//! The per-core polling loop.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dpdk::{Burst, Consumer, Mbuf, MbufConsumer, RxQueue, MAX_BURST};
use rvs_core::counters::CoreCounters;
use rvs_core::io::{Io, PortIdx};
use rvs_core::stack::{FlowTuple, NO_BUCKET};
use rvs_core::Stack;

use crate::ctl::{Cmd, Snapshot, WorkerCtl};
use crate::io::{MbufPacket, NeighMsg, WorkerIo};

/// Prefetch distances of the RX pipeline, in frames ahead of the one handled: the mbuf header
/// (where the frame is), the frame data (needs the header), the session bucket head (needs the
/// frame), the first session entry of the chain (needs the head), the second when the first is not
/// the frame's (needs the first). Five frames between stages is ~330 ns of work at 1M sessions,
/// about two DRAM loads on this VM (its 256 MB probe reads 160-170 ns a load); four gave
/// fnat-est/1M 3-6 % less in paired runs (`scripts/bench-ab`, 8 of 10 pairs), 1K and fnat-cps
/// the same. The pipeline runs across bursts: while frames keep coming, the last `PF_HEADER` of
/// a burst wait for the next one (see [`RxPipe`]).
const PF_HEADER: usize = 25;
const PF_DATA: usize = 20;
const PF_HEAD: usize = 15;
const PF_ENTRY: usize = 10;
const PF_NEXT: usize = 5;
/// The stages' distances, in the order of `RxPipe::done`.
const PF: [usize; 5] = [PF_HEADER, PF_DATA, PF_HEAD, PF_ENTRY, PF_NEXT];

/// Data the worker writes on every packet, on cache lines of its own: it is allocated by the
/// thread that builds the worker (rvsd's control thread), among that thread's other objects, and
/// a line shared with what another core reads or writes would move between the cores on every
/// burst (see `dpdk::Burst`).
#[repr(C, align(64))]
struct Lines<T>(T);

/// One RX queue and its software prefetch pipeline. A frame is handled once every stage was issued
/// for the frames `PF_*` behind it. When a full burst arrived (more are likely waiting), the last
/// `PF_HEADER` frames stay here, prefetched as far as they got, and the next poll appends its burst
/// behind them, so no frame starts cold at a burst boundary. When fewer came, all are handled: at
/// low rates a frame never waits for another poll.
struct RxPipe {
    q: RxQueue,
    /// Received, not yet handled.
    held: Burst,
    /// Session-index bucket of each held frame whose head stage ran.
    buckets: Box<Lines<[u32; MAX_BURST]>>,
    /// Its tuple, parsed by the head stage for the next-entry stage.
    tuples: Box<Lines<[FlowTuple; MAX_BURST]>>,
    /// Per stage (order of [`PF`]): how many held frames, from the front, it was issued for.
    done: [usize; 5],
}

impl RxPipe {
    fn new(q: RxQueue) -> Self {
        RxPipe {
            q,
            held: Burst::new(),
            buckets: Box::new(Lines([NO_BUCKET; MAX_BURST])),
            tuples: Box::new(Lines([FlowTuple::default(); MAX_BURST])),
            done: [0; 5],
        }
    }

    /// Issue stage `s` for held frame `j`.
    #[inline(always)]
    fn stage(
        stack: &Stack<MbufPacket>,
        bk: &mut [u32; MAX_BURST],
        tu: &mut [FlowTuple; MAX_BURST],
        s: usize,
        j: usize,
        m: &Mbuf,
    ) {
        match s {
            0 => m.prefetch_header(),
            1 => m.prefetch_data(),
            2 => bk[j] = stack.prefetch_bucket_keep(m.data(), &mut tu[j]),
            3 => stack.prefetch_entry(bk[j]),
            _ => stack.prefetch_next_kept(bk[j], &tu[j]),
        }
    }

    /// Handle the first `take` held frames (all when `take >= len`), running the prefetch
    /// stages ahead of them; the rest move to the front for the next poll.
    #[inline(always)]
    fn handle(
        &mut self,
        stack: &mut Stack<MbufPacket>,
        io: &mut WorkerIo,
        port: PortIdx,
        take: usize,
        now: u64,
    ) {
        let len = self.held.len();
        let take = take.min(len);
        let bk = &mut self.buckets.0;
        let tu = &mut self.tuples.0;
        // Prologue: bring every stage to its distance from the front (a no-op in steady state,
        // where the held frames are already that far).
        let front = self.held.as_slice();
        for (s, (&dist, &done)) in PF.iter().zip(&self.done).enumerate() {
            for (j, m) in front.iter().enumerate().take(dist.min(len)).skip(done) {
                Self::stage(stack, bk, tu, s, j, m);
            }
        }
        self.held.drain_front_ahead(take, |i, m, ahead| {
            // ahead[k] is held frame i + 1 + k. Each stage spelt out (a loop over `PF` is
            // only unrolled while the stages stay small).
            if let Some(a) = ahead.get(PF_HEADER - 1) {
                Self::stage(stack, bk, tu, 0, i + PF_HEADER, a);
            }
            if let Some(a) = ahead.get(PF_DATA - 1) {
                Self::stage(stack, bk, tu, 1, i + PF_DATA, a);
            }
            if let Some(a) = ahead.get(PF_HEAD - 1) {
                Self::stage(stack, bk, tu, 2, i + PF_HEAD, a);
            }
            if let Some(a) = ahead.get(PF_ENTRY - 1) {
                Self::stage(stack, bk, tu, 3, i + PF_ENTRY, a);
            }
            if let Some(a) = ahead.get(PF_NEXT - 1) {
                Self::stage(stack, bk, tu, 4, i + PF_NEXT, a);
            }
            // Stage 2 ran for every frame before it is handled (prologue or `i - PF_HEAD`).
            stack.handle_at(io, port, MbufPacket(m), bk[i], now);
        });
        for (done, &dist) in self.done.iter_mut().zip(&PF) {
            *done = len.min(take + dist) - take;
        }
        bk.copy_within(take..len, 0);
        tu.copy_within(take..len, 0);
    }
}

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

/// One worker: everything it touches on the packet path is its own (and, 64-byte aligned, on
/// cache lines of its own wherever the thread that builds it puts it).
#[repr(align(64))]
pub struct Worker {
    pub id: usize,
    rx: Vec<RxPipe>,
    io: WorkerIo,
    stack: Stack<MbufPacket>,
    peers: PeerLinks,
    counters: Arc<CoreCounters>,
    burst: u16,
    tsc_per_ms: u64,
    rxb: Burst,
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
            rx: ports.rx.into_iter().map(RxPipe::new).collect(),
            io,
            stack,
            peers,
            counters,
            burst,
            tsc_per_ms: (tsc_hz / 1000).max(1),
            rxb: Burst::new(),
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
    fn control(&mut self, mut cmd: Box<Cmd>) {
        match &mut *cmd {
            Cmd::Apply {
                new,
                old,
                built,
                result,
            } => {
                *result = match built {
                    // Built on the control thread: attach and swap; the set replaced goes
                    // back in its place, to be freed there.
                    Some(b) => self.stack.swap_services_built(&new.services, &mut b.0),
                    None => self
                        .stack
                        .set_services_prepared(&new.services, &new.prepared),
                }
                .map_err(|e| e.to_string());
                if result.is_ok() {
                    self.stack.set_timeouts(new.timeouts);
                    // Announce the new VIPs and LIPs (owned by the swap): the routers and real
                    // servers learn where they now live. Once, by worker 0: every worker owns
                    // the same addresses, and n copies of each broadcast only load the segment.
                    if self.id == 0 {
                        for &(port, ip) in &new.announce {
                            self.stack.announce(&mut self.io, port, ip);
                        }
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

    /// Announce the addresses (gratuitous ARP) before the first poll: worker 0 does, for all
    /// (every worker owns the same addresses).
    pub fn start(&mut self) {
        let now = self.now_ms();
        if self.id == 0 {
            self.stack.on_start(&mut self.io, now);
        }
        self.io.flush();
        self.last_timer_ms = now;
    }

    /// One iteration of the loop: RX a burst on every port and handle it, take packets and
    /// neighbour updates from peers, run bounded timer work, flush TX. Returns packets received.
    #[inline]
    pub fn poll_once(&mut self) -> usize {
        let now = self.now_ms();
        let mut got = 0usize;
        let burst = self.burst as usize;
        for (p, pipe) in self.rx.iter_mut().enumerate() {
            let n = pipe.q.rx_burst_append(&mut pipe.held, self.burst);
            let len = pipe.held.len();
            if len == 0 {
                continue;
            }
            got += n;
            self.counters.rx_packets.add(n as u64);
            // A full burst: more are waiting, keep a pipeline's depth for the next poll.
            let take = if n >= burst {
                len - PF_HEADER.min(len)
            } else {
                len
            };
            pipe.handle(&mut self.stack, &mut self.io, p as PortIdx, take, now);
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
                self.stack
                    .handle_redirected(&mut self.io, port, MbufPacket(m), now);
            }
        }
        let mut msgs = [MaybeUninit::<NeighMsg>::uninit(); 16];
        for c in &mut self.peers.neigh {
            for m in c.recv_burst(&mut msgs) {
                self.stack.neigh_sync(
                    &mut self.io,
                    m.port,
                    m.ip(),
                    rvs_core::MacAddr(m.mac),
                    m.create != 0,
                    now,
                );
            }
        }
        // Sessions expire on every poll (bounded), not only once per millisecond with the other
        // timers: releasing must keep up with the connection rate.
        self.stack.expire_sessions(now);
        if let Some(cmd) = self.ctl.as_mut().and_then(|c| c.poll()) {
            self.control(cmd);
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
        self.finish();
        0
    }

    /// Handle every frame still held in the RX pipelines and flush TX (before the worker stops).
    pub fn finish(&mut self) {
        let now = self.now_ms();
        for (p, pipe) in self.rx.iter_mut().enumerate() {
            pipe.handle(&mut self.stack, &mut self.io, p as PortIdx, usize::MAX, now);
        }
        self.io.flush();
    }

    /// Frames received and not yet handled (held for the prefetch pipeline; at most a burst's
    /// worth of `PF_HEADER` per port, only while full bursts keep arriving).
    pub fn held(&self) -> usize {
        self.rx.iter().map(|p| p.held.len()).sum()
    }
}
