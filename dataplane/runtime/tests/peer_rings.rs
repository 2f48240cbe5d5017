//! What a worker hands to another worker over their rings and loses because a ring is full is
//! counted where an operator looks: a refused hand-over is a `redirect_full` drop and not a
//! `redirected_out`, a lost neighbour update is a `neigh_sync_lost`.

mod common;

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::sync::Arc;

use common::{rig, Rig};
use dpdk::Burst;
use rvs_core::counters::{CoreCounters, DropReason};
use rvs_core::io::Io;
use rvs_dataplane::{MbufPacket, NeighMsg, PeerSenders, WorkerIo};

#[test]
fn refused_hand_overs_and_lost_neighbour_updates_are_counted() {
    let Rig {
        eal: _eal,
        pool,
        rp,
        counters: _,
        worker: _,
    } = rig("peers", 32);
    // Rings to worker 1: 8 slots hold 7 packets, 4 slots hold 3 neighbour updates.
    let (redirect, mut to_peer) = dpdk::ring::spsc_mbuf("peers_redirect", 8).unwrap();
    let (neigh, mut neigh_in) = dpdk::ring::spsc::<NeighMsg>("peers_neigh", 4).unwrap();
    let counters = Arc::new(CoreCounters::default());
    let mut io = WorkerIo::new(
        pool.clone(),
        vec![rp.port.tx_queue(0)],
        PeerSenders {
            neigh: vec![neigh],
            redirect: vec![None, Some(redirect)],
        },
        counters.clone(),
    );

    // Ten replies whose sessions worker 1 owns: queued, then the ring takes seven at the flush.
    for _ in 0..10 {
        let m = pool.alloc().expect("mbuf");
        assert!(io.redirect(1, 0, MbufPacket(m)));
    }
    assert_eq!(counters.snapshot().redirected_out, 0, "counted once taken");
    io.flush();
    let s = counters.snapshot();
    assert_eq!(
        s.redirected_out, 7,
        "only what the ring took was handed over"
    );
    assert_eq!(s.dropped(DropReason::RedirectFull), 3);
    let mut b = Burst::new();
    assert_eq!(to_peer.recv_burst(&mut b, 32), 7);
    b.clear();

    // Five neighbours learnt: the peer's ring holds three updates, two are lost and counted.
    for i in 0..5u8 {
        io.neigh_learned(
            0,
            IpAddr::from([192, 0, 2, 10 + i]),
            [2, 0, 0, 0, 0, i],
            i != 1,
        );
    }
    assert_eq!(counters.snapshot().neigh_sync_lost, 2);
    let mut msgs = [MaybeUninit::<NeighMsg>::uninit(); 8];
    let got = neigh_in.recv_burst(&mut msgs);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].ip(), IpAddr::from([192, 0, 2, 10]));
    // Whether the peer may create the entry travels with it (an unsolicited ARP: refresh only).
    let create: Vec<u8> = got.iter().map(|m| m.create).collect();
    assert_eq!(create, [1, 0, 1]);
}
