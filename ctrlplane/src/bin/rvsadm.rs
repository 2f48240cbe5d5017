//! rvsadm: ipvsadm-compatible administration of a running rvsd (see
//! `rvs_ctrlplane::ctl::admin`).
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = std::env::var(rvs_ctrlplane::ctl::admin::SOCKET_ENV).ok();
    let stdin = std::io::stdin();
    let code = rvs_ctrlplane::ctl::admin::run(
        &args,
        env.as_deref(),
        &mut stdin.lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
