//! Fuzz the sans-IO packet core in both directions (client side and real-server side), ARP, ICMP
//! and FULLNAT: the input is a sequence of frames, each prefixed by two bytes (port and a time
//! step), fed to one long-lived stack per process so sessions and neighbours accumulate.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use rvs_core::packet::VecPacket;
use rvs_core::Stack;

#[path = "common.rs"]
mod common;

thread_local! {
    static STATE: RefCell<(Stack<VecPacket>, common::FuzzIo, u64)> =
        RefCell::new((common::stack(), common::FuzzIo::default(), 0));
}

fuzz_target!(|data: &[u8]| {
    STATE.with(|s| {
        let (stack, io, now) = &mut *s.borrow_mut();
        let mut rest = data;
        while rest.len() >= 4 {
            let port = (rest[0] & 1) as u16;
            *now += (rest[1] as u64) * 50;
            let len = (u16::from_le_bytes([rest[2], rest[3]]) as usize % 1600).min(rest.len() - 4);
            let frame = VecPacket::from_slice(&rest[4..4 + len]);
            rest = &rest[4 + len..];
            stack.handle(io, port, frame, *now);
            stack.poll_timers(io, *now);
        }
    });
});
