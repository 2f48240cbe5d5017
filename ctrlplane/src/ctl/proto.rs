//! The control-socket protocol between rvsd and its clients (rvsadm).
#![allow(missing_docs)] // field names are the documentation; see the module doc
//!
//! Framing: each message is a 4-byte big-endian length followed by that many bytes of JSON (a
//! [`Request`] from the client, a [`Response`] from rvsd). Messages over [`MAX_MESSAGE`] bytes are
//! refused with an error reply and the connection is closed. `version` must equal
//! [`PROTO_VERSION`]; a mismatch gets `Response::Error` naming both versions.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Version of this protocol. Bump on any incompatible change (2: `EditReal.keep_fwd`, which an
/// rvsd of version 1 would ignore, turning `-e ... -w 0` into a change of method).
pub const PROTO_VERSION: u32 = 2;
/// Largest message accepted either way (8 MiB: a listing of the most real servers rvsd takes,
/// 4096 at some 350 bytes each, fits several times over).
pub const MAX_MESSAGE: usize = 8 << 20;
/// Most connection entries one `ListConns` page returns.
pub const MAX_CONNS_PAGE: u32 = 4096;

/// Protocol of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// ipvsadm's column text: `TCP`, `UDP`.
    pub fn upper(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }
}

/// How a virtual service is named: `-t VIP:port`, `-u VIP:port`, or `-f MARK` (a match service:
/// `mark` is set and `proto`/`vip`/`vport` are then Tcp, 0.0.0.0 and 0, so keys compare by mark).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub proto: Proto,
    pub vip: IpAddr,
    pub vport: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
}

impl ServiceKey {
    /// The key of match service `mark` (`-f MARK`).
    pub fn of_mark(mark: u32) -> ServiceKey {
        ServiceKey {
            proto: Proto::Tcp,
            vip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            vport: 0,
            mark: Some(mark),
        }
    }

    /// The service as rvsd's log and messages name it: `TCP 203.0.113.10:80`, `FWM 7`.
    pub fn name(&self) -> String {
        match self.mark {
            Some(m) => format!("FWM {m}"),
            None => format!(
                "{} {}",
                self.proto.upper(),
                std::net::SocketAddr::new(self.vip, self.vport)
            ),
        }
    }
}

/// Forwarding method of a real server (ipvsadm `-m`, `-g`, `-i`, and `-b` for FULLNAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fwd {
    /// `-m`, "Masq".
    Nat,
    /// `-g`, "Route" (ipvsadm's default).
    Dr,
    /// `-i`, "Tunnel".
    Tun,
    /// `-b`, "FullNat".
    FullNat,
}

impl Fwd {
    /// ipvsadm's Forward column: Masq, Route, Tunnel; FullNat for FULLNAT (as DPVS's ipvsadm).
    pub fn name(self) -> &'static str {
        match self {
            Fwd::Nat => "Masq",
            Fwd::Dr => "Route",
            Fwd::Tun => "Tunnel",
            Fwd::FullNat => "FullNat",
        }
    }
    /// The ipvsadm flag that selects it (`-S` output).
    pub fn flag(self) -> &'static str {
        match self {
            Fwd::Nat => "-m",
            Fwd::Dr => "-g",
            Fwd::Tun => "-i",
            Fwd::FullNat => "-b",
        }
    }
}

/// A virtual service as added or edited (`-A`/`-E`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub key: ServiceKey,
    /// Scheduler name (rr, wrr, ...).
    pub scheduler: String,
    /// Persistence timeout in seconds (`-p`), None when not persistent.
    pub persistent: Option<u32>,
    /// Persistence netmask (`-M`), as a prefix length.
    pub netmask: Option<u8>,
    /// Scheduler flags (`-b sh-fallback,sh-port`).
    pub sched_flags: Vec<String>,
}

/// A real server as added or edited (`-a`/`-e`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealSpec {
    pub addr: SocketAddr,
    pub fwd: Fwd,
    pub weight: u32,
    /// Upper connection threshold (`-x`), 0 = none.
    pub upper: u32,
    /// Lower connection threshold (`-y`), 0 = none.
    pub lower: u32,
}

/// Counters as ipvsadm's `--stats` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

/// Rates as ipvsadm's `--rate` shows them (per second, from the 2 s estimator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A real server as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealView {
    pub spec: RealSpec,
    pub active: u64,
    pub inactive: u64,
    /// Persistent-template connections (`--persistent-conn`).
    pub persist: u64,
    pub stats: Stats,
    pub rates: Rates,
    /// Health-check state, `"UP"` or `"DOWN"`; `None` when the real server is not checked.
    #[serde(default)]
    pub health: Option<String>,
    /// Health state changes since rvsd started (0 when not checked).
    #[serde(default)]
    pub health_transitions: u64,
    /// Failed checks since rvsd started, each one (those below `fall` too: a flapping server
    /// shows here before it changes state; 0 when not checked).
    #[serde(default)]
    pub health_failures: u64,
}

/// A virtual service as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub spec: ServiceSpec,
    pub reals: Vec<RealView>,
    /// FULLNAT local addresses (`--get-laddr`).
    pub lips: Vec<IpAddr>,
    pub stats: Stats,
    pub rates: Rates,
}

/// One connection entry (`-L -c`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnView {
    pub proto: Proto,
    /// IPVS state name (ESTABLISHED, SYN_RECV, FIN_WAIT, ..., UDP for UDP).
    pub state: String,
    /// Milliseconds until expiry.
    pub expire_ms: u64,
    pub client: SocketAddr,
    pub virt: SocketAddr,
    pub dest: SocketAddr,
    /// FULLNAT local address:port, when FULLNAT.
    pub local: Option<SocketAddr>,
}

/// Session timeouts in seconds (`--set tcp tcpfin udp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutsView {
    pub tcp: u32,
    pub tcpfin: u32,
    pub udp: u32,
}

/// A request to rvsd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    pub op: Op,
}

/// The operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Every service with its real servers (`-L`), with counters and rates.
    ListServices,
    /// One service (`-L -t VIP:port`).
    GetService {
        key: ServiceKey,
    },
    AddService {
        spec: ServiceSpec,
    },
    EditService {
        spec: ServiceSpec,
    },
    DelService {
        key: ServiceKey,
    },
    /// Remove every service (`-C`).
    Clear,
    AddReal {
        key: ServiceKey,
        real: RealSpec,
    },
    EditReal {
        key: ServiceKey,
        real: RealSpec,
        /// No forwarding option was given (`-e` without `-g`/`-i`/`-m`/`-b`): the real server
        /// keeps its method and `real.fwd` is ignored. ipvsadm would set DR; rvs's servers are
        /// FULLNAT by default, and a weight edit must not change how packets reach them.
        #[serde(default)]
        keep_fwd: bool,
    },
    DelReal {
        key: ServiceKey,
        addr: SocketAddr,
    },
    AddLaddr {
        key: ServiceKey,
        lip: IpAddr,
    },
    DelLaddr {
        key: ServiceKey,
        lip: IpAddr,
    },
    SetTimeouts {
        timeouts: TimeoutsView,
    },
    GetTimeouts,
    /// Zero counters of one service or all (`-Z`).
    Zero {
        key: Option<ServiceKey>,
    },
    /// Connection entries, paged: at most `max` (≤ MAX_CONNS_PAGE) from `start`.
    ListConns {
        start: u64,
        max: u32,
    },
    /// Validate a config file (default: the running one's path) without applying it.
    Validate {
        path: Option<String>,
    },
    /// Re-read the config file and apply the difference.
    Reload,
    /// Daemon status: version, generation, workers, session table size.
    Status,
}

/// rvsd's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Ok,
    /// The operation failed; `code` is an errno-like number (ipvsadm's wording goes in `message`).
    Error {
        code: i32,
        message: String,
    },
    Services {
        services: Vec<ServiceView>,
    },
    Service {
        service: ServiceView,
    },
    Timeouts {
        timeouts: TimeoutsView,
    },
    Conns {
        entries: Vec<ConnView>,
        next: Option<u64>,
    },
    /// Reload done: what changed, and start-up-only settings that need a restart.
    Reloaded {
        generation: u64,
        changes: Vec<String>,
        needs_restart: Vec<String>,
    },
    Status {
        version: String,
        generation: u64,
        workers: u32,
        conn_table_size: u64,
    },
}

/// errno-like codes used in `Response::Error`.
pub mod code {
    pub const EINVAL: i32 = 22;
    pub const EEXIST: i32 = 17;
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EPROTO: i32 = 71;
    pub const E2BIG: i32 = 7;
    pub const ENOMEM: i32 = 12;
    /// The daemon is busy (too many control clients): retry.
    pub const EBUSY: i32 = 16;
}

/// Write one framed message.
pub fn write_msg<T: Serialize, W: Write>(w: &mut W, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    if body.len() > MAX_MESSAGE {
        // Nothing written: the stream is still in step (the caller may send an error instead).
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "message of {} bytes exceeds the {MAX_MESSAGE}-byte limit",
                body.len()
            ),
        ));
    }
    w.write_all(&(body.len() as u32).to_be_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Why a framed message could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection before a message started.
    Closed,
    Io(std::io::Error),
    /// Length over MAX_MESSAGE.
    TooLarge(usize),
    /// Not valid JSON for the expected type.
    Malformed(String),
    /// A request of another protocol version (its `version`).
    Version(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLarge(n) => write!(
                f,
                "message of {n} bytes exceeds the {MAX_MESSAGE}-byte limit"
            ),
            ReadError::Malformed(e) => write!(f, "malformed message: {e}"),
            ReadError::Version(n) => write!(f, "protocol version {n} not supported"),
        }
    }
}

/// Read one framed message.
pub fn read_msg<T: for<'de> Deserialize<'de>, R: Read>(r: &mut R) -> Result<T, ReadError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_MESSAGE {
        return Err(ReadError::TooLarge(n));
    }
    // Memory grows with what arrives, not with what the length prefix claims (a client that
    // announces 8 MiB and sends nothing holds no 8 MiB).
    let mut body = Vec::with_capacity(n.min(64 * 1024));
    r.take(n as u64)
        .read_to_end(&mut body)
        .map_err(ReadError::Io)?;
    if body.len() < n {
        return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    serde_json::from_slice(&body).map_err(|e| ReadError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trip_and_limits() {
        let req = Request {
            version: PROTO_VERSION,
            op: Op::AddReal {
                key: ServiceKey {
                    proto: Proto::Tcp,
                    vip: "203.0.113.10".parse().unwrap(),
                    vport: 80,
                    mark: None,
                },
                real: RealSpec {
                    addr: "198.51.100.11:80".parse().unwrap(),
                    fwd: Fwd::Nat,
                    weight: 3,
                    upper: 0,
                    lower: 0,
                },
            },
        };
        let mut buf = Vec::new();
        write_msg(&mut buf, &req).unwrap();
        let back: Request = read_msg(&mut &buf[..]).unwrap();
        assert_eq!(back, req);
        let mut big = (MAX_MESSAGE as u32 + 1).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(matches!(
            read_msg::<Request, _>(&mut &big[..]),
            Err(ReadError::TooLarge(_))
        ));
        let mut junk = 5u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{oops");
        assert!(matches!(
            read_msg::<Request, _>(&mut &junk[..]),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            read_msg::<Request, _>(&mut &[][..]),
            Err(ReadError::Closed)
        ));
    }
}
