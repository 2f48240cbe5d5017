//! End to end persistence (issue "schedulers ... persistence"): a real client making many
//! connections from different source ports to a persistent service always lands on one real
//! server; with a port-0 service, connections to two ports of the VIP land on the same one.

use std::path::Path;

use rvs_tests::*;

fn config(pmd: &str) -> String {
    gateway_toml(
        pmd,
        "rvsp-persist",
        Some(Path::new("/tmp/rvsp-persist.sock")),
        r#"
# Per-port persistence: rr would alternate; persistence pins the client.
[[service]]
proto = "tcp"
vip = "203.0.113.10"
vport = 80
scheduler = "rr"
port = "client"
lips = ["198.51.100.2"]
persistent = 300
  [[service.real]]
  ip = "198.51.100.11"
  [[service.real]]
  ip = "198.51.100.12"
  [[service.real]]
  ip = "198.51.100.13"

# Port 0: every port of the VIP, one real server per client.
[[service]]
proto = "tcp"
vip = "203.0.113.20"
vport = 0
scheduler = "rr"
port = "client"
lips = ["198.51.100.3"]
persistent = 300
  [[service.real]]
  ip = "198.51.100.11"
  port = 0
  [[service.real]]
  ip = "198.51.100.12"
  port = 0
  [[service.real]]
  ip = "198.51.100.13"
  port = 0
"#,
    )
}

#[test]
fn persistent_and_port_zero_services_pin_a_client() {
    if !prerequisites("e2e persistence") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsp", 3);
    let cl = topo.ns("cl");
    let dir = tempdir("persist");
    // A second HTTP port on every real server.
    for i in 1..=3 {
        let rs = topo.ns(&format!("rs{i}"));
        let _ = sh(&format!(
            "ip netns exec {rs} setsid python3 -m http.server 8080 --bind 198.51.100.1{i} --directory /tmp/{rs}-www >/dev/null 2>&1 < /dev/null &"
        ));
    }
    for i in 1..=3 {
        wait_listen(
            &topo.ns(&format!("rs{i}")),
            &format!("198.51.100.1{i}:8080"),
        );
    }
    let (rvsd, _) = start_gateway(&dir, &topo.ns("gw"), "persist", config);

    let bodies = |url: &str, n: usize| -> Vec<String> {
        let o = ns(
            &cl,
            &format!("bash -c 'for i in $(seq {n}); do curl -s --max-time 5 {url}; done'"),
        );
        text(&o).lines().map(str::to_string).collect()
    };
    let per_port = bodies("http://203.0.113.10/", 30);
    assert_eq!(per_port.len(), 30, "{per_port:?}\n{}", rvsd.log_text());
    assert!(
        per_port.iter().all(|b| b == &per_port[0]),
        "30 connections, one real server: {per_port:?}"
    );

    let p80 = bodies("http://203.0.113.20/", 5);
    let p8080 = bodies("http://203.0.113.20:8080/", 5);
    assert_eq!(
        (p80.len(), p8080.len()),
        (5, 5),
        "{p80:?} {p8080:?}\n{}",
        rvsd.log_text()
    );
    assert!(
        p80.iter().chain(&p8080).all(|b| b == &p80[0]),
        "port-0 persistence: ports 80 and 8080 reach the same real server: {p80:?} {p8080:?}"
    );
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
    assert!(final_counter(&log, "persist_hits") > 0, "{log}");
}
