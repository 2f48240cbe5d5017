//! The FULLNAT fast path: one IPv4 TCP/UDP packet to an owned address, validated once on a
//! fixed-size view of its first 54 bytes and then, by what its session needs:
//!
//! - a plain packet of an established FULLNAT session (the bulk of a gateway's traffic) is
//!   forwarded in one pass: expiry, per-dest counters, rewrite, Ethernet header;
//! - any other packet of a FULLNAT session (handshake, FIN, RST, TOA still to insert, a next
//!   hop to look up, above the MTU) goes straight to the general path's handler of its
//!   direction (`fnat_in` / `fnat_out`), and a client packet without a session to the new
//!   connection handler (`fnat_in_or_new`): the validation, classification and session lookup
//!   the general path would do first are done here already, once.
//!
//! It is a specialisation, not a second implementation: [`Stack::fast_path`] first decides from
//! the packet and the session, changing nothing, whether the general path (`handle_general` →
//! `ipv4_input` → `fnat_input` → `fnat_in`/`fnat_out`) would come to that handler (or forward it
//! with nothing but the expiry, the counters, the rewrite and the Ethernet header), and only then
//! does exactly that. Anything else (IP options, fragments, TTL 1, another worker's lport,
//! NAT/DR/TUN sessions, a reply without session, a martian source, a malformed or short header,
//! Ethernet padding inside the view, broadcast frames) goes to the general path untouched, which
//! handles and counts it. `dataplane/core/tests/fastpath.rs` runs every kind of packet through
//! both and compares the frames sent, the counters and the sessions.

use crate::config::Fwd;
use crate::fullnat::{PROTO_TCP, PROTO_UDP};
use crate::io::{Io, PortIdx};
use crate::packet::PacketBuf;
use crate::session::F_TOA_DONE;
use crate::stack::{Owned, Stack};
use crate::tcp_state::{flags, TcpState};
use crate::wire::{be16, be32, ip4, ETHERTYPE_IPV4, ETH_LEN};
use std::net::Ipv4Addr;

/// Bytes the fast path works on: Ethernet, a 20-byte IPv4 header, a 20-byte TCP header (or a UDP
/// header and 12 bytes of payload).
const VIEW: usize = ETH_LEN + 20 + 20;

/// What [`Stack::fast_plan`] decided for a validated packet.
enum Fast {
    /// Forward it in one pass.
    Forward(Plan),
    /// Hand it to its direction's handler: session `idx`, a reply (`out`) or a client packet.
    Session { idx: u32, out: bool },
    /// A client packet without a session: maybe a new connection.
    New,
}

/// A packet forwarded in one pass: the session and its direction, the next hop, the IP length.
struct Plan {
    idx: u32,
    out: bool,
    neigh: u32,
    total: u16,
    tcp: bool,
}

impl<P: PacketBuf> Stack<P> {
    /// Forward `pkt` (received on `port`; `bucket`: its session bucket, from the prefetch stage)
    /// when it is a plain packet of an established FULLNAT session; else give it back unchanged
    /// for the general path.
    #[inline(always)]
    pub(crate) fn fast_path<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        mut pkt: P,
        bucket: u32,
        now_ms: u64,
    ) -> Option<P> {
        if self.fnat.sessions.is_empty() {
            return Some(pkt);
        }
        let len = pkt.len();
        let Some(v) = pkt
            .data_mut()
            .get_mut(..VIEW)
            .and_then(|v| <&mut [u8; VIEW]>::try_from(v).ok())
        else {
            return Some(pkt);
        };
        let plan = match self.fast_plan(port, v, len, bucket) {
            None => return Some(pkt),
            Some(Fast::Forward(plan)) => plan,
            Some(Fast::Session { idx, out }) => {
                return self.fast_dispatch(io, port, pkt, Some(idx), out, now_ms)
            }
            Some(Fast::New) => return self.fast_dispatch(io, port, pkt, None, false, now_ms),
        };
        let f = &mut self.fnat;
        let s = f.sessions.get_mut(plan.idx);
        let tcp = plan.tcp;
        s.expires_ms = now_ms
            + if tcp {
                f.conf.timeouts.tcp_established
            } else {
                f.conf.timeouts.udp
            };
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        let total = plan.total as u64;
        let st = f.dest_stats.get(s.dest as usize);
        if plan.out {
            if tcp {
                // The real server speaks after the handshake: it holds the connection (and TOA).
                s.flags |= F_TOA_DONE;
            }
            if let Some(st) = st {
                st.outpkts.inc();
                st.outbytes.add(total);
            }
            crate::fullnat::rewrite_fixed(v, proto, s.vip, s.cip, s.vport, s.cport);
        } else {
            if let Some(st) = st {
                st.inpkts.inc();
                st.inbytes.add(total);
            }
            crate::fullnat::rewrite_fixed(v, proto, s.lip, s.rip, s.lport, s.rport);
        }
        let (out_port, mac, my_mac) = self.neigh_macs(io, plan.neigh, now_ms);
        v[..6].copy_from_slice(&mac.0);
        v[6..12].copy_from_slice(&my_mac.0);
        let ip_end = ETH_LEN + plan.total as usize;
        if len > ip_end {
            pkt.set_len(ip_end); // Ethernet padding, stripped as the general path does
        }
        io.send(out_port, pkt);
        let c = &self.counters;
        if plan.out {
            c.fullnat_out.inc();
        } else {
            c.fullnat_in.inc();
        }
        c.fast_path.inc();
        None
    }

    /// A validated packet that is not forwarded in one pass: to the handler the general path
    /// would have come to, with the padding stripped as it would have been (`found`: the
    /// packet's session, `out`: a reply). Out of line, so the one-pass forwarding keeps its
    /// registers. Gives the packet back when no service takes a client packet without session:
    /// the general path then comes to the same conclusion and handles it.
    #[inline(never)]
    fn fast_dispatch<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        mut pkt: P,
        found: Option<u32>,
        out: bool,
        now_ms: u64,
    ) -> Option<P> {
        let ip_end = ETH_LEN + be16(pkt.data(), ip4::TOTAL_LEN) as usize;
        if pkt.len() > ip_end {
            pkt.set_len(ip_end);
        }
        match found {
            Some(idx) if out => {
                self.fnat_out(io, port, pkt, 20, idx, now_ms);
                None
            }
            _ => self.fnat_in_or_new(io, port, pkt, 20, found, now_ms),
        }
    }

    /// Whether the fast path takes frame `f` (the first [`VIEW`] bytes of `len`), and how. Reads
    /// only.
    #[inline(always)]
    fn fast_plan(&self, port: PortIdx, f: &[u8; VIEW], len: usize, bucket: u32) -> Option<Fast> {
        let proto = f[ip4::PROTO];
        let tcp = proto == PROTO_TCP;
        let ps = self.ports.get(port as usize)?;
        // Unicast to the port, IPv4 without options, not a fragment, a TTL left to decrement.
        if f[..6] != ps.mac.0
            || be16(f, 12) != ETHERTYPE_IPV4
            || f[ip4::VIHL] != 0x45
            || be16(f, ip4::FRAG) & ip4::MF_OFFSET != 0
            || f[ip4::TTL] <= 1
        {
            return None;
        }
        // Addressed to rvs (transit traffic leaves here, before the checksum).
        let dst = be32(f, ip4::DST);
        let o: Owned = *self.owned_v4.get(&dst)?;
        // The whole view is packet, not padding (the rewrite covers it), within the frame.
        let total = be16(f, ip4::TOTAL_LEN);
        if (total as usize) < VIEW - ETH_LEN || ETH_LEN + total as usize > len {
            return None;
        }
        if tcp {
            let doff = (f[ETH_LEN + 20 + 12] >> 4) as u16 * 4;
            if doff < 20 || doff > total - 20 {
                return None;
            }
        } else if proto != PROTO_UDP {
            return None;
        }
        if crate::checksum::ip_header_checksum(&f[ETH_LEN..ETH_LEN + 20]) != 0 {
            return None;
        }
        let src = Ipv4Addr::from(be32(f, ip4::SRC));
        let dst = Ipv4Addr::from(dst);
        let (sport, dport) = (be16(f, ETH_LEN + 20), be16(f, ETH_LEN + 22));
        let fnat = &self.fnat;
        // As `fnat_input` decides: a LIP's lport range holds the replies, the rest is inbound.
        let out = o.pool != Owned::NO_POOL && fnat.lports.in_range(dport);
        let idx = if out {
            // A client's source passed this test when its session was made (the broadcast
            // addresses never change); a real server's replies may come here first (UDP, or a
            // handshake the client completed).
            if fnat.lports.owner(dport) != fnat.worker || self.is_martian_src(src) {
                return None;
            }
            // Its direct head: as cheap to compute as to check the prefetch stage's hint.
            let b = fnat
                .sessions
                .out_bucket_of(o.pool, proto, src, sport, dst, dport);
            fnat.sessions
                .lookup_out_at(b, proto, src, sport, dst, dport)?
        } else {
            let b = fnat
                .sessions
                .in_bucket_hint(bucket, proto, src, sport, dst, dport);
            match fnat.sessions.lookup_in_at(b, proto, src, sport, dst, dport) {
                Some(idx) => idx,
                // A new client: its source is tested as the general path tests every packet's.
                None if self.is_martian_src(src) => return None,
                None => return Some(Fast::New),
            }
        };
        let s = fnat.sessions.get(idx);
        if s.fwd != Fwd::FullNat {
            return None;
        }
        let handler = Some(Fast::Session { idx, out });
        if tcp {
            // Handshakes and closes change the state; the TOA still rides on the client's
            // packets until the real server is seen sending.
            if f[ETH_LEN + 20 + 13] & (flags::SYN | flags::FIN | flags::RST) != 0
                || s.state != TcpState::Established as u8
                || (!out && fnat.conf.toa && s.flags & F_TOA_DONE == 0)
            {
                return handler;
            }
        }
        let next_hop = if out {
            self.neigh_valid(s.nh_out, s.nh_gen).map(|p| (p, s.nh_out))
        } else {
            self.nh_cached(s.rip)
        };
        let Some((out_port, neigh)) = next_hop else {
            return handler;
        };
        if total > self.ports.get(out_port as usize)?.mtu {
            return handler;
        }
        Some(Fast::Forward(Plan {
            idx,
            out,
            neigh,
            total,
            tcp,
        }))
    }
}
