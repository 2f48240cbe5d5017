//! The generator's frame list, kept small in memory.
//!
//! A trace of N established sessions replays 2N different frames. Stored whole (68 bytes each),
//! 1M sessions are 136 MB that the generator reads once per lap of the list: a stream through the
//! L3 cache the worker shares with it, which evicts the worker's session table and costs the
//! worker misses no production gateway has (a NIC writes each packet into memory once, as the
//! generator's copy into the mbuf still does; nothing reads a 136 MB trace besides). So a long
//! list of IPv4 TCP/UDP frames is stored as a few templates (the frame with its addresses, ports
//! and checksums zeroed) and, per frame, an 18-byte entry with those fields: 36 MB for 1M
//! sessions. Refilling an mbuf copies the template (in L1) and writes the fields; the frame is
//! byte for byte the one stored, which [`FrameList::new`] checks for every frame (a list it
//! cannot rebuild exactly stays whole).

use std::collections::HashMap;

use rvs_core::wire::{ip4, ETHERTYPE_IPV4, ETH_LEN};

use crate::trace::Frame;

/// Lists shorter than this stay whole (they fit in the generator's L2 anyway).
pub const COMPACT_FROM: usize = 16 * 1024;

const IP_CSUM: usize = ip4::CSUM;
const IP_SRC: usize = ip4::SRC;
const IP_DST: usize = ip4::DST;
/// The L4 header of a frame with a 20-byte IPv4 header.
const L4: usize = ETH_LEN + ip4::MIN_HDR;
const SPORT: usize = L4;
const DPORT: usize = L4 + 2;
const TCP_CSUM: usize = L4 + 16;
const UDP_CSUM: usize = L4 + 6;

/// The varying fields of one frame (network byte order, as on the wire).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Entry {
    src: [u8; 4],
    dst: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
    ip_csum: [u8; 2],
    l4_csum: [u8; 2],
    template: u16,
}

/// Where the L4 checksum of an IPv4 frame with a 20-byte header is, by protocol.
fn l4_csum_at(b: &[u8; 64]) -> Option<usize> {
    if b[12..14] != ETHERTYPE_IPV4.to_be_bytes() || b[ip4::VIHL] != 0x45 {
        return None;
    }
    match b[ip4::PROTO] {
        6 => Some(TCP_CSUM),
        17 => Some(UDP_CSUM),
        _ => None,
    }
}

/// Frames replayed in order, whole or as templates and entries.
#[derive(Clone)]
pub enum FrameList {
    Whole(Vec<Frame>),
    Compact {
        templates: Vec<Frame>,
        entries: Vec<Entry>,
    },
}

impl FrameList {
    /// Store `frames`, compactly when the list is long and every frame can be rebuilt exactly.
    pub fn new(frames: Vec<Frame>) -> Self {
        if frames.len() < COMPACT_FROM {
            return FrameList::Whole(frames);
        }
        match Self::compact(&frames) {
            Some(c) => c,
            None => FrameList::Whole(frames),
        }
    }

    fn compact(frames: &[Frame]) -> Option<Self> {
        let mut index: HashMap<([u8; 64], u16, u16), u16> = HashMap::new();
        let mut templates = Vec::new();
        let mut entries = Vec::with_capacity(frames.len());
        for f in frames {
            let csum = l4_csum_at(&f.bytes)?;
            let b = &f.bytes;
            let field = |o: usize| [b[o], b[o + 1]];
            let e = |template| Entry {
                src: b[IP_SRC..IP_SRC + 4].try_into().unwrap(),
                dst: b[IP_DST..IP_DST + 4].try_into().unwrap(),
                sport: field(SPORT),
                dport: field(DPORT),
                ip_csum: field(IP_CSUM),
                l4_csum: field(csum),
                template,
            };
            let mut t = *b;
            for o in [IP_SRC, IP_DST] {
                t[o..o + 4].fill(0);
            }
            for o in [SPORT, DPORT, IP_CSUM, csum] {
                t[o..o + 2].fill(0);
            }
            let ti = match index.get(&(t, f.len, f.tag)) {
                Some(&ti) => ti,
                None => {
                    // More templates than a u16 names: not a list worth compacting.
                    let ti = u16::try_from(templates.len()).ok()?;
                    index.insert((t, f.len, f.tag), ti);
                    templates.push(Frame {
                        bytes: t,
                        len: f.len,
                        tag: f.tag,
                    });
                    ti
                }
            };
            entries.push(e(ti));
        }
        let list = FrameList::Compact { templates, entries };
        for (i, f) in frames.iter().enumerate() {
            let mut b = [0u8; 64];
            let (len, tag) = list.write(i, &mut b);
            if b != f.bytes || len != f.len || tag != f.tag {
                return None;
            }
        }
        Some(list)
    }

    pub fn len(&self) -> usize {
        match self {
            FrameList::Whole(f) => f.len(),
            FrameList::Compact { entries, .. } => entries.len(),
        }
    }

    /// Bytes the list takes (what the generator streams through per lap).
    pub fn bytes(&self) -> usize {
        match self {
            FrameList::Whole(f) => std::mem::size_of_val(&f[..]),
            FrameList::Compact { templates, entries } => {
                std::mem::size_of_val(&templates[..]) + std::mem::size_of_val(&entries[..])
            }
        }
    }

    /// Write frame `i` (64 bytes) into `out`; returns its length and tag.
    #[inline(always)]
    pub fn write(&self, i: usize, out: &mut [u8; 64]) -> (u16, u16) {
        match self {
            FrameList::Whole(f) => {
                let f = &f[i];
                *out = f.bytes;
                (f.len, f.tag)
            }
            FrameList::Compact { templates, entries } => {
                let e = &entries[i];
                let t = &templates[e.template as usize];
                *out = t.bytes;
                out[IP_SRC..IP_SRC + 4].copy_from_slice(&e.src);
                out[IP_DST..IP_DST + 4].copy_from_slice(&e.dst);
                out[SPORT..SPORT + 2].copy_from_slice(&e.sport);
                out[DPORT..DPORT + 2].copy_from_slice(&e.dport);
                out[IP_CSUM..IP_CSUM + 2].copy_from_slice(&e.ip_csum);
                let c = if out[ip4::PROTO] == 6 {
                    TCP_CSUM
                } else {
                    UDP_CSUM
                };
                out[c..c + 2].copy_from_slice(&e.l4_csum);
                (t.len, t.tag)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(proto: u8, k: u32) -> Frame {
        let mut b = [0u8; 64];
        b[12] = 0x08;
        b[14] = 0x45;
        b[23] = proto;
        b[IP_SRC..IP_SRC + 4].copy_from_slice(&k.to_be_bytes());
        b[IP_DST..IP_DST + 4].copy_from_slice(&(k ^ 0xdead_beef).to_be_bytes());
        b[SPORT..SPORT + 2].copy_from_slice(&(k as u16).to_be_bytes());
        b[IP_CSUM] = k as u8;
        b[if proto == 6 { TCP_CSUM } else { UDP_CSUM }] = (k >> 3) as u8;
        b[60] = (k % 3) as u8; // a second template per protocol
        Frame {
            bytes: b,
            len: 60,
            tag: 0,
        }
    }

    #[test]
    fn long_lists_are_compact_and_rebuilt_exactly() {
        let frames: Vec<Frame> = (0..COMPACT_FROM as u32 * 2)
            .map(|k| frame(if k % 2 == 0 { 6 } else { 17 }, k))
            .collect();
        let list = FrameList::new(frames.clone());
        let FrameList::Compact { templates, .. } = &list else {
            panic!("not compact");
        };
        assert_eq!(templates.len(), 6);
        assert_eq!(std::mem::size_of::<Entry>(), 18, "the size the docs give");
        assert!(list.bytes() * 3 < std::mem::size_of_val(&frames[..]));
        for (i, f) in frames.iter().enumerate() {
            let mut b = [0u8; 64];
            assert_eq!(list.write(i, &mut b), (f.len, f.tag));
            assert_eq!(b, f.bytes);
        }
    }

    #[test]
    fn short_lists_and_other_frames_stay_whole() {
        let short: Vec<Frame> = (0..10).map(|k| frame(6, k)).collect();
        assert!(matches!(FrameList::new(short), FrameList::Whole(_)));
        let mut long: Vec<Frame> = (0..COMPACT_FROM as u32).map(|k| frame(6, k)).collect();
        long[7].bytes[23] = 1; // ICMP: not rebuilt from a TCP/UDP template
        assert!(matches!(FrameList::new(long), FrameList::Whole(_)));
    }
}
