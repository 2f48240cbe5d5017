//! Persistent services (ipvsadm `-p`/`-M`, port-0 services) of `Stack`, with etherparse as the
//! independent oracle: inputs built with etherparse, outputs parsed by it, checksums recomputed.

use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
use rvs_core::counters::{CoreCounters, DropReason};
use rvs_core::packet::VecPacket;
use rvs_core::service::ServiceError;
use rvs_core::{
    persist_owner, DestConf, Fwd, MacAddr, Persist, Proto, Sched, ServiceConf, Stack, StackConfig,
    TcpState, Timeouts,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

mod common;
use common::{a4, cfg, dest, ip, rip, rs_mac, tcp, Fl, TestIo, ACK, CIP, GW0, MAC0, RST, SYN, VIP};

const TCP: u8 = 6;

/// Three FULLNAT real servers (ids 0..3, real servers 1..=3), round robin.
fn rr3(rport: u16) -> Vec<DestConf> {
    (0..3)
        .map(|i| dest(i, i as u8 + 1, rport, 1, Fwd::FullNat))
        .collect()
}

fn service(vport: u16, dests: Vec<DestConf>, persist: Option<Persist>) -> ServiceConf {
    common::service(Proto::Tcp, vport, Sched::Rr, dests, persist)
}

fn persist(secs: u64, netmask: u32) -> Option<Persist> {
    Some(Persist {
        timeout_ms: secs * 1000,
        netmask,
    })
}

fn setup(c: StackConfig) -> (Stack<VecPacket>, TestIo, Arc<CoreCounters>) {
    common::setup(c, &[1, 2, 3])
}

/// Client `cip`:`cport` → VIP:`vport` TCP segment (`fl`: SYN or ACK).
fn c2v(cip: &str, cport: u16, vport: u16, fl: Fl) -> Vec<u8> {
    tcp(GW0, MAC0, cip, cport, VIP, vport, fl, &[], b"")
}

/// (destination MAC, destination IP, destination port) of an output IPv4 TCP frame, checksums
/// checked by etherparse.
fn out(frame: &[u8]) -> ([u8; 6], Ipv4Addr, u16) {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = h.link else {
        panic!("no eth")
    };
    let Some(NetHeaders::Ipv4(iph, _)) = h.net else {
        panic!("not ipv4")
    };
    assert_eq!(iph.header_checksum, iph.calc_header_checksum(), "ip csum");
    let payload = h.payload.slice().to_vec();
    let Some(TransportHeader::Tcp(t)) = h.transport else {
        panic!("not tcp")
    };
    assert_eq!(
        t.checksum,
        t.calc_checksum_ipv4(&iph, &payload).unwrap(),
        "tcp csum"
    );
    (
        eth.destination,
        Ipv4Addr::from(iph.destination),
        t.destination_port,
    )
}

/// Send a SYN from `cip:cport` to VIP:`vport` and return where it went (RIP, rport).
fn connect(
    s: &mut Stack<VecPacket>,
    io: &mut TestIo,
    cip: &str,
    cport: u16,
    vport: u16,
    now: u64,
) -> (Ipv4Addr, u16) {
    s.handle(
        io,
        0,
        VecPacket::from_slice(&c2v(cip, cport, vport, SYN)),
        now,
    );
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let (_, d, p) = out(&f);
    (d, p)
}

fn tick(s: &mut Stack<VecPacket>, io: &mut TestIo, from: u64, to: u64) {
    let mut t = from;
    while t <= to {
        s.poll_timers(io, t);
        t += 100;
    }
    // Neighbour probes (ARP) of the timers are not what these tests look at: keep the
    // neighbours fresh.
    s.neigh_update(io, 0, ip("192.0.2.254"), MacAddr(GW0), to);
    for i in 1..=3 {
        s.neigh_update(io, 1, ip(&rip(i)), MacAddr(rs_mac(i)), to);
    }
    io.sent.clear();
}

#[test]
fn all_connections_of_a_client_land_on_one_real_server() {
    let (mut s, mut io, c) = setup(cfg(vec![service(80, rr3(80), persist(300, !0))]));
    let first = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    for p in 1001..1030 {
        assert_eq!(connect(&mut s, &mut io, CIP, p, 80, 1), first);
    }
    assert_eq!((c.persist_new.get(), c.persist_hits.get()), (1, 29));
    assert_eq!(s.session_count(), 30);
    assert_eq!(s.template_count(), 1);
    let t = s.persist_templates()[0];
    assert_eq!((t.cnet, t.vport, t.refs, t.proto), (a4(CIP), 80, 30, TCP));
    assert_eq!(t.rip, first.0);
    let id = s.persist_templates()[0].dest;
    assert_eq!(s.dest_stats(id).unwrap().persist.get(), 1);
    // Another client is scheduled (rr moves on) and then sticks to its own real server.
    let other = connect(&mut s, &mut io, "100.64.9.9", 1000, 80, 2);
    assert_ne!(other, first);
    assert_eq!(connect(&mut s, &mut io, "100.64.9.9", 1001, 80, 2), other);
    assert_eq!(s.template_count(), 2);
    // Without persistence, rr spreads the same client's connections.
    let (mut s, mut io, _) = setup(cfg(vec![service(80, rr3(80), None)]));
    let a = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    assert_ne!(connect(&mut s, &mut io, CIP, 1001, 80, 0), a);
    assert_eq!(s.template_count(), 0);
}

#[test]
fn port_zero_service_sticks_across_ports() {
    let mut dests = rr3(0);
    dests[1].rport = 8080;
    let (mut s, mut io, c) = setup(cfg(vec![
        service(0, dests, persist(300, !0)),
        // An exact service of the same VIP takes precedence over the port-0 one.
        service(22, vec![dest(9, 3, 2222, 1, Fwd::FullNat)], None),
    ]));
    // rr picks dest 0 (rport 0): the real server gets the client's destination port.
    let (r, p) = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    assert_eq!((r, p), (a4(&rip(1)), 80));
    assert_eq!(connect(&mut s, &mut io, CIP, 1001, 443, 0), (r, 443));
    assert_eq!(connect(&mut s, &mut io, CIP, 1002, 8443, 0), (r, 8443));
    assert_eq!(
        connect(&mut s, &mut io, CIP, 1003, 22, 0),
        (a4(&rip(3)), 2222)
    );
    assert_eq!((c.persist_new.get(), c.persist_hits.get()), (1, 2));
    let t = s.persist_templates()[0];
    assert_eq!((t.vport, t.dest), (0, 0));
    let i = s
        .session_by_client(Proto::Tcp, a4(CIP), 1001, a4(VIP), 443)
        .unwrap();
    assert_eq!((i.vport, i.rport), (443, 443));
    // The next client gets dest 1, whose fixed port 8080 is used whatever the client's port.
    let (r2, p2) = connect(&mut s, &mut io, "100.64.9.9", 1000, 443, 0);
    assert_eq!((r2, p2), (a4(&rip(2)), 8080));
    assert_eq!(
        connect(&mut s, &mut io, "100.64.9.9", 1001, 80, 0),
        (r2, 8080)
    );
}

#[test]
fn per_port_persistence_keeps_one_template_per_service() {
    let (mut s, mut io, _) = setup(cfg(vec![
        service(80, rr3(80), persist(300, !0)),
        service(443, rr3(443), persist(300, !0)),
    ]));
    let a = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    let b = connect(&mut s, &mut io, CIP, 1001, 443, 0);
    assert_eq!((a.1, b.1), (80, 443));
    assert_eq!(connect(&mut s, &mut io, CIP, 1002, 80, 0), a);
    assert_eq!(connect(&mut s, &mut io, CIP, 1003, 443, 0), b);
    assert_eq!(s.template_count(), 2);
}

#[test]
fn non_owner_worker_redirects_and_owner_uses_the_template() {
    let mk = |w: u16| {
        let mut c = cfg(vec![service(80, rr3(80), persist(300, !0))]);
        c.worker = w;
        c.n_workers = 2;
        setup(c)
    };
    let (mut w0, mut io0, _) = mk(0);
    let (mut w1, mut io1, c1) = mk(1);
    let owned_by = |w: u16| {
        (1..=250u8)
            .map(|i| format!("100.64.0.{i}"))
            .find(|c| persist_owner(a4(c), TCP, a4(VIP), 80, 2) == w)
            .unwrap()
    };
    let (cip1, cip0) = (owned_by(1), owned_by(0));
    assert_eq!(persist_owner(a4(&cip1), TCP, a4(VIP), 80, 1), 0);
    // Every connection of the client arriving on worker 0 goes to worker 1 untouched, whatever
    // its source port.
    for p in 1000..1010 {
        let syn = c2v(&cip1, p, 80, SYN);
        w0.handle(&mut io0, 0, VecPacket::from_slice(&syn), 0);
        assert!(io0.sent.is_empty());
        assert_eq!(io0.redirected.pop(), Some((1, 0, syn.clone())));
        // The owner schedules them all on one real server.
        w1.handle(&mut io1, 0, VecPacket::from_slice(&syn), 0);
        let (_, d, _) = out(&io1.one().1);
        assert_eq!(d, w1.persist_templates()[0].rip);
    }
    assert_eq!((w0.session_count(), w0.template_count()), (0, 0));
    assert_eq!((w1.session_count(), w1.template_count()), (10, 1));
    assert_eq!((c1.persist_new.get(), c1.persist_hits.get()), (1, 9));
    // A packet of an existing session arriving on the non-owner is redirected too.
    let ack = c2v(&cip1, 1000, 80, ACK);
    w0.handle(&mut io0, 0, VecPacket::from_slice(&ack), 1);
    assert_eq!(io0.redirected.pop(), Some((1, 0, ack)));
    // A client owned by worker 0 stays there.
    connect(&mut w0, &mut io0, &cip0, 1000, 80, 2);
    assert!(io0.redirected.is_empty());
    assert_eq!(w0.template_count(), 1);
}

/// An edit that removes persistence (`-E` without `-p`) changes where new connections live,
/// not where the existing ones are: a packet of such a connection arriving on another worker
/// still reaches its session, as in IPVS, whose connection lookup does not depend on the
/// service. New connections stay where RSS brought them.
#[test]
fn connections_outlive_an_edit_that_removes_persistence() {
    let mk = |w: u16| {
        let mut c = cfg(vec![service(80, rr3(80), persist(300, !0))]);
        c.worker = w;
        c.n_workers = 2;
        setup(c)
    };
    let (mut w0, mut io0, c0) = mk(0);
    let (mut w1, mut io1, c1) = mk(1);
    let cip1 = (1..=250u8)
        .map(|i| format!("100.64.0.{i}"))
        .find(|c| persist_owner(a4(c), TCP, a4(VIP), 80, 2) == 1)
        .unwrap();
    // Made under persistence: it lives on worker 1.
    let syn = c2v(&cip1, 1000, 80, SYN);
    w0.handle(&mut io0, 0, VecPacket::from_slice(&syn), 0);
    assert_eq!(io0.redirected.pop(), Some((1, 0, syn.clone())));
    w1.handle_redirected(&mut io1, 0, VecPacket::from_slice(&syn), 0);
    let (_, rs, _) = out(&io1.one().1);
    // `-E` without `-p`, on both workers.
    let plain = [service(80, rr3(80), None)];
    w0.set_services(&plain).unwrap();
    w1.set_services(&plain).unwrap();
    // Its packets arriving on worker 0 still go to worker 1, which forwards them.
    let ack = c2v(&cip1, 1000, 80, ACK);
    w0.handle(&mut io0, 0, VecPacket::from_slice(&ack), 1);
    assert_eq!(io0.redirected.pop(), Some((1, 0, ack.clone())));
    w1.handle_redirected(&mut io1, 0, VecPacket::from_slice(&ack), 1);
    assert_eq!(out(&io1.one().1).1, rs);
    // So do they after a further change that keeps the service without persistence.
    w0.set_services(&[service(80, rr3(80)[..2].to_vec(), None)])
        .unwrap();
    w0.handle(&mut io0, 0, VecPacket::from_slice(&ack), 2);
    assert_eq!(io0.redirected.pop(), Some((1, 0, ack.clone())));
    w0.set_services(&plain).unwrap();
    // An ICMP error about it (a router on the client's side: fragmentation needed for rvs's
    // VIP → client packet) reaching worker 0 goes to worker 1 as well, where its session is.
    let mut quoted = Vec::new();
    etherparse::PacketBuilder::ipv4(a4(VIP).octets(), a4(&cip1).octets(), 64)
        .tcp(80, 1000, 1, 1000)
        .write(&mut quoted, &[])
        .unwrap();
    let mut icmp = Vec::new();
    etherparse::PacketBuilder::ethernet2(GW0, MAC0)
        .ipv4([198, 18, 0, 1], a4(VIP).octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut icmp, &quoted[..28])
        .unwrap();
    w0.handle(&mut io0, 0, VecPacket::from_slice(&icmp), 2);
    assert_eq!(io0.redirected.pop(), Some((1, 0, icmp.clone())));
    w1.handle_redirected(&mut io1, 0, VecPacket::from_slice(&icmp), 2);
    let (port, out) = io1.one();
    assert_eq!(port, 1, "translated toward the real server");
    let h = PacketHeaders::from_ethernet_slice(&out).unwrap();
    assert!(matches!(h.transport, Some(TransportHeader::Icmpv4(_))));
    // A new connection of the client stays on worker 0.
    connect(&mut w0, &mut io0, &cip1, 1001, 80, 3);
    assert!(io0.redirected.is_empty());
    assert_eq!(w0.session_count(), 1);
    // A stray segment no worker knows: handed over once, then dropped there as without session.
    let stray = c2v(&cip1, 4242, 80, ACK);
    w0.handle(&mut io0, 0, VecPacket::from_slice(&stray), 4);
    assert_eq!(io0.redirected.pop(), Some((1, 0, stray.clone())));
    w1.handle_redirected(&mut io1, 0, VecPacket::from_slice(&stray), 4);
    assert!(io1.sent.is_empty() && io1.redirected.is_empty());
    assert_eq!(c1.drops(DropReason::NoSession), 1);
    assert_eq!(c0.drops(DropReason::NoSession), 0);
    // Persistence back with another netmask: worker 0's connection is found on worker 0 first.
    let masked = [service(80, rr3(80), persist(300, 0xffff_ff00))];
    w0.set_services(&masked).unwrap();
    let ack0 = c2v(&cip1, 1001, 80, ACK);
    w0.handle(&mut io0, 0, VecPacket::from_slice(&ack0), 5);
    assert!(io0.redirected.is_empty());
    assert_eq!(io0.sent.len(), 1);
}

/// `-M` changes which worker owns a client network. A connection made before it, whose packet
/// arrives on a third worker, goes to the new owner, which passes it to the old one (two hops,
/// no more).
#[test]
fn connections_outlive_a_netmask_change() {
    let svc = |mask: u32| [service(80, rr3(80), persist(300, mask))];
    let mk = |w: u16| {
        let mut c = cfg(svc(!0).to_vec());
        c.worker = w;
        c.n_workers = 3;
        setup(c)
    };
    let mut w: Vec<_> = (0..3).map(mk).collect();
    let owner = |c: &str, mask: u32| {
        let net = Ipv4Addr::from(u32::from(a4(c)) & mask);
        persist_owner(net, TCP, a4(VIP), 80, 3)
    };
    let (cip, old, new) = (1..=250u8)
        .map(|i| format!("100.64.{i}.7"))
        .map(|c| (c.clone(), owner(&c, !0), owner(&c, 0xffff_ff00)))
        .find(|(_, o, n)| o != n)
        .unwrap();
    let third = (3 - old - new) as usize;
    let (old, new) = (old as usize, new as usize);
    let syn = c2v(&cip, 1000, 80, SYN);
    let (s, io, _) = &mut w[old];
    s.handle_redirected(io, 0, VecPacket::from_slice(&syn), 0);
    let (_, rs, _) = out(&io.one().1);
    for (s, _, _) in &mut w {
        s.set_services(&svc(0xffff_ff00)).unwrap();
    }
    let ack = c2v(&cip, 1000, 80, ACK);
    let (s, io, _) = &mut w[third];
    s.handle(io, 0, VecPacket::from_slice(&ack), 1);
    assert_eq!(io.redirected.pop(), Some((new as u16, 0, ack.clone())));
    // Handed on once more, tagged so that it goes no further.
    let again = rvs_core::stack::REDIRECTED_AGAIN;
    let (s, io, _) = &mut w[new];
    s.handle_redirected(io, 0, VecPacket::from_slice(&ack), 1);
    assert_eq!(io.redirected.pop(), Some((old as u16, again, ack.clone())));
    let (s, io, _) = &mut w[old];
    s.handle_redirected(io, again, VecPacket::from_slice(&ack), 1);
    assert_eq!(out(&io.one().1).1, rs);
    // One no worker has: the old owner drops it, passing it on no further.
    let stray = c2v(&cip, 4242, 80, ACK);
    let (s, io, c) = &mut w[old];
    s.handle_redirected(io, again, VecPacket::from_slice(&stray), 2);
    assert!(io.sent.is_empty() && io.redirected.is_empty());
    assert_eq!(c.drops(DropReason::NoSession), 1);
    // While the workers disagree (the old owner not on the new set yet, so that its own
    // previous rule would send the packet back): a packet that took its extra hop is not
    // handed on again, however the rules of the worker it reached point.
    let (s, io, c) = &mut w[old];
    s.set_services(&[service(80, rr3(80), None)]).unwrap();
    s.set_services(&svc(0xffff_ff00)).unwrap();
    let before = c.drops(DropReason::NoSession);
    s.handle_redirected(io, again, VecPacket::from_slice(&stray), 3);
    assert!(io.redirected.is_empty(), "{:?}", io.redirected);
    assert!(c.drops(DropReason::NoSession) + c.drops(DropReason::RedirectLoop) > before);
}

#[test]
fn new_connections_refresh_the_template_and_it_expires_after() {
    let mut c = cfg(vec![service(80, rr3(80), persist(10, !0))]);
    c.fullnat.timeouts = Timeouts {
        tcp_syn_recv: 1000,
        tcp_none: 1000,
        ..Default::default()
    };
    let (mut s, mut io, c) = setup(c);
    let first = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    assert_eq!(s.persist_templates()[0].expires_ms, 10_000);
    tick(&mut s, &mut io, 0, 8000);
    assert_eq!(s.session_count(), 0);
    assert_eq!(s.persist_templates()[0].refs, 0);
    // A new connection at 8 s uses the template and restarts its timer: 18 s.
    assert_eq!(connect(&mut s, &mut io, CIP, 1001, 80, 8000), first);
    assert_eq!(s.persist_templates()[0].expires_ms, 18_000);
    // At 12 s (past the first expiry) it still holds.
    tick(&mut s, &mut io, 8100, 12_000);
    assert_eq!(s.template_count(), 1);
    assert_eq!(connect(&mut s, &mut io, CIP, 1002, 80, 12_000), first);
    assert_eq!(s.persist_templates()[0].expires_ms, 22_000);
    // Past 22 s without connections it is freed; the next connection is scheduled anew (rr
    // moves on).
    tick(&mut s, &mut io, 12_100, 23_000);
    assert_eq!((s.session_count(), s.template_count()), (0, 0));
    assert_eq!(s.dest_stats(0).unwrap().persist.get(), 0);
    assert_ne!(connect(&mut s, &mut io, CIP, 1003, 80, 23_000), first);
    assert_eq!(c.persist_new.get(), 2);
}

#[test]
fn template_expiry_never_cuts_a_live_connection() {
    // DR: the client's SYN and ACK make the session ESTABLISHED (input-only states).
    let dr = (0..3)
        .map(|i| dest(i, i as u8 + 1, 80, 1, Fwd::Dr))
        .collect();
    let (mut s, mut io, c) = setup(cfg(vec![service(80, dr, persist(10, !0))]));
    s.handle(
        &mut io,
        0,
        VecPacket::from_slice(&c2v(CIP, 1000, 80, SYN)),
        0,
    );
    let (mac, ..) = out(&io.one().1);
    s.handle(
        &mut io,
        0,
        VecPacket::from_slice(&c2v(CIP, 1000, 80, ACK)),
        1,
    );
    assert_eq!(out(&io.one().1).0, mac);
    let st = |s: &Stack<VecPacket>| {
        s.session_by_client(Proto::Tcp, a4(CIP), 1000, a4(VIP), 80)
            .and_then(|i| i.tcp_state)
    };
    assert_eq!(st(&s), Some(TcpState::Established));
    // 60 s later (6 persistence timeouts), the connection still flows.
    tick(&mut s, &mut io, 100, 60_000);
    assert_eq!(st(&s), Some(TcpState::Established));
    s.handle(
        &mut io,
        0,
        VecPacket::from_slice(&c2v(CIP, 1000, 80, ACK)),
        60_000,
    );
    assert_eq!(out(&io.one().1).0, mac);
    // The template is kept while it has a connection: a new one still goes to the same server.
    assert_eq!(s.persist_templates()[0].refs, 1);
    s.handle(
        &mut io,
        0,
        VecPacket::from_slice(&c2v(CIP, 1001, 80, SYN)),
        60_000,
    );
    assert_eq!(out(&io.one().1).0, mac);
    assert_eq!((c.persist_new.get(), c.persist_hits.get()), (1, 1));
}

/// A template its connection still holds at expiry is re-armed for 60 s at a time, as IPVS
/// (`expire_later`), not for its whole timeout: it ends at most 60 s after its last connection.
#[test]
fn a_held_template_is_rearmed_for_60_s() {
    let dr = (0..3)
        .map(|i| dest(i, i as u8 + 1, 80, 1, Fwd::Dr))
        .collect();
    let (mut s, mut io, _) = setup(cfg(vec![service(80, dr, persist(300, !0))]));
    for (fl, t) in [(SYN, 0), (ACK, 1)] {
        s.handle(
            &mut io,
            0,
            VecPacket::from_slice(&c2v(CIP, 1000, 80, fl)),
            t,
        );
        io.one();
    }
    let tmpl = |s: &Stack<VecPacket>| s.persist_templates().first().map(|t| t.expires_ms);
    assert_eq!(tmpl(&s), Some(300_000));
    // Held at its expiry (the connection is ESTABLISHED, 900 s): 60 s more.
    tick(&mut s, &mut io, 100, 300_500);
    let e = tmpl(&s).unwrap();
    assert!((300_000..=360_500).contains(&e) && e > 300_500, "{e}");
    // The connection ends (RST: CLOSE, 10 s); the template follows within 60 s more.
    s.handle(
        &mut io,
        0,
        VecPacket::from_slice(&c2v(CIP, 1000, 80, RST)),
        300_600,
    );
    tick(&mut s, &mut io, 300_700, 300_600 + 10_000 + 60_000 + 1_000);
    assert_eq!(s.session_count(), 0);
    assert_eq!(
        tmpl(&s),
        None,
        "gone well before its 300 s timeout would be over again"
    );
}

#[test]
fn quiesced_or_removed_dest_template_is_ignored() {
    // IPVS with expire_quiescent_template = 1.
    let mut cf = cfg(vec![service(80, rr3(80), persist(300, !0))]);
    cf.fullnat.expire_quiescent_template = true;
    let (mut s, mut io, c) = setup(cf);
    let first = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    assert_eq!(first.0, a4(&rip(1)));
    // Quiesce dest 0: the template is ignored and re-bound to a newly scheduled dest.
    let mut d = rr3(80);
    d[0].weight = 0;
    s.set_services(&[service(80, d.clone(), persist(300, !0))])
        .unwrap();
    let second = connect(&mut s, &mut io, CIP, 1001, 80, 1);
    assert_ne!(second, first);
    assert_eq!(connect(&mut s, &mut io, CIP, 1002, 80, 1), second);
    assert_eq!(s.template_count(), 1);
    assert_eq!((c.persist_new.get(), c.persist_hits.get()), (2, 1));
    assert_eq!(s.dest_stats(0).unwrap().persist.get(), 0);
    // The old connection goes on to the quiesced server.
    s.handle(
        &mut io,
        0,
        VecPacket::from_slice(&c2v(CIP, 1000, 80, ACK)),
        2,
    );
    assert_eq!(out(&io.one().1).1, first.0);
    // Remove the template's dest: rescheduled again.
    let kept: Vec<_> = d
        .into_iter()
        .filter(|x| x.rip != IpAddr::V4(second.0))
        .collect();
    s.set_services(&[service(80, kept, persist(300, !0))])
        .unwrap();
    let third = connect(&mut s, &mut io, CIP, 1003, 80, 3);
    assert!(third != first && third != second);
    assert_eq!(c.persist_new.get(), 3);
}

/// IPVS's default (expire_quiescent_template = 0): a persistent client whose real server an
/// operator drains (weight 0) keeps going to it; one whose real server is down by its health
/// check (weight 0 and `down`) is scheduled afresh.
#[test]
fn a_drain_keeps_persistent_clients_a_health_failure_does_not() {
    let (mut s, mut io, c) = setup(cfg(vec![service(80, rr3(80), persist(300, !0))]));
    let first = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    let mut d = rr3(80);
    d[0].weight = 0;
    s.set_services(&[service(80, d.clone(), persist(300, !0))])
        .unwrap();
    assert_eq!(
        connect(&mut s, &mut io, CIP, 1001, 80, 1),
        first,
        "drained: kept"
    );
    assert_eq!((c.persist_new.get(), c.persist_hits.get()), (1, 1));
    // A new client never goes to the drained server.
    assert_ne!(connect(&mut s, &mut io, "100.64.9.9", 1000, 80, 1), first);
    // Down by its health check: rescheduled.
    d[0].down = true;
    s.set_services(&[service(80, d, persist(300, !0))]).unwrap();
    let second = connect(&mut s, &mut io, CIP, 1002, 80, 2);
    assert_ne!(second, first, "down: rescheduled");
    assert_eq!(connect(&mut s, &mut io, CIP, 1003, 80, 2), second);
}

#[test]
fn netmask_groups_a_client_network() {
    let (mut s, mut io, _) = setup(cfg(vec![service(80, rr3(80), persist(300, 0xffff_ff00))]));
    let a = connect(&mut s, &mut io, "100.64.0.7", 1000, 80, 0);
    assert_eq!(connect(&mut s, &mut io, "100.64.0.200", 1000, 80, 0), a);
    assert_eq!(connect(&mut s, &mut io, "100.64.0.1", 5000, 80, 0), a);
    let b = connect(&mut s, &mut io, "100.64.1.7", 1000, 80, 0);
    assert_ne!(a, b);
    let nets: Vec<_> = s.persist_templates().iter().map(|t| t.cnet).collect();
    assert!(nets.contains(&a4("100.64.0.0")) && nets.contains(&a4("100.64.1.0")));
}

#[test]
fn full_template_table_schedules_without_persistence() {
    let mut c = cfg(vec![service(80, rr3(80), persist(300, !0))]);
    c.fullnat.sessions = 2 * rvs_core::fullnat::TEMPLATES_PER_SESSIONS; // 2 templates
    let (mut s, mut io, c) = setup(c);
    assert_eq!(s.template_capacity(), 2);
    connect(&mut s, &mut io, "100.64.0.1", 1000, 80, 0);
    connect(&mut s, &mut io, "100.64.0.2", 1000, 80, 0);
    connect(&mut s, &mut io, "100.64.0.3", 1000, 80, 0);
    assert_eq!(c.persist_table_full.get(), 1);
    assert_eq!(s.session_count(), 3);
    assert_eq!(s.template_count(), 2);
}

/// As `ipvsadm -L -c` lists IPVS's templates: after the sessions, each template with the client
/// network, port 0, TCP state NONE and no local address.
#[test]
fn templates_are_listed_after_the_sessions() {
    let (mut s, mut io, _) = setup(cfg(vec![service(80, rr3(80), persist(300, 0xffff_ff00))]));
    let (rip, rport) = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    let mut all = Vec::new();
    let mut start = 0;
    loop {
        let mut out = Vec::with_capacity(100);
        let next = s.sessions_page(start, &mut out);
        all.extend(out);
        match next {
            Some(n) => start = n,
            None => break,
        }
    }
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(!all[0].template && all[0].cport == 1000);
    let t = &all[1];
    assert!(t.template);
    let cnet = Ipv4Addr::from(u32::from(a4(CIP)) & 0xffff_ff00);
    assert_eq!((t.cip, t.cport, t.vip, t.vport), (cnet, 0, a4(VIP), 80));
    assert_eq!((t.rip, t.rport), (rip, rport));
    assert_eq!(t.tcp_state, Some(TcpState::None));
}

#[test]
fn invalid_persistent_services_are_refused() {
    let (mut s, _, _) = setup(cfg(vec![]));
    assert!(matches!(
        s.set_services(&[service(0, rr3(0), None)]),
        Err(ServiceError::Port0NotPersistent(_))
    ));
    let nat = vec![dest(0, 1, 80, 1, Fwd::Nat)];
    assert!(matches!(
        s.set_services(&[service(80, nat, persist(300, !0))]),
        Err(ServiceError::PersistentNat(_))
    ));
    assert_eq!(s.service_count(), 0);
}

#[test]
fn a_reused_client_port_on_a_persistent_fullnat_service_gets_a_fresh_lport_on_the_same_real() {
    // FULLNAT: rvs chose the old LIP:lport, which the real server may still hold in TIME_WAIT;
    // a bare SYN on the ended connection is a new connection (fresh lport), and the template
    // sends it to the same real server.
    let (mut s, mut io, c) = setup(cfg(vec![service(80, rr3(80), persist(300, !0))]));
    let first = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    let lport = |s: &Stack<VecPacket>| {
        s.session_by_client(Proto::Tcp, a4(CIP), 1000, a4(VIP), 80)
            .unwrap()
            .lport
    };
    let old = lport(&s);
    for fl in [ACK, RST] {
        s.handle(
            &mut io,
            0,
            VecPacket::from_slice(&c2v(CIP, 1000, 80, fl)),
            1,
        );
    }
    io.sent.clear();
    assert_eq!(connect(&mut s, &mut io, CIP, 1000, 80, 2), first);
    assert_ne!(lport(&s), old, "a fresh local port");
    assert_eq!(c.sessions_rescheduled.get(), 1);
    assert_eq!(c.sessions_created.get(), 2);
    assert_eq!((c.persist_new.get(), c.persist_hits.get()), (1, 1));
    assert_eq!(s.session_count(), 1);
    assert_eq!(s.template_count(), 1);
}

#[test]
fn a_reused_client_port_on_a_persistent_dr_service_keeps_its_session() {
    // As IPVS: a connection held by a persistence template is not rescheduled when its client
    // port comes back after CLOSE; the SYN follows the old session to the same real server
    // (on DR the 4-tuple is the client's own).
    let dr: Vec<DestConf> = (0..3)
        .map(|i| dest(i, i as u8 + 1, 80, 1, Fwd::Dr))
        .collect();
    let (mut s, mut io, c) = setup(cfg(vec![service(80, dr, persist(300, !0))]));
    let first = connect(&mut s, &mut io, CIP, 1000, 80, 0);
    for fl in [ACK, RST] {
        s.handle(
            &mut io,
            0,
            VecPacket::from_slice(&c2v(CIP, 1000, 80, fl)),
            1,
        );
    }
    io.sent.clear();
    assert_eq!(
        s.session_by_client(Proto::Tcp, a4(CIP), 1000, a4(VIP), 80)
            .unwrap()
            .tcp_state,
        Some(TcpState::Close)
    );
    assert_eq!(connect(&mut s, &mut io, CIP, 1000, 80, 2), first);
    assert_eq!(c.sessions_rescheduled.get(), 0);
    assert_eq!(c.sessions_created.get(), 1);
    assert_eq!(s.session_count(), 1);
}

/// Connections given to a real server by its persistence template count toward its upper
/// threshold as picked ones do (IPVS binds every new connection): once they brought it to
/// `upper`, it takes no new client until it is below `lower`, even after some of them ended.
#[test]
fn template_hits_count_toward_the_upper_threshold() {
    let mut a = common::dest(0, 1, 80, 2, Fwd::FullNat);
    a.upper = 3;
    a.lower = 1;
    let b = common::dest(1, 2, 80, 1, Fwd::FullNat);
    let svc = common::service(Proto::Tcp, 80, Sched::Fo, vec![a, b], persist(300, !0));
    let (mut s, mut io, _) = setup(cfg(vec![svc]));
    let (rs1, rs2) = (a4(&rip(1)), a4(&rip(2)));
    // One client, three connections: the first picked (fo: the heaviest), two by the template.
    for p in 1000..1003 {
        assert_eq!(connect(&mut s, &mut io, CIP, p, 80, 0).0, rs1);
    }
    // One of them ends (the two others go on, established by the client's ACK; the first
    // times out in SYN_RECV): real server 1 is down to 2 sessions, between lower and upper.
    for p in 1001..1003 {
        s.handle(
            &mut io,
            0,
            VecPacket::from_slice(&c2v(CIP, p, 80, ACK)),
            100,
        );
    }
    tick(&mut s, &mut io, 100, 61_000);
    assert_eq!(s.session_count(), 2);
    // A new client goes to real server 2: real server 1 stays overloaded.
    assert_eq!(
        connect(&mut s, &mut io, "100.64.9.9", 1000, 80, 61_000).0,
        rs2
    );
}
