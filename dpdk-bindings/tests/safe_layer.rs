//! The safe layer against a real EAL: a net_ring port (whose TX ring is its RX ring) carries a frame
//! through TX and back through RX; pools, stats, xstats, SPSC rings and lcore launch work. EAL can be
//! initialised once per process, so this is one test.

use std::mem::MaybeUninit;

use dpdk::{Burst, Eal, Mempool, Port, PortConf};

#[test]
fn eal_port_mbuf_ring_and_lcore() {
    let args = [
        "rvs-test",
        "-l",
        "0,1",
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        "--no-shconf",
        "--log-level",
        "*:error",
        "--vdev",
        "net_ring0",
        "--vdev",
        "net_null1",
    ];
    let eal = Eal::init(&args).expect("EAL init");
    assert!(
        Eal::init(&args).is_err(),
        "a second EAL init must be refused"
    );
    assert!(eal.tsc_hz() > 0);
    assert_eq!(eal.lcore_count(), 2);

    let pool = Mempool::new_pktmbuf("test_pool", 1023, 32, -1).expect("pool");
    let port = Port::by_name("net_ring0").expect("net_ring0");
    assert!(Port::by_name("net_nothing9").is_err());
    let conf = PortConf::plain(1, 256);
    port.configure(&conf, &pool).expect("configure");
    port.start().expect("start");
    assert_eq!(port.info().unwrap().driver, "net_ring");
    assert!(port.link().unwrap().up);

    let frame: Vec<u8> = (0..60u8).collect();
    let mut m = pool.alloc().expect("mbuf");
    assert!(m.capacity() >= 1500);
    assert!(
        !m.set_len(m.capacity() + 1),
        "set_len beyond capacity must fail"
    );
    assert!(m.set_len(frame.len()));
    m.data_mut().copy_from_slice(&frame);
    let in_use = pool.in_use();
    let mut b = Burst::new();
    assert!(b.push(m).is_ok());
    let mut tx = port.tx_queue(0);
    assert_eq!(tx.tx_burst(&mut b), 1);
    assert!(b.is_empty());
    let mut rx = port.rx_queue(0);
    assert_eq!(rx.rx_burst(&mut b, 32), 1);
    // A queue the port was not configured with is refused (DPDK would read a null queue).
    assert!(std::panic::catch_unwind(|| port.rx_queue(1)).is_err());
    assert!(std::panic::catch_unwind(|| port.tx_queue(7)).is_err());
    // One handle per queue: a second one (which safe code could poll from another thread) is
    // refused while the first lives, and given once it is dropped.
    assert!(std::panic::catch_unwind(|| port.rx_queue(0)).is_err());
    assert!(std::panic::catch_unwind(|| port.tx_queue(0)).is_err());
    drop(rx);
    let mut rx = port.rx_queue(0);
    assert_eq!(rx.rx_burst(&mut b, 32), 0);
    let got: Vec<_> = b.drain().collect();
    assert_eq!(got[0].data(), &frame[..]);
    drop(got);
    assert_eq!(
        pool.in_use(),
        in_use - 1,
        "dropping an Mbuf returns it to the pool"
    );

    // One-byte mbufs holding their number.
    let one = |v: u8| {
        let mut m = pool.alloc().expect("mbuf");
        assert!(m.set_len(1));
        m.data_mut()[0] = v;
        m
    };
    let five = || {
        let mut b = Burst::new();
        for i in 0..5u8 {
            assert!(b.push(one(i)).is_ok());
        }
        b
    };

    // drain_front_ahead over the whole burst hands each mbuf out once, in order, lending the
    // ones behind it.
    let in_use = pool.in_use();
    let mut b = five();
    let mut seen = Vec::new();
    b.drain_front_ahead(usize::MAX, |_, m, ahead| {
        m.prefetch_data();
        let rest: Vec<u8> = ahead.iter().map(|a| a.data()[0]).collect();
        seen.push((m.data()[0], rest));
    });
    assert!(b.is_empty());
    assert_eq!(seen[0], (0, vec![1, 2, 3, 4]));
    assert_eq!(seen[3], (3, vec![4]));
    assert_eq!(seen[4], (4, vec![]));
    assert_eq!(
        pool.in_use(),
        in_use,
        "every drained mbuf was freed exactly once"
    );

    // drain_front_ahead takes only the first k, lending every one behind (kept ones too), and
    // moves the rest to the front; an append goes behind them.
    let mut b = five();
    let mut seen = Vec::new();
    b.drain_front_ahead(2, |i, m, ahead| {
        m.prefetch_header();
        let rest: Vec<u8> = ahead.iter().map(|a| a.data()[0]).collect();
        seen.push((i, m.data()[0], rest));
    });
    assert_eq!(seen, vec![(0, 0, vec![1, 2, 3, 4]), (1, 1, vec![2, 3, 4])]);
    let kept: Vec<u8> = b.as_slice().iter().map(|m| m.data()[0]).collect();
    assert_eq!(kept, vec![2, 3, 4]);
    assert_eq!(b.room(), dpdk::MAX_BURST - 3);
    b.drain_front_ahead(usize::MAX, |_, _, _| {});
    assert!(b.is_empty());
    assert_eq!(pool.in_use(), in_use, "taken and kept mbufs freed once");

    let mut t = Burst::new();
    assert!(t.push(one(10)).is_ok() && t.push(one(11)).is_ok());
    assert_eq!(tx.tx_burst(&mut t), 2);
    let mut b = Burst::new();
    assert!(b.push(one(9)).is_ok());
    assert_eq!(rx.rx_burst_append(&mut b, 32), 2);
    let all: Vec<u8> = b.drain().map(|m| m.data()[0]).collect();
    assert_eq!(
        all,
        vec![9, 10, 11],
        "RX appends behind what the burst holds"
    );

    let st = port.stats().unwrap();
    assert_eq!((st.ipackets, st.opackets), (3, 3));
    assert!(!port.xstats().unwrap().is_empty());

    // rx_burst into a burst that holds mbufs keeps them in front (never overwritten, never
    // leaked); a drain stopped early frees what it did not hand out.
    let in_use = pool.in_use();
    let mut t = Burst::new();
    assert!(t.push(one(21)).is_ok());
    assert_eq!(tx.tx_burst(&mut t), 1);
    let mut b = Burst::new();
    assert!(b.push(one(20)).is_ok() && b.push(one(22)).is_ok());
    assert_eq!(rx.rx_burst(&mut b, 32), 1);
    assert_eq!(b.len(), 3);
    let first = b.drain().next().map(|m| m.data()[0]);
    assert_eq!(first, Some(20));
    assert!(b.is_empty());
    assert_eq!(pool.in_use(), in_use, "the two not taken were freed");

    // Mbufs still in a ring when both halves are gone (sent after the consumer's last look)
    // are freed with it.
    let (mut mp, mc) = dpdk::ring::spsc_mbuf("test_mring", 8).unwrap();
    let before = pool.in_use();
    drop(mc);
    let mut b = Burst::new();
    assert!(b.push(one(30)).is_ok() && b.push(one(31)).is_ok());
    assert_eq!(mp.send_burst(&mut b), 2);
    assert_eq!(pool.in_use(), before + 2);
    drop(mp);
    assert_eq!(pool.in_use(), before, "freed with the ring");

    let (mut p, mut c) = dpdk::ring::spsc::<[u32; 3]>("test_ring", 8).unwrap();
    assert_eq!(p.send_burst(&[[1, 2, 3], [4, 5, 6]]), 2);
    let mut out = [MaybeUninit::uninit(); 4];
    assert_eq!(c.recv_burst(&mut out), &[[1, 2, 3], [4, 5, 6]]);
    assert!(
        dpdk::ring::spsc::<[u8; 3]>("bad_ring", 8).is_err(),
        "element size must be a multiple of 4"
    );

    let h = dpdk::lcore::launch(1, || dpdk::eal::lcore_id() as i32 + 40).unwrap();
    assert_eq!(h.wait(), 41, "the job ran on lcore 1");

    // A pool per RX queue: net_null fills each RX queue from that queue's pool.
    let (pa, pb) = (
        Mempool::new_pktmbuf("test_pool_a", 511, 0, -1).expect("pool a"),
        Mempool::new_pktmbuf("test_pool_b", 511, 0, -1).expect("pool b"),
    );
    let null = Port::by_name("net_null1").expect("net_null1");
    let two = PortConf::plain(2, 64);
    assert!(
        null.configure_pools::<&Mempool>(&two, &[]).is_err(),
        "no pool"
    );
    null.configure_pools(&two, &[&pa, &pb])
        .expect("configure with two pools");
    null.start().expect("start net_null1");
    let (a0, b0) = (pa.in_use(), pb.in_use());
    let mut q1 = null.rx_queue(1);
    let mut got = Burst::new();
    let n = q1.rx_burst(&mut got, 8) as u32;
    assert!(n > 0, "net_null receives");
    assert_eq!(
        (pa.in_use(), pb.in_use()),
        (a0, b0 + n),
        "queue 1 fills from pool b"
    );
    let mut q0 = null.rx_queue(0);
    let mut got0 = Burst::new();
    let n0 = q0.rx_burst(&mut got0, 8) as u32;
    assert_eq!(
        (pa.in_use(), pb.in_use()),
        (a0 + n0, b0 + n),
        "queue 0 from pool a"
    );
    drop((got, got0, q0, q1));
    assert_eq!(
        (pa.in_use(), pb.in_use()),
        (a0, b0),
        "each mbuf back in its own pool"
    );
    null.stop().unwrap();
    null.close().unwrap();
    drop((pa, pb));

    // Not while a queue still has a handle (its holder may be polling it).
    let e = port.stop().unwrap_err();
    assert_eq!(e.code, libc::EBUSY, "{e}");
    assert_eq!(port.close().unwrap_err().code, libc::EBUSY);
    drop((rx, tx));
    port.stop().unwrap();
    port.close().unwrap();
    drop((p, c));
    drop(pool);
    // SAFETY: every pool, ring and mbuf is dropped, the port is closed, lcore 1 is idle.
    unsafe { eal.cleanup() };
}
