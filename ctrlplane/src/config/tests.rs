use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::*;

const FULL: &str = r#"# a full configuration
[eal]
main_lcore = 0
memory_mb = 256
no_huge = true
file_prefix = "rvs"
args = ["--log-level", "lib.eal:notice"]

[dataplane]
workers = [2, 3]
ip_forward = true
burst = 64
rx_desc = 512
tx_desc = 2048
mbufs = 16383
mbuf_cache = 128
icmp_ratelimit = 50

[neighbour]
capacity = 4096
hold_packets = 4
reachable_ms = 20000
gc_stale_ms = 60000
retrans_ms = 500
max_probes = 5

[[port]]
name = "client"
device = "net_af_xdp0,iface=gc0"
mac = "02:00:00:00:00:01"
mtu = 9000
addresses = ["192.0.2.1/24", "2001:db8::1/64"]
rss = false
promiscuous = true

[[port]]
name = "servers"
device = "3B:00.1"
addresses = ["198.51.100.1/24"]

[[route]]
prefix = "0.0.0.0/0"
via = "198.51.100.254"

[[route]]
prefix = "203.0.113.77/24"
via = "192.0.2.254"
port = "client"

[[route]]
prefix = "10.0.0.0/8"
port = "servers"

[[route]]
prefix = "2001:db8:1::/48"
via = "2001:db8::fe"
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

/// Parses `text`, expecting an error at `line`:`column` on `key`; returns
/// the message.
#[track_caller]
fn error_at(text: &str, line: usize, column: usize, key: &str) -> String {
    let e = match parse(text) {
        Ok(cfg) => panic!("expected an error at {line}:{column} {key}, parsed {cfg:?}"),
        Err(e) => e,
    };
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (line, column, key),
        "wrong location in: {e}"
    );
    assert_eq!(e.file, PathBuf::from("test.toml"));
    e.message
}

/// A valid base to append error cases to: one port, line 1..=4.
const BASE: &str =
    "[[port]]\nname = \"p0\"\ndevice = \"net_null0\"\naddresses = [\"192.0.2.1/24\"]\n";

#[test]
fn full_config() {
    let cfg = parse(FULL).unwrap();
    assert_eq!(cfg.source, PathBuf::from("test.toml"));
    assert_eq!(
        cfg.eal,
        EalConfig {
            main_lcore: 0,
            memory_mb: 256,
            no_huge: true,
            file_prefix: Some("rvs".into()),
            args: vec!["--log-level".into(), "lib.eal:notice".into()],
        }
    );
    assert_eq!(
        cfg.dataplane,
        DataplaneConfig {
            workers: vec![2, 3],
            ip_forward: true,
            burst: 64,
            rx_desc: 512,
            tx_desc: 2048,
            mbufs: 16383,
            mbuf_cache: 128,
            icmp_ratelimit: 50,
        }
    );
    assert_eq!(
        cfg.neighbour,
        NeighbourConfig {
            capacity: 4096,
            hold_packets: 4,
            reachable_ms: 20000,
            gc_stale_ms: 60000,
            retrans_ms: 500,
            max_probes: 5,
        }
    );
    assert_eq!(
        cfg.ports,
        vec![
            PortConfig {
                name: "client".into(),
                device: Device::Vdev("net_af_xdp0,iface=gc0".into()),
                mac: Some([2, 0, 0, 0, 0, 1]),
                mtu: 9000,
                addresses: vec![(ip("192.0.2.1"), 24), (ip("2001:db8::1"), 64)],
                rss: false,
                promiscuous: true,
            },
            PortConfig {
                name: "servers".into(),
                device: Device::Pci("0000:3b:00.1".into()),
                mac: None,
                mtu: 1500,
                addresses: vec![(ip("198.51.100.1"), 24)],
                rss: true,
                promiscuous: false,
            },
        ]
    );
    assert_eq!(
        cfg.routes,
        vec![
            RouteConfig {
                prefix: (ip("0.0.0.0"), 0),
                via: Some(ip("198.51.100.254")),
                port: 1,
            },
            RouteConfig {
                prefix: (ip("203.0.113.0"), 24),
                via: Some(ip("192.0.2.254")),
                port: 0,
            },
            RouteConfig {
                prefix: (ip("10.0.0.0"), 8),
                via: None,
                port: 1,
            },
            RouteConfig {
                prefix: (ip("2001:db8:1::"), 48),
                via: Some(ip("2001:db8::fe")),
                port: 0,
            },
        ]
    );
    assert_eq!(cfg.port_index("servers"), Some(1));
    assert_eq!(cfg.ports[0].device.dpdk_name(), "net_af_xdp0");
    assert_eq!(cfg.ports[1].device.dpdk_name(), "0000:3b:00.1");
    assert_eq!(
        cfg.eal_args(),
        [
            "rvsd",
            "-l",
            "0,2,3",
            "--main-lcore",
            "0",
            "--no-huge",
            "-m",
            "256",
            "--file-prefix",
            "rvs",
            "--vdev",
            "net_af_xdp0,iface=gc0",
            "-a",
            "0000:3b:00.1",
            "--log-level",
            "lib.eal:notice",
        ]
    );
}

#[test]
fn defaults() {
    let cfg = parse(BASE).unwrap();
    assert_eq!(cfg.eal, EalConfig::default());
    assert_eq!(cfg.eal.main_lcore, 0);
    assert_eq!(cfg.eal.memory_mb, 512);
    assert!(cfg.eal.no_huge);
    assert_eq!(cfg.eal.file_prefix, None);
    assert!(cfg.eal.args.is_empty());
    assert_eq!(cfg.dataplane, DataplaneConfig::default());
    assert_eq!(cfg.dataplane.workers, vec![1]);
    assert!(!cfg.dataplane.ip_forward);
    assert_eq!(cfg.dataplane.burst, 32);
    assert_eq!((cfg.dataplane.rx_desc, cfg.dataplane.tx_desc), (1024, 1024));
    assert_eq!((cfg.dataplane.mbufs, cfg.dataplane.mbuf_cache), (8191, 256));
    assert_eq!(cfg.dataplane.icmp_ratelimit, 1000);
    assert_eq!(
        cfg.neighbour,
        NeighbourConfig {
            capacity: 1024,
            hold_packets: 8,
            reachable_ms: 30000,
            gc_stale_ms: 600000,
            retrans_ms: 1000,
            max_probes: 3,
        }
    );
    let p = &cfg.ports[0];
    assert_eq!(p.mac, None);
    assert_eq!(p.mtu, 1500);
    assert!(p.rss);
    assert!(!p.promiscuous);
    assert!(cfg.routes.is_empty());
    assert_eq!(
        cfg.eal_args(),
        [
            "rvsd",
            "-l",
            "0,1",
            "--main-lcore",
            "0",
            "--no-huge",
            "-m",
            "512",
            "--no-pci",
            "--vdev",
            "net_null0"
        ]
    );
    // Empty tables are the defaults too.
    let text = format!("[eal]\n[dataplane]\n[neighbour]\n{BASE}");
    assert_eq!(parse(&text).unwrap().dataplane, DataplaneConfig::default());
}

#[test]
fn dotted_keys_and_inline_tables() {
    let text = format!("dataplane.burst = 16\neal = {{ memory_mb = 64 }}\n{BASE}");
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.dataplane.burst, 16);
    assert_eq!(cfg.eal.memory_mb, 64);
    // Errors in them are located too.
    let text = format!("dataplane.burst = 0\n{BASE}");
    let msg = error_at(&text, 1, 19, "dataplane.burst");
    assert_eq!(msg, "burst must be between 1 and 512, got 0");
    let text = format!("eal = {{ memory_mb = 64, x = 1 }}\n{BASE}");
    error_at(&text, 1, 25, "eal.x");
    let text = "port = [{ name = \"a\", device = \"net_null0\", mtu = 1 }]\n";
    error_at(text, 1, 51, "port[0].mtu");
}

#[test]
fn syntax_errors() {
    let text = format!("{BASE}[dataplane]\nburst = \n");
    let e = parse(&text).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (6, "dataplane.burst"), "{e}");
    assert!(e.message.starts_with("invalid TOML"), "{e}");
    assert!(e.column >= 8, "{e}");

    // Duplicate key.
    let text = format!("{BASE}mtu = 1500\nmtu = 1400\n");
    let e = parse(&text).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (6, "port[0].mtu"), "{e}");
    assert!(e.message.contains("duplicate"), "{e}");

    // Unterminated string in the second port.
    let text = format!("{BASE}[[port]]\nname = \"p1\ndevice = \"x\"\n");
    let e = parse(&text).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (6, "port[1].name"), "{e}");

    // Garbage at the top.
    let e = parse("= 3\n").unwrap_err();
    assert_eq!((e.line, e.column, e.key.as_str()), (1, 1, ""), "{e}");
    assert_eq!(e.to_string(), format!("test.toml:1:1: {}", e.message));
}

#[test]
fn unknown_keys() {
    let msg = error_at(&format!("colour = 1\n{BASE}"), 1, 1, "colour");
    assert!(msg.contains("unknown key `colour`"), "{msg}");
    assert!(
        msg.contains("eal, dataplane, neighbour, port, route"),
        "{msg}"
    );
    error_at(&format!("{BASE}[eal]\nhuge = true\n"), 6, 1, "eal.huge");
    error_at(
        &format!("[dataplane]\n  brust = 32\n{BASE}"),
        2,
        3,
        "dataplane.brust",
    );
    error_at(
        &format!("[neighbour]\nttl = 1\n{BASE}"),
        2,
        1,
        "neighbour.ttl",
    );
    error_at(&format!("{BASE}speed = 10\n"), 5, 1, "port[0].speed");
    error_at(
        &format!("{BASE}[[route]]\nprefix = \"0.0.0.0/0\"\ngw = \"1.2.3.4\"\n"),
        7,
        1,
        "route[0].gw",
    );
    // A sub-table that is not allowed.
    error_at(&format!("{BASE}[eal.x]\n"), 5, 6, "eal.x");
    error_at(&format!("{BASE}[port.vlan]\n"), 5, 7, "port[0].vlan");
    // Quoted odd keys are shown quoted.
    error_at(&format!("{BASE}\"a b\" = 1\n"), 5, 1, "port[0].\"a b\"");
}

#[test]
fn wrong_types() {
    let msg = error_at(
        &format!("[dataplane]\nburst = \"32\"\n{BASE}"),
        2,
        9,
        "dataplane.burst",
    );
    assert_eq!(msg, "expected an integer, found a string");
    let msg = error_at(&format!("[eal]\nno_huge = 1\n{BASE}"), 2, 11, "eal.no_huge");
    assert_eq!(msg, "expected a boolean (true or false), found an integer");
    error_at(
        &format!("[dataplane]\nworkers = 1\n{BASE}"),
        2,
        11,
        "dataplane.workers",
    );
    error_at(
        &format!("[dataplane]\nworkers = [1, 2.5]\n{BASE}"),
        2,
        15,
        "dataplane.workers[1]",
    );
    error_at(
        &format!("[eal]\nargs = [\"-v\", 3]\n{BASE}"),
        2,
        15,
        "eal.args[1]",
    );
    error_at(&format!("eal = 3\n{BASE}"), 1, 7, "eal");
    error_at(&format!("eal = 1979-05-27\n{BASE}"), 1, 7, "eal");
    let msg = error_at("[port]\nname = \"a\"\n", 1, 1, "port");
    assert_eq!(msg, "expected an array of tables ([[port]]), found a table");
    error_at("port = [1]\n", 1, 9, "port[0]");
    error_at(
        "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = \"192.0.2.1/24\"\n",
        4,
        13,
        "port[0].addresses",
    );
    error_at(
        "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [\"192.0.2.1/24\", 7]\n",
        4,
        30,
        "port[0].addresses[1]",
    );
    error_at(
        "[[port]]\nname = 3\ndevice = \"net_null0\"\n",
        2,
        8,
        "port[0].name",
    );
}

#[test]
fn missing_keys() {
    let msg = error_at("", 1, 1, "port");
    assert_eq!(msg, "at least one [[port]] is required; none is given");
    error_at("port = []\n[eal]\nmemory_mb = 64\n", 1, 8, "port");
    let msg = error_at(
        &format!("{BASE}\n[[port]]\ndevice = \"net_null1\"\n"),
        6,
        1,
        "port[1].name",
    );
    assert!(msg.starts_with("missing required key `name`"), "{msg}");
    error_at("[[port]]\nname = \"a\"\n", 1, 1, "port[0].device");
    error_at(
        &format!("{BASE}[[route]]\nvia = \"192.0.2.9\"\n"),
        5,
        1,
        "route[0].prefix",
    );
    let msg = error_at(
        &format!("{BASE}[[route]]\nprefix = \"10.0.0.0/8\"\n"),
        5,
        1,
        "route[0].port",
    );
    assert!(msg.contains("connected route"), "{msg}");
}

#[test]
fn value_ranges() {
    let cases: &[(&str, &str, usize, &str)] = &[
        ("[dataplane]\nburst = 0\n", "dataplane.burst", 9, "burst must be between 1 and 512, got 0"),
        ("[dataplane]\nburst = 513\n", "dataplane.burst", 9, "burst must be between 1 and 512, got 513"),
        ("[dataplane]\nrx_desc = 1000\n", "dataplane.rx_desc", 11, "rx_desc must be a power of two between 64 and 16384, got 1000"),
        ("[dataplane]\ntx_desc = 32\n", "dataplane.tx_desc", 11, "tx_desc must be a power of two between 64 and 16384, got 32"),
        ("[dataplane]\ntx_desc = 32768\n", "dataplane.tx_desc", 11, "tx_desc must be a power of two between 64 and 16384, got 32768"),
        ("[dataplane]\nrx_desc = 70000\n", "dataplane.rx_desc", 11, "rx_desc must be between 0 and 65535, got 70000"),
        ("[dataplane]\nmbufs = 1000\n", "dataplane.mbufs", 9, "mbufs must be at least 2 * burst * workers + rx_desc * workers = 2 * 32 * 1 + 1024 * 1 = 1088, got 1000"),
        ("[dataplane]\nmbuf_cache = 513\n", "dataplane.mbuf_cache", 14, "mbuf_cache must be between 0 and 512, got 513"),
        ("[dataplane]\nmbufs = 1500\nmbuf_cache = 1001\n", "dataplane.mbuf_cache", 14, "mbuf_cache must be between 0 and 512, got 1001"),
        ("[dataplane]\nicmp_ratelimit = -1\n", "dataplane.icmp_ratelimit", 18, "icmp_ratelimit must be between 0 and 1000000, got -1"),
        ("[eal]\nmemory_mb = 0\n", "eal.memory_mb", 13, "memory_mb must be between 1 and 1048576, got 0"),
        ("[eal]\nmain_lcore = 1024\n", "eal.main_lcore", 14, "main_lcore must be between 0 and 1023, got 1024"),
        ("[neighbour]\nmax_probes = 0\n", "neighbour.max_probes", 14, "max_probes must be between 1 and 255, got 0"),
        ("[neighbour]\ngc_stale_ms = 1000\n", "neighbour.gc_stale_ms", 15, "gc_stale_ms must not be less than reachable_ms (30000), got 1000"),
    ];
    for &(head, key, col, want) in cases {
        let msg = error_at(
            &format!("{head}{BASE}"),
            head.matches('\n').count(),
            col,
            key,
        );
        assert_eq!(msg, want, "{head}");
    }
    // mbufs too small for the default mbuf_cache: reported on mbuf_cache.
    let msg = error_at(
        &format!("[dataplane]\nburst = 8\nrx_desc = 64\nmbufs = 300\n{BASE}"),
        1,
        1,
        "dataplane.mbuf_cache",
    );
    assert_eq!(msg, "mbuf_cache must be at most mbufs / 1.5 = 200, got 256");
    // mbufs defaulted but too small for many workers: reported at the table.
    let msg = error_at(
        &format!("[dataplane]\nworkers = [1,2,3,4,5,6,7,8]\n{BASE}"),
        1,
        1,
        "dataplane.mbufs",
    );
    assert!(msg.ends_with("= 8704, got 8191"), "{msg}");
    let msg = error_at(&format!("{BASE}mtu = 67\n"), 5, 7, "port[0].mtu");
    assert_eq!(msg, "mtu must be between 68 and 9600, got 67");
    error_at(&format!("{BASE}mtu = 9601\n"), 5, 7, "port[0].mtu");
    let msg = error_at(
        &format!("[eal]\nfile_prefix = \"a/b\"\n{BASE}"),
        2,
        15,
        "eal.file_prefix",
    );
    assert!(msg.contains("\"a/b\""), "{msg}");
    error_at(
        &format!("[eal]\nargs = [\"\"]\n{BASE}"),
        2,
        9,
        "eal.args[0]",
    );
}

#[test]
fn workers() {
    let msg = error_at(
        &format!("[dataplane]\nworkers = []\n{BASE}"),
        2,
        11,
        "dataplane.workers",
    );
    assert!(msg.contains("at least one"), "{msg}");
    let msg = error_at(
        &format!("[dataplane]\nworkers = [1, 2, 1]\n{BASE}"),
        2,
        18,
        "dataplane.workers[2]",
    );
    assert_eq!(
        msg,
        "lcore 1 is listed twice (also dataplane.workers[0]); workers must be distinct"
    );
    let msg = error_at(
        &format!("[dataplane]\nworkers = [1, 0]\n{BASE}"),
        2,
        15,
        "dataplane.workers[1]",
    );
    assert!(msg.contains("main lcore"), "{msg}");
    let msg = error_at(
        &format!("[dataplane]\nworkers = [2000]\n{BASE}"),
        2,
        12,
        "dataplane.workers[0]",
    );
    assert_eq!(msg, "a worker lcore must be between 0 and 1023, got 2000");
    // Default workers [1] against main_lcore = 1.
    error_at(
        &format!("[eal]\nmain_lcore = 1\n{BASE}"),
        2,
        14,
        "eal.main_lcore",
    );
    let cfg = parse(&format!(
        "[eal]\nmain_lcore = 1\n[dataplane]\nworkers = [0]\n{BASE}"
    ))
    .unwrap();
    assert_eq!(cfg.eal_args()[2], "1,0");
}

#[test]
fn ports() {
    let two = |a: &str, b: &str| format!("[[port]]\n{a}\n[[port]]\n{b}\n");
    let msg = error_at(
        &two(
            "name = \"a\"\ndevice = \"net_null0\"",
            "name = \"a\"\ndevice = \"net_null1\"",
        ),
        5,
        8,
        "port[1].name",
    );
    assert_eq!(
        msg,
        "port name `a` is already used by port[0]; names must be unique"
    );
    error_at(
        "[[port]]\nname = \"\"\ndevice = \"net_null0\"\n",
        2,
        8,
        "port[0].name",
    );
    error_at(
        "[[port]]\nname = \"a b\"\ndevice = \"net_null0\"\n",
        2,
        8,
        "port[0].name",
    );
    let msg = error_at(
        &two(
            "name = \"a\"\ndevice = \"net_null0\"",
            "name = \"b\"\ndevice = \"net_null0,size=64\"",
        ),
        6,
        10,
        "port[1].device",
    );
    assert!(msg.contains("already used by port[0] (`a`)"), "{msg}");
    // The same PCI device written two ways.
    error_at(
        &two(
            "name = \"a\"\ndevice = \"0000:3b:00.0\"",
            "name = \"b\"\ndevice = \"3b:00.0\"",
        ),
        6,
        10,
        "port[1].device",
    );
    let msg = error_at(
        "[[port]]\nname = \"a\"\ndevice = \"3b:00.9\"\n",
        3,
        10,
        "port[0].device",
    );
    assert!(msg.starts_with("invalid PCI address"), "{msg}");
    error_at(
        "[[port]]\nname = \"a\"\ndevice = \"net null\"\n",
        3,
        10,
        "port[0].device",
    );
    let msg = error_at(
        &format!("{BASE}mac = \"02:00:00:00:00\"\n"),
        5,
        7,
        "port[0].mac",
    );
    assert!(msg.contains("six two-digit hex bytes"), "{msg}");
    let msg = error_at(
        &format!("{BASE}mac = \"01:00:00:00:00:01\"\n"),
        5,
        7,
        "port[0].mac",
    );
    assert!(msg.contains("unicast"), "{msg}");
}

#[test]
fn addresses() {
    let port = |addrs: &str| {
        format!("[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [{addrs}]\n")
    };
    // Column of the second element: `addresses = ["192.0.2.1/24", ` is 29 chars.
    let msg = error_at(
        &port("\"192.0.2.1/24\", \"192.0.2.9\""),
        4,
        30,
        "port[0].addresses[1]",
    );
    assert!(msg.contains("no prefix length"), "{msg}");
    let msg = error_at(&port("\"192.0.2.1/33\""), 4, 14, "port[0].addresses[0]");
    assert_eq!(msg, "prefix length must be at most 32 for IPv4, got 33");
    let msg = error_at(&port("\"2001:db8::1/129\""), 4, 14, "port[0].addresses[0]");
    assert_eq!(msg, "prefix length must be at most 128 for IPv6, got 129");
    let msg = error_at(&port("\"192.0.2.300/24\""), 4, 14, "port[0].addresses[0]");
    assert!(msg.contains("is not an IP address"), "{msg}");
    let msg = error_at(&port("\"192.0.2.0/24\""), 4, 14, "port[0].addresses[0]");
    assert!(msg.contains("is a subnet, not an address"), "{msg}");
    assert!(msg.contains("192.0.2.1/24"), "{msg}");
    error_at(&port("\"192.0.2.255/24\""), 4, 14, "port[0].addresses[0]");
    error_at(&port("\"224.0.0.1/4\""), 4, 14, "port[0].addresses[0]");
    error_at(&port("\"0.0.0.0/0\""), 4, 14, "port[0].addresses[0]");
    error_at(
        &port("\"192.0.2.1/24\", \"192.0.2.1/25\""),
        4,
        30,
        "port[0].addresses[1]",
    );
    let text = format!(
        "{}[[port]]\nname = \"b\"\ndevice = \"net_null1\"\naddresses = [\"10.0.0.1/8\", \"192.0.2.1/30\"]\n",
        port("\"192.0.2.1/24\"")
    );
    let msg = error_at(&text, 8, 28, "port[1].addresses[1]");
    assert_eq!(
        msg,
        "address 192.0.2.1 is already owned by port[0] (`a`); an address belongs to one port"
    );
    // Host bits are kept; /31 and /32 may use any address.
    let cfg = parse(&port(
        "\"192.0.2.0/31\", \"10.1.2.3/32\", \"2001:db8::/127\"",
    ))
    .unwrap();
    assert_eq!(cfg.ports[0].addresses[0], (ip("192.0.2.0"), 31));
}

#[test]
fn routes() {
    let ports = "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n\
                 [[port]]\nname = \"b\"\ndevice = \"net_null1\"\naddresses = [\"198.51.100.1/24\"]\n";
    // Line 9 is the first [[route]].
    let route = |body: &str| format!("{ports}[[route]]\n{body}\n");
    let msg = error_at(
        &route("prefix = \"0.0.0.0/0\"\nport = \"c\""),
        11,
        8,
        "route[0].port",
    );
    assert_eq!(msg, "no port is named `c`; the ports are: a, b");
    let msg = error_at(
        &route("prefix = \"0.0.0.0/0\"\nvia = \"203.0.113.1\""),
        11,
        7,
        "route[0].via",
    );
    assert!(
        msg.contains("not in a connected subnet of any port"),
        "{msg}"
    );
    assert!(msg.contains("`a`: 192.0.2.0/24, 2001:db8::/64"), "{msg}");
    let msg = error_at(
        &route("prefix = \"0.0.0.0/0\"\nvia = \"192.0.2.9\"\nport = \"b\""),
        11,
        7,
        "route[0].via",
    );
    assert_eq!(
        msg,
        "via 192.0.2.9 is not in a connected subnet of port `b` (198.51.100.0/24)"
    );
    let msg = error_at(
        &route("prefix = \"0.0.0.0/0\"\nvia = \"2001:db8::9\""),
        11,
        7,
        "route[0].via",
    );
    assert_eq!(
        msg,
        "via 2001:db8::9 is IPv6 but prefix 0.0.0.0/0 is IPv4; they must be of the same family"
    );
    let msg = error_at(
        &route("prefix = \"0.0.0.0/0\"\nvia = \"192.0.2.0/24\""),
        11,
        7,
        "route[0].via",
    );
    assert!(msg.contains("no prefix length"), "{msg}");
    let msg = error_at(
        &route("prefix = \"0.0.0.0/0\"\nvia = \"192.0.2.1\""),
        11,
        7,
        "route[0].via",
    );
    assert!(msg.contains("address of rvs itself"), "{msg}");
    error_at(
        &route("prefix = \"0.0.0.0/0\"\nvia = \"0.0.0.0\""),
        11,
        7,
        "route[0].via",
    );
    let msg = error_at(
        &route("prefix = \"10.0.0.0/33\"\nport = \"a\""),
        10,
        10,
        "route[0].prefix",
    );
    assert_eq!(msg, "prefix length must be at most 32 for IPv4, got 33");
    error_at(
        &route("prefix = \"::/129\"\nport = \"a\""),
        10,
        10,
        "route[0].prefix",
    );
    error_at(
        &route("prefix = \"10.0.0.0\"\nport = \"a\""),
        10,
        10,
        "route[0].prefix",
    );
    error_at(
        &route("prefix = 10\nport = \"a\""),
        10,
        10,
        "route[0].prefix",
    );
    // Duplicate prefix after normalisation.
    let msg = error_at(
        &route("prefix = \"10.0.0.0/8\"\nport = \"a\"\n[[route]]\nprefix = \"10.1.2.3/8\"\nport = \"b\""),
        13,
        10,
        "route[1].prefix",
    );
    assert_eq!(msg, "a route for 10.0.0.0/8 is already given by route[0]");
    // Port derived from via, longest prefix wins.
    let text = format!(
        "{ports}[[port]]\nname = \"c\"\ndevice = \"net_null2\"\naddresses = [\"192.0.2.129/25\"]\n\
         [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"192.0.2.200\"\n\
         [[route]]\nprefix = \"10.0.0.0/8\"\nvia = \"192.0.2.100\"\n"
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.routes[0].port, 2);
    assert_eq!(cfg.routes[1].port, 0);
    // Same subnet on two ports: ambiguous without `port`.
    let text = format!(
        "{ports}[[port]]\nname = \"c\"\ndevice = \"net_null2\"\naddresses = [\"192.0.2.2/24\"]\n\
         [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"192.0.2.200\"\n"
    );
    let msg = error_at(&text, 15, 7, "route[0].via");
    assert!(msg.contains("say which with `port`"), "{msg}");
    let cfg = parse(&format!("{text}port = \"c\"\n")).unwrap();
    assert_eq!(cfg.routes[0].port, 2);
}

#[test]
fn display_and_load() {
    let e = parse(&format!("[dataplane]\nburst = 0\n{BASE}")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.toml:2:9: dataplane.burst: burst must be between 1 and 512, got 0"
    );
    let missing = Path::new("/nonexistent/rvs.toml");
    let e = Config::load(missing).unwrap_err();
    assert_eq!((e.line, e.column), (0, 0));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/rvs.toml: cannot read"),
        "{e}"
    );
    let err: &dyn std::error::Error = &e;
    assert!(!err.to_string().is_empty());
}

#[test]
fn device_helpers() {
    let v = Device::Vdev("net_af_xdp0,iface=gc0,queue_count=2".into());
    assert_eq!(v.dpdk_name(), "net_af_xdp0");
    assert_eq!(
        v.eal_args(),
        ["--vdev", "net_af_xdp0,iface=gc0,queue_count=2"]
    );
    assert_eq!(Device::Vdev("net_null0".into()).dpdk_name(), "net_null0");
    let p = Device::Pci("0000:3b:00.0".into());
    assert_eq!(p.dpdk_name(), "0000:3b:00.0");
    assert_eq!(p.eal_args(), ["-a", "0000:3b:00.0"]);
    assert_eq!(p.to_string(), "0000:3b:00.0");
}

/// Arbitrary (mangled) input never panics.
#[test]
fn no_panics_on_mangled_input() {
    let bytes: Vec<char> = FULL.chars().collect();
    for cut in (0..bytes.len()).step_by(7) {
        let text: String = bytes[..cut].iter().collect();
        let _ = parse(&text);
        let mut swapped = bytes.clone();
        swapped[cut] = '"';
        let _ = parse(&swapped.iter().collect::<String>());
        swapped[cut] = 'é';
        let _ = parse(&swapped.iter().collect::<String>());
    }
}

#[test]
fn example_configs_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    if !dir.is_dir() {
        return;
    }
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            found += 1;
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
        }
    }
    assert!(found > 0, "no *.toml in {}", dir.display());
}
