//! A worker never sees a half-applied configuration: the control thread flips two services
//! between "both to real server A" and "both to real server B" as fast as the worker answers,
//! while every burst carries one new connection to each service. Both SYNs of a burst must leave
//! toward the same real server, whichever generation the worker is on. Runs the production worker
//! loop over net_ring ports (a real EAL), with the control mailbox of rvsd.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dpdk::{Burst, Eal, Mempool, Port, PortConf};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket};
use rvs_core::config::{DestConf, Fwd, Proto, Sched, ServiceConf, Timeouts};
use rvs_core::counters::CoreCounters;
use rvs_core::{MacAddr, PortConf as CorePort, Stack, StackConfig};
use rvs_dataplane::ctl::{mailbox, Cmd, Snapshot};
use rvs_dataplane::{PeerLinks, PeerSenders, Worker, WorkerIo, WorkerPorts};

const VIP1: [u8; 4] = [203, 0, 113, 10];
const VIP2: [u8; 4] = [203, 0, 113, 20];
const RIP_A: [u8; 4] = [198, 51, 100, 11];
const RIP_B: [u8; 4] = [198, 51, 100, 12];
const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn services(rip: [u8; 4], id: u32) -> Vec<ServiceConf> {
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
            }],
            lips: vec![],
            lip_port: 0,
            persist: None,
            mark: None,
        })
        .collect()
}

fn syn(vip: [u8; 4], cport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], MAC)
        .ipv4([192, 0, 2, 2], vip, 64)
        .tcp(cport, 80, 1, 1000)
        .syn()
        .write(&mut f, b"")
        .unwrap();
    f
}

#[test]
fn bursts_never_mix_two_generations() {
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
    let pool = Arc::new(Mempool::new_pktmbuf("snap_pool", 4095, 0, -1).unwrap());
    let mut rp = Port::from_rings("snap0", 1, 1024).unwrap();
    let conf = PortConf {
        rx_queues: 1,
        tx_queues: 1,
        rx_desc: 1024,
        tx_desc: 1024,
        rss: false,
        mtu: None,
        promiscuous: false,
        rss_key: None,
    };
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
    let (mut link, wctl) = mailbox(0).unwrap();
    let mut worker = Worker::new(
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
        32,
        eal.tsc_hz(),
    )
    .with_ctl(wctl);

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
            let snap = Arc::new(Snapshot {
                generation,
                services: services(rip, (generation as u32 % 2) * 2),
                timeouts: Timeouts::default(),
                announce: vec![],
            });
            let reply = link
                .call(
                    Box::new(Cmd::Apply {
                        new: snap,
                        old: None,
                        result: Ok(()),
                    }),
                    std::time::Duration::from_secs(5),
                )
                .unwrap();
            match *reply {
                Cmd::Apply { result: Ok(()), .. } => applied += 1,
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
