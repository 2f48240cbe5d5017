//! The two DPDK programs of the over-veth benchmark (`scripts/bench-veth`), each its own EAL
//! process with its own file prefix, on one lcore, for a fixed time:
//!
//! - `veth-gen`: a UDP load generator on one port (the client's veth, `net_af_xdp` or
//!   `net_af_packet`): 64-byte frames (60 bytes in the mbuf, FCS excluded) from the client to one
//!   destination, `--flows` source ports in turn, sent as fast as the port takes them; whatever the
//!   port receives is freed. Prints what it sent (the offered rate).
//! - `veth-fwd`: the plain DPDK io-forward baseline between two ports: a burst received on one is
//!   sent on the other, with only the Ethernet header rewritten (destination = the next hop's MAC
//!   given on the command line, source = the sending port's MAC) so that the kernel peers accept
//!   the frames. No IP processing (no TTL, no checksum), no ARP.

use std::time::{Duration, Instant};

use dpdk::{Burst, Eal, Mempool, Port, PortConf};

/// A MAC address argument, `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad MAC {s:?}"))?;
    v.try_into().map_err(|_| format!("bad MAC {s:?}"))
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// EAL for one of these programs: one lcore, no hugepages, no PCI, the given vdevs and prefix.
fn eal(lcore: u32, prefix: &str, vdevs: &[&str]) -> Result<Eal, String> {
    let mut a: Vec<String> = vec![
        "rvs-bench".into(),
        "-l".into(),
        lcore.to_string(),
        "--no-huge".into(),
        "-m".into(),
        "256".into(),
        "--no-pci".into(),
        "--file-prefix".into(),
        prefix.into(),
        "--log-level".into(),
        "*:warning".into(),
    ];
    for v in vdevs {
        a.push("--vdev".into());
        a.push((*v).into());
    }
    Eal::init(&a).map_err(|e| format!("EAL: {e}"))
}

/// Configure and start the port of vdev string `dev` (one queue each way).
fn open(dev: &str, pool: &Mempool) -> Result<Port, String> {
    let name = dev.split(',').next().unwrap_or(dev);
    let port = Port::by_name(name).map_err(|e| e.to_string())?;
    let conf = PortConf::plain(1, 1024);
    port.configure(&conf, pool)
        .map_err(|e| format!("{dev}: {e}"))?;
    port.start().map_err(|e| format!("{dev}: {e}"))?;
    Ok(port)
}

/// Stop and close (an AF_XDP port detaches its XDP program from the interface on close).
fn close(p: Port) {
    let _ = p.stop();
    let _ = p.close();
}

fn csum(data: &[u8], init: u32) -> u16 {
    let mut s = init;
    for c in data.chunks(2) {
        s += u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// One 60-byte Ethernet/IPv4/UDP frame (18 bytes of payload), checksums filled in.
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&46u16.to_be_bytes()); // 20 + 8 + 18
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = csum(ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp = &mut f[34..60];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&26u16.to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    // Pseudo-header: addresses, protocol, UDP length.
    let mut ph = 17u32 + 26;
    for w in [src, dst] {
        ph += u32::from(u16::from_be_bytes([w[0], w[1]]));
        ph += u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    let c = match csum(udp, ph) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f
}

/// `rvs-bench veth-gen` options.
#[derive(clap::Args, Debug, Clone)]
pub struct GenArgs {
    /// The port's vdev string, e.g. `net_af_xdp0,iface=cl0`.
    #[arg(long)]
    pub dev: String,
    /// Destination MAC of the frames (the next hop: the gateway's veth).
    #[arg(long, value_parser = parse_mac)]
    pub dst_mac: [u8; 6],
    /// Source IPv4 address.
    #[arg(long, default_value = "192.0.2.2")]
    pub src: std::net::Ipv4Addr,
    /// Destination IPv4 address.
    #[arg(long)]
    pub dst: std::net::Ipv4Addr,
    /// Destination UDP port.
    #[arg(long, default_value_t = 9)]
    pub dport: u16,
    /// UDP source ports 10000.. used in turn (flows).
    #[arg(long, default_value_t = 16)]
    pub flows: u16,
    /// How long to send, milliseconds.
    #[arg(long, default_value_t = 7000)]
    pub duration_ms: u64,
    /// The EAL lcore (pinned CPU).
    #[arg(long, default_value_t = 0)]
    pub lcore: u32,
    /// EAL file prefix (distinct from any other DPDK process running).
    #[arg(long, default_value = "rvsbench-gen")]
    pub file_prefix: String,
}

/// The generator: see the module documentation.
pub fn gen(a: &GenArgs) -> Result<(), String> {
    let _eal = eal(a.lcore, &a.file_prefix, &[&a.dev])?;
    let pool = Mempool::new_pktmbuf("vgen_mbufs", 8191, 256, -1).map_err(|e| e.to_string())?;
    let port = open(&a.dev, &pool)?;
    let src_mac = port.mac().map_err(|e| e.to_string())?;
    let frames: Vec<[u8; 60]> = (0..a.flows.max(1))
        .map(|i| {
            udp_frame(
                a.dst_mac,
                src_mac,
                a.src.octets(),
                a.dst.octets(),
                10000 + i,
                a.dport,
            )
        })
        .collect();
    let (mut rx, mut tx) = (port.rx_queue(0), port.tx_queue(0));
    let (mut out, mut inb) = (Burst::new(), Burst::new());
    let (mut sent, mut received, mut next) = (0u64, 0u64, 0usize);
    let t0 = Instant::now();
    let end = t0 + Duration::from_millis(a.duration_ms);
    let mut iter = 0u32;
    loop {
        iter = iter.wrapping_add(1);
        if iter & 63 == 0 && Instant::now() >= end {
            break;
        }
        while !out.is_full() {
            let Some(mut m) = pool.alloc() else { break };
            let f = &frames[next];
            next = (next + 1) % frames.len();
            if !m.set_len(f.len()) {
                break;
            }
            m.data_mut().copy_from_slice(f);
            if out.push(m).is_err() {
                break;
            }
        }
        sent += tx.tx_burst(&mut out) as u64;
        let n = rx.rx_burst(&mut inb, dpdk::MAX_BURST as u16);
        if n > 0 {
            received += n as u64;
            inb.clear();
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    out.clear();
    let st = port.stats().unwrap_or_default();
    println!(
        "veth-gen: {} {} -> {}:{} ({} flows): sent {sent} frames in {secs:.2} s = {:.0} pps offered; received {received}; port opackets {} oerrors {}",
        a.dev,
        a.src,
        a.dst,
        a.dport,
        a.flows,
        sent as f64 / secs,
        st.opackets,
        st.oerrors
    );
    close(port);
    Ok(())
}

/// `rvs-bench veth-fwd` options.
#[derive(clap::Args, Debug, Clone)]
pub struct FwdArgs {
    /// Port 0's vdev string, e.g. `net_af_xdp0,iface=gw-c`.
    #[arg(long)]
    pub dev0: String,
    /// Port 1's vdev string, e.g. `net_af_xdp1,iface=gw-s`.
    #[arg(long)]
    pub dev1: String,
    /// Destination MAC of what port 0 sends (its kernel peer, e.g. the client's cl0).
    #[arg(long, value_parser = parse_mac)]
    pub peer0: [u8; 6],
    /// Destination MAC of what port 1 sends (e.g. the real server's eth0).
    #[arg(long, value_parser = parse_mac)]
    pub peer1: [u8; 6],
    /// How long to forward, milliseconds.
    #[arg(long, default_value_t = 8000)]
    pub duration_ms: u64,
    /// The EAL lcore (pinned CPU).
    #[arg(long, default_value_t = 1)]
    pub lcore: u32,
    /// EAL file prefix.
    #[arg(long, default_value = "rvsbench-fwd")]
    pub file_prefix: String,
}

/// The io-forward baseline: see the module documentation.
pub fn fwd(a: &FwdArgs) -> Result<(), String> {
    let _eal = eal(a.lcore, &a.file_prefix, &[&a.dev0, &a.dev1])?;
    let pool = Mempool::new_pktmbuf("vfwd_mbufs", 8191, 256, -1).map_err(|e| e.to_string())?;
    let p = [open(&a.dev0, &pool)?, open(&a.dev1, &pool)?];
    let macs = [
        p[0].mac().map_err(|e| e.to_string())?,
        p[1].mac().map_err(|e| e.to_string())?,
    ];
    // Ethernet header of what each port sends: [dst = its peer, src = its own MAC].
    let mut hdr = [[0u8; 12]; 2];
    for (i, peer) in [a.peer0, a.peer1].into_iter().enumerate() {
        hdr[i][..6].copy_from_slice(&peer);
        hdr[i][6..].copy_from_slice(&macs[i]);
    }
    println!(
        "veth-fwd: ready: {} ({}) <-> {} ({})",
        a.dev0,
        fmt_mac(macs[0]),
        a.dev1,
        fmt_mac(macs[1])
    );
    let mut rx = [p[0].rx_queue(0), p[1].rx_queue(0)];
    let mut tx = [p[0].tx_queue(0), p[1].tx_queue(0)];
    let (mut b, mut out) = (Burst::new(), Burst::new());
    let (mut fwd, mut drop) = ([0u64; 2], [0u64; 2]);
    // Loop iterations, and those that received something (how busy the forwarder is).
    let (mut polls, mut busy) = (0u64, 0u64);
    let t0 = Instant::now();
    let end = t0 + Duration::from_millis(a.duration_ms);
    let mut iter = 0u32;
    loop {
        iter = iter.wrapping_add(1);
        if iter & 63 == 0 && Instant::now() >= end {
            break;
        }
        polls += 1;
        let mut got = false;
        for from in 0..2 {
            if rx[from].rx_burst(&mut b, dpdk::MAX_BURST as u16) == 0 {
                continue;
            }
            got = true;
            let to = 1 - from;
            for mut m in b.drain() {
                if m.len() >= 14 {
                    m.data_mut()[..12].copy_from_slice(&hdr[to]);
                }
                let _ = out.push(m);
            }
            let n = out.len();
            let s = tx[to].tx_burst(&mut out);
            fwd[from] += s as u64;
            drop[from] += (n - s) as u64;
            out.clear();
        }
        busy += u64::from(got);
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "veth-fwd: {secs:.2} s: forwarded 0->1 {} (dropped {}), 1->0 {} (dropped {}); polls {polls} busy_polls {busy}",
        fwd[0], drop[0], fwd[1], drop[1]
    );
    for port in p {
        close(port);
    }
    Ok(())
}
