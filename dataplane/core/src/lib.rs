//! rvs sans-IO packet core.
//!
//! Everything here works on plain byte buffers ([`packet::PacketBuf`]) and an [`io::Io`] trait; it
//! knows nothing of DPDK, so every behaviour is unit-testable, fuzzable and benchmarkable.

#![warn(missing_docs)]

pub mod addr;
pub mod bigarray;
pub mod checksum;
pub mod config;
pub mod counters;
mod fastpath;
pub mod fixedmap;
pub mod fullnat;
pub mod fwd;
pub mod io;
pub mod lport;
pub mod neigh;
pub mod packet;
pub mod persist;
pub mod route;
pub mod sched;
pub mod service;
pub mod session;
pub mod stack;
pub mod tcp_state;
pub mod timer;
pub mod toeplitz;
pub mod wire;

pub use addr::{MacAddr, Prefix};
pub use config::{
    DestConf, FullnatConf, Fwd, NeighConf, Persist, PortConf, Proto, RouteConf, RssConf, Sched,
    ServiceConf, ServiceMatch, StackConfig, Timeouts, MATCH_OWN_MAX, MAX_MATCH_SERVICES,
};
pub use fullnat::SessionInfo;
pub use fwd::nat_owner;
pub use neigh::NeighState;
pub use persist::persist_owner;
pub use sched::DestStats;
pub use stack::Stack;
pub use tcp_state::TcpState;
