//! Replays the kept fuzz corpus (dataplane/core/fuzz/corpus/packet_core) through the same stack
//! and checks the fuzz target runs on, so CI catches a regression on any input the fuzzer found
//! interesting without running libFuzzer.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

use rvs_core::packet::VecPacket;

#[test]
fn corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/packet_core");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 6, "the corpus holds at least the seeds");
    let mut stack = common::stack();
    let mut io = common::FuzzIo::default();
    let mut now = 0u64;
    let mut frames = 0u64;
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let mut rest = &data[..];
        while rest.len() >= 4 {
            let port = (rest[0] & 1) as u16;
            now += (rest[1] as u64) * 50;
            let len = (u16::from_le_bytes([rest[2], rest[3]]) as usize % 1600).min(rest.len() - 4);
            stack.handle(&mut io, port, VecPacket::from_slice(&rest[4..4 + len]), now);
            stack.poll_timers(&mut io, now);
            rest = &rest[4 + len..];
            frames += 1;
        }
    }
    assert!(frames > 1000, "replayed {frames} frames");
    assert!(io.sent > 0, "some frames were answered or forwarded");
}
