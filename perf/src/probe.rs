//! How fast this machine's memory answers right now: a dependent random walk (each load's address
//! is the previous load's value) over 8 MB of 64-byte lines, nanoseconds per load. Beyond the
//! private L2, inside a shared L3: on a VM whose neighbours share that L3 and the memory
//! controllers, it moves with their load, and every figure of a run moves with it (the 2-vCPU VM
//! of perf/README: 48 ns per load when the io-forward baseline ran at 41+ Mpps, 70 when it ran at
//! 21-24, same binary). The suite reports it before and after the runs. The array sits on
//! transparent huge pages when the kernel gives them (as rvs's session tables do).
//!
//! A second walk covers [`PROBE_LARGE_BYTES`], the scale of the 1M-session trace's tables and
//! frame list (about 160 MB): whether they stay in the host's L3 depends on what the VM's
//! neighbours keep there, and fnat-est/1M moved between 57 and 75 ns/packet while the 8 MB walk
//! read 39 ns both times.

use std::time::Instant;

/// Bytes of the small walk.
pub const PROBE_BYTES: usize = 8 << 20;
/// Bytes of the large walk.
pub const PROBE_LARGE_BYTES: usize = 256 << 20;
const LINE: usize = 64;
const LOADS: usize = 2_000_000;

/// Both walks, nanoseconds per load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    pub small: f64,
    pub large: f64,
}

/// The small walk, then the large one.
pub fn measure() -> Probe {
    Probe {
        small: mem_latency_ns(PROBE_BYTES),
        large: mem_latency_ns(PROBE_LARGE_BYTES),
    }
}

/// Nanoseconds per dependent load over a random cycle through `bytes` (median of 3).
pub fn mem_latency_ns(bytes: usize) -> f64 {
    let lines = bytes / LINE;
    let stride = LINE / 8;
    // Sattolo's algorithm: one cycle through every line, in random order.
    let mut order: Vec<usize> = (0..lines).collect();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..lines).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % i as u64) as usize);
    }
    // On huge pages (rvs's own big-table allocator), as the session tables: the walk measures
    // the caches and memory, not 4 KB page walks.
    let mut next = rvs_core::bigarray::BigArray::filled(lines * stride, 0u64);
    for (i, &j) in order.iter().enumerate() {
        next[i * stride] = (j * stride) as u64;
    }
    let mut runs = [0f64; 3];
    let mut at = 0usize;
    for r in &mut runs {
        // One pass over the cycle first (page faults, TLB), then the timed loads.
        for _ in 0..lines {
            at = next[at] as usize;
        }
        let t = Instant::now();
        for _ in 0..LOADS {
            at = next[at] as usize;
        }
        *r = t.elapsed().as_nanos() as f64 / LOADS as f64;
    }
    std::hint::black_box(at);
    runs.sort_by(f64::total_cmp);
    runs[1]
}
