//! rvs sans-IO packet core.
//!
//! Everything here works on plain byte buffers ([`packet::PacketBuf`]) and an [`io::Io`] trait; it
//! knows nothing of DPDK, so every behaviour is unit-testable, fuzzable and benchmarkable.

#![warn(missing_docs)]

pub mod addr;
pub mod checksum;
pub mod config;
pub mod counters;
pub mod fixedmap;
pub mod io;
pub mod neigh;
pub mod packet;
pub mod route;
pub mod stack;
pub mod wire;

pub use addr::{MacAddr, Prefix};
pub use config::{NeighConf, PortConf, RouteConf, StackConfig};
pub use neigh::NeighState;
pub use stack::Stack;
