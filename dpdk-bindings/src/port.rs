//! Ethernet device ports and their queues.

use std::ffi::{CStr, CString};

use crate::error::{check, Error, Result};
use crate::mbuf::Burst;
use crate::mempool::Mempool;
use crate::ring::{spsc_mbuf, MbufConsumer, MbufProducer};
use crate::sys;

/// A DPDK ethdev port. Cheap to copy (an id); lifetime management is the caller's (configure,
/// start, stop, close), as rvsd does it in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    id: u16,
}

/// What a port can do.
#[derive(Clone, Debug)]
pub struct DevInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub rss_offloads: u64,
    pub rx_offload_capa: u64,
    pub tx_offload_capa: u64,
    pub hash_key_size: u8,
    pub reta_size: u16,
    pub min_mtu: u16,
    pub max_mtu: u16,
}

/// How to configure a port.
#[derive(Clone, Debug)]
pub struct PortConf {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// Spread RX over queues by RSS on IP/TCP/UDP (only what the port supports).
    pub rss: bool,
    pub mtu: Option<u16>,
    pub promiscuous: bool,
    /// Toeplitz key to program when RSS is on (the port's default when None or not settable).
    pub rss_key: Option<Vec<u8>>,
}

impl PortConf {
    /// `queues` RX and TX queues of `desc` descriptors each; no RSS, the MTU left as it is, not
    /// promiscuous (virtual devices, tests, benchmarks).
    pub fn plain(queues: u16, desc: u16) -> PortConf {
        PortConf {
            rx_queues: queues,
            tx_queues: queues,
            rx_desc: desc,
            tx_desc: desc,
            rss: false,
            mtu: None,
            promiscuous: false,
            rss_key: None,
        }
    }
}

/// What the port's RSS does, for software that wants to predict the queue of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RssInfo {
    /// The Toeplitz key in use.
    pub key: Vec<u8>,
    /// Redirection table: queue of each hash bucket (index = hash % len).
    pub reta: Vec<u16>,
    /// Hash functions enabled (RTE_ETH_RSS_* bits).
    pub hf: u64,
}

impl RssInfo {
    /// Whether IPv4 TCP flows hash on their ports too (else on their addresses only).
    pub fn tcp_ports(&self) -> bool {
        self.hf & sys::RTE_ETH_RSS_NONFRAG_IPV4_TCP != 0
    }

    /// Whether IPv4 UDP flows hash on their ports too (else on their addresses only).
    pub fn udp_ports(&self) -> bool {
        self.hf & sys::RTE_ETH_RSS_NONFRAG_IPV4_UDP != 0
    }
}

/// Link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Basic port counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

impl Port {
    /// Find a port by its DPDK name (a vdev's name such as `net_af_xdp0`, or a PCI address).
    pub fn by_name(name: &str) -> Result<Port> {
        let cname = CString::new(name)
            .map_err(|_| Error::other("rte_eth_dev_get_port_by_name", "bad name"))?;
        let mut id = 0u16;
        // SAFETY: valid C string and out-pointer.
        let ret = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        check(
            &format!("no DPDK port named {name:?} (rte_eth_dev_get_port_by_name)"),
            ret,
        )?;
        Ok(Port { id })
    }

    /// Create a net_ring port over fresh SPSC rte_rings: `queues` RX and `queues` TX queues of
    /// `size` mbufs each, named after `name`. Returns the port (still to be configured with at
    /// most `queues` queues, and started) with the far ends of its rings: per queue, the producer
    /// that feeds its RX ring (the port's RX queue is the consumer) and the consumer that drains
    /// its TX ring (the port's TX queue is the producer). Exactly one thread may hold each half.
    ///
    /// This is how a generator drives the production RX/TX path without a NIC (benchmarks,
    /// tests). The rings live until the process exits, since the port may be polled until then.
    pub fn from_rings(name: &str, queues: u16, size: u32) -> Result<RingPort> {
        let cname =
            CString::new(name).map_err(|_| Error::other("rte_eth_from_rings", "bad name"))?;
        let mut feed = Vec::with_capacity(queues as usize);
        let mut drain = Vec::with_capacity(queues as usize);
        let mut rx_rings = Vec::with_capacity(queues as usize);
        let mut tx_rings = Vec::with_capacity(queues as usize);
        for q in 0..queues {
            // The port is the consumer of the RX ring: its consumer half is not needed here.
            let (p, _) = spsc_mbuf(&format!("{name}_r{q}"), size)?;
            p.keep_for_process();
            rx_rings.push(p.raw_ring());
            feed.push(p);
            // The port is the producer of the TX ring.
            let (p, c) = spsc_mbuf(&format!("{name}_t{q}"), size)?;
            p.keep_for_process();
            tx_rings.push(p.raw_ring());
            drain.push(c);
        }
        // SAFETY: plain query of the calling thread's NUMA socket.
        let socket = unsafe { sys::rte_socket_id() };
        // SAFETY: valid C string; both arrays hold `queues` valid rings that are never freed (see
        // keep_for_process); DPDK copies the name and the arrays.
        let ret = unsafe {
            sys::rte_eth_from_rings(
                cname.as_ptr(),
                rx_rings.as_ptr(),
                queues as u32,
                tx_rings.as_ptr(),
                queues as u32,
                socket,
            )
        };
        if ret < 0 {
            return Err(Error::from_errno(format!("rte_eth_from_rings({name})")));
        }
        Ok(RingPort {
            port: Port { id: ret as u16 },
            feed,
            drain,
        })
    }

    /// Number of ports EAL probed.
    pub fn count() -> u16 {
        // SAFETY: plain query.
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn info(&self) -> Result<DevInfo> {
        let mut di = sys::rte_eth_dev_info::default();
        // SAFETY: valid out-pointer; the port id is checked by DPDK.
        check("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(self.id, &mut di)
        })?;
        let driver = if di.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: DPDK's driver name is a static NUL-terminated string.
            unsafe { CStr::from_ptr(di.driver_name) }
                .to_string_lossy()
                .into_owned()
        };
        Ok(DevInfo {
            driver,
            max_rx_queues: di.max_rx_queues,
            max_tx_queues: di.max_tx_queues,
            rss_offloads: di.flow_type_rss_offloads,
            rx_offload_capa: di.rx_offload_capa,
            tx_offload_capa: di.tx_offload_capa,
            hash_key_size: di.hash_key_size,
            reta_size: di.reta_size,
            min_mtu: di.min_mtu,
            max_mtu: di.max_mtu,
        })
    }

    /// Configure the port and set up its queues (all RX queues draw from `pool`). Does not start it.
    /// Refused while a queue of the port has a handle ([`Port::rx_queue`], [`Port::tx_queue`]).
    pub fn configure(&self, conf: &PortConf, pool: &Mempool) -> Result<()> {
        self.configure_pools(conf, &[pool])
    }

    /// [`Port::configure`] with a pool per RX queue: queue `q` draws from `pools[q]` (one pool:
    /// every queue from it; more pools than queues: the extra ones unused), so that each
    /// worker's queue fills from the worker's own pool.
    pub fn configure_pools<P: std::ops::Deref<Target = Mempool>>(
        &self,
        conf: &PortConf,
        pools: &[P],
    ) -> Result<()> {
        let Some(last) = pools.last() else {
            return Err(Error::other("rte_eth_rx_queue_setup", "no mbuf pool"));
        };
        if pools.len() > 1 && pools.len() < conf.rx_queues as usize {
            return Err(Error::other(
                "rte_eth_rx_queue_setup",
                format!(
                    "{} mbuf pools for {} RX queues: one, or one per queue",
                    pools.len(),
                    conf.rx_queues
                ),
            ));
        }
        self.no_handles("rte_eth_dev_configure")?;
        let info = self.info()?;
        if conf.rx_queues > info.max_rx_queues || conf.tx_queues > info.max_tx_queues {
            return Err(Error::other(
                "rte_eth_dev_configure",
                format!(
                    "port {} ({}) supports {} RX / {} TX queues, {} / {} asked (one per worker)",
                    self.id,
                    info.driver,
                    info.max_rx_queues,
                    info.max_tx_queues,
                    conf.rx_queues,
                    conf.tx_queues
                ),
            ));
        }
        let mut ec = sys::rte_eth_conf::default();
        let rss_hf =
            (sys::RTE_ETH_RSS_IP | sys::RTE_ETH_RSS_TCP | sys::RTE_ETH_RSS_UDP) & info.rss_offloads;
        if conf.rss && conf.rx_queues > 1 && rss_hf != 0 {
            ec.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            ec.rx_adv_conf.rss_conf.rss_hf = rss_hf;
            let key = conf.rss_key.as_deref().unwrap_or_default();
            if !key.is_empty()
                && (info.hash_key_size == 0 || key.len() == info.hash_key_size as usize)
            {
                // DPDK keeps the configuration's pointer to the key (not a copy) and some
                // drivers read it again when the port starts or restarts: the key must live as
                // long as the port, so it is leaked (once per configure, 40 bytes or so).
                let key: &'static mut [u8] = Box::leak(key.to_vec().into_boxed_slice());
                ec.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
                ec.rx_adv_conf.rss_conf.rss_key_len = key.len() as u8;
            }
        }
        // SAFETY: valid config struct; the port is stopped.
        let ret =
            unsafe { sys::rte_eth_dev_configure(self.id, conf.rx_queues, conf.tx_queues, &ec) };
        check(&format!("rte_eth_dev_configure(port {})", self.id), ret)?;
        if let Some(mtu) = conf.mtu {
            // Not every vdev supports MTU changes (-ENOTSUP: rvs enforces the MTU in software
            // anyway); any other refusal (an MTU the device cannot take) is an error.
            // SAFETY: plain call on a configured port.
            let ret = unsafe { sys::rte_eth_dev_set_mtu(self.id, mtu) };
            if ret != -(libc::ENOTSUP) {
                check(
                    &format!("rte_eth_dev_set_mtu(port {}, {mtu})", self.id),
                    ret,
                )?;
            }
        }
        // SAFETY: plain query.
        let socket = unsafe { sys::rte_eth_dev_socket_id(self.id) };
        let socket = if socket < 0 {
            sys::SOCKET_ID_ANY
        } else {
            socket
        };
        for q in 0..conf.rx_queues {
            let pool = pools.get(q as usize).unwrap_or(last);
            // SAFETY: configured port, valid pool; NULL rxconf means driver defaults.
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(
                    self.id,
                    q,
                    conf.rx_desc,
                    socket as u32,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check(
                &format!("rte_eth_rx_queue_setup(port {}, queue {q})", self.id),
                ret,
            )?;
        }
        for q in 0..conf.tx_queues {
            // SAFETY: configured port; NULL txconf means driver defaults.
            let ret = unsafe {
                sys::rte_eth_tx_queue_setup(
                    self.id,
                    q,
                    conf.tx_desc,
                    socket as u32,
                    std::ptr::null(),
                )
            };
            check(
                &format!("rte_eth_tx_queue_setup(port {}, queue {q})", self.id),
                ret,
            )?;
        }
        if conf.promiscuous {
            // SAFETY: plain call on a configured port.
            check("rte_eth_promiscuous_enable", unsafe {
                sys::rte_eth_promiscuous_enable(self.id)
            })?;
        }
        Ok(())
    }

    /// The RSS key, redirection table and hash functions in use, or None when the port does not
    /// report them (most vdevs).
    pub fn rss_info(&self) -> Option<RssInfo> {
        let info = self.info().ok()?;
        if info.reta_size == 0 || info.hash_key_size == 0 {
            return None;
        }
        let mut key = vec![0u8; info.hash_key_size as usize];
        let mut rc = sys::rte_eth_rss_conf {
            rss_key: key.as_mut_ptr(),
            rss_key_len: key.len() as u8,
            ..Default::default()
        };
        // SAFETY: rss_key points at hash_key_size writable bytes.
        if unsafe { sys::rte_eth_dev_rss_hash_conf_get(self.id, &mut rc) } != 0 || rc.rss_hf == 0 {
            return None;
        }
        let group = sys::RTE_ETH_RETA_GROUP_SIZE as usize;
        let n = info.reta_size as usize;
        let mut entries = vec![sys::rte_eth_rss_reta_entry64::default(); n.div_ceil(group)];
        for e in &mut entries {
            e.mask = u64::MAX;
        }
        // SAFETY: entries covers reta_size buckets.
        if unsafe { sys::rte_eth_dev_rss_reta_query(self.id, entries.as_mut_ptr(), info.reta_size) }
            != 0
        {
            return None;
        }
        let reta = (0..n).map(|i| entries[i / group].reta[i % group]).collect();
        Some(RssInfo {
            key,
            reta,
            hf: rc.rss_hf,
        })
    }

    pub fn start(&self) -> Result<()> {
        // SAFETY: plain call on a configured port.
        check(&format!("rte_eth_dev_start(port {})", self.id), unsafe {
            sys::rte_eth_dev_start(self.id)
        })?;
        Ok(())
    }

    /// Refused (EBUSY) while some queue of this port has a live handle: whoever holds it may be
    /// polling it, and stopping, closing or reconfiguring would tear the queue down under it.
    fn no_handles(&self, op: &str) -> Result<()> {
        if taken().iter().any(|&(p, _, _)| p == self.id) {
            return Err(Error::from_code(
                format!(
                    "{op}(port {}): a queue of the port still has a handle",
                    self.id
                ),
                libc::EBUSY,
            ));
        }
        Ok(())
    }

    /// Stop the port. Refused while a queue of the port has a handle (drop the workers' queues
    /// first).
    pub fn stop(&self) -> Result<()> {
        self.no_handles("rte_eth_dev_stop")?;
        // SAFETY: plain call; no handle to its queues is left, so no lcore polls them.
        check(&format!("rte_eth_dev_stop(port {})", self.id), unsafe {
            sys::rte_eth_dev_stop(self.id)
        })?;
        Ok(())
    }

    /// Close the port, releasing its resources (pcap files are flushed here). Refused while a
    /// queue of the port has a handle.
    pub fn close(&self) -> Result<()> {
        self.no_handles("rte_eth_dev_close")?;
        // SAFETY: no handle to its queues is left; DPDK stops it first if it runs.
        check(&format!("rte_eth_dev_close(port {})", self.id), unsafe {
            sys::rte_eth_dev_close(self.id)
        })?;
        Ok(())
    }

    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid out-pointer.
        check("rte_eth_macaddr_get", unsafe {
            sys::rte_eth_macaddr_get(self.id, &mut a)
        })?;
        Ok(a.addr_bytes)
    }

    pub fn set_mac(&self, mac: [u8; 6]) -> Result<()> {
        let mut a = sys::rte_ether_addr { addr_bytes: mac };
        // SAFETY: valid pointer to an address DPDK copies.
        check("rte_eth_dev_default_mac_addr_set", unsafe {
            sys::rte_eth_dev_default_mac_addr_set(self.id, &mut a)
        })?;
        Ok(())
    }

    pub fn link(&self) -> Result<Link> {
        let mut l = sys::rte_eth_link::default();
        // SAFETY: valid out-pointer.
        check("rte_eth_link_get_nowait", unsafe {
            sys::rte_eth_link_get_nowait(self.id, &mut l)
        })?;
        Ok(Link {
            up: l.link_status() != 0,
            speed_mbps: l.link_speed,
            full_duplex: l.link_duplex() != 0,
        })
    }

    pub fn stats(&self) -> Result<PortStats> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid out-pointer.
        check("rte_eth_stats_get", unsafe {
            sys::rte_eth_stats_get(self.id, &mut s)
        })?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    pub fn reset_stats(&self) -> Result<()> {
        // SAFETY: plain call.
        check("rte_eth_stats_reset", unsafe {
            sys::rte_eth_stats_reset(self.id)
        })?;
        Ok(())
    }

    /// Every extended statistic as (name, value).
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        // SAFETY: a NULL array asks for the count.
        let n = check("rte_eth_xstats_get_names", unsafe {
            sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0)
        })? as usize;
        let mut names = vec![sys::rte_eth_xstat_name::default(); n];
        let mut vals = vec![sys::rte_eth_xstat::default(); n];
        // SAFETY: arrays of n elements.
        let got = check("rte_eth_xstats_get_names", unsafe {
            sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32)
        })? as usize;
        // SAFETY: arrays of n elements.
        let gotv = check("rte_eth_xstats_get", unsafe {
            sys::rte_eth_xstats_get(self.id, vals.as_mut_ptr(), n as u32)
        })? as usize;
        let mut out = Vec::with_capacity(got.min(gotv));
        for v in vals.iter().take(gotv) {
            if let Some(nm) = names.get(v.id as usize).filter(|_| (v.id as usize) < got) {
                // SAFETY: DPDK NUL-terminates names within RTE_ETH_XSTATS_NAME_SIZE.
                let s = unsafe { CStr::from_ptr(nm.name.as_ptr()) }
                    .to_string_lossy()
                    .into_owned();
                out.push((s, v.value));
            }
        }
        Ok(out)
    }

    /// The number of RX and TX queues the port is configured with.
    fn configured_queues(&self) -> (u16, u16) {
        let mut di = sys::rte_eth_dev_info::default();
        // SAFETY: valid out-pointer; the port id is checked by DPDK.
        let ret = unsafe { sys::rte_eth_dev_info_get(self.id, &mut di) };
        if ret != 0 {
            return (0, 0);
        }
        (di.nb_rx_queues, di.nb_tx_queues)
    }

    /// The RX queue `q`: the one handle to it (DPDK queues are not thread-safe, so a queue must
    /// be polled by one lcore at a time; rvsd hands queue `w` to worker `w`). Panics when the
    /// port has no queue `q` (DPDK's burst functions do not check it: a wrong index would read
    /// a null queue) or when a handle to it is alive: two would let safe code poll one queue
    /// from two threads. The handle is given back when dropped.
    pub fn rx_queue(&self, q: u16) -> RxQueue {
        let n = self.configured_queues().0;
        assert!(q < n, "port {} has {n} RX queues, not queue {q}", self.id);
        take_queue(self.id, q, true);
        RxQueue {
            port: self.id,
            queue: q,
        }
    }

    /// The TX queue `q` (the same single handle and checks as [`Port::rx_queue`]).
    pub fn tx_queue(&self, q: u16) -> TxQueue {
        let n = self.configured_queues().1;
        assert!(q < n, "port {} has {n} TX queues, not queue {q}", self.id);
        take_queue(self.id, q, false);
        TxQueue {
            port: self.id,
            queue: q,
        }
    }
}

/// A net_ring port and the far ends of its rings (see [`Port::from_rings`]).
pub struct RingPort {
    pub port: Port,
    /// Per queue: enqueue here what the port's RX queue should receive.
    pub feed: Vec<MbufProducer>,
    /// Per queue: dequeue here what the port's TX queue transmitted.
    pub drain: Vec<MbufConsumer>,
}

/// The queues with a live handle: (port, queue, RX). Control path only (handles are taken and
/// dropped at set-up and tear-down, never per packet).
static QUEUES_TAKEN: std::sync::Mutex<Vec<(u16, u16, bool)>> = std::sync::Mutex::new(Vec::new());

fn taken() -> std::sync::MutexGuard<'static, Vec<(u16, u16, bool)>> {
    QUEUES_TAKEN.lock().unwrap_or_else(|e| e.into_inner())
}

fn take_queue(port: u16, queue: u16, rx: bool) {
    let mut t = taken();
    let what = if rx { "RX" } else { "TX" };
    assert!(
        !t.contains(&(port, queue, rx)),
        "port {port} {what} queue {queue} already has a handle (one lcore per queue)"
    );
    t.push((port, queue, rx));
}

fn give_queue(port: u16, queue: u16, rx: bool) {
    taken().retain(|&k| k != (port, queue, rx));
}

/// One RX queue of a port, polled by its owning worker (the only handle to it).
#[derive(Debug)]
pub struct RxQueue {
    port: u16,
    queue: u16,
}

/// One TX queue of a port, used by its owning worker (the only handle to it).
#[derive(Debug)]
pub struct TxQueue {
    port: u16,
    queue: u16,
}

impl Drop for RxQueue {
    fn drop(&mut self) {
        give_queue(self.port, self.queue, true);
    }
}

impl Drop for TxQueue {
    fn drop(&mut self) {
        give_queue(self.port, self.queue, false);
    }
}

impl RxQueue {
    /// Receive up to `max` packets (at most the burst's room) into `burst`, normally empty;
    /// returns how many. Mbufs already in it stay in front (never overwritten).
    #[inline(always)]
    pub fn rx_burst(&mut self, burst: &mut Burst, max: u16) -> usize {
        self.rx_burst_append(burst, max)
    }

    /// Receive up to `max` packets behind those already in `burst` (at most its room). Returns
    /// how many arrived.
    #[inline(always)]
    pub fn rx_burst_append(&mut self, burst: &mut Burst, max: u16) -> usize {
        let (ptr, len) = burst.raw_mut();
        let max = (max as usize).min(burst.room()) as u16;
        if max == 0 {
            return 0;
        }
        // SAFETY: slots len..len+max are free (max <= room); we own this queue exclusively.
        let n = unsafe { sys::rte_eth_rx_burst(self.port, self.queue, ptr.add(len), max) } as usize;
        burst.set_filled(len + n);
        n
    }
}

impl TxQueue {
    /// Transmit what the queue accepts from the front of `burst`; the rest stay in it.
    #[inline(always)]
    pub fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let (ptr, len) = burst.raw_mut();
        if len == 0 {
            return 0;
        }
        // SAFETY: the first len pointers are owned mbufs; the driver takes ownership of the first
        // `sent`; we own this queue exclusively.
        let sent =
            unsafe { sys::rte_eth_tx_burst(self.port, self.queue, ptr, len as u16) } as usize;
        burst.consume_front(sent);
        sent
    }
}
