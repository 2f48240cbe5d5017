//! The worker's RX prefetch pipeline runs across bursts: after a full RX burst it keeps the last
//! frames for the next poll. None may be lost, reordered or left waiting when traffic stops:
//! the next poll (which receives less than a burst) handles them, and so does `finish`.

mod common;

use common::{ack, rig, syn, Rig, RIP_A, VIP1};
use dpdk::Burst;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// (destination, client port) of every TCP frame the worker transmitted, in order.
fn sent(drain: &mut dpdk::MbufConsumer) -> Vec<([u8; 4], u16)> {
    let mut out = Burst::new();
    let mut v = Vec::new();
    while drain.recv_burst(&mut out, 64) > 0 {
        for m in out.drain() {
            let p = SlicedPacket::from_ethernet(m.data()).unwrap();
            if let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (p.net, p.transport) {
                v.push((ip.header().destination_addr().octets(), t.source_port()));
            }
        }
    }
    v
}

#[test]
fn held_frames_are_handled_in_order_and_never_stranded() {
    const BURST: u16 = 32;
    let Rig {
        eal: _eal,
        pool,
        mut rp,
        counters,
        mut worker,
    } = rig("pipe", BURST);
    worker.start();
    let (feed, drain) = (&mut rp.feed[0], &mut rp.drain[0]);
    sent(drain); // the gratuitous ARPs of start()
    let next_port = std::cell::Cell::new(1000u16);
    let push = |n: usize, feed: &mut dpdk::MbufProducer| {
        let mut b = Burst::new();
        for _ in 0..n {
            // The first 3 × BURST ports open sessions; later, ACKs on them (session hits, found
            // through the bucket the prefetch stage computed), then SYNs again.
            let f = match next_port.get() {
                p if (2000..2000 + 3 * BURST).contains(&p) => ack(VIP1, p - 1000),
                p => syn(VIP1, p),
            };
            next_port.set(next_port.get() + 1);
            let mut m = pool.alloc().unwrap();
            assert!(m.set_len(f.len()));
            m.data_mut().copy_from_slice(&f);
            b.push(m).ok().unwrap();
        }
        assert_eq!(feed.send_burst(&mut b), n);
    };

    // Three full bursts waiting: each poll receives a full burst and keeps some for the next.
    push(3 * BURST as usize, feed);
    let mut out = Vec::new();
    for _ in 0..3 {
        assert_eq!(worker.poll_once(), BURST as usize);
        out.extend(sent(drain));
    }
    assert!(worker.held() > 0, "a full burst keeps a pipeline's depth");
    assert!(worker.held() < BURST as usize);
    // Traffic stops: the next poll receives nothing and handles what it held.
    assert_eq!(worker.poll_once(), 0);
    assert_eq!(worker.held(), 0);
    out.extend(sent(drain));
    assert_eq!(out.len(), 3 * BURST as usize, "every SYN forwarded once");
    for (k, (dst, cport)) in out.iter().enumerate() {
        assert_eq!(*dst, RIP_A);
        assert_eq!(*cport, 1000 + k as u16, "frames leave in arrival order");
    }

    // A partial burst is handled at once.
    push(5, feed);
    assert_eq!(worker.poll_once(), 5);
    assert_eq!(worker.held(), 0);
    assert_eq!(sent(drain).len(), 5);

    // A full burst, then the worker stops: finish() handles the held frames.
    push(BURST as usize, feed);
    assert_eq!(worker.poll_once(), BURST as usize);
    let before = sent(drain).len();
    assert!(before < BURST as usize);
    worker.finish();
    assert_eq!(worker.held(), 0);
    assert_eq!(before + sent(drain).len(), BURST as usize);

    // ACKs on the first sessions, three full bursts: every one finds its session (an ACK
    // without one is dropped) and leaves from the same LIP:lport as its SYN.
    next_port.set(2000);
    push(3 * BURST as usize, feed);
    let mut acks = Vec::new();
    for _ in 0..4 {
        worker.poll_once();
        acks.extend(sent(drain));
    }
    assert_eq!(acks, out, "each ACK follows its SYN's session, in order");

    let c = counters.snapshot();
    assert_eq!(
        c.rx_packets,
        3 * BURST as u64 + 5 + BURST as u64 + 3 * BURST as u64
    );
    assert_eq!(c.total_drops(), 0, "{c:?}");
}
