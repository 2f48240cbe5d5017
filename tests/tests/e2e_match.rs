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
    // The real servers also serve port 82: a match that wrongly took it would get an answer.
    for i in 1..=2 {
        let rs = topo.ns(&format!("rs{i}"));
        let _ = sh(&format!(
            "ip netns exec {rs} setsid python3 -m http.server 82 --bind 198.51.100.1{i} --directory /tmp/{rs}-www >/dev/null 2>&1 < /dev/null &"
        ));
        wait_listen(&rs, &format!("198.51.100.1{i}:82"));
    }
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
    // Outside the port range or the prefix: no service, nothing answers, no session is made
    // (the real servers listen on 80 and 82).
    for (url, why) in [
        ("http://203.0.113.33:82/", "port 82 is outside the match"),
        ("http://203.0.113.36/", "203.0.113.36 is outside the /30"),
    ] {
        assert_eq!(get(url), "", "{why}");
    }
    let listing = text(&sh(&format!(
        "{} --socket {} -L -n",
        rvsd_bin().with_file_name("rvsadm").display(),
        sock.display()
    )));
    assert!(listing.contains("FWM  7 rr"), "{listing}");
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
    assert_eq!(
        final_counter(&log, "sessions_created"),
        4,
        "one session per request inside the match, none outside:\n{log}"
    );
}
