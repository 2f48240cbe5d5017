//! Writes the seed corpus of `packet_core`: well-formed conversations (ARP, ping, a routed packet,
//! a TCP handshake through the VIP with the real server's replies, UDP, ICMP errors) in the
//! target's input format. Run: cargo run --bin seed_corpus -- corpus/packet_core
use etherparse::PacketBuilder;

const C_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const RS_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];
const GW0: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GW1: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CIP: [u8; 4] = [192, 0, 2, 2];
const VIP: [u8; 4] = [203, 0, 113, 10];
const LIP: [u8; 4] = [198, 51, 100, 2];
const RIP: [u8; 4] = [198, 51, 100, 11];

fn rec(out: &mut Vec<u8>, port: u8, step: u8, frame: &[u8]) {
    out.extend_from_slice(&[port, step]);
    out.extend_from_slice(&(frame.len() as u16).to_le_bytes());
    out.extend_from_slice(frame);
}

fn arp(src_mac: [u8; 6], dst_mac: [u8; 6], op: u16, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&if op == 2 { dst_mac } else { [0; 6] });
    f.extend_from_slice(&tpa);
    f
}

fn tcp(src_mac: [u8; 6], dst_mac: [u8; 6], s: [u8; 4], d: [u8; 4], sp: u16, dp: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(s, d, 64).tcp(sp, dp, 1000, 65535);
    for c in flags.chars() {
        b = match c {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => b,
        };
    }
    if flags.contains('S') {
        b = b.options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460), etherparse::TcpOptionElement::Noop, etherparse::TcpOptionElement::Noop, etherparse::TcpOptionElement::Timestamp(1, 0)]).unwrap();
    }
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], s: [u8; 4], d: [u8; 4], sp: u16, dp: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac).ipv4(s, d, 64).udp(sp, dp).write(&mut f, b"query").unwrap();
    f
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus/packet_core".into());
    std::fs::create_dir_all(&dir).unwrap();
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();

    let mut s = Vec::new();
    rec(&mut s, 0, 0, &arp(C_MAC, [0xff; 6], 1, CIP, [192, 0, 2, 1]));
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(C_MAC, GW0).ipv4(CIP, [192, 0, 2, 1], 64).icmpv4_echo_request(1, 1).write(&mut ping, b"hello").unwrap();
    rec(&mut s, 0, 1, &ping);
    seeds.push(("arp_ping", s));

    for lport in [1026u16, 1028, 1025] {
        let mut s = Vec::new();
        rec(&mut s, 1, 0, &arp(RS_MAC, [0xff; 6], 1, RIP, LIP));
        rec(&mut s, 0, 1, &tcp(C_MAC, GW0, CIP, VIP, 40000, 80, "S", b""));
        rec(&mut s, 1, 1, &arp(RS_MAC, GW1, 2, RIP, [198, 51, 100, 1]));
        rec(&mut s, 1, 1, &tcp(RS_MAC, GW1, RIP, LIP, 80, lport, "SA", b""));
        rec(&mut s, 0, 1, &tcp(C_MAC, GW0, CIP, VIP, 40000, 80, "A", b""));
        rec(&mut s, 0, 1, &tcp(C_MAC, GW0, CIP, VIP, 40000, 80, "PA", b"GET / HTTP/1.0\r\n\r\n"));
        rec(&mut s, 1, 1, &tcp(RS_MAC, GW1, RIP, LIP, 80, lport, "PA", b"HTTP/1.0 200 OK\r\n\r\n"));
        rec(&mut s, 1, 1, &tcp(RS_MAC, GW1, RIP, LIP, 80, lport, "FA", b""));
        rec(&mut s, 0, 1, &tcp(C_MAC, GW0, CIP, VIP, 40000, 80, "FA", b""));
        rec(&mut s, 0, 200, &tcp(C_MAC, GW0, CIP, VIP, 40000, 80, "R", b""));
        seeds.push((Box::leak(format!("tcp_conn_{lport}").into_boxed_str()), s));
    }

    let mut s = Vec::new();
    rec(&mut s, 0, 0, &udp(C_MAC, GW0, CIP, VIP, 5353, 53));
    rec(&mut s, 1, 0, &udp(RS_MAC, GW1, RIP, LIP, 53, 1026));
    seeds.push(("udp", s));

    // ICMP frag-needed from the real-server side quoting LIP:lport -> RIP:80, and TTL 1 transit.
    let quoted = &tcp(GW1, RS_MAC, LIP, RIP, 1026, 80, "A", b"")[14..14 + 28];
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2(RS_MAC, GW1)
        .ipv4([198, 51, 100, 254], LIP, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 }))
        .write(&mut icmp, quoted)
        .unwrap();
    let mut s = Vec::new();
    rec(&mut s, 0, 0, &tcp(C_MAC, GW0, CIP, VIP, 40001, 80, "S", b""));
    rec(&mut s, 1, 1, &icmp);
    let mut ttl1 = Vec::new();
    PacketBuilder::ethernet2(C_MAC, GW0).ipv4(CIP, RIP, 1).udp(1, 2).write(&mut ttl1, b"x").unwrap();
    rec(&mut s, 0, 1, &ttl1);
    seeds.push(("icmp_errors", s));

    for (name, data) in seeds {
        std::fs::write(format!("{dir}/seed_{name}"), data).unwrap();
    }
}
