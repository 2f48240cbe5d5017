//! The packet buffer abstraction the sans-IO core works on.
//!
//! The core never sees an mbuf: it sees something that implements [`PacketBuf`]. The DPDK adapter
//! implements it for its mbuf wrapper; tests and benchmarks use [`VecPacket`].

/// A frame buffer owned by the core while it handles a packet. Dropping it frees it.
pub trait PacketBuf {
    /// The frame: `len()` bytes starting at the Ethernet header.
    fn data(&self) -> &[u8];
    /// The frame, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Current frame length in bytes.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// True when the frame is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Largest frame length this buffer can hold.
    fn capacity(&self) -> usize;
    /// Grow or shrink the frame (bytes beyond the old length are unspecified). Returns false, changing
    /// nothing, when `len > capacity()`.
    fn set_len(&mut self, len: usize) -> bool;
}

/// A heap-backed packet for tests, golden traces and benchmarks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VecPacket {
    buf: Vec<u8>,
    len: usize,
}

impl VecPacket {
    /// Default capacity, the same as a DPDK mbuf's default data room less headroom.
    pub const DEFAULT_CAPACITY: usize = 2048;

    /// A packet holding a copy of `frame`.
    pub fn from_slice(frame: &[u8]) -> Self {
        let mut buf = vec![0u8; Self::DEFAULT_CAPACITY.max(frame.len())];
        buf[..frame.len()].copy_from_slice(frame);
        VecPacket {
            buf,
            len: frame.len(),
        }
    }

    /// An empty packet with the default capacity.
    pub fn empty() -> Self {
        VecPacket {
            buf: vec![0u8; Self::DEFAULT_CAPACITY],
            len: 0,
        }
    }

    /// The frame as an owned vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.buf[..self.len].to_vec()
    }
}

impl PacketBuf for VecPacket {
    fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }
    fn capacity(&self) -> usize {
        self.buf.len()
    }
    fn set_len(&mut self, len: usize) -> bool {
        if len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }
}
