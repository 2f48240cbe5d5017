//! A worker never sees a half-applied configuration: the control thread flips two services
//! between "both to real server A" and "both to real server B" as fast as the worker answers,
//! while every burst carries one new connection to each service. Both SYNs of a burst must leave
//! toward the same real server, whichever generation the worker is on. Runs the production worker
//! loop over net_ring ports (a real EAL), with the control mailbox of rvsd.

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{rig, services, syn, Rig, RIP_A, RIP_B, VIP1, VIP2};
use dpdk::Burst;
use etherparse::{NetSlice, SlicedPacket};
use rvs_core::config::Timeouts;
use rvs_dataplane::ctl::{mailbox, Built, Cmd, Snapshot};

#[test]
fn bursts_never_mix_two_generations() {
    let Rig {
        eal: _eal,
        pool,
        mut rp,
        counters: _,
        worker,
    } = rig("snap", 32);
    let (mut link, wctl) = mailbox(0).unwrap();
    let mut worker = worker.with_ctl(wctl);

    // The control thread: publish A, B, A, B, ... until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let ctl = std::thread::spawn(move || {
        let mut generation = 1u64;
        let mut applied = 0u32;
        while !s2.load(Ordering::Relaxed) {
            generation += 1;
            let rip = if generation.is_multiple_of(2) {
                RIP_B
            } else {
                RIP_A
            };
            let snap = Arc::new(Snapshot::new(
                generation,
                services(rip, (generation as u32 % 2) * 2),
                Timeouts::default(),
                vec![],
            ));
            // Every other publication comes with the worker's service set built here, as rvsd
            // sends it; the others are built by the worker.
            let built = (generation % 4 < 2).then(|| {
                Built::for_worker(&snap, rvs_core::FullnatConf::default().max_dests, 1).unwrap()
            });
            let with_built = built.is_some();
            let reply = link
                .call(
                    Box::new(Cmd::Apply {
                        new: snap,
                        old: None,
                        built,
                        result: Ok(()),
                    }),
                    std::time::Duration::from_secs(5),
                )
                .unwrap();
            match *reply {
                // The set it replaced came back in place of the one sent.
                Cmd::Apply {
                    result: Ok(()),
                    built,
                    ..
                } if built.is_some() == with_built => applied += 1,
                other => panic!("apply failed: {other:?}"),
            }
        }
        applied
    });

    worker.start();
    let (feed, drain) = (&mut rp.feed[0], &mut rp.drain[0]);
    let mut seen = [0u32; 2];
    let mut out = Burst::new();
    // The gratuitous ARPs of start().
    drain.recv_burst(&mut out, 64);
    out.clear();
    for i in 0..3000u16 {
        let mut b = Burst::new();
        for (k, vip) in [VIP1, VIP2].into_iter().enumerate() {
            let f = syn(vip, 1024 + i * 2 + k as u16);
            let mut m = pool.alloc().unwrap();
            assert!(m.set_len(f.len()));
            m.data_mut().copy_from_slice(&f);
            b.push(m).ok().unwrap();
        }
        assert_eq!(feed.send_burst(&mut b), 2);
        // Both SYNs arrive in one RX burst: the worker handles them between two control polls.
        worker.poll_once();
        drain.recv_burst(&mut out, 64);
        let dsts: Vec<Ipv4Addr> = out
            .drain()
            .filter_map(
                |m| match SlicedPacket::from_ethernet(m.data()).unwrap().net {
                    Some(NetSlice::Ipv4(ip)) => Some(ip.header().destination_addr()),
                    _ => None,
                },
            )
            .collect();
        assert_eq!(dsts.len(), 2, "both SYNs forwarded (iteration {i})");
        assert_eq!(
            dsts[0], dsts[1],
            "burst {i} mixed two configurations: {dsts:?}"
        );
        seen[(dsts[0].octets() == RIP_B) as usize] += 1;
        // Let the control thread publish the next generation between bursts.
        std::thread::yield_now();
        worker.poll_once();
    }
    stop.store(true, Ordering::Relaxed);
    // Keep polling so the control thread's last call is answered.
    for _ in 0..10_000 {
        worker.poll_once();
        if ctl.is_finished() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    let applied = ctl.join().unwrap();
    assert!(
        applied >= 10,
        "the configuration flipped only {applied} times"
    );
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both generations were used: {seen:?}"
    );
}
