//! rvsadm, the ipvsadm-compatible administration tool: [`args`] parses the command line,
//! [`format`] prints rvsd's answers in ipvsadm's layouts, and [`run`] ties them to the control
//! socket.
//!
//! Exit status as ipvsadm 1.31: 0 on success; 255 for what ipvsadm's option parser (popt)
//! refuses (an unknown option, a missing argument, no command first); 2 for its other
//! command-line errors, and when rvsd cannot be reached (ipvsadm's "Can't initialize ipvs");
//! 255 when rvsd refuses a command that changes state (`-A -E -D -C -a -e -d -Z --set
//! --add-laddr --del-laddr`: ipvsadm returns libipvs's -1 from `main`); 1 for anything else: a listing rvsd cannot give (ipvsadm's `list_service`
//! exits 1), rvsd busy, rvs's own commands refused, an unexpected answer, output or input
//! failing. `-R` exits 255 when any line was refused (ipvsadm returns only its last line's
//! status, which can hide a refused line: rvsadm does not).

pub mod args;
pub mod format;

#[cfg(test)]
mod tests;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use self::args::{Command, Invocation, ListOptions};
use self::format::Layout;
use crate::config::DEFAULT_SOCKET;
use crate::ctl::proto::{code, Op, Response, MAX_CONNS_PAGE};

/// The environment variable naming the control socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "RVS_SOCKET";

/// `rvsadm -h`.
pub const USAGE: &str = "\
Usage:
  rvsadm -A|E -t|u service-address [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
  rvsadm -D -t|u service-address
  rvsadm -C
  rvsadm -R
  rvsadm -S [-n]
  rvsadm -a|e -t|u service-address -r server-address [options]
  rvsadm -d -t|u service-address -r server-address
  rvsadm -L|l [options]
  rvsadm -Z [-t|u service-address]
  rvsadm --set tcp tcpfin udp
  rvsadm --add-laddr|--del-laddr -z local-address -t|u service-address
  rvsadm --get-laddr [-t|u service-address]
  rvsadm --reload | --validate [file] | --status
  rvsadm -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin (one command per line, as -S prints them)
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values (0 leaves one unchanged)
  --add-laddr       -P        add a FULLNAT local address (-z) to a service
  --del-laddr       -Q        remove a FULLNAT local address (-z) from a service
  --get-laddr       -G        list the FULLNAT local addresses
  --reload                    re-read rvsd's configuration file and apply the difference
  --validate [file]           check a configuration file (default: rvsd's own) without applying it
  --status                    show rvsd's version, configuration generation and workers
  --help            -h        display this help message
  --version         -v        display the version

Options:
  --tcp-service  -t service-address   service-address is host[:port] ([v6addr]:port for IPv6)
  --udp-service  -u service-address   service-address is host[:port]
  --fwmark-service  -f fwmark         fwmark is an integer greater than zero: a match
                                      service of the configuration (TOML file)
  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos,
                                      the default scheduler is wlc
  --persistent   -p [timeout]         persistent service (default timeout 300)
  --netmask      -M netmask           persistent granularity mask (dotted or prefix length)
  --sched-flags  -b flags             scheduler flags, comma-separated (with -A and -E)
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --ipip         -i                   ipip encapsulation (tunneling)
  --masquerading -m                   masquerading (NAT)
  --fullnat      -b                   full NAT (with -a and -e)
  --weight       -w weight            capacity of real server (default 1)
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --laddr        -z local-address     FULLNAT local address (with --add-laddr, --del-laddr)
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --health                            add a Health column (UP, DOWN, - unchecked) after InActConn
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --numeric      -n                   numeric output of addresses and ports (rvsadm always
                                      prints numeric addresses and ports; -n is accepted)
  --socket PATH                       rvsd's control socket (default: $RVS_SOCKET, else
                                      /run/rvsd.sock)
";

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A command-line error of `-R`'s input: exit 2 (the command line's own exit as
    /// [`args::UsageError::exit_code`] says).
    Usage(String),
    /// rvsd could not be reached: exit 2.
    Unreachable(String),
    /// rvsd refused a command that changes state (or, with -R, at least one line): exit 255.
    Refused(String),
    /// Anything else (a surprising answer, a failed write or read): exit 1.
    Failed(String),
}

impl Failure {
    /// The exit status.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) | Failure::Unreachable(_) => 2,
            Failure::Refused(_) => 255,
            Failure::Failed(_) => 1,
        }
    }
    fn message(&self) -> &str {
        match self {
            Failure::Usage(m)
            | Failure::Unreachable(m)
            | Failure::Refused(m)
            | Failure::Failed(m) => m,
        }
    }
}

/// The control socket: `--socket`, else `$RVS_SOCKET` (when set and not empty), else the
/// configuration's default, `/run/rvsd.sock`.
pub fn socket_path(given: Option<&Path>, env: Option<&str>) -> PathBuf {
    match (given, env) {
        (Some(p), _) => p.to_path_buf(),
        (None, Some(e)) if !e.is_empty() => PathBuf::from(e),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Runs rvsadm with `args` (without the program name); `env_socket` is `$RVS_SOCKET`. Returns
/// the exit status.
pub fn run(
    args: &[String],
    env_socket: Option<&str>,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let inv: Invocation = match args::parse(args) {
        Ok(inv) => inv,
        Err(e) => {
            // Bare, as ipvsadm prints its errors (scripts compare them).
            let _ = writeln!(err, "{e}");
            if e.hint {
                let _ = writeln!(
                    err,
                    "Try `rvsadm -h' or 'rvsadm --help' for more information."
                );
            }
            return e.exit_code();
        }
    };
    let path = socket_path(inv.socket.as_deref(), env_socket);
    let mut call = |op: Op| {
        crate::ctl::client::call(&path, op).map_err(|e| {
            if e.starts_with("cannot connect") {
                format!("{e} (is rvsd running? --socket PATH or {SOCKET_ENV} name another socket)")
            } else {
                e
            }
        })
    };
    match execute(&inv.command, &mut call, stdin, out) {
        Ok(()) => 0,
        Err(f) => {
            let _ = out.flush();
            let _ = writeln!(err, "{}", f.message());
            f.exit_code()
        }
    }
}

/// Runs one parsed command, asking rvsd through `call`.
pub fn execute(
    cmd: &Command,
    call: &mut dyn FnMut(Op) -> Result<Response, String>,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut ask = |op: Op| -> Result<Response, Failure> {
        let what = op.clone();
        match call(op) {
            Err(e) => Err(transport(e)),
            Ok(Response::Error { code, message }) => {
                let m = refusal(&what, code, message);
                Err(if is_change(&what) && code != code::EBUSY {
                    Failure::Refused(m)
                } else {
                    Failure::Failed(m)
                })
            }
            Ok(r) => Ok(r),
        }
    };
    let mut text = String::new();
    match cmd {
        Command::Help => text.push_str(USAGE),
        Command::Version => {
            text = format!(
                "rvsadm {} (ipvsadm v1.31 compatible, IPVS v{})\n",
                env!("CARGO_PKG_VERSION"),
                format::IPVS_VERSION
            )
        }
        Command::Restore => return restore(call, stdin),
        Command::List(l) => return list(l, &mut ask, out),
        Command::Save { .. } => {
            let services = services(ask(Op::ListServices)?)?;
            text = format::save(&services, false);
        }
        Command::GetLaddr(key) => {
            let services = match key {
                Some(k) => vec![service(ask(Op::GetService { key: *k })?)?],
                None => services(ask(Op::ListServices)?)?,
            };
            text = format::laddrs(&services);
        }
        Command::Reload => match ask(Op::Reload)? {
            Response::Reloaded {
                generation,
                changes,
                needs_restart,
            } => {
                text = format!("rvsd reloaded its configuration: generation {generation}\n");
                if changes.is_empty() {
                    text.push_str("no changes\n");
                }
                for c in changes {
                    text.push_str(&format!("changed: {c}\n"));
                }
                for r in needs_restart {
                    text.push_str(&format!("needs a restart (not applied): {r}\n"));
                }
            }
            other => return Err(unexpected(&other)),
        },
        Command::Validate(path) => {
            // A relative path is the caller's: make it absolute for rvsd.
            let path = path.as_ref().map(|p| {
                std::fs::canonicalize(p).map_or_else(|_| p.clone(), |a| a.display().to_string())
            });
            let shown = path
                .clone()
                .unwrap_or_else(|| "rvsd's configuration file".to_owned());
            match ask(Op::Validate { path })? {
                Response::Ok => text = format!("{shown}: valid\n"),
                other => return Err(unexpected(&other)),
            }
        }
        Command::Status => match ask(Op::Status)? {
            Response::Status {
                version,
                generation,
                workers,
                conn_table_size,
            } => {
                text = format!(
                    "rvsd {version}\nconfiguration generation: {generation}\nworkers: {workers}\n\
                     connection table size: {conn_table_size}\n"
                );
            }
            other => return Err(unexpected(&other)),
        },
        change => {
            // The commands that change state answer Ok.
            let op = change_op(change).ok_or_else(|| Failure::Usage("not a command".into()))?;
            match ask(op)? {
                Response::Ok => {}
                other => return Err(unexpected(&other)),
            }
        }
    }
    write_out(out, &text)
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Failed(format!("cannot write the output: {e}")))
}

/// The operation of a command that changes rvsd's state (those `-R` may replay).
pub fn change_op(cmd: &Command) -> Option<Op> {
    Some(match cmd {
        Command::AddService(spec) => Op::AddService { spec: spec.clone() },
        Command::EditService(spec) => Op::EditService { spec: spec.clone() },
        Command::DelService(key) => Op::DelService { key: *key },
        Command::Clear => Op::Clear,
        Command::AddReal { key, real } => Op::AddReal {
            key: *key,
            real: real.clone(),
        },
        Command::EditReal {
            key,
            real,
            keep_fwd,
        } => Op::EditReal {
            key: *key,
            real: real.clone(),
            keep_fwd: *keep_fwd,
        },
        Command::DelReal { key, addr } => Op::DelReal {
            key: *key,
            addr: *addr,
        },
        Command::Zero(key) => Op::Zero { key: *key },
        Command::SetTimeouts(t) => Op::SetTimeouts { timeouts: *t },
        Command::AddLaddr { key, lip } => Op::AddLaddr {
            key: *key,
            lip: *lip,
        },
        Command::DelLaddr { key, lip } => Op::DelLaddr {
            key: *key,
            lip: *lip,
        },
        _ => return None,
    })
}

fn unexpected(r: &Response) -> Failure {
    Failure::Failed(format!("unexpected answer from rvsd: {r:?}"))
}

fn services(r: Response) -> Result<Vec<crate::ctl::proto::ServiceView>, Failure> {
    match r {
        Response::Services { services } => Ok(services),
        other => Err(unexpected(&other)),
    }
}

fn service(r: Response) -> Result<crate::ctl::proto::ServiceView, Failure> {
    match r {
        Response::Service { service } => Ok(service),
        other => Err(unexpected(&other)),
    }
}

fn list(
    l: &ListOptions,
    ask: &mut dyn FnMut(Op) -> Result<Response, Failure>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let layout = Layout {
        stats: l.stats,
        rate: l.rate,
        thresholds: l.thresholds,
        persistent_conn: l.persistent_conn,
        exact: l.exact,
        health: l.health,
    };
    if l.daemon {
        // No connection sync daemon runs (rvs has no session sync yet): ipvsadm prints nothing.
        return Ok(());
    }
    if l.connections {
        // Pages, printed as they come.
        let title = if l.persistent_conn {
            format::conns_title_pe()
        } else {
            format::conns_title()
        };
        write_out(out, &title)?;
        let mut start = 0;
        loop {
            match ask(Op::ListConns {
                start,
                max: MAX_CONNS_PAGE,
            })? {
                Response::Conns { entries, next } => {
                    let rows: String = entries.iter().map(format::conn_row).collect();
                    write_out(out, &rows)?;
                    match next {
                        Some(n) if n > start => start = n,
                        _ => return Ok(()),
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
    }
    let text = if l.timeout {
        match ask(Op::GetTimeouts)? {
            Response::Timeouts { timeouts } => format::timeout(&timeouts),
            other => return Err(unexpected(&other)),
        }
    } else if let Some(key) = l.service {
        format::list_service(&service(ask(Op::GetService { key })?)?, &layout, l.nosort)
    } else {
        let size = match ask(Op::Status)? {
            Response::Status {
                conn_table_size, ..
            } => conn_table_size,
            other => return Err(unexpected(&other)),
        };
        let services = services(ask(Op::ListServices)?)?;
        format::list_all(size, &services, &layout, l.nosort)
    };
    write_out(out, &text)
}

/// `-R`: every line is parsed first (a bad one stops before anything is applied), then applied
/// in order. As ipvsadm's `restore_table`, a line rvsd refuses does not stop the lines after
/// it (a saved table replayed onto one that already holds some of it restores the rest); every
/// refusal is reported with its line number and the exit status is 255 when there was one. Not
/// reaching rvsd stops at once.
fn restore(
    call: &mut dyn FnMut(Op) -> Result<Response, String>,
    stdin: &mut dyn BufRead,
) -> Result<(), Failure> {
    let mut ops = Vec::new();
    for (n, line) in stdin.lines().enumerate() {
        let n = n + 1;
        let line = line.map_err(|e| Failure::Failed(format!("cannot read stdin: {e}")))?;
        let Some(mut words) = args::split_line(&line) else {
            return Err(Failure::Usage(format!("line {n}: unterminated quote")));
        };
        // Rule files written as commands (`ipvsadm -A -t ...`): ipvsadm's restore skips the
        // program's name.
        if words
            .first()
            .is_some_and(|w| w == "ipvsadm" || w == "rvsadm")
        {
            words.remove(0);
        }
        if words.is_empty() {
            continue;
        }
        let inv = args::parse(&words).map_err(|e| Failure::Usage(format!("line {n}: {e}")))?;
        match change_op(&inv.command) {
            Some(op) if inv.command.restorable() => ops.push((n, op)),
            _ => {
                return Err(Failure::Usage(format!(
                    "line {n}: only -A -E -D -C -a -e -d -Z --set --add-laddr --del-laddr can be restored"
                )))
            }
        }
    }
    let mut refused = Vec::new();
    // What stopped the lines short (rvsd busy, or gone): the failure to report them as.
    let mut lost: Option<fn(String) -> Failure> = None;
    for (n, op) in ops {
        let what = op.clone();
        match call(op) {
            Ok(Response::Ok) => {}
            Ok(Response::Error { code, message }) if code == code::EBUSY => {
                // Not refused: not applied. Stop here, as for a lost connection (exit 1).
                refused.push(format!("line {n}: {message}"));
                lost = Some(Failure::Failed);
                break;
            }
            Ok(Response::Error { code, message }) => {
                refused.push(format!("line {n}: {}", refusal(&what, code, message)))
            }
            Ok(other) => refused.push(format!("line {n}: {}", unexpected(&other).message())),
            Err(e) => {
                lost = Some(transport_kind(&e));
                refused.push(format!("line {n}: {e}"));
                break;
            }
        }
    }
    // One message per refused line, each printed as `line N: ...`.
    let text = refused.join("\n");
    match lost {
        _ if refused.is_empty() => Ok(()),
        Some(kind) => Err(kind(text)),
        None => Err(Failure::Refused(text)),
    }
}

/// Whether `op` is one of ipvsadm's commands that change state (a refusal exits 255).
fn is_change(op: &Op) -> bool {
    match op {
        Op::AddService { .. }
        | Op::EditService { .. }
        | Op::DelService { .. }
        | Op::Clear
        | Op::AddReal { .. }
        | Op::EditReal { .. }
        | Op::DelReal { .. }
        | Op::AddLaddr { .. }
        | Op::DelLaddr { .. }
        | Op::SetTimeouts { .. }
        | Op::Zero { .. } => true,
        Op::ListServices
        | Op::GetService { .. }
        | Op::GetTimeouts
        | Op::ListConns { .. }
        | Op::Validate { .. }
        | Op::Reload
        | Op::Status => false,
    }
}

/// A failure to talk to rvsd: unreachable (no socket, nobody listening) or lost on the way.
fn transport(e: String) -> Failure {
    transport_kind(&e)(e)
}

/// [`transport`]'s kind of failure for error `e`.
fn transport_kind(e: &str) -> fn(String) -> Failure {
    if e.starts_with("cannot connect") {
        Failure::Unreachable
    } else {
        Failure::Failed
    }
}

/// What to print for rvsd's refusal of `op`: its message, else libipvs's wording for `code`.
fn refusal(op: &Op, code: i32, message: String) -> String {
    if message.is_empty() {
        strerror(op, code)
    } else {
        message
    }
}

/// libipvs's `ipvs_strerror` wording for an error rvsd sent without a message.
pub fn strerror(op: &Op, c: i32) -> String {
    let s = match (op, c) {
        (_, code::ENOMEM) => "Memory allocation problem",
        (Op::AddService { .. }, code::EEXIST) => "Service already exists",
        (Op::AddService { .. } | Op::EditService { .. }, code::ENOENT) => {
            "Scheduler or persistence engine not found"
        }
        (
            Op::EditService { .. }
            | Op::DelService { .. }
            | Op::Zero { .. }
            | Op::GetService { .. },
            code::ESRCH,
        ) => "No such service",
        (Op::AddReal { .. }, code::EEXIST) => "Destination already exists",
        (Op::AddReal { .. } | Op::EditReal { .. } | Op::DelReal { .. }, code::ESRCH) => {
            "Service not defined"
        }
        (Op::EditReal { .. } | Op::DelReal { .. }, code::ENOENT) => "No such destination",
        (Op::AddLaddr { .. }, code::EEXIST) => "Local address already exists",
        (Op::DelLaddr { .. }, code::ENOENT) => "No such local address",
        (Op::AddLaddr { .. } | Op::DelLaddr { .. }, code::ESRCH) => "Service not defined",
        (_, code::EINVAL) => "Invalid argument",
        (_, code::EPROTO) => "Protocol error",
        _ => return format!("rvsd error {c}"),
    };
    s.to_owned()
}
