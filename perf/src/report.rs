//! The Markdown report: machine, throughput beside the baseline, instructions per packet, memory.

use std::fmt::Write as _;
use std::process::Command;

use crate::fnat::SessMem;
use crate::harness::{GenMode, Result as RunResult};
use crate::probe::Probe;

/// One throughput run.
pub struct ThroughputRow {
    pub name: String,
    pub about: String,
    /// The counter that must match the packets received (None: the baseline).
    pub success_name: Option<&'static str>,
    pub mode: GenMode,
    pub workers: usize,
    /// Packets per new connection (connection-rate traces), else 0.
    pub conn_pkts: u32,
    /// The median run (by Mpps) of the repeats.
    pub result: RunResult,
    /// Mpps of every repeat, ascending.
    pub runs_mpps: Vec<f64>,
    /// Each repeat's Mpps over that of the run made just before it, ascending: for scaling rows
    /// a 1-worker run, for throughput rows a baseline (io-forward) run; empty for the baseline.
    pub paired: Vec<f64>,
}

impl ThroughputRow {
    /// Median paired ratio.
    pub fn paired_median(&self) -> Option<f64> {
        self.paired.get(self.paired.len() / 2).copied()
    }

    /// "median× (min–max)" of the paired ratios, or "—".
    pub fn paired_text(&self) -> String {
        match (
            self.paired_median(),
            self.paired.first(),
            self.paired.last(),
        ) {
            (Some(m), Some(a), Some(b)) if self.paired.len() > 1 => {
                format!("{m:.2}× ({a:.2}–{b:.2})")
            }
            (Some(m), _, _) => format!("{m:.2}×"),
            _ => "—".into(),
        }
    }

    /// "min–max" Mpps of the repeats, or "—" for a single run.
    pub fn range(&self) -> String {
        match (self.runs_mpps.first(), self.runs_mpps.last()) {
            (Some(a), Some(b)) if self.runs_mpps.len() > 1 => format!("{a:.2}–{b:.2}"),
            _ => "—".into(),
        }
    }
}

/// One callgrind region.
pub struct InstrRow {
    pub name: String,
    /// Packets per connection (connection-rate traces), else 0.
    pub conn_pkts: u32,
    pub pkts: u64,
    /// Instructions inside the counted polls.
    pub instr: u64,
    /// Of which past the one-pass forwarding: `handle_general` and `fast_dispatch`, inclusive
    /// (0 for the baseline and when the fast path forwards everything).
    pub handlers: u64,
    pub file: String,
}

/// Memory of one stack.
pub struct MemRow {
    pub neigh_capacity: u32,
    pub sessions: u32,
    pub hold_packets: u16,
    pub ports: usize,
    pub bytes: u64,
}

/// Everything the suite measured.
pub struct Report {
    pub opts: String,
    pub throughput: Vec<ThroughputRow>,
    /// The 2-worker pass (generator inline), empty when not run.
    pub scaling: Vec<ThroughputRow>,
    pub instr: Option<(String, Vec<InstrRow>)>,
    pub mem: Vec<MemRow>,
    pub sess_mem: Vec<SessMem>,
    /// [`crate::probe::measure`] before and after the throughput runs.
    pub mem_probe: (Probe, Probe),
}

/// The report line of the memory probe (before, after the runs).
pub fn probe_line((before, after): (Probe, Probe)) -> String {
    format!(
        "- memory probe (random dependent loads on the worker lcore over {} MB and over {} MB; \
         this VM's shared L3 and memory, which move every figure below): **{:.1} / {:.1} \
         ns/load** before the runs, **{:.1} / {:.1}** after",
        crate::probe::PROBE_BYTES >> 20,
        crate::probe::PROBE_LARGE_BYTES >> 20,
        before.small,
        before.large,
        after.small,
        after.large
    )
}

fn mode_name(m: GenMode) -> &'static str {
    match m {
        GenMode::Lcore => "generator on its own lcore",
        GenMode::Inline => "generator inline on the worker lcore",
    }
}

/// One line per finished run, for stderr while the suite runs.
pub fn progress(r: &ThroughputRow) -> String {
    format!(
        "  {:<18} {:<6} {:>7.2} Mpps {:>7.1} ns/pkt busy, avg burst {:>5.1}",
        r.name,
        match r.mode {
            GenMode::Lcore => "lcore",
            GenMode::Inline => "inline",
        },
        r.result.mpps(),
        r.result.ns_per_pkt(),
        r.result.avg_burst()
    )
}

/// The throughput tables, one per generator mode, each rvs row beside its baseline.
pub fn throughput_table(rows: &[ThroughputRow]) -> String {
    let mut s = String::new();
    for mode in [GenMode::Lcore, GenMode::Inline] {
        let rs: Vec<&ThroughputRow> = rows.iter().filter(|r| r.mode == mode).collect();
        let Some(base) = rs.iter().find(|r| r.success_name.is_none()) else {
            continue;
        };
        let (bm, bn) = (base.result.mpps(), base.result.ns_per_pkt());
        let _ = writeln!(
            s,
            "\n**{}** ({} worker(s); Mpps over the wall time; ns/pkt = worker TSC in polls that \
             received packets ÷ packets{})\n",
            mode_name(mode),
            base.workers,
            if mode == GenMode::Inline {
                "; generator time excluded"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "| trace | Mpps (median) | range of runs | × baseline | × baseline, paired (range) | ns/pkt | − baseline ns | avg burst | worker busy | gen ns/pkt | outcome |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &rs {
            let x = &r.result;
            let mut outcome = match r.success_name {
                None => "rx = tx".to_string(),
                Some(n) => format!(
                    "{:.1}% {n}, {} drops{}",
                    100.0 * x.success_share(),
                    x.drops(),
                    x.top_drop()
                        .map(|(r, c)| format!(" ({r} {c})"))
                        .unwrap_or_default()
                ),
            };
            if r.conn_pkts > 0 {
                outcome.push_str(&format!(
                    "; {:.0}k sessions created/s, {:.0}k expired/s",
                    x.created_per_s() / 1e3,
                    x.expired_per_s() / 1e3
                ));
            }
            if mode == GenMode::Lcore && x.busy_share() < 0.85 {
                outcome.push_str("; **generator-bound** (worker idle part of the time)");
            }
            let _ = writeln!(
                s,
                "| {} | {:.2} | {} | {:.2} | {} | {:.1} | {:+.1} | {:.1} | {:.0}% | {} | {} |",
                r.name,
                x.mpps(),
                r.range(),
                x.mpps() / bm,
                r.paired_text(),
                x.ns_per_pkt(),
                x.ns_per_pkt() - bn,
                x.avg_burst(),
                100.0 * x.busy_share(),
                if mode == GenMode::Inline {
                    format!("{:.1}", x.gen_ns_per_pkt())
                } else {
                    "—".into()
                },
                outcome
            );
        }
    }
    s
}

/// 2 workers against 1: the paired ratios (each 2-worker run over a 1-worker run made just before
/// it), and beside them the 1-worker inline rows of the main pass.
pub fn scaling_table(one: &[ThroughputRow], two: &[ThroughputRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Generator inline on each worker's lcore (each core receives, handles and regenerates its \
         own traffic; each worker owns its own stack, session table and share of every LIP's \
         lports). Each repeat runs 1 worker, then at once 2 workers: \"× one worker\" is the median \
         of those paired ratios (range beside it), so drift between passes does not enter it; the \
         main pass's 1-worker inline figure is given for reference.\n"
    );
    let _ = writeln!(
        s,
        "| trace | 2 workers Mpps (median) | range of runs | × one worker, paired (range) | 1 worker Mpps, main pass | ns/pkt 2 workers |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for r in two {
        let b = one
            .iter()
            .find(|x| x.mode == GenMode::Inline && x.name == r.name)
            .map(|b| format!("{:.2}", b.result.mpps()))
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            s,
            "| {} | {:.2} | {} | {} | {} | {:.1} |",
            r.name,
            r.result.mpps(),
            r.range(),
            r.paired_text(),
            b,
            r.result.ns_per_pkt()
        );
    }
    s
}

/// The instructions table.
pub fn instr_table(cmd: &str, rows: &[InstrRow]) -> String {
    let mut s = String::new();
    let per = |r: &InstrRow| r.instr as f64 / r.pkts.max(1) as f64;
    let hper = |r: &InstrRow| r.handlers as f64 / r.pkts.max(1) as f64;
    let base = rows
        .iter()
        .find(|r| r.name == "io-fwd")
        .map(per)
        .unwrap_or(0.0);
    let _ = writeln!(
        s,
        "| trace | packets | instr/pkt (whole poll) | − baseline | of which in the handlers | instr/connection (of which in the handlers) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:+.1} | {} | {} |",
            r.name,
            r.pkts,
            per(r),
            per(r) - base,
            if r.handlers > 0 {
                format!("{:.1}", hper(r))
            } else {
                "—".into()
            },
            if r.conn_pkts > 0 {
                format!(
                    "{:.0} ({:.0}; {} pkts)",
                    per(r) * r.conn_pkts as f64,
                    hper(r) * r.conn_pkts as f64,
                    r.conn_pkts
                )
            } else {
                "—".into()
            }
        );
    }
    let _ = writeln!(
        s,
        "\nWhole poll = `Worker::poll_once` (RX burst, handle, timers, TX flush) or the baseline's \
         RX→TX, generator excluded. Handlers = what runs past the one-pass forwarding \
         (`handle_general` and `fast_dispatch`, inclusive): the general path and the FULLNAT \
         handlers. Timer work runs once per TSC millisecond, i.e. on far more polls under \
         valgrind than natively, and sessions expire by the TSC, so how many expire inside the \
         window varies between runs: it is in the whole-poll figure (fnat-cps moves by ±5 %), \
         not in the handlers'."
    );
    let _ = writeln!(s, "\nCommand (run by the suite):\n\n```\n{cmd}\n```");
    if let Some(r) = rows.iter().find(|r| r.name != "io-fwd") {
        let _ = writeln!(
            s,
            "\nAnnotate a region: `callgrind_annotate --inclusive=yes {}`",
            r.file
        );
    }
    s
}

/// The memory table.
pub fn mem_table(rows: &[MemRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| neighbour capacity | sessions | hold packets/entry | ports | bytes allocated by Stack::new | MiB |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} |",
            r.neigh_capacity,
            r.sessions,
            r.hold_packets,
            r.ports,
            r.bytes,
            r.bytes as f64 / (1024.0 * 1024.0)
        );
    }
    if let [a, b, c] = rows {
        let per_neigh =
            (b.bytes as f64 - a.bytes as f64) / (b.neigh_capacity - a.neigh_capacity) as f64;
        let per_sess = (c.bytes as f64 - a.bytes as f64) / (c.sessions - a.sessions) as f64;
        let _ = writeln!(
            s,
            "\nSlopes: {per_neigh:.1} bytes per neighbour entry, {per_sess:.1} bytes per session \
             (FULLNAT session table and whatever it allocates per slot). Measured with a counting \
             global allocator around `Stack::new` (live bytes after minus before)."
        );
    }
    s
}

/// Memory per FULLNAT session.
pub fn sess_mem_table(rows: &[SessMem]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| sessions | LIPs | allocated by Stack::new | B/session | table's own B/session | RSS growth, Stack::new | RSS growth after opening them | RSS B/session | open time |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let n = r.sessions.max(1) as f64;
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} MiB | {:.1} | {} | {:.1} MiB | {:.1} MiB | {:.1} | {:.2} s |",
            r.sessions,
            r.lips,
            r.alloc as f64 / 1048576.0,
            r.alloc as f64 / n,
            r.table_bytes,
            r.rss_new as f64 / 1048576.0,
            r.rss_open as f64 / 1048576.0,
            r.rss_open as f64 / n,
            r.open_s
        );
    }
    if let (Some(a), Some(b)) = (rows.first(), rows.last()) {
        if b.sessions > a.sessions {
            let slope = (b.alloc as f64 - a.alloc as f64) / (b.sessions - a.sessions) as f64;
            let _ = writeln!(
                s,
                "\nSlope {} → {} sessions: {slope:.1} bytes allocated per session (table entry, \
                 hashed index heads rounded to a power of two, timer-wheel links, and the lport \
                 FIFOs and reply heads of ceil(N/60000)+1 LIPs); 10M sessions ≈ {:.2} GiB.",
                a.sessions,
                b.sessions,
                slope * 1e7 / (1u64 << 30) as f64
            );
        }
    }
    let _ = writeln!(
        s,
        "\nEach session opened with SYN, real-server SYN-ACK and ACK (TOA) through \
         `Stack::handle`; live bytes from a counting global allocator around `Stack::new`; RSS from \
         `/proc/self/statm` before `Stack::new` and after the sessions are open."
    );
    s
}

/// The FULLNAT figures beside the targets of the issue.
pub fn fnat_summary(rows: &[ThroughputRow], mem: &[SessMem], scaling: &[ThroughputRow]) -> String {
    let mut s = String::new();
    for mode in [GenMode::Lcore, GenMode::Inline] {
        let rs: Vec<&ThroughputRow> = rows.iter().filter(|r| r.mode == mode).collect();
        let Some(base) = rs.iter().find(|r| r.success_name.is_none()) else {
            continue;
        };
        let (bm, bn) = (base.result.mpps(), base.result.ns_per_pkt());
        let fn_rows: Vec<&&ThroughputRow> =
            rs.iter().filter(|r| r.name.starts_with("fnat")).collect();
        if fn_rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "\n**{}**: baseline io-fwd {bm:.2} Mpps, {bn:.1} ns/pkt\n",
            mode_name(mode)
        );
        let _ = writeln!(
            s,
            "| trace | Mpps/core (median) | range of runs | ns/pkt | × io-fwd | × io-fwd, paired (range) | connections/s/core | outcome |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
        for r in fn_rows {
            let x = &r.result;
            let cps = if r.conn_pkts > 0 {
                format!(
                    "{:.0}k created ({:.0}k from pkts/{})",
                    x.created_per_s() / 1e3,
                    x.mpps() * 1e3 / r.conn_pkts as f64,
                    r.conn_pkts
                )
            } else {
                "—".into()
            };
            let _ = writeln!(
                s,
                "| {} | {:.2} | {} | {:.1} | {:.2} | {} | {} | {:.1}% {} |",
                r.name,
                x.mpps(),
                r.range(),
                x.ns_per_pkt(),
                x.mpps() / bm,
                r.paired_text(),
                cps,
                100.0 * x.success_share(),
                r.success_name.unwrap_or("")
            );
        }
    }
    // Targets.
    let est_1m_row = rows
        .iter()
        .find(|r| r.mode == GenMode::Lcore && r.name == "fnat-est/1M");
    let est_1m = est_1m_row.map(|r| r.result.mpps());
    let est_1m_paired = est_1m_row.and_then(|r| r.paired_median());
    let base = rows
        .iter()
        .find(|r| r.mode == GenMode::Lcore && r.success_name.is_none())
        .map(|r| r.result.mpps());
    let cps = rows
        .iter()
        .filter(|r| r.mode == GenMode::Lcore && r.conn_pkts > 0)
        .map(|r| r.result.created_per_s())
        .next();
    let per_sess = match (mem.first(), mem.last()) {
        (Some(a), Some(b)) if b.sessions > a.sessions => {
            Some((b.alloc as f64 - a.alloc as f64) / (b.sessions - a.sessions) as f64)
        }
        _ => None,
    };
    let f = |v: Option<f64>, d: usize| v.map_or("not run".to_string(), |v| format!("{v:.d$}"));
    let _ = writeln!(
        s,
        "\n| target (issue) | measured here (generator on its own lcore) |"
    );
    let _ = writeln!(s, "|---|---|");
    let _ = writeln!(
        s,
        "| established at 1M sessions ≥ 15 Mpps/core | {} Mpps |",
        f(est_1m, 2)
    );
    let base_busy = rows
        .iter()
        .find(|r| r.mode == GenMode::Lcore && r.success_name.is_none())
        .map(|r| r.result.busy_share());
    let _ = writeln!(
        s,
        "| … and ≥ 0.35 × io-forward | {} × paired ({} × the baseline row); io-fwd is generator-bound here (worker {} busy), so this ratio measures against the generator's rate, not io-forward's cost |",
        f(est_1m_paired, 3),
        f(est_1m.zip(base).map(|(a, b)| a / b), 3),
        base_busy.map_or("?".to_string(), |b| format!("{:.0}%", 100.0 * b))
    );
    let _ = writeln!(
        s,
        "| ≥ 2 M new TCP connections/s/core | {} M/s |",
        f(cps.map(|c| c / 1e6), 3)
    );
    let ten_m = mem.iter().find(|m| m.sessions == 10_000_000);
    let gib = (1u64 << 30) as f64;
    let _ = writeln!(
        s,
        "| ≤ 128 bytes/session, 10M sessions in 2 GiB | {} B/session (slope); {} |",
        f(per_sess, 1),
        match ten_m {
            Some(m) => format!(
                "10M measured: {:.2} GiB allocated ({:.1} B/session), RSS +{:.2} GiB with them open",
                m.alloc as f64 / gib,
                m.alloc as f64 / 1e7,
                m.rss_open as f64 / gib
            ),
            None => format!(
                "10M ≈ {} GiB (from the slope; not run)",
                f(per_sess.map(|b| b * 1e7 / gib), 2)
            ),
        }
    );
    let ratios: Vec<String> = scaling
        .iter()
        .filter(|r| r.success_name.is_some())
        .filter_map(|r| Some(format!("{} {:.2}×", r.name, r.paired_median()?)))
        .collect();
    let _ = writeln!(
        s,
        "| 2 workers ≥ 1.9 × one | {} |",
        if ratios.is_empty() {
            "not run (needs --workers 1 and 2 lcores)".to_string()
        } else {
            format!("{} (generator inline on each worker)", ratios.join(", "))
        }
    );
    s
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Machine description: CPU model, CPUs, kernel, DPDK, rustc.
pub fn machine() -> String {
    let lscpu = sh("lscpu", &[]);
    let field = |k: &str| {
        lscpu
            .lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "{} ({} CPUs, {}), kernel {}, DPDK {}, {}",
        field("Model name:"),
        field("CPU(s):"),
        match field("Hypervisor vendor:").as_str() {
            "?" => "bare metal".to_string(),
            v => format!("{v} VM"),
        },
        sh("uname", &["-r"]),
        dpdk::DPDK_VERSION,
        sh("rustc", &["--version"])
    )
}

impl Report {
    /// The whole report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# rvs benchmark\n");
        let _ = writeln!(s, "- machine: {}", machine());
        let _ = writeln!(
            s,
            "- date: {}; commit {}",
            sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            sh("git", &["rev-parse", "--short", "HEAD"])
        );
        let _ = writeln!(
            s,
            "- command: `./scripts/bench` (= `rvs-bench suite {}`)",
            self.opts
        );
        let _ = writeln!(s, "{}", probe_line(self.mem_probe));
        let _ = writeln!(
            s,
            "- frames: 64 bytes on the wire (60 in the mbuf), fed through net_ring ports into \
             `Worker::poll_once`\n"
        );
        let _ = writeln!(s, "## Traces\n");
        for r in self
            .throughput
            .iter()
            .filter(|r| r.mode == self.throughput[0].mode)
        {
            let _ = writeln!(s, "- `{}`: {}", r.name, r.about);
        }
        let _ = writeln!(s, "\n## Throughput per worker core");
        let _ = write!(s, "{}", throughput_table(&self.throughput));
        if !self.sess_mem.is_empty() || self.throughput.iter().any(|r| r.name.starts_with("fnat")) {
            let _ = writeln!(s, "\n## FULLNAT per worker core");
            let _ = write!(
                s,
                "{}",
                fnat_summary(&self.throughput, &self.sess_mem, &self.scaling)
            );
            if !self.scaling.is_empty() {
                let _ = writeln!(s, "\n### 2 workers vs 1\n");
                let _ = write!(s, "{}", scaling_table(&self.throughput, &self.scaling));
            }
            let _ = writeln!(s, "\n### Memory per session\n");
            let _ = write!(s, "{}", sess_mem_table(&self.sess_mem));
        }
        let _ = writeln!(s, "\n## Instructions per packet (callgrind)\n");
        match &self.instr {
            Some((cmd, rows)) => {
                let _ = write!(s, "{}", instr_table(cmd, rows));
            }
            None => {
                let _ = writeln!(s, "not measured (valgrind missing or --no-callgrind)");
            }
        }
        let _ = writeln!(s, "\n## Memory of the stack's tables\n");
        let _ = write!(s, "{}", mem_table(&self.mem));
        s
    }
}
