//! The gateway the fuzz target drives: two ports, ip_forward on, a TCP and a UDP FULLNAT service,
//! two workers (this stack is worker 0, so half of the lports belong to the other one).

use std::net::IpAddr;
use std::sync::Arc;

use rvs_core::counters::CoreCounters;
use rvs_core::io::{Io, PortIdx};
use rvs_core::packet::{PacketBuf, VecPacket};
use rvs_core::{
    DestConf, FullnatConf, MacAddr, PortConf, Proto, RouteConf, Sched, ServiceConf, Stack,
    StackConfig,
};

pub const MAC0: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn stack() -> Stack<VecPacket> {
    let svc = |proto, vport| ServiceConf {
        mark: None,
        proto,
        vip: ip("203.0.113.10"),
        vport,
        vip_port: 0,
        sched: Sched::Wrr,
        dests: vec![
            DestConf {
                id: 0,
                rip: ip("198.51.100.11"),
                rport: vport,
                weight: 3,
                fwd: Default::default(),
                upper: 0,
                lower: 0,
                down: false,
                last_weight: 0,
            },
            DestConf {
                id: 1,
                rip: ip("198.51.100.12"),
                rport: vport,
                weight: 1,
                fwd: Default::default(),
                upper: 0,
                lower: 0,
                down: false,
                last_weight: 0,
            },
        ],
        lips: vec![ip("198.51.100.2")],
        lip_port: 1,
        // The UDP service is persistent per /24, so the fuzzer also drives templates.
        persist: (vport == 53).then_some(rvs_core::Persist {
            timeout_ms: 30_000,
            netmask: 0xffff_ff00,
        }),
    };
    let cfg = StackConfig {
        ports: vec![
            PortConf {
                mac: MacAddr(MAC0),
                mtu: 1500,
                addrs: vec!["192.0.2.1/24".parse().unwrap()],
            },
            PortConf {
                mac: MacAddr(MAC1),
                mtu: 1500,
                addrs: vec!["198.51.100.1/24".parse().unwrap()],
            },
        ],
        routes: vec![RouteConf {
            prefix: "0.0.0.0/0".parse().unwrap(),
            via: Some(ip("192.0.2.254")),
            port: 0,
        }],
        ip_forward: true,
        worker: 0,
        n_workers: 2,
        services: vec![svc(Proto::Tcp, 80), svc(Proto::Udp, 53)],
        fullnat: FullnatConf {
            sessions: 256,
            ..Default::default()
        },
        ..Default::default()
    };
    Stack::new(&cfg, Arc::new(CoreCounters::default()))
}

/// An Io that drops what it is given but checks every frame it receives is sane.
#[derive(Default)]
pub struct FuzzIo {
    pub sent: u64,
}

impl Io for FuzzIo {
    type Pkt = VecPacket;
    fn alloc(&mut self) -> Option<VecPacket> {
        Some(VecPacket::empty())
    }
    fn send(&mut self, port: PortIdx, pkt: VecPacket) {
        assert!(port < 2, "sent on a port that does not exist");
        assert!(
            pkt.len() >= 14 && pkt.len() <= VecPacket::DEFAULT_CAPACITY,
            "frame length {}",
            pkt.len()
        );
        self.sent += 1;
    }
    fn redirect(&mut self, worker: u16, _port: PortIdx, _pkt: VecPacket) -> bool {
        assert_eq!(worker, 1, "redirected to a worker that does not exist");
        true
    }
}
