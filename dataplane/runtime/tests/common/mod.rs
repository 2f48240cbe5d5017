#![allow(dead_code)] // each test binary uses part of the rig

//! The rig of the worker tests: a real EAL, one net_ring port, a stack with the given services
//! (TCP NAT, one port, resolved neighbours) and the production worker over it.

use std::net::IpAddr;
use std::sync::Arc;

use dpdk::{Eal, Mempool, Port, PortConf, RingPort};
use etherparse::PacketBuilder;
use rvs_core::config::{DestConf, Fwd, Proto, Sched, ServiceConf};
use rvs_core::counters::CoreCounters;
use rvs_core::{MacAddr, PortConf as CorePort, Stack, StackConfig};
use rvs_dataplane::{PeerLinks, PeerSenders, Worker, WorkerIo, WorkerPorts};

pub const VIP1: [u8; 4] = [203, 0, 113, 10];
pub const VIP2: [u8; 4] = [203, 0, 113, 20];
pub const RIP_A: [u8; 4] = [198, 51, 100, 11];
pub const RIP_B: [u8; 4] = [198, 51, 100, 12];
pub const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// Both VIPs :80 (TCP, NAT) to `rip`:80, dest ids `id`, `id + 1`.
pub fn services(rip: [u8; 4], id: u32) -> Vec<ServiceConf> {
    [VIP1, VIP2]
        .iter()
        .enumerate()
        .map(|(i, vip)| ServiceConf {
            proto: Proto::Tcp,
            vip: IpAddr::from(*vip),
            vport: 80,
            vip_port: 0,
            sched: Sched::Rr,
            dests: vec![DestConf {
                id: id + i as u32,
                rip: IpAddr::from(rip),
                rport: 80,
                weight: 1,
                fwd: Fwd::Nat,
                upper: 0,
                lower: 0,
                down: false,
                last_weight: 0,
            }],
            lips: vec![],
            lip_port: 0,
            persist: None,
            mark: None,
        })
        .collect()
}

/// A client SYN to `vip`:80 from 192.0.2.2:`cport`.
pub fn syn(vip: [u8; 4], cport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], MAC)
        .ipv4([192, 0, 2, 2], vip, 64)
        .tcp(cport, 80, 1, 1000)
        .syn()
        .write(&mut f, b"")
        .unwrap();
    f
}

/// A client ACK to `vip`:80 from 192.0.2.2:`cport` (needs the SYN's session).
pub fn ack(vip: [u8; 4], cport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], MAC)
        .ipv4([192, 0, 2, 2], vip, 64)
        .tcp(cport, 80, 2, 1000)
        .ack(1)
        .write(&mut f, b"")
        .unwrap();
    f
}

pub struct Rig {
    pub eal: Eal,
    pub pool: Arc<Mempool>,
    pub rp: RingPort,
    pub counters: Arc<CoreCounters>,
    pub worker: Worker,
}

/// EAL (once per test binary), port `name`, and a worker with RX burst `burst`.
pub fn rig(name: &str, burst: u16) -> Rig {
    let args = [
        "rvs-test",
        "-l",
        "0",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "--log-level",
        "*:error",
    ];
    let eal = Eal::init(&args).expect("EAL");
    let pool = Arc::new(Mempool::new_pktmbuf(&format!("{name}_pool"), 4095, 0, -1).unwrap());
    let rp = Port::from_rings(&format!("{name}0"), 1, 1024).unwrap();
    let conf = PortConf::plain(1, 1024);
    rp.port.configure(&conf, &pool).unwrap();
    rp.port.start().unwrap();

    let cfg = StackConfig {
        ports: vec![CorePort {
            mac: MacAddr(MAC),
            mtu: 1500,
            addrs: vec![
                "192.0.2.1/24".parse().unwrap(),
                "198.51.100.1/24".parse().unwrap(),
            ],
        }],
        services: services(RIP_A, 0),
        fullnat: rvs_core::config::FullnatConf {
            sessions: 65536,
            ..Default::default()
        },
        ..Default::default()
    };
    let counters = Arc::new(CoreCounters::default());
    let peers = PeerSenders {
        neigh: vec![],
        redirect: vec![None],
    };
    let mut io = WorkerIo::new(
        pool.clone(),
        vec![rp.port.tx_queue(0)],
        peers,
        counters.clone(),
    );
    let mut stack = Stack::new(&cfg, counters.clone());
    // Resolved neighbours, on the worker's clock (ms of TSC).
    let now = dpdk::eal::tsc() / (eal.tsc_hz() / 1000).max(1);
    for (ip, m) in [(RIP_A, 0x11), (RIP_B, 0x12), ([192, 0, 2, 2], 0x09)] {
        stack.neigh_update(
            &mut io,
            0,
            IpAddr::from(ip),
            MacAddr([2, 0, 0, 0, 0, m]),
            now,
        );
    }
    let worker = Worker::new(
        0,
        WorkerPorts {
            rx: vec![rp.port.rx_queue(0)],
        },
        io,
        stack,
        PeerLinks {
            neigh: vec![],
            redirect: vec![],
        },
        counters.clone(),
        burst,
        eal.tsc_hz(),
    );
    Rig {
        eal,
        pool,
        rp,
        counters,
        worker,
    }
}
