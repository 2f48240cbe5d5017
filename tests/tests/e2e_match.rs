//! End to end match (fwmark-like) service: connections to any address of a destination prefix and
//! port range are balanced by one service; rvsadm lists it as ipvsadm lists a fwmark service.

use rvs_tests::*;

const EXTRA: &str = r#"
[[service]]
mark = 7
scheduler = "rr"
port = "client"
lips = ["198.51.100.2"]
  [service.match]
  proto = "tcp"
  dst = "203.0.113.32/30"
  dport = "80-81"
  [[service.real]]
  ip = "198.51.100.11"
  port = 0
  [[service.real]]
  ip = "198.51.100.12"
  port = 0
"#;

#[test]
fn a_match_service_balances_a_prefix_and_port_range() {
    if !prerequisites("e2e match service") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsf", 2);
    let cl = topo.ns("cl");
    let dir = tempdir("match");
    let sock = dir.join("rvsd.sock");
    let (rvsd, _) = start_gateway(&dir, &topo.ns("gw"), "match", |pmd| {
        gateway_toml(pmd, "rvsf-match", Some(&sock), EXTRA)
    });
    let get = |url: &str| {
        text(&ns(&cl, &format!("curl -s --max-time 3 {url}")))
            .trim()
            .to_string()
    };
    let mut seen = std::collections::HashSet::new();
    for ip in [
        "203.0.113.33",
        "203.0.113.34",
        "203.0.113.33",
        "203.0.113.34",
    ] {
        let body = get(&format!("http://{ip}/"));
        assert!(
            body.starts_with("rs"),
            "{ip}:80 through the match service: {body:?}\n{}",
            rvsd.log_text()
        );
        seen.insert(body);
    }
    assert_eq!(seen.len(), 2, "rr over both real servers: {seen:?}");
    // Outside the port range: no service, nothing answers.
    assert_eq!(
        get("http://203.0.113.33:82/"),
        "",
        "port 82 is outside the match"
    );
    let listing = text(&sh(&format!(
        "{} --socket {} -L -n",
        rvsd_bin().with_file_name("rvsadm").display(),
        sock.display()
    )));
    assert!(listing.contains("FWM  7 rr"), "{listing}");
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
}
