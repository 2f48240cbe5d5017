//! A hashed timer wheel over a fixed set of items (session slots), with lazy rescheduling.
//!
//! Each item sits in at most one slot list (intrusive doubly linked, links in a parallel array:
//! 12 bytes per item). An item is filed under tick `ceil(expiry / tick_ms)`, clamped to the
//! wheel's horizon; when its slot comes up, the owner checks the item's real expiry and either
//! frees it or files it again (so pushing an expiry later costs nothing per packet: the owner just
//! stores the new time). Only moving an expiry *earlier* needs [`TimerWheel::schedule`] again.
//! [`TimerWheel::expire`] does bounded work per call.

/// No item.
pub const NIL: u32 = u32::MAX;
/// A filed item's tick is kept in 31 bits (never [`NIL`]) and compared round that ring, so a
/// clock past 2^32 ticks (13.6 years of TSC at 100 ms, which a VM's TSC may start near) works.
const TICK_BITS: u32 = 0x7fff_ffff;

/// Tick `a` is at or before tick `b` (both 31-bit, less than 2^30 ticks apart).
#[inline(always)]
fn tick_le(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) & TICK_BITS < 1 << 30
}

#[derive(Clone, Copy, Debug)]
struct Link {
    next: u32,
    prev: u32,
    /// Tick the item is filed under (NIL: not filed).
    tick: u32,
}

/// The wheel.
pub struct TimerWheel {
    heads: Vec<u32>,
    links: Vec<Link>,
    mask: u64,
    tick_ms: u64,
    /// Next tick to process.
    cur: u64,
    len: usize,
}

impl TimerWheel {
    /// A wheel for items `0..items` with `slots` (rounded up to a power of two) of `tick_ms` each.
    pub fn new(items: usize, slots: usize, tick_ms: u64) -> Self {
        let slots = slots.max(2).next_power_of_two();
        TimerWheel {
            heads: vec![NIL; slots],
            links: vec![
                Link {
                    next: NIL,
                    prev: NIL,
                    tick: NIL,
                };
                items
            ],
            mask: slots as u64 - 1,
            tick_ms: tick_ms.max(1),
            cur: 0,
            len: 0,
        }
    }

    /// Items filed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no item is filed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Take `item` out of its slot (no-op when not filed).
    #[inline]
    pub fn cancel(&mut self, item: u32) {
        let Some(l) = self.links.get(item as usize).copied() else {
            return;
        };
        if l.tick == NIL {
            return;
        }
        if l.prev != NIL {
            self.links[l.prev as usize].next = l.next;
        } else {
            self.heads[(l.tick as u64 & self.mask) as usize] = l.next;
        }
        if l.next != NIL {
            self.links[l.next as usize].prev = l.prev;
        }
        self.links[item as usize] = Link {
            next: NIL,
            prev: NIL,
            tick: NIL,
        };
        self.len -= 1;
    }

    /// File `item` to come up at (or just after) `expires_ms`, moving it if it was filed. A new
    /// item goes through [`TimerWheel::insert`], which first brings an empty wheel's clock to now.
    #[inline]
    pub fn schedule(&mut self, item: u32, expires_ms: u64) {
        if item as usize >= self.links.len() {
            return;
        }
        self.cancel(item);
        let slots = self.mask + 1;
        let t = expires_ms
            .div_ceil(self.tick_ms)
            .clamp(self.cur, self.cur + slots - 1);
        let slot = (t & self.mask) as usize;
        let head = self.heads[slot];
        self.links[item as usize] = Link {
            next: head,
            prev: NIL,
            tick: t as u32 & TICK_BITS,
        };
        if head != NIL {
            self.links[head as usize].prev = item;
        }
        self.heads[slot] = item;
        self.len += 1;
    }

    /// File a new `item` at `expires_ms`, at time `now_ms`. An empty wheel first moves its clock
    /// to `now_ms`: a wheel created at time 0 that gets its first item before any
    /// [`TimerWheel::expire`] would otherwise file it (and all that follow) relative to tick 0,
    /// clamped to its horizon, and then walk and re-file them all until it has caught up.
    #[inline]
    pub fn insert(&mut self, item: u32, expires_ms: u64, now_ms: u64) {
        if self.len == 0 {
            self.cur = self.cur.max(now_ms / self.tick_ms);
        }
        self.schedule(item, expires_ms);
    }

    /// Re-file `item` only if `expires_ms` is earlier than the time it is filed at (the cheap
    /// per-packet path: later expiries are handled lazily when the slot comes up).
    #[inline]
    pub fn advance_to(&mut self, item: u32, expires_ms: u64) {
        // Filed at or before the tick `expires_ms` would be filed under: found lazily.
        match self.links.get(item as usize) {
            Some(l)
                if l.tick != NIL
                    && tick_le(l.tick, expires_ms.div_ceil(self.tick_ms) as u32 & TICK_BITS) => {}
            _ => self.schedule(item, expires_ms),
        }
    }

    /// True when a slot up to `now_ms` may hold items (the wheel is not empty and its clock is
    /// not past now). An empty wheel's clock moves to now (so a first insert files relative to
    /// now, see [`TimerWheel::insert`]).
    #[inline]
    pub fn due(&mut self, now_ms: u64) -> bool {
        let now_tick = now_ms / self.tick_ms;
        if self.len == 0 {
            self.cur = self.cur.max(now_tick);
            return false;
        }
        self.cur <= now_tick
    }

    /// Take up to `out.len()` due items out of the wheel, in slot order, into `out`; returns
    /// how many. Walks at most `*ticks_left` slots (each slot passed is taken off it), so work
    /// stays bounded after a clock jump. An item taken is no longer filed: the caller frees it or
    /// files it again (at a time later than now, so never in a slot already passed). Lets the
    /// caller work on a batch: prefetch what every item needs, then handle each one.
    pub fn take_due(&mut self, now_ms: u64, ticks_left: &mut usize, out: &mut [u32]) -> usize {
        if !self.due(now_ms) {
            return 0;
        }
        let now_tick = now_ms / self.tick_ms;
        let mut n = 0;
        while self.cur <= now_tick && *ticks_left > 0 {
            let slot = (self.cur & self.mask) as usize;
            loop {
                let item = self.heads[slot];
                if item == NIL {
                    break;
                }
                if n == out.len() {
                    return n;
                }
                self.cancel(item);
                out[n] = item;
                n += 1;
            }
            self.cur += 1;
            *ticks_left -= 1;
        }
        n
    }

    /// Process due slots up to `now_ms`: every item whose slot comes up is taken out and passed
    /// to `f`, which returns `Some(expiry)` to file it again (not due yet) or `None` (freed).
    /// Examines at most `max_items` items and `max_ticks` slots. Returns the items freed.
    pub fn expire(
        &mut self,
        now_ms: u64,
        max_items: usize,
        max_ticks: usize,
        mut f: impl FnMut(u32) -> Option<u64>,
    ) -> usize {
        const BATCH: usize = 32;
        let mut buf = [NIL; BATCH];
        let (mut left, mut ticks, mut freed) = (max_items, max_ticks, 0);
        while left > 0 {
            let n = self.take_due(now_ms, &mut ticks, &mut buf[..left.min(BATCH)]);
            if n == 0 {
                break;
            }
            left -= n;
            for &item in &buf[..n] {
                match f(item) {
                    // Later than now: files under a tick > now_tick >= cur, never a slot passed.
                    Some(exp) => self.schedule(item, exp.max(now_ms + 1)),
                    None => freed += 1,
                }
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock past 2^32 ticks (a TSC that started high): filing, moving earlier and expiring
    /// work across the wrap of the stored tick.
    #[test]
    fn a_clock_past_u32_ticks() {
        for start in [
            u32::MAX as u64 - 5,
            (u32::MAX as u64) << 1,
            u32::MAX as u64 + 1,
        ] {
            let now = start * 100;
            let mut w = TimerWheel::new(4, 64, 100);
            w.insert(0, now + 1000, now);
            w.insert(1, now + 300, now);
            // Moved earlier: found at its new time, not the old one.
            w.advance_to(0, now + 500);
            let mut freed = Vec::new();
            w.expire(now + 499, 10, 64, |i| {
                freed.push(i);
                None
            });
            assert_eq!(freed, vec![1], "start {start}");
            w.expire(now + 500, 10, 64, |i| {
                freed.push(i);
                None
            });
            assert_eq!(freed, vec![1, 0], "start {start}");
            assert!(w.is_empty());
        }
    }

    #[test]
    fn first_insert_moves_an_empty_wheels_clock() {
        // Clock far from 0 (the dataplane's ms clock is the TSC's), items inserted before any
        // expire: each must come up once, at its expiry, not be re-filed on every pass.
        let now = 16_744_341u64;
        let mut w = TimerWheel::new(1000, 64, 100);
        for i in 0..1000u32 {
            w.insert(i, now + 2_000, now);
        }
        let mut seen = 0;
        let mut t = now;
        while t <= now + 2_000 {
            w.expire(t, usize::MAX, usize::MAX, |_| {
                seen += 1;
                Some(now + 900_000)
            });
            t += 10;
        }
        // Not due before 2 s; at 2 s every item came up exactly once and was filed again.
        assert_eq!(seen, 0);
        w.expire(now + 2_100, usize::MAX, usize::MAX, |_| {
            seen += 1;
            Some(now + 900_000)
        });
        assert_eq!(seen, 1000);
        let mut again = 0;
        // Within the wheel's horizon (64 ticks of 100 ms) of the re-filing.
        for k in 1..60 {
            w.expire(now + 2_100 + k * 100, usize::MAX, usize::MAX, |_| {
                again += 1;
                None
            });
        }
        assert_eq!(
            again, 0,
            "re-filed items came up again long before their expiry"
        );
        assert_eq!(w.len(), 1000);
    }

    /// Random schedules, moves, cancels and partial takes against a model (item → filed tick):
    /// every item comes up exactly once, in its slot's turn, also with every item filed.
    #[test]
    fn matches_a_model() {
        let (items, slots, tick) = (700u32, 32usize, 10u64);
        let mut w = TimerWheel::new(items as usize, slots, tick);
        let mut filed: Vec<Option<u64>> = vec![None; items as usize];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % m
        };
        let mut now = 0u64;
        let mut buf = [NIL; 7];
        for round in 0..4000 {
            for _ in 0..20 {
                let item = next(items as u64) as u32;
                match next(4) {
                    0 => {
                        w.cancel(item);
                        filed[item as usize] = None;
                    }
                    _ => {
                        let exp = now + 1 + next(400);
                        w.schedule(item, exp);
                        let cur = w.cur;
                        filed[item as usize] =
                            Some(exp.div_ceil(tick).clamp(cur, cur + slots as u64 - 1));
                    }
                }
            }
            if round % 500 == 0 {
                // Every item filed at once: the pool must hold.
                for item in 0..items {
                    let exp = now + 1 + next(300);
                    w.schedule(item, exp);
                    let cur = w.cur;
                    filed[item as usize] =
                        Some(exp.div_ceil(tick).clamp(cur, cur + slots as u64 - 1));
                }
            }
            assert_eq!(w.len(), filed.iter().flatten().count());
            now += next(25);
            let mut ticks = usize::MAX;
            loop {
                let n = w.take_due(now, &mut ticks, &mut buf);
                if n == 0 {
                    break;
                }
                for &item in &buf[..n] {
                    let t = filed[item as usize]
                        .take()
                        .expect("taken twice or never filed");
                    assert!(t <= now / tick, "item {item} of tick {t} taken at {now}");
                }
            }
            for (item, t) in filed.iter().enumerate() {
                if let Some(t) = t {
                    assert!(*t > now / tick, "item {item} of tick {t} left at {now}");
                }
            }
        }
    }

    #[test]
    fn expires_in_order_lazily_and_bounded() {
        let mut w = TimerWheel::new(100, 16, 10);
        let mut exp = [0u64; 100];
        for (i, e) in exp.iter_mut().enumerate() {
            *e = 1000 + i as u64 * 3;
            w.schedule(i as u32, *e);
        }
        assert_eq!(w.len(), 100);
        // Push item 0 later lazily (no reschedule), item 99 earlier.
        exp[0] = 5000;
        exp[99] = 50;
        w.advance_to(99, 50);
        let mut freed = Vec::new();
        let mut now = 0;
        while now <= 6000 {
            let n = w.expire(now, 7, 1000, |i| {
                if exp[i as usize] <= now {
                    freed.push((i, now));
                    None
                } else {
                    Some(exp[i as usize])
                }
            });
            assert!(n <= 7);
            now += 5;
        }
        assert!(w.is_empty());
        assert_eq!(freed.len(), 100);
        for &(i, at) in &freed {
            assert!(exp[i as usize] <= at, "{i} freed at {at}");
        }
        assert_eq!(freed[0].0, 99);
        assert_eq!(freed.last().unwrap().0, 0);
        w.schedule(3, 10);
        w.cancel(3);
        assert!(w.is_empty());
    }
}
