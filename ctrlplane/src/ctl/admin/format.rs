//! ipvsadm's output layouts (ipvsadm 1.31's `print_title`, `print_service_entry`, `print_conn`,
//! `list_timeout`, `print_largenum`), as pure functions from rvsd's answers to text.
//!
//! Addresses are always numeric (ipvsadm without `-n` would resolve names). IPv6 addresses print
//! as `[addr]:port`. Where ipvsadm truncates IPv4 names (33 characters for a service, 28 for a
//! real server) so does this; no numeric IPv4 name is that long.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::ctl::proto::{ConnView, RealView, ServiceKey, ServiceView, TimeoutsView};

/// The IPVS version rvsadm reports in the `-L` header (ipvsadm prints the kernel's).
pub const IPVS_VERSION: &str = "1.2.1";

/// Which `-L` layout, in ipvsadm's order of precedence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// `--stats`.
    pub stats: bool,
    /// `--rate`.
    pub rate: bool,
    /// `--thresholds`.
    pub thresholds: bool,
    /// `--persistent-conn`.
    pub persistent_conn: bool,
    /// `--exact`.
    pub exact: bool,
    /// `--health` (rvs's own): a `Health` column after `InActConn` (`UP`, `DOWN`, or `-` for a
    /// real server without a health check) in the default, `--thresholds` and
    /// `--persistent-conn` layouts.
    pub health: bool,
}

/// `addr:port`, `[v6]:port`.
pub fn addr_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn sock(a: SocketAddr) -> String {
    addr_port(a.ip(), a.port())
}

/// ipvsadm's `print_largenum`: 9 characters, K/M/G/T above 10^8 unless `exact`.
pub fn largenum(i: u64, exact: bool) -> String {
    if exact {
        let digits = i.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        return format!("{digits:>width$}");
    }
    if i < 100_000_000 {
        format!("{i:9}")
    } else if i < 1_000_000_000 {
        format!("{:8}K", i / 1_000)
    } else if i < 100_000_000_000 {
        format!("{:8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        format!("{:8}G", i / 1_000_000_000)
    } else {
        format!("{:8}T", i / 1_000_000_000_000)
    }
}

/// IPv4 dotted netmask of a prefix length.
fn dotted(len: u8) -> Ipv4Addr {
    let m = u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(m)
}

/// The ordering of ipvsadm's `ipvs_cmp_services`: fwmark (address services first, then match
/// services by mark), family (IPv4 first), protocol, address, port.
fn cmp_keys(a: &ServiceKey, b: &ServiceKey) -> Ordering {
    (a.mark, a.vip.is_ipv6(), a.proto, a.vip, a.vport).cmp(&(
        b.mark,
        b.vip.is_ipv6(),
        b.proto,
        b.vip,
        b.vport,
    ))
}

/// Services and their real servers in ipvsadm's sorted order (services by `ipvs_cmp_services`,
/// real servers by address then port); `nosort` keeps rvsd's order.
pub fn sorted(services: &[ServiceView], nosort: bool) -> Vec<ServiceView> {
    let mut v = services.to_vec();
    if !nosort {
        v.sort_by(|a, b| cmp_keys(&a.spec.key, &b.spec.key));
        for s in &mut v {
            s.reals
                .sort_by_key(|r| (r.spec.addr.ip(), r.spec.addr.port()));
        }
    }
    v
}

/// The column titles (`print_title`).
pub fn title(l: &Layout) -> String {
    let t = |a: &str, b: &str, c: &str, d: &str, e: &str| {
        format!(
            "{:<33} {a:>8} {b:>8} {c:>8} {d:>8} {e:>8}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port"
        )
    };
    if l.stats {
        t("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
    } else if l.rate {
        t("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
    } else if l.thresholds {
        let h = if l.health { " Health" } else { "" };
        format!(
            "{:<33} {:<10} {:<10} {:<10} {:<10}{h}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if l.persistent_conn {
        let h = if l.health { " Health" } else { "" };
        format!(
            "{:<33} {:<9} {:<11} {:<10} {:<10}{h}\n  -> RemoteAddress:Port\n",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else if l.health {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health\n"
            .to_owned()
    } else {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
            .to_owned()
    }
}

/// The `Health` column of real server `r`: ` UP`, ` DOWN`, ` -` (not checked); empty without
/// `--health`.
fn health_col(r: &RealView, l: &Layout) -> String {
    if l.health {
        format!(" {}", r.health.as_deref().unwrap_or("-"))
    } else {
        String::new()
    }
}

/// `TCP  addr:port` (ipvsadm's `svc_name`, cut at 33 characters for IPv4), or `FWM  MARK` for a
/// match service.
fn svc_name(key: &ServiceKey) -> String {
    if let Some(m) = key.mark {
        return format!("FWM  {m}");
    }
    let mut s = format!("{}  {}", key.proto.upper(), addr_port(key.vip, key.vport));
    if key.vip.is_ipv4() {
        s.truncate(33);
    }
    s
}

/// A real server's name (cut at 28 characters for IPv4).
fn dest_name(r: &RealView) -> String {
    let mut s = sock(r.spec.addr);
    if r.spec.addr.is_ipv4() {
        s.truncate(28);
    }
    s
}

/// One service and its real servers (`print_service_entry`).
pub fn service_entry(s: &ServiceView, l: &Layout) -> String {
    let mut out = String::new();
    let name = svc_name(&s.spec.key);
    let ln = |n| largenum(n, l.exact);
    if l.stats {
        let st = &s.stats;
        let _ = write!(
            out,
            "{name:<33}{}{}{}{}{}",
            ln(st.conns),
            ln(st.inpkts),
            ln(st.outpkts),
            ln(st.inbytes),
            ln(st.outbytes)
        );
    } else if l.rate {
        let r = &s.rates;
        let _ = write!(
            out,
            "{name:<33}{}{}{}{}{}",
            ln(r.cps),
            ln(r.inpps),
            ln(r.outpps),
            ln(r.inbps),
            ln(r.outbps)
        );
    } else {
        let _ = write!(out, "{name} {}", s.spec.scheduler);
        if !s.spec.sched_flags.is_empty() {
            let _ = write!(out, " ({})", s.spec.sched_flags.join(","));
        }
        if let Some(t) = s.spec.persistent {
            let _ = write!(out, " persistent {t}");
            if let Some(m) = mask(&s.spec.key, s.spec.netmask) {
                let _ = write!(out, " mask {m}");
            }
        }
    }
    out.push('\n');
    for r in &s.reals {
        let d = dest_name(r);
        if l.stats {
            let st = &r.stats;
            let _ = writeln!(
                out,
                "  -> {d:<28}{}{}{}{}{}",
                ln(st.conns),
                ln(st.inpkts),
                ln(st.outpkts),
                ln(st.inbytes),
                ln(st.outbytes)
            );
        } else if l.rate {
            // ipvsadm prints a real server's CPS, InPPS and OutPPS with "%8u", unrounded.
            let rt = &r.rates;
            let _ = writeln!(
                out,
                "  -> {d:<28} {:8} {:8} {:8}{}{}",
                rt.cps,
                rt.inpps,
                rt.outpps,
                ln(rt.inbps),
                ln(rt.outbps)
            );
        } else if l.thresholds {
            let _ = writeln!(
                out,
                "  -> {d:<28} {:<10} {:<10} {:<10} {:<10}{}",
                r.spec.upper,
                r.spec.lower,
                r.active,
                r.inactive,
                health_col(r, l)
            );
        } else if l.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {d:<28} {:<9} {:<11} {:<10} {:<10}{}",
                r.spec.weight,
                r.persist,
                r.active,
                r.inactive,
                health_col(r, l)
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {d:<28} {:<7} {:<6} {:<10} {:<10}{}",
                r.spec.fwd.name(),
                r.spec.weight,
                r.active,
                r.inactive,
                health_col(r, l)
            );
        }
    }
    out
}

/// The persistence mask as ipvsadm prints it (dotted for IPv4, a length for IPv6), when not full.
fn mask(key: &ServiceKey, netmask: Option<u8>) -> Option<String> {
    let len = netmask?;
    match key.vip {
        IpAddr::V4(_) if len < 32 => Some(dotted(len).to_string()),
        IpAddr::V6(_) if len < 128 => Some(len.to_string()),
        _ => None,
    }
}

/// `-L` of the whole table: the version header (`size` = rvsd's connection table size), the
/// titles and every service.
pub fn list_all(size: u64, services: &[ServiceView], l: &Layout, nosort: bool) -> String {
    let mut out = format!("IP Virtual Server version {IPVS_VERSION} (size={size})\n");
    out.push_str(&title(l));
    for s in sorted(services, nosort) {
        out.push_str(&service_entry(&s, l));
    }
    out
}

/// `-L -t VIP:port`: the titles and the one service (no version header, as ipvsadm).
pub fn list_service(service: &ServiceView, l: &Layout, nosort: bool) -> String {
    let s = &sorted(std::slice::from_ref(service), nosort)[0];
    format!("{}{}", title(l), service_entry(s, l))
}

/// `-S`: the rules that `-R` restores. As ipvsadm, plus rvs's `-b` (FULLNAT) forwarding,
/// ` -x U -y L` when a threshold is set, and one `--add-laddr -t|-u VIP:port -z LIP` per
/// FULLNAT local address.
pub fn save(services: &[ServiceView], nosort: bool) -> String {
    let mut out = String::new();
    for s in sorted(services, nosort) {
        let key = &s.spec.key;
        let svc = match key.mark {
            Some(m) => format!("-f {m}"),
            None => format!("{} {}", proto_flag(key), addr_port(key.vip, key.vport)),
        };
        let _ = write!(out, "-A {svc} -s {}", s.spec.scheduler);
        if let Some(t) = s.spec.persistent {
            let _ = write!(out, " -p {t}");
            if let Some(m) = mask(key, s.spec.netmask) {
                let _ = write!(out, " -M {m}");
            }
        }
        if !s.spec.sched_flags.is_empty() {
            let _ = write!(out, " -b {}", s.spec.sched_flags.join(","));
        }
        out.push('\n');
        // Local addresses before the real servers: `-R` adds a FULLNAT real server only to a
        // service that has one.
        for lip in &s.lips {
            let _ = writeln!(out, "--add-laddr {svc} -z {lip}");
        }
        for r in &s.reals {
            let _ = write!(
                out,
                "-a {svc} -r {} {} -w {}",
                sock(r.spec.addr),
                r.spec.fwd.flag(),
                r.spec.weight
            );
            if r.spec.upper != 0 {
                let _ = write!(out, " -x {}", r.spec.upper);
            }
            if r.spec.lower != 0 {
                let _ = write!(out, " -y {}", r.spec.lower);
            }
            out.push('\n');
        }
    }
    out
}

fn proto_flag(key: &ServiceKey) -> &'static str {
    match key.proto {
        crate::ctl::proto::Proto::Tcp => "-t",
        crate::ctl::proto::Proto::Udp => "-u",
    }
}

/// The `-L -c` title lines.
pub fn conns_title() -> String {
    format!(
        "IPVS connection entries\npro expire {:<11} {:<18} {:<18} {}\n",
        "state", "source", "virtual", "destination"
    )
}

/// The `-L -c --persistent-conn` title (`list_conn` with `FMT_PERSISTENTCONN`): two more
/// columns for a persistence engine's name and data. rvs has no persistence engine (IPVS's
/// `--pe sip`), so its rows are the plain ones, as ipvsadm prints a connection without them.
pub fn conns_title_pe() -> String {
    format!(
        "IPVS connection entries\npro expire {:<11} {:<18} {:<18} {:<18} {:<16} {}\n",
        "state", "source", "virtual", "destination", "pe name", "pe_data"
    )
}

/// One `-L -c` row (`print_conn`): expiry as mm:ss (whole seconds).
pub fn conn_row(c: &ConnView) -> String {
    let secs = c.expire_ms / 1000;
    let expire = format!("{:02}:{:02}", secs / 60, secs % 60);
    format!(
        "{:<3} {:<6} {:<11} {:<18} {:<18} {}\n",
        c.proto.upper(),
        expire,
        c.state,
        sock(c.client),
        sock(c.virt),
        sock(c.dest)
    )
}

/// `-L -c` in full.
pub fn conns(entries: &[ConnView]) -> String {
    let mut out = conns_title();
    for c in entries {
        out.push_str(&conn_row(c));
    }
    out
}

/// `-L --timeout`.
pub fn timeout(t: &TimeoutsView) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcpfin, t.udp
    )
}

/// `--get-laddr`: rvs's layout (after DPVS's `-G`): a title, then per service its name, the
/// number of local addresses and the first of them, and one line per further address under the
/// first; services in `-L` order.
///
/// ```text
/// Prot LocalAddress:Port            Total    LocalIP
/// TCP  203.0.113.10:80              2        192.0.2.2
///                                            192.0.2.3
/// ```
pub fn laddrs(services: &[ServiceView]) -> String {
    let mut out = format!(
        "{:<33} {:<8} {}\n",
        "Prot LocalAddress:Port", "Total", "LocalIP"
    );
    for s in sorted(services, false) {
        let first = s.lips.first().map(ToString::to_string).unwrap_or_default();
        let line = format!("{:<33} {:<8} {first}", svc_name(&s.spec.key), s.lips.len());
        out.push_str(line.trim_end());
        out.push('\n');
        for lip in s.lips.iter().skip(1) {
            let _ = writeln!(out, "{:43}{lip}", "");
        }
    }
    out
}
