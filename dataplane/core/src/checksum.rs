//! Internet checksum (RFC 1071) and incremental updates (RFC 1624).
//!
//! All values are in host order as they would be read big-endian from the wire: store a result
//! with `to_be_bytes()`.

/// Ones'-complement partial sum of `data` (as big-endian 16-bit words, an odd last byte padded
/// with zero) added to `initial`. Fold it with [`fold`]. Partial sums of consecutive chunks can
/// be added as long as each chunk but the last has an even length.
#[inline]
pub fn sum(data: &[u8], initial: u64) -> u64 {
    // Sum 32-bit halves of 64-bit big-endian words into a u64: carries accumulate in the upper
    // bits and are folded at the end (ones'-complement addition is associative).
    let mut acc: u64 = initial;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        acc += u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        acc += u16::from_be_bytes([rest[0], rest[1]]) as u64;
        rest = &rest[2..];
    }
    if let [b] = rest {
        acc += (*b as u64) << 8;
    }
    acc
}

/// Fold a partial sum to 16 bits (ones'-complement, not inverted).
#[inline]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Fold a ones'-complement sum below 2^35 (at most eight 32-bit words) to 16 bits: three steps
/// instead of [`fold`]'s five.
#[inline(always)]
pub fn fold35(mut s: u64) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The internet checksum of `data`: the value to store in a checksum field that was zero while
/// summing. Verifying: `checksum(data_with_field) == 0`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// [`checksum`] of an IPv4 header: unrolled for the usual 20 bytes, generic otherwise.
#[inline(always)]
pub fn ip_header_checksum(h: &[u8]) -> u16 {
    if let Ok(h) = <&[u8; 20]>::try_from(h) {
        let w = |o: usize| u32::from_be_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]) as u64;
        return !fold35(w(0) + w(4) + w(8) + w(12) + w(16));
    }
    checksum(h)
}

/// New checksum after a 16-bit field changed from `old` to `new` (RFC 1624, eqn. 3:
/// `HC' = ~(~HC + ~m + m')`).
#[inline]
pub fn update_u16(csum: u16, old: u16, new: u16) -> u16 {
    let s = (!csum) as u64 + (!old) as u64 + new as u64;
    !fold(s)
}

/// New checksum after a 32-bit field (e.g. an IPv4 address) changed from `old` to `new`.
#[inline]
pub fn update_u32(csum: u16, old: u32, new: u32) -> u16 {
    let s = (!csum) as u64
        + (!(old >> 16) & 0xffff) as u64
        + (!old & 0xffff) as u64
        + (new >> 16) as u64
        + (new & 0xffff) as u64;
    !fold(s)
}

/// New checksum after a 128-bit field (an IPv6 address) changed from `old` to `new`.
#[inline]
pub fn update_u128(csum: u16, old: u128, new: u128) -> u16 {
    let mut s = (!csum) as u64;
    for i in 0..8 {
        s += (!(old >> (16 * i)) & 0xffff) as u64 + ((new >> (16 * i)) & 0xffff) as u64;
    }
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_header_checksum_matches_generic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for n in [20usize, 24, 60, 20, 20] {
            for _ in 0..2000 {
                let h: Vec<u8> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                assert_eq!(ip_header_checksum(&h), checksum(&h));
            }
        }
        let ff = [0xffu8; 20];
        assert_eq!(ip_header_checksum(&ff), checksum(&ff));
    }

    /// Plain RFC 1071 reference: 16 bits at a time.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                (c[0] as u16) << 8
            };
            s += w as u32;
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: sum of 0001 f203 f4f5 f6f7 is ddf2 (before complement).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&d, 0)), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn matches_reference_on_random_lengths() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..300 {
            let data: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            assert_eq!(checksum(&data), reference(&data), "len {len}");
        }
        let ff = vec![0xffu8; 4096];
        assert_eq!(checksum(&ff), reference(&ff));
    }

    #[test]
    fn matches_etherparse_ipv4_header() {
        use etherparse::Ipv4Header;
        let mut seed = 42u64;
        for _ in 0..200 {
            let r = xorshift(&mut seed);
            let mut h = Ipv4Header::new(
                (r & 0x3ff) as u16,
                (r >> 10) as u8,
                etherparse::IpNumber((r >> 18) as u8),
                ((r >> 20) as u32).to_be_bytes(),
                ((r >> 3) as u32).to_be_bytes(),
            )
            .unwrap();
            h.identification = (r >> 40) as u16;
            h.header_checksum = h.calc_header_checksum();
            let bytes = h.to_bytes();
            let mut zeroed = bytes.clone();
            zeroed[10] = 0;
            zeroed[11] = 0;
            assert_eq!(checksum(&zeroed), h.header_checksum);
            assert_eq!(checksum(&bytes), 0);
        }
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut seed = 7u64;
        for _ in 0..2000 {
            let mut data: Vec<u8> = (0..40).map(|_| xorshift(&mut seed) as u8).collect();
            data[10] = 0;
            data[11] = 0;
            let c = checksum(&data);
            // 16-bit field at 8..10
            let old16 = u16::from_be_bytes([data[8], data[9]]);
            let new16 = xorshift(&mut seed) as u16;
            data[8..10].copy_from_slice(&new16.to_be_bytes());
            let c2 = update_u16(c, old16, new16);
            assert_eq!(c2, checksum(&data));
            // 32-bit field at 12..16
            let old32 = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
            let new32 = xorshift(&mut seed) as u32;
            data[12..16].copy_from_slice(&new32.to_be_bytes());
            let c3 = update_u32(c2, old32, new32);
            assert_eq!(c3, checksum(&data));
            // 128-bit field at 20..36
            let old128 = u128::from_be_bytes(data[20..36].try_into().unwrap());
            let new128 = ((xorshift(&mut seed) as u128) << 64) | xorshift(&mut seed) as u128;
            data[20..36].copy_from_slice(&new128.to_be_bytes());
            assert_eq!(update_u128(c3, old128, new128), checksum(&data));
        }
    }

    #[test]
    fn incremental_ttl_decrement_matches_etherparse() {
        use etherparse::Ipv4Header;
        for ttl in 1..=255u8 {
            let mut h = Ipv4Header::new(
                100,
                ttl,
                etherparse::IpNumber::UDP,
                [10, 0, 0, 1],
                [10, 1, 2, 3],
            )
            .unwrap();
            h.header_checksum = h.calc_header_checksum();
            let old = u16::from_be_bytes([ttl, 17]);
            let new = u16::from_be_bytes([ttl - 1, 17]);
            let c = update_u16(h.header_checksum, old, new);
            h.time_to_live -= 1;
            assert_eq!(c, h.calc_header_checksum());
        }
    }
}
