//! Address types: [`MacAddr`] and [`Prefix`] (IPv4 or IPv6).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }
    /// True for group addresses (I/G bit set), broadcast included.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

/// Error parsing a [`MacAddr`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseMacError(pub String);

impl fmt::Display for ParseMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid MAC address {:?} (expected six hex octets separated by ':')",
            self.0
        )
    }
}
impl std::error::Error for ParseMacError {}

impl FromStr for MacAddr {
    type Err = ParseMacError;
    /// Parses "02:00:00:00:00:01" (also accepts '-' separators).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split([':', '-']) {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            out[n] = u8::from_str_radix(part, 16).map_err(|_| err())?;
            n += 1;
        }
        if n != 6 {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// An IPv4 or IPv6 address with a prefix length.
///
/// `addr` is kept as given (an interface address such as 192.0.2.1/24 keeps its host bits);
/// [`Prefix::network`] / [`Prefix::normalized`] give the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The address, host bits as given.
    pub addr: IpAddr,
    /// Prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub len: u8,
}

/// Error parsing or building a [`Prefix`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsePrefixError {
    /// No '/' in the string.
    MissingLen(String),
    /// The address part is not an IP address.
    BadAddr(String),
    /// The length is not a number or too large for the family.
    BadLen(String),
}

impl fmt::Display for ParsePrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParsePrefixError::MissingLen(s) => write!(f, "invalid prefix {s:?}: missing '/len'"),
            ParsePrefixError::BadAddr(s) => write!(f, "invalid prefix {s:?}: bad address"),
            ParsePrefixError::BadLen(s) => write!(f, "invalid prefix {s:?}: bad prefix length"),
        }
    }
}
impl std::error::Error for ParsePrefixError {}

/// Maximum prefix length of the family of `ip` (32 or 128).
pub fn max_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// IPv4 netmask of `len` bits as a host-order u32 (`len` clamped to 32).
#[inline]
pub fn mask_v4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32) as u32)
    }
}

/// IPv6 netmask of `len` bits as a host-order u128 (`len` clamped to 128).
#[inline]
pub fn mask_v6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128) as u32)
    }
}

impl Prefix {
    /// A prefix; fails when `len` exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, ParsePrefixError> {
        if len > max_len(addr) {
            return Err(ParsePrefixError::BadLen(format!("{addr}/{len}")));
        }
        Ok(Prefix { addr, len })
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(self.len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(self.len))),
        }
    }

    /// The same prefix with host bits cleared.
    pub fn normalized(&self) -> Prefix {
        Prefix {
            addr: self.network(),
            len: self.len,
        }
    }

    /// True when `ip` is of the same family and inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let m = mask_v4(self.len);
                u32::from(a) & m == u32::from(b) & m
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let m = mask_v6(self.len);
                u128::from(a) & m == u128::from(b) & m
            }
            _ => false,
        }
    }

    /// The IPv4 directed-broadcast address of the prefix (None for IPv6 and for /31, /32).
    pub fn broadcast_v4(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(a) if self.len <= 30 => {
                Some(Ipv4Addr::from(u32::from(a) | !mask_v4(self.len)))
            }
            _ => None,
        }
    }
}

impl FromStr for Prefix {
    type Err = ParsePrefixError;
    /// Parses "192.0.2.1/24" or "2001:db8::/32" (host bits kept).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| ParsePrefixError::MissingLen(s.to_string()))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| ParsePrefixError::BadAddr(s.to_string()))?;
        if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParsePrefixError::BadLen(s.to_string()));
        }
        let len: u8 = l
            .parse()
            .map_err(|_| ParsePrefixError::BadLen(s.to_string()))?;
        if len > max_len(addr) {
            return Err(ParsePrefixError::BadLen(s.to_string()));
        }
        Ok(Prefix { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_roundtrip_and_errors() {
        let m: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0, 0, 0, 1]);
        assert_eq!(m.to_string(), "02:00:00:00:00:01");
        assert_eq!(
            "AA-bb-cc-dd-ee-ff".parse::<MacAddr>().unwrap().to_string(),
            "aa:bb:cc:dd:ee:ff"
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02:00:00:00:00:0g",
            "002:00:00:00:00:01",
            "02::00:00:00:01",
            "02:00:00:00:00:01:",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert!(!m.is_multicast());
    }

    #[test]
    fn prefix_parse_contains_display() {
        let p: Prefix = "192.0.2.1/24".parse().unwrap();
        assert_eq!(p.addr, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.to_string(), "192.0.2.1/24");
        assert_eq!(p.normalized().to_string(), "192.0.2.0/24");
        assert!(p.contains("192.0.2.200".parse().unwrap()));
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(!p.contains("2001:db8::1".parse().unwrap()));
        assert_eq!(p.broadcast_v4(), Some("192.0.2.255".parse().unwrap()));
        let d: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(d.contains("8.8.8.8".parse().unwrap()));
        let h: Prefix = "10.0.0.1/32".parse().unwrap();
        assert!(
            h.contains("10.0.0.1".parse().unwrap()) && !h.contains("10.0.0.2".parse().unwrap())
        );
        assert_eq!(h.broadcast_v4(), None);
        let v6: Prefix = "2001:db8:1::5/32".parse().unwrap();
        assert_eq!(v6.normalized().to_string(), "2001:db8::/32");
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!("::/0"
            .parse::<Prefix>()
            .unwrap()
            .contains("fe80::1".parse().unwrap()));
    }

    #[test]
    fn prefix_errors() {
        assert!(matches!(
            "192.0.2.1".parse::<Prefix>(),
            Err(ParsePrefixError::MissingLen(_))
        ));
        assert!(matches!(
            "192.0.2/24".parse::<Prefix>(),
            Err(ParsePrefixError::BadAddr(_))
        ));
        assert!(matches!(
            "192.0.2.1/33".parse::<Prefix>(),
            Err(ParsePrefixError::BadLen(_))
        ));
        assert!(matches!(
            "192.0.2.1/".parse::<Prefix>(),
            Err(ParsePrefixError::BadLen(_))
        ));
        assert!(matches!(
            "192.0.2.1/-1".parse::<Prefix>(),
            Err(ParsePrefixError::BadLen(_))
        ));
        assert!(matches!(
            "192.0.2.1/+8".parse::<Prefix>(),
            Err(ParsePrefixError::BadLen(_))
        ));
        assert!(matches!(
            "2001:db8::/129".parse::<Prefix>(),
            Err(ParsePrefixError::BadLen(_))
        ));
        assert!(Prefix::new("10.0.0.0".parse().unwrap(), 40).is_err());
    }
}
