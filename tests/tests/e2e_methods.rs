//! End to end NAT, DR and TUN (issue "NAT, DR and TUN forwarding methods"): real curl clients,
//! real HTTP servers, rvsd on DPDK ports; captures decoded by etherparse.

use etherparse::{
    IpNumber, Ipv4HeaderSlice, NetSlice, SlicedPacket, TcpHeaderSlice, TransportSlice,
};
use rvs_tests::*;

const VIP: &str = "203.0.113.10";

fn gateway_config(pmd: &str, prefix: &str, services: &str) -> String {
    gateway_toml(pmd, &format!("{prefix}-methods"), None, services)
}

fn service(proto: &str, vport: u16, forward: &str, reals: &[(u8, u16)]) -> String {
    let mut s = format!(
        "\n[[service]]\nproto = \"{proto}\"\nvip = \"{VIP}\"\nvport = {vport}\nscheduler = \"rr\"\nport = \"client\"\nforward = \"{forward}\"\n"
    );
    for (i, port) in reals {
        s.push_str(&format!(
            "  [[service.real]]\n  ip = \"198.51.100.1{i}\"\n  port = {port}\n"
        ));
    }
    s
}

/// Serve the real server's web root on the VIP too (DR/TUN real servers accept the VIP locally).
fn serve_on_vip(topo: &Topo, i: u8) {
    let rs = topo.ns(&format!("rs{i}"));
    for cmd in [
        format!("ip -n {rs} addr add {VIP}/32 dev lo"),
        format!("ip netns exec {rs} sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2"),
        // Replies go to the client through the LAN's own router, not through rvsd.
        format!("ip -n {rs} route replace 192.0.2.0/24 via 198.51.100.254"),
    ] {
        let o = sh(&cmd);
        assert!(o.status.success(), "{cmd}: {}", text(&o));
    }
    let _ = sh(&format!(
        "ip netns exec {rs} setsid python3 -m http.server 80 --bind {VIP} --directory /tmp/{rs}-www >/dev/null 2>&1 < /dev/null &"
    ));
    wait_listen(&rs, &format!("{VIP}:80"));
}

/// A userspace IPIP decapsulator for a real server whose kernel has no ipip module: IPIP
/// packets (protocol 4) read from a raw socket, outer IPv4 header stripped, written into TUN
/// interface `rvs-decap`, from which the kernel takes the inner packet as received.
const DECAP_PY: &str = r#"
import fcntl, os, socket, struct
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454ca, 0x0001, 0x1000
tun = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"rvs-decap", IFF_TUN | IFF_NO_PI))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, 4)
while True:
    pkt = raw.recv(65535)
    os.write(tun, pkt[(pkt[0] & 15) * 4:])
"#;

fn curl(cl: &str, url: &str) -> String {
    text(&ns(cl, &format!("curl -s --max-time 5 {url}")))
        .trim()
        .to_string()
}

#[test]
fn nat_real_servers_see_the_client_and_ports_can_be_mapped() {
    if !prerequisites("e2e NAT") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsn", 2);
    let cl = topo.ns("cl");
    let dir = tempdir("nat");
    let services = service("tcp", 80, "nat", &[(1, 80), (2, 80)])
        + &service("tcp", 8080, "nat", &[(1, 80)])
        + &service("udp", 7, "nat", &[(1, 7), (2, 7)]);
    // UDP echo servers that tell who they are and whom they saw.
    for i in 1..=2 {
        let _ = sh(&format!(
            "ip netns exec {}-rs{i} setsid python3 -c \"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',7))\nwhile True:\n d,a=s.recvfrom(2048);s.sendto(b'rs{i} '+a[0].encode()+b' '+d,a)\" >/dev/null 2>&1 < /dev/null &",
            topo.prefix
        ));
        let rs = topo.ns(&format!("rs{i}"));
        wait_until("the UDP echo server", || {
            text(&ns(&rs, "ss -Hlun sport = :7")).contains(":7")
        });
    }
    let (rvsd, _) = start_gateway(&dir, &topo.ns("gw"), "nat", |pmd| {
        gateway_config(pmd, "rvsn", &services)
    });
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let body = curl(&cl, &format!("http://{VIP}/"));
        assert!(
            body.starts_with("rs"),
            "NAT request failed: {body:?}\n{}",
            rvsd.log_text()
        );
        seen.insert(body);
    }
    assert_eq!(seen.len(), 2, "rr over both real servers: {seen:?}");
    assert_eq!(
        curl(&cl, &format!("http://{VIP}:8080/")),
        "rs1 198.51.100.11",
        "port mapping 8080 -> 80"
    );
    // UDP through NAT: each datagram from a new socket (a new session) is answered by the real
    // server rr picked, from the VIP, and the real server saw the client's own address.
    let o = ns(
        &cl,
        &format!("python3 -c \"import socket\nfor i in range(6):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3)\n s.sendto(b'ping%d'%i,('{VIP}',7));d,a=s.recvfrom(2048)\n print(a[0],d.decode())\""),
    );
    let replies = text(&o);
    assert!(
        o.status.success(),
        "UDP through NAT: {replies}\n{}",
        rvsd.log_text()
    );
    let lines: Vec<&str> = replies.lines().collect();
    assert_eq!(lines.len(), 6, "{replies}");
    for (i, l) in lines.iter().enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f[0], VIP, "the reply comes from the VIP: {l}");
        assert!(f[1] == "rs1" || f[1] == "rs2", "{l}");
        assert_eq!(f[2], "192.0.2.2", "the real server sees the client: {l}");
        assert_eq!(f[3], format!("ping{i}"), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.contains(" rs1 ")) && lines.iter().any(|l| l.contains(" rs2 ")),
        "rr over both: {replies}"
    );
    // NAT keeps the client's address: the real server's access log names 192.0.2.2.
    let log = std::fs::read_to_string(format!("/tmp/{}-http.log", topo.ns("rs1"))).unwrap();
    let last = log.lines().rfind(|l| l.contains("GET /")).unwrap();
    assert!(
        last.starts_with("192.0.2.2 "),
        "real server sees the client as source: {last}"
    );
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
}

#[test]
fn dr_replies_bypass_the_gateway() {
    if !prerequisites("e2e DR") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsd", 2);
    let (cl, lan) = (topo.ns("cl"), topo.ns("lan"));
    let dir = tempdir("dr");
    for i in 1..=2 {
        serve_on_vip(&topo, i);
    }
    let services = service("tcp", 80, "dr", &[(1, 80), (2, 80)]);
    let (rvsd, _) = start_gateway(&dir, &topo.ns("gw"), "dr", |pmd| {
        gateway_config(pmd, "rvsd", &services)
    });
    let to_gw = Capture::start(&lan, "lan-gw", &dir.join("lan-gw.pcap"));
    let at_client = Capture::start(&cl, "cl1", &dir.join("cl1.pcap"));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        let body = curl(&cl, &format!("http://{VIP}/"));
        assert!(
            body.starts_with("rs"),
            "DR request failed: {body:?}\n{}",
            rvsd.log_text()
        );
        seen.insert(body);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let vip: [u8; 4] = [203, 0, 113, 10];
    let from_vip = |frames: &[Vec<u8>]| {
        frames
            .iter()
            .filter(|f| {
                matches!(SlicedPacket::from_ethernet(f).ok().and_then(|p| p.net),
                Some(NetSlice::Ipv4(ip)) if ip.header().source() == vip)
            })
            .count()
    };
    let (gw_frames, cl_frames) = (to_gw.finish(), at_client.finish());
    assert_eq!(
        from_vip(&gw_frames),
        0,
        "no reply from the VIP crosses rvsd's server-side link"
    );
    assert!(
        from_vip(&cl_frames) >= 10,
        "replies reach the client through the LAN router"
    );
    // Requests crossed rvsd with only their MACs changed: the real servers got them with the VIP intact.
    let to_rs = gw_frames
        .iter()
        .filter(|f| matches!(SlicedPacket::from_ethernet(f).ok().and_then(|p| p.net),
            Some(NetSlice::Ipv4(ip)) if ip.header().destination() == vip && ip.header().source() == [192, 0, 2, 2]))
        .count();
    assert!(
        to_rs >= 10,
        "client requests to the VIP forwarded on the server LAN: {to_rs}"
    );
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
}

#[test]
fn tun_encapsulates_in_ipip_and_answers_frag_needed() {
    if !prerequisites("e2e TUN") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsu", 1);
    let (cl, rs1) = (topo.ns("cl"), topo.ns("rs1"));
    let dir = tempdir("tun");
    // The real server decapsulates IPIP with the kernel's ipip module, or, where the kernel has
    // none (this VM's), with a userspace decapsulator: a raw IPIP socket whose packets, outer
    // header stripped, go into a TUN interface; either way the real server's kernel answers
    // the inner connection itself (from the VIP, straight to the client as in DR).
    let ipip = sh(&format!("ip -n {rs1} link add rvs-ipip-probe type ipip"))
        .status
        .success();
    serve_on_vip(&topo, 1);
    if ipip {
        let _ = sh(&format!("ip -n {rs1} link set tunl0 up"));
    } else {
        std::fs::write(dir.join("decap.py"), DECAP_PY).unwrap();
        let _ = sh(&format!(
            "ip netns exec {rs1} setsid python3 {} >{}/decap.log 2>&1 < /dev/null &",
            dir.join("decap.py").display(),
            dir.display()
        ));
        wait_until("the userspace IPIP decapsulator", || {
            ns(&rs1, "ip link show rvs-decap").status.success()
        });
        for cmd in [
            format!("ip -n {rs1} link set rvs-decap up"),
            format!("ip netns exec {rs1} sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.rvs-decap.rp_filter=0"),
        ] {
            let o = sh(&cmd);
            assert!(o.status.success(), "{cmd}: {}", text(&o));
        }
    }
    let services = service("tcp", 80, "tun", &[(1, 80)]) + &service("udp", 9, "tun", &[(1, 9)]);
    let (rvsd, _) = start_gateway(&dir, &topo.ns("gw"), "tun", |pmd| {
        gateway_config(pmd, "rvsu", &services)
    });

    let cap = Capture::start(&rs1, "eth0", &dir.join("rs1.pcap"));
    let body = curl(&cl, &format!("http://{VIP}/"));
    assert_eq!(
        body,
        "rs1 198.51.100.11",
        "curl through an IPIP real server ({})\n{}",
        if ipip {
            "kernel ipip"
        } else {
            "userspace decapsulator"
        },
        std::fs::read_to_string(dir.join("decap.log")).unwrap_or_default()
    );
    let frames = cap.finish();
    let mut encapsulated = 0;
    for f in &frames {
        let Ok(p) = SlicedPacket::from_ethernet(f) else {
            continue;
        };
        let Some(NetSlice::Ipv4(outer)) = &p.net else {
            continue;
        };
        let oh = outer.header();
        if oh.protocol() != IpNumber::IPV4 {
            continue;
        }
        let h = oh.to_header();
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "outer IPv4 checksum"
        );
        assert_eq!(
            (h.source, h.destination),
            ([198, 51, 100, 1], [198, 51, 100, 11]),
            "outer DIP -> RIP"
        );
        let inner_bytes = outer.payload().payload;
        let inner = Ipv4HeaderSlice::from_slice(inner_bytes).expect("inner IPv4 header");
        let ih = inner.to_header();
        assert_eq!(
            ih.header_checksum,
            ih.calc_header_checksum(),
            "inner IPv4 checksum"
        );
        assert_eq!(
            (ih.source, ih.destination),
            ([192, 0, 2, 2], [203, 0, 113, 10]),
            "inner packet untouched"
        );
        assert_eq!(
            h.time_to_live, ih.time_to_live,
            "outer TTL = inner TTL (IPVS)"
        );
        assert_eq!(
            h.dont_fragment, ih.dont_fragment,
            "DF copied from the inner header"
        );
        assert_eq!(h.dscp, ih.dscp, "DSCP copied");
        let l4 = &inner_bytes[ih.header_len()..ih.total_len as usize];
        let tcp = TcpHeaderSlice::from_slice(l4).expect("inner TCP");
        let th = tcp.to_header();
        assert_eq!(
            th.checksum,
            th.calc_checksum_ipv4(&ih, &l4[th.header_len()..]).unwrap(),
            "inner TCP checksum"
        );
        assert_eq!(th.destination_port, 80);
        encapsulated += 1;
    }
    assert!(
        encapsulated >= 1,
        "no IPIP packet reached the real server ({} frames)",
        frames.len()
    );

    // A 1500-byte datagram with DF does not fit in IPIP over a 1500 MTU: ICMP frag-needed, MTU 1480.
    let cap = Capture::start(&cl, "cl0", &dir.join("cl0.pcap"));
    let _ = ns(
        &cl,
        &format!("python3 -c \"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.setsockopt(socket.IPPROTO_IP,10,2);s.sendto(b'x'*1472,('{VIP}',9))\""),
    );
    let frames = cap.finish();
    let frag_needed = frames.iter().find_map(|f| {
        let p = SlicedPacket::from_ethernet(f).ok()?;
        match &p.transport {
            Some(TransportSlice::Icmpv4(i)) => match i.icmp_type() {
                etherparse::Icmpv4Type::DestinationUnreachable(
                    etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu },
                ) => {
                    assert_eq!(
                        i.checksum(),
                        i.header().icmp_type.calc_checksum(i.payload()),
                        "ICMP checksum"
                    );
                    Some(next_hop_mtu)
                }
                _ => None,
            },
            _ => None,
        }
    });
    assert_eq!(
        frag_needed,
        Some(1480),
        "ICMP fragmentation needed with MTU 1500 - 20"
    );
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
    assert!(final_counter(&log, "tun_out") > 0, "{log}");
}
