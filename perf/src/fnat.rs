//! FULLNAT traces: established sessions (`fnat-est`, `fnat-udp`), new connections (`fnat-cps`)
//! and whole connections with data and FIN (`fnat-conn`), plus the memory a session costs.
//!
//! Topology (one-armed, as DPVS's one-arm mode): a single port 0 owning 10.0.0.1/16, 4 VIPs
//! 10.0.100.1–4 (TCP :80 and UDP :53 each, rr over 8 real servers 10.0.1.x:8080 / :5353, 32 dest
//! ids), LIPs 10.0.2.x (ceil(N / 60 000) + 1 of them, shared by every service), clients in
//! 100.64.0.0/10 behind the gateway 10.0.0.254 (default route). Every frame enters and leaves on
//! port 0; the gateway and the 32 real servers are resolved before the first packet.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use dpdk::Mempool;
use rvs_core::checksum::{checksum, fold, sum, update_u16, update_u32};
use rvs_core::io::{Io, PortIdx};
use rvs_core::{
    DestConf, FullnatConf, Fwd, MacAddr, NeighConf, PortConf, Prefix, Proto, RouteConf, Sched,
    ServiceConf, Stack, StackConfig, Timeouts,
};
use rvs_dataplane::MbufPacket;

use crate::trace::{port_mac, Env, Frame, Setup, SetupCtx, Trace, FRAME_LEN};

/// Services (VIPs) and real servers per VIP.
pub const VIPS: usize = 4;
pub const RS_PER_VIP: usize = 8;
/// Sessions per LIP the traces plan for (an LIP has ~64.5K lports).
pub const SESSIONS_PER_LIP: usize = 60_000;

const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 254);
const GW_MAC: MacAddr = MacAddr([0x02, 0, 0, 1, 0xff, 0xfe]);
const TCP_VPORT: u16 = 80;
const UDP_VPORT: u16 = 53;
const TCP_RPORT: u16 = 8080;
const UDP_RPORT: u16 = 5353;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

fn vip(v: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 100, 1 + v as u8)
}
fn rip(r: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, 1 + r as u8)
}
fn rs_mac(r: usize) -> MacAddr {
    MacAddr([0x02, 0, 0, 2, 0, r as u8])
}
fn lip(l: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 2 + (l / 250) as u8, 1 + (l % 250) as u8)
}

/// Client `g`'s address and port: 4M addresses in 100.64.0.0/10, then the port moves on.
fn client(g: u64) -> (Ipv4Addr, u16) {
    let ip = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + (g & 0x3f_ffff) as u32;
    (Ipv4Addr::from(ip), 1024 + ((g >> 22) % 60_000) as u16)
}

/// LIPs for `n` sessions on one worker.
pub fn lips_for(n: usize) -> usize {
    n.div_ceil(SESSIONS_PER_LIP) + 1
}

/// The FULLNAT stack configuration: `capacity` sessions, `lips` LIPs.
pub fn config(capacity: usize, lips: usize, timeouts: Timeouts, reuse_ms: u64) -> StackConfig {
    let lip_list: Vec<IpAddr> = (0..lips).map(|l| IpAddr::V4(lip(l))).collect();
    let mut services = Vec::new();
    for (proto, vport, rport, id0) in [
        (Proto::Tcp, TCP_VPORT, TCP_RPORT, 0u32),
        (Proto::Udp, UDP_VPORT, UDP_RPORT, (VIPS * RS_PER_VIP) as u32),
    ] {
        for v in 0..VIPS {
            services.push(ServiceConf {
                proto,
                vip: IpAddr::V4(vip(v)),
                vport,
                vip_port: 0,
                sched: Sched::Rr,
                dests: (0..RS_PER_VIP)
                    .map(|k| {
                        let r = v * RS_PER_VIP + k;
                        DestConf {
                            id: id0 + r as u32,
                            rip: IpAddr::V4(rip(r)),
                            rport,
                            weight: 1,
                            fwd: Fwd::FullNat,
                            upper: 0,
                            lower: 0,
                            down: false,
                            last_weight: 0,
                        }
                    })
                    .collect(),
                lips: lip_list.clone(),
                lip_port: 0,
                persist: None,
                mark: None,
            });
        }
    }
    StackConfig {
        ports: vec![PortConf {
            mac: port_mac(0),
            mtu: 1500,
            addrs: vec![Prefix {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                len: 16,
            }],
        }],
        routes: vec![RouteConf {
            prefix: Prefix {
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                len: 0,
            },
            via: Some(IpAddr::V4(GW)),
            port: 0,
        }],
        ip_forward: false,
        neigh: NeighConf {
            capacity: 1024,
            hold_packets: 8,
            reachable_ms: 3_600_000,
            gc_stale_ms: 7_200_000,
            retrans_ms: 1_000,
            max_probes: 3,
        },
        services,
        fullnat: FullnatConf {
            sessions: capacity as u32,
            timeouts,
            lport_reuse_delay_ms: reuse_ms,
            ..FullnatConf::default()
        },
        ..StackConfig::default()
    }
}

/// Gateway and real servers, resolved before the first packet.
pub fn neighbours() -> Vec<(PortIdx, IpAddr, MacAddr)> {
    std::iter::once((0, IpAddr::V4(GW), GW_MAC))
        .chain((0..VIPS * RS_PER_VIP).map(|r| (0, IpAddr::V4(rip(r)), rs_mac(r))))
        .collect()
}

// ------------------------------------------------------------------------- frames

/// A 60-byte TCP (flags `fl`, 6 bytes of payload) or UDP (18 bytes of payload) frame with valid
/// IP and L4 checksums.
#[allow(clippy::too_many_arguments)]
fn l4_frame(
    proto: u8,
    src_mac: MacAddr,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    fl: u8,
    seq: u32,
) -> Frame {
    let mut b = [0u8; 64];
    b[0..6].copy_from_slice(&port_mac(0).0);
    b[6..12].copy_from_slice(&src_mac.0);
    b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut b[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((FRAME_LEN - 14) as u16).to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let l4 = &mut b[34..FRAME_LEN];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4[4..8].copy_from_slice(&seq.to_be_bytes());
        if fl & ACK != 0 {
            l4[8..12].copy_from_slice(&0x1000_0000u32.to_be_bytes());
        }
        l4[12] = 5 << 4;
        l4[13] = fl;
        l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
        l4[20..26].copy_from_slice(b"rvs-fn");
    } else {
        l4[4..6].copy_from_slice(&((FRAME_LEN - 34) as u16).to_be_bytes());
        l4[8..26].copy_from_slice(b"rvs-fullnat-bench!");
    }
    l4_fix(&mut b, proto);
    Frame {
        bytes: b,
        len: FRAME_LEN as u16,
        tag: 0,
    }
}

/// Recompute the L4 checksum of the IPv4 TCP/UDP frame `b` (20-byte IP header).
fn l4_fix(b: &mut [u8], proto: u8) {
    let total = u16::from_be_bytes([b[16], b[17]]) as usize;
    let l4_len = total - 20;
    let co = 34 + if proto == 6 { 16 } else { 6 };
    b[co] = 0;
    b[co + 1] = 0;
    let mut pseudo = [0u8; 12];
    pseudo[0..8].copy_from_slice(&b[26..34]);
    pseudo[9] = proto;
    pseudo[10..12].copy_from_slice(&(l4_len as u16).to_be_bytes());
    let mut c = !fold(sum(&b[34..34 + l4_len], sum(&pseudo, 0)));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    b[co..co + 2].copy_from_slice(&c.to_be_bytes());
}

// ------------------------------------------------------------------------- set-up I/O

/// The `Io` a trace's set-up feeds the stack through: frames it sends are freed and counted.
pub struct SetupIo {
    pub pool: Arc<Mempool>,
    pub sent: u64,
}

impl Io for SetupIo {
    type Pkt = MbufPacket;
    fn alloc(&mut self) -> Option<MbufPacket> {
        self.pool.alloc().map(MbufPacket)
    }
    fn send(&mut self, _port: PortIdx, pkt: MbufPacket) {
        self.sent += 1;
        drop(pkt);
    }
}

impl SetupIo {
    /// Hand `f` to the stack as received on port 0.
    pub fn feed(&mut self, stack: &mut Stack<MbufPacket>, f: &Frame, now_ms: u64) {
        let mut m = self.pool.alloc().expect("mbuf pool empty during set-up");
        assert!(m.set_len(f.len as usize));
        m.data_mut().copy_from_slice(&f.bytes[..f.len as usize]);
        stack.handle(self, 0, MbufPacket(m), now_ms);
    }
}

/// Where an established session's replies go: RIP:rport → LIP:lport, from real server `rs`.
#[derive(Clone, Copy)]
struct Learned {
    rip: Ipv4Addr,
    rport: u16,
    lip: Ipv4Addr,
    lport: u16,
}

fn rs_index(a: Ipv4Addr) -> usize {
    (a.octets()[3] as usize).saturating_sub(1)
}

/// Open `n` sessions on `stack` (TCP: SYN, the real server's SYN-ACK to the learned LIP:lport,
/// the client's ACK that completes the handshake and gets TOA; UDP: one datagram). Returns each
/// session's reply addresses, in client order.
fn open_sessions(
    stack: &mut Stack<MbufPacket>,
    io: &mut SetupIo,
    n: usize,
    proto: Proto,
    now_ms: u64,
) -> Result<Vec<Learned>, String> {
    let created0 = stack.counters().sessions_created.get();
    let toa0 = stack.counters().toa_inserted.get();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (cip, cport) = client(i as u64);
        let v = vip(i % VIPS);
        let (p, vport) = match proto {
            Proto::Tcp => (6, TCP_VPORT),
            Proto::Udp => (17, UDP_VPORT),
        };
        io.feed(
            stack,
            &l4_frame(p, GW_MAC, cip, cport, v, vport, SYN, 1),
            now_ms,
        );
        let s = stack
            .session_by_client(proto, cip, cport, v, vport)
            .ok_or_else(|| format!("set-up: no session for client {i} after its first packet"))?;
        let l = Learned {
            rip: s.rip,
            rport: s.rport,
            lip: s.lip,
            lport: s.lport,
        };
        if proto == Proto::Tcp {
            let synack = l4_frame(
                6,
                rs_mac(rs_index(l.rip)),
                l.rip,
                l.rport,
                l.lip,
                l.lport,
                SYN | ACK,
                7,
            );
            io.feed(stack, &synack, now_ms);
            io.feed(
                stack,
                &l4_frame(6, GW_MAC, cip, cport, v, vport, ACK, 2),
                now_ms,
            );
        }
        out.push(l);
    }
    let created = stack.counters().sessions_created.get() - created0;
    if created != n as u64 || stack.session_count() < n {
        return Err(format!(
            "set-up: {created} sessions created for {n} clients ({} in the table)",
            stack.session_count()
        ));
    }
    if proto == Proto::Tcp {
        let toa = stack.counters().toa_inserted.get() - toa0;
        if toa != n as u64 {
            return Err(format!(
                "set-up: TOA inserted {toa} times for {n} handshakes"
            ));
        }
    }
    Ok(out)
}

/// A permutation of 0..n (xorshift Fisher–Yates, fixed seed).
fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut s = seed | 1;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

/// Human size: 1K, 100K, 1M, 10M.
pub fn human(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}K", n / 1000)
    } else {
        n.to_string()
    }
}

/// Established sessions: `env.sessions` sessions opened in the set-up, then client → VIP data
/// and real server → LIP replies, 50/50 interleaved, each direction in its own random order of
/// the sessions (every packet hits a random session of the table).
fn established(env: &Env, proto: Proto) -> Trace {
    let n = env.sessions.max(1);
    let (kind, what) = match proto {
        Proto::Tcp => (
            "fnat-est",
            "TCP ACK+6-byte data segments, handshake and TOA done in set-up",
        ),
        Proto::Udp => ("fnat-udp", "UDP 18-byte datagrams"),
    };
    let setup: Setup = Arc::new(move |stack, io, ctx: &SetupCtx| {
        let learned = open_sessions(stack, io, n, proto, ctx.now_ms)?;
        let (p, vport) = match proto {
            Proto::Tcp => (6, TCP_VPORT),
            Proto::Udp => (17, UDP_VPORT),
        };
        let a = shuffled(n, 0x9e37_79b9_7f4a_7c15 ^ ctx.worker as u64);
        let b = shuffled(n, 0x2545_f491_4f6c_dd1d ^ ctx.worker as u64);
        let mut frames = Vec::with_capacity(2 * n);
        for k in 0..n {
            let i = a[k] as usize;
            let (cip, cport) = client(i as u64);
            frames.push(l4_frame(
                p,
                GW_MAC,
                cip,
                cport,
                vip(i % VIPS),
                vport,
                ACK | PSH,
                100,
            ));
            let l = learned[b[k] as usize];
            frames.push(l4_frame(
                p,
                rs_mac(rs_index(l.rip)),
                l.rip,
                l.rport,
                l.lip,
                l.lport,
                ACK | PSH,
                200,
            ));
        }
        Ok(Some(frames))
    });
    let lips = lips_for(n * env.workers.max(1));
    Trace {
        name: format!("{kind}/{}", human(n)),
        about: format!(
            "FULLNAT established, {n} {} sessions ({VIPS} VIPs × {RS_PER_VIP} RS, {lips} LIPs, \
             one-armed): {what}; client→VIP and RS→LIP 50/50, random session order; TCP: the \
             sessions' first timers (at their SYN_RECV expiry, 60 s) are due after the run",
            match proto {
                Proto::Tcp => "TCP",
                Proto::Udp => "UDP",
            }
        ),
        stack: config(n, lips, Timeouts::default(), 120_000),
        neighbours: neighbours(),
        setup: Some(setup),
        respond: None,
        patch: None,
        frames: Vec::new(),
        success: ("fullnat_in+out", |s| s.fullnat_in + s.fullnat_out),
        conn_pkts: 0,
    }
}

pub fn fnat_est(env: &Env) -> Trace {
    established(env, Proto::Tcp)
}

pub fn fnat_udp(env: &Env) -> Trace {
    established(env, Proto::Udp)
}

// ------------------------------------------------------------------------- new connections

/// Connections per lap of the CPS trace's frame list, and the spacing (in connections) between a
/// connection's SYN, its ACK and its RST.
pub const CPS_LAP: usize = 8192;
pub const CPS_GAP: usize = 1024;
/// Session table and LIPs of the CPS trace (large enough that sessions the timer has not expired
/// yet during a run never fill it).
pub const CPS_TABLE: usize = 1 << 22;
pub const CPS_LIPS: usize = 72;
/// CLOSE timeout of the CPS trace (one timer-wheel tick).
pub const CPS_CLOSE_MS: u64 = 100;

/// The client's frames of the connection traces: for each of [`CPS_LAP`] connections, segment
/// `n` of `steps` (TCP flags, sequence number) [`CPS_GAP`] × `n` connections after its first,
/// interleaved. A frame of a connection begun in the previous lap is tagged 1 (`n` ×
/// [`CPS_GAP`] stays below a lap), so the `patch` hook gives it that connection's client
/// address.
fn client_frames(steps: &[(u8, u32)]) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(steps.len() * CPS_LAP);
    for k in 0..CPS_LAP {
        for (n, &(fl, seq)) in steps.iter().enumerate() {
            let c = (k + CPS_LAP - n * CPS_GAP) % CPS_LAP;
            let (cip, cport) = client(c as u64);
            let mut f = l4_frame(6, GW_MAC, cip, cport, vip(c % VIPS), TCP_VPORT, fl, seq);
            f.tag = (k < n * CPS_GAP) as u16;
            frames.push(f);
        }
    }
    frames
}

/// New TCP connections: per connection the client's SYN (schedule, lport, session, rewrite), the
/// real server's SYN-ACK (made by the generator from the SYN rvs transmitted, so it goes to the
/// lport rvs chose), the client's ACK (ESTABLISHED, TOA inserted) and the client's RST (CLOSE,
/// expired by the timer wheel after 100 ms). Client addresses move on every lap (the generator
/// patches them), so a SYN never meets a live session.
pub fn fnat_cps(_env: &Env) -> Trace {
    let frames = client_frames(&[(SYN, 1), (ACK, 2), (RST | ACK, 2)]);
    let timeouts = Timeouts {
        tcp_close: CPS_CLOSE_MS,
        ..Timeouts::default()
    };
    Trace {
        name: "fnat-cps".into(),
        about: format!(
            "FULLNAT new TCP connections: SYN + RS SYN-ACK + ACK (TOA) + RST = 4 packets per \
             connection, {CPS_LAP} connections per lap with fresh client addresses every lap, \
             CLOSE timeout {CPS_CLOSE_MS} ms, table {CPS_TABLE}, {CPS_LIPS} LIPs, lport reuse \
             delay 0"
        ),
        stack: config(CPS_TABLE, CPS_LIPS, timeouts, 0),
        neighbours: neighbours(),
        setup: None,
        respond: Some(respond_synack),
        patch: Some(patch_client),
        frames,
        success: ("fullnat_in+out", |s| s.fullnat_in + s.fullnat_out),
        conn_pkts: 4,
    }
}

/// Whole TCP connections: the client's SYN, the real server's SYN-ACK, the client's request
/// (ACK+PSH, 6 bytes; TOA inserted), the server's response (ACK+PSH, 14 bytes), the client's
/// FIN, the server's FIN-ACK and the client's last ACK (TIME_WAIT, expired after 100 ms): 7
/// packets through rvs per connection, the server's three made by the generator from what rvs
/// sent it. The client's packets of a connection are [`CPS_GAP`] connections apart; client
/// addresses move on every lap, as in the CPS trace.
pub fn fnat_conn(_env: &Env) -> Trace {
    let frames = client_frames(&[(SYN, 1), (ACK | PSH, 2), (FIN | ACK, 8), (ACK, 9)]);
    let timeouts = Timeouts {
        tcp_close: CPS_CLOSE_MS,
        tcp_time_wait: CPS_CLOSE_MS,
        ..Timeouts::default()
    };
    Trace {
        name: "fnat-conn".into(),
        about: format!(
            "FULLNAT whole TCP connections: SYN, RS SYN-ACK, request (TOA), RS response, FIN, \
             RS FIN-ACK, last ACK = 7 packets per connection, {CPS_LAP} connections per lap \
             with fresh client addresses every lap, TIME_WAIT timeout {CPS_CLOSE_MS} ms, table \
             {CPS_TABLE}, {CPS_LIPS} LIPs, lport reuse delay 0"
        ),
        stack: config(CPS_TABLE, CPS_LIPS, timeouts, 0),
        neighbours: neighbours(),
        setup: None,
        respond: Some(respond_server),
        patch: Some(patch_client),
        frames,
        success: ("fullnat_in+out", |s| s.fullnat_in + s.fullnat_out),
        conn_pkts: 7,
    }
}

/// Generator hook of the CPS trace: client address and port of connection (lap − tag) ×
/// CPS_LAP + index, checksums updated incrementally.
fn patch_client(d: &mut [u8], lap: u32, tag: u16) {
    let conn_lap = lap.wrapping_sub(tag as u32) as u64;
    let old_ip = u32::from_be_bytes([d[26], d[27], d[28], d[29]]);
    let old_port = u16::from_be_bytes([d[34], d[35]]);
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    // The template is connection `index` of lap 0.
    let index = (old_ip - base) as u64;
    let (ip, port) = client(conn_lap * CPS_LAP as u64 + index);
    let ip = u32::from(ip);
    let c = u16::from_be_bytes([d[24], d[25]]);
    d[24..26].copy_from_slice(&update_u32(c, old_ip, ip).to_be_bytes());
    d[26..30].copy_from_slice(&ip.to_be_bytes());
    d[34..36].copy_from_slice(&port.to_be_bytes());
    let c = u16::from_be_bytes([d[50], d[51]]);
    let c = update_u16(update_u32(c, old_ip, ip), old_port, port);
    d[50..52].copy_from_slice(&c.to_be_bytes());
}

/// Generator hook of the CPS trace: a SYN rvs sent to a real server becomes that server's
/// SYN-ACK (addresses and ports swapped, ack = seq + 1, fresh checksums), fed back to port 0.
fn respond_synack(d: &mut [u8]) -> bool {
    match to_server(d) {
        Some(fl) if fl & (SYN | ACK | RST | FIN) == SYN => server_reply(d, SYN | ACK),
        _ => false,
    }
}

/// Generator hook of the connection trace: the real server answers what rvs sent it — a SYN
/// with its SYN-ACK, a request (ACK+PSH) with a response (ACK+PSH; the request's TCP options,
/// TOA among them, become payload), a FIN with its FIN-ACK. Anything else (the client's last
/// ACK) is recycled.
fn respond_server(d: &mut [u8]) -> bool {
    let Some(fl) = to_server(d) else {
        return false;
    };
    let reply = match fl & (SYN | ACK | RST | FIN | PSH) {
        SYN => SYN | ACK,
        f if f == ACK | PSH => ACK | PSH,
        f if f == FIN | ACK => FIN | ACK,
        _ => return false,
    };
    server_reply(d, reply)
}

/// The TCP flags of `d` when it is an IPv4 TCP segment (20-byte IP header) rvs sent to a real
/// server.
fn to_server(d: &[u8]) -> Option<u8> {
    if d.len() < 54 || d[12..14] != [0x08, 0x00] || d[14] != 0x45 || d[23] != 6 {
        return None;
    }
    (d[30..33] == rip(0).octets()[..3]).then_some(d[34 + 13])
}

/// Turn the segment rvs sent to a real server into that server's answer with flags `fl`:
/// addresses and ports swapped, a 20-byte TCP header (options become payload), ack = the
/// segment's seq + its length (+ 1 for SYN or FIN), fresh checksums; fed back to port 0.
fn server_reply(d: &mut [u8], fl: u8) -> bool {
    let l4 = 34;
    let total = u16::from_be_bytes([d[16], d[17]]) as usize;
    let doff = (d[l4 + 12] >> 4) as usize * 4;
    if total < 20 + doff || d.len() < 14 + total {
        return false;
    }
    let r = rs_index(Ipv4Addr::new(d[30], d[31], d[32], d[33]));
    d[0..6].copy_from_slice(&port_mac(0).0);
    d[6..12].copy_from_slice(&rs_mac(r).0);
    let (src, dst): ([u8; 4], [u8; 4]) = (
        d[26..30].try_into().expect("4"),
        d[30..34].try_into().expect("4"),
    );
    d[26..30].copy_from_slice(&dst);
    d[30..34].copy_from_slice(&src);
    d[22] = 64;
    d[24] = 0;
    d[25] = 0;
    let c = checksum(&d[14..34]);
    d[24..26].copy_from_slice(&c.to_be_bytes());
    let (sp, dp) = ([d[l4], d[l4 + 1]], [d[l4 + 2], d[l4 + 3]]);
    d[l4..l4 + 2].copy_from_slice(&dp);
    d[l4 + 2..l4 + 4].copy_from_slice(&sp);
    let seq = u32::from_be_bytes([d[l4 + 4], d[l4 + 5], d[l4 + 6], d[l4 + 7]]);
    let len = (total - 20 - doff) as u32 + (d[l4 + 13] & (SYN | FIN) != 0) as u32;
    d[l4 + 4..l4 + 8].copy_from_slice(&7u32.to_be_bytes());
    d[l4 + 8..l4 + 12].copy_from_slice(&seq.wrapping_add(len).to_be_bytes());
    d[l4 + 12] = 5 << 4;
    d[l4 + 13] = fl;
    l4_fix(d, 6);
    true
}

// ------------------------------------------------------------------------- memory

/// Memory of `n` sessions on one worker.
pub struct SessMem {
    pub sessions: usize,
    pub lips: usize,
    /// Live heap bytes `Stack::new` allocated (the whole stack at this capacity).
    pub alloc: u64,
    /// The table's own figure (`Stack::session_bytes`: entry + hashed index heads, plus the
    /// LIPs' direct heads, `Stack::session_direct_bytes`, spread over the sessions).
    pub table_bytes: usize,
    /// Resident memory growth: after `Stack::new`, and after opening `n` sessions.
    pub rss_new: i64,
    pub rss_open: i64,
    /// Seconds to open the `n` sessions (3 packets each).
    pub open_s: f64,
}

extern "C" {
    /// glibc: release free heap memory to the system.
    fn malloc_trim(pad: usize) -> i32;
}

/// Resident bytes of this process (`/proc/self/statm`).
pub fn rss_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .unwrap_or(0)
        * 4096
}

/// Build a stack for `n` TCP sessions (capacity n, ceil(n/60000)+1 LIPs), open them, and
/// measure. `live` reads the counting allocator.
pub fn memory(
    n: usize,
    pool: &Arc<Mempool>,
    live: fn() -> i64,
    now_ms: u64,
) -> Result<SessMem, String> {
    let lips = lips_for(n);
    let cfg = config(n, lips, Timeouts::default(), 120_000);
    let mut io = SetupIo {
        pool: pool.clone(),
        sent: 0,
    };
    // Give freed heap pages back first, so that the RSS growth is this stack's own.
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe { malloc_trim(0) };
    let (l0, r0) = (live(), rss_bytes());
    let counters = Arc::new(rvs_core::counters::CoreCounters::default());
    let mut stack = Stack::<MbufPacket>::new(&cfg, counters);
    let (l1, r1) = (live(), rss_bytes());
    for (p, ip, mac) in neighbours() {
        stack.neigh_update(&mut io, p, ip, mac, now_ms);
    }
    let t = std::time::Instant::now();
    // Only the sessions: no frame list is kept.
    let learned = open_sessions(&mut stack, &mut io, n, Proto::Tcp, now_ms)?;
    let open_s = t.elapsed().as_secs_f64();
    let r2 = rss_bytes() - (learned.capacity() * std::mem::size_of::<Learned>()) as i64;
    drop(learned);
    let m = SessMem {
        sessions: n,
        lips,
        alloc: (l1 - l0).max(0) as u64,
        table_bytes: stack.session_bytes() + stack.session_direct_bytes() / n.max(1),
        rss_new: r1 - r0,
        rss_open: r2 - r0,
        open_s,
    };
    drop(stack);
    Ok(m)
}
