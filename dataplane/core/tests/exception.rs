//! The exception path: frames for rvs's own addresses that the dataplane does not serve go to the
//! kernel when the port has one, and are dropped and counted otherwise.

use std::sync::Arc;

use etherparse::PacketBuilder;
use rvs_core::counters::{CoreCounters, DropReason};
use rvs_core::io::{Io, PortIdx};
use rvs_core::packet::{PacketBuf, VecPacket};
use rvs_core::{MacAddr, PortConf, Stack, StackConfig};

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];

#[derive(Default)]
struct KIo {
    kernel: bool,
    to_kernel: Vec<(PortIdx, Vec<u8>)>,
    sent: usize,
}

impl Io for KIo {
    type Pkt = VecPacket;
    fn alloc(&mut self) -> Option<VecPacket> {
        Some(VecPacket::empty())
    }
    fn send(&mut self, _port: PortIdx, _pkt: VecPacket) {
        self.sent += 1;
    }
    fn to_kernel(&mut self, port: PortIdx, pkt: VecPacket) -> Result<(), VecPacket> {
        if !self.kernel {
            return Err(pkt);
        }
        self.to_kernel.push((port, pkt.data().to_vec()));
        Ok(())
    }
}

fn stack() -> (Stack<VecPacket>, Arc<CoreCounters>) {
    let c = Arc::new(CoreCounters::default());
    let cfg = StackConfig {
        ports: vec![PortConf {
            mac: MacAddr(MAC),
            mtu: 1500,
            addrs: vec!["192.0.2.1/24".parse().unwrap()],
        }],
        ..Default::default()
    };
    (Stack::new(&cfg, c.clone()), c)
}

fn tcp_to_gateway() -> VecPacket {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(PEER, MAC)
        .ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
        .tcp(40000, 22, 1, 1000)
        .syn()
        .write(&mut f, b"")
        .unwrap();
    VecPacket::from_slice(&f)
}

fn arp_reply() -> VecPacket {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&PEER);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    f.extend_from_slice(&PEER);
    f.extend_from_slice(&[192, 0, 2, 2]);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[192, 0, 2, 1]);
    VecPacket::from_slice(&f)
}

#[test]
fn unserved_local_traffic_goes_to_the_kernel_unchanged() {
    let (mut s, c) = stack();
    let mut io = KIo {
        kernel: true,
        ..Default::default()
    };
    let frame = tcp_to_gateway();
    s.handle(&mut io, 0, frame.clone(), 0);
    s.handle(&mut io, 0, arp_reply(), 0);
    assert_eq!(io.to_kernel.len(), 2);
    assert_eq!(
        io.to_kernel[0],
        (0, frame.to_vec()),
        "the frame reaches the kernel untouched"
    );
    assert_eq!(c.snapshot().to_kernel, 2);
    assert_eq!(c.snapshot().total_drops(), 0);
    assert!(
        s.neigh_lookup(0, "192.0.2.2".parse().unwrap()).is_some(),
        "rvs still learns from the reply"
    );
}

#[test]
fn without_an_exception_path_it_is_dropped_and_counted() {
    let (mut s, c) = stack();
    let mut io = KIo::default();
    s.handle(&mut io, 0, tcp_to_gateway(), 0);
    s.handle(&mut io, 0, arp_reply(), 0);
    let snap = c.snapshot();
    assert_eq!(snap.dropped(DropReason::LocalL4), 1);
    assert_eq!(snap.to_kernel, 0);
    assert_eq!(snap.arp_replies_rx, 1);
}
