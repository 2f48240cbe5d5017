//! End to end exception path: a real TCP session between a client and a server listening on the
//! kernel side of the gateway's address crosses the DPDK port (TAP mirroring the port), while
//! rvsd still answers ping and ARP itself.

use rvs_tests::*;

#[test]
fn kernel_side_http_server_is_reachable_through_the_dpdk_port() {
    if !prerequisites("e2e exception path") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsk", 1);
    let (cl, gw) = (topo.ns("cl"), topo.ns("gw"));
    let dir = tempdir("exception");
    let sock = dir.join("rvsd.sock");
    let (rvsd, _) = start_gateway(&dir, &gw, "exception", |pmd| {
        gateway_toml(pmd, "rvsk-exc", Some(&sock), "").replacen(
            "addresses = [\"192.0.2.1/24\"]",
            "addresses = [\"192.0.2.1/24\"]\nkernel = \"rvs-client\"",
            1,
        )
    });
    let addrs = text(&ns(&gw, "ip -4 -o addr show dev rvs-client"));
    assert!(
        addrs.contains("192.0.2.1/24"),
        "the kernel interface mirrors the port's address: {addrs}"
    );
    std::fs::write(dir.join("index.html"), "kernel side\n").unwrap();
    let _ = sh(&format!(
        "ip netns exec {gw} setsid python3 -m http.server 8080 --bind 192.0.2.1 --directory {} >/dev/null 2>&1 < /dev/null &",
        dir.display()
    ));
    wait_listen(&gw, "192.0.2.1:8080");
    let o = ns(&cl, "curl -s --max-time 5 http://192.0.2.1:8080/");
    assert_eq!(
        text(&o).trim(),
        "kernel side",
        "HTTP to the gateway's kernel side\n{}",
        rvsd.log_text()
    );
    let o = ns(&cl, "ping -c 2 -i 0.2 -W 2 192.0.2.1");
    assert!(o.status.success(), "rvsd still answers ping: {}", text(&o));
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
    assert!(final_counter(&log, "to_kernel") > 0, "{log}");
    assert!(final_counter(&log, "from_kernel") > 0, "{log}");
}
