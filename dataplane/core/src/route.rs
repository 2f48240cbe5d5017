//! Routing table: longest-prefix match over connected and static routes, IPv4 and IPv6.
//!
//! Structure: per address family, one sorted array of (network, route index) per prefix length,
//! plus the list of lengths in use, longest first. A lookup masks the address once per length in
//! use and binary-searches that length's array; the first hit is the longest match. Built once in
//! [`RouteTable::build`]; lookups never allocate.

use crate::addr::{mask_v4, mask_v6, Prefix};
use crate::config::{PortConf, RouteConf};
use crate::io::PortIdx;
use std::fmt;
use std::net::IpAddr;

/// A route after resolution of its source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix, normalized.
    pub prefix: Prefix,
    /// Egress port.
    pub port: PortIdx,
    /// Gateway (`None`: the destination itself is the next hop).
    pub via: Option<IpAddr>,
    /// True for a connected route (derived from a port address).
    pub connected: bool,
    /// Address of `port` used as ARP sender address towards the next hop. For a connected route,
    /// the port address that made it; for a gateway route, the port address whose subnet holds
    /// the gateway.
    pub src: IpAddr,
}

impl Route {
    /// The next hop towards `dst`.
    #[inline]
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.via.unwrap_or(dst)
    }
}

/// Invalid routing configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// A route names a port that does not exist.
    BadPort(RouteConf),
    /// A gateway is not on a connected subnet of the route's port (or of another family).
    GatewayNotConnected(RouteConf),
    /// A route without gateway whose prefix is not covered by a connected subnet of its port.
    NoGatewayNotConnected(RouteConf),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadPort(r) => {
                write!(f, "route {}: port {} does not exist", r.prefix, r.port)
            }
            RouteError::GatewayNotConnected(r) => {
                write!(
                    f,
                    "route {}: gateway {:?} is not on a connected subnet of port {}",
                    r.prefix, r.via, r.port
                )
            }
            RouteError::NoGatewayNotConnected(r) => write!(
                f,
                "route {}: no gateway and the prefix is not inside a connected subnet of port {}",
                r.prefix, r.port
            ),
        }
    }
}
impl std::error::Error for RouteError {}

/// Per-family LPM tables.
struct Lpm<K> {
    /// Indexed by prefix length: sorted (network, route index).
    by_len: Vec<Vec<(K, u32)>>,
    /// Lengths with at least one route, longest first.
    lens: Vec<u8>,
}

impl<K: Ord + Copy> Lpm<K> {
    fn new(width: usize) -> Self {
        Lpm {
            by_len: (0..=width).map(|_| Vec::new()).collect(),
            lens: Vec::new(),
        }
    }
    /// Add unless the same prefix is already there (first one wins).
    fn add(&mut self, len: u8, net: K, idx: u32) -> bool {
        let t = &mut self.by_len[len as usize];
        match t.binary_search_by(|e| e.0.cmp(&net)) {
            Ok(_) => false,
            Err(pos) => {
                t.insert(pos, (net, idx));
                if !self.lens.contains(&len) {
                    self.lens.push(len);
                    self.lens.sort_unstable_by(|a, b| b.cmp(a));
                }
                true
            }
        }
    }
    #[inline]
    fn lookup(&self, addr: K, mask: impl Fn(K, u8) -> K) -> Option<u32> {
        for &len in &self.lens {
            let t = &self.by_len[len as usize];
            let net = mask(addr, len);
            if let Ok(i) = t.binary_search_by(|e| e.0.cmp(&net)) {
                return Some(t[i].1);
            }
        }
        None
    }
}

/// The routing table of one worker.
pub struct RouteTable {
    routes: Vec<Route>,
    v4: Lpm<u32>,
    v6: Lpm<u128>,
}

impl RouteTable {
    /// Connected routes from every port address (first port wins on duplicates), then the static
    /// routes (a static route with the same prefix as a connected one is ignored, as is a
    /// duplicate static route).
    pub fn build(ports: &[PortConf], routes: &[RouteConf]) -> Result<RouteTable, RouteError> {
        let mut t = RouteTable {
            routes: Vec::new(),
            v4: Lpm::new(32),
            v6: Lpm::new(128),
        };
        for (pi, p) in ports.iter().enumerate() {
            for a in &p.addrs {
                t.add(Route {
                    prefix: a.normalized(),
                    port: pi as PortIdx,
                    via: None,
                    connected: true,
                    src: a.addr,
                });
            }
        }
        for r in routes {
            let Some(port) = ports.get(r.port as usize) else {
                return Err(RouteError::BadPort(r.clone()));
            };
            let src = match r.via {
                Some(gw) => {
                    port.addrs
                        .iter()
                        .find(|a| a.contains(gw) && gw.is_ipv4() == r.prefix.addr.is_ipv4())
                        .ok_or_else(|| RouteError::GatewayNotConnected(r.clone()))?
                        .addr
                }
                None => {
                    port.addrs
                        .iter()
                        .find(|a| a.len <= r.prefix.len && a.contains(r.prefix.addr))
                        .ok_or_else(|| RouteError::NoGatewayNotConnected(r.clone()))?
                        .addr
                }
            };
            t.add(Route {
                prefix: r.prefix.normalized(),
                port: r.port,
                via: r.via,
                connected: false,
                src,
            });
        }
        Ok(t)
    }

    fn add(&mut self, r: Route) {
        let idx = self.routes.len() as u32;
        let added = match r.prefix.addr {
            IpAddr::V4(a) => self.v4.add(r.prefix.len, u32::from(a), idx),
            IpAddr::V6(a) => self.v6.add(r.prefix.len, u128::from(a), idx),
        };
        if added {
            self.routes.push(r);
        }
    }

    /// Longest-prefix match.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<&Route> {
        self.lookup_index(dst).map(|(_, r)| r)
    }

    /// Longest-prefix match, with the route's index in [`RouteTable::routes`].
    #[inline]
    pub fn lookup_index(&self, dst: IpAddr) -> Option<(u32, &Route)> {
        let idx = match dst {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a), |k, l| k & mask_v4(l)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a), |k, l| k & mask_v6(l)),
        }?;
        Some((idx, &self.routes[idx as usize]))
    }

    /// Every route, connected first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::MacAddr;

    fn ports() -> Vec<PortConf> {
        vec![
            PortConf {
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                mtu: 1500,
                addrs: vec![
                    "192.0.2.1/24".parse().unwrap(),
                    "2001:db8:1::1/64".parse().unwrap(),
                ],
            },
            PortConf {
                mac: MacAddr([2, 0, 0, 0, 0, 2]),
                mtu: 1500,
                addrs: vec![
                    "198.51.100.1/24".parse().unwrap(),
                    "10.9.0.1/16".parse().unwrap(),
                ],
            },
        ]
    }

    fn rc(p: &str, via: Option<&str>, port: PortIdx) -> RouteConf {
        RouteConf {
            prefix: p.parse().unwrap(),
            via: via.map(|v| v.parse().unwrap()),
            port,
        }
    }

    fn look(t: &RouteTable, ip: &str) -> Option<Route> {
        t.lookup(ip.parse().unwrap()).copied()
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::build(
            &ports(),
            &[
                rc("0.0.0.0/0", Some("198.51.100.254"), 1),
                rc("203.0.113.0/24", Some("192.0.2.254"), 0),
                rc("203.0.113.128/25", Some("198.51.100.7"), 1),
                rc("203.0.113.130/32", Some("192.0.2.9"), 0),
                rc("10.9.5.0/24", None, 1),
                rc("192.0.2.0/24", Some("198.51.100.9"), 1), // same as connected: ignored
                rc("2001:db8::/32", Some("2001:db8:1::fe"), 0),
            ],
        )
        .unwrap();
        let r = look(&t, "192.0.2.77").unwrap();
        assert!(
            r.connected
                && r.port == 0
                && r.via.is_none()
                && r.src == "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            r.next_hop("192.0.2.77".parse().unwrap()),
            "192.0.2.77".parse::<IpAddr>().unwrap()
        );
        let r = look(&t, "8.8.8.8").unwrap();
        assert_eq!((r.port, r.prefix.len, r.connected), (1, 0, false));
        assert_eq!(r.src, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            look(&t, "203.0.113.5").unwrap().prefix.to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            look(&t, "203.0.113.129").unwrap().prefix.to_string(),
            "203.0.113.128/25"
        );
        assert_eq!(
            look(&t, "203.0.113.130").unwrap().prefix.to_string(),
            "203.0.113.130/32"
        );
        assert_eq!(
            look(&t, "203.0.113.131").unwrap().prefix.to_string(),
            "203.0.113.128/25"
        );
        let r = look(&t, "10.9.5.3").unwrap();
        assert_eq!(
            (r.prefix.len, r.connected, r.src),
            (24, false, "10.9.0.1".parse().unwrap())
        );
        assert!(look(&t, "10.9.6.3").unwrap().connected);
        assert_eq!(look(&t, "2001:db8:1::5").unwrap().prefix.len, 64);
        assert_eq!(look(&t, "2001:db8:2::5").unwrap().prefix.len, 32);
        assert!(look(&t, "2001:db9::1").is_none());
        assert_eq!(t.routes().len(), 4 + 6);
    }

    #[test]
    fn no_default_means_no_route() {
        let t = RouteTable::build(&ports(), &[]).unwrap();
        assert!(look(&t, "8.8.8.8").is_none());
        assert!(look(&t, "198.51.100.200").is_some());
    }

    #[test]
    fn invalid_routes_rejected() {
        assert!(matches!(
            RouteTable::build(&ports(), &[rc("0.0.0.0/0", Some("192.0.2.254"), 5)]),
            Err(RouteError::BadPort(_))
        ));
        assert!(matches!(
            RouteTable::build(&ports(), &[rc("0.0.0.0/0", Some("192.0.2.254"), 1)]),
            Err(RouteError::GatewayNotConnected(_))
        ));
        assert!(matches!(
            RouteTable::build(&ports(), &[rc("0.0.0.0/0", None, 1)]),
            Err(RouteError::NoGatewayNotConnected(_))
        ));
    }
}
