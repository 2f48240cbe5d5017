//! The DPDK side of the core's [`rvs_core::io::Io`] trait.

use std::net::IpAddr;
use std::sync::Arc;

use dpdk::{Burst, Mbuf, MbufProducer, Mempool, Producer, TxQueue, MAX_BURST};
use rvs_core::counters::{CoreCounters, DropReason};
use rvs_core::io::{Io, PortIdx};
use rvs_core::packet::PacketBuf;

/// An mbuf as the core sees it.
pub struct MbufPacket(pub Mbuf);

impl PacketBuf for MbufPacket {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self.0.data()
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline(always)]
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
    #[inline(always)]
    fn set_len(&mut self, len: usize) -> bool {
        self.0.set_len(len)
    }
}

/// A neighbour learned by one worker, sent to the others (fixed size, Copy, for an rte_ring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct NeighMsg {
    pub port: u16,
    /// 4 or 6.
    pub family: u8,
    /// 1: the receiving core may create the entry; 0: refresh only (an unsolicited ARP).
    pub create: u8,
    pub mac: [u8; 6],
    _pad2: [u8; 2],
    pub ip: [u8; 16],
}

impl NeighMsg {
    pub fn new(port: PortIdx, ip: IpAddr, mac: [u8; 6], create: bool) -> Self {
        let (family, bytes) = match ip {
            IpAddr::V4(a) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&a.octets());
                (4, b)
            }
            IpAddr::V6(a) => (6, a.octets()),
        };
        NeighMsg {
            port,
            family,
            create: create as u8,
            mac,
            _pad2: [0; 2],
            ip: bytes,
        }
    }

    pub fn ip(&self) -> IpAddr {
        if self.family == 4 {
            IpAddr::from([self.ip[0], self.ip[1], self.ip[2], self.ip[3]])
        } else {
            IpAddr::from(self.ip)
        }
    }
}

/// Producers from one worker toward the others.
pub struct PeerSenders {
    /// Neighbour updates, one ring per other worker.
    pub neigh: Vec<Producer<NeighMsg>>,
    /// Packet redirect rings indexed by worker id (`None` at this worker's own index).
    pub redirect: Vec<Option<MbufProducer>>,
}

/// One worker's I/O: an mbuf pool for generated frames, a TX burst per port and a redirect burst
/// per peer, flushed at the end of each poll (or when full), and producers toward the peers.
pub struct WorkerIo {
    pool: Arc<Mempool>,
    pub(crate) tx: Vec<(TxQueue, Burst)>,
    neigh_peers: Vec<Producer<NeighMsg>>,
    redirect: Vec<Option<(MbufProducer, Burst)>>,
    /// Exception path: per port, the TX queue of the kernel interface (TAP) mirroring it.
    kernel: Vec<Option<(TxQueue, Burst)>>,
    counters: Arc<CoreCounters>,
}

impl WorkerIo {
    pub fn new(
        pool: Arc<Mempool>,
        txq: Vec<TxQueue>,
        peers: PeerSenders,
        counters: Arc<CoreCounters>,
    ) -> Self {
        let tx = txq.into_iter().map(|q| (q, Burst::new())).collect();
        let redirect = peers
            .redirect
            .into_iter()
            .map(|p| p.map(|p| (p, Burst::new())))
            .collect();
        WorkerIo {
            pool,
            tx,
            neigh_peers: peers.neigh,
            redirect,
            kernel: Vec::new(),
            counters,
        }
    }

    /// Give this worker the exception path: per port, its TX queue on the kernel interface.
    pub fn with_kernel(mut self, queues: Vec<Option<TxQueue>>) -> Self {
        self.kernel = queues
            .into_iter()
            .map(|q| q.map(|q| (q, Burst::new())))
            .collect();
        self
    }

    /// Hand queued frames to the kernel interfaces; what a queue refuses is freed and counted.
    #[inline]
    fn flush_kernel(&mut self) {
        for (q, b) in self.kernel.iter_mut().flatten() {
            if b.is_empty() {
                continue;
            }
            q.tx_burst(b);
            for _ in 0..b.len() {
                self.counters.count_drop(DropReason::TxFull);
            }
            b.clear();
        }
    }

    /// Hand queued redirects to their owners; what a full ring refuses is freed and counted.
    #[inline]
    fn flush_redirects(&mut self) {
        for (ring, b) in self.redirect.iter_mut().flatten() {
            if b.is_empty() {
                continue;
            }
            // Handed over once the ring took them (a counter that only grows); those it refuses
            // are dropped and counted.
            let sent = ring.send_burst(b);
            self.counters.redirected_out.add(sent as u64);
            for _ in 0..b.len() {
                self.counters.count_drop(DropReason::RedirectFull);
            }
            b.clear();
        }
    }

    /// Transmit everything queued for `port`. What the queue refuses stays queued for the next
    /// flush when it is a little (drivers that reclaim sent descriptors lazily, af_xdp or
    /// virtio, take part of a burst now and then); more than [`TX_KEEP`] left means the queue
    /// is full: all of it is freed and counted.
    #[inline(never)]
    fn flush_port(&mut self, port: usize) {
        let (q, b) = &mut self.tx[port];
        if b.is_empty() {
            return;
        }
        let sent = q.tx_burst(b);
        self.counters.tx_packets.add(sent as u64);
        if b.len() > TX_KEEP {
            for _ in 0..b.len() {
                self.counters.count_drop(DropReason::TxFull);
            }
            b.clear();
        }
    }

    /// Transmit everything queued on every port and hand over queued redirects.
    #[inline]
    pub fn flush(&mut self) {
        self.flush_redirects();
        self.flush_kernel();
        for p in 0..self.tx.len() {
            self.flush_port(p);
        }
    }
}

/// TX bursts are flushed when they reach this many packets even before the poll ends.
const TX_FLUSH_AT: usize = 64;
/// Most packets a TX queue may refuse at a flush and still keep for the next one.
const TX_KEEP: usize = TX_FLUSH_AT / 2;
const _: () = assert!(TX_FLUSH_AT <= MAX_BURST);

impl Io for WorkerIo {
    type Pkt = MbufPacket;

    #[inline]
    fn alloc(&mut self) -> Option<MbufPacket> {
        self.pool.alloc().map(MbufPacket)
    }

    #[inline(always)]
    fn send(&mut self, port: PortIdx, pkt: MbufPacket) {
        let p = port as usize;
        if p >= self.tx.len() {
            self.counters.count_drop(DropReason::TxFull);
            return;
        }
        if self.tx[p].1.len() >= TX_FLUSH_AT {
            self.flush_port(p);
        }
        if let Err(m) = self.tx[p].1.push(pkt.0) {
            drop(m);
            self.counters.count_drop(DropReason::TxFull);
        }
    }

    fn neigh_learned(&mut self, port: PortIdx, ip: IpAddr, mac: [u8; 6], create: bool) {
        let msg = [NeighMsg::new(port, ip, mac, create)];
        for p in &mut self.neigh_peers {
            // A full ring loses a refresh (counted); the peer resolves by ARP itself if it needs
            // the entry.
            if p.send_burst(&msg) == 0 {
                self.counters.neigh_sync_lost.inc();
            }
        }
    }

    #[inline]
    fn to_kernel(&mut self, port: PortIdx, pkt: MbufPacket) -> Result<(), MbufPacket> {
        let Some(Some((_, b))) = self.kernel.get_mut(port as usize) else {
            return Err(pkt);
        };
        if b.len() >= TX_FLUSH_AT {
            self.flush_kernel();
        }
        if let Some(Some((_, b))) = self.kernel.get_mut(port as usize) {
            if let Err(m) = b.push(pkt.0) {
                drop(m);
                self.counters.count_drop(DropReason::TxFull);
            }
        }
        Ok(())
    }

    #[inline]
    fn redirect(&mut self, worker: u16, port: PortIdx, pkt: MbufPacket) -> bool {
        let Some(Some((_, b))) = self.redirect.get_mut(worker as usize) else {
            return false;
        };
        let mut m = pkt.0;
        m.set_tag(port);
        if b.len() >= TX_FLUSH_AT {
            self.flush_redirects();
        }
        let Some(Some((_, b))) = self.redirect.get_mut(worker as usize) else {
            return false;
        };
        b.push(m).is_ok()
    }
}
