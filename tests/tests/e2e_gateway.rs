//! End to end: rvsd on DPDK AF_XDP ports (AF_PACKET if AF_XDP cannot start) inside a network
//! namespace, a real client (ping, curl) and real HTTP servers in their own namespaces. Packets are
//! checked on a tcpdump capture decoded by etherparse, independently of rvs's own code.

use std::path::PathBuf;

use etherparse::{ArpOperation, NetSlice, SlicedPacket, TransportSlice};
use rvs_tests::*;

const GW_CLIENT_IP: [u8; 4] = [192, 0, 2, 1];
const CLIENT_IP: [u8; 4] = [192, 0, 2, 2];

fn config(dir: &std::path::Path, prefix: &str, pmd: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("configs/demo.toml"))
        .unwrap()
        .replace("rvs-demo", &format!("{prefix}-e2e"))
        .replace("net_af_xdp", pmd)
        + &format!(
            "\n[control]\nsocket = \"{}\"\n",
            test_socket(&format!("{prefix}-e2e")).display()
        );
    let path = dir.join(format!("rvsd-{pmd}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn mac_of(netns: &str, dev: &str) -> [u8; 6] {
    let o = ns(netns, &format!("cat /sys/class/net/{dev}/address"));
    let s = String::from_utf8_lossy(&o.stdout);
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

#[test]
fn gateway_answers_arp_and_ping_and_routes_between_namespaces() {
    if !prerequisites("e2e gateway") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvst", 2);
    let (cl, gw) = (topo.ns("cl"), topo.ns("gw"));
    let dir = tempdir("e2e");

    // The gateway's veths have no kernel IPv4 address: only rvsd can answer.
    let addrs = text(&ns(&gw, "ip -4 -o addr show"));
    assert!(
        !addrs.contains("192.0.2.1"),
        "kernel owns the gateway address: {addrs}"
    );

    let (rvsd, _) = start_gateway(&dir, &gw, "gateway", |pmd| {
        std::fs::read_to_string(config(&dir, "rvst", pmd)).unwrap()
    });
    // The DPDK port's MAC as the PMD reports it is the veth's.
    let gw_mac = mac_of(&gw, "gw-c");

    let cap = Capture::start(&cl, "cl0", &dir.join("client.pcap"));
    let ping = ns(&cl, "ping -c 3 -i 0.2 -W 2 192.0.2.1");
    let frames = cap.finish();
    assert!(
        ping.status.success(),
        "ping to the gateway failed:\n{}\n{}",
        text(&ping),
        rvsd.log_text()
    );

    // Oracle: decode the capture with etherparse.
    let mut arp_replies = 0;
    let mut echo_replies = 0;
    for f in &frames {
        let p = SlicedPacket::from_ethernet(f).expect("capture holds valid Ethernet frames");
        let eth = p.link.as_ref().and_then(|l| l.to_header()).unwrap();
        let eth = match eth {
            etherparse::LinkHeader::Ethernet2(e) => e,
            _ => continue,
        };
        match &p.net {
            Some(NetSlice::Arp(a)) if a.operation() == ArpOperation::REPLY => {
                assert_eq!(a.sender_protocol_addr(), GW_CLIENT_IP);
                assert_eq!(
                    a.sender_hw_addr(),
                    gw_mac,
                    "ARP reply must carry the DPDK port's MAC"
                );
                assert_eq!(eth.source, gw_mac);
                arp_replies += 1;
            }
            Some(NetSlice::Ipv4(ip)) if ip.header().source() == GW_CLIENT_IP => {
                let h = ip.header().to_header();
                assert_eq!(h.destination, CLIENT_IP);
                assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
                if let Some(TransportSlice::Icmpv4(icmp)) = &p.transport {
                    assert!(matches!(
                        icmp.icmp_type(),
                        etherparse::Icmpv4Type::EchoReply(_)
                    ));
                    let payload = icmp.payload();
                    assert_eq!(
                        icmp.checksum(),
                        icmp.header().icmp_type.calc_checksum(payload),
                        "ICMP checksum"
                    );
                    assert_eq!(eth.source, gw_mac);
                    echo_replies += 1;
                }
            }
            _ => {}
        }
    }
    assert!(
        arp_replies >= 1,
        "no ARP reply from rvsd in the capture ({} frames)",
        frames.len()
    );
    assert_eq!(echo_replies, 3, "echo replies from rvsd in the capture");
    let neigh = text(&ns(&cl, "ip neigh show 192.0.2.1"));
    let mac_s = gw_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        neigh.contains(&mac_s),
        "client's ARP entry for the gateway: {neigh} (want {mac_s})"
    );

    // Routed through rvsd: ICMP and a real HTTP request to each real server.
    let o = ns(&cl, "ping -c 2 -i 0.2 -W 2 198.51.100.11");
    assert!(
        o.status.success(),
        "ping through rvsd failed:\n{}",
        text(&o)
    );
    assert!(
        text(&o).contains("ttl=63"),
        "TTL must be decremented once by rvsd: {}",
        text(&o)
    );
    for i in 1..=2 {
        let o = ns(
            &cl,
            &format!("curl -s --max-time 5 http://198.51.100.1{i}/"),
        );
        assert_eq!(
            text(&o).trim(),
            format!("rs{i} 198.51.100.1{i}"),
            "HTTP through rvsd to rs{i}"
        );
    }
    // TTL 1: rvsd answers time exceeded.
    let o = ns(&cl, "ping -c 1 -t 1 -W 2 198.51.100.11");
    assert!(
        text(&o).contains("Time to live exceeded"),
        "expected ICMP time exceeded: {}",
        text(&o)
    );

    let (clean, log) = rvsd.stop();
    assert!(clean, "rvsd did not stop cleanly on SIGTERM:\n{log}");
    assert!(
        log.contains("final statistics") && log.contains("port 0 \"client\": rx"),
        "final stats:\n{log}"
    );
    assert_eq!(
        final_counter(&log, "icmp_echo_replies"),
        3,
        "echo replies counted:\n{log}"
    );
    assert_eq!(
        final_counter(&log, "ttl_exceeded"),
        1,
        "TTL drop counted:\n{log}"
    );
    drop(topo);
}
