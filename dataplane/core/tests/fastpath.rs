//! The established fast path changes nothing but the cost: the same traffic through a stack with
//! it and one without gives the same frames out (byte for byte), the same redirects, counters and
//! sessions. The traffic is FULLNAT connections (TCP and UDP, TOA on and off, one worker and
//! two) with every packet kind the fast path must leave to the general path mixed in: bad IP
//! checksums, TTL 1, IP options, fragments, Ethernet padding, truncated frames, other MACs,
//! broken TCP headers, FIN/RST/SYN, short UDP, packets above the MTU, unknown sessions, another
//! worker's lports, NAT sessions. Frames are built with etherparse and the forwarded ones parsed
//! with it (the oracle of tests/fullnat.rs); the general path is the reference.

use etherparse::{PacketHeaders, TransportHeader};
use rvs_core::counters::{CoreCounters, CounterSnapshot};
use rvs_core::packet::VecPacket;
use rvs_core::{Fwd, Proto, Sched, Stack, StackConfig};
use std::sync::Arc;

mod common;
use common::{
    rip, rs_mac, service, tcp, udp, Fl, TestIo, ACK, CIP, FINACK, GW0, LIP, MAC0, MAC1, RST, SYN,
    SYNACK, VIP,
};

/// Two stacks fed the same frames: `fast` with the fast path, `slow` without.
struct Pair {
    fast: Stack<VecPacket>,
    slow: Stack<VecPacket>,
    fio: TestIo,
    sio: TestIo,
    fc: Arc<CoreCounters>,
    sc: Arc<CoreCounters>,
    now: u64,
    /// Frames whose outputs were compared.
    frames: usize,
    /// Frames both handed to another worker.
    redirects: usize,
}

impl Pair {
    fn new(c: &StackConfig) -> Pair {
        let (mut fast, mut fio, fc) = common::setup(c.clone(), &[1, 2, 3, 4, 5]);
        let (mut slow, mut sio, sc) = common::setup(c.clone(), &[1, 2, 3, 4, 5]);
        slow.set_fast_path(false);
        fast.on_start(&mut fio, 0);
        slow.on_start(&mut sio, 0);
        fio.take();
        sio.take();
        Pair {
            fast,
            slow,
            fio,
            sio,
            fc,
            sc,
            now: 1,
            frames: 0,
            redirects: 0,
        }
    }

    /// Feed `f` on `port` to both; compare what they did. Returns the frames sent.
    fn feed(&mut self, port: u16, f: &[u8], what: &str) -> Vec<(u16, Vec<u8>)> {
        self.now += 3;
        self.fast
            .handle(&mut self.fio, port, VecPacket::from_slice(f), self.now);
        self.slow
            .handle(&mut self.sio, port, VecPacket::from_slice(f), self.now);
        let (a, b) = (self.fio.take(), self.sio.take());
        assert_eq!(a, b, "frames sent differ after {what}");
        let (ra, rb) = (
            std::mem::take(&mut self.fio.redirected),
            std::mem::take(&mut self.sio.redirected),
        );
        assert_eq!(ra, rb, "redirects differ after {what}");
        self.redirects += ra.len();
        assert_eq!(
            snap(&self.fc),
            snap(&self.sc),
            "counters differ after {what}"
        );
        assert_eq!(
            self.fast.sessions(),
            self.slow.sessions(),
            "sessions differ after {what}"
        );
        self.frames += 1;
        a
    }
}

/// Counters without the fast path's own.
fn snap(c: &CoreCounters) -> CounterSnapshot {
    let mut s = c.snapshot();
    s.fast_path = 0;
    s
}

/// xorshift64*: a fixed pseudo-random sequence, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ip_csum(f: &mut [u8]) {
    let ihl = (f[14] & 0xf) as usize * 4;
    f[24] = 0;
    f[25] = 0;
    let mut s = 0u32;
    for i in (14..14 + ihl).step_by(2) {
        s += u16::from_be_bytes([f[i], f[i + 1]]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
}

/// One way to spoil (or just vary) a frame; 0 leaves it as it is.
const KINDS: u64 = 15;

fn mutate(mut f: Vec<u8>, kind: u64) -> (Vec<u8>, &'static str) {
    let tcp = f[23] == 6;
    let what = match kind {
        1 => {
            f[24] ^= 0x5a;
            "bad IP checksum"
        }
        2 => {
            f[22] = 1;
            ip_csum(&mut f);
            "TTL 1"
        }
        3 => {
            // Four bytes of IP options (NOPs and an end), IHL 6.
            f.splice(34..34, [1u8, 1, 1, 0]);
            f[14] = 0x46;
            let total = u16::from_be_bytes([f[16], f[17]]) + 4;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            ip_csum(&mut f);
            "IP options"
        }
        4 => {
            f[20] |= 0x20; // more fragments
            ip_csum(&mut f);
            "fragment"
        }
        5 => {
            f.extend_from_slice(&[0; 9]);
            "Ethernet padding"
        }
        6 => {
            let n = f.len();
            f.truncate(n - 3);
            "truncated"
        }
        7 => {
            f[0] ^= 0x10;
            "another MAC"
        }
        8 => {
            f[..6].copy_from_slice(&[0xff; 6]);
            "broadcast MAC"
        }
        9 if tcp => {
            f[46] = 0xf0; // data offset 60
            "TCP data offset past the segment"
        }
        10 if tcp => {
            f[46] = 0x40; // data offset 16
            "TCP data offset below 20"
        }
        11 => {
            f[23] = 47; // GRE
            ip_csum(&mut f);
            "another protocol"
        }
        12 if !tcp => {
            f[40] = 0;
            f[41] = 0;
            "UDP without checksum"
        }
        13 => {
            f[22] = 2;
            ip_csum(&mut f);
            "TTL 2"
        }
        14 => {
            f[26] = 127; // source in 127.0.0.0/8: a client without session, or a reply
            ip_csum(&mut f);
            "martian source"
        }
        _ => "as is",
    };
    (f, what)
}

/// Client → VIP:80 TCP segment.
fn c2v(cport: u16, fl: Fl, payload: &[u8]) -> Vec<u8> {
    tcp(GW0, MAC0, CIP, cport, VIP, 80, fl, &[], payload)
}

/// Real server `rs`:8080 → LIP:`lport` TCP segment.
fn r2l(rs: u8, lport: u16, fl: Fl, payload: &[u8]) -> Vec<u8> {
    tcp(
        rs_mac(rs),
        MAC1,
        &rip(rs),
        8080,
        LIP,
        lport,
        fl,
        &[],
        payload,
    )
}

/// The lport the stacks chose for a connection: from the SYN they sent to the real server.
fn lport_of(out: &[(u16, Vec<u8>)]) -> Option<u16> {
    let (_, f) = out.first()?;
    let h = PacketHeaders::from_ethernet_slice(f).ok()?;
    match h.transport? {
        TransportHeader::Tcp(t) => Some(t.source_port),
        TransportHeader::Udp(u) => Some(u.source_port),
        _ => None,
    }
}

fn rs_index(out: &[(u16, Vec<u8>)]) -> Option<u8> {
    let (_, f) = out.first()?;
    let d = [f[30], f[31], f[32], f[33]];
    (1..=5).find(|&i| common::v4(&rip(i)) == d)
}

/// Run `conns` TCP connections and UDP flows through a pair built from `c`, mutating about one
/// packet in `spoil`.
fn run(c: StackConfig, seed: u64, conns: u16, spoil: u64) -> (Pair, usize) {
    let mut p = Pair::new(&c);
    let mut rng = Rng(seed);
    let mut forwarded = 0;
    for k in 0..conns {
        let cport = 20000 + k;
        // Handshake, untouched: the session must exist for the rest to mean anything.
        let out = p.feed(0, &c2v(cport, SYN, &[]), "SYN");
        let (Some(lport), Some(rs)) = (lport_of(&out), rs_index(&out)) else {
            continue; // redirected to another worker
        };
        p.feed(1, &r2l(rs, lport, SYNACK, &[]), "SYN-ACK");
        p.feed(0, &c2v(cport, ACK, &[]), "handshake ACK");
        let big = vec![0x42u8; 1600];
        for i in 0..24u32 {
            let len = rng.below(40) as usize;
            let payload = vec![i as u8; len];
            let (port, f) = if rng.below(2) == 0 {
                (0, c2v(cport, ACK, &payload))
            } else {
                (1, r2l(rs, lport, ACK, &payload))
            };
            let f = match rng.below(40) {
                0 => c2v(cport, ACK, &big),    // above the MTU
                1 => r2l(rs, lport, SYN, &[]), // a SYN inside the connection
                2 => c2v(
                    cport,
                    Fl {
                        syn: false,
                        ack: false,
                        fin: false,
                        rst: false,
                    },
                    b"x",
                ), // no ACK
                3 => c2v(cport + 1000, ACK, b"?"), // no session
                4 => r2l(rs, lport ^ 1, ACK, b"o"), // the next lport: another worker's of two
                _ => f,
            };
            let kind = if rng.below(spoil) == 0 {
                rng.below(KINDS)
            } else {
                0
            };
            let (f, what) = mutate(f, kind);
            let out = p.feed(port, &f, what);
            forwarded += out.len();
        }
        match rng.below(3) {
            0 => {
                p.feed(0, &c2v(cport, FINACK, &[]), "client FIN");
                p.feed(1, &r2l(rs, lport, FINACK, &[]), "server FIN");
                p.feed(0, &c2v(cport, ACK, &[]), "last ACK");
            }
            1 => {
                p.feed(1, &r2l(rs, lport, RST, &[]), "server RST");
            }
            _ => {} // left open
        }
        // A UDP flow of the same client.
        let q = udp(GW0, MAC0, CIP, cport, VIP, 53, b"query-query-");
        let out = p.feed(0, &q, "UDP query");
        if let (Some(lport), Some(rs)) = (lport_of(&out), rs_index(&out)) {
            for i in 0..8u8 {
                let len = [0usize, 4, 12, 30][rng.below(4) as usize];
                let f = if i % 2 == 0 {
                    udp(GW0, MAC0, CIP, cport, VIP, 53, &vec![i; len])
                } else {
                    udp(rs_mac(rs), MAC1, &rip(rs), 5353, LIP, lport, &vec![i; len])
                };
                let kind = if rng.below(spoil) == 0 {
                    rng.below(KINDS)
                } else {
                    0
                };
                let (f, what) = mutate(f, kind);
                forwarded += p.feed(if i % 2 == 0 { 0 } else { 1 }, &f, what).len();
            }
        }
    }
    (p, forwarded)
}

fn services() -> Vec<rvs_core::ServiceConf> {
    vec![
        service(
            Proto::Tcp,
            80,
            Sched::Rr,
            vec![
                dest(0, 1, 8080, 1),
                dest(1, 2, 8080, 1),
                dest(2, 3, 8080, 1),
            ],
            None,
        ),
        service(
            Proto::Udp,
            53,
            Sched::Rr,
            vec![dest(3, 4, 5353, 1), dest(4, 5, 5353, 1)],
            None,
        ),
    ]
}

fn dest(id: u32, i: u8, rport: u16, w: u32) -> rvs_core::DestConf {
    common::dest(id, i, rport, w, Fwd::FullNat)
}

fn cfg(toa: bool) -> StackConfig {
    let mut c = common::cfg(services());
    c.fullnat.toa = toa;
    c
}

#[test]
fn same_output_with_and_without_the_fast_path() {
    let (p, fwd) = run(cfg(true), 0x1234_5678, 60, 6);
    let fast = p.fc.snapshot().fast_path;
    assert!(p.frames > 2000, "{} frames", p.frames);
    assert!(fwd > 1000, "{fwd} forwarded");
    // Most plain packets of established sessions took it; the slow stack never did.
    assert!(fast > 500, "fast path used {fast} times");
    assert_eq!(p.sc.snapshot().fast_path, 0);
}

#[test]
fn same_output_without_toa() {
    let (p, _) = run(cfg(false), 0xdead_beef, 40, 5);
    assert!(p.fc.snapshot().fast_path > 300);
}

#[test]
fn same_output_on_one_of_two_workers() {
    // Worker 0 of 2: it allocates even lports only; replies to odd ones belong to worker 1 and
    // are redirected by the general path (the fast path must leave them); new connections are
    // scheduled here.
    let mut c = cfg(true);
    c.worker = 0;
    c.n_workers = 2;
    let (p, _) = run(c, 0x0bad_cafe, 40, 6);
    assert!(p.fc.snapshot().fast_path > 200);
    assert!(p.redirects > 5);
}

#[test]
fn same_output_with_every_packet_spoiled_often() {
    let (p, _) = run(cfg(true), 0x5eed, 40, 2);
    assert!(p.fc.snapshot().fast_path > 100);
}

#[test]
fn nat_sessions_take_the_general_path() {
    let mut c = common::cfg(vec![service(
        Proto::Tcp,
        80,
        Sched::Rr,
        vec![common::dest(0, 1, 8080, 1, Fwd::Nat)],
        None,
    )]);
    c.fullnat.toa = false;
    let mut p = Pair::new(&c);
    p.feed(
        0,
        &tcp(GW0, MAC0, CIP, 3000, VIP, 80, SYN, &[], &[]),
        "NAT SYN",
    );
    p.feed(
        1,
        &tcp(rs_mac(1), MAC1, &rip(1), 8080, CIP, 3000, SYNACK, &[], &[]),
        "NAT SYN-ACK",
    );
    for i in 0..10u8 {
        p.feed(
            0,
            &tcp(GW0, MAC0, CIP, 3000, VIP, 80, ACK, &[], &[i; 10]),
            "NAT data in",
        );
        p.feed(
            1,
            &tcp(
                rs_mac(1),
                MAC1,
                &rip(1),
                8080,
                CIP,
                3000,
                ACK,
                &[],
                &[i; 10],
            ),
            "NAT data out",
        );
    }
    assert_eq!(p.fc.snapshot().fast_path, 0);
    assert!(p.fc.snapshot().nat_in >= 10);
}

#[test]
fn same_output_after_the_services_change_under_open_sessions() {
    // Sessions outlive their service's changes: removing the UDP service and two TCP dests
    // must leave both paths doing the same with the packets of the sessions already open.
    let mut p = Pair::new(&cfg(false));
    let mut open = Vec::new();
    for k in 0..12u16 {
        let cport = 30000 + k;
        let out = p.feed(0, &c2v(cport, SYN, &[]), "SYN");
        let (Some(lport), Some(rs)) = (lport_of(&out), rs_index(&out)) else {
            panic!("SYN not forwarded");
        };
        p.feed(1, &r2l(rs, lport, SYNACK, &[]), "SYN-ACK");
        p.feed(0, &c2v(cport, ACK, &[]), "ACK");
        let out = p.feed(0, &udp(GW0, MAC0, CIP, cport, VIP, 53, b"q"), "UDP");
        let (Some(ulport), Some(urs)) = (lport_of(&out), rs_index(&out)) else {
            panic!("UDP not forwarded");
        };
        open.push((cport, lport, rs, ulport, urs));
    }
    let mut svcs = services();
    svcs.truncate(1);
    svcs[0].dests.truncate(1);
    p.fast.set_services(&svcs).unwrap();
    p.slow.set_services(&svcs).unwrap();
    for round in 0..3u8 {
        for &(cport, lport, rs, ulport, urs) in &open {
            let data = [round; 20];
            p.feed(0, &c2v(cport, ACK, &data), "data in after the change");
            p.feed(1, &r2l(rs, lport, ACK, &data), "data out after the change");
            p.feed(
                0,
                &udp(GW0, MAC0, CIP, cport, VIP, 53, &data),
                "UDP in after the change",
            );
            p.feed(
                1,
                &udp(rs_mac(urs), MAC1, &rip(urs), 5353, LIP, ulport, &data),
                "UDP out after the change",
            );
        }
    }
    assert!(p.fc.snapshot().fast_path > 100);
}
