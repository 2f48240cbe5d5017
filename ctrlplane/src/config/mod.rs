//! The rvsd configuration file.
//!
//! rvsd reads one TOML file (see `configs/minimal.toml` in the repository,
//! which documents every key). [`Config::load`] reads, parses and validates
//! it into plain types; nothing here knows about DPDK beyond the EAL command
//! line ([`EalConfig::args`]).
//!
//! Every problem is reported as a [`ConfigError`] that names the file, the
//! line and column of the offending value and its dotted key path, e.g.
//! `rvs.toml:12:9: dataplane.burst: burst must be between 1 and 512, got 0`.
//! Unknown keys are errors everywhere.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod parse;
mod tree;

#[cfg(test)]
mod tests;

/// A parsed and validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file the configuration was read from (as given to
    /// [`Config::load`] or [`Config::parse`]).
    pub source: PathBuf,
    /// DPDK EAL settings (`[eal]`).
    pub eal: EalConfig,
    /// Worker and packet-path settings (`[dataplane]`).
    pub dataplane: DataplaneConfig,
    /// Neighbour (ARP / NDP) cache settings (`[neighbour]`).
    pub neighbour: NeighbourConfig,
    /// The ports (`[[port]]`), in file order; at least one.
    pub ports: Vec<PortConfig>,
    /// The static routes (`[[route]]`), in file order.
    pub routes: Vec<RouteConfig>,
}

/// DPDK EAL settings: the `[eal]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalConfig {
    /// The lcore of the main (control) thread (`main_lcore`, default 0).
    pub main_lcore: u32,
    /// Memory to preallocate in MiB, EAL `-m` (`memory_mb`, default 512).
    pub memory_mb: u32,
    /// Run without hugepages, EAL `--no-huge` (`no_huge`, default true).
    pub no_huge: bool,
    /// EAL `--file-prefix`, to run several DPDK processes side by side
    /// (`file_prefix`, default none).
    pub file_prefix: Option<String>,
    /// Extra raw EAL arguments appended to the generated ones (`args`,
    /// default none).
    pub args: Vec<String>,
}

/// Worker and packet-path settings: the `[dataplane]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// The lcores of the worker threads (`workers`, default `[1]`): distinct,
    /// at least one, none equal to the main lcore. Worker `i` polls queue `i`
    /// of every port.
    pub workers: Vec<u32>,
    /// Route transit IPv4 packets (`ip_forward`, default false).
    pub ip_forward: bool,
    /// Packets per rx / tx burst (`burst`, 1..=512, default 32).
    pub burst: u16,
    /// Rx descriptors per queue (`rx_desc`, power of two 64..=16384, default 1024).
    pub rx_desc: u16,
    /// Tx descriptors per queue (`tx_desc`, power of two 64..=16384, default 1024).
    pub tx_desc: u16,
    /// Mbufs in each port's pool (`mbufs`, default 8191); at least
    /// `2 * burst * workers + rx_desc * workers`.
    pub mbufs: u32,
    /// Per-lcore mbuf cache size (`mbuf_cache`, default 256); at most 512 and
    /// at most `mbufs / 1.5`.
    pub mbuf_cache: u32,
    /// ICMP error messages each worker may send per second
    /// (`icmp_ratelimit`, default 1000; 0 sends none).
    pub icmp_ratelimit: u32,
}

/// Neighbour (ARP / NDP) cache settings: the `[neighbour]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// Entries per worker core (`capacity`, default 1024).
    pub capacity: u32,
    /// Packets held per unresolved next hop (`hold_packets`, default 8).
    pub hold_packets: u32,
    /// How long a confirmed entry stays reachable, in ms (`reachable_ms`,
    /// default 30000).
    pub reachable_ms: u32,
    /// How long an unused stale entry is kept, in ms (`gc_stale_ms`, default
    /// 600000); not less than `reachable_ms`.
    pub gc_stale_ms: u32,
    /// Interval between resolution probes, in ms (`retrans_ms`, default 1000).
    pub retrans_ms: u32,
    /// Probes sent before a next hop is declared unreachable (`max_probes`,
    /// default 3).
    pub max_probes: u32,
}

/// One `[[port]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Unique name, used by routes (`name`, required).
    pub name: String,
    /// The DPDK device (`device`, required).
    pub device: Device,
    /// MAC address to set on the port instead of its own (`mac`).
    pub mac: Option<[u8; 6]>,
    /// MTU (`mtu`, 68..=9600, default 1500).
    pub mtu: u16,
    /// Addresses rvs owns on this port with their prefix lengths, host bits
    /// kept (`addresses`, e.g. `["192.0.2.1/24"]`, default none). Each also
    /// gives the port a connected subnet.
    pub addresses: Vec<(IpAddr, u8)>,
    /// Spread received packets over the workers by RSS when the port has
    /// several queues (`rss`, default true).
    pub rss: bool,
    /// Put the port in promiscuous mode (`promiscuous`, default false).
    pub promiscuous: bool,
}

/// A DPDK device a port is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Device {
    /// A PCI device, its address normalised to `0000:3b:00.0` form
    /// (lower-case hex, four-digit domain).
    Pci(String),
    /// A virtual device string as given to EAL `--vdev`, e.g.
    /// `net_af_xdp0,iface=eth0` or `net_null0`.
    Vdev(String),
}

impl Device {
    /// The name DPDK gives the port (for `rte_eth_dev_get_port_by_name`):
    /// for a vdev the part before the first comma (`net_af_xdp0`), for PCI
    /// the normalised address (`0000:3b:00.0`).
    pub fn dpdk_name(&self) -> &str {
        match self {
            Device::Pci(addr) => addr,
            Device::Vdev(s) => s.split(',').next().unwrap_or(s),
        }
    }

    /// The EAL arguments that make the device available: `["--vdev", s]` or
    /// `["-a", pci]`.
    pub fn eal_args(&self) -> [String; 2] {
        match self {
            Device::Pci(addr) => ["-a".to_owned(), addr.clone()],
            Device::Vdev(s) => ["--vdev".to_owned(), s.clone()],
        }
    }

    /// Whether this is a PCI device.
    pub fn is_pci(&self) -> bool {
        matches!(self, Device::Pci(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Pci(s) | Device::Vdev(s) => f.write_str(s),
        }
    }
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The destination, normalised to its network address (host bits
    /// cleared), with its prefix length.
    pub prefix: (IpAddr, u8),
    /// The next hop; `None` for a connected route. Always in a connected
    /// subnet of [`port`](Self::port) and of the prefix's address family.
    pub via: Option<IpAddr>,
    /// Index into [`Config::ports`] of the port the route goes out of.
    pub port: usize,
}

impl EalConfig {
    /// The full EAL argv for `rte_eal_init`: `rvsd`, `-l main,workers...`,
    /// `--main-lcore`, `--no-huge` when set, `-m`, `--no-pci` when no port is
    /// PCI, `--file-prefix` when set, each port's device arguments, then the
    /// extra [`args`](Self::args).
    pub fn args(&self, cfg: &Config) -> Vec<String> {
        let mut lcores = vec![self.main_lcore.to_string()];
        lcores.extend(cfg.dataplane.workers.iter().map(u32::to_string));
        let mut argv = vec![
            "rvsd".to_owned(),
            "-l".to_owned(),
            lcores.join(","),
            "--main-lcore".to_owned(),
            self.main_lcore.to_string(),
        ];
        if self.no_huge {
            argv.push("--no-huge".to_owned());
        }
        argv.push("-m".to_owned());
        argv.push(self.memory_mb.to_string());
        if !cfg.ports.iter().any(|p| p.device.is_pci()) {
            argv.push("--no-pci".to_owned());
        }
        if let Some(prefix) = &self.file_prefix {
            argv.push("--file-prefix".to_owned());
            argv.push(prefix.clone());
        }
        for port in &cfg.ports {
            argv.extend(port.device.eal_args());
        }
        argv.extend(self.args.iter().cloned());
        argv
    }
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            main_lcore: 0,
            memory_mb: 512,
            no_huge: true,
            file_prefix: None,
            args: Vec::new(),
        }
    }
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            workers: vec![1],
            ip_forward: false,
            burst: 32,
            rx_desc: 1024,
            tx_desc: 1024,
            mbufs: 8191,
            mbuf_cache: 256,
            icmp_ratelimit: 1000,
        }
    }
}

impl Default for NeighbourConfig {
    fn default() -> Self {
        NeighbourConfig {
            capacity: 1024,
            hold_packets: 8,
            reachable_ms: 30_000,
            gc_stale_ms: 600_000,
            retrans_ms: 1000,
            max_probes: 3,
        }
    }
}

impl Config {
    /// Reads, parses and validates the configuration file at `path`.
    ///
    /// A file that cannot be read gives an error with line and column 0.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration `text`; `source` is the file name
    /// errors and [`Config::source`] report.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
        parse::parse(text, source)
    }

    /// The index in [`ports`](Self::ports) of the port called `name`.
    pub fn port_index(&self, name: &str) -> Option<usize> {
        self.ports.iter().position(|p| p.name == name)
    }

    /// The EAL argv for this configuration; see [`EalConfig::args`].
    pub fn eal_args(&self) -> Vec<String> {
        self.eal.args(self)
    }
}

/// A configuration problem, located in the file.
///
/// Displays as `{file}:{line}:{column}: {key}: {message}`; without the
/// `{key}: ` part when the key is empty (a syntax error outside any key), and
/// as `{file}: {message}` when there is no position (the file could not be
/// read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line of the offending value (or of the table lacking a
    /// required key); 0 when the file could not be read.
    pub line: usize,
    /// 1-based column, in characters; 0 when the file could not be read.
    pub column: usize,
    /// Dotted key path of the offending value, e.g. `port[1].addresses[0]`,
    /// `dataplane.burst`, `route[0].via`; for a TOML syntax error, the
    /// best guess at the key being written; empty when there is none.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: {}", self.file.display(), self.message);
        }
        if self.key.is_empty() {
            return write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            );
        }
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}
