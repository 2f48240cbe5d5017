//! End to end FULLNAT: a real client (curl, a UDP client) in one namespace, rvsd on DPDK ports in
//! another, three real HTTP servers behind it. Captures are decoded by etherparse, independently of
//! rvs's own code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use rvs_tests::*;

const VIP: &str = "203.0.113.10";
const CIP: [u8; 4] = [192, 0, 2, 2];
const LIPS: [[u8; 4]; 2] = [[198, 51, 100, 2], [198, 51, 100, 3]];

/// Gateway config: FULLNAT TCP :80 (wrr 3/2/1) and UDP :7 (rr) on VIP, two LIPs.
fn config(dir: &Path, prefix: &str, pmd: &str, workers: &[u32], timeouts: &str) -> PathBuf {
    let (eal_lcores, dev_extra) = if workers.len() > 1 {
        // Two workers on a 2-CPU machine: main lcore 0 and worker 1 share CPU 0, worker 2 gets CPU 1.
        (
            "lcores = \"0@0,1@0,2@1\"\n".to_string(),
            format!(",qpairs={}", workers.len()),
        )
    } else {
        (String::new(), String::new())
    };
    let socket = test_socket(&format!("{prefix}-fnat")).display().to_string();
    let cfg = format!(
        r#"
[eal]
file_prefix = "{prefix}-fnat"
args = ["--log-level", "*:warning"]
{eal_lcores}
[dataplane]
workers = {workers:?}

[control]
socket = "{socket}"

[fullnat]
sessions = 16384
{timeouts}

[[port]]
name = "client"
device = "{pmd}0,iface=gw-c{dev_extra}"
addresses = ["192.0.2.1/24"]

[[port]]
name = "servers"
device = "{pmd}1,iface=gw-s{dev_extra}"
addresses = ["198.51.100.1/24"]

[[service]]
proto = "tcp"
vip = "{VIP}"
vport = 80
scheduler = "wrr"
port = "client"
lips = ["198.51.100.2", "198.51.100.3"]
  [[service.real]]
  ip = "198.51.100.11"
  weight = 3
  [[service.real]]
  ip = "198.51.100.12"
  weight = 2
  [[service.real]]
  ip = "198.51.100.13"
  weight = 1

[[service]]
proto = "udp"
vip = "{VIP}"
vport = 7
scheduler = "rr"
port = "client"
lips = ["198.51.100.2", "198.51.100.3"]
  [[service.real]]
  ip = "198.51.100.11"
  [[service.real]]
  ip = "198.51.100.12"

# Nothing listens on :9 of the real server: its ICMP port unreachable (RIP -> LIP) comes back
# to the client translated (VIP -> CIP, about the client's own datagram).
[[service]]
proto = "udp"
vip = "{VIP}"
vport = 9
scheduler = "rr"
port = "client"
lips = ["198.51.100.2"]
  [[service.real]]
  ip = "198.51.100.11"
"#
    );
    let path = dir.join(format!("fnat-{pmd}-{}w.toml", workers.len()));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Start rvsd (AF_XDP, else AF_PACKET; two workers use AF_PACKET's qpairs).
fn start(dir: &Path, topo: &Topo, workers: &[u32], timeouts: &str) -> Rvsd {
    let gw = topo.ns("gw");
    if workers.len() > 1 {
        return Rvsd::start(
            &config(dir, &topo.prefix, "net_af_packet", workers, timeouts),
            Some(&gw),
        );
    }
    start_gateway(dir, &gw, "fnat", |pmd| {
        std::fs::read_to_string(config(dir, &topo.prefix, pmd, workers, timeouts)).unwrap()
    })
    .0
}

/// `n` HTTP GETs of `/` through the VIP, `parallel` at a time; the body names the real server.
fn curl_many(cl: &str, n: usize, parallel: usize) -> (usize, HashMap<String, usize>) {
    let o = ns(
        cl,
        &format!(
            "bash -c 'seq {n} | xargs -P {parallel} -I{{}} curl -s --max-time 10 -o - -w \"\\n\" http://{VIP}/'"
        ),
    );
    let mut by_rs = HashMap::new();
    let mut ok = 0;
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some(rs) = line
            .split_whitespace()
            .next()
            .filter(|w| w.starts_with("rs"))
        {
            *by_rs.entry(rs.to_string()).or_insert(0) += 1;
            ok += 1;
        }
    }
    (ok, by_rs)
}

#[test]
fn fullnat_tcp_wrr_toa_checksums_bulk_and_udp() {
    if !prerequisites("e2e fullnat") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsf", 3);
    let (cl, rs1) = (topo.ns("cl"), topo.ns("rs1"));
    let dir = tempdir("fnat");
    // 50 MB payload, the same on every real server.
    let big = dir.join("big.bin");
    let o = sh(&format!("head -c 50000000 /dev/urandom > {0} && for i in 1 2 3; do cp {0} /tmp/{1}-rs$i-www/big.bin; done", big.display(), topo.prefix));
    assert!(o.status.success(), "{}", text(&o));
    // UDP echo servers on rs1 and rs2 port 7.
    for i in 1..=2 {
        let _ = sh(&format!(
            "ip netns exec {}-rs{i} setsid python3 -c \"import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',7))\nwhile True:\n d,a=s.recvfrom(2048);s.sendto(b'rs{i} '+d,a)\" >/dev/null 2>&1 < /dev/null &",
            topo.prefix
        ));
    }

    let rvsd = start(&dir, &topo, &[1], "");

    // TOA and checksums, seen on the real server's side.
    let cap = Capture::start(&rs1, "eth0", &dir.join("rs1.pcap"));
    let (ok, by_rs) = curl_many(&cl, 500, 50);
    let (frames, cap_dropped) = cap.finish_counted();
    assert_eq!(
        ok,
        500,
        "all requests through the VIP succeed ({by_rs:?})\n{}",
        rvsd.log_text()
    );
    // wrr 3:2:1 → 250 / 167 / 83; per-core scheduling with one worker is exact up to rounding.
    for (rs, want) in [("rs1", 250.0), ("rs2", 166.7), ("rs3", 83.3)] {
        let got = *by_rs.get(rs).unwrap_or(&0) as f64;
        assert!(
            (got - want).abs() <= want * 0.05 + 2.0,
            "{rs}: {got} requests, want {want} ±5% ({by_rs:?})"
        );
    }
    check_rs_capture(&frames, cap_dropped);

    // Bulk: 50 MB through the gateway, intact.
    let o = ns(
        &cl,
        &format!("bash -c 'curl -s --max-time 60 http://{VIP}/big.bin | sha256sum'"),
    );
    let want = text(&sh(&format!("sha256sum {}", big.display())));
    assert_eq!(
        text(&o).split_whitespace().next(),
        want.split_whitespace().next(),
        "50 MB download intact"
    );

    // UDP request/response through the UDP VIP, each request from a new socket (a new session).
    let o = ns(
        &cl,
        &format!("python3 -c \"import socket\nr=[]\nfor i in range(20):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(2)\n s.sendto(b'ping%d'%i,('{VIP}',7));r.append(s.recvfrom(2048)[0].decode())\nprint('\\n'.join(r))\""),
    );
    let replies = text(&o);
    assert!(o.status.success(), "UDP through the VIP: {replies}");
    assert_eq!(
        replies.lines().filter(|l| l.contains("ping")).count(),
        20,
        "{replies}"
    );
    assert!(
        replies.contains("rs1 ping") && replies.contains("rs2 ping"),
        "rr over two UDP reals: {replies}"
    );

    // ICMP errors translated back: the real server's port unreachable reaches the client as
    // one about its own datagram to the VIP (the client's kernel matches the inner addresses,
    // ports and checksums to its connected socket, or the error is not reported).
    let o = ns(
        &cl,
        &format!("python3 -c \"import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);s.connect(('{VIP}',9));s.send(b'anyone?')\ntry:\n s.recv(100);print('answered')\nexcept ConnectionRefusedError:\n print('refused')\nexcept socket.timeout:\n print('timeout')\""),
    );
    assert_eq!(
        text(&o).trim(),
        "refused",
        "port unreachable translated to the client\n{}",
        rvsd.log_text()
    );

    let (clean, log) = rvsd.stop();
    assert!(clean, "rvsd stops cleanly:\n{log}");
    assert!(
        final_counter(&log, "toa_inserted") >= 500,
        "TOA counted:\n{log}"
    );
    assert!(final_counter(&log, "icmp_translated") >= 1, "{log}");
}

/// Every packet the real server received through rvs: source is a LIP, checksums valid, and the
/// handshake-completing ACK of each connection carries option 254 = CIP:cport.
/// `cap_dropped`: frames tcpdump reports it missed. A first client ACK without TOA from before
/// the real server spoke fails the test, unless the capture missed frames: then the real
/// server's reply (after which rvs stops adding TOA) may be among them, and only the share of
/// connections seen with TOA is checked.
fn check_rs_capture(frames: &[Vec<u8>], cap_dropped: u64) {
    // (LIP, lport) -> (ACK with TOA seen, the real server sent after its SYN-ACK).
    let mut syns: HashMap<(u32, u16), (bool, bool)> = HashMap::new();
    let mut toa_seen = 0;
    for f in frames {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            continue;
        };
        let h = ip.header().to_header();
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "IPv4 header checksum"
        );
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            continue;
        };
        if h.source == [198, 51, 100, 11] {
            // The real server's own packets: once it sends after the handshake, rvs stops
            // adding TOA to the client's packets (it holds the connection and read TOA).
            let th = tcp.to_header();
            let key = (u32::from_be_bytes(h.destination), th.destination_port);
            if let Some(c) = syns.get_mut(&key).filter(|_| !th.syn) {
                c.1 = true;
            }
            continue;
        }
        if h.destination != [198, 51, 100, 11] {
            continue;
        }
        assert!(
            LIPS.contains(&h.source),
            "real server sees a LIP as source, got {:?}",
            h.source
        );
        let th = tcp.to_header();
        let want = th.calc_checksum_ipv4(&h, tcp.payload()).unwrap();
        assert_eq!(th.checksum, want, "TCP checksum");
        let key = (u32::from_be_bytes(h.source), th.source_port);
        if th.syn {
            syns.insert(key, (false, false));
            continue;
        }
        let raw = th.options.as_slice();
        if th.ack && !th.fin && !th.rst {
            if let Some((done, rs_spoke)) = syns.get_mut(&key) {
                // A client ACK after the real server spoke need not carry TOA: the capture
                // missed the ones before it (counted below as not seen).
                let missed = (*rs_spoke || cap_dropped > 0) && tcp_option(raw, 254).is_none();
                if !*done && !missed {
                    let opt = tcp_option(raw, 254).unwrap_or_else(|| {
                        panic!(
                            "first ACK of {key:?} carries no TOA option: {raw:?} (capture \
                             missed no frame)"
                        )
                    });
                    assert_eq!(opt.len(), 6, "TOA option length 8");
                    let port = u16::from_be_bytes([opt[0], opt[1]]);
                    assert_eq!(&opt[2..6], &CIP, "TOA address is the client's");
                    assert!(
                        port >= 1024,
                        "TOA port is the client's source port, got {port}"
                    );
                    *done = true;
                    toa_seen += 1;
                }
            }
        }
    }
    assert!(!syns.is_empty(), "the capture holds connections to rs1");
    // Every first client ACK the capture holds from before the real server spoke carried TOA
    // (checked above); tcpdump may miss a few frames under 50 parallel connections (a slow VM
    // phase drops bursts), so a connection whose TOA-carrying packets are not in the capture is
    // tolerated: a TOA-less ACK then only follows the real server's own packets.
    assert!(
        toa_seen * 100 >= syns.len() * 98,
        "TOA seen on {toa_seen} of {} connections to rs1",
        syns.len()
    );
}

#[test]
fn fullnat_two_workers_redirect_and_sessions_expire() {
    if !prerequisites("e2e fullnat 2 workers") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsw", 3);
    let cl = topo.ns("cl");
    let dir = tempdir("fnat2");
    let timeouts = "[fullnat.timeouts]\ntcp = 3\ntcpfin = 2\ntime_wait = 2\nclose = 1\nclose_wait = 2\nlast_ack = 2\nsyn_recv = 2\nsyn_sent = 2\nudp = 2\n";
    let rvsd = start(&dir, &topo, &[1, 2], timeouts);
    let (ok, by_rs) = curl_many(&cl, 200, 20);
    assert_eq!(
        ok,
        200,
        "no request fails with 2 workers ({by_rs:?})\n{}",
        rvsd.log_text()
    );
    // Shortened timeouts: every session expires (both workers' tables listed over the control
    // socket until empty).
    let sock = test_socket(&format!("{}-fnat", topo.prefix));
    let rvsadm = rvsd_bin().with_file_name("rvsadm");
    let mut listing = String::new();
    wait_until("every session to expire", || {
        let o = sh(&format!(
            "{} --socket {} -L -n -c",
            rvsadm.display(),
            sock.display()
        ));
        listing = text(&o);
        // A listing cut short (a worker's page not answered) is no empty table.
        o.status.success()
            && listing.starts_with("IPVS connection entries")
            && !listing
                .lines()
                .any(|l| l.starts_with("TCP") || l.starts_with("UDP"))
    });
    let (clean, log) = rvsd.stop();
    assert!(clean, "{log}");
    assert!(
        final_counter(&log, "redirected_out") > 0,
        "replies on the wrong core are redirected:\n{log}"
    );
    assert_eq!(
        final_counter(&log, "redirected_out"),
        final_counter(&log, "redirected_in"),
        "{log}"
    );
    let created = final_counter(&log, "sessions_created");
    assert!(created >= 200, "{log}");
    // Each session ended by its timer, or by a SYN reusing its client port after it closed.
    assert_eq!(
        created,
        final_counter(&log, "sessions_expired") + final_counter(&log, "sessions_rescheduled"),
        "session table empty after the timeouts:\n{log}"
    );
}

/// The data of TCP option `kind` in `opts` (RFC 793 layout: 0 end, 1 no-op, else kind, len, data).
fn tcp_option(opts: &[u8], kind: u8) -> Option<&[u8]> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => return None,
            1 => i += 1,
            k => {
                let len = *opts.get(i + 1)? as usize;
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if k == kind {
                    return Some(&opts[i + 2..i + len]);
                }
                i += len;
            }
        }
    }
    None
}
