//! Match (fwmark-like) services: packets selected by (proto, destination prefix, port range,
//! source prefix) are balanced after exact VIP:vport and port-0 services.

use rvs_core::lport::LportAlloc;
use rvs_core::packet::VecPacket;
use rvs_core::service::{ServiceError, Services};
use rvs_core::{
    Fwd, Persist, Prefix, Proto, Sched, ServiceConf, ServiceMatch, Stack, MAX_MATCH_SERVICES,
};

mod common;
use common::{a4, cfg, dest, handle, ip, rip, setup, tcp, v4, TestIo, CIP, GW0, LIP, MAC0, SYN};

fn pfx(s: &str) -> Prefix {
    s.parse().unwrap()
}

/// Match service `mark`: TCP to `dst`, dports `lo..=hi`, from `src`; NAT dests 1 and 2 with
/// rport 0 (the client's dport is kept).
fn match_svc(mark: u32, dst: &str, lo: u16, hi: u16, src: Option<&str>) -> ServiceConf {
    let m = ServiceMatch {
        mark,
        proto: Proto::Tcp,
        dst: pfx(dst),
        dport: (lo, hi),
        src: src.map(pfx),
    };
    ServiceConf {
        proto: Proto::Tcp,
        vip: pfx(dst).network(),
        vport: 0,
        vip_port: 0,
        sched: Sched::Rr,
        dests: vec![
            dest(10 + mark * 2, 1, 0, 1, Fwd::Nat),
            dest(11 + mark * 2, 2, 0, 1, Fwd::Nat),
        ],
        lips: vec![],
        lip_port: 1,
        persist: None,
        mark: Some(m),
    }
}

/// Sends a SYN `cip`:`cport` → `dst`:`dport`; returns the (RIP, rport) it was balanced to, or
/// None when nothing went to the real-server port.
fn syn(
    s: &mut Stack<VecPacket>,
    io: &mut TestIo,
    cip: &str,
    cport: u16,
    dst: &str,
    dport: u16,
) -> Option<([u8; 4], u16)> {
    handle(
        s,
        io,
        0,
        &tcp(GW0, MAC0, cip, cport, dst, dport, SYN, &[], &[]),
        0,
    );
    let out = io.take();
    let to_rs: Vec<_> = out.iter().filter(|(p, _)| *p == 1).collect();
    let (_, f) = to_rs.first()?;
    assert_eq!(to_rs.len(), 1);
    let ipd: [u8; 4] = f[30..34].try_into().unwrap();
    let l4 = 14 + (f[14] & 0xf) as usize * 4;
    Some((ipd, u16::from_be_bytes([f[l4 + 2], f[l4 + 3]])))
}

#[test]
fn match_balances_inside_and_not_outside() {
    let (mut s, mut io, _) = setup(
        cfg(vec![match_svc(1, "203.0.113.0/28", 8000, 8100, None)]),
        &[1, 2],
    );
    // Small prefix: every address is owned (ARP answered).
    assert!(s.is_owned(ip("203.0.113.0")) && s.is_owned(ip("203.0.113.15")));
    assert!(!s.is_owned(ip("203.0.113.16")));
    // Port range edges, real port 0 keeps the client's dport; rr over the two dests.
    let r1 = syn(&mut s, &mut io, CIP, 40000, "203.0.113.5", 8000).unwrap();
    assert_eq!(r1, (v4(&rip(1)), 8000));
    let r2 = syn(&mut s, &mut io, CIP, 40001, "203.0.113.15", 8100).unwrap();
    assert_eq!(r2, (v4(&rip(2)), 8100));
    // The session records the packet's destination and dport.
    let info = s
        .session_by_client(Proto::Tcp, a4(CIP), 40000, a4("203.0.113.5"), 8000)
        .unwrap();
    assert_eq!((info.rport, info.fwd), (8000, Fwd::Nat));
    // Outside: port below/above the range, address outside the prefix, UDP.
    assert_eq!(syn(&mut s, &mut io, CIP, 40002, "203.0.113.5", 7999), None);
    assert_eq!(syn(&mut s, &mut io, CIP, 40003, "203.0.113.5", 8101), None);
    assert_eq!(syn(&mut s, &mut io, CIP, 40004, "203.0.113.16", 8000), None);
    assert_eq!(s.session_count(), 2);
}

#[test]
fn match_src_restriction() {
    let (mut s, mut io, _) = setup(
        cfg(vec![match_svc(
            7,
            "203.0.113.0/28",
            80,
            80,
            Some("100.64.0.0/24"),
        )]),
        &[1, 2],
    );
    assert!(syn(&mut s, &mut io, "100.64.0.7", 40000, "203.0.113.1", 80).is_some());
    assert_eq!(
        syn(&mut s, &mut io, "100.64.1.7", 40000, "203.0.113.1", 80),
        None
    );
    assert_eq!(s.session_count(), 1);
}

#[test]
fn exact_and_port0_services_take_precedence() {
    let mut exact = common::service(Proto::Tcp, 8050, Sched::Rr, vec![], None);
    exact.vip = ip("203.0.113.10");
    exact.dests = vec![dest(1, 3, 9000, 1, Fwd::Nat)];
    let (mut s, mut io, _) = setup(
        cfg(vec![
            match_svc(1, "203.0.113.0/28", 8000, 8100, None),
            exact,
        ]),
        &[1, 2, 3],
    );
    assert_eq!(
        syn(&mut s, &mut io, CIP, 40000, "203.0.113.10", 8050),
        Some((v4(&rip(3)), 9000))
    );
    // Another port of the same address falls to the match service.
    assert_eq!(
        syn(&mut s, &mut io, CIP, 40001, "203.0.113.10", 8051),
        Some((v4(&rip(1)), 8051))
    );
}

#[test]
fn large_prefix_is_routed_not_owned() {
    let (mut s, mut io, _) = setup(
        cfg(vec![match_svc(2, "10.20.0.0/16", 443, 443, None)]),
        &[1, 2],
    );
    assert!(!s.is_owned(ip("10.20.3.4")));
    assert_eq!(
        syn(&mut s, &mut io, CIP, 40000, "10.20.3.4", 443),
        Some((v4(&rip(1)), 443))
    );
}

#[test]
fn persistence_template_is_keyed_by_mark() {
    let mut m = match_svc(3, "203.0.113.0/28", 80, 90, None);
    m.persist = Some(Persist::default());
    // Persistent services take FULLNAT (or DR/TUN) dests.
    m.lips = vec![ip(LIP)];
    for d in &mut m.dests {
        d.fwd = Fwd::FullNat;
    }
    let (mut s, mut io, _) = setup(cfg(vec![m]), &[1, 2]);
    // Different addresses and ports of the match, same client: one template, same real.
    let a = syn(&mut s, &mut io, CIP, 40000, "203.0.113.1", 80).unwrap();
    let b = syn(&mut s, &mut io, CIP, 40001, "203.0.113.9", 85).unwrap();
    let c = syn(&mut s, &mut io, CIP, 40002, "203.0.113.3", 90).unwrap();
    assert_eq!((a.0, b.0, c.0), (v4(&rip(1)), v4(&rip(1)), v4(&rip(1))));
    assert_eq!((b.1, c.1), (85, 90));
}

#[test]
fn build_rejects_bad_marks() {
    let mut lports = LportAlloc::new(0, 1, 1025, 65535, 0, None);
    let a = match_svc(1, "203.0.113.0/28", 80, 80, None);
    let r = Services::build(&[a.clone(), a.clone()], 4096, 2, &mut lports);
    assert_eq!(r.err(), Some(ServiceError::DuplicateMark(1)));
    let mut z = a.clone();
    z.mark.as_mut().unwrap().mark = 0;
    assert_eq!(
        Services::build(&[z], 4096, 2, &mut lports).err(),
        Some(ServiceError::BadMatch(0))
    );
    let mut e = a.clone();
    e.mark.as_mut().unwrap().dport = (90, 80);
    assert_eq!(
        Services::build(&[e], 4096, 2, &mut lports).err(),
        Some(ServiceError::BadMatch(1))
    );
    let many: Vec<_> = (1..=MAX_MATCH_SERVICES as u32 + 1)
        .map(|k| {
            let mut c = a.clone();
            c.mark.as_mut().unwrap().mark = k;
            c.dests.clear();
            c
        })
        .collect();
    assert_eq!(
        Services::build(&many, 4096, 2, &mut lports).err(),
        Some(ServiceError::TooManyMarks)
    );
    let ok = Services::build(&many[..MAX_MATCH_SERVICES], 4096, 2, &mut lports).unwrap();
    assert_eq!(ok.lookup_mark(64), Some(63));
}
