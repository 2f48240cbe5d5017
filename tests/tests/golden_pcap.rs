//! Deterministic golden trace through DPDK's net_pcap PMD: rvsd reads frames built here with
//! etherparse from rx_pcap and writes what it sends to tx_pcap. The output is checked field by
//! field with etherparse (an independent decoder) and byte for byte against
//! tests/golden/l2l3.out.pcap (`UPDATE_GOLDEN=1` rewrites it after a reviewed change).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etherparse::{
    ArpOperation, EtherType, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use rvs_tests::*;

const GW: [u8; 4] = [192, 0, 2, 1];
const C: [u8; 4] = [192, 0, 2, 2];
const H3: [u8; 4] = [192, 0, 2, 3];
const C_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const H3_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
const BCAST: [u8; 6] = [0xff; 6];

fn arp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    op: ArpOperation,
    sha: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    let a = etherparse::ArpPacket::new(
        etherparse::ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &sha,
        &spa,
        &tha,
        &tpa,
    )
    .unwrap();
    f.extend_from_slice(&a.to_bytes());
    f
}

fn udp(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], ttl: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(C_MAC, dst_mac)
        .ipv4(src, dst, ttl)
        .udp(40000, 9000);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

fn echo(dst_mac: [u8; 6], dst: [u8; 4]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(C_MAC, dst_mac)
        .ipv4(C, dst, 64)
        .icmpv4_echo_request(0x1234, 1);
    let mut f = Vec::new();
    b.write(&mut f, b"rvs-golden").unwrap();
    f
}

fn input(gw_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let mut bad_csum = udp(gw_mac, C, GW, 64, b"x");
    bad_csum[14 + 10] ^= 0xff; // corrupt the IPv4 header checksum
    let mut ipv6 = vec![0u8; 60];
    ipv6[..6].copy_from_slice(&gw_mac);
    ipv6[6..12].copy_from_slice(&C_MAC);
    ipv6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    ipv6[14] = 0x60;
    vec![
        // 1. who-has 192.0.2.1 -> ARP reply
        arp(C_MAC, BCAST, ArpOperation::REQUEST, C_MAC, C, [0; 6], GW),
        // 2. echo request to the gateway -> echo reply (neighbour learned from 1)
        echo(gw_mac, GW),
        // 3. who-has an address rvs does not own -> dropped (arp_not_for_us)
        arp(
            C_MAC,
            BCAST,
            ArpOperation::REQUEST,
            C_MAC,
            C,
            [0; 6],
            [192, 0, 2, 99],
        ),
        // 4. bad IPv4 header checksum -> dropped
        bad_csum,
        // 5. transit to 192.0.2.3 (unresolved) -> held, ARP request for it
        udp(gw_mac, C, H3, 64, b"forward me"),
        // 6. 192.0.2.3 answers -> held packet released, TTL 63
        arp(H3_MAC, gw_mac, ArpOperation::REPLY, H3_MAC, H3, gw_mac, GW),
        // 7. TTL 1 -> ICMP time exceeded
        udp(gw_mac, C, H3, 1, b"ttl one"),
        // 8. no route -> ICMP net unreachable
        udp(gw_mac, C, [203, 0, 113, 9], 64, b"nowhere"),
        // 9. another host's MAC -> dropped (not_for_us)
        udp([0x02, 0, 0, 0, 0, 0x77], C, H3, 64, b"not ours"),
        // 10. IPv6 -> dropped (ipv6_unsupported)
        ipv6,
        // 11. truncated frame -> dropped (eth_truncated)
        vec![0xff; 10],
        // 12. UDP to the gateway itself -> dropped (local_l4)
        udp(gw_mac, C, GW, 64, b"local"),
    ]
}

const EXPECTED_OUT: usize = 7;

fn parse_mac(log: &str) -> [u8; 6] {
    let s = log
        .split(" mac ")
        .nth(1)
        .expect("rvsd logs the port MAC")
        .split_whitespace()
        .next()
        .unwrap();
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn write_config(dir: &Path, rx: &Path, tx: &Path) -> PathBuf {
    let cfg = format!(
        r#"
[eal]
file_prefix = "rvs-golden"
args = ["--log-level", "*:warning"]

[dataplane]
workers = [1]
ip_forward = true

[control]
socket = "{}"

[[port]]
name = "lan"
device = "net_pcap0,rx_pcap={},tx_pcap={}"
addresses = ["192.0.2.1/24"]
"#,
        test_socket("rvs-golden").display(),
        rx.display(),
        tx.display()
    );
    let p = dir.join("golden.toml");
    std::fs::write(&p, cfg).unwrap();
    p
}

#[test]
fn golden_trace_through_net_pcap() {
    if !prerequisites("golden pcap") {
        return;
    }
    let _g = serial();
    let dir = std::env::temp_dir().join(format!("rvs-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (rx, tx) = (dir.join("in.pcap"), dir.join("out.pcap"));

    // First learn the MAC the PMD gives the port (it is fixed per PMD), with an empty trace.
    pcap::write(&rx, &[]);
    let r = Rvsd::start(&write_config(&dir, &rx, &tx), None);
    let gw_mac = parse_mac(&r.log_text());
    let (ok, log) = r.stop();
    assert!(ok, "rvsd stop:\n{log}");

    pcap::write(&rx, &input(gw_mac));
    let r = Rvsd::start(&write_config(&dir, &rx, &tx), None);
    // net_pcap writes tx_pcap as it goes; wait for the expected count, then stop (which flushes).
    let t0 = Instant::now();
    while pcap::read(&tx).len() < EXPECTED_OUT && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, log) = r.stop();
    assert!(ok, "rvsd stop:\n{log}");
    let out = pcap::read(&tx);
    check_fields(&out, gw_mac, &log);

    // Drops, by reason, in rvsd's final statistics.
    for reason in [
        "arp_not_for_us",
        "ipv4_bad_checksum",
        "not_for_us",
        "ipv6_unsupported",
        "eth_truncated",
        "local_l4",
        "ttl_exceeded",
        "no_route",
    ] {
        assert_eq!(
            final_counter(&log, reason),
            1,
            "final statistics: `{reason}` once:\n{log}"
        );
    }

    let golden = root().join("tests/golden/l2l3.out.pcap");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        // A rewritten golden trace would only compare the output with itself.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "UPDATE_GOLDEN is for a reviewed change on a developer's machine, not for CI"
        );
        pcap::write(&golden, &out);
    }
    let want = pcap::read(&golden);
    assert!(
        !want.is_empty(),
        "missing {} (UPDATE_GOLDEN=1 writes it)",
        golden.display()
    );
    assert_eq!(
        out.len(),
        want.len(),
        "frame count differs from the golden trace"
    );
    for (i, (a, b)) in out.iter().zip(&want).enumerate() {
        assert_eq!(hex(a), hex(b), "frame {i} differs from the golden trace");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check_fields(out: &[Vec<u8>], gw_mac: [u8; 6], log: &str) {
    assert_eq!(out.len(), EXPECTED_OUT, "frames sent by rvsd ({log})");
    let p: Vec<SlicedPacket> = out
        .iter()
        .map(|f| SlicedPacket::from_ethernet(f).unwrap())
        .collect();
    let eth = |i: usize| match p[i].link.as_ref().unwrap().to_header().unwrap() {
        etherparse::LinkHeader::Ethernet2(e) => e,
        _ => panic!("frame {i}: not Ethernet II"),
    };
    let arp = |i: usize| match &p[i].net {
        Some(NetSlice::Arp(a)) => a.to_packet(),
        other => panic!("frame {i}: not ARP: {other:?}"),
    };
    let ipv4 = |i: usize| match &p[i].net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(
                h.header_checksum,
                h.calc_header_checksum(),
                "frame {i}: IPv4 checksum"
            );
            h
        }
        other => panic!("frame {i}: not IPv4: {other:?}"),
    };
    let icmp = |i: usize| match &p[i].transport {
        Some(TransportSlice::Icmpv4(s)) => {
            assert_eq!(
                s.checksum(),
                s.header().icmp_type.calc_checksum(s.payload()),
                "frame {i}: ICMP checksum"
            );
            s.clone()
        }
        other => panic!("frame {i}: not ICMPv4: {other:?}"),
    };
    for i in 0..out.len() {
        assert_eq!(eth(i).source, gw_mac, "frame {i}: source MAC is the port's");
    }
    // 0: gratuitous ARP at start.
    let a = arp(0);
    assert_eq!(
        (eth(0).destination, a.operation),
        (BCAST, ArpOperation::REQUEST)
    );
    assert_eq!(
        (a.sender_protocol_addr(), a.target_protocol_addr()),
        (&GW[..], &GW[..])
    );
    // 1: ARP reply to the client.
    let a = arp(1);
    assert_eq!(
        (eth(1).destination, a.operation),
        (C_MAC, ArpOperation::REPLY)
    );
    assert_eq!(
        (a.sender_hw_addr(), a.sender_protocol_addr()),
        (&gw_mac[..], &GW[..])
    );
    assert_eq!(
        (a.target_hw_addr(), a.target_protocol_addr()),
        (&C_MAC[..], &C[..])
    );
    // 2: echo reply.
    let h = ipv4(2);
    assert_eq!(
        (eth(2).destination, h.source, h.destination),
        (C_MAC, GW, C)
    );
    let e = icmp(2);
    assert_eq!(
        e.icmp_type(),
        Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader { id: 0x1234, seq: 1 })
    );
    assert_eq!(e.payload(), b"rvs-golden");
    // 3: ARP request for the unresolved next hop.
    let a = arp(3);
    assert_eq!(
        (eth(3).destination, a.operation),
        (BCAST, ArpOperation::REQUEST)
    );
    assert_eq!(
        (a.sender_protocol_addr(), a.target_protocol_addr()),
        (&GW[..], &H3[..])
    );
    // 4: the held packet, forwarded with TTL 63.
    let h = ipv4(4);
    assert_eq!(
        (eth(4).destination, h.source, h.destination, h.time_to_live),
        (H3_MAC, C, H3, 63)
    );
    match &p[4].transport {
        Some(TransportSlice::Udp(u)) => assert_eq!(u.payload(), b"forward me"),
        other => panic!("frame 4: not UDP: {other:?}"),
    }
    // 5: time exceeded, 6: net unreachable, both to the client, quoting the offending header.
    for (i, want) in [(5usize, "time exceeded"), (6, "net unreachable")] {
        let h = ipv4(i);
        assert_eq!(
            (eth(i).destination, h.source, h.destination),
            (C_MAC, GW, C),
            "frame {i}"
        );
        let t = icmp(i).icmp_type();
        let ok = match want {
            "time exceeded" => matches!(
                t,
                Icmpv4Type::TimeExceeded(
                    etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit
                )
            ),
            _ => matches!(
                t,
                Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::Network
                )
            ),
        };
        assert!(ok, "frame {i}: want {want}, got {t:?}");
        let quoted = icmp(i).payload().to_vec();
        let (qh, _) = etherparse::Ipv4Header::from_slice(&quoted).unwrap();
        assert_eq!(qh.source, C, "frame {i}: quoted header");
    }
}
