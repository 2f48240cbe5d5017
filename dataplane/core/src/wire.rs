//! Wire-format constants and small helpers (Ethernet, ARP, IPv4, ICMP offsets).

use crate::addr::MacAddr;
use std::net::Ipv4Addr;

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// EtherType IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// Ethernet/IPv4 ARP packet length (without Ethernet header).
pub const ARP_LEN: usize = 28;
/// ARP operation: request.
pub const ARP_OP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARP_OP_REPLY: u16 = 2;

/// Frame offsets of the ARP fields (Ethernet header included).
pub mod arp {
    /// Hardware type.
    pub const HTYPE: usize = 14;
    /// Protocol type.
    pub const PTYPE: usize = 16;
    /// Hardware address length.
    pub const HLEN: usize = 18;
    /// Protocol address length.
    pub const PLEN: usize = 19;
    /// Operation.
    pub const OP: usize = 20;
    /// Sender hardware address.
    pub const SHA: usize = 22;
    /// Sender protocol address.
    pub const SPA: usize = 28;
    /// Target hardware address.
    pub const THA: usize = 32;
    /// Target protocol address.
    pub const TPA: usize = 38;
}

/// Frame offsets of the IPv4 header fields (Ethernet header included).
pub mod ip4 {
    /// Version and IHL.
    pub const VIHL: usize = 14;
    /// Type of service.
    pub const TOS: usize = 15;
    /// Total length.
    pub const TOTAL_LEN: usize = 16;
    /// Identification.
    pub const ID: usize = 18;
    /// Flags and fragment offset.
    pub const FRAG: usize = 20;
    /// Time to live.
    pub const TTL: usize = 22;
    /// Protocol.
    pub const PROTO: usize = 23;
    /// Header checksum.
    pub const CSUM: usize = 24;
    /// Source address.
    pub const SRC: usize = 26;
    /// Destination address.
    pub const DST: usize = 30;
    /// Minimum header length.
    pub const MIN_HDR: usize = 20;
    /// Don't-fragment flag (in the FRAG field).
    pub const DF: u16 = 0x4000;
    /// More-fragments flag and offset mask: non-zero means "a fragment".
    pub const MF_OFFSET: u16 = 0x3fff;
    /// Fragment offset mask.
    pub const OFFSET: u16 = 0x1fff;
}

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// ICMP echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP echo request.
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// Code of destination unreachable: net unreachable.
pub const ICMP_NET_UNREACH: u8 = 0;
/// Code of destination unreachable: fragmentation needed and DF set.
pub const ICMP_FRAG_NEEDED: u8 = 4;

/// Big-endian u16 at `off`.
#[inline(always)]
pub fn be16(d: &[u8], off: usize) -> u16 {
    u16::from_be_bytes(bytes_at(d, off))
}

/// Big-endian u32 at `off`.
#[inline(always)]
pub fn be32(d: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(bytes_at(d, off))
}

/// Store a big-endian u16 at `off`.
#[inline(always)]
pub fn put16(d: &mut [u8], off: usize, v: u16) {
    d[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// IPv4 address at `off`.
#[inline(always)]
pub fn ipv4_at(d: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::from(bytes_at::<4>(d, off))
}

/// The `N` bytes at `off`, with one bounds test (indexing byte by byte tests each byte, and
/// `off + 1` for overflow, on the general path's variable offsets). Panics like indexing when
/// they are not all inside `d`.
#[inline(always)]
pub fn bytes_at<const N: usize>(d: &[u8], off: usize) -> [u8; N] {
    match d.get(off..).and_then(|t| t.first_chunk::<N>()) {
        Some(b) => *b,
        None => out_of_bounds(off, N, d.len()),
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn out_of_bounds(off: usize, n: usize, len: usize) -> ! {
    panic!("{n} bytes at {off} out of bounds of a {len}-byte buffer")
}

/// MAC address at `off`.
#[inline(always)]
pub fn mac_at(d: &[u8], off: usize) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&d[off..off + 6]);
    MacAddr(m)
}

/// Write an Ethernet header at the start of `d`.
#[inline(always)]
pub fn write_eth(d: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    d[0..6].copy_from_slice(&dst.0);
    d[6..12].copy_from_slice(&src.0);
    put16(d, 12, ethertype);
}

/// True for ICMP types that are errors (or unknown), about which no ICMP error is sent.
#[inline]
pub fn icmp_type_is_error(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12) || t > 18
}

/// The (protocol, source, source port, destination, destination port) of an Ethernet/IPv4 TCP or
/// UDP frame, without validating more than the bounds it reads (a hint for prefetching only).
#[inline(always)]
pub fn ipv4_l4_tuple(f: &[u8]) -> Option<(u8, Ipv4Addr, u16, Ipv4Addr, u16)> {
    if f.len() < ETH_LEN + 20 || u16::from_be_bytes([f[12], f[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    let proto = f[ETH_LEN + 9];
    if proto != 6 && proto != 17 {
        return None;
    }
    let l4 = ETH_LEN + ((f[ETH_LEN] & 0x0f) as usize) * 4;
    if f.len() < l4 + 4 {
        return None;
    }
    let a = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    Some((
        proto,
        a(ETH_LEN + 12),
        u16::from_be_bytes([f[l4], f[l4 + 1]]),
        a(ETH_LEN + 16),
        u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_reads_at_any_offset() {
        let d = [0x12, 0x34, 0x56, 0x78, 0x9a];
        assert_eq!(be16(&d, 3), 0x789a);
        assert_eq!(be32(&d, 1), 0x3456_789a);
        assert_eq!(ipv4_at(&d, 0), Ipv4Addr::new(0x12, 0x34, 0x56, 0x78));
    }

    /// A read past the end panics like indexing (never reads outside the buffer), also when
    /// the offset is near `usize::MAX`.
    #[test]
    fn reads_past_the_end_panic() {
        let d = [0u8; 5];
        for (off, n) in [(4, 2), (2, 4), (5, 2), (usize::MAX, 2), (usize::MAX - 1, 4)] {
            let r = std::panic::catch_unwind(|| match n {
                2 => be16(&d, off) as u32,
                _ => be32(&d, off),
            });
            assert!(r.is_err(), "{n} bytes at {off}");
        }
    }

    #[test]
    fn l4_tuple_of_tcp_udp_only() {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([192, 0, 2, 2], [203, 0, 113, 10], 64)
            .tcp(40000, 80, 1, 1000)
            .write(&mut f, b"")
            .unwrap();
        assert_eq!(
            ipv4_l4_tuple(&f),
            Some((
                6,
                Ipv4Addr::new(192, 0, 2, 2),
                40000,
                Ipv4Addr::new(203, 0, 113, 10),
                80
            ))
        );
        assert_eq!(
            ipv4_l4_tuple(&f[..14 + 22]),
            None,
            "truncated before the ports"
        );
        let mut icmp = Vec::new();
        etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([192, 0, 2, 2], [203, 0, 113, 10], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut icmp, b"")
            .unwrap();
        assert_eq!(ipv4_l4_tuple(&icmp), None);
    }
}
