//! Persistent services (ipvsadm `-p [timeout] -M netmask`): persistence templates.
//!
//! A persistent service sends every new connection of a client network (`CIP & netmask`, /32 by
//! default) to the same real server while the network's **template** lives, as IPVS's
//! `ip_vs_sched_persist`. A template maps (proto, VIP, service vport, `CIP & netmask`) to a dest;
//! the service vport is 0 for a port-0 service (one template for every port of the VIP, IPVS's
//! "persistent port-zero service") and the real vport for per-port persistence.
//!
//! # Core ownership
//!
//! Templates are per worker (share-nothing), so every connection of one client network to one
//! persistent service must be scheduled on the same worker, whichever queue RSS puts it on: the
//! **owner** [`persist_owner`]`(CIP & netmask, proto, VIP, vport)`, a fixed unseeded hash modulo
//! `n_workers` (like [`crate::fwd::nat_owner`], every worker computes the same). A client packet to
//! a persistent service that misses the local session table on a non-owner worker is redirected,
//! untouched, to the owner before any scheduling; the owner holds all of the service's sessions of
//! that network. With one worker nothing is redirected. A persistent service may not have a NAT
//! dest ([`crate::service::ServiceError::PersistentNat`]): NAT replies are steered by
//! `nat_owner(CIP, cport)`, which differs from the persistence owner.
//!
//! # Templates
//!
//! The owner keeps templates in a fixed-capacity table per worker ([`Templates`], sized at start
//! to a quarter of the session table, at least 1) with a timer wheel; nothing on the packet path
//! allocates. A new connection:
//!
//! - finds a template whose dest is still in the service, not down, with weight > 0 — or
//!   quiesced by an operator (weight 0) while `expire_quiescent_template` is off, IPVS's
//!   default, so that draining a persistent service keeps its clients on their server: it goes
//!   to that dest (`persist_hits`), and the template's expiry is restarted (now + timeout), as
//!   IPVS resets the template's timer when a connection uses it;
//! - finds none, or one whose dest was removed, is down by its health check (rvs marks it
//!   `down`; IPVS: no longer available), or quiesced while `expire_quiescent_template` is on:
//!   the scheduler picks a dest and the template is created or re-bound to it (`persist_new`);
//! - finds the table full: the connection is scheduled without persistence (`persist_table_full`)
//!   rather than dropped (IPVS drops it).
//!
//! Each session of a template holds a reference to it; a template is freed only once it has
//! expired **and** has no session (IPVS: a template is not freed while it controls connections),
//! so a client that keeps a connection open past the timeout still gets the same real server for
//! its next one. Sessions never depend on their template: template expiry never cuts a live
//! connection. Templates survive service rebuilds (they are keyed by address, not by index).
//!
//! # Port-0 services
//!
//! A service with vport 0 (persistence required) matches every port of its VIP that has no
//! service of its own. A session keeps the client's destination port as its vport; a dest with
//! `rport` 0 receives the connection on that same port, a dest with a fixed `rport` on its port.

use crate::fixedmap::{mix, FixedKey, FixedMap};
use crate::sched::DestStats;
use crate::timer::TimerWheel;
use std::net::Ipv4Addr;

/// No template.
pub const NO_TMPL: u32 = u32::MAX;

/// The worker owning the connections of client network `cnet` (= CIP & netmask) to the persistent
/// service (proto, VIP, vport) among `n_workers` (0 when `n_workers <= 1`). Unseeded: every worker
/// (and the control plane) computes the same owner.
#[inline]
pub fn persist_owner(cnet: Ipv4Addr, proto: u8, vip: Ipv4Addr, vport: u16, n_workers: u16) -> u16 {
    if n_workers <= 1 {
        return 0;
    }
    let svc = mix((vport as u64) << 8 | proto as u64);
    let k = (u32::from(cnet) as u64) << 32 | u32::from(vip) as u64;
    (mix(k ^ svc) % n_workers as u64) as u16
}

/// Key of a template: the service (proto, VIP, service vport) and the client network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmplKey {
    /// IP protocol number.
    pub proto: u8,
    /// VIP.
    pub vip: Ipv4Addr,
    /// Service vport (0 for a port-0 service).
    pub vport: u16,
    /// Client network (CIP & netmask).
    pub cnet: Ipv4Addr,
    /// The table's hash seed (the same in every key of a table).
    seed: u64,
}

impl FixedKey for TmplKey {
    #[inline]
    fn hash64(&self) -> u64 {
        let a = (u32::from(self.cnet) as u64) << 32 | u32::from(self.vip) as u64;
        mix(a ^ mix(self.seed ^ ((self.vport as u64) << 8 | self.proto as u64)))
    }
}

/// One template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// Key.
    pub key: TmplKey,
    /// Dest id.
    pub dest: u32,
    /// Dest address (a dest re-added under the same id with another address is not the same).
    pub rip: Ipv4Addr,
    /// Dest's configured port (0 = the client's destination port).
    pub rport: u16,
    /// Expiry (ms), restarted by each new connection.
    pub expires_ms: u64,
    /// The persistence timeout (ms) it was last refreshed with.
    pub timeout_ms: u64,
    /// Sessions using it.
    pub refs: u32,
}

/// A template as the control plane and tests see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TemplateInfo {
    /// IP protocol number.
    pub proto: u8,
    /// VIP.
    pub vip: Ipv4Addr,
    /// Service vport (0: port-0 service).
    pub vport: u16,
    /// Client network.
    pub cnet: Ipv4Addr,
    /// Dest id.
    pub dest: u32,
    /// Dest address.
    pub rip: Ipv4Addr,
    /// Dest port (0: the client's destination port).
    pub rport: u16,
    /// Expiry (ms).
    pub expires_ms: u64,
    /// Sessions using it.
    pub refs: u32,
}

/// The template table of one worker: fixed capacity, a timer wheel for expiry.
pub struct Templates {
    map: FixedMap<TmplKey, u32>,
    slab: Vec<Template>,
    used: Vec<bool>,
    free: Vec<u32>,
    wheel: TimerWheel,
    seed: u64,
}

/// Templates examined at most per [`Templates::expire`] call.
pub const TMPL_EXPIRE_BUDGET: usize = 256;

/// How long a template still held by connections at its expiry is kept before it is looked at
/// again (IPVS `expire_later`: 60 s).
pub const TMPL_HELD_REARM_MS: u64 = 60_000;

impl Templates {
    /// A table for `capacity` templates (at least 1), with wheel `slots` of `tick_ms`.
    pub fn new(capacity: usize, slots: usize, tick_ms: u64) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let cap = capacity.max(1);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(cap as u64);
        let empty = Template {
            key: TmplKey {
                proto: 0,
                vip: Ipv4Addr::UNSPECIFIED,
                vport: 0,
                cnet: Ipv4Addr::UNSPECIFIED,
                seed: 0,
            },
            dest: 0,
            rip: Ipv4Addr::UNSPECIFIED,
            rport: 0,
            expires_ms: 0,
            timeout_ms: 0,
            refs: 0,
        };
        Templates {
            map: FixedMap::with_capacity(cap),
            slab: vec![empty; cap],
            used: vec![false; cap],
            free: (0..cap as u32).rev().collect(),
            wheel: TimerWheel::new(cap, slots, tick_ms),
            seed: h.finish(),
        }
    }

    /// Templates in use.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there is no template.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.slab.len()
    }

    /// The key of (proto, VIP, service vport, client network) in this table.
    #[inline]
    pub fn key(&self, proto: u8, vip: Ipv4Addr, vport: u16, cnet: Ipv4Addr) -> TmplKey {
        TmplKey {
            proto,
            vip,
            vport,
            cnet,
            seed: self.seed,
        }
    }

    /// The template of `key`.
    #[inline]
    pub fn lookup(&self, key: &TmplKey) -> Option<u32> {
        if self.map.is_empty() {
            return None;
        }
        self.map.get(key).copied()
    }

    /// Template `idx`.
    #[inline]
    pub fn get(&self, idx: u32) -> &Template {
        &self.slab[idx as usize]
    }

    /// Point template `idx` at a dest and restart its expiry (moving the dests' `persist` gauges).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &mut self,
        idx: u32,
        dest: u32,
        rip: Ipv4Addr,
        rport: u16,
        now_ms: u64,
        timeout_ms: u64,
        stats: &[DestStats],
    ) {
        let t = &mut self.slab[idx as usize];
        if t.dest != dest {
            if let Some(s) = stats.get(t.dest as usize) {
                s.persist.dec();
            }
            if let Some(s) = stats.get(dest as usize) {
                s.persist.inc();
            }
            t.dest = dest;
        }
        t.rip = rip;
        t.rport = rport;
        self.refresh(idx, now_ms, timeout_ms);
    }

    /// Restart template `idx`'s expiry at `now_ms + timeout_ms`.
    #[inline]
    pub fn refresh(&mut self, idx: u32, now_ms: u64, timeout_ms: u64) {
        let t = &mut self.slab[idx as usize];
        t.timeout_ms = timeout_ms;
        t.expires_ms = now_ms.saturating_add(timeout_ms);
        self.wheel.advance_to(idx, t.expires_ms);
    }

    /// A new template `key` → dest, expiring at `now_ms + timeout_ms`. None when the table is full.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        key: TmplKey,
        dest: u32,
        rip: Ipv4Addr,
        rport: u16,
        now_ms: u64,
        timeout_ms: u64,
        stats: &[DestStats],
    ) -> Option<u32> {
        let idx = self.free.pop()?;
        if self.map.insert(key, idx).is_err() {
            self.free.push(idx);
            return None;
        }
        let expires_ms = now_ms.saturating_add(timeout_ms);
        self.slab[idx as usize] = Template {
            key,
            dest,
            rip,
            rport,
            expires_ms,
            timeout_ms,
            refs: 0,
        };
        self.used[idx as usize] = true;
        if let Some(s) = stats.get(dest as usize) {
            s.persist.inc();
        }
        self.wheel.insert(idx, expires_ms, now_ms);
        Some(idx)
    }

    /// A session took a reference on template `idx`.
    #[inline]
    pub fn hold(&mut self, idx: u32) {
        if let Some(t) = self.slab.get_mut(idx as usize) {
            t.refs += 1;
        }
    }

    /// A session using template `idx` ended.
    #[inline]
    pub fn release(&mut self, idx: u32) {
        if let Some(t) = self.slab.get_mut(idx as usize) {
            t.refs = t.refs.saturating_sub(1);
        }
    }

    /// Free the templates that expired and have no session (bounded work). A template past its
    /// expiry that still has sessions is checked again [`TMPL_HELD_REARM_MS`] later.
    pub fn expire(&mut self, now_ms: u64, max_ticks: usize, stats: &[DestStats]) {
        let (slab, used, map, free) = (
            &mut self.slab,
            &mut self.used,
            &mut self.map,
            &mut self.free,
        );
        self.wheel
            .expire(now_ms, TMPL_EXPIRE_BUDGET, max_ticks, |idx| {
                if !used[idx as usize] {
                    return None;
                }
                let t = &mut slab[idx as usize];
                if t.expires_ms > now_ms {
                    return Some(t.expires_ms);
                }
                if t.refs > 0 {
                    // Re-armed for 60 s (at most its timeout), as IPVS re-arms a template its
                    // connections still hold (`expire_later`; `-L -c` counts down again): it
                    // ends at most that long after its last connection. A new connection
                    // through it restarts its full timeout.
                    let later = t.timeout_ms.clamp(1, TMPL_HELD_REARM_MS);
                    t.expires_ms = now_ms.saturating_add(later);
                    return Some(t.expires_ms);
                }
                map.remove(&t.key);
                used[idx as usize] = false;
                if let Some(s) = stats.get(t.dest as usize) {
                    s.persist.dec();
                }
                free.push(idx);
                None
            });
    }

    /// Every template (control path: allocates).
    pub fn infos(&self) -> Vec<TemplateInfo> {
        (0..self.slab.len())
            .filter_map(|i| self.info_at(i))
            .collect()
    }

    /// The template in slot `i`, if that slot is in use (control path).
    pub fn info_at(&self, i: usize) -> Option<TemplateInfo> {
        if !*self.used.get(i)? {
            return None;
        }
        let t = self.slab.get(i)?;
        Some(TemplateInfo {
            proto: t.key.proto,
            vip: t.key.vip,
            vport: t.key.vport,
            cnet: t.key.cnet,
            dest: t.dest,
            rip: t.rip,
            rport: t.rport,
            expires_ms: t.expires_ms,
            refs: t.refs,
        })
    }
}
