//! LVS's classic forwarding methods NAT, DR and TUN (`ipvsadm -m`, `-g`, `-i`), chosen per real
//! server ([`Fwd`]) next to FULLNAT. Sessions, scheduling, TCP state tracking, timeouts and the
//! per-dest counters are FULLNAT's ([`crate::fullnat`]); this module holds what differs.
//!
//! # NAT (masquerading)
//!
//! Client → VIP:vport becomes CIP:cport → RIP:rport (port mapping allowed), TTL decremented,
//! checksums updated incrementally. The session stores `lip = CIP`, `lport = cport`, so its
//! outbound index key is the reply's own tuple `(proto, RIP, rport, CIP, cport)`. The real
//! server's default route points at rvs, so its replies arrive as transit packets (destination
//! not owned by rvs): before transit forwarding, `Stack::nat_transit` looks them up in the
//! outbound index and rewrites the source back to VIP:vport (TTL decremented as for any routed
//! packet). A transit packet matching no NAT session is forwarded (or dropped) as before.
//! rvs does not reassemble: a fragment from a NAT real server's address cannot be translated,
//! and forwarded untranslated it would show the RIP to the client, so it is dropped and counted
//! (`nat_fragment`); keep NAT replies within the MTU (or use FULLNAT).
//!
//! TTL: IPVS handles NAT requests at LOCAL_IN and sends them without decrementing the TTL, while
//! replies, handled at FORWARD, lose one in `ip_forward`. rvs decrements in both directions (as
//! its FULLNAT does): it is a routing hop either way, and it protects against loops.
//!
//! **Core ownership** (share-nothing): every session of a service with a NAT dest is owned by
//! worker [`nat_owner`]`(CIP, cport)`. Inbound packets of such a service that miss the local
//! session table are redirected to the owner before any scheduling, and transit TCP/UDP packets
//! (possible NAT replies) to `nat_owner(dst, dport)` before the lookup; a transit ICMP error
//! quoting CIP:cport → RIP:rport goes to `nat_owner(CIP, cport)`. With one worker nothing is
//! ever redirected. Once any service had a NAT dest, every transit TCP/UDP packet goes through
//! this steering (plain routed traffic is then forwarded by the owner, unchanged otherwise).
//!
//! ICMP errors quoting a NAT session's packet are translated as IPVS's `ip_vs_nat_icmp`: from
//! the real-server side (transit, quoting CIP:cport → RIP:rport) the outer source and the quoted
//! destination become the VIP:vport; from the client side (to the VIP, quoting VIP:vport →
//! CIP:cport) the outer destination and the quoted source become RIP:rport.
//!
//! # DR (direct routing)
//!
//! Only the Ethernet header changes: destination = the real server's MAC from the neighbour
//! table (RIP resolved on the egress port of its route through the normal neighbour / hold
//! machinery; the RIP must be on-link), source = the egress port's MAC. The IP packet is sent
//! byte for byte, TTL included: IPVS's `ip_vs_dr_xmit` does not decrement it either (it sends
//! through `LOCAL_OUT`, not `ip_forward`). A packet larger than the egress MTU is handled as for
//! TUN below (without the 20 bytes).
//!
//! # TUN (IP-in-IP)
//!
//! The packet is encapsulated, as IPVS's `ip_vs_tunnel_xmit`, in an outer IPv4 header DIP → RIP,
//! protocol 4, where DIP is rvs's address toward the RIP (the route's source: the egress port's
//! address on the RIP's, or its gateway's, subnet). Outer TOS (DSCP and ECN) copied from the
//! inner header, DF copied from the inner packet, outer ID fresh (per-core counter), outer TTL =
//! inner TTL (IPVS: `ttl = old_iph->ttl`), inner packet unchanged (TTL not decremented), outer
//! checksum computed. The inner packet is moved 20 bytes down in the buffer (the core's buffers
//! have no headroom API); a buffer without room is dropped as `tun_no_room`.
//!
//! MTU: when inner length + 20 exceeds the egress MTU and the inner DF is set, an ICMP
//! fragmentation-needed with next-hop MTU = egress MTU − 20 goes back to the client (rate-limited
//! like every ICMP error) and the packet is dropped as `mtu_exceeded`; with DF clear it is
//! dropped as `mtu_exceeded` too (rvs never fragments; IPVS would fragment the outer packet). The
//! ICMP source is the VIP: IPVS's `ensure_mtu_is_adequate` calls `icmp_send` while the skb still
//! carries its local input route to the VIP, and `__icmp_send` then uses the packet's own
//! destination (`saddr = iph->daddr` for an `RTCF_LOCAL` route), i.e. the director's VIP.
//!
//! # DR/TUN sessions
//!
//! rvs sees only the client's packets, so TCP states follow IPVS's INPUT-ONLY table
//! ([`crate::tcp_state::Dir::InputOnly`]) with the same timeouts, and the dest's active/inactive
//! counts move on the client's SYN/ACK/FIN/RST. The session lives on the worker that receives
//! the client's packets: the NIC's RSS keeps a flow on one queue, so no redirect is needed
//! (unless the service also has a NAT dest, where the NAT ownership rule above applies to all its
//! sessions). ICMP errors from the client side quoting a DR/TUN session's packet are forwarded
//! unchanged with the session's method, as IPVS's `ip_vs_icmp_xmit`.

use crate::checksum::checksum;
use crate::config::Fwd;
use crate::counters::DropReason;
use crate::fixedmap::mix;
use crate::fullnat::{icmp_quote, Translate, PROTO_TCP, PROTO_UDP};
use crate::io::{Io, PortIdx};
use crate::packet::PacketBuf;
use crate::stack::{Owned, Stack};
use crate::wire::*;
use std::net::{IpAddr, Ipv4Addr};

/// IP protocol number of IP-in-IP.
pub const PROTO_IPIP: u8 = 4;
/// Length of the TUN outer header.
pub const TUN_HDR: usize = 20;

/// The worker owning the NAT sessions of client `cip:cport` among `n_workers`:
/// `splitmix64(cip << 16 | cport) % n_workers` (0 when `n_workers <= 1`). Unseeded, so every
/// worker (and the control plane) computes the same owner.
#[inline]
pub fn nat_owner(cip: Ipv4Addr, cport: u16, n_workers: u16) -> u16 {
    if n_workers <= 1 {
        return 0;
    }
    let k = (u32::from(cip) as u64) << 16 | cport as u64;
    (mix(k) % n_workers as u64) as u16
}

impl<P: PacketBuf> Stack<P> {
    /// A validated transit IPv4 packet (destination not owned by rvs): handle it
    /// when it is a NAT reply (or an ICMP error about a NAT session's packet), redirecting it to
    /// the owner first. Returns the packet when it is not NAT traffic (plain forwarding).
    pub(crate) fn nat_transit<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        ihl: usize,
        now_ms: u64,
    ) -> Option<P> {
        if !self.fnat.nat_enabled {
            return Some(pkt);
        }
        let d = pkt.data();
        if be16(d, ip4::FRAG) & ip4::MF_OFFSET != 0 {
            // A NAT real server's reply too large for one packet: without reassembly it cannot
            // be translated, and untranslated it would carry the RIP to the client (which
            // drops it anyway). Other fragments are plain transit.
            let src = IpAddr::V4(ipv4_at(d, ip4::SRC));
            if self.fnat.services.is_nat_rip(src) {
                self.drop_pkt(pkt, DropReason::NatFragment);
                return None;
            }
            return Some(pkt);
        }
        let proto = d[ip4::PROTO];
        let l4 = ETH_LEN + ihl;
        let l4_len = d.len() - l4;
        if proto == PROTO_ICMP {
            return self.nat_icmp_transit(io, port, pkt, ihl, now_ms);
        }
        let hdr_ok = match proto {
            PROTO_TCP => l4_len >= 20,
            PROTO_UDP => l4_len >= 8,
            _ => false,
        };
        if !hdr_ok {
            return Some(pkt);
        }
        let (src, dst) = (ipv4_at(d, ip4::SRC), ipv4_at(d, ip4::DST));
        let (sport, dport) = (be16(d, l4), be16(d, l4 + 2));
        let owner = nat_owner(dst, dport, self.fnat.n_workers);
        if owner != self.fnat.worker {
            self.fnat_redirect(io, owner, port, pkt);
            return None;
        }
        match self
            .fnat
            .sessions
            .lookup_out(Owned::NO_POOL, proto, src, sport, dst, dport)
        {
            Some(idx) if self.fnat.sessions.get(idx).fwd == Fwd::Nat => {
                self.fnat_out(io, port, pkt, ihl, idx, now_ms);
                None
            }
            _ => Some(pkt),
        }
    }

    /// Transit ICMP error quoting CIP:cport → RIP:rport of a NAT session (from the real server or
    /// a router between): translate it toward the client as coming from the VIP.
    fn nat_icmp_transit<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        ihl: usize,
        now_ms: u64,
    ) -> Option<P> {
        let d = pkt.data();
        let Some(q) = icmp_quote(d, ihl) else {
            return Some(pkt);
        };
        if ipv4_at(d, ip4::DST) != q.isrc {
            return Some(pkt);
        }
        let owner = nat_owner(q.isrc, q.isport, self.fnat.n_workers);
        if owner != self.fnat.worker {
            self.fnat_redirect(io, owner, port, pkt);
            return None;
        }
        // No NAT session: an error about other routed traffic, forwarded as such (PMTUD and
        // traceroute of the real servers' own connections go through here).
        let Some(idx) = self.fnat.sessions.lookup_out(
            Owned::NO_POOL,
            q.iproto,
            q.idst,
            q.idport,
            q.isrc,
            q.isport,
        ) else {
            return Some(pkt);
        };
        let s = *self.fnat.sessions.get(idx);
        if s.fwd != Fwd::Nat || checksum(&d[q.ic..]) != 0 {
            return Some(pkt);
        }
        let t = Translate {
            osrc: s.vip,
            odst: s.cip,
            isrc: s.cip,
            isport: s.cport,
            idst: s.vip,
            idport: s.vport,
            mtu_sub: 0,
        };
        self.icmp_translate(io, pkt, ihl, q.iihl, t, now_ms);
        None
    }

    /// DR: send `pkt` unchanged past the Ethernet header to `rip`'s MAC on the egress port of its
    /// route.
    pub(crate) fn dr_xmit<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        pkt: P,
        rip: Ipv4Addr,
        now_ms: u64,
    ) {
        let Some(route) = self.routes.lookup(IpAddr::V4(rip)).copied() else {
            return self.drop_pkt(pkt, DropReason::NoRoute);
        };
        let d = pkt.data();
        let mtu = self.ports[route.port as usize].mtu;
        if be16(d, ip4::TOTAL_LEN) > mtu {
            self.mtu_exceeded_to_client(io, in_port, pkt, mtu, now_ms);
            return;
        }
        if self.neigh_output(io, route.port, IpAddr::V4(rip), route.src, pkt, now_ms) {
            self.counters.dr_out.inc();
        }
    }

    /// Drop `pkt` (to a VIP) as `mtu_exceeded`; when its DF is set, first tell the client with an
    /// ICMP fragmentation-needed from the VIP announcing `mtu`.
    fn mtu_exceeded_to_client<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        pkt: P,
        mtu: u16,
        now_ms: u64,
    ) {
        let d = pkt.data();
        if be16(d, ip4::FRAG) & ip4::DF != 0 {
            let ihl = (d[ip4::VIHL] & 0xf) as usize * 4;
            let vip = ipv4_at(d, ip4::DST);
            self.icmp_error_from(
                io,
                in_port,
                Some(vip),
                d,
                ihl,
                ICMP_DEST_UNREACH,
                ICMP_FRAG_NEEDED,
                mtu,
                now_ms,
            );
        }
        self.drop_pkt(pkt, DropReason::MtuExceeded);
    }

    /// TUN: encapsulate `pkt` in IPv4 DIP → `rip` (protocol 4) and send it toward `rip`.
    pub(crate) fn tun_xmit<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        mut pkt: P,
        _ihl: usize,
        rip: Ipv4Addr,
        now_ms: u64,
    ) {
        let Some(route) = self.routes.lookup(IpAddr::V4(rip)).copied() else {
            return self.drop_pkt(pkt, DropReason::NoRoute);
        };
        let IpAddr::V4(dip) = route.src else {
            return self.drop_pkt(pkt, DropReason::NoRoute);
        };
        let d = pkt.data();
        let total = be16(d, ip4::TOTAL_LEN) as usize;
        let mtu = self.ports[route.port as usize].mtu;
        if total + TUN_HDR > mtu as usize {
            let m = mtu.saturating_sub(TUN_HDR as u16);
            return self.mtu_exceeded_to_client(io, in_port, pkt, m, now_ms);
        }
        let len = pkt.len();
        if len + TUN_HDR > pkt.capacity() || ETH_LEN + total != len {
            return self.drop_pkt(pkt, DropReason::TunNoRoom);
        }
        let (tos, ttl, df) = (d[ip4::TOS], d[ip4::TTL], be16(d, ip4::FRAG) & ip4::DF);
        if !pkt.set_len(len + TUN_HDR) {
            return self.drop_pkt(pkt, DropReason::TunNoRoom);
        }
        self.ip_id = self.ip_id.wrapping_add(1);
        let d = pkt.data_mut();
        d.copy_within(ETH_LEN..len, ETH_LEN + TUN_HDR);
        d[ip4::VIHL] = 0x45;
        d[ip4::TOS] = tos;
        put16(d, ip4::TOTAL_LEN, (total + TUN_HDR) as u16);
        put16(d, ip4::ID, self.ip_id);
        put16(d, ip4::FRAG, df);
        d[ip4::TTL] = ttl;
        d[ip4::PROTO] = PROTO_IPIP;
        put16(d, ip4::CSUM, 0);
        d[ip4::SRC..ip4::SRC + 4].copy_from_slice(&dip.octets());
        d[ip4::DST..ip4::DST + 4].copy_from_slice(&rip.octets());
        let c = checksum(&d[ETH_LEN..ETH_LEN + TUN_HDR]);
        put16(d, ip4::CSUM, c);
        let nh = route.next_hop(IpAddr::V4(rip));
        if self.neigh_output(io, route.port, nh, route.src, pkt, now_ms) {
            self.counters.tun_out.inc();
        }
    }
}
