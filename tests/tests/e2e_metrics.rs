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

/// A real Prometheus server (Debian's) scrapes rvsd in the gateway namespace; after N requests a
/// PromQL query over its HTTP API returns N connections for the service. Meanwhile a steady
/// request loop checks the rate estimator: `rvsadm -L --rate` CPS and the `rvs_service_cps` metric
/// agree with the client's own rate.
#[test]
fn prometheus_server_query_and_rate_estimator() {
    if !prerequisites("e2e prometheus") {
        return;
    }
    let have = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !have("prometheus") {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "prometheus missing (scripts/deps installs it)");
        eprintln!("NOT RUN: prometheus missing");
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsq", 2);
    let (cl, gw) = (topo.ns("cl"), topo.ns("gw"));
    let dir = tempdir("prom");
    let extra = "\n[metrics]\nlisten = \"127.0.0.1:9400\"\n\n[[service]]\nproto = \"tcp\"\nvip = \"203.0.113.10\"\nvport = 80\nscheduler = \"rr\"\nport = \"client\"\nlips = [\"198.51.100.2\"]\n  [[service.real]]\n  ip = \"198.51.100.11\"\n  [[service.real]]\n  ip = \"198.51.100.12\"\n";
    let sock = dir.join("rvsd.sock");
    let (rvsd, _) = start_gateway(&dir, &gw, "prom", |pmd| {
        gateway_toml(pmd, "rvsq-prom", Some(&sock), extra)
    });
    let _ = sh(&format!("ip netns exec {gw} ip link set lo up"));
    std::fs::write(
        dir.join("prometheus.yml"),
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rvs\n    static_configs:\n      - targets: ['127.0.0.1:9400']\n",
    )
    .unwrap();
    let mut prom = Command::new("ip")
        .args(["netns", "exec", &gw, "prometheus"])
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .args(["--web.listen-address=127.0.0.1:9090", "--log.level=warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = &mut prom;
    let prom = Kill(prom);

    // Steady loop: 10 requests per second for 16 s (the estimator's EWMA needs a few 2 s samples).
    let secs = 16u64;
    let t0 = std::time::Instant::now();
    let o = ns(
        &cl,
        &format!("bash -c 'for i in $(seq {}); do curl -s -o /dev/null --max-time 2 http://203.0.113.10/; sleep 0.1; done'", secs * 9),
    );
    assert!(o.status.success());
    let client_rate = (secs * 9) as f64 / t0.elapsed().as_secs_f64();
    let rvsadm_cps = || -> (f64, String) {
        let o = Command::new(rvsd_bin().with_file_name("rvsadm"))
            .arg("--socket")
            .arg(&sock)
            .args(["-L", "-n", "--rate"])
            .output()
            .unwrap();
        let rate = String::from_utf8_lossy(&o.stdout).to_string();
        let cps = rate
            .lines()
            .find(|l| l.starts_with("TCP"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no CPS in:\n{rate}"));
        (cps, rate)
    };
    let (cps, rate) = rvsadm_cps();
    assert!(
        (cps - client_rate).abs() <= client_rate * 0.35 + 1.0,
        "rvsadm --rate CPS {cps} vs the client's {client_rate:.1}/s\n{rate}"
    );
    let scrape = ns(&gw, "curl -s --max-time 5 http://127.0.0.1:9400/metrics");
    let metric_cps = series_sum(&String::from_utf8_lossy(&scrape.stdout), "rvs_service_cps");
    // The estimator moves every 2 s (and decays now that the load stopped): the scrape reads what
    // rvsadm read just before it or reads just after it.
    let (cps_after, _) = rvsadm_cps();
    assert!(
        (metric_cps - cps).abs() <= 1.0 || (metric_cps - cps_after).abs() <= 1.0,
        "metric cps {metric_cps} vs rvsadm {cps} before, {cps_after} after"
    );

    // PromQL over Prometheus's HTTP API: the connections of the service equal the requests made.
    let want = secs * 9;
    let mut last = String::new();
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let q = ns(&gw, "curl -s --max-time 2 'http://127.0.0.1:9090/api/v1/query?query=sum(rvs_service_connections_total)'");
        last = String::from_utf8_lossy(&q.stdout).to_string();
        if last.contains(&format!("\"{want}\"")) {
            break;
        }
    }
    assert!(
        last.contains(&format!("\"{want}\"")),
        "PromQL sum(rvs_service_connections_total) != {want}: {last}"
    );
    // `-Z` zeroes the rates too (IPVS's `ip_vs_zero_estimator`); the load has stopped, so
    // they stay at 0.
    let z = Command::new(rvsd_bin().with_file_name("rvsadm"))
        .arg("--socket")
        .arg(&sock)
        .arg("-Z")
        .status()
        .unwrap();
    assert!(z.success());
    let (cps_zeroed, rate) = rvsadm_cps();
    assert_eq!(cps_zeroed, 0.0, "rates after -Z:\n{rate}");
    drop(prom);
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
}
