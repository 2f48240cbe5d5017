//! Tests of the health checker: the rise/fall state machine, and each probe against local
//! servers on the loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::AtomicBool;

use super::*;
use crate::config::{CheckConfig, CheckKind};
use crate::ctl::proto::Proto;

fn key() -> ServiceKey {
    ServiceKey {
        proto: Proto::Tcp,
        vip: "203.0.113.10".parse().unwrap(),
        vport: 80,
        mark: None,
    }
}

fn target(addr: SocketAddr, kind: CheckKind, timeout_ms: u32) -> Target {
    let mut c = CheckConfig::new(kind);
    c.timeout_ms = timeout_ms;
    Target::new(key(), addr.ip(), addr.port(), &c, None)
}

fn http_kind(status: impl Into<Option<u16>>, body: Option<&str>) -> CheckKind {
    CheckKind::Http {
        path: "/health".into(),
        expect_status: status.into(),
        expect_body: body.map(str::to_owned),
    }
}

#[test]
fn rise_and_fall() {
    let mut s = HealthState::default();
    assert!(s.up);
    // fall = 3: two failures are not enough; a success resets the count.
    assert_eq!(s.record(false, 2, 3), None);
    assert_eq!(s.record(false, 2, 3), None);
    assert_eq!(s.record(true, 2, 3), None);
    assert_eq!(s.record(false, 2, 3), None);
    assert_eq!(s.record(false, 2, 3), None);
    assert_eq!(s.record(false, 2, 3), Some(false));
    assert!(!s.up);
    assert_eq!(s.failures, 3);
    // More failures while down change nothing.
    assert_eq!(s.record(false, 2, 3), None);
    // rise = 2, with flapping in between.
    assert_eq!(s.record(true, 2, 3), None);
    assert_eq!(s.record(false, 2, 3), None);
    assert_eq!(s.record(true, 2, 3), None);
    assert_eq!(s.record(true, 2, 3), Some(true));
    assert!(s.up);
    assert_eq!(s.record(true, 2, 3), None);
    // rise = fall = 1: every change flips.
    let mut s = HealthState::default();
    assert_eq!(s.record(false, 1, 1), Some(false));
    assert_eq!(s.record(true, 1, 1), Some(true));
    assert_eq!(s.record(false, 1, 1), Some(false));
    // Zero counts behave as 1.
    assert_eq!(s.record(true, 0, 0), Some(true));
}

#[test]
fn transition_lines() {
    let t = target("198.51.100.11:80".parse().unwrap(), CheckKind::Tcp, 1000);
    assert_eq!(
        transition_line(&t, false, "connect refused, 3 failures"),
        "health: TCP 203.0.113.10:80 -> 198.51.100.11:80 DOWN (connect refused, 3 failures)"
    );
    assert_eq!(
        transition_line(&t, true, "2 successes"),
        "health: TCP 203.0.113.10:80 -> 198.51.100.11:80 UP (2 successes)"
    );
    // The check's port overrides the real's; a source of the other family is dropped.
    let mut c = CheckConfig::new(CheckKind::Tcp);
    c.port = Some(8080);
    let t = Target::new(
        key(),
        "198.51.100.11".parse().unwrap(),
        80,
        &c,
        Some("2001:db8::1".parse().unwrap()),
    );
    assert_eq!(t.addr, "198.51.100.11:8080".parse().unwrap());
    assert_eq!(t.source, None);
}

/// The request's bytes up to its blank line (None: the client went away first).
fn read_request(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return None,
            Ok(n) => req.extend_from_slice(&b[..n]),
        }
    }
    Some(req)
}

/// A one-shot HTTP server answering `response` to the first request; its address.
fn http_server(response: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let Some(req) = read_request(&mut s) else {
                return;
            };
            assert!(req.starts_with(b"GET /health HTTP/1.0\r\n"));
            let _ = s.write_all(response.as_bytes());
        }
    });
    addr
}

#[test]
fn http_checks() {
    let ok = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall good\n";
    let a = http_server(ok);
    assert_eq!(
        probe(&target(a, http_kind(200, None), 2000), connect_plain),
        Ok(())
    );
    let a = http_server(ok);
    assert_eq!(
        probe(
            &target(a, http_kind(200, Some("good")), 2000),
            connect_plain
        ),
        Ok(())
    );
    let a = http_server(ok);
    assert_eq!(
        probe(&target(a, http_kind(200, Some("bad")), 2000), connect_plain),
        Err("HTTP body lacks \"bad\"".into())
    );
    let a = http_server("HTTP/1.1 503 Service Unavailable\r\n\r\n");
    assert_eq!(
        probe(&target(a, http_kind(200, None), 2000), connect_plain),
        Err("HTTP status 503, expected 200".into())
    );
    let a = http_server("HTTP/1.1 503 Service Unavailable\r\n\r\n");
    assert_eq!(
        probe(&target(a, http_kind(503, None), 2000), connect_plain),
        Ok(())
    );
    let a = http_server("garbage\r\n\r\n");
    assert_eq!(
        probe(&target(a, http_kind(200, None), 2000), connect_plain),
        Err("not an HTTP response".into())
    );
}

/// Without `expect_status`, any 2xx passes (keepalived's `HTTP_GET` default); the request names
/// the host with its port; a server that keeps the connection open after its answer passes
/// without waiting for the timeout.
#[test]
fn http_check_defaults_host_and_open_connections() {
    let a = http_server("HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        probe(&target(a, http_kind(None, None), 2000), connect_plain),
        Ok(())
    );
    let a = http_server("HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n");
    assert_eq!(
        probe(&target(a, http_kind(None, None), 2000), connect_plain),
        Err("HTTP status 302, expected 2xx".into())
    );
    // Answers, then holds the connection (and reports the request's Host line).
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let Some(req) = read_request(&mut s) else {
                return;
            };
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nall good\n");
            let _ = tx.send(String::from_utf8_lossy(&req).into_owned());
            std::thread::sleep(Duration::from_secs(3));
        }
    });
    let t0 = Instant::now();
    assert_eq!(
        probe(
            &target(a, http_kind(None, Some("good")), 2000),
            connect_plain
        ),
        Ok(())
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let req = rx.recv().unwrap();
    assert!(
        req.contains(&format!("\r\nHost: 127.0.0.1:{}\r\n", a.port())),
        "{req}"
    );
}

#[test]
fn http_check_times_out_within_its_timeout() {
    // Accepts (the kernel does) but never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let t0 = Instant::now();
    let r = probe(&target(a, http_kind(200, None), 200), connect_plain);
    let took = t0.elapsed();
    assert_eq!(r, Err("read timeout".into()));
    // It waited for its timeout, and then gave up (not the OS's minutes-long default).
    assert!(took >= Duration::from_millis(150), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(l);
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

#[test]
fn tcp_checks() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    assert_eq!(
        probe(&target(a, CheckKind::Tcp, 500), connect_plain),
        Ok(())
    );
    assert_eq!(
        probe(&target(closed_port(), CheckKind::Tcp, 500), connect_plain),
        Err("connect refused".into())
    );
    assert_eq!(
        probe(
            &target(closed_port(), http_kind(200, None), 500),
            connect_plain
        ),
        Err("connect refused".into())
    );
}

#[test]
fn udp_checks() {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut b = [0u8; 512];
        while let Ok((n, from)) = echo.recv_from(&mut b) {
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&b[..n]);
            let _ = echo.send_to(&reply, from);
        }
    });
    let udp = |send: &str, expect: Option<&str>| CheckKind::Udp {
        send: send.into(),
        expect: expect.map(str::to_owned),
    };
    assert_eq!(
        probe(&target(a, udp("ping", None), 1000), connect_plain),
        Ok(())
    );
    assert_eq!(
        probe(
            &target(a, udp("ping", Some("echo: ping")), 1000),
            connect_plain
        ),
        Ok(())
    );
    assert_eq!(
        probe(&target(a, udp("ping", Some("pong")), 1000), connect_plain),
        Err("UDP reply lacks \"pong\"".into())
    );
    // Nothing listening: the kernel's port unreachable fails it at once.
    let free = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let r = probe(&target(free, udp("ping", None), 1000), connect_plain);
    assert_eq!(r, Err("reply: refused (port unreachable)".into()));
    // A silent server: a timeout, within the check's timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    let r = probe(
        &target(silent.local_addr().unwrap(), udp("ping", None), 200),
        connect_plain,
    );
    assert_eq!(r, Err("reply timeout".into()));
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// A sink recording transitions over fixed targets.
struct Rec {
    targets: Mutex<Vec<Target>>,
    seen: Mutex<Vec<(RealId, bool, String)>>,
    /// Every check's outcome, in order.
    checks: Mutex<Vec<bool>>,
}

impl Sink for Rec {
    fn targets(&self) -> Vec<Target> {
        self.targets.lock().unwrap().clone()
    }
    fn transition(&self, t: &Target, up: bool, detail: &str) {
        self.seen.lock().unwrap().push((t.id, up, detail.into()));
    }
    fn checked(&self, _t: &Target, ok: bool) {
        self.checks.lock().unwrap().push(ok);
    }
}

impl Rec {
    fn new(targets: Vec<Target>) -> Arc<Rec> {
        Arc::new(Rec {
            targets: Mutex::new(targets),
            seen: Mutex::new(Vec::new()),
            checks: Mutex::new(Vec::new()),
        })
    }

    /// Wait (5 s at most) until `n` transitions were seen.
    fn wait_for(&self, n: usize) {
        let t0 = Instant::now();
        while self.seen.lock().unwrap().len() < n && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TCP check every 100 ms (100 ms timeout), down after 2 failures, up after 2 successes, of a
/// closed local port.
fn closed_port_target() -> (SocketAddr, Target) {
    let a = closed_port();
    let mut c = CheckConfig::new(CheckKind::Tcp);
    c.interval_ms = 100;
    c.timeout_ms = 100;
    c.fall = 2;
    c.rise = 2;
    (a, Target::new(key(), a.ip(), a.port(), &c, None))
}

#[test]
fn checker_marks_down_and_up() {
    // A real server whose port is closed goes down after `fall` checks, then up once it listens.
    let (a, t) = closed_port_target();
    let rec = Rec::new(vec![t.clone()]);
    let stop = Arc::new(AtomicBool::new(false));
    let checker = spawn(rec.clone(), 2, connect_plain, stop.clone()).unwrap();
    rec.wait_for(1);
    assert_eq!(
        rec.seen.lock().unwrap().clone(),
        vec![(t.id, false, "connect refused, 2 failures".to_string())]
    );
    // Each failed check was reported, the ones before the transition too.
    assert!(rec.checks.lock().unwrap().starts_with(&[false, false]));
    let l = TcpListener::bind(a);
    if let Ok(_l) = l {
        rec.wait_for(2);
        assert_eq!(
            rec.seen.lock().unwrap()[1],
            (t.id, true, "2 successes".to_string())
        );
    }
    stop.store(true, Ordering::Relaxed);
    checker.join();
}

/// A real server removed and added again (another instance: a new epoch) starts up, whatever
/// the old one was found to be: down again only after `fall` failures of its own.
#[test]
fn a_real_server_added_again_starts_afresh() {
    let (_, t) = closed_port_target();
    let t = t.with_epoch(1);
    let rec = Rec::new(vec![t.clone()]);
    let stop = Arc::new(AtomicBool::new(false));
    let checker = spawn(rec.clone(), 2, connect_plain, stop.clone()).unwrap();
    rec.wait_for(1);
    // Re-added within one scheduler tick: same address, new instance.
    *rec.targets.lock().unwrap() = vec![t.clone().with_epoch(2)];
    rec.wait_for(2);
    let down = (t.id, false, "connect refused, 2 failures".to_string());
    assert_eq!(rec.seen.lock().unwrap().clone(), vec![down.clone(), down]);
    stop.store(true, Ordering::Relaxed);
    checker.join();
}

#[test]
fn icmp_checks_ping_loopback() {
    let t = target("127.0.0.1:0".parse().unwrap(), CheckKind::Icmp, 1000);
    assert_eq!(probe(&t, connect_plain), Ok(()), "loopback answers ping");
}

#[test]
fn hanging_checks_do_not_hold_up_the_others() {
    // Ten real servers that accept and never answer (each check hangs for its 2 s timeout) come
    // first; one whose port is closed comes last. With a fixed pool of one thread its check
    // would wait behind the hanging ones; the pool grows, so it is refused and marked down
    // before any hanging check has timed out.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = l.local_addr().unwrap();
    let mut targets = Vec::new();
    for i in 0..10u16 {
        let mut c = CheckConfig::new(http_kind(200, None));
        c.port = Some(silent.port());
        c.timeout_ms = 2000;
        c.fall = 1;
        targets.push(Target::new(key(), silent.ip(), 1000 + i, &c, None));
    }
    let refused = closed_port();
    let mut c = CheckConfig::new(CheckKind::Tcp);
    c.fall = 1;
    let last = Target::new(key(), refused.ip(), refused.port(), &c, None);
    targets.push(last.clone());
    let rec = Rec::new(targets);
    let stop = Arc::new(AtomicBool::new(false));
    let checker = spawn(rec.clone(), 1, connect_plain, stop.clone()).unwrap();
    let t0 = Instant::now();
    while rec.seen.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let first = rec.seen.lock().unwrap().first().cloned();
    assert_eq!(
        first.map(|(id, up, _)| (id, up)),
        Some((last.id, false)),
        "the refused real server is down first: {:?}",
        rec.seen.lock().unwrap()
    );
    stop.store(true, Ordering::Relaxed);
    checker.join();
    drop(l);
}
