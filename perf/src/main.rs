//! rvs-bench: the rvs benchmark harness.
//!
//! `rvs-bench suite` (the default) runs, in one process and one EAL:
//! - table memory: bytes the stack allocates at the configured sizes (counting global allocator
//!   around `Stack::new`), and bytes per FULLNAT session at each `--sessions` size (allocation
//!   and RSS growth with the sessions open);
//! - throughput: the bare io-forward baseline, then every trace through the production worker
//!   loop, with the generator on its own lcore and interleaved on the worker's lcore;
//! - instructions per packet: itself again under `valgrind --tool=callgrind` (`rvs-bench instr`,
//!   single-threaded, fixed packet counts), the baseline's instructions subtracted;
//!
//! and prints one Markdown report (also written to `--out`). See perf/README.md.

mod fnat;
mod frames;
mod harness;
mod probe;
mod publish;
mod report;
mod trace;
mod veth;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use dpdk::{Eal, Mempool};
use rvs_core::counters::CoreCounters;
use rvs_core::Stack;
use rvs_dataplane::MbufPacket;

use harness::{Device, GenMode, RunConf};
use report::{InstrRow, MemRow, Report, ThroughputRow};
use std::time::Instant;
use trace::{Env, Trace};

/// Counts live heap bytes, to measure what `Stack::new` allocates (plus the huge-page mappings of
/// the big tables, `rvs_core::bigarray::mapped_bytes`, in `live()`).
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// rvs benchmark harness: traces through the production worker loop beside an io-forward baseline.
#[derive(Parser, Debug)]
#[command(name = "rvs-bench", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(clap::Args, Debug, Clone)]
struct Opts {
    /// Traces to run (comma-separated): l3fwd, arp, icmp, fnat-est, fnat-udp, fnat-cps,
    /// fnat-conn.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "l3fwd,arp,icmp,fnat-est,fnat-udp,fnat-cps,fnat-conn",
        global = true
    )]
    traces: Vec<String>,
    /// Concurrent sessions of fnat-est / fnat-udp (one run per size) and of the session-memory
    /// measurement (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,100000,1000000",
        global = true
    )]
    sessions: Vec<usize>,
    /// Sizes fnat-udp runs at (default: the --sessions sizes up to 100 000).
    #[arg(long, value_delimiter = ',', global = true)]
    udp_sessions: Option<Vec<usize>>,
    /// Sizes of the session-memory measurement (default: the --sessions sizes and 10 000 000,
    /// the "10M sessions in 2 GiB": about 1.2 GiB and 7 s).
    #[arg(long, value_delimiter = ',', global = true)]
    mem_sessions: Option<Vec<usize>>,
    /// Sessions of fnat-est / fnat-udp under callgrind.
    #[arg(long, default_value_t = 1000, global = true)]
    instr_sessions: usize,
    /// Destination hosts of the forwarding trace (peers of the ARP/ICMP traces, at most 200).
    #[arg(long, default_value_t = 256, global = true)]
    hosts: usize,
    /// RX burst size.
    #[arg(long, default_value_t = 32, global = true)]
    burst: u16,
    /// Worker lcores.
    #[arg(long, default_value_t = 1, global = true)]
    workers: usize,
    /// EAL lcores: workers first, then (generator on its own lcore) one generator per worker. The
    /// first is the main lcore. Default: 0,1.
    #[arg(long, value_delimiter = ',', default_value = "0,1", global = true)]
    lcores: Vec<u32>,
    /// Where the generator runs (suite: both, lcore first).
    #[arg(long, value_enum, global = true)]
    gen: Option<GenArg>,
    /// Warm-up per throughput run, milliseconds.
    #[arg(long, default_value_t = 200, global = true)]
    warmup_ms: u64,
    /// Measured time per throughput run, milliseconds.
    #[arg(long, default_value_t = 1500, global = true)]
    measure_ms: u64,
    /// Throughput runs per trace and mode (fresh set-up each); the report shows the median run
    /// by Mpps and the range (a shared VM is noisy).
    #[arg(long, default_value_t = 3, global = true)]
    repeat: usize,
    /// Packets per trace under callgrind (after as many again of warm-up).
    #[arg(long, default_value_t = 20000, global = true)]
    instr_pkts: u64,
    /// Skip the callgrind pass.
    #[arg(long, global = true)]
    no_callgrind: bool,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "perf/results/latest.md", global = true)]
    out: PathBuf,
    /// Directory for callgrind's dump files (kept for callgrind_annotate).
    #[arg(long, default_value = "perf/results/callgrind", global = true)]
    callgrind_dir: PathBuf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum GenArg {
    Lcore,
    Inline,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Everything: memory, throughput, callgrind pass; one report.
    Suite,
    /// Throughput only.
    Throughput,
    /// Single-threaded fixed-count regions for callgrind (what the suite runs under valgrind).
    Instr,
    /// Table memory only.
    Mem,
    /// Over-veth benchmark (scripts/bench-veth): UDP load generator on one DPDK port.
    VethGen(veth::GenArgs),
    /// Over-veth benchmark: plain io-forward between two DPDK ports, Ethernet header rewritten.
    VethFwd(veth::FwdArgs),
    /// What a configuration publication costs each worker (service-set swap, ms).
    Publish,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let o = &args.opts;
    let res = match args.cmd.unwrap_or(Cmd::Suite) {
        Cmd::Suite => suite(o),
        Cmd::Throughput => throughput_only(o),
        Cmd::Instr => instr_child(o),
        Cmd::Mem => mem_only(o),
        Cmd::VethGen(a) => veth::gen(&a),
        Cmd::VethFwd(a) => veth::fwd(&a),
        Cmd::Publish => publish::run(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvs-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The traces asked, sized kinds once per session count.
fn traces(o: &Opts) -> Result<Vec<Trace>, String> {
    let mut out = Vec::new();
    for n in &o.traces {
        let k = trace::kind(n).ok_or_else(|| format!("unknown trace {n:?}"))?;
        let sizes: Vec<usize> = if !k.sized {
            vec![0]
        } else if k.name == "fnat-udp" {
            o.udp_sessions.clone().unwrap_or_else(|| {
                let v: Vec<usize> = o
                    .sessions
                    .iter()
                    .copied()
                    .filter(|&s| s <= 100_000)
                    .collect();
                if v.is_empty() {
                    o.sessions.iter().copied().min().into_iter().collect()
                } else {
                    v
                }
            })
        } else {
            o.sessions.clone()
        };
        for sessions in sizes {
            let env = Env {
                hosts: o.hosts,
                sessions,
                workers: o.workers.max(1),
            };
            out.push((k.build)(&env));
        }
    }
    if out.is_empty() {
        return Err("no traces".into());
    }
    Ok(out)
}

fn live() -> i64 {
    LIVE.load(Ordering::SeqCst) as i64 + rvs_core::bigarray::mapped_bytes() as i64
}

/// Session memory at every `--sessions` size (needs the EAL for the set-up's mbufs).
fn fnat_memory(o: &Opts, eal: &Eal, pool: &Arc<Mempool>) -> Result<Vec<fnat::SessMem>, String> {
    let now = dpdk::eal::tsc() / (eal.tsc_hz() / 1000).max(1);
    let mut rows = Vec::new();
    let sizes = o.mem_sessions.clone().unwrap_or_else(|| {
        let mut v = o.sessions.clone();
        if !v.contains(&10_000_000) {
            v.push(10_000_000);
        }
        v
    });
    for n in sizes {
        let t = Instant::now();
        let m = fnat::memory(n, pool, live, now)?;
        eprintln!(
            "  session memory {:>9}: {:.1} B/session allocated, RSS +{:.1} B/session ({:.1} s)",
            n,
            m.alloc as f64 / n as f64,
            m.rss_open as f64 / n as f64,
            t.elapsed().as_secs_f64()
        );
        rows.push(m);
    }
    Ok(rows)
}

fn mem_only(o: &Opts) -> Result<(), String> {
    let env = Env {
        hosts: o.hosts,
        sessions: 0,
        workers: 1,
    };
    println!("{}", report::mem_table(&memory(&env)));
    let eal = Eal::init(&eal_args(&o.lcores[..1], 512)).map_err(|e| format!("EAL: {e}"))?;
    let pools = pools(1)?;
    println!(
        "{}",
        report::sess_mem_table(&fnat_memory(o, &eal, &pools[0])?)
    );
    Ok(())
}

/// EAL arguments for this process (`lcores` as given, no hugepages, no PCI, a private prefix).
/// EAL arguments; `RVS_EAL_ARGS` (whitespace-separated) is appended, e.g. `-d DIR` to load the
/// PMDs from a packaged directory (`scripts/bench-pack`) on a machine without DPDK installed.
fn eal_args(lcores: &[u32], mem_mb: u32) -> Vec<String> {
    let l = lcores
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut a: Vec<String> = vec![
        "rvs-bench".into(),
        "-l".into(),
        l,
        "--no-huge".into(),
        "-m".into(),
        mem_mb.to_string(),
        "--no-pci".into(),
        "--file-prefix".into(),
        format!("rvsbench{}", std::process::id()),
        "--log-level".into(),
        "lib.eal:error".into(),
    ];
    if let Ok(extra) = std::env::var("RVS_EAL_ARGS") {
        a.extend(extra.split_whitespace().map(String::from));
    }
    a
}

/// One mbuf pool per worker, as rvsd gives each worker (its RX queues fill from it). Two workers
/// on one shared pool ran 1.71-1.86 x one worker here, 1.82-2.00 x on a pool each
/// (perf/README.md), although once running neither takes an mbuf from its pool or returns one.
fn pools(workers: usize) -> Result<Vec<Arc<Mempool>>, String> {
    (0..workers.max(1))
        .map(|w| {
            Mempool::new_pktmbuf(&format!("rvsbench_mbufs_{w}"), 8191, 256, -1)
                .map(Arc::new)
                .map_err(|e| format!("mbuf pool {w}: {e}"))
        })
        .collect()
}

/// Bytes the stack keeps allocated after `Stack::new`: at the default sizes, then with the
/// neighbour table and the session table grown in turn (the slopes give bytes per entry).
fn memory(env: &Env) -> Vec<MemRow> {
    let base = (trace::kind("l3fwd").expect("l3fwd").build)(env).stack;
    let (n0, s0) = (1024u32, base.fullnat.sessions);
    [(n0, s0), (65536, s0), (n0, 4 * s0)]
        .iter()
        .map(|&(neigh, sessions)| {
            let mut cfg = base.clone();
            cfg.neigh.capacity = neigh;
            cfg.fullnat.sessions = sessions;
            let counters = Arc::new(CoreCounters::default());
            let before = live();
            let stack = Stack::<MbufPacket>::new(&cfg, counters);
            let bytes = live() - before;
            drop(stack);
            MemRow {
                neigh_capacity: neigh,
                sessions,
                hold_packets: cfg.neigh.hold_packets,
                ports: cfg.ports.len(),
                bytes: bytes.max(0) as u64,
            }
        })
        .collect()
}

fn conf(o: &Opts, mode: GenMode) -> RunConf {
    RunConf {
        burst: o.burst,
        workers: o.workers.max(1),
        lcores: o.lcores.clone(),
        mode,
        warmup_ms: o.warmup_ms,
        measure_ms: o.measure_ms,
    }
}

/// Baseline then every trace, in each generator mode asked. Every repeat of a trace runs right
/// after a run of the baseline of its own, and the row keeps those paired ratios (this VM's speed
/// drifts within minutes: the baseline row alone is minutes older than the later traces).
fn throughput(
    o: &Opts,
    eal: &Eal,
    pools: &[Arc<Mempool>],
    traces: &[Trace],
) -> Result<Vec<ThroughputRow>, String> {
    let modes = match o.gen {
        Some(GenArg::Lcore) => vec![GenMode::Lcore],
        Some(GenArg::Inline) => vec![GenMode::Inline],
        None => vec![GenMode::Lcore, GenMode::Inline],
    };
    let mut rows = Vec::new();
    for mode in modes {
        let c = conf(o, mode);
        let runs = std::iter::once((Device::IoFwd, &traces[0]))
            .chain(traces.iter().map(|t| (Device::Rvs, t)));
        for (dev, t) in runs {
            let mut results = Vec::new();
            let mut paired = Vec::new();
            let mut setup_s = 0.0;
            let mut list_mb = 0.0;
            for _ in 0..o.repeat.max(1) {
                // The trace's set-up first (up to seconds at 1M sessions), so that its run
                // follows its baseline's at once.
                let t0 = Instant::now();
                let lanes = harness::lanes(t, dev, &c, pools, eal.tsc_hz())?;
                setup_s = t0.elapsed().as_secs_f64();
                let base = if dev == Device::Rvs {
                    let bl = harness::lanes(&traces[0], Device::IoFwd, &c, pools, eal.tsc_hz())?;
                    Some(harness::run(bl, &c, eal.tsc_hz(), traces[0].success.1)?.mpps())
                } else {
                    None
                };
                list_mb = lanes[0].gen.list_bytes() as f64 / 1e6;
                let r = harness::run(lanes, &c, eal.tsc_hz(), t.success.1)?;
                if let Some(b) = base.filter(|&b| b > 0.0) {
                    paired.push(r.mpps() / b);
                }
                results.push(r);
            }
            paired.sort_by(f64::total_cmp);
            let mut row = row(dev, t, &c, results);
            row.paired = paired;
            eprintln!(
                "{} (set-up {setup_s:.1} s, frame list {list_mb:.1} MB per worker, {} mbufs free)",
                report::progress(&row),
                pools.iter().map(|p| p.avail()).sum::<u32>()
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The report row of `results` (one per repeat): the median run by Mpps, with every run's Mpps.
fn row(dev: Device, t: &Trace, c: &RunConf, mut results: Vec<harness::Result>) -> ThroughputRow {
    results.sort_by(|a, b| a.mpps().total_cmp(&b.mpps()));
    let runs_mpps: Vec<f64> = results.iter().map(|r| r.mpps()).collect();
    let r = results.swap_remove(results.len() / 2);
    ThroughputRow {
        name: match dev {
            Device::IoFwd => "io-fwd (baseline)".into(),
            Device::Rvs => t.name.clone(),
        },
        about: match dev {
            Device::IoFwd => "rx burst → tx burst, same port, no processing".into(),
            Device::Rvs => t.about.clone(),
        },
        success_name: match dev {
            Device::IoFwd => None,
            Device::Rvs => Some(t.success.0),
        },
        mode: c.mode,
        workers: c.workers,
        conn_pkts: match dev {
            Device::IoFwd => 0,
            Device::Rvs => t.conn_pkts,
        },
        result: r,
        runs_mpps,
        paired: Vec::new(),
    }
}

/// 2 workers vs 1: with one worker and at least two lcores, run fnat-est (every size) and
/// fnat-cps (and the io-fwd baseline) in pairs, generator inline on each worker's lcore: each
/// repeat runs 1 worker, then at once 2 workers (two cores, each doing the work of one), so the
/// ratio compares runs seconds apart, not minutes (this VM drifts by up to 2× in minutes). The
/// rows are the 2-worker runs, with the per-pair ratios.
fn scaling(o: &Opts, eal: &Eal, pools: &[Arc<Mempool>]) -> Result<Vec<ThroughputRow>, String> {
    let names: Vec<String> = o
        .traces
        .iter()
        .filter(|t| *t == "fnat-est" || *t == "fnat-cps")
        .cloned()
        .collect();
    if o.workers != 1 || o.lcores.len() < 2 || names.is_empty() || o.gen == Some(GenArg::Lcore) {
        return Ok(Vec::new());
    }
    let with = |workers: usize| {
        let mut x = o.clone();
        x.traces = names.clone();
        x.workers = workers;
        x.lcores = o.lcores[..workers].to_vec();
        x.gen = Some(GenArg::Inline);
        x
    };
    let (o1, o2) = (with(1), with(2));
    let (t1, t2) = (traces(&o1)?, traces(&o2)?);
    let (c1, c2) = (conf(&o1, GenMode::Inline), conf(&o2, GenMode::Inline));
    let tsc = eal.tsc_hz();
    eprintln!(
        "== 2 workers vs 1, paired (1 worker then 2, generator inline on each worker's lcore)"
    );
    let runs = std::iter::once((Device::IoFwd, 0)).chain((0..t2.len()).map(|i| (Device::Rvs, i)));
    let mut rows = Vec::new();
    for (dev, i) in runs {
        let (mut ones, mut twos) = (Vec::new(), Vec::new());
        for _ in 0..o.repeat.max(1) {
            let lanes = harness::lanes(&t1[i], dev, &c1, pools, tsc)?;
            ones.push(harness::run(lanes, &c1, tsc, t1[i].success.1)?);
            let lanes = harness::lanes(&t2[i], dev, &c2, pools, tsc)?;
            twos.push(harness::run(lanes, &c2, tsc, t2[i].success.1)?);
        }
        let mut paired: Vec<f64> = ones
            .iter()
            .zip(&twos)
            .map(|(a, b)| b.mpps() / a.mpps())
            .collect();
        paired.sort_by(f64::total_cmp);
        let mut r = row(dev, &t2[i], &c2, twos);
        r.paired = paired;
        eprintln!(
            "{} (× one worker, paired: {})",
            report::progress(&r),
            r.paired_text()
        );
        rows.push(r);
    }
    Ok(rows)
}

fn throughput_only(o: &Opts) -> Result<(), String> {
    let traces = traces(o)?;
    let eal = Eal::init(&eal_args(&o.lcores, 512)).map_err(|e| format!("EAL: {e}"))?;
    let before = probe::measure();
    let rows = throughput(o, &eal, &pools(o.workers)?, &traces)?;
    let after = probe::measure();
    println!("{}", report::throughput_table(&rows));
    println!("{}", report::probe_line((before, after)));
    Ok(())
}

/// What `rvs-bench instr` runs under callgrind: for the baseline then each trace, a warm-up and a
/// measured region of `instr_pkts` packets, single-threaded, generator inline.
fn instr_child(o: &Opts) -> Result<(), String> {
    let traces = traces(o)?;
    let eal = Eal::init(&eal_args(&o.lcores[..1], 256)).map_err(|e| format!("EAL: {e}"))?;
    let pools = pools(1)?;
    let mut c = conf(o, GenMode::Inline);
    c.workers = 1;
    let runs =
        std::iter::once((Device::IoFwd, &traces[0])).chain(traces.iter().map(|t| (Device::Rvs, t)));
    for (dev, t) in runs {
        let mut lanes = harness::lanes(t, dev, &c, &pools, eal.tsc_hz())?;
        let lane = &mut lanes[0];
        harness::warm(lane, o.instr_pkts);
        let n = harness::rvs_bench_region(lane, o.instr_pkts);
        let name = match dev {
            Device::IoFwd => "io-fwd",
            Device::Rvs => t.name.as_str(),
        };
        println!("region {name} {n}");
    }
    Ok(())
}

/// The callgrind command line for `exe` with dumps under `dir`.
fn callgrind_cmd(exe: &str, dir: &str, o: &Opts) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={dir}/cg.out"),
        "--collect-atstart=no".into(),
        "--toggle-collect=rvs_bench_poll".into(),
        "--zero-before=rvs_bench_region".into(),
        "--dump-after=rvs_bench_region".into(),
        exe.into(),
        "instr".into(),
        "--traces".into(),
        o.traces.join(","),
        "--hosts".into(),
        o.hosts.to_string(),
        "--sessions".into(),
        o.instr_sessions.to_string(),
        "--udp-sessions".into(),
        o.instr_sessions.to_string(),
        "--burst".into(),
        o.burst.to_string(),
        "--instr-pkts".into(),
        o.instr_pkts.to_string(),
        "--lcores".into(),
        o.lcores[0].to_string(),
    ]
}

/// Run this binary's `instr` under callgrind; one row per region.
fn callgrind(o: &Opts) -> Result<(String, Vec<InstrRow>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = &o.callgrind_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
        if e.file_name().to_string_lossy().starts_with("cg.out") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let cmd = callgrind_cmd(&exe.to_string_lossy(), &dir.to_string_lossy(), o);
    let shown = cmd.join(" ");
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "callgrind run failed: {}\n{}",
            shown,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let regions: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("region ")?.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect();
    // Dumps are cg.out.1, cg.out.2, ... in region order (then a final one at exit).
    let mut rows = Vec::new();
    for (i, (name, pkts)) in regions.into_iter().enumerate() {
        let f = dir.join(format!("cg.out.{}", i + 1));
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let total = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("totals:")
                    .or_else(|| l.strip_prefix("summary:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .ok_or_else(|| format!("{}: no totals line", f.display()))?;
        // The out-of-line entries past the one-pass forwarding: the general path and the
        // fast path's hand-over to the FULLNAT handlers. Timer work is outside both, so this
        // part does not move with how many sessions expire inside the window.
        let handlers = annotate_inclusive(&f, &["handle_general", "fast_dispatch"]);
        let conn_pkts = trace::kind(name.split('/').next().unwrap_or(""))
            .map(|k| {
                (k.build)(&Env {
                    hosts: 1,
                    sessions: 1,
                    workers: 1,
                })
                .conn_pkts
            })
            .unwrap_or(0);
        rows.push(InstrRow {
            name,
            conn_pkts,
            pkts,
            instr: total,
            handlers,
            file: f.display().to_string(),
        });
    }
    Ok((shown, rows))
}

/// Inclusive instructions of the functions whose names end in `::{name}` (each one's largest
/// entry, summed), from `callgrind_annotate --inclusive=yes`. Neither calls the other.
fn annotate_inclusive(file: &std::path::Path, names: &[&str]) -> u64 {
    let Ok(out) = Command::new("callgrind_annotate")
        .arg("--inclusive=yes")
        .arg(file)
        .output()
    else {
        return 0;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    names
        .iter()
        .map(|name| {
            let tag = format!("::{name} ");
            text.lines()
                .filter(|l| l.contains(&tag) && l.contains('['))
                .filter_map(|l| {
                    l.split_whitespace()
                        .next()?
                        .replace(',', "")
                        .parse::<u64>()
                        .ok()
                })
                .max()
                .unwrap_or(0)
        })
        .sum()
}

fn suite(o: &Opts) -> Result<(), String> {
    let traces = traces(o)?;
    let env = Env {
        hosts: o.hosts,
        sessions: 0,
        workers: 1,
    };
    let mem = memory(&env);
    let eal = Eal::init(&eal_args(&o.lcores, 512)).map_err(|e| format!("EAL: {e}"))?;
    // A pool per worker, for the 2-worker scaling pass too.
    let pools = pools(o.workers.max(2))?;
    let sess_mem = if traces.iter().any(|t| t.name.starts_with("fnat")) {
        fnat_memory(o, &eal, &pools[0])?
    } else {
        Vec::new()
    };
    let probe_before = probe::measure();
    let rows = throughput(o, &eal, &pools, &traces)?;
    let scaling = scaling(o, &eal, &pools)?;
    let probe_after = probe::measure();
    let instr = if o.no_callgrind {
        None
    } else {
        match callgrind(o) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("rvs-bench: callgrind pass skipped: {e}");
                None
            }
        }
    };
    let rep = Report {
        opts: format!(
            "--traces {} --sessions {} --hosts {} --burst {} --workers {} --lcores {} --warmup-ms {} --measure-ms {} --repeat {} --instr-pkts {} --instr-sessions {}",
            o.traces.join(","),
            o.sessions
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
            o.hosts,
            o.burst,
            o.workers,
            o.lcores
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
            o.warmup_ms,
            o.measure_ms,
            o.repeat,
            o.instr_pkts,
            o.instr_sessions
        ),
        throughput: rows,
        scaling,
        instr,
        mem,
        sess_mem,
        mem_probe: (probe_before, probe_after),
    };
    let md = rep.markdown();
    println!("{md}");
    if let Some(dir) = o.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&o.out, &md).map_err(|e| format!("{}: {e}", o.out.display()))?;
    eprintln!("rvs-bench: report written to {}", o.out.display());
    Ok(())
}
