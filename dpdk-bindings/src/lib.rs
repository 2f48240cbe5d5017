//! Thin safe layer over the system DPDK.
//!
//! - [`eal`]: EAL initialisation from an argument list, TSC clock, lcore ids.
//! - [`mempool`]: packet mbuf pools.
//! - [`mbuf`]: an owned single-segment mbuf ([`Mbuf`]) and fixed-size bursts ([`Burst`]).
//! - [`port`]: ethdev ports: configure (RSS, queues), start/stop, MAC, link, stats and xstats;
//!   per-queue RX/TX handles that a worker owns exclusively.
//! - [`ring`]: typed single-producer/single-consumer rte_rings.
//! - [`lcore`]: launching closures on worker lcores.
//!
//! Nothing outside this crate sees a raw DPDK pointer: `sys` is private.

mod sys;

pub mod eal;
pub mod error;
pub mod lcore;
pub mod mbuf;
pub mod mempool;
pub mod port;
pub mod ring;

pub use eal::Eal;
pub use error::{Error, Result};
pub use mbuf::{Burst, Drain, Mbuf, MAX_BURST};
pub use mempool::Mempool;
pub use port::{DevInfo, Link, Port, PortConf, PortStats, RingPort, RssInfo, RxQueue, TxQueue};
pub use ring::{Consumer, MbufConsumer, MbufProducer, Producer};

/// The DPDK version this crate was built against (from pkg-config).
pub const DPDK_VERSION: &str = env!("RVS_DPDK_VERSION");
