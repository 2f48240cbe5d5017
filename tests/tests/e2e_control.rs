//! End to end control plane: rvsadm drives a running rvsd over its control socket the way an LVS
//! operator drives ipvsadm, and reloads change services while traffic flows.

use std::path::{Path, PathBuf};
use std::process::Command;

use rvs_tests::*;

const VIP: &str = "203.0.113.10";

fn rvsadm_bin() -> PathBuf {
    rvsd_bin().with_file_name("rvsadm")
}

fn rvsadm(sock: &Path, args: &str) -> (i32, String) {
    let o = Command::new(rvsadm_bin())
        .arg("--socket")
        .arg(sock)
        .args(args.split_whitespace())
        .output()
        .expect("run rvsadm (scripts/test builds it)");
    (o.status.code().unwrap_or(-1), text(&o))
}

fn config(pmd: &str, prefix: &str, sock: &Path, services: &str) -> String {
    gateway_toml(pmd, &format!("{prefix}-ctl"), Some(sock), services)
}

/// Conns column of each real server in `rvsadm -L -n --stats` output.
fn conns_by_real(listing: &str) -> Vec<(String, u64)> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("  -> "))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?.to_string();
            let conns = f.next()?.parse().ok()?;
            Some((addr, conns))
        })
        .collect()
}

/// (real server, weight) of every real server in `rvsadm -L -n` output, sorted.
fn reals_weights(listing: &str) -> Vec<(String, u32)> {
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("  -> "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `python3 reuse.py VIP PORT N`: N HTTP/1.0 GETs to VIP:80, each from local port PORT, each
/// read to the end and closed with a RST; prints how many got a 200.
const REUSE_PY: &str = r#"
import socket, struct, sys
vip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(10)
    s.bind(("0.0.0.0", port))
    s.connect((vip, 80))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    d = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        d += c
    ok += d.startswith(b"HTTP/1.0 200")
    s.close()
print(ok)
"#;

#[test]
fn seeds_walkthrough_rr_then_wrr_weight_3_splits_3_to_1() {
    if !prerequisites("e2e control walkthrough") {
        return;
    }
    assert!(rvsadm_bin().exists(), "{} missing", rvsadm_bin().display());
    let _g = serial();
    let topo = Topo::up("rvsc", 2);
    let cl = topo.ns("cl");
    let dir = tempdir("ctl-walk");
    let sock = dir.join("rvsd.sock");
    let (rvsd, pmd) = start_gateway(&dir, &topo.ns("gw"), "walk", |pmd| {
        config(pmd, "rvsc", &sock, "")
    });

    // A second rvsd on the same control socket (another DPDK file prefix, the same NICs) stops
    // at once, before its EAL or ports start: it never touches the running one's vdevs.
    let second = dir.join("second.toml");
    std::fs::write(&second, config(pmd, "rvsc2", &sock, "")).unwrap();
    let t0 = std::time::Instant::now();
    let o = ns(
        &topo.ns("gw"),
        &format!(
            "timeout 20 {} --config {}",
            rvsd_bin().display(),
            second.display()
        ),
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("another process answers on this socket"),
        "{out}"
    );
    assert!(!out.contains("EAL"), "no EAL start: {out}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );

    for cmd in [
        format!("-A -t {VIP}:80 -s rr"),
        format!("-a -t {VIP}:80 -r 198.51.100.11:80 -m"),
        format!("-a -t {VIP}:80 -r 198.51.100.12:80 -m"),
    ] {
        let (code, out) = rvsadm(&sock, &cmd);
        assert_eq!(code, 0, "rvsadm {cmd}: {out}");
    }
    let (_, listing) = rvsadm(&sock, "-L -n");
    assert!(
        listing.starts_with("IP Virtual Server version 1.2.1 (size="),
        "{listing}"
    );
    assert!(listing.contains(&format!("TCP  {VIP}:80 rr")), "{listing}");
    assert!(
        listing.contains("  -> 198.51.100.11:80             Masq    1      0          0"),
        "{listing}"
    );
    // Errors in ipvsadm's words, non-zero exit, nothing changed.
    let (code, out) = rvsadm(&sock, &format!("-a -t {VIP}:80 -r 198.51.100.11:80 -m"));
    assert_ne!(code, 0);
    assert!(out.contains("Destination already exists"), "{out}");
    let (code, out) = rvsadm(&sock, &format!("-a -t {VIP}:80 -r 198.51.100.13:8080 -g"));
    assert_ne!(code, 0, "DR with port mapping is refused: {out}");
    assert!(out.contains("port mapping is impossible"), "{out}");
    // Zeroing a service without real servers is no error (ipvsadm); an unknown one is.
    for (cmd, want) in [
        (format!("-A -t {VIP}:81 -s rr"), 0),
        (format!("-Z -t {VIP}:81"), 0),
        (format!("-D -t {VIP}:81"), 0),
        (format!("-Z -t {VIP}:81"), 255),
    ] {
        let (code, out) = rvsadm(&sock, &cmd);
        assert_eq!(code, want, "rvsadm {cmd}: {out}");
    }

    for cmd in [
        format!("-E -t {VIP}:80 -s wrr"),
        format!("-e -t {VIP}:80 -r 198.51.100.11:80 -m -w 3"),
    ] {
        let (code, out) = rvsadm(&sock, &cmd);
        assert_eq!(code, 0, "rvsadm {cmd}: {out}");
    }
    // Each real server's page names it ("rs1 198.51.100.11"): the split is counted from what the
    // client received, independently of rvs, then compared with rvsadm's counters.
    let o = ns(
        &cl,
        &format!("bash -c 'seq 1000 | xargs -P 10 -I{{}} curl -s --max-time 10 http://{VIP}/'"),
    );
    let bodies = text(&o);
    let served = |name: &str| bodies.lines().filter(|l| l.starts_with(name)).count() as f64;
    let (ra, rb) = (served("rs1 "), served("rs2 "));
    assert_eq!(
        ra + rb,
        1000.0,
        "all 1000 requests answered by rs1 or rs2\n{}",
        rvsd.log_text()
    );
    assert!(
        (ra / rb - 3.0).abs() < 0.3,
        "the clients saw a split {ra}:{rb}, not about 3:1"
    );
    let (_, stats) = rvsadm(&sock, "-L -n --stats");
    let c = conns_by_real(&stats);
    let get = |a: &str| c.iter().find(|(x, _)| x == a).map(|x| x.1).unwrap_or(0) as f64;
    let (a, b) = (get("198.51.100.11:80"), get("198.51.100.12:80"));
    // Every request is one connection, also when the client's kernel reuses a port whose
    // previous session is still in TIME_WAIT (rescheduled, as IPVS's conn_reuse_mode=1): the
    // counters show exactly what the clients saw.
    assert_eq!((a, b), (ra, rb), "{stats}");
    // The connection table as `ipvsadm -L -n -c` shows it, read from the running worker: one
    // row per session still in the table (TIME_WAIT lasts 120 s: all of them, but for a client
    // port the kernel reused, whose session was replaced), client -> VIP -> real server.
    let (code, conns) = rvsadm(&sock, "-L -n -c");
    assert_eq!(code, 0, "{conns}");
    assert!(
        conns.starts_with("IPVS connection entries\npro expire state"),
        "{conns}"
    );
    let rows: Vec<Vec<&str>> = conns
        .lines()
        .filter(|l| l.starts_with("TCP "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!((900..=1000).contains(&rows.len()), "{} rows", rows.len());
    for r in &rows {
        assert!(
            r.len() == 6
                && ["TIME_WAIT", "CLOSE", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK"].contains(&r[2])
                && r[3].starts_with("192.0.2.2:")
                && r[4] == format!("{VIP}:80")
                && ["198.51.100.11:80", "198.51.100.12:80"].contains(&r[5]),
            "{r:?}"
        );
    }
    // One client port used twice in a row (outside the ephemeral range, so the 1000 above never
    // took it): the client reads each whole response and closes with a RST (SO_LINGER 0), so
    // its own kernel keeps no TIME_WAIT that would refuse the port; the second SYN finds the
    // first session in CLOSE and is a new connection, scheduled and counted again.
    std::fs::write(dir.join("reuse.py"), REUSE_PY).unwrap();
    let o = ns(
        &cl,
        &format!("python3 {} {VIP} 20123 2", dir.join("reuse.py").display()),
    );
    assert_eq!(text(&o).trim(), "2", "{}\n{}", text(&o), rvsd.log_text());
    let (_, stats) = rvsadm(&sock, "-L -n --stats");
    let total: u64 = conns_by_real(&stats).iter().map(|x| x.1).sum();
    assert_eq!(total, 1002, "{stats}");
    // A real server removed and added again: the service keeps what it counted (IPVS's service
    // counters do not go down), the re-added real server starts from zero.
    let svc_conns = |stats: &str| -> u64 {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("TCP  {VIP}:80")))
            .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(svc_conns(&stats), 1002, "{stats}");
    for cmd in [
        format!("-d -t {VIP}:80 -r 198.51.100.12:80"),
        format!("-a -t {VIP}:80 -r 198.51.100.12:80 -m"),
    ] {
        let (code, out) = rvsadm(&sock, &cmd);
        assert_eq!(code, 0, "rvsadm {cmd}: {out}");
    }
    let (_, stats) = rvsadm(&sock, "-L -n --stats");
    assert_eq!(svc_conns(&stats), 1002, "{stats}");
    let c = conns_by_real(&stats);
    assert_eq!(
        c.iter().find(|(a, _)| a == "198.51.100.12:80").map(|x| x.1),
        Some(0),
        "{stats}"
    );
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
    assert!(final_counter(&log, "sessions_rescheduled") >= 1, "{log}");
    assert_eq!(final_counter(&log, "sessions_created"), 1002, "{log}");
}

#[test]
fn twenty_reloads_under_traffic_lose_nothing_and_a_broken_file_changes_nothing() {
    if !prerequisites("e2e control reloads") {
        return;
    }
    let _g = serial();
    let topo = Topo::up("rvsr", 3);
    let cl = topo.ns("cl");
    let dir = tempdir("ctl-reload");
    let sock = dir.join("rvsd.sock");
    let svc = |reals: &[(u8, u32)]| {
        let mut s = format!(
            "\n[[service]]\nproto = \"tcp\"\nvip = \"{VIP}\"\nvport = 80\nscheduler = \"wrr\"\nport = \"client\"\nlips = [\"198.51.100.2\"]\n"
        );
        for (i, w) in reals {
            s.push_str(&format!(
                "  [[service.real]]\n  ip = \"198.51.100.1{i}\"\n  weight = {w}\n"
            ));
        }
        s
    };
    let reals: [&[(u8, u32)]; 3] = [
        &[(1, 1), (2, 1), (3, 1)],
        &[(1, 2), (2, 1)],
        &[(2, 1), (3, 3)],
    ];
    let variants = reals.map(svc);
    let weights = reals.map(|r| {
        r.iter()
            .map(|(i, w)| (format!("198.51.100.1{i}:80"), *w))
            .collect::<Vec<_>>()
    });
    let (rvsd, pmd) = start_gateway(&dir, &topo.ns("gw"), "reload", |pmd| {
        config(pmd, "rvsr", &sock, &variants[0])
    });
    let cfg_path = dir.join(format!("reload-{pmd}.toml"));
    // A 20 MB download kept slow enough to span every reload: an established connection.
    let _ = sh(&format!("head -c 20000000 /dev/urandom > {0}/big.bin && for i in 1 2 3; do cp {0}/big.bin /tmp/{1}-rs$i-www/; done", dir.display(), topo.prefix));
    let long = Command::new("ip")
        .args(["netns", "exec", &cl, "bash", "-c"])
        .arg(format!(
            "curl -s --limit-rate 2M --max-time 60 http://{VIP}/big.bin | sha256sum"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Short requests one after another until every reload is done (the stop file).
    let stop = dir.join("stop");
    let short = Command::new("ip")
        .args(["netns", "exec", &cl, "bash", "-c"])
        .arg(format!("ok=0; bad=0; while [ ! -e {} ]; do if curl -s -o /dev/null --max-time 5 http://{VIP}/; then ok=$((ok+1)); else bad=$((bad+1)); fi; done; echo $ok $bad", stop.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Every reload takes effect: the listing shows the variant just written, reals and weights.
    // Odd reloads by SIGHUP (applied by the daemon's loop: waited for), even ones by the socket.
    for i in 0..20 {
        let want = &weights[(i + 1) % variants.len()];
        std::fs::write(
            &cfg_path,
            config(pmd, "rvsr", &sock, &variants[(i + 1) % variants.len()]),
        )
        .unwrap();
        if i % 2 == 1 {
            assert!(sh(&format!("kill -HUP {}", rvsd.pid())).status.success());
            wait_until(&format!("SIGHUP reload {i} to show {want:?}"), || {
                reals_weights(&rvsadm(&sock, "-L -n").1) == *want
            });
        } else {
            let (code, out) = rvsadm(&sock, "--reload");
            assert_eq!(code, 0, "reload {i}: {out}");
            let (_, listing) = rvsadm(&sock, "-L -n");
            assert_eq!(reals_weights(&listing), *want, "reload {i}: {listing}");
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    std::fs::write(&stop, "").unwrap();
    // A broken file: refused with file:line:column, nothing changes.
    let (_, before) = rvsadm(&sock, "-S -n");
    std::fs::write(
        &cfg_path,
        config(pmd, "rvsr", &sock, &variants[0]).replace("weight = 1", "weight = -1"),
    )
    .unwrap();
    let (code, out) = rvsadm(&sock, "--reload");
    assert_ne!(code, 0, "a broken file is refused: {out}");
    assert!(
        out.contains(&format!("{}:", cfg_path.display())),
        "the error names the file: {out}"
    );
    let (_, after) = rvsadm(&sock, "-S -n");
    assert_eq!(before, after, "the running configuration is unchanged");
    // A new route (only a restart installs it): refused as a whole, services unchanged, even
    // when the file also changes a service.
    std::fs::write(
        &cfg_path,
        config(
            pmd,
            "rvsr",
            &sock,
            &format!(
                "\n[[route]]\nprefix = \"10.99.0.0/16\"\nvia = \"198.51.100.254\"\n{}",
                variants[1]
            ),
        ),
    )
    .unwrap();
    let (code, out) = rvsadm(&sock, "--reload");
    assert_ne!(code, 0, "a route change is refused: {out}");
    assert!(
        out.contains("[[route]]") && out.contains("restart"),
        "{out}"
    );
    assert_eq!(rvsadm(&sock, "-S -n").1, before, "nothing changed");
    std::fs::write(&cfg_path, config(pmd, "rvsr", &sock, &variants[0])).unwrap();

    let short = short.wait_with_output().unwrap();
    let counts = String::from_utf8_lossy(&short.stdout).trim().to_string();
    let (ok, bad) = counts.split_once(' ').expect("ok and failed counts");
    assert!(
        bad == "0" && ok.parse::<u32>().is_ok_and(|n| n >= 20),
        "requests during 20 reloads: {counts} (ok, failed)\n{}",
        rvsd.log_text()
    );
    let long = long.wait_with_output().unwrap();
    let want = text(&sh(&format!("sha256sum {}/big.bin", dir.display())));
    assert_eq!(
        String::from_utf8_lossy(&long.stdout)
            .split_whitespace()
            .next(),
        want.split_whitespace().next(),
        "the established download survives every reload intact"
    );
    // What `-S` saves, `-R` restores: cleared, restored from the saved text (FULLNAT: the local
    // address must come before the real servers), the same rules, and traffic flows again.
    let (code, saved) = rvsadm(&sock, "-S -n");
    assert_eq!(code, 0, "{saved}");
    assert!(
        saved.contains("--add-laddr") && saved.contains(" -b "),
        "a FULLNAT service: {saved}"
    );
    let (code, out) = rvsadm(&sock, "-C");
    assert_eq!(code, 0, "{out}");
    let o = Command::new(rvsadm_bin())
        .arg("--socket")
        .arg(&sock)
        .arg("-R")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(saved.as_bytes())?;
            c.wait_with_output()
        })
        .expect("run rvsadm -R");
    assert!(o.status.success(), "rvsadm -R: {}", text(&o));
    assert_eq!(rvsadm(&sock, "-S -n").1, saved, "restored as saved");
    let o = ns(
        &cl,
        &format!("curl -s -o /dev/null -w %{{http_code}} --max-time 5 http://{VIP}/"),
    );
    assert_eq!(text(&o).trim(), "200", "{}", rvsd.log_text());
    let (ok, log) = rvsd.stop();
    assert!(ok, "{log}");
}
