//! Typing and validation of the document tree into [`Config`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::tree::{self, Entry, Kind, Node};
use super::{
    CheckConfig, CheckKind, Config, ConfigError, ControlConfig, DataplaneConfig, Device,
    DownAction, EalConfig, Forward, FullnatConfig, HealthConfig, MatchConfig, MetricsConfig,
    NeighbourConfig, PortConfig, Proto, RealConfig, RouteConfig, Scheduler, ServiceConfig,
    TimeoutsConfig, MH_TABLE_SIZE,
};

type Result<T> = std::result::Result<T, ConfigError>;

/// Highest lcore id accepted (DPDK's `RTE_MAX_LCORE` is at most 1024).
const MAX_LCORE: i64 = 1023;

/// Parses and validates `text`.
pub(super) fn parse(text: &str, source: &Path) -> Result<Config> {
    let cx = Cx { text, file: source };
    let root = tree::parse(text).map_err(|e| cx.syntax_error(&e))?;
    let top = Table::new(
        &cx,
        &root,
        String::new(),
        &[
            "eal",
            "dataplane",
            "neighbour",
            "fullnat",
            "port",
            "route",
            "service",
            "control",
            "metrics",
            "health",
        ],
    )?;

    let eal_table = top.sub("eal")?;
    let eal = parse_eal(&eal_table)?;
    let mut dataplane = parse_dataplane(&top.sub("dataplane")?, &eal, &eal_table)?;
    check_lcores(&eal_table, &eal, &dataplane)?;
    let neighbour = parse_neighbour(&top.sub("neighbour")?)?;
    let fullnat = parse_fullnat(&top.sub("fullnat")?)?;
    let control = parse_control(&top.sub("control")?)?;
    let metrics = parse_metrics(&top.sub("metrics")?)?;
    let health = parse_health(&top.sub("health")?)?;

    let port_nodes = match top.get("port") {
        None => {
            return Err(cx.err(
                top.pos,
                "port",
                "at least one [[port]] is required; none is given",
            ))
        }
        Some(node) => top.array_of_tables("port", node)?,
    };
    if port_nodes.is_empty() {
        let pos = top.get("port").map_or(top.pos, |n| n.pos);
        return Err(cx.err(
            pos,
            "port",
            "at least one [[port]] is required; none is given",
        ));
    }
    let mut ports = Vec::new();
    for (i, node) in port_nodes.iter().enumerate() {
        ports.push(parse_port(&cx, node, i, &ports)?);
    }
    check_mbufs(&top.sub("dataplane")?, &mut dataplane, &ports)?;

    let mut routes = Vec::new();
    if let Some(node) = top.get("route") {
        let route_nodes = top.array_of_tables("route", node)?;
        for (i, node) in route_nodes.iter().enumerate() {
            let route = parse_route(&cx, node, i, &ports, &routes)?;
            routes.push(route);
        }
    }

    let mut services = Vec::new();
    if let Some(node) = top.get("service") {
        let service_nodes = top.array_of_tables("service", node)?;
        for (i, node) in service_nodes.iter().enumerate() {
            let service = parse_service(&cx, node, i, &ports, &routes, &services)?;
            services.push(service);
        }
    }

    Ok(Config {
        source: source.to_path_buf(),
        eal,
        dataplane,
        neighbour,
        ports,
        routes,
        fullnat,
        services,
        control,
        metrics,
        health,
    })
}

/// Each worker's mbuf pool (`mbufs * ports / workers`, see `DataplaneConfig::pool_per_worker`)
/// must hold what can be parked at once of its mbufs:
/// - a full RX ring on every port (a NIC fills its RX ring at start; `rx_desc`, and 2048 on an
///   af_xdp port, whose fill queue DPDK 22.11 fills with 2048 whatever `rx_desc` is);
/// - a full TX ring on every port of every worker (a NIC keeps sent mbufs until their descriptors
///   are recycled, and a packet redirected to a peer leaves from the peer's TX ring);
/// - the 512 the TAP driver fills each kernel-side queue with, an RX burst and a TX batch;
/// - what every worker's mempool cache may hold of it (1.5 × `mbuf_cache` each: a peer frees
///   the packets redirected to it into its own cache of the sender's pool);
/// - full redirect rings towards every peer.
///
/// Smaller pools fail at start or drop under load (`rx_nombuf`). When `mbufs` is not given, it
/// grows from its default to the least that fits.
fn check_mbufs(t: &Table<'_>, d: &mut DataplaneConfig, ports: &[PortConfig]) -> Result<()> {
    let (w, p) = (d.workers.len() as u64, ports.len() as u64);
    let taps = ports.iter().filter(|p| p.kernel.is_some()).count() as u64;
    let (rx, tx, burst) = (
        u64::from(d.rx_desc),
        u64::from(d.tx_desc),
        u64::from(d.burst),
    );
    let rx_all: u64 = ports
        .iter()
        .map(|pc| {
            if pc.device.dpdk_name().starts_with("net_af_xdp") {
                rx.max(AF_XDP_FILL)
            } else {
                rx
            }
        })
        .sum();
    let cache = (u64::from(d.mbuf_cache) * 3).div_ceil(2);
    let tap = u64::from(super::TAP_DESC);
    // What its rings towards its peers may hold of a worker's mbufs when they fall behind.
    let peers = w.saturating_sub(1) * (u64::from(d.redirect_ring) - 1);
    let need = rx_all + w * p * tx + taps * tap + 2 * burst + w * cache + peers;
    let least = (need * w).div_ceil(p.max(1));
    if u64::from(d.mbufs) >= least {
        return Ok(());
    }
    if t.get("mbufs").is_none() {
        d.mbufs = u32::try_from(least).map_err(|_| {
            t.err(
                "mbufs",
                format!("the mbuf pools would need {least} mbufs per port, too many"),
            )
        })?;
        return Ok(());
    }
    Err(t.err(
        "mbufs",
        format!(
            "mbufs (per port) must be at least {least}: each worker's pool, mbufs * ports / \
             workers, must hold every port's RX ring (rx_desc, at least {AF_XDP_FILL} on \
             af_xdp) + workers * ports * tx_desc + kernel ports * {tap} + 2 * burst + workers \
             * 1.5 * mbuf_cache + (workers - 1) * (redirect_ring - 1) = {rx_all} + {w} * {p} * \
             {tx} + {taps} * {tap} + 2 * {burst} + {w} * {cache} + {peers} = {need}, got {}",
            d.mbufs
        ),
    ))
}

/// Mbufs DPDK 22.11's af_xdp PMD puts in each RX queue's fill queue at set-up
/// (`ETH_AF_XDP_DFLT_NUM_DESCS`), whatever `rx_desc` is.
const AF_XDP_FILL: u64 = 2048;

/// The file being parsed, for locating errors.
struct Cx<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Cx<'_> {
    /// An error at byte offset `pos`.
    fn err(&self, pos: usize, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, pos);
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            key: key.into(),
            message: message.into(),
        }
    }

    /// A TOML syntax error.
    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let pos = e.span().map_or(0, |s| s.start);
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        self.err(
            pos,
            guess_key(self.text, pos),
            format!("invalid TOML: {message}"),
        )
    }
}

/// 1-based line and column (in characters) of byte offset `pos`.
pub(super) fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let mut pos = pos.min(text.len());
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    let before = text.get(..pos).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// Best guess at the dotted key being written at byte offset `pos`, for
/// syntax errors (the document could not be parsed, so this reads lines).
fn guess_key(text: &str, pos: usize) -> String {
    let (err_line, _) = line_col(text, pos);
    let mut table = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate().take(err_line) {
        let t = line.trim();
        let header = if let Some(rest) = t.strip_prefix("[[") {
            rest.split("]]").next().map(|name| (name.trim(), true))
        } else if let Some(rest) = t.strip_prefix('[') {
            rest.split(']').next().map(|name| (name.trim(), false))
        } else {
            None
        };
        match header {
            Some((name, true)) => {
                let count = counts.entry(name.to_owned()).or_insert(0);
                table = format!("{name}[{count}]");
                *count += 1;
            }
            Some((name, false)) => table = name.to_owned(),
            None if n + 1 == err_line => {
                if let Some((key, _)) = t.split_once('=') {
                    let key = key.trim();
                    let bare = |c: char| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c);
                    if !key.is_empty() && key.chars().all(bare) {
                        return join(&table, key);
                    }
                }
            }
            None => {}
        }
    }
    table
}

/// `parent.key`, or `key` at the top level.
fn join(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// A table being read: its keys are checked against the allowed ones.
struct Table<'a> {
    cx: &'a Cx<'a>,
    /// Dotted path of the table; empty at the top level.
    path: String,
    /// Position of the table (of its header), or of its parent when absent.
    pos: usize,
    entries: &'a [Entry],
}

impl<'a> Table<'a> {
    /// Reads `node` as a table that may hold only the `allowed` keys.
    fn new(cx: &'a Cx<'a>, node: &'a Node, path: String, allowed: &[&str]) -> Result<Table<'a>> {
        let Kind::Table(entries) = &node.kind else {
            return Err(cx.err(
                node.pos,
                path,
                format!("expected a table, found {}", node.kind.type_name()),
            ));
        };
        if let Some(e) = entries.iter().find(|e| !allowed.contains(&e.key.as_str())) {
            return Err(cx.err(
                e.key_pos,
                join(&path, &e.key),
                format!(
                    "unknown key `{}`; allowed keys here: {}",
                    e.key,
                    allowed.join(", ")
                ),
            ));
        }
        Ok(Table {
            cx,
            path,
            pos: node.pos,
            entries,
        })
    }

    /// The sub-table `key` of the top level (an empty one when absent).
    fn sub(&self, key: &str) -> Result<Table<'a>> {
        let allowed: &[&str] = match key {
            "eal" => &[
                "main_lcore",
                "memory_mb",
                "no_huge",
                "file_prefix",
                "args",
                "lcores",
            ],
            "dataplane" => &[
                "workers",
                "ip_forward",
                "burst",
                "rx_desc",
                "tx_desc",
                "mbufs",
                "mbuf_cache",
                "icmp_ratelimit",
                "redirect_ring",
            ],
            "neighbour" => &[
                "capacity",
                "hold_packets",
                "reachable_ms",
                "gc_stale_ms",
                "retrans_ms",
                "max_probes",
            ],
            "control" => &["socket", "mode"],
            "metrics" => &["listen"],
            "health" => &["source", "down_action"],
            "fullnat" => &[
                "sessions",
                "toa",
                "mss_clamp",
                "lport_min",
                "lport_max",
                "lport_reuse_delay_s",
                "expire_quiescent_template",
                "timeouts",
            ],
            _ => &[],
        };
        self.table(key, allowed)
    }

    /// The sub-table `key` that may hold only the `allowed` keys (an empty
    /// one when absent).
    fn table(&self, key: &str, allowed: &[&str]) -> Result<Table<'a>> {
        match self.get(key) {
            Some(node) => Table::new(self.cx, node, self.path(key), allowed),
            None => Ok(Table {
                cx: self.cx,
                path: self.path(key),
                pos: self.pos,
                entries: &[],
            }),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    /// Dotted path of `key` in this table.
    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Position of `key`'s value, or of the table when it is absent.
    fn pos_of(&self, key: &str) -> usize {
        self.get(key).map_or(self.pos, |n| n.pos)
    }

    /// An error about `key` (at its value, or at the table when absent).
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.cx.err(self.pos_of(key), self.path(key), message)
    }

    /// A required key.
    fn required(&self, key: &str, what: &str) -> Result<&'a Node> {
        self.get(key).ok_or_else(|| {
            self.cx.err(
                self.pos,
                self.path(key),
                format!("missing required key `{key}` ({what})"),
            )
        })
    }

    /// `node` (the value of `key`) as an array of tables.
    fn array_of_tables(&self, key: &str, node: &'a Node) -> Result<&'a [Node]> {
        match &node.kind {
            Kind::Array(items) => Ok(items),
            other => {
                // The header as written: the path without array indices.
                let path = self.path(key);
                let mut header = String::new();
                let mut in_index = false;
                for c in path.chars() {
                    match c {
                        '[' => in_index = true,
                        ']' => in_index = false,
                        c if !in_index => header.push(c),
                        _ => {}
                    }
                }
                Err(self.cx.err(
                    node.pos,
                    path,
                    format!(
                        "expected an array of tables ([[{header}]]), found {}",
                        other.type_name()
                    ),
                ))
            }
        }
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(node) => as_bool(self.cx, node, &self.path(key)),
        }
    }

    /// An integer in `min..=max`.
    fn int<T: TryFrom<i64>>(&self, key: &str, default: T, min: i64, max: i64) -> Result<T> {
        match self.get(key) {
            None => Ok(default),
            Some(node) => as_int(self.cx, node, &self.path(key), key, min, max),
        }
    }

    /// An optional integer in `min..=max`.
    fn opt_int<T: TryFrom<i64>>(&self, key: &str, min: i64, max: i64) -> Result<Option<T>> {
        self.get(key)
            .map(|node| as_int(self.cx, node, &self.path(key), key, min, max))
            .transpose()
    }

    /// The port named by the string `key`, if given; an error naming the
    /// ports when there is no such port.
    fn port_ref<'p>(
        &self,
        key: &str,
        ports: &'p [PortConfig],
    ) -> Result<Option<(usize, &'p PortConfig)>> {
        let Some(name) = self.opt_str(key)? else {
            return Ok(None);
        };
        match ports.iter().enumerate().find(|(_, p)| p.name == name) {
            Some(found) => Ok(Some(found)),
            None => {
                let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
                Err(self.err(
                    key,
                    format!(
                        "no port is named `{name}`; the ports are: {}",
                        names.join(", ")
                    ),
                ))
            }
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key)
            .map(|node| as_str(self.cx, node, &self.path(key)))
            .transpose()
    }

    /// An optional array; each element with its path.
    fn array(&self, key: &str) -> Result<Option<Vec<(&'a Node, String)>>> {
        let Some(node) = self.get(key) else {
            return Ok(None);
        };
        let path = self.path(key);
        match &node.kind {
            Kind::Array(items) => Ok(Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n, format!("{path}[{i}]")))
                    .collect(),
            )),
            other => Err(self.cx.err(
                node.pos,
                path,
                format!("expected an array, found {}", other.type_name()),
            )),
        }
    }
}

fn type_err(cx: &Cx, node: &Node, path: &str, expected: &str) -> ConfigError {
    cx.err(
        node.pos,
        path,
        format!("expected {expected}, found {}", node.kind.type_name()),
    )
}

fn as_bool(cx: &Cx, node: &Node, path: &str) -> Result<bool> {
    match node.kind {
        Kind::Bool(b) => Ok(b),
        _ => Err(type_err(cx, node, path, "a boolean (true or false)")),
    }
}

fn as_str<'n>(cx: &Cx, node: &'n Node, path: &str) -> Result<&'n str> {
    match &node.kind {
        Kind::Str(s) => Ok(s),
        _ => Err(type_err(cx, node, path, "a string")),
    }
}

/// An integer in `min..=max`; `what` names it in the message.
fn as_int<T: TryFrom<i64>>(
    cx: &Cx,
    node: &Node,
    path: &str,
    what: &str,
    min: i64,
    max: i64,
) -> Result<T> {
    let Kind::Int(v) = node.kind else {
        return Err(type_err(cx, node, path, "an integer"));
    };
    if v < min || v > max {
        return Err(cx.err(
            node.pos,
            path,
            format!("{what} must be between {min} and {max}, got {v}"),
        ));
    }
    T::try_from(v).map_err(|_| cx.err(node.pos, path, format!("{what} is out of range, got {v}")))
}

fn parse_eal(t: &Table) -> Result<EalConfig> {
    let d = EalConfig::default();
    let file_prefix = match t.opt_str("file_prefix")? {
        None => None,
        Some(p) => {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(t.err(
                    "file_prefix",
                    format!(
                        "file_prefix must be a non-empty name of letters, digits, `_`, `-` and `.`, got {p:?}"
                    ),
                ));
            }
            Some(p.to_owned())
        }
    };
    let mut args = Vec::new();
    for (node, path) in t.array("args")?.unwrap_or_default() {
        let arg = as_str(t.cx, node, &path)?;
        if arg.is_empty() {
            return Err(t
                .cx
                .err(node.pos, path, "an EAL argument must not be empty"));
        }
        args.push(arg.to_owned());
    }
    let lcores = match t.opt_str("lcores")? {
        None => None,
        Some(map) => {
            parse_lcores(map).map_err(|m| t.err("lcores", m))?;
            Some(map.to_owned())
        }
    };
    Ok(EalConfig {
        main_lcore: t.int("main_lcore", d.main_lcore, 0, MAX_LCORE)?,
        memory_mb: t.int("memory_mb", d.memory_mb, 1, 1 << 20)?,
        no_huge: t.bool("no_huge", d.no_huge)?,
        file_prefix,
        args,
        lcores,
    })
}

/// The lcore ids of an EAL `--lcores` map: comma-separated `LCORE` or
/// `LCORE@CPU` entries, each lcore once.
fn parse_lcores(map: &str) -> std::result::Result<Vec<u32>, String> {
    let id = |s: &str| -> Option<u32> {
        if s.is_empty() || s.len() > 4 || !s.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().filter(|&v| i64::from(v) <= MAX_LCORE)
    };
    let mut lcores: Vec<u32> = Vec::new();
    for entry in map.split(',') {
        let (lcore, cpu) = match entry.split_once('@') {
            Some((l, c)) => (id(l), id(c).map(Some)),
            None => (id(entry), Some(None)),
        };
        let (Some(lcore), Some(_)) = (lcore, cpu) else {
            return Err(format!(
                "lcores must be comma-separated LCORE or LCORE@CPU entries (ids 0..={MAX_LCORE}, no spaces) like \"0@0,1@0,2@1\"; {entry:?} is not one"
            ));
        };
        if lcores.contains(&lcore) {
            return Err(format!(
                "lcore {lcore} appears twice in lcores {map:?}; each lcore is mapped once"
            ));
        }
        lcores.push(lcore);
    }
    Ok(lcores)
}

/// Checks that `eal.lcores`, when given, maps the main lcore and every
/// worker.
fn check_lcores(t: &Table, eal: &EalConfig, dataplane: &DataplaneConfig) -> Result<()> {
    let Some(map) = &eal.lcores else {
        return Ok(());
    };
    let mapped = parse_lcores(map).map_err(|m| t.err("lcores", m))?;
    let missing = |what: String| {
        t.err(
            "lcores",
            format!(
                "lcores {map:?} does not map {what}; the main lcore and every worker must be in it"
            ),
        )
    };
    if !mapped.contains(&eal.main_lcore) {
        return Err(missing(format!(
            "the main lcore {} (eal.main_lcore)",
            eal.main_lcore
        )));
    }
    if let Some((i, w)) = dataplane
        .workers
        .iter()
        .enumerate()
        .find(|(_, w)| !mapped.contains(w))
    {
        return Err(missing(format!(
            "worker lcore {w} (dataplane.workers[{i}])"
        )));
    }
    Ok(())
}

fn is_pow2_desc(v: u16) -> bool {
    v.is_power_of_two() && (64..=16384).contains(&v)
}

fn parse_dataplane(t: &Table, eal: &EalConfig, eal_table: &Table) -> Result<DataplaneConfig> {
    let d = DataplaneConfig::default();
    let workers = match t.array("workers")? {
        None => d.workers.clone(),
        Some(items) => {
            if items.is_empty() {
                return Err(t.err(
                    "workers",
                    "workers must list at least one lcore id, e.g. [1]",
                ));
            }
            let mut workers: Vec<u32> = Vec::new();
            for (node, path) in items {
                let lcore: u32 = as_int(t.cx, node, &path, "a worker lcore", 0, MAX_LCORE)?;
                if lcore == eal.main_lcore {
                    return Err(t.cx.err(
                        node.pos,
                        path,
                        format!(
                            "lcore {lcore} is the main lcore (eal.main_lcore); workers need lcores of their own"
                        ),
                    ));
                }
                if let Some(j) = workers.iter().position(|&w| w == lcore) {
                    return Err(t.cx.err(
                        node.pos,
                        path,
                        format!("lcore {lcore} is listed twice (also dataplane.workers[{j}]); workers must be distinct"),
                    ));
                }
                workers.push(lcore);
            }
            workers
        }
    };
    if t.get("workers").is_none() && workers.contains(&eal.main_lcore) {
        // The default worker collides with the configured main lcore.
        return Err(eal_table.err(
            "main_lcore",
            format!(
                "main lcore {} is also the default worker lcore (dataplane.workers defaults to [1]); set dataplane.workers to other lcores",
                eal.main_lcore
            ),
        ));
    }
    // At least 4: vector RX paths (ixgbe, i40e, ice) round a burst down to a multiple of 4.
    let burst: u16 = t.int("burst", d.burst, 4, 512)?;
    let rx_desc: u16 = t.int("rx_desc", d.rx_desc, 0, i64::from(u16::MAX))?;
    if !is_pow2_desc(rx_desc) {
        return Err(t.err(
            "rx_desc",
            format!("rx_desc must be a power of two between 64 and 16384, got {rx_desc}"),
        ));
    }
    let tx_desc: u16 = t.int("tx_desc", d.tx_desc, 0, i64::from(u16::MAX))?;
    if !is_pow2_desc(tx_desc) {
        return Err(t.err(
            "tx_desc",
            format!("tx_desc must be a power of two between 64 and 16384, got {tx_desc}"),
        ));
    }
    // Checked against the ports once they are read (`check_mbufs`).
    let mbufs: u32 = t.int("mbufs", d.mbufs, 1, 1 << 30)?;
    let mbuf_cache: u32 = t.int("mbuf_cache", d.mbuf_cache, 0, 512)?;
    if u64::from(mbuf_cache) * 3 > u64::from(mbufs) * 2 {
        return Err(t.err(
            "mbuf_cache",
            format!(
                "mbuf_cache must be at most mbufs / 1.5 = {}, got {mbuf_cache}",
                u64::from(mbufs) * 2 / 3
            ),
        ));
    }
    let redirect_ring: u32 = t.int("redirect_ring", d.redirect_ring, 0, i64::from(u32::MAX))?;
    // A ring of 2^n slots holds 2^n - 1 packets, and a worker hands over up to 64 at once: 128
    // is the least that never refuses part of a full hand-over on an empty ring.
    if !redirect_ring.is_power_of_two() || !(128..=65536).contains(&redirect_ring) {
        return Err(t.err(
            "redirect_ring",
            format!(
                "redirect_ring must be a power of two between 128 and 65536, got {redirect_ring}"
            ),
        ));
    }
    Ok(DataplaneConfig {
        workers,
        ip_forward: t.bool("ip_forward", d.ip_forward)?,
        burst,
        rx_desc,
        tx_desc,
        mbufs,
        mbuf_cache,
        icmp_ratelimit: t.int("icmp_ratelimit", d.icmp_ratelimit, 0, 1_000_000)?,
        redirect_ring,
    })
}

/// Longest session timeout in seconds: 2^31 ms.
const MAX_TIMEOUT_S: i64 = super::MAX_TIMEOUT_S as i64;

const TIMEOUT_KEYS: &[&str] = &[
    "tcp",
    "tcpfin",
    "udp",
    "syn_sent",
    "syn_recv",
    "close_wait",
    "last_ack",
    "time_wait",
    "close",
];

fn parse_fullnat(t: &Table) -> Result<FullnatConfig> {
    let d = FullnatConfig::default();
    let lport_min: u16 = t.int("lport_min", d.lport_min, 1, 65535)?;
    let lport_max: u16 = t.int("lport_max", d.lport_max, 1, 65535)?;
    if lport_min >= lport_max {
        return Err(if t.get("lport_max").is_some() {
            t.err(
                "lport_max",
                format!("lport_max must be greater than lport_min ({lport_min}), got {lport_max}"),
            )
        } else {
            t.err(
                "lport_min",
                format!("lport_min must be less than lport_max ({lport_max}), got {lport_min}"),
            )
        });
    }
    let tt = t.table("timeouts", TIMEOUT_KEYS)?;
    let dt = d.timeouts;
    let timeout = |key: &str, default: u32| tt.int(key, default, 1, MAX_TIMEOUT_S);
    let timeouts = TimeoutsConfig {
        tcp: timeout("tcp", dt.tcp)?,
        tcpfin: timeout("tcpfin", dt.tcpfin)?,
        udp: timeout("udp", dt.udp)?,
        syn_sent: timeout("syn_sent", dt.syn_sent)?,
        syn_recv: timeout("syn_recv", dt.syn_recv)?,
        close_wait: timeout("close_wait", dt.close_wait)?,
        last_ack: timeout("last_ack", dt.last_ack)?,
        time_wait: timeout("time_wait", dt.time_wait)?,
        close: timeout("close", dt.close)?,
    };
    Ok(FullnatConfig {
        sessions: t.int("sessions", d.sessions, 1, 1 << 26)?,
        toa: t.bool("toa", d.toa)?,
        mss_clamp: t.opt_int("mss_clamp", 536, 9000)?,
        lport_min,
        lport_max,
        lport_reuse_delay_s: t.int("lport_reuse_delay_s", d.lport_reuse_delay_s, 0, 86_400)?,
        expire_quiescent_template: t
            .bool("expire_quiescent_template", d.expire_quiescent_template)?,
        timeouts,
    })
}

/// The `[metrics]` table: `listen`, an `IP:PORT` socket address (IPv6 as `[::1]:9400`).
fn parse_metrics(t: &Table) -> Result<MetricsConfig> {
    let listen = match t.opt_str("listen")? {
        None => None,
        Some(s) => match s.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                return Err(t.err(
                    "listen",
                    format!(
                        "listen must be a socket address IP:PORT like \"127.0.0.1:9400\" or \"[::1]:9400\", got {s:?}"
                    ),
                ))
            }
        },
    };
    Ok(MetricsConfig { listen })
}

/// Longest Unix socket path (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

fn parse_control(t: &Table) -> Result<ControlConfig> {
    let d = ControlConfig::default();
    let socket = match t.opt_str("socket")? {
        None => d.socket,
        Some(p) => {
            if p.is_empty() || p.ends_with('/') || p.contains('\0') {
                return Err(t.err(
                    "socket",
                    format!("socket must be the path of a socket file, like \"/run/rvsd.sock\", got {p:?}"),
                ));
            }
            if p.len() > MAX_SOCKET_PATH {
                return Err(t.err(
                    "socket",
                    format!(
                        "socket path must be at most {MAX_SOCKET_PATH} bytes (a Unix socket's limit), got {}",
                        p.len()
                    ),
                ));
            }
            p.into()
        }
    };
    let mode = match t.get("mode") {
        None => d.mode,
        Some(node) => {
            let Kind::Str(s) = &node.kind else {
                return Err(t.err(
                    "mode",
                    format!(
                        "expected an octal string like \"0600\", found {}",
                        node.kind.type_name()
                    ),
                ));
            };
            let digits = s.strip_prefix("0o").unwrap_or(s);
            let mode = if !digits.is_empty()
                && digits.len() <= 4
                && digits.chars().all(|c| ('0'..='7').contains(&c))
            {
                u32::from_str_radix(digits, 8).ok()
            } else {
                None
            };
            match mode {
                Some(m) if m <= 0o777 && m & 0o200 != 0 => m,
                Some(m) if m > 0o777 => {
                    return Err(t.err(
                        "mode",
                        format!("mode must be at most 0777 (no setuid, setgid or sticky bits), got {s:?}"),
                    ))
                }
                Some(_) => {
                    return Err(t.err(
                        "mode",
                        format!("mode must give the owner write permission (0200; connecting needs it), got {s:?}"),
                    ))
                }
                None => {
                    return Err(t.err(
                        "mode",
                        format!("mode must be an octal string like \"0600\" or \"0660\", got {s:?}"),
                    ))
                }
            }
        }
    };
    Ok(ControlConfig { socket, mode })
}

fn parse_neighbour(t: &Table) -> Result<NeighbourConfig> {
    let d = NeighbourConfig::default();
    let reachable_ms: u32 = t.int("reachable_ms", d.reachable_ms, 1, 86_400_000)?;
    let gc_stale_ms: u32 = t.int("gc_stale_ms", d.gc_stale_ms, 1, 604_800_000)?;
    if gc_stale_ms < reachable_ms {
        return Err(t.err(
            "gc_stale_ms",
            format!("gc_stale_ms must not be less than reachable_ms ({reachable_ms}), got {gc_stale_ms}"),
        ));
    }
    Ok(NeighbourConfig {
        capacity: t.int("capacity", d.capacity, 1, 1 << 24)?,
        hold_packets: t.int("hold_packets", d.hold_packets, 0, 4096)?,
        reachable_ms,
        gc_stale_ms,
        retrans_ms: t.int("retrans_ms", d.retrans_ms, 1, 60_000)?,
        max_probes: t.int("max_probes", d.max_probes, 1, 255)?,
    })
}

const PORT_KEYS: &[&str] = &[
    "name",
    "device",
    "mac",
    "mtu",
    "addresses",
    "rss",
    "promiscuous",
    "kernel",
];

fn parse_port(cx: &Cx, node: &Node, i: usize, earlier: &[PortConfig]) -> Result<PortConfig> {
    let t = Table::new(cx, node, format!("port[{i}]"), PORT_KEYS)?;

    let name_node = t.required("name", "a unique name for the port, used by routes")?;
    let name = as_str(cx, name_node, &t.path("name"))?;
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return Err(t.err(
            "name",
            format!("a port name must be 1 to 32 letters, digits, `_`, `-` or `.`, got {name:?}"),
        ));
    }
    if let Some(j) = earlier.iter().position(|p| p.name == name) {
        return Err(t.err(
            "name",
            format!("port name `{name}` is already used by port[{j}]; names must be unique"),
        ));
    }

    let device_node = t.required(
        "device",
        "a DPDK vdev string like \"net_null0\" or a PCI address like \"0000:3b:00.0\"",
    )?;
    let device_str = as_str(cx, device_node, &t.path("device"))?;
    let device = parse_device(device_str).map_err(|m| t.err("device", m))?;
    if let Some((j, p)) = earlier
        .iter()
        .enumerate()
        .find(|(_, p)| p.device.dpdk_name() == device.dpdk_name())
    {
        return Err(t.err(
            "device",
            format!(
                "device `{}` is already used by port[{j}] (`{}`); each port needs its own device",
                device.dpdk_name(),
                p.name
            ),
        ));
    }

    let mac = match t.opt_str("mac")? {
        None => None,
        Some(s) => Some(parse_mac(s).map_err(|m| t.err("mac", m))?),
    };

    let mut addresses: Vec<(IpAddr, u8)> = Vec::new();
    for (node, path) in t.array("addresses")?.unwrap_or_default() {
        let s = as_str(cx, node, &path)?;
        let (addr, len) = parse_cidr(s).map_err(|m| cx.err(node.pos, &path, m))?;
        check_host_address(addr, len).map_err(|m| cx.err(node.pos, &path, m))?;
        if addresses.iter().any(|(a, _)| *a == addr) {
            return Err(cx.err(
                node.pos,
                path,
                format!("address {addr} is listed twice on this port"),
            ));
        }
        if let Some((j, p)) = earlier
            .iter()
            .enumerate()
            .find(|(_, p)| p.addresses.iter().any(|(a, _)| *a == addr))
        {
            return Err(cx.err(
                node.pos,
                path,
                format!(
                    "address {addr} is already owned by port[{j}] (`{}`); an address belongs to one port",
                    p.name
                ),
            ));
        }
        addresses.push((addr, len));
    }

    let kernel = match t.opt_str("kernel")? {
        None => None,
        Some(k) => {
            if k.is_empty()
                || k.len() > 15
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return Err(t.err(
                    "kernel",
                    format!("a kernel interface name must be 1 to 15 letters, digits, `_`, `-` or `.`, got {k:?}"),
                ));
            }
            if let Some((j, _)) = earlier
                .iter()
                .enumerate()
                .find(|(_, p)| p.kernel.as_deref() == Some(k))
            {
                return Err(t.err(
                    "kernel",
                    format!("kernel interface `{k}` is already used by port[{j}]"),
                ));
            }
            Some(k.to_owned())
        }
    };

    Ok(PortConfig {
        name: name.to_owned(),
        device,
        mac,
        mtu: t.int("mtu", 1500, 68, i64::from(super::MAX_MTU))?,
        addresses,
        rss: t.bool("rss", true)?,
        promiscuous: t.bool("promiscuous", false)?,
        kernel,
    })
}

fn parse_route(
    cx: &Cx,
    node: &Node,
    i: usize,
    ports: &[PortConfig],
    earlier: &[RouteConfig],
) -> Result<RouteConfig> {
    let t = Table::new(cx, node, format!("route[{i}]"), &["prefix", "via", "port"])?;

    let prefix_node = t.required("prefix", "the destination, like \"0.0.0.0/0\"")?;
    let prefix_str = as_str(cx, prefix_node, &t.path("prefix"))?;
    let (addr, len) = parse_cidr(prefix_str).map_err(|m| t.err("prefix", m))?;
    let prefix = (network(addr, len), len);
    if let Some(j) = earlier.iter().position(|r| r.prefix == prefix) {
        return Err(t.err(
            "prefix",
            format!(
                "a route for {}/{} is already given by route[{j}]",
                prefix.0, prefix.1
            ),
        ));
    }

    let port = t.port_ref("port", ports)?;

    let via = match t.opt_str("via")? {
        None => None,
        Some(s) => {
            let via: IpAddr = s.parse().map_err(|_| {
                t.err(
                    "via",
                    format!("via must be an IP address like \"198.51.100.254\" (no prefix length), got {s:?}"),
                )
            })?;
            Some(via)
        }
    };

    let port = match via {
        None => port.map(|(idx, _)| idx).ok_or_else(|| {
            cx.err(
                t.pos,
                t.path("port"),
                "a connected route (one without `via`) needs `port`, the port its prefix is on",
            )
        })?,
        Some(via) => {
            if via.is_ipv4() != addr.is_ipv4() {
                return Err(t.err(
                    "via",
                    format!(
                        "via {via} is {} but prefix {}/{} is {}; they must be of the same family",
                        family(via),
                        prefix.0,
                        prefix.1,
                        family(addr)
                    ),
                ));
            }
            if via.is_unspecified() || via.is_multicast() || via == IpAddr::V4(Ipv4Addr::BROADCAST)
            {
                return Err(t.err("via", format!("via must be a unicast address, got {via}")));
            }
            if let Some(p) = ports
                .iter()
                .find(|p| p.addresses.iter().any(|(a, _)| *a == via))
            {
                return Err(t.err(
                    "via",
                    format!(
                        "via {via} is an address of rvs itself (port `{}`); the next hop must be another host",
                        p.name
                    ),
                ));
            }
            match port {
                Some((idx, p)) => {
                    if !p.addresses.iter().any(|&(a, l)| contains(a, l, via)) {
                        return Err(t.err(
                            "via",
                            format!(
                                "via {via} is not in a connected subnet of port `{}` ({})",
                                p.name,
                                subnets(p)
                            ),
                        ));
                    }
                    idx
                }
                None => port_for_addr(ports, "via", via).map_err(|m| {
                    t.err(
                        "via",
                        match m {
                            NoPort::Ambiguous(m) => format!("{m}; say which with `port`"),
                            NoPort::None(m) => m,
                        },
                    )
                })?,
            }
        }
    };

    Ok(RouteConfig { prefix, via, port })
}

const SERVICE_KEYS: &[&str] = &[
    "proto",
    "vip",
    "vport",
    "scheduler",
    "sched_flags",
    "mh_table_size",
    "persistent",
    "netmask",
    "forward",
    "port",
    "lips",
    "lip_port",
    "real",
    "check",
    "mark",
    "match",
];

/// The keys of `[service.match]`.
const MATCH_KEYS: &[&str] = &["proto", "dst", "dport", "src"];

/// `mark` and `[service.match]` of a match service (None when `mark` is absent).
fn parse_match(cx: &Cx, t: &Table, earlier: &[ServiceConfig]) -> Result<Option<MatchConfig>> {
    let Some(mark) = t.opt_int::<u32>("mark", 1, u32::MAX.into())? else {
        if t.get("match").is_some() {
            return Err(t.err("match", "[service.match] needs `mark`"));
        }
        return Ok(None);
    };
    for k in ["vip", "vport"] {
        if t.get(k).is_some() {
            return Err(t.err(
                k,
                format!("`{k}` and `mark` are mutually exclusive (a match service is defined by [service.match])"),
            ));
        }
    }
    if let Some(j) = earlier
        .iter()
        .position(|s| s.mark.as_ref().is_some_and(|m| m.mark == mark))
    {
        return Err(t.err(
            "mark",
            format!("mark {mark} is already defined by service[{j}]"),
        ));
    }
    if t.get("match").is_none() {
        return Err(t.err(
            "match",
            "missing required table [service.match] (a service with `mark` is defined by its match)",
        ));
    }
    let m = t.table("match", MATCH_KEYS)?;
    let proto_node = m.required("proto", "\"tcp\" or \"udp\"")?;
    let proto = match as_str(cx, proto_node, &m.path("proto"))? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => {
            return Err(m.err(
                "proto",
                format!("proto must be \"tcp\" or \"udp\", got {other:?}"),
            ))
        }
    };
    let prefix = |key: &str| -> Result<Option<rvs_core::Prefix>> {
        let Some(node) = m.get(key) else {
            return Ok(None);
        };
        let v = as_str(cx, node, &m.path(key))?;
        match v.parse::<rvs_core::Prefix>() {
            Ok(p) if p.addr.is_ipv4() => Ok(Some(p)),
            _ => Err(m.err(
                key,
                format!("{key} must be an IPv4 prefix like \"203.0.113.0/24\", got {v:?}"),
            )),
        }
    };
    let Some(dst) = prefix("dst")? else {
        m.required("dst", "the destination prefix, like \"203.0.113.0/24\"")?;
        unreachable!("dst is present");
    };
    let src = prefix("src")?;
    let dport_node = m.required("dport", "a port like \"80\" or a range like \"8000-8100\"")?;
    let ds = as_str(cx, dport_node, &m.path("dport"))?;
    let num = |x: &str| x.trim().parse::<u16>().ok().filter(|&p| p > 0);
    let dport = match ds.split_once('-') {
        None => num(ds).map(|p| (p, p)),
        Some((a, b)) => num(a).zip(num(b)).filter(|(a, b)| a <= b),
    }
    .ok_or_else(|| {
        m.err(
            "dport",
            format!("dport must be a port 1..=65535 like \"80\" or a range like \"8000-8100\", got {ds:?}"),
        )
    })?;
    Ok(Some(MatchConfig {
        mark,
        proto,
        dst,
        dport,
        src,
    }))
}

/// The keys of `[service.check]` and `[service.real.check]`.
const CHECK_KEYS: &[&str] = &[
    "type",
    "port",
    "interval_ms",
    "timeout_ms",
    "rise",
    "fall",
    "path",
    "expect_status",
    "expect_body",
    "send",
    "expect",
];

/// The `[health]` table: `source` (an IP address) and `down_action`.
fn parse_health(t: &Table) -> Result<HealthConfig> {
    let source = match t.get("source") {
        None => None,
        Some(node) => Some(ip_value(
            t.cx,
            node,
            &t.path("source"),
            "source (the local address health checks are sent from)",
        )?),
    };
    let down_action = match t.opt_str("down_action")? {
        None | Some("quiesce") => DownAction::Quiesce,
        Some(other) => {
            return Err(t.err(
                "down_action",
                format!("down_action must be \"quiesce\" (the only action for now), got {other:?}"),
            ))
        }
    };
    Ok(HealthConfig {
        source,
        down_action,
    })
}

/// The error for a missing required `key` of table `t`.
fn missing(t: &Table, key: &str, what: &str) -> ConfigError {
    t.cx.err(
        t.pos,
        t.path(key),
        format!("missing required key `{key}` ({what})"),
    )
}

/// The `check` sub-table of `parent` (a service or a real server), if any.
/// Keys it leaves out come from `base` (the service's check, for a real
/// server's), else the defaults; `real_port` is the port checked by default
/// (`None` for a service: each real server's own).
fn parse_check(
    parent: &Table,
    base: Option<&CheckConfig>,
    real_port: Option<u16>,
) -> Result<Option<CheckConfig>> {
    if parent.get("check").is_none() {
        return Ok(None);
    }
    let t = parent.table("check", CHECK_KEYS)?;
    let base_kind = base.map(|b| &b.kind);
    let type_name = match t.opt_str("type")? {
        Some(s) => s,
        None => match base_kind {
            Some(CheckKind::None) => "none",
            Some(CheckKind::Tcp) => "tcp",
            Some(CheckKind::Icmp) => "icmp",
            Some(CheckKind::Http { .. }) => "http",
            Some(CheckKind::Udp { .. }) => "udp",
            None => {
                return Err(missing(
                    &t,
                    "type",
                    "\"tcp\", \"http\", \"udp\", \"icmp\" or \"none\"",
                ))
            }
        },
    };
    let only = |keys: &[&str], kind: &str| -> Result<()> {
        for k in keys {
            if t.get(k).is_some() {
                return Err(t.err(
                    k,
                    format!(
                        "{k} applies to type = \"{kind}\" checks only, this one is {type_name:?}"
                    ),
                ));
            }
        }
        Ok(())
    };
    let opt_string =
        |key: &str| -> Result<Option<String>> { Ok(t.opt_str(key)?.map(str::to_owned)) };
    let kind = match type_name {
        "none" => {
            if let Some(e) = t.entries.iter().find(|e| e.key != "type") {
                return Err(t.err(
                    &e.key,
                    format!("type = \"none\" takes no other key, got `{}`", e.key),
                ));
            }
            return Ok(Some(CheckConfig::new(CheckKind::None)));
        }
        "tcp" => {
            only(&["path", "expect_status", "expect_body"], "http")?;
            only(&["send", "expect"], "udp")?;
            CheckKind::Tcp
        }
        "icmp" => {
            only(&["path", "expect_status", "expect_body"], "http")?;
            only(&["send", "expect"], "udp")?;
            CheckKind::Icmp
        }
        "http" => {
            only(&["send", "expect"], "udp")?;
            let (bpath, bstatus, bbody) = match base_kind {
                Some(CheckKind::Http {
                    path,
                    expect_status,
                    expect_body,
                }) => (path.clone(), *expect_status, expect_body.clone()),
                _ => ("/".to_owned(), None, None),
            };
            let path = opt_string("path")?.unwrap_or(bpath);
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(t.err(
                    "path",
                    format!("path must start with `/` and hold no spaces or control characters, got {path:?}"),
                ));
            }
            let expect_status = t.opt_int("expect_status", 100, 599)?.or(bstatus);
            let expect_body = opt_string("expect_body")?.or(bbody);
            CheckKind::Http {
                path,
                expect_status,
                expect_body,
            }
        }
        "udp" => {
            only(&["path", "expect_status", "expect_body"], "http")?;
            let (bsend, bexpect) = match base_kind {
                Some(CheckKind::Udp { send, expect }) => (Some(send.clone()), expect.clone()),
                _ => (None, None),
            };
            let send = match (opt_string("send")?, bsend) {
                (Some(s), _) | (None, Some(s)) => s,
                (None, None) => {
                    return Err(missing(
                        &t,
                        "send",
                        "the datagram a udp check sends, like \"ping\"",
                    ))
                }
            };
            let expect = opt_string("expect")?.or(bexpect);
            CheckKind::Udp { send, expect }
        }
        other => {
            return Err(t.err(
                "type",
                format!(
                    "type must be \"tcp\", \"http\", \"udp\", \"icmp\" or \"none\", got {other:?}"
                ),
            ))
        }
    };
    let d = match base {
        Some(b) if b.kind != CheckKind::None => b.clone(),
        _ => CheckConfig::new(CheckKind::Tcp),
    };
    let port = t.opt_int::<u16>("port", 1, 65535)?.or(d.port);
    let interval_ms: u32 = t.int("interval_ms", d.interval_ms, 100, 3_600_000)?;
    let timeout_ms: u32 = t.int("timeout_ms", d.timeout_ms, 10, 60_000)?;
    if timeout_ms > interval_ms {
        let key = if t.get("timeout_ms").is_some() {
            "timeout_ms"
        } else {
            "interval_ms"
        };
        return Err(t.err(
            key,
            format!("timeout_ms ({timeout_ms}) must not exceed interval_ms ({interval_ms}): one check at a time per real server"),
        ));
    }
    let rise: u32 = t.int("rise", d.rise, 1, 100)?;
    let fall: u32 = t.int("fall", d.fall, 1, 100)?;
    if port.is_none() && real_port == Some(0) {
        return Err(t.err(
            "port",
            "the real server's port is 0 (it keeps the client's); say which port to check with `port`",
        ));
    }
    Ok(Some(CheckConfig {
        kind,
        port,
        interval_ms,
        timeout_ms,
        rise,
        fall,
    }))
}

/// The forwarding methods.
const FORWARDS: &str = "\"fullnat\", \"nat\", \"dr\" or \"tun\"";

/// The `forward` value of table `t`, `default` when absent.
fn forward(t: &Table, default: Forward) -> Result<Forward> {
    Ok(match t.opt_str("forward")? {
        None => default,
        Some("fullnat") => Forward::FullNat,
        Some("nat") => Forward::Nat,
        Some("dr") => Forward::Dr,
        Some("tun") => Forward::Tun,
        Some(other) => {
            return Err(t.err(
                "forward",
                format!("forward must be {FORWARDS}, got {other:?}"),
            ))
        }
    })
}

/// The schedulers rvs implements (all of LVS's).
const SCHEDULERS: &str = "rr, wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr, fo, ovf, mh, twos";

fn parse_service(
    cx: &Cx,
    node: &Node,
    i: usize,
    ports: &[PortConfig],
    routes: &[RouteConfig],
    earlier: &[ServiceConfig],
) -> Result<ServiceConfig> {
    let t = Table::new(cx, node, format!("service[{i}]"), SERVICE_KEYS)?;

    let mark = parse_match(cx, &t, earlier)?;
    if let Some(m) = &mark {
        if let Some(why) = match_prefix_conflict(&m.core().owned_addrs(), ports, routes) {
            return Err(t.err(
                "match",
                format!(
                    "the match's dst {}/{} holds {why}; rvs owns (answers ARP for) every address of a prefix of at most {} addresses, so it must hold none of another host's or rvs's own",
                    m.dst.addr,
                    m.dst.len,
                    rvs_core::MATCH_OWN_MAX
                ),
            ));
        }
    }
    let proto = match &mark {
        Some(m) => {
            if t.get("proto").is_some() {
                return Err(t.err(
                    "proto",
                    "a service with `mark` takes its proto from [service.match]",
                ));
            }
            m.proto
        }
        None => {
            let proto_node = t.required("proto", "\"tcp\" or \"udp\"")?;
            match as_str(cx, proto_node, &t.path("proto"))? {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                other => {
                    return Err(t.err(
                        "proto",
                        format!("proto must be \"tcp\" or \"udp\", got {other:?}"),
                    ))
                }
            }
        }
    };

    let vip = match &mark {
        Some(m) => m.dst.network(),
        None => {
            let vip_node = t.required("vip", "the virtual IP address, like \"203.0.113.10\"")?;
            ip_value(cx, vip_node, &t.path("vip"), "vip")?
        }
    };
    if let Some(p) = port_owning(ports, vip).filter(|_| mark.is_none()) {
        return Err(t.err(
            "vip",
            format!(
                "vip {vip} is an address of port `{}`; a VIP must be an address of its own",
                p.name
            ),
        ));
    }
    if let Some(j) = earlier.iter().position(|s| s.lips.contains(&vip)) {
        return Err(t.err(
            "vip",
            format!(
                "vip {vip} is a local address (lips) of service[{j}]; VIPs and local addresses must differ"
            ),
        ));
    }

    let vport: u16 = if mark.is_some() {
        0
    } else {
        let vport_node = t.required(
            "vport",
            "the virtual port, 1..=65535, or 0 (every port) when persistent",
        )?;
        as_int(cx, vport_node, &t.path("vport"), "vport", 0, 65535)?
    };
    // ipvsadm -p [timeout]: 1..=2^31 seconds (IPVS refuses 0).
    let persistent: Option<u32> = t.opt_int("persistent", 1, 1 << 31)?;
    if vport == 0 && persistent.is_none() && mark.is_none() {
        return Err(t.err(
            "vport",
            "vport 0 (every port of the VIP) needs `persistent` (as IPVS: zero port specified for non-persistent service)",
        ));
    }
    let netmask = match t.get("netmask") {
        None => None,
        Some(node) => {
            let width: u8 = if vip.is_ipv4() { 32 } else { 128 };
            let len = match &node.kind {
                // 0: every client shares one template (ipvsadm takes `-M 0.0.0.0` too).
                Kind::Int(_) => as_int(cx, node, &t.path("netmask"), "netmask", 0, width.into())?,
                Kind::Str(s) if vip.is_ipv4() => netmask_len(s).ok_or_else(|| {
                    t.err(
                        "netmask",
                        format!("netmask {s:?} is not a contiguous IPv4 netmask like \"255.255.255.0\" (or give a prefix length like 24)"),
                    )
                })?,
                _ => {
                    return Err(t.err(
                        "netmask",
                        format!("netmask must be a prefix length 0..={width}{}", if vip.is_ipv4() { " or an IPv4 netmask like \"255.255.255.0\"" } else { "" }),
                    ))
                }
            };
            if persistent.is_none() {
                return Err(t.err(
                    "netmask",
                    "netmask applies to persistent services only (set `persistent`)",
                ));
            }
            Some(len)
        }
    };
    if let Some(j) = earlier.iter().position(|s| {
        mark.is_none() && s.mark.is_none() && s.proto == proto && s.vip == vip && s.vport == vport
    }) {
        return Err(t.err(
            "vip",
            format!(
                "service {proto} {} is already defined by service[{j}]",
                SocketAddr::new(vip, vport)
            ),
        ));
    }

    let scheduler_node = t.required("scheduler", SCHEDULERS)?;
    let name = as_str(cx, scheduler_node, &t.path("scheduler"))?;
    let scheduler = Scheduler::from_name(name).ok_or_else(|| {
        t.err(
            "scheduler",
            format!("unknown scheduler {name:?}; supported schedulers: {SCHEDULERS}"),
        )
    })?;
    let mut sched_flags: Vec<String> = Vec::new();
    for (node, path) in t.array("sched_flags")?.unwrap_or_default() {
        let given = as_str(cx, node, &path)?;
        // ipvsadm's generic names: `flag-N` is the scheduler's Nth flag (`-b flag-2` = sh-port
        // for sh); one the scheduler lacks is refused by the check below.
        let flag = scheduler
            .flag_bit(given)
            .and_then(|b| scheduler.flag_names().get(b).copied())
            .unwrap_or(given);
        if let Err(m) = scheduler.check_flags(&[flag]) {
            return Err(cx.err(node.pos, path, m));
        }
        if sched_flags.iter().any(|f| f == flag) {
            return Err(cx.err(
                node.pos,
                path,
                format!("scheduler flag {flag:?} is given twice"),
            ));
        }
        sched_flags.push(flag.to_string());
    }
    // In bit order, as rvsadm keeps and ipvsadm lists them (a file and an edit giving the same
    // flags compare equal).
    sched_flags.sort_by_key(|f| scheduler.flag_names().iter().position(|n| n == f));
    if t.get("mh_table_size").is_some() && scheduler != Scheduler::Mh {
        return Err(t.err(
            "mh_table_size",
            format!("mh_table_size applies to the mh scheduler only (scheduler is {scheduler})"),
        ));
    }
    let mh_table_size: u32 = t.int("mh_table_size", MH_TABLE_SIZE, 2, 131_071)?;
    if !rvs_core::config::is_prime(mh_table_size) {
        return Err(t.err(
            "mh_table_size",
            format!("mh_table_size must be a prime (like 4093 or 65537), got {mh_table_size}"),
        ));
    }

    let service_forward = forward(&t, Forward::FullNat)?;

    let port = match t.port_ref("port", ports)? {
        Some((idx, _)) => idx,
        None => port_for_addr(ports, "vip", vip).map_err(|m| {
            let (NoPort::Ambiguous(m) | NoPort::None(m)) = m;
            t.err(
                "port",
                format!("{m}; say which port owns the VIP with `port`"),
            )
        })?,
    };

    // Required only when a real server is FULLNAT (checked after the reals).
    const LIPS_WHAT: &str = "the local addresses, like [\"198.51.100.2\"]";
    let lip_items = t.array("lips")?.unwrap_or_default();
    if let (Some(lips_node), true) = (t.get("lips"), lip_items.is_empty()) {
        return Err(cx.err(
            lips_node.pos,
            t.path("lips"),
            "lips must list at least one local address, like [\"198.51.100.2\"]",
        ));
    }
    let mut lips: Vec<IpAddr> = Vec::new();
    for (node, path) in &lip_items {
        let lip = ip_value(cx, node, path, "a local address")?;
        let bad = |m: String| cx.err(node.pos, path, m);
        if lip.is_ipv4() != vip.is_ipv4() {
            return Err(bad(nat64("local address", lip, vip)));
        }
        if let Some(j) = lips.iter().position(|&l| l == lip) {
            return Err(bad(format!(
                "local address {lip} is listed twice (also {}.lips[{j}])",
                t.path
            )));
        }
        if lip == vip {
            return Err(bad(format!(
                "local address {lip} is the vip of this service; VIPs and local addresses must differ"
            )));
        }
        if let Some(p) = port_owning(ports, lip) {
            return Err(bad(format!(
                "local address {lip} is an address of port `{}`; a local address must be an address of its own",
                p.name
            )));
        }
        if let Some(j) = earlier.iter().position(|s| s.vip == lip) {
            return Err(bad(format!(
                "local address {lip} is the vip of service[{j}]; VIPs and local addresses must differ"
            )));
        }
        lips.push(lip);
    }

    let lip_port = match t.port_ref("lip_port", ports)? {
        Some((idx, _)) => idx,
        None if lips.is_empty() => port,
        None => {
            let first = lips.first().copied().unwrap_or(vip);
            let idx = port_for_addr(ports, "local address", first).map_err(|m| {
                let (NoPort::Ambiguous(m) | NoPort::None(m)) = m;
                t.err(
                    "lip_port",
                    format!("{m}; say which port owns the local addresses with `lip_port`"),
                )
            })?;
            if let Some(p) = ports.get(idx) {
                for ((node, path), &lip) in lip_items.iter().zip(&lips) {
                    if !p.addresses.iter().any(|&(a, l)| contains(a, l, lip)) {
                        return Err(cx.err(
                            node.pos,
                            path,
                            format!(
                                "local address {lip} is not in a connected subnet of port `{}` ({}), the port of {first}; all local addresses must be on one port's subnets (or set `lip_port`)",
                                p.name,
                                subnets(p)
                            ),
                        ));
                    }
                }
            }
            idx
        }
    };

    let service_check = parse_check(&t, None, None)?;

    let reals_node = t.get("real").ok_or_else(|| {
        t.err(
            "real",
            "at least one [[service.real]] is required; none is given",
        )
    })?;
    let real_nodes = t.array_of_tables("real", reals_node)?;
    if real_nodes.is_empty() {
        return Err(cx.err(
            reals_node.pos,
            t.path("real"),
            "at least one [[service.real]] is required; none is given",
        ));
    }
    let mut reals: Vec<RealConfig> = Vec::new();
    // The addresses a match service owns (a prefix of at most MATCH_OWN_MAX addresses).
    let own_match = mark
        .as_ref()
        .map(|m| m.core().owned_addrs())
        .unwrap_or_default();
    let before: usize = earlier.iter().map(|s| s.reals.len()).sum();
    for (k, node) in real_nodes.iter().enumerate() {
        if before + k >= super::MAX_REALS {
            return Err(cx.err(
                node.pos,
                format!("{}[{k}]", t.path("real")),
                format!(
                    "more than {} real servers in all services (each has counters of its own on every worker)",
                    super::MAX_REALS
                ),
            ));
        }
        let rt = Table::new(
            cx,
            node,
            format!("{}[{k}]", t.path("real")),
            &["ip", "port", "weight", "forward", "upper", "lower", "check"],
        )?;
        let ip_node = rt.required("ip", "the real server's address, like \"198.51.100.11\"")?;
        let ip = ip_value(cx, ip_node, &rt.path("ip"), "ip")?;
        if ip.is_ipv4() != vip.is_ipv4() {
            return Err(rt.err("ip", nat64("real server", ip, vip)));
        }
        if let Some(p) = port_owning(ports, ip) {
            return Err(rt.err(
                "ip",
                format!(
                    "real server {ip} is an address of rvs itself (port `{}`); a real server must be another host",
                    p.name
                ),
            ));
        }
        if ip == vip {
            return Err(rt.err("ip", format!("real server {ip} is the vip of this service")));
        }
        if own_match.contains(&ip) {
            return Err(rt.err(
                "ip",
                format!("real server {ip} is an address of this service's match prefix, which rvs owns; a real server must be another host"),
            ));
        }
        if let Some(j) = earlier.iter().position(|s| s.owned_ips().contains(&ip)) {
            return Err(rt.err(
                "ip",
                format!(
                    "real server {ip} is an address of service[{j}] (its vip or a local address), so an address of rvs itself; a real server must be another host"
                ),
            ));
        }
        if let Some(j) = lips.iter().position(|&l| l == ip) {
            return Err(rt.err(
                "ip",
                format!(
                    "real server {ip} is a local address of this service ({}.lips[{j}])",
                    t.path
                ),
            ));
        }
        // A port-0 service's real servers may keep the client's port (0, the default) or fix one.
        let port: u16 = rt.int("port", vport, if vport == 0 { 0 } else { 1 }, 65535)?;
        let weight: u32 = rt.int("weight", 1, 0, 65535)?;
        let upper: u32 = rt.int("upper", 0, 0, 65535)?;
        let lower: u32 = rt.int("lower", 0, 0, 65535)?;
        if lower > upper {
            return Err(rt.err(
                "lower",
                format!("lower threshold {lower} is above the upper threshold {upper} (IPVS refuses it; upper 0 means none)"),
            ));
        }
        let forward = forward(&rt, service_forward)?;
        if forward == Forward::Nat && persistent.is_some() {
            return Err(rt.err(
                "forward",
                "NAT real servers are not supported in a persistent service (use fullnat, dr or tun)",
            ));
        }
        if let Some(j) = reals.iter().position(|r| r.ip == ip && r.port == port) {
            return Err(rt.err(
                "ip",
                format!(
                    "real server {} is already listed as {}[{j}]",
                    SocketAddr::new(ip, port),
                    t.path("real")
                ),
            ));
        }
        let (connected, routed) = reachability(ports, routes, ip);
        if !connected && !routed {
            return Err(rt.err(
                "ip",
                format!(
                    "real server {ip} is not reachable: it is in no connected subnet of a port ({}) and no [[route]] covers it",
                    all_subnets(ports)
                ),
            ));
        }
        if matches!(forward, Forward::Dr | Forward::Tun) && port != vport {
            return Err(rt.err(
                "port",
                format!(
                    "port mapping is impossible with DR/TUN (real port {port} != vport {vport})"
                ),
            ));
        }
        if forward == Forward::Dr && !connected {
            return Err(rt.err(
                "ip",
                format!(
                    "real server {ip} is not in a connected subnet of a port ({}); DR needs the real server on the same link (use tun to reach it through a router)",
                    all_subnets(ports)
                ),
            ));
        }
        let check = parse_check(&rt, service_check.as_ref(), Some(port))?;
        if check.is_none()
            && port == 0
            && service_check
                .as_ref()
                .is_some_and(CheckConfig::lacks_port_for_port_zero)
        {
            return Err(rt.err(
                "port",
                "the real server's port is 0 (it keeps the client's) and the service's check has no `port`; set `port` in [service.check] or [service.real.check]",
            ));
        }
        reals.push(RealConfig {
            ip,
            port,
            weight,
            forward,
            upper,
            lower,
            check,
        });
    }
    if lips.is_empty() && reals.iter().any(|r| r.forward == Forward::FullNat) {
        t.required("lips", LIPS_WHAT)?;
    }

    let svc = ServiceConfig {
        proto,
        vip,
        vport,
        scheduler,
        sched_flags,
        mh_table_size,
        persistent,
        netmask,
        forward: service_forward,
        port,
        lips,
        lip_port,
        reals,
        check: service_check,
        mark,
    };
    // The other way round: what this service owns must not be an earlier service's real server.
    let owned = svc.owned_ips();
    for (j, s) in earlier.iter().enumerate() {
        if let Some((k, r)) = s
            .reals
            .iter()
            .enumerate()
            .find(|(_, r)| owned.contains(&r.ip))
        {
            let (key, what) = match svc.lips.iter().position(|&l| l == r.ip) {
                Some(i) => ("lips", format!("local address {} (lips[{i}])", r.ip)),
                None if svc.mark.is_some() => ("match", format!("address {}", r.ip)),
                None => ("vip", format!("vip {}", r.ip)),
            };
            return Err(t.err(
                key,
                format!(
                    "{what} is service[{j}].real[{k}]; an address of rvs (a vip or a local address) cannot be another service's real server"
                ),
            ));
        }
    }
    Ok(svc)
}

/// A string value that is a unicast IP address; `what` names it in
/// messages.
fn ip_value(cx: &Cx, node: &Node, path: &str, what: &str) -> Result<IpAddr> {
    let s = as_str(cx, node, path)?;
    let a: IpAddr = s.parse().map_err(|_| {
        cx.err(
            node.pos,
            path,
            format!("{what} must be an IP address like \"203.0.113.10\" or \"2001:db8::10\" (no prefix length), got {s:?}"),
        )
    })?;
    if !is_unicast(a) {
        return Err(cx.err(
            node.pos,
            path,
            format!("{what} must be a unicast address, got {a}"),
        ));
    }
    Ok(a)
}

/// The message for an address of the wrong family for `vip`.
fn nat64(what: &str, a: IpAddr, vip: IpAddr) -> String {
    format!(
        "{what} {a} is {} but the vip {vip} is {}: NAT64 is not supported yet; local and real server addresses must be of the VIP's family",
        family(a),
        family(vip)
    )
}

fn is_unicast(a: IpAddr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || a == IpAddr::V4(Ipv4Addr::BROADCAST))
}

/// What, among the addresses `owned` of a match prefix, rvs must not own: an address of a
/// port, a route's gateway, a connected subnet's network or broadcast address.
fn match_prefix_conflict(
    owned: &[IpAddr],
    ports: &[PortConfig],
    routes: &[RouteConfig],
) -> Option<String> {
    for &a in owned {
        if let Some(p) = port_owning(ports, a) {
            return Some(format!("{a}, an address of port `{}`", p.name));
        }
        if let Some(r) = routes.iter().find(|r| r.via == Some(a)) {
            return Some(format!(
                "{a}, the gateway of route {}/{}",
                r.prefix.0, r.prefix.1
            ));
        }
        let IpAddr::V4(a4) = a else { continue };
        for p in ports {
            for &(pa, len) in &p.addresses {
                let IpAddr::V4(pa) = pa else { continue };
                if len >= 31 {
                    continue;
                }
                let mask = rvs_core::addr::mask_v4(len);
                let net = u32::from(pa) & mask;
                if u32::from(a4) == net || u32::from(a4) == net | !mask {
                    let which = if u32::from(a4) == net {
                        "network"
                    } else {
                        "broadcast"
                    };
                    return Some(format!(
                        "{a}, the {which} address of port `{}`'s subnet {}/{len}",
                        p.name,
                        std::net::Ipv4Addr::from(net)
                    ));
                }
            }
        }
    }
    None
}

/// The port that has `a` as one of its addresses.
fn port_owning(ports: &[PortConfig], a: IpAddr) -> Option<&PortConfig> {
    ports
        .iter()
        .find(|p| p.addresses.iter().any(|&(pa, _)| pa == a))
}

/// Every port's connected subnets, for messages.
fn all_subnets(ports: &[PortConfig]) -> String {
    ports
        .iter()
        .map(|p| format!("`{}`: {}", p.name, subnets(p)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why [`port_for_addr`] found no port: the message, without advice.
enum NoPort {
    /// Two ports have equally long matching subnets.
    Ambiguous(String),
    /// No port has a matching subnet.
    None(String),
}

/// The port whose connected subnet holds `via` (longest prefix); `what`
/// names the address in messages (`via`, `vip`, ...).
fn port_for_addr(
    ports: &[PortConfig],
    what: &str,
    via: IpAddr,
) -> std::result::Result<usize, NoPort> {
    let mut best: Option<(u8, usize)> = None;
    // Two ports with the same longest match: their names.
    let mut tie: Option<(&str, &str)> = None;
    for (idx, p) in ports.iter().enumerate() {
        for &(a, l) in &p.addresses {
            if !contains(a, l, via) {
                continue;
            }
            match best {
                Some((bl, bi)) if bl > l || (bl == l && bi == idx) => {}
                Some((bl, bi)) if bl == l => {
                    let other = ports.get(bi).map_or("?", |o| o.name.as_str());
                    tie = Some((other, p.name.as_str()));
                }
                _ => {
                    best = Some((l, idx));
                    tie = None;
                }
            }
        }
    }
    if let Some((a, b)) = tie {
        return Err(NoPort::Ambiguous(format!(
            "{what} {via} is in connected subnets of both port `{a}` and port `{b}`"
        )));
    }
    match best {
        Some((_, idx)) => Ok(idx),
        None => Err(NoPort::None(format!(
            "{what} {via} is not in a connected subnet of any port ({})",
            all_subnets(ports)
        ))),
    }
}

/// The connected subnets of a port, for messages.
fn subnets(p: &PortConfig) -> String {
    if p.addresses.is_empty() {
        return "it has no addresses".to_owned();
    }
    p.addresses
        .iter()
        .map(|&(a, l)| format!("{}/{l}", network(a, l)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// Parses a device string: a PCI address or a vdev string.
fn parse_device(s: &str) -> std::result::Result<Device, String> {
    const HELP: &str = "a DPDK vdev string like \"net_null0\" or \"net_af_xdp0,iface=eth0\", or a PCI address like \"0000:3b:00.0\" or \"3b:00.0\"";
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(format!("device must be {HELP} (no spaces), got {s:?}"));
    }
    let name = s.split(',').next().unwrap_or(s);
    if name.contains(':') && !s.contains(',') {
        return parse_pci(s).map(Device::Pci).ok_or_else(|| {
            format!("invalid PCI address {s:?}: expected DOMAIN:BUS:DEVICE.FUNCTION like \"0000:3b:00.0\" or BUS:DEVICE.FUNCTION like \"3b:00.0\" (hex; device at most 1f, function at most 7)")
        });
    }
    let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(format!(
            "device must be {HELP}; the vdev name before the first comma must be letters, digits and `_`, got {name:?}"
        ));
    }
    Ok(Device::Vdev(s.to_owned()))
}

/// Parses and normalises a PCI address (`[DOMAIN:]BUS:DEVICE.FUNCTION`).
fn parse_pci(s: &str) -> Option<String> {
    let hex = |p: &str, max_len: usize| -> Option<u32> {
        if p.is_empty() || p.len() > max_len || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(p, 16).ok()
    };
    let parts: Vec<&str> = s.split(':').collect();
    let (domain, bus, rest) = match parts.as_slice() {
        [bus, rest] => (0, *bus, *rest),
        [domain, bus, rest] => (hex(domain, 8)?, *bus, *rest),
        _ => return None,
    };
    let (dev, func) = rest.split_once('.')?;
    let bus = if bus.len() == 2 {
        hex(bus, 2)?
    } else {
        return None;
    };
    let dev = if dev.len() == 2 {
        hex(dev, 2)?
    } else {
        return None;
    };
    let func = if func.len() == 1 {
        hex(func, 1)?
    } else {
        return None;
    };
    if dev > 0x1f || func > 7 {
        return None;
    }
    Some(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func}"))
}

/// Parses a unicast MAC address `02:00:00:00:00:01` (or with `-`).
fn parse_mac(s: &str) -> std::result::Result<[u8; 6], String> {
    let bad = || {
        format!("mac must be six two-digit hex bytes separated by `:`, like \"02:00:00:00:00:01\", got {s:?}")
    };
    let sep = if s.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = s.split(sep).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(&parts) {
        if p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "mac must be a unicast address (the low bit of the first byte clear), got {s}"
        ));
    }
    if mac == [0; 6] {
        return Err("mac must not be all zeros".to_owned());
    }
    Ok(mac)
}

/// Parses `ADDRESS/LENGTH`.
fn parse_cidr(s: &str) -> std::result::Result<(IpAddr, u8), String> {
    let expected = "expected ADDRESS/LENGTH like \"192.0.2.1/24\" or \"2001:db8::1/64\"";
    let Some((a, l)) = s.split_once('/') else {
        return Err(format!("{expected}, got {s:?} (no prefix length)"));
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{expected}; {a:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = if !l.is_empty() && l.len() <= 3 && l.chars().all(|c| c.is_ascii_digit()) {
        l.parse().map_err(|_| String::new())?
    } else {
        return Err(format!("{expected}; {l:?} is not a prefix length"));
    };
    if len > max {
        return Err(format!(
            "prefix length must be at most {max} for {}, got {len}",
            family(addr)
        ));
    }
    Ok((addr, len))
}

/// Checks that `addr/len` can be owned by a port.
fn check_host_address(addr: IpAddr, len: u8) -> std::result::Result<(), String> {
    if addr.is_unspecified() || addr.is_multicast() || addr == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(format!(
            "{addr} cannot be a port address: it must be unicast"
        ));
    }
    let host_bits = if addr.is_ipv4() { 32 } else { 128 } - u32::from(len);
    if host_bits >= 2 {
        let net = network(addr, len);
        if addr == net {
            return Err(format!(
                "{addr}/{len} is a subnet, not an address: give the address rvs owns with the subnet's length, like {}/{len}",
                nth_host(net, 1)
            ));
        }
        let host_mask = !mask(addr, len) & 0xffff_ffff;
        if addr.is_ipv4() && to_bits(addr) & host_mask == host_mask {
            return Err(format!(
                "{addr} is the broadcast address of {net}/{len}; it cannot be a port address"
            ));
        }
    }
    Ok(())
}

/// The address as an integer (IPv4 in the low 32 bits).
fn to_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        // Masked to 32 bits, so the conversion cannot fail.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(
            u32::try_from(bits & 0xffff_ffff).unwrap_or(0),
        )),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// The prefix length of the contiguous dotted IPv4 netmask `s` (1..=32).
fn netmask_len(s: &str) -> Option<u8> {
    let m = u32::from(s.parse::<Ipv4Addr>().ok()?);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// The netmask of `len` for `a`'s family, as an integer.
fn mask(a: IpAddr, len: u8) -> u128 {
    let width = if a.is_ipv4() { 32u32 } else { 128 };
    let len = u32::from(len).min(width);
    let all: u128 = if width == 32 { 0xffff_ffff } else { u128::MAX };
    all & !all.checked_shr(len).unwrap_or(0)
}

/// The network address of `a/len`.
fn network(a: IpAddr, len: u8) -> IpAddr {
    from_bits(a, to_bits(a) & mask(a, len))
}

fn nth_host(net: IpAddr, n: u128) -> IpAddr {
    from_bits(net, to_bits(net).wrapping_add(n))
}

/// Whether `ip` is on a connected subnet of `ports`, and whether a route of `routes` covers it
/// (a real server needs one of them; a DR real server the first).
pub(crate) fn reachability(
    ports: &[PortConfig],
    routes: &[RouteConfig],
    ip: IpAddr,
) -> (bool, bool) {
    let connected = ports
        .iter()
        .any(|p| p.addresses.iter().any(|&(a, l)| contains(a, l, ip)));
    let routed = routes.iter().any(|r| contains(r.prefix.0, r.prefix.1, ip));
    (connected, routed)
}

/// Whether `ip` lies in `net/len`.
pub(super) fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    net.is_ipv4() == ip.is_ipv4() && to_bits(net) & mask(net, len) == to_bits(ip) & mask(net, len)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let t = "ab\ncé d\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        // 'd' is after the two-byte é.
        assert_eq!(line_col(t, t.find('d').unwrap()), (2, 4));
        // Inside a multi-byte char, past the end: no panic.
        assert_eq!(line_col(t, 5), (2, 2));
        assert_eq!(line_col(t, 999), (3, 1));
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(parse_pci("0000:3b:00.0").as_deref(), Some("0000:3b:00.0"));
        assert_eq!(parse_pci("3B:1f.7").as_deref(), Some("0000:3b:1f.7"));
        assert_eq!(parse_pci("1:3b:00.0").as_deref(), Some("0001:3b:00.0"));
        assert_eq!(parse_pci("3b:20.0"), None);
        assert_eq!(parse_pci("3b:00.8"), None);
        assert_eq!(parse_pci("3b:0.0"), None);
        assert_eq!(parse_pci("zz:00.0"), None);
        assert_eq!(parse_pci("3b:00"), None);
    }

    #[test]
    fn devices() {
        assert_eq!(
            parse_device("net_af_xdp0,iface=gc0"),
            Ok(Device::Vdev("net_af_xdp0,iface=gc0".into()))
        );
        assert_eq!(
            parse_device("3b:00.0"),
            Ok(Device::Pci("0000:3b:00.0".into()))
        );
        assert!(parse_device("").is_err());
        assert!(parse_device("net null").is_err());
        assert!(parse_device(",iface=x").is_err());
        assert!(parse_device("0net").is_err());
        assert!(parse_device("3b:00.9").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Ok([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02-00-00-00-00-0A"), Ok([2, 0, 0, 0, 0, 10]));
        assert!(parse_mac("01:00:5e:00:00:01").is_err());
        assert!(parse_mac("00:00:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:0").is_err());
        assert!(parse_mac("02:00:00:00:00:+1").is_err());
    }

    #[test]
    fn cidrs_and_masks() {
        let a: IpAddr = "192.0.2.77".parse().unwrap();
        assert_eq!(parse_cidr("192.0.2.77/24"), Ok((a, 24)));
        assert_eq!(network(a, 24), "192.0.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(network(a, 0), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(network(a, 32), a);
        assert!(contains(network(a, 24), 24, "192.0.2.1".parse().unwrap()));
        assert!(!contains(network(a, 24), 24, "192.0.3.1".parse().unwrap()));
        assert!(!contains(network(a, 0), 0, "::1".parse().unwrap()));
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(network(b, 64), "2001:db8::".parse::<IpAddr>().unwrap());
        assert_eq!(network(b, 128), b);
        assert!(parse_cidr("192.0.2.1").is_err());
        assert!(parse_cidr("192.0.2.1/33").is_err());
        assert!(parse_cidr("192.0.2.1/+3").is_err());
        assert!(parse_cidr("2001:db8::1/129").is_err());
        assert!(parse_cidr("2001:db8::1/128").is_ok());
        assert!(check_host_address("192.0.2.0".parse().unwrap(), 24).is_err());
        assert!(check_host_address("192.0.2.255".parse().unwrap(), 24).is_err());
        assert!(check_host_address("192.0.2.0".parse().unwrap(), 31).is_ok());
        assert!(check_host_address("2001:db8::".parse().unwrap(), 64).is_err());
        assert!(check_host_address("224.0.0.1".parse().unwrap(), 24).is_err());
    }

    #[test]
    fn guessed_keys() {
        let t = "[dataplane]\nburst = \n[[port]]\n[[port]]\nname = 'x\n";
        assert_eq!(guess_key(t, t.find(" \n").unwrap()), "dataplane.burst");
        assert_eq!(guess_key(t, t.find("'x").unwrap()), "port[1].name");
        assert_eq!(guess_key(t, 0), "dataplane");
        assert_eq!(guess_key("= 3", 0), "");
    }
}
