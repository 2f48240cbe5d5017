//! FULLNAT: the per-worker session state and the packet path of `Stack` for virtual services.
//!
//! Client → VIP:vport packets (inbound) are matched to a session by (proto, CIP, cport, VIP,
//! vport), or create one (TCP: only a SYN without ACK/RST/FIN, as IPVS; UDP: any packet): the
//! service's scheduler picks a dest (RIP:rport), the lport allocator a LIP:lport. The packet is
//! rewritten to LIP:lport → RIP:rport (TTL decremented, checksums updated incrementally per RFC
//! 1624; a UDP checksum of 0 stays 0) and leaves through the normal output path (route lookup,
//! neighbour resolution, Ethernet rewrite). Replies to LIP:lport (outbound) are first sent to the
//! worker owning the lport (`lport % n_workers`), before any table lookup, then matched by (proto,
//! RIP, rport, LIP, lport) and rewritten to VIP:vport → CIP:cport.
//!
//! TCP sessions follow IPVS's state table ([`crate::tcp_state`]) with per-state timeouts; the
//! client's ACK that completes the handshake (SYN_RECV → ESTABLISHED) gets the TOA option (kind
//! 254, len 8: client port and address) inserted at the start of the options, once per session.
//! rvs never changes sequence numbers, so timestamps and SACK pass through untouched; sharing a
//! LIP among clients is safe with timestamps because Linux ≥ 4.12 has no `tcp_tw_recycle`.
//!
//! The same session table, state tracking, timeouts and per-dest counters serve the NAT, DR and
//! TUN forwarding methods ([`crate::config::Fwd`], chosen per dest); their packet handling is in
//! [`crate::fwd`]. A new session takes its dest's method; `Stack::fnat_in` dispatches on it.
//!
//! ICMP errors (destination unreachable, time exceeded) about a session's packet are translated
//! to the other side. A frag-needed MTU coming from the real-server side is lowered by 8 while
//! the session may still carry TOA (TCP, TOA on, not yet inserted). A frag-needed from the path
//! to a TUN real server (quoting rvs's IPIP packet) goes to the client from the VIP, less the
//! outer header. Limitations (documented deviations): fragments to a VIP are dropped
//! (`ipv4_fragment_vip`, no reassembly), and so are fragments to a LIP (a real server's
//! fragmented UDP reply, say: passed to the port's kernel interface when it has one, else
//! dropped as `ipv4_fragment`), where DPVS reassembles. An ICMP error about a client's flow
//! (from the client side, or the TUN frag-needed) is passed to the worker holding the session:
//! the persistence or NAT owner, else the worker RSS steers the flow to when the port's RSS is
//! known; without it (a PMD that does not report RSS) it is translated only when it reaches that
//! worker, and otherwise handled locally as an unhandled ICMP.

use crate::checksum::{checksum, fold, fold35, update_u16, update_u32};
use crate::config::{FullnatConf, Fwd, Proto, ServiceConf, StackConfig};
use crate::counters::DropReason;
use crate::io::{Io, PortIdx};
use crate::lport::LportAlloc;
use crate::packet::PacketBuf;
use crate::persist::{persist_owner, TemplateInfo, Templates, NO_TMPL};
use crate::sched::{DestStats, MhLookup, SchedKey};
use crate::service::{OwnerRule, ServiceError, Services};
use crate::session::{Session, SessionTable, F_ACTIVE, F_TOA_DONE, F_TOA_TRIED, F_USED};
use crate::stack::{Owned, Stack};
use crate::tcp_state::{flags, Dir, TcpState};
use crate::timer::TimerWheel;
use crate::wire::*;
use std::net::{IpAddr, Ipv4Addr};

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// TCP option kind of TOA.
pub const TCPOPT_TOA: u8 = 254;
/// Length of the TOA option.
pub const TCPOLEN_TOA: usize = 8;
/// Sessions expired (examined) at most per `poll_timers` call.
pub const EXPIRE_BUDGET: usize = 256;
/// Timer-wheel ticks advanced at most per `poll_timers` call (one revolution: reading 4096 slot
/// heads is cheap, and it lets a worker catch up 409.6 s per call).
pub const EXPIRE_MAX_TICKS: usize = WHEEL_SLOTS;
/// Sessions taken off the timer wheel at once by the expiry pass (their entries and bucket heads
/// prefetched together).
const EXPIRE_BATCH: usize = 32;
/// Timer-wheel tick.
pub const TICK_MS: u64 = 100;
/// Timer-wheel slots (horizon 409.6 s; longer timeouts are re-filed lazily).
pub const WHEEL_SLOTS: usize = 4096;

/// One persistence template slot per this many session slots (1M sessions: 65 536 templates,
/// ~7 bytes per session). A template serves every connection of a client network for the
/// persistence timeout, so far fewer are live than sessions; when the table is full a new client
/// is scheduled without persistence and `persist_table_full` counts it.
pub const TEMPLATES_PER_SESSIONS: u32 = 16;

/// A session as the control plane and tests see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Protocol.
    pub proto: Proto,
    /// Client.
    pub cip: Ipv4Addr,
    /// Client port.
    pub cport: u16,
    /// VIP.
    pub vip: Ipv4Addr,
    /// vport.
    pub vport: u16,
    /// LIP.
    pub lip: Ipv4Addr,
    /// lport.
    pub lport: u16,
    /// Real server.
    pub rip: Ipv4Addr,
    /// Real server port.
    pub rport: u16,
    /// Dest id.
    pub dest: u32,
    /// TCP state (None for UDP).
    pub tcp_state: Option<TcpState>,
    /// Expiry time (ms).
    pub expires_ms: u64,
    /// TOA inserted or skipped already.
    pub toa_done: bool,
    /// Forwarding method (NAT, DR, TUN: `lip`:`lport` is the client's CIP:cport).
    pub fwd: Fwd,
    /// A persistence template, listed among the connections as IPVS lists its templates: `cip`
    /// is the client network, `cport` 0, no local address, TCP state NONE.
    pub template: bool,
}

impl SessionInfo {
    fn of_template(t: &crate::persist::TemplateInfo) -> Self {
        let tcp = t.proto == PROTO_TCP;
        SessionInfo {
            proto: if tcp { Proto::Tcp } else { Proto::Udp },
            cip: t.cnet,
            cport: 0,
            vip: t.vip,
            vport: t.vport,
            lip: Ipv4Addr::UNSPECIFIED,
            lport: 0,
            rip: t.rip,
            rport: t.rport,
            dest: t.dest,
            tcp_state: tcp.then_some(TcpState::None),
            expires_ms: t.expires_ms,
            toa_done: false,
            // Persistent services' dests are FULLNAT, DR or TUN; a template has no LIP:lport.
            fwd: Fwd::FullNat,
            template: true,
        }
    }

    fn from(s: &Session<Ipv4Addr>) -> Self {
        let tcp = s.proto == PROTO_TCP;
        SessionInfo {
            proto: if tcp { Proto::Tcp } else { Proto::Udp },
            cip: s.cip,
            cport: s.cport,
            vip: s.vip,
            vport: s.vport,
            lip: s.lip,
            lport: s.lport,
            rip: s.rip,
            rport: s.rport,
            dest: s.dest,
            tcp_state: tcp.then(|| TcpState::from_u8(s.state)),
            expires_ms: s.expires_ms,
            toa_done: s.flags & F_TOA_DONE != 0,
            fwd: s.fwd,
            template: false,
        }
    }
}

/// FULLNAT state of one worker.
pub(crate) struct Fullnat {
    pub(crate) conf: FullnatConf,
    pub(crate) worker: u16,
    pub(crate) n_workers: u16,
    /// Some service ever had a NAT dest (sticky: NAT sessions may outlive their service): transit
    /// TCP/UDP/ICMP is checked for NAT replies.
    pub(crate) nat_enabled: bool,
    pub(crate) services: Services,
    /// Service sets built so far (seeds the random schedulers apart from the last set's).
    pub(crate) builds: u64,
    pub(crate) sessions: SessionTable<Ipv4Addr>,
    pub(crate) wheel: TimerWheel,
    pub(crate) lports: LportAlloc,
    pub(crate) dest_stats: std::sync::Arc<[DestStats]>,
    /// Persistence templates ([`crate::persist`]).
    pub(crate) templates: Templates,
}

impl Fullnat {
    /// The worker that schedules and holds a new connection of client `cip`:`cport` to service
    /// `svc` on `vip`.
    fn new_conn_owner(
        &self,
        svc: usize,
        proto: u8,
        cip: Ipv4Addr,
        cport: u16,
        vip: Ipv4Addr,
    ) -> u16 {
        let rule = self.services.list[svc].owner_rule();
        self.owner_by(rule, svc, proto, cip, cport, vip)
    }

    /// The worker placement `rule` of service `svc` gives a connection of `cip`:`cport`.
    fn owner_by(
        &self,
        rule: OwnerRule,
        svc: usize,
        proto: u8,
        cip: Ipv4Addr,
        cport: u16,
        vip: Ipv4Addr,
    ) -> u16 {
        let n = self.n_workers;
        match rule {
            // Templates are per worker: every connection of the client network to the service
            // is scheduled by (and lives on) one worker.
            OwnerRule::Persist { netmask } => {
                let cnet = Ipv4Addr::from(u32::from(cip) & netmask);
                let (tproto, tvip, tvport) = self.services.list[svc].tmpl_id(proto, vip);
                persist_owner(cnet, tproto, tvip, tvport, n)
            }
            // NAT replies reach the worker owning the client, so every session of a service
            // with a NAT dest lives there (decided before scheduling).
            OwnerRule::Nat => crate::fwd::nat_owner(cip, cport, n),
            OwnerRule::Rss => self.worker,
        }
    }

    /// The worker holding the session of an existing client flow `cip:cport → vip:vport` (an
    /// ICMP error quoting one of its packets arrives wherever RSS sends the error, not where the
    /// flow goes): the persistence or NAT owner when the service has one, else the worker RSS
    /// steers the client's packets to when the port's RSS is known, else this one (the session
    /// is then found only if it is here).
    fn flow_owner(
        &self,
        svc: Option<u32>,
        proto: u8,
        cip: Ipv4Addr,
        cport: u16,
        vip: Ipv4Addr,
        vport: u16,
    ) -> u16 {
        match svc.and_then(|i| self.services.list.get(i as usize).map(|s| (i, s))) {
            Some((i, s)) if s.persist.is_some() || s.has_nat => {
                self.new_conn_owner(i as usize, proto, cip, cport, vip)
            }
            _ => self
                .lports
                .rss_owner(proto, cip, vip, cport, vport)
                .unwrap_or(self.worker),
        }
    }

    pub(crate) fn new(cfg: &StackConfig) -> Result<Self, ServiceError> {
        let f = &cfg.fullnat;
        let mut lports = LportAlloc::new(
            cfg.worker,
            cfg.n_workers,
            f.lport_min,
            f.lport_max,
            f.lport_reuse_delay_ms,
            f.rss.clone(),
        );
        let mut services =
            Services::build(&cfg.services, f.max_dests, cfg.ports.len(), &mut lports)?;
        services.seed(cfg.worker, 0);
        let dest_stats: std::sync::Arc<[DestStats]> =
            (0..f.max_dests).map(|_| DestStats::default()).collect();
        Ok(Fullnat {
            conf: f.clone(),
            worker: cfg.worker,
            n_workers: cfg.n_workers,
            nat_enabled: services.any_nat(),
            services,
            builds: 1,
            sessions: {
                let mut t = SessionTable::with_lports(f.sessions, cfg.n_workers);
                t.grow_direct(lports.pool_count());
                t
            },
            wheel: TimerWheel::new(f.sessions as usize, WHEEL_SLOTS, TICK_MS),
            lports,
            dest_stats,
            templates: Templates::new(
                (f.sessions / TEMPLATES_PER_SESSIONS).max(1) as usize,
                WHEEL_SLOTS,
                TICK_MS,
            ),
        })
    }

    /// What `ip` is to FULLNAT: its LIP pool, whether it is a VIP (control path; the result is
    /// kept in the owned set).
    pub(crate) fn classify(&self, ip: IpAddr) -> Owned {
        Owned {
            ports: 0,
            pool: self.lports.pool_of(ip).unwrap_or(Owned::NO_POOL),
            vip: self.services.is_vip(ip),
        }
    }

    /// Move the session's active/inactive accounting to `active_now` ([`TcpState::is_active`]).
    #[inline]
    fn set_active(&mut self, idx: u32, active_now: bool) {
        let s = self.sessions.get_mut(idx);
        let Some(st) = self.dest_stats.get(s.dest as usize) else {
            return;
        };
        let active = s.flags & F_ACTIVE != 0;
        if active_now && !active {
            s.flags |= F_ACTIVE;
            st.active.inc();
            st.inactive.dec();
        } else if !active_now && active {
            s.flags &= !F_ACTIVE;
            st.active.dec();
            st.inactive.inc();
        }
    }
}

// ------------------------------------------------------------------------- header rewriting

/// Give back what removed session `s` held: its lport (reusable after the reuse delay), its
/// persistence template's hold and its dest's active/inactive count.
#[inline(always)]
fn release_session(
    s: &Session<Ipv4Addr>,
    lports: &mut LportAlloc,
    templates: &mut Templates,
    stats: &[DestStats],
    now_ms: u64,
) {
    if s.fwd == Fwd::FullNat {
        lports.release(s.lip_pool, s.lport, now_ms);
    }
    if s.tmpl != NO_TMPL {
        templates.release(s.tmpl);
    }
    if let Some(st) = stats.get(s.dest as usize) {
        if s.flags & F_ACTIVE != 0 {
            st.active.dec();
        } else {
            st.inactive.dec();
        }
    }
}

#[inline(always)]
fn put32(d: &mut [u8], off: usize, v: u32) {
    d[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Offset (from the L4 header) of the TCP or UDP checksum.
#[inline(always)]
fn l4_csum_off(proto: u8) -> usize {
    if proto == PROTO_TCP {
        16
    } else {
        6
    }
}

/// Rewrite the addresses and ports of the IPv4 TCP/UDP packet in `d` (a frame; IP header at
/// [`ETH_LEN`], `ihl` bytes), decrement its TTL and update the IP and L4 checksums incrementally.
/// A UDP checksum of 0 (none) stays 0.
///
/// One ones'-complement delta (RFC 1624: `~old + new` for every changed word) covers both
/// addresses; the IP checksum adds the TTL word to it, the L4 checksum the port pair, and each is
/// folded once. 32-bit words can be added whole because 2^16 ≡ 1 (mod 2^16 − 1).
#[inline(always)]
pub fn rewrite_v4(
    d: &mut [u8],
    ihl: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) {
    let l4 = ETH_LEN + ihl;
    let co = l4 + l4_csum_off(proto);
    if ihl < ip4::MIN_HDR || d.len() < co + 2 {
        return; // callers validated the headers; never rewrite out of bounds
    }
    // Usual case: no IP options and the frame covers a TCP header's checksum (every TCP
    // segment, UDP with ≥ 12 payload bytes). The same body on a fixed-size array at constant
    // offsets compiles without bounds checks.
    if ihl == ip4::MIN_HDR {
        if let Some(f) = d
            .get_mut(..FAST_LEN)
            .and_then(|f| <&mut [u8; FAST_LEN]>::try_from(f).ok())
        {
            return rewrite_at(f, ETH_LEN + ip4::MIN_HDR, proto, src, dst, sport, dport);
        }
    }
    rewrite_at(&mut d[..co + 2], l4, proto, src, dst, sport, dport)
}

/// [`rewrite_v4`] of a frame known to start with Ethernet, a 20-byte IPv4 header and a TCP header
/// (or a UDP header and 12 bytes of payload): no checks left.
#[inline(always)]
pub(crate) fn rewrite_fixed(
    f: &mut [u8; ETH_LEN + 40],
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) {
    rewrite_at(f, ETH_LEN + ip4::MIN_HDR, proto, src, dst, sport, dport)
}

/// Bytes the usual case of [`rewrite_v4`] covers: Ethernet, a 20-byte IPv4 header and 18 bytes
/// of L4 header (up to the end of the TCP checksum).
const FAST_LEN: usize = ETH_LEN + 20 + 18;

/// The body of [`rewrite_v4`]: `f` holds at least the L4 checksum, the L4 header starts at `l4`.
/// Every sum below adds at most six 32-bit words, so [`fold35`] suffices.
#[inline(always)]
fn rewrite_at(
    f: &mut [u8],
    l4: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) {
    let (nsrc, ndst) = (u32::from(src), u32::from(dst));
    let addr =
        (!be32(f, ip4::SRC)) as u64 + (!be32(f, ip4::DST)) as u64 + nsrc as u64 + ndst as u64;
    // TTL shares its 16-bit word with the protocol byte.
    let old_ttl = be16(f, ip4::TTL);
    let new_ttl = old_ttl.wrapping_sub(0x100);
    let ipc = (!be16(f, ip4::CSUM)) as u64 + addr + (!old_ttl) as u64 + new_ttl as u64;
    put16(f, ip4::TTL, new_ttl);
    put16(f, ip4::CSUM, !fold35(ipc));
    put32(f, ip4::SRC, nsrc);
    put32(f, ip4::DST, ndst);
    let oports = be32(f, l4);
    let nports = (sport as u32) << 16 | dport as u32;
    put32(f, l4, nports);
    let co = l4 + l4_csum_off(proto);
    let c = be16(f, co);
    if proto == PROTO_UDP && c == 0 {
        return;
    }
    let mut c = !fold35((!c) as u64 + addr + (!oports) as u64 + nports as u64);
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    put16(f, co, c);
}

/// Insert the TOA option `[254, 8, sport, saddr]` (the packet's current source, i.e. the client)
/// at the start of the TCP options of `pkt`. Returns false, changing nothing, when the data
/// offset would exceed 60 bytes, the IP packet would exceed `mtu`, or the buffer is too small.
pub fn insert_toa<P: PacketBuf>(pkt: &mut P, ihl: usize, mtu: u16) -> bool {
    let l4 = ETH_LEN + ihl;
    let len = pkt.len();
    let d = pkt.data();
    let doff = (d[l4 + 12] >> 4) as usize * 4;
    let total = be16(d, ip4::TOTAL_LEN) as usize;
    if doff + TCPOLEN_TOA > 60
        || total + TCPOLEN_TOA > mtu as usize
        || len + TCPOLEN_TOA > pkt.capacity()
        || ETH_LEN + total != len
    {
        return false;
    }
    let cport = be16(d, l4).to_be_bytes();
    let opt = [
        TCPOPT_TOA,
        TCPOLEN_TOA as u8,
        cport[0],
        cport[1],
        d[ip4::SRC],
        d[ip4::SRC + 1],
        d[ip4::SRC + 2],
        d[ip4::SRC + 3],
    ];
    let old_w12 = be16(d, l4 + 12);
    if !pkt.set_len(len + TCPOLEN_TOA) {
        return false;
    }
    let d = pkt.data_mut();
    d.copy_within(l4 + 20..len, l4 + 20 + TCPOLEN_TOA);
    d[l4 + 20..l4 + 20 + TCPOLEN_TOA].copy_from_slice(&opt);
    d[l4 + 12] += (TCPOLEN_TOA as u8 / 4) << 4;
    let new_total = (total + TCPOLEN_TOA) as u16;
    let c = update_u16(be16(d, ip4::CSUM), total as u16, new_total);
    put16(d, ip4::TOTAL_LEN, new_total);
    put16(d, ip4::CSUM, c);
    // One delta, folded once: data offset word, pseudo-header TCP length, the option's words.
    let tcp_len = (total - ihl) as u16;
    let mut sum = (!be16(d, l4 + 16)) as u64
        + (!old_w12) as u64
        + be16(d, l4 + 12) as u64
        + (!tcp_len) as u64
        + (tcp_len + TCPOLEN_TOA as u16) as u64;
    for w in opt.chunks_exact(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    put16(d, l4 + 16, !fold(sum));
    true
}

/// Lower the MSS option of the TCP segment in `d` to `clamp` if larger (checksum updated).
/// Returns true when it changed.
pub fn clamp_mss(d: &mut [u8], ihl: usize, clamp: u16) -> bool {
    let l4 = ETH_LEN + ihl;
    let end = (l4 + (d[l4 + 12] >> 4) as usize * 4).min(d.len());
    let mut i = l4 + 20;
    while i < end {
        match d[i] {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        if i + 1 >= end {
            break;
        }
        let ol = d[i + 1] as usize;
        if ol < 2 || i + ol > end {
            break;
        }
        if d[i] == 2 && ol == 4 {
            let m = be16(d, i + 2);
            if m <= clamp {
                return false;
            }
            put16(d, i + 2, clamp);
            // A 16-bit field at an odd offset adds byte-swapped to the ones'-complement sum.
            let (o, n) = if (i + 2 - l4) % 2 == 1 {
                (m.swap_bytes(), clamp.swap_bytes())
            } else {
                (m, clamp)
            };
            let c = update_u16(be16(d, l4 + 16), o, n);
            put16(d, l4 + 16, c);
            return true;
        }
        i += ol;
    }
    false
}

// ------------------------------------------------------------------------- packet path

/// The TCP/UDP connection an ICMP destination-unreachable or time-exceeded error quotes: offsets
/// and fields of its inner IPv4 header (a first fragment, with 8 bytes of transport header).
pub(crate) struct IcmpQuote {
    /// Offset of the ICMP header.
    pub ic: usize,
    /// Length of the inner IPv4 header.
    pub iihl: usize,
    pub iproto: u8,
    pub isrc: Ipv4Addr,
    pub idst: Ipv4Addr,
    pub isport: u16,
    pub idport: u16,
}

/// Parse the quote of the ICMP error in `d` (outer IPv4 header `ihl` long); `None` when it is
/// not a destination-unreachable or time-exceeded error quoting the first fragment of a TCP or
/// UDP packet. The ICMP checksum is not checked.
pub(crate) fn icmp_quote(d: &[u8], ihl: usize) -> Option<IcmpQuote> {
    let ic = ETH_LEN + ihl;
    let end = d.len();
    if end < ic + 8 + 20 + 8 {
        return None;
    }
    let ty = d[ic];
    if ty != ICMP_DEST_UNREACH && ty != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner = ic + 8;
    let iihl = (d[inner] & 0xf) as usize * 4;
    if d[inner] >> 4 != 4 || iihl < 20 || inner + iihl + 8 > end {
        return None;
    }
    let iproto = d[inner + 9];
    if (iproto != PROTO_TCP && iproto != PROTO_UDP) || be16(d, inner + 6) & ip4::OFFSET != 0 {
        return None;
    }
    let il4 = inner + iihl;
    Some(IcmpQuote {
        ic,
        iihl,
        iproto,
        isrc: ipv4_at(d, inner + 12),
        idst: ipv4_at(d, inner + 16),
        isport: be16(d, il4),
        idport: be16(d, il4 + 2),
    })
}

/// A fragmentation-needed error about a TUN packet rvs sent (DIP → RIP, IPIP), quoting enough
/// of it to name the client's connection inside.
pub(crate) struct TunQuote {
    /// Offset of the ICMP header.
    ic: usize,
    /// ICMP type and code (destination unreachable or time exceeded).
    typ: u8,
    code: u8,
    /// The MTU the router reported (fragmentation needed).
    mtu: u16,
    /// The tunnel's far end.
    rip: Ipv4Addr,
    /// Offset and length of the quoted inner (client's) IPv4 header.
    inner: usize,
    iihl: usize,
    iproto: u8,
    cip: Ipv4Addr,
    vip: Ipv4Addr,
    cport: u16,
    vport: u16,
}

/// Parse an ICMP error in `d` (outer header `ihl` long: destination unreachable, any code, or
/// time exceeded) that quotes an IPIP packet from the error's destination (the DIP) with,
/// inside, the first fragment of a client's TCP or UDP packet (its IPv4 header and 8 bytes:
/// routers quote that much and more, RFC 1812). The ICMP checksum is not checked.
pub(crate) fn tun_quote(d: &[u8], ihl: usize) -> Option<TunQuote> {
    let ic = ETH_LEN + ihl;
    let end = d.len();
    if end < ic + 8 + 20 + 20 + 8 || (d[ic] != ICMP_DEST_UNREACH && d[ic] != ICMP_TIME_EXCEEDED) {
        return None;
    }
    let outer = ic + 8;
    let oihl = (d[outer] & 0xf) as usize * 4;
    if d[outer] >> 4 != 4
        || oihl < 20
        || d[outer + 9] != crate::fwd::PROTO_IPIP
        || be16(d, outer + 6) & ip4::OFFSET != 0
        || d[outer + 12..outer + 16] != d[ip4::DST..ip4::DST + 4]
    {
        return None;
    }
    let inner = outer + oihl;
    if inner + 20 > end {
        return None;
    }
    let iihl = (d[inner] & 0xf) as usize * 4;
    let iproto = d[inner + 9];
    if d[inner] >> 4 != 4
        || iihl < 20
        || inner + iihl + 8 > end
        || (iproto != PROTO_TCP && iproto != PROTO_UDP)
        || be16(d, inner + 6) & ip4::OFFSET != 0
    {
        return None;
    }
    Some(TunQuote {
        ic,
        typ: d[ic],
        code: d[ic + 1],
        mtu: be16(d, ic + 6),
        rip: ipv4_at(d, outer + 16),
        inner,
        iihl,
        iproto,
        cip: ipv4_at(d, inner + 12),
        vip: ipv4_at(d, inner + 16),
        cport: be16(d, inner + iihl),
        vport: be16(d, inner + iihl + 2),
    })
}

impl<P: PacketBuf> Stack<P> {
    /// The session of the client flow `cip:cport → vip:vport` that an ICMP error `pkt` quotes:
    /// `Ok` with it when this worker holds it; `Err(None)` when the error was passed to the
    /// worker that does ([`Fullnat::flow_owner`]); `Err(Some(pkt))` when there is none (local
    /// handling continues).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn client_flow_session<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        proto: u8,
        cip: Ipv4Addr,
        cport: u16,
        vip: Ipv4Addr,
        vport: u16,
    ) -> Result<(P, u32), Option<P>> {
        let svc = self
            .fnat
            .services
            .lookup_packet(proto, IpAddr::V4(cip), IpAddr::V4(vip), vport);
        let owner = self.fnat.flow_owner(svc, proto, cip, cport, vip, vport);
        if owner != self.fnat.worker {
            self.fnat_redirect(io, owner, port, pkt);
            return Err(None);
        }
        match self.fnat.sessions.lookup_in(proto, cip, cport, vip, vport) {
            Some(idx) => Ok((pkt, idx)),
            None => {
                // A flow made before its service changed how it places connections lives
                // where the previous rule put it.
                let f = &self.fnat;
                let prev = svc.and_then(|i| {
                    let rule = f.services.list.get(i as usize)?.prev_owner?;
                    Some(match rule {
                        OwnerRule::Rss => f.lports.rss_owner(proto, cip, vip, cport, vport)?,
                        r => f.owner_by(r, i as usize, proto, cip, cport, vip),
                    })
                });
                match prev {
                    Some(w) if w != f.worker && !self.redirected_again => {
                        self.redirect_to_prev(io, w, port, pkt);
                        Err(None)
                    }
                    _ => Err(Some(pkt)),
                }
            }
        }
    }

    /// A router on the way to a TUN real server reports an error about rvs's IPIP packet:
    /// the client is told, from the VIP, quoting its own packet, as IPVS's `ip_vs_in_icmp` does
    /// for IPIP. That it was too big (its DF copied from the client's) comes with the reported
    /// MTU less the 20-byte outer header, so that path-MTU discovery works through the tunnel
    /// (rvs keeps no per-destination PMTU: the client's lower MSS is what shrinks the
    /// packets); an unreachable real server or an expired TTL as it is, so the client's
    /// connection fails at once rather than by timeout. Returns the packet when it quotes no
    /// TUN session of this worker's (local handling continues).
    #[cold]
    fn tun_icmp_error<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        t: TunQuote,
        now_ms: u64,
    ) -> Option<P> {
        let d = pkt.data();
        let frag = t.typ == ICMP_DEST_UNREACH && t.code == ICMP_FRAG_NEEDED;
        if checksum(&d[t.ic..]) != 0 || (frag && t.mtu < 68) {
            return Some(pkt);
        }
        let (pkt, idx) = match self
            .client_flow_session(io, port, pkt, t.iproto, t.cip, t.cport, t.vip, t.vport)
        {
            Ok(found) => found,
            Err(p) => return p,
        };
        let d = pkt.data();
        let s = *self.fnat.sessions.get(idx);
        if s.fwd != Fwd::Tun || s.rip != t.rip {
            return Some(pkt);
        }
        // Only a client doing PMTU discovery (DF) is told it was too big, as IPVS (the outer
        // header copied the DF bit: without it, the router would have fragmented).
        if frag && be16(d, t.inner + 6) & ip4::DF == 0 {
            self.drop_pkt(pkt, DropReason::IcmpUnhandled);
            return None;
        }
        // The client's packet as an Ethernet frame for `icmp_error_from`: its IPv4 header
        // and 8 bytes are all the error quotes.
        let n = t.iihl + 8;
        let mut orig = [0u8; ETH_LEN + 60 + 8];
        orig[ETH_LEN..ETH_LEN + n].copy_from_slice(&d[t.inner..t.inner + n]);
        let mtu = if !frag {
            0
        } else if t.mtu > 68 + crate::fwd::TUN_HDR as u16 {
            t.mtu - crate::fwd::TUN_HDR as u16
        } else {
            t.mtu
        };
        self.icmp_error_from(
            io,
            port,
            Some(t.vip),
            &orig[..ETH_LEN + n],
            t.iihl,
            t.typ,
            t.code,
            mtu,
            now_ms,
        );
        self.counters.icmp_translated.inc();
        drop(pkt);
        None
    }

    /// FULLNAT dispatch of a validated IPv4 packet to an owned address. Returns the packet when
    /// it is not FULLNAT traffic (local handling continues).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fnat_input<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        ihl: usize,
        class: Owned,
        bucket: u32,
        now_ms: u64,
    ) -> Option<P> {
        let d = pkt.data();
        let dst = ipv4_at(d, ip4::DST);
        let proto = d[ip4::PROTO];
        let is_vip = class.vip;
        if be16(d, ip4::FRAG) & ip4::MF_OFFSET != 0 {
            if is_vip {
                self.drop_pkt(pkt, DropReason::Ipv4FragmentVip);
                return None;
            }
            return Some(pkt);
        }
        if proto == PROTO_ICMP {
            return self.fnat_icmp(io, port, pkt, ihl, now_ms);
        }
        if proto != PROTO_TCP && proto != PROTO_UDP {
            return Some(pkt);
        }
        let lip_pool = (class.pool != Owned::NO_POOL).then_some(class.pool);
        if lip_pool.is_none() && !is_vip && self.fnat.sessions.is_empty() {
            return Some(pkt);
        }
        let l4 = ETH_LEN + ihl;
        let l4_len = d.len() - l4;
        let hdr_ok = if proto == PROTO_TCP {
            l4_len >= 20 && {
                let doff = (d[l4 + 12] >> 4) as usize * 4;
                doff >= 20 && doff <= l4_len
            }
        } else {
            l4_len >= 8
        };
        if !hdr_ok {
            if lip_pool.is_some() || is_vip {
                self.drop_pkt(pkt, DropReason::L4Malformed);
                return None;
            }
            return Some(pkt);
        }
        let src = ipv4_at(d, ip4::SRC);
        let (sport, dport) = (be16(d, l4), be16(d, l4 + 2));
        if let Some(pool) = lip_pool.filter(|_| self.fnat.lports.in_range(dport)) {
            // Reply from a real server: the lport's owner handles it, decided before any lookup.
            let owner = self.fnat.lports.owner(dport);
            if owner != self.fnat.worker {
                self.fnat_redirect(io, owner, port, pkt);
                return None;
            }
            // Its direct head (or hashed bucket) costs no more to compute than to check.
            match self
                .fnat
                .sessions
                .lookup_out(pool, proto, src, sport, dst, dport)
            {
                Some(idx) => self.fnat_out(io, port, pkt, ihl, idx, now_ms),
                None => self.drop_pkt(pkt, DropReason::NoSession),
            }
            return None;
        }
        // The prefetch stage may have hashed this tuple already.
        let f = &self.fnat;
        let bucket = f
            .sessions
            .in_bucket_hint(bucket, proto, src, sport, dst, dport);
        debug_assert_eq!(bucket, f.sessions.bucket_of(proto, src, sport, dst, dport));
        let found = f
            .sessions
            .lookup_in_at(bucket, proto, src, sport, dst, dport);
        self.fnat_in_or_new(io, port, pkt, ihl, found, now_ms)
    }

    /// A validated TCP/UDP packet to an owned address that is not a reply to a LIP:lport, whose
    /// inbound session lookup gave `found`: that session's client packet, or (none, or a bare
    /// SYN that ends a finished connection) a new connection when a service takes it. Gives the
    /// packet back when no service does (local handling continues).
    pub(crate) fn fnat_in_or_new<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        ihl: usize,
        found: Option<u32>,
        now_ms: u64,
    ) -> Option<P> {
        let d = pkt.data();
        let l4 = ETH_LEN + ihl;
        let proto = d[ip4::PROTO];
        if let Some(idx) = found {
            // What `fnat_new` accepts as a new connection (SYN+FIN is not one: it goes to the
            // session it hit, which does not end for it).
            let bare_syn = proto == PROTO_TCP
                && d[l4 + 13] & (flags::SYN | flags::ACK | flags::RST | flags::FIN) == flags::SYN;
            if !bare_syn || !self.fnat_reschedule(idx, now_ms) {
                self.fnat_in(io, port, pkt, ihl, idx, now_ms);
                return None;
            }
        }
        let (src, dst) = (ipv4_at(d, ip4::SRC), ipv4_at(d, ip4::DST));
        let (sport, dport) = (be16(d, l4), be16(d, l4 + 2));
        match self
            .fnat
            .services
            .lookup_packet(proto, IpAddr::V4(src), IpAddr::V4(dst), dport)
        {
            Some(svc) => {
                let f = &self.fnat;
                let mut owner = f.new_conn_owner(svc as usize, proto, src, sport, dst);
                // A TCP packet that opens no connection (not a bare SYN) and that no session
                // here takes: it may be of a connection made before the service changed how it
                // places them (e.g. `-E` without `-p`), which lives where the previous rule put
                // it. Also when another worker handed it over: the current rule's worker passes
                // it on to the previous rule's, which hands it on no further when the current
                // rule names another worker (below), so it makes two hops at most.
                let stray = proto == PROTO_TCP
                    && d[l4 + 13] & (flags::SYN | flags::ACK | flags::RST | flags::FIN)
                        != flags::SYN;
                if stray && owner == f.worker && !self.redirected_again {
                    if let Some(rule) = f.services.list[svc as usize].prev_owner {
                        owner = f.owner_by(rule, svc as usize, proto, src, sport, dst);
                        if owner != f.worker {
                            self.redirect_to_prev(io, owner, port, pkt);
                            return None;
                        }
                    }
                }
                if owner != self.fnat.worker {
                    if stray && self.redirected {
                        // Handed over, and not here either: no worker has its session.
                        self.drop_pkt(pkt, DropReason::NoSession);
                        return None;
                    }
                    self.fnat_redirect(io, owner, port, pkt);
                    return None;
                }
                self.fnat_new(io, port, pkt, ihl, svc as usize, now_ms);
                None
            }
            None => Some(pkt),
        }
    }

    /// Hand `pkt` to `owner`, the worker of its service's previous placement rule: once more
    /// when it was handed over already (tagged so that it goes no further).
    fn redirect_to_prev<I: Io<Pkt = P>>(&self, io: &mut I, owner: u16, port: PortIdx, pkt: P) {
        let tag = if self.redirected {
            port | crate::stack::REDIRECTED_AGAIN
        } else {
            port
        };
        // `redirected_out` is counted by the I/O layer.
        if !io.redirect(owner, tag, pkt) {
            self.count_drop(DropReason::RedirectFull);
        }
    }

    pub(crate) fn fnat_redirect<I: Io<Pkt = P>>(
        &self,
        io: &mut I,
        owner: u16,
        port: PortIdx,
        pkt: P,
    ) {
        if self.redirected {
            return self.drop_pkt(pkt, DropReason::RedirectLoop);
        }
        // `redirected_out` is counted by the I/O layer once the owner's ring took the packet.
        if !io.redirect(owner, port, pkt) {
            self.count_drop(DropReason::RedirectFull);
        }
    }

    /// A new session of a persistent service: its template was found (true) or made (false).
    #[inline]
    fn count_persist(&self, hit: Option<bool>) {
        match hit {
            Some(true) => self.counters.persist_hits.inc(),
            Some(false) => self.counters.persist_new.inc(),
            None => {}
        }
    }

    /// First packet of a flow to a service: schedule, allocate LIP:lport (FULLNAT dests only),
    /// create the session.
    fn fnat_new<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        ihl: usize,
        svc: usize,
        now_ms: u64,
    ) {
        let d = pkt.data();
        let l4 = ETH_LEN + ihl;
        let proto = d[ip4::PROTO];
        if proto == PROTO_TCP {
            let f = d[l4 + 13] & (flags::SYN | flags::ACK | flags::RST | flags::FIN);
            if f != flags::SYN {
                return self.drop_pkt(pkt, DropReason::NoSession);
            }
        }
        if self.fnat.sessions.is_full() {
            return self.drop_pkt(pkt, DropReason::SessionTableFull);
        }
        let f = &mut self.fnat;
        let s = &mut f.services.list[svc];
        let src = ipv4_at(d, ip4::SRC);
        let dst = ipv4_at(d, ip4::DST);
        let key = SchedKey::new(IpAddr::V4(src), be16(d, l4), IpAddr::V4(dst), now_ms);
        let mut tmpl = NO_TMPL;
        // Counted once the session is made (a SYN dropped for want of an lport is no hit).
        let mut persist_hit = None;
        let keep_quiescent = !f.conf.expire_quiescent_template;
        let di = if let Some(p) = s.persist {
            // IPVS ip_vs_sched_persist / ip_vs_check_template: reuse the client network's
            // template while its dest is still in the service and not down (with weight > 0, or
            // quiesced by an operator unless `expire_quiescent_template`), else schedule and
            // (re)bind it.
            let cnet = Ipv4Addr::from(u32::from(src) & p.netmask);
            let (tproto, tvip, tvport) = s.tmpl_id(proto, dst);
            let tk = f.templates.key(tproto, tvip, tvport, cnet);
            let found = f.templates.lookup(&tk);
            let hit = found.and_then(|t| {
                let t = f.templates.get(t);
                s.dests.iter().position(|d| {
                    d.id == t.dest
                        && !d.down
                        && (d.weight > 0 || keep_quiescent)
                        && d.rip == IpAddr::V4(t.rip)
                        && d.rport == t.rport
                })
            });
            match (found, hit) {
                (Some(t), Some(di)) => {
                    f.templates.refresh(t, now_ms, p.timeout_ms);
                    persist_hit = Some(true);
                    tmpl = t;
                    di
                }
                _ => {
                    let Some(di) = s.sched.pick(&s.dests, &f.dest_stats, &key) else {
                        return self.drop_pkt(pkt, DropReason::NoDest);
                    };
                    let dest = s.dests[di];
                    let IpAddr::V4(rip) = dest.rip else {
                        return self.drop_pkt(pkt, DropReason::NoDest);
                    };
                    let stats = &f.dest_stats;
                    let (t, r) = (p.timeout_ms, dest.rport);
                    match found {
                        Some(ti) => {
                            f.templates.bind(ti, dest.id, rip, r, now_ms, t, stats);
                            tmpl = ti;
                        }
                        None => match f.templates.insert(tk, dest.id, rip, r, now_ms, t, stats) {
                            Some(ti) => tmpl = ti,
                            None => self.counters.persist_table_full.inc(),
                        },
                    }
                    persist_hit = Some(false);
                    di
                }
            }
        } else {
            let Some(di) = s.sched.pick(&s.dests, &f.dest_stats, &key) else {
                return self.drop_pkt(pkt, DropReason::NoDest);
            };
            di
        };
        let mut dest = s.dests[di];
        if dest.rport == 0 {
            // Port-0 service: the real server listens on the client's destination port.
            dest.rport = be16(d, l4 + 2);
        }
        if dest.fwd != Fwd::FullNat {
            let IpAddr::V4(rip) = dest.rip else {
                return self.drop_pkt(pkt, DropReason::NoDest);
            };
            // The session is made (the table's room was checked first): IPVS binds the dest.
            s.sched.bind(di, &s.dests, &f.dest_stats);
            self.count_persist(persist_hit);
            let (cip, cport) = (ipv4_at(d, ip4::SRC), be16(d, l4));
            let mut sess = Session::new(
                proto,
                cip,
                cport,
                ipv4_at(d, ip4::DST),
                be16(d, l4 + 2),
                cip,
                cport,
                rip,
                dest.rport,
            );
            sess.fwd = dest.fwd;
            sess.lip_pool = u16::MAX;
            sess.tmpl = tmpl;
            return self.fnat_insert(io, port, pkt, ihl, sess, dest.id, now_ms);
        }
        let start = s.lip_cursor;
        s.lip_cursor = if start + 1 < s.lips.len() {
            start + 1
        } else {
            0
        };
        let Some((li, lport)) = f
            .lports
            .alloc(&s.lips, start, proto, dest.rip, dest.rport, now_ms)
        else {
            return self.drop_pkt(pkt, DropReason::LportExhausted);
        };
        let pool = s.lips[li];
        let (Some(IpAddr::V4(lip)), IpAddr::V4(rip)) =
            (f.lports.get(pool).map(|p| p.lip), dest.rip)
        else {
            // Services are validated IPv4-only.
            f.lports.unalloc(pool, lport);
            return self.drop_pkt(pkt, DropReason::NoDest);
        };
        // The session is made (the table's room was checked first, an lport is taken): IPVS
        // binds the dest here, for a picked dest and a template's alike.
        s.sched.bind(di, &s.dests, &f.dest_stats);
        self.count_persist(persist_hit);
        let mut sess = Session::new(
            proto,
            ipv4_at(d, ip4::SRC),
            be16(d, l4),
            ipv4_at(d, ip4::DST),
            be16(d, l4 + 2),
            lip,
            lport,
            rip,
            dest.rport,
        );
        sess.lip_pool = pool;
        sess.tmpl = tmpl;
        self.fnat_insert(io, port, pkt, ihl, sess, dest.id, now_ms);
    }

    /// Insert the new session `sess` for dest `dest` (giving back its lport on failure), count
    /// it and forward its first packet.
    #[allow(clippy::too_many_arguments)]
    fn fnat_insert<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        ihl: usize,
        mut sess: Session<Ipv4Addr>,
        dest: u32,
        now_ms: u64,
    ) {
        let f = &mut self.fnat;
        let proto = sess.proto;
        sess.dest = dest;
        sess.state = TcpState::None as u8;
        // Filed at the expiry its first packet gives it: a TCP session starts with a bare SYN,
        // which `fnat_in` turns into SYN_RECV at once (IPVS's tables, input-only too). Filed at
        // NONE's 2 s, every connection would cost the timer a visit to file it again.
        let timeout = if proto == PROTO_TCP {
            TcpState::None
                .next(Dir::Input, flags::SYN)
                .timeout_ms(&f.conf.timeouts)
        } else {
            f.conf.timeouts.udp
        };
        sess.expires_ms = now_ms + timeout;
        let Ok(idx) = f.sessions.insert(sess) else {
            if sess.fwd == Fwd::FullNat {
                f.lports.unalloc(sess.lip_pool, sess.lport);
            }
            return self.drop_pkt(pkt, DropReason::SessionTableFull);
        };
        f.wheel.insert(idx, sess.expires_ms, now_ms);
        if sess.tmpl != NO_TMPL {
            f.templates.hold(sess.tmpl);
        }
        if let Some(st) = f.dest_stats.get(dest as usize) {
            st.conns.inc();
            st.inactive.inc();
        }
        self.counters.sessions_created.inc();
        self.fnat_in(io, port, pkt, ihl, idx, now_ms);
    }

    /// Update the session's TCP state and expiry for a packet in direction `dir`. Returns
    /// (old state, new state) for TCP.
    #[inline(always)]
    fn fnat_track(
        &mut self,
        idx: u32,
        dir: Dir,
        proto: u8,
        tcp_flags: u8,
        now_ms: u64,
    ) -> (TcpState, TcpState) {
        let f = &mut self.fnat;
        let s = f.sessions.get_mut(idx);
        if proto != PROTO_TCP {
            s.expires_ms = now_ms + f.conf.timeouts.udp;
            return (TcpState::None, TcpState::None);
        }
        let old = TcpState::from_u8(s.state);
        // The established path: without SYN, FIN or RST every direction's table keeps
        // ESTABLISHED; only the expiry moves (later, so the timer finds it lazily).
        if old == TcpState::Established && tcp_flags & (flags::SYN | flags::FIN | flags::RST) == 0 {
            s.expires_ms = now_ms + f.conf.timeouts.tcp_established;
            return (old, old);
        }
        // DR/TUN: replies are never seen, IPVS's INPUT-ONLY table.
        let dir = if dir == Dir::Input && s.fwd.input_only() {
            Dir::InputOnly
        } else {
            dir
        };
        let new = old.next(dir, tcp_flags);
        s.expires_ms = now_ms + new.timeout_ms(&f.conf.timeouts);
        let exp = s.expires_ms;
        if new != old {
            s.state = new as u8;
            if dir != Dir::Output && new == TcpState::SynRecv {
                // A new connection reusing the session (a client port reused on a persistent DR/TUN
                // service, or before TIME_WAIT/CLOSE; see `fnat_reschedule`): its own TOA.
                s.flags &= !(F_TOA_DONE | F_TOA_TRIED);
            }
            f.set_active(idx, new.is_active());
            // A shorter timeout must move the timer earlier; a longer one is found lazily.
            f.wheel.advance_to(idx, exp);
        }
        (old, new)
    }

    /// Client → real server packet of session `idx` (any forwarding method).
    pub(crate) fn fnat_in<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        pkt: P,
        ihl: usize,
        idx: u32,
        now_ms: u64,
    ) {
        let d = pkt.data();
        let l4 = ETH_LEN + ihl;
        let proto = d[ip4::PROTO];
        let total = be16(d, ip4::TOTAL_LEN);
        let tcp_flags = if proto == PROTO_TCP { d[l4 + 13] } else { 0 };
        let (old, new) = self.fnat_track(idx, Dir::Input, proto, tcp_flags, now_ms);
        let s = *self.fnat.sessions.get(idx);
        if let Some(st) = self.fnat.dest_stats.get(s.dest as usize) {
            st.inpkts.inc();
            st.inbytes.add(total as u64);
        }
        match s.fwd {
            Fwd::Dr => return self.dr_xmit(io, in_port, pkt, s.rip, now_ms),
            Fwd::Tun => return self.tun_xmit(io, in_port, pkt, ihl, s.rip, now_ms),
            Fwd::FullNat | Fwd::Nat => {}
        }
        let full = s.fwd == Fwd::FullNat;
        // TOA rides on every client packet from the handshake-completing ACK on, until the real
        // server is seen sending after the handshake (then it has its socket, whichever of those
        // packets completed it): a lost ACK must not leave the server without the client address.
        let _ = old;
        let toa = full
            && proto == PROTO_TCP
            && self.fnat.conf.toa
            && s.flags & F_TOA_DONE == 0
            && new == TcpState::Established
            && tcp_flags & (flags::SYN | flags::RST) == 0
            && tcp_flags & flags::ACK != 0;
        let Some((out_port, via)) = self.nh_via(s.rip, None) else {
            return self.drop_pkt(pkt, DropReason::NoRoute);
        };
        // To a VIP: an error to the client comes from it.
        let Some(mut pkt) =
            self.ttl_mtu_check(io, in_port, pkt, ihl, total, out_port, true, now_ms)
        else {
            return;
        };
        let mtu = self.ports[out_port as usize].mtu;
        if let Some(clamp) = self.fnat.conf.mss_clamp.filter(|_| full) {
            if tcp_flags & flags::SYN != 0 && clamp_mss(pkt.data_mut(), ihl, clamp) {
                self.counters.mss_clamped.inc();
            }
        }
        if toa {
            // No room (options, MTU) skips this packet only: the next one may have it.
            let done = insert_toa(&mut pkt, ihl, mtu);
            if done {
                self.counters.toa_inserted.inc();
            }
            let flags = &mut self.fnat.sessions.get_mut(idx).flags;
            if *flags & F_TOA_TRIED == 0 {
                *flags |= F_TOA_TRIED;
                if !done {
                    self.counters.toa_skipped.inc();
                }
            }
        }
        // NAT: lip:lport is CIP:cport, so this keeps the client's source.
        rewrite_v4(pkt.data_mut(), ihl, proto, s.lip, s.rip, s.lport, s.rport);
        if self.nh_send(io, s.rip, via, pkt, now_ms).0 {
            if full {
                self.counters.fullnat_in.inc();
            } else {
                self.counters.nat_in.inc();
            }
        }
    }

    /// Real server → client packet of session `idx` (FULLNAT or NAT).
    pub(crate) fn fnat_out<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        in_port: PortIdx,
        pkt: P,
        ihl: usize,
        idx: u32,
        now_ms: u64,
    ) {
        let d = pkt.data();
        let l4 = ETH_LEN + ihl;
        let proto = d[ip4::PROTO];
        let total = be16(d, ip4::TOTAL_LEN);
        let tcp_flags = if proto == PROTO_TCP { d[l4 + 13] } else { 0 };
        self.fnat_track(idx, Dir::Output, proto, tcp_flags, now_ms);
        if proto == PROTO_TCP && tcp_flags & flags::SYN == 0 {
            // The real server speaks after the handshake: it holds the connection (and read TOA).
            self.fnat.sessions.get_mut(idx).flags |= F_TOA_DONE;
        }
        let s = *self.fnat.sessions.get(idx);
        if let Some(st) = self.fnat.dest_stats.get(s.dest as usize) {
            st.outpkts.inc();
            st.outbytes.add(total as u64);
        }
        let known = self.neigh_valid(s.nh_out, s.nh_gen).map(|p| (p, s.nh_out));
        let Some((out_port, via)) = self.nh_via(s.cip, known) else {
            return self.drop_pkt(pkt, DropReason::NoRoute);
        };
        let full = s.fwd == Fwd::FullNat;
        // To a LIP (FULLNAT): an error to the real server comes from it; a NAT reply is
        // transit (to the client's address), answered as a router.
        let Some(mut pkt) =
            self.ttl_mtu_check(io, in_port, pkt, ihl, total, out_port, full, now_ms)
        else {
            return;
        };
        if let Some(clamp) = self.fnat.conf.mss_clamp.filter(|_| full) {
            if tcp_flags & flags::SYN != 0 && clamp_mss(pkt.data_mut(), ihl, clamp) {
                self.counters.mss_clamped.inc();
            }
        }
        rewrite_v4(pkt.data_mut(), ihl, proto, s.vip, s.cip, s.vport, s.cport);
        // A neighbour found through the caches (not the session's own) is kept in the session.
        let cached = match via {
            Ok(nh) if known.is_none() => Some((nh, self.neigh_gen())),
            _ => None,
        };
        let (sent, learnt) = self.nh_send(io, s.cip, via, pkt, now_ms);
        if let Some((nh, gen)) = learnt.or(cached) {
            let e = self.fnat.sessions.get_mut(idx);
            (e.nh_out, e.nh_gen) = (nh, gen);
        }
        if sent {
            if full {
                self.counters.fullnat_out.inc();
            } else {
                self.counters.nat_out.inc();
            }
        }
    }

    /// ICMP error to an owned address: translate it when it quotes a session's packet.
    fn fnat_icmp<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        port: PortIdx,
        pkt: P,
        ihl: usize,
        now_ms: u64,
    ) -> Option<P> {
        let d = pkt.data();
        let Some(q) = icmp_quote(d, ihl) else {
            return match tun_quote(d, ihl) {
                Some(t) => self.tun_icmp_error(io, port, pkt, t, now_ms),
                None => Some(pkt),
            };
        };
        if checksum(&d[q.ic..]) != 0 {
            return Some(pkt);
        }
        let dst = ipv4_at(d, ip4::DST);
        let lip_pool = (q.isrc == dst && self.fnat.lports.in_range(q.isport))
            .then(|| self.fnat.lports.pool_of(IpAddr::V4(dst)))
            .flatten();
        if let Some(pool) = lip_pool {
            // From the real-server side, quoting LIP:lport → RIP:rport.
            let owner = self.fnat.lports.owner(q.isport);
            if owner != self.fnat.worker {
                self.fnat_redirect(io, owner, port, pkt);
                return None;
            }
            let Some(idx) = self
                .fnat
                .sessions
                .lookup_out(pool, q.iproto, q.idst, q.idport, q.isrc, q.isport)
            else {
                return Some(pkt);
            };
            let s = *self.fnat.sessions.get(idx);
            let toa_pending =
                q.iproto == PROTO_TCP && self.fnat.conf.toa && s.flags & F_TOA_DONE == 0;
            let t = Translate {
                osrc: s.vip,
                odst: s.cip,
                isrc: s.cip,
                isport: s.cport,
                idst: s.vip,
                idport: s.vport,
                mtu_sub: if toa_pending { TCPOLEN_TOA as u16 } else { 0 },
            };
            self.icmp_translate(io, pkt, ihl, q.iihl, t, now_ms);
            return None;
        }
        if q.isrc == dst {
            // From the client side, quoting VIP:vport → CIP:cport.
            let (pkt, idx) = match self
                .client_flow_session(io, port, pkt, q.iproto, q.idst, q.idport, q.isrc, q.isport)
            {
                Ok(found) => found,
                Err(p) => return p,
            };
            let d = pkt.data();
            let s = *self.fnat.sessions.get(idx);
            match s.fwd {
                // IPVS (ip_vs_icmp_xmit): DR/TUN forward the ICMP error unchanged with the
                // session's method; the real server owns the VIP.
                Fwd::Dr => {
                    self.dr_xmit(io, port, pkt, s.rip, now_ms);
                    return None;
                }
                Fwd::Tun => {
                    self.tun_xmit(io, port, pkt, ihl, s.rip, now_ms);
                    return None;
                }
                Fwd::FullNat | Fwd::Nat => {}
            }
            // NAT (IPVS ip_vs_nat_icmp, inbound): only the outer destination and the quoted
            // source change; the outer source (client or router) stays.
            let osrc = if s.fwd == Fwd::Nat {
                ipv4_at(d, ip4::SRC)
            } else {
                s.lip
            };
            let t = Translate {
                osrc,
                odst: s.rip,
                isrc: s.rip,
                isport: s.rport,
                idst: s.lip,
                idport: s.lport,
                mtu_sub: 0,
            };
            self.icmp_translate(io, pkt, ihl, q.iihl, t, now_ms);
            return None;
        }
        Some(pkt)
    }

    pub(crate) fn icmp_translate<I: Io<Pkt = P>>(
        &mut self,
        io: &mut I,
        mut pkt: P,
        ihl: usize,
        iihl: usize,
        t: Translate,
        now_ms: u64,
    ) {
        let d = pkt.data();
        if d[ip4::TTL] <= 1 {
            return self.drop_pkt(pkt, DropReason::TtlExceeded);
        }
        let Some(route) = self.routes.lookup(IpAddr::V4(t.odst)).copied() else {
            return self.drop_pkt(pkt, DropReason::NoRoute);
        };
        if be16(d, ip4::TOTAL_LEN) > self.ports[route.port as usize].mtu {
            return self.drop_pkt(pkt, DropReason::MtuExceeded);
        }
        let d = pkt.data_mut();
        let end = d.len();
        let ic = ETH_LEN + ihl;
        let inner = ic + 8;
        let il4 = inner + iihl;
        let iproto = d[inner + 9];
        // Inner IP header.
        let (oisrc, oidst) = (be32(d, inner + 12), be32(d, inner + 16));
        let (nisrc, nidst) = (u32::from(t.isrc), u32::from(t.idst));
        let mut c = be16(d, inner + 10);
        c = update_u32(c, oisrc, nisrc);
        c = update_u32(c, oidst, nidst);
        put16(d, inner + 10, c);
        put32(d, inner + 12, nisrc);
        put32(d, inner + 16, nidst);
        // Inner ports and L4 checksum (when quoted).
        let (osp, odp) = (be16(d, il4), be16(d, il4 + 2));
        put16(d, il4, t.isport);
        put16(d, il4 + 2, t.idport);
        let co = il4 + l4_csum_off(iproto);
        if co + 2 <= end {
            let c = be16(d, co);
            if !(iproto == PROTO_UDP && c == 0) {
                let mut c = update_u32(c, oisrc, nisrc);
                c = update_u32(c, oidst, nidst);
                c = update_u16(c, osp, t.isport);
                c = update_u16(c, odp, t.idport);
                if iproto == PROTO_UDP && c == 0 {
                    c = 0xffff;
                }
                put16(d, co, c);
            }
        }
        if d[ic] == ICMP_DEST_UNREACH && d[ic + 1] == ICMP_FRAG_NEEDED && t.mtu_sub > 0 {
            let m = be16(d, ic + 6);
            if m > 68 + t.mtu_sub {
                put16(d, ic + 6, m - t.mtu_sub);
            }
        }
        put16(d, ic + 2, 0);
        let c = checksum(&d[ic..end]);
        put16(d, ic + 2, c);
        // Outer header.
        let (osrc, odst) = (be32(d, ip4::SRC), be32(d, ip4::DST));
        let (nsrc, ndst) = (u32::from(t.osrc), u32::from(t.odst));
        let old_ttl = be16(d, ip4::TTL);
        d[ip4::TTL] -= 1;
        let mut c = be16(d, ip4::CSUM);
        c = update_u32(c, osrc, nsrc);
        c = update_u32(c, odst, ndst);
        c = update_u16(c, old_ttl, be16(d, ip4::TTL));
        put16(d, ip4::CSUM, c);
        put32(d, ip4::SRC, nsrc);
        put32(d, ip4::DST, ndst);
        let nh = route.next_hop(IpAddr::V4(t.odst));
        if self.neigh_output(io, route.port, nh, route.src, pkt, now_ms) {
            self.counters.icmp_translated.inc();
        }
    }

    /// Expire due sessions: at most [`EXPIRE_BUDGET`] examined and [`EXPIRE_MAX_TICKS`] wheel
    /// ticks per call. Frees the entry and both index entries, returns the lport to its FIFO
    /// (reusable after the reuse delay) and fixes the dest's active/inactive counts.
    pub(crate) fn fnat_expire(&mut self, now_ms: u64) {
        if self.fnat.wheel.due(now_ms) {
            self.fnat_expire_due(now_ms);
        }
        let f = &mut self.fnat;
        f.templates.expire(now_ms, EXPIRE_MAX_TICKS, &f.dest_stats);
        // The lport pools' clock (when a pool's reuse delay is over) moves with time, not
        // only with releases: an idle worker can still hand an idle pool to a new LIP.
        f.lports.tick(now_ms);
    }

    /// [`Stack::fnat_expire`]'s session part, when the wheel has due slots. In batches: every
    /// session that comes up costs cache misses (its entry, then both of its bucket heads, random
    /// lines of large arrays), so the batch's entries are prefetched first, then the buckets of
    /// those due are computed and their heads prefetched, then they are freed (or filed again).
    #[inline(never)]
    fn fnat_expire_due(&mut self, now_ms: u64) {
        let f = &mut self.fnat;
        let (mut left, mut ticks) = (EXPIRE_BUDGET, EXPIRE_MAX_TICKS);
        let mut due = [0u32; EXPIRE_BATCH];
        let mut keys = [None; EXPIRE_BATCH];
        while left > 0 {
            let n = f
                .wheel
                .take_due(now_ms, &mut ticks, &mut due[..left.min(EXPIRE_BATCH)]);
            if n == 0 {
                break;
            }
            left -= n;
            for &idx in &due[..n] {
                f.sessions.prefetch_slot(idx);
            }
            for (k, &idx) in due[..n].iter().enumerate() {
                keys[k] = if f.sessions.get(idx).expires_ms > now_ms {
                    None
                } else {
                    f.sessions.prefetch_keys(idx)
                };
            }
            for (k, &idx) in due[..n].iter().enumerate() {
                let Some(at) = keys[k] else {
                    let s = f.sessions.get(idx);
                    if s.flags & F_USED != 0 {
                        // Pushed later by its packets: filed again (later than now).
                        f.wheel.schedule(idx, s.expires_ms.max(now_ms + 1));
                    }
                    continue;
                };
                if let Some(s) = f.sessions.remove_at(idx, at) {
                    let (lports, templates) = (&mut f.lports, &mut f.templates);
                    release_session(&s, lports, templates, &f.dest_stats, now_ms);
                    self.counters.sessions_expired.inc();
                }
            }
        }
    }

    /// A client's bare SYN (no ACK, no RST) found session `idx`: if that connection is over
    /// (TIME_WAIT or CLOSE), end it now and return true, so the SYN is scheduled as a new
    /// connection (IPVS's default `conn_reuse_mode=1`): it is counted, may go to another real
    /// server, and on FULLNAT gets a fresh LIP:lport, so the real server never sees the old
    /// 4-tuple it may still hold in TIME_WAIT. A connection held by a persistence template is
    /// ended so only on FULLNAT, where rvs chose that 4-tuple (its template sends the new one to
    /// the same real server); on DR/TUN the 4-tuple is the client's and, as IPVS, the SYN
    /// follows the old session. Otherwise (a live connection, e.g. a retransmitted SYN) returns
    /// false and the SYN follows the session. Out of line: only bare SYNs on an existing session
    /// get here.
    #[cold]
    #[inline(never)]
    fn fnat_reschedule(&mut self, idx: u32, now_ms: u64) -> bool {
        let f = &mut self.fnat;
        let s = f.sessions.get(idx);
        let state = TcpState::from_u8(s.state);
        if (s.tmpl != NO_TMPL && s.fwd != Fwd::FullNat)
            || !matches!(state, TcpState::TimeWait | TcpState::Close)
        {
            return false;
        }
        let Some(s) = f.sessions.remove(idx) else {
            return false;
        };
        f.wheel.cancel(idx);
        release_session(&s, &mut f.lports, &mut f.templates, &f.dest_stats, now_ms);
        self.counters.sessions_rescheduled.inc();
        true
    }

    /// Persistence templates on this worker (control path: allocates).
    pub fn persist_templates(&self) -> Vec<TemplateInfo> {
        self.fnat.templates.infos()
    }

    /// Number of persistence templates on this worker.
    pub fn template_count(&self) -> usize {
        self.fnat.templates.len()
    }

    /// Template table capacity of this worker.
    pub fn template_capacity(&self) -> usize {
        self.fnat.templates.capacity()
    }

    /// Replace the service set (control operation; allocates). Existing sessions are untouched:
    /// they keep their RIP:rport, LIP:lport and dest id until they expire, even if their service
    /// or dest is gone; only new sessions use the new set. New VIPs and LIPs are added to the
    /// owned set (without a gratuitous ARP: [`Stack::announce`] them after); VIPs and LIPs no
    /// longer used are released (see `own_services`: their sessions' packets are no longer
    /// taken — drain a service with weight 0 before deleting it, as with LVS). A service left
    /// unchanged keeps its scheduler state (rr/wrr position, overload flags, lblc/lblcr caches;
    /// [`Services::carry_state`]); one whose real servers changed keeps what still applies, one
    /// whose scheduler changed starts afresh. On error nothing changes.
    pub fn set_services(&mut self, services: &[ServiceConf]) -> Result<(), ServiceError> {
        self.set_services_prepared(services, &[])
    }

    /// [`Stack::set_services`] with the tables [`Services::prepare`] built for `services` on the
    /// control thread (what a worker does between two bursts stays short).
    pub fn set_services_prepared(
        &mut self,
        services: &[ServiceConf],
        prepared: &[Option<MhLookup>],
    ) -> Result<(), ServiceError> {
        let mut built = Services::build_detached(
            services,
            self.fnat.conf.max_dests,
            self.ports.len(),
            prepared,
        )?;
        self.swap_services_built(services, &mut built)
    }

    /// [`Stack::set_services`] with the service set built ahead from `services` by
    /// [`Services::build_detached`] (on the control thread: the worker only attaches its LIP
    /// pools, owns the addresses and swaps). On success `built` holds the set it replaced, for
    /// the caller to free off the worker (what is still allocated here is small: the address
    /// lists of the owned-set update, and the pool of a LIP never seen before). On error
    /// nothing changes.
    pub fn swap_services_built(
        &mut self,
        services: &[ServiceConf],
        built: &mut Services,
    ) -> Result<(), ServiceError> {
        if let Some(d) = built
            .list
            .iter()
            .flat_map(|s| &s.dests)
            .find(|d| d.id >= self.fnat.conf.max_dests)
        {
            return Err(ServiceError::DestId(d.id));
        }
        // Checked here, not only where it was built: a set built for another stack must not
        // get as far as owning addresses.
        let n_ports = self.ports.len();
        if let Some(p) = services
            .iter()
            .flat_map(|s| [s.vip_port, s.lip_port])
            .find(|&p| p as usize >= n_ports)
        {
            return Err(ServiceError::BadPort(p));
        }
        // Most publications (health-check transitions, weights, schedulers) keep every address:
        // then nothing is owned, released or reclassified (`rvs-bench publish`).
        let same_addrs = built.addrs == self.svc_owned;
        let same_classes = built.classifies_as(&self.fnat.services, &self.fnat.lports);
        if !same_addrs && !self.services_fit(&built.addrs) {
            return Err(ServiceError::TooManyAddrs);
        }
        // The LIPs of the set in force keep their pools too: new LIPs take over only pools
        // neither set uses.
        let in_force = &self.fnat.services.lip_set;
        if !self
            .fnat
            .lports
            .fits(built.lip_set.iter().chain(in_force.iter()))
        {
            return Err(ServiceError::TooManyLips);
        }
        let attached = built.attach_lips(&mut self.fnat.lports, in_force);
        // A LIP never seen before got a pool: its replies' direct heads too, before any session
        // can take an lport there (also when attaching failed part-way: a pool's replies must
        // not move from the hash to direct heads while it has sessions).
        self.fnat
            .sessions
            .grow_direct(self.fnat.lports.pool_count());
        attached?;
        if !same_addrs {
            self.own_services(built.addrs.clone())
                .map_err(|_| ServiceError::TooManyAddrs)?;
        }
        let f = &mut self.fnat;
        built.seed(f.worker, f.builds);
        built.carry_state(&mut f.services);
        f.builds += 1;
        f.nat_enabled |= built.any_nat();
        std::mem::swap(&mut f.services, built);
        if !(same_addrs && same_classes) {
            // Addresses owned above were classified under the set before.
            self.reclassify_owned();
        }
        Ok(())
    }

    /// Sessions on this worker.
    pub fn session_count(&self) -> usize {
        self.fnat.sessions.len()
    }

    /// Session table capacity of this worker.
    pub fn session_capacity(&self) -> usize {
        self.fnat.sessions.capacity()
    }

    /// Bytes per session of the table (entry + hashed index heads).
    pub fn session_bytes(&self) -> usize {
        self.fnat.sessions.bytes_per_session()
    }

    /// Bytes of the session table's direct heads of LIP replies (per LIP pool, not per
    /// session).
    pub fn session_direct_bytes(&self) -> usize {
        self.fnat.sessions.direct_bytes()
    }

    /// Every dest's counters of this worker, indexed by dest id, for readers on other threads
    /// (the control plane sums them over workers). The worker stays the only writer.
    pub fn dest_stats_shared(&self) -> std::sync::Arc<[DestStats]> {
        self.fnat.dest_stats.clone()
    }

    /// Per-core counters of dest `id` (None when `id >= max_dests`).
    pub fn dest_stats(&self, id: u32) -> Option<&DestStats> {
        self.fnat.dest_stats.get(id as usize)
    }

    /// The session of client CIP:cport → VIP:vport.
    pub fn session_by_client(
        &self,
        proto: Proto,
        cip: Ipv4Addr,
        cport: u16,
        vip: Ipv4Addr,
        vport: u16,
    ) -> Option<SessionInfo> {
        let idx = self
            .fnat
            .sessions
            .lookup_in(proto.number(), cip, cport, vip, vport)?;
        Some(SessionInfo::from(self.fnat.sessions.get(idx)))
    }

    /// Every session (control path: allocates).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.fnat
            .sessions
            .iter()
            .map(|(_, s)| SessionInfo::from(s))
            .collect()
    }

    /// Replace the session timeouts (`ipvsadm --set`): sessions pick them up at their next state
    /// change or packet (as IPVS, whose connections take a new timeout at their next state
    /// change): a session without packets since keeps the expiry it had. A lowered timeout does
    /// not move a timer earlier either: a session whose next packet set the shorter expiry is
    /// released when the timer filed before comes up, at most the wheel's horizon (409.6 s)
    /// after that packet. Re-filing every session at the change would stall the worker.
    pub fn set_timeouts(&mut self, t: crate::config::Timeouts) {
        self.fnat.conf.timeouts = t;
    }

    /// The session timeouts in force.
    pub fn timeouts(&self) -> crate::config::Timeouts {
        self.fnat.conf.timeouts
    }

    /// Copy sessions from table slot `start` into `out` until it is full (`out.capacity()`), without
    /// allocating (the caller sized `out`), looking at [`SESSIONS_PAGE_SLOTS`] slots at most (a
    /// worker answers between two bursts: a sparse table of millions of slots is listed over
    /// several calls). The persistence templates follow, as slots `capacity..` (IPVS lists its
    /// templates among the connections). Returns the slot to continue from, or None at the end.
    pub fn sessions_page(&self, start: usize, out: &mut Vec<SessionInfo>) -> Option<usize> {
        let cap = self.fnat.sessions.capacity();
        if start < cap {
            let end = start.saturating_add(SESSIONS_PAGE_SLOTS);
            for (i, s) in self.fnat.sessions.iter_range(start, end) {
                if out.len() == out.capacity() {
                    return Some(i as usize);
                }
                out.push(SessionInfo::from(s));
            }
            // Then the persistence templates, from slot `cap` on.
            return Some(end.min(cap));
        }
        let t = &self.fnat.templates;
        let (from, to) = (
            start - cap,
            (start - cap).saturating_add(SESSIONS_PAGE_SLOTS),
        );
        let to = to.min(t.capacity());
        for i in from..to {
            if let Some(info) = t.info_at(i) {
                if out.len() == out.capacity() {
                    return Some(cap + i);
                }
                out.push(SessionInfo::of_template(&info));
            }
        }
        (to < t.capacity()).then_some(cap + to)
    }

    /// Number of services.
    pub fn service_count(&self) -> usize {
        self.fnat.services.len()
    }
}

/// Most session-table slots one [`Stack::sessions_page`] call looks at (about 1 MB of entries).
pub const SESSIONS_PAGE_SLOTS: usize = 16 * 1024;

/// Addresses of a translated ICMP error.
#[derive(Clone, Copy)]
pub(crate) struct Translate {
    pub(crate) osrc: Ipv4Addr,
    pub(crate) odst: Ipv4Addr,
    pub(crate) isrc: Ipv4Addr,
    pub(crate) isport: u16,
    pub(crate) idst: Ipv4Addr,
    pub(crate) idport: u16,
    pub(crate) mtu_sub: u16,
}
