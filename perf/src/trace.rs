//! Traces: pre-built 64-byte frames and the stack configuration they are meant for.
//!
//! A trace kind is one entry of [`KINDS`]: a name, a sentence, and a builder that turns an [`Env`]
//! (the sizes asked on the command line) into a [`Trace`]: the [`StackConfig`], the neighbours to
//! resolve before the first packet, the frames (all entering on port 0, replayed in a loop) and
//! the counter that must grow by one per frame when the stack does what the trace expects.
//!
//! New kinds plug in by adding a builder here; a kind that needs more set-up than neighbours
//! (sessions to open first) uses [`Trace::setup`], which may also return per-worker frames built
//! from what the stack chose (the FULLNAT lports, see `fnat.rs`). A kind whose device must be
//! answered (a real server's SYN-ACK) uses [`Trace::respond`]; one whose frames must change from
//! lap to lap (fresh client addresses) uses [`Trace::patch`]. `sized` kinds run once per
//! `--sessions` size.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rvs_core::checksum::checksum;
use rvs_core::counters::CounterSnapshot;
use rvs_core::io::PortIdx;
use rvs_core::{MacAddr, NeighConf, PortConf, Prefix, Stack, StackConfig};
use rvs_dataplane::MbufPacket;

pub use crate::fnat::SetupIo;

/// Bytes of a frame in the mbuf: a 64-byte Ethernet frame less its 4-byte FCS.
pub const FRAME_LEN: usize = 60;

/// One pre-built frame.
#[derive(Clone, Copy)]
pub struct Frame {
    pub bytes: [u8; 64],
    pub len: u16,
    /// Passed to the trace's `patch` hook (0 when unused).
    pub tag: u16,
}

/// Sizes a trace builder may use.
#[derive(Clone, Debug)]
pub struct Env {
    /// Destination hosts (forwarding traces) or peers (ARP/ICMP traces, capped at 200).
    pub hosts: usize,
    /// Concurrent sessions of the FULLNAT established traces.
    pub sessions: usize,
    /// Worker lcores (each owns 1/workers of every LIP's lports, so more LIPs are configured).
    pub workers: usize,
}

/// What a set-up knows about the worker it prepares.
pub struct SetupCtx {
    pub worker: usize,
    /// The worker's clock (TSC milliseconds).
    pub now_ms: u64,
}

/// Extra set-up run on each worker's stack after it is built and its neighbours resolved, with
/// an `Io` that frees what the stack sends. It may return this worker's frames (replacing
/// [`Trace::frames`]), e.g. replies built from the lports the stack chose.
pub type Setup = Arc<
    dyn Fn(&mut Stack<MbufPacket>, &mut SetupIo, &SetupCtx) -> Result<Option<Vec<Frame>>, String>
        + Send
        + Sync,
>;

/// A trace ready to run.
pub struct Trace {
    pub name: String,
    pub about: String,
    pub stack: StackConfig,
    /// Resolved before the first packet (as if learned from a peer worker).
    pub neighbours: Vec<(PortIdx, IpAddr, MacAddr)>,
    pub setup: Option<Setup>,
    /// Generator hook on every frame the device transmitted: returns true when it turned the
    /// frame into a reply to feed back (a real server answering), false to recycle it.
    pub respond: Option<fn(&mut [u8]) -> bool>,
    /// Generator hook on every frame it copies from the list: (frame, lap of the list, tag).
    pub patch: Option<fn(&mut [u8], u32, u16)>,
    /// Replayed in order, in a loop, on port 0.
    pub frames: Vec<Frame>,
    /// The counter that grows by one per frame handled as expected, and its name.
    pub success: (&'static str, fn(&CounterSnapshot) -> u64),
    /// Packets per new connection (connection-rate traces; 0 otherwise).
    pub conn_pkts: u32,
}

impl Trace {
    /// Number of ports the stack (and so the DPDK side) needs.
    pub fn ports(&self) -> usize {
        self.stack.ports.len()
    }
}

/// A kind of trace: how to build it.
pub struct Kind {
    pub name: &'static str,
    pub build: fn(&Env) -> Trace,
    /// Built once per `--sessions` size.
    pub sized: bool,
}

/// Every trace kind the suite runs, in table order.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "l3fwd",
        build: l3fwd,
        sized: false,
    },
    Kind {
        name: "arp",
        build: arp,
        sized: false,
    },
    Kind {
        name: "icmp",
        build: icmp,
        sized: false,
    },
    Kind {
        name: "fnat-est",
        build: crate::fnat::fnat_est,
        sized: true,
    },
    Kind {
        name: "fnat-udp",
        build: crate::fnat::fnat_udp,
        sized: true,
    },
    Kind {
        name: "fnat-cps",
        build: crate::fnat::fnat_cps,
        sized: false,
    },
    Kind {
        name: "fnat-conn",
        build: crate::fnat::fnat_conn,
        sized: false,
    },
];

/// A frame for runs whose frames come from the set-up (the baseline carries it).
pub fn filler_frame() -> Frame {
    let mut b = [0u8; 64];
    eth_ipv4(
        &mut b,
        port_mac(0),
        host_mac(0),
        host_ip(0, 0),
        host_ip(0, 1),
        17,
    );
    Frame {
        bytes: b,
        len: FRAME_LEN as u16,
        tag: 0,
    }
}

/// The kind called `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// MAC of rvs port `p` (the stack's; the net_ring port does not filter).
pub fn port_mac(p: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, 0x10 + p])
}

/// MAC of peer host `i`.
fn host_mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0, 0, 1, (i >> 8) as u8, i as u8])
}

fn v4(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

fn prefix(a: [u8; 4], len: u8) -> Prefix {
    Prefix {
        addr: v4(Ipv4Addr::from(a)),
        len,
    }
}

/// Stack configuration shared by the traces: `ports` ports, port p owning 10.p.0.1/16; tables
/// large enough that nothing is evicted during a run, timers that expire nothing within it.
fn base_config(ports: u8, ip_forward: bool, hosts: usize) -> StackConfig {
    StackConfig {
        ports: (0..ports)
            .map(|p| PortConf {
                mac: port_mac(p),
                mtu: 1500,
                addrs: vec![prefix([10, p, 0, 1], 16)],
            })
            .collect(),
        routes: Vec::new(),
        ip_forward,
        icmp_ratelimit_per_s: 1000,
        neigh: NeighConf {
            capacity: (2 * hosts as u32 + 64).next_power_of_two(),
            hold_packets: 8,
            reachable_ms: 3_600_000,
            gc_stale_ms: 7_200_000,
            retrans_ms: 1_000,
            max_probes: 3,
        },
        ..StackConfig::default()
    }
}

/// Address of host `i` on port `p`'s subnet 10.p.0.0/16 (never .0.1, rvs's own).
fn host_ip(p: u8, i: usize) -> Ipv4Addr {
    let n = i + 2;
    Ipv4Addr::new(10, p, (n >> 8) as u8, n as u8)
}

/// Ethernet + IPv4 header (20 bytes, checksum filled) into `f`; L4 starts at byte 34.
fn eth_ipv4(f: &mut [u8; 64], dst: MacAddr, src: MacAddr, s: Ipv4Addr, d: Ipv4Addr, proto: u8) {
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((FRAME_LEN - 14) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&s.octets());
    ip[16..20].copy_from_slice(&d.octets());
    let c = checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// IPv4 forwarding: UDP from a client on port 0 to `hosts` destinations on port 1, all resolved.
fn l3fwd(env: &Env) -> Trace {
    let hosts = env.hosts.max(1);
    let frames = (0..hosts)
        .map(|i| {
            let mut b = [0u8; 64];
            eth_ipv4(
                &mut b,
                port_mac(0),
                host_mac(0),
                host_ip(0, 0),
                host_ip(1, i),
                17,
            );
            let udp = &mut b[34..42];
            udp[0..2].copy_from_slice(&(1024 + i as u16).to_be_bytes());
            udp[2..4].copy_from_slice(&80u16.to_be_bytes());
            udp[4..6].copy_from_slice(&((FRAME_LEN - 34) as u16).to_be_bytes());
            Frame {
                bytes: b,
                len: FRAME_LEN as u16,
                tag: 0,
            }
        })
        .collect();
    Trace {
        name: "l3fwd".into(),
        about: format!("IPv4 forwarding, UDP to {hosts} resolved hosts on port 1"),
        stack: base_config(2, true, hosts),
        neighbours: (0..hosts)
            .map(|i| (1, v4(host_ip(1, i)), host_mac(i)))
            .collect(),
        setup: None,
        respond: None,
        patch: None,
        frames,
        success: ("forwarded", |s| s.forwarded),
        conn_pkts: 0,
    }
}

/// ARP requests for rvs's address from `hosts` (≤ 200) senders on its subnet: learn + reply.
fn arp(env: &Env) -> Trace {
    let hosts = env.hosts.clamp(1, 200);
    let frames = (0..hosts)
        .map(|i| {
            let mut b = [0u8; 64];
            b[0..6].copy_from_slice(&[0xff; 6]);
            b[6..12].copy_from_slice(&host_mac(i).0);
            b[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
            let a = &mut b[14..42];
            a[0..2].copy_from_slice(&1u16.to_be_bytes());
            a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
            a[4] = 6;
            a[5] = 4;
            a[6..8].copy_from_slice(&1u16.to_be_bytes());
            a[8..14].copy_from_slice(&host_mac(i).0);
            a[14..18].copy_from_slice(&host_ip(0, i).octets());
            a[24..28].copy_from_slice(&[10, 0, 0, 1]);
            Frame {
                bytes: b,
                len: FRAME_LEN as u16,
                tag: 0,
            }
        })
        .collect();
    Trace {
        name: "arp".into(),
        about: format!("ARP requests for rvs's address from {hosts} senders"),
        stack: base_config(1, false, hosts),
        neighbours: Vec::new(),
        setup: None,
        respond: None,
        patch: None,
        frames,
        success: ("arp_replies_sent", |s| s.arp_replies_sent),
        conn_pkts: 0,
    }
}

/// ICMP echo requests to rvs's address from `hosts` (≤ 200) resolved clients.
fn icmp(env: &Env) -> Trace {
    let hosts = env.hosts.clamp(1, 200);
    let frames = (0..hosts)
        .map(|i| {
            let mut b = [0u8; 64];
            eth_ipv4(
                &mut b,
                port_mac(0),
                host_mac(i),
                host_ip(0, i),
                Ipv4Addr::new(10, 0, 0, 1),
                1,
            );
            let ic = &mut b[34..FRAME_LEN];
            ic[0] = 8;
            ic[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            ic[6..8].copy_from_slice(&(i as u16).to_be_bytes());
            let c = checksum(ic);
            ic[2..4].copy_from_slice(&c.to_be_bytes());
            Frame {
                bytes: b,
                len: FRAME_LEN as u16,
                tag: 0,
            }
        })
        .collect();
    Trace {
        name: "icmp".into(),
        about: format!("ICMP echo requests to rvs's address from {hosts} resolved clients"),
        stack: base_config(1, false, hosts),
        neighbours: (0..hosts)
            .map(|i| (0, v4(host_ip(0, i)), host_mac(i)))
            .collect(),
        setup: None,
        respond: None,
        patch: None,
        frames,
        success: ("icmp_echo_replies", |s| s.icmp_echo_replies),
        conn_pkts: 0,
    }
}
