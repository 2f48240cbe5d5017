//! Helpers shared by the `Stack` behaviour tests (fullnat, fwd, persist): the recording `Io`,
//! address helpers, the two-port gateway topology, its setup and the etherparse frame builders.
#![allow(dead_code)]

use etherparse::{PacketBuilder, TcpOptionElement};
use rvs_core::counters::CoreCounters;
use rvs_core::io::{Io, PortIdx};
use rvs_core::packet::VecPacket;
use rvs_core::{
    DestConf, FullnatConf, Fwd, MacAddr, Persist, PortConf, Proto, RouteConf, Sched, ServiceConf,
    Stack, StackConfig,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

pub const MAC0: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const GW0: [u8; 6] = [0x0a, 0, 0, 0, 0, 0xfe];
/// The client of the demo topology (fwd, persist).
pub const CIP: &str = "100.64.0.7";
/// The VIP of the demo topology (fwd, persist).
pub const VIP: &str = "203.0.113.10";
/// The LIP of the demo topology (fwd, persist).
pub const LIP: &str = "198.51.100.100";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
pub fn a4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
pub fn v4(s: &str) -> [u8; 4] {
    a4(s).octets()
}
pub fn rs_mac(i: u8) -> [u8; 6] {
    [0x0a, 0, 0, 0, 1, i]
}
/// Real server `i` of the demo topology: 198.51.100.(10 + i).
pub fn rip(i: u8) -> String {
    format!("198.51.100.{}", 10 + i)
}

/// An `Io` that records what the stack sends and redirects.
#[derive(Default)]
pub struct TestIo {
    pub sent: Vec<(PortIdx, Vec<u8>)>,
    pub redirected: Vec<(u16, PortIdx, Vec<u8>)>,
    pub redirect_fail: bool,
    pub allocs: u64,
}

impl Io for TestIo {
    type Pkt = VecPacket;
    fn alloc(&mut self) -> Option<VecPacket> {
        self.allocs += 1;
        Some(VecPacket::empty())
    }
    fn send(&mut self, port: PortIdx, pkt: VecPacket) {
        self.sent.push((port, pkt.to_vec()));
    }
    fn redirect(&mut self, worker: u16, port: PortIdx, pkt: VecPacket) -> bool {
        if self.redirect_fail {
            return false;
        }
        self.redirected.push((worker, port, pkt.to_vec()));
        true
    }
}

impl TestIo {
    pub fn take(&mut self) -> Vec<(PortIdx, Vec<u8>)> {
        std::mem::take(&mut self.sent)
    }
    pub fn one(&mut self) -> (PortIdx, Vec<u8>) {
        let mut v = self.take();
        assert_eq!(v.len(), 1, "expected one frame, got {}", v.len());
        v.pop().unwrap()
    }
}

/// Real server `rip`:`rport`.
pub fn dest_at(id: u32, rip: &str, rport: u16, weight: u32, fwd: Fwd) -> DestConf {
    DestConf {
        id,
        rip: ip(rip),
        rport,
        weight,
        fwd,
        upper: 0,
        lower: 0,
        down: false,
        last_weight: 0,
    }
}

/// Real server `i` of the demo topology.
pub fn dest(id: u32, i: u8, rport: u16, weight: u32, fwd: Fwd) -> DestConf {
    dest_at(id, &rip(i), rport, weight, fwd)
}

/// A service on VIP:`vport` of the demo topology, with the LIP when a destination is FULLNAT.
pub fn service(
    proto: Proto,
    vport: u16,
    sched: Sched,
    dests: Vec<DestConf>,
    persist: Option<Persist>,
) -> ServiceConf {
    let full = dests.iter().any(|d| d.fwd == Fwd::FullNat);
    ServiceConf {
        proto,
        vip: ip(VIP),
        vport,
        vip_port: 0,
        sched,
        dests,
        lips: if full { vec![ip(LIP)] } else { vec![] },
        lip_port: 1,
        persist,
        mark: None,
    }
}

/// Two ports: port 0 (clients) 192.0.2.1/24, default via 192.0.2.254; port 1 (real servers)
/// `port1_addr`. ip_forward on, 1024 FULLNAT sessions.
pub fn gateway(port1_addr: &str, services: Vec<ServiceConf>) -> StackConfig {
    StackConfig {
        ports: vec![
            PortConf {
                mac: MacAddr(MAC0),
                mtu: 1500,
                addrs: vec!["192.0.2.1/24".parse().unwrap()],
            },
            PortConf {
                mac: MacAddr(MAC1),
                mtu: 1500,
                addrs: vec![port1_addr.parse().unwrap()],
            },
        ],
        routes: vec![RouteConf {
            prefix: "0.0.0.0/0".parse().unwrap(),
            via: Some(ip("192.0.2.254")),
            port: 0,
        }],
        ip_forward: true,
        services,
        fullnat: FullnatConf {
            sessions: 1024,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The demo topology: port 0 (clients) 192.0.2.1/24, default via 192.0.2.254; port 1 (real
/// servers) 198.51.100.1/24.
pub fn cfg(services: Vec<ServiceConf>) -> StackConfig {
    gateway("198.51.100.1/24", services)
}

/// A stack with the gateway and real servers `resolved` (addresses given by `rip`) in its
/// neighbour table.
pub fn setup_with(
    c: StackConfig,
    rip: fn(u8) -> String,
    resolved: &[u8],
) -> (Stack<VecPacket>, TestIo, Arc<CoreCounters>) {
    let counters = Arc::new(CoreCounters::default());
    let mut s = Stack::new(&c, counters.clone());
    let mut io = TestIo::default();
    s.neigh_update(&mut io, 0, ip("192.0.2.254"), MacAddr(GW0), 0);
    for &i in resolved {
        s.neigh_update(&mut io, 1, ip(&rip(i)), MacAddr(rs_mac(i)), 0);
    }
    assert!(io.sent.is_empty());
    (s, io, counters)
}

/// A stack with the gateway and the demo real servers `resolved` in its neighbour table.
pub fn setup(c: StackConfig, resolved: &[u8]) -> (Stack<VecPacket>, TestIo, Arc<CoreCounters>) {
    setup_with(c, rip, resolved)
}

pub fn handle(s: &mut Stack<VecPacket>, io: &mut TestIo, port: PortIdx, f: &[u8], now: u64) {
    s.handle(io, port, VecPacket::from_slice(f), now);
}

/// TCP flags of a test segment.
#[derive(Clone, Copy, Default)]
pub struct Fl {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}
pub const SYN: Fl = Fl {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const SYNACK: Fl = Fl {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};
pub const ACK: Fl = Fl {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub const FINACK: Fl = Fl {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
pub const RST: Fl = Fl {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

/// An Ethernet/IPv4/TCP frame (seq 1000, window 64000, ack 5000 when ACK is set).
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    fl: Fl,
    opts: &[TcpOptionElement],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(eth_src, eth_dst)
        .ipv4(v4(src), v4(dst), 64)
        .tcp(sport, dport, 1000, 64000);
    if fl.syn {
        b = b.syn();
    }
    if fl.ack {
        b = b.ack(5000);
    }
    if fl.fin {
        b = b.fin();
    }
    if fl.rst {
        b = b.rst();
    }
    let b = b.options(opts).unwrap();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// An Ethernet/IPv4/UDP frame.
pub fn udp(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(eth_src, eth_dst)
        .ipv4(v4(src), v4(dst), 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}
