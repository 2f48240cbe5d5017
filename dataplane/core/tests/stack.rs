//! Behaviour tests of `Stack`, with etherparse as the independent oracle: inputs are built with
//! etherparse and outputs parsed with it (fields and checksums checked against its computations).

use etherparse::{
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type,
    IpNumber, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders,
};
use rvs_core::counters::{CoreCounters, DropReason};
use rvs_core::io::{Io, PortIdx};
use rvs_core::packet::VecPacket;
use rvs_core::{MacAddr, NeighConf, NeighState, PortConf, Prefix, RouteConf, Stack, StackConfig};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

const MAC0: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 2];
const PEER: [u8; 6] = [0x0a, 0, 0, 0, 0, 0x10];
const PEER2: [u8; 6] = [0x0a, 0, 0, 0, 0, 0x11];
const GW1: [u8; 6] = [0x0a, 0, 0, 0, 1, 0xfe];
const BCAST: [u8; 6] = [0xff; 6];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn v4(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

#[derive(Default)]
struct TestIo {
    sent: Vec<(PortIdx, Vec<u8>)>,
    fail_alloc: bool,
    allocs: u64,
    learned: Vec<(PortIdx, IpAddr, [u8; 6], bool)>,
}

impl Io for TestIo {
    type Pkt = VecPacket;
    fn alloc(&mut self) -> Option<VecPacket> {
        if self.fail_alloc {
            return None;
        }
        self.allocs += 1;
        Some(VecPacket::empty())
    }
    fn send(&mut self, port: PortIdx, pkt: VecPacket) {
        self.sent.push((port, pkt.to_vec()));
    }
    fn neigh_learned(&mut self, port: PortIdx, ip: IpAddr, mac: [u8; 6], create: bool) {
        self.learned.push((port, ip, mac, create));
    }
}

impl TestIo {
    fn take(&mut self) -> Vec<(PortIdx, Vec<u8>)> {
        std::mem::take(&mut self.sent)
    }
}

/// Port 0: 192.0.2.1/24 (MTU 1500); port 1: 198.51.100.1/24 + 10.1.0.1/16 (MTU 1400).
/// Default via 198.51.100.254 (port 1); 203.0.113.0/24 via 192.0.2.254 (port 0).
fn cfg() -> StackConfig {
    StackConfig {
        ports: vec![
            PortConf {
                mac: MacAddr(MAC0),
                mtu: 1500,
                addrs: vec!["192.0.2.1/24".parse().unwrap()],
            },
            PortConf {
                mac: MacAddr(MAC1),
                mtu: 1400,
                addrs: vec![
                    "198.51.100.1/24".parse().unwrap(),
                    "10.1.0.1/16".parse().unwrap(),
                ],
            },
        ],
        routes: vec![
            RouteConf {
                prefix: "0.0.0.0/0".parse().unwrap(),
                via: Some(ip("198.51.100.254")),
                port: 1,
            },
            RouteConf {
                prefix: "203.0.113.0/24".parse().unwrap(),
                via: Some(ip("192.0.2.254")),
                port: 0,
            },
        ],
        ip_forward: true,
        neigh: NeighConf::default(),
        icmp_ratelimit_per_s: 1000,
        ..Default::default()
    }
}

fn setup(c: StackConfig) -> (Stack<VecPacket>, TestIo, Arc<CoreCounters>) {
    let counters = Arc::new(CoreCounters::default());
    (
        Stack::new(&c, counters.clone()),
        TestIo::default(),
        counters,
    )
}

fn drops(c: &CoreCounters, r: DropReason) -> u64 {
    c.drops(r)
}
fn total_drops(c: &CoreCounters) -> u64 {
    c.snapshot().total_drops()
}

fn arp(
    eth_dst: [u8; 6],
    sha: [u8; 6],
    op: ArpOperation,
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let a = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &sha,
        &spa,
        &tha,
        &tpa,
    )
    .unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(sha, eth_dst)
        .arp(a)
        .write_to_vec(&mut v)
        .unwrap();
    v
}

fn echo_req(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: &str,
    dst: &str,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(eth_src, eth_dst)
        .ipv4(v4(src), v4(dst), ttl)
        .icmpv4_echo_request(0x1234, 7)
        .write_to_vec(&mut v, payload)
        .unwrap();
    v
}

fn udp(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: &str,
    dst: &str,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(eth_src, eth_dst)
        .ipv4(v4(src), v4(dst), ttl)
        .udp(4000, 53)
        .write_to_vec(&mut v, payload)
        .unwrap();
    v
}

/// Rewrite the IPv4 header of a frame with `f` and a correct checksum.
fn patch_ip(frame: &mut [u8], f: impl FnOnce(&mut Ipv4Header)) {
    let (mut h, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    f(&mut h);
    h.header_checksum = h.calc_header_checksum();
    let b = h.to_bytes();
    frame[14..14 + b.len()].copy_from_slice(&b);
}

struct Parsed {
    eth: Ethernet2Header,
    ip: Ipv4Header,
    icmp: Option<Icmpv4Header>,
    payload: Vec<u8>,
}

/// Parse an IPv4 frame; asserts the IP (and ICMP) checksums are what etherparse computes.
fn parse_ip(frame: &[u8]) -> Parsed {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = h.link else {
        panic!("no eth")
    };
    let Some(NetHeaders::Ipv4(iph, _)) = h.net else {
        panic!("not ipv4: {:?}", h.net)
    };
    assert_eq!(
        iph.header_checksum,
        iph.calc_header_checksum(),
        "ip checksum"
    );
    assert_eq!(iph.total_len as usize + 14, frame.len(), "frame length");
    let payload = h.payload.slice().to_vec();
    let icmp = match h.transport {
        Some(etherparse::TransportHeader::Icmpv4(ic)) => {
            let expect = Icmpv4Header::with_checksum(ic.icmp_type.clone(), &payload);
            assert_eq!(ic.checksum, expect.checksum, "icmp checksum");
            Some(ic)
        }
        _ => None,
    };
    Parsed {
        eth,
        ip: iph,
        icmp,
        payload,
    }
}

fn parse_arp(frame: &[u8]) -> (Ethernet2Header, etherparse::ArpEthIpv4Packet) {
    assert_eq!(frame.len(), 42);
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(etherparse::LinkHeader::Ethernet2(eth)) = h.link else {
        panic!()
    };
    assert_eq!(eth.ether_type, EtherType::ARP);
    let Some(NetHeaders::Arp(a)) = h.net else {
        panic!("not arp")
    };
    (eth, a.try_eth_ipv4().unwrap())
}

fn handle(s: &mut Stack<VecPacket>, io: &mut TestIo, port: PortIdx, frame: &[u8], now: u64) {
    s.handle(io, port, VecPacket::from_slice(frame), now);
}

/// Resolve 198.51.100.254 (gateway) and 192.0.2.254 through neigh_update.
fn resolve_gws(s: &mut Stack<VecPacket>, io: &mut TestIo) {
    s.neigh_update(io, 1, ip("198.51.100.254"), MacAddr(GW1), 0);
    s.neigh_update(io, 0, ip("192.0.2.254"), MacAddr(PEER2), 0);
}

// ------------------------------------------------------------------------------------------ ARP

#[test]
fn arp_request_gets_reply_in_place() {
    let (mut s, mut io, c) = setup(cfg());
    let mut f = arp(
        BCAST,
        PEER,
        ArpOperation::REQUEST,
        v4("192.0.2.10"),
        [0; 6],
        v4("192.0.2.1"),
    );
    f.resize(60, 0); // Ethernet padding
    handle(&mut s, &mut io, 0, &f, 5);
    let out = io.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 0);
    let (eth, a) = parse_arp(&out[0].1);
    assert_eq!((eth.source, eth.destination), (MAC0, PEER));
    assert_eq!(a.operation, ArpOperation::REPLY);
    assert_eq!((a.sender_mac, a.sender_ipv4), (MAC0, v4("192.0.2.1")));
    assert_eq!((a.target_mac, a.target_ipv4), (PEER, v4("192.0.2.10")));
    assert_eq!(c.arp_replies_sent.get(), 1);
    assert_eq!(c.arp_requests_rx.get(), 1);
    // The requester was learned (request for us), and announced to other cores.
    assert_eq!(s.neigh_lookup(0, ip("192.0.2.10")), Some(MacAddr(PEER)));
    assert_eq!(io.learned, vec![(0, ip("192.0.2.10"), PEER, true)]);
    assert_eq!(c.neigh_learned.get(), 1);
    assert_eq!(total_drops(&c), 0);
}

/// As Linux with `arp_accept=0`: an unsolicited reply (gratuitous, or for another host) creates
/// no neighbour entry (a noisy segment cannot fill the table); it refreshes one that exists, and
/// a reply to one of our addresses creates one.
#[test]
fn unsolicited_arp_replies_create_no_entry() {
    let (mut s, mut io, c) = setup(cfg());
    let garp = arp(
        BCAST,
        PEER,
        ArpOperation::REPLY,
        v4("192.0.2.10"),
        BCAST,
        v4("192.0.2.10"),
    );
    handle(&mut s, &mut io, 0, &garp, 5);
    assert_eq!(s.neigh_lookup(0, ip("192.0.2.10")), None);
    // Still announced to the other cores, as a refresh only (one of them may know it).
    assert_eq!(io.learned, vec![(0, ip("192.0.2.10"), PEER, false)]);
    io.learned.clear();
    let other = arp(
        BCAST,
        PEER,
        ArpOperation::REPLY,
        v4("192.0.2.10"),
        [2, 0, 0, 0, 0, 0x77],
        v4("192.0.2.20"),
    );
    handle(&mut s, &mut io, 0, &other, 6);
    assert_eq!(s.neigh_lookup(0, ip("192.0.2.10")), None);
    assert_eq!(c.neigh_learned.get(), 0);
    let to_us = arp(
        MAC0,
        PEER,
        ArpOperation::REPLY,
        v4("192.0.2.10"),
        MAC0,
        v4("192.0.2.1"),
    );
    handle(&mut s, &mut io, 0, &to_us, 7);
    assert_eq!(s.neigh_lookup(0, ip("192.0.2.10")), Some(MacAddr(PEER)));
    // Now known: a gratuitous reply with a new MAC updates it.
    let moved = arp(
        BCAST,
        [2, 0, 0, 0, 0, 0x55],
        ArpOperation::REPLY,
        v4("192.0.2.10"),
        BCAST,
        v4("192.0.2.10"),
    );
    handle(&mut s, &mut io, 0, &moved, 8);
    assert_eq!(
        s.neigh_lookup(0, ip("192.0.2.10")),
        Some(MacAddr([2, 0, 0, 0, 0, 0x55]))
    );
    // What another core announces as a refresh only changes an entry this one has, and creates
    // none; nothing is announced again.
    let (mut s2, mut io2, _) = setup(cfg());
    let host = ip("192.0.2.10");
    s2.neigh_sync(&mut io2, 0, host, MacAddr(PEER), false, 9);
    assert_eq!(s2.neigh_lookup(0, host), None);
    s2.neigh_sync(&mut io2, 0, host, MacAddr(PEER), true, 9);
    s2.neigh_sync(&mut io2, 0, host, MacAddr([2, 0, 0, 0, 0, 0x66]), false, 10);
    assert_eq!(
        s2.neigh_lookup(0, host),
        Some(MacAddr([2, 0, 0, 0, 0, 0x66]))
    );
    assert!(io2.learned.is_empty());
}

#[test]
fn arp_probe_is_answered_without_learning() {
    let (mut s, mut io, c) = setup(cfg());
    let f = arp(
        BCAST,
        PEER,
        ArpOperation::REQUEST,
        [0; 4],
        [0; 6],
        v4("192.0.2.1"),
    );
    handle(&mut s, &mut io, 0, &f, 0);
    let out = io.take();
    assert_eq!(out.len(), 1);
    let (eth, a) = parse_arp(&out[0].1);
    assert_eq!(eth.destination, PEER);
    assert_eq!(
        (a.operation, a.sender_ipv4, a.target_ipv4, a.target_mac),
        (ArpOperation::REPLY, v4("192.0.2.1"), [0; 4], PEER)
    );
    assert_eq!(s.neigh_len(), 0);
    assert!(io.learned.is_empty());
    assert_eq!(c.arp_replies_sent.get(), 1);
}

#[test]
fn arp_for_unowned_or_other_ports_address_is_not_answered() {
    let (mut s, mut io, c) = setup(cfg());
    // Unowned target.
    handle(
        &mut s,
        &mut io,
        0,
        &arp(
            BCAST,
            PEER,
            ArpOperation::REQUEST,
            v4("192.0.2.10"),
            [0; 6],
            v4("192.0.2.77"),
        ),
        0,
    );
    // Address owned on port 1, asked on port 0.
    handle(
        &mut s,
        &mut io,
        0,
        &arp(
            BCAST,
            PEER,
            ArpOperation::REQUEST,
            v4("192.0.2.10"),
            [0; 6],
            v4("198.51.100.1"),
        ),
        0,
    );
    assert!(io.take().is_empty());
    assert_eq!(drops(&c, DropReason::ArpNotForUs), 2);
    assert_eq!(c.arp_requests_rx.get(), 2);
    // Not for us: no entry created.
    assert_eq!(s.neigh_len(), 0);
    // The same address asked on port 1 is answered.
    handle(
        &mut s,
        &mut io,
        1,
        &arp(
            BCAST,
            PEER,
            ArpOperation::REQUEST,
            v4("198.51.100.10"),
            [0; 6],
            v4("198.51.100.1"),
        ),
        0,
    );
    assert_eq!(io.take().len(), 1);
}

#[test]
fn arp_learning_rules() {
    let (mut s, mut io, c) = setup(cfg());
    // Request not for us: does not create.
    handle(
        &mut s,
        &mut io,
        0,
        &arp(
            BCAST,
            PEER,
            ArpOperation::REQUEST,
            v4("192.0.2.10"),
            [0; 6],
            v4("192.0.2.99"),
        ),
        0,
    );
    assert_eq!(s.neigh_len(), 0);
    // Reply from a connected sender: creates.
    handle(
        &mut s,
        &mut io,
        0,
        &arp(
            MAC0,
            PEER,
            ArpOperation::REPLY,
            v4("192.0.2.10"),
            MAC0,
            v4("192.0.2.1"),
        ),
        0,
    );
    assert_eq!(s.neigh_lookup(0, ip("192.0.2.10")), Some(MacAddr(PEER)));
    assert_eq!(c.arp_replies_rx.get(), 1);
    // Reply from a sender not on a connected subnet of the ingress port: ignored.
    handle(
        &mut s,
        &mut io,
        0,
        &arp(
            MAC0,
            PEER,
            ArpOperation::REPLY,
            v4("198.51.100.10"),
            MAC0,
            v4("192.0.2.1"),
        ),
        0,
    );
    handle(
        &mut s,
        &mut io,
        1,
        &arp(
            MAC1,
            PEER,
            ArpOperation::REPLY,
            v4("192.0.2.11"),
            MAC1,
            v4("198.51.100.1"),
        ),
        0,
    );
    assert_eq!(s.neigh_len(), 1);
    // Reply claiming one of our own addresses: ignored.
    handle(
        &mut s,
        &mut io,
        0,
        &arp(
            MAC0,
            PEER,
            ArpOperation::REPLY,
            v4("192.0.2.1"),
            MAC0,
            v4("192.0.2.1"),
        ),
        0,
    );
    assert_eq!(s.neigh_len(), 1);
    // Gratuitous ARP (request not for us) refreshes an existing entry with a new MAC.
    s.poll_timers(&mut io, 40_000);
    assert_eq!(
        s.neigh_state(0, ip("192.0.2.10"), 40_000),
        Some(NeighState::Stale)
    );
    handle(
        &mut s,
        &mut io,
        0,
        &arp(
            BCAST,
            PEER2,
            ArpOperation::REQUEST,
            v4("192.0.2.10"),
            [0; 6],
            v4("192.0.2.10"),
        ),
        40_000,
    );
    assert_eq!(s.neigh_lookup(0, ip("192.0.2.10")), Some(MacAddr(PEER2)));
    assert_eq!(
        s.neigh_state(0, ip("192.0.2.10"), 40_000),
        Some(NeighState::Reachable)
    );
    assert_eq!(drops(&c, DropReason::ArpNotForUs), 2);
    assert_eq!(c.neigh_learned.get(), 2); // created, then MAC changed
                                          // Announced to the other cores: the request not for us and the gratuitous one as refreshes
                                          // only (another core may have the entry), the reply to us as a creation.
    let create: Vec<bool> = io.learned.iter().map(|l| l.3).collect();
    assert_eq!(create, [false, true, false]);
    assert_eq!(c.arp_replies_rx.get(), 4);
}

#[test]
fn garp_at_start_and_on_add_owned() {
    let (mut s, mut io, c) = setup(cfg());
    s.on_start(&mut io, 0);
    let out = io.take();
    assert_eq!(out.len(), 3);
    let mut seen = Vec::new();
    for (port, f) in &out {
        let (eth, a) = parse_arp(f);
        let mac = if *port == 0 { MAC0 } else { MAC1 };
        assert_eq!((eth.source, eth.destination), (mac, BCAST));
        assert_eq!(a.operation, ArpOperation::REQUEST);
        assert_eq!((a.sender_mac, a.target_mac), (mac, [0; 6]));
        assert_eq!(a.sender_ipv4, a.target_ipv4);
        seen.push((*port, Ipv4Addr::from(a.sender_ipv4)));
    }
    seen.sort();
    let want: Vec<(PortIdx, Ipv4Addr)> = vec![
        (0, "192.0.2.1".parse().unwrap()),
        (1, "10.1.0.1".parse().unwrap()),
        (1, "198.51.100.1".parse().unwrap()),
    ];
    assert_eq!(seen, want);
    assert_eq!(c.garp_sent.get(), 3);

    // add_owned: GARP, then ARP and ping answered for the VIP.
    assert_eq!(s.add_owned(&mut io, 1, ip("198.51.100.100"), 0), Ok(true));
    assert_eq!(s.add_owned(&mut io, 1, ip("198.51.100.100"), 0), Ok(false));
    assert!(s.add_owned(&mut io, 9, ip("198.51.100.100"), 0).is_err());
    let out = io.take();
    assert_eq!(out.len(), 1);
    assert_eq!(parse_arp(&out[0].1).1.target_ipv4, v4("198.51.100.100"));
    assert_eq!(c.garp_sent.get(), 4);
    handle(
        &mut s,
        &mut io,
        1,
        &arp(
            BCAST,
            PEER,
            ArpOperation::REQUEST,
            v4("198.51.100.10"),
            [0; 6],
            v4("198.51.100.100"),
        ),
        0,
    );
    assert_eq!(
        parse_arp(&io.take()[0].1).1.sender_ipv4,
        v4("198.51.100.100")
    );
    let ping = echo_req(PEER, MAC1, "198.51.100.10", "198.51.100.100", 64, b"o");
    handle(&mut s, &mut io, 1, &ping, 0);
    assert_eq!(c.icmp_echo_replies.get(), 1, "an added address is served");
    io.take();
    // IPv6 owned: no GARP.
    assert_eq!(s.add_owned(&mut io, 0, ip("2001:db8::1"), 0), Ok(true));
    assert!(io.take().is_empty());
    assert!(s.remove_owned(1, ip("198.51.100.100")));
    assert!(!s.remove_owned(1, ip("198.51.100.100")));
    assert!(!s.is_owned(ip("198.51.100.100")));
    handle(&mut s, &mut io, 1, &ping, 0);
    assert_eq!(c.icmp_echo_replies.get(), 1, "a removed address is not");
    io.take();
    handle(
        &mut s,
        &mut io,
        1,
        &arp(
            BCAST,
            PEER,
            ArpOperation::REQUEST,
            v4("198.51.100.10"),
            [0; 6],
            v4("198.51.100.100"),
        ),
        0,
    );
    assert!(io.take().is_empty());
    assert_eq!(drops(&c, DropReason::ArpNotForUs), 1);
}

#[test]
fn garp_alloc_failure_counted() {
    let (mut s, mut io, c) = setup(cfg());
    io.fail_alloc = true;
    s.on_start(&mut io, 0);
    assert_eq!(drops(&c, DropReason::AllocFailed), 3);
    assert_eq!(c.garp_sent.get(), 0);
}

#[test]
fn arp_malformed_cases() {
    let (mut s, mut io, c) = setup(cfg());
    let good = arp(
        BCAST,
        PEER,
        ArpOperation::REQUEST,
        v4("192.0.2.10"),
        [0; 6],
        v4("192.0.2.1"),
    );
    let mut cases = Vec::new();
    cases.push(good[..41].to_vec()); // truncated
    for (off, val) in [
        (15usize, 6u8),
        (17, 0xdd),
        (18, 8),
        (19, 16),
        (21, 3),
        (20, 1),
    ] {
        let mut f = good.clone();
        f[off] = val;
        cases.push(f);
    }
    for f in &cases {
        handle(&mut s, &mut io, 0, f, 0);
    }
    assert_eq!(drops(&c, DropReason::ArpMalformed), cases.len() as u64);
    assert_eq!(total_drops(&c), cases.len() as u64);
    assert!(io.take().is_empty());
    assert_eq!(s.neigh_len(), 0);
}

// ------------------------------------------------------------------------------------- Ethernet

#[test]
fn ethernet_filtering() {
    let (mut s, mut io, c) = setup(cfg());
    handle(&mut s, &mut io, 0, &[0u8; 13], 0);
    handle(&mut s, &mut io, 0, &[], 0);
    assert_eq!(drops(&c, DropReason::EthTruncated), 2);
    // Other unicast MAC, multicast MAC, port 1's MAC on port 0.
    for dst in [PEER, [0x01, 0, 0x5e, 0, 0, 1], MAC1] {
        handle(
            &mut s,
            &mut io,
            0,
            &echo_req(PEER, dst, "192.0.2.10", "192.0.2.1", 64, b"x"),
            0,
        );
    }
    assert_eq!(drops(&c, DropReason::NotForUs), 3);
    // IPv6.
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(PEER, MAC0)
        .ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            64,
        )
        .udp(1, 2)
        .write_to_vec(&mut v6, b"hi")
        .unwrap();
    handle(&mut s, &mut io, 0, &v6, 0);
    assert_eq!(drops(&c, DropReason::Ipv6Unsupported), 1);
    // VLAN and LLDP.
    let mut vlan = echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"x");
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    handle(&mut s, &mut io, 0, &vlan, 0);
    vlan[12..14].copy_from_slice(&[0x88, 0xcc]);
    handle(&mut s, &mut io, 0, &vlan, 0);
    assert_eq!(drops(&c, DropReason::UnknownEthertype), 2);
    assert_eq!(total_drops(&c), 8);
    assert!(io.take().is_empty());
}

// ------------------------------------------------------------------------------------------ IPv4

#[test]
fn ipv4_malformed_cases() {
    let (mut s, mut io, c) = setup(cfg());
    let good = echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"abcdefgh");
    let mut n_malformed = 0;
    let run = |f: &[u8], s: &mut Stack<VecPacket>, io: &mut TestIo| handle(s, io, 0, f, 0);
    // Too short for an IPv4 header.
    run(&good[..33], &mut s, &mut io);
    n_malformed += 1;
    // Version 6 in an IPv4 ethertype.
    let mut f = good.clone();
    f[14] = 0x65;
    run(&f, &mut s, &mut io);
    n_malformed += 1;
    // IHL 4.
    let mut f = good.clone();
    f[14] = 0x44;
    run(&f, &mut s, &mut io);
    n_malformed += 1;
    // Total length beyond the frame / below the header.
    for tl in [good.len() as u16 - 14 + 1, 19] {
        let mut f = good.clone();
        patch_ip(&mut f, |h| h.total_len = tl);
        run(&f, &mut s, &mut io);
        n_malformed += 1;
    }
    assert_eq!(drops(&c, DropReason::Ipv4Malformed), n_malformed);
    // Bad header checksum.
    let mut f = good.clone();
    f[24] ^= 0x55;
    run(&f, &mut s, &mut io);
    assert_eq!(drops(&c, DropReason::Ipv4BadChecksum), 1);
    // Martian sources.
    for src in [
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "224.0.0.5",
        "239.255.255.254",
        "255.255.255.255",
        "192.0.2.255",
    ] {
        run(
            &echo_req(PEER, MAC0, src, "192.0.2.1", 64, b"x"),
            &mut s,
            &mut io,
        );
    }
    assert_eq!(drops(&c, DropReason::Martian), 7);
    // Broadcast / multicast destinations.
    for dst in ["255.255.255.255", "192.0.2.255", "10.1.255.255"] {
        run(
            &echo_req(PEER, BCAST, "192.0.2.10", dst, 64, b"x"),
            &mut s,
            &mut io,
        );
    }
    assert_eq!(drops(&c, DropReason::DstBroadcast), 3);
    run(
        &echo_req(PEER, MAC0, "192.0.2.10", "239.1.1.1", 64, b"x"),
        &mut s,
        &mut io,
    );
    assert_eq!(drops(&c, DropReason::DstMulticast), 1);
    assert_eq!(total_drops(&c), n_malformed + 1 + 7 + 3 + 1);
    assert!(io.take().is_empty(), "no ICMP error about any of these");
}

#[test]
fn local_delivery_drops() {
    let (mut s, mut io, c) = setup(cfg());
    // UDP to us.
    handle(
        &mut s,
        &mut io,
        0,
        &udp(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"q"),
        0,
    );
    assert_eq!(drops(&c, DropReason::LocalL4), 1);
    // Bad ICMP checksum.
    let mut f = echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"abcd");
    f[14 + 20 + 5] ^= 1;
    handle(&mut s, &mut io, 0, &f, 0);
    // ICMP shorter than 8 bytes.
    let mut f = echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"");
    f.truncate(14 + 20 + 4);
    patch_ip(&mut f, |h| h.total_len = 24);
    handle(&mut s, &mut io, 0, &f, 0);
    assert_eq!(drops(&c, DropReason::IcmpMalformed), 2);
    // Echo reply to us: unhandled.
    let mut f = Vec::new();
    PacketBuilder::ethernet2(PEER, MAC0)
        .ipv4(v4("192.0.2.10"), v4("192.0.2.1"), 64)
        .icmpv4_echo_reply(1, 1)
        .write_to_vec(&mut f, b"z")
        .unwrap();
    handle(&mut s, &mut io, 0, &f, 0);
    assert_eq!(drops(&c, DropReason::IcmpUnhandled), 1);
    // Fragment to us.
    let mut f = echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"abcd");
    patch_ip(&mut f, |h| h.more_fragments = true);
    handle(&mut s, &mut io, 0, &f, 0);
    assert_eq!(drops(&c, DropReason::Ipv4Fragment), 1);
    assert_eq!(total_drops(&c), 5);
    assert!(io.take().is_empty());
}

#[test]
fn echo_reply_held_then_released_on_arp_reply() {
    let (mut s, mut io, c) = setup(cfg());
    let payload: Vec<u8> = (0..100u8).collect();
    let mut f = echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 17, &payload);
    f.extend_from_slice(&[0xee; 6]); // padding must be trimmed
    handle(&mut s, &mut io, 0, &f, 10);
    // Reply held, ARP request broadcast for 192.0.2.10.
    let out = io.take();
    assert_eq!(out.len(), 1);
    let (eth, a) = parse_arp(&out[0].1);
    assert_eq!((eth.source, eth.destination), (MAC0, BCAST));
    assert_eq!(
        (a.operation, a.sender_mac, a.sender_ipv4),
        (ArpOperation::REQUEST, MAC0, v4("192.0.2.1"))
    );
    assert_eq!((a.target_mac, a.target_ipv4), ([0; 6], v4("192.0.2.10")));
    assert_eq!(
        s.neigh_state(0, ip("192.0.2.10"), 10),
        Some(NeighState::Incomplete)
    );
    assert_eq!(s.neigh_held(0, ip("192.0.2.10")), 1);
    assert_eq!(c.neigh_held.get(), 1);
    assert_eq!(c.arp_requests_sent.get(), 1);
    // A second ping is held too.
    handle(
        &mut s,
        &mut io,
        0,
        &echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"second"),
        11,
    );
    assert!(io.take().is_empty());
    // ARP reply: both released, in order.
    handle(
        &mut s,
        &mut io,
        0,
        &arp(
            MAC0,
            PEER,
            ArpOperation::REPLY,
            v4("192.0.2.10"),
            MAC0,
            v4("192.0.2.1"),
        ),
        20,
    );
    let out = io.take();
    assert_eq!(out.len(), 2);
    assert_eq!(c.neigh_released.get(), 2);
    let p = parse_ip(&out[0].1);
    assert_eq!(out[0].0, 0);
    assert_eq!(
        (p.eth.source, p.eth.destination, p.eth.ether_type),
        (MAC0, PEER, EtherType::IPV4)
    );
    assert_eq!(
        (p.ip.source, p.ip.destination, p.ip.time_to_live),
        (v4("192.0.2.1"), v4("192.0.2.10"), 64)
    );
    assert_eq!(p.ip.protocol, IpNumber::ICMP);
    let Some(Icmpv4Header {
        icmp_type: Icmpv4Type::EchoReply(e),
        ..
    }) = p.icmp
    else {
        panic!("{:?}", p.icmp)
    };
    assert_eq!((e.id, e.seq), (0x1234, 7));
    assert_eq!(p.payload, payload);
    assert_eq!(parse_ip(&out[1].1).payload, b"second");
    assert_eq!(c.icmp_echo_replies.get(), 2);
    assert_eq!(
        s.neigh_state(0, ip("192.0.2.10"), 20),
        Some(NeighState::Reachable)
    );
    // Now resolved: the next reply goes straight out.
    handle(
        &mut s,
        &mut io,
        0,
        &echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"3"),
        30,
    );
    assert_eq!(io.take().len(), 1);
    assert_eq!(total_drops(&c), 0);
}

#[test]
fn echo_to_other_ports_address_weak_host() {
    let (mut s, mut io, c) = setup(cfg());
    resolve_gws(&mut s, &mut io);
    // Ping 198.51.100.1 (port 1's) from 203.0.113.5 arriving on port 0: reply routed via
    // 192.0.2.254 on port 0, from 198.51.100.1.
    handle(
        &mut s,
        &mut io,
        0,
        &echo_req(PEER2, MAC0, "203.0.113.5", "198.51.100.1", 64, b"w"),
        0,
    );
    let out = io.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 0);
    let p = parse_ip(&out[0].1);
    assert_eq!((p.eth.source, p.eth.destination), (MAC0, PEER2));
    assert_eq!(
        (p.ip.source, p.ip.destination),
        (v4("198.51.100.1"), v4("203.0.113.5"))
    );
    assert_eq!(c.icmp_echo_replies.get(), 1);
}

// ----------------------------------------------------------------------------------- Forwarding

#[test]
fn forwarding_decrements_ttl() {
    let (mut s, mut io, c) = setup(cfg());
    resolve_gws(&mut s, &mut io);
    let payload: Vec<u8> = (0..200).map(|i| i as u8).collect();
    let f = udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, &payload);
    let input = parse_ip(&f);
    handle(&mut s, &mut io, 0, &f, 0);
    let out = io.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, 1);
    let p = parse_ip(&out[0].1);
    assert_eq!((p.eth.source, p.eth.destination), (MAC1, GW1));
    assert_eq!(p.ip.time_to_live, 63);
    let mut expect = input.ip.clone();
    expect.time_to_live = 63;
    expect.header_checksum = expect.calc_header_checksum();
    assert_eq!(p.ip, expect);
    assert_eq!(&out[0].1[34..], &f[34..], "L4 untouched");
    assert_eq!(c.forwarded.get(), 1);
    // 203.0.113.0/24 goes via 192.0.2.254 back on port 0 (hairpin).
    handle(
        &mut s,
        &mut io,
        1,
        &udp(GW1, MAC1, "8.8.8.8", "203.0.113.9", 2, b"x"),
        0,
    );
    let out = io.take();
    assert_eq!(out[0].0, 0);
    let p = parse_ip(&out[0].1);
    assert_eq!(
        (p.eth.source, p.eth.destination, p.ip.time_to_live),
        (MAC0, PEER2, 1)
    );
    // Connected destination: next hop is the destination itself (held, ARP for it).
    handle(
        &mut s,
        &mut io,
        0,
        &udp(PEER, MAC0, "192.0.2.10", "10.1.2.3", 64, b"x"),
        0,
    );
    let out = io.take();
    let (_, a) = parse_arp(&out[0].1);
    assert_eq!(
        (out[0].0, a.sender_ipv4, a.target_ipv4),
        (1, v4("10.1.0.1"), v4("10.1.2.3"))
    );
    assert_eq!(c.forwarded.get(), 3);
    assert_eq!(total_drops(&c), 0);
}

#[test]
fn forwarding_disabled_and_l2_broadcast() {
    let mut cf = cfg();
    cf.ip_forward = false;
    let (mut s, mut io, c) = setup(cf);
    resolve_gws(&mut s, &mut io);
    handle(
        &mut s,
        &mut io,
        0,
        &udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, b"x"),
        0,
    );
    assert_eq!(drops(&c, DropReason::ForwardingDisabled), 1);
    // Still answers pings.
    handle(
        &mut s,
        &mut io,
        1,
        &echo_req(GW1, MAC1, "198.51.100.254", "198.51.100.1", 64, b"x"),
        0,
    );
    assert_eq!(io.take().len(), 1);
    let (mut s, mut io, c) = setup(cfg());
    resolve_gws(&mut s, &mut io);
    handle(
        &mut s,
        &mut io,
        0,
        &udp(PEER, BCAST, "192.0.2.10", "8.8.8.8", 64, b"x"),
        0,
    );
    assert_eq!(drops(&c, DropReason::NotForUs), 1);
    assert!(io.take().is_empty());
}

fn check_icmp_error(
    frame: &[u8],
    orig: &[u8],
    src: &str,
    dst: &str,
    eth_dst: [u8; 6],
) -> Icmpv4Type {
    let p = parse_ip(frame);
    assert_eq!((p.eth.source, p.eth.destination), (MAC0, eth_dst));
    assert_eq!(
        (p.ip.source, p.ip.destination, p.ip.time_to_live),
        (v4(src), v4(dst), 64)
    );
    assert_eq!(p.ip.protocol, IpNumber::ICMP);
    // RFC 792: the offending IP header and the first 8 bytes of its payload, as received.
    let ihl = (orig[14] & 0xf) as usize * 4;
    assert_eq!(p.payload, &orig[14..14 + ihl + 8]);
    p.icmp.unwrap().icmp_type
}

#[test]
fn ttl_exceeded() {
    let (mut s, mut io, c) = setup(cfg());
    resolve_gws(&mut s, &mut io);
    s.neigh_update(&mut io, 0, ip("192.0.2.10"), MacAddr(PEER), 0);
    for ttl in [1u8, 0] {
        let f = udp(
            PEER,
            MAC0,
            "192.0.2.10",
            "8.8.8.8",
            ttl,
            b"0123456789abcdef",
        );
        handle(&mut s, &mut io, 0, &f, 0);
        let out = io.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 0);
        let t = check_icmp_error(&out[0].1, &f, "192.0.2.1", "192.0.2.10", PEER);
        assert_eq!(
            t,
            Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
        );
    }
    assert_eq!(drops(&c, DropReason::TtlExceeded), 2);
    assert_eq!(c.icmp_errors_sent.get(), 2);
    assert_eq!(c.forwarded.get(), 0);
    // Never about an ICMP error.
    let mut f = Vec::new();
    PacketBuilder::ethernet2(PEER, MAC0)
        .ipv4(v4("192.0.2.10"), v4("8.8.8.8"), 1)
        .icmpv4(Icmpv4Type::TimeExceeded(
            TimeExceededCode::TtlExceededInTransit,
        ))
        .write_to_vec(&mut f, &[0u8; 28])
        .unwrap();
    handle(&mut s, &mut io, 0, &f, 0);
    // Nor about a non-first fragment.
    let mut f = udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 1, b"frag");
    patch_ip(&mut f, |h| {
        h.fragment_offset = etherparse::IpFragOffset::try_new(100).unwrap()
    });
    handle(&mut s, &mut io, 0, &f, 0);
    assert!(io.take().is_empty());
    assert_eq!(drops(&c, DropReason::TtlExceeded), 4);
    // But about an echo request, yes.
    let f = echo_req(PEER, MAC0, "192.0.2.10", "8.8.8.8", 1, b"ping");
    handle(&mut s, &mut io, 0, &f, 0);
    assert_eq!(io.take().len(), 1);
}

#[test]
fn no_route_net_unreachable() {
    let mut cf = cfg();
    cf.routes.retain(|r| r.prefix.len != 0);
    let (mut s, mut io, c) = setup(cf);
    s.neigh_update(&mut io, 0, ip("192.0.2.10"), MacAddr(PEER), 0);
    let f = udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 1, b"0123456789abcdef");
    handle(&mut s, &mut io, 0, &f, 0);
    let out = io.take();
    assert_eq!(out.len(), 1);
    let t = check_icmp_error(&out[0].1, &f, "192.0.2.1", "192.0.2.10", PEER);
    assert_eq!(
        t,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Network)
    );
    assert_eq!(drops(&c, DropReason::NoRoute), 1);
    assert_eq!(
        drops(&c, DropReason::TtlExceeded),
        0,
        "route lookup comes before the TTL check"
    );
    assert_eq!(c.icmp_errors_sent.get(), 1);
}

#[test]
fn mtu_exceeded_frag_needed() {
    let (mut s, mut io, c) = setup(cfg());
    resolve_gws(&mut s, &mut io);
    s.neigh_update(&mut io, 0, ip("192.0.2.10"), MacAddr(PEER), 0);
    // Port 1 MTU is 1400: 1401 bytes with DF.
    let mut f = udp(
        PEER,
        MAC0,
        "192.0.2.10",
        "8.8.8.8",
        64,
        &vec![7u8; 1401 - 28],
    );
    patch_ip(&mut f, |h| h.dont_fragment = true);
    handle(&mut s, &mut io, 0, &f, 0);
    let out = io.take();
    assert_eq!(out.len(), 1);
    let t = check_icmp_error(&out[0].1, &f, "192.0.2.1", "192.0.2.10", PEER);
    assert_eq!(
        t,
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400
        })
    );
    assert_eq!(&out[0].1[14 + 20 + 6..14 + 20 + 8], &1400u16.to_be_bytes());
    // Without DF: dropped silently (no fragmentation).
    let mut f = udp(
        PEER,
        MAC0,
        "192.0.2.10",
        "8.8.8.8",
        64,
        &vec![7u8; 1401 - 28],
    );
    patch_ip(&mut f, |h| h.dont_fragment = false);
    handle(&mut s, &mut io, 0, &f, 0);
    assert!(io.take().is_empty());
    assert_eq!(drops(&c, DropReason::MtuExceeded), 2);
    // Exactly the MTU passes.
    let mut f = udp(
        PEER,
        MAC0,
        "192.0.2.10",
        "8.8.8.8",
        64,
        &vec![7u8; 1400 - 28],
    );
    patch_ip(&mut f, |h| h.dont_fragment = true);
    handle(&mut s, &mut io, 0, &f, 0);
    let out = io.take();
    assert_eq!((out.len(), out[0].0), (1, 1));
    assert_eq!(c.forwarded.get(), 1);
}

#[test]
fn icmp_rate_limit() {
    let mut cf = cfg();
    cf.icmp_ratelimit_per_s = 5;
    let (mut s, mut io, c) = setup(cf);
    s.neigh_update(&mut io, 0, ip("192.0.2.10"), MacAddr(PEER), 0);
    let f = udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 1, b"x");
    for _ in 0..10 {
        handle(&mut s, &mut io, 0, &f, 1000);
    }
    assert_eq!(io.take().len(), 5);
    assert_eq!(drops(&c, DropReason::TtlExceeded), 10);
    // 400 ms later: 2 tokens.
    for _ in 0..10 {
        handle(&mut s, &mut io, 0, &f, 1400);
    }
    assert_eq!(io.take().len(), 2);
    // Long idle: refilled to the burst (5), not more.
    for _ in 0..10 {
        handle(&mut s, &mut io, 0, &f, 100_000);
    }
    // (The neighbour went stale meanwhile: one unicast ARP refresh goes out too.)
    let out = io.take();
    assert_eq!(out.iter().filter(|(_, f)| f[12..14] == [8, 0]).count(), 5);
    assert_eq!(out.len(), 6);
    assert_eq!(c.icmp_errors_sent.get(), 12);
    // Rate 0: never.
    let mut cf = cfg();
    cf.icmp_ratelimit_per_s = 0;
    let (mut s, mut io, _) = setup(cf);
    s.neigh_update(&mut io, 0, ip("192.0.2.10"), MacAddr(PEER), 0);
    handle(&mut s, &mut io, 0, &f, 0);
    assert!(io.take().is_empty());
}

#[test]
fn icmp_error_alloc_failure() {
    let (mut s, mut io, c) = setup(cfg());
    io.fail_alloc = true;
    handle(
        &mut s,
        &mut io,
        0,
        &udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 1, b"x"),
        0,
    );
    assert_eq!(drops(&c, DropReason::TtlExceeded), 1);
    assert_eq!(drops(&c, DropReason::AllocFailed), 1);
    assert_eq!(c.icmp_errors_sent.get(), 0);
}

// ------------------------------------------------------------------------------------ Neighbours

fn small_neigh() -> StackConfig {
    let mut cf = cfg();
    cf.neigh = NeighConf {
        capacity: 4,
        hold_packets: 2,
        reachable_ms: 1000,
        gc_stale_ms: 10_000,
        retrans_ms: 100,
        max_probes: 3,
    };
    cf
}

#[test]
fn hold_limit() {
    let (mut s, mut io, c) = setup(small_neigh());
    for i in 0..5 {
        handle(
            &mut s,
            &mut io,
            0,
            &udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, &[i]),
            0,
        );
    }
    assert_eq!(c.neigh_held.get(), 2);
    assert_eq!(drops(&c, DropReason::NeighHoldFull), 3);
    assert_eq!(io.take().len(), 1, "one ARP request only");
    s.neigh_update(&mut io, 1, ip("198.51.100.254"), MacAddr(GW1), 5);
    let out = io.take();
    assert_eq!(out.len(), 2);
    assert_eq!(parse_ip(&out[0].1).payload, [0]);
    assert_eq!(parse_ip(&out[1].1).payload, [1]);
    assert!(
        io.learned.is_empty(),
        "updates from other cores are not re-announced"
    );
    assert_eq!(c.forwarded.get(), 2);
}

#[test]
fn retransmit_then_fail() {
    let (mut s, mut io, c) = setup(small_neigh());
    handle(
        &mut s,
        &mut io,
        0,
        &udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, b"a"),
        0,
    );
    handle(
        &mut s,
        &mut io,
        0,
        &udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, b"b"),
        0,
    );
    assert_eq!(io.take().len(), 1);
    s.poll_timers(&mut io, 50);
    assert!(io.take().is_empty(), "not yet");
    for t in [100, 200] {
        s.poll_timers(&mut io, t);
        let out = io.take();
        assert_eq!(out.len(), 1);
        let (eth, a) = parse_arp(&out[0].1);
        assert_eq!(
            (eth.destination, a.target_ipv4, a.sender_ipv4),
            (BCAST, v4("198.51.100.254"), v4("198.51.100.1"))
        );
    }
    assert_eq!(c.arp_requests_sent.get(), 3);
    assert_eq!(s.neigh_held(1, ip("198.51.100.254")), 2);
    s.poll_timers(&mut io, 300);
    assert!(io.take().is_empty());
    assert_eq!(drops(&c, DropReason::NeighFailed), 2);
    assert_eq!(s.neigh_len(), 0);
    assert_eq!(s.neigh_state(1, ip("198.51.100.254"), 300), None);
    // A new packet starts over.
    handle(
        &mut s,
        &mut io,
        0,
        &udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, b"c"),
        400,
    );
    assert_eq!(io.take().len(), 1);
    assert_eq!(s.neigh_held(1, ip("198.51.100.254")), 1);
}

#[test]
fn aging_stale_refresh_and_gc() {
    let (mut s, mut io, c) = setup(small_neigh());
    s.neigh_update(&mut io, 1, ip("198.51.100.254"), MacAddr(GW1), 0);
    let gw = ip("198.51.100.254");
    assert_eq!(s.neigh_state(1, gw, 999), Some(NeighState::Reachable));
    assert_eq!(s.neigh_state(1, gw, 1000), Some(NeighState::Stale));
    // In use while stale: still forwarded, one unicast ARP refresh per retrans_ms.
    let f = udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, b"a");
    handle(&mut s, &mut io, 0, &f, 2000);
    handle(&mut s, &mut io, 0, &f, 2050);
    let out = io.take();
    assert_eq!(out.len(), 3);
    let (eth, a) = parse_arp(&out[0].1);
    assert_eq!(
        (eth.destination, a.operation, a.target_ipv4),
        (GW1, ArpOperation::REQUEST, v4("198.51.100.254"))
    );
    assert_eq!(parse_ip(&out[1].1).eth.destination, GW1);
    handle(&mut s, &mut io, 0, &f, 2100);
    assert_eq!(io.take().len(), 2, "next refresh after retrans_ms");
    // Reply confirms: reachable again.
    handle(
        &mut s,
        &mut io,
        1,
        &arp(
            MAC1,
            GW1,
            ArpOperation::REPLY,
            v4("198.51.100.254"),
            MAC1,
            v4("198.51.100.1"),
        ),
        2200,
    );
    assert_eq!(s.neigh_state(1, gw, 2200), Some(NeighState::Reachable));
    // Unconfirmed for gc_stale_ms: removed by the timer.
    s.poll_timers(&mut io, 12_199);
    assert_eq!(s.neigh_len(), 1);
    s.poll_timers(&mut io, 12_200);
    assert_eq!(s.neigh_len(), 0);
    assert_eq!(total_drops(&c), 0);
}

#[test]
fn table_full_and_stale_eviction() {
    let (mut s, mut io, c) = setup(small_neigh());
    for i in 0..4 {
        s.neigh_update(
            &mut io,
            0,
            ip(&format!("192.0.2.{}", 20 + i)),
            MacAddr(PEER),
            0,
        );
    }
    assert_eq!(s.neigh_len(), 4);
    // Full of reachable entries: a new next hop cannot be resolved.
    handle(
        &mut s,
        &mut io,
        1,
        &udp(GW1, MAC1, "198.51.100.254", "192.0.2.50", 64, b"x"),
        500,
    );
    assert_eq!(drops(&c, DropReason::NeighTableFull), 1);
    assert!(io.take().is_empty());
    // Once they are stale, one is evicted.
    handle(
        &mut s,
        &mut io,
        1,
        &udp(GW1, MAC1, "198.51.100.254", "192.0.2.50", 64, b"x"),
        1500,
    );
    assert_eq!(c.neigh_evicted.get(), 1);
    assert_eq!(s.neigh_len(), 4);
    assert_eq!(s.neigh_held(0, ip("192.0.2.50")), 1);
    assert_eq!(io.take().len(), 1);
    // Capacity 0: every resolution fails, nothing panics.
    let mut cf = cfg();
    cf.neigh.capacity = 0;
    let (mut s, mut io, c) = setup(cf);
    handle(
        &mut s,
        &mut io,
        0,
        &echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"x"),
        0,
    );
    s.poll_timers(&mut io, 0);
    s.neigh_update(&mut io, 0, ip("192.0.2.10"), MacAddr(PEER), 0);
    assert_eq!(drops(&c, DropReason::NeighTableFull), 1);
}

/// The next-hop cache of the forwarding path follows the neighbour table: a MAC change is seen
/// at once, and an entry evicted and reused for another neighbour is never used for the old one.
#[test]
fn next_hop_cache_follows_neighbour_changes() {
    let (mut s, mut io, _c) = setup(small_neigh());
    // A UDP packet from the far side to 192.0.2.<host> at time t.
    let send = |s: &mut Stack<VecPacket>, io: &mut TestIo, host: u8, t: u64| {
        let f = udp(
            GW1,
            MAC1,
            "198.51.100.254",
            &format!("192.0.2.{host}"),
            64,
            b"x",
        );
        handle(s, io, 1, &f, t);
    };
    for i in 0..4 {
        let a = ip(&format!("192.0.2.{}", 20 + i));
        s.neigh_update(&mut io, 0, a, MacAddr(PEER), 0);
    }
    // Twice to every neighbour: the second packet takes the cached next hop.
    for t in [10, 11] {
        for i in 0..4 {
            send(&mut s, &mut io, 20 + i, t);
            let out = io.take();
            assert_eq!(out.len(), 1);
            assert_eq!(parse_ip(&out[0].1).eth.destination, PEER);
        }
    }
    // New MAC: used by the next packet.
    s.neigh_update(&mut io, 0, ip("192.0.2.20"), MacAddr(PEER2), 20);
    send(&mut s, &mut io, 20, 21);
    let out = io.take();
    assert_eq!(parse_ip(&out[0].1).eth.destination, PEER2);
    // All stale except .20: .50 evicts one of the others and takes its slot, resolved with its
    // own MAC; .21–.23 packets never go to .50's MAC.
    let other = [0xee; 6];
    send(&mut s, &mut io, 50, 1015);
    s.neigh_update(&mut io, 0, ip("192.0.2.50"), MacAddr(other), 1016);
    io.take();
    for i in 1..4 {
        send(&mut s, &mut io, 20 + i, 1020);
    }
    for (_, f) in io.take() {
        if u16::from_be_bytes([f[12], f[13]]) == 0x0800 {
            let p = parse_ip(&f);
            assert_ne!(p.eth.destination, other, "to {:?}", p.ip.destination);
        }
    }
}

/// Forwarding to many destinations behind a gateway: after the gateway is resolved, every new
/// destination takes the route's cached gateway entry (no per-destination cache line yet), and
/// a changed gateway MAC is used at once.
#[test]
fn new_destinations_behind_a_gateway_use_its_entry() {
    let (mut s, mut io, c) = setup(cfg());
    let gw = ip("198.51.100.254");
    let send = |s: &mut Stack<VecPacket>, io: &mut TestIo, host: u32, t: u64| {
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + host);
        let f = udp(PEER, MAC0, "192.0.2.10", &dst.to_string(), 64, b"x");
        handle(s, io, 0, &f, t);
    };
    // First packet: ARP for the gateway, held; the reply releases it.
    send(&mut s, &mut io, 0, 0);
    io.take();
    s.neigh_update(&mut io, 1, gw, MacAddr(GW1), 1);
    io.take();
    for h in 1..=50 {
        send(&mut s, &mut io, h, 2);
        let out = io.take();
        assert_eq!(out.len(), 1, "host {h}");
        assert_eq!(out[0].0, 1);
        let p = parse_ip(&out[0].1);
        assert_eq!(p.eth.destination, GW1);
        assert_eq!(
            p.ip.destination,
            (u32::from(Ipv4Addr::new(100, 64, 0, 0)) + h).to_be_bytes()
        );
    }
    let moved = [0x0a, 0, 0, 0, 1, 0xef];
    s.neigh_update(&mut io, 1, gw, MacAddr(moved), 3);
    io.take();
    send(&mut s, &mut io, 51, 4);
    assert_eq!(parse_ip(&io.take()[0].1).eth.destination, moved);
    assert_eq!(c.forwarded.get(), 52);
}

#[test]
fn timer_work_is_bounded() {
    let mut cf = cfg();
    cf.neigh = NeighConf {
        capacity: 256,
        retrans_ms: 100,
        max_probes: 2,
        ..NeighConf::default()
    };
    let (mut s, mut io, _) = setup(cf);
    for i in 0..200u32 {
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 1, 0)) + i);
        handle(
            &mut s,
            &mut io,
            0,
            &udp(PEER, MAC0, "192.0.2.10", &dst.to_string(), 64, b"x"),
            0,
        );
    }
    assert_eq!(io.take().len(), 200);
    s.poll_timers(&mut io, 100);
    assert!(io.take().len() <= rvs_core::stack::TIMER_SCAN);
}

#[test]
fn neigh_update_ignores_unconnected() {
    let (mut s, mut io, _) = setup(cfg());
    s.neigh_update(&mut io, 0, ip("198.51.100.254"), MacAddr(GW1), 0);
    s.neigh_update(&mut io, 7, ip("192.0.2.9"), MacAddr(GW1), 0);
    s.neigh_update(&mut io, 0, ip("192.0.2.9"), MacAddr::BROADCAST, 0);
    assert_eq!(s.neigh_len(), 0);
}

// ----------------------------------------------------------------------------------- Config/API

#[test]
fn config_errors_and_send() {
    fn is_send<T: Send>() {}
    is_send::<Stack<VecPacket>>();
    let mut cf = cfg();
    cf.routes.push(RouteConf {
        prefix: "0.0.0.0/0".parse().unwrap(),
        via: Some(ip("8.8.8.8")),
        port: 0,
    });
    assert!(Stack::<VecPacket>::try_new(&cf, Arc::default()).is_err());
    let mut cf = cfg();
    cf.routes.push(RouteConf {
        prefix: "0.0.0.0/0".parse().unwrap(),
        via: None,
        port: 3,
    });
    assert!(Stack::<VecPacket>::try_new(&cf, Arc::default()).is_err());
    let s = Stack::<VecPacket>::new(&cfg(), Arc::default());
    assert_eq!(s.route_lookup(ip("8.8.8.8")).unwrap().port, 1);
    assert_eq!(
        s.route_lookup(ip("198.51.100.3")).unwrap().prefix,
        "198.51.100.0/24".parse::<Prefix>().unwrap()
    );
    assert!(s.is_owned_on(1, ip("10.1.0.1")) && !s.is_owned_on(0, ip("10.1.0.1")));
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

/// Outcome count of everything so far: drops (alloc never fails here; held packets dropped on
/// neighbour failure were already counted as held) + sends - generated packets + held - released
/// + consumed ARP replies.
fn outcomes(c: &CoreCounters, io: &TestIo) -> i64 {
    c.snapshot().total_drops() as i64 - c.drops(DropReason::NeighFailed) as i64
        + io.sent.len() as i64
        + c.neigh_held.get() as i64
        - c.neigh_released.get() as i64
        + c.arp_replies_rx.get() as i64
        - io.allocs as i64
}

#[test]
fn garbage_never_panics_and_is_counted_once() {
    let mut cf = cfg();
    cf.neigh.capacity = 32;
    let (mut s, mut io, c) = setup(cf);
    s.neigh_update(&mut io, 1, ip("198.51.100.254"), MacAddr(GW1), 0);
    let seeds: Vec<Vec<u8>> = vec![
        arp(
            BCAST,
            PEER,
            ArpOperation::REQUEST,
            v4("192.0.2.10"),
            [0; 6],
            v4("192.0.2.1"),
        ),
        arp(
            MAC0,
            PEER,
            ArpOperation::REPLY,
            v4("192.0.2.11"),
            MAC0,
            v4("192.0.2.1"),
        ),
        echo_req(PEER, MAC0, "192.0.2.10", "192.0.2.1", 64, b"hello"),
        echo_req(PEER, MAC0, "192.0.2.12", "8.8.8.8", 1, b"hello"),
        udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, &[1; 40]),
        udp(GW1, MAC1, "8.8.8.8", "192.0.2.13", 64, &[1; 40]),
    ];
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 50_000;
    let mut now = 0;
    for i in 0..n {
        let port = (r.next() % 2) as PortIdx;
        let mut f = match r.next() % 3 {
            0 => {
                let len = (r.next() % 120) as usize;
                let mut f: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
                if len >= 14 && r.next().is_multiple_of(2) {
                    f[..6].copy_from_slice(if port == 0 { &MAC0 } else { &MAC1 });
                    f[12..14].copy_from_slice(if r.next().is_multiple_of(2) {
                        &[8, 0]
                    } else {
                        &[8, 6]
                    });
                }
                f
            }
            _ => {
                let mut f = seeds[(r.next() % seeds.len() as u64) as usize].clone();
                for _ in 0..(r.next() % 4) {
                    let at = (r.next() as usize) % f.len();
                    f[at] = r.next() as u8;
                }
                if r.next().is_multiple_of(4) {
                    let l = (r.next() as usize) % (f.len() + 1);
                    f.truncate(l);
                }
                if r.next().is_multiple_of(2) && f.len() >= 34 && f[12..14] == [8, 0] {
                    // Repair the IP checksum so the mutation reaches deeper.
                    f[24] = 0;
                    f[25] = 0;
                    let ihl = ((f[14] & 0xf) as usize * 4).max(20).min(f.len() - 14);
                    let c = rvs_core::checksum::checksum(&f[14..14 + ihl]);
                    f[24..26].copy_from_slice(&c.to_be_bytes());
                }
                f
            }
        };
        if r.next().is_multiple_of(3) {
            f.resize(f.len().max(60), 0);
        }
        let before = outcomes(&c, &io);
        s.handle(&mut io, port, VecPacket::from_slice(&f), now);
        let after = outcomes(&c, &io);
        assert_eq!(after - before, 1, "input {i} {f:02x?}");
        if i % 100 == 0 {
            now += 37;
            let before = outcomes(&c, &io);
            s.poll_timers(&mut io, now);
            assert_eq!(outcomes(&c, &io), before);
        }
    }
    assert!(c.forwarded.get() > 0 && c.icmp_echo_replies.get() > 0 && c.arp_replies_sent.get() > 0);
}

/// A stale neighbour in use that does not answer `max_probes` unicast probes is asked by
/// broadcast: a host replaced under the same address (a new MAC, no gratuitous ARP) is learnt
/// again, and traffic goes to it.
#[test]
fn unanswered_unicast_probes_fall_back_to_broadcast() {
    let (mut s, mut io, c) = setup(small_neigh());
    let gw = ip("198.51.100.254");
    s.neigh_update(&mut io, 1, gw, MacAddr(GW1), 0);
    let f = udp(PEER, MAC0, "192.0.2.10", "8.8.8.8", 64, b"a");
    let mut probes = Vec::new();
    for t in [2000, 2100, 2200, 2300] {
        handle(&mut s, &mut io, 0, &f, t);
        for (_, fr) in io.take() {
            if fr[12..14] == [0x08, 0x06] {
                probes.push(parse_arp(&fr).0.destination);
            } else {
                assert_eq!(parse_ip(&fr).eth.destination, GW1, "the old MAC meanwhile");
            }
        }
    }
    assert_eq!(probes, vec![GW1, GW1, GW1, [0xff; 6]]);
    // The new host answers the broadcast.
    const NEW: [u8; 6] = [0x0a, 0, 0, 0, 1, 0x77];
    handle(
        &mut s,
        &mut io,
        1,
        &arp(
            MAC1,
            NEW,
            ArpOperation::REPLY,
            v4("198.51.100.254"),
            MAC1,
            v4("198.51.100.1"),
        ),
        2350,
    );
    assert_eq!(s.neigh_state(1, gw, 2350), Some(NeighState::Reachable));
    handle(&mut s, &mut io, 0, &f, 2400);
    assert_eq!(parse_ip(&io.take()[0].1).eth.destination, NEW);
    assert_eq!(total_drops(&c), 0);
}
