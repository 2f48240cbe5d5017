//! FULLNAT behaviour tests of `Stack`, with etherparse as the independent oracle: inputs are built
//! with etherparse and outputs parsed by it, every checksum recomputed by etherparse.

use etherparse::{
    Ethernet2Header, IpNumber, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TcpHeader,
    TcpOptionElement, TcpOptionReadError, TcpOptionsIterator, TransportHeader, UdpHeader,
};
use rvs_core::counters::{CoreCounters, DropReason};
use rvs_core::packet::VecPacket;
use rvs_core::{
    DestConf, Fwd, MacAddr, Proto, RssConf, Sched, ServiceConf, Stack, StackConfig, TcpState,
};
use std::net::Ipv4Addr;
use std::sync::Arc;

mod common;
use common::{
    a4, dest_at, gateway, handle, ip, rs_mac, tcp, udp, v4, Fl, TestIo, ACK, FINACK, GW0, MAC0,
    MAC1, RST, SYN, SYNACK,
};

const CIP: &str = "203.0.113.7";
const VIP: &str = "192.0.2.100";
const LIP: &str = "10.1.0.100";

fn rip(i: u8) -> String {
    format!("10.1.0.{}", 10 + i)
}

fn dest(id: u32, i: u8, rport: u16, weight: u32) -> DestConf {
    dest_at(id, &rip(i), rport, weight, Fwd::FullNat)
}

/// Port 0 (client side): 192.0.2.1/24, default via 192.0.2.254. Port 1 (real servers):
/// 10.1.0.1/16. TCP VIP:80 wrr over RS 1..3 (weights 3,2,1, port 8080); UDP VIP:53 rr over RS
/// 4..5 (port 5353, dest ids 3, 4). LIP 10.1.0.100.
fn cfg() -> StackConfig {
    StackConfig {
        ip_forward: false,
        ..gateway(
            "10.1.0.1/16",
            vec![
                ServiceConf {
                    proto: Proto::Tcp,
                    vip: ip(VIP),
                    vport: 80,
                    vip_port: 0,
                    sched: Sched::Wrr,
                    dests: vec![
                        dest(0, 1, 8080, 3),
                        dest(1, 2, 8080, 2),
                        dest(2, 3, 8080, 1),
                    ],
                    lips: vec![ip(LIP)],
                    lip_port: 1,
                    persist: None,
                    mark: None,
                },
                ServiceConf {
                    proto: Proto::Udp,
                    vip: ip(VIP),
                    vport: 53,
                    vip_port: 0,
                    sched: Sched::Rr,
                    dests: vec![dest(3, 4, 5353, 1), dest(4, 5, 5353, 1)],
                    lips: vec![ip(LIP)],
                    lip_port: 1,
                    persist: None,
                    mark: None,
                },
            ],
        )
    }
}

fn setup(c: StackConfig) -> (Stack<VecPacket>, TestIo, Arc<CoreCounters>) {
    common::setup_with(c, rip, &[1, 2, 3, 4, 5])
}

/// Client → VIP TCP segment.
fn c2v(cport: u16, fl: Fl, opts: &[TcpOptionElement], payload: &[u8]) -> Vec<u8> {
    tcp(GW0, MAC0, CIP, cport, VIP, 80, fl, opts, payload)
}

/// Real server `i` → LIP:lport TCP segment.
fn r2l(i: u8, lport: u16, fl: Fl, opts: &[TcpOptionElement], payload: &[u8]) -> Vec<u8> {
    tcp(
        rs_mac(i),
        MAC1,
        &rip(i),
        8080,
        LIP,
        lport,
        fl,
        opts,
        payload,
    )
}

struct Out {
    eth: Ethernet2Header,
    ip: Ipv4Header,
    tcp: Option<TcpHeader>,
    udp: Option<UdpHeader>,
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
    let (mut tcp, mut udp) = (None, None);
    match h.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(&iph, &payload).unwrap(),
                "tcp csum"
            );
            tcp = Some(t);
        }
        Some(TransportHeader::Udp(u)) => {
            if u.checksum != 0 {
                assert_eq!(
                    u.checksum,
                    u.calc_checksum_ipv4(&iph, &payload).unwrap(),
                    "udp csum"
                );
            }
            udp = Some(u);
        }
        t => panic!("unexpected transport {t:?}"),
    }
    Out {
        eth,
        ip: iph,
        tcp,
        udp,
        payload,
    }
}

/// Send a SYN for `cport` and return the lport and RS index it was given.
fn open(s: &mut Stack<VecPacket>, io: &mut TestIo, cport: u16, now: u64) -> (u16, u8) {
    handle(s, io, 0, &c2v(cport, SYN, &[], &[]), now);
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let o = parse(&f);
    let i = o.ip.destination[3] - 10;
    (o.tcp.unwrap().source_port, i)
}

// ------------------------------------------------------------------------------------- Tests

#[test]
fn tcp_both_directions_rewritten_with_valid_checksums() {
    let (mut s, mut io, c) = setup(cfg());
    let opts = [
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(11, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ];
    handle(&mut s, &mut io, 0, &c2v(40000, SYN, &opts, &[]), 0);
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let o = parse(&f);
    assert_eq!(o.eth.source, MAC1);
    assert_eq!(o.eth.destination, rs_mac(1));
    assert_eq!(o.ip.source, v4(LIP));
    assert_eq!(o.ip.destination, v4(&rip(1)));
    assert_eq!(o.ip.time_to_live, 63);
    assert_eq!(o.ip.protocol, IpNumber::TCP);
    assert!(o.ip.dont_fragment);
    let t = o.tcp.unwrap();
    let lport = t.source_port;
    assert!((1025..=65535).contains(&lport));
    assert_eq!(t.destination_port, 8080);
    assert!(t.syn && !t.ack);
    assert_eq!(t.sequence_number, 1000);
    assert_eq!(t.window_size, 64000);
    let got: Vec<_> = t.options_iterator().map(|o| o.unwrap()).collect();
    assert_eq!(got, opts.to_vec());
    assert_eq!(s.session_count(), 1);
    assert_eq!(c.sessions_created.get(), 1);
    let si = s
        .session_by_client(Proto::Tcp, a4(CIP), 40000, a4(VIP), 80)
        .unwrap();
    assert_eq!(
        (si.lip, si.lport, si.rip, si.rport),
        (a4(LIP), lport, a4(&rip(1)), 8080)
    );
    assert_eq!(si.tcp_state, Some(TcpState::SynRecv));
    assert_eq!(si.expires_ms, 60_000);

    // SYN-ACK back to the client.
    handle(&mut s, &mut io, 1, &r2l(1, lport, SYNACK, &opts, &[]), 5);
    let (port, f) = io.one();
    assert_eq!(port, 0);
    let o = parse(&f);
    assert_eq!((o.eth.source, o.eth.destination), (MAC0, GW0));
    assert_eq!(o.ip.source, v4(VIP));
    assert_eq!(o.ip.destination, v4(CIP));
    assert_eq!(o.ip.time_to_live, 63);
    let t = o.tcp.unwrap();
    assert_eq!((t.source_port, t.destination_port), (80, 40000));
    assert!(t.syn && t.ack);
    assert_eq!(t.acknowledgment_number, 5000);

    // Data both ways.
    handle(
        &mut s,
        &mut io,
        0,
        &c2v(40000, ACK, &[], b"GET / HTTP/1.0\r\n\r\n"),
        6,
    );
    let (_, f) = io.one();
    let o = parse(&f);
    assert_eq!(o.payload.len(), 18);
    handle(&mut s, &mut io, 0, &c2v(40000, ACK, &[], b"more"), 7);
    let o = parse(&io.one().1);
    assert_eq!(o.payload, b"more");
    assert_eq!(
        o.tcp.unwrap().header_len(),
        28,
        "TOA repeated until the real server speaks after the handshake"
    );
    handle(
        &mut s,
        &mut io,
        1,
        &r2l(1, lport, ACK, &[], &[7u8; 1000]),
        8,
    );
    let o = parse(&io.one().1);
    assert_eq!(o.payload, vec![7u8; 1000]);
    assert_eq!(o.ip.source, v4(VIP));
    assert_eq!(c.fullnat_in.get(), 3);
    assert_eq!(c.fullnat_out.get(), 2);
    let st = s.dest_stats(0).unwrap();
    assert_eq!(
        (st.inpkts.get(), st.outpkts.get(), st.conns.get()),
        (3, 2, 1)
    );
    assert!(st.inbytes.get() > 0 && st.outbytes.get() > 1000);
    assert_eq!(c.snapshot().total_drops(), 0);
}

#[test]
fn udp_both_directions_and_zero_checksum_stays_zero() {
    let (mut s, mut io, c) = setup(cfg());
    handle(
        &mut s,
        &mut io,
        0,
        &udp(GW0, MAC0, CIP, 5000, VIP, 53, b"query"),
        0,
    );
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let o = parse(&f);
    assert_eq!(o.ip.source, v4(LIP));
    assert_eq!(o.ip.destination, v4(&rip(4)));
    let u = o.udp.unwrap();
    assert_ne!(u.checksum, 0);
    assert_eq!(u.destination_port, 5353);
    let lport = u.source_port;
    assert_eq!(o.payload, b"query");
    handle(
        &mut s,
        &mut io,
        1,
        &udp(rs_mac(4), MAC1, &rip(4), 5353, LIP, lport, b"answer"),
        1,
    );
    let (port, f) = io.one();
    assert_eq!(port, 0);
    let o = parse(&f);
    assert_eq!((o.ip.source, o.ip.destination), (v4(VIP), v4(CIP)));
    let u = o.udp.unwrap();
    assert_eq!((u.source_port, u.destination_port), (53, 5000));
    assert_eq!(o.payload, b"answer");
    // Zero checksum (none) stays zero, both ways.
    let mut f = udp(GW0, MAC0, CIP, 5001, VIP, 53, b"nocsum");
    f[14 + 20 + 6] = 0;
    f[14 + 20 + 7] = 0;
    handle(&mut s, &mut io, 0, &f, 2);
    let o = parse(&io.one().1);
    let u = o.udp.unwrap();
    assert_eq!(u.checksum, 0);
    assert_eq!(o.ip.destination, v4(&rip(5)), "rr");
    let mut f = udp(rs_mac(5), MAC1, &rip(5), 5353, LIP, u.source_port, b"x");
    f[14 + 20 + 6] = 0;
    f[14 + 20 + 7] = 0;
    handle(&mut s, &mut io, 1, &f, 3);
    assert_eq!(parse(&io.one().1).udp.unwrap().checksum, 0);
    let si = s
        .session_by_client(Proto::Udp, a4(CIP), 5000, a4(VIP), 53)
        .unwrap();
    assert_eq!(si.tcp_state, None);
    assert_eq!(si.expires_ms, 1 + 300_000);
    assert_eq!(s.dest_stats(3).unwrap().inactive.get(), 1);
    assert_eq!(c.snapshot().total_drops(), 0);
}

#[test]
fn wrr_and_rr_sequences_and_quiesced_dest() {
    let (mut s, mut io, c) = setup(cfg());
    let seq: Vec<u8> = (0..12)
        .map(|k| open(&mut s, &mut io, 1000 + k, 0).1)
        .collect();
    // IPVS wrr, weights 3,2,1: A A B A B C.
    assert_eq!(seq, vec![1, 1, 2, 1, 2, 3, 1, 1, 2, 1, 2, 3]);
    let rr: Vec<u8> = (0..4)
        .map(|k| {
            handle(
                &mut s,
                &mut io,
                0,
                &udp(GW0, MAC0, CIP, 7000 + k, VIP, 53, b"q"),
                0,
            );
            parse(&io.one().1).ip.destination[3] - 10
        })
        .collect();
    assert_eq!(rr, vec![4, 5, 4, 5]);
    // Quiesce RS 1 (weight 0): existing sessions continue, new ones avoid it. As IPVS, wrr
    // keeps its current weight (1, after C) and rescans from the head: B C, then B B C ...
    let mut c2 = cfg();
    c2.services[0].dests[0].weight = 0;
    s.set_services(&c2.services).unwrap();
    let seq: Vec<u8> = (0..6)
        .map(|k| open(&mut s, &mut io, 2000 + k, 0).1)
        .collect();
    assert_eq!(seq, vec![2, 3, 2, 2, 3, 2]);
    let lport = s
        .session_by_client(Proto::Tcp, a4(CIP), 1000, a4(VIP), 80)
        .unwrap()
        .lport;
    handle(&mut s, &mut io, 1, &r2l(1, lport, SYNACK, &[], &[]), 1);
    assert_eq!(parse(&io.one().1).ip.destination, v4(CIP));
    handle(&mut s, &mut io, 0, &c2v(1000, ACK, &[], b"x"), 1);
    assert_eq!(parse(&io.one().1).ip.destination, v4(&rip(1)));
    // Every dest quiesced: no_dest.
    for d in &mut c2.services[0].dests {
        d.weight = 0;
    }
    s.set_services(&c2.services).unwrap();
    handle(&mut s, &mut io, 0, &c2v(3000, SYN, &[], &[]), 1);
    assert!(io.take().is_empty());
    assert_eq!(c.drops(DropReason::NoDest), 1);
}

#[test]
fn non_syn_without_session_is_dropped_and_echo_to_vip_answered() {
    let (mut s, mut io, c) = setup(cfg());
    handle(&mut s, &mut io, 0, &c2v(1, ACK, &[], &[]), 0);
    handle(&mut s, &mut io, 0, &c2v(2, SYNACK, &[], &[]), 0);
    handle(&mut s, &mut io, 1, &r2l(1, 3000, ACK, &[], &[]), 0);
    assert!(io.take().is_empty());
    assert_eq!(c.drops(DropReason::NoSession), 3);
    assert_eq!(s.session_count(), 0);
    // Not a service port on the VIP: local handling.
    handle(
        &mut s,
        &mut io,
        0,
        &tcp(GW0, MAC0, CIP, 1, VIP, 81, SYN, &[], &[]),
        0,
    );
    assert_eq!(c.drops(DropReason::LocalL4), 1);
    for dst in [VIP, LIP] {
        let port = if dst == VIP { 0 } else { 1 };
        let mac = if dst == VIP { MAC0 } else { MAC1 };
        let src = if dst == VIP { CIP } else { "10.1.0.11" };
        let eth_src = if dst == VIP { GW0 } else { rs_mac(1) };
        let mut v = Vec::new();
        PacketBuilder::ethernet2(eth_src, mac)
            .ipv4(v4(src), v4(dst), 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut v, b"ping")
            .unwrap();
        handle(&mut s, &mut io, port, &v, 0);
        let (_, f) = io.one();
        let h = PacketHeaders::from_ethernet_slice(&f).unwrap();
        let Some(NetHeaders::Ipv4(iph, _)) = h.net else {
            panic!()
        };
        assert_eq!(iph.source, v4(dst));
    }
    assert_eq!(c.icmp_echo_replies.get(), 2);
}

#[test]
fn session_table_full() {
    let mut cf = cfg();
    cf.fullnat.sessions = 4;
    let (mut s, mut io, c) = setup(cf);
    let mut lports = Vec::new();
    for k in 0..4 {
        lports.push(open(&mut s, &mut io, 100 + k, 0));
    }
    handle(&mut s, &mut io, 0, &c2v(200, SYN, &[], &[]), 0);
    handle(
        &mut s,
        &mut io,
        0,
        &udp(GW0, MAC0, CIP, 200, VIP, 53, b"q"),
        0,
    );
    assert!(io.take().is_empty());
    assert_eq!(c.drops(DropReason::SessionTableFull), 2);
    // Established sessions are unaffected.
    for (k, (lport, i)) in lports.iter().enumerate() {
        handle(&mut s, &mut io, 1, &r2l(*i, *lport, SYNACK, &[], &[]), 1);
        assert_eq!(
            parse(&io.one().1).tcp.unwrap().destination_port,
            100 + k as u16
        );
        handle(&mut s, &mut io, 0, &c2v(100 + k as u16, ACK, &[], b"d"), 1);
        assert_eq!(parse(&io.one().1).tcp.unwrap().source_port, *lport);
    }
    assert_eq!(s.session_count(), 4);
}

#[test]
fn lport_owner_and_redirect() {
    let mut cf = cfg();
    cf.n_workers = 2;
    cf.worker = 0;
    let (mut s, mut io, c) = setup(cf);
    for k in 0..10 {
        let (lport, _) = open(&mut s, &mut io, 100 + k, 0);
        assert_eq!(lport % 2, 0, "worker 0 owns even lports");
    }
    // A reply to an odd lport belongs to worker 1: redirected untouched, before any lookup.
    let f = r2l(1, 3001, ACK, &[], b"data");
    handle(&mut s, &mut io, 1, &f, 1);
    assert!(io.sent.is_empty());
    assert_eq!(io.redirected.len(), 1);
    let (w, p, g) = &io.redirected[0];
    assert_eq!((*w, *p), (1, 1));
    assert_eq!(g, &f);
    assert_eq!(c.drops(DropReason::NoSession), 0);
    // Handed over by worker 1 (which thought worker 0 owned it): not handed back.
    s.handle_redirected(&mut io, 1, VecPacket::from_slice(&f), 1);
    assert_eq!(io.redirected.len(), 1);
    assert_eq!(c.drops(DropReason::RedirectLoop), 1);
    io.redirect_fail = true;
    handle(&mut s, &mut io, 1, &f, 1);
    assert_eq!(c.drops(DropReason::RedirectFull), 1);
    // An even lport without session: no_session here.
    handle(&mut s, &mut io, 1, &r2l(1, 3002, ACK, &[], &[]), 1);
    assert_eq!(c.drops(DropReason::NoSession), 1);
}

#[test]
fn lport_reuse_delay_and_exhaustion() {
    let mut cf = cfg();
    cf.fullnat.lport_min = 2000;
    cf.fullnat.lport_max = 2001;
    cf.fullnat.lport_reuse_delay_ms = 10_000;
    cf.fullnat.timeouts.udp = 1000;
    let (mut s, mut io, c) = setup(cf);
    let q = |p| udp(GW0, MAC0, CIP, p, VIP, 53, b"q");
    handle(&mut s, &mut io, 0, &q(1), 0);
    handle(&mut s, &mut io, 0, &q(2), 0);
    let ports: Vec<u16> = io
        .take()
        .iter()
        .map(|(_, f)| parse(f).udp.unwrap().source_port)
        .collect();
    assert_eq!(ports, vec![2000, 2001]);
    handle(&mut s, &mut io, 0, &q(3), 0);
    assert_eq!(c.drops(DropReason::LportExhausted), 1);
    s.poll_timers(&mut io, 1000);
    assert_eq!(s.session_count(), 0);
    assert_eq!(c.sessions_expired.get(), 2);
    // Released at 1000: not reusable before 11000.
    handle(&mut s, &mut io, 0, &q(4), 10_999);
    assert_eq!(c.drops(DropReason::LportExhausted), 2);
    assert!(io.take().is_empty());
    handle(&mut s, &mut io, 0, &q(5), 11_000);
    let p = parse(&io.one().1).udp.unwrap().source_port;
    assert!(p == 2000 || p == 2001);
}

#[test]
fn tcp_state_walk_timeouts_and_counts() {
    let (mut s, mut io, _c) = setup(cfg());
    let state = |s: &Stack<VecPacket>| {
        let si = s
            .session_by_client(Proto::Tcp, a4(CIP), 9, a4(VIP), 80)
            .unwrap();
        (si.tcp_state.unwrap(), si.expires_ms)
    };
    let counts = |s: &Stack<VecPacket>| {
        let st = s.dest_stats(0).unwrap();
        (st.active.get(), st.inactive.get())
    };
    let (lport, i) = open(&mut s, &mut io, 9, 0);
    assert_eq!(i, 1);
    assert_eq!(state(&s), (TcpState::SynRecv, 60_000));
    // The handshake counts as active (IPVS since Linux 4.8), FIN_WAIT and later as inactive.
    assert_eq!(counts(&s), (1, 0));
    type Step = (bool, Fl, TcpState, u64, (u64, u64));
    let walk: [Step; 5] = [
        (false, SYNACK, TcpState::SynRecv, 60_000, (1, 0)),
        (true, ACK, TcpState::Established, 900_000, (1, 0)),
        (true, ACK, TcpState::Established, 900_000, (1, 0)),
        (false, FINACK, TcpState::FinWait, 120_000, (0, 1)),
        (true, FINACK, TcpState::TimeWait, 120_000, (0, 1)),
    ];
    let mut now = 0;
    for (from_client, fl, st, to, cnt) in walk {
        now += 10;
        let f = if from_client {
            c2v(9, fl, &[], &[])
        } else {
            r2l(i, lport, fl, &[], &[])
        };
        handle(&mut s, &mut io, if from_client { 0 } else { 1 }, &f, now);
        assert_eq!(io.take().len(), 1);
        assert_eq!(state(&s), (st, now + to), "{st:?}");
        assert_eq!(counts(&s), cnt);
    }
    // Client closes first on another session, then RST.
    let (_, _) = open(&mut s, &mut io, 10, now);
    let st10 = |s: &Stack<VecPacket>| {
        s.session_by_client(Proto::Tcp, a4(CIP), 10, a4(VIP), 80)
            .unwrap()
            .tcp_state
            .unwrap()
    };
    handle(&mut s, &mut io, 0, &c2v(10, ACK, &[], &[]), now);
    assert_eq!(st10(&s), TcpState::Established);
    handle(&mut s, &mut io, 0, &c2v(10, FINACK, &[], &[]), now);
    assert_eq!(st10(&s), TcpState::CloseWait);
    handle(&mut s, &mut io, 0, &c2v(10, RST, &[], &[]), now);
    assert_eq!(st10(&s), TcpState::Close);
    let si = s
        .session_by_client(Proto::Tcp, a4(CIP), 10, a4(VIP), 80)
        .unwrap();
    assert_eq!(si.expires_ms, now + 10_000);
    io.take();
    // CLOSE (10 s) expires before TIME_WAIT (120 s), within one wheel tick of its expiry;
    // counts go back to zero.
    let tick = rvs_core::fullnat::TICK_MS;
    s.poll_timers(&mut io, now + 10_000 - 1);
    assert_eq!(s.session_count(), 2);
    s.poll_timers(&mut io, now + 10_000 + tick);
    assert_eq!(s.session_count(), 1);
    s.poll_timers(&mut io, now + 120_000 - 1);
    assert_eq!(s.session_count(), 1);
    s.poll_timers(&mut io, now + 120_000 + tick);
    assert_eq!(s.session_count(), 0);
    for id in 0..3 {
        let st = s.dest_stats(id).unwrap();
        assert_eq!((st.active.get(), st.inactive.get()), (0, 0));
    }
    let conns: u64 = (0..3).map(|id| s.dest_stats(id).unwrap().conns.get()).sum();
    assert_eq!(conns, 2);
}

/// One expiry pass over a slot that holds due and refreshed sessions (taken off the wheel in
/// batches, their entries and bucket heads prefetched first): the due ones are freed, the
/// refreshed ones filed again and still forwarding on their session.
/// A FULLNAT reply is found by the LIP:lport it goes to (rvs chose it; no hash of the reply's
/// tuple): only from the real server and port the session was made toward, in its protocol, and
/// only while the session lives.
#[test]
fn replies_are_found_by_lip_and_lport_only_from_their_real_server() {
    let (mut s, mut io, c) = setup(cfg());
    let (lport, i) = open(&mut s, &mut io, 7, 0);
    let other = if i == 1 { 2 } else { 1 };
    let from = |rs: u8, rport: u16| {
        tcp(
            rs_mac(rs),
            MAC1,
            &rip(rs),
            rport,
            LIP,
            lport,
            SYNACK,
            &[],
            &[],
        )
    };
    let strays = [
        from(other, 8080),
        from(i, 8081),
        udp(rs_mac(i), MAC1, &rip(i), 8080, LIP, lport, b"x"),
    ];
    for f in &strays {
        handle(&mut s, &mut io, 1, f, 1);
    }
    assert!(io.take().is_empty());
    assert_eq!(c.drops(DropReason::NoSession), 3);
    handle(&mut s, &mut io, 1, &from(i, 8080), 1);
    let (port, f) = io.one();
    assert_eq!((port, parse(&f).tcp.unwrap().destination_port), (0, 7));
    assert_eq!(c.fullnat_out.get(), 1);
    // The session ends (the client's RST; SYN_RECV times out after 60 s): its lport leads
    // nowhere any more.
    handle(&mut s, &mut io, 0, &c2v(7, RST, &[], &[]), 2);
    io.take();
    s.poll_timers(&mut io, 120_000);
    assert_eq!(s.session_count(), 0);
    handle(&mut s, &mut io, 1, &from(i, 8080), 120_001);
    assert!(io.take().is_empty());
    assert_eq!(c.drops(DropReason::NoSession), 4);
}

#[test]
fn expiry_frees_the_due_and_files_the_refreshed_again() {
    let (mut s, mut io, c) = setup(cfg());
    let dgram = |k: u16| udp(GW0, MAC0, CIP, 20_000 + k, VIP, 53, b"q");
    for k in 0..100 {
        handle(&mut s, &mut io, 0, &dgram(k), 0);
    }
    for k in (0..100).step_by(2) {
        handle(&mut s, &mut io, 0, &dgram(k), 200_000);
    }
    io.take();
    s.poll_timers(&mut io, 300_000);
    assert_eq!(s.session_count(), 50);
    assert_eq!(c.sessions_expired.get(), 50);
    let forwarded = c.fullnat_in.get();
    for k in (0..100).step_by(2) {
        handle(&mut s, &mut io, 0, &dgram(k), 300_001);
    }
    assert_eq!(
        c.fullnat_in.get() - forwarded,
        50,
        "the refreshed sessions forward"
    );
    assert_eq!((s.session_count(), c.sessions_created.get()), (50, 100));
    s.poll_timers(&mut io, 600_001);
    assert_eq!(s.session_count(), 0);
    assert_eq!(c.sessions_expired.get(), 100);
}

#[test]
fn expiry_is_bounded_per_call_and_empties_the_table() {
    let (mut s, mut io, c) = setup(cfg());
    for k in 0..600 {
        handle(
            &mut s,
            &mut io,
            0,
            &udp(GW0, MAC0, CIP, 10_000 + k, VIP, 53, b"q"),
            0,
        );
    }
    assert_eq!(s.session_count(), 600);
    io.take();
    s.poll_timers(&mut io, 299_999);
    assert_eq!(s.session_count(), 600);
    let mut calls = 0;
    while s.session_count() > 0 {
        let before = s.session_count();
        s.poll_timers(&mut io, 300_000);
        assert!(before - s.session_count() <= 256);
        calls += 1;
        assert!(calls < 10);
    }
    assert!(calls >= 3);
    assert_eq!(c.sessions_expired.get(), 600);
    assert!(io.sent.is_empty());
    // A refreshed session lives on.
    handle(
        &mut s,
        &mut io,
        0,
        &udp(GW0, MAC0, CIP, 1, VIP, 53, b"q"),
        400_000,
    );
    handle(
        &mut s,
        &mut io,
        0,
        &udp(GW0, MAC0, CIP, 1, VIP, 53, b"q"),
        650_000,
    );
    s.poll_timers(&mut io, 700_001);
    s.poll_timers(&mut io, 700_001);
    assert_eq!(s.session_count(), 1);
    s.poll_timers(&mut io, 950_000);
    assert_eq!(s.session_count(), 0);
}

fn toa_of(t: &TcpHeader) -> Option<[u8; 8]> {
    let o = t.options.as_slice();
    (o.len() >= 8 && o[0] == 254).then(|| o[..8].try_into().unwrap())
}

#[test]
fn toa_on_handshake_ack_until_the_real_server_speaks() {
    let (mut s, mut io, c) = setup(cfg());
    let (lport, i) = open(&mut s, &mut io, 40001, 0);
    handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &[], &[]), 1);
    io.take();
    let opts = [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(77, 88),
    ];
    handle(&mut s, &mut io, 0, &c2v(40001, ACK, &opts, b"hello"), 2);
    let o = parse(&io.one().1);
    let t = o.tcp.unwrap();
    assert_eq!(t.header_len(), 20 + 12 + 8);
    let mut it = t.options_iterator();
    assert_eq!(it.next(), Some(Err(TcpOptionReadError::UnknownId(254))));
    let toa = toa_of(&t).unwrap();
    assert_eq!(toa[1], 8);
    assert_eq!(u16::from_be_bytes([toa[2], toa[3]]), 40001);
    assert_eq!(toa[4..8], v4(CIP));
    let rest: Vec<_> = TcpOptionsIterator::from_slice(&t.options.as_slice()[8..])
        .map(|o| o.unwrap())
        .collect();
    assert_eq!(rest, opts.to_vec(), "timestamps kept");
    assert_eq!(o.payload, b"hello");
    assert_eq!(o.ip.total_len as usize, 20 + 40 + 5);
    assert_eq!(c.toa_inserted.get(), 1);
    // Again while the real server has not spoken (the ACK above may have been lost).
    handle(&mut s, &mut io, 0, &c2v(40001, ACK, &opts, b"again"), 3);
    let t = parse(&io.one().1).tcp.unwrap();
    assert!(toa_of(&t).is_some());
    assert_eq!(c.toa_inserted.get(), 2);
    // Not on replies; once the real server spoke, no more TOA.
    handle(&mut s, &mut io, 1, &r2l(i, lport, ACK, &[], b"r"), 4);
    assert!(toa_of(&parse(&io.one().1).tcp.unwrap()).is_none());
    assert!(
        s.session_by_client(Proto::Tcp, a4(CIP), 40001, a4(VIP), 80)
            .unwrap()
            .toa_done
    );
    handle(&mut s, &mut io, 0, &c2v(40001, ACK, &opts, b"third"), 5);
    assert!(toa_of(&parse(&io.one().1).tcp.unwrap()).is_none());
    assert_eq!(c.toa_inserted.get(), 2);
    // The client reuses its port after a RST (session in CLOSE): as IPVS with its default
    // conn_reuse_mode=1, the SYN is a new connection, counted and scheduled anew, with a fresh
    // lport (the real server may hold the old 4-tuple) and its own TOA.
    handle(&mut s, &mut io, 0, &c2v(40001, RST, &[], &[]), 5);
    assert_eq!(
        s.session_by_client(Proto::Tcp, a4(CIP), 40001, a4(VIP), 80)
            .unwrap()
            .tcp_state,
        Some(TcpState::Close)
    );
    let created = c.sessions_created.get();
    io.take();
    let (lport2, i2) = open(&mut s, &mut io, 40001, 6);
    assert_ne!(
        lport2, lport,
        "a fresh lport: the old one waits out its reuse delay"
    );
    assert_eq!(c.sessions_rescheduled.get(), 1);
    assert_eq!(c.sessions_created.get(), created + 1);
    let sess = s
        .session_by_client(Proto::Tcp, a4(CIP), 40001, a4(VIP), 80)
        .unwrap();
    assert_eq!(
        (sess.tcp_state, sess.lport),
        (Some(TcpState::SynRecv), lport2)
    );
    handle(&mut s, &mut io, 1, &r2l(i2, lport2, SYNACK, &[], &[]), 7);
    handle(&mut s, &mut io, 0, &c2v(40001, ACK, &[], &[]), 8);
    let t = parse(&io.take()[1].1).tcp.unwrap();
    assert!(toa_of(&t).is_some());
    assert_eq!(c.toa_inserted.get(), 3);
    // The old lport no longer reaches anything.
    handle(&mut s, &mut io, 1, &r2l(i, lport, ACK, &[], &[]), 9);
    assert!(io.take().is_empty());
}

#[test]
fn syn_on_a_live_session_follows_it_after_time_wait_opens_a_new_one() {
    let (mut s, mut io, c) = setup(cfg());
    let (lport, i) = open(&mut s, &mut io, 7, 0);
    handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &[], &[]), 1);
    handle(&mut s, &mut io, 0, &c2v(7, ACK, &[], &[]), 2);
    io.take();
    // A retransmitted or stray SYN on an established connection: same session.
    handle(&mut s, &mut io, 0, &c2v(7, SYN, &[], &[]), 3);
    assert_eq!(parse(&io.one().1).tcp.unwrap().source_port, lport);
    // TIME_WAIT after both FINs: a new SYN is a new connection.
    handle(&mut s, &mut io, 0, &c2v(7, FINACK, &[], &[]), 4);
    handle(&mut s, &mut io, 1, &r2l(i, lport, FINACK, &[], &[]), 5);
    handle(&mut s, &mut io, 0, &c2v(7, ACK, &[], &[]), 6);
    io.take();
    let st = |s: &Stack<VecPacket>| {
        s.session_by_client(Proto::Tcp, a4(CIP), 7, a4(VIP), 80)
            .unwrap()
            .tcp_state
    };
    assert_eq!(st(&s), Some(TcpState::TimeWait));
    assert_eq!(c.sessions_rescheduled.get(), 0);
    let (lport2, _) = open(&mut s, &mut io, 7, 8);
    assert_ne!(lport2, lport);
    assert_eq!(c.sessions_rescheduled.get(), 1);
    assert_eq!(st(&s), Some(TcpState::SynRecv));
}

/// SYN+FIN is no new connection (`fnat_new` refuses it): on a TIME_WAIT session it does not end
/// the session to open none, it goes to the session as any other packet of the connection.
#[test]
fn syn_fin_does_not_end_a_time_wait_session() {
    let (mut s, mut io, c) = setup(cfg());
    let (lport, i) = open(&mut s, &mut io, 9, 0);
    handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &[], &[]), 1);
    handle(&mut s, &mut io, 0, &c2v(9, ACK, &[], &[]), 2);
    handle(&mut s, &mut io, 0, &c2v(9, FINACK, &[], &[]), 3);
    handle(&mut s, &mut io, 1, &r2l(i, lport, FINACK, &[], &[]), 4);
    handle(&mut s, &mut io, 0, &c2v(9, ACK, &[], &[]), 5);
    io.take();
    let sess = |s: &Stack<VecPacket>| s.session_by_client(Proto::Tcp, a4(CIP), 9, a4(VIP), 80);
    assert_eq!(sess(&s).unwrap().tcp_state, Some(TcpState::TimeWait));
    let synfin = Fl {
        syn: true,
        fin: true,
        ..Fl::default()
    };
    handle(&mut s, &mut io, 0, &c2v(9, synfin, &[], &[]), 6);
    assert_eq!(parse(&io.one().1).tcp.unwrap().source_port, lport);
    assert_eq!(c.sessions_rescheduled.get(), 0);
    assert_eq!(c.sessions_created.get(), 1);
    assert_eq!(sess(&s).unwrap().lport, lport);
}

#[test]
fn toa_skipped_without_room() {
    let (mut s, mut io, c) = setup(cfg());
    // 40 bytes of options: data offset would exceed 60.
    let (lport, i) = open(&mut s, &mut io, 1, 0);
    handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &[], &[]), 0);
    let full = [
        TcpOptionElement::Timestamp(1, 2),
        TcpOptionElement::Timestamp(3, 4),
        TcpOptionElement::Timestamp(5, 6),
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
    ];
    io.take();
    handle(&mut s, &mut io, 0, &c2v(1, ACK, &full, b"x"), 1);
    let t = parse(&io.one().1).tcp.unwrap();
    assert_eq!(t.header_len(), 60);
    assert!(toa_of(&t).is_none());
    assert_eq!(c.toa_skipped.get(), 1);
    // Frame at the MTU: no room either.
    let (lport, i) = open(&mut s, &mut io, 2, 0);
    handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &[], &[]), 0);
    io.take();
    handle(&mut s, &mut io, 0, &c2v(2, ACK, &[], &[0u8; 1460]), 1);
    let o = parse(&io.one().1);
    assert_eq!(o.ip.total_len, 1500);
    assert!(toa_of(&o.tcp.unwrap()).is_none());
    assert_eq!(c.toa_skipped.get(), 2);
    assert_eq!(c.toa_inserted.get(), 0);
    // Only that packet went without: the next one with room carries it, and a later one
    // without room is not counted again (a session is counted once).
    handle(&mut s, &mut io, 0, &c2v(2, ACK, &[], b"x"), 2);
    assert!(toa_of(&parse(&io.one().1).tcp.unwrap()).is_some());
    assert_eq!(c.toa_inserted.get(), 1);
    handle(&mut s, &mut io, 0, &c2v(2, ACK, &[], &[0u8; 1460]), 3);
    assert!(toa_of(&parse(&io.one().1).tcp.unwrap()).is_none());
    assert_eq!(c.toa_skipped.get(), 2);
    // One that had it, then a full-size segment: not a skipped session either.
    let (lport, i) = open(&mut s, &mut io, 4, 0);
    handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &[], &[]), 0);
    io.take();
    handle(&mut s, &mut io, 0, &c2v(4, ACK, &[], &[]), 1);
    assert!(toa_of(&parse(&io.one().1).tcp.unwrap()).is_some());
    handle(&mut s, &mut io, 0, &c2v(4, ACK, &[], &[0u8; 1460]), 2);
    assert!(toa_of(&parse(&io.one().1).tcp.unwrap()).is_none());
    assert_eq!((c.toa_inserted.get(), c.toa_skipped.get()), (2, 2));
    // Disabled: nothing.
    let mut cf = cfg();
    cf.fullnat.toa = false;
    let (mut s, mut io, c) = setup(cf);
    let (lport, i) = open(&mut s, &mut io, 3, 0);
    handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &[], &[]), 0);
    io.take();
    handle(&mut s, &mut io, 0, &c2v(3, ACK, &[], &[]), 1);
    assert!(toa_of(&parse(&io.one().1).tcp.unwrap()).is_none());
    assert_eq!(c.toa_inserted.get() + c.toa_skipped.get(), 0);
}

#[test]
fn mss_clamp_on_syn_and_synack() {
    let mut cf = cfg();
    cf.fullnat.mss_clamp = Some(1400);
    let (mut s, mut io, c) = setup(cf);
    // MSS at an odd offset (after one NOP) and at an even one.
    for (k, opts) in [
        vec![TcpOptionElement::MaximumSegmentSize(1460)],
        vec![
            TcpOptionElement::Noop,
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let cport = 50 + k as u16;
        handle(&mut s, &mut io, 0, &c2v(cport, SYN, &opts, &[]), 0);
        let t = parse(&io.one().1).tcp.unwrap();
        assert!(t
            .options_iterator()
            .any(|o| o == Ok(TcpOptionElement::MaximumSegmentSize(1400))));
        let (lport, i) = (t.source_port, 1u8);
        let _ = k;
        handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &opts, &[]), 0);
        let t = parse(&io.one().1).tcp.unwrap();
        assert!(t
            .options_iterator()
            .any(|o| o == Ok(TcpOptionElement::MaximumSegmentSize(1400))));
    }
    // A smaller MSS is left alone.
    handle(
        &mut s,
        &mut io,
        0,
        &c2v(60, SYN, &[TcpOptionElement::MaximumSegmentSize(536)], &[]),
        0,
    );
    let t = parse(&io.one().1).tcp.unwrap();
    assert!(t
        .options_iterator()
        .any(|o| o == Ok(TcpOptionElement::MaximumSegmentSize(536))));
    assert_eq!(c.mss_clamped.get(), 4);
}

/// ICMP frag-needed from `src` (on `port`, from `eth_src`) to `dst` quoting `quoted` (an IPv4
/// packet without Ethernet header, truncated to its header + 8 bytes or more).
fn frag_needed(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: &str,
    dst: &str,
    mtu: u16,
    quoted: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(eth_src, eth_dst)
        .ipv4(v4(src), v4(dst), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ))
        .write(&mut v, quoted)
        .unwrap();
    v
}

/// Check a translated ICMP error: outer/inner addresses, inner IP checksum, inner L4 checksum
/// (recomputed over the quoted bytes: they are the whole original segment here), ICMP checksum.
fn check_icmp(
    f: &[u8],
    osrc: &str,
    odst: &str,
    isrc: &str,
    isport: u16,
    idst: &str,
    idport: u16,
) -> u16 {
    let h = PacketHeaders::from_ethernet_slice(f).unwrap();
    let Some(NetHeaders::Ipv4(oh, _)) = h.net else {
        panic!()
    };
    assert_eq!(oh.header_checksum, oh.calc_header_checksum());
    assert_eq!((oh.source, oh.destination), (v4(osrc), v4(odst)));
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
    assert_eq!(
        ih.header_checksum,
        ih.calc_header_checksum(),
        "inner ip csum"
    );
    assert_eq!((ih.source, ih.destination), (v4(isrc), v4(idst)));
    let pl = inner.payload.slice();
    match inner.transport {
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!((t.source_port, t.destination_port), (isport, idport));
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(&ih, pl).unwrap(),
                "inner tcp"
            );
        }
        Some(TransportHeader::Udp(u)) => {
            assert_eq!((u.source_port, u.destination_port), (isport, idport));
            assert_eq!(
                u.checksum,
                u.calc_checksum_ipv4(&ih, pl).unwrap(),
                "inner udp"
            );
        }
        t => panic!("{t:?}"),
    }
    match ic.icmp_type {
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
        ) => next_hop_mtu,
        t => panic!("{t:?}"),
    }
}

#[test]
fn icmp_frag_needed_translated_both_ways() {
    let (mut s, mut io, c) = setup(cfg());
    // TCP session, TOA still pending.
    let (lport, i) = open(&mut s, &mut io, 4242, 0);
    // The packet rvs sent to the RS, quoted by a router on the RS side.
    handle(&mut s, &mut io, 0, &c2v(4242, SYN, &[], &[]), 0);
    let sent = io.one().1;
    let q = &sent[14..];
    handle(
        &mut s,
        &mut io,
        1,
        &frag_needed(rs_mac(i), MAC1, "10.1.0.254", LIP, 1400, q),
        1,
    );
    let (port, f) = io.one();
    assert_eq!(port, 0);
    let mtu = check_icmp(&f, VIP, CIP, CIP, 4242, VIP, 80);
    assert_eq!(mtu, 1392, "TOA may still be added: 8 bytes less");
    // UDP session: the quote from the client side (what rvs sent to the client).
    handle(
        &mut s,
        &mut io,
        0,
        &udp(GW0, MAC0, CIP, 6000, VIP, 53, b"q"),
        0,
    );
    let to_rs = parse(&io.one().1);
    let ulport = to_rs.udp.unwrap().source_port;
    handle(
        &mut s,
        &mut io,
        1,
        &udp(rs_mac(4), MAC1, &rip(4), 5353, LIP, ulport, b"answer"),
        0,
    );
    let sent = io.one().1;
    handle(
        &mut s,
        &mut io,
        0,
        &frag_needed(GW0, MAC0, "198.51.100.9", VIP, 1280, &sent[14..]),
        2,
    );
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let mtu = check_icmp(&f, LIP, &rip(4), &rip(4), 5353, LIP, ulport);
    assert_eq!(mtu, 1280);
    // RS side for UDP: no TOA adjustment.
    handle(
        &mut s,
        &mut io,
        0,
        &udp(GW0, MAC0, CIP, 6000, VIP, 53, b"q"),
        0,
    );
    let sent = io.one().1;
    handle(
        &mut s,
        &mut io,
        1,
        &frag_needed(rs_mac(4), MAC1, &rip(4), LIP, 1300, &sent[14..]),
        2,
    );
    let mtu = check_icmp(&io.one().1, VIP, CIP, CIP, 6000, VIP, 53);
    assert_eq!(mtu, 1300);
    assert_eq!(c.icmp_translated.get(), 3);
    // Unknown session: local handling (unhandled ICMP).
    let _ = lport;
    let mut bogus = sent[14..].to_vec();
    bogus[20] = 0x99; // another lport
    let before = c.drops(DropReason::IcmpUnhandled);
    let mut fr = frag_needed(rs_mac(4), MAC1, &rip(4), LIP, 1300, &bogus);
    // The quoted IP checksum does not matter for the lookup.
    let _ = &mut fr;
    handle(&mut s, &mut io, 1, &fr, 2);
    assert_eq!(c.drops(DropReason::IcmpUnhandled), before + 1);
}

#[test]
fn fragments_to_a_vip_are_counted() {
    let (mut s, mut io, c) = setup(cfg());
    let mut f = udp(GW0, MAC0, CIP, 1, VIP, 53, &[1; 100]);
    let (mut h, _) = Ipv4Header::from_slice(&f[14..]).unwrap();
    h.more_fragments = true;
    h.header_checksum = h.calc_header_checksum();
    f[14..34].copy_from_slice(&h.to_bytes());
    handle(&mut s, &mut io, 0, &f, 0);
    assert_eq!(c.drops(DropReason::Ipv4FragmentVip), 1);
    assert_eq!(s.session_count(), 0);
    // To a plain interface address: the generic fragment drop.
    let mut f = udp(GW0, MAC0, CIP, 1, "192.0.2.1", 53, &[1; 100]);
    let (mut h, _) = Ipv4Header::from_slice(&f[14..]).unwrap();
    h.fragment_offset = etherparse::IpFragOffset::try_new(8).unwrap();
    h.header_checksum = h.calc_header_checksum();
    f[14..34].copy_from_slice(&h.to_bytes());
    handle(&mut s, &mut io, 0, &f, 0);
    assert_eq!(c.drops(DropReason::Ipv4Fragment), 1);
    assert!(io.sent.is_empty());
}

#[test]
fn memory_per_session() {
    let (s, _, _) = setup(cfg());
    let b = s.session_bytes();
    eprintln!(
        "session entry {} B, entry + index heads {} B, + wheel links 12 B",
        std::mem::size_of::<rvs_core::session::Session<Ipv4Addr>>(),
        b
    );
    assert!(b <= 128, "{b} bytes per session");
    assert!(std::mem::size_of::<rvs_core::session::Session<Ipv4Addr>>() <= 64);
    // Timer-wheel links add 12 bytes per session.
    assert!(b + 12 <= 128);
    // Each LIP adds its replies' direct heads: one per lport (one worker here).
    let lips = cfg()
        .services
        .iter()
        .flat_map(|s| &s.lips)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(s.session_direct_bytes(), lips * 65536 * 4);
}

#[test]
fn rss_aware_lports_prefer_own_queue() {
    let mut cf = cfg();
    cf.n_workers = 4;
    cf.worker = 2;
    let rss = RssConf::new(
        rvs_core::toeplitz::MS_KEY.to_vec(),
        (0..128).map(|i| i % 4).collect(),
    );
    cf.fullnat.rss = Some(rss.clone());
    let (mut s, mut io, _) = setup(cf);
    let mut own = 0;
    for k in 0..50 {
        let (lport, i) = open(&mut s, &mut io, 100 + k, 0);
        assert_eq!(lport % 4, 2);
        let q = rvs_core::lport::rss_queue(&rss, 6, a4(&rip(i)), a4(LIP), 8080, lport);
        if q == 2 {
            own += 1;
        }
    }
    assert!(own >= 45, "{own}");
}

#[test]
fn config_validation() {
    let mut cf = cfg();
    cf.services[0].dests[0].id = 5000;
    assert!(Stack::<VecPacket>::try_new(&cf, Arc::default()).is_err());
    let mut cf = cfg();
    cf.worker = 2;
    cf.n_workers = 2;
    assert!(Stack::<VecPacket>::try_new(&cf, Arc::default()).is_err());
    let mut cf = cfg();
    cf.services.push(cf.services[0].clone());
    assert!(Stack::<VecPacket>::try_new(&cf, Arc::default()).is_err());
    let (mut s, _, _) = setup(cfg());
    assert!(s.is_owned_on(0, ip(VIP)) && s.is_owned_on(1, ip(LIP)));
    let mut bad = cfg().services;
    bad[0].lips.clear();
    assert!(s.set_services(&bad).is_err());
    assert_eq!(s.service_count(), 2);
    let mut more = cfg().services;
    more[1].vip = ip("192.0.2.101");
    s.set_services(&more).unwrap();
    assert!(s.is_owned_on(0, ip("192.0.2.101")));

    // A live change moves the TCP service to a new VIP and a new LIP: the new VIP is balanced
    // from the new LIP, the old VIP (still owned) is no longer a service, replies to the new
    // LIP find their session.
    let mut io = TestIo::default();
    let mut moved = cfg().services;
    moved[0].vip = ip("192.0.2.102");
    moved[0].lips = vec![ip("10.1.0.102")];
    s.set_services(&moved).unwrap();
    handle(
        &mut s,
        &mut io,
        0,
        &tcp(GW0, MAC0, CIP, 41000, "192.0.2.102", 80, SYN, &[], &[]),
        0,
    );
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let o = parse(&f);
    assert_eq!(o.ip.source, v4("10.1.0.102"));
    let lport = o.tcp.unwrap().source_port;
    let i = o.ip.destination[3] - 10;
    let reply = tcp(
        rs_mac(i),
        MAC1,
        &rip(i),
        8080,
        "10.1.0.102",
        lport,
        SYNACK,
        &[],
        &[],
    );
    handle(&mut s, &mut io, 1, &reply, 0);
    let (port, f) = io.one();
    assert_eq!(port, 0);
    assert_eq!(parse(&f).ip.source, v4("192.0.2.102"));
    let before = s.counters().drops(DropReason::LocalL4);
    handle(&mut s, &mut io, 0, &c2v(41001, SYN, &[], &[]), 0);
    assert!(io.sent.is_empty());
    assert_eq!(s.counters().drops(DropReason::LocalL4), before + 1);
}

#[test]
fn a_new_service_set_with_the_same_addresses_in_new_roles_reclassifies_them() {
    // The VIP and the LIP trade places (and ports): the owned (port, address) pairs are the
    // same, so nothing is owned or released, but what each address is to FULLNAT changes.
    let (mut s, mut io, c) = setup(cfg());
    let mut swapped = cfg().services;
    for svc in &mut swapped {
        svc.vip = ip(LIP);
        svc.vip_port = 1;
        svc.lips = vec![ip(VIP)];
        svc.lip_port = 0;
    }
    s.set_services(&swapped).unwrap();
    assert!(s.is_owned_on(0, ip(VIP)) && s.is_owned_on(1, ip(LIP)));
    s.neigh_update(&mut io, 1, ip("10.1.0.200"), MacAddr(rs_mac(9)), 0);
    // A client on the real servers' side opens a session to the new VIP ...
    let syn = tcp(rs_mac(9), MAC1, "10.1.0.200", 41000, LIP, 80, SYN, &[], &[]);
    handle(&mut s, &mut io, 1, &syn, 0);
    assert_eq!(c.sessions_created.get(), 1, "the new VIP is a service");
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let o = parse(&f);
    // ... sourced from the new LIP, whose replies find the session.
    assert_eq!(o.ip.source, v4(VIP));
    let lport = o.tcp.unwrap().source_port;
    let i = o.ip.destination[3] - 10;
    let reply = tcp(rs_mac(i), MAC1, &rip(i), 8080, VIP, lport, SYNACK, &[], &[]);
    handle(&mut s, &mut io, 1, &reply, 0);
    let (port, f) = io.one();
    assert_eq!(port, 1);
    let o = parse(&f);
    assert_eq!((o.ip.source, o.ip.destination), (v4(LIP), v4("10.1.0.200")));
    // A service address taken away by hand is owned again by the next publication, even one
    // that changes no address.
    assert!(s.remove_owned(0, ip(VIP)));
    s.set_services(&swapped).unwrap();
    assert!(s.is_owned_on(0, ip(VIP)));
    // And back: a publication that changes only a weight keeps the roles.
    let mut weights = swapped.clone();
    weights[0].dests[0].weight = 7;
    s.set_services(&weights).unwrap();
    handle(
        &mut s,
        &mut io,
        1,
        &tcp(rs_mac(9), MAC1, "10.1.0.200", 41001, LIP, 80, SYN, &[], &[]),
        0,
    );
    assert_eq!(c.sessions_created.get(), 2);
    assert_eq!(parse(&io.one().1).ip.source, v4(VIP));
}

#[test]
fn a_new_service_set_releases_what_it_no_longer_uses_and_announces_what_it_brings() {
    let (mut s, mut io, c) = setup(cfg());
    let moved = |vip: &str, lip: &str| {
        let mut v = cfg().services;
        for svc in &mut v {
            svc.vip = ip(vip);
            svc.lips = vec![ip(lip)];
        }
        v
    };
    // VIP and LIP move: the old ones are no longer owned, the new ones are (and announced by
    // the worker with `announce`); the ports' own addresses stay.
    s.set_services(&moved("192.0.2.102", "10.1.0.102")).unwrap();
    assert!(!s.is_owned(ip(VIP)) && !s.is_owned(ip(LIP)));
    assert!(s.is_owned_on(0, ip("192.0.2.102")) && s.is_owned_on(1, ip("10.1.0.102")));
    assert!(s.is_owned_on(0, ip("192.0.2.1")) && s.is_owned_on(1, ip("10.1.0.1")));
    let garps = c.garp_sent.get();
    assert!(s.announce(&mut io, 0, ip("192.0.2.102")));
    assert!(!s.announce(&mut io, 0, ip(VIP)), "not owned: not announced");
    assert!(
        !s.announce(&mut io, 1, ip("192.0.2.102")),
        "not on that port"
    );
    let (port, f) = io.one();
    assert_eq!(port, 0);
    assert_eq!(
        &f[28..32],
        &v4("192.0.2.102"),
        "a gratuitous ARP for the new VIP"
    );
    assert_eq!(c.garp_sent.get(), garps + 1);
    // A client of the old VIP makes no session any more.
    handle(&mut s, &mut io, 0, &c2v(41000, SYN, &[], &[]), 0);
    assert_eq!(c.sessions_created.get(), 0);
    io.take();
    // A service whose VIP is the port's own address: removing the service keeps the address.
    s.set_services(&moved("192.0.2.1", "10.1.0.102")).unwrap();
    s.set_services(&cfg().services).unwrap();
    assert!(
        s.is_owned_on(0, ip("192.0.2.1")),
        "a port address is never released"
    );
    assert!(s.is_owned_on(0, ip(VIP)) && s.is_owned_on(1, ip(LIP)));
    assert!(!s.is_owned(ip("192.0.2.102")) && !s.is_owned(ip("10.1.0.102")));
    // More addresses than the owned set holds (17 match services of 256 addresses): refused as
    // a whole, nothing changes.
    let mut big = cfg().services;
    for k in 0..17u32 {
        let mut m = big[0].clone();
        m.vip = ip(&format!("198.18.{k}.0"));
        m.vport = 0;
        m.dests = vec![dest(10 + k, 1, 0, 1)];
        m.mark = Some(rvs_core::ServiceMatch {
            mark: k + 1,
            proto: Proto::Tcp,
            dst: format!("198.18.{k}.0/24").parse().unwrap(),
            dport: (80, 80),
            src: None,
        });
        big.push(m);
    }
    assert_eq!(
        s.set_services(&big),
        Err(rvs_core::service::ServiceError::TooManyAddrs)
    );
    assert!(!s.is_owned(ip("198.18.0.1")));
    assert!(s.is_owned_on(0, ip(VIP)) && s.is_owned_on(1, ip(LIP)));
    assert_eq!(s.service_count(), 2);
}

#[test]
fn session_listing_pages_look_at_a_bounded_number_of_slots_and_miss_none() {
    let mut c = cfg();
    c.fullnat.sessions = 1 << 17;
    let (mut s, mut io, _) = setup(c);
    for k in 0..50 {
        open(&mut s, &mut io, 30_000 + k, 0);
    }
    let slots = s.session_capacity();
    assert!(
        slots > 4 * rvs_core::fullnat::SESSIONS_PAGE_SLOTS,
        "{slots}"
    );
    let (mut start, mut seen, mut calls) = (0, Vec::new(), 0);
    loop {
        let mut out = Vec::with_capacity(1000);
        let next = s.sessions_page(start, &mut out);
        calls += 1;
        seen.extend(out.iter().map(|x| x.cport));
        match next {
            Some(n) => {
                assert!(n > start && n - start <= rvs_core::fullnat::SESSIONS_PAGE_SLOTS);
                start = n;
            }
            None => break,
        }
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (30_000..30_050).collect::<Vec<u16>>(),
        "every session once"
    );
    // The session slots, then the persistence templates' (none here: every entry a session).
    assert_eq!(
        calls,
        slots.div_ceil(rvs_core::fullnat::SESSIONS_PAGE_SLOTS)
            + s.template_capacity()
                .div_ceil(rvs_core::fullnat::SESSIONS_PAGE_SLOTS)
                .max(1)
    );
    // A full page stops at the first session it has no room for.
    let mut out = Vec::with_capacity(10);
    let next = s.sessions_page(0, &mut out).unwrap();
    assert_eq!(out.len(), 10);
    let mut rest = Vec::with_capacity(1000);
    s.sessions_page(next, &mut rest);
    assert!(!rest.iter().any(|r| out.iter().any(|o| o.cport == r.cport)));
}

#[test]
fn a_service_set_with_more_lips_than_pools_is_refused_before_any_pool_is_made() {
    let mut c = cfg();
    (c.fullnat.lport_min, c.fullnat.lport_max) = (20_000, 20_063); // small pools
    let (mut s, _, _) = setup(c);
    let mut many = cfg().services;
    many[0].lips = (0..=rvs_core::lport::MAX_LIPS as u32)
        .map(|k| std::net::IpAddr::V4(Ipv4Addr::from(u32::from(a4("10.1.128.0")) + k)))
        .collect();
    assert_eq!(
        s.set_services(&many),
        Err(rvs_core::service::ServiceError::TooManyLips)
    );
    assert!(!s.is_owned(ip("10.1.128.0")), "nothing owned");
    // No pool was spent: 1023 other new LIPs (with the one in use, the 1024-pool limit) still
    // fit, which they would not had the refused set registered pools.
    let mut one_more = cfg().services;
    one_more[0].lips = (0..rvs_core::lport::MAX_LIPS as u32 - 1)
        .map(|k| std::net::IpAddr::V4(Ipv4Addr::from(u32::from(a4("10.1.192.0")) + k)))
        .collect();
    s.set_services(&one_more).unwrap();
    assert!(s.is_owned_on(1, ip("10.1.192.0")));
}

// ------------------------------------------------------------------------------------- Property

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Outcomes so far: drops (held packets dropped on neighbour failure were counted as held) +
/// sends + redirects - generated packets + held - released + consumed ARP replies.
fn outcomes(c: &CoreCounters, io: &TestIo) -> i64 {
    c.snapshot().total_drops() as i64 - c.drops(DropReason::NeighFailed) as i64
        + io.sent.len() as i64
        + io.redirected.len() as i64
        + c.neigh_held.get() as i64
        - c.neigh_released.get() as i64
        + c.arp_replies_rx.get() as i64
        - io.allocs as i64
}

#[test]
fn random_and_fullnat_shaped_frames_never_panic_and_end_once() {
    let mut cf = cfg();
    cf.n_workers = 2;
    cf.fullnat.sessions = 64;
    cf.fullnat.lport_min = 3000;
    cf.fullnat.lport_max = 3100;
    cf.fullnat.mss_clamp = Some(1000);
    cf.fullnat.timeouts.udp = 3000;
    cf.fullnat.timeouts.tcp_syn_recv = 3000;
    cf.neigh.capacity = 32;
    let (mut s, mut io, c) = setup(cf);
    let mut seeds: Vec<Vec<u8>> = vec![
        c2v(1, SYN, &[TcpOptionElement::MaximumSegmentSize(1460)], &[]),
        c2v(1, ACK, &[TcpOptionElement::Timestamp(1, 2)], b"data"),
        c2v(2, FINACK, &[], &[]),
        udp(GW0, MAC0, CIP, 7, VIP, 53, b"q"),
        r2l(
            1,
            3000,
            SYNACK,
            &[TcpOptionElement::MaximumSegmentSize(1460)],
            &[],
        ),
        r2l(2, 3002, ACK, &[], b"x"),
        r2l(1, 3001, ACK, &[], b"x"),
        udp(rs_mac(4), MAC1, &rip(4), 5353, LIP, 3000, b"a"),
        udp(GW0, MAC0, CIP, 1, "8.8.8.8", 53, b"q"),
    ];
    // ICMP errors quoting session packets, both sides.
    let q = c2v(1, SYN, &[], &[]);
    let mut qr = q[14..].to_vec();
    qr[12..16].copy_from_slice(&v4(LIP));
    qr[16..20].copy_from_slice(&v4(&rip(1)));
    qr[20..22].copy_from_slice(&3000u16.to_be_bytes());
    seeds.push(frag_needed(rs_mac(1), MAC1, "10.1.0.254", LIP, 1400, &qr));
    let mut qc = q[14..].to_vec();
    qc[12..16].copy_from_slice(&v4(VIP));
    qc[16..20].copy_from_slice(&v4(CIP));
    qc[20..22].copy_from_slice(&80u16.to_be_bytes());
    qc[22..24].copy_from_slice(&1u16.to_be_bytes());
    seeds.push(frag_needed(GW0, MAC0, "198.51.100.9", VIP, 1280, &qc));
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let mut now = 0;
    for i in 0..50_000u32 {
        let pick = r.next();
        let mut f = if pick.is_multiple_of(10) {
            let len = (r.next() % 120) as usize;
            (0..len).map(|_| r.next() as u8).collect()
        } else {
            let mut f = seeds[(r.next() % seeds.len() as u64) as usize].clone();
            // Vary client ports and lports so sessions come and go.
            if f.len() > 38 && r.next().is_multiple_of(2) {
                let off = if f[0..6] == MAC0 { 34 } else { 36 };
                let v = (r.next() % 8) as u16 + if off == 36 { 3000 } else { 1 };
                f[off..off + 2].copy_from_slice(&v.to_be_bytes());
                fix_l4(&mut f);
            }
            for _ in 0..(r.next() % 3) {
                let at = (r.next() as usize) % f.len();
                f[at] = r.next() as u8;
            }
            if r.next().is_multiple_of(5) {
                let l = (r.next() as usize) % (f.len() + 1);
                f.truncate(l);
            }
            if r.next().is_multiple_of(2) && f.len() >= 34 && f[12..14] == [8, 0] {
                f[24] = 0;
                f[25] = 0;
                let ihl = ((f[14] & 0xf) as usize * 4).max(20).min(f.len() - 14);
                let c = rvs_core::checksum::checksum(&f[14..14 + ihl]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }
            f
        };
        if r.next().is_multiple_of(7) {
            f.resize(f.len().max(60), 0);
        }
        let port = if f.len() >= 6 && f[0..6] == MAC1 {
            1
        } else {
            0
        };
        let before = outcomes(&c, &io);
        handle(&mut s, &mut io, port, &f, now);
        let after = outcomes(&c, &io);
        assert_eq!(after - before, 1, "input {i} {f:02x?}");
        if i % 50 == 0 {
            now += 97;
            let before = outcomes(&c, &io);
            s.poll_timers(&mut io, now);
            assert_eq!(outcomes(&c, &io), before);
        }
    }
    assert!(c.sessions_created.get() > 0, "sessions created");
    assert!(c.fullnat_in.get() > 0 && c.fullnat_out.get() > 0);
    assert!(c.sessions_expired.get() > 0);
    assert!(!io.redirected.is_empty());
}

/// Recompute the L4 checksum of a well-formed IPv4 TCP/UDP frame (after a port edit).
fn fix_l4(f: &mut [u8]) {
    let fix = {
        let Ok(h) = PacketHeaders::from_ethernet_slice(f) else {
            return;
        };
        let Some(NetHeaders::Ipv4(iph, _)) = h.net else {
            return;
        };
        let pl = h.payload.slice();
        let l4 = 14 + iph.header_len();
        match h.transport {
            Some(TransportHeader::Tcp(t)) => (l4 + 16, t.calc_checksum_ipv4(&iph, pl).unwrap()),
            Some(TransportHeader::Udp(u)) => (l4 + 6, u.calc_checksum_ipv4(&iph, pl).unwrap()),
            _ => return,
        }
    };
    f[fix.0..fix.0 + 2].copy_from_slice(&fix.1.to_be_bytes());
}

/// Two workers (two `Stack`s) with a hashing scheduler send each client to the same real server,
/// whichever receives it; `mh` and `sh` spread clients over every real server.
#[test]
fn hashing_schedulers_agree_across_workers() {
    for sched in [
        Sched::mh(),
        Sched::Mh {
            fallback: true,
            port: false,
            table_size: 65537,
        },
        Sched::sh(),
        Sched::Dh,
    ] {
        let mut c = cfg();
        c.services[0].sched = sched;
        let (mut w0, mut io0, _) = setup(c.clone());
        let (mut w1, mut io1, _) = setup(c);
        let mut seen = [0usize; 4];
        for k in 0..200u16 {
            let client = format!("198.18.{}.{}", k / 200, k % 200 + 1);
            let syn = tcp(GW0, MAC0, &client, 1000 + k, VIP, 80, SYN, &[], &[]);
            handle(&mut w0, &mut io0, 0, &syn, 0);
            // Another source port on worker 1: the hash is on the address only.
            let syn1 = tcp(GW0, MAC0, &client, 30000 + k, VIP, 80, SYN, &[], &[]);
            handle(&mut w1, &mut io1, 0, &syn1, 0);
            let a = parse(&io0.one().1).ip.destination;
            let b = parse(&io1.one().1).ip.destination;
            assert_eq!(a, b, "{sched:?} client {client}");
            seen[(a[3] - 10) as usize] += 1;
        }
        if sched == Sched::Dh {
            // One VIP → one bucket → one real server.
            assert_eq!(seen.iter().filter(|&&n| n > 0).count(), 1);
        } else {
            assert!(seen[1..].iter().all(|&n| n > 0), "{sched:?} {seen:?}");
        }
    }
}

/// Unanswered SYNs weigh on their real server as connections (IPVS counts the handshake as
/// active since Linux 4.8): with nq, a burst of SYNs to idle servers spreads over them instead
/// of all going to the first server until one of its handshakes completes.
#[test]
fn pending_handshakes_count_for_the_least_connection_schedulers() {
    for sched in [Sched::Nq, Sched::Sed] {
        let mut c = cfg();
        c.services[0].sched = sched;
        for d in &mut c.services[0].dests {
            d.weight = 1;
        }
        let (mut s, mut io, _) = setup(c);
        let mut got: Vec<u8> = (0..3)
            .map(|k| open(&mut s, &mut io, 1000 + k, 0).1)
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3], "{sched:?}");
    }
}

/// An upper threshold caps this worker's sessions to a real server; it takes new ones again
/// once its count drops below the lower threshold.
#[test]
fn upper_threshold_on_the_packet_path() {
    let mut c = cfg();
    c.services[0].sched = Sched::Wlc;
    c.services[0].dests[0].upper = 2;
    c.services[0].dests[0].lower = 1;
    let (mut s, mut io, _) = setup(c);
    let got: Vec<u8> = (0..12)
        .map(|k| open(&mut s, &mut io, 1000 + k, 0).1)
        .collect();
    assert_eq!(got.iter().filter(|&&i| i == 1).count(), 2, "{got:?}");
    // Unanswered SYNs (SYN_RECV) are active connections, as in IPVS.
    assert_eq!(s.dest_stats(0).unwrap().active.get(), 2);
    assert_eq!(s.dest_stats(0).unwrap().inactive.get(), 0);
    // Every session expires (never answered), RS 1 recovers.
    for t in (0..400).map(|k| k * 1000) {
        s.poll_timers(&mut io, t);
    }
    assert_eq!(s.session_count(), 0);
    // Refresh the neighbours (their entries aged meanwhile).
    for i in 1..=3 {
        s.neigh_update(&mut io, 1, ip(&rip(i)), MacAddr(rs_mac(i)), 400_000);
    }
    io.take();
    assert_eq!(open(&mut s, &mut io, 5000, 400_000).1, 1);
}

/// `rewrite_v4` (one delta, folded once per checksum) against etherparse recomputing both
/// checksums from scratch, over random headers, TTLs (incl. 1 and 255), payloads and rewrites;
/// a UDP checksum of 0 stays 0 and a computed 0 becomes 0xffff.
#[test]
fn rewrite_v4_matches_full_recompute() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..20_000u32 {
        let tcp_pkt = i % 2 == 0;
        let ttl = match i % 7 {
            0 => 1,
            1 => 255,
            _ => (r.next() % 254 + 1) as u8,
        };
        let a = |r: &mut Rng| Ipv4Addr::from(r.next() as u32).octets();
        let (s0, d0) = (a(&mut r), a(&mut r));
        let payload: Vec<u8> = (0..(r.next() % 40) as usize)
            .map(|_| r.next() as u8)
            .collect();
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(s0, d0, ttl);
        let mut frame = Vec::new();
        let (sp, dp) = (r.next() as u16, r.next() as u16);
        if tcp_pkt {
            b.tcp(sp, dp, r.next() as u32, 1000)
                .ack(r.next() as u32)
                .write(&mut frame, &payload)
                .unwrap();
        } else {
            b.udp(sp, dp).write(&mut frame, &payload).unwrap();
        }
        let no_udp_csum = !tcp_pkt && i % 5 == 1;
        if no_udp_csum {
            frame[14 + 20 + 6] = 0;
            frame[14 + 20 + 7] = 0;
        }
        // Some with IP options (4 bytes of NOPs): the generic path.
        let ihl = if i % 11 == 3 {
            frame.splice(34..34, [1u8, 1, 1, 1]);
            frame[14] = 0x46;
            let tl = u16::from_be_bytes([frame[16], frame[17]]) + 4;
            frame[16..18].copy_from_slice(&tl.to_be_bytes());
            let (h, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
            frame[24..26].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
            24
        } else {
            20
        };
        let (ns, nd) = (
            Ipv4Addr::from(r.next() as u32),
            Ipv4Addr::from(r.next() as u32),
        );
        let (nsp, ndp) = (r.next() as u16, r.next() as u16);
        let proto = if tcp_pkt { 6 } else { 17 };
        rvs_core::fullnat::rewrite_v4(&mut frame, ihl, proto, ns, nd, nsp, ndp);

        let h = PacketHeaders::from_ethernet_slice(&frame).unwrap();
        let Some(NetHeaders::Ipv4(ip4, _)) = &h.net else {
            panic!("not IPv4")
        };
        assert_eq!(ip4.time_to_live, ttl.wrapping_sub(1));
        assert_eq!((ip4.source, ip4.destination), (ns.octets(), nd.octets()));
        assert_eq!(
            ip4.header_checksum,
            ip4.calc_header_checksum(),
            "IP csum, case {i}"
        );
        let body = h.payload.slice();
        match h.transport.unwrap() {
            TransportHeader::Tcp(t) => {
                assert_eq!((t.source_port, t.destination_port), (nsp, ndp));
                let want = t.calc_checksum_ipv4(ip4, body).unwrap();
                assert_eq!(t.checksum, want, "TCP csum, case {i}");
            }
            TransportHeader::Udp(u) => {
                assert_eq!((u.source_port, u.destination_port), (nsp, ndp));
                if no_udp_csum {
                    assert_eq!(u.checksum, 0, "UDP without checksum, case {i}");
                } else {
                    let want = u.calc_checksum_ipv4(ip4, body).unwrap();
                    assert_eq!(u.checksum, want, "UDP csum, case {i}");
                }
            }
            _ => panic!("not TCP/UDP"),
        }
    }
}

/// Replies to new clients behind the default gateway: the first resolves the gateway through the
/// route, later clients (new addresses, no next-hop cache line of their own) reuse the route's
/// gateway entry. A changed gateway MAC is used at once, by new and by existing sessions.
#[test]
fn replies_to_new_clients_go_through_the_routes_gateway_entry() {
    let (mut s, mut io, c) = setup(cfg());
    // SYN from client `k`, the real server's SYN-ACK back: where does the reply go?
    let connect = |s: &mut Stack<VecPacket>, io: &mut TestIo, k: u8, t: u64| -> Out {
        let cip = format!("198.18.0.{k}");
        handle(
            s,
            io,
            0,
            &tcp(GW0, MAC0, &cip, 1000, VIP, 80, SYN, &[], &[]),
            t,
        );
        let o = parse(&io.one().1);
        let (i, lport) = (o.ip.destination[3] - 10, o.tcp.unwrap().source_port);
        handle(s, io, 1, &r2l(i, lport, SYNACK, &[], &[]), t);
        let (port, f) = io.one();
        assert_eq!(port, 0);
        let o = parse(&f);
        assert_eq!(o.ip.destination, v4(&cip));
        o
    };
    for k in 1..=40 {
        let o = connect(&mut s, &mut io, k, k as u64);
        assert_eq!(o.eth.destination, GW0, "client {k}");
    }
    let moved = [0x0a, 0, 0, 0, 0, 0xef];
    s.neigh_update(&mut io, 0, ip("192.0.2.254"), MacAddr(moved), 100);
    io.take();
    assert_eq!(connect(&mut s, &mut io, 41, 101).eth.destination, moved);
    // An existing session's reply (its client's entry is kept in the session) follows too.
    let sess = s
        .session_by_client(Proto::Tcp, a4("198.18.0.1"), 1000, a4(VIP), 80)
        .unwrap();
    let i = u32::from(sess.rip).to_be_bytes()[3] - 10;
    handle(&mut s, &mut io, 1, &r2l(i, sess.lport, ACK, &[], b"r"), 102);
    assert_eq!(parse(&io.one().1).eth.destination, moved);
    assert_eq!(c.fullnat_out.get(), 42);
}

/// `twos` draws its own random sequence per worker. A publication continues it, whether it
/// leaves the service as it was (another service's health changed, say) or changes its real
/// servers: it never starts the sequence it started with again.
#[test]
fn twos_draws_apart_per_worker_and_per_publish() {
    let run = |worker: u16, republish: Option<bool>| -> Vec<u8> {
        let mut c = cfg();
        c.services[0].sched = Sched::Twos;
        c.worker = worker;
        c.n_workers = 2;
        let services = c.services.clone();
        let (mut s, mut io, _) = setup(c);
        (0..64)
            .map(|k| {
                if let (32, Some(changed)) = (k, republish) {
                    let mut sv = services.clone();
                    if changed {
                        sv[0].dests[0].upper = 1000; // never reached: picks are unaffected
                    }
                    s.set_services(&sv).unwrap();
                }
                open(&mut s, &mut io, 20_000 + 2 * k + worker, 0).1
            })
            .collect()
    };
    let (w0, w1) = (run(0, None), run(1, None));
    assert!(w0.iter().any(|&i| i != w0[0]), "twos spreads: {w0:?}");
    assert_ne!(w0, w1, "two workers drew alike");
    assert_eq!(
        run(0, Some(false)),
        w0,
        "an unchanged service keeps its sequence"
    );
    let changed = run(0, Some(true));
    assert_eq!(changed, w0, "a changed service goes on with its sequence");
    assert_ne!(changed[32..], w0[..32], "it drew the same again");
}

/// A publication keeps the rr position (and every scheduler state) of the services it leaves
/// unchanged; a service whose real servers changed goes on from where it was (as IPVS), one
/// whose scheduler changed starts afresh.
#[test]
fn a_publication_keeps_the_state_of_unchanged_services() {
    let mut c = cfg();
    c.services[0].sched = Sched::Rr;
    let services = c.services.clone();
    let (mut s, mut io, _) = setup(c);
    let picks = |s: &mut Stack<VecPacket>, io: &mut TestIo, from: u16| -> Vec<u8> {
        (from..from + 4).map(|k| open(s, io, k, 0).1).collect()
    };
    assert_eq!(picks(&mut s, &mut io, 100), vec![1, 2, 3, 1]);
    // The UDP service changes (a real server's weight), the TCP one does not: rr goes on.
    let mut other = services.clone();
    other[1].dests[0].weight = 5;
    s.set_services(&other).unwrap();
    assert_eq!(picks(&mut s, &mut io, 200), vec![2, 3, 1, 2]);
    // A real server of the TCP service changes (its weight): rr goes on.
    let mut changed = other.clone();
    changed[0].dests[2].weight = 2;
    s.set_services(&changed).unwrap();
    assert_eq!(picks(&mut s, &mut io, 300), vec![3, 1, 2, 3]);
    // Its scheduler changes: it starts again from its first real server.
    let mut wrr = changed.clone();
    wrr[0].sched = Sched::Wrr;
    s.set_services(&wrr).unwrap();
    assert_eq!(picks(&mut s, &mut io, 400)[0], 1, "wrr: the heaviest first");
    s.set_services(&changed).unwrap();
    assert_eq!(picks(&mut s, &mut io, 500), vec![1, 2, 3, 1]);
}

/// A real server is flagged overloaded by the sessions it gets, not by picks whose session was
/// refused: a SYN refused for want of an lport does not count toward its upper threshold.
#[test]
fn a_refused_connection_does_not_count_toward_the_upper_threshold() {
    let mut c = cfg();
    c.services[0].sched = Sched::Fo;
    c.services[0].dests[0].upper = 3;
    c.services[0].dests[0].lower = 1;
    // Two lports: two sessions, then none until one is released.
    c.fullnat.lport_min = 5000;
    c.fullnat.lport_max = 5001;
    c.fullnat.lport_reuse_delay_ms = 0;
    let (mut s, mut io, cn) = setup(c);
    // fo: the heaviest (RS 1, weight 3) while available. The first connection is established
    // (it lives on), the second stays in SYN_RECV (it times out).
    let (lport, i) = open(&mut s, &mut io, 100, 0);
    assert_eq!(i, 1);
    handle(&mut s, &mut io, 1, &r2l(i, lport, SYNACK, &[], &[]), 0);
    handle(&mut s, &mut io, 0, &c2v(100, ACK, &[], &[]), 0);
    io.take();
    assert_eq!(open(&mut s, &mut io, 101, 0).1, 1);
    io.take();
    // RS 1 is picked for a third (2 + 1 = upper), but no lport is left: refused.
    handle(&mut s, &mut io, 0, &c2v(102, SYN, &[], &[]), 0);
    assert!(io.take().is_empty());
    assert_eq!(cn.drops(DropReason::LportExhausted), 1);
    // The SYN_RECV one times out: RS 1 has 1 session, never had 3: a new client goes to it.
    for t in (0..=62).map(|k| k * 1000) {
        s.poll_timers(&mut io, t);
    }
    for i in 1..=3 {
        s.neigh_update(&mut io, 1, ip(&rip(i)), MacAddr(rs_mac(i)), 62_000);
    }
    io.take();
    assert_eq!(s.session_count(), 1);
    assert_eq!(open(&mut s, &mut io, 103, 62_000).1, 1);
}
