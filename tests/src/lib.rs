//! Shared helpers of the rvs end-to-end tests: prerequisites (root, the rvsd binary), the namespace
//! topology of `scripts/topo`, an rvsd child process, commands inside namespaces, pcap files.
//!
//! Under `CI=true` a missing prerequisite fails the test loudly; elsewhere the test prints why it
//! did not run and returns.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// True under `CI=true` (any non-empty value but `false` and `0`).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false" && v != "0")
        .unwrap_or(false)
}

/// True when the test can run. Without a prerequisite: panics under CI, else prints and returns false.
pub fn prerequisites(what: &str) -> bool {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    if !rvsd_bin().exists() {
        missing.push(format!(
            "{} (build it: cargo build --release -p rvs-ctrlplane)",
            rvsd_bin().display()
        ));
    }
    for tool in ["ip", "tcpdump", "ping", "curl"] {
        if !Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
        {
            missing.push(format!("{tool} (scripts/deps installs it)"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{what}: missing prerequisites: {}", missing.join(", "));
    if in_ci() {
        panic!("{msg} (CI=true: end-to-end tests must run)");
    }
    eprintln!("NOT RUN: {msg}");
    false
}

/// The rvsd binary under test: `$RVSD_BIN`, else target/release/rvsd.
pub fn rvsd_bin() -> PathBuf {
    std::env::var_os("RVSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/release/rvsd"))
}

/// End-to-end tests share the machine's two cores and namespaces: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run a command, returning its output (never panics on a non-zero exit).
pub fn sh(cmd: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn bash")
}

/// Run `cmd` inside namespace `ns`.
pub fn ns(ns: &str, cmd: &str) -> Output {
    sh(&format!("ip netns exec {ns} {cmd}"))
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The demo/test topology of `scripts/topo`, removed on drop.
pub struct Topo {
    pub prefix: String,
}

impl Topo {
    pub fn up(prefix: &str, servers: u32) -> Topo {
        let o = sh(&format!(
            "{}/scripts/topo up {prefix} {servers}",
            root().display()
        ));
        assert!(o.status.success(), "topo up failed: {}", text(&o));
        Topo {
            prefix: prefix.to_string(),
        }
    }
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "{}/scripts/topo down {}",
            root().display(),
            self.prefix
        ));
    }
}

/// An rvsd child process. Killed on drop if still running.
pub struct Rvsd {
    child: Option<Child>,
    log: PathBuf,
}

impl Rvsd {
    /// Start rvsd with `config` (inside namespace `netns` if given) and wait for it to report
    /// running. Panics with its log if it exits or does not come up in time.
    pub fn start(config: &Path, netns: Option<&str>) -> Rvsd {
        let log = config.with_extension("log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = match netns {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n]).arg(rvsd_bin());
                c
            }
            None => Command::new(rvsd_bin()),
        };
        cmd.arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf);
        let child = cmd.spawn().expect("spawn rvsd");
        let mut r = Rvsd {
            child: Some(child),
            log,
        };
        let t0 = Instant::now();
        loop {
            if r.log_text().contains("rvsd: running") {
                return r;
            }
            if let Some(st) = r.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("rvsd exited ({st}) before running:\n{}", r.log_text());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                panic!("rvsd did not come up in 30 s:\n{}", r.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's process id (`ip netns exec` execs rvsd in place: the child is rvsd).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGTERM, wait (10 s at most), return (exited cleanly with status 0, full log).
    pub fn stop(mut self) -> (bool, String) {
        let mut child = self.child.take().unwrap();
        let _ = sh(&format!("kill -TERM {}", child.id()));
        let t0 = Instant::now();
        let ok = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.success();
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (ok, self.log_text())
    }
}

impl Drop for Rvsd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tcpdump capture running in a namespace, writing a pcap file.
pub struct Capture {
    child: Child,
    pub file: PathBuf,
    /// tcpdump's stderr, read to the end by a thread (its summary comes at exit).
    stderr: std::thread::JoinHandle<String>,
}

impl Capture {
    /// Start capturing on `dev` in `netns` into `file`; returns once tcpdump is listening.
    pub fn start(netns: &str, dev: &str, file: &Path) -> Capture {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "tcpdump",
                "--immediate-mode",
                "-U",
                "-n",
                "-i",
                dev,
                "-w",
            ])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        // tcpdump prints "listening on ..." once the capture is open.
        let _ = err.read_line(&mut line);
        assert!(line.contains("listening"), "tcpdump did not start: {line}");
        let stderr = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = err.read_to_string(&mut rest);
            rest
        });
        Capture {
            child,
            file: file.to_path_buf(),
            stderr,
        }
    }

    /// Stop and return the captured frames.
    pub fn finish(self) -> Vec<Vec<u8>> {
        self.finish_counted().0
    }

    /// Stop and return the captured frames and how many packets tcpdump says the kernel
    /// dropped before it could read them (frames the capture misses, not the network).
    pub fn finish_counted(mut self) -> (Vec<Vec<u8>>, u64) {
        // Let the last frames reach the capture before stopping it.
        std::thread::sleep(Duration::from_millis(500));
        let _ = sh(&format!("kill -INT {}", self.child.id()));
        let _ = self.child.wait();
        let text = self.stderr.join().unwrap_or_default();
        // "N packets dropped by kernel" (and "by interface"): any line naming drops counts.
        let dropped = text
            .lines()
            .filter(|l| l.contains("dropped by"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        (pcap::read(&self.file), dropped)
    }
}

/// Minimal pcap (libpcap classic format, Ethernet link type) reading and writing.
pub mod pcap {
    use std::path::Path;

    /// Write Ethernet frames to a classic pcap file (microsecond timestamps 1 ms apart).
    pub fn write(path: &Path, frames: &[Vec<u8>]) {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&0i32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        for (i, f) in frames.iter().enumerate() {
            out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
            out.extend_from_slice(&((i as u32) * 1000).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        std::fs::write(path, out).unwrap();
    }

    /// Read every frame of a classic pcap file (either byte order, µs or ns timestamps).
    pub fn read(path: &Path) -> Vec<Vec<u8>> {
        let d = std::fs::read(path).unwrap_or_default();
        if d.len() < 24 {
            return Vec::new();
        }
        let magic = u32::from_le_bytes(d[0..4].try_into().unwrap());
        let le = matches!(magic, 0xa1b2c3d4 | 0xa1b23c4d);
        assert!(
            le || matches!(magic.swap_bytes(), 0xa1b2c3d4 | 0xa1b23c4d),
            "not a pcap file: {}",
            path.display()
        );
        let u32at = |o: usize| {
            let b: [u8; 4] = d[o..o + 4].try_into().unwrap();
            if le {
                u32::from_le_bytes(b)
            } else {
                u32::from_be_bytes(b)
            }
        };
        let mut frames = Vec::new();
        let mut o = 24;
        while o + 16 <= d.len() {
            let caplen = u32at(o + 8) as usize;
            o += 16;
            if o + caplen > d.len() {
                break;
            }
            frames.push(d[o..o + caplen].to_vec());
            o += caplen;
        }
        frames
    }
}

/// The two-port gateway config of `scripts/topo`: `[eal]` with `file_prefix`, one worker
/// (lcore 1), a `[control]` socket (`socket`, else [`test_socket`] of `file_prefix`), the client port (`{pmd}0` on gw-c,
/// 192.0.2.1/24) and the servers port (`{pmd}1` on gw-s, 198.51.100.1/24), then `extra`
/// (services and the like) verbatim.
pub fn gateway_toml(pmd: &str, file_prefix: &str, socket: Option<&Path>, extra: &str) -> String {
    // Never the default /run/rvsd.sock: a test must not take over a running demo's socket.
    let socket = socket.map_or_else(|| test_socket(file_prefix), Path::to_path_buf);
    let control = format!("[control]\nsocket = \"{}\"\n\n", socket.display());
    format!(
        r#"
[eal]
file_prefix = "{file_prefix}"
args = ["--log-level", "*:warning"]

[dataplane]
workers = [1]

{control}[[port]]
name = "client"
device = "{pmd}0,iface=gw-c"
addresses = ["192.0.2.1/24"]

[[port]]
name = "servers"
device = "{pmd}1,iface=gw-s"
addresses = ["198.51.100.1/24"]
{extra}"#
    )
}

/// The control socket of a test's rvsd that names none: its own file under /tmp, never the
/// default `/run/rvsd.sock` a running demo uses.
pub fn test_socket(file_prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{file_prefix}.sock"))
}

/// Start rvsd in `netns` with the config `make(pmd)` on AF_XDP, or on AF_PACKET when AF_XDP cannot
/// start here (reported on stderr; under `CI=true` AF_XDP must start, the test fails otherwise). Returns the daemon and the PMD used.
pub fn start_gateway(
    dir: &Path,
    netns: &str,
    name: &str,
    make: impl Fn(&str) -> String,
) -> (Rvsd, &'static str) {
    for pmd in ["net_af_xdp", "net_af_packet"] {
        let path = dir.join(format!("{name}-{pmd}.toml"));
        std::fs::write(&path, make(pmd)).unwrap();
        match std::panic::catch_unwind(|| Rvsd::start(&path, Some(netns))) {
            Ok(r) => return (r, pmd),
            // Under CI the AF_XDP path the demo leads with must run: no quiet fallback there.
            Err(e) if pmd == "net_af_xdp" && in_ci() => std::panic::resume_unwind(e),
            Err(_) if pmd == "net_af_xdp" => {
                eprintln!("{name}: net_af_xdp did not start here; using net_af_packet")
            }
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    unreachable!()
}

/// A fresh temporary directory for one test. Those of earlier runs of the same test are removed
/// (the last run's logs stay for a look after a failure; the suite does not pile up files).
pub fn tempdir(tag: &str) -> PathBuf {
    let name = format!("rvs-{tag}-{}", std::process::id());
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let earlier = n
                .strip_prefix(&format!("rvs-{tag}-"))
                .is_some_and(|pid| pid.bytes().all(|b| b.is_ascii_digit()) && n != name);
            if earlier {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let d = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Value of counter `name` in the `total:` line rvsd logs when it stops.
pub fn final_counter(log: &str, name: &str) -> u64 {
    let total = log
        .lines()
        .rfind(|l| l.starts_with("total:"))
        .unwrap_or_else(|| panic!("no totals in:\n{log}"));
    let mut it = total.split_whitespace();
    while let Some(w) = it.next() {
        if w == name {
            return it
                .next()
                .unwrap()
                .trim_end_matches([';', ',', ')'])
                .parse()
                .unwrap();
        }
    }
    // drops are printed as "(reason N, ...)"
    let pat = format!("{name} ");
    total
        .split(['(', ','])
        .map(str::trim)
        .find_map(|p| {
            p.strip_prefix(&pat)
                .and_then(|v| v.trim_end_matches(')').parse().ok())
        })
        .unwrap_or(0)
}

/// Poll `cond` every 50 ms until it holds; panics after 20 s naming `what`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out after 20 s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until something listens on TCP `addr` ("IP:port") inside namespace `netns` (a server
/// started in the background), 20 s at most.
pub fn wait_listen(netns: &str, addr: &str) {
    wait_until(&format!("a listener on {addr} in {netns}"), || {
        text(&ns(netns, &format!("ss -Hltn src {addr}"))).contains(addr)
    });
}
