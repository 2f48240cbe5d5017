//! rvs worker runtime: the only place where the sans-IO core meets DPDK.
//!
//! A worker owns one RX and one TX queue on every port, its own [`rvs_core`] stack (tables,
//! counters) and a few SPSC rings to its peers. Its loop: RX a burst per port, hand each frame to
//! the core, apply messages from peers, run bounded timer work, flush TX. Nothing is shared with
//! other workers except through the rings and the single-writer counters.

pub mod ctl;
pub mod io;
pub mod worker;

pub use io::{MbufPacket, NeighMsg, PeerSenders, WorkerIo};
pub use worker::{PeerLinks, Worker, WorkerPorts};
