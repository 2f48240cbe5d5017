//! A fixed-capacity open-addressing hash map (linear probing, backward-shift deletion) that never
//! allocates after construction.

use crate::io::PortIdx;
use std::net::IpAddr;

/// Keys of a [`FixedMap`]: cheap, non-cryptographic hashing (keys come from configured subnets).
pub trait FixedKey: Copy + Eq {
    /// A well-mixed 64-bit hash.
    fn hash64(&self) -> u64;
}

#[inline]
pub(crate) fn mix(mut x: u64) -> u64 {
    // splitmix64 finalizer.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[inline]
pub(crate) fn ip_bits(ip: &IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u32::from(*a) as u64,
        IpAddr::V6(a) => {
            let v = u128::from(*a);
            ((v >> 64) as u64).rotate_left(17) ^ (v as u64) ^ (1 << 63)
        }
    }
}

impl FixedKey for IpAddr {
    fn hash64(&self) -> u64 {
        mix(ip_bits(self))
    }
}

impl FixedKey for u32 {
    /// Fibonacci hashing, high bits moved down: 2 instructions instead of [`mix`]'s 9 (keys are
    /// configured addresses, not attacker-chosen, and probes compare the whole key).
    #[inline(always)]
    fn hash64(&self) -> u64 {
        (*self as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29
    }
}

impl FixedKey for (PortIdx, IpAddr) {
    fn hash64(&self) -> u64 {
        mix(ip_bits(&self.1) ^ ((self.0 as u64) << 40).rotate_left(7))
    }
}

/// Fixed-capacity map. At most `max` entries; the slot array is at least twice as large, so
/// probes stay short and always terminate.
pub struct FixedMap<K, V> {
    slots: Vec<Option<(K, V)>>,
    mask: usize,
    len: usize,
    max: usize,
}

impl<K: FixedKey, V> FixedMap<K, V> {
    /// A map for up to `max` entries (allocates here, never afterwards).
    pub fn with_capacity(max: usize) -> Self {
        let n = (max.max(1) * 2).next_power_of_two();
        let mut slots = Vec::with_capacity(n);
        slots.resize_with(n, || None);
        FixedMap {
            slots,
            mask: n - 1,
            len: 0,
            max,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.max
    }

    #[inline]
    fn find(&self, k: &K) -> Option<usize> {
        let mut i = k.hash64() as usize & self.mask;
        loop {
            match &self.slots[i] {
                None => return None,
                Some((kk, _)) if kk == k => return Some(i),
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// The value of `k`.
    #[inline(always)]
    pub fn get(&self, k: &K) -> Option<&V> {
        let mut i = k.hash64() as usize & self.mask;
        loop {
            match self.slots.get(i)? {
                None => return None,
                Some((kk, v)) if kk == k => return Some(v),
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// The value of `k`, writable.
    #[inline]
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.find(k)
            .and_then(|i| self.slots[i].as_mut().map(|(_, v)| v))
    }

    /// Insert or replace. `Err(v)` when the map is full and `k` is new.
    pub fn insert(&mut self, k: K, v: V) -> Result<(), V> {
        let mut i = k.hash64() as usize & self.mask;
        loop {
            match &mut self.slots[i] {
                Some((kk, vv)) if *kk == k => {
                    *vv = v;
                    return Ok(());
                }
                Some(_) => i = (i + 1) & self.mask,
                slot @ None => {
                    if self.len >= self.max {
                        return Err(v);
                    }
                    *slot = Some((k, v));
                    self.len += 1;
                    return Ok(());
                }
            }
        }
    }

    /// Remove `k`, returning its value.
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let mut hole = self.find(k)?;
        let (_, v) = self.slots[hole].take()?;
        self.len -= 1;
        // Backward-shift deletion: move later members of the probe run into the hole when their
        // home slot is not cyclically in (hole, j].
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let home = match &self.slots[j] {
                None => break,
                Some((kk, _)) => kk.hash64() as usize & self.mask,
            };
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
        Some(v)
    }

    /// Remove every entry (control path; keeps the slots).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.len = 0;
    }

    /// Every entry (control path: on_start, tests).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().map(|(k, v)| (k, v)))
    }

    /// Call `f` on every entry, its value writable.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&K, &mut V)) {
        for (k, v) in self.slots.iter_mut().flatten() {
            f(k, v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    #[test]
    fn behaves_like_hashmap() {
        let mut m: FixedMap<(PortIdx, IpAddr), u32> = FixedMap::with_capacity(64);
        let mut r: HashMap<(PortIdx, IpAddr), u32> = HashMap::new();
        let mut s = 99u64;
        for step in 0..20_000u32 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let k = (
                (s % 3) as u16,
                IpAddr::V4(Ipv4Addr::from(((s >> 8) % 200) as u32)),
            );
            match (s >> 40) % 3 {
                0 | 1 => {
                    let full = r.len() >= 64 && !r.contains_key(&k);
                    assert_eq!(m.insert(k, step).is_err(), full);
                    if !full {
                        r.insert(k, step);
                    }
                }
                _ => assert_eq!(m.remove(&k), r.remove(&k)),
            }
            assert_eq!(m.len(), r.len());
            assert_eq!(m.get(&k), r.get(&k));
        }
        for (k, v) in &r {
            assert_eq!(m.get(k), Some(v));
        }
        assert_eq!(m.iter().count(), r.len());
    }
}
