//! The benchmark harness still does what its figures claim: every trace kind runs through the
//! production worker loop (DPDK net_ring ports, EAL without hugepages) and each packet of each
//! trace ends as the trace's success counter (forwarded, ARP/ICMP replies, FULLNAT in/out), with
//! no drops. A short run (a fraction of a second per trace): figures are not checked here, they
//! belong in perf/results.

use std::process::Command;

#[test]
fn every_trace_runs_and_every_packet_succeeds() {
    let out_dir = std::env::temp_dir().join(format!("rvs-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("temp dir");
    let report = out_dir.join("report.md");
    let out = Command::new(env!("CARGO_BIN_EXE_rvs-bench"))
        .args([
            "throughput",
            "--traces",
            "l3fwd,arp,icmp,fnat-est,fnat-udp,fnat-cps,fnat-conn",
            "--sessions",
            // 20K: a frame list long enough to be stored compactly (perf/src/frames.rs)
            "1000,20000",
            "--gen",
            "inline",
            "--repeat",
            "1",
            "--warmup-ms",
            "50",
            "--measure-ms",
            "300",
            "--out",
        ])
        .arg(&report)
        .output()
        .expect("run rvs-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rvs-bench failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    for trace in [
        "l3fwd",
        "arp",
        "icmp",
        "fnat-est/1K",
        "fnat-udp/1K",
        "fnat-est/20K",
        "fnat-udp/20K",
        "fnat-cps",
        "fnat-conn",
    ] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| {trace} |")))
            .unwrap_or_else(|| panic!("no row for {trace} in\n{stdout}"));
        let outcome = row.trim_end_matches('|').rsplit('|').next().unwrap_or("");
        assert!(
            outcome.trim_start().starts_with("100.0% ") && outcome.contains(" 0 drops"),
            "{trace}: not every packet succeeded: {row}"
        );
        if trace == "fnat-cps" || trace == "fnat-conn" {
            assert!(
                outcome.contains("sessions created/s") && outcome.contains("expired/s"),
                "{trace}: no connection rate: {row}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
