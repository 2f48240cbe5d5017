//! End to end health checks: stop the HTTP server of one real server between request rounds; rvsd
//! (checking through its management interface) quiesces it after `fall` failed checks (the
//! detection time is printed; the test allows 5 s, a loaded 2-core machine may add seconds to
//! fall × interval), after which no request fails and none goes there; start it again and
//! traffic returns after `rise` successes.

use std::time::{Duration, Instant};

use rvs_tests::*;

const EXTRA: &str = r#"
[health]
source = "198.51.100.250"

[[service]]
proto = "tcp"
vip = "203.0.113.10"
vport = 80
scheduler = "rr"
port = "client"
lips = ["198.51.100.2"]
  [service.check]
  type = "http"
  path = "/"
  interval_ms = 1000
  timeout_ms = 1000
  rise = 2
  fall = 2
  [[service.real]]
  ip = "198.51.100.11"
  [[service.real]]
  ip = "198.51.100.12"
  [[service.real]]
  ip = "198.51.100.13"
"#;

/// How often `needle` is in rvsd's log now.
fn seen(rvsd: &Rvsd, needle: &str) -> usize {
    rvsd.log_text().matches(needle).count()
}

/// Wait until `needle` is in rvsd's log more often than `before` times (a transition logged
/// earlier, e.g. a flap, does not count).
fn wait_for(rvsd: &Rvsd, needle: &str, before: usize, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if seen(rvsd, needle) > before {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn requests(cl: &str, n: usize) -> Vec<String> {
    let o = ns(cl, &format!("bash -c 'for i in $(seq {n}); do curl -s --max-time 3 http://203.0.113.10/ || echo FAIL; echo; done'"));
    text(&o)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn http_server(topo: &Topo, i: u8) -> String {
    format!(
        "ip netns exec {rs} setsid python3 -m http.server 80 --bind 198.51.100.1{i} --directory /tmp/{rs}-www >/tmp/{rs}-http.log 2>&1 < /dev/null &",
        rs = topo.ns(&format!("rs{i}"))
    )
}

#[test]
fn a_dead_real_server_is_quiesced_and_restored() {
    if !prerequisites("e2e health") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsh", 3);
    let cl = topo.ns("cl");
    let dir = tempdir("health");
    let sock = dir.join("rvsd.sock");
    let (rvsd, _) = start_gateway(&dir, &topo.ns("gw"), "health", |pmd| {
        gateway_toml(pmd, "rvsh-health", Some(&sock), EXTRA)
    });
    let rvsadm = |args: &str| {
        text(&sh(&format!(
            "{} --socket {} {args}",
            rvsd_bin().with_file_name("rvsadm").display(),
            sock.display()
        )))
    };

    let before = requests(&cl, 9);
    assert!(before.iter().all(|b| b.starts_with("rs")), "{before:?}");
    assert!(
        before.iter().any(|b| b.starts_with("rs1")),
        "rs1 serves while healthy: {before:?}"
    );

    // Stop rs1's HTTP server.
    let rs1 = topo.ns("rs1");
    let downs = seen(&rvsd, "198.51.100.11:80 DOWN");
    let _ = sh(&format!(
        "for p in $(ip netns pids {rs1}); do kill $p; done"
    ));
    let down = wait_for(
        &rvsd,
        "198.51.100.11:80 DOWN",
        downs,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("no DOWN transition:\n{}", rvsd.log_text()));
    // fall (2) × interval (1 s) plus one timeout; the bound is wait_for's (a loaded 2-core
    // machine may add seconds of scheduling; the 1 s check timeout leaves room for it too).
    eprintln!("DOWN detected after {down:?}");
    // Two real servers are left: no "no real server available" alarm.
    assert!(
        !rvsd.log_text().contains("no real server of"),
        "{}",
        rvsd.log_text()
    );
    let after = requests(&cl, 30);
    assert!(
        after
            .iter()
            .all(|b| b.starts_with("rs2") || b.starts_with("rs3")),
        "after detection: {after:?}"
    );
    let listing = rvsadm("-L -n --health");
    let line = listing
        .lines()
        .find(|l| l.contains("198.51.100.11:80"))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        line.contains("DOWN") && line.contains(" 1 "),
        "DOWN, configured weight kept: {line}"
    );

    // Start it again: back after rise (2) × interval.
    let ups = seen(&rvsd, "198.51.100.11:80 UP");
    let _ = sh(&http_server(&topo, 1));
    let up = wait_for(&rvsd, "198.51.100.11:80 UP", ups, Duration::from_secs(12))
        .unwrap_or_else(|| panic!("no UP transition:\n{}", rvsd.log_text()));
    eprintln!("UP after {up:?}");
    let back = requests(&cl, 9);
    assert!(back.iter().all(|b| b.starts_with("rs")), "{back:?}");
    assert!(
        back.iter().any(|b| b.starts_with("rs1")),
        "traffic returns to rs1: {back:?}"
    );

    // Drain rs2 and rs3 by hand (`-e -w 0`, no forwarding option: they stay FULLNAT), then lose
    // rs1 again: rvsd says the service has no real server left.
    for ip in ["198.51.100.12", "198.51.100.13"] {
        rvsadm(&format!("-e -t 203.0.113.10:80 -r {ip}:80 -w 0"));
    }
    let listing = rvsadm("-L -n");
    for ip in ["198.51.100.12", "198.51.100.13"] {
        let line = listing
            .lines()
            .find(|l| l.contains(ip))
            .unwrap_or_else(|| panic!("{listing}"));
        assert!(line.contains("FullNat 0 "), "drained, method kept: {line}");
    }
    let downs = seen(&rvsd, "198.51.100.11:80 DOWN");
    let _ = sh(&format!(
        "for p in $(ip netns pids {rs1}); do kill $p; done"
    ));
    wait_for(
        &rvsd,
        "198.51.100.11:80 DOWN",
        downs,
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| panic!("no second DOWN transition:\n{}", rvsd.log_text()));
    assert!(
        rvsd.log_text()
            .contains("no real server of TCP 203.0.113.10:80 is available"),
        "{}",
        rvsd.log_text()
    );
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
}
