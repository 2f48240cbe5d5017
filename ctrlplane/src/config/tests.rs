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
mtu = 2000
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
            lcores: None,
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
            redirect_ring: 1024,
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
                mtu: 2000,
                addresses: vec![(ip("192.0.2.1"), 24), (ip("2001:db8::1"), 64)],
                rss: false,
                promiscuous: true,
                kernel: None,
            },
            PortConfig {
                name: "servers".into(),
                device: Device::Pci("0000:3b:00.1".into()),
                mac: None,
                mtu: 1500,
                addresses: vec![(ip("198.51.100.1"), 24)],
                rss: true,
                promiscuous: false,
                kernel: None,
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
    assert_eq!(cfg.dataplane.redirect_ring, 1024);
    assert_eq!(cfg.eal.lcores, None);
    assert_eq!(cfg.fullnat, FullnatConfig::default());
    assert!(cfg.services.is_empty());
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
    assert_eq!(msg, "burst must be between 4 and 512, got 0");
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
        msg.contains("eal, dataplane, neighbour, fullnat, port, route, service"),
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
        ("[dataplane]\nburst = 0\n", "dataplane.burst", 9, "burst must be between 4 and 512, got 0"),
        ("[dataplane]\nburst = 513\n", "dataplane.burst", 9, "burst must be between 4 and 512, got 513"),
        ("[dataplane]\nrx_desc = 1000\n", "dataplane.rx_desc", 11, "rx_desc must be a power of two between 64 and 16384, got 1000"),
        ("[dataplane]\ntx_desc = 32\n", "dataplane.tx_desc", 11, "tx_desc must be a power of two between 64 and 16384, got 32"),
        ("[dataplane]\ntx_desc = 32768\n", "dataplane.tx_desc", 11, "tx_desc must be a power of two between 64 and 16384, got 32768"),
        ("[dataplane]\nrx_desc = 70000\n", "dataplane.rx_desc", 11, "rx_desc must be between 0 and 65535, got 70000"),
        ("[dataplane]\nmbufs = 1000\n", "dataplane.mbufs", 9, "mbufs (per port) must be at least 2496: each worker's pool, mbufs * ports / workers, must hold every port's RX ring (rx_desc, at least 2048 on af_xdp) + workers * ports * tx_desc + kernel ports * 512 + 2 * burst + workers * 1.5 * mbuf_cache + (workers - 1) * (redirect_ring - 1) = 1024 + 1 * 1 * 1024 + 0 * 512 + 2 * 32 + 1 * 384 + 0 = 2496, got 1000"),
        ("[dataplane]\nmbuf_cache = 513\n", "dataplane.mbuf_cache", 14, "mbuf_cache must be between 0 and 512, got 513"),
        ("[dataplane]\nmbufs = 1500\nmbuf_cache = 1001\n", "dataplane.mbuf_cache", 14, "mbuf_cache must be between 0 and 512, got 1001"),
        ("[dataplane]\nicmp_ratelimit = -1\n", "dataplane.icmp_ratelimit", 18, "icmp_ratelimit must be between 0 and 1000000, got -1"),
        ("[eal]\nmemory_mb = 0\n", "eal.memory_mb", 13, "memory_mb must be between 1 and 1048576, got 0"),
        ("[eal]\nmain_lcore = 1024\n", "eal.main_lcore", 14, "main_lcore must be between 0 and 1023, got 1024"),
        ("[neighbour]\nmax_probes = 0\n", "neighbour.max_probes", 14, "max_probes must be between 1 and 255, got 0"),
        ("[dataplane]\nredirect_ring = 1000\n", "dataplane.redirect_ring", 17, "redirect_ring must be a power of two between 128 and 65536, got 1000"),
        ("[dataplane]\nredirect_ring = 64\n", "dataplane.redirect_ring", 17, "redirect_ring must be a power of two between 128 and 65536, got 64"),
        ("[dataplane]\nredirect_ring = 131072\n", "dataplane.redirect_ring", 17, "redirect_ring must be a power of two between 128 and 65536, got 131072"),
        ("[dataplane]\nredirect_ring = -1\n", "dataplane.redirect_ring", 17, "redirect_ring must be between 0 and 4294967295, got -1"),
        ("[fullnat]\nsessions = 0\n", "fullnat.sessions", 12, "sessions must be between 1 and 67108864, got 0"),
        ("[fullnat]\nsessions = 67108865\n", "fullnat.sessions", 12, "sessions must be between 1 and 67108864, got 67108865"),
        ("[fullnat]\nmss_clamp = 535\n", "fullnat.mss_clamp", 13, "mss_clamp must be between 536 and 9000, got 535"),
        ("[fullnat]\nmss_clamp = 9001\n", "fullnat.mss_clamp", 13, "mss_clamp must be between 536 and 9000, got 9001"),
        ("[fullnat]\nlport_min = 0\n", "fullnat.lport_min", 13, "lport_min must be between 1 and 65535, got 0"),
        ("[fullnat]\nlport_max = 65536\n", "fullnat.lport_max", 13, "lport_max must be between 1 and 65535, got 65536"),
        ("[fullnat]\nlport_min = 2000\nlport_max = 2000\n", "fullnat.lport_max", 13, "lport_max must be greater than lport_min (2000), got 2000"),
        ("[fullnat]\nlport_max = 1024\n", "fullnat.lport_max", 13, "lport_max must be greater than lport_min (1025), got 1024"),
        ("[fullnat]\nlport_min = 65535\n", "fullnat.lport_min", 13, "lport_min must be less than lport_max (65535), got 65535"),
        ("[fullnat]\nlport_reuse_delay_s = 86401\n", "fullnat.lport_reuse_delay_s", 23, "lport_reuse_delay_s must be between 0 and 86400, got 86401"),
        ("[fullnat]\ntoa = \"yes\"\n", "fullnat.toa", 7, "expected a boolean (true or false), found a string"),
        ("[fullnat.timeouts]\ntcp = 0\n", "fullnat.timeouts.tcp", 7, "tcp must be between 1 and 2147483, got 0"),
        ("[fullnat.timeouts]\nclose = 2147484\n", "fullnat.timeouts.close", 9, "close must be between 1 and 2147483, got 2147484"),
        ("[fullnat.timeouts]\ntime_wait = 1.5\n", "fullnat.timeouts.time_wait", 13, "expected an integer, found a float"),
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
    // mbufs not given: it grows from 8191 to what many workers need.
    let cfg = parse(&format!("[dataplane]\nworkers = [1,2,3,4,5,6,7,8]\n{BASE}")).unwrap();
    assert_eq!(cfg.dataplane.mbufs, 156_104);
    assert_eq!(cfg.dataplane.pool_per_worker(1), 19_513);
    // Every port's RX ring counts, every worker's TX rings on every port (a packet redirected
    // to a peer leaves from the peer's), a kernel-side queue's 512, and what the rings to the
    // other workers hold.
    let two_ports =
        format!("{BASE}kernel = \"rvs0\"\n[[port]]\nname = \"p1\"\ndevice = \"net_null1\"\n");
    let msg = error_at(
        &format!(
            "[dataplane]\nmbufs = 8191\nworkers = [1,2,3,4]\nredirect_ring = 128\n{two_ports}"
        ),
        2,
        9,
        "dataplane.mbufs",
    );
    assert!(
        msg.starts_with("mbufs (per port) must be at least 25466:")
            && msg.ends_with(
                "= 2048 + 4 * 2 * 1024 + 1 * 512 + 2 * 32 + 4 * 384 + 381 = 12733, got 8191"
            ),
        "{msg}"
    );
    parse(&format!(
        "[dataplane]\nworkers = [1,2,3,4]\nredirect_ring = 128\nmbufs = 25466\n{two_ports}"
    ))
    .unwrap();
    // An af_xdp port fills its RX queue with 2048 mbufs whatever rx_desc is.
    let xdp = "[[port]]\nname = \"x\"\ndevice = \"net_af_xdp0,iface=veth0\"\n";
    let msg = error_at(
        &format!("[dataplane]\nmbufs = 3000\nrx_desc = 256\n{xdp}"),
        2,
        9,
        "dataplane.mbufs",
    );
    assert!(
        msg.starts_with("mbufs (per port) must be at least 3520:"),
        "{msg}"
    );
    let msg = error_at(&format!("{BASE}mtu = 67\n"), 5, 7, "port[0].mtu");
    assert_eq!(msg, "mtu must be between 68 and 2030, got 67");
    // Jumbo frames do not fit an mbuf's 2048-byte data room.
    error_at(&format!("{BASE}mtu = 2031\n"), 5, 7, "port[0].mtu");
    error_at(&format!("{BASE}mtu = 9000\n"), 5, 7, "port[0].mtu");
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
        "test.toml:2:9: dataplane.burst: burst must be between 4 and 512, got 0"
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
    // Not a regular file (a device: reading /dev/zero would never end), or too large: refused
    // without reading it.
    let e = Config::load(Path::new("/dev/zero")).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let big = std::env::temp_dir().join(format!("rvs-big-{}.toml", std::process::id()));
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(super::MAX_CONFIG_BYTES + 1).unwrap();
    let e = Config::load(&big).unwrap_err();
    let _ = std::fs::remove_file(&big);
    assert!(e.to_string().contains("more than the"), "{e}");
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
    for text in [FULL, SVC] {
        mangle(text);
    }
}

fn mangle(text: &str) {
    let bytes: Vec<char> = text.chars().collect();
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
    assert!(dir.is_dir(), "{} is part of the repository", dir.display());
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

#[test]
fn fullnat_settings() {
    let text = format!(
        "[fullnat]\nsessions = 1024\ntoa = false\nmss_clamp = 1400\nlport_min = 2000\n\
         lport_max = 3000\nlport_reuse_delay_s = 0\nexpire_quiescent_template = true\n\
         [fullnat.timeouts]\ntcp = 1\ntcpfin = 2\nudp = 3\nsyn_sent = 4\nsyn_recv = 5\n\
         close_wait = 6\nlast_ack = 7\ntime_wait = 8\nclose = 2147483\n{BASE}"
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(
        cfg.fullnat,
        FullnatConfig {
            sessions: 1024,
            toa: false,
            mss_clamp: Some(1400),
            lport_min: 2000,
            lport_max: 3000,
            lport_reuse_delay_s: 0,
            expire_quiescent_template: true,
            timeouts: TimeoutsConfig {
                tcp: 1,
                tcpfin: 2,
                udp: 3,
                syn_sent: 4,
                syn_recv: 5,
                close_wait: 6,
                last_ack: 7,
                time_wait: 8,
                close: 2147483,
            },
        }
    );
    // Defaults: IPVS's timeouts.
    let d = FullnatConfig::default();
    assert_eq!(
        (d.sessions, d.toa, d.mss_clamp, d.lport_min, d.lport_max),
        (65536, true, None, 1025, 65535)
    );
    assert_eq!(d.lport_reuse_delay_s, 120);
    assert!(!d.expire_quiescent_template, "IPVS's default");
    assert_eq!(
        d.timeouts,
        TimeoutsConfig {
            tcp: 900,
            tcpfin: 120,
            udp: 300,
            syn_sent: 120,
            syn_recv: 60,
            close_wait: 60,
            last_ack: 30,
            time_wait: 120,
            close: 10,
        }
    );
    // Partial tables keep the other defaults; inline and dotted forms work.
    let cfg = parse(&format!(
        "fullnat = {{ toa = false, timeouts = {{ udp = 30 }} }}\n{BASE}"
    ))
    .unwrap();
    assert!(!cfg.fullnat.toa);
    assert_eq!(cfg.fullnat.timeouts.udp, 30);
    assert_eq!(cfg.fullnat.timeouts.tcp, 900);
    assert_eq!(cfg.fullnat.sessions, 65536);
    let cfg = parse(&format!("fullnat.timeouts.tcp = 60\n{BASE}")).unwrap();
    assert_eq!(cfg.fullnat.timeouts.tcp, 60);
    // Unknown keys and wrong types.
    let msg = error_at(
        &format!("[fullnat]\nsesions = 1\n{BASE}"),
        2,
        1,
        "fullnat.sesions",
    );
    assert!(
        msg.contains("allowed keys here: sessions, toa, mss_clamp"),
        "{msg}"
    );
    let msg = error_at(
        &format!("[fullnat.timeouts]\nestablished = 1\n{BASE}"),
        2,
        1,
        "fullnat.timeouts.established",
    );
    assert!(
        msg.ends_with(
            "tcp, tcpfin, udp, syn_sent, syn_recv, close_wait, last_ack, time_wait, close"
        ),
        "{msg}"
    );
    let msg = error_at(
        &format!("[fullnat]\ntimeouts = 5\n{BASE}"),
        2,
        12,
        "fullnat.timeouts",
    );
    assert_eq!(msg, "expected a table, found an integer");
    error_at(&format!("fullnat = []\n{BASE}"), 1, 11, "fullnat");
}

#[test]
fn lcores() {
    let text = format!("[eal]\nlcores = \"0@0,1@0,2@1\"\n[dataplane]\nworkers = [1, 2]\n{BASE}");
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.eal.lcores.as_deref(), Some("0@0,1@0,2@1"));
    assert_eq!(
        cfg.eal_args()[..5],
        ["rvsd", "--lcores", "0@0,1@0,2@1", "--main-lcore", "0"]
    );
    assert!(!cfg.eal_args().contains(&"-l".to_owned()));
    // Plain ids, extra lcores and a non-default main lcore are fine.
    let text = format!("[eal]\nmain_lcore = 3\nlcores = \"3,1@0,7\"\n{BASE}");
    let cfg = parse(&text).unwrap();
    assert_eq!(
        cfg.eal_args()[..5],
        ["rvsd", "--lcores", "3,1@0,7", "--main-lcore", "3"]
    );

    let bad = |lcores: &str| {
        error_at(
            &format!("[eal]\nlcores = {lcores:?}\n{BASE}"),
            2,
            10,
            "eal.lcores",
        )
    };
    let msg = bad("0@0,1@x");
    assert_eq!(
        msg,
        "lcores must be comma-separated LCORE or LCORE@CPU entries (ids 0..=1023, no spaces) like \"0@0,1@0,2@1\"; \"1@x\" is not one"
    );
    for s in [
        "", "0,", "0, 1", "0-1@0", "(0,1)@0", "0@0@1", "1024,0,1", "0,1@1024", "@0,0,1", "+1,0",
    ] {
        let msg = bad(s);
        assert!(
            msg.starts_with("lcores must be comma-separated"),
            "{s}: {msg}"
        );
    }
    assert_eq!(
        bad("0@0,1@0,1@1"),
        "lcore 1 appears twice in lcores \"0@0,1@0,1@1\"; each lcore is mapped once"
    );
    assert_eq!(
        bad("1@0,2@1"),
        "lcores \"1@0,2@1\" does not map the main lcore 0 (eal.main_lcore); the main lcore and every worker must be in it"
    );
    let msg = error_at(
        &format!("[dataplane]\nworkers = [1, 2]\n[eal]\nlcores = \"0@0,1@0\"\n{BASE}"),
        4,
        10,
        "eal.lcores",
    );
    assert_eq!(
        msg,
        "lcores \"0@0,1@0\" does not map worker lcore 2 (dataplane.workers[1]); the main lcore and every worker must be in it"
    );
    error_at(&format!("[eal]\nlcores = 3\n{BASE}"), 2, 10, "eal.lcores");
}

/// A valid FULLNAT configuration to edit for service tests. Line 12 is the
/// `[[service]]`; the two reals start at lines 19 and 22.
const SVC: &str = r#"[[port]]
name = "client"
device = "net_null0"
addresses = ["192.0.2.1/24"]
[[port]]
name = "servers"
device = "net_null1"
addresses = ["198.51.100.1/24"]
[[route]]
prefix = "10.0.0.0/8"
via = "198.51.100.254"
[[service]]
proto = "tcp"
vip = "203.0.113.10"
vport = 80
scheduler = "wrr"
port = "client"
lips = ["198.51.100.2", "198.51.100.3"]
[[service.real]]
ip = "198.51.100.11"
weight = 3
[[service.real]]
ip = "10.1.2.3"
port = 8080
"#;

/// `SVC` with the first `from` replaced by `to`.
#[track_caller]
fn svc(from: &str, to: &str) -> String {
    assert!(SVC.contains(from), "{from:?} not in SVC");
    SVC.replacen(from, to, 1)
}

#[test]
fn services() {
    let cfg = parse(SVC).unwrap();
    assert_eq!(
        cfg.services,
        vec![ServiceConfig {
            proto: Proto::Tcp,
            vip: ip("203.0.113.10"),
            vport: 80,
            scheduler: Scheduler::Wrr,
            sched_flags: vec![],
            mh_table_size: 4093,
            persistent: None,
            netmask: None,
            forward: Forward::FullNat,
            port: 0,
            lips: vec![ip("198.51.100.2"), ip("198.51.100.3")],
            lip_port: 1,
            reals: vec![
                RealConfig {
                    ip: ip("198.51.100.11"),
                    port: 80,
                    weight: 3,
                    forward: Forward::FullNat,
                    upper: 0,
                    lower: 0,
                    check: None,
                },
                RealConfig {
                    ip: ip("10.1.2.3"),
                    port: 8080,
                    weight: 1,
                    forward: Forward::FullNat,
                    upper: 0,
                    lower: 0,
                    check: None,
                },
            ],
            check: None,
            mark: None,
        }]
    );
    assert_eq!(Proto::Udp.as_str(), "udp");
    assert_eq!(Proto::Tcp.to_string(), "tcp");
    assert_eq!(Scheduler::Rr.as_str(), "rr");
    assert_eq!(Scheduler::Wrr.to_string(), "wrr");

    // More services: same VIP and port on the other protocol, same VIP on
    // another port, LIPs shared; weight 0 and 65535; explicit lip_port with
    // LIPs outside its subnets; the VIP's port derived from its subnet.
    let text = format!(
        "{SVC}[[service]]\nproto = \"udp\"\nvip = \"203.0.113.10\"\nvport = 80\nscheduler = \"rr\"\n\
         port = \"client\"\nlips = [\"198.51.100.3\", \"172.16.0.1\"]\nlip_port = \"servers\"\n\
         [[service.real]]\nip = \"198.51.100.11\"\nweight = 0\n\
         [[service.real]]\nip = \"198.51.100.11\"\nport = 81\nweight = 65535\n\
         [[service]]\nproto = \"tcp\"\nvip = \"192.0.2.10\"\nvport = 443\nscheduler = \"rr\"\n\
         lips = [\"198.51.100.2\"]\n[[service.real]]\nip = \"198.51.100.12\"\n"
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.services.len(), 3);
    let udp = &cfg.services[1];
    assert_eq!((udp.proto, udp.scheduler), (Proto::Udp, Scheduler::Rr));
    assert_eq!((udp.port, udp.lip_port), (0, 1));
    assert_eq!(udp.lips, vec![ip("198.51.100.3"), ip("172.16.0.1")]);
    assert_eq!(
        udp.reals,
        vec![
            RealConfig {
                ip: ip("198.51.100.11"),
                port: 80,
                weight: 0,
                forward: Forward::FullNat,
                upper: 0,
                lower: 0,
                check: None,
            },
            RealConfig {
                ip: ip("198.51.100.11"),
                port: 81,
                weight: 65535,
                forward: Forward::FullNat,
                upper: 0,
                lower: 0,
                check: None,
            },
        ]
    );
    assert_eq!((cfg.services[2].port, cfg.services[2].lip_port), (0, 1));

    // IPv6 end to end; a default route makes any real server reachable.
    let text = "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [\"2001:db8::1/64\"]\n\
                [[route]]\nprefix = \"::/0\"\nvia = \"2001:db8::fe\"\n\
                [[service]]\nproto = \"tcp\"\nvip = \"2001:db8::10\"\nvport = 80\nscheduler = \"wrr\"\n\
                lips = [\"2001:db8::2\"]\n[[service.real]]\nip = \"2001:db8:ffff::1\"\n";
    let cfg = parse(text).unwrap();
    assert_eq!(cfg.services[0].vip, ip("2001:db8::10"));
    assert_eq!(cfg.services[0].reals[0].ip, ip("2001:db8:ffff::1"));

    // Inline tables work too; errors in them are located.
    let text = format!(
        "service = [{{ proto = \"tcp\", vip = \"192.0.2.9\", vport = 80, scheduler = \"rr\", lips = [\"192.0.2.8\"], real = [{{ ip = \"192.0.2.20\", weight = -1 }}] }}]\n{BASE}"
    );
    let msg = error_at(&text, 1, 138, "service[0].real[0].weight");
    assert_eq!(msg, "weight must be between 0 and 65535, got -1");
}

#[test]
fn service_fields() {
    let cases: &[(&str, &str, usize, usize, &str, &str)] = &[
        ("proto = \"tcp\"", "proto = \"sctp\"", 13, 9, "service[0].proto", "proto must be \"tcp\" or \"udp\", got \"sctp\""),
        ("proto = \"tcp\"", "proto = \"TCP\"", 13, 9, "service[0].proto", "proto must be \"tcp\" or \"udp\", got \"TCP\""),
        ("proto = \"tcp\"", "proto = 6", 13, 9, "service[0].proto", "expected a string, found an integer"),
        ("proto = \"tcp\"", "", 12, 1, "service[0].proto", "missing required key `proto` (\"tcp\" or \"udp\")"),
        ("vip = \"203.0.113.10\"", "vip = \"203.0.113.10/32\"", 14, 7, "service[0].vip", "vip must be an IP address like \"203.0.113.10\" or \"2001:db8::10\" (no prefix length), got \"203.0.113.10/32\""),
        ("vip = \"203.0.113.10\"", "vip = \"0.0.0.0\"", 14, 7, "service[0].vip", "vip must be a unicast address, got 0.0.0.0"),
        ("vip = \"203.0.113.10\"", "vip = \"ff02::1\"", 14, 7, "service[0].vip", "vip must be a unicast address, got ff02::1"),
        ("vip = \"203.0.113.10\"", "vip = \"192.0.2.1\"", 14, 7, "service[0].vip", "vip 192.0.2.1 is an address of port `client`; a VIP must be an address of its own"),
        ("vip = \"203.0.113.10\"", "", 12, 1, "service[0].vip", "missing required key `vip` (the virtual IP address, like \"203.0.113.10\")"),
        ("vport = 80", "vport = 0", 15, 9, "service[0].vport", "vport 0 (every port of the VIP) needs `persistent` (as IPVS: zero port specified for non-persistent service)"),
        ("vport = 80", "vport = 65536", 15, 9, "service[0].vport", "vport must be between 0 and 65535, got 65536"),
        ("vport = 80", "vport = 80\npersistent = 0", 16, 14, "service[0].persistent", "persistent must be between 1 and 2147483648, got 0"),
        ("vport = 80", "vport = 80\npersistent = 2147483649", 16, 14, "service[0].persistent", "persistent must be between 1 and 2147483648, got 2147483649"),
        ("vport = 80", "vport = 80\npersistent = \"300\"", 16, 14, "service[0].persistent", "expected an integer, found a string"),
        ("vport = 80", "vport = 80\nnetmask = 24", 16, 11, "service[0].netmask", "netmask applies to persistent services only (set `persistent`)"),
        ("vport = 80", "vport = 80\npersistent = 300\nnetmask = 33", 17, 11, "service[0].netmask", "netmask must be between 0 and 32, got 33"),
        ("vport = 80", "vport = 80\npersistent = 300\nnetmask = \"255.0.255.0\"", 17, 11, "service[0].netmask", "netmask \"255.0.255.0\" is not a contiguous IPv4 netmask like \"255.255.255.0\" (or give a prefix length like 24)"),
        ("vport = 80", "vport = 80\npersistent = 300\nnetmask = \"/24\"", 17, 11, "service[0].netmask", "netmask \"/24\" is not a contiguous IPv4 netmask like \"255.255.255.0\" (or give a prefix length like 24)"),
        ("vport = 80", "vport = 80\npersistent = 300\nnetmask = true", 17, 11, "service[0].netmask", "netmask must be a prefix length 0..=32 or an IPv4 netmask like \"255.255.255.0\""),
        ("vport = 80", "vport = \"80\"", 15, 9, "service[0].vport", "expected an integer, found a string"),
        ("scheduler = \"wrr\"", "scheduler = \"random\"", 16, 13, "service[0].scheduler", "unknown scheduler \"random\"; supported schedulers: rr, wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr, fo, ovf, mh, twos"),
        ("scheduler = \"wrr\"", "scheduler = \"WLC\"", 16, 13, "service[0].scheduler", "unknown scheduler \"WLC\"; supported schedulers: rr, wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr, fo, ovf, mh, twos"),
        ("scheduler = \"wrr\"", "", 12, 1, "service[0].scheduler", "missing required key `scheduler` (rr, wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr, fo, ovf, mh, twos)"),
        ("scheduler = \"wrr\"", "scheduler = \"sh\"\nsched_flags = [\"mh-port\"]", 17, 16, "service[0].sched_flags[0]", "scheduler sh takes the flags sh-fallback, sh-port, got \"mh-port\""),
        ("scheduler = \"wrr\"", "scheduler = \"wrr\"\nsched_flags = [\"sh-port\"]", 17, 16, "service[0].sched_flags[0]", "scheduler wrr takes no flags, got \"sh-port\""),
        ("scheduler = \"wrr\"", "scheduler = \"mh\"\nsched_flags = [\"mh-port\", \"mh-port\"]", 17, 27, "service[0].sched_flags[1]", "scheduler flag \"mh-port\" is given twice"),
        ("scheduler = \"wrr\"", "scheduler = \"sh\"\nsched_flags = [\"flag-3\"]", 17, 16, "service[0].sched_flags[0]", "scheduler sh takes the flags sh-fallback, sh-port, got \"flag-3\""),
        ("scheduler = \"wrr\"", "scheduler = \"sh\"\nsched_flags = [\"sh-port\", \"flag-2\"]", 17, 27, "service[0].sched_flags[1]", "scheduler flag \"sh-port\" is given twice"),
        ("scheduler = \"wrr\"", "scheduler = \"rr\"\nsched_flags = [\"flag-1\"]", 17, 16, "service[0].sched_flags[0]", "scheduler rr takes no flags, got \"flag-1\""),
        ("scheduler = \"wrr\"", "scheduler = \"sh\"\nsched_flags = \"sh-port\"", 17, 15, "service[0].sched_flags", "expected an array, found a string"),
        ("scheduler = \"wrr\"", "scheduler = \"sh\"\nsched_flags = [1]", 17, 16, "service[0].sched_flags[0]", "expected a string, found an integer"),
        ("scheduler = \"wrr\"", "scheduler = \"wrr\"\nmh_table_size = 4093", 17, 17, "service[0].mh_table_size", "mh_table_size applies to the mh scheduler only (scheduler is wrr)"),
        ("scheduler = \"wrr\"", "scheduler = \"mh\"\nmh_table_size = 4096", 17, 17, "service[0].mh_table_size", "mh_table_size must be a prime (like 4093 or 65537), got 4096"),
        ("scheduler = \"wrr\"", "scheduler = \"mh\"\nmh_table_size = 262147", 17, 17, "service[0].mh_table_size", "mh_table_size must be between 2 and 131071, got 262147"),
        ("scheduler = \"wrr\"", "scheduler = \"mh\"\nmh_table_size = \"big\"", 17, 17, "service[0].mh_table_size", "expected an integer, found a string"),
        ("weight = 3", "weight = 3\nupper = 65536", 22, 9, "service[0].real[0].upper", "upper must be between 0 and 65535, got 65536"),
        ("weight = 3", "weight = 3\nlower = -1", 22, 9, "service[0].real[0].lower", "lower must be between 0 and 65535, got -1"),
        ("weight = 3", "weight = 3\nupper = 10\nlower = 11", 23, 9, "service[0].real[0].lower", "lower threshold 11 is above the upper threshold 10 (IPVS refuses it; upper 0 means none)"),
        ("weight = 3", "weight = 3\nlower = 5", 22, 9, "service[0].real[0].lower", "lower threshold 5 is above the upper threshold 0 (IPVS refuses it; upper 0 means none)"),
        ("weight = 3", "weight = 3\nupper = \"10\"", 22, 9, "service[0].real[0].upper", "expected an integer, found a string"),
        ("port = \"client\"", "port = \"clients\"", 17, 8, "service[0].port", "no port is named `clients`; the ports are: client, servers"),
        ("port = \"client\"", "", 12, 1, "service[0].port", "vip 203.0.113.10 is not in a connected subnet of any port (`client`: 192.0.2.0/24; `servers`: 198.51.100.0/24); say which port owns the VIP with `port`"),
        ("lips = [\"198.51.100.2\", \"198.51.100.3\"]", "lips = []", 18, 8, "service[0].lips", "lips must list at least one local address, like [\"198.51.100.2\"]"),
        ("lips = [\"198.51.100.2\", \"198.51.100.3\"]", "lips = \"198.51.100.2\"", 18, 8, "service[0].lips", "expected an array, found a string"),
        ("lips = [\"198.51.100.2\", \"198.51.100.3\"]", "", 12, 1, "service[0].lips", "missing required key `lips` (the local addresses, like [\"198.51.100.2\"])"),
        ("\"198.51.100.3\"]", "\"198.51.100.2\"]", 18, 25, "service[0].lips[1]", "local address 198.51.100.2 is listed twice (also service[0].lips[0])"),
        ("\"198.51.100.3\"]", "\"198.51.100.1\"]", 18, 25, "service[0].lips[1]", "local address 198.51.100.1 is an address of port `servers`; a local address must be an address of its own"),
        ("\"198.51.100.3\"]", "\"203.0.113.10\"]", 18, 25, "service[0].lips[1]", "local address 203.0.113.10 is the vip of this service; VIPs and local addresses must differ"),
        ("\"198.51.100.3\"]", "\"2001:db8::3\"]", 18, 25, "service[0].lips[1]", "local address 2001:db8::3 is IPv6 but the vip 203.0.113.10 is IPv4: NAT64 is not supported yet; local and real server addresses must be of the VIP's family"),
        ("\"198.51.100.3\"]", "\"198.51.100.3/24\"]", 18, 25, "service[0].lips[1]", "a local address must be an IP address like \"203.0.113.10\" or \"2001:db8::10\" (no prefix length), got \"198.51.100.3/24\""),
        ("\"198.51.100.3\"]", "\"255.255.255.255\"]", 18, 25, "service[0].lips[1]", "a local address must be a unicast address, got 255.255.255.255"),
        ("\"198.51.100.3\"]", "3]", 18, 25, "service[0].lips[1]", "expected a string, found an integer"),
        ("\"198.51.100.3\"]", "\"192.0.2.3\"]", 18, 25, "service[0].lips[1]", "local address 192.0.2.3 is not in a connected subnet of port `servers` (198.51.100.0/24), the port of 198.51.100.2; all local addresses must be on one port's subnets (or set `lip_port`)"),
        ("lips = [\"198.51.100.2\"", "lips = [\"172.16.0.2\"", 12, 1, "service[0].lip_port", "local address 172.16.0.2 is not in a connected subnet of any port (`client`: 192.0.2.0/24; `servers`: 198.51.100.0/24); say which port owns the local addresses with `lip_port`"),
        ("port = \"client\"", "port = \"client\"\nlip_port = \"s\"", 18, 12, "service[0].lip_port", "no port is named `s`; the ports are: client, servers"),
        ("port = \"client\"", "port = \"client\"\nlip_port = 1", 18, 12, "service[0].lip_port", "expected a string, found an integer"),
        ("port = \"client\"", "port = \"client\"\nweight = 1", 18, 1, "service[0].weight", "unknown key `weight`; allowed keys here: proto, vip, vport, scheduler, sched_flags, mh_table_size, persistent, netmask, forward, port, lips, lip_port, real, check, mark, match"),
        ("ip = \"198.51.100.11\"", "ip = \"2001:db8::11\"", 20, 6, "service[0].real[0].ip", "real server 2001:db8::11 is IPv6 but the vip 203.0.113.10 is IPv4: NAT64 is not supported yet; local and real server addresses must be of the VIP's family"),
        ("ip = \"198.51.100.11\"", "ip = \"198.51.100.1\"", 20, 6, "service[0].real[0].ip", "real server 198.51.100.1 is an address of rvs itself (port `servers`); a real server must be another host"),
        ("ip = \"198.51.100.11\"", "ip = \"203.0.113.10\"", 20, 6, "service[0].real[0].ip", "real server 203.0.113.10 is the vip of this service"),
        ("ip = \"198.51.100.11\"", "ip = \"198.51.100.3\"", 20, 6, "service[0].real[0].ip", "real server 198.51.100.3 is a local address of this service (service[0].lips[1])"),
        ("ip = \"198.51.100.11\"", "ip = \"198.51.100.11:80\"", 20, 6, "service[0].real[0].ip", "ip must be an IP address like \"203.0.113.10\" or \"2001:db8::10\" (no prefix length), got \"198.51.100.11:80\""),
        ("ip = \"198.51.100.11\"", "ip = \"224.0.0.5\"", 20, 6, "service[0].real[0].ip", "ip must be a unicast address, got 224.0.0.5"),
        ("ip = \"198.51.100.11\"", "", 19, 1, "service[0].real[0].ip", "missing required key `ip` (the real server's address, like \"198.51.100.11\")"),
        ("ip = \"10.1.2.3\"", "ip = \"172.16.1.1\"", 23, 6, "service[0].real[1].ip", "real server 172.16.1.1 is not reachable: it is in no connected subnet of a port (`client`: 192.0.2.0/24; `servers`: 198.51.100.0/24) and no [[route]] covers it"),
        ("ip = \"10.1.2.3\"\nport = 8080", "ip = \"198.51.100.11\"\nport = 80", 23, 6, "service[0].real[1].ip", "real server 198.51.100.11:80 is already listed as service[0].real[0]"),
        ("ip = \"10.1.2.3\"\nport = 8080", "ip = \"198.51.100.11\"", 23, 6, "service[0].real[1].ip", "real server 198.51.100.11:80 is already listed as service[0].real[0]"),
        ("port = 8080", "port = 0", 24, 8, "service[0].real[1].port", "port must be between 1 and 65535, got 0"),
        ("port = 8080", "port = \"http\"", 24, 8, "service[0].real[1].port", "expected an integer, found a string"),
        ("weight = 3", "weight = 65536", 21, 10, "service[0].real[0].weight", "weight must be between 0 and 65535, got 65536"),
        ("weight = 3", "weight = 1.5", 21, 10, "service[0].real[0].weight", "expected an integer, found a float"),
        ("weight = 3", "wieght = 3", 21, 1, "service[0].real[0].wieght", "unknown key `wieght`; allowed keys here: ip, port, weight, forward, upper, lower, check"),
    ];
    for &(from, to, line, col, key, want) in cases {
        let msg = error_at(&svc(from, to), line, col, key);
        assert_eq!(msg, want, "{from:?} -> {to:?}");
    }
}

/// Persistence (`persistent`, `netmask`) and port-0 services.
#[test]
fn persistent_services() {
    let cfg = parse(&svc("vport = 80", "vport = 80\npersistent = 300")).unwrap();
    assert_eq!(
        (cfg.services[0].persistent, cfg.services[0].netmask),
        (Some(300), None)
    );
    let text = svc(
        "vport = 80",
        "vport = 80\npersistent = 2147483648\nnetmask = \"255.255.255.0\"",
    );
    let s = &parse(&text).unwrap().services[0];
    assert_eq!((s.persistent, s.netmask), (Some(1 << 31), Some(24)));
    let s = &parse(&svc(
        "vport = 80",
        "vport = 80\npersistent = 1\nnetmask = 16",
    ))
    .unwrap()
    .services[0];
    assert_eq!((s.persistent, s.netmask), (Some(1), Some(16)));
    // Port 0: every port of the VIP; a real server's port defaults to 0 (the client's port) and
    // may be fixed.
    let s = &parse(&svc("vport = 80", "vport = 0\npersistent = 60"))
        .unwrap()
        .services[0];
    assert_eq!((s.vport, s.persistent), (0, Some(60)));
    assert_eq!(
        s.reals.iter().map(|r| r.port).collect::<Vec<_>>(),
        vec![0, 8080]
    );
    // A NAT real server in a persistent service (its replies are owned by another worker).
    let text = svc("weight = 3", "weight = 3\nforward = \"nat\"").replacen(
        "vport = 80",
        "vport = 80\npersistent = 60",
        1,
    );
    let msg = error_at(&text, 23, 11, "service[0].real[0].forward");
    assert_eq!(
        msg,
        "NAT real servers are not supported in a persistent service (use fullnat, dr or tun)"
    );
}

/// Every LVS scheduler name, scheduler flags, the Maglev table size and
/// connection thresholds.
#[test]
fn schedulers_flags_thresholds() {
    for &sched in Scheduler::ALL {
        let cfg = parse(&svc(
            "scheduler = \"wrr\"",
            &format!("scheduler = \"{sched}\""),
        ))
        .unwrap();
        assert_eq!(cfg.services[0].scheduler, sched);
        assert!(cfg.services[0].sched_flags.is_empty());
        assert_eq!(cfg.services[0].mh_table_size, 4093);
        assert_eq!(Scheduler::from_name(sched.as_str()), Some(sched));
    }
    assert_eq!(Scheduler::ALL.len(), 14);
    let cfg = parse(&svc(
        "scheduler = \"wrr\"",
        "scheduler = \"mh\"\nsched_flags = [\"mh-port\", \"mh-fallback\"]\nmh_table_size = 65537",
    ))
    .unwrap();
    let s = &cfg.services[0];
    assert_eq!((s.scheduler, s.mh_table_size), (Scheduler::Mh, 65537));
    // Kept in bit order (as ipvsadm lists them).
    assert_eq!(
        s.sched_flags,
        vec!["mh-fallback".to_string(), "mh-port".to_string()]
    );
    let cfg = parse(&svc(
        "scheduler = \"wrr\"",
        "scheduler = \"sh\"\nsched_flags = [\"sh-fallback\", \"sh-port\"]",
    ))
    .unwrap();
    assert_eq!(cfg.services[0].sched_flags, vec!["sh-fallback", "sh-port"]);
    // ipvsadm's generic flag-N names are the scheduler's Nth flag.
    let cfg = parse(&svc(
        "scheduler = \"wrr\"",
        "scheduler = \"mh\"\nsched_flags = [\"flag-2\", \"flag-1\"]",
    ))
    .unwrap();
    assert_eq!(cfg.services[0].sched_flags, vec!["mh-fallback", "mh-port"]);
    let cfg = parse(&svc(
        "scheduler = \"wrr\"",
        "scheduler = \"sh\"\nsched_flags = []",
    ))
    .unwrap();
    assert!(cfg.services[0].sched_flags.is_empty());
    let cfg = parse(&svc("weight = 3", "weight = 3\nupper = 100\nlower = 50")).unwrap();
    let r = &cfg.services[0].reals;
    assert_eq!((r[0].upper, r[0].lower), (100, 50));
    assert_eq!((r[1].upper, r[1].lower), (0, 0));
    let cfg = parse(&svc(
        "weight = 3",
        "weight = 3\nupper = 65535\nlower = 65535",
    ))
    .unwrap();
    assert_eq!(cfg.services[0].reals[0].upper, 65535);
    assert_eq!(Scheduler::Wrr.check_flags::<&str>(&[]), Ok(()));
    assert!(Scheduler::Mh.check_flags(&["sh-port"]).is_err());
}

#[test]
fn service_sets() {
    // No real server.
    let text = &SVC[..SVC.find("[[service.real]]").unwrap()];
    let msg = error_at(text, 12, 1, "service[0].real");
    assert_eq!(
        msg,
        "at least one [[service.real]] is required; none is given"
    );
    let msg = error_at(&format!("{text}real = []\n"), 19, 8, "service[0].real");
    assert_eq!(
        msg,
        "at least one [[service.real]] is required; none is given"
    );
    let msg = error_at(&format!("{text}real = 1\n"), 19, 8, "service[0].real");
    assert_eq!(
        msg,
        "expected an array of tables ([[service.real]]), found an integer"
    );
    error_at(&format!("{text}[service.real]\n"), 19, 1, "service[0].real");
    let msg = error_at(&format!("{BASE}[service]\n"), 5, 1, "service");
    assert_eq!(
        msg,
        "expected an array of tables ([[service]]), found a table"
    );

    // Line 25 is the second [[service]]; its vip on 27, lips on 31.
    let second = |proto: &str, vip: &str, vport: u16, lips: &str| {
        format!(
            "{SVC}[[service]]\nproto = \"{proto}\"\nvip = \"{vip}\"\nvport = {vport}\n\
             scheduler = \"rr\"\nport = \"client\"\nlips = [{lips}]\n\
             [[service.real]]\nip = \"198.51.100.11\"\n"
        )
    };
    assert!(parse(&second("tcp", "203.0.113.10", 81, "\"198.51.100.2\"")).is_ok());
    let msg = error_at(
        &second("tcp", "203.0.113.10", 80, "\"198.51.100.9\""),
        27,
        7,
        "service[1].vip",
    );
    assert_eq!(
        msg,
        "service tcp 203.0.113.10:80 is already defined by service[0]"
    );
    let msg = error_at(
        &second("tcp", "198.51.100.3", 80, "\"198.51.100.9\""),
        27,
        7,
        "service[1].vip",
    );
    assert_eq!(
        msg,
        "vip 198.51.100.3 is a local address (lips) of service[0]; VIPs and local addresses must differ"
    );
    let msg = error_at(
        &second(
            "udp",
            "203.0.113.11",
            80,
            "\"198.51.100.2\", \"203.0.113.10\"",
        ),
        31,
        25,
        "service[1].lips[1]",
    );
    assert_eq!(
        msg,
        "local address 203.0.113.10 is the vip of service[0]; VIPs and local addresses must differ"
    );

    // An address of rvs (a VIP, a LIP) is no service's real server, whichever comes first.
    let second_real = |vip: &str, lips: &str, real: &str| {
        format!(
            "{SVC}[[service]]\nproto = \"udp\"\nvip = \"{vip}\"\nvport = 80\n\
             scheduler = \"rr\"\nport = \"client\"\nlips = [{lips}]\n\
             [[service.real]]\nip = \"{real}\"\n"
        )
    };
    assert!(parse(&second_real(
        "203.0.113.11",
        "\"198.51.100.9\"",
        "198.51.100.11"
    ))
    .is_ok());
    let msg = error_at(
        &second_real("198.51.100.11", "\"198.51.100.9\"", "198.51.100.12"),
        27,
        7,
        "service[1].vip",
    );
    assert_eq!(
        msg,
        "vip 198.51.100.11 is service[0].real[0]; an address of rvs (a vip or a local address) cannot be another service's real server"
    );
    let msg = error_at(
        &second_real(
            "203.0.113.11",
            "\"198.51.100.9\", \"198.51.100.11\"",
            "198.51.100.12",
        ),
        31,
        8,
        "service[1].lips",
    );
    assert_eq!(
        msg,
        "local address 198.51.100.11 (lips[1]) is service[0].real[0]; an address of rvs (a vip or a local address) cannot be another service's real server"
    );
    for (real, what) in [
        ("203.0.113.10", "203.0.113.10"),
        ("198.51.100.2", "198.51.100.2"),
    ] {
        let msg = error_at(
            &second_real("203.0.113.11", "\"198.51.100.9\"", real),
            33,
            6,
            "service[1].real[0].ip",
        );
        assert_eq!(
            msg,
            format!("real server {what} is an address of service[0] (its vip or a local address), so an address of rvs itself; a real server must be another host")
        );
    }

    // IPv6 duplicates show bracketed socket addresses.
    let v6 = "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [\"2001:db8::1/64\"]\n\
              [[service]]\nproto = \"udp\"\nvip = \"2001:db8::10\"\nvport = 53\nscheduler = \"rr\"\n\
              lips = [\"2001:db8::2\"]\n[[service.real]]\nip = \"2001:db8::11\"\n\
              [[service.real]]\nip = \"2001:db8::11\"\nport = 53\n";
    let msg = error_at(v6, 14, 6, "service[0].real[1].ip");
    assert_eq!(
        msg,
        "real server [2001:db8::11]:53 is already listed as service[0].real[0]"
    );

    // VIP in connected subnets of two ports: ambiguous without `port`.
    let two = "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [\"192.0.2.1/24\"]\n\
               [[port]]\nname = \"b\"\ndevice = \"net_null1\"\naddresses = [\"192.0.2.2/24\"]\n\
               [[service]]\nproto = \"tcp\"\nvip = \"192.0.2.10\"\nvport = 80\nscheduler = \"rr\"\n\
               port = \"b\"\nlips = [\"192.0.2.11\"]\nlip_port = \"a\"\n[[service.real]]\nip = \"192.0.2.20\"\n";
    let cfg = parse(two).unwrap();
    assert_eq!((cfg.services[0].port, cfg.services[0].lip_port), (1, 0));
    let msg = error_at(&two.replace("port = \"b\"\n", ""), 9, 1, "service[0].port");
    assert_eq!(
        msg,
        "vip 192.0.2.10 is in connected subnets of both port `a` and port `b`; say which port owns the VIP with `port`"
    );
    let msg = error_at(
        &two.replace("lip_port = \"a\"\n", ""),
        9,
        1,
        "service[0].lip_port",
    );
    assert_eq!(
        msg,
        "local address 192.0.2.11 is in connected subnets of both port `a` and port `b`; say which port owns the local addresses with `lip_port`"
    );
}

#[test]
fn service_display() {
    let e = parse(&svc("weight = 3", "weight = 70000")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "test.toml:21:10: service[0].real[0].weight: weight must be between 0 and 65535, got 70000"
    );
}

#[test]
fn forwarding_methods() {
    // Per real server, defaulting to the service's `forward`, itself "fullnat".
    let cfg = parse(&svc("weight = 3", "weight = 3\nforward = \"dr\"")).unwrap();
    let s = &cfg.services[0];
    assert_eq!(s.forward, Forward::FullNat);
    assert_eq!(
        (s.reals[0].forward, s.reals[1].forward),
        (Forward::Dr, Forward::FullNat)
    );
    let text = svc(
        "scheduler = \"wrr\"",
        "scheduler = \"wrr\"\nforward = \"nat\"",
    );
    let cfg = parse(&text.replacen("weight = 3", "weight = 3\nforward = \"tun\"", 1)).unwrap();
    let s = &cfg.services[0];
    assert_eq!(s.forward, Forward::Nat);
    assert_eq!(
        (s.reals[0].forward, s.reals[1].forward),
        (Forward::Tun, Forward::Nat)
    );
    assert_eq!(Forward::FullNat.as_str(), "fullnat");
    assert_eq!(Forward::Tun.to_string(), "tun");

    // Without a FULLNAT real server, `lips` may be absent; lip_port is then
    // the VIP's port.
    let no_lips = svc(
        "lips = [\"198.51.100.2\", \"198.51.100.3\"]",
        "forward = \"nat\"",
    );
    let cfg = parse(&no_lips).unwrap();
    let s = &cfg.services[0];
    assert!(s.lips.is_empty());
    assert_eq!((s.port, s.lip_port), (0, 0));
    assert!(s.reals.iter().all(|r| r.forward == Forward::Nat));
    // ... but one FULLNAT real server needs them.
    let text = no_lips.replacen("weight = 3", "weight = 3\nforward = \"fullnat\"", 1);
    let msg = error_at(&text, 12, 1, "service[0].lips");
    assert_eq!(
        msg,
        "missing required key `lips` (the local addresses, like [\"198.51.100.2\"])"
    );

    let cases: &[(&str, &str, usize, usize, &str, &str)] = &[
        ("port = 8080", "port = 8080\nforward = \"dr\"", 24, 8, "service[0].real[1].port", "port mapping is impossible with DR/TUN (real port 8080 != vport 80)"),
        ("port = 8080", "forward = \"tun\"\nport = 8080", 25, 8, "service[0].real[1].port", "port mapping is impossible with DR/TUN (real port 8080 != vport 80)"),
        ("scheduler = \"wrr\"", "scheduler = \"wrr\"\nforward = \"tun\"", 25, 8, "service[0].real[1].port", "port mapping is impossible with DR/TUN (real port 8080 != vport 80)"),
        ("ip = \"10.1.2.3\"\nport = 8080", "ip = \"10.1.2.3\"\nforward = \"dr\"", 23, 6, "service[0].real[1].ip", "real server 10.1.2.3 is not in a connected subnet of a port (`client`: 192.0.2.0/24; `servers`: 198.51.100.0/24); DR needs the real server on the same link (use tun to reach it through a router)"),
        ("weight = 3", "weight = 3\nforward = \"masq\"", 22, 11, "service[0].real[0].forward", "forward must be \"fullnat\", \"nat\", \"dr\" or \"tun\", got \"masq\""),
        ("weight = 3", "weight = 3\nforward = 1", 22, 11, "service[0].real[0].forward", "expected a string, found an integer"),
        ("scheduler = \"wrr\"", "scheduler = \"wrr\"\nforward = \"DR\"", 17, 11, "service[0].forward", "forward must be \"fullnat\", \"nat\", \"dr\" or \"tun\", got \"DR\""),
    ];
    for &(from, to, line, col, key, want) in cases {
        let msg = error_at(&svc(from, to), line, col, key);
        assert_eq!(msg, want, "{from:?} -> {to:?}");
    }
    // NAT keeps port mapping.
    let cfg = parse(&svc("port = 8080", "port = 8080\nforward = \"nat\"")).unwrap();
    assert_eq!(
        (
            cfg.services[0].reals[1].port,
            cfg.services[0].reals[1].forward
        ),
        (8080, Forward::Nat)
    );
}

#[test]
fn control_section() {
    // Defaults.
    let cfg = parse(BASE).unwrap();
    assert_eq!(cfg.control, ControlConfig::default());
    assert_eq!(cfg.control.socket, PathBuf::from("/run/rvsd.sock"));
    assert_eq!(cfg.control.mode, 0o600);
    // Given.
    let text = format!("[control]\nsocket = \"/tmp/x/rvsd.sock\"\nmode = \"0660\"\n{BASE}");
    let cfg = parse(&text).unwrap();
    assert_eq!(
        cfg.control,
        ControlConfig {
            socket: PathBuf::from("/tmp/x/rvsd.sock"),
            mode: 0o660
        }
    );
    for (m, v) in [
        ("600", 0o600),
        ("0o640", 0o640),
        ("0777", 0o777),
        ("0200", 0o200),
    ] {
        let text = format!("[control]\nmode = \"{m}\"\n{BASE}");
        assert_eq!(parse(&text).unwrap().control.mode, v, "{m}");
    }
    // Relative paths are allowed (relative to rvsd's working directory).
    let text = format!("control.socket = \"rvsd.sock\"\n{BASE}");
    assert_eq!(
        parse(&text).unwrap().control.socket,
        PathBuf::from("rvsd.sock")
    );
}

#[test]
fn control_errors() {
    let m = error_at(
        &format!("[control]\nsocket = \"\"\n{BASE}"),
        2,
        10,
        "control.socket",
    );
    assert!(m.contains("path of a socket file"), "{m}");
    let m = error_at(
        &format!("[control]\nsocket = \"/run/\"\n{BASE}"),
        2,
        10,
        "control.socket",
    );
    assert!(m.contains("\"/run/\""), "{m}");
    let long = format!("/{}", "a".repeat(107));
    let m = error_at(
        &format!("[control]\nsocket = \"{long}\"\n{BASE}"),
        2,
        10,
        "control.socket",
    );
    assert_eq!(
        m,
        "socket path must be at most 107 bytes (a Unix socket's limit), got 108"
    );
    let m = error_at(
        &format!("[control]\nsocket = 5\n{BASE}"),
        2,
        10,
        "control.socket",
    );
    assert_eq!(m, "expected a string, found an integer");
    let m = error_at(
        &format!("[control]\nmode = 0o600\n{BASE}"),
        2,
        8,
        "control.mode",
    );
    assert_eq!(
        m,
        "expected an octal string like \"0600\", found an integer"
    );
    let m = error_at(
        &format!("[control]\nmode = \"0680\"\n{BASE}"),
        2,
        8,
        "control.mode",
    );
    assert_eq!(
        m,
        "mode must be an octal string like \"0600\" or \"0660\", got \"0680\""
    );
    for bad in ["", "rw", "00600", "0o", "-600"] {
        let m = error_at(
            &format!("[control]\nmode = \"{bad}\"\n{BASE}"),
            2,
            8,
            "control.mode",
        );
        assert!(m.starts_with("mode must be an octal string"), "{bad}: {m}");
    }
    let m = error_at(
        &format!("[control]\nmode = \"4755\"\n{BASE}"),
        2,
        8,
        "control.mode",
    );
    assert!(m.starts_with("mode must be at most 0777"), "{m}");
    let m = error_at(
        &format!("[control]\nmode = \"0444\"\n{BASE}"),
        2,
        8,
        "control.mode",
    );
    assert!(
        m.starts_with("mode must give the owner write permission"),
        "{m}"
    );
    let m = error_at(
        &format!("[control]\npath = \"/x\"\n{BASE}"),
        2,
        1,
        "control.path",
    );
    assert_eq!(m, "unknown key `path`; allowed keys here: socket, mode");
    let m = error_at(&format!("control = 3\n{BASE}"), 1, 11, "control");
    assert_eq!(m, "expected a table, found an integer");
}

#[test]
fn metrics_section() {
    assert_eq!(parse(BASE).unwrap().metrics, MetricsConfig::default());
    assert_eq!(parse(BASE).unwrap().metrics.listen, None);
    let text = format!("[metrics]\nlisten = \"127.0.0.1:9400\"\n{BASE}");
    assert_eq!(
        parse(&text).unwrap().metrics.listen,
        Some("127.0.0.1:9400".parse().unwrap())
    );
    let text = format!("metrics.listen = \"[::1]:9100\"\n{BASE}");
    assert_eq!(
        parse(&text).unwrap().metrics.listen,
        Some("[::1]:9100".parse().unwrap())
    );
}

#[test]
fn metrics_errors() {
    for bad in [
        "127.0.0.1",
        "localhost:9400",
        "127.0.0.1:99999",
        "",
        "::1:9400",
    ] {
        let m = error_at(
            &format!("[metrics]\nlisten = \"{bad}\"\n{BASE}"),
            2,
            10,
            "metrics.listen",
        );
        assert_eq!(
            m,
            format!("listen must be a socket address IP:PORT like \"127.0.0.1:9400\" or \"[::1]:9400\", got {bad:?}")
        );
    }
    let m = error_at(
        &format!("[metrics]\nlisten = 9400\n{BASE}"),
        2,
        10,
        "metrics.listen",
    );
    assert_eq!(m, "expected a string, found an integer");
    let m = error_at(
        &format!("[metrics]\nport = 9400\n{BASE}"),
        2,
        1,
        "metrics.port",
    );
    assert!(m.contains("unknown key"), "{m}");
}

#[test]
fn health_checks() {
    // SVC is 24 lines; what follows starts on line 25.
    let text = format!(
        "{SVC}[service.check]\ntype = \"http\"\npath = \"/hz\"\nexpect_body = \"ok\"\n\
         [service.real.check]\nport = 9000\nrise = 5\n"
    );
    let cfg = parse(&text).unwrap();
    let s = &cfg.services[0];
    let http = CheckKind::Http {
        path: "/hz".into(),
        expect_status: None,
        expect_body: Some("ok".into()),
    };
    assert_eq!(
        s.check,
        Some(CheckConfig {
            kind: http.clone(),
            port: None,
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        })
    );
    assert_eq!(s.reals[0].check, None);
    assert_eq!(s.check_of(&s.reals[0]), s.check.as_ref());
    // The real server's check takes the service's for the keys it leaves out.
    assert_eq!(
        s.reals[1].check,
        Some(CheckConfig {
            kind: http,
            port: Some(9000),
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 5,
            fall: 3,
        })
    );
    assert_eq!(cfg.health, HealthConfig::default());
    assert_eq!(cfg.health.down_action, DownAction::Quiesce);

    // type = "none" turns the service's check off for one real server; tcp and udp checks.
    let text = format!(
        "{SVC}[service.check]\ntype = \"udp\"\nsend = \"ping\"\nexpect = \"pong\"\n\
         interval_ms = 500\ntimeout_ms = 500\nfall = 1\n[service.real.check]\ntype = \"none\"\n\
         [health]\nsource = \"192.0.2.250\"\ndown_action = \"quiesce\"\n"
    );
    let cfg = parse(&text).unwrap();
    let s = &cfg.services[0];
    assert_eq!(
        s.check_of(&s.reals[0])
            .map(|c| (&c.kind, c.interval_ms, c.fall)),
        Some((
            &CheckKind::Udp {
                send: "ping".into(),
                expect: Some("pong".into())
            },
            500,
            1
        ))
    );
    assert_eq!(s.check_of(&s.reals[1]), None);
    assert_eq!(cfg.health.source, Some(ip("192.0.2.250")));
    let cfg = parse(&format!("{SVC}[service.real.check]\ntype = \"tcp\"\n")).unwrap();
    let s = &cfg.services[0];
    assert_eq!(s.check_of(&s.reals[0]), None);
    assert_eq!(
        s.check_of(&s.reals[1]),
        Some(&CheckConfig::new(CheckKind::Tcp))
    );
    // No check anywhere: nothing is checked.
    let cfg = parse(SVC).unwrap();
    assert!(cfg.services[0]
        .reals
        .iter()
        .all(|r| cfg.services[0].check_of(r).is_none()));
}

#[test]
fn health_check_errors() {
    let with = |extra: &str| format!("{SVC}{extra}");
    let m = error_at(
        &with("[service.check]\ntype = \"ping\"\n"),
        26,
        8,
        "service[0].check.type",
    );
    assert_eq!(
        m,
        "type must be \"tcp\", \"http\", \"udp\", \"icmp\" or \"none\", got \"ping\""
    );
    assert_eq!(
        parse(&with("[service.check]\ntype = \"icmp\"\n"))
            .unwrap()
            .services[0]
            .check
            .as_ref()
            .map(|c| c.kind.clone()),
        Some(CheckKind::Icmp)
    );
    let m = error_at(
        &with("[service.check]\nport = 81\n"),
        25,
        1,
        "service[0].check.type",
    );
    assert_eq!(
        m,
        "missing required key `type` (\"tcp\", \"http\", \"udp\", \"icmp\" or \"none\")"
    );
    let m = error_at(
        &with("[service.check]\ntype = \"tcp\"\ntimeout_ms = 3000\n"),
        27,
        14,
        "service[0].check.timeout_ms",
    );
    assert_eq!(
        m,
        "timeout_ms (3000) must not exceed interval_ms (2000): one check at a time per real server"
    );
    let m = error_at(
        &with("[service.check]\ntype = \"tcp\"\npath = \"/\"\n"),
        27,
        8,
        "service[0].check.path",
    );
    assert_eq!(
        m,
        "path applies to type = \"http\" checks only, this one is \"tcp\""
    );
    let m = error_at(
        &with("[service.check]\ntype = \"udp\"\n"),
        25,
        1,
        "service[0].check.send",
    );
    assert!(m.starts_with("missing required key `send`"), "{m}");
    let m = error_at(
        &with("[service.check]\ntype = \"http\"\npath = \"no-slash\"\n"),
        27,
        8,
        "service[0].check.path",
    );
    assert!(m.starts_with("path must start with `/`"), "{m}");
    let m = error_at(
        &with("[service.check]\ntype = \"http\"\nexpect_status = 42\n"),
        27,
        17,
        "service[0].check.expect_status",
    );
    assert_eq!(m, "expect_status must be between 100 and 599, got 42");
    let m = error_at(
        &with("[service.check]\ntype = \"tcp\"\nrise = 0\n"),
        27,
        8,
        "service[0].check.rise",
    );
    assert_eq!(m, "rise must be between 1 and 100, got 0");
    let m = error_at(
        &with("[service.check]\ntype = \"tcp\"\nintervall = 5\n"),
        27,
        1,
        "service[0].check.intervall",
    );
    assert!(m.starts_with("unknown key `intervall`"), "{m}");
    let m = error_at(
        &with("[service.real.check]\ntype = \"none\"\nport = 1\n"),
        27,
        8,
        "service[0].real[1].check.port",
    );
    assert_eq!(m, "type = \"none\" takes no other key, got `port`");
    let m = error_at(
        &with("[health]\nsource = \"nope\"\n"),
        26,
        10,
        "health.source",
    );
    assert!(m.starts_with("source (the local address"), "{m}");
    let m = error_at(
        &with("[health]\ndown_action = \"remove\"\n"),
        26,
        15,
        "health.down_action",
    );
    assert_eq!(
        m,
        "down_action must be \"quiesce\" (the only action for now), got \"remove\""
    );
}

#[test]
fn port_kernel_interface() {
    let base = "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [\"192.0.2.1/24\"]\n";
    let cfg = Config::parse(&format!("{base}kernel = \"rvs-a\"\n"), Path::new("k.toml")).unwrap();
    assert_eq!(cfg.ports[0].kernel.as_deref(), Some("rvs-a"));
    let argv = cfg.eal.args(&cfg);
    assert!(
        argv.windows(2)
            .any(|w| w[0] == "--vdev" && w[1] == "net_tap0,iface=rvs-a"),
        "{argv:?}"
    );
    let e = Config::parse(
        &format!("{base}kernel = \"much-too-long-name\"\n"),
        Path::new("k.toml"),
    )
    .unwrap_err();
    assert_eq!(
        (e.line, e.column, e.key.as_str()),
        (5, 10, "port[0].kernel"),
        "{e}"
    );
}

/// `SVC` plus a match service (lines 25..) with `extra` lines in its `[[service]]` table and
/// `m` as its `[service.match]` body.
fn match_svc(extra: &str, m: &str) -> String {
    format!(
        "{SVC}[[service]]\nmark = 1\nscheduler = \"rr\"\nport = \"client\"\n{extra}\
         [service.match]\n{m}[[service.real]]\nip = \"198.51.100.11\"\nforward = \"nat\"\n"
    )
}

const MATCH: &str =
    "proto = \"tcp\"\ndst = \"203.0.113.0/28\"\ndport = \"8000-8100\"\nsrc = \"100.64.0.0/16\"\n";

#[test]
fn match_services() {
    let cfg = parse(&match_svc("", MATCH)).unwrap();
    let s = &cfg.services[1];
    assert_eq!(
        s.mark,
        Some(super::MatchConfig {
            mark: 1,
            proto: Proto::Tcp,
            dst: "203.0.113.0/28".parse().unwrap(),
            dport: (8000, 8100),
            src: Some("100.64.0.0/16".parse().unwrap()),
        })
    );
    assert_eq!(
        (s.vip, s.vport, s.proto),
        (ip("203.0.113.0"), 0, Proto::Tcp)
    );
    assert_eq!(s.reals[0].port, 0);
    let one = parse(&match_svc(
        "",
        "proto = \"udp\"\ndst = \"10.0.0.0/8\"\ndport = \"53\"\n",
    ))
    .unwrap();
    let m = one.services[1].mark.as_ref().unwrap();
    assert_eq!((m.proto, m.dport, m.src), (Proto::Udp, (53, 53), None));
}

/// A match prefix rvs would own (answer ARP for) may not hold an address of rvs's ports, a
/// route's gateway, or a connected subnet's network or broadcast address: rvs would answer for
/// them, stop learning the gateway, and take packets meant for those hosts.
#[test]
fn match_prefix_holds_no_other_hosts_address() {
    for (dst, what) in [
        ("192.0.2.1/32", "192.0.2.1, an address of port `client`"),
        (
            "198.51.100.252/30",
            "198.51.100.254, the gateway of route 10.0.0.0/8",
        ),
        (
            "192.0.2.0/30",
            "192.0.2.0, the network address of port `client`'s subnet 192.0.2.0/24",
        ),
        (
            "192.0.2.255/32",
            "the broadcast address of port `client`'s subnet",
        ),
    ] {
        let m = MATCH.replace("203.0.113.0/28", dst);
        let e = parse(&match_svc("", &m)).unwrap_err();
        assert_eq!(e.key, "service[1].match", "{e}");
        assert!(e.message.contains(what), "{dst}: {e}");
    }
    // A large prefix rvs does not own (routed to it) may cover them.
    let m = MATCH.replace("203.0.113.0/28", "192.0.0.0/16");
    assert!(parse(&match_svc("", &m)).is_ok());
    // Addresses of a connected subnet other than those: fine.
    let m = MATCH.replace("203.0.113.0/28", "192.0.2.64/28");
    assert!(parse(&match_svc("", &m)).is_ok());
}

#[test]
fn match_service_errors() {
    let m = error_at(
        &match_svc("vip = \"203.0.113.9\"\n", MATCH),
        29,
        7,
        "service[1].vip",
    );
    assert!(m.contains("mutually exclusive"), "{m}");
    let m = error_at(&match_svc("vport = 80\n", MATCH), 29, 9, "service[1].vport");
    assert!(m.contains("mutually exclusive"), "{m}");
    let m = error_at(
        &match_svc("proto = \"tcp\"\n", MATCH),
        29,
        9,
        "service[1].proto",
    );
    assert!(m.contains("[service.match]"), "{m}");
    let bad = MATCH.replace("8000-8100", "8100-8000");
    let m = error_at(&match_svc("", &bad), 32, 9, "service[1].match.dport");
    assert!(m.contains("range"), "{m}");
    let bad = MATCH.replace("203.0.113.0/28", "2001:db8::/64");
    let m = error_at(&match_svc("", &bad), 31, 7, "service[1].match.dst");
    assert!(m.contains("IPv4 prefix"), "{m}");
    let bad = MATCH.replace("proto = \"tcp\"\n", "");
    let m = error_at(&match_svc("", &bad), 29, 1, "service[1].match.proto");
    assert!(m.contains("missing"), "{m}");
    let bad = MATCH.replace("src = \"100.64.0.0/16\"", "color = 1");
    error_at(&match_svc("", &bad), 33, 1, "service[1].match.color");
    let dup = match_svc("", MATCH);
    let dup = format!(
        "{dup}[[service]]\nmark = 1\nscheduler = \"rr\"\nport = \"client\"\n[service.match]\n{MATCH}"
    );
    let m = error_at(&dup, 38, 8, "service[2].mark");
    assert!(m.contains("already defined by service[1]"), "{m}");
    // A real server inside the prefix the service owns would loop through rvs.
    let inside = match_svc("", MATCH).replace(
        "ip = \"198.51.100.11\"\nforward",
        "ip = \"203.0.113.5\"\nforward",
    );
    let m = error_at(&inside, 35, 6, "service[1].real[0].ip");
    assert!(m.contains("match prefix, which rvs owns"), "{m}");
    let nomatch = SVC.to_string() + "[[service]]\nmark = 3\nscheduler = \"rr\"\n";
    let m = error_at(&nomatch, 25, 1, "service[1].match");
    assert!(m.contains("missing required table"), "{m}");
}

/// Every real server has counters of its own on every worker: more than `MAX_REALS` in all is a
/// configuration error naming the first one past the limit, not reals silently sharing counters.
#[test]
fn at_most_max_reals_real_servers() {
    let reals = |n: usize, port0: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "[[service.real]]\nip = \"10.{}.{}.{}\"\nport = {}\n",
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255,
                    port0 + 1
                )
            })
            .collect()
    };
    let head = SVC.split("[[service.real]]").next().unwrap().to_string();
    let second = "[[service]]\nproto = \"tcp\"\nvip = \"203.0.113.11\"\nvport = 80\nscheduler = \"rr\"\nport = \"client\"\nlips = [\"198.51.100.2\"]\n";
    let half = super::MAX_REALS / 2;
    let ok = format!("{head}{}{second}{}", reals(half, 0), reals(half, 1));
    assert_eq!(parse(&ok).unwrap().services.len(), 2);
    let over = format!("{head}{}{second}{}", reals(half, 0), reals(half + 1, 1));
    let e = parse(&over).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "service[1].real[{half}]: more than {}",
            super::MAX_REALS
        )),
        "{e}"
    );
}
