//! Tests of the metrics exposition and its HTTP server, over a synthetic [`Source`].

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::*;
use crate::ctl::proto::{Fwd, Proto, RealSpec, RealView, ServiceKey, ServiceSpec};

/// A fixed [`Sample`] as a [`Source`].
struct Fake(Sample);

impl Source for Fake {
    fn sample(&self) -> Sample {
        self.0.clone()
    }
}

fn real(ip: &str, port: u16, conns: u64) -> RealView {
    RealView {
        spec: RealSpec {
            addr: SocketAddr::new(ip.parse().unwrap(), port),
            fwd: Fwd::FullNat,
            weight: 1,
            upper: 0,
            lower: 0,
        },
        active: 2,
        inactive: 1,
        persist: 0,
        stats: Stats {
            conns,
            inpkts: 10 * conns,
            outpkts: 8 * conns,
            inbytes: 1000 * conns,
            outbytes: 800 * conns,
        },
        rates: Rates {
            cps: 3,
            inpps: 30,
            outpps: 24,
            inbps: 3000,
            outbps: 2400,
        },
        health: None,
        health_transitions: 0,
        health_failures: 0,
    }
}

fn service(proto: Proto, vip: &str, vport: u16, reals: Vec<RealView>) -> ServiceView {
    let mut stats = Stats::default();
    let mut rates = Rates::default();
    for r in &reals {
        stats.conns += r.stats.conns;
        stats.inpkts += r.stats.inpkts;
        stats.outpkts += r.stats.outpkts;
        stats.inbytes += r.stats.inbytes;
        stats.outbytes += r.stats.outbytes;
        rates.cps += r.rates.cps;
        rates.inpps += r.rates.inpps;
        rates.outpps += r.rates.outpps;
        rates.inbps += r.rates.inbps;
        rates.outbps += r.rates.outbps;
    }
    ServiceView {
        spec: ServiceSpec {
            key: ServiceKey {
                proto,
                vip: vip.parse::<IpAddr>().unwrap(),
                vport,
                mark: None,
            },
            scheduler: "rr".into(),
            persistent: None,
            netmask: None,
            sched_flags: Vec::new(),
        },
        reals,
        lips: Vec::new(),
        stats,
        rates,
    }
}

fn sample() -> Sample {
    let mut c1 = CounterSnapshot {
        rx_packets: 100,
        tx_packets: 90,
        redirected_in: 4,
        redirected_out: 5,
        sessions_created: 7,
        sessions_expired: 6,
        sessions_rescheduled: 2,
        polls: 1000,
        busy_polls: 250,
        ..Default::default()
    };
    c1.drops[DropReason::ALL[0] as usize] = 3;
    Sample {
        services: vec![
            service(
                Proto::Tcp,
                "10.0.0.1",
                80,
                vec![real("192.168.1.10", 8080, 5), real("192.168.1.11", 8080, 6)],
            ),
            service(
                Proto::Udp,
                "2001:db8::1",
                53,
                vec![real("2001:db8::10", 53, 1)],
            ),
        ],
        cores: vec![(1, c1), (2, CounterSnapshot::default())],
        ports: vec![
            PortSample {
                name: "client".into(),
                link_up: true,
                stats: Some(dpdk::PortStats {
                    ipackets: 11,
                    opackets: 12,
                    ibytes: 13,
                    obytes: 14,
                    imissed: 15,
                    ierrors: 16,
                    oerrors: 17,
                    rx_nombuf: 18,
                }),
            },
            PortSample {
                name: "backend".into(),
                link_up: false,
                stats: None,
            },
        ],
        generation: 42,
        reloads_ok: 3,
        reloads_failed: 1,
        control_errors: [2, 0, 0, 5, 1, 0, 0],
        health_publish_failures: 7,
        log_lines_dropped: 9,
    }
}

fn render_sample(s: Sample) -> String {
    render(&registry(Arc::new(Fake(s))))
}

/// A parsed series line: name, labels, value.
type Series = (String, Vec<(String, String)>, f64);

/// A small parser of the text exposition format 0.0.4, strict about what rvs emits: returns the
/// TYPE of every family and every series; panics on any malformed line.
fn parse_exposition(text: &str) -> (HashMap<String, String>, Vec<Series>) {
    let mut types = HashMap::new();
    let mut helps = HashSet::new();
    let mut series = Vec::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name_ok(name), "bad HELP name in {line:?}");
            assert!(helps.insert(name.to_string()), "duplicate HELP {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let (name, ty) = (p.next().unwrap(), p.next().unwrap());
            assert!(name_ok(name), "bad TYPE name in {line:?}");
            assert!(matches!(ty, "counter" | "gauge"), "bad type in {line:?}");
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "duplicate TYPE {line:?}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (head, value) = line.rsplit_once(' ').expect("series: name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match head.split_once('{') {
            None => (head, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label k=\"v\"");
                        assert!(name_ok(k), "bad label name in {line:?}");
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(name_ok(name), "bad series name in {line:?}");
        assert!(types.contains_key(name), "series before its TYPE: {line:?}");
        assert!(helps.contains(name), "series without HELP: {line:?}");
        series.push((name.to_string(), labels, value));
    }
    (types, series)
}

fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = series
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0].2
}

#[test]
fn exposition_names_labels_types_values() {
    let text = render_sample(sample());
    let (types, series) = parse_exposition(&text);

    for (n, _, k) in VS_FAMILIES {
        let ty = match k {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        assert_eq!(types[&format!("rvs_service_{n}")], ty, "{n}");
        assert_eq!(types[&format!("rvs_real_{n}")], ty, "{n}");
    }
    for (n, _, k, _) in CORE_FAMILIES.iter().chain(CTL_FAMILIES) {
        assert!(
            types.contains_key(*n),
            "{n}: {k:?}",
            k = matches!(k, Kind::Gauge)
        );
    }
    for (n, _, _) in PORT_FAMILIES {
        assert!(types.contains_key(*n), "{n}");
    }
    assert_eq!(types["rvs_core_drops_total"], "counter");
    assert_eq!(types["rvs_core_busy_ratio"], "gauge");
    assert_eq!(types["rvs_reloads_total"], "counter");
    assert_eq!(types["rvs_control_errors_total"], "counter");
    assert_eq!(types["rvs_health_publish_failures_total"], "counter");
    assert_eq!(
        value(&series, "rvs_health_publish_failures_total", &[]),
        7.0
    );
    assert_eq!(types["rvs_log_lines_dropped_total"], "counter");
    assert_eq!(value(&series, "rvs_log_lines_dropped_total", &[]), 9.0);
    for (reason, n) in [
        ("malformed", 2.0),
        ("too_large", 0.0),
        ("version", 0.0),
        ("refused", 5.0),
        ("timeout", 1.0),
        ("busy", 0.0),
    ] {
        assert_eq!(
            value(&series, "rvs_control_errors_total", &[("reason", reason)]),
            n
        );
    }

    let svc = [
        ("proto", "TCP"),
        ("vip", "10.0.0.1"),
        ("vport", "80"),
        ("mark", ""),
    ];
    assert_eq!(value(&series, "rvs_service_connections_total", &svc), 11.0);
    assert_eq!(value(&series, "rvs_service_active_connections", &svc), 4.0);
    assert_eq!(
        value(&series, "rvs_service_inactive_connections", &svc),
        2.0
    );
    assert_eq!(value(&series, "rvs_service_in_bytes_total", &svc), 11000.0);
    assert_eq!(value(&series, "rvs_service_cps", &svc), 6.0);
    let r = [
        ("proto", "TCP"),
        ("vip", "10.0.0.1"),
        ("vport", "80"),
        ("mark", ""),
        ("rip", "192.168.1.11"),
        ("rport", "8080"),
    ];
    assert_eq!(value(&series, "rvs_real_connections_total", &r), 6.0);
    assert_eq!(value(&series, "rvs_real_out_packets_total", &r), 48.0);
    assert_eq!(value(&series, "rvs_real_outbps", &r), 2400.0);
    let v6 = [
        ("proto", "UDP"),
        ("vip", "2001:db8::1"),
        ("vport", "53"),
        ("mark", ""),
    ];
    assert_eq!(value(&series, "rvs_service_inpps", &v6), 30.0);

    assert_eq!(
        value(&series, "rvs_core_rx_packets_total", &[("core", "1")]),
        100.0
    );
    assert_eq!(
        value(&series, "rvs_core_busy_ratio", &[("core", "1")]),
        0.25
    );
    assert_eq!(value(&series, "rvs_core_busy_ratio", &[("core", "2")]), 0.0);
    assert_eq!(
        value(
            &series,
            "rvs_core_drops_total",
            &[("core", "1"), ("reason", DropReason::ALL[0].name())]
        ),
        3.0
    );
    let drops = series
        .iter()
        .filter(|(n, _, _)| n == "rvs_core_drops_total")
        .count();
    assert_eq!(
        drops,
        2 * DropReason::ALL.len(),
        "every reason on every core"
    );
    assert_eq!(
        value(&series, "rvs_core_sessions_expired_total", &[("core", "1")]),
        6.0
    );
    assert_eq!(
        value(
            &series,
            "rvs_core_sessions_rescheduled_total",
            &[("core", "1")]
        ),
        2.0
    );
    assert_eq!(
        value(&series, "rvs_core_polls_total", &[("core", "1")]),
        1000.0
    );

    assert_eq!(
        value(&series, "rvs_port_link_up", &[("port", "client")]),
        1.0
    );
    assert_eq!(
        value(&series, "rvs_port_link_up", &[("port", "backend")]),
        0.0
    );
    assert_eq!(
        value(&series, "rvs_port_imissed_total", &[("port", "client")]),
        15.0
    );
    assert_eq!(
        value(&series, "rvs_port_rx_nombuf_total", &[("port", "client")]),
        18.0
    );
    assert_eq!(
        value(&series, "rvs_port_ierrors_total", &[("port", "client")]),
        16.0
    );
    assert_eq!(
        value(&series, "rvs_port_oerrors_total", &[("port", "client")]),
        17.0
    );
    assert!(!series
        .iter()
        .any(|(n, l, _)| n == "rvs_port_rx_packets_total" && l[0].1 == "backend"));

    assert_eq!(value(&series, "rvs_config_generation", &[]), 42.0);
    assert_eq!(
        value(&series, "rvs_reloads_total", &[("result", "ok")]),
        3.0
    );
    assert_eq!(
        value(&series, "rvs_reloads_total", &[("result", "failed")]),
        1.0
    );
    assert_eq!(
        value(
            &series,
            "rvs_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[test]
fn empty_daemon_still_renders_control_series() {
    let text = render_sample(Sample::default());
    let (types, series) = parse_exposition(&text);
    assert!(types.contains_key("rvs_build_info"));
    assert_eq!(value(&series, "rvs_config_generation", &[]), 0.0);
    assert!(!types.contains_key("rvs_service_cps"));
}

/// `promtool check metrics` accepts a real render, where promtool is installed
/// (`apt-get install prometheus`, which scripts/deps does); without it the test fails under
/// `CI=true` and is skipped with a note elsewhere.
#[test]
fn promtool_check_metrics() {
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "promtool not installed (CI=true: scripts/deps installs the prometheus package)"
        );
        eprintln!("NOT RUN: promtool not installed (apt-get install prometheus)");
        return;
    };
    let text = render_sample(sample());
    if let Ok(path) = std::env::var("RVS_METRICS_DUMP") {
        std::fs::write(path, &text).unwrap();
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 1000 services with one real server each: bounded output size and render time.
#[test]
fn cardinality_bound_1000_services() {
    let services = (0..1000u32)
        .map(|i| {
            let vip = format!("10.{}.{}.1", i / 256, i % 256);
            let rip = format!("192.168.{}.{}", i / 256, i % 256);
            service(Proto::Tcp, &vip, 80, vec![real(&rip, 8080, u64::from(i))])
        })
        .collect();
    let s = Sample {
        services,
        ..sample()
    };
    let reg = registry(Arc::new(Fake(s)));
    let t = Instant::now();
    let text = render(&reg);
    let took = t.elapsed();
    eprintln!("1000 services x 1 real: {} bytes in {took:?}", text.len());
    let (_, series) = parse_exposition(&text);
    let svc = series
        .iter()
        .filter(|(n, _, _)| n.starts_with("rvs_service_"))
        .count();
    let real = series
        .iter()
        .filter(|(n, _, _)| n.starts_with("rvs_real_"))
        .count();
    assert_eq!((svc, real), (12_000, 12_000));
    // About 2 MB in practice (and about 40 ms in release: printed, not asserted; speed
    // belongs to perf/).
    assert!(text.len() < 4 << 20, "render is {} bytes", text.len());
}

#[test]
fn routes() {
    assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
    assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0"), Route::Metrics);
    assert_eq!(route(b"GET / HTTP/1.1"), Route::NotFound);
    assert_eq!(route(b"POST /metrics HTTP/1.1"), Route::NotFound);
    assert_eq!(route(b"GET /metrics"), Route::Bad);
    assert_eq!(route(b"GET /metrics SPDY/3"), Route::Bad);
    assert_eq!(route(b"\xff\xfe"), Route::Bad);
}

fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The metrics server on a loopback port over the sample: its address, its stop flag, its
/// thread.
fn server() -> (
    std::net::SocketAddr,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let h = serve(
        listener,
        Arc::new(registry(Arc::new(Fake(sample())))),
        stop.clone(),
    );
    (addr, stop, h)
}

#[test]
fn http_server() {
    let (addr, stop, h) = server();

    let r = http(addr, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    let (_, series) = parse_exposition(body);
    assert_eq!(value(&series, "rvs_config_generation", &[]), 42.0);

    let r = http(addr, b"GET / HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    let r = http(addr, b"garbage\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(MAX_REQUEST + 100, b'a');
    let r = http(addr, &big);
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");

    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
}

#[test]
fn health_series_only_for_checked_reals() {
    let mut down = real("198.51.100.12", 80, 1);
    down.health = Some("DOWN".into());
    down.health_transitions = 3;
    down.health_failures = 7;
    let mut up = real("198.51.100.13", 80, 1);
    up.health = Some("UP".into());
    let sample = Sample {
        services: vec![service(
            Proto::Tcp,
            "203.0.113.10",
            80,
            vec![real("198.51.100.11", 80, 1), down, up],
        )],
        ..Sample::default()
    };
    let fams = families(&sample);
    let get = |name: &str| fams.iter().find(|f| f.name() == name).unwrap();
    let ups = get("rvs_real_up");
    let vals: Vec<(String, f64)> = ups
        .get_metric()
        .iter()
        .map(|m| {
            let rip = m
                .get_label()
                .iter()
                .find(|l| l.name() == "rip")
                .unwrap()
                .value()
                .to_string();
            (rip, m.get_gauge().get_value())
        })
        .collect();
    assert_eq!(
        vals,
        vec![("198.51.100.12".into(), 0.0), ("198.51.100.13".into(), 1.0)]
    );
    let tr = get("rvs_real_health_transitions_total");
    assert_eq!(tr.get_field_type(), MetricType::COUNTER);
    assert_eq!(tr.get_metric()[0].get_counter().get_value(), 3.0);
    let fl = get("rvs_real_check_failures_total");
    assert_eq!(fl.get_field_type(), MetricType::COUNTER);
    assert_eq!(fl.get_metric()[0].get_counter().get_value(), 7.0);
    // Without any checked real server the families are left out.
    let none = families(&Sample {
        services: vec![service(
            Proto::Tcp,
            "203.0.113.10",
            80,
            vec![real("198.51.100.11", 80, 1)],
        )],
        ..Sample::default()
    });
    assert!(!none.iter().any(|f| f.name() == "rvs_real_up"));
}

/// Two fwmark services (`-f 7`, `-f 9`: both with vip 0.0.0.0, vport 0) and their real servers
/// are distinct series, told apart by `mark`.
#[test]
fn fwmark_services_are_told_apart_by_mark() {
    let mut s = sample();
    s.services.clear();
    for (mark, conns) in [(7u32, 5u64), (9, 8)] {
        let mut sv = service(
            Proto::Tcp,
            "0.0.0.0",
            0,
            vec![real("192.168.1.10", 0, conns)],
        );
        sv.spec.key.mark = Some(mark);
        s.services.push(sv);
    }
    let (_, series) = parse_exposition(&render_sample(s));
    for (mark, conns) in [("7", 5.0), ("9", 8.0)] {
        let svc = [
            ("proto", "TCP"),
            ("vip", "0.0.0.0"),
            ("vport", "0"),
            ("mark", mark),
        ];
        assert_eq!(value(&series, "rvs_service_connections_total", &svc), conns);
        let r = [
            ("proto", "TCP"),
            ("vip", "0.0.0.0"),
            ("vport", "0"),
            ("mark", mark),
            ("rip", "192.168.1.10"),
            ("rport", "0"),
        ];
        assert_eq!(value(&series, "rvs_real_connections_total", &r), conns);
    }
}

/// With every scrape slot taken, one more client gets a whole 503 (its request read first, so
/// closing does not reset the connection under the answer).
#[test]
fn a_client_beyond_the_slots_gets_503() {
    use std::io::{Read, Write};
    let (addr, stop, h) = server();
    let idle: Vec<_> = (0..MAX_CONNS)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    c.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(r.ends_with("busy\n"), "{r}");
    drop(idle);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = http(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "slots freed: {r}");
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
}

/// Stopping the server waits for the scrapes under way: rvsd frees what they read (the ports)
/// only after joining it.
#[test]
fn stopping_waits_for_scrapes_under_way() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let (addr, stop, h) = server();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metr").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        drop(c);
    });
    h.join().unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    closer.join().unwrap();
}

/// A client sending its request a byte now and then is cut off once `IO_TIMEOUT` has passed
/// since it connected, however steadily it sends (it would otherwise hold a scrape slot).
#[test]
fn a_dribbling_client_is_cut_off() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let (addr, stop, h) = server();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let t0 = Instant::now();
    loop {
        if c.write_all(b"G").is_err() {
            break;
        }
        let mut b = [0u8; 64];
        match c.read(&mut b) {
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        assert!(
            t0.elapsed() < IO_TIMEOUT + Duration::from_secs(3),
            "still served after {:?}",
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(t0.elapsed() >= IO_TIMEOUT - Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
}
