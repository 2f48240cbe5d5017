//! What the core needs from the outside world while it handles packets.

use crate::packet::PacketBuf;

/// Index of a dataplane port in the configuration (0..n_ports), not a DPDK port id.
pub type PortIdx = u16;

/// The I/O side of one worker, as the core sees it. The DPDK adapter implements it over mbufs and
/// per-port TX buffers flushed at the end of a burst; tests implement it over vectors.
pub trait Io {
    /// The packet buffer type.
    type Pkt: PacketBuf;
    /// A fresh packet with length 0 for a frame the core generates (ARP request, ICMP error, ...).
    /// `None` when the pool is empty: the caller counts `AllocFailed` and goes on.
    fn alloc(&mut self) -> Option<Self::Pkt>;
    /// Queue `pkt` for transmission on `port`. The I/O side owns it from here (it counts its own
    /// TX-full drops).
    fn send(&mut self, port: PortIdx, pkt: Self::Pkt);
    /// The core learned or refreshed a neighbour from the wire. Multi-worker adapters forward this
    /// to the other workers (which apply it with `Stack::neigh_sync`); the default ignores it.
    ///
    /// `create`: whether the other cores may create the entry (learned from a frame addressed
    /// to rvs); false for an unsolicited ARP (gratuitous, or for another host), which only
    /// refreshes an entry a core already has, wherever it arrived.
    fn neigh_learned(
        &mut self,
        _port: PortIdx,
        _ip: std::net::IpAddr,
        _mac: [u8; 6],
        _create: bool,
    ) {
    }
    /// Hand `pkt` (a frame received on `port`) to worker `worker`, which owns its session: the
    /// adapter moves it over a lockless SPSC ring and the owner runs `Stack::handle` on it as if
    /// it had received it. Returns false (and the caller counts `RedirectFull`) when the ring is
    /// full or there is no such worker; the packet is dropped either way on failure.
    fn redirect(&mut self, _worker: u16, _port: PortIdx, pkt: Self::Pkt) -> bool {
        drop(pkt);
        false
    }
    /// The exception path: hand a frame addressed to rvs itself that the dataplane does not
    /// serve (TCP/UDP to an interface address, ICMP other than echo, fragments, ARP replies) to
    /// the kernel interface mirroring `port`. Gives the frame back when `port` has no exception
    /// path (the caller then drops and counts it).
    fn to_kernel(&mut self, _port: PortIdx, pkt: Self::Pkt) -> Result<(), Self::Pkt> {
        Err(pkt)
    }
}
