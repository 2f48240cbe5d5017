//! End to end: the built `rvsadm` binary against a fake rvsd on a temporary Unix socket that
//! answers canned responses.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;

use rvs_ctrlplane::ctl::proto::{
    read_msg, write_msg, Fwd, Op, Proto, Rates, RealSpec, RealView, Request, Response, ServiceKey,
    ServiceSpec, ServiceView, Stats, PROTO_VERSION,
};

/// A fake rvsd answering every connection with `answer(op)`; returns the socket path.
fn fake_rvsd(name: &str, answer: fn(Op) -> Response) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rvsadm-cli-{}-{name}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("rvsd.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let Ok(req) = read_msg::<Request, _>(&mut s) else {
                continue;
            };
            assert_eq!(req.version, PROTO_VERSION);
            let _ = write_msg(&mut s, &answer(req.op));
        }
    });
    path
}

fn rvsadm(socket: &PathBuf, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rvsadm"))
        .args(args)
        .env("RVS_SOCKET", socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn answer(op: Op) -> Response {
    let key = ServiceKey {
        proto: Proto::Tcp,
        vip: "203.0.113.10".parse().unwrap(),
        vport: 80,
        mark: None,
    };
    match op {
        Op::Status => Response::Status {
            version: "0.1.0".into(),
            generation: 1,
            workers: 1,
            conn_table_size: 4096,
        },
        Op::ListServices => Response::Services {
            services: vec![ServiceView {
                spec: ServiceSpec {
                    key,
                    scheduler: "wrr".into(),
                    persistent: None,
                    netmask: None,
                    sched_flags: vec![],
                },
                reals: vec![RealView {
                    spec: RealSpec {
                        addr: "198.51.100.11:80".parse().unwrap(),
                        fwd: Fwd::FullNat,
                        weight: 1,
                        upper: 0,
                        lower: 0,
                    },
                    active: 2,
                    inactive: 1,
                    persist: 0,
                    stats: Stats::default(),
                    rates: Rates::default(),
                    health: None,
                    health_transitions: 0,
                    health_failures: 0,
                }],
                lips: vec![],
                stats: Stats::default(),
                rates: Rates::default(),
            }],
        },
        Op::AddService { .. } => Response::Error {
            code: 17,
            message: "Service already exists".into(),
        },
        _ => Response::Ok,
    }
}

#[test]
fn cli_end_to_end() {
    let sock = fake_rvsd("e2e", answer);
    let (code, out, err) = rvsadm(&sock, &["-L", "-n"], "");
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  203.0.113.10:80 wrr\n  \
         -> 198.51.100.11:80             FullNat 1      2          1         \n"
    );
    let (code, out, _) = rvsadm(&sock, &["-Sn"], "");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "-A -t 203.0.113.10:80 -s wrr\n-a -t 203.0.113.10:80 -r 198.51.100.11:80 -b -w 1\n"
    );
    // The daemon's refusal: its message, exit 255 (ipvsadm's -1).
    let (code, out, err) = rvsadm(&sock, &["-A", "-t", "203.0.113.10:80", "-s", "rr"], "");
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (255, "", "Service already exists\n")
    );
    // Restore through stdin; a refused line is named.
    let (code, _, err) = rvsadm(
        &sock,
        &["-R"],
        "-a -t 203.0.113.10:80 -r 198.51.100.12 -b\n",
    );
    assert_eq!((code, err.as_str()), (0, ""));
    let (code, _, err) = rvsadm(&sock, &["-R"], "-C\n-A -t 203.0.113.10:80 -s rr\n");
    assert_eq!(
        (code, err.as_str()),
        (255, "line 2: Service already exists\n")
    );
    // Usage errors exit 2 without asking rvsd; an unreachable socket exits 2 naming it (ipvsadm's
    // "Can't initialize ipvs").
    let (code, _, err) = rvsadm(&sock, &["-a", "-t", "203.0.113.10:80"], "");
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "You need to supply the 'real-server' option for the 'add-server' command\n"
    );
    let (code, _, err) = rvsadm(&sock, &["-C", "--socket", "/nonexistent/rvsd.sock"], "");
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/rvsd.sock"), "{err}");
    let _ = std::fs::remove_file(&sock);
}
