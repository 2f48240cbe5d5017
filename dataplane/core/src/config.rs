//! Plain configuration types of the L2/L3 stack (the daemon fills them in from its TOML).

use crate::addr::{MacAddr, Prefix};
use crate::io::PortIdx;
use std::net::IpAddr;

/// Configuration of one worker's [`crate::stack::Stack`]. Every worker gets the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackConfig {
    /// Dataplane ports, indexed by [`PortIdx`].
    pub ports: Vec<PortConf>,
    /// Static routes (connected routes are derived from the port addresses).
    pub routes: Vec<RouteConf>,
    /// Forward transit IPv4 packets (off: they are dropped as `forwarding_disabled`).
    pub ip_forward: bool,
    /// Neighbour (ARP) table settings.
    pub neigh: NeighConf,
    /// ICMP errors per second per core (token bucket, burst = one second's worth); 0 disables them.
    pub icmp_ratelimit_per_s: u32,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            ports: Vec::new(),
            routes: Vec::new(),
            ip_forward: false,
            neigh: NeighConf::default(),
            icmp_ratelimit_per_s: 1000,
        }
    }
}

/// One dataplane port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConf {
    /// The port's MAC address.
    pub mac: MacAddr,
    /// IP MTU in bytes (largest IPv4 total length sent on the port), e.g. 1500.
    pub mtu: u16,
    /// Interface addresses with their prefix length, host bits kept (e.g. 192.0.2.1/24). Each is
    /// owned by rvs and gives a connected route.
    pub addrs: Vec<Prefix>,
}

/// A static route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConf {
    /// Destination prefix (host bits are ignored).
    pub prefix: Prefix,
    /// Gateway; `None` for a route to directly reachable hosts. A gateway must be on a connected
    /// subnet of `port`.
    pub via: Option<IpAddr>,
    /// Egress port.
    pub port: PortIdx,
}

/// Neighbour table settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighConf {
    /// Maximum number of entries (all ports together).
    pub capacity: u32,
    /// Packets held per unresolved entry.
    pub hold_packets: u16,
    /// An entry is Reachable this long after its last confirmation, Stale after.
    pub reachable_ms: u64,
    /// An entry not confirmed for this long is removed.
    pub gc_stale_ms: u64,
    /// Interval between ARP requests for an unresolved (or in-use stale) entry.
    pub retrans_ms: u64,
    /// ARP requests sent for an unresolved entry before it fails.
    pub max_probes: u8,
}

impl Default for NeighConf {
    fn default() -> Self {
        NeighConf {
            capacity: 1024,
            hold_packets: 8,
            reachable_ms: 30_000,
            gc_stale_ms: 600_000,
            retrans_ms: 1_000,
            max_probes: 3,
        }
    }
}
