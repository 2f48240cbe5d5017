//! What a configuration publication costs a worker (`rvs-bench publish`): the time a worker
//! spends between two bursts swapping in a new service set, (1) building the whole set itself
//! (`Stack::set_services`, as before), (2) with the Maglev tables built once on the control
//! thread and shared (`Services::prepare`, rvsd's `Snapshot::new`), (3) with its whole set built
//! on the control thread (`Services::build_detached`, what rvsd now sends each worker) so that
//! it only attaches its LIP pools and swaps (`Stack::swap_services_built`). Every publication
//! pays this (an rvsadm edit, a reload, every health-check transition), on every worker, while
//! packets wait in the RX rings. Medians of 5; the sans-IO stack, no EAL.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use rvs_core::packet::VecPacket;
use rvs_core::service::Services;
use rvs_core::{DestConf, Fwd, Proto, Sched, ServiceConf, Stack, Timeouts};

/// `n` TCP services of `dests` FULLNAT real servers each, scheduled by `sched`.
fn services(n: usize, dests: usize, sched: Sched) -> Vec<ServiceConf> {
    let mut id = 0u32;
    (0..n)
        .map(|k| ServiceConf {
            proto: Proto::Tcp,
            vip: IpAddr::V4(Ipv4Addr::new(
                10,
                0,
                100 + (k / 250) as u8,
                1 + (k % 250) as u8,
            )),
            vport: 80,
            vip_port: 0,
            sched,
            dests: (0..dests)
                .map(|d| {
                    id += 1;
                    DestConf {
                        id,
                        rip: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1 + (d % 250) as u8)),
                        rport: 8080,
                        weight: 1 + (d % 3) as u32,
                        fwd: Fwd::FullNat,
                        upper: 0,
                        lower: 0,
                        down: false,
                        last_weight: 0,
                    }
                })
                .collect(),
            lips: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1))],
            lip_port: 0,
            persist: None,
            mark: None,
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// Print the publication table.
pub fn run() -> Result<(), String> {
    let mh = |table_size| Sched::Mh {
        fallback: false,
        port: false,
        table_size,
    };
    let cases = [
        (10, 10, Sched::Wrr),
        (1000, 10, Sched::Wrr),
        (100, 10, mh(4093)),
        (50, 20, mh(65537)),
        (1, 100, mh(131_071)),
    ];
    println!("**What a publication costs each worker** (`rvs-bench publish`; median of 5, ms)\n");
    println!("| services × real servers | scheduler | worker builds everything (before) | control thread: shared tables | worker swap with them | control thread: a worker's whole set | worker swap with it (now) |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (n, d, sched) in cases {
        let set = services(n, d, sched);
        let mut cfg = crate::fnat::config(1024, 2, Timeouts::default(), 0);
        cfg.services = Vec::new();
        cfg.fullnat.max_dests = 1 << 16;
        let mut st: Stack<VecPacket> =
            Stack::try_new(&cfg, Default::default()).map_err(|e| e.to_string())?;
        st.set_services(&set).map_err(|e| e.to_string())?; // LIP pool made once
        let (mut own, mut prep, mut shared) = (Vec::new(), Vec::new(), Vec::new());
        let (mut build, mut swap) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let t = Instant::now();
            st.set_services(&set).map_err(|e| e.to_string())?;
            own.push(t.elapsed());
            let t = Instant::now();
            let p = Services::prepare(&set);
            prep.push(t.elapsed());
            let t = Instant::now();
            st.set_services_prepared(&set, &p)
                .map_err(|e| e.to_string())?;
            shared.push(t.elapsed());
            let t = Instant::now();
            let mut built = Services::build_detached(&set, cfg.fullnat.max_dests, 1, &p)
                .map_err(|e| e.to_string())?;
            build.push(t.elapsed());
            let t = Instant::now();
            st.swap_services_built(&set, &mut built)
                .map_err(|e| e.to_string())?;
            swap.push(t.elapsed());
            drop(built); // the replaced set, freed off the worker in rvsd
        }
        let name = match sched {
            Sched::Mh { table_size, .. } => format!("mh, table {table_size}"),
            s => format!("{s:?}").to_lowercase(),
        };
        println!(
            "| {n} × {d} | {name} | {} | {} | {} | {} | {} |",
            ms(median(own)),
            ms(median(prep)),
            ms(median(shared)),
            ms(median(build)),
            ms(median(swap))
        );
    }
    Ok(())
}
