//! Generates Rust bindings for the system DPDK (found with pkg-config) and compiles C wrappers for
//! DPDK's static inline fast path (rte_eth_rx_burst, rte_pktmbuf_alloc, rte_ring_*, ...).
//!
//! A missing DPDK or libclang fails the build with one line naming the Debian packages to install.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const HINT: &str = "apt-get install libdpdk-dev libclang-dev pkg-config";

fn fail(what: &str) -> ! {
    println!("cargo::error=rvs: {what}: install it with `{HINT}`");
    eprintln!("error: rvs: {what}: install it with `{HINT}`");
    std::process::exit(1);
}

fn pkg_config(args: &[&str]) -> String {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|_| fail("pkg-config not found"));
    if !out.status.success() {
        fail("DPDK (pkg-config libdpdk) not found");
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Split pkg-config flags, keeping `-include X` together.
fn split_flags(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/wrapper.h");
    println!("cargo:rerun-if-changed=csrc/helpers.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    // Raw cflags: they carry `-include rte_config.h` and `-march=...`, which DPDK's headers need and
    // which the pkg-config crate would drop.
    let cflags = split_flags(&pkg_config(&["--cflags"]));
    let libs = split_flags(&pkg_config(&["--libs"]));
    let version = pkg_config(&["--modversion"]);
    println!("cargo:rustc-env=RVS_DPDK_VERSION={version}");

    for l in &libs {
        if let Some(dir) = l.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = l.strip_prefix("-l") {
            // Only what rvs calls; EAL loads the PMDs (net_af_xdp, net_pcap, ...) as plugins.
            if matches!(
                lib,
                "rte_eal"
                    | "rte_ethdev"
                    | "rte_mbuf"
                    | "rte_mempool"
                    | "rte_ring"
                    | "rte_kvargs"
                    | "rte_net"
            ) {
                println!("cargo:rustc-link-lib=dylib={lib}");
            }
        }
    }

    // The net_ring PMD's constructor API (rte_eth_from_rings, used by the benchmark harness) is not
    // in the shared `pkg-config --libs` list; it lives next to the other DPDK libraries.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");

    // Debian may carry several LLVMs; bindgen must use the libclang that matches the system clang.
    if env::var_os("LIBCLANG_PATH").is_none() && PathBuf::from("/usr/lib/llvm-14/lib").exists() {
        env::set_var("LIBCLANG_PATH", "/usr/lib/llvm-14/lib");
    }

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let wrappers_c = out.join("static_wrappers");

    let builder = bindgen::Builder::default()
        .header(manifest.join("csrc/wrapper.h").to_str().unwrap())
        .clang_args(&cflags)
        .clang_macro_fallback()
        .parse_callbacks(Box::new(U64Macros))
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers_c)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .allowlist_function("rte_eal_(init|cleanup|remote_launch|wait_lcore|mp_wait_lcore|process_type)")
        .allowlist_function("rte_(lcore_count|get_main_lcore|socket_id|lcore_to_socket_id|lcore_is_enabled)")
        .allowlist_function("rte_get_tsc_hz|rte_get_tsc_cycles|rte_rdtsc|rte_strerror|rte_delay_us_block")
        .allowlist_function("rte_pktmbuf_(pool_create|alloc|free|alloc_bulk|free_bulk|reset)")
        .allowlist_function("rte_mempool_(free|avail_count|in_use_count|lookup)")
        .allowlist_function("rte_eth_(dev_count_avail|dev_get_port_by_name|dev_info_get|dev_configure)")
        .allowlist_function("rte_eth_(rx_queue_setup|tx_queue_setup|dev_start|dev_stop|dev_close|dev_socket_id)")
        .allowlist_function("rte_eth_(macaddr_get|dev_default_mac_addr_set|link_get_nowait|dev_set_mtu)")
        .allowlist_function("rte_eth_(stats_get|stats_reset|xstats_get|xstats_get_names|xstats_reset)")
        .allowlist_function("rte_eth_(promiscuous_enable|promiscuous_disable|allmulticast_enable)")
        .allowlist_function("rte_eth_(rx_burst|tx_burst|dev_rss_hash_conf_get|dev_rss_hash_update|dev_rss_reta_update|dev_rss_reta_query)")
        .allowlist_function("rte_ring_(create|create_elem|free|count|free_count)")
        .allowlist_function("rte_eth_from_rings")
        .allowlist_function("rte_ring_(enqueue_burst_elem|dequeue_burst_elem|sp_enqueue_burst_elem|sc_dequeue_burst_elem)")
        .allowlist_function("rvs_.*")
        .allowlist_var("RTE_ETH_(RX|TX)_OFFLOAD_.*|RTE_ETH_RSS_.*|RTE_ETH_MQ_.*|RTE_ETH_LINK_.*|RTE_ETH_SPEED_.*")
        .allowlist_var("RTE_MBUF_DEFAULT_(BUF_SIZE|DATAROOM)|RTE_PKTMBUF_HEADROOM|RTE_MAX_LCORE|RTE_MAX_ETHPORTS")
        .allowlist_var("RING_F_.*|RTE_ETH_XSTATS_NAME_SIZE|SOCKET_ID_ANY|RTE_ETH_RETA_GROUP_SIZE")
        .allowlist_type("rte_eth_conf|rte_eth_dev_info|rte_eth_stats|rte_eth_link|rte_eth_xstat|rte_eth_xstat_name")
        .allowlist_type("rte_ether_addr|rte_mbuf|rte_mempool|rte_ring|rte_eth_rss_conf|rte_eth_rss_reta_entry64")
        .allowlist_type("rte_eth_rxconf|rte_eth_txconf|rte_rmt_call_main_t|lcore_function_t")
        .blocklist_type("rte_arp_hdr|rte_arp_ipv4")
        .opaque_type("rte_mempool")
        .opaque_type("rte_ring");

    let bindings =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.generate())) {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => fail(&format!("bindgen could not parse the DPDK headers ({e})")),
            Err(_) => fail("libclang not found for bindgen"),
        };
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    // Compile the generated wrappers for static inline functions plus our accessors.
    let mut build = cc::Build::new();
    build
        .file(wrappers_c.with_extension("c"))
        .file("csrc/helpers.c")
        .include("csrc")
        .include(manifest.join("csrc"))
        .opt_level(3)
        .warnings(false);
    for f in &cflags {
        build.flag(f);
    }
    build.compile("rvs_dpdk_wrappers");
}

/// DPDK's RTE_BIT64() flag macros must be u64 in Rust.
#[derive(Debug)]
struct U64Macros;

impl bindgen::callbacks::ParseCallbacks for U64Macros {
    fn int_macro(&self, name: &str, _value: i64) -> Option<bindgen::callbacks::IntKind> {
        if name.starts_with("RTE_ETH_RX_OFFLOAD_")
            || name.starts_with("RTE_ETH_TX_OFFLOAD_")
            || name.starts_with("RTE_ETH_RSS_")
            || name.starts_with("RTE_MBUF_F_")
        {
            Some(bindgen::callbacks::IntKind::U64)
        } else {
            None
        }
    }
}
