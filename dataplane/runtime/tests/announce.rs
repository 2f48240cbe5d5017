//! A configuration that brings a new VIP announces it: the worker applying the snapshot sends a
//! gratuitous ARP for each address of its `announce` list (the routers learn where the VIP now
//! lives), and ARP for a VIP the snapshot no longer has is not answered any more.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{rig, services, Rig, MAC, RIP_A, VIP2};
use dpdk::Burst;
use etherparse::{ArpOperation, ArpPacketSlice, EtherType, Ethernet2Slice, PacketBuilder};
use rvs_core::config::Timeouts;
use rvs_dataplane::ctl::{mailbox, Cmd, Snapshot};

const VIP3: [u8; 4] = [203, 0, 113, 30];

/// (operation, sender IP, target IP) of every ARP frame in `out`.
fn arps(out: &mut Burst) -> Vec<(ArpOperation, [u8; 4], [u8; 4])> {
    out.drain()
        .filter_map(|m| {
            let e = Ethernet2Slice::from_slice_without_fcs(m.data()).ok()?;
            if e.ether_type() != EtherType::ARP {
                return None;
            }
            let a = ArpPacketSlice::from_slice(e.payload_slice()).ok()?;
            Some((
                a.operation(),
                a.sender_protocol_addr().try_into().ok()?,
                a.target_protocol_addr().try_into().ok()?,
            ))
        })
        .collect()
}

/// An ARP request from 192.0.2.2 for `ip`.
fn who_has(ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [0xff; 6])
        .arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                EtherType::IPV4,
                ArpOperation::REQUEST,
                &[2, 0, 0, 0, 0, 9],
                &[192, 0, 2, 2],
                &[0; 6],
                &ip,
            )
            .unwrap(),
        )
        .write(&mut f)
        .unwrap();
    f
}

#[test]
fn a_new_vip_is_announced_and_a_removed_one_released() {
    let Rig {
        eal: _eal,
        pool,
        mut rp,
        counters: _,
        worker,
    } = rig("garp", 32);
    let (mut link, wctl) = mailbox(0).unwrap();
    let mut worker = worker.with_ctl(wctl);
    worker.start();
    let mut out = Burst::new();
    rp.drain[0].recv_burst(&mut out, 64);
    let at_start = arps(&mut out);
    assert!(
        at_start.iter().any(|a| a.1 == VIP2),
        "VIP2 announced at start: {at_start:?}"
    );
    // VIP2's service moves to VIP3.
    let mut moved = services(RIP_A, 0);
    moved[1].vip = IpAddr::from(VIP3);
    let ctl = std::thread::spawn(move || {
        let snap = Arc::new(Snapshot::new(
            2,
            moved,
            Timeouts::default(),
            vec![(0, IpAddr::from(VIP3))],
        ));
        let reply = link
            .call(
                Box::new(Cmd::Apply {
                    new: snap,
                    old: None,
                    built: None,
                    result: Ok(()),
                }),
                Duration::from_secs(5),
            )
            .expect("the worker answers");
        matches!(*reply, Cmd::Apply { result: Ok(()), .. })
    });
    while !ctl.is_finished() {
        worker.poll_once();
        std::thread::sleep(Duration::from_micros(100));
    }
    assert!(ctl.join().unwrap(), "applied");
    worker.poll_once();
    rp.drain[0].recv_burst(&mut out, 64);
    assert_eq!(
        arps(&mut out),
        vec![(ArpOperation::REQUEST, VIP3, VIP3)],
        "one gratuitous ARP, for the new VIP"
    );
    // Asked for: VIP3 is answered, VIP2 no longer.
    for ip in [VIP3, VIP2] {
        let f = who_has(ip);
        let mut m = pool.alloc().unwrap();
        assert!(m.set_len(f.len()));
        m.data_mut().copy_from_slice(&f);
        let mut b = Burst::new();
        b.push(m).ok().unwrap();
        assert_eq!(rp.feed[0].send_burst(&mut b), 1);
    }
    worker.poll_once();
    rp.drain[0].recv_burst(&mut out, 64);
    assert_eq!(
        arps(&mut out),
        vec![(ArpOperation::REPLY, VIP3, [192, 0, 2, 2])],
        "only the VIP in the configuration is answered for (MAC {MAC:?})"
    );
}
