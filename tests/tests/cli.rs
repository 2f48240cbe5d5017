//! rvsd's command line: every shipped config validates; a bad one is refused with a precise
//! `file:line:column: key: message` and exit code 2; a device that does not exist fails cleanly.

use std::process::Command;

use rvs_tests::*;

fn rvsd(args: &[&str]) -> (i32, String) {
    let o = Command::new(rvsd_bin())
        .args(args)
        .output()
        .expect("run rvsd (scripts/test builds it)");
    (o.status.code().unwrap_or(-1), text(&o))
}

#[test]
fn shipped_configs_pass_check() {
    assert!(
        rvsd_bin().exists(),
        "{} missing: cargo build --release -p rvs-ctrlplane",
        rvsd_bin().display()
    );
    let mut n = 0;
    for e in std::fs::read_dir(root().join("configs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let (code, out) = rvsd(&["--check", "--config", p.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {out}", p.display());
            assert!(out.contains("configuration OK"), "{out}");
            n += 1;
        }
    }
    assert!(n >= 2, "configs/ holds the examples");
}

#[test]
fn bad_config_is_refused_with_file_line_column_and_key() {
    assert!(
        rvsd_bin().exists(),
        "{} missing: cargo build --release -p rvs-ctrlplane",
        rvsd_bin().display()
    );
    let dir = std::env::temp_dir().join(format!("rvs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[dataplane]\nworkers = [1]\nburst = 0\n[[port]]\nname = \"a\"\ndevice = \"net_null0\"\n", "3:9: dataplane.burst: "),
        (
            "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [\"192.0.2.1/24\", \"192.0.2.7/33\"]\n",
            "4:30: port[0].addresses[1]: ",
        ),
        ("[[port]]\nname = \"a\"\ndevice = \"net_null0\"\nmtuu = 1500\n", "4:1: port[0].mtuu: unknown key"),
        (
            "[[port]]\nname = \"a\"\ndevice = \"net_null0\"\naddresses = [\"192.0.2.1/24\"]\n[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"203.0.113.1\"\n",
            "7:7: route[0].via: ",
        ),
        ("[[port]\nname = \"a\"\n", "1:"),
    ];
    for (i, (cfg, want)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad{i}.toml"));
        std::fs::write(&p, cfg).unwrap();
        let (code, out) = rvsd(&["--check", "--config", p.to_str().unwrap()]);
        assert_eq!(code, 2, "case {i}: {out}");
        let expect = format!("{}:{want}", p.display());
        assert!(
            out.contains(&expect),
            "case {i}: want `{expect}` in:\n{out}"
        );
    }
    let (code, out) = rvsd(&["--check", "--config", "/nonexistent/rvs.toml"]);
    assert_eq!(code, 2);
    assert!(out.contains("/nonexistent/rvs.toml"), "{out}");
    let (code, out) = rvsd(&["--bogus-flag"]);
    assert_eq!(code, 2, "clap rejects unknown arguments: {out}");
}

#[test]
fn missing_device_fails_cleanly() {
    if !prerequisites("rvsd missing device") {
        return;
    }
    let _g = serial();
    let dir = std::env::temp_dir().join(format!("rvs-cli-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("nodev.toml");
    // A vdev string naming an interface that does not exist: the PMD probe fails.
    std::fs::write(
        &p,
        "[eal]\nfile_prefix = \"rvs-nodev\"\n[[port]]\nname = \"a\"\ndevice = \"net_af_packet7,iface=rvs-no-such-if\"\naddresses = [\"192.0.2.1/24\"]\n",
    )
    .unwrap();
    let (code, out) = rvsd(&["--config", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("port \"a\"") && out.contains("net_af_packet7"),
        "error names the port and device: {out}"
    );
}
