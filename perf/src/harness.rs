//! The device under test, the generator that feeds it, and the measuring loops.
//!
//! Every trace runs over fresh net_ring ports ([`dpdk::Port::from_rings`]), a set per worker: the
//! generator enqueues frames on the RX ring of port 0 and dequeues whatever any port transmitted,
//! so the device under test goes through the real `rte_eth_rx_burst`/`rte_eth_tx_burst` of an
//! ethdev. For rvs the device
//! is the production [`Worker`] (`poll_once`: RX burst per port → `Stack::handle` → TX flush); for
//! the baseline it is [`IoFwd`] (RX burst → TX burst on the same port, no processing).
//!
//! Where the generator runs is a [`GenMode`]: on its own lcore (`Lcore`, the default: the worker
//! core does nothing but poll, as in production) or interleaved on the worker's core (`Inline`:
//! generator step, then one timed poll; used on one core and under callgrind).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use dpdk::{Burst, Mbuf, MbufConsumer, MbufProducer, Mempool, Port, PortConf, RxQueue, TxQueue};
use rvs_core::counters::{CoreCounters, CounterSnapshot, DropReason};
use rvs_core::Stack;
use rvs_dataplane::{PeerLinks, PeerSenders, Worker, WorkerIo, WorkerPorts};

use crate::frames::FrameList;
use crate::trace::{Frame, SetupCtx, SetupIo, Trace};

/// Mbufs per RX/TX ring of the net_ring ports.
pub const RING_SIZE: u32 = 1024;

/// What is polled: the rvs worker or the bare io-forward baseline.
pub trait Dut: Send {
    /// Once, before the first poll.
    fn start(&mut self) {}
    /// One loop iteration; packets received.
    fn poll(&mut self) -> usize;
    /// The stack's counters (None for the baseline).
    fn counters(&self) -> Option<CounterSnapshot> {
        None
    }
}

/// The production worker loop.
pub struct RvsDut {
    worker: Worker,
    counters: Arc<CoreCounters>,
}

impl Dut for RvsDut {
    fn start(&mut self) {
        self.worker.start();
    }
    #[inline]
    fn poll(&mut self) -> usize {
        self.worker.poll_once()
    }
    fn counters(&self) -> Option<CounterSnapshot> {
        Some(self.counters.snapshot())
    }
}

/// The baseline: RX a burst on each port and TX it back on the same port, nothing else.
pub struct IoFwd {
    queues: Vec<(RxQueue, TxQueue)>,
    burst: Burst,
    max: u16,
}

impl Dut for IoFwd {
    #[inline]
    fn poll(&mut self) -> usize {
        let mut got = 0;
        for (rx, tx) in &mut self.queues {
            let n = rx.rx_burst(&mut self.burst, self.max);
            if n == 0 {
                continue;
            }
            got += n;
            tx.tx_burst(&mut self.burst);
            self.burst.clear();
        }
        got
    }
}

/// The generator of one worker: refills transmitted mbufs with the next trace frames (a memcpy of
/// the frame, restoring whatever the worker rewrote) and feeds them to port 0's RX ring; tops up
/// from the pool while the RX ring has room (packets the stack dropped or consumed went back to
/// the pool).
pub struct Generator {
    feed: MbufProducer,
    drain: Vec<MbufConsumer>,
    frames: Arc<FrameList>,
    next: usize,
    pool: Arc<Mempool>,
    out: Burst,
    back: Burst,
    burst: u16,
    /// Laps of the frame list completed (passed to `patch`).
    lap: u32,
    respond: Option<fn(&mut [u8]) -> bool>,
    patch: Option<fn(&mut [u8], u32, u16)>,
    /// This worker's ports, whose RX queues are emptied once the run is over and the device
    /// gone (mbufs left in an RX ring would otherwise never return to the pool).
    leftover: Vec<Port>,
}

impl Generator {
    #[inline(always)]
    fn refill(&mut self, mut m: Mbuf) -> Mbuf {
        let i = self.next;
        let lap = self.lap;
        self.next += 1;
        if self.next == self.frames.len() {
            self.next = 0;
            self.lap = self.lap.wrapping_add(1);
        }
        // A fixed 64-byte copy (inlined vector moves), then the frame's length.
        if m.set_len(64) {
            let Ok(d) = <&mut [u8; 64]>::try_from(m.data_mut()) else {
                return m;
            };
            let (len, tag) = self.frames.write(i, d);
            m.set_len(len as usize);
            if let Some(p) = self.patch {
                p(m.data_mut(), lap, tag);
            }
        }
        m
    }

    /// Bytes of the frame list this generator replays (see [`FrameList`]).
    pub fn list_bytes(&self) -> usize {
        self.frames.bytes()
    }

    /// Give the generator memory of its own: called on its lcore before the run, it copies the
    /// frame list there (that thread's malloc arena), so nothing the generator reads on every
    /// packet shares a cache line with what the worker, built on the main thread, writes. A NIC
    /// shares no lines with the gateway's heap; a generator that did would cost the worker misses
    /// that depend on allocation sizes, not on the code measured.
    pub fn localize(&mut self) {
        self.frames = Arc::new((*self.frames).clone());
    }

    /// After the run, the device dropped (its queue handles given back): free what is left in
    /// the RX rings.
    pub fn drain_rx(&mut self) {
        let mut b = Burst::new();
        for p in &self.leftover {
            let mut q = p.rx_queue(0);
            while q.rx_burst(&mut b, dpdk::MAX_BURST as u16) > 0 {
                b.clear();
            }
        }
    }

    /// One step: recycle what was transmitted, top up, enqueue. Returns packets enqueued.
    #[inline]
    pub fn step(&mut self) -> usize {
        let burst = self.burst as usize;
        // Always drain the TX rings (a full TX ring would count as drops in the worker); what
        // does not fit in `out` (RX ring full) goes back to the pool.
        for d in 0..self.drain.len() {
            if self.drain[d].recv_burst(&mut self.back, self.burst) == 0 {
                continue;
            }
            let mut back = std::mem::take(&mut self.back);
            for m in back.drain() {
                if self.out.len() + burst > dpdk::MAX_BURST {
                    drop(m);
                    continue;
                }
                let mut m = m;
                if let Some(r) = self.respond {
                    if r(m.data_mut()) {
                        let _ = self.out.push(m);
                        continue;
                    }
                }
                let m = self.refill(m);
                let _ = self.out.push(m);
            }
            self.back = back;
        }
        while self.out.len() < burst {
            let Some(m) = self.pool.alloc() else { break };
            let m = self.refill(m);
            let _ = self.out.push(m);
        }
        self.feed.send_burst(&mut self.out)
    }
}

/// Where the generator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenMode {
    /// On its own lcore, beside the worker's.
    Lcore,
    /// Interleaved on the worker's lcore: one generator step, then one (timed) poll.
    Inline,
}

/// Which device a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Rvs,
    IoFwd,
}

/// Shared run settings.
#[derive(Clone, Debug)]
pub struct RunConf {
    pub burst: u16,
    pub workers: usize,
    pub lcores: Vec<u32>,
    pub mode: GenMode,
    pub warmup_ms: u64,
    pub measure_ms: u64,
}

/// What one worker measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub pkts: u64,
    pub polls: u64,
    pub busy_polls: u64,
    /// TSC ticks spent in polls that received packets.
    pub busy_tsc: u64,
    /// TSC ticks spent in generator steps (inline mode only).
    pub gen_tsc: u64,
    pub wall_tsc: u64,
    /// The stack's success counter and total drops over the measured window (rvs only).
    pub success: u64,
    pub drops: u64,
    /// The most frequent drop reason in the window, with its count.
    pub top_drop: Option<(&'static str, u64)>,
    /// FULLNAT sessions created and expired over the measured window.
    pub created: u64,
    pub expired: u64,
}

/// One run: summed over workers.
#[derive(Clone, Debug)]
pub struct Result {
    pub per_worker: Vec<Stats>,
    pub tsc_hz: u64,
}

impl Result {
    fn sum(&self, f: fn(&Stats) -> u64) -> u64 {
        self.per_worker.iter().map(f).sum()
    }
    /// Packets received by all workers.
    pub fn pkts(&self) -> u64 {
        self.sum(|s| s.pkts)
    }
    /// Million packets per second, all workers together, over the wall time.
    pub fn mpps(&self) -> f64 {
        let wall = self
            .per_worker
            .iter()
            .map(|s| s.wall_tsc)
            .max()
            .unwrap_or(1) as f64;
        self.pkts() as f64 / (wall / self.tsc_hz as f64) / 1e6
    }
    /// Nanoseconds per packet in busy polls (per worker core).
    pub fn ns_per_pkt(&self) -> f64 {
        self.sum(|s| s.busy_tsc) as f64 * 1e9 / self.tsc_hz as f64 / self.pkts().max(1) as f64
    }
    /// Generator nanoseconds per packet (inline mode).
    pub fn gen_ns_per_pkt(&self) -> f64 {
        self.sum(|s| s.gen_tsc) as f64 * 1e9 / self.tsc_hz as f64 / self.pkts().max(1) as f64
    }
    /// Packets per busy poll (= burst when the worker is the bottleneck).
    pub fn avg_burst(&self) -> f64 {
        self.pkts() as f64 / self.sum(|s| s.busy_polls).max(1) as f64
    }
    /// Share of the wall time the worker spent in busy polls.
    pub fn busy_share(&self) -> f64 {
        self.sum(|s| s.busy_tsc) as f64 / self.sum(|s| s.wall_tsc).max(1) as f64
    }
    /// Share of received packets that ended as the trace expects.
    pub fn success_share(&self) -> f64 {
        self.sum(|s| s.success) as f64 / self.pkts().max(1) as f64
    }
    pub fn drops(&self) -> u64 {
        self.sum(|s| s.drops)
    }
    /// Sessions created per second (all workers, wall time).
    pub fn created_per_s(&self) -> f64 {
        self.sum(|s| s.created) as f64 / self.wall_s()
    }
    /// Sessions expired per second (all workers, wall time).
    pub fn expired_per_s(&self) -> f64 {
        self.sum(|s| s.expired) as f64 / self.wall_s()
    }
    fn wall_s(&self) -> f64 {
        let wall = self
            .per_worker
            .iter()
            .map(|s| s.wall_tsc)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        wall / self.tsc_hz as f64
    }
    /// The most frequent drop reason (of the worker that dropped most).
    pub fn top_drop(&self) -> Option<(&'static str, u64)> {
        self.per_worker
            .iter()
            .filter_map(|s| s.top_drop)
            .max_by_key(|&(_, n)| n)
    }
}

static PORT_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Net_ring ports for one run (configured and started, `queues` queues each).
fn ring_ports(
    n: usize,
    queues: u16,
    pool: &Mempool,
) -> std::result::Result<Vec<dpdk::RingPort>, String> {
    (0..n)
        .map(|_| {
            let name = format!("bp{}", PORT_SEQ.fetch_add(1, Ordering::Relaxed));
            let rp = Port::from_rings(&name, queues, RING_SIZE).map_err(|e| e.to_string())?;
            let conf = PortConf::plain(queues, RING_SIZE as u16);
            rp.port.configure(&conf, pool).map_err(|e| e.to_string())?;
            rp.port.start().map_err(|e| e.to_string())?;
            Ok(rp)
        })
        .collect()
}

/// Milliseconds on the worker's clock (same formula as `Worker`).
fn now_ms(tsc_hz: u64) -> u64 {
    dpdk::eal::tsc() / (tsc_hz / 1000).max(1)
}

/// Build the stack of one worker for `trace`, with its neighbours resolved and set-up applied;
/// it polls queue 0 of `ports`, its own (see [`lanes`]).
pub fn rvs_worker(
    trace: &Trace,
    w: usize,
    nw: usize,
    ports: &[Port],
    pool: &Arc<Mempool>,
    burst: u16,
    tsc_hz: u64,
) -> std::result::Result<(RvsDut, Option<Vec<Frame>>), String> {
    let counters = Arc::new(CoreCounters::default());
    let txq = ports.iter().map(|p| p.tx_queue(0)).collect();
    let peers = PeerSenders {
        neigh: Vec::new(),
        redirect: (0..nw).map(|_| None).collect(),
    };
    let mut io = WorkerIo::new(pool.clone(), txq, peers, counters.clone());
    let mut cfg = trace.stack.clone();
    cfg.worker = w as u16;
    cfg.n_workers = nw as u16;
    let mut stack = Stack::new(&cfg, counters.clone());
    let now = now_ms(tsc_hz);
    for &(p, ip, mac) in &trace.neighbours {
        stack.neigh_update(&mut io, p, ip, mac, now);
    }
    let mut frames = None;
    if let Some(setup) = &trace.setup {
        let mut sio = SetupIo {
            pool: pool.clone(),
            sent: 0,
        };
        let ctx = SetupCtx {
            worker: w,
            now_ms: now_ms(tsc_hz),
        };
        frames = setup(&mut stack, &mut sio, &ctx).map_err(|e| format!("{}: {e}", trace.name))?;
    }
    let rx = ports.iter().map(|p| p.rx_queue(0)).collect();
    let links = PeerLinks {
        neigh: Vec::new(),
        redirect: Vec::new(),
    };
    let worker = Worker::new(
        w,
        WorkerPorts { rx },
        io,
        stack,
        links,
        counters.clone(),
        burst,
        tsc_hz,
    );
    Ok((RvsDut { worker, counters }, frames))
}

/// Everything one worker lcore (and its generator) needs for a run.
pub struct Lane {
    pub dut: Box<dyn Dut>,
    pub gen: Generator,
    /// This lane's net_ring ports, closed by [`run`] when it is over so that repeated runs do
    /// not exhaust `RTE_MAX_ETHPORTS`.
    pub ports: Vec<Port>,
}

/// Build the lanes (one per worker) of a run of `trace` on `device`. Every worker gets net_ring
/// ports of its own (one queue each), not a queue of shared ones: the net_ring PMD keeps its
/// per-queue packet counters in one array (24 bytes a queue, written on every burst), so
/// workers on queues 0 and 1 of one port would share a cache line that NIC PMDs do not make
/// them share (2 workers of the bare io-forward: 1.3 x one on shared ports, 2.0 x as two
/// processes). Worker `w` still runs as worker `w` of `workers` (its lports, its share), with
/// mbuf pool `pools[w]` of its own.
pub fn lanes(
    trace: &Trace,
    device: Device,
    conf: &RunConf,
    pools: &[Arc<Mempool>],
    tsc_hz: u64,
) -> std::result::Result<Vec<Lane>, String> {
    if pools.len() < conf.workers {
        return Err(format!(
            "{} worker(s), {} mbuf pool(s): one per worker",
            conf.workers,
            pools.len()
        ));
    }
    let nw = conf.workers;
    let nports = match device {
        Device::Rvs => trace.ports(),
        Device::IoFwd => 1,
    };
    // DPDK 22.11's default RTE_MAX_ETHPORTS. A trace's lanes stay open while the baseline run
    // paired with them (one port per worker) is made: room for both.
    const MAX_ETHPORTS: usize = 32;
    let paired = match device {
        Device::Rvs => nw,
        Device::IoFwd => 0,
    };
    if nw * nports + paired > MAX_ETHPORTS {
        return Err(format!(
            "{nw} workers x {nports} net_ring ports each, and {paired} for the baseline paired \
             with them: more than the {MAX_ETHPORTS} ethdevs DPDK allows"
        ));
    }
    let shared: Arc<FrameList> = Arc::new(FrameList::new(if trace.frames.is_empty() {
        // Frames come from each worker's set-up; the baseline only needs something to carry.
        vec![crate::trace::filler_frame()]
    } else {
        trace.frames.clone()
    }));
    let mut out = Vec::with_capacity(nw);
    // Each worker's own pool: its generator (the NIC) fills from it, its stack allocates from
    // it, as an rvsd worker's RX queues and stack do.
    for (w, pool) in pools.iter().enumerate().take(nw) {
        let mut rps = ring_ports(nports, 1, pool)?;
        let ports: Vec<Port> = rps.iter().map(|r| r.port).collect();
        // The feed of port 0's RX ring and the drains of every port's TX ring.
        let feed = rps[0].feed.pop().expect("one feed per port");
        let drain = rps
            .iter_mut()
            .map(|rp| rp.drain.pop().expect("one drain per port"))
            .collect();
        let mut frames = shared.clone();
        let dut: Box<dyn Dut> = match device {
            Device::Rvs => {
                let (dut, own) = rvs_worker(trace, w, nw, &ports, pool, conf.burst, tsc_hz)?;
                if let Some(own) = own {
                    frames = Arc::new(FrameList::new(own));
                }
                Box::new(dut)
            }
            Device::IoFwd => Box::new(IoFwd {
                queues: ports
                    .iter()
                    .map(|p| (p.rx_queue(0), p.tx_queue(0)))
                    .collect(),
                burst: Burst::new(),
                max: conf.burst,
            }),
        };
        let gen = Generator {
            feed,
            drain,
            next: if frames.len() == shared.len() {
                w * frames.len() / nw
            } else {
                0
            },
            frames,
            pool: pool.clone(),
            out: Burst::new(),
            back: Burst::new(),
            burst: conf.burst,
            lap: 0,
            leftover: ports.clone(),
            respond: match device {
                Device::Rvs => trace.respond,
                Device::IoFwd => None,
            },
            patch: match device {
                Device::Rvs => trace.patch,
                Device::IoFwd => None,
            },
        };
        out.push(Lane { dut, gen, ports });
    }
    Ok(out)
}

/// The timed loop of one worker: warm up, then measure for `measure_ms` of TSC time. In inline
/// mode the generator steps before every poll (and is timed apart); in lcore mode it runs
/// elsewhere until `done` reaches the number of workers.
fn worker_loop(
    dut: &mut dyn Dut,
    mut gen: Option<&mut Generator>,
    tsc_hz: u64,
    warmup_ms: u64,
    measure_ms: u64,
    success: fn(&CounterSnapshot) -> u64,
) -> Stats {
    let ms = (tsc_hz / 1000).max(1);
    dut.start();
    let t0 = dpdk::eal::tsc();
    let warm_end = t0 + warmup_ms * ms;
    let mut s = Stats::default();
    let mut measuring = false;
    let mut m_start = 0;
    let mut m_end = u64::MAX;
    let mut before = CounterSnapshot::default();
    loop {
        let g0 = dpdk::eal::tsc();
        if let Some(g) = gen.as_deref_mut() {
            g.step();
        }
        let a = dpdk::eal::tsc();
        let n = dut.poll();
        let b = dpdk::eal::tsc();
        if !measuring {
            if b >= warm_end {
                measuring = true;
                m_start = b;
                m_end = b + measure_ms * ms;
                before = dut.counters().unwrap_or_default();
            }
            continue;
        }
        s.polls += 1;
        s.gen_tsc += a - g0;
        if n > 0 {
            s.pkts += n as u64;
            s.busy_polls += 1;
            s.busy_tsc += b - a;
        }
        if b >= m_end {
            s.wall_tsc = b - m_start;
            break;
        }
    }
    if let Some(after) = dut.counters() {
        s.success = success(&after) - success(&before);
        s.drops = after.total_drops() - before.total_drops();
        s.top_drop = DropReason::ALL
            .iter()
            .map(|&r| (r.name(), after.dropped(r) - before.dropped(r)))
            .filter(|&(_, n)| n > 0)
            .max_by_key(|&(_, n)| n);
        s.created = after.sessions_created - before.sessions_created;
        s.expired = after.sessions_expired - before.sessions_expired;
    }
    s
}

/// Generator loop on its own lcore until every worker is done.
fn generator_loop(gen: &mut Generator, done: &AtomicUsize, workers: usize) {
    gen.localize();
    while done.load(Ordering::Relaxed) < workers {
        gen.step();
    }
}

/// Run the lanes on the configured lcores (`conf.lcores[0]` is the calling, main lcore).
pub fn run(
    lanes: Vec<Lane>,
    conf: &RunConf,
    tsc_hz: u64,
    success: fn(&CounterSnapshot) -> u64,
) -> std::result::Result<Result, String> {
    let nw = lanes.len();
    let need = match conf.mode {
        GenMode::Lcore => 2 * nw,
        GenMode::Inline => nw,
    };
    if conf.lcores.len() < need {
        return Err(format!(
            "{nw} worker(s) with the generator {} need {need} lcores, {} given (--lcores)",
            match conf.mode {
                GenMode::Lcore => "on its own lcore",
                GenMode::Inline => "inline",
            },
            conf.lcores.len()
        ));
    }
    let ports: Vec<Port> = lanes.iter().flat_map(|l| l.ports.clone()).collect();
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel::<(usize, Stats)>();
    let mut launched = Vec::new();
    let mut main_job: Option<Box<dyn FnOnce() + Send>> = None;
    let (warm, meas) = (conf.warmup_ms, conf.measure_ms);
    for (w, lane) in lanes.into_iter().enumerate() {
        let Lane {
            mut dut, mut gen, ..
        } = lane;
        let wjob: Box<dyn FnOnce() + Send> = match conf.mode {
            GenMode::Inline => {
                let tx = tx.clone();
                let done = done.clone();
                Box::new(move || {
                    let s = worker_loop(dut.as_mut(), Some(&mut gen), tsc_hz, warm, meas, success);
                    drop(dut); // gives its queue handles back for the drain
                    gen.drain_rx();
                    done.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send((w, s));
                })
            }
            GenMode::Lcore => {
                let done2 = done.clone();
                let mut gjob = move || {
                    generator_loop(&mut gen, &done2, nw);
                    gen.drain_rx();
                };
                let glcore = conf.lcores[nw + w];
                launched.push(
                    dpdk::lcore::launch(glcore, move || {
                        gjob();
                        0
                    })
                    .map_err(|e| e.to_string())?,
                );
                let tx = tx.clone();
                let done = done.clone();
                Box::new(move || {
                    let s = worker_loop(dut.as_mut(), None, tsc_hz, warm, meas, success);
                    // Its queue handles go back before the generator, seeing every worker
                    // done, drains the RX rings.
                    drop(dut);
                    done.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send((w, s));
                })
            }
        };
        if w == 0 {
            main_job = Some(wjob);
        } else {
            launched.push(
                dpdk::lcore::launch(conf.lcores[w], move || {
                    wjob();
                    0
                })
                .map_err(|e| e.to_string())?,
            );
        }
    }
    drop(tx);
    if let Some(j) = main_job {
        j();
    }
    for l in launched {
        l.wait();
    }
    let mut per_worker = vec![Stats::default(); nw];
    for (w, s) in rx.iter() {
        per_worker[w] = s;
    }
    // Every lane (queues, rings' far ends) is gone: release the ports.
    for p in ports {
        let _ = p.stop();
        let _ = p.close();
    }
    Ok(Result { per_worker, tsc_hz })
}

/// The dut poll callgrind counts (`--toggle-collect=rvs_bench_poll`).
#[no_mangle]
#[inline(never)]
pub fn rvs_bench_poll(dut: &mut dyn Dut) -> usize {
    dut.poll()
}

/// One measured region under callgrind (`--zero-before` / `--dump-after=rvs_bench_region`): inline
/// generator steps and counted polls until `pkts` packets were received. Returns packets received.
#[no_mangle]
#[inline(never)]
pub fn rvs_bench_region(lane: &mut Lane, pkts: u64) -> u64 {
    let mut got = 0;
    while got < pkts {
        lane.gen.step();
        got += rvs_bench_poll(lane.dut.as_mut()) as u64;
    }
    got
}

/// Warm up a lane for `pkts` packets outside the measured region.
pub fn warm(lane: &mut Lane, pkts: u64) {
    lane.dut.start();
    let mut got = 0;
    while got < pkts {
        lane.gen.step();
        got += lane.dut.poll() as u64;
    }
}
