//! The per-core polling loop.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dpdk::{Burst, Consumer, RxQueue};
use rvs_core::counters::CoreCounters;
use rvs_core::io::PortIdx;
use rvs_core::Stack;

use crate::io::{MbufPacket, NeighMsg, WorkerIo};

/// The queues a worker owns: RX queue `w` and TX queue `w` of every port (index = PortIdx).
pub struct WorkerPorts {
    pub rx: Vec<RxQueue>,
}

/// Rings from the other workers to this one.
pub struct PeerLinks {
    pub from_peers: Vec<Consumer<NeighMsg>>,
}

/// One worker: everything it touches on the packet path is its own.
pub struct Worker {
    pub id: usize,
    rx: Vec<RxQueue>,
    io: WorkerIo,
    stack: Stack<MbufPacket>,
    from_peers: Vec<Consumer<NeighMsg>>,
    counters: Arc<CoreCounters>,
    stop: Arc<AtomicBool>,
    burst: u16,
    tsc_per_ms: u64,
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
        stop: Arc<AtomicBool>,
        burst: u16,
        tsc_hz: u64,
    ) -> Self {
        Worker {
            id,
            rx: ports.rx,
            io,
            stack,
            from_peers: peers.from_peers,
            counters,
            stop,
            burst,
            tsc_per_ms: (tsc_hz / 1000).max(1),
        }
    }

    #[inline(always)]
    fn now_ms(&self) -> u64 {
        dpdk::eal::tsc() / self.tsc_per_ms
    }

    /// Poll until the stop flag is raised. Returns 0.
    pub fn run(mut self) -> i32 {
        let mut burst = Burst::new();
        let mut msgs = [MaybeUninit::<NeighMsg>::uninit(); 32];
        let now = self.now_ms();
        self.stack.on_start(&mut self.io, now);
        self.io.flush();
        let mut last_timer_ms = now;
        let mut polls_since_timer = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            let now = self.now_ms();
            let mut got = 0usize;
            for (p, q) in self.rx.iter_mut().enumerate() {
                let n = q.rx_burst(&mut burst, self.burst);
                if n == 0 {
                    continue;
                }
                got += n;
                self.counters.rx_packets.add(n as u64);
                for m in burst.drain() {
                    self.stack
                        .handle(&mut self.io, p as PortIdx, MbufPacket(m), now);
                }
            }
            for c in &mut self.from_peers {
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
            polls_since_timer += 1;
            if polls_since_timer >= TIMER_EVERY_POLLS || now != last_timer_ms {
                self.stack.poll_timers(&mut self.io, now);
                polls_since_timer = 0;
                last_timer_ms = now;
            }
            self.io.flush();
            self.counters.polls.inc();
            if got > 0 {
                self.counters.busy_polls.inc();
            }
        }
        self.io.flush();
        0
    }
}
