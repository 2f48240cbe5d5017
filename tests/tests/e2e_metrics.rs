//! End to end metrics: a running rvsd's /metrics (scraped with curl inside its namespace) passes
//! `promtool check metrics`, and after N requests through the VIP the service's connection counter
//! says N.

use std::io::Write;
use std::process::{Command, Stdio};

use rvs_tests::*;

const N: usize = 25;

fn series_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn metrics_scrape_is_valid_and_counts_connections() {
    if !prerequisites("e2e metrics") {
        return;
    }
    let promtool = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !promtool {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "promtool missing (scripts/deps installs the prometheus package)"
        );
        eprintln!("NOT RUN: promtool missing");
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsm", 2);
    let (cl, gw) = (topo.ns("cl"), topo.ns("gw"));
    let dir = tempdir("metrics");
    let extra = "\n[metrics]\nlisten = \"127.0.0.1:9400\"\n\n[[service]]\nproto = \"tcp\"\nvip = \"203.0.113.10\"\nvport = 80\nscheduler = \"rr\"\nport = \"client\"\nlips = [\"198.51.100.2\"]\n  [[service.real]]\n  ip = \"198.51.100.11\"\n  [[service.real]]\n  ip = \"198.51.100.12\"\n";
    let sock = dir.join("rvsd.sock");
    let (rvsd, _) = start_gateway(&dir, &gw, "metrics", |pmd| {
        gateway_toml(pmd, "rvsm-metrics", Some(&sock), extra)
    });
    let _ = sh(&format!("ip netns exec {gw} ip link set lo up"));
    let o = ns(&cl, &format!("bash -c 'for i in $(seq {N}); do curl -s -o /dev/null --max-time 5 http://203.0.113.10/; done'"));
    assert!(o.status.success(), "{}", text(&o));
    let scrape = ns(&gw, "curl -s --max-time 5 http://127.0.0.1:9400/metrics");
    let body = String::from_utf8_lossy(&scrape.stdout).to_string();
    assert!(
        scrape.status.success() && body.contains("rvs_build_info"),
        "scrape failed: {}\n{}",
        text(&scrape),
        rvsd.log_text()
    );
    assert_eq!(
        series_sum(&body, "rvs_service_connections_total") as usize,
        N,
        "connections of the service after {N} requests"
    );
    assert_eq!(series_sum(&body, "rvs_real_connections_total") as usize, N);
    assert!(series_sum(&body, "rvs_core_rx_packets_total") > 0.0);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
}
