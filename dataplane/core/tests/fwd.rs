//! NAT, DR and TUN forwarding tests of `Stack`, with etherparse as the independent oracle: inputs
//! are built with etherparse, outputs parsed by it and every checksum recomputed by it.

use etherparse::{
    IpDscp, IpEcn, IpNumber, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader,
};
use rvs_core::counters::{CoreCounters, DropReason};
use rvs_core::packet::VecPacket;
use rvs_core::{nat_owner, DestConf, Fwd, Proto, Sched, ServiceConf, Stack, StackConfig, TcpState};
use std::sync::Arc;

mod common;
use common::{
    a4, cfg, dest, handle, ip, rip, rs_mac, setup, tcp, udp, v4, Fl, ACK, CIP, FINACK, GW0, LIP,
    MAC0, MAC1, RST, SYN, SYNACK, VIP,
};

const DIP: &str = "198.51.100.1";

fn service(proto: Proto, vport: u16, sched: Sched, dests: Vec<DestConf>) -> ServiceConf {
    common::service(proto, vport, sched, dests, None)
}

/// Client → VIP:vport TCP segment.
fn c2v(cport: u16, vport: u16, fl: Fl, payload: &[u8]) -> Vec<u8> {
    tcp(GW0, MAC0, CIP, cport, VIP, vport, fl, &[], payload)
}

/// Real server `i` (port `rport`) → CIP:cport TCP segment, sent to rvs as its gateway.
fn r2c(i: u8, rport: u16, cport: u16, fl: Fl, payload: &[u8]) -> Vec<u8> {
    tcp(
        rs_mac(i),
        MAC1,
        &rip(i),
        rport,
        CIP,
        cport,
        fl,
        &[],
        payload,
    )
}

/// Rewrite the IPv4 header of `frame` with `f` (checksum recomputed by etherparse).
fn patch_ip(frame: &mut [u8], f: impl FnOnce(&mut Ipv4Header)) {
    let (mut h, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    f(&mut h);
    h.header_checksum = h.calc_header_checksum();
    let b = h.to_bytes();
    frame[14..14 + b.len()].copy_from_slice(&b);
}

struct Out {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    ip: Ipv4Header,
    sport: u16,
    dport: u16,
    payload: Vec<u8>,
}

/// Parse an IPv4 TCP/UDP frame and check every checksum against etherparse's computation.
fn parse(frame: &[u8]) -> Out {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = h.link else {
        panic!("no eth")
    };
    let Some(NetHeaders::Ipv4(iph, _)) = h.net else {
        panic!("not ipv4")
    };
    assert_eq!(iph.header_checksum, iph.calc_header_checksum(), "ip csum");
    assert_eq!(iph.total_len as usize + 14, frame.len());
    let payload = h.payload.slice().to_vec();
    let (sport, dport) = match h.transport {
        Some(TransportHeader::Tcp(t)) => {
            let c = t.calc_checksum_ipv4(&iph, &payload).unwrap();
            assert_eq!(t.checksum, c, "tcp csum");
            (t.source_port, t.destination_port)
        }
        Some(TransportHeader::Udp(u)) => {
            let c = u.calc_checksum_ipv4(&iph, &payload).unwrap();
            assert_eq!(u.checksum, c, "udp csum");
            (u.source_port, u.destination_port)
        }
        t => panic!("unexpected transport {t:?}"),
    };
    Out {
        eth_dst: eth.destination,
        eth_src: eth.source,
        ip: iph,
        sport,
        dport,
        payload,
    }
}

fn state(s: &Stack<VecPacket>, cport: u16, vport: u16) -> Option<TcpState> {
    s.session_by_client(Proto::Tcp, a4(CIP), cport, a4(VIP), vport)
        .and_then(|i| i.tcp_state)
}

fn active_inactive(s: &Stack<VecPacket>, id: u32) -> (u64, u64) {
    let st = s.dest_stats(id).unwrap();
    (st.active.get(), st.inactive.get())
}

// ------------------------------------------------------------------------------------ NAT

#[test]
fn nat_both_directions_with_port_mapping() {
    let svc = service(
        Proto::Tcp,
        80,
        Sched::Rr,
        vec![dest(0, 1, 8080, 1, Fwd::Nat)],
    );
    let (mut s, mut io, c) = setup(cfg(vec![svc]), &[1]);
    // SYN: destination VIP:80 → RIP:8080, source untouched, TTL 63.
    handle(&mut s, &mut io, 0, &c2v(40000, 80, SYN, &[]), 0);
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let o = parse(&f);
    assert_eq!((o.eth_dst, o.eth_src), (rs_mac(1), MAC1));
    assert_eq!((o.ip.source, o.ip.destination), (v4(CIP), v4(&rip(1))));
    assert_eq!((o.sport, o.dport), (40000, 8080));
    assert_eq!(o.ip.time_to_live, 63);
    let info = s
        .session_by_client(Proto::Tcp, a4(CIP), 40000, a4(VIP), 80)
        .unwrap();
    assert_eq!(info.fwd, Fwd::Nat);
    assert_eq!((info.lip, info.lport), (a4(CIP), 40000));
    assert_eq!(state(&s, 40000, 80), Some(TcpState::SynRecv));
    assert_eq!(
        active_inactive(&s, 0),
        (1, 0),
        "the handshake counts as active"
    );
    // SYN-ACK from RIP:8080 to CIP:40000 (transit): source restored to VIP:80.
    handle(&mut s, &mut io, 1, &r2c(1, 8080, 40000, SYNACK, &[]), 1);
    let (port, f) = io.one();
    assert_eq!(port, 0);
    let o = parse(&f);
    assert_eq!((o.eth_dst, o.eth_src), (GW0, MAC0));
    assert_eq!((o.ip.source, o.ip.destination), (v4(VIP), v4(CIP)));
    assert_eq!((o.sport, o.dport), (80, 40000));
    assert_eq!(o.ip.time_to_live, 63);
    // ACK with data, reply with data.
    handle(
        &mut s,
        &mut io,
        0,
        &c2v(40000, 80, ACK, b"GET / HTTP/1.0\r\n\r\n"),
        2,
    );
    let o = parse(&io.one().1);
    assert_eq!(o.payload, b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(state(&s, 40000, 80), Some(TcpState::Established));
    assert_eq!(active_inactive(&s, 0), (1, 0));
    handle(
        &mut s,
        &mut io,
        1,
        &r2c(1, 8080, 40000, ACK, b"HTTP/1.0 200 OK"),
        3,
    );
    let o = parse(&io.one().1);
    assert_eq!(o.payload, b"HTTP/1.0 200 OK");
    assert_eq!((o.ip.source, o.sport), (v4(VIP), 80));
    // Close: server FIN then client FIN (both directions tracked).
    handle(&mut s, &mut io, 1, &r2c(1, 8080, 40000, FINACK, &[]), 4);
    io.one();
    assert_eq!(state(&s, 40000, 80), Some(TcpState::FinWait));
    handle(&mut s, &mut io, 0, &c2v(40000, 80, FINACK, &[]), 5);
    io.one();
    assert_eq!(state(&s, 40000, 80), Some(TcpState::TimeWait));
    assert_eq!(active_inactive(&s, 0), (0, 1));
    assert_eq!((c.nat_in.get(), c.nat_out.get()), (3, 3));
    assert_eq!(c.forwarded.get(), 0);
    assert_eq!(c.snapshot().total_drops(), 0);
    // Expiry (TIME_WAIT 120 s) frees the session and the inactive count; no lport involved.
    for t in (0..=130).map(|k| 5 + k * 1000) {
        s.poll_timers(&mut io, t);
    }
    assert_eq!(s.session_count(), 0);
    assert_eq!(active_inactive(&s, 0), (0, 0));
}

#[test]
fn nat_udp_and_icmp_translation() {
    let svc = service(
        Proto::Udp,
        53,
        Sched::Rr,
        vec![dest(0, 2, 5353, 1, Fwd::Nat)],
    );
    let (mut s, mut io, c) = setup(cfg(vec![svc]), &[2]);
    handle(
        &mut s,
        &mut io,
        0,
        &udp(GW0, MAC0, CIP, 7000, VIP, 53, b"question"),
        0,
    );
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let o = parse(&f);
    assert_eq!((o.ip.source, o.ip.destination), (v4(CIP), v4(&rip(2))));
    assert_eq!((o.sport, o.dport), (7000, 5353));
    let sent_ip = f[14..].to_vec();
    handle(
        &mut s,
        &mut io,
        1,
        &udp(rs_mac(2), MAC1, &rip(2), 5353, CIP, 7000, b"question"),
        1,
    );
    let o = parse(&io.one().1);
    assert_eq!((o.ip.source, o.ip.destination), (v4(VIP), v4(CIP)));
    assert_eq!((o.sport, o.dport), (53, 7000));
    // The real server answers with port unreachable quoting CIP:7000 → RIP:5353 (transit):
    // the client gets it from the VIP, quoting CIP:7000 → VIP:53.
    let mut e = Vec::new();
    PacketBuilder::ethernet2(rs_mac(2), MAC1)
        .ipv4(v4(&rip(2)), v4(CIP), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut e, &sent_ip)
        .unwrap();
    handle(&mut s, &mut io, 1, &e, 2);
    let (port, f) = io.one();
    assert_eq!(port, 0);
    let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
    let Some(NetHeaders::Ipv4(oh, _)) = h.net else {
        panic!()
    };
    assert_eq!(oh.header_checksum, oh.calc_header_checksum());
    assert_eq!((oh.source, oh.destination), (v4(VIP), v4(CIP)));
    let Some(TransportHeader::Icmpv4(ic)) = h.transport else {
        panic!()
    };
    let quoted = h.payload.slice();
    let expect = etherparse::Icmpv4Header::with_checksum(ic.icmp_type.clone(), quoted);
    assert_eq!(ic.checksum, expect.checksum, "icmp csum");
    let inner = PacketHeaders::from_ip_slice(quoted).unwrap();
    let Some(NetHeaders::Ipv4(ih, _)) = inner.net else {
        panic!()
    };
    assert_eq!(ih.header_checksum, ih.calc_header_checksum());
    assert_eq!((ih.source, ih.destination), (v4(CIP), v4(VIP)));
    let Some(TransportHeader::Udp(u)) = inner.transport else {
        panic!()
    };
    assert_eq!((u.source_port, u.destination_port), (7000, 53));
    assert_eq!(
        u.checksum,
        u.calc_checksum_ipv4(&ih, inner.payload.slice()).unwrap()
    );
    assert_eq!(c.icmp_translated.get(), 1);
}

#[test]
fn nat_reply_owned_by_another_worker_is_redirected() {
    let svc = || service(Proto::Tcp, 80, Sched::Rr, vec![dest(0, 1, 80, 1, Fwd::Nat)]);
    let mk = |w: u16| {
        let mut c = cfg(vec![svc()]);
        c.worker = w;
        c.n_workers = 2;
        setup(c, &[1])
    };
    let (mut w0, mut io0, c0) = mk(0);
    let (mut w1, mut io1, c1) = mk(1);
    let cport = (1024..2000u16)
        .find(|&p| nat_owner(a4(CIP), p, 2) == 1)
        .unwrap();
    assert!((1024..2000u16).any(|p| nat_owner(a4(CIP), p, 2) == 0));
    assert_eq!(nat_owner(a4(CIP), cport, 1), 0);
    // The SYN lands on worker 0: redirected unchanged before any session is created.
    let syn = c2v(cport, 80, SYN, &[]);
    handle(&mut w0, &mut io0, 0, &syn, 0);
    assert!(io0.sent.is_empty());
    assert_eq!(io0.redirected, vec![(1, 0, syn.clone())]);
    assert_eq!(w0.session_count(), 0);
    // Worker 1 creates the session.
    handle(&mut w1, &mut io1, 0, &syn, 0);
    let o = parse(&io1.one().1);
    assert_eq!((o.ip.source, o.ip.destination), (v4(CIP), v4(&rip(1))));
    assert_eq!(w1.session_count(), 1);
    // The reply lands on worker 0: redirected to worker 1 before lookup, translated there.
    let reply = r2c(1, 80, cport, SYNACK, &[]);
    handle(&mut w0, &mut io0, 1, &reply, 1);
    assert!(io0.sent.is_empty());
    assert_eq!(io0.redirected[1], (1, 1, reply.clone()));
    assert_eq!(c0.forwarded.get(), 0);
    handle(&mut w1, &mut io1, 1, &reply, 1);
    let o = parse(&io1.one().1);
    assert_eq!((o.ip.source, o.sport), (v4(VIP), 80));
    assert_eq!((o.ip.destination, o.dport), (v4(CIP), cport));
    assert_eq!(c1.nat_out.get(), 1);
    assert!(io1.redirected.is_empty());
    // A client owned by worker 0 stays on worker 0.
    let p0 = (1024..2000u16)
        .find(|&p| nat_owner(a4(CIP), p, 2) == 0)
        .unwrap();
    handle(&mut w0, &mut io0, 0, &c2v(p0, 80, SYN, &[]), 2);
    assert_eq!(io0.one().0, 1);
    assert_eq!(io0.redirected.len(), 2);
}

#[test]
fn nat_reply_without_session_is_routed_as_before() {
    let svc = service(
        Proto::Tcp,
        80,
        Sched::Rr,
        vec![dest(0, 1, 8080, 1, Fwd::Nat)],
    );
    let (mut s, mut io, c) = setup(cfg(vec![svc.clone()]), &[1]);
    // No session: a plain transit packet, forwarded with only the TTL changed.
    let f = r2c(1, 8080, 41000, ACK, b"x");
    handle(&mut s, &mut io, 1, &f, 0);
    let (port, out) = io.one();
    assert_eq!(port, 0);
    let o = parse(&out);
    assert_eq!((o.ip.source, o.ip.destination), (v4(&rip(1)), v4(CIP)));
    assert_eq!((o.sport, o.dport), (8080, 41000));
    assert_eq!(o.ip.time_to_live, 63);
    assert_eq!(c.forwarded.get(), 1);
    assert_eq!(c.nat_out.get(), 0);
    // An ICMP error about routed traffic that is no NAT session (a real server's own
    // connection: frag needed, quoting RIP:5000 → CIP:443) is forwarded too, untranslated.
    let mut quoted = Vec::new();
    PacketBuilder::ipv4(v4(&rip(1)), v4(CIP), 63)
        .tcp(5000, 443, 1, 1000)
        .write(&mut quoted, b"")
        .unwrap();
    let mut e = Vec::new();
    PacketBuilder::ethernet2(GW0, MAC0)
        .ipv4([192, 0, 2, 254], v4(&rip(1)), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut e, &quoted)
        .unwrap();
    handle(&mut s, &mut io, 0, &e, 0);
    let (port, out) = io.one();
    assert_eq!(port, 1, "toward the real server");
    let h = PacketHeaders::from_ethernet_slice(&out).unwrap();
    let Some(NetHeaders::Ipv4(oh, _)) = h.net else {
        panic!()
    };
    assert_eq!((oh.source, oh.destination), ([192, 0, 2, 254], v4(&rip(1))));
    assert_eq!(oh.time_to_live, 63);
    assert_eq!(c.forwarded.get(), 2);
    assert_eq!(c.icmp_translated.get(), 0);
    // With forwarding off it is dropped as before.
    let mut off = cfg(vec![svc]);
    off.ip_forward = false;
    let (mut s, mut io, c) = setup(off, &[1]);
    handle(&mut s, &mut io, 1, &f, 0);
    assert!(io.sent.is_empty());
    assert_eq!(c.drops(DropReason::ForwardingDisabled), 1);
    // ... while a NAT session's replies still pass (they are session traffic).
    handle(&mut s, &mut io, 0, &c2v(41001, 80, SYN, &[]), 0);
    io.one();
    handle(&mut s, &mut io, 1, &r2c(1, 8080, 41001, SYNACK, &[]), 0);
    assert_eq!(parse(&io.one().1).ip.source, v4(VIP));
}

// ------------------------------------------------------------------------------------- DR

#[test]
fn dr_changes_only_the_macs_and_tracks_input_only_states() {
    let svc = service(Proto::Tcp, 80, Sched::Rr, vec![dest(7, 3, 80, 1, Fwd::Dr)]);
    let (mut s, mut io, c) = setup(cfg(vec![svc]), &[3]);
    let mut walk = vec![
        (SYN, TcpState::SynRecv, (1, 0)),
        (ACK, TcpState::Established, (1, 0)),
        (ACK, TcpState::Established, (1, 0)),
        (FINACK, TcpState::FinWait, (0, 1)),
        (ACK, TcpState::FinWait, (0, 1)),
    ];
    for (k, (fl, st, counts)) in walk.drain(..).enumerate() {
        let f = c2v(42000, 80, fl, if k == 2 { b"data" } else { b"" });
        handle(&mut s, &mut io, 0, &f, k as u64);
        let (port, out) = io.one();
        assert_eq!(port, 1);
        assert_eq!(&out[..6], &rs_mac(3));
        assert_eq!(&out[6..12], &MAC1);
        assert_eq!(&out[12..], &f[12..], "IP packet untouched (TTL included)");
        assert_eq!(state(&s, 42000, 80), Some(st), "step {k}");
        assert_eq!(active_inactive(&s, 7), counts, "step {k}");
    }
    assert_eq!(c.dr_out.get(), 5);
    let info = s
        .session_by_client(Proto::Tcp, a4(CIP), 42000, a4(VIP), 80)
        .unwrap();
    assert_eq!(info.fwd, Fwd::Dr);
    // FIN_WAIT times out after 120 s (IPVS default).
    s.poll_timers(&mut io, 4 + 119_000);
    assert_eq!(s.session_count(), 1);
    for t in (0..=30).map(|k| 4 + 120_000 + k * 100) {
        s.poll_timers(&mut io, t);
    }
    assert_eq!(s.session_count(), 0);
    assert_eq!(active_inactive(&s, 7), (0, 0));
    // RST from the client in ESTABLISHED closes (CLOSE, 10 s).
    handle(&mut s, &mut io, 0, &c2v(42001, 80, SYN, &[]), 200_000);
    handle(&mut s, &mut io, 0, &c2v(42001, 80, ACK, &[]), 200_001);
    handle(&mut s, &mut io, 0, &c2v(42001, 80, RST, &[]), 200_002);
    assert_eq!(state(&s, 42001, 80), Some(TcpState::Close));
    assert_eq!(active_inactive(&s, 7), (0, 1));
    assert_eq!(c.snapshot().total_drops(), 0);
}

#[test]
fn dr_holds_until_the_real_server_resolves() {
    let svc = service(Proto::Tcp, 80, Sched::Rr, vec![dest(0, 2, 80, 1, Fwd::Dr)]);
    let (mut s, mut io, c) = setup(cfg(vec![svc]), &[]);
    let f = c2v(43000, 80, SYN, &[]);
    handle(&mut s, &mut io, 0, &f, 0);
    // An ARP request for the RIP, the SYN held.
    let (port, arp) = io.one();
    assert_eq!(port, 1);
    assert_eq!(u16::from_be_bytes([arp[12], arp[13]]), 0x0806);
    assert_eq!(&arp[38..42], &v4(&rip(2)));
    assert_eq!(&arp[28..32], &v4(DIP));
    assert_eq!(s.neigh_held(1, ip(&rip(2))), 1);
    // The ARP reply releases it with the RS's MAC, IP bytes untouched.
    let mut reply = Vec::new();
    reply.extend_from_slice(&MAC1);
    reply.extend_from_slice(&rs_mac(2));
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&rs_mac(2));
    reply.extend_from_slice(&v4(&rip(2)));
    reply.extend_from_slice(&MAC1);
    reply.extend_from_slice(&v4(DIP));
    handle(&mut s, &mut io, 1, &reply, 5);
    let (port, out) = io.one();
    assert_eq!(port, 1);
    assert_eq!((&out[..6], &out[6..12]), (&rs_mac(2)[..], &MAC1[..]));
    assert_eq!(&out[12..], &f[12..]);
    assert_eq!(c.neigh_released.get(), 1);
    assert_eq!(s.neigh_held(1, ip(&rip(2))), 0);
}

// ------------------------------------------------------------------------------------ TUN

fn tun_cfg(mtu: u16) -> StackConfig {
    let svc = service(Proto::Tcp, 80, Sched::Rr, vec![dest(0, 3, 80, 1, Fwd::Tun)]);
    let mut c = cfg(vec![svc]);
    c.ports[1].mtu = mtu;
    c
}

#[test]
fn tun_encapsulates_with_ipvs_outer_header() {
    let (mut s, mut io, c) = setup(tun_cfg(1500), &[3]);
    let mut ids = Vec::new();
    for (k, (df, dscp, ecn)) in [(true, 46u8, 1u8), (false, 10, 0)].into_iter().enumerate() {
        let cport = 44000 + k as u16;
        let mut f = c2v(cport, 80, SYN, &[]);
        patch_ip(&mut f, |h| {
            h.dont_fragment = df;
            h.dscp = IpDscp::try_new(dscp).unwrap();
            h.ecn = IpEcn::try_new(ecn).unwrap();
            h.time_to_live = 50;
        });
        handle(&mut s, &mut io, 0, &f, 0);
        let (port, out) = io.one();
        assert_eq!(port, 1);
        assert_eq!((&out[..6], &out[6..12]), (&rs_mac(3)[..], &MAC1[..]));
        let (oh, rest) = Ipv4Header::from_slice(&out[14..]).unwrap();
        assert_eq!(oh.header_checksum, oh.calc_header_checksum(), "outer csum");
        assert_eq!(oh.protocol, IpNumber(4));
        assert_eq!((oh.source, oh.destination), (v4(DIP), v4(&rip(3))));
        assert_eq!(oh.dont_fragment, df);
        assert!(!oh.more_fragments);
        assert_eq!((oh.dscp.value(), oh.ecn.value()), (dscp, ecn));
        assert_eq!(oh.time_to_live, 50);
        ids.push(oh.identification);
        assert_eq!(oh.total_len as usize, f.len() - 14 + 20);
        assert_eq!(rest, &f[14..], "inner packet unchanged");
        // The inner packet is a valid TCP packet to the VIP.
        let inner = PacketHeaders::from_ip_slice(rest).unwrap();
        let Some(NetHeaders::Ipv4(ih, _)) = inner.net else {
            panic!()
        };
        assert_eq!(ih.destination, v4(VIP));
    }
    assert_ne!(ids[0], ids[1], "fresh outer IDs");
    assert_eq!(c.tun_out.get(), 2);
    assert_eq!(active_inactive(&s, 0), (2, 0), "two SYN_RECV: active");
}

/// Check `out` is a fragmentation-needed error from the VIP to the client through the
/// gateway, `mtu` announced, every checksum right (etherparse); returns what it quotes.
fn frag_needed_to_client(out: &[u8], mtu: u16) -> Vec<u8> {
    let h = PacketHeaders::from_ethernet_slice(out).unwrap();
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = h.link else {
        panic!()
    };
    assert_eq!(eth.destination, GW0);
    let Some(NetHeaders::Ipv4(oh, _)) = h.net else {
        panic!()
    };
    assert_eq!(oh.header_checksum, oh.calc_header_checksum());
    assert_eq!((oh.source, oh.destination), (v4(VIP), v4(CIP)));
    let Some(TransportHeader::Icmpv4(ic)) = h.transport else {
        panic!()
    };
    let quoted = h.payload.slice();
    let expect = etherparse::Icmpv4Header::with_checksum(ic.icmp_type.clone(), quoted);
    assert_eq!(ic.checksum, expect.checksum, "icmp csum");
    match ic.icmp_type {
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
        ) => assert_eq!(next_hop_mtu, mtu),
        t => panic!("{t:?}"),
    }
    quoted.to_vec()
}

#[test]
fn tun_oversize_df_gets_frag_needed_from_the_vip() {
    let (mut s, mut io, c) = setup(tun_cfg(1400), &[3]);
    // Inner 1381 + 20 > 1400 with DF: frag-needed (MTU 1380) to the client, from the VIP.
    let payload = vec![0x5a; 1381 - 40];
    let f = c2v(45000, 80, ACK, &payload);
    handle(&mut s, &mut io, 0, &c2v(45000, 80, SYN, &[]), 0);
    io.one();
    handle(&mut s, &mut io, 0, &f, 1);
    let (port, out) = io.one();
    assert_eq!(port, 0);
    let quoted = frag_needed_to_client(&out, 1380);
    assert_eq!(quoted, &f[14..14 + 28], "quote: inner IP header + 8 bytes");
    assert_eq!(c.drops(DropReason::MtuExceeded), 1);
    assert_eq!(c.icmp_errors_sent.get(), 1);
    // Exactly at the limit it passes.
    let ok = c2v(45000, 80, ACK, &payload[1..]);
    handle(&mut s, &mut io, 0, &ok, 2);
    let (port, out) = io.one();
    assert_eq!((port, out.len()), (1, 14 + 1400));
    // DF clear: dropped (no fragmentation), counted, no ICMP.
    let mut nodf = f.clone();
    patch_ip(&mut nodf, |h| h.dont_fragment = false);
    handle(&mut s, &mut io, 0, &nodf, 3);
    assert!(io.sent.is_empty());
    assert_eq!(c.drops(DropReason::MtuExceeded), 2);
    assert_eq!(c.icmp_errors_sent.get(), 1);
    // The ICMP errors are rate-limited like the others.
    let mut lim = tun_cfg(1400);
    lim.icmp_ratelimit_per_s = 1;
    let (mut s, mut io, c) = setup(lim, &[3]);
    handle(&mut s, &mut io, 0, &c2v(45000, 80, SYN, &[]), 0);
    io.one();
    handle(&mut s, &mut io, 0, &f, 1);
    handle(&mut s, &mut io, 0, &f, 2);
    assert_eq!(io.sent.len(), 1);
    assert_eq!(c.drops(DropReason::MtuExceeded), 2);
}

/// A router on the real servers' side (198.51.100.254) tells the DIP that a packet it quotes
/// (`quoted`, an IPv4 packet without Ethernet header) was too big for its 1400-byte link.
fn router_frag_needed(quoted: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(rs_mac(3), MAC1)
        .ipv4(v4("198.51.100.254"), v4(DIP), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut v, quoted)
        .unwrap();
    v
}

/// The router's error about a TUN flow reaches whichever worker RSS picks for the ICMP packet;
/// it is passed to the worker RSS steers the client's flow to (which holds its session) and
/// relayed to the client from there.
#[test]
fn tun_frag_needed_goes_to_the_worker_holding_the_flow() {
    let rss = rvs_core::RssConf::new(
        rvs_core::toeplitz::MS_KEY.to_vec(),
        (0..128).map(|i| i % 2).collect(),
    );
    let mk = |w: u16| {
        let mut c = tun_cfg(1500);
        c.worker = w;
        c.n_workers = 2;
        c.fullnat.rss = Some(rss.clone());
        setup(c, &[3])
    };
    let (mut w0, mut io0, _) = mk(0);
    let (mut w1, mut io1, c1) = mk(1);
    let cport = (40000..41000u16)
        .find(|&p| rvs_core::lport::rss_queue(&rss, 6, a4(CIP), a4(VIP), p, 80) == 1)
        .unwrap();
    // RSS steers the client's flow to worker 1: its session is there.
    handle(&mut w1, &mut io1, 0, &c2v(cport, 80, SYN, &[]), 0);
    io1.one();
    handle(
        &mut w1,
        &mut io1,
        0,
        &c2v(cport, 80, ACK, &vec![0x33; 1400]),
        1,
    );
    let (_, sent) = io1.one();
    let err = router_frag_needed(&sent[14..14 + 48]);
    // The error lands on worker 0: passed on untouched, relayed by worker 1.
    handle(&mut w0, &mut io0, 1, &err, 2);
    assert!(io0.sent.is_empty());
    assert_eq!(io0.redirected, vec![(1, 1, err.clone())]);
    handle(&mut w1, &mut io1, 1, &err, 2);
    let (port, out) = io1.one();
    assert_eq!(port, 0);
    frag_needed_to_client(&out, 1380);
    assert_eq!(c1.icmp_translated.get(), 1);
}

/// A router between rvs and a TUN real server reports rvs's IPIP packet too big (its DF is the
/// client's): the client gets fragmentation-needed from the VIP with the MTU less the outer
/// header, quoting its own packet (IPVS `ip_vs_in_icmp` for IPIP); an error quoting no TUN
/// session is left to local handling.
#[test]
fn tun_frag_needed_from_the_path_reaches_the_client() {
    let (mut s, mut io, c) = setup(tun_cfg(1500), &[3]);
    handle(&mut s, &mut io, 0, &c2v(46000, 80, SYN, &[]), 0);
    io.one();
    let f = c2v(46000, 80, ACK, &vec![0x33; 1400]);
    handle(&mut s, &mut io, 0, &f, 1);
    let (port, sent) = io.one();
    assert_eq!(port, 1);
    let icmp = router_frag_needed;
    // The router quotes the outer header and the start of the inner packet (RFC 1812).
    handle(&mut s, &mut io, 1, &icmp(&sent[14..14 + 20 + 20 + 8]), 2);
    let (port, out) = io.one();
    assert_eq!(port, 0);
    let quoted = frag_needed_to_client(&out, 1380);
    assert_eq!(quoted, &f[14..14 + 28], "the client's own packet is quoted");
    assert_eq!(c.icmp_translated.get(), 1);
    // Quoting a connection rvs has no session for: not translated (left to local handling).
    let mut other = sent[14..14 + 48].to_vec();
    other[20 + 20 + 1] ^= 0x55; // the inner source port
    handle(&mut s, &mut io, 1, &icmp(&other), 3);
    assert!(
        io.sent.iter().all(|(p, _)| *p != 0),
        "nothing to the client"
    );
    assert_eq!(c.icmp_translated.get(), 1);
    // Quoting a client packet without DF (the router would have fragmented it): nothing to the
    // client, counted as an ICMP rvs does not act on, not as translated.
    io.sent.clear();
    let mut no_df = sent[14..14 + 48].to_vec();
    no_df[20 + 6] &= !0x40;
    let before = c.drops(DropReason::IcmpUnhandled);
    handle(&mut s, &mut io, 1, &icmp(&no_df), 4);
    assert!(io.sent.is_empty());
    assert_eq!(c.icmp_translated.get(), 1);
    assert_eq!(c.drops(DropReason::IcmpUnhandled), before + 1);
    // Any other error about the tunnel (the real server unreachable, the TTL out on the way):
    // relayed as it is, DF or not, so the client's connection fails at once.
    for (n, t) in [
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Host,
        ),
        etherparse::Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = Vec::new();
        PacketBuilder::ethernet2(rs_mac(3), MAC1)
            .ipv4(v4("198.51.100.254"), v4(DIP), 64)
            .icmpv4(t.clone())
            .write(&mut e, &no_df)
            .unwrap();
        handle(&mut s, &mut io, 1, &e, 5 + n as u64);
        let (port, out) = io.one();
        assert_eq!(port, 0);
        let h = PacketHeaders::from_ethernet_slice(&out).unwrap();
        let Some(NetHeaders::Ipv4(oh, _)) = h.net else {
            panic!()
        };
        assert_eq!((oh.source, oh.destination), (v4(VIP), v4(CIP)));
        let Some(TransportHeader::Icmpv4(ic)) = h.transport else {
            panic!()
        };
        assert_eq!(ic.icmp_type, t);
        let quoted = h.payload.slice();
        let expect = etherparse::Icmpv4Header::with_checksum(t, quoted);
        assert_eq!(ic.checksum, expect.checksum, "icmp csum");
        let mut want = f[14..14 + 28].to_vec();
        want[6] &= !0x40;
        assert_eq!(quoted, &want[..], "the client's own packet is quoted");
        assert_eq!(c.icmp_translated.get(), 2 + n as u64);
    }
}

/// rvs's own errors about a client's packet to a VIP (FULLNAT or NAT) come from the VIP, the
/// address the client knows (Linux's `icmp_send` for a local destination), not from the
/// client-side port's address, which may be private and filtered on the way.
#[test]
fn fullnat_and_nat_errors_to_the_client_come_from_the_vip() {
    for fwd in [Fwd::FullNat, Fwd::Nat] {
        let svc = service(Proto::Tcp, 80, Sched::Rr, vec![dest(0, 3, 80, 1, fwd)]);
        let mut c = cfg(vec![svc]);
        c.ports[1].mtu = 1400;
        let (mut s, mut io, counters) = setup(c, &[3]);
        handle(&mut s, &mut io, 0, &c2v(45000, 80, SYN, &[]), 0);
        io.one();
        let icmp_from = |out: &[u8]| {
            let h = PacketHeaders::from_ethernet_slice(out).unwrap();
            let Some(NetHeaders::Ipv4(oh, _)) = h.net else {
                panic!()
            };
            let Some(TransportHeader::Icmpv4(ic)) = h.transport else {
                panic!("not ICMP")
            };
            (oh.source, oh.destination, ic.icmp_type)
        };
        // Larger than the real servers' port's MTU, DF set: fragmentation needed.
        let big = c2v(45000, 80, ACK, &vec![0x5a; 1401 - 40]);
        handle(&mut s, &mut io, 0, &big, 1);
        let (port, out) = io.one();
        assert_eq!(port, 0);
        let (src, dst, t) = icmp_from(&out);
        assert_eq!((src, dst), (v4(VIP), v4(CIP)), "{fwd:?}");
        assert!(
            matches!(
                t,
                etherparse::Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                        next_hop_mtu: 1400
                    }
                )
            ),
            "{fwd:?} {t:?}"
        );
        // TTL 1: time exceeded, from the VIP too.
        let mut ttl1 = c2v(45000, 80, ACK, b"x");
        patch_ip(&mut ttl1, |h| h.time_to_live = 1);
        handle(&mut s, &mut io, 0, &ttl1, 2);
        let (src, _, t) = icmp_from(&io.one().1);
        assert_eq!(src, v4(VIP), "{fwd:?}");
        assert!(
            matches!(t, etherparse::Icmpv4Type::TimeExceeded(_)),
            "{fwd:?} {t:?}"
        );
        assert_eq!(counters.icmp_errors_sent.get(), 2);
    }
}

// ---------------------------------------------------------------------------------- Mixed

#[test]
fn mixed_service_uses_each_reals_method() {
    let svc = service(
        Proto::Tcp,
        80,
        Sched::Wrr,
        vec![
            dest(0, 1, 8080, 1, Fwd::FullNat),
            dest(1, 2, 8080, 1, Fwd::Nat),
            dest(2, 3, 80, 1, Fwd::Dr),
            dest(3, 4, 80, 1, Fwd::Tun),
        ],
    );
    let (mut s, mut io, c) = setup(cfg(vec![svc]), &[1, 2, 3, 4]);
    for round in 0..2u16 {
        for k in 0..4u16 {
            let cport = 46000 + round * 4 + k;
            let f = c2v(cport, 80, SYN, &[]);
            handle(&mut s, &mut io, 0, &f, 0);
            let (port, out) = io.one();
            assert_eq!(port, 1);
            let info = s
                .session_by_client(Proto::Tcp, a4(CIP), cport, a4(VIP), 80)
                .unwrap();
            assert_eq!(info.dest, k as u32);
            assert_eq!(&out[..6], &rs_mac(k as u8 + 1));
            match k {
                0 => {
                    assert_eq!(info.fwd, Fwd::FullNat);
                    let o = parse(&out);
                    assert_eq!((o.ip.source, o.ip.destination), (v4(LIP), v4(&rip(1))));
                    assert_eq!(o.dport, 8080);
                }
                1 => {
                    assert_eq!(info.fwd, Fwd::Nat);
                    let o = parse(&out);
                    assert_eq!((o.ip.source, o.sport), (v4(CIP), cport));
                    assert_eq!((o.ip.destination, o.dport), (v4(&rip(2)), 8080));
                }
                2 => {
                    assert_eq!(info.fwd, Fwd::Dr);
                    assert_eq!(&out[12..], &f[12..]);
                }
                _ => {
                    assert_eq!(info.fwd, Fwd::Tun);
                    assert_eq!(out[14 + 9], 4);
                    assert_eq!(&out[34..], &f[14..]);
                }
            }
        }
    }
    assert_eq!(
        (
            c.fullnat_in.get(),
            c.nat_in.get(),
            c.dr_out.get(),
            c.tun_out.get()
        ),
        (2, 2, 2, 2)
    );
    assert_eq!(c.snapshot().total_drops(), 0);
}

#[test]
fn lips_are_required_only_with_a_fullnat_real() {
    let mut svc = service(Proto::Tcp, 80, Sched::Rr, vec![dest(0, 1, 80, 1, Fwd::Dr)]);
    let counters = Arc::new(CoreCounters::default());
    assert!(Stack::<VecPacket>::try_new(&cfg(vec![svc.clone()]), counters.clone()).is_ok());
    svc.dests.push(dest(1, 2, 80, 1, Fwd::FullNat));
    assert!(Stack::<VecPacket>::try_new(&cfg(vec![svc]), counters).is_err());
}

/// Fragments of a NAT real server's reply (rvs does not reassemble, so cannot translate them)
/// are dropped and counted rather than forwarded from the RIP; other routed fragments pass.
#[test]
fn nat_reply_fragments_are_dropped_not_leaked() {
    let svc = service(
        Proto::Udp,
        53,
        Sched::Rr,
        vec![dest(0, 2, 5353, 1, Fwd::Nat)],
    );
    let (mut s, mut io, c) = setup(cfg(vec![svc]), &[2]);
    handle(
        &mut s,
        &mut io,
        0,
        &udp(GW0, MAC0, CIP, 7000, VIP, 53, b"question"),
        0,
    );
    io.one();
    let frag = |src: &str, first: bool| {
        let mut f = udp(rs_mac(2), MAC1, src, 5353, CIP, 7000, &[7; 100]);
        let (mut h, _) = etherparse::Ipv4Header::from_slice(&f[14..]).unwrap();
        if first {
            h.more_fragments = true;
        } else {
            h.fragment_offset = etherparse::IpFragOffset::try_new(8).unwrap();
        }
        h.header_checksum = h.calc_header_checksum();
        f[14..34].copy_from_slice(&h.to_bytes());
        f
    };
    for first in [true, false] {
        handle(&mut s, &mut io, 1, &frag(&rip(2), first), 1);
    }
    assert!(io.sent.is_empty(), "nothing leaves with the RIP as source");
    assert_eq!(c.drops(DropReason::NatFragment), 2);
    // A fragment from another host is routed as before.
    handle(&mut s, &mut io, 1, &frag("198.51.100.77", true), 1);
    assert_eq!(io.one().0, 0);
    assert_eq!(c.drops(DropReason::NatFragment), 2);
}
