//! Toeplitz hash as computed by NICs for receive-side scaling (Microsoft RSS specification).

use std::net::Ipv4Addr;

/// Toeplitz hash of `input` under `key`. Bits of `input` beyond `key.len() * 8 - 32` use a key
/// window that wraps to zero (the key must be at least `input.len() + 4` bytes for the result to
/// match a NIC; 40 bytes cover IPv4 and IPv6 with ports).
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let kbit = |i: usize| -> u32 {
        key.get(i / 8)
            .map_or(0, |b| ((*b as u32) >> (7 - (i % 8))) & 1)
    };
    // 32-bit window of the key starting at bit 0.
    let mut window: u32 = (0..32).fold(0, |w, i| (w << 1) | kbit(i));
    let mut hash = 0u32;
    for (byte_i, &b) in input.iter().enumerate() {
        for bit in 0..8 {
            if b & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window = (window << 1) | kbit(byte_i * 8 + bit + 32);
        }
    }
    hash
}

/// RSS hash of an IPv4 TCP/UDP packet as a NIC computes it: source address, destination
/// address, source port, destination port, all in network order.
pub fn rss_ipv4_l4(key: &[u8], src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> u32 {
    let mut input = [0u8; 12];
    input[0..4].copy_from_slice(&src.octets());
    input[4..8].copy_from_slice(&dst.octets());
    input[8..10].copy_from_slice(&sport.to_be_bytes());
    input[10..12].copy_from_slice(&dport.to_be_bytes());
    toeplitz(key, &input)
}

/// RSS hash of an IPv4 packet without ports (source and destination address only).
pub fn rss_ipv4(key: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
    let mut input = [0u8; 8];
    input[0..4].copy_from_slice(&src.octets());
    input[4..8].copy_from_slice(&dst.octets());
    toeplitz(key, &input)
}

/// The Microsoft verification key.
pub const MS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// "Verifying the RSS Hash Calculation" (Microsoft), IPv4 table: destination, source, hash
    /// without ports, hash with TCP ports.
    #[test]
    fn microsoft_vectors() {
        let v = [
            (
                "161.142.100.80",
                1766,
                "66.9.149.187",
                2794,
                0x323e8fc2u32,
                0x51ccc178u32,
            ),
            (
                "65.69.140.83",
                4739,
                "199.92.111.2",
                14230,
                0xd718262a,
                0xc626b0ea,
            ),
            (
                "12.22.207.184",
                38024,
                "24.19.198.95",
                12898,
                0xd2d0a5de,
                0x5c2b394a,
            ),
            (
                "209.142.163.6",
                2217,
                "38.27.205.30",
                48228,
                0x82989176,
                0xafc7327f,
            ),
            (
                "202.188.127.2",
                1303,
                "153.39.163.191",
                44251,
                0x5d1809c5,
                0x10e828a2,
            ),
        ];
        for (dst, dport, src, sport, h2, h4) in v {
            assert_eq!(rss_ipv4(&MS_KEY, a(src), a(dst)), h2, "{src} -> {dst}");
            assert_eq!(
                rss_ipv4_l4(&MS_KEY, a(src), a(dst), sport, dport),
                h4,
                "{src}:{sport} -> {dst}:{dport}"
            );
        }
    }
}
