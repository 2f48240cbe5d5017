//! Per-core counters.
//!
//! Each worker owns one [`CoreCounters`] and is its only writer: an increment is a relaxed load and a
//! relaxed store (a plain `add` on x86, no read-modify-write atomic, no lock). Any other thread may
//! read them at any time; readers sum the per-core blocks ([`CounterSnapshot::add`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One single-writer counter.
#[derive(Default, Debug)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning worker may call this (single writer).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    /// Subtract `n` (gauges). Only the owning worker may call this (single writer).
    #[inline(always)]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }
    /// Subtract one. Only the owning worker may call this (single writer).
    #[inline(always)]
    pub fn dec(&self) {
        self.sub(1)
    }
    /// Add one. Only the owning worker may call this (single writer).
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }
    /// Read from any thread.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a packet was dropped. Every drop in the dataplane is counted under exactly one reason.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $(#[doc = $doc] $variant,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// Stable snake_case name (metrics label, stats output).
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }
        }
    };
}

drop_reasons! {
    EthTruncated => "eth_truncated", "Frame shorter than an Ethernet header.";
    NotForUs => "not_for_us", "Destination MAC is neither the port's nor broadcast.";
    UnknownEthertype => "unknown_ethertype", "EtherType rvs does not handle (VLAN, LLDP, ...).";
    ArpMalformed => "arp_malformed", "ARP packet too short or not Ethernet/IPv4.";
    ArpNotForUs => "arp_not_for_us", "ARP request for an address rvs does not own.";
    Ipv4Malformed => "ipv4_malformed", "IPv4 header invalid (version, IHL, total length).";
    Ipv4BadChecksum => "ipv4_bad_checksum", "IPv4 header checksum wrong.";
    Ipv6Unsupported => "ipv6_unsupported", "IPv6 is not forwarded yet.";
    NoRoute => "no_route", "No route to the destination.";
    TtlExceeded => "ttl_exceeded", "TTL would reach zero when forwarding.";
    ForwardingDisabled => "forwarding_disabled", "Transit packet while ip_forward is off.";
    MtuExceeded => "mtu_exceeded", "Packet larger than the egress MTU (DF set: frag-needed sent; DF clear: rvs does not fragment).";
    IcmpMalformed => "icmp_malformed", "ICMP to an owned address too short or with a bad checksum.";
    IcmpUnhandled => "icmp_unhandled", "ICMP to an owned address that is not an echo request.";
    LocalL4 => "local_l4", "TCP/UDP/other to an owned address with no service (exception path comes later).";
    NeighHoldFull => "neigh_hold_full", "Next hop unresolved and its hold queue is full.";
    NeighTableFull => "neigh_table_full", "Neighbour table full: next hop cannot be resolved.";
    NeighFailed => "neigh_failed", "Next hop did not answer ARP: held packets dropped.";
    AllocFailed => "alloc_failed", "No mbuf to build a generated packet.";
    TxFull => "tx_full", "TX queue full.";
    Martian => "martian", "Source address is 0.0.0.0/8, loopback, multicast or broadcast.";
    DstBroadcast => "dst_broadcast", "IPv4 destination is the limited broadcast or a connected subnet's directed broadcast.";
    DstMulticast => "dst_multicast", "IPv4 destination is multicast (not handled).";
    Ipv4Fragment => "ipv4_fragment", "Fragment addressed to rvs itself (no reassembly).";
    RedirectFull => "redirect_full", "Ring toward the session's owner worker full.";
    NoSession => "no_session", "TCP/UDP to a LIP lport, or a TCP non-SYN to a service, with no session (IPVS behaviour).";
    SessionTableFull => "session_table_full", "New session refused: this core's session table is full.";
    LportExhausted => "lport_exhausted", "New session refused: no LIP has a free lport past its reuse delay.";
    NoDest => "no_dest", "New session refused: the service has no dest with weight > 0.";
    Ipv4FragmentVip => "ipv4_fragment_vip", "IPv4 fragment to a VIP (rvs does not reassemble).";
    L4Malformed => "l4_malformed", "TCP/UDP header to a VIP or LIP truncated or with a bad data offset.";
    TunNoRoom => "tun_no_room", "TUN: the buffer cannot hold the 20-byte outer IPv4 header.";
    NatFragment => "nat_fragment", "IPv4 fragment from a NAT real server (rvs does not reassemble, so cannot translate it; forwarded, it would show the RIP).";
    RedirectLoop => "redirect_loop", "Packet another worker handed over that this one would hand on again (workers disagree on its owner for the moment a new configuration takes to reach them all).";
}

/// Number of drop reasons.
pub const N_DROP_REASONS: usize = DropReason::ALL.len();

/// Named event counters (not drops).
macro_rules! events {
    ($($field:ident,)*) => {
        /// Counters of one core. Cache-line aligned so cores never share a line.
        #[derive(Debug)]
        #[repr(align(64))]
        pub struct CoreCounters {
            $(#[doc = concat!("Event counter `", stringify!($field), "`.")] pub $field: Counter,)*
            drops: [Counter; N_DROP_REASONS],
        }

        // By hand: arrays of more than 32 elements have no derived `Default`.
        impl Default for CoreCounters {
            fn default() -> Self {
                CoreCounters {
                    $($field: Counter::default(),)*
                    drops: std::array::from_fn(|_| Counter::default()),
                }
            }
        }

        /// A plain copy of counters, summed over cores for display.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct CounterSnapshot {
            $(#[doc = concat!("Event counter `", stringify!($field), "`.")] pub $field: u64,)*
            /// Drops per reason, indexed by `DropReason as usize`.
            pub drops: [u64; N_DROP_REASONS],
        }

        impl Default for CounterSnapshot {
            fn default() -> Self {
                CounterSnapshot {
                    $($field: 0,)*
                    drops: [0; N_DROP_REASONS],
                }
            }
        }

        impl CoreCounters {
            /// Copy every counter (readable from any thread).
            pub fn snapshot(&self) -> CounterSnapshot {
                let mut drops = [0u64; N_DROP_REASONS];
                for (d, c) in drops.iter_mut().zip(self.drops.iter()) {
                    *d = c.get();
                }
                CounterSnapshot { $($field: self.$field.get(),)* drops }
            }
        }

        impl CounterSnapshot {
            /// Add another core's counters into this one.
            pub fn add(&mut self, o: &CounterSnapshot) {
                $(self.$field += o.$field;)*
                for (d, s) in self.drops.iter_mut().zip(o.drops.iter()) {
                    *d += s;
                }
            }
            /// (name, value) of every event counter.
            pub fn events(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field),)*]
            }
        }
    };
}

events! {
    rx_packets,
    tx_packets,
    forwarded,
    arp_requests_rx,
    arp_replies_rx,
    arp_replies_sent,
    arp_requests_sent,
    garp_sent,
    icmp_echo_replies,
    icmp_errors_sent,
    neigh_learned,
    neigh_held,
    neigh_released,
    neigh_evicted,
    neigh_sync_lost,
    redirected_out,
    redirected_in,
    to_kernel,
    from_kernel,
    polls,
    busy_polls,
    sessions_created,
    sessions_expired,
    sessions_rescheduled,
    fast_path,
    fullnat_in,
    fullnat_out,
    toa_inserted,
    toa_skipped,
    mss_clamped,
    icmp_translated,
    nat_in,
    nat_out,
    dr_out,
    tun_out,
    persist_hits,
    persist_new,
    persist_table_full,
}

impl CoreCounters {
    /// Count one dropped packet.
    #[inline(always)]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].inc();
    }
    /// Drops counted under `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }
}

impl CounterSnapshot {
    /// Drops counted under `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }
    /// Drops over all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snapshots_sum() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), N_DROP_REASONS);
        let a = CoreCounters::default();
        let b = CoreCounters::default();
        a.rx_packets.add(3);
        b.rx_packets.add(4);
        a.count_drop(DropReason::NoRoute);
        b.count_drop(DropReason::NoRoute);
        let mut s = a.snapshot();
        s.add(&b.snapshot());
        assert_eq!(s.rx_packets, 7);
        assert_eq!(s.dropped(DropReason::NoRoute), 2);
        assert_eq!(s.total_drops(), 2);
    }
}
